"""Reads of incremental runs: the earlier successes a run may reuse, in a few queries.

A task instance that succeeded ran an attempt of its own; one that was ``cached`` names the
attempt it reused (``reused_run_id``, ``reused_try``). Either way its *source* is the attempt
whose outputs it stands for, so a chain of reuses always points at an attempt that ran.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import RowMapping, func, select

from nbflow.states import SUCCEEDED
from nbflow.store import orm

R, TI, A, ART = orm.runs, orm.task_instances, orm.task_attempts, orm.artifacts
_SUCCEEDED = sorted(s.value for s in SUCCEEDED)
_ATTEMPT_COLUMNS = (A.c.run_id, A.c.task_id, A.c.try_number, A.c.end_date, A.c.log_uri, A.c.output_uri)
_ARTIFACT_COLUMNS = (
    ART.c.run_id,
    ART.c.task_id,
    ART.c.try_number,
    ART.c.name,
    ART.c.uri,
    ART.c.type,
    ART.c.size,
    ART.c.digest,
)


@dataclass
class Previous:
    """The newest earlier success of one task: the instance, the attempt it stands for, its outputs."""

    run_id: int  # the run of the task instance (a cached one's own run)
    source_run_id: int  # the run and try whose outputs it stands for
    source_try: int
    cache_key: str | None
    cache_parts: dict[str, str] | None
    output_digest: str | None
    ended_at: datetime | None  # when the source attempt ended
    artifacts: list[dict[str, Any]] = field(default_factory=list)
    log_uri: str | None = None  # the source attempt's log and executed notebook
    output_uri: str | None = None


def source_of(row: RowMapping | Mapping[str, Any]) -> tuple[int, int]:
    """(run, try) of the attempt whose outputs a successful or cached task instance stands for."""
    if row["reused_run_id"] is not None:
        return int(row["reused_run_id"]), int(row["reused_try"])
    return int(row["run_id"]), int(row["try_number"])


def artifact_ref(row: RowMapping) -> dict[str, Any]:
    """An artifact row as the reference a downstream task receives."""
    return {
        "name": row["name"],
        "uri": row["uri"],
        "type": row["type"],
        "size": row["size"],
        "digest": row["digest"] or "",
    }


class ReuseReads:
    """Reads of incremental runs; mixed into :class:`nbflow.store.Store`."""

    def _all(self, stmt: Any) -> list[RowMapping]:  # provided by Store
        raise NotImplementedError

    def latest_success(self, pipeline: str, task_id: str) -> dict[str, Any] | None:
        """The newest successful (or cached) task instance of ``task_id`` in any run of
        ``pipeline``, with ``source_run_id``/``source_try``: the attempt whose outputs it stands for."""
        stmt = (
            select(TI)
            .join(R, R.c.id == TI.c.run_id)
            .where(R.c.pipeline == pipeline, TI.c.task_id == task_id, TI.c.state.in_(_SUCCEEDED))
            .order_by(TI.c.run_id.desc())
            .limit(1)
        )
        rows = self._all(stmt)
        if not rows:
            return None
        run_id, try_number = source_of(rows[0])
        return {**rows[0], "source_run_id": run_id, "source_try": try_number}

    def previous_successes(self, pipeline: str, before_run: int | None) -> dict[str, Previous]:
        """Per task id of ``pipeline``: its newest successful or cached instance in a run before
        ``before_run`` (any run when None), with the source attempt's end and artifacts.

        Three queries whatever the number of tasks: the instances (newest per task by a window
        function), the source attempts' ends, their artifacts.
        """
        where = [R.c.pipeline == pipeline, TI.c.state.in_(_SUCCEEDED)]
        if before_run is not None:
            where.append(TI.c.run_id < before_run)
        newest = func.row_number().over(partition_by=TI.c.task_id, order_by=TI.c.run_id.desc()).label("newest")
        ranked = (
            select(
                TI.c.task_id,
                TI.c.run_id,
                TI.c.try_number,
                TI.c.reused_run_id,
                TI.c.reused_try,
                TI.c.cache_key,
                TI.c.cache_parts,
                TI.c.output_digest,
                newest,
            )
            .select_from(TI.join(R, R.c.id == TI.c.run_id))
            .where(*where)
            .subquery()
        )
        rows = self._all(select(ranked).where(ranked.c.newest == 1))
        if not rows:
            return {}
        found: dict[str, Previous] = {}
        for row in rows:
            run, try_number = source_of(row)
            found[row["task_id"]] = Previous(
                row["run_id"], run, try_number, row["cache_key"], row["cache_parts"], row["output_digest"], None
            )
        source_runs = sorted({p.source_run_id for p in found.values()})
        wanted = {(p.source_run_id, tid, p.source_try): p for tid, p in found.items()}
        for chunk in _chunks(source_runs, 500):
            for att in self._all(select(*_ATTEMPT_COLUMNS).where(A.c.run_id.in_(chunk))):
                prev = wanted.get((att["run_id"], att["task_id"], att["try_number"]))
                if prev is not None:
                    prev.ended_at, prev.log_uri, prev.output_uri = att["end_date"], att["log_uri"], att["output_uri"]
            for art in self._all(select(*_ARTIFACT_COLUMNS).where(ART.c.run_id.in_(chunk)).order_by(ART.c.id)):
                prev = wanted.get((art["run_id"], art["task_id"], art["try_number"]))
                if prev is not None:
                    prev.artifacts.append(artifact_ref(art))
        return found


def _chunks(items: list[int], size: int) -> list[list[int]]:
    return [items[i : i + size] for i in range(0, len(items), size)]
