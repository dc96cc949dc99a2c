"""REST handlers of task actions, the run history grid and the managed scheduler."""

from __future__ import annotations

from pathlib import Path

import tornado.web
from jupyter_server.auth.decorator import authorized

from nbflow import api
from nbflow.config import get_settings
from nbflow.server import limits
from nbflow.server.base import NbflowHandler


class ClearHandler(NbflowHandler):
    """``POST /nbflow/api/runs/{id}/tasks/{task}/clear {downstream?, upstream?, dry_run?}``:
    retry a task of a finished run, with what is downstream (default) and/or upstream of it."""

    body_fields = {"downstream": (bool, False), "upstream": (bool, False), "dry_run": (bool, False)}

    @tornado.web.authenticated
    @authorized
    async def post(self, run_id: str, task_id: str) -> None:
        """Clear the tasks and queue the run again; with ``dry_run`` only say which tasks would be cleared."""
        run, task = self.run_arg(run_id), limits.text("task_id", task_id)
        data = self.body()
        dry_run = data.get("dry_run", False)
        cleared = await self.call(
            api.clear_tasks,
            run,
            [task],
            downstream=data.get("downstream", True),
            upstream=data.get("upstream", False),
            dry_run=dry_run,
            start=not self.managed,
        )
        if not dry_run:
            await self.runs_queued()
        self.reply({"run_id": run, "cleared": cleared, "dry_run": dry_run})


class MarkHandler(NbflowHandler):
    """``POST /nbflow/api/runs/{id}/tasks/{task}/mark {state: success | failed}``."""

    body_fields = {"state": (str, True)}

    @tornado.web.authenticated
    @authorized
    async def post(self, run_id: str, task_id: str) -> None:
        """Mark a finished task of a finished run; the run's state follows."""
        run, task = self.run_arg(run_id), limits.text("task_id", task_id)
        state = self.body()["state"]
        if state not in ("success", "failed"):
            raise limits.bad_input(
                "state", f"'state' must be 'success' or 'failed', got {limits.text_preview(state)!r}"
            )
        self.reply(await self.call(api.mark_task, run, task, state))


class LogDownloadHandler(NbflowHandler):
    """``GET /nbflow/api/runs/{id}/tasks/{task}/log.txt[?try=K]``: the whole log as a download,
    sent in pieces of ``max_log_bytes`` (never held in memory whole)."""

    @tornado.web.authenticated
    @authorized
    async def get(self, run_id: str, task_id: str) -> None:
        """The log of the task's latest (or chosen) try as ``text/plain``."""
        run, task = self.run_arg(run_id), limits.text("task_id", task_id)
        try_number = self.int_arg("try", None, minimum=1)
        cap = get_settings().max_log_bytes
        chunk = await self.call(api.log_chunk, run, task, try_number=try_number, offset=0, limit=cap)
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        name = f"run{run}-{task}-try{chunk.try_number or 0}.log".replace('"', "")
        self.set_header("Content-Disposition", f'attachment; filename="{name}"')
        while True:
            self.write(chunk.text.encode("utf-8"))
            await self.flush()
            if chunk.end >= chunk.size:
                break
            chunk = await self.call(api.log_chunk, run, task, try_number=chunk.try_number, offset=chunk.end, limit=cap)
        self.finish()


class DebugHandler(NbflowHandler):
    """``POST /nbflow/api/runs/{id}/tasks/{task}/debug {try?}`` → 201 ``{path}``: a runnable copy
    of the try's notebook beside the pipeline file (see :func:`nbflow.api.debug_copy`)."""

    body_fields = {"try": (int, False)}

    @tornado.web.authenticated
    @authorized
    async def post(self, run_id: str, task_id: str) -> None:
        """Write the debug copy and answer where JupyterLab opens it."""
        run, task = self.run_arg(run_id), limits.text("task_id", task_id)
        try_number = self.body().get("try")
        details = await self.call(api.run_details, run)
        file = await self.call(api.pipeline_file, details["run"]["pipeline"])
        beside = Path(file).resolve().parent if file else None
        folder = beside if beside is not None and beside.is_relative_to(self.root) else self.root / "nbflow-debug"
        path = await self.call(api.debug_copy, run, task, try_number, folder)
        self.reply({"path": path.relative_to(self.root).as_posix()}, status=201)


class GridHandler(NbflowHandler):
    """``GET /nbflow/api/pipelines/{name}/grid?limit=&offset=``: runs × tasks, newest run first."""

    @tornado.web.authenticated
    @authorized
    async def get(self, name: str) -> None:
        """A page of the grid (see :func:`nbflow.api.run_grid`)."""
        limits.text("name", name)
        limit = self.int_arg("limit", 25, minimum=1, maximum=500)
        offset = self.int_arg("offset", 0)
        self.reply(await self.call(api.run_grid, name, limit=limit, offset=offset))


class SchedulerHandler(NbflowHandler):
    """``GET /nbflow/api/scheduler``: is a scheduler serving this home, since when, or why not."""

    @tornado.web.authenticated
    @authorized
    async def get(self) -> None:
        """The state of :func:`nbflow.api.scheduler_state`, and whether this server manages one."""
        self.reply({**await self.call(api.scheduler_state), "managed": self.managed})


class SchedulerStartHandler(NbflowHandler):
    """``POST /nbflow/api/scheduler/start``: start a detached ``nbflow scheduler`` unless one serves."""

    @tornado.web.authenticated
    @authorized
    async def post(self) -> None:
        """Start one (``started``: its pid, or null when one serves already) and answer its state."""
        self.body()
        pid = await self.call(api.start_scheduler, cwd=self.settings.get("nbflow_cwd"))
        self.reply({**await self.call(api.scheduler_state), "managed": self.managed, "started": pid})


class WorkersHandler(NbflowHandler):
    """``GET /nbflow/api/workers[?engine=dask|celery][&scheduler=ADDRESS]``: the workers (``nbflow workers``'s data)."""

    @tornado.web.authenticated
    @authorized
    async def get(self) -> None:
        """Each worker with host, queues, slots, what it runs now, memory, CPU and heartbeat;
        queues with waiting tasks that no worker serves, with the command that starts one."""
        address = self.get_query_argument("scheduler", None)
        if address is not None:
            limits.text("scheduler", address, max_length=500)
        engine = self.get_query_argument("engine", None)
        if engine not in (None, "dask", "celery"):
            raise limits.bad_input(
                "engine", f"'engine' must be 'dask' or 'celery', got {limits.text_preview(engine)!r}"
            )
        view = await self.call(api.list_workers, address=address, engine=engine)
        self.reply(view.as_dict())
