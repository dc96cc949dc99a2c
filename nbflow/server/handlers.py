"""REST handlers of ``/nbflow/api/``: thin transports over :mod:`nbflow.api`.

Every route is an :class:`~jupyter_server.base.handlers.APIHandler` method decorated with
``@tornado.web.authenticated`` and ``@authorized`` (resource ``nbflow``): no token or cookie
is a 403, a cookie POST without the XSRF token is a 403 (jupyter_server's own check). What a
request may carry is bounded in :mod:`nbflow.server.limits` (ids, names, body size); errors
map to statuses in one table, :data:`nbflow.server.errors.STATUS`. The facade's calls are
blocking (SQL), so they run in the server's thread pool with a time limit. Answers name
files relative to the Jupyter root (:mod:`nbflow.server.paths`).
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import tornado.httputil
import tornado.ioloop
import tornado.web
from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join

from nbflow import api
from nbflow.config import get_settings
from nbflow.exceptions import TryNotFoundError, UnknownTaskError
from nbflow.server import limits
from nbflow.server.errors import ApiError, database_down, json_default, to_api_error
from nbflow.server.paths import PathScrubber

#: seconds an API call may take before the request answers 503 (a locked or unreachable database)
CALL_TIMEOUT = 30.0
#: seconds ``GET health`` may take, whatever the database does
HEALTH_TIMEOUT = 0.9
#: most lines ``?tail=`` may ask for
MAX_TAIL = 100_000


@tornado.web.stream_request_body
class NbflowHandler(APIHandler):
    """Base: bounded bodies, JSON answers, facade calls in a thread, errors mapped to statuses."""

    auth_resource = "nbflow"
    #: the body's fields: {name: (JSON types, required)}; handlers that take a body set it
    body_fields: dict[str, tuple[type | tuple[type, ...], bool]] = {}

    async def prepare(self) -> None:
        """Jupyter's checks (authentication, XSRF), then refuse a body over the size limit
        before reading it (the body is streamed to :meth:`data_received` after this)."""
        await super().prepare()
        self._body = limits.BodyReader(get_settings().max_body_bytes, self.request.headers.get("Content-Length"))

    def data_received(self, chunk: bytes) -> None:
        """A piece of the body (kept up to the limit)."""
        self._body.feed(chunk)

    def body(self) -> dict[str, Any]:
        """The JSON object body checked against :attr:`body_fields` (400/413 otherwise)."""
        return self._body.json_object(self.body_fields)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """Every error as ``{error, message, ...}`` (:class:`ApiError` bodies; Jupyter's own
        403s and tornado's 405s get the same shape), never a traceback."""
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if not isinstance(exc, ApiError):
            message = exc.log_message if isinstance(exc, tornado.web.HTTPError) and exc.log_message else None
            exc = ApiError(status_code, message or tornado.httputil.responses.get(status_code, "error"))
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(self.scrub(exc.body), default=json_default))

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        """Tracebacks of bugs are logged by :func:`to_api_error`; expected errors are not."""
        if not isinstance(value, ApiError):
            super().log_exception(typ, value, tb)

    async def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run a blocking facade call in the thread pool; map its errors (see :mod:`.errors`)."""
        loop = tornado.ioloop.IOLoop.current()
        try:
            return await asyncio.wait_for(
                loop.run_in_executor(None, functools.partial(fn, *args, **kwargs)), CALL_TIMEOUT
            )
        except asyncio.TimeoutError:
            raise database_down(f"no answer within {CALL_TIMEOUT:.0f} s") from None
        except Exception as exc:
            raise to_api_error(exc, context=f"{self.request.method} {self.request.path}") from exc

    def reply(self, data: Any, status: int = 200) -> None:
        """Finish with JSON (paths relative to the Jupyter root, see :class:`PathScrubber`)."""
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(self.scrub(data), default=json_default))

    def scrub(self, data: Any) -> Any:
        """``data`` with the server's absolute paths made relative (or named by their setting)."""
        return PathScrubber.of(self.settings.get("nbflow_root_dir")).scrub(data)

    def int_arg(self, name: str, default: int | None, minimum: int = 0, maximum: int = limits.MAX_ID) -> int | None:
        """A whole-number query argument; 400 naming it when it is not one in range."""
        return limits.whole_number(name, self.get_query_argument(name, None), default, minimum, maximum)

    def run_arg(self, run_id: str) -> int:
        """The run id of the path (400 when out of range)."""
        return limits.whole_number("run_id", run_id, None, minimum=1)  # type: ignore[return-value]


def _find_task(details: dict[str, Any], run_id: int, task_id: str) -> dict[str, Any]:
    for row in details["tasks"]:
        if row["task_id"] == task_id:
            return row
    known = [r["task_id"] for r in details["tasks"]]
    raise to_api_error(UnknownTaskError(details["run"]["pipeline"], task_id, known, where=f"run {run_id}"))


class PipelinesHandler(NbflowHandler):
    """``GET /nbflow/api/pipelines``: every pipeline with schedule, paused, last run, import error."""

    @tornado.web.authenticated
    @authorized
    async def get(self) -> None:
        """List pipelines (and the DAG folder's import errors); ``?notebook=PATH`` keeps those the
        notebook (a path under the Jupyter root) belongs to."""
        notebook = self.get_query_argument("notebook", None)
        if notebook:
            limits.text("notebook", notebook, max_length=4096)
        pipelines = await self.call(api.list_pipelines)
        errors = await self.call(api.import_errors)
        if notebook:
            pipelines = await self.call(self._of_notebook, pipelines, notebook)
        self.reply({"pipelines": pipelines, "import_errors": errors})

    def _of_notebook(self, pipelines: list[dict[str, Any]], notebook: str) -> list[dict[str, Any]]:
        """Pipelines defined in the notebook (cell tasks) or with a notebook task of that file
        beside the pipeline file (task labels carry only the file name)."""
        root = Path(self.settings.get("nbflow_root_dir") or ".").resolve()
        path = (root / notebook).resolve()
        if not path.is_relative_to(root):
            raise limits.bad_input("notebook", f"notebook path {limits.text_preview(notebook)!r} leaves the Jupyter root")
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
        limits.text("name", name)
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
        limits.text("name", name)
        limit = self.int_arg("limit", 20, minimum=1, maximum=500)
        offset = self.int_arg("offset", 0)
        await self.call(api.pipeline_graph, name)  # 404 for an unknown pipeline
        runs = await self.call(api.list_runs, name, limit=limit, offset=offset)
        self.reply({"runs": runs, "limit": limit, "offset": offset})


class TriggerHandler(NbflowHandler):
    """``POST /nbflow/api/pipelines/{name}/trigger {params?, logical_date?, incremental?}`` → 201 ``{run_id}``."""

    body_fields = {"params": (dict, False), "logical_date": (str, False), "incremental": (bool, False)}

    @tornado.web.authenticated
    @authorized
    async def post(self, name: str) -> None:
        """Queue a manual run with validated parameters."""
        limits.text("name", name)
        data = self.body()
        run_id = await self.call(
            api.trigger, name, params=data.get("params") or {}, logical_date=data.get("logical_date"),
            incremental=data.get("incremental"),
        )
        self.reply({"run_id": run_id, "pipeline": name}, status=201)


class PauseHandler(NbflowHandler):
    """``POST /nbflow/api/pipelines/{name}/pause {paused: bool}``."""

    body_fields = {"paused": (bool, True)}

    @tornado.web.authenticated
    @authorized
    async def post(self, name: str) -> None:
        """Pause or unpause the pipeline's schedule."""
        limits.text("name", name)
        data = self.body()
        await self.call(api.set_paused, name, data["paused"])
        self.reply({"pipeline": name, "paused": data["paused"]})


class RunHandler(NbflowHandler):
    """``GET /nbflow/api/runs/{id}``: the run, its task instances, attempts and artifacts."""

    @tornado.web.authenticated
    @authorized
    async def get(self, run_id: str) -> None:
        """One run's details."""
        self.reply(await self.call(api.run_details, self.run_arg(run_id)))


class LogHandler(NbflowHandler):
    """``GET /nbflow/api/runs/{id}/tasks/{task}/log?offset=N&limit=M&tail=L&try=K``."""

    @tornado.web.authenticated
    @authorized
    async def get(self, run_id: str, task_id: str) -> None:
        """Bytes from ``offset`` (at most ``limit``), or the last ``tail`` lines; never more than
        ``max_log_bytes`` (NBFLOW_MAX_LOG_BYTES). ``offset`` in the answer is where to go on."""
        run, task = self.run_arg(run_id), limits.text("task_id", task_id)
        cap = get_settings().max_log_bytes
        tail = self.int_arg("tail", None, minimum=1, maximum=MAX_TAIL)
        offset = self.int_arg("offset", 0, maximum=limits.MAX_OFFSET)
        if tail is not None and self.get_query_argument("offset", None) is not None:
            raise limits.bad_input("tail", "'tail' and 'offset' cannot be combined: ask for the last lines or a byte range")
        limit = min(self.int_arg("limit", cap, minimum=1) or cap, cap)
        try_number = self.int_arg("try", None, minimum=1)
        chunk = await self.call(api.log_chunk, run, task, try_number=try_number, offset=offset, limit=limit, tail=tail)
        self.reply({"text": chunk.text, "start": chunk.start, "offset": chunk.end, "size": chunk.size,
                    "truncated": chunk.truncated, "try": chunk.try_number})


class OutputHandler(NbflowHandler):
    """``GET /nbflow/api/runs/{id}/tasks/{task}/output[?try=K]`` → the output notebook's path
    relative to the Jupyter root (404 when there is none or it lies outside the root)."""

    @tornado.web.authenticated
    @authorized
    async def get(self, run_id: str, task_id: str) -> None:
        """Where the executed notebook of the task's latest (or chosen) try is."""
        run, task = self.run_arg(run_id), limits.text("task_id", task_id)
        try_number = self.int_arg("try", None, minimum=1)
        details = await self.call(api.run_details, run)
        ti = _find_task(details, run, task)
        attempts = [a for a in details["attempts"] if a["task_id"] == task]
        if try_number is not None:
            chosen = [a for a in attempts if a["try_number"] == try_number]
            if not chosen:
                raise to_api_error(TryNotFoundError(run, task, try_number, [a["try_number"] for a in attempts]))
            uri = chosen[0].get("output_uri")
        else:
            with_output = [a for a in attempts if a.get("output_uri")]
            uri = with_output[-1]["output_uri"] if with_output else ti.get("output_uri")
        which = f"try {try_number} of task '{task}'" if try_number else f"task '{task}'"
        if not uri:
            raise ApiError(404, f"{which} of run {run} has no output notebook", fields={"task_id": "no output notebook"})
        self.reply({"run_id": run, "task_id": task, "uri": uri, **self._relative(uri, f"the output notebook of {which} of run {run}")})

    def _relative(self, uri: str, what: str) -> dict[str, str]:
        local = uri[len("file://"):] if uri.startswith("file://") else uri
        if "://" in local:
            raise ApiError(404, f"{what} is not on this machine's disk (the artifact root is a URL)",
                           hint="download it with fsspec, or use a local NBFLOW_ARTIFACT_ROOT to open it here")
        path = Path(local).resolve()
        artifact_root = Path(get_settings().artifact_root.removeprefix("file://")).resolve()
        if not path.is_relative_to(artifact_root):
            raise ApiError(404, f"{what} is outside the nbflow artifact root (a symbolic link pointing elsewhere?)")
        root = Path(self.settings.get("nbflow_root_dir") or ".").resolve()
        if not path.is_relative_to(root):
            raise ApiError(404, f"{what} is outside the Jupyter root",
                           hint="start Jupyter in a folder that contains NBFLOW_HOME, or set NBFLOW_HOME inside it")
        if not path.is_file():
            raise ApiError(404, f"{what} does not exist (cleaned up?)")
        relative = path.relative_to(root)
        hidden = [part for part in relative.parts if part.startswith(".")]
        if hidden and not self.contents_manager.allow_hidden:
            raise ApiError(404, f"{what} is in the hidden folder {hidden[0]}, which Jupyter does not open",
                           hint="set NBFLOW_HOME to a folder whose name does not start with '.', "
                                "or start Jupyter with --ContentsManager.allow_hidden=True")
        return {"path": relative.as_posix()}


class ClearHandler(NbflowHandler):
    """``POST /nbflow/api/runs/{id}/tasks/{task}/clear``: retry a task (and what is downstream)."""

    @tornado.web.authenticated
    @authorized
    async def post(self, run_id: str, task_id: str) -> None:
        """Clear the task of a finished run and queue the run again."""
        run, task = self.run_arg(run_id), limits.text("task_id", task_id)
        self.body()
        cleared = await self.call(api.clear_tasks, run, [task])
        self.reply({"run_id": run, "cleared": cleared})


class CancelHandler(NbflowHandler):
    """``POST /nbflow/api/runs/{id}/cancel``: cancel a queued or running run."""

    @tornado.web.authenticated
    @authorized
    async def post(self, run_id: str) -> None:
        """Mark the run and its unfinished tasks cancelled; the driver kills what is in flight."""
        run = self.run_arg(run_id)
        self.body()
        cancelled = await self.call(api.cancel_run, run, why="cancelled from JupyterLab")
        self.reply({"run_id": run, "cancelled": cancelled})


class HealthHandler(NbflowHandler):
    """``GET /nbflow/api/health``: the database and the schedulers, answered within a second."""

    @tornado.web.authenticated
    @authorized
    async def get(self) -> None:
        """``status`` ok (200) or degraded with a ``reason`` (503); see :func:`nbflow.api.health`."""
        loop = tornado.ioloop.IOLoop.current()
        try:
            state = await asyncio.wait_for(loop.run_in_executor(None, api.health), HEALTH_TIMEOUT)
        except asyncio.TimeoutError:
            state = {"status": "degraded", "reason": f"the nbflow database did not answer within {HEALTH_TIMEOUT:g} s",
                     "database": "timed out", "schedulers": [], "runners": 0, "serving": "unknown", "expired_jobs": 0}
        self.reply(state, status=200 if state["status"] == "ok" else 503)


NAME, RUN, TASK = r"(?P<name>[^/]+)", r"(?P<run_id>[^/]+)", r"(?P<task_id>[^/]+)"
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
