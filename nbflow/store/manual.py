"""What a person does to a finished run (clear tasks to run them again, mark a task success or
failed); mixed into :class:`nbflow.store.Tx` (``self.conn`` is the transaction)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import select, update

from nbflow.states import MARKABLE, RUN_FINISHED, RunState, TaskState
from nbflow.store import orm
from nbflow.store.orm import utcnow

R, TI = orm.runs, orm.task_instances


class ManualTx:
    """Writes of a person's actions on finished runs."""

    conn: Any

    def set_task_state(self, run_id: int, task_id: str, to: TaskState, **fields: Any) -> bool:  # provided by Tx
        raise NotImplementedError

    def clear_tasks(self, run_id: int, task_ids: Iterable[str], retries: dict[str, int] | None = None) -> list[str]:
        """Reset finished task instances to ``pending`` (keeping their try count); returns those
        reset. ``retries`` (task -> its retries) gives each cleared task its tries again:
        ``max_tries`` becomes its try count plus retries + 1, so try 2 of a task without
        retries reads "try 2 of 2", never "2 of 1"."""
        cleared = []
        retries = retries or {}
        for task_id in task_ids:
            if self.set_task_state(
                run_id,
                task_id,
                TaskState.PENDING,
                reason=None,
                error=None,
                next_retry_at=None,
                end_date=None,
                reused_run_id=None,
                reused_try=None,
                why=None,  # a cleared cached task reuses nothing yet
            ):
                cleared.append(task_id)
                self.conn.execute(
                    update(TI)
                    .where(TI.c.run_id == run_id, TI.c.task_id == task_id)
                    .values(max_tries=TI.c.try_number + retries.get(task_id, 0) + 1)
                )
        return cleared

    def mark_task(self, run_id: int, task_id: str, to: TaskState, note: str) -> bool:
        """A person marks a finished task of a finished run ``success`` or ``failed`` (see
        :data:`nbflow.states.MARKABLE`); the run's state follows from its tasks again
        (:func:`nbflow.rules.run_outcome`). False when the task or run is not finished."""
        run_done = [s.value for s in RUN_FINISHED]
        res = self.conn.execute(
            update(TI)
            .where(
                TI.c.run_id == run_id,
                TI.c.task_id == task_id,
                TI.c.state.in_([s.value for s in MARKABLE]),
                TI.c.run_id.in_(select(R.c.id).where(R.c.id == run_id, R.c.state.in_(run_done))),
            )
            .values(
                state=TaskState(to).value,
                reason="marked",
                error=None if to is TaskState.SUCCESS else note,
                note=note,
                updated_at=utcnow(),
            )
        )
        return res.rowcount == 1

    def set_finished_run_state(self, run_id: int, to: RunState) -> None:
        """Set a finished run's state to another finished state (after a task was marked)."""
        self.conn.execute(
            update(R)
            .where(R.c.id == run_id, R.c.state.in_([s.value for s in RUN_FINISHED]))
            .values(state=RunState(to).value)
        )
