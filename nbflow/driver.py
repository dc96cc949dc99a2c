"""The driver: runs driven over one executor by one process, each isolated from the others.

``nbflow run``, ``%nbflow run``, ``pipeline.run()``, ``nbflow drive`` and the scheduler are
all a :class:`Driver` (the scheduler adds cron and the DAG folder). A driver owns:

* **the executor's life**: started with the driver, shut down with it;
* **a job lease**: a ``jobs`` row whose heartbeat it renews every ``heartbeat`` seconds; a run
  is *claimed* (``runs.driver_id``) by one live job at a time, and runs of a job whose lease
  expired are claimed by another driver, which adopts or resets their attempts;
* **the loop**: wait for executor events or the next timer, route each event to the run its
  key names, step the runs that got events or whose timer (a retry, a full pool, a sensor
  poke) is due, finish the runs that are done;
* **cancellations from elsewhere** (``nbflow cancel``, the web UI): every ``cancel_poll``
  seconds one query reads the state of every driven run; while an executor runs an attempt
  inside ``poll()`` (``inline``) a :class:`~nbflow.cancelwatch.CancelWatch` reads them from
  a thread of its own;
* **database outages**: a transient database error (the store has retried for a few seconds
  already) does not end anything. The driver reports ``degraded``, waits with capped
  backoff, keeps the events that arrive meanwhile (attempts that finish during the outage),
  and writes everything when the database answers again; after an outage longer than the
  lease it first checks that its runs are still its own;
* **per-run isolation**: any other exception while starting, stepping or finishing one run is
  logged with its traceback, that run is failed with the error (its attempts in flight
  stopped) and the other runs go on.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from sqlalchemy.exc import DBAPIError

from nbflow.cancelwatch import CancelWatch
from nbflow.config import Settings
from nbflow.dag import Pipeline
from nbflow.engine import Listener, RunEngine
from nbflow.exceptions import RunTakenOverError
from nbflow.executors.base import Event, Executor, key_run_id
from nbflow.loader import load_pipeline
from nbflow.sla import SlaWatch
from nbflow.states import RunState
from nbflow.store import Store
from nbflow.store.session import is_transient

__all__ = ["Driver", "StoredPipelines", "is_outage", "OUTAGE_BACKOFF", "MAX_OUTAGE_BACKOFF"]

log = logging.getLogger("nbflow.driver")
OUTAGE_BACKOFF = 0.5  # seconds before the first retry after a database outage; doubled each time
MAX_OUTAGE_BACKOFF = 10.0  # ... up to this


def is_outage(exc: BaseException) -> bool:
    """Whether ``exc`` says the database is unreachable or locked (worth waiting out)."""
    return isinstance(exc, DBAPIError) and is_transient(exc)


@dataclass
class _Run:
    """A run this driver claimed: its pipeline, its engine once started, its pending events."""

    pipeline: Pipeline
    listeners: list[Listener]
    engine: RunEngine | None = None
    inbox: list[Event] = field(default_factory=list)
    wake_at: float | None = 0.0  # monotonic time its engine wants a step; None: only events


class StoredPipelines:
    """Pipelines by name, loaded from the file the store recorded for them (once per name)."""

    def __init__(self, store: Store):
        self.store = store
        self._loaded: dict[str, Pipeline | None] = {}

    def __call__(self, name: str) -> Pipeline | None:
        if name not in self._loaded:
            row = self.store.get_pipeline(name)
            self._loaded[name] = None
            if row is not None and row["file"]:
                try:
                    self._loaded[name] = load_pipeline(row["file"], name)
                except Exception as exc:  # noqa: BLE001 - its runs stay queued, the reason logged
                    log.warning("cannot load pipeline %s from %s: %s", name, row["file"], exc)
        return self._loaded[name]


class Driver:
    """Drives claimed runs over ``executor`` until they end (see the module docstring)."""

    def __init__(
        self,
        store: Store,
        executor: Executor,
        *,
        kind: str = "runner",
        settings: Settings | None = None,
        clock: Callable[[], float] = time.time,
    ):
        self.store, self.executor, self.kind = store, executor, kind
        self.settings = settings or store.settings
        self.clock = clock
        self.job_id: int | None = None
        self.status = "starting"  # ok | degraded | stopped
        self.runs: dict[int, _Run] = {}
        self.ended: dict[int, RunState] = {}  # runs this driver brought to an end
        self._last_beat = self._last_cancel_check = 0.0
        self._outage_since: float | None = None  # monotonic start of the current outage
        self._retry_at = 0.0  # monotonic time of the next database try during an outage
        self._backoff = OUTAGE_BACKOFF
        self._sla = SlaWatch(store, clock)  # Pipeline(sla=...): checked each turn and when a run ends
        self._watch = CancelWatch(
            self.store,
            self.settings.cancel_poll,
            lambda: list(self.runs),
            self._interrupt,
            enabled=executor.runs_in_poll,
        )

    # -- lifecycle --------------------------------------------------------------------------
    def start(self, *, exclusive: bool = False) -> None:
        """Take a job lease and start the executor. ``exclusive``: refuse while another live job
        of this kind holds a lease (one SQLite scheduler, one background driver per home)."""
        from datetime import timedelta

        from nbflow.store.orm import utcnow

        after = utcnow() - timedelta(seconds=self.settings.orphan_timeout) if exclusive else None
        self.job_id = self.store.write(
            lambda tx: tx.start_job(self.kind, exclusive_after=after), what=f"register {self.kind}"
        )
        self._last_beat = time.monotonic()
        try:
            self.executor.start()
        except BaseException:
            self._end_job()
            raise
        self.status = "ok"

    def close(self) -> None:
        """Stop the executor (what is still in flight is stopped) and release the lease."""
        self._watch.close()
        try:
            self.executor.shutdown()
        finally:
            self._end_job()
            self.status = "stopped"

    def hand_over(self) -> bool:
        """An idle driver about to exit gives up its lease, then looks once more for runs that
        no live job drives: True (and the lease taken again) when there are some."""
        self._end_job()
        self.job_id = None
        if not self.store.runs_to_drive(set(self.store.live_jobs(self.settings.orphan_timeout)), limit=1):
            return False
        self.job_id = self.store.write(lambda tx: tx.start_job(self.kind), what=f"register {self.kind}")
        return True

    @property
    def lease(self) -> int:
        """The job id of this driver's lease (taken by :meth:`start`, before it claims or beats)."""
        assert self.job_id is not None, "the driver holds no lease: start() it first"
        return self.job_id

    def _end_job(self) -> None:
        job_id = self.job_id
        if job_id is None:
            return
        try:
            self.store.write(lambda tx: tx.end_job(job_id), what=f"end {self.kind}")
        except DBAPIError as exc:  # the lease expires by itself
            log.warning("could not release the lease of job %s: %s", self.job_id, exc)

    # -- runs ---------------------------------------------------------------------------------
    def claim(self, pipeline: Pipeline, run_id: int, *, listeners: Iterable[Listener] = ()) -> bool:
        """Become the driver of a queued or orphaned run and start it; False when a live job
        drives it already. A run that cannot start is failed with the reason (and True)."""
        live = set(self.store.live_jobs(self.settings.orphan_timeout))
        live.add(self.lease)
        if not self.store.write(lambda tx: tx.claim_run(run_id, self.lease, live), what="claim run"):
            return False
        self.runs[run_id] = _Run(pipeline, list(listeners))
        self._start_run(run_id)
        return True

    def claim_waiting(self, pipeline_for: Callable[[str], Pipeline | None]) -> list[int]:
        """Claim the runs no live job drives (queued, or left by a driver that died), oldest
        logical date first, respecting each pipeline's ``max_active_runs``; returns those claimed.

        ``pipeline_for(name)`` gives the pipeline object of a run (None: it cannot be loaded
        here now; the run is left for later).
        """
        live = set(self.store.live_jobs(self.settings.orphan_timeout))
        live.add(self.lease)
        candidates = [r for r in self.store.runs_to_drive(live) if r["id"] not in self.runs]
        if not candidates:
            return []
        active = self.store.active_run_counts()
        claimed = []
        for run in candidates:
            pipeline = pipeline_for(run["pipeline"])
            if pipeline is None:
                continue
            if run["state"] == RunState.QUEUED.value:
                if active.get(run["pipeline"], 0) >= pipeline.max_active_runs:
                    continue
                active[run["pipeline"]] = active.get(run["pipeline"], 0) + 1
            if self.claim(pipeline, run["id"]):  # False: another driver was faster
                claimed.append(run["id"])
        return claimed

    def _start_run(self, run_id: int) -> None:
        """Load the run into a new engine and take its first step. If the database fails while
        the engine loads, it is made anew next time; once loaded, it keeps what it could not write."""
        run = self.runs[run_id]
        engine = RunEngine(
            self.store,
            run.pipeline,
            run_id,
            self.executor,
            settings=self.settings,
            listeners=run.listeners,
            clock=self.clock,
            driver_id=self.job_id,
        )
        with self._isolated(run_id, "starting"):
            try:
                engine.start()
            finally:
                run.engine = engine if engine.loaded else None
            run.wake_at = 0.0  # stepped by the next loop (which finishes it if done)

    @property
    def in_outage(self) -> bool:
        """Whether the database has been unreachable since the last try."""
        return self._outage_since is not None

    @property
    def busy(self) -> bool:
        """Whether any claimed run has not ended yet."""
        return bool(self.runs)

    def owns(self, run_id: int) -> bool:
        """Whether this driver drives ``run_id`` now."""
        return run_id in self.runs

    # -- the loop ------------------------------------------------------------------------------
    def loop_once(self, max_wait: float) -> None:
        """One turn: heartbeat, wait up to ``max_wait`` seconds for executor events or a timer,
        step the runs concerned, finish those that are done, notice cancellations.

        Database outages are ridden out here (see the module docstring); this never raises
        for one, and never for an error of one run.
        """
        now = time.monotonic()
        if self._outage_since is not None and now < self._retry_at:
            self._collect(self.executor.poll(min(max_wait, self._retry_at - now)))
            return
        try:
            if self._outage_since is not None or now - self._last_beat >= self.settings.heartbeat:
                self.heartbeat(retries=0 if self._outage_since is not None else None)
            if self._outage_since is not None:
                self._recovered()
            with self._watch.polling():
                events = self.executor.poll(self._wait(max_wait))
            self._collect(events)
            self._step_due()
            self._check_cancels()
            self._sla.check_all((run_id, run.pipeline) for run_id, run in self.runs.items())
        except Exception as exc:
            if not is_outage(exc):
                raise
            self._outage(exc)

    def heartbeat(self, retries: int | None = None) -> None:
        """Renew the job lease now."""
        self.store.write(lambda tx: tx.heartbeat(self.lease), what="heartbeat", retries=retries)
        self._last_beat = time.monotonic()

    def drive(self, run_ids: Iterable[int] | None = None) -> dict[int, RunState]:
        """Loop until the given runs (default: every claimed run) have ended; returns their final
        states. Ctrl-C cancels them (and is raised again)."""
        wanted = set(self.runs if run_ids is None else run_ids)
        # What exists now (the pipelines, the store) lives as long as the drive: frozen, the
        # collector's full passes stop rescanning it (a 10,000-task run spent a third of its
        # time there, more per task the larger the run). Thawed when the drive ends.
        gc.freeze()
        try:
            while wanted & set(self.runs):
                self.loop_once(self.settings.cancel_poll)
        except KeyboardInterrupt:
            self.cancel_all("interrupted")
            raise
        finally:
            gc.unfreeze()
        return {run_id: self.ended[run_id] for run_id in wanted if run_id in self.ended}

    def cancel_all(self, why: str) -> None:
        """Cancel every run this driver drives now (Ctrl-C)."""
        for run_id in list(self.runs):
            self._cancel(run_id, why)

    def _wait(self, max_wait: float) -> float:
        now = time.monotonic()
        due = [r.wake_at for r in self.runs.values() if r.wake_at is not None]
        if any(r.inbox for r in self.runs.values()):
            due.append(now)
        return max(0.0, min([now + max_wait, *due]) - now)

    def _collect(self, events: list[Event]) -> None:
        """File each event with the run its key names (any run that owns the key, else)."""
        for event in events:
            run_id = key_run_id(event.key)
            run = self.runs.get(run_id) if run_id is not None else None
            if run is None or run.engine is None or not run.engine.owns(event.key):
                run_id = next(
                    (r for r, x in self.runs.items() if x.engine is not None and x.engine.owns(event.key)), None
                )
                run = self.runs.get(run_id) if run_id is not None else None
            if run is None:
                log.debug("ignoring %s event for %s: no run of this driver owns it", event.kind, event.key)
                continue
            run.inbox.append(event)

    def _step_due(self) -> None:
        """Step the runs with events or a due timer; when any event arrived, every run with a
        timer too (a task that ended may have freed a pool slot one of them waits for)."""
        now = time.monotonic()
        anything = any(r.inbox for r in self.runs.values())
        for run_id in sorted(self.runs):
            run = self.runs[run_id]
            if run.engine is None:  # the database failed while it loaded: start it again
                self._start_run(run_id)
                continue
            if not run.inbox and (run.wake_at is None or (run.wake_at > now and not anything)):
                continue
            events, run.inbox = run.inbox, []
            run.wake_at = now  # stepped again next loop if this step fails
            with self._isolated(run_id, "stepping"):
                run.engine.step(events)
                if run.engine.done:
                    self._finish(run_id)
                    continue
                wait = run.engine.wakeup_in()
                run.wake_at = None if wait is None else time.monotonic() + wait

    def _finish(self, run_id: int) -> None:
        run = self.runs[run_id]
        assert run.engine is not None
        self.ended[run_id] = run.engine.finish()
        self._sla.check(run_id, run.pipeline, ended=True)
        del self.runs[run_id]

    def _check_cancels(self) -> None:
        now = time.monotonic()
        if not self.runs or now - self._last_cancel_check < self.settings.cancel_poll:
            return
        self._last_cancel_check = now
        for run_id, state in self.store.run_states(self.runs).items():
            if state == RunState.CANCELLED.value and run_id in self.runs:
                self._cancel(run_id, "cancelled by request")

    def _cancel(self, run_id: int, why: str) -> None:
        run = self.runs.get(run_id)
        if run is None:
            return
        if run.engine is not None:
            with self._isolated(run_id, "cancelling"):
                run.engine.cancel(why)
        if run_id in self.runs:
            del self.runs[run_id]
            self.ended[run_id] = RunState.CANCELLED

    def _interrupt(self, run_id: int) -> None:
        run = self.runs.get(run_id)
        if run is not None and run.engine is not None:
            run.engine.interrupt()

    # -- outages and failures --------------------------------------------------------------------
    def _outage(self, exc: BaseException) -> None:
        now = time.monotonic()
        if self._outage_since is None:
            self._outage_since = now
            self._backoff = OUTAGE_BACKOFF
            log.error(
                "database unreachable (%s): %d run(s) go on; their results are kept and written when it is "
                "back (trying again with backoff, every %.0fs at most)",
                str(getattr(exc, "orig", exc)).strip(),
                len(self.runs),
                MAX_OUTAGE_BACKOFF,
            )
        else:
            self._backoff = min(self._backoff * 2, MAX_OUTAGE_BACKOFF)
        self.status = "degraded"
        self._retry_at = now + self._backoff

    def _recovered(self) -> None:
        """The database answers again (the heartbeat went through): check ownership after a
        long outage, then let every run write what it kept."""
        assert self._outage_since is not None
        lasted = time.monotonic() - self._outage_since
        if lasted >= self.settings.orphan_timeout and self.runs:
            drivers = self.store.run_drivers(self.runs)
            for run_id, driver in drivers.items():
                if driver != self.job_id and run_id in self.runs:
                    log.warning("run %s is driven by job %s since the outage; leaving it to that job", run_id, driver)
                    del self.runs[run_id]
        log.warning("database reachable again after %.1fs; writing what was kept", lasted)
        self._outage_since = None
        self.status = "ok"
        for run in self.runs.values():
            run.wake_at = 0.0

    @contextlib.contextmanager
    def _isolated(self, run_id: int, doing: str) -> Iterator[None]:
        """A block whose error (not an outage, which goes up to :meth:`loop_once`) fails only run ``run_id``."""
        try:
            yield
        except RunTakenOverError as exc:  # not ours to fail: let the other driver go on
            log.warning("%s; stopped driving it", exc)
            self.runs.pop(run_id, None)
        except Exception as exc:
            if is_outage(exc):
                raise
            self._fail(run_id, doing, exc)

    def _fail(self, run_id: int, doing: str, exc: Exception) -> None:
        """An error of nbflow's own while driving one run: stop its attempts, fail it, go on."""
        log.error("run %s failed: error while %s it\n%s", run_id, doing, "".join(traceback.format_exception(exc)))
        run = self.runs.pop(run_id, None)
        if run is not None and run.engine is not None:
            for key in run.engine.in_flight():
                try:
                    self.executor.cancel(key)
                except Exception:  # noqa: BLE001 - best effort; the run is failed either way
                    log.exception("could not stop attempt %s of run %s", key, run_id)
        note = f"nbflow error while driving the run: {type(exc).__name__}: {exc}"
        self.ended[run_id] = RunState.FAILED
        try:
            self.store.write(lambda tx: tx.abort_run(run_id, note), what="fail run")
        except Exception:  # noqa: BLE001 - the run's lease expires; another driver will find it
            log.exception("could not record the failure of run %s", run_id)
