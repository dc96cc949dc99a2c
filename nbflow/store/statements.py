"""Hot-path write statements, built once per shape and cached.

Building and cache-keying a fresh UPDATE costs more than executing it on SQLite, and the
engine writes the same few shapes for every task. Parameters are named ``w_*`` (the row and
the compare-and-set conditions) and ``v_*`` (the new values).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import bindparam, insert, literal, update

from nbflow.states import TaskState, can_transition, task_sources
from nbflow.store import orm

TI, A = orm.task_instances, orm.task_attempts
INSERT_ATTEMPT = insert(A)
INSERT_ARTIFACT = insert(orm.artifacts)
INSERT_METRIC = insert(orm.metrics)
#: a queued or running task instance holds pool slots and counts for max_active_tasks (a running
#: mapped task does not: its instances do)
HOLDS_SLOT = (TI.c.state.in_([TaskState.QUEUED.value, TaskState.RUNNING.value]), TI.c.map_count.is_(None))
_cache: dict[tuple, Any] = {}


def task_cas(to: TaskState, columns: tuple[str, ...], with_try: bool, via: TaskState | None = None) -> Any:
    """``UPDATE task_instances SET state=to, columns... WHERE run, task, state IN sources [AND try]``.

    The sources are those of ``to``, or of ``via`` for two transitions in one write (a
    queueing that starts at once: pending -> queued -> running).
    """
    key = ("cas", to, columns, with_try, via)
    stmt = _cache.get(key)
    if stmt is None:
        if via is not None and not can_transition(via, to):
            raise ValueError(f"no transition {via.value} -> {to.value}")
        sources = [s.value for s in task_sources(via or to)]
        stmt = update(TI).where(  # sources as plain bound values: an expanding IN cannot be executemany'd
            TI.c.run_id == bindparam("w_run_id"),
            TI.c.task_id == bindparam("w_task_id"),
            TI.c.state.in_(map(literal, sources)),
        )
        if with_try:
            stmt = stmt.where(TI.c.try_number == bindparam("w_try"))
        values: dict[str, Any] = {c: bindparam(f"v_{c}") for c in (*columns, "updated_at")}
        values["state"] = to.value
        stmt = _cache[key] = stmt.values(values)
    return stmt


#: an attempt row in another state is final: a late report (a driver that lost the run) changes nothing
OPEN_ATTEMPT = (TaskState.QUEUED.value, TaskState.RUNNING.value)


def attempt_update(columns: tuple[str, ...]) -> Any:
    """``UPDATE task_attempts SET columns... WHERE run, task, try AND state IN (queued, running)``."""
    key = ("attempt", columns)
    stmt = _cache.get(key)
    if stmt is None:
        stmt = _cache[key] = (
            update(A)
            .where(
                A.c.run_id == bindparam("w_run_id"),
                A.c.task_id == bindparam("w_task_id"),
                A.c.try_number == bindparam("w_try"),
            )
            .where(A.c.state.in_(map(literal, OPEN_ATTEMPT)))
            .values({c: bindparam(f"v_{c}") for c in columns})
        )
    return stmt
