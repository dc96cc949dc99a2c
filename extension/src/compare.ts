/**
 * The Compare view (main area): runs side by side from `GET compare` (a sweep's runs, or runs
 * picked in a DAG view's runs table): their parameters and metrics in a table, a chart of a
 * metric (y) against a parameter (x) with a log x axis when x spans decades, and the diff of
 * two runs' output notebooks of one notebook task, rendered by nbdime's own widgets from the
 * server's `GET runs/{run}/tasks/{task}/diff` (nbdime's Python diff).
 * Refreshed every 2 s while a compared run is unfinished.
 */
import { Panel, Widget } from '@lumino/widgets';
import type * as nbformat from '@jupyterlab/nbformat';
import type { IRenderMimeRegistry } from '@jupyterlab/rendermime';
import type { IDiffEntry } from 'nbdime/lib/diff/diffentries';
import { NotebookDiffModel } from 'nbdime/lib/diff/model';
import { NotebookDiffWidget } from 'nbdime/lib/diff/widget';

import { ApiError, FINISHED, IComparison, IGraph, INotebookDiff, h, pipelinePath, request, taskPath } from './api';
import { fmtValue, metricChart } from './charts';
import { paramText } from './runstable';

/** What is compared: a sweep's runs, or chosen runs. */
export type CompareSource = { sweep: number } | { runs: number[] };

const POLL_MS = 2000;

/** The tracker's key of a source: `sweep-3`, `runs-1,2,5`. */
export function compareKey(source: CompareSource): string {
  return 'sweep' in source ? `sweep-${source.sweep}` : `runs-${[...source.runs].sort((a, b) => a - b).join(',')}`;
}

export class CompareView extends Panel {
  readonly key: string;
  private data: IComparison | null = null;
  private x: string | null = null;
  private y: string | null = null;
  private timer: number | null = null;
  private tasksOf: string | null = null;
  private notebookTasks: string[] = [];
  private paramTypes: Record<string, string> = {};
  private page = h('div', { class: 'nbflow-compare-page' });
  private header = h('div', { class: 'nbflow-dag-header' });
  private status = h('div', { class: 'nbflow-status' });
  private table = h('div', { class: 'nbflow-compare-table-box' });
  private controls = h('div', { class: 'nbflow-compare-controls' });
  private chart = h('div', { class: 'nbflow-compare-chart' });
  private diffControls = h('div', { class: 'nbflow-diff-controls' });
  private diffStatus = h('div', { class: 'nbflow-diff-status' });
  private diffHost = new Panel();

  constructor(
    readonly source: CompareSource,
    private rendermime: IRenderMimeRegistry,
    private openRun: (pipeline: string, runId: number) => void
  ) {
    super();
    this.key = compareKey(source);
    this.id = `nbflow-compare-${this.key}`;
    this.addClass('nbflow-compare-view');
    this.title.label = 'sweep' in source ? `Compare: sweep ${source.sweep}` : `Compare: runs ${source.runs.join(', ')}`;
    this.title.closable = true;
    this.page.append(
      this.header,
      this.status,
      this.table,
      h('h3', {}, 'Chart'),
      this.controls,
      this.chart,
      h('h3', {}, 'Diff of output notebooks (nbdime)'),
      this.diffControls,
      this.diffStatus
    );
    this.addWidget(new Widget({ node: this.page }));
    this.diffHost.addClass('nbflow-diff-host');
    this.addWidget(this.diffHost);
    void this.refresh();
  }

  dispose(): void {
    if (this.timer !== null) {
      window.clearTimeout(this.timer);
    }
    super.dispose();
  }

  /** Fetch the comparison again; poll while a run is unfinished. */
  async refresh(): Promise<void> {
    if (this.timer !== null) {
      window.clearTimeout(this.timer);
      this.timer = null;
    }
    if (this.isDisposed) {
      return;
    }
    let live = false;
    try {
      const q = 'sweep' in this.source ? `sweep=${this.source.sweep}` : `runs=${this.source.runs.join(',')}`;
      const data = await request<IComparison>(`compare?${q}`);
      this.data = data;
      live = data.runs.some(r => !FINISHED.has(r.state));
      await this.loadTasks(data);
      this.render(data);
      this.status.textContent = live ? 'Some runs are still going: refreshing…' : '';
    } catch (err) {
      this.status.textContent = err instanceof ApiError ? `${err.status}: ${err.message}` : String(err);
      live = true;
    }
    if (live && !this.isDisposed) {
      this.timer = window.setTimeout(() => void this.refresh(), POLL_MS);
    }
  }

  /** The notebook tasks of the compared pipeline (once): what a diff may show. */
  private async loadTasks(data: IComparison): Promise<void> {
    const pipeline = data.sweep?.pipeline ?? data.runs[0]?.pipeline;
    if (!pipeline || pipeline === this.tasksOf) {
      return;
    }
    const graph = await request<IGraph>(pipelinePath(pipeline, 'graph'));
    this.paramTypes = graph.param_types;
    this.notebookTasks = graph.definition.tasks.filter(t => t.kind === 'notebook' || t.kind === 'cell').map(t => t.id);
    this.tasksOf = pipeline;
    this.renderDiffControls(data);
  }

  private render(data: IComparison): void {
    const sweep = data.sweep;
    const grid = sweep
      ? Object.entries(sweep.grid)
          .map(([k, vs]) => `${k} ∈ {${vs.map(v => paramText(v, this.paramTypes[k])).join(', ')}}`)
          .join(' × ')
      : '';
    this.header.replaceChildren(
      h(
        'span',
        { class: 'nbflow-dag-title' },
        sweep ? `Sweep ${sweep.id} of ${sweep.pipeline}` : `Runs ${data.runs.map(r => r.run_id).join(', ')}`
      ),
      ...(grid ? [h('span', { class: 'nbflow-compare-grid' }, grid)] : [])
    );
    this.renderTable(data);
    this.x = this.x && data.params.includes(this.x) ? this.x : (data.params[0] ?? null);
    this.y = this.y && data.metrics.includes(this.y) ? this.y : (data.metrics[0] ?? null);
    this.renderChart(data);
  }

  private renderTable(data: IComparison): void {
    const head = h(
      'tr',
      {},
      h('th', {}, 'run'),
      h('th', {}, 'state'),
      ...data.params.map(p => h('th', { class: 'nbflow-param-col', 'data-column': p }, p)),
      ...data.metrics.map(m => h('th', { class: 'nbflow-metric-col', 'data-column': m }, m))
    );
    const rows = data.runs.map(r => {
      const link = h('a', { href: '#', title: `open run ${r.run_id} in its DAG view` }, String(r.run_id));
      link.onclick = ev => {
        ev.preventDefault();
        this.openRun(r.pipeline, r.run_id);
      };
      return h(
        'tr',
        { 'data-run': String(r.run_id) },
        h('td', {}, link),
        h('td', {}, h('span', { class: `nbflow-badge nbflow-state-${r.state}` }, r.state)),
        ...data.params.map(p => h('td', { 'data-column': p }, paramText(r.params[p], this.paramTypes[p]))),
        ...data.metrics.map(m => h('td', { class: 'nbflow-metric-cell', 'data-column': m }, fmtValue(r.metrics[m])))
      );
    });
    this.table.replaceChildren(
      h('table', { class: 'nbflow-table nbflow-compare-table' }, h('thead', {}, head), h('tbody', {}, ...rows))
    );
  }

  private renderChart(data: IComparison): void {
    const pick = (cls: string, label: string, options: string[], value: string | null, set: (v: string) => void) => {
      const select = h('select', { class: `jp-mod-styled ${cls}`, 'aria-label': label });
      for (const o of options) {
        const opt = h('option', { value: o }, o);
        opt.selected = o === value;
        select.append(opt);
      }
      select.onchange = () => {
        set(select.value);
        this.renderChart(this.data!);
      };
      return h('label', { class: 'nbflow-compare-pick' }, `${label} `, select);
    };
    this.controls.replaceChildren(
      pick('nbflow-chart-x', 'x (parameter)', data.params, this.x, v => (this.x = v)),
      pick('nbflow-chart-y', 'y (metric)', data.metrics, this.y, v => (this.y = v))
    );
    if (!this.x || !this.y) {
      this.chart.replaceChildren(
        h(
          'div',
          { class: 'nbflow-empty' },
          !this.x ? 'These runs have no parameters.' : 'No metrics yet: a task records one with nbflow.metric().'
        )
      );
      return;
    }
    const title = data.sweep ? `sweep ${data.sweep.id}` : `${data.runs.length} runs`;
    this.chart.replaceChildren(metricChart(data.runs, data.params, this.x, this.y, title));
  }

  private renderDiffControls(data: IComparison): void {
    if (!this.notebookTasks.length) {
      this.diffControls.replaceChildren(
        h(
          'div',
          { class: 'nbflow-empty' },
          'This pipeline has no notebook task: there are no output notebooks to diff.'
        )
      );
      return;
    }
    const ids = data.runs.map(r => r.run_id);
    const runPick = (cls: string, label: string, initial: number | undefined) => {
      const select = h('select', { class: `jp-mod-styled ${cls}`, 'aria-label': label });
      for (const id of ids) {
        const opt = h('option', { value: String(id) }, `run ${id}`);
        opt.selected = id === initial;
        select.append(opt);
      }
      return select;
    };
    const base = runPick('nbflow-diff-base', 'base run', ids[0]);
    const other = runPick('nbflow-diff-other', 'other run', ids[1] ?? ids[0]);
    const task = h('select', { class: 'jp-mod-styled nbflow-diff-task', 'aria-label': 'notebook task' });
    for (const t of this.notebookTasks) {
      task.append(h('option', { value: t }, t));
    }
    const show = h('button', { class: 'jp-Button jp-mod-styled jp-mod-accept nbflow-diff-show' }, 'Show diff');
    show.onclick = () => void this.showDiff(task.value, Number(base.value), Number(other.value));
    this.diffControls.replaceChildren(
      h('label', {}, 'task ', task),
      h('label', {}, ' from ', base),
      h('label', {}, ' to ', other),
      show
    );
  }

  /** Diff `task`'s output notebook of run `base` (left) against that of run `other` (right). */
  async showDiff(task: string, base: number, other: number): Promise<void> {
    for (const w of [...this.diffHost.widgets]) {
      w.dispose();
    }
    this.diffStatus.textContent = `Diffing ${task}: run ${base} → run ${other}…`;
    this.diffStatus.classList.remove('nbflow-error');
    let found: INotebookDiff;
    try {
      found = await request<INotebookDiff>(taskPath(other, task, `diff?against=${base}`));
    } catch (err) {
      this.diffStatus.textContent = err instanceof ApiError ? `${err.status}: ${err.message}` : String(err);
      this.diffStatus.classList.add('nbflow-error');
      return;
    }
    const model = new NotebookDiffModel(
      found.base as unknown as nbformat.INotebookContent,
      found.diff as unknown as IDiffEntry[]
    );
    const widget = new NotebookDiffWidget({ model, rendermime: this.rendermime });
    const root = new Panel();
    root.addClass('nbdime-root');
    root.node.dataset.task = task;
    root.addWidget(
      new Widget({
        node: h(
          'div',
          { class: 'nbflow-diff-banner' },
          h('span', { class: 'nbflow-diff-side' }, `run ${found.base_run} · try ${found.base_try}`),
          h('span', { class: 'nbflow-diff-side' }, `run ${found.remote_run} · try ${found.remote_try}`)
        )
      })
    );
    root.addWidget(widget);
    this.diffHost.addWidget(root);
    try {
      await widget.init();
      const changed = root.node.querySelectorAll('.jp-Cell-diff:not(.jp-Diff-unchanged)').length;
      this.diffStatus.textContent = `${task}: ${changed} cell(s) differ between run ${base} and run ${other}.`;
    } catch (err) {
      this.diffStatus.textContent = `nbdime could not render the diff: ${(err as Error).message}`;
      this.diffStatus.classList.add('nbflow-error');
    }
  }
}
