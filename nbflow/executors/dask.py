"""``dask``: attempts as tasks of a ``distributed`` cluster, on this machine or many.

Without an address (``--dask-address`` / ``NBFLOW_DASK_ADDRESS``) an embedded
``LocalCluster`` sized to the machine is started and torn down with the executor.

* **Keys.** Each attempt is submitted with the key ``{pipeline}.{task}-{run}-{try}-{random}``
  (:func:`~nbflow.executors.base.attempt_key`) and ``pure=False``: two tries or two runs
  never share a key, and a restarted driver can find its work by key. Dask groups keys by
  ``{pipeline}.{task}``: its duration estimates carry over from run to run, and its
  scheduler, which never forgets a key prefix, keeps one per task instead of one per
  attempt. Submissions are ``fire_and_forget``: the cluster finishes an attempt
  even if the driver dies, and the worker writes ``result.json`` into the attempt folder,
  from which a restarted driver learns how it ended (:meth:`DaskExecutor.adopt`).
* **Retries belong to nbflow.** The embedded cluster has ``allowed_failures=0``: a task whose
  worker dies fails at once (``KilledWorker``), not re-run behind nbflow's back; a lost attempt
  is ``started`` when its folder has the ``started.json`` the worker writes first (see
  :mod:`nbflow.lostwork`). An external cluster's setting is its owner's: read, never changed,
  and a warning when it is not 0 (Dask may re-run an attempt before nbflow sees the loss).
* **Queues.** A task's ``queue="gpu"`` becomes the worker resource ``queue-gpu``;
  ``nbflow worker --queue gpu`` advertises it. A cluster whose workers advertise no queue
  at all (plain ``dask worker``, the embedded cluster) runs every queue. ``resources=``
  amounts (``{"GPU": 1}``) are passed to Dask as they are. While a submitted attempt has not
  started, its note says why no worker can take it and the ``nbflow worker`` command that
  would (:mod:`nbflow.executors.waiting`), looked at again every ``RENOTE_INTERVAL``.
* **Code.** Tasks are cloudpickled by value (pipeline files are registered for that), so
  workers need nbflow and the libraries the tasks import, not the pipeline file. Modules
  a pipeline imports from its own folder must be importable on the workers (a shared
  folder, or installed); the folder is put on the worker's ``sys.path``.
* **Events.** A worker publishes each attempt's result record on the ``nbflow-result``
  event topic, which reaches the driver on the same stream as the task's completion, so no
  result is fetched (one round trip per task saved); a future that finishes without its
  event (a record too large for the topic) is fetched after ``RESULT_GRACE``. Started
  events come through ``nbflow-started``, sent only for attempts still running after 50 ms
  (no-op tasks cost no extra message).
* **Batches.** The attempts one engine step makes ready go out as one ``client.map`` per set
  of resources: one graph update for the scheduler, not one per attempt.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from typing import Any

from nbflow.config import get_settings
from nbflow.executors.base import Event, Executor, drain, finished, now, worker_lost
from nbflow.executors.daskconf import (  # noqa: F401 - WORKER_CONFIG and worker_environment: imported from here
    EMBEDDED_AT_LEAST_ONCE,
    EXACTLY_ONCE,
    WORKER_CONFIG,
    check_allowed_failures,
    worker_environment,
)
from nbflow.executors.waiting import queue_resource, served_queues, waiting_note
from nbflow.record import AttemptRecord
from nbflow.tasks import kernelpool
from nbflow.worker import WorkItem, attempt_paths, kill_attempt, mark_started, read_result, run_work_item

log = logging.getLogger("nbflow.executors.dask")

STARTED_TOPIC = "nbflow-started"
RESULT_TOPIC = "nbflow-result"
RENOTE_INTERVAL = 2.0  # seconds between looks at why submitted attempts still wait
STARTED_DELAY = 0.05
RESULT_EVENT_LIMIT = 16_000  # characters of traceback/message in a result sent as an event
SUBMIT_INTERVAL = 0.001  # seconds the client batches submissions (Dask's default: 0.01)
SWEEP_INTERVAL = 0.2  # seconds between looks at the statuses of futures in flight
RELEASE_INTERVAL = 1.0  # seconds between two withdrawals of fire-and-forget claims (_release_ended)
RESULT_GRACE = 0.5  # seconds a finished future may wait for its result event before it is fetched


def run_on_worker(item: WorkItem) -> AttemptRecord:
    """What a Dask worker runs for one attempt (a plain function: it is pickled by reference).

    The result record also goes out on the ``nbflow-result`` topic, on the stream that
    reports the task's end: the driver learns the outcome without fetching the future.
    """
    from distributed import get_worker

    worker = get_worker()
    kernelpool.activate(slots=worker.state.nthreads)  # pre-started kernels, drained when the worker exits
    mark_started(item, worker.address, os.getpid())  # before anything runs: whether a lost attempt started
    msg = {"key": item.key, "worker": worker.address, "pid": os.getpid()}
    timer = threading.Timer(STARTED_DELAY, lambda: worker.log_event(STARTED_TOPIC, {**msg, "at": time.time()}))
    timer.daemon = True
    timer.start()
    try:
        result = run_work_item(item)
    finally:
        timer.cancel()
    result.hostname = worker.address
    if _small(result):
        worker.log_event(RESULT_TOPIC, result.to_dict())
    return result


def _small(result: AttemptRecord) -> bool:
    """Whether a record is small enough for the event topic (the scheduler keeps its last
    1,000 events per topic); larger ones are fetched from the future."""
    return len(result.traceback or "") + len(result.message) + 200 * len(result.artifacts) < RESULT_EVENT_LIMIT


def _key_state(dask_scheduler: Any, key: str) -> str | None:
    ts = dask_scheduler.tasks.get(key)
    return None if ts is None else ts.state


class DaskExecutor(Executor):
    """Runs attempts on a Dask cluster (``address``) or on an embedded ``LocalCluster``."""

    name = "dask"
    durable_results = True

    def __init__(self, parallelism: int | None = None, address: str | None = None, **options: Any):
        settings = get_settings()
        super().__init__(parallelism or settings.parallelism, **options)
        self.address = address or settings.dask_address
        self.client: Any = None
        self.cluster: Any = None
        self._events: queue.Queue[Event] = queue.Queue()
        self._futures: dict[str, Any] = {}
        self._ended_keys: list[str] = []  # whose fire-and-forget claim is withdrawn (every RELEASE_INTERVAL)
        self._released = 0.0  # when claims were last withdrawn (monotonic)
        self._adopted: dict[str, str] = {}  # key -> attempt folder (watched for result.json)
        self._unreported: dict[str, float] = {}  # key -> when its future finished without a result event
        self._swept = 0.0
        self.fetched_results = 0  # results fetched from futures because no event came (a diagnostic)
        self._lock = threading.Lock()
        self._workers: tuple[float, list[dict[str, float]]] = (0.0, [])  # when read, each worker's resources
        self._waiting: dict[str, tuple[WorkItem, str | None]] = {}  # submitted, not started: item, its note
        self._renoted = 0.0  # when the waiting attempts' notes were last looked at (monotonic)
        self._folders: dict[str, str] = {}  # key -> attempt folder of attempts in flight (started.json)

    @property
    def guarantee(self) -> str:  # type: ignore[override]
        """Exactly once on an external cluster; the embedded one dies with this process (at least once)."""
        return EXACTLY_ONCE if self.address else EMBEDDED_AT_LEAST_ONCE

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        """Connect to the cluster, or start a local one; take over retries from Dask."""
        import dask
        from distributed import Client, LocalCluster

        if self.client is not None:
            return
        if self.address:
            self.client = Client(self.address, timeout="10s")
            check_allowed_failures(self.client, self.address)
        else:
            with dask.config.set(WORKER_CONFIG):
                self.cluster = LocalCluster(
                    n_workers=self.parallelism,
                    threads_per_worker=1,
                    processes=True,
                    host="127.0.0.1",
                    dashboard_address="127.0.0.1:0",
                    silence_logs=logging.ERROR,
                    scheduler_kwargs={"allowed_failures": 0},  # nbflow's own cluster: its retries are nbflow's
                )
            self.client = Client(self.cluster)
        self.client.subscribe_topic(STARTED_TOPIC, self._on_started)
        self.client.subscribe_topic(RESULT_TOPIC, self._on_result)
        comm = getattr(self.client, "scheduler_comm", None)  # Dask batches for 10 ms: each hand-off would wait
        if comm is not None:
            comm.interval = SUBMIT_INTERVAL

    def shutdown(self) -> None:
        """Close the client; stop the embedded cluster."""
        if self.client is not None:
            self._release_ended()  # the attempts reported by the last poll
            for topic in (STARTED_TOPIC, RESULT_TOPIC):  # Dask keeps a closed client's subscriptions
                self.client.unsubscribe_topic(topic)
            self.client.close()
            self.client = None
        if self.cluster is not None:
            self.cluster.close()
            self.cluster = None

    def describe(self) -> str:
        """Where tasks go, with the dashboard link when there is one."""
        where = f"cluster at {self.address}" if self.address else f"local Dask cluster, {self.parallelism} workers"
        link = self.dashboard_link
        return f"dask ({where}{', dashboard ' + link if link else ''})"

    @property
    def dashboard_link(self) -> str | None:
        """The Dask dashboard's URL (None when bokeh is missing)."""
        if self.client is None:
            return None
        try:
            info = self.client.scheduler_info()
            return self.client.dashboard_link if "dashboard" in info.get("services", {}) else None
        except Exception:  # noqa: BLE001 - a link is a nicety
            return None

    # -- queues ------------------------------------------------------------------------------
    def worker_resources(self, refresh: bool = False) -> list[dict[str, float]]:
        """Each worker's resources, queues among them (read again after 2 s)."""
        at, workers = self._workers
        if refresh or time.monotonic() - at > 2.0:
            info = self.client.scheduler_info(n_workers=-1)["workers"].values()
            workers = [dict(w.get("resources") or {}) for w in info]
            self._workers = (time.monotonic(), workers)
        return workers

    def served_queues(self, refresh: bool = False) -> set[str]:
        """Queues advertised by the cluster's workers."""
        return served_queues(self.worker_resources(refresh))

    def _resources(self, item: WorkItem) -> dict[str, float] | None:
        resources = dict(item.resources or {})
        served = self.served_queues()
        if served:  # the cluster routes by queue
            resources[queue_resource(item.queue)] = 1
        return resources or None

    def _renote(self, refresh: bool = False) -> None:
        """Say again why each attempt not started yet waits, when that changed (a worker came or
        went): its note names what no worker has and the ``nbflow worker`` command to start."""
        self._renoted = time.monotonic()
        with self._lock:
            for key in [k for k in self._waiting if k not in self._futures]:  # ended, lost or cancelled
                del self._waiting[key]
            waiting = list(self._waiting.items())
        if not waiting:
            return
        workers = self.worker_resources(refresh)
        for key, (item, said) in waiting:
            note = waiting_note(item.queue, item.resources or {}, workers, self.client.scheduler.address)
            with self._lock:  # (put under the lock: never after the attempt's "started" event)
                if note == said or key not in self._waiting:
                    continue
                self._waiting[key] = (item, note)
                self._events.put(Event("note", key, now(), message=note or ""))  # "": a worker can take it now

    # -- submitting ---------------------------------------------------------------------------
    def submit(self, item: WorkItem) -> None:
        """Submit one attempt as a Dask task under its key."""
        self.submit_many([item])

    def submit_many(self, items: list[WorkItem]) -> None:
        """Submit a step's attempts with one ``client.map`` per set of resources (one graph
        update for the scheduler instead of one per attempt)."""
        from distributed import fire_and_forget

        if self.client is None:
            self.start()
        groups: dict[tuple[tuple[str, float], ...], list[WorkItem]] = {}
        for item in items:
            resources = self._resources(item)
            groups.setdefault(tuple(sorted((resources or {}).items())), []).append(item)
        for shape, group in groups.items():
            with self._lock:  # known before the map: a result event may beat client.map's return
                self._futures.update((item.key, None) for item in group)
                self._waiting.update((item.key, (item, None)) for item in group)
                self._folders.update((item.key, attempt_paths(item)[0]) for item in group)
            futures = self.client.map(
                run_on_worker,
                [item.pack() for item in group],
                key=[item.key for item in group],
                pure=False,
                resources=dict(shape) or None,
                retries=0,
            )
            fire_and_forget(futures)
            with self._lock:
                self._futures.update((f.key, f) for f in futures if f.key in self._futures)
        self._renote()

    def adopt(self, key: str, attempt_folder: str) -> bool:
        """Follow an attempt a previous driver submitted: by its result file, or its key."""
        from distributed import Future

        if self.client is None:
            self.start()
        result = read_result(attempt_folder)
        if result is not None:
            self._events.put(finished(result))
            return True
        state = self.client.run_on_scheduler(_key_state, key=key)
        if state in (None, "forgotten", "released", "erred"):
            return False
        future: Future[Any] = Future(key, self.client)
        with self._lock:
            self._futures[key] = future
            self._adopted[key] = attempt_folder
            self._folders[key] = attempt_folder
        return True

    # -- events -------------------------------------------------------------------------------
    def _on_started(self, event: tuple[float, dict[str, Any]]) -> None:
        _, msg = event
        with self._lock:
            self._waiting.pop(msg["key"], None)
        self._events.put(Event("started", msg["key"], msg["at"], msg["worker"], msg["pid"]))

    def _on_result(self, event: tuple[float, dict[str, Any]]) -> None:
        _, msg = event  # the scheduler adds the sending worker's address as "worker"
        self._report(AttemptRecord.from_dict(msg))

    def _report(self, result: AttemptRecord) -> None:
        """Emit an attempt's end once (the event, the future and the result file may all tell)."""
        with self._lock:
            if result.key not in self._futures:
                return  # another driver's attempt, or already reported
            del self._futures[result.key]
            self._folders.pop(result.key, None)
            self._adopted.pop(result.key, None)
            self._unreported.pop(result.key, None)
            self._ended_keys.append(result.key)
        self._events.put(finished(result))

    def _sweep(self) -> None:
        """Look at the futures in flight (a status read, no message): those that ended
        without a result event failed (worker lost, cancelled) or await their event.
        Cheaper than a done-callback per future, which costs a wake-up of the client's loop."""
        if time.monotonic() - self._swept < SWEEP_INTERVAL:
            return
        self._swept = time.monotonic()
        with self._lock:
            ended = [f for f in self._futures.values() if f is not None and f.status != "pending"]
        for future in ended:
            self._ended(future)

    def _ended(self, future: Any) -> None:
        key = future.key
        with self._lock:
            if key not in self._futures:
                return  # its result event came meanwhile
            if future.status == "finished":
                self._unreported.setdefault(key, time.monotonic())  # its result event is on the way
                return
            del self._futures[key]
            adopted = self._adopted.pop(key, None)
            folder = self._folders.pop(key, None)
            self._ended_keys.append(key)
        if future.status == "cancelled":
            self._events.put(Event("lost", key, now(), reason="cancelled", message="cancelled"))
            return
        result = read_result(adopted) if adopted else None
        if result is not None:  # an adopted attempt whose future was released after it ended
            self._events.put(finished(result))
            return
        message = f"the scheduler lost the task ({future.status})"
        if future.status == "error":
            try:
                message = _describe(future.exception(timeout=10))
            except Exception as err:  # noqa: BLE001 - the client lost the scheduler
                message = _describe(err)
        self._events.put(worker_lost(key, folder, message))

    def poll(self, timeout: float | None) -> list[Event]:
        """Wait up to ``timeout`` for events, then return all that are ready."""
        self._check_adopted()
        self._sweep()
        self._fetch_unreported()
        if time.monotonic() - self._released >= RELEASE_INTERVAL:
            self._release_ended()
        if time.monotonic() - self._renoted >= RENOTE_INTERVAL:
            self._renote()
        if self._futures:  # wake up to sweep
            timeout = SWEEP_INTERVAL if timeout is None else min(timeout, SWEEP_INTERVAL)
        return drain(self._events, timeout)

    def _release_ended(self) -> None:
        """Withdraw fire-and-forget's claim on the attempts that ended, in one message (every
        RELEASE_INTERVAL from poll, and at shutdown).

        Dask drops that claim when the task ends; but ``fire_and_forget`` is a message of its
        own after ``client.map``'s graph, and a task fast enough to end before the scheduler
        reads it keeps the claim for good: its result stays on a worker and its key on the
        scheduler (seen once in ~3,000 no-op tasks with the 1 ms batching interval).
        """
        self._released = time.monotonic()
        with self._lock:
            keys, self._ended_keys = self._ended_keys, []
        if keys and self.client is not None:
            self.client._send_to_scheduler({"op": "client-releases-keys", "keys": keys, "client": "fire-and-forget"})

    def _fetch_unreported(self) -> None:
        """Results of finished futures whose event never came (too large, or sent before
        this client subscribed): fetched from the worker."""
        cutoff = time.monotonic() - RESULT_GRACE
        with self._lock:
            due = [(k, self._futures[k]) for k, at in self._unreported.items() if at <= cutoff and self._futures.get(k)]
        for key, future in due:
            self.fetched_results += 1
            try:
                self._report(future.result(timeout=30))
            except Exception as exc:  # noqa: BLE001 - the worker holding it died
                with self._lock:
                    self._futures.pop(key, None)
                    self._unreported.pop(key, None)
                    self._adopted.pop(key, None)
                    folder = self._folders.pop(key, None)
                    self._ended_keys.append(key)
                result = read_result(folder) if folder else None  # it ended: the worker wrote how
                self._events.put(finished(result) if result is not None else worker_lost(key, folder, _describe(exc)))

    def _check_adopted(self) -> None:
        with self._lock:
            adopted = list(self._adopted.items())
        for _, folder in adopted:
            result = read_result(folder)
            if result is not None:
                self._report(result)

    # -- cancelling -----------------------------------------------------------------------------
    def cancel(self, key: str) -> None:
        """Cancel the future and kill the attempt's kernel/shell/child on whichever worker runs it."""
        with self._lock:
            future = self._futures.get(key)
        if future is None or self.client is None:
            return
        try:
            self.client.run(kill_attempt, key, self.kill_grace, wait=True)
        except Exception as exc:  # noqa: BLE001 - a worker that is gone has nothing to kill
            log.warning("could not ask the workers to kill %s: %s", key, exc)
        future.cancel()


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"
