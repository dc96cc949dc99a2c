"""REST handlers of ``/nbflow/api/``: thin transports over :mod:`nbflow.api`.

Every route is an :class:`~jupyter_server.base.handlers.APIHandler` method decorated with
``@tornado.web.authenticated`` and ``@authorized`` (resource ``nbflow``): no token or cookie
is a 403, a cookie POST without the XSRF token is a 403 (jupyter_server's own check). What a
request may carry is bounded in :mod:`nbflow.server.limits` (ids, names, body size); errors
map to statuses in one table, :data:`nbflow.server.errors.STATUS`; the base class
(:mod:`nbflow.server.base`) runs the facade's blocking calls in the server's thread pool with
a time limit. Answers name files relative to the Jupyter root (:mod:`nbflow.server.paths`).
Task actions and the scheduler are in :mod:`nbflow.server.actions`, notebooks (schedule,
export, the read-only drive of output notebooks) in :mod:`nbflow.server.notebooks`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from pathlib import Path
from typing import Any

import tornado.ioloop
import tornado.web
from jupyter_server.auth.decorator import authorized
from jupyter_server.utils import url_path_join

from nbflow import api
from nbflow.config import get_settings
from nbflow.server import limits
from nbflow.server.actions import (
    ClearHandler,
    DebugHandler,
    GridHandler,
    LogDownloadHandler,
    MarkHandler,
    SchedulerHandler,
    SchedulerStartHandler,
    WorkersHandler,
)
from nbflow.server.assets import AssetHandler, AssetsHandler
from nbflow.server.base import NbflowHandler
from nbflow.server.notebooks import (
    CheckpointsHandler,
    ContentsHandler,
    ExportedHtmlHandler,
    HtmlExportHandler,
    NotebookFormHandler,
    RunNotebookHandler,
    ScheduleNotebookHandler,
    SchedulePreviewHandler,
    drive_path,
    output_drive_path,
)
from nbflow.server.secrets import ConnectionHandler, ConnectionsHandler, VariableHandler, VariablesHandler

#: seconds ``GET health`` may take, whatever the database does
HEALTH_TIMEOUT = 0.6
#: most lines ``?tail=`` may ask for
MAX_TAIL = 100_000


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
            pipelines = await self.call(self._of_notebook, pipelines, self.in_root("notebook", notebook))
        for p in pipelines:
            p["waiting"] = await self.call(api.waiting_reason, p["last_run"]) if p["last_run"] else None
            p["schedule_text"] = api.describe(p["schedule"])
            p["next_run"] = await self.call(api.next_run, p)
        self.reply({"pipelines": pipelines, "import_errors": errors})

    def _of_notebook(self, pipelines: list[dict[str, Any]], path: Path) -> list[dict[str, Any]]:
        """Pipelines defined in the notebook (cell tasks: its file, or a pipeline its kernel
        recorded under the notebook's name, which has no file), or with a notebook task of that
        file beside the pipeline file (task labels carry only the file name)."""
        found = []
        kernel_name = api.kernel_pipeline_name(path.name)
        for p in pipelines:
            file = Path(p["file"]).resolve() if p.get("file") else None
            if file == path or (file is None and p["name"] == kernel_name):
                found.append(p)
                continue
            if file is None or file.parent != path.parent:
                continue
            tasks = api.pipeline_graph(p["name"])["definition"]["tasks"]
            if any(t["kind"] == "notebook" and t.get("label") == f"notebook: {path.name}" for t in tasks):
                found.append(p)
        return found


class GraphHandler(NbflowHandler):
    """``GET /nbflow/api/pipelines/{name}/graph[.svg]?run=ID[&collapsed=G1,G2]``: the DAG with a run's
    states (in the SVG, the task groups named by ``collapsed`` are one node each)."""

    @tornado.web.authenticated
    @authorized
    async def get(self, name: str, svg: str | None = None) -> None:
        """JSON (definition, run, states, tasks, import_error) or the graphviz SVG."""
        limits.text("name", name)
        run_id = self.int_arg("run", None, minimum=1)
        graph = await self.call(api.pipeline_graph, name, run_id=run_id)
        if not svg:
            graph["waiting"] = await self.call(api.waiting_reason, graph["run"]) if graph["run"] else None
            self.reply(graph)
            return
        run = graph["run"]["id"] if graph["run"] else None
        collapsed = [
            g for g in limits.text("collapsed", self.get_query_argument("collapsed", ""), 4000).split(",") if g
        ]
        picture = await self.call(api.dag_picture, graph["definition"], run_id=run, fmt="svg", collapsed=collapsed)
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
    """``POST /nbflow/api/pipelines/{name}/trigger {params?, logical_date?, incremental?, sweep?}``
    → 201 ``{run_id}`` (a sweep: also ``{sweep_id, run_ids}``)."""

    body_fields = {
        "params": (dict, False),
        "logical_date": (str, False),
        "incremental": (bool, False),
        "last_good": (bool, False),
        "sweep": (dict, False),
    }

    @tornado.web.authenticated
    @authorized
    async def post(self, name: str) -> None:
        """Queue a manual run with validated parameters. An ``Idempotency-Key`` header makes a
        repeated request (a double click) answer with the run the first one made."""
        limits.text("name", name)
        data = self.body()
        key = self.request.headers.get("Idempotency-Key")
        if key is not None:
            limits.text("Idempotency-Key", key, max_length=200)
        if data.get("sweep") is not None:
            await self._sweep(name, data, key)
            return
        run_id = await self.call(
            api.trigger,
            name,
            params=data.get("params") or {},
            logical_date=data.get("logical_date"),
            incremental=data.get("incremental"),
            last_good=data.get("last_good", False),
            idempotency_key=key,
            start=not self.managed,
        )
        await self.runs_queued()
        self.reply({"run_id": run_id, "pipeline": name}, status=201)

    async def _sweep(self, name: str, data: dict[str, Any], key: str | None) -> None:
        """One run per point of ``sweep`` (``{param: [values]}``)."""
        if data.get("logical_date") is not None:
            raise limits.bad_input("logical_date", "a sweep's runs take no logical_date (each point is a run of now)")
        for param, values in data["sweep"].items():
            if not isinstance(values, list):
                raise limits.bad_input(f"sweep.{param}", f"'sweep.{param}' must be a list of values")
        sweep_id, run_ids = await self.call(
            api.trigger_sweep,
            name,
            data["sweep"],
            params=data.get("params") or {},
            incremental=data.get("incremental"),
            last_good=data.get("last_good", False),
            idempotency_key=key,
            start=not self.managed,
        )
        await self.runs_queued()
        reply = {"run_id": run_ids[0], "pipeline": name, "sweep_id": sweep_id, "run_ids": run_ids}
        self.reply(reply, status=201)


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
        """One run's details; each artifact with its ``path`` in the drive of the artifact root."""
        details = await self.call(api.run_details, self.run_arg(run_id))
        for artifact in details["artifacts"]:
            artifact["path"] = drive_path(artifact["uri"], missing=None)
        details["consumed"] = await self.call(api.run_lineage, details["run"]["id"])  # an asset-triggered run's
        self.reply(details)


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
            raise limits.bad_input(
                "tail", "'tail' and 'offset' cannot be combined: ask for the last lines or a byte range"
            )
        limit = min(self.int_arg("limit", cap, minimum=1) or cap, cap)
        try_number = self.int_arg("try", None, minimum=1)
        chunk = await self.call(api.log_chunk, run, task, try_number=try_number, offset=offset, limit=limit, tail=tail)
        self.reply(
            {
                "text": chunk.text,
                "start": chunk.start,
                "offset": chunk.end,
                "size": chunk.size,
                "truncated": chunk.truncated,
                "try": chunk.try_number,
                "finished": chunk.finished,
            }
        )


class OutputHandler(NbflowHandler):
    """``GET /nbflow/api/runs/{id}/tasks/{task}/output[?try=K]`` → where JupyterLab opens the
    output notebook: ``path`` in the extension's read-only drive of the artifact root
    (``nbflow-runs:.../task · run N · try K.ipynb``), and that name as its tab ``title``."""

    @tornado.web.authenticated
    @authorized
    async def get(self, run_id: str, task_id: str) -> None:
        """The executed notebook of the task's latest (or chosen) try."""
        run, task = self.run_arg(run_id), limits.text("task_id", task_id)
        found = await self.call(api.output_of, run, task, self.int_arg("try", None, minimum=1))
        path = output_drive_path(found["uri"], task, run, found["try"])
        self.reply(
            {
                "run_id": run,
                "task_id": task,
                "uri": found["uri"],
                "try": found["try"],
                "path": path,
                "title": path.rsplit("/", 1)[1].removesuffix(".ipynb"),
            }
        )


class DiffHandler(NbflowHandler):
    """``GET /nbflow/api/runs/{id}/tasks/{task}/diff?against=OTHER[&try=K&against_try=J]``: the
    nbdime diff of the task's output notebooks, from run OTHER (base) to this run."""

    @tornado.web.authenticated
    @authorized
    async def get(self, run_id: str, task_id: str) -> None:
        """``{base, diff, ...}`` as nbdime's web widgets take them (``NotebookDiffModel``)."""
        run, task = self.run_arg(run_id), limits.text("task_id", task_id)
        against = self.int_arg("against", None, minimum=1)
        if against is None:
            raise limits.bad_input("against", "'against' names the other run: ?against=RUN_ID")
        found = await self.call(
            api.diff_outputs,
            run,
            task,
            against,
            try_number=self.int_arg("try", None, minimum=1),
            against_try=self.int_arg("against_try", None, minimum=1),
            prepare=self.scrub,  # before the diff: its offsets must fit the texts the answer carries
        )
        self.reply(found)


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


class CompareHandler(NbflowHandler):
    """``GET /nbflow/api/compare?runs=1,2,3`` | ``?sweep=ID`` | ``?pipeline=NAME&last=N`` [``&task=MAPPED``]."""

    @tornado.web.authenticated
    @authorized
    async def get(self) -> None:
        """The params and metrics of runs side by side (``nbflow compare``'s data)."""
        text = self.get_query_argument("runs", None)
        runs = None
        if text:
            limits.text("runs", text, max_length=2000)
            runs = [limits.whole_number("runs", part.strip(), None, minimum=1) for part in text.split(",")]
        sweep = self.int_arg("sweep", None, minimum=1)
        pipeline = self.get_query_argument("pipeline", None)
        if pipeline is not None:
            limits.text("pipeline", pipeline)
        last = self.int_arg("last", None, minimum=1, maximum=500)
        task = self.get_query_argument("task", None)
        if task is not None:
            limits.text("task", task)
        self.reply(await self.call(api.compare, runs, sweep=sweep, pipeline=pipeline, last=last, task=task))


class HealthHandler(NbflowHandler):
    """``GET /nbflow/api/health``: the database and the schedulers, answered within a second.

    One check runs at a time, in a thread of its own pool, and requests that come while it runs
    wait for that one: a database that hangs holds one thread, not one per request (load
    balancers ask every few seconds), and the server's own pool stays free for other routes.
    """

    _pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="nbflow-health")
    _running: concurrent.futures.Future | None = None

    @classmethod
    def _check(cls) -> concurrent.futures.Future:
        if cls._running is None or cls._running.done():
            cls._running = cls._pool.submit(api.health)
        return cls._running

    @tornado.web.authenticated
    @authorized
    async def get(self) -> None:
        """``status`` ok (200) or degraded with a ``reason`` (503); see :func:`nbflow.api.health`."""
        try:
            check = asyncio.wrap_future(self._check())
            state = await asyncio.wait_for(asyncio.shield(check), HEALTH_TIMEOUT)
        except TimeoutError:
            state = {
                "status": "degraded",
                "reason": f"the nbflow database did not answer within {HEALTH_TIMEOUT:g} s",
                "database": "timed out",
                "schedulers": [],
                "runners": 0,
                "serving": "unknown",
                "expired_jobs": 0,
            }
        self.reply(state, status=200 if state["status"] == "ok" else 503)


NAME, RUN, TASK = r"(?P<name>[^/]+)", r"(?P<run_id>[^/]+)", r"(?P<task_id>[^/]+)"
PATH = r"(?P<path>.+?)"  # a file in the drive of the artifact root: may hold slashes
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
    (rf"runs/{RUN}/tasks/{TASK}/diff", DiffHandler, ("GET",)),
    (rf"runs/{RUN}/tasks/{TASK}/clear", ClearHandler, ("POST",)),
    (rf"runs/{RUN}/tasks/{TASK}/mark", MarkHandler, ("POST",)),
    (rf"runs/{RUN}/tasks/{TASK}/log\.txt", LogDownloadHandler, ("GET",)),
    (rf"runs/{RUN}/tasks/{TASK}/output\.html", HtmlExportHandler, ("GET",)),
    (rf"runs/{RUN}/tasks/{TASK}/export\.html", ExportedHtmlHandler, ("GET",)),
    (rf"runs/{RUN}/tasks/{TASK}/debug", DebugHandler, ("POST",)),
    (rf"runs/{RUN}/cancel", CancelHandler, ("POST",)),
    (rf"pipelines/{NAME}/grid", GridHandler, ("GET",)),
    (r"scheduler", SchedulerHandler, ("GET",)),
    (r"scheduler/start", SchedulerStartHandler, ("POST",)),
    (r"notebooks/form", NotebookFormHandler, ("GET",)),
    (r"notebooks/schedule", ScheduleNotebookHandler, ("POST",)),
    (r"notebooks/run", RunNotebookHandler, ("POST",)),
    (r"schedule/preview", SchedulePreviewHandler, ("GET",)),
    (rf"contents/{PATH}/checkpoints", CheckpointsHandler, ("GET",)),
    (rf"contents/{PATH}", ContentsHandler, ("GET",)),
    (r"health", HealthHandler, ("GET",)),
    (r"compare", CompareHandler, ("GET",)),
    (r"workers", WorkersHandler, ("GET",)),
    (r"assets", AssetsHandler, ("GET",)),
    (rf"assets/{NAME}", AssetHandler, ("GET",)),
    (r"connections", ConnectionsHandler, ("GET", "POST")),
    (rf"connections/{NAME}", ConnectionHandler, ("GET", "DELETE")),
    (r"variables", VariablesHandler, ("GET",)),
    (r"variables/(?P<key>[^/]+)", VariableHandler, ("GET", "PUT", "DELETE")),
]


def setup_handlers(
    web_app: Any, root_dir: str | None = None, *, manage_scheduler: bool = False, cwd: str | None = None
) -> None:
    """Add :data:`ROUTES` under ``{base_url}nbflow/api/`` to the tornado application.

    ``manage_scheduler``: runs queued here are served by a managed scheduler
    (:func:`nbflow.api.start_scheduler`, started in ``cwd``) instead of a background driver."""
    base = url_path_join(web_app.settings.get("base_url", "/"), "nbflow", "api")
    web_app.settings["nbflow_root_dir"] = root_dir
    web_app.settings["nbflow_manage_scheduler"] = manage_scheduler
    web_app.settings["nbflow_cwd"] = cwd
    web_app.add_handlers(".*$", [(url_path_join(base, pattern) + "$", handler) for pattern, handler, _ in ROUTES])
