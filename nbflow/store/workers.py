"""What the workers view reads from the store: the attempts a cluster's workers run now (by
their executor keys) and how many task instances wait for a worker, by queue."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import RowMapping, func, or_, select

from nbflow.states import TaskState
from nbflow.store import orm

R, TI, A = orm.runs, orm.task_instances, orm.task_attempts


class WorkerReads:
    """Reads of the workers view; mixed into :class:`nbflow.store.Store`."""

    def _all(self, stmt: Any) -> list[RowMapping]:  # provided by Store
        raise NotImplementedError

    def attempts_by_key(self, keys: Sequence[str]) -> list[RowMapping]:
        """The attempts whose executor key is one of ``keys``, with their run's pipeline."""
        if not keys:
            return []
        stmt = (
            select(A.c.executor_key, A.c.run_id, A.c.task_id, A.c.try_number, A.c.state, A.c.start_date, R.c.pipeline)
            .join(R, R.c.id == A.c.run_id)
            .where(A.c.executor_key.in_(list(keys)))
        )
        return self._all(stmt)

    def waiting_by_queue(self, executor: str, *, default: bool) -> dict[str, int]:
        """Task instances handed to ``executor`` and not started yet, counted by queue
        (``default``: ``executor`` is the default one, so runs that name none count too)."""
        on = R.c.executor == executor
        stmt = (
            select(TI.c.queue, func.count().label("waiting"))
            .join(R, R.c.id == TI.c.run_id)
            .where(TI.c.state == TaskState.QUEUED.value, or_(on, R.c.executor.is_(None)) if default else on)
            .group_by(TI.c.queue)
        )
        return {row["queue"]: int(row["waiting"]) for row in self._all(stmt)}
