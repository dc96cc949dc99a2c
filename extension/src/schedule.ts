/**
 * "Schedule this notebook": a dialog with the notebook's declared parameters as typed inputs,
 * a schedule picker (presets or cron, in words, with the next 5 run times in the chosen time
 * zone), time zone, catchup, retries, timeout, queue, kernel and "run now". Submitting asks
 * the server to write `pipelines/<name>.py` (`POST notebooks/schedule`); a refused field is
 * shown beside the form, which opens again with what was typed.
 */
import { Dialog, Notification, showDialog } from '@jupyterlab/apputils';
import { Widget } from '@lumino/widgets';

import { ApiError, INotebookForm, IPreview, IRunAsPipeline, IScheduled, h, post, request } from './api';
import { IParamInput, paramInput, paramRow, readParams } from './params';

const CUSTOM = 'custom';

/** The form's state, kept across re-openings after a refused submission. */
class ScheduleForm {
  readonly inputs: IParamInput[];
  readonly name = h('input', { class: 'jp-mod-styled', name: 'name' });
  readonly preset = h('select', { class: 'jp-mod-styled', name: 'preset' });
  readonly cron = h('input', { class: 'jp-mod-styled', name: 'cron', placeholder: 'minute hour day month weekday' });
  readonly timezone = h('input', { class: 'jp-mod-styled', name: 'timezone', list: 'nbflow-timezones' });
  readonly catchup = h('input', { type: 'checkbox', name: 'catchup' });
  readonly retries = h('input', {
    class: 'jp-mod-styled',
    type: 'number',
    min: '0',
    step: '1',
    name: 'retries',
    value: '0'
  });
  readonly timeout = h('input', {
    class: 'jp-mod-styled',
    type: 'number',
    min: '1',
    step: '1',
    name: 'timeout',
    placeholder: 'none'
  });
  readonly queue = h('input', { class: 'jp-mod-styled', name: 'queue', value: 'default' });
  readonly kernel = h('input', { class: 'jp-mod-styled', name: 'kernel' });
  readonly runNow = h('input', { type: 'checkbox', name: 'run_now' });
  readonly preview = h('div', { class: 'nbflow-schedule-preview' });
  readonly errors = h('div', { class: 'nbflow-error nbflow-schedule-errors' });
  private previewTimer: number | null = null;

  constructor(readonly form: INotebookForm) {
    this.inputs = form.parameters.filter(p => p.settable).map(p => paramInput(p.name, p.type, p.default));
    this.name.value = form.name;
    for (const [value, label] of [
      ['@daily', 'every day (@daily)'],
      ['@hourly', 'every hour (@hourly)'],
      ['@weekly', 'every week (@weekly)'],
      ['@monthly', 'every month (@monthly)'],
      [CUSTOM, 'cron…'],
      ['', 'no schedule (run now only)']
    ]) {
      this.preset.append(h('option', { value }, label));
    }
    this.cron.value = '0 6 * * *';
    this.timezone.value = Intl.DateTimeFormat().resolvedOptions().timeZone || 'UTC';
    this.kernel.value = form.kernel || '';
    for (const el of [this.preset, this.cron, this.timezone]) {
      el.addEventListener('input', () => this.schedulePreview());
      el.addEventListener('change', () => this.schedulePreview());
    }
    this.schedulePreview();
  }

  /** The schedule as sent: a preset, the cron text, or null. */
  schedule(): string | null {
    return this.preset.value === CUSTOM ? this.cron.value.trim() : this.preset.value || null;
  }

  /** The body of `POST notebooks/schedule` (throws an Error naming a bad parameter). */
  body(): Record<string, unknown> {
    return {
      path: this.form.path,
      name: this.name.value.trim(),
      schedule: this.schedule(),
      timezone: this.timezone.value.trim() || 'UTC',
      catchup: this.catchup.checked,
      parameters: readParams(this.inputs),
      retries: Number(this.retries.value || 0),
      timeout: this.timeout.value ? Number(this.timeout.value) : null,
      queue: this.queue.value.trim() || 'default',
      kernel: this.kernel.value.trim() || null,
      run_now: this.runNow.checked
    };
  }

  /** Ask the server for the schedule in words and its next runs (debounced). */
  schedulePreview(): void {
    this.cron.hidden = this.preset.value !== CUSTOM;
    if (this.previewTimer !== null) {
      window.clearTimeout(this.previewTimer);
    }
    this.previewTimer = window.setTimeout(async () => {
      const schedule = this.schedule();
      if (!schedule) {
        this.preview.replaceChildren(h('div', {}, 'Not scheduled: tick "run now" to run it once.'));
        return;
      }
      try {
        const q = `schedule=${encodeURIComponent(schedule)}&timezone=${encodeURIComponent(this.timezone.value.trim() || 'UTC')}`;
        const p = await request<IPreview>(`schedule/preview?${q}`);
        this.preview.replaceChildren(
          h('div', { class: 'nbflow-schedule-words' }, `${p.description} (${p.timezone})`),
          h('div', {}, 'Next runs:'),
          h('ol', { class: 'nbflow-schedule-next' }, ...p.next.map(t => h('li', {}, t.replace('T', ' ').slice(0, 19))))
        );
      } catch (err) {
        this.preview.replaceChildren(h('div', { class: 'nbflow-error' }, (err as Error).message));
      }
    }, 250);
  }

  /** A fresh widget for the dialog, holding this form's elements. */
  widget(): Widget {
    const zones = h('datalist', { id: 'nbflow-timezones' });
    const supported = (Intl as unknown as { supportedValuesOf?: (k: string) => string[] }).supportedValuesOf;
    for (const zone of supported ? supported('timeZone') : ['UTC']) {
      zones.append(h('option', { value: zone }));
    }
    const row = (label: string, ...els: (HTMLElement | string)[]) =>
      h('label', { class: 'nbflow-form-row' }, h('span', { class: 'nbflow-form-label' }, label), ...els);
    const params = this.inputs.length
      ? this.inputs.map(i => paramRow(i, this.form.parameters.find(p => p.name === i.name)?.help || ''))
      : [
          h(
            'div',
            { class: 'nbflow-hint' },
            this.form.has_parameters_cell
              ? 'Its parameters cell declares nothing settable.'
              : 'No parameters cell: it runs as it is.'
          )
        ];
    const node = h(
      'div',
      { class: 'nbflow-schedule-dialog' },
      row('Pipeline name', this.name),
      h('fieldset', {}, h('legend', {}, 'Parameters'), ...params),
      h(
        'fieldset',
        {},
        h('legend', {}, 'Schedule'),
        row('Runs', this.preset, this.cron),
        row('Time zone', this.timezone, zones),
        this.preview,
        row('Catch up missed runs', this.catchup)
      ),
      h(
        'fieldset',
        {},
        h('legend', {}, 'Run'),
        row('Retries', this.retries),
        row('Timeout (s)', this.timeout),
        row('Queue', this.queue),
        row('Kernel', this.kernel),
        row('Run now as well', this.runNow)
      ),
      this.errors
    );
    return new Widget({ node });
  }
}

/** Open the dialog for the notebook at `path`; resolves with the new pipeline's name (or null). */
export async function scheduleNotebook(path: string, after: (pipeline: string) => void): Promise<string | null> {
  const form = await request<INotebookForm>(`notebooks/form?path=${encodeURIComponent(path)}`);
  const state = new ScheduleForm(form);
  for (;;) {
    const buttons = [Dialog.cancelButton(), Dialog.okButton({ label: 'Schedule' })];
    if (form.cell_tasks) {
      buttons.splice(1, 0, Dialog.createButton({ label: 'Run as pipeline', displayType: 'default' }));
    }
    const result = await showDialog({ title: `Schedule ${path.split('/').pop()}`, body: state.widget(), buttons });
    if (!result.button.accept && result.button.label !== 'Run as pipeline') {
      return null;
    }
    try {
      if (result.button.label === 'Run as pipeline') {
        const run = await post<IRunAsPipeline>('notebooks/run', { path });
        Notification.success(`Queued run ${run.run_id} of ${run.pipeline}`, { autoClose: 5000 });
        after(run.pipeline);
        return run.pipeline;
      }
      const made = await post<IScheduled>('notebooks/schedule', state.body());
      Notification.success(
        `Scheduled ${made.pipeline} (${made.description}): ${made.file}${made.run_id ? `; run ${made.run_id} queued` : ''}`,
        { autoClose: 8000 }
      );
      after(made.pipeline);
      return made.pipeline;
    } catch (err) {
      const fields = err instanceof ApiError && err.body.fields ? Object.entries(err.body.fields) : [];
      state.errors.replaceChildren(
        h('div', {}, (err as Error).message),
        ...fields.map(([field, why]) => h('div', { 'data-field': field }, `${field}: ${why}`))
      );
    }
  }
}
