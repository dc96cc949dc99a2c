"""Branch and short-circuit tasks, the worker half: what a finished attempt says to follow.

A *branch* task (``@task(branch=True)``, or ``notebook(..., branch=True)`` reading the value it
saved as ``branch``) names the tasks directly downstream of it to follow: a task id, a handle,
or a list of them (None or an empty list: none). A *short-circuit* task
(``@task(short_circuit=True)``) goes on when its value is truthy and stops everything
downstream of it when it is falsy (with ``ignore_downstream_trigger_rules=False``: only the
tasks directly downstream; further tasks follow their trigger rules). The attempt's record carries the choice
(:attr:`nbflow.record.AttemptRecord.follow`); the engine (:mod:`nbflow.skipping`) skips the
tasks not followed, as Airflow's ``BranchPythonOperator`` and ``ShortCircuitOperator`` do.
"""

from __future__ import annotations

from typing import Any

from nbflow.artifacts import read_value
from nbflow.dag import Task
from nbflow.exceptions import DefinitionError
from nbflow.record import AttemptRecord
from nbflow.refs import OutputRef


class Flow:
    """Mixin of the task kinds that may branch or short-circuit (``@task``, ``notebook``)."""

    branch: bool = False
    short_circuit: bool = False
    #: a short-circuit skips every task downstream (True) or only its direct downstream tasks,
    #: the others then following their trigger rules (False); Airflow's option of that name
    ignore_downstream_trigger_rules: bool = True
    task_id: str

    def set_flow(
        self, *, branch: bool = False, short_circuit: bool = False, ignore_downstream_trigger_rules: bool = True
    ) -> None:
        """The ``branch=``/``short_circuit=`` options of a kind's factory."""
        if branch and short_circuit:
            raise DefinitionError(
                f"task '{self.task_id}' is both a branch and a short-circuit",
                hint="branch=True names the tasks to follow; short_circuit=True goes on or stops: choose one",
            )
        self.branch, self.short_circuit = bool(branch), bool(short_circuit)
        self.ignore_downstream_trigger_rules = bool(ignore_downstream_trigger_rules)

    def never_reused(self) -> str | None:
        """A branch or short-circuit decides in every run: an incremental run never reuses it
        (a reused attempt would skip nothing)."""
        if self.branch or self.short_circuit:
            return "a branch or short-circuit task decides in every run"
        return super().never_reused()  # type: ignore[misc]

    def with_choice(self, record: AttemptRecord, value: Any) -> AttemptRecord:
        """``record`` (a success) with what ``value`` says to follow."""
        if not record.ok:
            return record
        if self.short_circuit and not value:
            record.follow = []
            record.message = f"short-circuit: {value!r} is falsy, the tasks downstream are skipped"
        elif self.branch:
            try:
                record.follow = follow_of(value)
            except TypeError as exc:
                return AttemptRecord.failure("branch_error", f"branch task '{self.task_id}' {exc}", ename="TypeError")
            record.message = f"branch: follows {', '.join(record.follow) or 'no task'}"
        return record

    def with_saved_choice(self, record: AttemptRecord) -> AttemptRecord:
        """A notebook's ``record`` with what the value it saved as ``branch`` says to follow."""
        if not (record.ok and self.branch):
            return record
        saved = {a["name"]: a for a in record.artifacts}
        if "branch" not in saved:
            failed = AttemptRecord.failure(
                "branch_error",
                f"branch notebook '{self.task_id}' saved no 'branch' value: end it with "
                "nbflow.save('branch', ['task_to_follow', ...])",
            )
            failed.output_uri, failed.artifacts = record.output_uri, record.artifacts
            return failed
        return self.with_choice(record, read_value(saved["branch"]))


def skipped_in_kernel(record: AttemptRecord) -> AttemptRecord:
    """A notebook's (or cell task's) ``record``: ``nbflow.Skip`` raised by a cell ends it skipped
    with the exception's message as the reason (the output notebook and what it saved are kept)."""
    if record.ename == "Skip":
        record.reason, record.message = "skipped", record.evalue or "skipped by nbflow.Skip"
    return record


def follow_of(value: Any) -> list[str]:
    """The task ids a branch's ``value`` names (a task id, a handle or a list of them; None: none)."""
    items = [] if value is None else list(value) if isinstance(value, (list, tuple, set)) else [value]
    out = []
    for item in items:
        if isinstance(item, (Task, OutputRef)):
            out.append(item.task_id)
        elif isinstance(item, str):
            out.append(item)
        else:
            raise TypeError(
                f"returned {item!r}: a branch names the tasks to follow by id or handle "
                "(a string, a task handle, a list of them, or None for none)"
            )
    return list(dict.fromkeys(out))
