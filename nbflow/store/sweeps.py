"""Sweeps and metrics in the store: a sweep's row and its runs, the metrics attempts recorded.

A *sweep* groups the runs ``nbflow run --sweep`` made, one per point of a parameter grid
(``runs.sweep_id``). A *metric* is a scalar an attempt recorded (``nbflow.metric``, or a
number, bool or short string it saved); the worker carries them in the attempt record and the
engine writes them here with the attempt's end (:meth:`SweepTx.add_metrics`). Numbers are
``value_num``, strings ``value_text``, bools both (1/0 and "true"/"false").
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, RowMapping, insert, select, update

from nbflow.store import orm, statements
from nbflow.store.orm import utcnow

R, TI, M, SW = orm.runs, orm.task_instances, orm.metrics, orm.sweeps


def metric_columns(value: Any) -> tuple[float | None, str | None]:
    """``(value_num, value_text)`` of a metric value (see the module docstring)."""
    if isinstance(value, bool):
        return float(value), "true" if value else "false"
    if isinstance(value, int | float):
        return float(value), None
    return None, str(value)


def metric_value(row: Mapping[str, Any] | RowMapping) -> float | int | bool | str | None:
    """The value a metric row stands for (an integral number comes back as an int)."""
    num, text = row["value_num"], row["value_text"]
    if num is not None and text in ("true", "false"):
        return text == "true"
    if num is not None:
        return int(num) if float(num).is_integer() and abs(num) < 2**53 else float(num)
    return text


class SweepTx:
    """Writes of sweeps and metrics; mixed into :class:`nbflow.store.Tx`."""

    conn: Connection

    def create_sweep(self, pipeline: str, grid: Mapping[str, Sequence[Any]]) -> int:
        """A sweep row of ``pipeline`` over ``grid`` (``{param: [values]}``); its id."""
        values = {"pipeline": pipeline, "grid": {k: list(v) for k, v in grid.items()}, "created_at": utcnow()}
        key = self.conn.execute(insert(SW).values(**values)).inserted_primary_key
        assert key is not None
        return int(key[0])

    def set_sweep(self, run_ids: Sequence[int], sweep_id: int) -> None:
        """Make ``run_ids`` the points of sweep ``sweep_id``."""
        self.conn.execute(update(R).where(R.c.id.in_(list(run_ids))).values(sweep_id=sweep_id))

    def add_metrics(
        self,
        run_id: int,
        task_id: str,
        try_number: int,
        metrics: Iterable[Mapping[str, Any]],
        map_index: int | None = None,
    ) -> None:
        """Record the metrics (``{"name", "value"}``) of one attempt."""
        now, rows = utcnow(), []
        for item in metrics:
            num, text = metric_columns(item["value"])
            rows.append(
                {
                    "run_id": run_id,
                    "task_id": task_id,
                    "try_number": try_number,
                    "map_index": map_index,
                    "name": str(item["name"]),
                    "value_num": num,
                    "value_text": text,
                    "created_at": now,
                }
            )
        if rows:
            self.conn.execute(statements.INSERT_METRIC, rows)


class SweepReads:
    """Reads of sweeps and metrics; mixed into :class:`nbflow.store.Store`."""

    def _all(self, stmt: Any) -> list[RowMapping]:  # provided by Store
        raise NotImplementedError

    def get_sweep(self, sweep_id: int) -> RowMapping | None:
        """A sweep row, or None."""
        rows = self._all(select(SW).where(SW.c.id == sweep_id))
        return rows[0] if rows else None

    def sweep_run_ids(self, sweep_id: int) -> list[int]:
        """The runs of a sweep, in the order they were made."""
        return [r["id"] for r in self._all(select(R.c.id).where(R.c.sweep_id == sweep_id).order_by(R.c.id))]

    def last_run_ids(self, pipeline: str, n: int) -> list[int]:
        """The newest ``n`` runs of ``pipeline``, oldest first."""
        stmt = select(R.c.id).where(R.c.pipeline == pipeline).order_by(R.c.id.desc()).limit(n)
        return sorted(r["id"] for r in self._all(stmt))

    def runs_by_id(self, run_ids: Sequence[int]) -> list[RowMapping]:
        """Run rows of ``run_ids`` (those that exist), by id."""
        return self._all(select(R).where(R.c.id.in_(list(run_ids))).order_by(R.c.id))

    def final_metrics(self, run_ids: Sequence[int]) -> list[dict[str, Any]]:
        """The metrics of the final try of each task of ``run_ids`` (``run_id``, ``task_id``,
        ``map_index``, ``name``, ``value``); a task reused by an incremental run (``cached``)
        shows those of the attempt it reused."""
        ids = list(run_ids)
        if not ids:
            return []
        tis = self._all(
            select(TI.c.run_id, TI.c.task_id, TI.c.try_number, TI.c.reused_run_id, TI.c.reused_try).where(
                TI.c.run_id.in_(ids)
            )
        )
        source: dict[tuple[int, str, int], list[int]] = {}
        for ti in tis:
            if ti["reused_run_id"] is not None and ti["reused_try"] is not None:
                key = (ti["reused_run_id"], ti["task_id"], ti["reused_try"])
            else:
                key = (ti["run_id"], ti["task_id"], ti["try_number"])
            source.setdefault(key, []).append(ti["run_id"])
        wanted = sorted({run for run, _, _ in source})
        rows = self._all(select(M).where(M.c.run_id.in_(wanted)).order_by(M.c.id)) if wanted else []
        out = []
        for row in rows:
            for run_id in source.get((row["run_id"], row["task_id"], row["try_number"]), []):
                out.append(
                    {
                        "run_id": run_id,
                        "task_id": row["task_id"],
                        "map_index": row["map_index"],
                        "name": row["name"],
                        "value": metric_value(row),
                    }
                )
        return out
