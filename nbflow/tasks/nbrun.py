"""Run ONE notebook attempt in this process with papermill, and say exactly how it ended.

papermill executes the notebook (the kernel is a subprocess as usual) through a small papermill
engine registered as ``"nbflow"``: nbclient plus three per-attempt additions:

- optional *context code* run silently in the kernel before the first cell (no cell, no
  ``In [n]`` of its own) and kept in the notebook's metadata (``nbflow.context``);
- nbclient hooks that record the cell being run and whether the kernel became ready;
- a per-call kernel manager subclass that records the kernel's process, so that two
  attempts in two threads of one process never see each other's kernel, and that starts and
  stops kernels without jupyter_client's idle waits (:mod:`nbflow.tasks.kernel`).

What papermill leaves to the caller is done here:

- a whole-task ``timeout`` (nbclient's timeout is per cell): a watchdog thread sends SIGTERM to
  the kernel's process group (jupyter_client starts kernels in a new session, so pgid == pid),
  then SIGKILL after ``kill_grace``; the attempt ends as ``task_timeout``;
- the failure reason (``cell_error``, ``cell_timeout``, ``task_timeout``, ``kernel_died``,
  ``kernel_start_failed``) with the failing cell's index in the *source* notebook;
- after a timeout, kernel death or start failure papermill writes no banner and marks cells it
  never ran as completed; the output notebook is rewritten with a banner, a marker before the
  failing cell and the later cells back to ``pending``;
- no kernel process (or process of its group) is left alive, whatever happened.

Notebook failures are returned as an :class:`~nbflow.record.AttemptRecord`, never raised.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nbformat
import papermill
from nbclient.exceptions import CellTimeoutError, DeadKernelError
from papermill.engines import NBClientEngine, papermill_engines
from papermill.exceptions import PapermillExecutionError

from nbflow import procs
from nbflow.config import get_settings
from nbflow.exceptions import NotebookNotFoundError
from nbflow.record import AttemptRecord
from nbflow.tasks import kernelpool, pmlog
from nbflow.tasks.base import cell_name
from nbflow.tasks.kernel import PromptKernelManager

__all__ = ["run_notebook", "NbflowEngine", "ENGINE_NAME", "CONTEXT_TAG"]

ENGINE_NAME = "nbflow"
CONTEXT_TAG = "nbflow-context"
INJECTED_TAG = "injected-parameters"
BANNER_TAG, MARKER_TAG = "nbflow-error-banner", "nbflow-error-marker"
# papermill drops cells tagged like its own error banner when it runs a notebook again.
PAPERMILL_ERROR_TAG = "papermill-error-cell-tag"
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
_STYLE = (  # papermill's banner style, so both kinds of failure look alike
    'style="color:red; font-family:Helvetica Neue, Helvetica, Arial, sans-serif; font-size:2em;"'
)
_TITLES = {
    "cell_timeout": "A cell timed out",
    "task_timeout": "The task timed out",
    "kernel_died": "The kernel died",
    "kernel_start_failed": "The kernel failed to start",
}


class _Attempt:
    """Per-call state shared by the engine hooks, the kernel manager and the watchdog."""

    def __init__(self, log: Any) -> None:
        self.log = log  # open log file: the kernel process's own stdout/stderr go there too
        self.nb: nbformat.NotebookNode | None = None  # the executed notebook (papermill's object)
        self.source_map: list[int | None] = []  # executed cell index -> source cell index
        self.source_total = 0  # cells of the source notebook (the injected ones not counted)
        self.kernel_name: str | None = None
        self.kernel_argv: list[str] | None = None
        self.kernel_ready = False
        self.running: int | None = None  # executed index of the code cell in flight
        self.last_started: int | None = None
        self.failed_replies: dict[int, tuple[str, str]] = {}  # executed index -> the kernel's (ename, evalue)
        self.process: Any = None  # the kernel's subprocess.Popen
        self.on_kernel_start: Callable[[int], None] | None = None
        self.pgid: int | None = None
        self.timed_out = False
        self.alive_at_shutdown = False  # then its exit status is nbclient's doing, not a cause
        self.env: dict[str, str] | None = None  # variables added to the kernel's environment
        self.kernel_key: kernelpool.Key | None = None  # kernel name and extra arguments of its start
        self.pooled: kernelpool.PooledKernel | None = None  # the pre-started kernel it took, if any
        self.start_wait = kernelpool.READY_TIMEOUT  # seconds to wait for a pooled kernel still booting
        self.context: str | None = None  # code the kernel runs silently before the first cell

    def on_notebook_start(self, **_: Any) -> None:
        self.kernel_ready = True

    def on_cell_start(self, cell: Any, cell_index: int, **_: Any) -> None:
        self.last_started = cell_index
        # nbclient calls this for markdown and empty cells too; they cannot hang or fail.
        runs_code = cell.get("cell_type") == "code" and cell.get("source", "").strip()
        self.running = cell_index if runs_code else None

    def on_cell_executed(self, cell_index: int | None = None, execute_reply: Any = None, **_: Any) -> None:
        self.running = None
        reply = (execute_reply or {}).get("content", {})
        if reply.get("status") == "error" and cell_index is not None:  # the error a magic shows as text only
            self.failed_replies[cell_index] = (reply.get("ename") or "Error", reply.get("evalue") or "")

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def source_index(self, executed: int | None) -> int | None:
        if executed is None or executed >= len(self.source_map):
            return None
        return self.source_map[executed]

    def cell_name(self, executed: int | None) -> str:
        idx = self.source_index(executed)
        if idx is not None:
            return cell_name(idx, self.source_total)
        if self.nb is None or executed is None or executed >= len(self.nb.cells):
            return "the notebook"
        tags = _tags(self.nb.cells[executed])
        return "the nbflow context cell" if CONTEXT_TAG in tags else "the injected parameters cell"

    def kernel_manager_class(self) -> type[PromptKernelManager]:
        """A subclass bound to this attempt: records the kernel process it starts."""
        attempt = self

        class _AttemptKernelManager(PromptKernelManager):
            def kernel_is_idle(self) -> bool:
                return attempt.running is None

            # ignore[override]: jupyter_client types KernelManager's sync start_kernel, not AsyncKernelManager's coroutine
            async def start_kernel(self, **kw: Any) -> None:  # type: ignore[override]
                if attempt.log is not None:  # e.g. a kernel's crash message before it is ready
                    kw.setdefault("stdout", attempt.log)
                    kw.setdefault("stderr", attempt.log)
                try:
                    attempt.kernel_argv = list(self.kernel_spec.argv) if self.kernel_spec else None
                    if attempt.env is not None:
                        kw["env"] = {**os.environ, **attempt.env}
                    self._adopt_pooled(kw)
                    if attempt.context:
                        self.first_code = "\n".join(filter(None, [self.first_code, attempt.context]))
                    await super().start_kernel(**kw)
                finally:
                    # LocalProvisioner's public process and pgid; another provisioner (a remote
                    # kernel) has no local process to record, and its kernel is killed through it.
                    prov = self.provisioner
                    process = getattr(prov, "process", None)
                    if process is not None:
                        attempt.pgid = getattr(prov, "pgid", None) or process.pid
                        attempt.process = process
                        if attempt.on_kernel_start is not None:
                            attempt.on_kernel_start(attempt.pgid)

            def _adopt_pooled(self, kw: dict[str, Any]) -> None:
                """Take a pre-started kernel when the pool has one this start could use (see
                :mod:`nbflow.tasks.kernelpool`): same worker environment and kernel arguments."""
                pool = kernelpool.current()
                attempt.kernel_key = (self.kernel_name, tuple(kw.get("extra_arguments") or ()))
                if pool is None or attempt.env is not None or self.provisioner is not None:
                    return
                pooled = pool.take(*attempt.kernel_key, wait=attempt.start_wait)
                if pooled is None:
                    return
                provisioner = kernelpool.PooledProvisioner(
                    kernel_id=self.kernel_id or str(uuid.uuid4()), kernel_spec=self.kernel_spec, parent=self
                )
                provisioner.pooled = pooled
                self.provisioner = provisioner
                pooled.attach(attempt.log)
                attempt.pooled = pooled
                if kw.get("cwd"):
                    self.first_code = kernelpool.chdir_code(str(kw["cwd"]))
                kw.pop("stdout", None)
                kw.pop("stderr", None)

            # ignore[override]: jupyter_client types KernelManager's sync shutdown_kernel, not AsyncKernelManager's coroutine
            async def shutdown_kernel(self, now: bool = False, restart: bool = False) -> None:  # type: ignore[override]
                if attempt.process is not None and attempt.process.poll() is None:
                    attempt.alive_at_shutdown = True
                await super().shutdown_kernel(now=now, restart=restart)

        return _AttemptKernelManager


class NbflowEngine(NBClientEngine):
    """papermill's nbclient engine plus nbflow's context cell and per-attempt hooks."""

    @classmethod
    def execute_notebook(cls, nb: nbformat.NotebookNode, kernel_name: str, **kwargs: Any) -> Any:
        """Insert the context cell, bind hooks to the attempt, then run as nbclient would."""
        attempt: _Attempt | None = kwargs.pop("nbflow_attempt", None)
        context: str | None = kwargs.pop("nbflow_context", None)
        if attempt is not None:
            # A context cell of an older nbflow left in a re-executed output notebook must not run.
            nb.cells = [c for c in nb.cells if CONTEXT_TAG not in _tags(c)]
            if context is not None:  # run silently before the first cell (kernel manager's first_code)
                attempt.context = context
                nb.metadata.setdefault("nbflow", {})["context"] = context
            attempt.nb, attempt.kernel_name = nb, kernel_name
            attempt.source_map = _source_map(nb)
            attempt.source_total = sum(i is not None for i in attempt.source_map)
            kwargs.update(
                on_notebook_start=attempt.on_notebook_start,
                on_cell_start=attempt.on_cell_start,
                on_cell_executed=attempt.on_cell_executed,
                kernel_manager_class=attempt.kernel_manager_class(),
            )
        return super().execute_notebook(nb, kernel_name, **kwargs)


papermill_engines.register(ENGINE_NAME, NbflowEngine)


def _tags(cell: nbformat.NotebookNode) -> list[str]:
    return cell.get("metadata", {}).get("tags", [])


def _source_map(nb: nbformat.NotebookNode) -> list[int | None]:
    mapping: list[int | None] = []
    n = 0
    for cell in nb.cells:
        injected = bool({INJECTED_TAG, CONTEXT_TAG} & set(_tags(cell)))
        mapping.append(None if injected else n)
        n += not injected
    return mapping


def _watchdog(attempt: _Attempt, timeout: float, grace: float, stop: threading.Event) -> None:
    if stop.wait(timeout):
        return
    attempt.timed_out = True
    # The deadline may fall while the kernel is still being launched: wait for its process.
    while attempt.process is None and not stop.wait(0.05):
        pass
    if attempt.process is not None and attempt.pgid is not None:
        # a stop during the grace hands over to the run thread, whose cleanup SIGKILLs the group
        procs.terminate(attempt.pgid, grace, exited=procs.waiter(attempt.process), stop=stop)


def _reap(attempt: _Attempt) -> None:
    """Leave no process of the kernel's group alive, and reap the kernel itself."""
    if attempt.process is not None and attempt.pgid is not None:
        # Also kills what the kernel started in its session (pgid == kernel pid).
        procs.kill_now(attempt.pgid, exited=procs.waiter(attempt.process))


def _exit_description(proc: Any) -> str:
    code = proc.poll() if proc is not None else None
    if code is None:
        return "exit status unknown"
    if code < 0:
        names = {s.value: s.name for s in signal.Signals}
        return f"signal {names.get(-code, -code)}"
    return f"exit code {code}"


def _escape_template(path: str) -> str:
    # papermill formats paths with str.format (its path templates); nbflow's paths are final.
    return path.replace("{", "{{").replace("}", "}}")


def run_notebook(
    input_path: str,
    output_path: str,
    *,
    parameters: dict[str, Any] | None = None,
    context_source: str | None = None,
    kernel_name: str | None = None,
    cell_timeout: float | None = None,
    timeout: float | None = None,
    log_path: str | None = None,
    cwd: str | None = None,
    startup_timeout: float = 60.0,
    kill_grace: float | None = None,
    on_kernel_start: Callable[[int], None] | None = None,
    env: dict[str, str] | None = None,
    report_mode: bool = False,
) -> AttemptRecord:
    """Execute one notebook attempt with papermill in this process and say how it ended.

    The output notebook is always written (the record's ``output_uri``) and no kernel process
    is left alive. Only programmer errors raise: a missing ``input_path`` raises
    NotebookNotFoundError, an unreadable notebook nbformat's error. ``on_kernel_start(pgid)``
    is called once the kernel's process group is known (so a canceller elsewhere can kill
    it). ``kill_grace``: seconds from SIGTERM to SIGKILL of a timed-out kernel (default: the
    ``kill_grace`` setting). ``env``: variables added to the kernel's environment (such an
    attempt never takes a pre-started kernel). With this process's kernel pool
    (:mod:`nbflow.tasks.kernelpool`) active, the attempt takes a pre-started kernel when it can
    and a replacement starts in the background once it ends.
    """
    if kill_grace is None:
        kill_grace = get_settings().kill_grace
    src = Path(input_path).expanduser().resolve()
    if not src.is_file():
        raise NotebookNotFoundError(
            f"notebook {input_path} does not exist",
            where=str(input_path),
            hint="check the notebook path of the task",
        )
    out = Path(output_path).expanduser().resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    workdir = str(Path(cwd).expanduser().resolve()) if cwd else str(src.parent)
    started = time.time()
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "a", encoding="utf-8") if log_path else None  # noqa: SIM115
    attempt = _Attempt(log)
    attempt.on_kernel_start = on_kernel_start
    attempt.env = dict(env) if env else None
    attempt.start_wait = min(startup_timeout, timeout or math.inf)
    try:
        if log:
            shown = json.dumps(parameters or {}, sort_keys=True, default=repr)
            log.write(f"nbflow: executing {src} with parameters {shown}\n")
            log.flush()
        stop = threading.Event()
        watchdog = None
        if timeout is not None:
            watchdog = threading.Thread(
                target=_watchdog,
                args=(attempt, timeout, kill_grace, stop),
                name=f"nbflow-watchdog-{src.name}",
                daemon=True,
            )
            watchdog.start()
        error: Exception | None = None
        pmlog.passing(parameters or ())  # checked by nbflow: papermill's "unknown parameter" is noise
        try:
            papermill.execute_notebook(
                _escape_template(str(src)),
                _escape_template(str(out)),
                parameters=parameters or None,
                engine_name=ENGINE_NAME,
                kernel_name=kernel_name,
                progress_bar=False,
                report_mode=report_mode,  # papermill hides the code cells' sources
                log_output=False,
                stdout_file=log,
                stderr_file=log,
                # nbclient's startup_timeout is an Integer trait: round up.
                start_timeout=max(1, math.ceil(startup_timeout)),
                # Not papermill's cwd=, which os.chdir()s the whole process (unsafe with threads):
                # nbclient starts the kernel in resources["metadata"]["path"].
                resources={"metadata": {"path": workdir}},
                # nbclient's timeout is an Integer trait too; timeout_func keeps fractions.
                timeout_func=(lambda _cell: cell_timeout) if cell_timeout else None,
                nbflow_attempt=attempt,
                nbflow_context=context_source,
            )
        except Exception as exc:  # noqa: BLE001 - classified below; unknown ones re-raised
            error = exc
        finally:
            pmlog.passing(())
            stop.set()
            if watchdog is not None:
                watchdog.join(timeout=kill_grace + 5)
            _reap(attempt)
            kernelpool.after_attempt(attempt.pooled, attempt.kernel_key, attempt.kernel_ready)
        outcome = _classify(attempt, error, output_path, cell_timeout, timeout, started)
        if outcome is None:
            raise error  # type: ignore[misc]  # not a notebook failure: a bug or a bad file
        if not outcome.ok and outcome.reason != "cell_error":
            _mark_failure(out, src, attempt, outcome)
        if log:
            log.write(f"nbflow: {'succeeded' if outcome.ok else 'failed'}: {outcome.message}\n")
            if outcome.reason == "cell_error" and outcome.traceback:
                log.write(outcome.traceback + "\n")
        return outcome
    finally:
        if log:
            log.close()


def _classify(
    attempt: _Attempt,
    error: Exception | None,
    output_path: str,
    cell_timeout: float | None,
    timeout: float | None,
    started: float,
) -> AttemptRecord | None:
    """Map papermill's result to a record; None for an error nbflow cannot explain."""

    def outcome(reason: str | None, message: str, ename: str | None = None, **kw: Any) -> AttemptRecord:
        fields: dict[str, Any] = dict(
            cell_index=attempt.source_index(cell),
            exec_count=exec_count,
            ename=ename,
            evalue=message if ename else None,
            traceback=text or None,
        )
        fields.update(kw)
        ok = reason in (None, "stopped_early")
        return AttemptRecord(
            ok=ok,
            reason=reason,
            message=message,
            output_uri=output_path,
            kernel_pid=attempt.pid,
            started_at=started,
            ended_at=time.time(),
            **fields,
        )

    cell = attempt.running
    exec_count = None
    if attempt.nb is not None and cell is not None:
        exec_count = attempt.nb.cells[cell].get("execution_count")
    during = f" during {attempt.cell_name(cell)}" if cell is not None else ""
    if error is None:
        cell, exec_count, text = None, None, ""
        stopped = _stopped_early_cell(attempt)
        if stopped is None:
            return outcome(None, "notebook completed")
        msg = f"notebook stopped early: sys.exit(0) in {attempt.cell_name(stopped)}"
        return outcome("stopped_early", msg)
    text = _ANSI.sub("", str(error)).strip()
    if attempt.timed_out:
        msg = f"task exceeded timeout={timeout:g}s{during}; kernel killed"
        return outcome("task_timeout", msg, "TaskTimeout")
    if isinstance(error, PapermillExecutionError):
        if error.ename == "CellExecutionError" and not error.evalue:  # papermill found no error output: ask the reply
            error.ename, error.evalue = attempt.failed_replies.get(error.cell_index, (error.ename, error.evalue))
        msg = f"{attempt.cell_name(error.cell_index)} raised {error.ename}: {error.evalue}"
        tb = "\n".join(_ANSI.sub("", line) for line in (error.traceback or []))
        return outcome(
            "cell_error",
            msg.strip().rstrip(":").splitlines()[0],
            error.ename,
            cell_index=attempt.source_index(error.cell_index),
            exec_count=error.exec_count,
            evalue=error.evalue,
            traceback=tb,
        )
    if isinstance(error, CellTimeoutError):
        limit = f"cell_timeout={cell_timeout:g}s" if cell_timeout else "the IOPub timeout"
        msg = f"{attempt.cell_name(cell)} exceeded {limit}"
        return outcome("cell_timeout", msg, "CellTimeoutError")
    if not attempt.kernel_ready and (attempt.nb is not None or "kernel" in text.lower()):
        # (papermill's "No kernel name found in notebook" comes before the engine runs;
        # other errors before the engine, like an unreadable notebook, are re-raised.)
        first = text.splitlines()[0] if text else type(error).__name__
        details = [f"argv: {' '.join(attempt.kernel_argv)}"] if attempt.kernel_argv else []
        if attempt.process is not None and not attempt.alive_at_shutdown:
            details.append(_exit_description(attempt.process))
        suffix = f" ({', '.join(details)})" if details else ""
        msg = (
            f"kernel '{attempt.kernel_name}' failed to start: {first}{suffix}"
            if attempt.kernel_name
            else f"no kernel to start: {first}"
        )
        return outcome("kernel_start_failed", msg, type(error).__name__, cell_index=None, exec_count=None, evalue=first)
    proc = attempt.process
    if isinstance(error, DeadKernelError) or (proc is not None and proc.poll() is not None):
        msg = f"kernel died{during} ({_exit_description(proc)})"
        return outcome("kernel_died", msg, "DeadKernelError")
    return None


def _stopped_early_cell(attempt: _Attempt) -> int | None:
    for i, cell in enumerate(attempt.nb.cells if attempt.nb is not None else []):
        if any(o.get("ename") == "SystemExit" for o in cell.get("outputs", [])):
            return i
    return None


def _mark_failure(out: Path, src: Path, attempt: _Attempt, outcome: AttemptRecord) -> None:
    """Rewrite the output notebook after a failure papermill writes no banner for.

    Adds a red banner at the top, a marker (an anchor) before the failing cell plus an error
    output on it, and resets cells that never ran to ``pending`` (papermill marks them
    ``completed``).
    """
    if attempt.nb is not None:
        nb = attempt.nb  # the executed notebook papermill saved, injected cells included
    else:  # papermill failed before executing (e.g. no kernel name): start from the source
        nb = nbformat.read(str(out if out.is_file() else src), as_version=4)
    started = attempt.kernel_ready and attempt.nb is not None
    failing = attempt.running if started else None
    if failing is not None:
        first_pending = failing + 1
    elif started and attempt.last_started is not None:
        first_pending = attempt.last_started + 1
    else:
        first_pending = 0
    for i, cell in enumerate(nb.cells):
        meta = cell.metadata.setdefault("papermill", {})
        if i == failing:
            meta.update(status="failed", exception=True)
            cell.outputs.append(
                nbformat.v4.new_output(
                    "error",
                    ename=outcome.ename or "Error",
                    evalue=outcome.message,
                    traceback=[f"nbflow: {outcome.message}"],
                )
            )
        elif i >= first_pending:
            meta.update(status="pending", start_time=None, end_time=None, duration=None, exception=None)
            if cell.cell_type == "code":
                cell.execution_count, cell.outputs = None, []
    link = ""
    if failing is not None:
        link = f' at <a href="#nbflow-error-cell">{attempt.cell_name(failing)}</a>'
        marker = nbformat.v4.new_markdown_cell(
            f'<span id="nbflow-error-cell" {_STYLE}>nbflow stopped execution here: {outcome.message}</span>'
        )
        marker.metadata["tags"] = [MARKER_TAG, PAPERMILL_ERROR_TAG]
        nb.cells.insert(failing, marker)
    title = _TITLES.get(outcome.reason or "", "Execution failed")
    banner = nbformat.v4.new_markdown_cell(f"<span {_STYLE}>{title}{link}: {outcome.message}</span>")
    banner.metadata["tags"] = [BANNER_TAG, PAPERMILL_ERROR_TAG]
    nb.cells.insert(0, banner)
    nb.metadata.setdefault("papermill", {})["exception"] = True
    failure = {"reason": outcome.reason, "message": outcome.message, "cell_index": outcome.cell_index}
    nb.metadata.setdefault("nbflow", {}).update(failure)  # beside the context the kernel ran first
    nbformat.write(nb, str(out))
