"""Drive one run to its end: readiness, trigger rules, retries, state writes.

The algorithm, over plain in-memory records mirrored to the store:

1. Each task instance keeps the number of its upstream tasks (within the run) that have
   not finished. Tasks at zero are *decided* in definition order: its trigger rule over
   the upstream states says run it, mark it ``upstream_failed``, or ``skipped``. Deciding
   a task finished (not run) decrements its children in turn.
2. Tasks to run are queued (compare-and-set ``pending|up_for_retry -> queued`` plus an
   attempt row) and handed to the executor.
3. The engine blocks in ``executor.poll`` until events arrive (or the next retry is due):
   no fixed sleep, so a finished task's children are queued in the same step.
4. Each step's writes (events applied, decisions, queued attempts) go to the store in one
   transaction. In-memory state is updated first; a compare-and-set that matches no row
   (someone else changed the task) is reconciled from the store.
5. A failed attempt goes to ``up_for_retry`` while tries remain (delay
   ``retry_delay * 2**(try-1)`` with backoff, capped by ``max_retry_delay``), else to
   ``failed``; ``FailNow`` fails at once. The run ends when every task has finished:
   ``failed`` when a leaf task failed or had an upstream failure, else ``success``.

The CLI, the notebook magics and (later) the scheduler all drive runs through
:class:`RunEngine`; there is no second path.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from nbflow.config import Settings, get_settings
from nbflow.dag import Pipeline
from nbflow.exceptions import NbflowError, UnknownTaskError
from nbflow.executors.base import Event, Executor
from nbflow.artifacts import attempt_dir
from nbflow.states import ADOPTABLE, FAILED_STATES, FINISHED, RunState, TaskState
from nbflow.store import Store, Tx
from nbflow.worker import AttemptResult, WorkItem

log = logging.getLogger("nbflow.engine")
T = TaskState


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
    started_at: float | None = None


def retry_delay(task: Any, try_number: int) -> float:
    """Seconds to wait after failed try ``try_number`` (1-based) before the next one."""
    delay = float(task.retry_delay)
    if task.retry_backoff:
        delay *= 2 ** (try_number - 1)
    return min(delay, float(task.max_retry_delay)) if task.max_retry_delay else delay


def decide(rule: str, states: Iterable[TaskState]) -> TaskState | None:
    """Trigger rule over finished upstream states: None to run, else the state to set."""
    states = list(states)
    failed = sum(s in FAILED_STATES for s in states)
    skipped = sum(s is T.SKIPPED for s in states)
    success = sum(s is T.SUCCESS for s in states)
    if rule == "all_success":
        return T.UPSTREAM_FAILED if failed else (T.SKIPPED if skipped else None)
    if rule == "all_failed":
        return None if failed == len(states) else T.SKIPPED
    if rule in ("all_done", "always"):
        return None
    if rule == "one_success":
        if success or not states:
            return None
        return T.SKIPPED if skipped == len(states) else T.UPSTREAM_FAILED
    if rule == "one_failed":
        return None if failed else T.SKIPPED
    if rule == "none_failed":
        return T.UPSTREAM_FAILED if failed else None
    raise NbflowError(f"unknown trigger rule {rule!r}")


def _dt(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, timezone.utc)


class RunEngine:
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
    ):
        self.store, self.pipeline, self.run_id, self.executor = store, pipeline, run_id, executor
        self.settings = settings or store.settings
        self.listeners = list(listeners)
        self.clock = clock
        self.tis: dict[str, _TI] = {}
        self.children: dict[str, list[str]] = {}
        self.outputs: dict[str, list[dict[str, Any]]] = {}
        self.by_key: dict[str, str] = {}
        self._undecided: deque[str] = deque()
        self._unfinished = 0
        self._ops: list[tuple[Callable[[Tx], bool], str | None]] = []
        self._notes: list[TaskEvent] = []
        self._submits: list[WorkItem] = []
        self.lost_tries: dict[str, int] = {}

    # -- public ---------------------------------------------------------------------------
    def run(self) -> RunState:
        """Drive the run to its end and return its final state (Ctrl-C cancels it).

        Every ``settings.cancel_poll`` seconds the run's row is read: a run cancelled from
        elsewhere (``nbflow cancel``, the web UI) stops here, killing what is in flight.
        """
        self._load()
        self._op(lambda tx: tx.set_run_state(self.run_id, RunState.RUNNING))
        try:
            events: list[Event] = []
            checked = self.clock()
            while True:
                self._step(events)
                if self._unfinished == 0:
                    break
                timeout = self._poll_timeout()
                poll = self.settings.cancel_poll if timeout is None else min(timeout, self.settings.cancel_poll)
                events = self.executor.poll(poll)
                if self.clock() - checked >= self.settings.cancel_poll:
                    checked = self.clock()
                    if self.store.get_run(self.run_id)["state"] == RunState.CANCELLED.value:
                        self.cancel("cancelled by request")
                        return RunState.CANCELLED
        except KeyboardInterrupt:
            self.cancel("interrupted")
            raise
        return self._finish()

    def cancel(self, why: str = "cancelled") -> None:
        """Stop everything in flight and mark unfinished tasks and the run cancelled."""
        for key in list(self.by_key):
            self.executor.cancel(key)
        for ti in self.tis.values():
            if ti.state not in FINISHED:
                self._set(ti, T.CANCELLED, reason="cancelled", error=why)
        self._op(lambda tx: tx.set_run_state(self.run_id, RunState.CANCELLED, note=why))
        self._flush()

    # -- loading --------------------------------------------------------------------------
    def _load(self) -> None:
        run = self.store.get_run(self.run_id)
        self.params = dict(run["params"])
        rows = self.store.task_instances(self.run_id)
        for row in rows:
            if row["task_id"] not in self.pipeline.tasks:
                raise UnknownTaskError(
                    self.pipeline.name, row["task_id"], self.pipeline.tasks, where=f"run {self.run_id}"
                )
            self.tis[row["task_id"]] = _TI(
                row["task_id"], T(row["state"]), row["try_number"], row["max_tries"], key=row["executor_key"]
            )
        in_run = set(self.tis)
        self.children = {tid: [] for tid in in_run}
        for tid in self.pipeline.order():
            if tid in in_run:
                for up in self.pipeline.tasks[tid].upstream_ids:
                    if up in in_run:
                        self.children[up].append(tid)
        self._load_outputs(in_run)
        now = self.clock()
        for ti in self.tis.values():
            if ti.state in ADOPTABLE:  # left behind by a driver that stopped
                folder = attempt_dir(self.settings.artifact_root, self.pipeline.name, self.run_id, ti.task_id, ti.try_number)
                if ti.key and self.executor.adopt(ti.key, folder):
                    self.by_key[ti.key] = ti.task_id
                    continue
                self._fail_attempt(ti, "worker_lost", "the process driving this run stopped during the attempt", now)
        # counters from scratch (the resets above already adjusted them partially)
        self._unfinished = sum(ti.state not in FINISHED for ti in self.tis.values())
        self._undecided.clear()
        for tid in self.pipeline.order():
            ti = self.tis.get(tid)
            if ti is None:
                continue
            ups = [u for u in self.pipeline.tasks[tid].upstream_ids if u in in_run]
            ti.waiting = sum(self.tis[u].state not in FINISHED for u in ups)
            if ti.state is T.PENDING and ti.waiting == 0:
                self._undecided.append(tid)

    def _load_outputs(self, in_run: set[str]) -> None:
        """Artifacts of tasks already successful in this run, and of upstreams outside it."""
        done = [tid for tid, ti in self.tis.items() if ti.state is T.SUCCESS]
        if done:
            for art in self.store.artifacts(self.run_id):
                if art["task_id"] in done and art["try_number"] == self.tis[art["task_id"]].try_number:
                    self.outputs.setdefault(art["task_id"], []).append(_ref(art))
        external = {u for tid in in_run for u in self.pipeline.tasks[tid].upstream_ids} - in_run
        for up in external:
            row = self.store.latest_success(self.pipeline.name, up)
            if row is None:
                raise NbflowError(
                    f"task '{up}' is upstream of the selected tasks but has never succeeded",
                    where=f"pipeline '{self.pipeline.name}'",
                    hint=f"run it first, or include it: --only {up} ...",
                )
            self.outputs[up] = [_ref(a) for a in self.store.artifacts(row["run_id"], up, row["try_number"])]

    # -- one step ---------------------------------------------------------------------------
    def _step(self, events: list[Event]) -> None:
        now = self.clock()
        for event in events:
            self._apply(event)
        self._decide_ready(now)
        self._queue_due_retries(now)
        self._flush()

    def _flush(self) -> None:
        ops, self._ops = self._ops, []
        submits, self._submits = self._submits, []
        notes, self._notes = self._notes, []
        if ops:
            results = self.store.write(lambda tx: [op(tx) for op, _ in ops], what=f"run {self.run_id} state update")
            stale = {tid for ok, (_, tid) in zip(results, ops) if ok is False and tid is not None}
            if stale:
                self._reconcile(stale)
                submits = [s for s in submits if s.task_id not in stale]
        for item in submits:
            self.executor.submit(item)
        for note in notes:
            for listener in self.listeners:
                listener(note)

    def _op(self, fn: Callable[[Tx], bool], task_id: str | None = None) -> None:
        self._ops.append((fn, task_id))

    def _note(self, ti: _TI, message: str = "", duration: float | None = None, hostname: str | None = None) -> None:
        if self.listeners:
            self._notes.append(
                TaskEvent(self.run_id, ti.task_id, ti.state, ti.try_number, self.clock(), message, duration, hostname)
            )

    def _set(self, ti: _TI, to: TaskState, expect_try: int | None = None, **fields: Any) -> None:
        """Change a task's state in memory now and in the store at the end of the step."""
        was_finished = ti.state in FINISHED
        ti.state = to
        run_id, tid = self.run_id, ti.task_id
        self._op(lambda tx: tx.set_task_state(run_id, tid, to, expect_try=expect_try, **fields), tid)
        self._note(ti, fields.get("error") or "", fields.get("duration"), fields.get("hostname"))
        if to in FINISHED and not was_finished:
            self._unfinished -= 1
            if ti.key:
                self.by_key.pop(ti.key, None)
            for child in self.children.get(tid, ()):
                c = self.tis[child]
                c.waiting -= 1
                if c.waiting == 0 and c.state is T.PENDING:
                    self._undecided.append(child)

    def _decide_ready(self, now: float) -> None:
        while self._undecided:
            tid = self._undecided.popleft()
            ti = self.tis[tid]
            if ti.state is not T.PENDING:
                continue
            task = self.pipeline.tasks[tid]
            ups = [self.tis[u].state for u in task.upstream_ids if u in self.tis]
            verdict = decide(task.trigger_rule, ups)
            if verdict is None:
                self._queue(ti, now)
            else:
                failed = [u for u in task.upstream_ids if u in self.tis and self.tis[u].state in FAILED_STATES]
                why = f"upstream failed: {', '.join(sorted(failed))}" if failed else f"trigger rule {task.trigger_rule}"
                self._set(ti, verdict, error=why, end_date=_dt(now))

    def _queue_due_retries(self, now: float) -> None:
        for ti in self.tis.values():
            if ti.state is T.UP_FOR_RETRY and ti.next_retry_at is not None and ti.next_retry_at <= now:
                self._queue(ti, now)

    def _queue(self, ti: _TI, now: float) -> None:
        task = self.pipeline.tasks[ti.task_id]
        ti.try_number += 1
        try_number, run_id, tid = ti.try_number, self.run_id, ti.task_id
        key = f"{self.pipeline.name}/{run_id}/{tid}/{try_number}"
        ti.key, ti.state, ti.next_retry_at = key, T.QUEUED, None
        self.by_key[key] = tid
        self._op(lambda tx: tx.queue_attempt(run_id, tid, try_number, key, _dt(now)), tid)
        self._note(ti)
        self._submits.append(
            WorkItem(
                key=key,
                pipeline=self.pipeline.name,
                run_id=run_id,
                task_id=tid,
                try_number=try_number,
                task=task,
                upstream={u: (self.pipeline.tasks[u].value_style, self.outputs.get(u, [])) for u in task.upstream_ids},
                params=self.params,
                artifact_root=self.settings.artifact_root,
                kill_grace=self.settings.kill_grace,
                queue=task.queue,
                resources=task.resources,
                sys_path=[str(self.pipeline.base_dir)],
                durable_result=self.executor.durable_results,
            )
        )

    # -- events ------------------------------------------------------------------------------
    def _apply(self, event: Event) -> None:
        tid = self.by_key.get(event.key)
        ti = self.tis.get(tid) if tid else None
        if ti is None or ti.key != event.key:
            log.info("ignoring %s event for %s: not the current attempt", event.kind, event.key)
            return
        if event.kind == "note":
            run_id, note = self.run_id, event.message
            self._op(lambda tx: tx.set_task_note(run_id, tid, note))
            self._note(ti, note)
        elif event.kind == "started":
            if ti.state is not T.QUEUED:
                return
            ti.started_at = event.at
            started, try_number = _dt(event.at), ti.try_number
            self._set(
                ti, T.RUNNING, expect_try=try_number, start_date=started, hostname=event.hostname, pid=event.pid, note=None
            )
            run_id = self.run_id
            self._op(
                lambda tx: tx.update_attempt(
                    run_id, tid, try_number, state="running", start_date=started, hostname=event.hostname, pid=event.pid
                )
                or True
            )
        elif event.kind == "finished":
            self._apply_result(ti, event.result)
        else:  # lost
            if event.reason in (None, "worker_lost"):
                self.lost_tries[ti.task_id] = self.lost_tries.get(ti.task_id, 0) + 1
            self._fail_attempt(ti, event.reason or "worker_lost", event.message, event.at)

    def _apply_result(self, ti: _TI, res: AttemptResult) -> None:
        if res.reason == "cancelled":
            self._fail_attempt(ti, "cancelled", res.message, res.ended_at)
            return
        if res.ok:
            self.outputs[ti.task_id] = res.artifacts
        fields = {
            "end_date": _dt(res.ended_at),
            "duration": res.duration,
            "log_uri": res.log_uri,
            "output_uri": res.output_uri,
            "hostname": res.hostname,
            "pid": res.pid,
        }
        start = _dt(res.started_at)
        attempt = {
            "start_date": start,
            "reason": res.reason,
            "message": res.message or None,
            "ename": res.ename,
            "evalue": res.evalue,
            "traceback": res.traceback,
            "cell_index": res.cell_index,
            "exec_count": res.exec_count,
            **fields,
        }
        attempt.pop("duration")
        run_id, tid, try_number = self.run_id, ti.task_id, ti.try_number
        artifacts = list(res.artifacts)

        def record(tx: Tx, state: str) -> bool:
            tx.update_attempt(run_id, tid, try_number, state=state, **attempt)
            tx.add_artifacts(run_id, tid, try_number, artifacts)
            return True

        if res.ok:
            self._set(ti, T.SUCCESS, expect_try=try_number, start_date=start, reason=None, error=None, **fields)
            self._op(lambda tx: record(tx, "success"))
        else:
            state = self._after_failure(ti, res.reason, res.message, res.ended_at, start_date=start, **fields)
            self._op(lambda tx: record(tx, state))

    def _fail_attempt(self, ti: _TI, reason: str, message: str, at: float) -> None:
        """An attempt that will never report (worker lost, cancelled, driver died)."""
        run_id, tid, try_number = self.run_id, ti.task_id, ti.try_number
        if reason == "cancelled":
            self._set(ti, T.CANCELLED, reason=reason, error=message, end_date=_dt(at))
            state = "cancelled"
        else:
            state = self._after_failure(ti, reason, message, at, end_date=_dt(at))
        self._op(
            lambda tx: tx.update_attempt(run_id, tid, try_number, state=state, reason=reason, message=message, end_date=_dt(at))
            or True
        )

    def _after_failure(self, ti: _TI, reason: str | None, message: str, at: float, **fields: Any) -> str:
        task = self.pipeline.tasks[ti.task_id]
        error = message or reason or "failed"
        if reason != "fail_now" and ti.try_number < ti.max_tries:
            ti.next_retry_at = at + retry_delay(task, ti.try_number)
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
        if reason == "worker_lost" and self.lost_tries.get(ti.task_id) == ti.try_number:
            # every try died with its worker: the task itself likely kills workers (Dask's KilledWorker)
            reason = "killed_worker"
            error = f"the worker died during each of {ti.try_number} tries; last: {error}"
        self._set(ti, T.FAILED, expect_try=ti.try_number, reason=reason, error=error, **fields)
        return T.FAILED.value

    def _reconcile(self, task_ids: set[str]) -> None:
        """Adopt the store's state for tasks whose compare-and-set found the row changed."""
        rows = {r["task_id"]: r for r in self.store.task_instances(self.run_id) if r["task_id"] in task_ids}
        for tid, row in rows.items():
            ti = self.tis[tid]
            log.warning("task %s changed under the engine: %s in memory, %s in the store", tid, ti.state, row["state"])
            if ti.key and T(row["state"]) in FINISHED:
                self.executor.cancel(ti.key)
            was_finished = ti.state in FINISHED
            ti.state, ti.try_number = T(row["state"]), row["try_number"]
            if ti.state in FINISHED and not was_finished:
                self._unfinished -= 1

    def _poll_timeout(self) -> float | None:
        due = [ti.next_retry_at for ti in self.tis.values() if ti.state is T.UP_FOR_RETRY and ti.next_retry_at]
        if due:
            return max(0.0, min(due) - self.clock())
        if not self.by_key:
            raise NbflowError(f"run {self.run_id} has unfinished tasks but nothing in flight (engine bug)")
        return None

    def _finish(self) -> RunState:
        states = {tid: ti.state for tid, ti in self.tis.items()}
        leaves = [tid for tid in states if not self.children.get(tid)]
        if any(s is T.CANCELLED for s in states.values()):
            final = RunState.CANCELLED
        elif any(states[tid] in FAILED_STATES for tid in leaves):
            final = RunState.FAILED
        else:
            final = RunState.SUCCESS
        self.store.write(lambda tx: tx.set_run_state(self.run_id, final), what="run end")
        return final


def _ref(row: Any) -> dict[str, Any]:
    return {"name": row["name"], "uri": row["uri"], "type": row["type"], "size": row["size"]}
