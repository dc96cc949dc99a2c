/**
 * The left-sidebar panel: every pipeline with its last run's state, schedule and import
 * error, and buttons to open its DAG, trigger it (with a small params form) and pause it.
 */
import { Widget } from '@lumino/widgets';
import { showErrorMessage } from '@jupyterlab/apputils';

import { ApiError, IImportError, IPipeline, IPipelineList, ITriggered, h, pipelinePath, post, request } from './api';

const POLL_MS = 3000;

export class PipelinesPanel extends Widget {
  private list = h('div', { class: 'nbflow-pipelines' });
  private status = h('div', { class: 'nbflow-status' });
  private timer: number | null = null;
  private formOpen: string | null = null;

  constructor(private openDag: (name: string, runId?: number) => void) {
    super();
    this.id = 'nbflow-sidebar';
    this.addClass('nbflow-sidebar');
    this.title.caption = 'nbflow pipelines';
    const refresh = h('button', { class: 'jp-Button jp-mod-styled nbflow-refresh', title: 'Refresh' }, 'Refresh');
    refresh.onclick = () => void this.refresh();
    this.node.append(
      h('div', { class: 'nbflow-sidebar-header' }, h('h2', {}, 'nbflow pipelines'), refresh),
      this.status,
      this.list
    );
    void this.refresh();
  }

  dispose(): void {
    if (this.timer !== null) {
      window.clearTimeout(this.timer);
    }
    super.dispose();
  }

  /** Reload the list (polled while the panel is visible; never while a params form is open). */
  async refresh(): Promise<void> {
    if (this.timer !== null) {
      window.clearTimeout(this.timer);
    }
    try {
      if (this.formOpen === null) {
        const data = await request<IPipelineList>('pipelines');
        this.render(data.pipelines, data.import_errors);
      }
      this.status.textContent = '';
    } catch (err) {
      this.status.textContent = err instanceof ApiError ? `${err.status}: ${err.message}` : String(err);
    }
    this.timer = window.setTimeout(() => void this.refresh(), this.isVisible ? POLL_MS : POLL_MS * 5);
  }

  private render(pipelines: IPipeline[], errors: IImportError[]): void {
    const items = pipelines.map(p => this.item(p));
    if (!items.length) {
      items.push(
        h(
          'div',
          { class: 'nbflow-empty' },
          'No pipelines yet: run `nbflow scheduler` (DAG folder) or `nbflow run FILE`.'
        )
      );
    }
    for (const e of errors) {
      items.push(h('div', { class: 'nbflow-import-error' }, `Broken: ${e.location || e.filename}: ${e.error || ''}`));
    }
    this.list.replaceChildren(...items);
  }

  private item(p: IPipeline): HTMLElement {
    const state = p.last_run ? p.last_run.state : 'none';
    const name = h('a', { class: 'nbflow-pipeline-name', href: '#', title: p.description || p.name }, p.name);
    name.onclick = ev => {
      ev.preventDefault();
      this.openDag(p.name);
    };
    const trigger = h('button', { class: 'jp-Button jp-mod-styled jp-mod-accept nbflow-trigger' }, 'Trigger');
    const pause = h('button', { class: 'jp-Button jp-mod-styled nbflow-pause' }, p.is_paused ? 'Unpause' : 'Pause');
    pause.onclick = async () => {
      try {
        await post(pipelinePath(p.name, 'pause'), { paused: !p.is_paused });
      } catch (err) {
        void showErrorMessage('nbflow', (err as Error).message);
      }
      void this.refresh();
    };
    const el = h(
      'div',
      { class: 'nbflow-pipeline', 'data-pipeline': p.name },
      h(
        'div',
        { class: 'nbflow-pipeline-row' },
        name,
        h('span', { class: `nbflow-badge nbflow-state-${state}` }, state)
      ),
      h(
        'div',
        { class: 'nbflow-pipeline-meta' },
        `${p.schedule || 'no schedule'}${p.is_paused ? ' (paused)' : ''} · ${p.tasks} tasks${p.last_run ? ` · run ${p.last_run.id}` : ''}`
      ),
      ...(p.import_error
        ? [
            h(
              'div',
              { class: 'nbflow-import-error' },
              `Broken DAG: ${p.import_error.location || ''}: ${p.import_error.error || ''}`
            )
          ]
        : []),
      h('div', { class: 'nbflow-buttons' }, trigger, pause)
    );
    trigger.onclick = () => this.toggleForm(el, p);
    return el;
  }

  /** The params form: one input per declared parameter (JSON-ish values), then Run. */
  private toggleForm(el: HTMLElement, p: IPipeline): void {
    const old = el.querySelector('.nbflow-params-form');
    if (old) {
      old.remove();
      this.formOpen = null;
      return;
    }
    this.formOpen = p.name;
    const inputs: Record<string, HTMLInputElement> = {};
    const rows = Object.entries(p.params || {}).map(([k, v]) => {
      inputs[k] = h('input', { class: 'jp-mod-styled', name: k, value: typeof v === 'string' ? v : JSON.stringify(v) });
      return h('label', {}, h('span', {}, k), inputs[k]);
    });
    const errorBox = h('div', { class: 'nbflow-error' });
    const run = h('button', { class: 'jp-Button jp-mod-styled jp-mod-accept nbflow-run' }, 'Run');
    const cancel = h('button', { class: 'jp-Button jp-mod-styled' }, 'Close');
    const form = h(
      'form',
      { class: 'nbflow-params-form' },
      ...rows,
      errorBox,
      h('div', { class: 'nbflow-buttons' }, run, cancel)
    );
    cancel.onclick = ev => {
      ev.preventDefault();
      form.remove();
      this.formOpen = null;
    };
    form.onsubmit = async ev => {
      ev.preventDefault();
      const params: Record<string, unknown> = {};
      for (const [k, input] of Object.entries(inputs)) {
        params[k] = parseValue(input.value, (p.params || {})[k]);
      }
      try {
        const res = await post<ITriggered>(pipelinePath(p.name, 'trigger'), { params });
        form.remove();
        this.formOpen = null;
        this.openDag(p.name);
        void this.refresh();
        return res;
      } catch (err) {
        errorBox.textContent = err instanceof ApiError ? err.message : String(err);
      }
    };
    el.append(form);
  }
}

/** Parse a form value like its declared default: numbers and booleans as JSON, else text. */
function parseValue(text: string, declared: unknown): unknown {
  if (typeof declared === 'string') {
    return text;
  }
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}
