"""Store operations of the scheduler: job leases, run claiming, scheduled runs, pools.

Exactly-once rules, for one or several schedulers on one database:

* A run is created at most once: ``runs`` is unique on ``(pipeline, logical_date)``, each
  insert runs in a savepoint (a duplicate is logged and skipped; ``Tx.create_runs``), and
  the pipeline's pointer (``next_logical_date``) moves in the same transaction as the inserts. On
  PostgreSQL the pipeline row is taken with ``FOR UPDATE SKIP LOCKED``, so two schedulers
  never even compute the same runs; on SQLite the write transaction is exclusive.
* A run is driven by one job at a time: a job claims it with a compare-and-set on
  ``runs.driver_id`` (free, or held by a job whose heartbeat lease has expired).
* Task instances start once because only the driving job queues them, each with a
  compare-and-set on state and try number.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, RowMapping, case, delete, func, insert, or_, select, text, true, update
from sqlalchemy.exc import IntegrityError

from nbflow.exceptions import NbflowError
from nbflow.states import RunState
from nbflow.store import orm
from nbflow.store.assets import AssetReads, AssetTx
from nbflow.store.orm import utcnow

log = logging.getLogger("nbflow.store")
P, V, R, TI, A, ART, JOB, ERR, POOL = (
    orm.pipelines,
    orm.pipeline_versions,
    orm.runs,
    orm.task_instances,
    orm.task_attempts,
    orm.artifacts,
    orm.jobs,
    orm.import_errors,
    orm.pools,
)
ACTIVE_RUN = [RunState.QUEUED.value, RunState.RUNNING.value]


class SchedulerBusyError(NbflowError):
    """Another scheduler holds the lease on a database that supports only one."""


class SchedulingTx(AssetTx):
    """Scheduler writes (with asset-triggered runs: :class:`AssetTx`); mixed into
    :class:`nbflow.store.Tx` (``self.conn`` is the transaction)."""

    conn: Any

    # -- jobs (heartbeat leases) -------------------------------------------------------------
    def start_job(self, kind: str, *, exclusive_after: datetime | None = None) -> int:
        """Register a running job; with ``exclusive_after``, refuse (:class:`SchedulerBusyError`)
        while another job of ``kind`` has beaten since then (on PostgreSQL under a transaction
        lock per kind, so two starting at once cannot both pass)."""
        if exclusive_after is not None:
            if self.conn.dialect.name == "postgresql":
                self.conn.execute(text("SELECT pg_advisory_xact_lock(hashtext(:kind))"), {"kind": f"nbflow-job-{kind}"})
            other = (
                self.conn.execute(
                    select(JOB).where(
                        JOB.c.kind == kind, JOB.c.state == "running", JOB.c.heartbeat_at > exclusive_after
                    )
                )
                .mappings()
                .first()
            )
            if other is not None:
                who = f"job {other['id']}, pid {other['pid']} on {other['hostname']}"
                if kind == "scheduler":
                    raise SchedulerBusyError(
                        f"SQLite supports one scheduler; use PostgreSQL for HA (scheduler {who}, is alive)",
                        hint="stop the other scheduler, or set NBFLOW_DB_URL=postgresql+psycopg://... to run several",
                    )
                raise SchedulerBusyError(f"another {kind} driver serves this database ({who})")
        now = utcnow()
        return int(
            self.conn.execute(
                insert(JOB).values(
                    kind=kind,
                    hostname=socket.gethostname(),
                    pid=os.getpid(),
                    state="running",
                    started_at=now,
                    heartbeat_at=now,
                )
            ).inserted_primary_key[0]
        )

    def heartbeat(self, job_id: int) -> None:
        """Renew a job's lease (a job marked dead by :meth:`expire_jobs` that beats again lives again)."""
        state = case((JOB.c.state == "dead", "running"), else_=JOB.c.state)
        self.conn.execute(update(JOB).where(JOB.c.id == job_id).values(heartbeat_at=utcnow(), state=state))

    def expire_jobs(self, threshold: float) -> int:
        """Mark ``dead`` the running jobs whose lease expired (no heartbeat for ``threshold``
        seconds: a scheduler or ``nbflow run`` that was killed); returns how many."""
        now = utcnow()
        stale = (JOB.c.state == "running") & (JOB.c.heartbeat_at <= now - timedelta(seconds=threshold))
        return int(self.conn.execute(update(JOB).where(stale).values(state="dead", ended_at=now)).rowcount)

    def end_job(self, job_id: int) -> None:
        """Mark a job stopped (its runs become claimable at once)."""
        self.conn.execute(update(JOB).where(JOB.c.id == job_id).values(state="stopped", ended_at=utcnow()))

    def claim_run(self, run_id: int, job_id: int, live_jobs: Iterable[int]) -> bool:
        """Become the driver of a queued/running run that no other live job drives."""
        others = [j for j in live_jobs if j != job_id]  # this job may claim a run it holds already
        free = or_(R.c.driver_id.is_(None), R.c.driver_id.notin_(others)) if others else true()
        res = self.conn.execute(
            update(R).where(R.c.id == run_id, R.c.state.in_(ACTIVE_RUN), free).values(driver_id=job_id)
        )
        return res.rowcount == 1

    def mark_sla_missed(self, run_id: int, at: datetime) -> bool:
        """Record that a run missed its SLA, once: compare-and-set on ``sla_missed_at IS NULL``
        (True for the one writer that set it, across drivers)."""
        res = self.conn.execute(update(R).where(R.c.id == run_id, R.c.sla_missed_at.is_(None)).values(sla_missed_at=at))
        return res.rowcount == 1

    # -- pipelines -------------------------------------------------------------------------
    def upsert_pipeline(self, definition: dict[str, Any], fingerprint: str) -> int:
        """Record a pipeline and, when its fingerprint is new, a version; returns the version id.

        Two schedulers syncing a new pipeline (or version) at once both find no row: each insert
        runs in a savepoint, and the one that loses the race reads the winner's row instead of
        failing its whole sync."""
        name, now = definition["name"], utcnow()
        fields = {"file": definition.get("file"), "schedule": definition.get("schedule"), "updated_at": now}
        fields["description"] = definition.get("description") or ""
        if self.conn.execute(select(P.c.name).where(P.c.name == name)).first() is None:
            self._insert_once(insert(P).values(name=name, is_paused=False, created_at=now, **fields))
        version = select(V.c.id).where(V.c.pipeline == name, V.c.fingerprint == fingerprint)
        version_id = self.conn.execute(version).scalar()
        if version_id is None:
            self._insert_once(
                insert(V).values(pipeline=name, fingerprint=fingerprint, definition=definition, created_at=now)
            )
            version_id = self.conn.execute(version).scalar_one()
        self.conn.execute(update(P).where(P.c.name == name).values(latest_version_id=version_id, **fields))
        return int(version_id)

    def _insert_once(self, stmt: Any) -> None:
        """Insert a row another transaction may have inserted meanwhile (then keep that one)."""
        try:
            with self.conn.begin_nested():
                self.conn.execute(stmt)
        except IntegrityError:
            log.info("a row inserted concurrently by another scheduler: kept (%s)", stmt.table.name)

    def sync_pipeline(self, definition: dict[str, Any], fingerprint: str) -> int:
        """Record a loaded pipeline with its schedule settings; returns its version id."""
        version = self.upsert_pipeline(definition, fingerprint)
        self.conn.execute(
            update(P)
            .where(P.c.name == definition["name"])
            .values(
                start_date=_date(definition.get("start_date")),
                end_date=_date(definition.get("end_date")),
                timezone=definition.get("timezone") or "UTC",
                catchup=bool(definition.get("catchup")),
                max_active_runs=definition.get("max_active_runs") or 16,
                max_active_tasks=definition.get("max_active_tasks"),
                is_active=True,
            )
        )
        self.sync_assets(definition)  # its producers and subscriptions (nbflow.store.assets)
        return version

    def deactivate_pipelines(self, names: Iterable[str]) -> None:
        """Stop scheduling pipelines that are no longer in the DAG folder (history stays, their
        asset updates and lineage too; they stop being producers and consumers of assets)."""
        names = list(names)
        if names:
            self.conn.execute(update(P).where(P.c.name.in_(names)).values(is_active=False))
            self.forget_asset_refs(names)

    def set_paused(self, name: str, paused: bool) -> bool:
        """Pause or unpause a pipeline; False when there is no such pipeline."""
        return self.conn.execute(update(P).where(P.c.name == name).values(is_paused=paused)).rowcount == 1

    def replace_import_errors(self, errors: dict[str, tuple[str, str]]) -> None:
        """Make the import_errors table say exactly ``{file: (location, message)}``."""
        self.conn.execute(delete(ERR))
        if errors:
            now = utcnow()
            self.conn.execute(
                insert(ERR),
                [{"filename": f, "location": loc, "error": msg, "created_at": now} for f, (loc, msg) in errors.items()],
            )

    def lock_pipeline(self, name: str, skip_locked: bool) -> RowMapping | None:
        """The pipeline row, locked for this transaction (None: locked by another scheduler)."""
        stmt = select(P).where(P.c.name == name).with_for_update(skip_locked=skip_locked)
        return self.conn.execute(stmt).mappings().first()

    # -- pools and retention -------------------------------------------------------------------
    def set_pool(self, name: str, slots: int, description: str = "") -> None:
        """Create or resize a pool."""
        if (
            self.conn.execute(
                update(POOL).where(POOL.c.name == name).values(slots=slots, description=description)
            ).rowcount
            == 0
        ):
            self.conn.execute(insert(POOL).values(name=name, slots=slots, description=description))

    def delete_pool(self, name: str) -> bool:
        """Remove a pool; False when there is none."""
        return self.conn.execute(delete(POOL).where(POOL.c.name == name)).rowcount == 1

    def delete_runs(self, run_ids: Sequence[int]) -> None:
        """Delete runs with their task instances, attempts, artifact and metric rows."""
        for table in (ART, orm.metrics, A, TI):
            self.conn.execute(delete(table).where(table.c.run_id.in_(run_ids)))
        self.conn.execute(delete(R).where(R.c.id.in_(run_ids)))


class SchedulingReads(AssetReads):
    """Scheduler reads (with assets': :class:`AssetReads`); mixed into :class:`nbflow.store.Store`."""

    def _all(self, stmt: Any) -> list[RowMapping]:  # provided by Store
        raise NotImplementedError

    def live_jobs(self, threshold: float, kinds: Sequence[str] = ("scheduler", "runner")) -> dict[int, RowMapping]:
        """Jobs whose lease is fresh (heartbeat within ``threshold`` seconds)."""
        since = utcnow() - timedelta(seconds=threshold)
        rows = self._all(select(JOB).where(JOB.c.kind.in_(kinds), JOB.c.state == "running", JOB.c.heartbeat_at > since))
        return {r["id"]: r for r in rows}

    def last_job(self, kind: str) -> RowMapping | None:
        """The newest job of ``kind`` (live or not), or None."""
        rows = self._all(select(JOB).where(JOB.c.kind == kind).order_by(JOB.c.id.desc()).limit(1))
        return rows[0] if rows else None

    def runs_to_drive(self, live: Iterable[int], limit: int = 100) -> list[RowMapping]:
        """Queued or running runs that no live job drives, oldest logical date first."""
        free: ColumnElement[bool] = R.c.driver_id.is_(None)
        live = list(live)
        if live:
            free = or_(free, R.c.driver_id.notin_(live))
        stmt = select(R).where(R.c.state.in_(ACTIVE_RUN), free).order_by(R.c.logical_date, R.c.id).limit(limit)
        return self._all(stmt)

    def run_drivers(self, run_ids: Iterable[int]) -> dict[int, int | None]:
        """The job driving each of ``run_ids`` (its ``driver_id``), in one query."""
        run_ids = list(run_ids)
        if not run_ids:
            return {}
        return {r["id"]: r["driver_id"] for r in self._all(select(R.c.id, R.c.driver_id).where(R.c.id.in_(run_ids)))}

    def run_states(self, run_ids: Iterable[int]) -> dict[int, str]:
        """The state of each of ``run_ids`` that exists, in one query (the scheduler's cancel check)."""
        run_ids = list(run_ids)
        if not run_ids:
            return {}
        return {r["id"]: r["state"] for r in self._all(select(R.c.id, R.c.state).where(R.c.id.in_(run_ids)))}

    def active_run_counts(self) -> dict[str, int]:
        """Running runs per pipeline (for max_active_runs)."""
        stmt = (
            select(R.c.pipeline, func.count().label("n"))
            .where(R.c.state == RunState.RUNNING.value)
            .group_by(R.c.pipeline)
        )
        return {r["pipeline"]: r["n"] for r in self._all(stmt)}

    def import_errors(self) -> list[RowMapping]:
        """Files of the DAG folder that failed to load."""
        return self._all(select(ERR).order_by(ERR.c.filename))

    def pools(self) -> list[RowMapping]:
        """Pools with their slots and how many are in use."""
        used = (
            select(TI.c.pool, func.coalesce(func.sum(TI.c.pool_slots), 0).label("used"))
            .where(TI.c.state.in_(["queued", "running"]))
            .group_by(TI.c.pool)
            .subquery()
        )
        stmt = select(POOL, func.coalesce(used.c.used, 0).label("used")).outerjoin(used, used.c.pool == POOL.c.name)
        return self._all(stmt.order_by(POOL.c.name))

    def finished_runs_before(self, before: datetime) -> list[RowMapping]:
        """Finished runs created before ``before`` (for retention)."""
        stmt = select(R).where(R.c.state.notin_(ACTIVE_RUN), R.c.created_at < before).order_by(R.c.id)
        return self._all(stmt)


def task_rows(definition: dict[str, Any], selected: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """Task-instance rows of a new run, from a stored pipeline definition (all tasks, or ``selected``)."""
    by_id = {t["id"]: t for t in definition["tasks"]}
    ids = list(selected) if selected is not None else list(by_id)
    return [
        {
            "task_id": tid,
            "kind": by_id[tid]["kind"],
            "queue": by_id[tid]["queue"],
            "max_tries": by_id[tid]["retries"] + 1,
            "fingerprint": by_id[tid]["fingerprint"],
            "pool": by_id[tid].get("pool"),
            "pool_slots": by_id[tid].get("pool_slots", 1),
        }
        for tid in ids
    ]


def _date(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None
