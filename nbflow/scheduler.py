"""The scheduler: a long-running process that keeps a DAG folder's pipelines on schedule.

One loop, every ``loop_interval`` seconds or as soon as executor events arrive:

1. **Heartbeat** its job row (its lease). On SQLite a second scheduler refuses to start
   while the lease is fresh; on PostgreSQL any number cooperate.
2. **Parse** the DAG folder when it changed (:class:`nbflow.loader.FolderLoader`: each
   changed file is first imported in a subprocess with a time limit). Pipelines are
   recorded with their schedules; import errors are recorded per file; pipelines whose
   file is gone stop being scheduled (their history stays).
3. **Create due runs** for unpaused, healthy, scheduled pipelines (see
   :mod:`nbflow.store.scheduling` for why each run is created exactly once). Only the
   pipelines whose next due time has come are looked at: a heap keyed by that time.
4. **Claim runs** no live job drives, every ``loop_interval`` and at once after creating
   runs: queued runs (scheduled, triggered, backfilled, cleared) and runs whose driver's
   lease expired (a scheduler or ``nbflow run`` that was killed). ``max_active_runs`` is
   respected. A claimed run's in-flight attempts are adopted (Dask keeps them) or reset as
   ``worker_lost``.
5. **Drive** the claimed runs that got events of the shared executor or whose timer (a
   retry, a full pool, a sensor poke) is due, one step each, and notice runs cancelled
   from elsewhere (one query for all of them every ``cancel_poll``).

The work of one loop is proportional to what happened, not to the number of pipelines or
active runs (``benchmarks/schedbench.py`` drives 200 pipelines due every minute).

A database outage does not kill the loop: the failed iteration is logged, health reports
``degraded``, and the loop retries with capped backoff.
"""

from __future__ import annotations

import heapq
import logging
import signal
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy.exc import DBAPIError

from nbflow import params as nbparams
from nbflow.cancelwatch import CancelWatch
from nbflow.config import Settings
from nbflow.dag import Pipeline
from nbflow.engine import RunEngine
from nbflow.executors import get_executor
from nbflow.executors.base import Event, Executor, key_run_id
from nbflow.loader import FolderLoader, load_pipeline
from nbflow.states import RunState
from nbflow.store import Store
from nbflow.store.scheduling import task_rows
from nbflow.store.orm import utcnow

log = logging.getLogger("nbflow.scheduler")
LOOK_NOW = datetime.min.replace(tzinfo=timezone.utc)  # the due time of a pipeline not looked at since the last sync


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
        if isinstance(executor, Executor):
            self.executor = executor
        else:
            self.executor = get_executor(executor or self.settings.executor, parallelism=parallelism)
        self.clock = clock
        self.loop_interval = loop_interval
        self.parse_interval = parse_interval
        self.job_id: int | None = None
        self.engines: dict[int, RunEngine] = {}
        self._wakeups: dict[int, float] = {}  # run id -> when (monotonic) its engine's next timer is due
        self.status = "starting"
        self._last_parse = self._last_beat = self._last_cancel_check = self._last_claim = 0.0
        self._unsynced = False  # the loader saw changes the store does not have yet
        self._next_due: dict[str, datetime] = {}  # pipeline -> when to look at it again
        self._due_heap: list[tuple[datetime, str]] = []  # the same, by time; entries not in _next_due are stale
        self._elsewhere: dict[str, Pipeline | None] = {}
        self._task_rows: dict[str, tuple[Pipeline, list[dict[str, Any]]]] = {}  # pipeline -> (loaded object, its rows)
        self._stop = threading.Event()
        # inline runs attempts inside poll(): a cancellation is noticed from another thread
        self._watch = CancelWatch(self.store, self.settings.cancel_poll, lambda: list(self.engines), self._interrupt,
                                  enabled=self.executor.runs_in_poll)

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        """Take the job lease (refused on SQLite while another scheduler is alive) and start the executor."""
        exclusive = utcnow() - timedelta(seconds=self.settings.orphan_timeout) if self.store.is_sqlite else None
        self.job_id = self.store.write(lambda tx: tx.start_job("scheduler", exclusive_after=exclusive), what="register scheduler")
        self.executor.start()
        self.status = "ok"
        log.info("scheduler job %s started on %s (folder %s)", self.job_id, self.store.url, self.loader.folder)

    def stop(self) -> None:
        """Ask :meth:`serve_forever` to return after the current iteration."""
        self._stop.set()

    def close(self) -> None:
        """Release the lease (runs in flight become claimable by another scheduler) and the executor."""
        self._watch.close()
        self.executor.shutdown()
        if self.job_id is not None:
            try:
                self.store.write(lambda tx: tx.end_job(self.job_id), what="end scheduler")
            except DBAPIError as exc:
                log.warning("could not release the scheduler lease: %s", exc)
        self.status = "stopped"

    def serve_forever(self, max_loops: int | None = None) -> None:
        """Loop until :meth:`stop` (or SIGTERM/SIGINT in the main thread)."""
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: self.stop())
        backoff, loops = 0.5, 0
        try:
            while not self._stop.is_set() and (max_loops is None or loops < max_loops):
                loops += 1
                try:
                    self.loop_once()
                    backoff = 0.5
                    self.status = "ok"
                except DBAPIError as exc:
                    self.status = "degraded"
                    log.error("scheduler iteration failed (database): %s; retrying in %.1fs", exc.orig, backoff)
                    self._stop.wait(backoff)
                    backoff = min(backoff * 2, 30.0)
        finally:
            self.close()

    # -- one iteration ------------------------------------------------------------------------
    def loop_once(self) -> None:
        """Heartbeat, parse, create due runs, claim runs, and step the runs with events or timers due.

        Runs are claimed at most every ``loop_interval``, and at once after runs were created
        here (a run queued elsewhere, e.g. triggered, waits for the next claim).
        """
        now = time.monotonic()
        if now - self._last_beat >= self.settings.heartbeat:
            self._last_beat = now
            self.store.write(lambda tx: tx.heartbeat(self.job_id), what="heartbeat")
            self.store.write(lambda tx: tx.expire_jobs(self.settings.orphan_timeout), what="expire jobs")
        if now - self._last_parse >= self.parse_interval:
            self._last_parse = now
            self._unsynced = self.loader.load() or self._unsynced
        if self._unsynced:  # until a sync is written: a failed write is tried again next loop
            self.sync_pipelines()
            self._unsynced = False
        if self.create_due_runs() or now - self._last_claim >= self.loop_interval:
            self._last_claim = now
            self.claim_runs()
        with self._watch.polling():
            events = self.executor.poll(self._wait())
        self.drive(events)

    def _owner(self, key: str) -> int | None:
        """The run whose engine has the attempt ``key`` in flight: the run the key names, else
        any engine that owns it (a key of another format)."""
        run_id = key_run_id(key)
        engine = self.engines.get(run_id) if run_id is not None else None
        if engine is not None and engine.owns(key):
            return engine.run_id
        return next((run_id for run_id, e in self.engines.items() if e.owns(key)), None)

    def _interrupt(self, run_id: int) -> None:
        engine = self.engines.get(run_id)
        if engine is not None:
            engine.interrupt()

    def _wait(self) -> float:
        """Seconds to wait for executor events: until the next claim, or an engine's timer if sooner."""
        next_claim = self._last_claim + self.loop_interval
        return max(0.0, min([next_claim, *self._wakeups.values()]) - time.monotonic())

    def sync_pipelines(self) -> None:
        """Record the loaded pipelines, import errors and removed pipelines in the store."""
        loaded = {n: p for n, p in self.loader.pipelines.items() if not self.loader.broken(n)}
        definitions = {n: (p.definition(), p.fingerprint()) for n, p in loaded.items()}
        known = {r["name"]: r for r in self.store.list_pipelines()}
        gone = [n for n, r in known.items() if r["is_active"] and n not in self.loader.pipelines and r["file"]
                and str(self.loader.folder) in r["file"]]

        def write(tx: Any) -> None:
            for definition, fingerprint in definitions.values():
                tx.sync_pipeline(definition, fingerprint)
            tx.deactivate_pipelines(gone)
            tx.replace_import_errors(self.loader.errors)

        self.store.write(write, what="sync pipelines")
        self._next_due = {name: LOOK_NOW for name in self.loader.pipelines}
        self._due_heap = sorted((at, name) for name, at in self._next_due.items())  # a sorted list is a heap
        for path, (where, message) in self.loader.errors.items():
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
        tasks = self._rows_of(pipeline)
        params = nbparams.resolve_run_params(pipeline.param_defaults, {}, pipeline=pipeline.name)
        skip_locked = not self.store.is_sqlite

        def write(tx: Any) -> tuple[list[int], datetime | None]:
            row = tx.lock_pipeline(pipeline.name, skip_locked)
            if row is None or row["is_paused"] or not row["is_active"]:
                # locked by another scheduler, or paused: look again after the next parse
                return [], now + timedelta(seconds=self.parse_interval)
            dates, pointer = schedule.due(row["next_logical_date"], now, pipeline.catchup)
            # past its end date a pipeline is not looked at again (until the next sync)
            ended = pointer is None or (schedule.end is not None and pointer > schedule.end)
            next_due = None if ended else schedule.interval(pointer)[1]
            if not dates and pointer == row["next_logical_date"]:
                return [], next_due
            intervals = [schedule.interval(d) for d in dates]
            ids = tx.create_scheduled_runs(
                pipeline=pipeline.name, version_id=row["latest_version_id"], params=params, intervals=intervals,
                tasks=tasks, pointer=pointer,
            )
            return ids, next_due

        ids, next_due = self.store.write(write, what=f"schedule {pipeline.name}")
        self._look_again(pipeline.name, next_due)
        if ids:
            log.info("created %d run(s) of %s", len(ids), pipeline.name)
        return ids

    # -- driving -----------------------------------------------------------------------------------
    def claim_runs(self) -> list[int]:
        """Become the driver of runs nobody drives (respecting max_active_runs); start them."""
        live = set(self.store.live_jobs(self.settings.orphan_timeout))
        live.add(self.job_id)
        candidates = [r for r in self.store.runs_to_drive(live) if r["id"] not in self.engines]
        if not candidates:
            return []
        active = self.store.active_run_counts()
        claimed = []
        for run in candidates:
            pipeline = self._pipeline(run["pipeline"])
            if pipeline is None:
                continue
            if run["state"] == RunState.QUEUED.value:
                if active.get(run["pipeline"], 0) >= pipeline.max_active_runs:
                    continue
                active[run["pipeline"]] = active.get(run["pipeline"], 0) + 1
            if not self.store.write(lambda tx, r=run: tx.claim_run(r["id"], self.job_id, live), what="claim run"):
                continue  # another scheduler was faster
            engine = RunEngine(self.store, pipeline, run["id"], self.executor, settings=self.settings, driver_id=self.job_id)
            try:
                engine.start()
            except Exception:
                log.exception("cannot start run %s of %s", run["id"], run["pipeline"])
                self.store.write(lambda tx, r=run: tx.set_run_state(r["id"], RunState.FAILED, note="could not start"))
                continue
            self.engines[run["id"]] = engine
            self._wakeups[run["id"]] = 0.0  # stepped by the next drive (which finishes it if already done)
            claimed.append(run["id"])
        return claimed

    def _pipeline(self, name: str) -> Pipeline | None:
        """A pipeline of the DAG folder, or one defined elsewhere (``nbflow run FILE``) by its file."""
        if name in self.loader.pipelines:
            return self.loader.pipelines[name]
        if name not in self._elsewhere:
            row = self.store.get_pipeline(name)
            self._elsewhere[name] = None
            if row is not None and row["file"]:
                try:
                    self._elsewhere[name] = load_pipeline(row["file"], name)
                except Exception as exc:  # noqa: BLE001 - recorded, the run stays queued
                    log.warning("cannot load pipeline %s from %s: %s", name, row["file"], exc)
        return self._elsewhere[name]

    def drive(self, events: list[Event]) -> None:
        """Step the runs that got events or whose timer is due; finish runs that are done; honour cancellations.

        A run waiting only for executor events is not stepped (nor asked for its timers). When
        any event arrived, runs with a timer are stepped too: a task that ended may have freed a
        pool slot that one of them waits for.
        """
        routed: dict[int, list[Event]] = {}
        for event in events:
            run_id = self._owner(event.key)
            if run_id is not None:
                routed.setdefault(run_id, []).append(event)
        now = time.monotonic()
        timers = self._wakeups.keys() if routed else [r for r, at in self._wakeups.items() if at <= now]
        for run_id in sorted({*routed, *timers}):
            engine = self.engines[run_id]
            self._wakeups[run_id] = now  # stepped again next loop if this step fails
            engine.step(routed.get(run_id, []))
            if engine.done:
                engine.finish()
                del self.engines[run_id], self._wakeups[run_id]
                continue
            wait = engine.wakeup_in()
            if wait is None:
                del self._wakeups[run_id]
            else:
                self._wakeups[run_id] = time.monotonic() + wait
        if self.engines and now - self._last_cancel_check >= self.settings.cancel_poll:
            self._last_cancel_check = now
            for run_id, state in self.store.run_states(self.engines).items():
                if state == RunState.CANCELLED.value:
                    self._wakeups.pop(run_id, None)
                    self.engines.pop(run_id).cancel("cancelled by request")
