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
  if (path.split('?')[0].endsWith('.svg')) {
    return text as unknown as T;
  }
  return (text ? JSON.parse(text) : {}) as T;
}

/** POST a JSON body. */
export function post<T = unknown>(path: string, body: unknown = {}): Promise<T> {
  return request<T>(path, { method: 'POST', body: JSON.stringify(body) });
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
  const t0 = Date.parse(start.endsWith('Z') || start.includes('+') ? start : start + 'Z');
  const t1 = end ? Date.parse(end.endsWith('Z') || end.includes('+') ? end : end + 'Z') : Date.now();
  const s = Math.max(0, (t1 - t0) / 1000);
  return s < 120 ? `${s.toFixed(1)} s` : `${(s / 60).toFixed(1)} min`;
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
