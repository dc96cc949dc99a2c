/**
 * The Assets section of the sidebar (runs triggered by data): each asset with the tasks that
 * produce it, the pipelines scheduled on it, its last update (a link to the producing run's
 * DAG) and the consumers with an update they have not run for yet. Clicking an asset shows its
 * lineage: each update's producing run and the runs it triggered (links to their DAGs).
 */
import { ApiError, Schemas, fmtTime, h, request } from './api';

type IAsset = Schemas['Asset'];
type IAssetDetails = Schemas['AssetDetails'];

export class AssetsSection {
  readonly node = h('div', { class: 'nbflow-assets' });
  private list = h('div', { class: 'nbflow-assets-list' });
  private open = new Set<string>();

  constructor(private openDag: (name: string, runId?: number) => void) {
    this.node.append(h('h3', { class: 'nbflow-assets-title' }, 'Assets'), this.list);
  }

  /** Reload the list (and the lineage of the assets shown open). */
  async refresh(): Promise<void> {
    const data = await request<{ assets: IAsset[] }>('assets');
    this.node.hidden = data.assets.length === 0;
    this.list.replaceChildren(...data.assets.map(a => this.item(a)));
  }

  private runLink(pipeline: string, runId: number): HTMLElement {
    const link = h('a', { href: '#', class: 'nbflow-asset-run' }, `${pipeline} run ${runId}`);
    link.onclick = ev => {
      ev.preventDefault();
      this.openDag(pipeline, runId);
    };
    return link;
  }

  private item(a: IAsset): HTMLElement {
    const name = h('a', { href: '#', class: 'nbflow-asset-name', title: a.description || a.uri || a.name }, a.name);
    const last = a.last_update
      ? [
          h('span', {}, `updated ${fmtTime(a.last_update.time)} by `),
          this.runLink(a.last_update.pipeline, a.last_update.run_id)
        ]
      : [h('span', {}, 'no update yet')];
    const el = h(
      'div',
      { class: 'nbflow-asset', 'data-asset': a.name },
      h('div', { class: 'nbflow-asset-row' }, name),
      h(
        'div',
        { class: 'nbflow-asset-flow' },
        `${a.producers.join(', ') || '(no producer)'} → ${a.name} → ${a.consumers.join(', ') || '(no consumer)'}`
      ),
      h('div', { class: 'nbflow-pipeline-meta' }, ...last),
      ...(a.pending.length ? [h('div', { class: 'nbflow-waiting' }, `pending: ${a.pending.join(', ')}`)] : [])
    );
    const lineage = h('div', { class: 'nbflow-asset-lineage' });
    el.append(lineage);
    name.onclick = ev => {
      ev.preventDefault();
      if (this.open.has(a.name)) {
        this.open.delete(a.name);
        lineage.replaceChildren();
      } else {
        this.open.add(a.name);
        void this.showLineage(a.name, lineage);
      }
    };
    if (this.open.has(a.name)) {
      void this.showLineage(a.name, lineage);
    }
    return el;
  }

  private async showLineage(name: string, box: HTMLElement): Promise<void> {
    try {
      const details = await request<IAssetDetails>(`assets/${encodeURIComponent(name)}?limit=20`);
      const rows = details.events.map(e =>
        h(
          'li',
          { class: 'nbflow-asset-event' },
          `${fmtTime(e.time)}: `,
          this.runLink(e.pipeline, e.run_id),
          ` (${e.task_id})`,
          ...(e.triggered.length
            ? [' → ', ...e.triggered.flatMap((t, i) => [...(i ? [', '] : []), this.runLink(t.pipeline, t.run_id)])]
            : [])
        )
      );
      box.replaceChildren(rows.length ? h('ul', {}, ...rows) : h('div', { class: 'nbflow-empty' }, 'no updates yet'));
    } catch (err) {
      box.textContent = err instanceof ApiError ? err.message : String(err);
    }
  }
}
