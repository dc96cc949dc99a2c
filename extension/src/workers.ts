/**
 * The sidebar's Workers section (Flower's role): the cluster's workers with host, queues,
 * slots, what each runs now (pipeline / run / task#try), memory, CPU and last heartbeat, the
 * Dask dashboard link, and every queue that has tasks waiting and no worker serving it,
 * highlighted with the `nbflow worker` command that starts one. Polled while open.
 */
import { ApiError, IWorkers, fmtBytes, h, request } from './api';

const POLL_MS = 5000;

type IWorker = IWorkers['workers'][number];

export class WorkersSection {
  readonly node = h('details', { class: 'nbflow-workers' });
  private summary = h('summary', { class: 'nbflow-workers-summary' }, 'Workers');
  private body = h('div', { class: 'nbflow-workers-body' });
  private timer: number | null = null;

  constructor(private visible: () => boolean) {
    this.node.append(this.summary, this.body);
    this.node.addEventListener('toggle', () => {
      if (this.node.open) {
        void this.refresh();
      }
    });
    void this.refresh();
  }

  dispose(): void {
    if (this.timer !== null) {
      window.clearTimeout(this.timer);
    }
  }

  /** Load the view (again every few seconds while the section is open and the panel shown). */
  async refresh(): Promise<void> {
    if (this.timer !== null) {
      window.clearTimeout(this.timer);
      this.timer = null;
    }
    try {
      this.render(await request<IWorkers>('workers'));
    } catch (err) {
      this.body.replaceChildren(
        h('div', { class: 'nbflow-error' }, err instanceof ApiError ? `${err.status}: ${err.message}` : String(err))
      );
    }
    if (this.node.open) {
      this.timer = window.setTimeout(() => void this.refresh(), this.visible() ? POLL_MS : POLL_MS * 6);
    }
  }

  private render(view: IWorkers): void {
    const busy = view.workers.filter(w => w.running.length).length;
    this.summary.textContent = view.address
      ? `Workers: ${view.workers.length} (${busy} busy)${view.unserved.length ? ' ⚠' : ''}`
      : 'Workers';
    this.node.dataset.unserved = String(view.unserved.length);
    const parts: HTMLElement[] = [];
    if (view.note) {
      parts.push(h('div', { class: 'nbflow-workers-note' }, view.note));
    }
    if (view.address && view.reachable) {
      const where = view.engine === 'celery' ? 'workers on broker' : 'cluster';
      const head = h('div', { class: 'nbflow-workers-cluster' }, `${view.engine} ${where} ${view.address}`);
      if (view.dashboard) {
        head.append(' · ', h('a', { href: view.dashboard, target: '_blank', rel: 'noopener' }, 'dashboard'));
      }
      parts.push(head);
    }
    for (const q of view.unserved) {
      const code = h('code', {}, q.command);
      const copy = h('button', { class: 'jp-Button jp-mod-styled nbflow-copy', title: 'Copy the command' }, 'Copy');
      copy.onclick = () => void navigator.clipboard?.writeText(q.command);
      parts.push(
        h(
          'div',
          { class: 'nbflow-unserved', 'data-queue': q.queue },
          `Queue ${q.queue}: ${q.waiting} task(s) waiting; ${q.why}. Start one with: `,
          code,
          copy
        )
      );
    }
    if (view.workers.length) {
      parts.push(...view.workers.map(w => this.card(w)));
    } else if (view.address && view.reachable) {
      parts.push(h('div', { class: 'nbflow-empty' }, 'No workers are connected.'));
    }
    this.body.replaceChildren(...parts);
  }

  /** One card per worker: the sidebar is too narrow for an eight-column table. */
  private card(w: IWorker): HTMLElement {
    const running = w.running.map(r => `${r.pipeline}/${r.run_id}/${r.task_id}#${r.try_number}`).join(', ');
    const facts = [
      w.memory === null
        ? ''
        : `memory ${fmtMemory(w.memory)}${w.memory_limit ? ` of ${fmtMemory(w.memory_limit)}` : ''}`,
      w.cpu === null ? '' : `CPU ${Math.round(w.cpu)}%`,
      w.last_seen_s === null ? '' : `heartbeat ${w.last_seen_s.toFixed(1)} s ago`
    ].filter(Boolean);
    return h(
      'div',
      { class: 'nbflow-worker', 'data-worker': w.name, title: w.address },
      h(
        'div',
        { class: 'nbflow-worker-head' },
        h('span', { class: `nbflow-dot ${running ? 'nbflow-dot-running' : 'nbflow-dot-idle'}` }),
        h('b', {}, w.name),
        ` on ${w.host} · queues ${w.queues.join(', ') || '(all)'} · ${w.slots} slot${w.slots === 1 ? '' : 's'}`
      ),
      h('div', { class: 'nbflow-worker-running' }, running || 'idle'),
      h('div', { class: 'nbflow-worker-facts' }, facts.join(' · '))
    );
  }
}

/** Bytes as `93 MB` or `12.3 GB`. */
function fmtMemory(n: number): string {
  return n < 1e9 ? fmtBytes(n) : `${(n / 1e9).toFixed(1)} GB`;
}
