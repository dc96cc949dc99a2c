/**
 * The main-area view of one pipeline: four views of its history (the live DAG coloured by a
 * run's states, the grid of runs × tasks, the Gantt chart of a run, task durations over the
 * last runs), the runs table with paging, and a task pane with the task actions (tries, log,
 * artifacts, output notebook, HTML export, debug copy, clear, mark success / failed).
 * Refreshed every second while the shown run is unfinished.
 */
import { Widget } from '@lumino/widgets';
import { Dialog, showDialog, showErrorMessage } from '@jupyterlab/apputils';

import {
  ApiError,
  FINISHED,
  IAttempt,
  ICleared,
  IDebugCopy,
  IGraph,
  IGrid,
  ILogChunk,
  IOutput,
  IRunDetails,
  ITaskInstance,
  apiUrl,
  duration,
  fmtBytes,
  fmtSeconds,
  fmtTime,
  h,
  importErrorText,
  pipelinePath,
  post,
  request,
  taskPath
} from './api';
import { durationChart, ganttChart, gridChart } from './charts';
import type { CompareSource } from './compare';
import { RunsTable } from './runstable';

/** What the view asks JupyterLab to open. */
export interface IOpeners {
  /** A notebook: a path relative to the Jupyter root, or in the nbflow drive. */
  notebook(path: string): void;
  /** The whole log of a try in a tab of its own. */
  log(runId: number, task: string, tryNumber: number | null): void;
  /** The Compare view of a sweep or of chosen runs. */
  compare(source: CompareSource): void;
}

type View = 'graph' | 'grid' | 'gantt' | 'durations';
const VIEWS: [View, string][] = [
  ['graph', 'Graph'],
  ['grid', 'Grid'],
  ['gantt', 'Gantt'],
  ['durations', 'Durations']
];
const POLL_MS = 1000;
/** How many lines of a task's log the pane shows (the server sends only those: `?tail=`). */
const LOG_LINES = 40;
/** Runs in the grid and the duration chart. */
const GRID_RUNS = 25;
/** Artifacts up to this size (JSON) are shown inline. */
const INLINE_JSON = 2000;

export class DagView extends Widget {
  readonly pipeline: string;
  private runId: number | null = null;
  private followLatest = true;
  private selectedTask: string | null = null;
  private selectedTry: number | null = null;
  /** Task groups drawn as one node (a click on a group's label collapses it, on its node expands it). */
  private collapsed = new Set<string>();
  private view: View = 'graph';
  private paramTypes: Record<string, string> = {};
  private timer: number | null = null;
  private busy = false;
  private again = false;
  private header = h('div', { class: 'nbflow-dag-header' });
  private waiting = h('div', { class: 'nbflow-waiting' });
  private tabs = h('div', { class: 'nbflow-view-tabs', role: 'tablist' });
  private main = h('div', { class: 'nbflow-view-main' });
  private taskPane = h('div', { class: 'nbflow-task-pane' });
  private runs: RunsTable;
  private status = h('div', { class: 'nbflow-status' });

  constructor(
    pipeline: string,
    private open: IOpeners
  ) {
    super();
    this.pipeline = pipeline;
    this.id = `nbflow-dag-${pipeline}`;
    this.addClass('nbflow-dag-view');
    this.title.label = `DAG: ${pipeline}`;
    this.title.closable = true;
    this.runs = new RunsTable(pipeline, {
      showRun: id => this.showRun(id),
      compare: source => this.open.compare(source),
      refresh: () => void this.refresh()
    });
    for (const [view, label] of VIEWS) {
      const tab = h('button', { class: 'nbflow-view-tab', role: 'tab', 'data-view': view }, label);
      tab.onclick = () => this.showView(view);
      this.tabs.append(tab);
    }
    const body = h('div', { class: 'nbflow-dag-body' }, this.main, this.taskPane);
    this.node.append(this.header, this.waiting, this.status, this.tabs, body, h('h3', {}, 'Runs'), this.runs.node);
    this.main.addEventListener('click', ev => this.onSvgClick(ev));
    this.markTabs();
    void this.refresh();
  }

  /** Show a given run (null: follow the latest run). */
  showRun(runId: number | null): void {
    this.runId = runId;
    this.followLatest = runId === null;
    this.selectedTry = null;
    void this.refresh();
  }

  /** Switch to one of the views (graph, grid, gantt, durations). */
  showView(view: View): void {
    this.view = view;
    this.markTabs();
    void this.refresh();
  }

  /** Open a task's try of a run in the task pane (a grid cell or a Gantt bar was clicked). */
  openTry(runId: number, task: string, tryNumber: number | null): void {
    this.runId = runId;
    this.followLatest = false;
    this.selectedTask = task;
    this.selectedTry = tryNumber;
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

  private markTabs(): void {
    this.tabs.querySelectorAll('button').forEach(b => {
      const on = b.dataset.view === this.view;
      b.classList.toggle('nbflow-view-tab-active', on);
      b.setAttribute('aria-selected', String(on));
    });
    this.node.dataset.view = this.view;
  }

  /** Fetch what the current view needs; poll again while the run is unfinished. */
  async refresh(): Promise<void> {
    if (this.isDisposed) {
      return;
    }
    if (this.busy) {
      this.again = true;
      return;
    }
    this.busy = true;
    this.stop();
    let live = false;
    try {
      const q = this.runId !== null && !this.followLatest ? `?run=${this.runId}` : '';
      const graph = await request<IGraph>(pipelinePath(this.pipeline, `graph${q}`));
      this.runId = graph.run ? graph.run.id : null;
      this.paramTypes = graph.param_types;
      live = !!graph.run && !FINISHED.has(graph.run.state);
      this.renderHeader(graph);
      const details =
        this.runId !== null && (this.selectedTask || this.view === 'gantt')
          ? await request<IRunDetails>(`runs/${this.runId}`)
          : null;
      await this.renderMain(graph, details, q);
      await this.runs.render(this.runId, this.paramTypes);
      if (this.selectedTask && details) {
        await this.renderTask(graph, details);
      } else {
        this.taskPane.replaceChildren(
          h('div', { class: 'nbflow-hint' }, 'Click a task to see its tries, log and actions.')
        );
      }
      this.status.textContent = '';
    } catch (err) {
      this.status.textContent = err instanceof ApiError ? `${err.status}: ${err.message}` : String(err);
      live = true; // try again: the server may be restarting
    } finally {
      this.busy = false;
    }
    if (this.again) {
      this.again = false;
      void this.refresh();
      return;
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
        { class: `nbflow-badge nbflow-state-${run ? run.state : 'none'}`, 'data-run-state': run ? run.state : 'none' },
        run ? `run ${run.id}: ${state}` : state
      ),
      ...(run && !FINISHED.has(run.state) ? [cancel] : []),
      ...(this.followLatest ? [] : [latest])
    );
    if (graph.import_error) {
      this.header.append(
        h('div', { class: 'nbflow-import-error' }, `Broken file: ${importErrorText(graph.import_error)}`)
      );
    }
    this.waiting.textContent = graph.waiting || '';
    if (run && run.trigger === 'asset') {
      void this.renderLineage(run.id);
    }
  }

  /** An asset-triggered run's lineage under the header: the updates it consumed, by producing run. */
  private async renderLineage(runId: number): Promise<void> {
    const details = await request<IRunDetails>(`runs/${runId}`);
    const updates = details.consumed.map(c => `${c.asset} (${c.pipeline} run ${c.run_id})`);
    if (this.runId !== runId) {
      return; // another run is shown by now
    }
    this.header.querySelector('.nbflow-run-lineage')?.remove();
    this.header.append(
      h('div', { class: 'nbflow-run-lineage' }, `Triggered by asset updates: ${updates.join(', ') || 'none'}`)
    );
  }

  private async renderMain(graph: IGraph, details: IRunDetails | null, q: string): Promise<void> {
    const order = graph.definition.tasks.map(t => t.id);
    if (this.view === 'graph') {
      const folded = [...this.collapsed].map(encodeURIComponent).join(',');
      const query = folded ? `${q ? `${q}&` : '?'}collapsed=${folded}` : q;
      const svg = await request<string>(pipelinePath(this.pipeline, `graph.svg${query}`));
      const box = h('div', { class: 'nbflow-dag-svg', 'data-run-state': graph.run ? graph.run.state : 'none' });
      box.innerHTML = svg;
      this.main.replaceChildren(box);
      this.markSelected();
    } else if (this.view === 'gantt') {
      this.main.replaceChildren(
        details
          ? ganttChart(details.attempts, order, (r, t, k) => this.openTry(r, t, k), details.run.id)
          : h('div', { class: 'nbflow-empty' }, 'No runs yet.')
      );
    } else {
      const grid = await request<IGrid>(pipelinePath(this.pipeline, `grid?limit=${GRID_RUNS}`));
      const schedule = h(
        'div',
        { class: 'nbflow-schedule-text' },
        `Schedule: ${grid.schedule_text}${grid.next_run ? ` · next run ${fmtTime(grid.next_run)}` : ''}`
      );
      const chart =
        this.view === 'grid' ? gridChart(grid, (r, t, k) => this.openTry(r, t, k), this.runId) : durationChart(grid);
      this.main.replaceChildren(schedule, chart);
    }
  }

  private onSvgClick(ev: MouseEvent): void {
    const group = groupOf(ev.target as Element);
    if (group !== null) {
      this.toggleGroup(group);
      return;
    }
    const node = (ev.target as Element).closest('g.node');
    if (!node || !node.id.startsWith('task-')) {
      return;
    }
    this.selectedTask = node.id.slice('task-'.length);
    this.selectedTry = null;
    this.markSelected();
    void this.refresh();
  }

  /** Collapse a task group into one node, or expand it again. */
  toggleGroup(group: string): void {
    if (!this.collapsed.delete(group)) {
      this.collapsed.add(group);
    }
    void this.refresh();
  }

  private markSelected(): void {
    const node = this.selectedTask ? mappedTaskOf(this.selectedTask) : null; // an instance: its mapped task's node
    this.main
      .querySelectorAll('g.node')
      .forEach(n => n.classList.toggle('nbflow-node-selected', n.id === `task-${node}`));
  }

  private async renderTask(graph: IGraph, details: IRunDetails): Promise<void> {
    const task = this.selectedTask!;
    const runId = details.run.id;
    const ti = details.tasks.find(t => t.task_id === task);
    const def = graph.definition.tasks.find(t => t.id === mappedTaskOf(task));
    if (!ti || !def) {
      this.taskPane.replaceChildren(h('div', {}, `task ${task}: not in run ${runId}`));
      return;
    }
    const attempts = details.attempts.filter(a => a.task_id === task);
    const attempt: IAttempt | undefined =
      attempts.find(a => a.try_number === this.selectedTry) ?? attempts[attempts.length - 1];
    const tryNo = attempt ? attempt.try_number : null;
    let tail = '';
    if (attempt) {
      try {
        const log = await request<ILogChunk>(taskPath(runId, task, `log?tail=${LOG_LINES}&try=${tryNo}`));
        tail = (log.truncated ? '…' : '') + log.text;
      } catch (err) {
        tail = `(no log: ${(err as Error).message})`;
      }
    }
    const runDone = FINISHED.has(details.run.state);
    const picker = h('select', { class: 'nbflow-try-picker', 'aria-label': 'try' });
    for (const a of attempts) {
      const opt = h('option', { value: String(a.try_number) }, `try ${a.try_number}: ${a.state}`);
      opt.selected = a.try_number === tryNo;
      picker.append(opt);
    }
    picker.onchange = () => {
      this.selectedTry = Number(picker.value);
      void this.refresh();
    };
    const buttons: HTMLElement[] = [];
    const button = (cls: string, label: string, onclick: () => void, kind = '') => {
      const b = h('button', { class: `jp-Button jp-mod-styled ${kind} ${cls}` }, label);
      b.onclick = onclick;
      buttons.push(b);
    };
    if (attempt?.output_uri) {
      button(
        'nbflow-open-output',
        'Open output notebook',
        () => void this.openOutput(runId, task, tryNo),
        'jp-mod-accept'
      );
      const html = h(
        'a',
        {
          class: 'jp-Button jp-mod-styled nbflow-export-html',
          href: apiUrl(taskPath(runId, task, `output.html?try=${tryNo}&download=1`)),
          download: ''
        },
        'Export as HTML'
      );
      buttons.push(html);
      if (attempt.html_export) {
        // the page the task's export="html" wrote beside its output notebook
        buttons.push(
          h(
            'a',
            {
              class: 'jp-Button jp-mod-styled nbflow-exported-html',
              href: apiUrl(taskPath(runId, task, `export.html?try=${tryNo}&download=1`)),
              download: ''
            },
            'Download HTML export'
          )
        );
      }
      if (attempt.state === 'failed') {
        button('nbflow-debug', 'Debug this try', () => void this.debug(runId, task, tryNo));
      }
    }
    if (runDone) {
      button('nbflow-retry', 'Clear…', () => void this.clear(runId, task));
      if (FINISHED.has(ti.state)) {
        if (ti.state !== 'success') {
          button('nbflow-mark-success', 'Mark success', () => void this.mark(runId, task, 'success'));
        }
        if (ti.state !== 'failed') {
          button('nbflow-mark-failed', 'Mark failed', () => void this.mark(runId, task, 'failed'));
        }
      }
    }
    const logLinks = h('div', { class: 'nbflow-buttons' });
    if (attempt) {
      const full = h('button', { class: 'jp-Button jp-mod-styled nbflow-full-log' }, 'Full log');
      full.onclick = () => this.open.log(runId, task, tryNo);
      const download = h(
        'a',
        {
          class: 'jp-Button jp-mod-styled nbflow-download-log',
          href: apiUrl(taskPath(runId, task, `log.txt?try=${tryNo}`)),
          download: ''
        },
        'Download log'
      );
      logLinks.append(full, download);
    }
    const error = attempt && attempt.state !== 'success' && (attempt.message || attempt.evalue);
    this.taskPane.replaceChildren(
      h('h3', {}, task),
      h('div', {}, def.label),
      h('div', {}, 'state: ', h('span', { class: `nbflow-badge nbflow-state-${ti.state}` }, ti.state)),
      h(
        'div',
        { class: 'nbflow-tries' },
        ti.map_count != null
          ? `mapped into ${ti.map_count} instances`
          : ti.try_number
            ? `try ${tryNo} of ${Math.max(ti.max_tries, ti.try_number)} `
            : 'not tried yet',
        ...(attempts.length > 1 ? [picker] : [])
      ),
      h(
        'div',
        {},
        `duration: ${attempt?.start_date ? duration(attempt.start_date, attempt.end_date) : ti.duration != null ? fmtSeconds(ti.duration) : '-'}`
      ),
      ...(error
        ? [h('div', { class: 'nbflow-error' }, `${attempt.reason || 'error'}: ${error}`)]
        : ti.error && ti.state !== 'success'
          ? [h('div', { class: 'nbflow-error' }, `${ti.reason || ti.state}: ${ti.error}`)]
          : []),
      ...(ti.note ? [h('div', { class: 'nbflow-note' }, ti.note)] : []),
      ...whyLine(ti),
      ...this.instances(details, ti),
      // the traceback with library frames folded, when any were (else the log tail below shows it as it is)
      ...(attempt?.traceback_short && attempt.traceback_short !== attempt.traceback && attempt.state !== 'success'
        ? [
            h(
              'pre',
              { class: 'nbflow-traceback', title: 'library frames folded: the full traceback is in the log' },
              attempt.traceback_short
            )
          ]
        : []),
      h('div', { class: 'nbflow-buttons nbflow-task-actions' }, ...buttons),
      this.artifacts(details, task, tryNo),
      logLinks,
      ti.map_count != null
        ? h('div', { class: 'nbflow-note' }, 'each instance has its own tries, log and output: click one above')
        : h('pre', { class: 'nbflow-log' }, attempt ? tail || '(empty log)' : '(not run yet: no log)')
    );
  }

  /** A mapped task's instances (a clicked node "expands" here): each with its values and state;
   * clicking one opens it in this pane. An instance links back to its mapped task. */
  private instances(details: IRunDetails, ti: ITaskInstance): HTMLElement[] {
    const open = (task: string) => () => {
      this.selectedTask = task;
      this.selectedTry = null;
      void this.refresh();
    };
    if (ti.map_parent) {
      const back = h('a', { class: 'nbflow-map-parent', href: '#' }, `instance ${ti.map_index} of ${ti.map_parent}`);
      back.onclick = ev => {
        ev.preventDefault();
        open(ti.map_parent!)();
      };
      return [h('div', {}, back, ` · ${fmtValues(ti.map_values)}`)];
    }
    if (ti.map_count == null) {
      return [];
    }
    const kids = details.tasks.filter(t => t.map_parent === ti.task_id);
    const rows = kids.map(k => {
      const row = h(
        'tr',
        { class: 'nbflow-instance', 'data-task': k.task_id },
        h('td', {}, k.task_id),
        h('td', {}, fmtValues(k.map_values)),
        h('td', {}, h('span', { class: `nbflow-badge nbflow-state-${k.state}` }, k.state))
      );
      row.onclick = open(k.task_id);
      return row;
    });
    const done = kids.filter(k => FINISHED.has(k.state)).length;
    return [
      h('div', { class: 'nbflow-instances-title' }, `${done}/${kids.length} instances finished`),
      h('table', { class: 'nbflow-instances' }, h('tbody', {}, ...rows))
    ];
  }

  /** The try's artifacts with their sizes; small JSON values inline (read through the drive). */
  private artifacts(details: IRunDetails, task: string, tryNo: number | null): HTMLElement {
    const rows = details.artifacts.filter(a => a.task_id === task && a.try_number === tryNo);
    if (!rows.length) {
      return h('div');
    }
    const list = h('ul', { class: 'nbflow-artifacts' });
    for (const a of rows) {
      const value = h('code', { class: 'nbflow-artifact-value' });
      list.append(h('li', {}, h('b', {}, a.name), ` ${a.type}, ${fmtBytes(a.size)} `, value));
      if (a.type === 'json' && a.size <= INLINE_JSON && a.path) {
        void request<{ content: string }>(`contents/${a.path.replace(/^[^:]+:/, '')}?type=file&format=text&content=1`)
          .then(m => (value.textContent = m.content))
          .catch(() => undefined);
      }
    }
    return h('div', {}, h('h4', {}, 'Artifacts'), list);
  }

  private async openOutput(runId: number, task: string, tryNo: number | null): Promise<void> {
    try {
      const out = await request<IOutput>(taskPath(runId, task, `output${tryNo ? `?try=${tryNo}` : ''}`));
      this.open.notebook(out.path);
    } catch (err) {
      void showErrorMessage('No output notebook', (err as Error).message);
    }
  }

  private async debug(runId: number, task: string, tryNo: number | null): Promise<void> {
    try {
      const copy = await post<IDebugCopy>(taskPath(runId, task, 'debug'), tryNo ? { try: tryNo } : {});
      this.open.notebook(copy.path);
    } catch (err) {
      void showErrorMessage('Debug this try', (err as Error).message);
    }
  }

  /** Clear with a confirmation that lists the tasks it will clear (a dry run of the server). */
  private async clear(runId: number, task: string): Promise<void> {
    const downstream = h('input', { type: 'checkbox', class: 'nbflow-clear-downstream' });
    const upstream = h('input', { type: 'checkbox', class: 'nbflow-clear-upstream' });
    downstream.checked = true;
    const affected = h('div', { class: 'nbflow-clear-list' });
    const preview = async () => {
      try {
        const dry = await post<ICleared>(taskPath(runId, task, 'clear'), {
          downstream: downstream.checked,
          upstream: upstream.checked,
          dry_run: true
        });
        affected.replaceChildren(
          h('div', {}, `These ${dry.cleared.length} task(s) of run ${runId} will run again:`),
          h('ul', {}, ...dry.cleared.map(t => h('li', { 'data-task': t }, t)))
        );
      } catch (err) {
        affected.textContent = (err as Error).message;
      }
    };
    downstream.onchange = upstream.onchange = () => void preview();
    await preview();
    const body = new Widget({
      node: h(
        'div',
        { class: 'nbflow-clear-dialog' },
        h('label', {}, downstream, ' and what depends on it (downstream)'),
        h('label', {}, upstream, ' and what it depends on (upstream)'),
        affected
      )
    });
    const result = await showDialog({
      title: `Clear ${task}?`,
      body,
      buttons: [Dialog.cancelButton(), Dialog.warnButton({ label: 'Clear' })]
    });
    if (result.button.accept) {
      await this.act(() =>
        post(taskPath(runId, task, 'clear'), { downstream: downstream.checked, upstream: upstream.checked })
      );
    }
  }

  private async mark(runId: number, task: string, state: 'success' | 'failed'): Promise<void> {
    const result = await showDialog({
      title: `Mark ${task} ${state}?`,
      body: `Task ${task} of run ${runId} becomes ${state} (no try runs); the run's state follows from its tasks. Tasks downstream keep their state: clear them to run them again.`,
      buttons: [Dialog.cancelButton(), Dialog.okButton({ label: `Mark ${state}` })]
    });
    if (result.button.accept) {
      await this.act(() => post(taskPath(runId, task, 'mark'), { state }));
    }
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
/** The mapped task an instance id ``train[2]`` belongs to (any other id: itself). */
/** The task group a click in the picture toggles: the label of an expanded group (a graphviz
 * cluster `<g id="group-ID" class="cluster">`) or the node of a collapsed one. */
function groupOf(target: Element): string | null {
  const cluster = target.closest('g.cluster');
  const hit = cluster && target.closest('text') ? cluster : target.closest('g.nbflow-group-collapsed');
  return hit && hit.id.startsWith('group-') ? hit.id.slice('group-'.length) : null;
}

function mappedTaskOf(task: string): string {
  return task.replace(/\[\d+\]$/, '');
}

/** A mapped instance's values: ``C=0.1, penalty=l1``. */
function fmtValues(values: { [key: string]: unknown } | null | undefined): string {
  return Object.entries(values ?? {})
    .map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`)
    .join(', ');
}

function whyLine(ti: ITaskInstance): HTMLElement[] {
  if (ti.state === 'cached' && ti.reused_run_id != null) {
    return [h('div', { class: 'nbflow-why' }, `reused from run ${ti.reused_run_id}, try ${ti.reused_try}`)];
  }
  return ti.why ? [h('div', { class: 'nbflow-why' }, `ran: ${ti.why}`)] : [];
}
