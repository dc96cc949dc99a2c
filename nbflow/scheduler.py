"""The scheduler: a long-running process that keeps a DAG folder's pipelines on schedule.

It is a :class:`~nbflow.driver.Driver` (one executor, a job lease, claimed runs stepped on
events and timers, cancellations, database outages, per-run isolation) plus cron and the DAG
folder. One loop, every ``loop_interval`` seconds or as soon as executor events arrive:

1. **Heartbeat** its job row (its lease). On SQLite a second scheduler refuses to start
   while the lease is fresh; on PostgreSQL any number cooperate.
2. **Parse** the DAG folder when it changed (:class:`nbflow.loader.FolderLoader`: each
   changed file is first imported in a subprocess with a time limit). Pipelines are
   recorded with their schedules; import errors are recorded per file; pipelines whose
   file is gone stop being scheduled (their history stays).
3. **Create due runs** for unpaused, healthy, scheduled pipelines (see
   :mod:`nbflow.store.scheduling` for why each run is created exactly once). Only the
   pipelines whose next due time has come are looked at: a heap keyed by that time.
   Pipelines scheduled on assets get a run when all their assets were updated since their
   last one (:mod:`nbflow.store.assets`), looked at when a newer asset event exists (one
   indexed query per loop) and every ``parse_interval``.
4. **Claim runs** no live job drives, every ``loop_interval`` and at once after creating
   runs: queued runs (scheduled, triggered, backfilled, cleared) and runs whose driver's
   lease expired (a scheduler or ``nbflow run`` that was killed). ``max_active_runs`` is
   respected. A claimed run's in-flight attempts are adopted (Dask keeps them) or reset as
   ``worker_lost``.
5. **Drive** the claimed runs that got events of the shared executor or whose timer (a
   retry, a full pool, a sensor poke) is due, one step each, and notice runs cancelled
   from elsewhere (one query for all of them every ``cancel_poll``): the driver's loop.

The work of one loop is proportional to what happened, not to the number of pipelines or
active runs (``benchmarks/schedbench.py`` drives 200 pipelines due every minute).

Nothing ends the loop but :meth:`Scheduler.stop` (or SIGTERM): a database outage is waited
out with capped backoff (health reports ``degraded``); an error of one run fails that run;
any other error of an iteration is logged with its traceback and the next one goes on.
"""

from __future__ import annotations

import heapq
import logging
import signal
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from nbflow import params as nbparams
from nbflow.config import Settings
from nbflow.dag import Pipeline
from nbflow.driver import MAX_OUTAGE_BACKOFF, OUTAGE_BACKOFF, Driver, StoredPipelines, is_outage
from nbflow.executors import get_executor
from nbflow.executors.base import Executor
from nbflow.loader import FolderLoader
from nbflow.store import Store
from nbflow.store.orm import utcnow
from nbflow.store.scheduling import task_rows

log = logging.getLogger("nbflow.scheduler")
LOOK_NOW = datetime.min.replace(tzinfo=UTC)  # the due time of a pipeline not looked at since the last sync


class Scheduler:
    """Schedules and drives the pipelines of ``dags_folder`` (see the module docstring)."""

    def __init__(
        self,
        *,
        dags_folder: str | None = None,
        store: Store | None = None,
        executor: str | Executor | None = None,
        parallelism: int | None = None,
        clock: Callable[[], datetime] = utcnow,
        loop_interval: float = 0.1,
        parse_interval: float = 5.0,
    ):
        self.store = store or Store()
        self.settings: Settings = self.store.settings
        self.loader = FolderLoader(dags_folder or self.settings.dags_folder, self.settings.import_timeout)
        if not isinstance(executor, Executor):
            executor = get_executor(executor or self.settings.executor, parallelism=parallelism)
        self.executor = executor
        self.driver = Driver(self.store, executor, kind="scheduler")
        self.clock = clock
        self.loop_interval = loop_interval
        self.parse_interval = parse_interval
        self._last_parse = self._last_claim = self._last_expire = 0.0
        self._unsynced = False  # the loader saw changes the store does not have yet
        self._next_due: dict[str, datetime] = {}  # pipeline -> when to look at it again
        self._due_heap: list[tuple[datetime, str]] = []  # the same, by time; entries not in _next_due are stale
        self._stored = StoredPipelines(self.store)
        self._task_rows: dict[str, tuple[Pipeline, list[dict[str, Any]]]] = {}  # pipeline -> (loaded object, its rows)
        self._stop = threading.Event()
        self._degraded = False  # the last iteration failed on the database
        self._asset_stamp: int | None = None  # the newest asset event's id when last looked at
        self._asset_looked = 0.0
        self._asset_consumers: list[str] = []  # the loaded pipelines scheduled on assets (set by each sync)

    @property
    def job_id(self) -> int | None:
        """This scheduler's job (its lease) in the store."""
        return self.driver.job_id

    @property
    def status(self) -> str:
        """``ok``, ``degraded`` (the database is away) or ``stopped``."""
        return "degraded" if self._degraded and self.driver.status == "ok" else self.driver.status

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        """Take the job lease (refused on SQLite while another scheduler is alive) and start the executor."""
        self.driver.start(exclusive=self.store.is_sqlite)
        log.info("scheduler job %s started on %s (folder %s)", self.job_id, self.store.url, self.loader.folder)

    def stop(self) -> None:
        """Ask :meth:`serve_forever` to return after the current iteration."""
        self._stop.set()

    def close(self) -> None:
        """Release the lease (runs in flight become claimable by another scheduler) and the executor."""
        self.driver.close()

    def serve_forever(self, max_loops: int | None = None) -> None:
        """Loop until :meth:`stop` (or SIGTERM/SIGINT in the main thread); see the module docstring."""
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: self.stop())
        backoff, loops = OUTAGE_BACKOFF, 0
        try:
            while not self._stop.is_set() and (max_loops is None or loops < max_loops):
                loops += 1
                try:
                    self.loop_once()
                    backoff, self._degraded = OUTAGE_BACKOFF, False
                except Exception as exc:  # noqa: BLE001 - the loop outlives any one iteration
                    self._degraded = is_outage(exc)
                    if self._degraded:
                        log.error(
                            "scheduler iteration failed (database): %s; retrying in %.1fs",
                            getattr(exc, "orig", exc),
                            backoff,
                        )
                    else:
                        log.exception("scheduler iteration failed; retrying in %.1fs", backoff)
                    self._stop.wait(backoff)
                    backoff = min(backoff * 2, MAX_OUTAGE_BACKOFF)
        finally:
            self.close()

    # -- one iteration ------------------------------------------------------------------------
    def loop_once(self) -> None:
        """Parse, create due runs, claim runs, then one turn of the driver (heartbeat, events,
        steps, cancellations).

        Runs are claimed at most every ``loop_interval``, and at once after runs were created
        here (a run queued elsewhere, e.g. triggered, waits for the next claim). While the
        database is away only the driver's turn runs (it keeps the executor's events).
        """
        if not self.driver.in_outage:
            now = time.monotonic()
            if now - self._last_expire >= self.settings.heartbeat:  # mark dead the jobs whose lease ran out
                self._last_expire = now
                self.store.write(lambda tx: tx.expire_jobs(self.settings.orphan_timeout), what="expire jobs")
            if now - self._last_parse >= self.parse_interval:
                self._last_parse = now
                self._unsynced = self.loader.load() or self._unsynced
            if self._unsynced:  # until a sync is written: a failed write is tried again next loop
                self.sync_pipelines()
                self._unsynced = False
            if self.create_due_runs() + self.create_asset_runs() or now - self._last_claim >= self.loop_interval:
                self._last_claim = now
                self.claim_runs()
        self.driver.loop_once(max(0.0, self._last_claim + self.loop_interval - time.monotonic()))

    def sync_pipelines(self) -> None:
        """Record the loaded pipelines, import errors and removed pipelines in the store."""
        loaded = {n: p for n, p in self.loader.pipelines.items() if not self.loader.broken(n)}
        definitions = {n: (p.definition(), p.fingerprint()) for n, p in loaded.items()}
        known = {r["name"]: r for r in self.store.list_pipelines()}
        gone = [
            n
            for n, r in known.items()
            if r["is_active"] and n not in self.loader.pipelines and r["file"] and str(self.loader.folder) in r["file"]
        ]

        def write(tx: Any) -> None:
            for definition, fingerprint in definitions.values():
                tx.sync_pipeline(definition, fingerprint)
            tx.deactivate_pipelines(gone)
            tx.replace_import_errors(self.loader.errors)

        self.store.write(write, what="sync pipelines")
        self._asset_consumers = [name for name, p in loaded.items() if p.assets]
        self._next_due = {name: LOOK_NOW for name in self.loader.pipelines}
        self._due_heap = sorted((at, name) for name, at in self._next_due.items())  # a sorted list is a heap
        for _path, (where, message) in self.loader.errors.items():
            log.warning("cannot load %s: %s", where, message)

    # -- scheduled runs -------------------------------------------------------------------------
    def create_due_runs(self) -> list[int]:
        """Create the runs whose data interval has ended, for the schedulable pipelines due now.

        Only pipelines whose next due time has come are looked at (no database round trip
        for the others); every pipeline is due at once after each sync of the DAG folder.
        """
        now = self.clock()
        due: list[str] = []
        while self._due_heap and self._due_heap[0][0] <= now:
            at, name = heapq.heappop(self._due_heap)
            if self._next_due.get(name) == at and name not in due:
                due.append(name)
        created: list[int] = []
        for i, name in enumerate(due):
            pipeline = self.loader.pipelines.get(name)
            if pipeline is None or pipeline.cron is None or self.loader.broken(name):
                continue  # looked at again after the next sync
            try:
                created += self._create_runs(pipeline, now)
            except BaseException:
                for rest in due[i:]:
                    self._look_again(rest, now)  # next loop, as before they were taken off the heap
                raise
        return created

    def _look_again(self, name: str, at: datetime | None) -> None:
        """Look at pipeline ``name`` again at ``at`` (None: not before the next sync)."""
        if at is None:
            self._next_due.pop(name, None)
            return
        self._next_due[name] = at
        heapq.heappush(self._due_heap, (at, name))

    def _rows_of(self, pipeline: Pipeline) -> list[dict[str, Any]]:
        """The task-instance rows of a new run of ``pipeline``, computed once per loaded pipeline object.

        (Its definition hashes every task's source: ~1 ms for 10 tasks.)
        """
        cached = self._task_rows.get(pipeline.name)
        if cached is None or cached[0] is not pipeline:
            cached = self._task_rows[pipeline.name] = (pipeline, task_rows(pipeline.definition()))
        return cached[1]

    def _create_runs(self, pipeline: Pipeline, now: datetime) -> list[int]:
        schedule = pipeline.timetable()
        assert schedule is not None  # only pipelines with a cron get here
        tasks = self._rows_of(pipeline)
        params = nbparams.resolve_for(pipeline, {})
        skip_locked = not self.store.is_sqlite

        def write(tx: Any) -> tuple[list[int], datetime | None]:
            row = tx.lock_pipeline(pipeline.name, skip_locked)
            if row is None or row["is_paused"] or not row["is_active"]:
                # locked by another scheduler, or paused: look again after the next parse
                return [], now + timedelta(seconds=self.parse_interval)
            dates, pointer = schedule.due(row["next_logical_date"], now, pipeline.catchup)
            # past its end date a pipeline is not looked at again (until the next sync)
            ended = pointer is None or (schedule.end is not None and pointer > schedule.end)
            next_due = None if ended or pointer is None else schedule.interval(pointer)[1]
            if not dates and pointer == row["next_logical_date"]:
                return [], next_due
            intervals = [schedule.interval(d) for d in dates]
            ids = tx.create_runs(
                pipeline=pipeline.name,
                version_id=row["latest_version_id"],
                params=params,
                trigger="scheduled",
                tasks=tasks,
                intervals=intervals,
                skip_existing=True,
                pointer=pointer,
                incremental=pipeline.incremental,
            )
            return ids, next_due

        ids, next_due = self.store.write(write, what=f"schedule {pipeline.name}")
        self._look_again(pipeline.name, next_due)
        if ids:
            log.info("created %d run(s) of %s", len(ids), pipeline.name)
        return ids

    # -- runs triggered by assets -----------------------------------------------------------------
    def create_asset_runs(self) -> list[int]:
        """Create a run (trigger ``asset``) of each pipeline scheduled on assets whose assets
        were all updated since its last one; looked at when a newer asset event exists (one
        query of an index) and every ``parse_interval`` (an event committed late, a run another
        scheduler was making, then gave up)."""
        consumers = [self.loader.pipelines[n] for n in self._asset_consumers if n in self.loader.pipelines]
        if not consumers:
            return []
        stamp, now = self.store.asset_event_stamp(), time.monotonic()
        if stamp == self._asset_stamp and now - self._asset_looked < self.parse_interval:
            return []
        self._asset_stamp, self._asset_looked = stamp, now
        created: list[int] = []
        for pipeline in consumers:
            run_id = self._create_asset_run(pipeline)
            if run_id is not None:
                created.append(run_id)
        return created

    def _create_asset_run(self, pipeline: Pipeline) -> int | None:
        tasks = self._rows_of(pipeline)
        params = nbparams.resolve_for(pipeline, {})
        skip_locked = not self.store.is_sqlite

        def write(tx: Any) -> int | None:
            row = tx.lock_pipeline(pipeline.name, skip_locked)
            if row is None or row["is_paused"] or not row["is_active"]:
                return None  # another scheduler looks at it now, or paused: its events wait
            return tx.create_asset_run(
                pipeline=pipeline.name,
                version_id=row["latest_version_id"],
                params=params,
                tasks=tasks,
                now=utcnow(),  # its logical date: when it is made (not the cron clock)
                incremental=pipeline.incremental,
            )

        run_id: int | None = self.store.write(write, what=f"asset run of {pipeline.name}")
        if run_id is not None:
            log.info("created run %s of %s: its assets were updated", run_id, pipeline.name)
        return run_id

    # -- driving -----------------------------------------------------------------------------------
    def claim_runs(self) -> list[int]:
        """Become the driver of runs nobody drives (respecting max_active_runs); start them."""
        return self.driver.claim_waiting(self._pipeline)

    def _pipeline(self, name: str) -> Pipeline | None:
        """A pipeline of the DAG folder, or one defined elsewhere (``nbflow run FILE``) by its file."""
        if name in self.loader.pipelines:
            return self.loader.pipelines[name]
        return self._stored(name)
