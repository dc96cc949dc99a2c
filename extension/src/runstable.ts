/**
 * The runs table of a DAG view: a page of the pipeline's runs with a column per parameter and
 * per chosen metric (the "Metrics" picker; the first metric by default), sortable by clicking a
 * header (the page's rows), a sweep's runs linked to the sweep's Compare view, and checkboxes
 * to compare the runs picked (across pages).
 */
import { IRunPage, IRunWithCounts, duration, fmtTime, h, pipelinePath, request } from './api';
import { fmtValue } from './charts';
import type { CompareSource } from './compare';

/** What the table asks of its view. */
export interface IRunsTableHooks {
  showRun(runId: number): void;
  compare(source: CompareSource): void;
  refresh(): void;
}

/** Runs per page. */
export const RUNS_PAGE = 10;

type Column = {
  key: string;
  label: string;
  cls?: string;
  value: (r: IRunWithCounts) => unknown;
  cell: (r: IRunWithCounts) => Node | string;
};

export class RunsTable {
  readonly node = h('div', { class: 'nbflow-runs' });
  private offset = 0;
  private selected = new Set<number>();
  private shown: string[] | null = null;
  private sortKey: string | null = null;
  private sortDir = 1;
  private pickerOpen = false;

  constructor(
    private pipeline: string,
    private hooks: IRunsTableHooks
  ) {}

  /** Fetch and draw the current page; `current` is the run the view shows. */
  async render(current: number | null, paramTypes: Record<string, string>): Promise<void> {
    const page = await request<IRunPage>(
      pipelinePath(this.pipeline, `runs?limit=${RUNS_PAGE + 1}&offset=${this.offset}`)
    );
    const more = page.runs.length > RUNS_PAGE;
    const runs = page.runs.slice(0, RUNS_PAGE);
    const params = [...new Set([...Object.keys(paramTypes), ...runs.flatMap(r => Object.keys(r.params || {}))])];
    const metrics = [...new Set(runs.flatMap(r => Object.keys(r.metrics || {})))];
    if (this.shown === null && metrics.length) {
      this.shown = metrics.slice(0, 1);
    }
    const shown = (this.shown ?? []).filter(m => metrics.includes(m));
    const columns = this.columns(params, shown, paramTypes);
    const sorted = this.sorted(runs, columns);
    const head = h(
      'tr',
      {},
      h('th', { class: 'nbflow-select-col' }, ''),
      ...columns.map(c => {
        const arrow = this.sortKey === c.key ? (this.sortDir > 0 ? ' ▲' : ' ▼') : '';
        const th = h(
          'th',
          { class: `nbflow-sortable ${c.cls ?? ''}`, 'data-column': c.key, title: `sort by ${c.label}` },
          c.label + arrow
        );
        th.onclick = () => {
          this.sortDir = this.sortKey === c.key ? -this.sortDir : 1;
          this.sortKey = c.key;
          this.hooks.refresh();
        };
        return th;
      })
    );
    const rows = sorted.map(r => {
      const box = h('input', { type: 'checkbox', class: 'nbflow-run-select', 'aria-label': `select run ${r.id}` });
      box.checked = this.selected.has(r.id);
      box.onclick = ev => ev.stopPropagation();
      box.onchange = () => {
        if (box.checked) {
          this.selected.add(r.id);
        } else {
          this.selected.delete(r.id);
        }
        this.markCompare();
      };
      const tr = h(
        'tr',
        { class: r.id === current ? 'nbflow-selected' : '', 'data-run': String(r.id) },
        h('td', { class: 'nbflow-select-col' }, box),
        ...columns.map(c => h('td', { class: c.cls ?? '', 'data-column': c.key }, c.cell(r)))
      );
      tr.onclick = () => this.hooks.showRun(r.id);
      return tr;
    });
    const prev = h('button', { class: 'jp-Button jp-mod-styled nbflow-page-prev' }, 'Newer');
    const next = h('button', { class: 'jp-Button jp-mod-styled nbflow-page-next' }, 'Older');
    prev.toggleAttribute('disabled', this.offset === 0);
    next.toggleAttribute('disabled', !more);
    prev.onclick = () => {
      this.offset = Math.max(0, this.offset - RUNS_PAGE);
      this.hooks.refresh();
    };
    next.onclick = () => {
      this.offset += RUNS_PAGE;
      this.hooks.refresh();
    };
    const label = runs.length ? `runs ${this.offset + 1}–${this.offset + runs.length}` : 'no runs';
    this.node.replaceChildren(
      h('div', { class: 'nbflow-buttons nbflow-runs-tools' }, this.picker(metrics, shown), this.compareButton()),
      h('table', { class: 'nbflow-table nbflow-runs-table' }, h('thead', {}, head), h('tbody', {}, ...rows)),
      h('div', { class: 'nbflow-buttons nbflow-pager' }, prev, h('span', { class: 'nbflow-page-label' }, label), next)
    );
    this.markCompare();
  }

  private columns(params: string[], metrics: string[], types: Record<string, string>): Column[] {
    const text = (v: unknown) => fmtValue(v);
    return [
      { key: 'run', label: 'run', value: r => r.id, cell: r => String(r.id) },
      {
        key: 'state',
        label: 'state',
        value: r => r.state,
        cell: r => h('span', { class: `nbflow-badge nbflow-state-${r.state}` }, r.state)
      },
      { key: 'trigger', label: 'trigger', value: r => r.trigger, cell: r => r.trigger },
      {
        key: 'logical',
        label: 'logical date',
        value: r => r.logical_date,
        cell: r => fmtTime(r.logical_date)
      },
      {
        key: 'started',
        label: 'started',
        value: r => r.started_at || r.created_at,
        cell: r => fmtTime(r.started_at || r.created_at)
      },
      {
        key: 'duration',
        label: 'duration',
        value: r =>
          r.started_at ? Date.parse(r.ended_at ?? new Date().toISOString()) - Date.parse(r.started_at) : null,
        cell: r => duration(r.started_at, r.ended_at)
      },
      {
        key: 'sweep',
        label: 'sweep',
        value: r => r.sweep_id ?? null,
        cell: r => (r.sweep_id != null ? this.sweepLink(r.sweep_id) : '')
      },
      ...params.map((p): Column => ({
        key: `param:${p}`,
        label: p,
        cls: 'nbflow-param-col',
        value: r => (r.params || {})[p],
        cell: r => paramText((r.params || {})[p], types[p])
      })),
      ...metrics.map((m): Column => ({
        key: `metric:${m}`,
        label: m,
        cls: 'nbflow-metric-col',
        value: r => (r.metrics || {})[m],
        cell: r => text((r.metrics || {})[m])
      }))
    ];
  }

  /** The page's rows in the chosen order (numbers by value, the rest as text; empty cells last). */
  private sorted(runs: IRunWithCounts[], columns: Column[]): IRunWithCounts[] {
    const column = columns.find(c => c.key === this.sortKey);
    if (!column) {
      return runs;
    }
    const key = (r: IRunWithCounts) => column.value(r);
    return [...runs].sort((a, b) => {
      const va = key(a),
        vb = key(b);
      if (va == null || vb == null) {
        return va == null ? (vb == null ? 0 : 1) : -1;
      }
      const order =
        typeof va === 'number' && typeof vb === 'number' ? va - vb : fmtValue(va).localeCompare(fmtValue(vb));
      return order * this.sortDir;
    });
  }

  private sweepLink(sweep: number): HTMLElement {
    const link = h(
      'a',
      { href: '#', class: 'nbflow-sweep-link', title: `compare the runs of sweep ${sweep}` },
      `sweep ${sweep}`
    );
    link.onclick = ev => {
      ev.preventDefault();
      ev.stopPropagation();
      this.hooks.compare({ sweep });
    };
    return link;
  }

  /** "Metrics ▸": a checkbox per metric column of the page. */
  private picker(metrics: string[], shown: string[]): HTMLElement {
    const details = h('details', { class: 'nbflow-metric-picker' });
    details.open = this.pickerOpen;
    details.ontoggle = () => (this.pickerOpen = details.open);
    details.append(h('summary', {}, `Metrics (${shown.length} of ${metrics.length} shown)`));
    if (!metrics.length) {
      details.append(h('div', { class: 'nbflow-hint' }, 'No run on this page recorded a metric (nbflow.metric).'));
    }
    for (const m of metrics) {
      const box = h('input', { type: 'checkbox', 'data-metric': m });
      box.checked = shown.includes(m);
      box.onchange = () => {
        const now = new Set(this.shown ?? []);
        if (box.checked) {
          now.add(m);
        } else {
          now.delete(m);
        }
        this.shown = metrics.filter(x => now.has(x)).concat([...now].filter(x => !metrics.includes(x)));
        this.hooks.refresh();
      };
      details.append(h('label', { class: 'nbflow-metric-choice' }, box, ` ${m}`));
    }
    return details;
  }

  private compareButton(): HTMLElement {
    const button = h('button', { class: 'jp-Button jp-mod-styled jp-mod-accept nbflow-compare-selected' }, 'Compare');
    button.onclick = () => {
      if (this.selected.size >= 2) {
        this.hooks.compare({ runs: [...this.selected].sort((a, b) => a - b) });
      }
    };
    return button;
  }

  private markCompare(): void {
    const button = this.node.querySelector<HTMLButtonElement>('.nbflow-compare-selected');
    if (button) {
      const n = this.selected.size;
      button.toggleAttribute('disabled', n < 2);
      button.textContent = n ? `Compare ${n} selected` : 'Compare (select runs)';
      button.title =
        n < 2 ? 'tick two runs or more to compare them' : `runs ${[...this.selected].sort((a, b) => a - b).join(', ')}`;
    }
  }
}

/** A parameter's value; a float keeps its point (2.0, not 2: JSON cannot tell them apart, the
 * declared types can). */
export function paramText(v: unknown, type: string | undefined): string {
  if (v === undefined) {
    return '';
  }
  return type === 'float' && Number.isInteger(v)
    ? (v as number).toFixed(1)
    : typeof v === 'string'
      ? v
      : JSON.stringify(v);
}
