"""REST handlers of notebooks: "Schedule this notebook" (its form, the schedule's preview, the
pipeline file it writes), "Run as pipeline", the HTML export of an output notebook, and the
read-only drive through which JupyterLab opens output notebooks.

**The drive.** Output notebooks live under the artifact root (by default
``$NBFLOW_HOME/runs``, a hidden folder that Jupyter's own contents API refuses to open, or
any fsspec URL). The extension registers a JupyterLab drive named :data:`DRIVE` whose REST
endpoint is ``nbflow/api/contents``: these handlers answer it with Jupyter contents models,
read-only, for files under the artifact root only. So an output notebook opens wherever the
home is, with no ``allow_hidden``, as
``nbflow-runs:<pipeline>/run-<id>/<task>/try-<n>/<task> · run <id> · try <n>.ipynb``: the drive
names each try's ``output.ipynb`` after its try, so its tab says which one it is.
"""

from __future__ import annotations

import mimetypes
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

import tornado.web
from jupyter_server.auth.decorator import authorized

from nbflow import api
from nbflow.config import get_settings
from nbflow.server import limits
from nbflow.server.base import NbflowHandler
from nbflow.server.errors import ApiError

#: the name of the extension's JupyterLab drive of the artifact root (a path prefix: ``nbflow-runs:``)
DRIVE = "nbflow-runs"


_RAISE = object()


def drive_path(uri: str, missing: Any = _RAISE) -> Any:
    """The drive path (``nbflow-runs:a/b.ipynb``) of a file under the artifact root; outside
    it, ``missing`` (default: a 404)."""
    root = get_settings().artifact_root.removeprefix("file://").rstrip("/")
    local = uri.removeprefix("file://")
    if not local.startswith(root + "/"):
        if missing is _RAISE:
            raise ApiError(404, "the file is outside the nbflow artifact root")
        return missing
    return f"{DRIVE}:{local[len(root) + 1 :]}"


class NotebookFormHandler(NbflowHandler):
    """``GET /nbflow/api/notebooks/form?path=NB``: what "Schedule this notebook" offers for it."""

    @tornado.web.authenticated
    @authorized
    async def get(self) -> None:
        """Declared parameters with types and defaults, kernel, cell tasks, a suggested name."""
        path = self.in_root("path", self.get_query_argument("path", ""))
        self.reply(await self.call(api.notebook_form, path))


class SchedulePreviewHandler(NbflowHandler):
    """``GET /nbflow/api/schedule/preview?schedule=CRON&timezone=TZ``: in words, and the next 5 runs."""

    @tornado.web.authenticated
    @authorized
    async def get(self) -> None:
        """400 naming ``schedule`` or ``timezone`` when one is not valid."""
        schedule = limits.text("schedule", self.get_query_argument("schedule", ""), max_length=250)
        zone = limits.text("timezone", self.get_query_argument("timezone", "UTC"), max_length=64)
        self.reply(await self.call(api.schedule_preview, schedule, zone))


class ScheduleNotebookHandler(NbflowHandler):
    """``POST /nbflow/api/notebooks/schedule`` → 201 ``{pipeline, file, ...}``: write a pipeline
    file running the notebook into the DAG folder (see :func:`nbflow.api.schedule_notebook`)."""

    body_fields = {
        "path": (str, True),
        "name": (str, True),
        "schedule": ((str, type(None)), False),
        "timezone": (str, False),
        "catchup": (bool, False),
        "parameters": (dict, False),
        "retries": (int, False),
        "timeout": ((int, float, type(None)), False),
        "queue": (str, False),
        "kernel": ((str, type(None)), False),
        "run_now": (bool, False),
    }

    @tornado.web.authenticated
    @authorized
    async def post(self) -> None:
        """400 naming the field (a parameter, the cron, the path), 409 when the name or file is taken."""
        data = self.body()
        path = self.in_root("path", data["path"])
        if not data.get("schedule") and not data.get("run_now"):
            raise limits.bad_input("schedule", "give a schedule (cron or preset), or ask to run it now (run_now)")
        made = await self.call(
            api.schedule_notebook,
            path,
            name=limits.text("name", data["name"], max_length=100),
            schedule=data.get("schedule") or None,
            timezone=data.get("timezone") or "UTC",
            catchup=data.get("catchup", False),
            parameters=data.get("parameters") or {},
            retries=data.get("retries", 0),
            timeout=data.get("timeout"),
            queue=data.get("queue") or "default",
            kernel=data.get("kernel"),
        )
        made["run_id"] = None
        if data.get("run_now"):
            made["run_id"] = await self.call(api.trigger, made["pipeline"], start=not self.managed)
        await self.runs_queued()
        self.reply(made, status=201)


class RunNotebookHandler(NbflowHandler):
    """``POST /nbflow/api/notebooks/run {path}`` → 201 ``{pipeline, run_id, file}``: a saved
    notebook of cell tasks recorded as a pipeline and a run of it queued ("Run as pipeline")."""

    body_fields = {"path": (str, True)}

    @tornado.web.authenticated
    @authorized
    async def post(self) -> None:
        """Register the notebook's cell tasks and queue a run for the scheduler."""
        path = self.in_root("path", self.body()["path"])
        if path.suffix != ".ipynb" or not path.is_file():
            raise limits.bad_input("path", f"{path.name} is not a saved notebook (.ipynb)")
        answer = await self.call(api.run_as_pipeline, path, start=not self.managed)
        await self.runs_queued()
        self.reply(answer, status=201)


class HtmlExportHandler(NbflowHandler):
    """``GET /nbflow/api/runs/{id}/tasks/{task}/output.html[?try=K&download=1]``: the output
    notebook as a standalone HTML page (nbconvert)."""

    #: the facade function (run, task, try) -> (download name, the page)
    page = staticmethod(api.export_html)

    @tornado.web.authenticated
    @authorized
    async def get(self, run_id: str, task_id: str) -> None:
        """``text/html``; with ``download=1`` as an attachment named after pipeline, run, task and try."""
        run, task = self.run_arg(run_id), limits.text("task_id", task_id)
        name, html = await self.call(self.page, run, task, self.int_arg("try", None, minimum=1))
        if self.get_query_argument("download", "") == "1":
            self.set_header("Content-Disposition", f'attachment; filename="{name}"')
        self.finish(html.encode("utf-8"), set_content_type="text/html; charset=utf-8")


class ExportedHtmlHandler(HtmlExportHandler):
    """``GET /nbflow/api/runs/{id}/tasks/{task}/export.html[?try=K&download=1]``: the page the
    task's ``export="html"`` wrote beside its output notebook (as ``output.html`` answers)."""

    page = staticmethod(api.exported_html)


class ContentsHandler(NbflowHandler):
    """``GET /nbflow/api/contents/{path}``: a file under the artifact root as a Jupyter contents
    model (read-only), for the extension's drive (see the module docstring)."""

    @tornado.web.authenticated
    @authorized
    async def get(self, path: str) -> None:
        """A notebook (``type=notebook``) or a text file; 404 outside the artifact root."""
        relative = _safe(path)
        self.reply(await self.call(_model, relative, self.get_query_argument("content", "1") != "0"))


class CheckpointsHandler(NbflowHandler):
    """``GET /nbflow/api/contents/{path}/checkpoints``: a read-only file has none."""

    @tornado.web.authenticated
    @authorized
    async def get(self, path: str) -> None:
        """Always ``[]``."""
        _safe(path)
        self.reply([])


def output_name(task_id: str, run_id: int, try_number: int) -> str:
    """The name an output notebook has in the drive: its tab title, ``task · run N · try K.ipynb``
    (JupyterLab titles a document by its file name, and renames the file when its title changes)."""
    return f"{task_id} · run {run_id} · try {try_number}.ipynb"


def output_drive_path(uri: str, task_id: str, run_id: int, try_number: int) -> str:
    """The drive path of an output notebook, under the name :func:`output_name` gives it."""
    folder = drive_path(uri).rsplit("/", 1)[0]
    return f"{folder}/{output_name(task_id, run_id, try_number)}"


def _real(relative: PurePosixPath) -> PurePosixPath:
    """The file behind a drive path: ``<pipeline>/run-N/<task>/try-K/<output_name>`` is that
    try's ``output.ipynb``; any other path is itself."""
    parts = relative.parts
    if len(parts) >= 4 and parts[-4].startswith("run-") and parts[-2].startswith("try-"):
        run, task, tried = parts[-4][4:], parts[-3], parts[-2][4:]
        if run.isdigit() and tried.isdigit() and relative.name == output_name(task, int(run), int(tried)):
            return relative.with_name("output.ipynb")
    return relative


def _safe(path: str) -> PurePosixPath:
    """A relative path without ``..`` or control characters (400 otherwise)."""
    limits.text("path", path, max_length=4096)
    relative = PurePosixPath(path)
    if relative.is_absolute() or ".." in relative.parts or not relative.parts:
        raise limits.bad_input("path", "a path under the artifact root, without '..'")
    return relative


def _model(relative: PurePosixPath, content: bool) -> dict[str, Any]:
    """The Jupyter contents model of ``relative`` under the artifact root."""
    import fsspec

    from nbflow.artifacts import join

    settings = get_settings()
    uri = join(settings.artifact_root, str(_real(relative)))
    fs, local = fsspec.core.url_to_fs(uri)
    if not fs.isfile(local):
        raise ApiError(404, f"no file {relative} under the nbflow artifact root (cleaned up?)")
    if "://" not in settings.artifact_root.removeprefix("file://"):  # a local root: no symbolic link out of it
        root = Path(settings.artifact_root.removeprefix("file://")).resolve()
        if not Path(local).resolve().is_relative_to(root):
            raise ApiError(404, f"{relative} leads outside the nbflow artifact root (a symbolic link?)")
    info = fs.info(local)
    if relative.suffix != ".ipynb" and (info.get("size") or 0) > settings.max_log_bytes:
        raise limits.bad_input(
            "path",
            f"{relative.name} is {info.get('size')} bytes, more than max_log_bytes "
            f"({settings.max_log_bytes}) that one answer carries: download it instead",
        )
    mtime = info.get("mtime") or info.get("created") or 0
    stamp = datetime.fromtimestamp(float(mtime.timestamp() if hasattr(mtime, "timestamp") else mtime), UTC)
    model: dict[str, Any] = {
        "name": relative.name,
        "path": str(relative),
        "created": stamp.isoformat(),
        "last_modified": stamp.isoformat(),
        "writable": False,
        "size": info.get("size"),
        "hash": None,
        "hash_algorithm": None,
    }
    if relative.suffix == ".ipynb":
        model.update(
            type="notebook",
            format="json" if content else None,
            mimetype=None,
            content=api.read_notebook(uri) if content else None,
        )
    else:
        text = fs.cat_file(local).decode("utf-8", "replace") if content else None
        model.update(
            type="file",
            format="text" if content else None,
            content=text,
            mimetype=mimetypes.guess_type(relative.name)[0] or "text/plain",
        )
    return model
