"""The base of every task kind: a template method around one attempt.

``execute`` = ``prepare`` -> ``run_attempt`` -> ``finalize``. Kinds implement
``run_attempt`` and may hook the other two. The worker calls ``execute`` with an
:class:`AttemptContext` and completes the :class:`~nbflow.record.AttemptRecord` it returns
with where and when the attempt ran.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from nbflow import templating, vault
from nbflow.artifacts import UpstreamOutput
from nbflow.dag import Task
from nbflow.record import AttemptRecord

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
    #: seconds from SIGTERM to SIGKILL when the attempt's processes are stopped (the setting)
    kill_grace: float
    #: run_id, logical_date, data_interval_start, data_interval_end (datetimes or None)
    run_context: dict[str, Any] = field(default_factory=dict)
    #: Called with the process-group id of every process the attempt starts (kernel, shell,
    #: timeout child), so that cancelling the attempt can kill them from another thread.
    register_process: Callable[[int], None] = field(default=lambda pgid: None, repr=False)

    @property
    def artifact_dir(self) -> str:
        """Where this attempt's artifacts go."""
        return f"{self.attempt_dir}/artifacts"

    def env(self) -> dict[str, str]:
        """``NBFLOW_*`` variables describing this attempt (for shell commands and subprocesses),
        with the run's dates (``NBFLOW_LOGICAL_DATE``, ``NBFLOW_DS``, ``NBFLOW_DATA_INTERVAL_*``)."""
        env = {
            "NBFLOW_PIPELINE": self.pipeline,
            "NBFLOW_RUN_ID": str(self.run_id),
            "NBFLOW_TASK_ID": self.task_id,
            "NBFLOW_TRY_NUMBER": str(self.try_number),
            "NBFLOW_ARTIFACT_DIR": self.artifact_dir,
            **templating.env_vars(self.run_context),
        }
        for name, value in self.params.items():
            env[f"NBFLOW_PARAM_{name.upper().replace('-', '_').replace('.', '_')}"] = str(value)
        return env

    def template_values(self) -> dict[str, Any]:
        """What this attempt's templates render with (:func:`nbflow.templating.run_values`)."""
        return templating.run_values(self.params, self.run_context, task_id=self.task_id, pipeline=self.pipeline)

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
            f"_nbflow.artifacts.bind(process_wide=True, manifest=True, **{json.dumps(bind_args)})\n"
            + vault.kernel_source()  # nbflow.connection/variable: the work item's (a file, never the source)
        ).rstrip()


class BaseTask(Task):
    """A task kind: subclasses implement :meth:`run_attempt`."""

    #: Whether the driving process runs this task itself instead of an executor (sensors poke there).
    runs_on_driver = False
    #: The task's Jinja templates: {field (``command``, ``parameters.run_date``): (text, for a shell?)}
    templates: dict[str, tuple[str, bool]] = {}

    def declare_templates(self, fields: Mapping[str, Any], shell_fields: Iterable[str] = ()) -> None:
        """Check the templates inside ``fields`` (name -> value; ``reads=`` always) against the
        names templates know and the pipeline's parameters (:func:`nbflow.templating.check`), and
        keep them in :attr:`templates`. Call after ``Task.__init__`` (the task has its id)."""
        found: dict[str, tuple[str, bool]] = {}
        where = f"{self.site[0]}:{self.site[1]}"
        params = list(self.pipeline.param_defaults)
        for name, value in {**fields, "reads": self.reads}.items():
            checked = templating.check_value(value, task=self.task_id, field=name, params=params, where=where)
            found.update((label, (text, name in shell_fields)) for label, text in checked.items())
        if found:
            self.templates = found

    def execute(self, ctx: AttemptContext) -> AttemptRecord:
        """Run one attempt (template method): prepare, run_attempt, finalize."""
        self.prepare(ctx)
        record = AttemptRecord.failure("exception", "attempt did not finish")
        try:
            record = self.run_attempt(ctx)
        finally:
            self.finalize(ctx, record)
        return record

    def prepare(self, ctx: AttemptContext) -> None:
        """Hook before the attempt (default: nothing)."""

    def run_attempt(self, ctx: AttemptContext) -> AttemptRecord:  # pragma: no cover - abstract
        """Do the work of one attempt and describe how it ended."""
        raise NotImplementedError

    def finalize(self, ctx: AttemptContext, record: AttemptRecord) -> None:
        """Hook after the attempt, also on failure (default: nothing)."""


def cell_name(index: int, total: int) -> str:
    """How nbflow names a notebook's cell in every message: as JupyterLab's status bar does,
    ``Cell 5/7`` (``index`` 0-based among all ``total`` cells of the notebook file)."""
    return f"Cell {index + 1}/{total}"
