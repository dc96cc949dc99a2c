"""The ``celery`` executor: attempts as Celery tasks on a Redis or RabbitMQ broker, for teams
that already run Celery. The same :class:`~nbflow.worker.WorkItem` and result record as Dask.

* **Submitting.** One ``nbflow.run_attempt`` message per attempt, its Celery task id the
  attempt's key, on the Celery queue named by the task's ``queue`` (``nbflow worker --engine
  celery --queue gpu`` consumes ``gpu``).
* **Following.** A thread of the driver reads the attempts' states from the result backend
  (Celery's ``STARTED`` with the worker's host and pid, then the result record) and turns them
  into events; a queue no worker consumes gets a note with the command that starts one.
* **Lost workers.** Workers are pinged every :data:`PING_INTERVAL` seconds; when the one running
  an attempt stops answering :data:`MISSED_PINGS` times in a row, the attempt is ``lost``
  (``worker_lost``: nbflow retries it). The broker later hands its unacknowledged message to
  another worker, which finds the attempt already begun and drops it (see
  :mod:`nbflow.executors.celeryapp`): exactly one success per attempt.
* **Cancelling.** Revoking: an attempt not begun is dropped, a running one's pool process is
  killed with the kernel or shell it started.
* **A restarted driver** adopts attempts in flight: their state is in the result backend and
  their record in ``result.json`` (``durable_results``).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any

from nbflow.connections import masked_url
from nbflow.executors.base import ClusterWorker, Event, Executor, drain, finished, now, worker_lost
from nbflow.record import AttemptRecord
from nbflow.worker import WorkItem, attempt_paths, read_result

log = logging.getLogger("nbflow.executors.celery")

FOLLOW_INTERVAL = 0.005  # seconds between two reads of the states of the attempts in flight (one MGET on Redis)
IDLE_WAIT = 0.5  # seconds the follow thread waits for a submission when nothing is in flight
PING_INTERVAL = 2.0  # seconds between two pings of the workers that run attempts
MISSED_PINGS = 2  # pings a worker may miss before its attempts are lost
QUEUES_INTERVAL = 5.0  # seconds between two looks at which queues the workers consume


def unconsumed(qname: str, consumed: set[str], any_worker: bool) -> str | None:
    """Why no Celery worker takes a message of queue ``qname`` (None: one consumes it)."""
    if qname in consumed:
        return None
    if not any_worker:
        return "no celery worker is running"
    return f"no celery worker consumes queue '{qname}' (consumed: {', '.join(sorted(consumed))})"


def start_command(qname: str) -> str:
    """The command that starts a Celery worker for nbflow queue ``qname``."""
    return f"nbflow worker --engine celery --queue {qname}"


class CeleryExecutor(Executor):
    """Runs attempts as Celery tasks (broker and backend from ``NBFLOW_CELERY_BROKER``/``_BACKEND``)."""

    name = "celery"
    durable_results = True
    guarantee = (
        "an attempt in flight when this process dies finishes on its Celery worker and the next driver "
        "adopts its result (exactly once)"
    )

    def __init__(self, parallelism: int | None = None, broker: str | None = None, **options: Any):
        super().__init__(parallelism, **options)
        self.broker = broker
        self.app: Any = None
        self._lock = threading.Lock()
        self._events: queue.Queue[Event] = queue.Queue()
        self._outbox: queue.Queue[WorkItem] = queue.Queue()  # submitted, for the follow thread to send
        #: key -> (queue, attempt folder, host it started on or None)
        self._flight: dict[str, tuple[str, str, str | None]] = {}
        self._noted: dict[str, str] = {}  # key -> the note last said about it (the watch thread's)
        self._missed: dict[str, int] = {}  # worker -> pings missed in a row
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        from nbflow.executors.celeryapp import make_app

        if self.app is not None:
            return
        self.app = make_app(self.broker)
        for target in (self._follow, self._watch):
            thread = threading.Thread(target=target, name=f"nbflow-celery{target.__name__}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def shutdown(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(10)
        if self.app is not None:
            self.app.close()

    def describe(self) -> str:
        from nbflow.executors.celeryapp import broker_and_backend

        broker, _ = broker_and_backend(self.broker)
        return f"celery (broker {masked_url(broker)})"

    # -- submitting ---------------------------------------------------------------------------
    def submit(self, item: WorkItem) -> None:
        """Hand the attempt to the follow thread, which sends it (see :meth:`_follow`)."""
        folder = attempt_paths(item)[0]
        with self._lock:
            self._flight[item.key] = (item.queue, folder, None)
        self._outbox.put(item)

    def adopt(self, key: str, attempt_folder: str) -> bool:
        """Follow an attempt a previous driver sent: by its result file, or its state."""
        if self.app is None:
            self.start()
        result = read_result(attempt_folder)
        if result is not None:
            self._events.put(finished(result))
            return True
        state = self.app.AsyncResult(key).state
        if state not in ("PENDING", "RECEIVED", "STARTED"):
            return False
        with self._lock:
            self._flight[key] = ("", attempt_folder, None)
        return True

    def cancel(self, key: str) -> None:
        """Revoke the attempt: one not begun is dropped (lost, cancelled, at once); a running
        one's pool process is killed with its kernel or shell (then REVOKED: lost, cancelled)."""
        with self._lock:
            flight = self._flight.get(key)
        if flight is None or self.app is None:
            return
        try:
            self.app.control.revoke(key, terminate=flight[2] is not None, signal="SIGTERM")
        except Exception as exc:  # noqa: BLE001 - a broker that is gone: the attempt is lost anyway
            log.warning("could not revoke %s: %s", key, exc)
        if flight[2] is None:
            self._end(key, Event("lost", key, now(), reason="cancelled", message="cancelled"))

    def poll(self, timeout: float | None) -> list[Event]:
        """Wait up to ``timeout`` for events, then return all that are ready."""
        return drain(self._events, timeout)

    # -- following -----------------------------------------------------------------------------
    def _follow(self) -> None:
        """Send the submitted attempts and read their states (a thread). One thread does both:
        the ``rpc://`` backend delivers results to the thread that sent the task. Pings and
        queue checks wait for replies, so they run on a thread of their own (:meth:`_watch`)."""
        from nbflow.executors.celeryapp import TASK, encode

        while not self._stop.is_set():
            with self._lock:
                idle = not self._flight
            try:  # nothing in flight: wait for a submission (waking now and then to see the stop)
                items = [self._outbox.get(timeout=IDLE_WAIT if idle else FOLLOW_INTERVAL)]
                while not self._outbox.empty():
                    items.append(self._outbox.get_nowait())
            except queue.Empty:
                items = []
            try:
                for item in items:
                    self.app.send_task(TASK, args=[encode(item)], task_id=item.key, queue=item.queue)
                with self._lock:
                    flight = dict(self._flight)
                if flight:
                    self._read_states(flight)
            except Exception as exc:  # noqa: BLE001 - the broker or backend is away: try again
                log.warning("celery executor: %s: %s", type(exc).__name__, exc)

    def _watch(self) -> None:
        """Ping the workers that run attempts, and look at which queues are consumed (a thread)."""
        queues_seen = 0.0
        while not self._stop.wait(PING_INTERVAL):
            try:
                self._check_workers()
                if time.monotonic() - queues_seen >= QUEUES_INTERVAL:
                    queues_seen = time.monotonic()
                    self._note_unserved()
            except Exception as exc:  # noqa: BLE001 - the broker is away: try again
                log.warning("celery executor: %s: %s", type(exc).__name__, exc)

    def _states(self, keys: list[str]) -> dict[str, tuple[str, Any]]:
        """``{key: (state, result or info)}``: with a key-value backend (Redis) in one ``MGET``,
        else one look per key (``rpc://`` answers from the messages this thread received)."""
        backend = self.app.backend
        if hasattr(backend, "mget") and hasattr(backend, "get_key_for_task"):
            raws = backend.mget([backend.get_key_for_task(k) for k in keys])
            out: dict[str, tuple[str, Any]] = {}
            for key, raw in zip(keys, raws, strict=True):
                meta = backend.decode_result(raw) if raw else {"status": "PENDING", "result": None}
                if meta["status"] == "FAILURE":  # the exception as Celery rebuilds it
                    out[key] = ("FAILURE", self.app.AsyncResult(key).result)
                else:
                    out[key] = (str(meta["status"]), meta.get("result"))
            return out
        found: dict[str, tuple[str, Any]] = {}
        for key in keys:
            result = self.app.AsyncResult(key)
            found[key] = (str(result.state), result.result)
        return found

    def _read_states(self, flight: dict[str, tuple[str, str, str | None]]) -> None:
        from nbflow.executors.celeryapp import DUPLICATE

        for key, (state, value) in self._states(list(flight)).items():
            qname, folder, host = flight[key]
            if state == "STARTED" and host is None:
                info = value if isinstance(value, dict) else {}
                host = str(info.get("hostname") or "")
                with self._lock:
                    if key not in self._flight:
                        continue
                    self._flight[key] = (qname, folder, host)
                self._events.put(Event("started", key, now(), host, info.get("pid")))
            elif state == "SUCCESS":
                if value == DUPLICATE:  # its message came back: the worker that began it died first
                    self._end(key, worker_lost(key, folder, "its celery worker died; the broker delivered it again"))
                else:
                    self._end(key, finished(AttemptRecord.from_dict(value)))
            elif state == "PENDING" and not qname and (record := read_result(folder)) is not None:
                self._end(key, finished(record))  # adopted: an rpc:// backend shows this driver no state
            elif state == "FAILURE":
                self._end(key, worker_lost(key, folder, f"{type(value).__name__}: {value}"))
            elif state == "REVOKED":
                self._end(key, Event("lost", key, now(), reason="cancelled", message="cancelled"))

    def _end(self, key: str, event: Event) -> None:
        with self._lock:
            if self._flight.pop(key, None) is None:
                return
            self._noted.pop(key, None)
        self._events.put(event)

    def _check_workers(self) -> None:
        """Attempts whose worker stopped answering pings are lost (``worker_lost``)."""
        with self._lock:
            hosts = {host for _, _, host in self._flight.values() if host}
        if not hosts:
            return
        answered = {name for reply in self.app.control.ping(timeout=1.0) for name in reply}
        for host in hosts:
            self._missed[host] = 0 if host in answered else self._missed.get(host, 0) + 1
            if self._missed[host] < MISSED_PINGS:
                continue
            with self._lock:
                lost = [(k, f) for k, (_, f, h) in self._flight.items() if h == host]
            for key, folder in lost:
                self.app.control.revoke(key)  # a worker that still holds it drops it
                self._end(key, worker_lost(key, folder, f"celery worker {host} stopped answering"))

    def _note_unserved(self) -> None:
        """A note on each waiting attempt whose queue no worker consumes (with the command)."""
        with self._lock:
            waiting = {k: q for k, (q, _, h) in self._flight.items() if h is None and q}
        if not waiting:
            return
        replies = self.app.control.inspect(timeout=1.0).active_queues() or {}
        served = {q["name"] for queues in replies.values() for q in queues}
        for key, qname in waiting.items():
            why = unconsumed(qname, served, bool(replies))
            note = "" if why is None else f"waiting: {why}; start one with: {start_command(qname)}"
            if self._noted.get(key, "") != note:
                self._noted[key] = note
                self._events.put(Event("note", key, now(), message=note))


def celery_workers(broker: str | None = None, timeout: float = 2.0) -> list[ClusterWorker]:
    """The workers that answer on the broker: queues, slots, the attempts they run, ``memory``
    (peak RSS) and ``cpu`` (average percent since the worker started); ``last_seen_s`` 0: they
    just answered. Raises OSError when the broker cannot be reached."""
    from nbflow.executors.celeryapp import make_app

    app = make_app(broker)
    try:
        inspect = app.control.inspect(timeout=timeout)
        stats = inspect.stats() or {}
        queues = inspect.active_queues() or {}
        active = inspect.active() or {}
    finally:
        app.close()
    workers = []
    for name, info in sorted(stats.items()):
        usage = info.get("rusage") or {}
        uptime = float(info.get("uptime") or 0)
        cpu_s = float(usage.get("utime", 0)) + float(usage.get("stime", 0))
        workers.append(
            ClusterWorker(
                address=name,
                name=name,
                host=name.split("@", 1)[-1],
                slots=int((info.get("pool") or {}).get("max-concurrency") or 0),
                queues=sorted(q["name"] for q in queues.get(name, [])),
                resources={},
                memory=int(usage["maxrss"]) * 1024 if usage.get("maxrss") else None,  # KiB on Linux
                memory_limit=None,
                cpu=100.0 * cpu_s / uptime if uptime > 0 else None,
                last_seen_s=0.0,
                processing=[t["id"] for t in active.get(name, [])],
            )
        )
    return workers
