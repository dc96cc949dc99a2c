"""Drive one run: readiness, trigger rules, pools, retries, sensors, state writes.

The algorithm, over plain in-memory records mirrored to the store:

1. Each task instance keeps the number of its upstream tasks (within the run) that have
   not finished. Tasks at zero are *decided* in definition order by their trigger rule
   (:func:`nbflow.rules.decide`): run it, or mark it ``upstream_failed``/``skipped``, which
   in turn decrements its children. Total work is proportional to the edges: the cost per
   task does not grow with the size of the run.
2. A task to run is queued: compare-and-set ``pending|up_for_retry -> queued`` plus an
   attempt row, in the same transaction that checks its pool and the pipeline's
   ``max_active_tasks`` against every queued/running task in the database (so replicas
   never exceed them). A task that does not fit is parked, with a note, and tried again
   next step. Queued tasks go to the executor; sensors are poked by this process instead.
3. The driver waits in ``executor.poll`` until events arrive or something is due (a retry,
   a poke): no fixed sleep, so a finished task's children are queued in the same step.
4. Each step's writes go to the store in one transaction (``Store.write_ops`` groups them
   into ``executemany`` calls; a step queueing many tasks commits and submits every 64).
   An attempt the executor starts at once (``inline``) is written running by its queueing.
   In-memory state changes first; a compare-and-set that matches no row (someone else
   changed the task) is reconciled.
5. A failed attempt goes to ``up_for_retry`` while tries remain, else ``failed``;
   ``FailNow`` fails at once; an attempt lost with its worker: :mod:`nbflow.lostwork`.
   Callbacks run after their state change is committed. The run ends when every task
   finished (:func:`nbflow.rules.run_outcome`). Skips, branches, teardowns: :mod:`nbflow.skipping`.
6. A queued task records its fingerprint (:mod:`nbflow.incremental`); in an incremental run an up-to-date
   task ends ``cached`` instead, and its downstream tasks receive the outputs of the attempt it reuses.

The engine knows one run and nothing of the process around it: :class:`nbflow.driver.Driver`
owns the executor, the job lease, claiming, cancel checks and database outages, and drives
any number of engines with :meth:`start`, :meth:`step`, :meth:`wakeup_in` and :meth:`finish`.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from nbflow.artifacts import attempt_dir
from nbflow.callbacks import Callbacks
from nbflow.config import Settings
from nbflow.dag import Pipeline
from nbflow.exceptions import RunTakenOverError, UnknownTaskError
from nbflow.executors.base import Event, Executor, attempt_key
from nbflow.expansion import MappedTasks
from nbflow.incremental import Decider, Produced, known_outputs, produced
from nbflow.lostwork import LostWork
from nbflow.record import AttemptRecord
from nbflow.rules import retry_delay
from nbflow.sensing import SensorPoking
from nbflow.skipping import Skipping
from nbflow.states import ADOPTABLE, FAILED_STATES, FINISHED, RunState, TaskState
from nbflow.store import Store, Tx
from nbflow.store.secrets import work_item_bundle
from nbflow.tasks.base import CONTEXT_NAMES, BaseTask
from nbflow.worker import WorkItem

log = logging.getLogger("nbflow.engine")
T = TaskState
PARK_RECHECK = 0.5  # seconds between checks of a full pool
SUBMIT_BATCH = 64  # attempts queued (one transaction) and submitted together within a step


@dataclass
class TaskEvent:
    """What listeners (progress output, widgets) hear about one task."""

    run_id: int
    task_id: str
    state: TaskState
    try_number: int
    at: float
    message: str = ""
    duration: float | None = None
    hostname: str | None = None
    why: str | None = None  # an incremental run's reason: "reused from run 4, try 1", or why it runs
    mapped: int | None = None  # a mapped task expanded: how many instances it has now


Listener = Callable[[TaskEvent], None]


@dataclass
class _TI:
    task_id: str
    state: TaskState
    try_number: int
    max_tries: int
    waiting: int = 0  # upstream tasks in this run not finished yet
    next_retry_at: float | None = None
    key: str | None = None
    first_poke: float | None = None  # sensors
    next_poke: float | None = None
    poke: Future | None = None
    starting: dict[str, Any] = field(default_factory=dict)  # start of an attempt written with its queueing
    why: str | None = None  # the incremental decision's reason (written with its queueing or caching)
    lost: int = 0  # tries lost with their worker or driver (the first max_infra_retries consume no retry)
    resubmits: int = 0  # attempts resubmitted because their worker died before they started


def _dt(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC)


class RunEngine(SensorPoking, LostWork, MappedTasks, Skipping, Callbacks):
    """Drives the run ``run_id`` of ``pipeline`` on ``executor`` until every task finished."""

    def __init__(
        self,
        store: Store,
        pipeline: Pipeline,
        run_id: int,
        executor: Executor,
        *,
        settings: Settings | None = None,
        listeners: Iterable[Listener] = (),
        clock: Callable[[], float] = time.time,
        driver_id: int | None = None,
    ):
        self.store, self.pipeline, self.run_id, self.executor = store, pipeline, run_id, executor
        self.settings = settings or store.settings
        self.listeners = list(listeners)
        self.clock = clock
        self.driver_id = driver_id
        self.tis: dict[str, _TI] = {}
        self.children: dict[str, list[str]] = {}
        self.produced: dict[str, Produced] = {}  # what each successful task gives downstream: outputs, content hash
        self.decider: Decider  # made by _load, from the run's row
        self.by_key: dict[str, str] = {}
        self.state: RunState | None = None
        self._undecided: deque[str] = deque()
        self._retrying: dict[str, float] = {}  # task -> when its next try is due
        self._parked: dict[str, TaskState] = {}  # task -> state to return to (pool full)
        self._parked_from: dict[str, TaskState] = {}  # task -> state it was queued from
        self._sensors: list[_TI] = []  # task instances poked by this driver (the only ones scanned per step)
        self._pokers: ThreadPoolExecutor | None = None
        self._unfinished = 0
        self._ops: list[tuple[Callable[[Tx], Any], str | None]] = []
        self._notes: list[TaskEvent] = []
        self._submits: list[WorkItem] = []
        self._callbacks: list[tuple[Callable[..., Any], dict[str, Any]]] = []
        self.loaded = False  # the run's rows are read (start() got past its reads)
        self._stale: set[str] = set()  # tasks whose compare-and-set missed: read back from the store
        self._nonce = secrets.token_hex(4)  # of this driver's Dask keys
        self._init_mapping()

    def interrupt(self) -> None:
        """Kill this run's attempts running inside a blocked ``executor.poll()`` (from a :class:`CancelWatch`)."""
        for key in list(self.by_key):
            self.executor.interrupt(key)

    def in_flight(self) -> list[str]:
        """Executor keys of this run's attempts that have not reported their end."""
        return list(self.by_key)

    # -- driving (by nbflow.driver.Driver) --------------------------------------------------------
    def task(self, task_id: str) -> BaseTask:
        """The task object of ``task_id``: a pipeline's (a kind of nbflow.tasks) or a mapped task's instance."""
        return self.instance_tasks.get(task_id) or self.pipeline.tasks[task_id]  # type: ignore[return-value]

    def start(self) -> None:
        """Load the run, adopt or reset attempts left in flight, mark it running, take a first step.

        Once loaded (:attr:`loaded`), a start that fails writing keeps its writes like any step.
        """
        self._load()
        self.loaded = True
        fields = {"driver_id": self.driver_id} if self.driver_id is not None else {}
        self._op(lambda tx: tx.set_run_state(self.run_id, RunState.RUNNING, **fields))
        self.step([])

    @property
    def done(self) -> bool:
        """Whether every task of the run has finished."""
        return self._unfinished == 0

    def owns(self, key: str) -> bool:
        """Whether an executor event key belongs to this run."""
        return key in self.by_key

    def step(self, events: list[Event]) -> None:
        """Apply events, decide and queue what is ready, poke sensors; one transaction.

        When the database cannot be written the step's writes (and submissions, notes and
        callbacks) are kept and the error raised: the next step writes them first.
        """
        now = self.clock()
        for event in events:
            self._apply(event)
        if self._stale:
            self._reconcile()
        self._collect_pokes(now)
        for tid, back in list(self._parked.items()):
            del self._parked[tid]
            if back is T.PENDING:
                self._undecided.append(tid)
            else:
                self._retrying[tid] = now
        self._decide_ready(now)
        for tid, due in list(self._retrying.items()):
            if due <= now:
                del self._retrying[tid]
                self._queue(self.tis[tid], now)
        self._start_pokes(now)
        self._flush()

    def wakeup_in(self) -> float | None:
        """Seconds until something time-based is due (None: only executor events matter)."""
        now = self.clock()
        due = list(self._retrying.values())
        due += [ti.next_poke for ti in self._sensors if ti.next_poke is not None and ti.poke is None]
        if self._parked:
            due.append(now + PARK_RECHECK)
        if self._undecided or self._stale or self._ops:  # released by a reconcile, or writes kept from a failed step
            due.append(now)
        if any(ti.poke is not None for ti in self._sensors):
            due.append(now + 0.05)
        return max(0.0, min(due) - now) if due else None

    def finish(self) -> RunState:
        """Write the run's final state (after any writes a failed step kept), call the
        pipeline's callback, release resources. Raises, and may be called again, when the
        database cannot be written."""
        if self._ops or self._stale:
            self.step([])
        final = self._outcome()  # nbflow.skipping: teardowns left out
        self.store.write(lambda tx: tx.set_run_state(self.run_id, final), what="run end")
        self.state = final
        self._run_callback(final)  # nbflow.callbacks
        self._close()
        return final

    def cancel(self, why: str = "cancelled") -> None:
        """Stop everything in flight and mark unfinished tasks and the run cancelled."""
        for key in list(self.by_key):
            self.executor.cancel(key)
        for ti in self.tis.values():
            if ti.state not in FINISHED:
                self._set(ti, T.CANCELLED, reason="cancelled", error=why)
        self._op(lambda tx: tx.set_run_state(self.run_id, RunState.CANCELLED, note=why))
        self._flush()
        self.state = RunState.CANCELLED
        self._close()

    def _close(self) -> None:
        if self._pokers is not None:
            self._pokers.shutdown(wait=False, cancel_futures=True)
            self._pokers = None

    # -- loading --------------------------------------------------------------------------
    def _load(self) -> None:
        run = self.store.get_run(self.run_id)
        self.params = dict(run["params"])
        self.decider = Decider.for_run(self.store, self.pipeline, run, self.settings.artifact_root, self.clock)
        self.context = {"run_id": self.run_id, **{k: run[k] for k in CONTEXT_NAMES if k != "run_id"}}
        self.context["secrets"] = work_item_bundle(self.store)  # as stored: tokens, decrypted by workers
        rows = self.store.task_instances(self.run_id)
        for row in self._keep_instance_rows(rows):
            if row["task_id"] not in self.pipeline.tasks:
                raise UnknownTaskError(
                    self.pipeline.name, row["task_id"], self.pipeline.tasks, where=f"run {self.run_id}"
                )
            self.tis[row["task_id"]] = self._ti_from_row(row)
        if any(ti.try_number for ti in self.tis.values()):  # driven before: its tries lost with their worker
            for tid, lost in self.store.lost_tries(self.run_id).items():
                self.tis[tid].lost = lost
        in_run = set(self.tis)
        self._sensors = [ti for tid, ti in self.tis.items() if self.task(tid).runs_on_driver]
        self.children = {tid: [] for tid in in_run}
        order = self.pipeline.order()
        for tid in order:
            if tid in in_run:
                for up in self.pipeline.tasks[tid].upstream_ids:
                    if up in in_run:
                        self.children[up].append(tid)
        external = {u for tid in in_run for u in self.pipeline.tasks[tid].upstream_ids} - in_run
        # the outputs of the tasks that succeeded already (a cached one's: those it reuses)
        self.produced = known_outputs(self.store, rows, pipeline=self.pipeline.name, external=external)
        # Counters from the stored states; from here on only _finished() changes them.
        self._unfinished = sum(ti.state not in FINISHED for ti in self.tis.values())
        for tid in order:
            ti = self.tis.get(tid)
            if ti is None:
                continue
            ups = [u for u in self.pipeline.tasks[tid].upstream_ids if u in in_run]
            ti.waiting = sum(self.tis[u].state not in FINISHED for u in ups)
            if ti.state is T.PENDING and ti.waiting == 0:
                self._undecided.append(tid)
        self._resume_mapping()
        now = self.clock()
        for ti in self.tis.values():
            if ti.state in ADOPTABLE and ti.task_id in self.instances:  # a mapped task: its instances run
                continue
            if ti.state in ADOPTABLE:  # left behind by a driver that stopped
                self._adopt_or_reset(ti, now)
            elif ti.state is T.UP_FOR_RETRY:
                self._retrying[ti.task_id] = now

    def _ti_from_row(self, row: Any) -> _TI:
        return _TI(
            row["task_id"],
            T(row["state"]),
            row["try_number"],
            row["max_tries"],
            key=row.get("executor_key"),
            why=row.get("why"),
        )

    def _adopt_or_reset(self, ti: _TI, now: float) -> None:
        task = self.task(ti.task_id)
        if task.runs_on_driver:  # a sensor: just keep poking
            ti.first_poke, ti.next_poke = now, now
            return
        folder = attempt_dir(self.settings.artifact_root, self.pipeline.name, self.run_id, ti.task_id, ti.try_number)
        if ti.key and self.executor.adopt(ti.key, folder):
            self.by_key[ti.key] = ti.task_id
            return
        # The driver died, not the task: a lost-worker try (consumes no retry up to max_infra_retries)
        self._worker_lost(ti, Event("lost", ti.key or "", now, message="the process driving this run stopped"))

    # -- writing --------------------------------------------------------------------------
    def _flush(self) -> None:
        for event in self.executor.start_now(self._submits) if self._submits else ():
            self._started_at_once(event)
        ops, self._ops = self._ops, []
        submits, self._submits = self._submits, []
        notes, self._notes = self._notes, []
        callbacks, self._callbacks = self._callbacks, []
        if ops:
            try:
                results = self.store.write_ops([op for op, _ in ops], what=f"run {self.run_id} state update")
            except Exception:
                # The database is unreachable even after retries: keep this step's writes,
                # submissions and notifications, and try them again at the next step.
                self._ops, self._submits = ops + self._ops, submits + self._submits
                self._notes, self._callbacks = notes + self._notes, callbacks + self._callbacks
                raise
            parked = {tid for res, (_, tid) in zip(results, ops) if isinstance(res, str)}
            stale = {tid for res, (_, tid) in zip(results, ops) if res is False and tid is not None} - parked
            for res, (_, tid) in zip(results, ops):
                if isinstance(res, str):
                    assert tid is not None  # only a task's queueing is refused (with the reason)
                    self._park(tid, res)
            self._stale |= stale
            drop = parked | stale
            submits = [s for s in submits if s.task_id not in drop]
            notes = [n for n in notes if not (n.task_id in parked and n.state is T.QUEUED)]
        if submits:
            self.executor.submit_many(submits)
        for note in notes:
            for listener in self.listeners:
                listener(note)
        for fn, ctx in callbacks:
            self._call_back(fn, ctx)

    def _op(self, fn: Callable[[Tx], Any], task_id: str | None = None) -> None:
        self._ops.append((fn, task_id))

    def _note(self, ti: _TI, message: str = "", duration: float | None = None, hostname: str | None = None) -> None:
        if self.listeners:
            self._notes.append(
                TaskEvent(
                    self.run_id, ti.task_id, ti.state, ti.try_number, self.clock(), message, duration, hostname, ti.why
                )
            )

    def _set(self, ti: _TI, to: TaskState, expect_try: int | None = None, **fields: Any) -> None:
        """Change a task's state in memory now and in the store at the end of the step."""
        was_finished = ti.state in FINISHED
        ti.state = to
        run_id, tid = self.run_id, ti.task_id
        self._op(lambda tx: tx.set_task_state(run_id, tid, to, expect_try=expect_try, **fields), tid)
        self._note(ti, fields.get("error") or "", fields.get("duration"), fields.get("hostname"))
        self._task_callback(ti, to, fields)  # nbflow.callbacks: on_success, on_failure, on_retry
        if to in FINISHED and not was_finished:
            self._finished(ti)

    def _finished(self, ti: _TI) -> None:
        """The one bookkeeping of a task that reached a final state, whoever decided it (this
        engine, or the store when a compare-and-set found the row finished elsewhere): nothing
        of it is in flight or due any more, and its children may be decided."""
        self._unfinished -= 1
        ti.next_poke = None
        self._retrying.pop(ti.task_id, None)
        self._parked.pop(ti.task_id, None)
        if ti.key:
            self.by_key.pop(ti.key, None)
        for child in self.children.get(ti.task_id, ()):
            c = self.tis[child]
            c.waiting -= 1
            if c.waiting == 0 and c.state is T.PENDING:
                self._undecided.append(child)
        self._instance_finished(ti.task_id)

    # -- deciding and queueing --------------------------------------------------------------
    def _decide_ready(self, now: float) -> None:
        while self._undecided:
            tid = self._undecided.popleft()
            ti = self.tis[tid]
            if ti.state is not T.PENDING:
                continue
            task = self.task(tid)
            states = self._upstream_states(task)
            verdict = self._verdict(task, states)
            if verdict is None and task.mapping is not None:
                self._expand(ti, now)
            elif verdict is None:
                self._run_or_reuse(ti, now)
            else:
                failed = [u for u, state in states.items() if state in FAILED_STATES]
                why = f"upstream failed: {', '.join(sorted(failed))}" if failed else f"trigger rule {task.trigger_rule}"
                self._set(ti, verdict, error=why, end_date=_dt(now))

    def _run_or_reuse(self, ti: _TI, now: float) -> None:
        """Ask the decider; end the task ``cached`` with the outputs it reuses, or queue it."""

        def state_of(up: str) -> TaskState | None:
            return self.tis[up].state if up in self.tis else None

        decision = self.decider.decide_ready(self.task(ti.task_id), self.params, self.context, state_of, self.produced)
        fields = decision.fields()
        ti.why = fields["why"]
        if decision.given is None:
            return self._queue(ti, now, decision=fields)
        self.produced[ti.task_id] = decision.given
        self._set(ti, T.CACHED, end_date=_dt(now), reason=None, error=None, note=None, **fields)

    def _queue(self, ti: _TI, now: float, decision: dict[str, Any] | None = None) -> None:
        task = self.task(ti.task_id)
        ti.try_number += 1
        back = T.UP_FOR_RETRY if ti.state is T.UP_FOR_RETRY else T.PENDING
        try_number, run_id, tid = ti.try_number, self.run_id, ti.task_id
        # run ids restart per database: the driver's nonce keeps two databases sharing a Dask
        # cluster from ever sharing a key (stored, so a restarted driver still finds it). Dask
        # groups keys by the part before the first "-" and a number: "pipeline.task" (its
        # per-prefix duration estimates then carry over from run to run).
        key = attempt_key(self.pipeline.name, tid, run_id, try_number, self._nonce)
        ti.key, ti.state, ti.next_retry_at = key, T.QUEUED, None
        self._parked_from[tid] = back
        limits: dict[str, Any] = {"pool": task.pool, "pool_slots": task.pool_slots}
        if self.pipeline.max_active_tasks:
            limits["pipeline_limit"] = (self.pipeline.name, self.pipeline.max_active_tasks)
        starting: dict[str, Any] = {}  # filled by _started_at_once
        ti.starting = starting
        queued_at = datetime.fromtimestamp(now, UTC)
        self._op(
            lambda tx: tx.queue_attempt(
                run_id, tid, try_number, key, queued_at, started=starting, decision=decision, **limits
            ),
            tid,
        )
        self._note(ti)
        if task.runs_on_driver:
            ti.first_poke, ti.next_poke = now, now
            return
        self.by_key[key] = tid
        self._submits.append(self._work_item(ti, task))
        if len(self._submits) >= SUBMIT_BATCH:  # a large step starts its first tasks before queueing the last
            self._flush()

    def _work_item(self, ti: _TI, task: BaseTask) -> WorkItem:
        return WorkItem(
            key=ti.key or "",
            pipeline=self.pipeline.name,
            run_id=self.run_id,
            task_id=ti.task_id,
            try_number=ti.try_number,
            task=task,
            upstream={u: self._upstream_item(u) for u in task.upstream_ids},
            params=self.params,
            context=self.context,
            artifact_root=self.settings.artifact_root,
            kill_grace=self.settings.kill_grace,
            queue=task.queue,
            resources=task.resources,
            sys_path=[str(self.pipeline.base_dir)],
            durable_result=self.executor.durable_results,
        )

    def _started_at_once(self, event: Event) -> None:
        """An attempt the executor starts as soon as it is submitted: written running by its queueing."""
        ti = self.tis[self.by_key[event.key]]
        ti.starting.update(start_date=_dt(event.at), hostname=event.hostname, pid=event.pid)
        ti.state = T.RUNNING
        self._note(ti, hostname=event.hostname)

    def _park(self, tid: str, why: str) -> None:
        """Undo a queueing the store refused (pool or max_active_tasks full); retry next step."""
        ti = self.tis[tid]
        self.by_key.pop(ti.key or "", None)
        ti.try_number -= 1
        ti.state = self._parked_from.get(tid, T.PENDING)
        ti.key = ti.next_poke = ti.first_poke = None
        self._parked[tid] = ti.state
        self._op(lambda tx: tx.set_task_note(self.run_id, tid, why))

    # -- events ------------------------------------------------------------------------------
    def _apply(self, event: Event) -> None:
        tid = self.by_key.get(event.key)
        ti = self.tis.get(tid) if tid else None
        if tid is None or ti is None or ti.key != event.key:
            log.info("ignoring %s event for %s: not the current attempt", event.kind, event.key)
            return
        if event.kind == "note":
            run_id, note = self.run_id, event.message
            self._op(lambda tx: tx.set_task_note(run_id, tid, note))
            self._note(ti, note)
        elif event.kind == "started":
            if ti.state is not T.QUEUED:
                return
            started, try_number, run_id = _dt(event.at), ti.try_number, self.run_id
            self._set(
                ti,
                T.RUNNING,
                expect_try=try_number,
                start_date=started,
                hostname=event.hostname,
                pid=event.pid,
                note=None,
            )
            at = {"start_date": started, "hostname": event.hostname, "pid": event.pid}
            self._op(lambda tx: tx.update_attempt(run_id, tid, try_number, state="running", **at))
        elif event.kind == "finished":
            assert event.result is not None, "a finished event carries the attempt's record"
            self._apply_result(ti, event.result)
        elif event.reason in (None, "worker_lost"):  # lost with its worker
            self._worker_lost(ti, event)
        else:  # lost otherwise (cancelled)
            self._fail_attempt(ti, event.reason, event.message, event.at)

    def _apply_result(self, ti: _TI, res: AttemptRecord) -> None:
        if res.reason == "cancelled":
            self._fail_attempt(ti, "cancelled", res.message, res.ended_at)
            return
        if self._skip_or_branch(ti, res):  # skipped (nbflow.skipping); a branch skips what it did not choose
            return
        if res.ok:
            self.produced[ti.task_id] = produced(res.artifacts, self.run_id, ti.try_number)
        row, fields = res.to_row(), res.task_fields()
        run_id, tid, try_number = self.run_id, ti.task_id, ti.try_number
        artifacts, metrics, assets = list(res.artifacts), list(res.metrics), list(res.assets) if res.ok else []

        def record(tx: Tx, state: str) -> None:
            tx.update_attempt(run_id, tid, try_number, state=state, **row)
            tx.add_outputs(run_id, tid, try_number, artifacts, metrics, assets)  # assets: events only on success

        if res.ok:
            fields["output_digest"] = self.produced[tid].digest
            self._set(ti, T.SUCCESS, expect_try=try_number, reason=None, error=None, note=None, **fields)
            self._op(lambda tx: record(tx, "success"))
        else:
            state = self._after_failure(ti, res.reason, res.message, res.ended_at, **fields)
            self._op(lambda tx: record(tx, state))

    def _fail_attempt(self, ti: _TI, reason: str, message: str, at: float, **where: Any) -> None:
        """An attempt that will never report (worker lost, cancelled, driver died); ``where``: its hostname and pid."""
        run_id, tid, try_number = self.run_id, ti.task_id, ti.try_number
        if reason == "cancelled":
            self._set(ti, T.CANCELLED, reason=reason, error=message, end_date=_dt(at))
            state = "cancelled"
        else:
            state = self._after_failure(ti, reason, message, at, end_date=_dt(at), **where)
        fields = {"reason": reason, "message": message, "end_date": _dt(at), **where}
        self._op(lambda tx: tx.update_attempt(run_id, tid, try_number, state=state, **fields))

    def _after_failure(self, ti: _TI, reason: str | None, message: str, at: float, **fields: Any) -> str:
        task = self.task(ti.task_id)
        error = message or reason or "failed"
        if reason != "fail_now" and ti.try_number < ti.max_tries:
            ti.next_retry_at = at + retry_delay(task, ti.try_number)
            self._retrying[ti.task_id] = ti.next_retry_at
            self._set(
                ti,
                T.UP_FOR_RETRY,
                expect_try=ti.try_number,
                reason=reason,
                error=error,
                next_retry_at=_dt(ti.next_retry_at),
                **fields,
            )
            return T.UP_FOR_RETRY.value
        if reason == "worker_lost" and ti.lost >= ti.try_number:
            # every try died with its worker: the task itself likely kills workers (Dask's KilledWorker)
            reason = "killed_worker"
            error = f"the worker died during each of {ti.try_number} tries; last: {error}"
        self._set(ti, T.FAILED, expect_try=ti.try_number, reason=reason, error=error, **fields)
        return T.FAILED.value

    def _reconcile(self) -> None:
        """Adopt the store's state for tasks whose compare-and-set found the row changed."""
        rows = {r["task_id"]: r for r in self.store.task_instances(self.run_id) if r["task_id"] in self._stale}
        self._stale.clear()
        for tid, row in rows.items():
            ti = self.tis[tid]
            stored = T(row["state"])
            log.warning("task %s changed under the engine: %s in memory, %s in the store", tid, ti.state, stored)
            if ti.key and stored in FINISHED:
                self.executor.cancel(ti.key)
            was_finished = ti.state in FINISHED
            if was_finished and stored not in FINISHED:  # nothing un-finishes a task of a driven run
                raise RunTakenOverError(
                    f"run {self.run_id}: task {tid} is {stored} (try {row['try_number']}) in the store, finished here: "
                    "another driver drives the run"
                )
            ti.state, ti.try_number = stored, row["try_number"]
            if stored in FINISHED and not was_finished:
                self._finished(ti)
