/**
 * Calls to nbflow's REST API (`/nbflow/api/`, see docs/openapi.yaml) through JupyterLab's
 * server connection, so the token and XSRF cookie are sent as for any Jupyter request.
 */
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

import type { components, paths } from './schema';

/** The API's shapes, generated from docs/openapi.yaml (`jlpm gen:api`): never written by hand. */
export type Schemas = components['schemas'];
type Json<P extends keyof paths, M extends 'get' | 'post', S extends number> = paths[P][M] extends {
  responses: { [K in S]: { content: { 'application/json': infer T } } };
}
  ? T
  : never;

export type IRun = Schemas['Run'];
export type ITaskInstance = Schemas['TaskInstance'];
export type IPipeline = Schemas['Pipeline'];
export type IImportError = Schemas['ImportError'];
export type ILogChunk = Schemas['LogChunk'];
export type IErrorBody = Schemas['Error'];
export type IPipelineList = Json<'/pipelines', 'get', 200>;
export type IGraph = Json<'/pipelines/{name}/graph', 'get', 200>;
export type IRunPage = Json<'/pipelines/{name}/runs', 'get', 200>;
export type ITriggered = Json<'/pipelines/{name}/trigger', 'post', 201>;
export type IOutput = Json<'/runs/{run_id}/tasks/{task_id}/output', 'get', 200>;
export type IRunDetails = Json<'/runs/{run_id}', 'get', 200>;
export type IAttempt = Schemas['Attempt'];
export type ISchedulerState = Schemas['SchedulerState'];
export type IGrid = Json<'/pipelines/{name}/grid', 'get', 200>;
export type INotebookForm = Json<'/notebooks/form', 'get', 200>;
export type IPreview = Json<'/schedule/preview', 'get', 200>;
export type IScheduled = Json<'/notebooks/schedule', 'post', 201>;
export type IRunAsPipeline = Json<'/notebooks/run', 'post', 201>;
export type ICleared = Json<'/runs/{run_id}/tasks/{task_id}/clear', 'post', 200>;
export type IDebugCopy = Json<'/runs/{run_id}/tasks/{task_id}/debug', 'post', 201>;
export type IRunWithCounts = Schemas['RunWithCounts'];
export type IComparison = Schemas['Comparison'];
export type INotebookDiff = Json<'/runs/{run_id}/tasks/{task_id}/diff', 'get', 200>;
export type IWorkers = Schemas['Workers'];

/** The JupyterLab drive through which output notebooks open (the server's read-only
 * `nbflow/api/contents` of the artifact root: no `allow_hidden` needed). */
export const DRIVE = 'nbflow-runs';

/** An error answer of the API: status and its JSON body (`message`, `fields`, `run_id` ...). */
export class ApiError extends Error {
  constructor(
    public status: number,
    public body: Partial<IErrorBody>
  ) {
    super((body.message || `HTTP ${status}`) + (body.hint ? ` (${body.hint})` : ''));
  }
}

/** The states after which a run or task no longer changes. */
export const FINISHED = new Set(['success', 'cached', 'failed', 'cancelled', 'upstream_failed', 'skipped']);

/** Call `/nbflow/api/<path>`; JSON in and out (text for `.svg`). */
export async function request<T = unknown>(path: string, init: RequestInit = {}): Promise<T> {
  const settings = ServerConnection.makeSettings();
  const url = URLExt.join(settings.baseUrl, 'nbflow', 'api', path);
  const response = await ServerConnection.makeRequest(url, init, settings);
  const text = await response.text();
  if (!response.ok) {
    let body: Partial<IErrorBody>;
    try {
      body = JSON.parse(text);
    } catch {
      body = { message: text || response.statusText };
    }
    throw new ApiError(response.status, body);
  }
  if (/\.(svg|txt|html)$/.test(path.split('?')[0])) {
    return text as unknown as T;
  }
  return (text ? JSON.parse(text) : {}) as T;
}

/** POST a JSON body (with extra headers, e.g. `Idempotency-Key`). */
export function post<T = unknown>(path: string, body: unknown = {}, headers: Record<string, string> = {}): Promise<T> {
  return request<T>(path, { method: 'POST', body: JSON.stringify(body), headers });
}

/** The absolute URL of `/nbflow/api/<path>` (for links: downloads, the HTML export). */
export function apiUrl(path: string): string {
  return URLExt.join(ServerConnection.makeSettings().baseUrl, 'nbflow', 'api', path);
}

/** Milliseconds since the epoch of an ISO time from the server (UTC when it names no zone). */
export function parseTime(iso: string): number {
  return Date.parse(iso.endsWith('Z') || /[+-]\d\d:\d\d$/.test(iso) ? iso : iso + 'Z');
}

/** `4.2 s`, `3.1 min`, `2.0 h`. */
export function fmtSeconds(s: number): string {
  return s < 120 ? `${s.toFixed(1)} s` : s < 7200 ? `${(s / 60).toFixed(1)} min` : `${(s / 3600).toFixed(1)} h`;
}

/** A time for people: `2026-12-01 23:40:44` in the browser's zone. */
export function fmtTime(iso?: string | null): string {
  if (!iso) {
    return '';
  }
  const d = new Date(parseTime(iso));
  const pad = (n: number) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/** How a file size reads: `512 B`, `3.4 kB`, `1.2 MB`. */
export function fmtBytes(n: number): string {
  return n < 1000 ? `${n} B` : n < 1e6 ? `${(n / 1e3).toFixed(1)} kB` : `${(n / 1e6).toFixed(1)} MB`;
}

/** An import error's text, its location said once (the message often starts with it). */
export function importErrorText(e: { location?: string | null; error?: string | null; filename?: string }): string {
  const where = e.location || e.filename || '';
  const what = e.error || '';
  return what.startsWith(where) || !where ? what : `${where}: ${what}`;
}

/** `/pipelines/<name>` with the name escaped. */
export function pipelinePath(name: string, rest: string): string {
  return `pipelines/${encodeURIComponent(name)}/${rest}`;
}

/** `/runs/<id>/tasks/<task>/...`. */
export function taskPath(runId: number, task: string, rest: string): string {
  return `runs/${runId}/tasks/${encodeURIComponent(task)}/${rest}`;
}

/** Seconds between two ISO times (or until now), as `12.3 s`. */
export function duration(start?: string | null, end?: string | null): string {
  if (!start) {
    return '';
  }
  const t1 = end ? parseTime(end) : Date.now();
  return fmtSeconds(Math.max(0, (t1 - parseTime(start)) / 1000));
}

/** A small HTML element builder. */
export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Record<string, string> = {},
  ...children: (Node | string)[]
): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'class') {
      el.className = v;
    } else {
      el.setAttribute(k, v);
    }
  }
  for (const c of children) {
    el.append(c);
  }
  return el;
}
