"""REST handlers of ``/nbflow/api/``: thin transports over :mod:`nbflow.api`.

Every route is an :class:`~jupyter_server.base.handlers.APIHandler` method decorated with
``@tornado.web.authenticated`` and ``@authorized`` (resource ``nbflow``): no token or cookie
is a 403, a cookie POST without the XSRF token is a 403 (jupyter_server's own check). The
facade's calls are blocking (SQL), so they run in the server's thread pool with a time
limit. Errors map to statuses in one place (:data:`STATUS`): unknown pipeline/run/task 404,
bad parameters or body 400 (naming the field), duplicate trigger 409 with the existing run
id, a state conflict (cancel a finished run) 409, an unreachable database 503.
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Callable
from datetime import date, datetime
from pathlib import Path
from typing import Any

import tornado.httputil
import tornado.ioloop
import tornado.web
from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from nbflow import api
from nbflow.config import get_settings
from nbflow.exceptions import (
    NbflowError,
    ParameterError,
    PipelineNotFoundError,
    RunNotFoundError,
    StoreError,
    UnknownTaskError,
)

#: seconds an API call may take before the request answers 503 (a locked or unreachable database)
CALL_TIMEOUT = 30.0
STATUS: tuple[tuple[type[BaseException], int], ...] = (
    (api.DuplicateRunError, 409),
    (PipelineNotFoundError, 404),
    (RunNotFoundError, 404),
    (UnknownTaskError, 404),
    (ParameterError, 400),
    (StoreError, 503),
    (DBAPIError, 503),
    (SQLAlchemyError, 503),
)


class ApiError(tornado.web.HTTPError):
    """An error answer with a JSON body: ``{"error", "message", "hint"?, "fields"?, ...}``."""

    def __init__(self, status: int, message: str, **extra: Any):
        super().__init__(status, reason=None)
        self.body = {"error": tornado.httputil.responses.get(status, "Error"), "message": message, **extra}


def _json_default(value: Any) -> Any:
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    return str(value)


def _to_api_error(exc: BaseException, conflict: bool) -> ApiError:
    """Map a facade/database error to its status and JSON body."""
    if isinstance(exc, ApiError):
        return exc
    status = next((code for kind, code in STATUS if isinstance(exc, kind)), 409 if conflict else 400)
    if status == 503:
        return ApiError(503, f"the nbflow database is unreachable or locked: {type(exc).__name__}: {exc}",
                        hint="check NBFLOW_DB_URL and that the database server is running")
    extra: dict[str, Any] = {}
    if getattr(exc, "hint", None):
        extra["hint"] = exc.hint  # type: ignore[attr-defined]
    if isinstance(exc, api.DuplicateRunError):
        extra["run_id"] = exc.run_id
    if isinstance(exc, ParameterError):
        names = exc.unknown + exc.missing
        extra["fields"] = {f"params.{n}": str(getattr(exc, "message", exc)) for n in names} or {
            "params": str(getattr(exc, "message", exc))
        }
    message = getattr(exc, "message", None) or str(exc)
    return ApiError(status, message, **extra)


class NbflowHandler(APIHandler):
    """Base: JSON answers, facade calls in a thread, errors mapped to statuses."""

    auth_resource = "nbflow"

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """Answer errors as JSON (our :class:`ApiError` bodies, else jupyter_server's)."""
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, ApiError):
            self.set_header("Content-Type", "application/json")
            self.finish(json.dumps(exc.body, default=_json_default))
            return
        super().write_error(status_code, **kwargs)

    async def call(self, fn: Callable[..., Any], *args: Any, conflict: bool = False, **kwargs: Any) -> Any:
        """Run a blocking facade call in the thread pool; map its errors (see :data:`STATUS`)."""
        loop = tornado.ioloop.IOLoop.current()
        try:
            return await asyncio.wait_for(
                loop.run_in_executor(None, functools.partial(fn, *args, **kwargs)), CALL_TIMEOUT
            )
        except asyncio.TimeoutError:
            raise ApiError(503, f"the nbflow database did not answer within {CALL_TIMEOUT:.0f}s",
                           hint="check NBFLOW_DB_URL and that the database server is running") from None
        except Exception as exc:  # every facade error becomes a JSON answer, never a 500 page
            raise _to_api_error(exc, conflict) from exc

    def reply(self, data: Any, status: int = 200) -> None:
        """Finish with JSON."""
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(data, default=_json_default))

    def body(self, fields: dict[str, tuple[type | tuple[type, ...], bool]]) -> dict[str, Any]:
        """The JSON object body checked against ``{field: (types, required)}``; 400 naming the fields."""
        raw = self.request.body or b"{}"
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise ApiError(400, f"the request body is not valid JSON: {exc}", fields={"body": "not JSON"}) from None
        if not isinstance(data, dict):
            raise ApiError(400, "the request body must be a JSON object", fields={"body": "not an object"})
        errors: dict[str, str] = {}
        for name in data:
            if name not in fields:
                errors[name] = f"unknown field; known: {', '.join(sorted(fields))}"
        for name, (types, required) in fields.items():
            if name not in data:
                if required:
                    errors[name] = "required"
            elif not isinstance(data[name], types) or (isinstance(data[name], bool) and bool not in _tuple(types)):
                want = " or ".join(t.__name__ for t in _tuple(types))
                errors[name] = f"must be {want}, got {type(data[name]).__name__}"
        if errors:
            raise ApiError(400, "invalid request body: " + "; ".join(f"{k}: {v}" for k, v in errors.items()), fields=errors)
        return data

    def int_arg(self, name: str, default: int | None, minimum: int = 0, maximum: int | None = None) -> int | None:
        """A whole-number query argument; 400 naming it when it is not one."""
        text = self.get_query_argument(name, None)
        if text is None or text == "":
            return default
        try:
            value = int(text)
        except ValueError:
            raise ApiError(400, f"query argument '{name}' must be a whole number, got {text!r}",
                           fields={name: "not a whole number"}) from None
        if value < minimum or (maximum is not None and value > maximum):
            limit = f">= {minimum}" + (f" and <= {maximum}" if maximum is not None else "")
            raise ApiError(400, f"query argument '{name}' must be {limit}, got {value}", fields={name: f"must be {limit}"})
        return value


def _tuple(types: type | tuple[type, ...]) -> tuple[type, ...]:
    return types if isinstance(types, tuple) else (types,)


def _find_task(details: dict[str, Any], run_id: int, task_id: str) -> dict[str, Any]:
    for row in details["tasks"]:
        if row["task_id"] == task_id:
            return row
    known = [r["task_id"] for r in details["tasks"]]
    raise _to_api_error(UnknownTaskError(details["run"]["pipeline"], task_id, known, where=f"run {run_id}"), False)


class PipelinesHandler(NbflowHandler):
    """``GET /nbflow/api/pipelines``: every pipeline with schedule, paused, last run, import error."""

    @tornado.web.authenticated
    @authorized
    async def get(self) -> None:
        """List pipelines (and the DAG folder's import errors); ``?notebook=PATH`` keeps those the
        notebook (a path under the Jupyter root) belongs to."""
        pipelines = await self.call(api.list_pipelines)
        errors = await self.call(api.import_errors)
        notebook = self.get_query_argument("notebook", None)
        if notebook:
            pipelines = await self.call(self._of_notebook, pipelines, notebook)
        self.reply({"pipelines": pipelines, "import_errors": errors})

    def _of_notebook(self, pipelines: list[dict[str, Any]], notebook: str) -> list[dict[str, Any]]:
        """Pipelines defined in the notebook (cell tasks) or with a notebook task of that file
        beside the pipeline file (task labels carry only the file name)."""
        root = Path(self.settings.get("nbflow_root_dir") or ".").resolve()
        path = (root / notebook).resolve()
        if not path.is_relative_to(root):
            raise ApiError(400, f"notebook path {notebook!r} leaves the Jupyter root", fields={"notebook": "outside the root"})
        found = []
        for p in pipelines:
            file = Path(p["file"]).resolve() if p.get("file") else None
            if file == path:
                found.append(p)
                continue
            if file is None or file.parent != path.parent:
                continue
            tasks = api.pipeline_graph(p["name"])["definition"]["tasks"]
            if any(t["kind"] == "notebook" and t.get("label") == f"notebook: {path.name}" for t in tasks):
                found.append(p)
        return found


class GraphHandler(NbflowHandler):
    """``GET /nbflow/api/pipelines/{name}/graph[.svg]?run=ID``: the DAG with a run's states."""

    @tornado.web.authenticated
    @authorized
    async def get(self, name: str, svg: str | None = None) -> None:
        """JSON (definition, run, states, tasks, import_error) or the graphviz SVG."""
        run_id = self.int_arg("run", None, minimum=1)
        graph = await self.call(api.pipeline_graph, name, run_id=run_id)
        if not svg:
            self.reply(graph)
            return
        run = graph["run"]["id"] if graph["run"] else None
        picture = await self.call(api.dag_picture, graph["definition"], run_id=run, fmt="svg")
        self.finish(picture, set_content_type="image/svg+xml")


class PipelineRunsHandler(NbflowHandler):
    """``GET /nbflow/api/pipelines/{name}/runs?limit=&offset=``: runs, newest first."""

    @tornado.web.authenticated
    @authorized
    async def get(self, name: str) -> None:
        """A page of the pipeline's runs with task counts by state."""
        limit = self.int_arg("limit", 20, minimum=1, maximum=500)
        offset = self.int_arg("offset", 0)
        await self.call(api.pipeline_graph, name)  # 404 for an unknown pipeline
        runs = await self.call(api.list_runs, name, limit=limit, offset=offset)
        self.reply({"runs": runs, "limit": limit, "offset": offset})


class TriggerHandler(NbflowHandler):
    """``POST /nbflow/api/pipelines/{name}/trigger {params?, logical_date?}`` → 201 ``{run_id}``."""

    @tornado.web.authenticated
    @authorized
    async def post(self, name: str) -> None:
        """Queue a manual run with validated parameters."""
        data = self.body({"params": (dict, False), "logical_date": (str, False)})
        run_id = await self.call(api.trigger, name, params=data.get("params") or {}, logical_date=data.get("logical_date"))
        self.reply({"run_id": run_id, "pipeline": name}, status=201)


class PauseHandler(NbflowHandler):
    """``POST /nbflow/api/pipelines/{name}/pause {paused: bool}``."""

    @tornado.web.authenticated
    @authorized
    async def post(self, name: str) -> None:
        """Pause or unpause the pipeline's schedule."""
        data = self.body({"paused": (bool, True)})
        await self.call(api.set_paused, name, data["paused"])
        self.reply({"pipeline": name, "paused": data["paused"]})


class RunHandler(NbflowHandler):
    """``GET /nbflow/api/runs/{id}``: the run, its task instances, attempts and artifacts."""

    @tornado.web.authenticated
    @authorized
    async def get(self, run_id: str) -> None:
        """One run's details."""
        self.reply(await self.call(api.run_details, int(run_id)))


class LogHandler(NbflowHandler):
    """``GET /nbflow/api/runs/{id}/tasks/{task}/log?offset=N&try=K`` → ``{text, offset}``."""

    @tornado.web.authenticated
    @authorized
    async def get(self, run_id: str, task_id: str) -> None:
        """The log from byte ``offset`` on; ``offset`` in the answer is where to continue."""
        offset = self.int_arg("offset", 0)
        try_number = self.int_arg("try", None, minimum=1)
        text = await self.call(api.read_log, int(run_id), task_id, try_number=try_number, offset=offset)
        self.reply({"text": text, "offset": offset + len(text.encode("utf-8")), "try": try_number})


class OutputHandler(NbflowHandler):
    """``GET /nbflow/api/runs/{id}/tasks/{task}/output[?try=K]`` → the output notebook's path
    relative to the Jupyter root (404 when there is none or it lies outside the root)."""

    @tornado.web.authenticated
    @authorized
    async def get(self, run_id: str, task_id: str) -> None:
        """Where the executed notebook of the task's latest (or chosen) try is."""
        try_number = self.int_arg("try", None, minimum=1)
        details = await self.call(api.run_details, int(run_id))
        ti = _find_task(details, int(run_id), task_id)
        attempts = [a for a in details["attempts"] if a["task_id"] == task_id and a.get("output_uri")]
        if try_number is not None:
            attempts = [a for a in attempts if a["try_number"] == try_number]
        uri = attempts[-1]["output_uri"] if attempts else ti.get("output_uri")
        if not uri:
            raise ApiError(404, f"task '{task_id}' of run {run_id} has no output notebook", fields={"task": "no output"})
        self.reply({"run_id": int(run_id), "task_id": task_id, "uri": uri, **self._relative(uri)})

    def _relative(self, uri: str) -> dict[str, str]:
        local = uri[len("file://"):] if uri.startswith("file://") else uri
        if "://" in local:
            raise ApiError(404, f"the output notebook {uri} is not on this machine's disk", fields={"uri": "remote"})
        path = Path(local).resolve()
        artifact_root = Path(get_settings().artifact_root.removeprefix("file://")).resolve()
        if not path.is_relative_to(artifact_root):
            raise ApiError(404, f"the output notebook {path} is outside the nbflow artifact root {artifact_root}")
        root = Path(self.settings.get("nbflow_root_dir") or ".").resolve()
        if not path.is_relative_to(root):
            raise ApiError(404, f"the output notebook {path} is outside the Jupyter root {root}",
                           hint="start Jupyter in a folder that contains NBFLOW_HOME, or set NBFLOW_HOME inside it")
        if not path.is_file():
            raise ApiError(404, f"the output notebook {path} does not exist (cleaned up?)")
        relative = path.relative_to(root)
        hidden = [part for part in relative.parts if part.startswith(".")]
        if hidden and not self.contents_manager.allow_hidden:
            raise ApiError(404, f"the output notebook {path} is in the hidden folder {hidden[0]}, which Jupyter does not open",
                           hint="set NBFLOW_HOME to a folder whose name does not start with '.', "
                                "or start Jupyter with --ContentsManager.allow_hidden=True")
        return {"path": relative.as_posix()}


class ClearHandler(NbflowHandler):
    """``POST /nbflow/api/runs/{id}/tasks/{task}/clear``: retry a task (and what is downstream)."""

    @tornado.web.authenticated
    @authorized
    async def post(self, run_id: str, task_id: str) -> None:
        """Clear the task of a finished run and queue the run again."""
        self.body({})
        cleared = await self.call(api.clear_tasks, int(run_id), [task_id], conflict=True)
        self.reply({"run_id": int(run_id), "cleared": cleared})


class CancelHandler(NbflowHandler):
    """``POST /nbflow/api/runs/{id}/cancel``: cancel a queued or running run."""

    @tornado.web.authenticated
    @authorized
    async def post(self, run_id: str) -> None:
        """Mark the run and its unfinished tasks cancelled; the driver kills what is in flight."""
        self.body({})
        cancelled = await self.call(api.cancel_run, int(run_id), why="cancelled from JupyterLab", conflict=True)
        self.reply({"run_id": int(run_id), "cancelled": cancelled})


class HealthHandler(NbflowHandler):
    """``GET /nbflow/api/health``: database reachability and live schedulers (never raises)."""

    @tornado.web.authenticated
    @authorized
    async def get(self) -> None:
        """``status`` ok or degraded (the answer is 503 when degraded)."""
        state = await self.call(api.health)
        self.reply(state, status=200 if state.get("status") == "ok" else 503)


NAME, RUN, TASK = r"(?P<name>[^/]+)", r"(?P<run_id>\d+)", r"(?P<task_id>[^/]+)"
#: (pattern under /nbflow/api/, handler, HTTP methods) — the tests iterate this table
ROUTES: list[tuple[str, type[NbflowHandler], tuple[str, ...]]] = [
    (r"pipelines", PipelinesHandler, ("GET",)),
    (rf"pipelines/{NAME}/graph(?P<svg>\.svg)?", GraphHandler, ("GET",)),
    (rf"pipelines/{NAME}/runs", PipelineRunsHandler, ("GET",)),
    (rf"pipelines/{NAME}/trigger", TriggerHandler, ("POST",)),
    (rf"pipelines/{NAME}/pause", PauseHandler, ("POST",)),
    (rf"runs/{RUN}", RunHandler, ("GET",)),
    (rf"runs/{RUN}/tasks/{TASK}/log", LogHandler, ("GET",)),
    (rf"runs/{RUN}/tasks/{TASK}/output", OutputHandler, ("GET",)),
    (rf"runs/{RUN}/tasks/{TASK}/clear", ClearHandler, ("POST",)),
    (rf"runs/{RUN}/cancel", CancelHandler, ("POST",)),
    (r"health", HealthHandler, ("GET",)),
]


def setup_handlers(web_app: Any, root_dir: str | None = None) -> None:
    """Add :data:`ROUTES` under ``{base_url}nbflow/api/`` to the tornado application."""
    base = url_path_join(web_app.settings.get("base_url", "/"), "nbflow", "api")
    web_app.settings["nbflow_root_dir"] = root_dir
    web_app.add_handlers(".*$", [(url_path_join(base, pattern) + "$", handler) for pattern, handler, _ in ROUTES])
