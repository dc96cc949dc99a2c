"""Typed errors. Each ``__str__`` says what failed, where, and how to fix it."""

from __future__ import annotations

import errno
from collections.abc import Iterable, Sequence
from datetime import datetime


class NbflowError(Exception):
    """Base class of every error nbflow raises on purpose.

    ``where`` is a ``file:line`` or a name the user recognises (pipeline, task, notebook);
    ``hint`` tells how to fix it.
    """

    def __init__(self, message: str, *, where: str | None = None, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.where = where
        self.hint = hint

    def __str__(self) -> str:
        # "pipeline 'p': pipeline 'p' has no ..." says the where twice: a message that starts with it stands alone
        said = not self.where or self.message.startswith(self.where)
        text = self.message if said else f"{self.where}: {self.message}"
        if self.hint:
            text += f"\n  hint: {self.hint}"
        return text


class DefinitionError(NbflowError):
    """A pipeline is defined wrongly (found at definition or load time)."""


class DagCycleError(DefinitionError):
    """The task graph has a cycle; ``cycle`` lists it as ``[a, b, c, a]``."""

    def __init__(self, pipeline: str, cycle: Sequence[str], *, where: str | None = None):
        self.pipeline = pipeline
        self.cycle = list(cycle)
        super().__init__(
            f"pipeline '{pipeline}' has a cycle: {' -> '.join(self.cycle)}",
            where=where,
            hint="remove one of these edges (>>, an input, or after=) so the tasks form a DAG",
        )


class DuplicateTaskError(DefinitionError):
    """Two tasks of one pipeline share an id."""

    def __init__(self, pipeline: str, task_id: str, first: str | None, second: str | None):
        self.pipeline, self.task_id = pipeline, task_id
        super().__init__(
            f"pipeline '{pipeline}' defines task '{task_id}' twice (first at {first or '?'}, again at {second or '?'})",
            where=second,
            hint="give one of them another name=...",
        )


class UnknownTaskError(NbflowError):
    """A task id that the pipeline does not have."""

    def __init__(self, pipeline: str, task_id: str, known: Iterable[str], *, where: str | None = None):
        self.pipeline, self.task_id, self.known = pipeline, task_id, sorted(known)
        super().__init__(
            f"pipeline '{pipeline}' has no task '{task_id}'",
            where=where,
            hint=f"known tasks: {', '.join(self.known) or '(none)'}",
        )


class NotebookNotFoundError(DefinitionError):
    """A notebook task points at a file that does not exist."""


class ScheduleError(DefinitionError):
    """A cron expression or schedule setting is invalid."""


class ParameterError(NbflowError):
    """Parameters do not fit what a pipeline or notebook declares."""

    def __init__(
        self,
        message: str,
        *,
        where: str | None = None,
        hint: str | None = None,
        unknown: Sequence[str] = (),
        missing: Sequence[str] = (),
        invalid: Sequence[str] = (),
    ):
        self.unknown, self.missing, self.invalid = list(unknown), list(missing), list(invalid)
        super().__init__(message, where=where, hint=hint)

    @property
    def names(self) -> list[str]:
        """Every parameter this error is about (unknown, missing, then invalid)."""
        return [*self.unknown, *self.missing, *self.invalid]


class PipelineLoadError(NbflowError):
    """A pipeline file could not be loaded; ``where`` is ``file:line``."""


class PipelineNotFoundError(NbflowError):
    """No pipeline with that name or in that file."""


class StoreError(NbflowError):
    """The metadata database cannot be used."""


class DatabaseUnavailableError(StoreError):
    """The metadata database is down, unreachable, locked or not answering in time (an outage,
    not a bad request: trying again later may work)."""


class InputError(NbflowError):
    """A request's value is not acceptable (wrong type, out of range, too long); ``field`` names it."""

    def __init__(self, field: str, message: str, *, hint: str | None = None):
        self.field = field
        super().__init__(message, hint=hint)


class RunNotFoundError(NbflowError):
    """No run with that id."""


class AssetNotFoundError(NbflowError):
    """No asset with that name (none declared, produced or scheduled on)."""


class TryNotFoundError(NbflowError):
    """A task of a run has no attempt with that try number; ``tries`` lists the ones it has."""

    def __init__(self, run_id: int, task_id: str, try_number: int, tries: Iterable[int]):
        self.run_id, self.task_id, self.try_number, self.tries = run_id, task_id, try_number, sorted(tries)
        super().__init__(
            f"task '{task_id}' of run {run_id} has no try {try_number}",
            hint=f"its tries: {', '.join(map(str, self.tries))}" if self.tries else "it has not been tried yet",
        )


class OutputNotFoundError(NbflowError):
    """A task's try has no output notebook (it did not run, or it is no notebook task)."""


class StateConflictError(NbflowError):
    """The run's (or task's) state forbids the request, e.g. cancelling a finished run."""


class DuplicateRunError(NbflowError):
    """A run of that pipeline for that logical date exists already (``run_id``)."""

    def __init__(self, pipeline: str, logical_date: datetime, run_id: int | None):
        self.pipeline, self.logical_date, self.run_id = pipeline, logical_date, run_id
        super().__init__(
            f"pipeline '{pipeline}' already has run {run_id} for logical date {logical_date.isoformat()}",
            hint="a run per logical date: clear its tasks to run it again (nbflow rerun RUN)",
        )


class ExecutorNotFoundError(NbflowError):
    """No executor registered under that name."""


class RunTakenOverError(NbflowError):
    """Another driver drives the run now (this one lost its lease): this one must let it go."""


class FailNow(Exception):
    """Raise inside a task (or a notebook cell) to fail it at once, skipping remaining retries."""


class Skip(Exception):
    """Raise inside a task (a function, a notebook cell, a cell task) to end it ``skipped`` with
    the message as its reason: no retry, never a failure; downstream tasks follow their trigger rules."""


class ArtifactStoreError(OSError):
    """A file under a URL artifact root (``s3://`` ...) could not be read or written because
    the store's client failed (unreachable, timed out, refused): an ``OSError`` (errno EIO)
    whose ``filename`` is the URL, so an attempt it stops ends ``storage_error`` and its
    retries apply. ``action`` is what was tried: read, write or upload."""

    hint = "check NBFLOW_ARTIFACT_ROOT and that this host reaches its store (endpoint, credentials); then try again"

    def __init__(self, action: str, uri: str, cause: BaseException):
        super().__init__(errno.EIO, f"{type(cause).__name__}: {cause}", uri)
        self.action = action

    def __str__(self) -> str:
        return f"cannot {self.action} {self.filename}: {self.strerror}"
