/**
 * A try's whole log in a JupyterLab tab: read in pieces of the server's `max_log_bytes`
 * (`?offset=`), followed while the try runs (polling stops once it has ended and all of it is
 * read), with a download link.
 */
import { Widget } from '@lumino/widgets';

import { ApiError, ILogChunk, apiUrl, fmtBytes, h, request, taskPath } from './api';

const POLL_MS = 2000;
/** Stop reading into the page past this many bytes (the download has the rest). */
const MAX_SHOWN = 20 * 1024 * 1024;

export class LogView extends Widget {
  private text = h('pre', { class: 'nbflow-log nbflow-log-full' });
  private info = h('div', { class: 'nbflow-log-info' });
  private offset = 0;
  private timer: number | null = null;
  private done = false;

  constructor(
    readonly runId: number,
    readonly task: string,
    readonly tryNumber: number | null
  ) {
    super();
    this.addClass('nbflow-log-view');
    this.id = `nbflow-log-${runId}-${task}-${tryNumber ?? 'latest'}`;
    this.title.label = `log: ${task} · run ${runId}${tryNumber ? ` · try ${tryNumber}` : ''}`;
    this.title.closable = true;
    const q = tryNumber ? `?try=${tryNumber}` : '';
    const download = h(
      'a',
      {
        class: 'jp-Button jp-mod-styled nbflow-download-log',
        href: apiUrl(taskPath(runId, task, `log.txt${q}`)),
        download: ''
      },
      'Download'
    );
    this.node.append(h('div', { class: 'nbflow-buttons' }, download, this.info), this.text);
    void this.read();
  }

  dispose(): void {
    if (this.timer !== null) {
      window.clearTimeout(this.timer);
    }
    super.dispose();
  }

  /** Read on from where the last piece ended; keep polling while the file grows or the task runs. */
  private async read(): Promise<void> {
    try {
      const q = `offset=${this.offset}${this.tryNumber ? `&try=${this.tryNumber}` : ''}`;
      let chunk = await request<ILogChunk>(taskPath(this.runId, this.task, `log?${q}`));
      this.text.append(chunk.text);
      this.offset = chunk.offset;
      while (chunk.truncated && this.offset < MAX_SHOWN && !this.isDisposed) {
        chunk = await request<ILogChunk>(taskPath(this.runId, this.task, `log?offset=${this.offset}&try=${chunk.try}`));
        this.text.append(chunk.text);
        this.offset = chunk.offset;
      }
      this.done = chunk.finished && this.offset >= chunk.size; // the try ended and all of it is shown
      this.info.textContent = `${fmtBytes(chunk.size)}${this.offset < chunk.size ? ` (first ${fmtBytes(this.offset)} shown: download for the rest)` : ''}`;
    } catch (err) {
      this.info.textContent = err instanceof ApiError ? err.message : String(err);
    }
    if (!this.isDisposed && this.offset < MAX_SHOWN && !this.done) {
      this.timer = window.setTimeout(() => void this.read(), POLL_MS);
    }
  }
}
