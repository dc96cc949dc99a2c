"""``dask``: attempts as tasks of a ``distributed`` cluster, on this machine or many.

Without an address (``--dask-address`` / ``NBFLOW_DASK_ADDRESS``) an embedded
``LocalCluster`` sized to the machine is started and torn down with the executor.

* **Keys.** Each attempt is submitted with the key ``{pipeline}/{run}/{task}/{try}-{random}`` and
  ``pure=False``: two tries or two runs never share a key, and a restarted driver can find
  its work by key. Submissions are ``fire_and_forget``: the cluster finishes an attempt
  even if the driver dies, and the worker writes ``result.json`` into the attempt folder,
  from which a restarted driver learns how it ended (:meth:`DaskExecutor.adopt`).
* **Retries belong to nbflow.** The scheduler's ``allowed-failures`` is set to 0, so a task
  whose worker dies fails at once (``KilledWorker``) instead of being re-run behind
  nbflow's back; the engine records a ``worker_lost`` try and retries under a new key.
* **Queues.** A task's ``queue="gpu"`` becomes the worker resource ``queue-gpu``;
  ``nbflow worker --queue gpu`` advertises it. A cluster whose workers advertise no queue
  at all (plain ``dask worker``, the embedded cluster) runs every queue. ``resources=``
  amounts (``{"GPU": 1}``) are passed to Dask as they are.
* **Code.** Tasks are cloudpickled by value (pipeline files are registered for that), so
  workers need nbflow and the libraries the tasks import, not the pipeline file. Modules
  a pipeline imports from its own folder must be importable on the workers (a shared
  folder, or installed); the folder is put on the worker's ``sys.path``.
* **Started events** come from the worker through the ``nbflow-started`` event topic, sent
  only for attempts still running after 50 ms (no-op tasks cost no extra message).
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from typing import Any

from nbflow.config import get_settings
from nbflow.executors.base import Event, Executor, drain, now
from nbflow.worker import AttemptResult, WorkItem, kill_attempt, read_result, run_work_item

log = logging.getLogger("nbflow.executors.dask")

STARTED_TOPIC = "nbflow-started"
QUEUE_PREFIX = "queue-"
STARTED_DELAY = 0.05


def queue_resource(name: str) -> str:
    """The Dask worker resource that stands for nbflow queue ``name``."""
    return f"{QUEUE_PREFIX}{name}"


def run_on_worker(item: WorkItem) -> AttemptResult:
    """What a Dask worker runs for one attempt (a plain function: it is pickled by reference)."""
    from distributed import get_worker

    worker = get_worker()
    msg = {"key": item.key, "worker": worker.address, "pid": os.getpid()}
    timer = threading.Timer(STARTED_DELAY, lambda: worker.log_event(STARTED_TOPIC, {**msg, "at": time.time()}))
    timer.daemon = True
    timer.start()
    try:
        result = run_work_item(item)
    finally:
        timer.cancel()
    result.hostname = worker.address
    return result


def _set_allowed_failures(dask_scheduler: Any, value: int) -> int:
    previous = dask_scheduler.allowed_failures
    dask_scheduler.allowed_failures = value
    return previous


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
        self._adopted: dict[str, str] = {}  # key -> attempt folder (watched for result.json)
        self._lock = threading.Lock()
        self._queues: tuple[float, set[str]] = (0.0, set())

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        """Connect to the cluster, or start a local one; take over retries from Dask."""
        import dask
        from distributed import Client, LocalCluster

        if self.client is not None:
            return
        if self.address:
            self.client = Client(self.address, timeout="10s")
        else:
            # workers may start processes of their own (timeouts, multiprocessing in tasks)
            with dask.config.set({"distributed.worker.daemon": False}):
                self.cluster = LocalCluster(
                    n_workers=self.parallelism,
                    threads_per_worker=1,
                    processes=True,
                    host="127.0.0.1",
                    dashboard_address="127.0.0.1:0",
                    silence_logs=logging.ERROR,
                )
            self.client = Client(self.cluster)
        self.client.run_on_scheduler(_set_allowed_failures, value=0)
        self.client.subscribe_topic(STARTED_TOPIC, self._on_started)

    def shutdown(self) -> None:
        """Close the client; stop the embedded cluster."""
        if self.client is not None:
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
    def served_queues(self, refresh: bool = False) -> set[str]:
        """Queues advertised by the cluster's workers (cached for 2 s)."""
        at, queues = self._queues
        if refresh or time.monotonic() - at > 2.0:
            workers = self.client.scheduler_info(n_workers=-1)["workers"].values()
            queues = {
                r[len(QUEUE_PREFIX) :] for w in workers for r in (w.get("resources") or {}) if r.startswith(QUEUE_PREFIX)
            }
            self._queues = (time.monotonic(), queues)
        return queues

    def _resources(self, item: WorkItem) -> tuple[dict[str, float] | None, str | None]:
        resources = dict(item.resources or {})
        note = None
        served = self.served_queues()
        if served:  # the cluster routes by queue
            if item.queue not in served:
                served = self.served_queues(refresh=True)
            if item.queue not in served:
                note = (
                    f"waiting: no worker serves queue '{item.queue}' (served: {', '.join(sorted(served))}); "
                    f"start one with: nbflow worker --scheduler {self.client.scheduler.address} --queue {item.queue}"
                )
            resources[queue_resource(item.queue)] = 1
        return resources or None, note

    # -- submitting ---------------------------------------------------------------------------
    def submit(self, item: WorkItem) -> None:
        """Submit one attempt as a Dask task under its deterministic key."""
        from distributed import fire_and_forget

        if self.client is None:
            self.start()
        resources, note = self._resources(item)
        future = self.client.submit(run_on_worker, item.pack(), key=item.key, pure=False, resources=resources, retries=0)
        fire_and_forget(future)
        with self._lock:
            self._futures[item.key] = future
        future.add_done_callback(self._on_done)
        if note:
            self._events.put(Event("note", item.key, now(), message=note))

    def adopt(self, key: str, attempt_folder: str) -> bool:
        """Follow an attempt a previous driver submitted: by its result file, or its key."""
        from distributed import Future

        if self.client is None:
            self.start()
        result = read_result(attempt_folder)
        if result is not None:
            self._events.put(Event("finished", key, result.ended_at, result.hostname, result.pid, result=result))
            return True
        state = self.client.run_on_scheduler(_key_state, key=key)
        if state in (None, "forgotten", "released", "erred"):
            return False
        future = Future(key, self.client)
        with self._lock:
            self._futures[key] = future
            self._adopted[key] = attempt_folder
        future.add_done_callback(self._on_done)
        return True

    # -- events -------------------------------------------------------------------------------
    def _on_started(self, event: tuple[float, dict[str, Any]]) -> None:
        _, msg = event
        self._events.put(Event("started", msg["key"], msg["at"], msg["worker"], msg["pid"]))

    def _on_done(self, future: Any) -> None:
        key = future.key
        with self._lock:
            if self._futures.pop(key, None) is None:
                return
            folder = self._adopted.pop(key, None)
        if future.status == "finished":
            result = future.result()
            self._events.put(Event("finished", key, result.ended_at, result.hostname, result.pid, result=result))
            return
        if future.status == "cancelled":
            self._events.put(Event("lost", key, now(), reason="cancelled", message="cancelled"))
            return
        result = read_result(folder) if folder else None
        if result is not None:  # an adopted attempt whose future was released after it ended
            self._events.put(Event("finished", key, result.ended_at, result.hostname, result.pid, result=result))
            return
        try:
            exc = future.exception()
        except Exception as err:  # noqa: BLE001 - the client lost the scheduler
            exc = err
        self._events.put(Event("lost", key, now(), reason="worker_lost", message=f"{type(exc).__name__}: {exc}"))

    def poll(self, timeout: float | None) -> list[Event]:
        """Wait up to ``timeout`` for events, then return all that are ready."""
        self._check_adopted()
        return drain(self._events, timeout)

    def _check_adopted(self) -> None:
        with self._lock:
            adopted = list(self._adopted.items())
        for key, folder in adopted:
            result = read_result(folder)
            if result is not None:
                with self._lock:
                    self._adopted.pop(key, None)
                    self._futures.pop(key, None)
                self._events.put(Event("finished", key, result.ended_at, result.hostname, result.pid, result=result))

    # -- cancelling -----------------------------------------------------------------------------
    def cancel(self, key: str) -> None:
        """Cancel the future and kill the attempt's kernel/shell/child on whichever worker runs it."""
        with self._lock:
            future = self._futures.get(key)
        if future is None or self.client is None:
            return
        try:
            self.client.run(kill_attempt, key, get_settings().kill_grace, wait=True)
        except Exception as exc:  # noqa: BLE001 - a worker that is gone has nothing to kill
            log.warning("could not ask the workers to kill %s: %s", key, exc)
        future.cancel()
