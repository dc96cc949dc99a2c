"""The metadata store: the only code that writes nbflow's tables.

Writes happen in :meth:`Store.write`, one transaction per call, retried as a whole on a
transient error. Every state change is a compare-and-set checked against the transition
table of :mod:`nbflow.states`: ``UPDATE ... WHERE state IN (allowed sources) [AND
try_number = ?]``. A write that matches no row (a duplicate report, a task cancelled
meanwhile) changes nothing, is logged, and returns False; it never raises.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, RowMapping, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from nbflow.config import Settings, get_settings
from nbflow.exceptions import RunNotFoundError
from nbflow.states import FINISHED, RunState, TaskState, run_sources
from nbflow.store import batching, orm, statements
from nbflow.store.manual import ManualTx
from nbflow.store.mapping import MappingTx, in_map_order
from nbflow.store.orm import utcnow
from nbflow.store.reuse import ReuseReads
from nbflow.store.scheduling import SchedulingReads, SchedulingTx
from nbflow.store.session import ensure_schema, get_engine, retrying
from nbflow.store.sweeps import SweepReads, SweepTx
from nbflow.store.workers import WorkerReads

log = logging.getLogger("nbflow.store")
T = TypeVar("T")

P, V, R, TI, A, ART, POOL = (
    orm.pipelines,
    orm.pipeline_versions,
    orm.runs,
    orm.task_instances,
    orm.task_attempts,
    orm.artifacts,
    orm.pools,
)
_TI_SHOWN = [c for c in TI.c if c.name != "cache_parts"]
BATCH_MIN_OPS = 8  # fewer operations are written one by one (grouping would cost more than it saves)


class Tx(SchedulingTx, ManualTx, SweepTx, MappingTx):
    """Write operations inside one transaction (get one from :meth:`Store.write`)."""

    def __init__(self, conn: Connection):
        self.conn = conn

    # -- runs ------------------------------------------------------------------------------
    def create_runs(
        self,
        *,
        pipeline: str,
        version_id: int | None,
        params: dict[str, Any],
        trigger: str,
        tasks: Sequence[dict[str, Any]],
        intervals: Sequence[tuple[datetime, datetime]],
        executor: str | None = None,
        skip_existing: bool = False,
        pointer: datetime | None = None,
        incremental: bool = False,
        force: Sequence[str] | None = None,
        idempotency_key: str | None = None,
    ) -> list[int]:
        """The one way runs are made: a queued run per data interval ``(start, end)`` (its
        logical date is ``start``), each with a pending task instance per entry of ``tasks``
        (``task_id``, ``kind``, ``queue``, ``max_tries``, ``fingerprint``, ``pool``, ``pool_slots``,
        from :func:`~nbflow.store.scheduling.task_rows`). Returns the new run ids.

        Runs are unique per (pipeline, logical date): with ``skip_existing`` (scheduled runs,
        backfills) a date that has its run already is skipped (each insert in a savepoint);
        without, the ``IntegrityError`` is raised (a duplicate trigger). ``pointer`` moves the
        pipeline's next scheduled logical date in the same transaction. ``incremental`` runs reuse
        what is up to date, except the ``force``d tasks (:mod:`nbflow.incremental`).
        ``idempotency_key`` is stored on the run (unique per pipeline: a second run with it raises
        ``IntegrityError``).
        """
        created = []
        run = {
            "pipeline": pipeline,
            "version_id": version_id,
            "params": params,
            "trigger": trigger,
            "executor": executor,
            "incremental": incremental,
            "force": list(force) if force else None,
            "idempotency_key": idempotency_key,
        }
        for start, end in intervals:
            if not skip_existing:
                created.append(self._insert_run(run, tasks, start, end))
                continue
            try:
                with self.conn.begin_nested():
                    created.append(self._insert_run(run, tasks, start, end))
            except IntegrityError:
                log.info("run of %s for %s already exists", pipeline, start.isoformat())
        if pointer is not None:
            self.conn.execute(update(P).where(P.c.name == pipeline).values(next_logical_date=pointer))
        return created

    def _insert_run(self, run: dict[str, Any], tasks: Sequence[dict[str, Any]], start: datetime, end: datetime) -> int:
        now = utcnow()
        run_id = self.conn.execute(
            insert(R).values(
                state=RunState.QUEUED.value,
                logical_date=start,
                data_interval_start=start,
                data_interval_end=end,
                created_at=now,
                **run,
            )
        ).inserted_primary_key[0]
        if tasks:
            self.conn.execute(
                insert(TI),
                [
                    {
                        "run_id": run_id,
                        "task_id": t["task_id"],
                        "kind": t["kind"],
                        "queue": t.get("queue", "default"),
                        "max_tries": t.get("max_tries", 1),
                        "fingerprint": t.get("fingerprint"),
                        "pool": t.get("pool"),
                        "pool_slots": t.get("pool_slots", 1),
                        "state": t.get("state", TaskState.PENDING.value),
                        "try_number": 0,
                        "updated_at": now,
                    }
                    for t in tasks
                ],
            )
        return int(run_id)

    def set_run_state(self, run_id: int, to: RunState, **fields: Any) -> bool:
        """Compare-and-set a run's state; sets ``started_at``/``ended_at`` as fitting."""
        to = RunState(to)
        now = utcnow()
        if to is RunState.RUNNING:  # a re-run (cleared tasks) keeps when the run first started
            fields.setdefault("started_at", func.coalesce(R.c.started_at, now))
        elif to in (RunState.SUCCESS, RunState.FAILED, RunState.CANCELLED):
            fields.setdefault("ended_at", now)
        elif to is RunState.QUEUED:
            fields.setdefault("ended_at", None)
        sources = [s.value for s in run_sources(to)]
        res = self.conn.execute(
            update(R).where(R.c.id == run_id, R.c.state.in_(sources)).values(state=to.value, **fields)
        )
        if res.rowcount != 1:
            log.info("run %s -> %s ignored: not in %s", run_id, to.value, sources)
            return False
        return True

    # -- task instances ------------------------------------------------------------------
    def set_task_state(
        self,
        run_id: int,
        task_id: str,
        to: TaskState,
        *,
        expect_try: int | None = None,
        via: TaskState | None = None,
        **fields: Any,
    ) -> bool:
        """Compare-and-set one task instance's state (and other columns in the same write).

        ``expect_try`` additionally requires the row to be at that try number, so a late
        report of an older attempt changes nothing. ``via``: two transitions in one write,
        checked against the sources of ``via`` (``to`` must be allowed from ``via``).
        """
        to = TaskState(to)
        stmt = statements.task_cas(to, tuple(sorted(fields)), expect_try is not None, via)
        values = {f"v_{k}": v for k, v in fields.items()}
        res = self.conn.execute(
            stmt, {"w_run_id": run_id, "w_task_id": task_id, "w_try": expect_try, "v_updated_at": utcnow(), **values}
        )
        if res.rowcount != 1:
            log.info("task %s/%s -> %s ignored: state or try changed (try %s)", run_id, task_id, to.value, expect_try)
            return False
        return True

    def queue_attempt(
        self,
        run_id: int,
        task_id: str,
        try_number: int,
        executor_key: str,
        queued_at: datetime,
        *,
        pool: str | None = None,
        pool_slots: int = 1,
        pipeline_limit: tuple[str, int] | None = None,
        started: dict[str, Any] | None = None,
        decision: dict[str, Any] | None = None,
    ) -> bool | str:
        """Move a task to ``queued`` for try ``try_number`` and insert that attempt's row;
        with ``started`` (``start_date``, ``hostname``, ``pid``) straight on to ``running``;
        ``decision``: the task instance's fingerprint columns (``why``, ``cache_key``, ...).

        With ``pool`` (or ``pipeline_limit`` = (pipeline, max_active_tasks)) the occupied
        slots of every queued/running task in the database are counted first, under a row
        lock of the pool (pipeline) so concurrent schedulers see each other's writes; when
        it does not fit, nothing is written and the reason is returned as a string.
        """
        if pool is not None:
            slots = self.conn.execute(select(POOL.c.slots).where(POOL.c.name == pool).with_for_update()).scalar()
            if slots is None:
                return f"waiting: pool '{pool}' does not exist (create it: nbflow pools set {pool} SLOTS)"
            used = self.conn.execute(
                select(func.coalesce(func.sum(TI.c.pool_slots), 0)).where(TI.c.pool == pool, *statements.HOLDS_SLOT)
            ).scalar()
            if used + pool_slots > slots:
                return f"waiting for a slot in pool '{pool}' ({used} of {slots} in use)"
        if pipeline_limit is not None:
            name, limit = pipeline_limit
            self.conn.execute(select(P.c.name).where(P.c.name == name).with_for_update()).first()
            active = self.conn.execute(
                select(func.count())
                .select_from(TI.join(R, R.c.id == TI.c.run_id))
                .where(R.c.pipeline == name, *statements.HOLDS_SLOT)
            ).scalar()
            if active >= limit:
                return f"waiting: pipeline '{name}' already runs {active} tasks (max_active_tasks={limit})"
        state = TaskState.RUNNING if started else TaskState.QUEUED
        ok = self.set_task_state(
            run_id,
            task_id,
            state,
            via=TaskState.QUEUED if started else None,
            expect_try=try_number - 1,
            try_number=try_number,
            executor_key=executor_key,
            next_retry_at=None,
            pool=pool,
            pool_slots=pool_slots,
            note=None,
            **(started or {}),
            **(decision or {}),
        )
        if ok:
            row = {"run_id": run_id, "task_id": task_id, "try_number": try_number, "state": state.value}
            row.update(executor_key=executor_key, queued_at=queued_at, **(started or {}))
            self.conn.execute(statements.INSERT_ATTEMPT, row)
        return ok

    def set_max_tries(self, run_id: int, task_id: str, max_tries: int) -> None:
        """Give a task instance more tries (an attempt lost to infrastructure does not count)."""
        self.conn.execute(update(TI).where(TI.c.run_id == run_id, TI.c.task_id == task_id).values(max_tries=max_tries))

    def rekey_attempt(self, run_id: int, task_id: str, try_number: int, executor_key: str, note: str) -> None:
        """A queued attempt resubmitted under a new executor key (its worker died before it started)."""
        self.conn.execute(
            update(TI)
            .where(TI.c.run_id == run_id, TI.c.task_id == task_id, TI.c.try_number == try_number)
            .values(executor_key=executor_key, note=note, updated_at=utcnow())
        )
        self.update_attempt(run_id, task_id, try_number, executor_key=executor_key)

    def set_task_note(self, run_id: int, task_id: str, note: str | None) -> bool:
        """Say why a task waits (shown by `nbflow tasks`); not a state change."""
        self.conn.execute(
            update(TI).where(TI.c.run_id == run_id, TI.c.task_id == task_id).values(note=note, updated_at=utcnow())
        )
        return True

    def update_attempt(self, run_id: int, task_id: str, try_number: int, **fields: Any) -> None:
        """Set columns of one attempt row while it is queued or running (a finished attempt's row
        is final: a late report of it changes nothing)."""
        stmt = statements.attempt_update(tuple(sorted(fields)))
        self.conn.execute(
            stmt,
            {"w_run_id": run_id, "w_task_id": task_id, "w_try": try_number, **{f"v_{k}": v for k, v in fields.items()}},
        )

    def add_artifacts(self, run_id: int, task_id: str, try_number: int, refs: Iterable[dict[str, Any]]) -> None:
        """Record artifacts an attempt stored."""
        rows = [
            {"run_id": run_id, "task_id": task_id, "try_number": try_number, "created_at": utcnow(), **ref}
            for ref in refs
        ]
        if rows:
            self.conn.execute(statements.INSERT_ARTIFACT, rows)

    def abort_run(self, run_id: int, note: str) -> None:
        """Fail a run its driver could not drive on (an error of nbflow's own): the run ``failed``
        with ``note``, its unfinished task instances ``cancelled`` with reason ``driver_error``."""
        unfinished = [s.value for s in TaskState if s not in FINISHED]
        self.conn.execute(
            update(TI)
            .where(TI.c.run_id == run_id, TI.c.state.in_(unfinished))
            .values(state=TaskState.CANCELLED.value, reason="driver_error", error=note, updated_at=utcnow())
        )
        self.set_run_state(run_id, RunState.FAILED, note=note)


class Store(SchedulingReads, ReuseReads, SweepReads, WorkerReads):
    """Reads and writes of one metadata database (SQLite by default, or PostgreSQL)."""

    def __init__(
        self,
        url: str | None = None,
        *,
        settings: Settings | None = None,
        upgrade: bool = True,
        engine: Engine | None = None,
    ):
        self.settings = settings or get_settings()
        self.url = url or self.settings.db_url
        self.engine: Engine = engine or get_engine(self.url)
        if upgrade:
            ensure_schema(self.engine)

    def write(self, fn: Callable[[Tx], T], *, what: str = "database write", retries: int | None = None) -> T:
        """Run ``fn(tx)`` in one write transaction, retried as a whole on transient errors
        (``retries`` times, default the ``db_retries`` setting; 0 for a quick probe)."""

        def attempt() -> T:
            with self.engine.connect().execution_options(nbflow_write=True) as conn:
                with conn.begin():
                    return fn(Tx(conn))

        return retrying(attempt, what=what, retries=self.settings.db_retries if retries is None else retries)

    def write_ops(self, ops: Sequence[Callable[[Tx], Any]], *, what: str = "database write") -> list[Any]:
        """Run ``ops`` in one transaction, statements of one shape together (see :mod:`.batching`)."""
        plan = batching.record(ops, Tx) if len(ops) >= BATCH_MIN_OPS else None
        if plan is not None:
            try:
                return self.write(lambda tx: batching.apply(tx.conn, plan), what=what)
            except batching.Mismatch as exc:
                log.info("%s: %s; writing one by one", what, exc)
        return self.write(lambda tx: [op(tx) for op in ops], what=what)

    def _all(self, stmt: Any) -> list[RowMapping]:
        def attempt() -> list[RowMapping]:
            with self.engine.connect() as conn:
                return list(conn.execute(stmt).mappings())

        return retrying(attempt, what="database read", retries=self.settings.db_retries)

    # -- reads -----------------------------------------------------------------------------
    def list_pipelines(self) -> list[RowMapping]:
        """All pipelines, by name."""
        return self._all(select(P).order_by(P.c.name))

    def get_pipeline(self, name: str) -> RowMapping | None:
        """One pipeline row, or None."""
        rows = self._all(select(P).where(P.c.name == name))
        return rows[0] if rows else None

    def get_version(self, version_id: int) -> RowMapping | None:
        """One pipeline version (with its stored definition), or None."""
        rows = self._all(select(V).where(V.c.id == version_id))
        return rows[0] if rows else None

    @property
    def is_sqlite(self) -> bool:
        """Whether the database is SQLite (one scheduler only, no row locks)."""
        return self.engine.dialect.name == "sqlite"

    def get_run(self, run_id: int) -> RowMapping:
        """One run; :class:`RunNotFoundError` when there is none."""
        rows = self._all(select(R).where(R.c.id == run_id))
        if not rows:
            raise RunNotFoundError(f"no run with id {run_id}", hint="`nbflow runs` lists the runs")
        return rows[0]

    def list_runs(
        self, pipeline: str | None = None, *, state: str | None = None, limit: int = 20, offset: int = 0
    ) -> list[RowMapping]:
        """Runs, newest first."""
        stmt = select(R).order_by(R.c.id.desc()).limit(limit).offset(offset)
        if pipeline:
            stmt = stmt.where(R.c.pipeline == pipeline)
        if state:
            stmt = stmt.where(R.c.state == state)
        return self._all(stmt)

    def task_instances(self, run_id: int) -> list[RowMapping]:
        """A run's task instances, in creation order, instances after their mapped task (without ``cache_parts``: the parts of a
        fingerprint are read only to explain a change, by :meth:`previous_successes`)."""
        return in_map_order(self._all(select(*_TI_SHOWN).where(TI.c.run_id == run_id).order_by(TI.c.id)))

    def attempts(self, run_id: int, task_id: str | None = None) -> list[RowMapping]:
        """A run's attempts (of one task), in order."""
        stmt = select(A).where(A.c.run_id == run_id).order_by(A.c.task_id, A.c.try_number)
        if task_id is not None:
            stmt = stmt.where(A.c.task_id == task_id)
        return self._all(stmt)

    def lost_tries(self, run_id: int) -> dict[str, int]:
        """Per task of a run, its attempts lost with their worker or driver (reason ``worker_lost``)."""
        stmt = select(A.c.task_id, func.count().label("n")).where(A.c.run_id == run_id, A.c.reason == "worker_lost")
        return {r["task_id"]: r["n"] for r in self._all(stmt.group_by(A.c.task_id))}

    def artifacts(self, run_id: int, task_id: str | None = None, try_number: int | None = None) -> list[RowMapping]:
        """Artifacts of a run (of one task, of one try)."""
        stmt = select(ART).where(ART.c.run_id == run_id).order_by(ART.c.id)
        if task_id is not None:
            stmt = stmt.where(ART.c.task_id == task_id)
        if try_number is not None:
            stmt = stmt.where(ART.c.try_number == try_number)
        return self._all(stmt)

    def run_for_date(self, pipeline: str, logical_date: datetime | None) -> RowMapping | None:
        """The run of ``pipeline`` for ``logical_date`` (the newest, if the date is None)."""
        stmt = select(R).where(R.c.pipeline == pipeline).order_by(R.c.id.desc()).limit(1)
        if logical_date is not None:
            stmt = stmt.where(R.c.logical_date == logical_date)
        rows = self._all(stmt)
        return rows[0] if rows else None

    def run_for_key(self, pipeline: str, idempotency_key: str) -> RowMapping | None:
        """The run of ``pipeline`` a trigger with this Idempotency-Key made, or None."""
        rows = self._all(select(R).where(R.c.pipeline == pipeline, R.c.idempotency_key == idempotency_key))
        return rows[0] if rows else None

    def count_runs(self, pipeline: str | None = None) -> int:
        """How many runs there are (of one pipeline)."""
        stmt = select(func.count().label("n")).select_from(R)
        if pipeline:
            stmt = stmt.where(R.c.pipeline == pipeline)
        return int(self._all(stmt)[0]["n"])
