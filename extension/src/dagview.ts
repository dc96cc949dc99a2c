/**
 * The main-area DAG view of one pipeline: the graphviz SVG coloured by a run's task states
 * (refreshed every second while the run is unfinished), a runs table, and a task pane with
 * tries, duration, log tail and buttons to open the output notebook and retry the task.
 */
import { Widget } from '@lumino/widgets';
import { showErrorMessage } from '@jupyterlab/apputils';

import {
  ApiError,
  FINISHED,
  IGraph,
  ILogChunk,
  IOutput,
  IRunPage,
  ITaskInstance,
  duration,
  h,
  pipelinePath,
  post,
  request,
  taskPath
} from './api';

/** Opens a notebook by its path relative to the Jupyter root (docmanager:open). */
export type Opener = (path: string) => void;

const POLL_MS = 1000;
/** How many lines of a task's log the pane shows (the server sends only those: `?tail=`). */
const LOG_LINES = 40;

export class DagView extends Widget {
  readonly pipeline: string;
  private runId: number | null = null;
  private followLatest = true;
  private selectedTask: string | null = null;
  private timer: number | null = null;
  private busy = false;
  private svgBox = h('div', { class: 'nbflow-dag-svg' });
  private header = h('div', { class: 'nbflow-dag-header' });
  private taskPane = h('div', { class: 'nbflow-task-pane' });
  private runsBox = h('div', { class: 'nbflow-runs' });
  private status = h('div', { class: 'nbflow-status' });

  constructor(
    pipeline: string,
    private open: Opener
  ) {
    super();
    this.pipeline = pipeline;
    this.id = `nbflow-dag-${pipeline}`;
    this.addClass('nbflow-dag-view');
    this.title.label = `DAG: ${pipeline}`;
    this.title.closable = true;
    const body = h('div', { class: 'nbflow-dag-body' }, this.svgBox, this.taskPane);
    this.node.append(this.header, this.status, body, h('h3', {}, 'Runs'), this.runsBox);
    this.svgBox.addEventListener('click', ev => this.onSvgClick(ev));
    void this.refresh();
  }

  /** Show a given run (null: follow the latest run). */
  showRun(runId: number | null): void {
    this.runId = runId;
    this.followLatest = runId === null;
    void this.refresh();
  }

  dispose(): void {
    this.stop();
    super.dispose();
  }

  private stop(): void {
    if (this.timer !== null) {
      window.clearTimeout(this.timer);
      this.timer = null;
    }
  }

  /** Fetch graph JSON + SVG (+ runs, task pane); poll again while the run is unfinished. */
  async refresh(): Promise<void> {
    if (this.busy || this.isDisposed) {
      return;
    }
    this.busy = true;
    this.stop();
    let live = false;
    try {
      const q = this.runId !== null && !this.followLatest ? `?run=${this.runId}` : '';
      const graph = await request<IGraph>(pipelinePath(this.pipeline, `graph${q}`));
      const svg = await request<string>(pipelinePath(this.pipeline, `graph.svg${q}`));
      this.runId = graph.run ? graph.run.id : null;
      this.renderHeader(graph);
      this.svgBox.innerHTML = svg;
      this.markSelected();
      live = !!graph.run && !FINISHED.has(graph.run.state);
      this.svgBox.dataset.runState = graph.run ? graph.run.state : 'none';
      await this.renderRuns();
      if (this.selectedTask && this.runId !== null) {
        await this.renderTask(graph);
      }
      this.status.textContent = '';
    } catch (err) {
      this.status.textContent = err instanceof ApiError ? `${err.status}: ${err.message}` : String(err);
      live = true; // try again: the server may be restarting
    } finally {
      this.busy = false;
    }
    if (!this.isDisposed && (live || this.followLatest)) {
      this.timer = window.setTimeout(() => void this.refresh(), live ? POLL_MS : POLL_MS * 5);
    }
  }

  private renderHeader(graph: IGraph): void {
    const run = graph.run;
    const cancel = h('button', { class: 'jp-Button jp-mod-styled jp-mod-warn nbflow-cancel' }, 'Cancel run');
    cancel.onclick = () => void this.act(() => post(`runs/${run!.id}/cancel`));
    const latest = h('button', { class: 'jp-Button jp-mod-styled nbflow-latest' }, 'Follow latest');
    latest.onclick = () => this.showRun(null);
    const state = run ? run.state : 'no runs yet';
    this.header.replaceChildren(
      h('span', { class: 'nbflow-dag-title' }, graph.pipeline),
      h(
        'span',
        { class: `nbflow-badge nbflow-state-${run ? run.state : 'none'}` },
        run ? `run ${run.id}: ${state}` : state
      ),
      ...(run && !FINISHED.has(run.state) ? [cancel] : []),
      ...(this.followLatest ? [] : [latest])
    );
    if (graph.import_error) {
      this.header.append(
        h(
          'div',
          { class: 'nbflow-import-error' },
          `Broken DAG: ${graph.import_error.location || ''}: ${graph.import_error.error || ''}`
        )
      );
    }
  }

  private async renderRuns(): Promise<void> {
    const { runs } = await request<IRunPage>(pipelinePath(this.pipeline, 'runs?limit=15'));
    const rows = runs.map(r => {
      const tr = h(
        'tr',
        { class: r.id === this.runId ? 'nbflow-selected' : '', 'data-run': String(r.id) },
        h('td', {}, String(r.id)),
        h('td', {}, h('span', { class: `nbflow-badge nbflow-state-${r.state}` }, r.state)),
        h('td', {}, r.trigger),
        h('td', {}, (r.logical_date || '').replace('T', ' ').slice(0, 19)),
        h('td', {}, duration(r.started_at, r.ended_at))
      );
      tr.onclick = () => this.showRun(r.id);
      return tr;
    });
    const head = h('tr', {}, ...['run', 'state', 'trigger', 'logical date', 'duration'].map(t => h('th', {}, t)));
    this.runsBox.replaceChildren(h('table', { class: 'nbflow-table' }, h('thead', {}, head), h('tbody', {}, ...rows)));
  }

  private onSvgClick(ev: MouseEvent): void {
    const node = (ev.target as Element).closest('g.node');
    if (!node || !node.id.startsWith('task-')) {
      return;
    }
    this.selectedTask = node.id.slice('task-'.length);
    this.markSelected();
    void this.refresh();
  }

  private markSelected(): void {
    this.svgBox
      .querySelectorAll('g.node')
      .forEach(n => n.classList.toggle('nbflow-node-selected', n.id === `task-${this.selectedTask}`));
  }

  private async renderTask(graph: IGraph): Promise<void> {
    const task = this.selectedTask!;
    const ti = graph.tasks[task];
    const def = graph.definition.tasks.find(t => t.id === task);
    if (!ti || !def) {
      this.taskPane.replaceChildren(h('div', {}, `task ${task}: not in this run`));
      return;
    }
    const runId = this.runId!;
    let tail = '';
    try {
      const log = await request<ILogChunk>(taskPath(runId, task, `log?tail=${LOG_LINES}`));
      tail = (log.truncated ? '…' : '') + log.text;
    } catch (err) {
      tail = `(no log: ${(err as Error).message})`;
    }
    const openBtn = h(
      'button',
      { class: 'jp-Button jp-mod-styled jp-mod-accept nbflow-open-output' },
      'Open output notebook'
    );
    openBtn.onclick = async () => {
      try {
        const out = await request<IOutput>(taskPath(runId, task, 'output'));
        this.open(out.path);
      } catch (err) {
        void showErrorMessage('No output notebook', (err as Error).message);
      }
    };
    const retry = h('button', { class: 'jp-Button jp-mod-styled nbflow-retry' }, 'Retry task');
    retry.onclick = () => void this.act(() => post(taskPath(runId, task, 'clear')));
    const finished = graph.run ? FINISHED.has(graph.run.state) : false;
    this.taskPane.replaceChildren(
      h('h3', {}, task),
      h('div', {}, def.label),
      h('div', {}, 'state: ', h('span', { class: `nbflow-badge nbflow-state-${ti.state}` }, ti.state)),
      h('div', {}, `tries: ${ti.try_number} of ${ti.max_tries}`),
      h(
        'div',
        {},
        `duration: ${ti.duration != null ? ti.duration.toFixed(1) + ' s' : duration(ti.start_date, ti.end_date)}`
      ),
      ...(ti.error ? [h('div', { class: 'nbflow-error' }, `${ti.reason || 'error'}: ${ti.error}`)] : []),
      ...whyLine(ti),
      h(
        'div',
        { class: 'nbflow-buttons' },
        ...(def.kind === 'notebook' || def.kind === 'cell' ? [openBtn] : []),
        ...(finished ? [retry] : [])
      ),
      h('pre', { class: 'nbflow-log' }, tail || '(empty log)')
    );
  }

  private async act(fn: () => Promise<unknown>): Promise<void> {
    try {
      await fn();
    } catch (err) {
      void showErrorMessage('nbflow', (err as Error).message);
    }
    void this.refresh();
  }
}

/** An incremental run's decision: "reused from run 4, try 1" for a cached task, else why it ran. */
function whyLine(ti: ITaskInstance): HTMLElement[] {
  if (ti.state === 'cached' && ti.reused_run_id != null) {
    return [h('div', { class: 'nbflow-why' }, `reused from run ${ti.reused_run_id}, try ${ti.reused_try}`)];
  }
  return ti.why ? [h('div', { class: 'nbflow-why' }, `ran: ${ti.why}`)] : [];
}
