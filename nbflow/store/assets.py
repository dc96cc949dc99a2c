"""Store operations of assets (:mod:`nbflow.assets`): events, who produces and consumes what,
and the runs asset updates trigger.

* **An event per successful attempt.** The engine writes, with the attempt's success, one
  ``asset_events`` row per asset the attempt updated (:meth:`AssetTx.add_asset_events`): an
  ``INSERT ... SELECT`` that finds the task instance ``success`` at that try (so a failed or
  cancelled attempt records nothing) and no event of that attempt yet (a duplicate report of
  it adds none; ``uq_asset_events_attempt`` backs this).
* **A run per qualifying set of updates, exactly once.** A pipeline scheduled on assets
  subscribes to each (``asset_refs`` role ``consumer``, with ``since``: the time of its first
  sync on it; older events do not count). :meth:`AssetTx.create_asset_run` takes the pending
  events, those of its assets since ``since`` that it has not consumed; when every asset has
  at least one, it creates one run (trigger ``asset``, logical date: now) and marks every
  pending event consumed by that run (``asset_consumed``), in one transaction. Several updates
  of an asset before the run count once, and all of them are the run's lineage. The scheduler
  holds the pipeline row (``FOR UPDATE SKIP LOCKED`` on PostgreSQL; SQLite's write transaction
  is exclusive), and ``asset_consumed``'s primary key (pipeline, event) plus the run's
  idempotency key (``asset:`` + a hash of the event ids, ``uq_runs_idempotency_key``) make a
  second scheduler that computed the same run fail to insert it: its savepoint is rolled back
  and it creates nothing.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import RowMapping, String, and_, bindparam, delete, exists, func, insert, literal, select, update
from sqlalchemy.exc import IntegrityError

from nbflow.states import TaskState
from nbflow.store import orm
from nbflow.store.orm import UTCDateTime, utcnow

log = logging.getLogger("nbflow.store")
AS, REF, EV, CON, R, TI = (
    orm.assets,
    orm.asset_refs,
    orm.asset_events,
    orm.asset_consumed,
    orm.runs,
    orm.task_instances,
)

_ASSET = bindparam("asset", type_=String(200))
_EVENT_EXISTS = exists().where(
    EV.c.run_id == TI.c.run_id,
    EV.c.task_id == TI.c.task_id,
    EV.c.try_number == TI.c.try_number,
    EV.c.asset == _ASSET,
)
#: one event of one attempt, only if that attempt is its task's success and has none yet
INSERT_EVENT = insert(EV).from_select(
    ["asset", "pipeline", "run_id", "task_id", "try_number", "created_at"],
    select(
        _ASSET, R.c.pipeline, TI.c.run_id, TI.c.task_id, TI.c.try_number, bindparam("created_at", type_=UTCDateTime())
    )
    .join(R, R.c.id == TI.c.run_id)
    .where(
        TI.c.run_id == bindparam("run_id"),
        TI.c.task_id == bindparam("task_id"),
        TI.c.try_number == bindparam("try_number"),
        TI.c.state == literal(TaskState.SUCCESS.value),
        ~_EVENT_EXISTS,
    ),
)


class AssetTx:
    """Asset writes; mixed into :class:`nbflow.store.Tx` (``self.conn`` is the transaction)."""

    conn: Any

    def add_outputs(
        self,
        run_id: int,
        task_id: str,
        try_number: int,
        artifacts: Iterable[dict[str, Any]],
        metrics: Iterable[dict[str, Any]],
        assets: Iterable[str],
    ) -> None:
        """What a finished attempt produced: its artifacts, its metrics and, when it succeeded,
        its asset events (the engine's one write of them)."""
        self.add_artifacts(run_id, task_id, try_number, artifacts)  # type: ignore[attr-defined]
        self.add_metrics(run_id, task_id, try_number, metrics)  # type: ignore[attr-defined]
        self.add_asset_events(run_id, task_id, try_number, assets)

    def add_asset_events(self, run_id: int, task_id: str, try_number: int, assets: Iterable[str]) -> None:
        """Record that a successful attempt updated ``assets`` (see the module docstring)."""
        now = utcnow()
        rows = [
            {"asset": a, "run_id": run_id, "task_id": task_id, "try_number": try_number, "created_at": now}
            for a in dict.fromkeys(assets)
        ]
        if rows:
            self.conn.execute(INSERT_EVENT, rows)

    def sync_assets(self, definition: dict[str, Any]) -> None:
        """Record the assets a pipeline's definition names, its producing tasks and the assets it
        is scheduled on (a new subscription counts events from now; a dropped one is forgotten).

        An asset's ``uri`` and ``description`` are those of the last pipeline that gave them (a
        bare ``Asset("model")`` keeps them). Rows another scheduler inserted meanwhile are kept.
        """
        name, now = definition["name"], utcnow()
        consumed = [a["name"] for a in definition.get("schedule_assets") or []]
        declared = {a["name"]: a for a in definition.get("schedule_assets") or []}
        produced = {(a["name"], t["id"]) for t in definition["tasks"] for a in t.get("produces") or []}
        for t in definition["tasks"]:
            declared.update({a["name"]: a for a in t.get("produces") or []})
        for asset in declared.values():
            given = {k: asset[k] for k in ("uri", "description") if asset.get(k)}
            if self.conn.execute(update(AS).where(AS.c.name == asset["name"]).values(**given, updated_at=now)).rowcount:
                continue
            self._insert_once(
                insert(AS).values(**{"uri": "", "description": "", **given}, name=asset["name"], updated_at=now)
            )
        rows = self.conn.execute(select(REF).where(REF.c.pipeline == name)).mappings()
        refs = {(r["asset"], r["role"], r["task_id"]) for r in rows}
        wanted = {(a, "consumer", "") for a in consumed} | {(a, "producer", tid) for a, tid in produced}
        for asset, role, tid in refs - wanted:
            self.conn.execute(
                delete(REF).where(
                    REF.c.asset == asset, REF.c.pipeline == name, REF.c.role == role, REF.c.task_id == tid
                )
            )
        for a, role, tid in wanted - refs:
            self._insert_once(insert(REF).values(asset=a, pipeline=name, role=role, task_id=tid, since=now))

    def _insert_once(self, stmt: Any) -> None:
        """Insert a row unless another transaction (a second scheduler's sync) inserted it."""
        try:
            with self.conn.begin_nested():
                self.conn.execute(stmt)
        except IntegrityError:
            pass

    def forget_asset_refs(self, pipelines: Sequence[str]) -> None:
        """Forget what removed pipelines produce and are scheduled on (synced again if they come back)."""
        self.conn.execute(delete(REF).where(REF.c.pipeline.in_(list(pipelines))))

    def create_asset_run(
        self,
        *,
        pipeline: str,
        version_id: int | None,
        params: dict[str, Any],
        tasks: Sequence[dict[str, Any]],
        now: datetime,
        incremental: bool = False,
    ) -> int | None:
        """One run of ``pipeline`` if each of its assets has a pending event, consuming them all
        (see the module docstring); None when it waits, or another scheduler made that run."""
        pending = self.conn.execute(_pending(pipeline)).mappings().all()
        subscribed = self.conn.execute(
            select(REF.c.asset).where(REF.c.pipeline == pipeline, REF.c.role == "consumer")
        ).scalars()
        waiting = set(subscribed) - {e["asset"] for e in pending}
        if not pending or waiting:
            return None
        ids = sorted(e["id"] for e in pending)
        key = "asset:" + hashlib.sha256(",".join(map(str, ids)).encode()).hexdigest()[:40]
        try:
            with self.conn.begin_nested():
                (run_id,) = self.create_runs(  # type: ignore[attr-defined]
                    pipeline=pipeline,
                    version_id=version_id,
                    params=params,
                    trigger="asset",
                    tasks=tasks,
                    intervals=[(now, now)],
                    incremental=incremental,
                    idempotency_key=key,
                )
                self.conn.execute(
                    insert(CON),
                    [
                        {"pipeline": pipeline, "event_id": e["id"], "run_id": run_id, "asset": e["asset"]}
                        for e in pending
                    ],
                )
        except IntegrityError:
            log.info("the asset-triggered run of %s for events %s exists already", pipeline, ids)
            return None
        return int(run_id)


def _pending(pipeline: str) -> Any:
    """The events of ``pipeline``'s assets since it subscribed that it has not consumed."""
    consumed = exists().where(CON.c.pipeline == pipeline, CON.c.event_id == EV.c.id)
    return (
        select(EV.c.id, EV.c.asset)
        .join(REF, and_(REF.c.asset == EV.c.asset, REF.c.pipeline == pipeline, REF.c.role == "consumer"))
        .where(EV.c.created_at >= REF.c.since, ~consumed)
        .order_by(EV.c.id)
    )


class AssetReads:
    """Asset reads; mixed into :class:`nbflow.store.Store`."""

    def _all(self, stmt: Any) -> list[RowMapping]:  # provided by Store
        raise NotImplementedError

    def asset_event_stamp(self) -> int:
        """The newest asset event's id (0: none), read from the primary key's index: the scheduler
        looks for asset runs when it changes (and every parse interval, for an event whose id
        was taken before a newer one's but committed after it)."""
        return int(self._all(select(func.coalesce(func.max(EV.c.id), 0).label("top")))[0]["top"])

    def asset_rows(self) -> list[RowMapping]:
        """Declared assets (``name``, ``uri``, ``description``)."""
        return self._all(select(AS).order_by(AS.c.name))

    def asset_refs(self, asset: str | None = None) -> list[RowMapping]:
        """Producing tasks and consuming pipelines (of ``asset``, or of all)."""
        stmt = select(REF).order_by(REF.c.asset, REF.c.role, REF.c.pipeline, REF.c.task_id)
        return self._all(stmt if asset is None else stmt.where(REF.c.asset == asset))

    def asset_events(self, asset: str | None = None, limit: int = 100) -> list[RowMapping]:
        """Events, newest first (of ``asset``, or of all)."""
        stmt = select(EV).order_by(EV.c.id.desc()).limit(limit)
        return self._all(stmt if asset is None else stmt.where(EV.c.asset == asset))

    def event_producers(self) -> list[RowMapping]:
        """Each (asset, pipeline, task) that recorded an event (``save(..., asset=)`` declares nothing)."""
        return self._all(select(EV.c.asset, EV.c.pipeline, EV.c.task_id).distinct())

    def last_asset_events(self) -> dict[str, RowMapping]:
        """Each asset's newest event."""
        newest = select(func.max(EV.c.id)).group_by(EV.c.asset).scalar_subquery()
        return {r["asset"]: r for r in self._all(select(EV).where(EV.c.id.in_(newest)))}

    def consumed_by(self, event_ids: Iterable[int]) -> list[RowMapping]:
        """Which runs consumed these events (``pipeline``, ``event_id``, ``run_id``, ``asset``)."""
        ids = list(event_ids)
        if not ids:
            return []
        return self._all(select(CON).where(CON.c.event_id.in_(ids)).order_by(CON.c.run_id))

    def run_lineage(self, run_id: int) -> list[RowMapping]:
        """The events an asset-triggered run consumed, with their producing runs."""
        stmt = select(EV).join(CON, CON.c.event_id == EV.c.id).where(CON.c.run_id == run_id).order_by(EV.c.id)
        return self._all(stmt)

    def pending_assets(self, pipeline: str) -> list[str]:
        """The assets of ``pipeline`` (scheduled on assets) updated since its last asset-triggered run."""
        return sorted({r["asset"] for r in self._all(_pending(pipeline))})
