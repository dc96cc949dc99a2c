"""The base of every task kind: a template method around one attempt.

``execute`` = ``prepare`` -> ``run_attempt`` -> ``finalize``. Kinds implement
``run_attempt`` and may hook the other two. The worker calls ``execute`` with an
:class:`AttemptContext` and turns the :class:`Outcome` into a result record.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from nbflow.artifacts import ArtifactRef, UpstreamOutput
from nbflow.dag import Task
from nbflow.exceptions import FailNow


#: Names a task may declare (a function argument, a notebook parameter) to receive the run's
#: id, logical date and data interval.
CONTEXT_NAMES = ("run_id", "logical_date", "data_interval_start", "data_interval_end")


@dataclass
class AttemptContext:
    """Everything one attempt needs, none of it tied to the metadata database."""

    pipeline: str
    run_id: int
    task_id: str
    try_number: int
    attempt_dir: str
    log_path: str
    params: dict[str, Any]
    upstream: dict[str, UpstreamOutput]
    #: run_id, logical_date, data_interval_start, data_interval_end (datetimes or None)
    run_context: dict[str, Any] = field(default_factory=dict)
    kill_grace: float = 5.0
    #: Called with the process-group id of every process the attempt starts (kernel, shell,
    #: timeout child), so that cancelling the attempt can kill them from another thread.
    register_process: Callable[[int], None] = field(default=lambda pgid: None, repr=False)

    @property
    def artifact_dir(self) -> str:
        """Where this attempt's artifacts go."""
        return f"{self.attempt_dir}/artifacts"

    def env(self) -> dict[str, str]:
        """``NBFLOW_*`` variables describing this attempt (for shell commands and subprocesses)."""
        env = {
            "NBFLOW_PIPELINE": self.pipeline,
            "NBFLOW_RUN_ID": str(self.run_id),
            "NBFLOW_TASK_ID": self.task_id,
            "NBFLOW_TRY_NUMBER": str(self.try_number),
            "NBFLOW_ARTIFACT_DIR": self.artifact_dir,
        }
        for name, value in self.params.items():
            env[f"NBFLOW_PARAM_{name.upper().replace('-', '_').replace('.', '_')}"] = str(value)
        return env

    def kernel_context_source(self) -> str:
        """Source of the hidden cell that makes ``nbflow.save()`` in a kernel write to this attempt."""
        bind_args = {
            "artifact_dir": self.artifact_dir,
            "pipeline": self.pipeline,
            "run_id": self.run_id,
            "task_id": self.task_id,
            "try_number": self.try_number,
        }
        return (
            "# nbflow: where nbflow.save() writes in this run\n"
            "import nbflow as _nbflow\n"
            f"_nbflow.artifacts.bind(process_wide=True, manifest=True, **{json.dumps(bind_args)})"
        )


@dataclass
class Outcome:
    """How one attempt ended, from the task kind's point of view."""

    ok: bool
    value: Any = None
    artifacts: list[ArtifactRef] = field(default_factory=list)
    reason: str | None = None
    message: str = ""
    ename: str | None = None
    evalue: str | None = None
    traceback: str | None = None
    cell_index: int | None = None
    exec_count: int | None = None
    output_uri: str | None = None

    @classmethod
    def from_exception(cls, exc: BaseException, *, skip_frames: int = 0) -> Outcome:
        """A failed outcome describing ``exc`` (``fail_now`` for :class:`FailNow`)."""
        tb = exc.__traceback__
        for _ in range(skip_frames):
            if tb is not None and tb.tb_next is not None:
                tb = tb.tb_next
        text = "".join(traceback.format_exception(type(exc), exc, tb))
        name = type(exc).__name__
        return cls(
            ok=False,
            reason="fail_now" if isinstance(exc, FailNow) else "exception",
            message=f"{name}: {exc}",
            ename=name,
            evalue=str(exc),
            traceback=text,
        )


class BaseTask(Task):
    """A task kind: subclasses implement :meth:`run_attempt`."""

    def execute(self, ctx: AttemptContext) -> Outcome:
        """Run one attempt (template method): prepare, run_attempt, finalize."""
        self.prepare(ctx)
        outcome = Outcome(ok=False, reason="exception", message="attempt did not finish")
        try:
            outcome = self.run_attempt(ctx)
        finally:
            self.finalize(ctx, outcome)
        return outcome

    def prepare(self, ctx: AttemptContext) -> None:
        """Hook before the attempt (default: nothing)."""

    def run_attempt(self, ctx: AttemptContext) -> Outcome:  # pragma: no cover - abstract
        """Do the work of one attempt and describe how it ended."""
        raise NotImplementedError

    def finalize(self, ctx: AttemptContext, outcome: Outcome) -> None:
        """Hook after the attempt, also on failure (default: nothing)."""


def kill_process_group(proc: subprocess.Popen | Any, grace: float) -> int | None:
    """SIGTERM the process group led by ``proc``, SIGKILL it after ``grace`` seconds.

    ``proc`` must have been started in a new session. Returns its exit code.
    """
    try:
        pgid = os.getpgid(proc.pid)
    except ProcessLookupError:
        pgid = None
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        if pgid is not None:
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                pass
        try:
            return proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
    return None
