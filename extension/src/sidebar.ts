/**
 * The left-sidebar panel: the scheduler's state (running since, heartbeat age; or why it is
 * not running, with Start), and every pipeline with its last run's state, its schedule in
 * words and next run, why a queued run waits, its import error, and buttons to open its DAG,
 * trigger it (a form of typed parameter inputs, each of which may sweep a list of values) and
 * pause it. Below them, the assets (runs triggered by data) with their lineage (./assets.ts).
 */
import { Widget } from '@lumino/widgets';
import { Dialog, showDialog, showErrorMessage } from '@jupyterlab/apputils';

import {
  ApiError,
  IImportError,
  IPipeline,
  IPipelineList,
  ISchedulerState,
  ITriggered,
  fmtTime,
  h,
  importErrorText,
  pipelinePath,
  post,
  request
} from './api';
import { AssetsSection } from './assets';
import type { CompareSource } from './compare';
import { IParamInput, paramInput, paramRow, readTrigger } from './params';
import { SecretsSection } from './secrets';
import { WorkersSection } from './workers';

const POLL_MS = 3000;

export class PipelinesPanel extends Widget {
  private list = h('div', { class: 'nbflow-pipelines' });
  private status = h('div', { class: 'nbflow-status' });
  private scheduler = h('div', { class: 'nbflow-scheduler' });
  private timer: number | null = null;
  private formOpen: string | null = null;
  private workers = new WorkersSection(() => this.isVisible);
  private assets: AssetsSection;
  private secrets = new SecretsSection();
  private polls = 0;

  constructor(
    private openDag: (name: string, runId?: number) => void,
    private openCompare: (source: CompareSource) => void
  ) {
    super();
    this.assets = new AssetsSection(openDag);
    this.id = 'nbflow-sidebar';
    this.addClass('nbflow-sidebar');
    this.title.caption = 'nbflow pipelines';
    const refresh = h('button', { class: 'jp-Button jp-mod-styled nbflow-refresh', title: 'Refresh' }, 'Refresh');
    refresh.onclick = () => void this.refresh();
    this.node.append(
      h('div', { class: 'nbflow-sidebar-header' }, h('h2', {}, 'nbflow pipelines'), refresh),
      this.scheduler,
      this.status,
      this.list,
      this.workers.node,
      this.assets.node,
      this.secrets.node
    );
    void this.refresh();
  }

  dispose(): void {
    if (this.timer !== null) {
      window.clearTimeout(this.timer);
    }
    this.workers.dispose();
    super.dispose();
  }

  /** Reload the list (polled while the panel is visible; never while a params form is open). */
  async refresh(): Promise<void> {
    if (this.timer !== null) {
      window.clearTimeout(this.timer);
    }
    try {
      this.renderScheduler(await request<ISchedulerState>('scheduler'));
      if (this.formOpen === null) {
        const data = await request<IPipelineList>('pipelines');
        this.render(data.pipelines, data.import_errors);
        await this.assets.refresh();
      }
      if (this.polls++ % 5 === 0 || this.secrets.node.hasAttribute('open')) {
        void this.secrets.refresh();
      }
      this.status.textContent = '';
    } catch (err) {
      this.status.textContent = err instanceof ApiError ? `${err.status}: ${err.message}` : String(err);
    }
    this.timer = window.setTimeout(() => void this.refresh(), this.isVisible ? POLL_MS : POLL_MS * 5);
  }

  private renderScheduler(s: ISchedulerState): void {
    this.scheduler.dataset.state = s.state;
    const text =
      s.state === 'running'
        ? `Scheduler running since ${fmtTime(s.since)} (pid ${s.pid}; heartbeat ${Math.round(s.heartbeat_age ?? 0)} s ago)`
        : s.state === 'starting'
          ? 'Scheduler starting…'
          : `Scheduler not running: ${s.reason}`;
    const parts: HTMLElement[] = [
      h('span', { class: `nbflow-dot nbflow-dot-${s.state}` }),
      h('span', { class: 'nbflow-scheduler-text' }, text)
    ];
    if (s.state === 'stopped') {
      const start = h('button', { class: 'jp-Button jp-mod-styled jp-mod-accept nbflow-scheduler-start' }, 'Start');
      start.onclick = async () => {
        start.setAttribute('disabled', '');
        try {
          this.renderScheduler(await post<ISchedulerState>('scheduler/start'));
        } catch (err) {
          void showErrorMessage('nbflow scheduler', (err as Error).message);
        }
      };
      parts.push(start);
    }
    this.scheduler.replaceChildren(...parts);
    this.scheduler.title = `log: ${s.log}${s.managed ? '' : ' (this server does not manage a scheduler)'}`;
  }

  private render(pipelines: IPipeline[], errors: IImportError[]): void {
    const items = pipelines.map(p => this.item(p));
    if (!items.length) {
      items.push(
        h(
          'div',
          { class: 'nbflow-empty' },
          'No pipelines yet: open a notebook and press "Schedule" in its toolbar, or put a pipeline file in the DAG folder.'
        )
      );
    }
    const shown = new Set(pipelines.map(p => p.import_error?.filename).filter(Boolean));
    for (const e of errors.filter(e => !shown.has(e.filename))) {
      items.push(h('div', { class: 'nbflow-import-error' }, `Broken file ${importErrorText(e)}`));
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
    const when = p.schedule
      ? `${p.schedule_text}${p.is_paused ? ' (paused)' : p.next_run ? ` · next ${fmtTime(p.next_run)}` : ''}`
      : p.schedule_assets.length
        ? `when updated: ${p.schedule_assets.join(', ')}${p.is_paused ? ' (paused)' : ''}`
        : 'no schedule';
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
        { class: 'nbflow-pipeline-meta', title: p.schedule || '' },
        `${when} · ${p.tasks} task${p.tasks === 1 ? '' : 's'}${p.last_run ? ` · run ${p.last_run.id}` : ''}`
      ),
      ...(p.waiting ? [h('div', { class: 'nbflow-waiting' }, p.waiting)] : []),
      ...(p.import_error
        ? [h('div', { class: 'nbflow-import-error' }, `Broken file ${importErrorText(p.import_error)}`)]
        : []),
      h('div', { class: 'nbflow-buttons' }, trigger, pause)
    );
    trigger.onclick = () => this.toggleForm(el, p);
    if (!p.file) {
      // recorded by a kernel (%nbflow run this): no driver can load it, so the server refuses a trigger
      trigger.setAttribute('disabled', '');
      trigger.title =
        'Defined only in a notebook kernel: run it there (%nbflow run this), or use "Run as pipeline" on the saved notebook';
    }
    return el;
  }

  /** The trigger form: one typed input per declared parameter (each with a "sweep" toggle), then
   * Run (once per click); a sweep opens its Compare view. */
  private toggleForm(el: HTMLElement, p: IPipeline): void {
    const old = el.querySelector('.nbflow-params-form');
    if (old) {
      old.remove();
      this.formOpen = null;
      return;
    }
    this.formOpen = p.name;
    const inputs = Object.entries(p.params || {}).map(([k, v]) =>
      paramInput(k, p.param_types[k], v, p.param_schemas?.[k])
    );
    const errorBox = h('div', { class: 'nbflow-error' });
    const run = h('button', { class: 'jp-Button jp-mod-styled jp-mod-accept nbflow-run', type: 'submit' }, 'Run');
    const cancel = h('button', { class: 'jp-Button jp-mod-styled', type: 'button' }, 'Close');
    const form = h(
      'form',
      { class: 'nbflow-params-form' },
      ...inputs.map(i => paramRow(i, '', true)),
      errorBox,
      h('div', { class: 'nbflow-buttons' }, run, cancel)
    );
    const close = () => {
      form.remove();
      this.formOpen = null;
    };
    cancel.onclick = ev => {
      ev.preventDefault();
      close();
    };
    // one key per opened form: a double click, or a retry after a lost answer, makes one run
    const key = crypto.randomUUID();
    form.onsubmit = async ev => {
      ev.preventDefault();
      if (run.hasAttribute('disabled')) {
        return;
      }
      let body: { params: Record<string, unknown>; sweep?: Record<string, unknown[]> };
      markBad(inputs, {});
      try {
        body = readTrigger(inputs);
      } catch (err) {
        errorBox.textContent = (err as Error).message;
        return;
      }
      run.setAttribute('disabled', '');
      run.textContent = 'Queueing…';
      try {
        // a sweep's key names its grid: the same form sent again with other values is another sweep
        const made = await this.trigger(p.name, body, body.sweep ? `${key}-${JSON.stringify(body.sweep)}` : key);
        close();
        this.openDag(p.name);
        if (made?.sweep_id != null) {
          this.openCompare({ sweep: made.sweep_id });
        }
        void this.refresh();
      } catch (err) {
        errorBox.textContent = err instanceof ApiError ? err.message : String(err);
        if (err instanceof ApiError) {
          markBad(inputs, err.body.fields ?? {});
        }
      } finally {
        run.removeAttribute('disabled');
        run.textContent = 'Run';
      }
    };
    el.append(form);
  }

  /** Trigger; when the file is broken now, say so and ask before running the last good version. */
  private async trigger(
    name: string,
    body: { params: Record<string, unknown>; sweep?: Record<string, unknown[]> },
    key: string
  ): Promise<ITriggered | null> {
    const headers = { 'Idempotency-Key': key };
    try {
      return await post<ITriggered>(pipelinePath(name, 'trigger'), body, headers);
    } catch (err) {
      if (!(err instanceof ApiError && err.status === 409 && err.body.fields?.last_good)) {
        throw err;
      }
      const answer = await showDialog({
        title: `${name}: the pipeline file is broken`,
        body: err.body.message || '',
        buttons: [
          Dialog.cancelButton({ label: 'Fix it first' }),
          Dialog.warnButton({ label: 'Run the last good version' })
        ]
      });
      if (!answer.button.accept) {
        throw new Error('Not triggered: fix the file first.');
      }
      return await post<ITriggered>(
        pipelinePath(name, 'trigger'),
        { ...body, last_good: true },
        { 'Idempotency-Key': `${key}-last-good` }
      );
    }
  }
}

/** Mark the inputs an error answer names (`params.C`, `sweep.C`) and clear the others. */
function markBad(inputs: IParamInput[], fields: Record<string, string>): void {
  for (const input of inputs) {
    const message = fields[`params.${input.name}`] ?? fields[`sweep.${input.name}`];
    input.element.classList.toggle('nbflow-param-bad', message !== undefined);
    input.element.title = message ?? '';
  }
}
