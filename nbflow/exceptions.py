"""Typed errors. Each ``__str__`` says what failed, where, and how to fix it."""

from __future__ import annotations

from collections.abc import Iterable, Sequence


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
        text = f"{self.where}: {self.message}" if self.where else self.message
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
            f"pipeline '{pipeline}' defines task '{task_id}' twice "
            f"(first at {first or '?'}, again at {second or '?'})",
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
    ):
        self.unknown, self.missing = list(unknown), list(missing)
        super().__init__(message, where=where, hint=hint)


class PipelineLoadError(NbflowError):
    """A pipeline file could not be loaded; ``where`` is ``file:line``."""


class PipelineNotFoundError(NbflowError):
    """No pipeline with that name or in that file."""


class StoreError(NbflowError):
    """The metadata database cannot be used."""


class RunNotFoundError(NbflowError):
    """No run with that id."""


class ExecutorNotFoundError(NbflowError):
    """No executor registered under that name."""


class FailNow(Exception):
    """Raise inside a task (or a notebook cell) to fail it at once, skipping remaining retries."""
