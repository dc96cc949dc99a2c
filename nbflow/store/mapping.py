"""Writes of dynamic task mapping (:mod:`nbflow.expansion`); mixed into :class:`nbflow.store.Tx`
(``self.conn`` is the transaction)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import bindparam, delete, insert, select, update

from nbflow.states import TaskState
from nbflow.store import orm
from nbflow.store.orm import utcnow

TI = orm.task_instances


class MappingTx:
    """A mapped task's instance rows."""

    conn: Any

    def add_map_instances(self, run_id: int, parent: str, instances: Sequence[dict[str, Any]]) -> None:
        """Make the rows of mapped task ``parent``'s instances (``task_id``, ``map_index``,
        ``map_values``, ``kind``, ``queue``, ``pool``, ``pool_slots``, ``max_tries`` each) match
        ``instances``: rows an earlier expansion made (the task was cleared) keep their state and
        tries and get the new values; rows past the new count are deleted; missing ones are made
        ``pending``."""
        now = utcnow()
        have = set(
            self.conn.execute(select(TI.c.task_id).where(TI.c.run_id == run_id, TI.c.map_parent == parent)).scalars()
        )
        self.conn.execute(
            delete(TI).where(TI.c.run_id == run_id, TI.c.map_parent == parent, TI.c.map_index >= len(instances))
        )
        new = [i for i in instances if i["task_id"] not in have]
        old = [i for i in instances if i["task_id"] in have]
        if new:
            self.conn.execute(
                insert(TI),
                [
                    {
                        **i,
                        "run_id": run_id,
                        "map_parent": parent,
                        "state": TaskState.PENDING.value,
                        "try_number": 0,
                        "updated_at": now,
                    }
                    for i in new
                ],
            )
        if old:
            self.conn.execute(
                update(TI)
                .where(TI.c.run_id == run_id, TI.c.task_id == bindparam("w_task_id"))
                .values(map_values=bindparam("v_values")),
                [{"w_task_id": i["task_id"], "v_values": i["map_values"]} for i in old],
            )


def in_map_order(rows: list[Any]) -> list[Any]:
    """Task instance rows with each mapped task's instances right after it, by map index."""
    kids: dict[str, list[Any]] = {}
    for row in rows:
        if row["map_parent"] is not None:
            kids.setdefault(row["map_parent"], []).append(row)
    if not kids:
        return rows
    out = []
    for row in rows:
        if row["map_parent"] is None:
            out.append(row)
            out.extend(sorted(kids.pop(row["task_id"], ()), key=lambda r: r["map_index"]))
    return out + [r for rs in kids.values() for r in rs]  # instances whose mapped task is gone (none expected)
