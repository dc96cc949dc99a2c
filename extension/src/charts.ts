/**
 * History at a glance, drawn with plain DOM and SVG (no charting library, nothing loaded at
 * run time; colours come from the theme's CSS variables and the `nbflow-state-*` classes):
 *
 * - the grid: tasks × runs (newest run on the left), each cell the task's state in that run;
 * - the Gantt chart of one run: per task and try, a queued bar and a running bar;
 * - the task-duration chart: each task's duration over the runs of the grid, one line per task;
 * - the Compare view's chart: a metric (y) against a parameter (x) over compared runs, one line
 *   per combination of the other parameters that differ; a log x axis when x spans decades.
 */
import { IAttempt, IGrid, fmtSeconds, fmtTime, h, parseTime } from './api';

const SVG = 'http://www.w3.org/2000/svg';

/**
 * Axis marks in seconds at a round step (1, 2 or 5 × a power of ten) from 0 to `top`, the first
 * mark at or above `max`: at most 6 marks, labelled with as many decimals as the step needs.
 */
export function niceTicks(max: number): { ticks: number[]; top: number; label: (s: number) => string } {
  max = Math.max(max, 0.01);
  const rough = max / 4;
  const power = 10 ** Math.floor(Math.log10(rough));
  const step = [1, 2, 5, 10].map(m => m * power).find(s => s >= rough) ?? 10 * power;
  const count = Math.max(1, Math.ceil(max / step - 1e-9));
  const ticks = Array.from({ length: count + 1 }, (_, i) => i * step);
  const decimals = step >= 1 ? 0 : step >= 0.1 ? 1 : step >= 0.01 ? 2 : 3;
  const top = ticks[ticks.length - 1];
  const label = (s: number) => (top >= 120 ? fmtSeconds(s) : `${s.toFixed(decimals)} s`);
  return { ticks, top, label };
}

/** An SVG element with attributes and children. */
export function svg<K extends keyof SVGElementTagNameMap>(
  tag: K,
  attrs: Record<string, string | number> = {},
  ...children: (Node | string)[]
): SVGElementTagNameMap[K] {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) {
    el.setAttribute(k, String(v));
  }
  for (const c of children) {
    el.append(c);
  }
  return el;
}

/** Called with the run, the task and its try when a grid cell or a Gantt bar is clicked. */
export type OpenTry = (runId: number, task: string, tryNumber: number | null) => void;

/** The grid: one row per task, one column per run (newest first); a cell is a button. */
export function gridChart(grid: IGrid, open: OpenTry, selectedRun: number | null): HTMLElement {
  if (!grid.runs.length) {
    return h('div', { class: 'nbflow-empty' }, 'No runs yet.');
  }
  const head = h(
    'tr',
    {},
    h('th', { class: 'nbflow-grid-task' }, 'task'),
    ...grid.runs.map(r =>
      h(
        'th',
        { class: `nbflow-grid-run${r.id === selectedRun ? ' nbflow-selected' : ''}`, title: fmtTime(r.logical_date) },
        h('span', { class: `nbflow-grid-runstate nbflow-state-${r.state}` }, String(r.id))
      )
    )
  );
  const rows = grid.tasks.map(task =>
    h(
      'tr',
      {},
      h('th', { class: 'nbflow-grid-task' }, task),
      ...grid.runs.map(r => {
        const cell = r.cells[task];
        if (!cell) {
          return h('td', {}, '');
        }
        const tries = cell.try_number > 1 ? ` · try ${cell.try_number}` : '';
        const took = cell.duration != null ? ` · ${fmtSeconds(cell.duration)}` : '';
        const button = h('button', {
          class: `nbflow-grid-cell nbflow-state-${cell.state}`,
          title: `${task} · run ${r.id}: ${cell.state}${tries}${took}`,
          'data-run': String(r.id),
          'data-task': task,
          'data-state': cell.state,
          'aria-label': `${task} in run ${r.id}: ${cell.state}`
        });
        button.onclick = () => open(r.id, task, cell.try_number || null);
        return h('td', {}, button);
      })
    )
  );
  return h('table', { class: 'nbflow-grid' }, h('thead', {}, head), h('tbody', {}, ...rows));
}

/** The Gantt chart of one run: a row per try of each task, queued (pale) then running (its state). */
export function ganttChart(attempts: IAttempt[], order: string[], open: OpenTry, runId: number): HTMLElement {
  const rows = [...attempts].sort(
    (a, b) => order.indexOf(a.task_id) - order.indexOf(b.task_id) || a.try_number - b.try_number
  );
  const times = rows.flatMap(a => [a.queued_at, a.start_date, a.end_date].filter(Boolean).map(t => parseTime(t!)));
  if (!rows.length || !times.length) {
    return h('div', { class: 'nbflow-empty' }, 'No task of this run has started yet.');
  }
  const t0 = Math.min(...times);
  const t1 = Math.max(...times, ...rows.filter(a => !a.end_date).map(() => Date.now()));
  const axis = niceTicks(Math.max(t1 - t0, 1) / 1000);
  const span = axis.top * 1000; // the axis ends at a round mark past the last end
  const left = 150,
    width = 500,
    rowH = 22,
    top = 24;
  const x = (t: number) => left + ((t - t0) / span) * width;
  const W = left + width + 20,
    H = top + rows.length * rowH + 10;
  const chart = svg('svg', {
    class: 'nbflow-gantt',
    width: W,
    height: H,
    viewBox: `0 0 ${W} ${H}`, // scales with the pane instead of being cut
    role: 'img',
    'aria-label': `Gantt chart of run ${runId}`
  });
  for (const mark of axis.ticks) {
    const tx = x(t0 + mark * 1000);
    chart.append(
      svg('line', { x1: tx, x2: tx, y1: top - 6, y2: top + rows.length * rowH, class: 'nbflow-axis' }),
      svg('text', { x: tx, y: 12, class: 'nbflow-axis-label', 'text-anchor': 'middle' }, axis.label(mark))
    );
  }
  rows.forEach((a, i) => {
    const y = top + i * rowH;
    const queued = a.queued_at ? parseTime(a.queued_at) : null;
    const start = a.start_date ? parseTime(a.start_date) : null;
    const end = a.end_date ? parseTime(a.end_date) : Date.now();
    const bar = svg('g', { class: 'nbflow-gantt-row', 'data-task': a.task_id, 'data-try': a.try_number });
    bar.append(
      svg(
        'text',
        { x: left - 8, y: y + 15, 'text-anchor': 'end', class: 'nbflow-axis-label' },
        `${a.task_id} · try ${a.try_number}`
      )
    );
    if (queued !== null) {
      bar.append(
        svg('rect', {
          x: x(queued),
          y: y + 4,
          width: Math.max(1, x(start ?? end) - x(queued)),
          height: rowH - 8,
          class: 'nbflow-gantt-queued'
        })
      );
    }
    if (start !== null) {
      const took = (end - start) / 1000;
      bar.append(
        svg(
          'rect',
          {
            x: x(start),
            y: y + 2,
            width: Math.max(2, x(end) - x(start)),
            height: rowH - 4,
            rx: 3,
            class: `nbflow-gantt-bar nbflow-fill-${a.state}`
          },
          svg(
            'title',
            {},
            `${a.task_id} · try ${a.try_number}: ${a.state}, ${fmtSeconds(took)} (queued ${fmtTime(a.queued_at)}, started ${fmtTime(a.start_date)})`
          )
        )
      );
    }
    bar.addEventListener('click', () => open(runId, a.task_id, a.try_number));
    chart.append(bar);
  });
  return h(
    'div',
    { class: 'nbflow-chart' },
    chart,
    h(
      'div',
      { class: 'nbflow-legend' },
      h('span', { class: 'nbflow-swatch nbflow-gantt-queued-swatch' }),
      'queued ',
      h('span', { class: 'nbflow-swatch nbflow-fill-running' }),
      'running / finished (colour: state)'
    )
  );
}

const PALETTE = [
  '#1f77b4',
  '#ff7f0e',
  '#2ca02c',
  '#d62728',
  '#9467bd',
  '#8c564b',
  '#e377c2',
  '#7f7f7f',
  '#bcbd22',
  '#17becf'
];

/** Each task's duration over the grid's runs (oldest left), one line per task. */
export function durationChart(grid: IGrid): HTMLElement {
  const runs = [...grid.runs].reverse();
  const points = grid.tasks.map(task => runs.map(r => r.cells[task]?.duration ?? null));
  const all = points.flat().filter((d): d is number => d != null);
  if (runs.length < 1 || !all.length) {
    return h('div', { class: 'nbflow-empty' }, 'No finished task yet.');
  }
  const axis = niceTicks(Math.max(...all, 0.001));
  const max = axis.top;
  const left = 60,
    width = 600,
    height = 200,
    top = 10;
  const x = (i: number) => left + (runs.length === 1 ? width / 2 : (i / (runs.length - 1)) * width);
  const y = (d: number) => top + height - (d / max) * height;
  const W = left + width + 20,
    H = top + height + 30;
  const chart = svg('svg', {
    class: 'nbflow-durations',
    width: W,
    height: H,
    viewBox: `0 0 ${W} ${H}`,
    role: 'img',
    'aria-label': `task durations over the last ${runs.length} runs`
  });
  for (const d of axis.ticks) {
    chart.append(
      svg('line', { x1: left, x2: left + width, y1: y(d), y2: y(d), class: 'nbflow-axis' }),
      svg('text', { x: left - 6, y: y(d) + 4, 'text-anchor': 'end', class: 'nbflow-axis-label' }, axis.label(d))
    );
  }
  runs.forEach((r, i) =>
    chart.append(
      svg('text', { x: x(i), y: top + height + 18, 'text-anchor': 'middle', class: 'nbflow-axis-label' }, String(r.id))
    )
  );
  const legend = h('div', { class: 'nbflow-legend' });
  grid.tasks.forEach((task, k) => {
    const colour = PALETTE[k % PALETTE.length];
    const coords = points[k].map((d, i) => (d == null ? null : `${x(i)},${y(d)}`)).filter(Boolean);
    if (!coords.length) {
      return;
    }
    const line = svg('g', { class: 'nbflow-duration-line', 'data-task': task });
    line.append(svg('polyline', { points: coords.join(' '), fill: 'none', stroke: colour, 'stroke-width': 2 }));
    points[k].forEach((d, i) => {
      if (d != null) {
        line.append(
          svg(
            'circle',
            { cx: x(i), cy: y(d), r: 3, fill: colour },
            svg('title', {}, `${task}, run ${runs[i].id}: ${fmtSeconds(d)}`)
          )
        );
      }
    });
    chart.append(line);
    legend.append(h('span', { class: 'nbflow-swatch', style: `background:${colour}` }), `${task} `);
  });
  return h('div', { class: 'nbflow-chart' }, chart, legend);
}

/** One compared run as the metric chart takes it (a row of `GET compare`). */
export interface IChartRun {
  run_id: number;
  params: Record<string, unknown>;
  metrics: Record<string, unknown>;
}

const isNumber = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);

/**
 * Whether x values call for a log axis: all positive numbers spanning two decades or more
 * (the rule of `nbflow.api.compare.log_scale`, so the CLI's chart and this one agree).
 */
export function logScale(xs: unknown[]): boolean {
  const nums = xs.filter(isNumber);
  if (nums.length < 2 || nums.length !== xs.length || Math.min(...nums) <= 0) {
    return false;
  }
  return Math.log10(Math.max(...nums) / Math.min(...nums)) >= 2;
}

/** Round marks from at or below `lo` to at or above `hi` (1, 2 or 5 × a power of ten), about 6. */
export function valueTicks(lo: number, hi: number): number[] {
  if (hi - lo < 1e-12) {
    const pad = Math.abs(lo) * 0.1 || 1;
    lo -= pad;
    hi += pad;
  }
  const rough = (hi - lo) / 5;
  const power = 10 ** Math.floor(Math.log10(rough));
  const step = [1, 2, 5, 10].map(m => m * power).find(s => s >= rough) ?? 10 * power;
  const first = Math.floor(lo / step + 1e-9) * step;
  const out = [Number(first.toPrecision(12))];
  while (out[out.length - 1] < hi - step * 1e-9 || out.length < 2) {
    out.push(Number((first + out.length * step).toPrecision(12)));
  }
  return out;
}

/** A value as a label: JSON's spelling for anything but numbers and strings; up to 6 significant digits. */
export function fmtValue(v: unknown): string {
  if (v === undefined || v === null) {
    return '';
  }
  if (typeof v === 'number') {
    return Number.isInteger(v) ? String(v) : String(Number(v.toPrecision(6)));
  }
  return typeof v === 'string' ? v : JSON.stringify(v);
}

/**
 * Metric `y` against parameter `x` over `runs`: a point per run with a number for `y`, a line
 * per combination of the other parameters in `params` whose values differ between runs; a
 * numeric x axis (log when {@link logScale}), else one slot per distinct value.
 */
export function metricChart(runs: IChartRun[], params: string[], x: string, y: string, title: string): HTMLElement {
  const xs = runs.map(r => r.params[x]);
  const numeric = xs.every(isNumber);
  const logX = numeric && logScale(xs);
  const usable = runs.filter(r => isNumber(r.metrics[y]) && r.params[x] !== undefined);
  if (!usable.length) {
    return h('div', { class: 'nbflow-empty nbflow-metric-chart-empty' }, `No run has a number for ${y} yet.`);
  }
  const others = params.filter(p => p !== x && new Set(runs.map(r => JSON.stringify(r.params[p]))).size > 1);
  const groups = new Map<string, IChartRun[]>();
  for (const r of usable) {
    const key = others.map(p => `${p}=${fmtValue(r.params[p])}`).join(', ');
    groups.set(key, [...(groups.get(key) ?? []), r]);
  }
  const categories = [...new Set(xs.map(v => JSON.stringify(v)))];
  const left = 70,
    width = 560,
    height = 260,
    top = 30;
  const xv = (r: IChartRun) => r.params[x] as number;
  const nums = numeric ? usable.map(xv) : [];
  const [x0, x1] = numeric
    ? logX
      ? [Math.floor(Math.log10(Math.min(...nums))), Math.ceil(Math.log10(Math.max(...nums)))]
      : [Math.min(...nums), Math.max(...nums)]
    : [0, 0];
  const xTicks = numeric ? (logX ? range(x0, x1).map(e => 10 ** e) : valueTicks(x0, x1)) : [];
  const xLo = numeric ? (logX ? x0 : Math.min(xTicks[0], x0)) : 0;
  const xHi = numeric ? (logX ? x1 : Math.max(xTicks[xTicks.length - 1], x1)) : 0;
  const px = (v: unknown): number => {
    if (!numeric) {
      const i = categories.indexOf(JSON.stringify(v));
      return left + (categories.length === 1 ? width / 2 : (i / (categories.length - 1)) * width);
    }
    const t = logX ? Math.log10(v as number) : (v as number);
    return left + (xHi === xLo ? width / 2 : ((t - xLo) / (xHi - xLo)) * width);
  };
  const ys = usable.map(r => r.metrics[y] as number);
  const yTicks = valueTicks(Math.min(...ys), Math.max(...ys));
  const yLo = yTicks[0],
    yHi = yTicks[yTicks.length - 1];
  const py = (v: number) => top + height - ((v - yLo) / (yHi - yLo || 1)) * height;
  const W = left + width + 30,
    H = top + height + 50;
  const chart = svg('svg', {
    class: 'nbflow-metric-chart',
    width: W,
    height: H,
    viewBox: `0 0 ${W} ${H}`,
    role: 'img',
    'data-log-x': String(logX),
    'aria-label': `${y} against ${x}${logX ? ' (log x)' : ''}`
  });
  chart.append(
    svg('text', { x: left + width / 2, y: 16, 'text-anchor': 'middle', class: 'nbflow-chart-title' }, title)
  );
  for (const t of yTicks) {
    chart.append(
      svg('line', { x1: left, x2: left + width, y1: py(t), y2: py(t), class: 'nbflow-axis' }),
      svg('text', { x: left - 6, y: py(t) + 4, 'text-anchor': 'end', class: 'nbflow-axis-label' }, fmtValue(t))
    );
  }
  const xLabels = numeric ? xTicks.map(t => [t, logX ? `1e${Math.round(Math.log10(t))}` : fmtValue(t)] as const) : [];
  for (const [t, label] of numeric ? xLabels : categories.map(c => [JSON.parse(c), fmtValue(JSON.parse(c))] as const)) {
    const tx = px(t);
    chart.append(
      svg('line', { x1: tx, x2: tx, y1: top, y2: top + height, class: 'nbflow-axis' }),
      svg(
        'text',
        { x: tx, y: top + height + 16, 'text-anchor': 'middle', class: 'nbflow-axis-label nbflow-x-tick' },
        label
      )
    );
  }
  chart.append(
    svg(
      'text',
      { x: left + width / 2, y: top + height + 38, 'text-anchor': 'middle', class: 'nbflow-axis-title' },
      `${x}${logX ? ' (log scale)' : ''}`
    ),
    svg(
      'text',
      {
        x: 14,
        y: top + height / 2,
        'text-anchor': 'middle',
        class: 'nbflow-axis-title',
        transform: `rotate(-90 14 ${top + height / 2})`
      },
      y
    )
  );
  const legend = h('div', { class: 'nbflow-legend' });
  [...groups.entries()].forEach(([key, members], k) => {
    const colour = PALETTE[k % PALETTE.length];
    const sorted = numeric ? [...members].sort((a, b) => xv(a) - xv(b)) : members;
    const line = svg('g', { class: 'nbflow-metric-line', 'data-group': key });
    if (sorted.length > 1) {
      const coords = sorted.map(r => `${px(r.params[x])},${py(r.metrics[y] as number)}`).join(' ');
      line.append(svg('polyline', { points: coords, fill: 'none', stroke: colour, 'stroke-width': 2 }));
    }
    for (const r of sorted) {
      const v = r.metrics[y] as number;
      line.append(
        svg(
          'circle',
          { cx: px(r.params[x]), cy: py(v), r: 4, fill: colour, class: 'nbflow-point', 'data-run': r.run_id },
          svg('title', {}, `run ${r.run_id}: ${x}=${fmtValue(r.params[x])}, ${y}=${fmtValue(v)}`)
        )
      );
    }
    chart.append(line);
    if (key) {
      legend.append(h('span', { class: 'nbflow-swatch', style: `background:${colour}` }), `${key} `);
    }
  });
  return h('div', { class: 'nbflow-chart' }, chart, legend);
}

function range(a: number, b: number): number[] {
  return Array.from({ length: b - a + 1 }, (_, i) => a + i);
}
