"""``local``: a pool of worker processes on this machine, ``parallelism`` at most.

Why not ``concurrent.futures.ProcessPoolExecutor``: when one of its processes dies (a
task that segfaults, a cancelled notebook whose worker is killed) the whole pool breaks
and every other running task is lost. Here each worker is a spawned process talking to
the executor over its own pipe; a dead worker costs only its own attempt (reported as a
``lost`` event with reason ``worker_lost`` or ``cancelled``, ``started`` when its "started"
message came: the engine resubmits one that had not, charging no try) and is replaced.

Workers are started as ``python -m nbflow.executors.local FD`` with one end of a socket
pair, not with multiprocessing's spawn: spawn re-imports the caller's ``__main__``, which
breaks scripts without an ``if __name__ == "__main__"`` guard. The caller's ``sys.path`` is
passed along so functions pickled by reference still import.

Protocol on a worker's pipe (pickled tuples): executor -> worker: a packed WorkItem;
worker -> executor: ``("started", key, at, host, pid)``, ``("process", key, pgid)`` for each
process group the attempt starts, then ``("finished", key, record)``. A reader thread waits
on all pipes at once and turns messages into events; finished workers take the next queued
item immediately, so a child starts without a polling delay.

Kernels and shell commands lead process groups (sessions) of their own, so a worker process
that is killed outright would leave them running, reparented to init, beside the attempt's
retry. The executor knows their groups from the ``process`` messages and kills them when it
sees the worker die; a worker that is terminated (SIGTERM) kills what it started itself.
"""

from __future__ import annotations

import json
import os
import pickle
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any, cast

from nbflow import procs
from nbflow.config import get_settings
from nbflow.executors.base import Event, Executor, drain, now
from nbflow.tasks import kernelpool
from nbflow.worker import HOSTNAME, WorkItem, run_work_item


def _kill_children_and_exit(signum: int, _frame: Any) -> None:
    """SIGTERM in a worker: stop what it runs elsewhere (a SQL statement on its server: the stop
    hooks), kill what it started (kernels, shells), then exit."""
    procs.run_stop_hooks()
    procs.kill_descendants()
    os._exit(128 + signum)


def _watch_parent(parent: int) -> None:
    """Exit (killing what we started) when the driving process is gone."""
    while os.getppid() == parent:
        time.sleep(1.0)
    _kill_children_and_exit(signal.SIGTERM, None)


def _worker_main(conn: Connection) -> None:
    """Entry point of a worker process: run items until the pipe closes."""
    signal.signal(signal.SIGTERM, _kill_children_and_exit)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle
    threading.Thread(target=_watch_parent, args=(os.getppid(),), daemon=True).start()
    kernelpool.activate(slots=1)  # pre-started kernels, once this worker has run a notebook
    try:
        _serve(conn)
    finally:
        kernelpool.drain()


def _serve(conn: Connection) -> None:
    while True:
        try:
            data = conn.recv_bytes()
        except (EOFError, OSError):
            return
        if not data:  # the executor is shutting down
            return
        item: WorkItem = pickle.loads(data)
        send = _sender(conn)
        send(("started", item.key, time.time(), HOSTNAME, os.getpid()))

        def on_process(pgid: int, key: str = item.key, send: Any = send) -> None:
            send(("process", key, pgid))

        result = run_work_item(item, on_process=on_process)
        send(("finished", item.key, result))


def _sender(conn: Connection) -> Any:
    """Send pickled messages on ``conn`` from any thread (an attempt's kernel starts in another)."""
    lock = threading.Lock()

    def send(message: tuple) -> None:
        with lock:
            conn.send_bytes(pickle.dumps(message))

    return send


@dataclass
class _Worker:
    process: subprocess.Popen
    conn: Connection
    item: WorkItem | None = None
    started: bool = False  # its "started" message for the current item came (read before its end)
    groups: set[int] = field(default_factory=set)  # process groups its current attempt started

    @property
    def pid(self) -> int:
        return self.process.pid


class LocalExecutor(Executor):
    """Runs attempts in up to ``parallelism`` worker processes (default: the CPU count)."""

    name = "local"
    guarantee = (
        "the worker processes die with this process: an attempt in flight then runs again under the next driver "
        "(at least once; use the dask executor for exactly once)"
    )
    parallelism: int  # never None here: the settings' default fills it in

    def __init__(self, parallelism: int | None = None, **options: Any):
        super().__init__(parallelism or get_settings().parallelism, **options)
        self._events: queue.Queue[Event] = queue.Queue()
        self._lock = threading.RLock()
        self._workers: dict[Connection, _Worker] = {}
        self._pending: deque[WorkItem] = deque()
        self._cancelling: set[str] = set()
        self._closing = False
        self._reader: threading.Thread | None = None
        r, w = socket.socketpair()
        self._wake_r, self._wake_w = Connection(r.detach()), Connection(w.detach())

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        """Start the reader thread (workers are spawned on demand)."""
        if self._reader is None:
            self._reader = threading.Thread(target=self._read_loop, name="nbflow-local-reader", daemon=True)
            self._reader.start()

    def shutdown(self) -> None:
        """Stop idle workers, kill busy ones, wait for all to exit."""
        with self._lock:
            self._closing = True
            self._pending.clear()
            workers = list(self._workers.values())
            for w in workers:
                if w.item is not None:
                    self._terminate(w)
                else:
                    try:
                        w.conn.send_bytes(b"")
                    except OSError:
                        pass
        self._wake()
        if self._reader is not None:
            self._reader.join(self.kill_grace + 10)
        for w in workers:
            try:
                w.process.wait(5)
            except subprocess.TimeoutExpired:
                w.process.kill()
                w.process.wait(5)

    def describe(self) -> str:
        """``local (N worker processes)``."""
        return f"local ({self.parallelism} worker processes)"

    # -- submitting -------------------------------------------------------------------------
    def submit(self, item: WorkItem) -> None:
        """Queue an attempt; an idle (or new) worker takes it at once."""
        if self._reader is None:
            self.start()
        with self._lock:
            self._pending.append(item.pack())
            self._dispatch()

    def _dispatch(self) -> None:
        # Called with the lock held, from the engine thread or the reader thread.
        while self._pending and not self._closing:
            idle = next((w for w in self._workers.values() if w.item is None), None)
            if idle is None:
                if len(self._workers) >= self.parallelism:
                    return
                idle = self._spawn()
            item = self._pending.popleft()
            idle.item, idle.started = item, False
            try:
                idle.conn.send_bytes(pickle.dumps(item))
            except OSError:  # died while idle; the reader reports it and we retry the item
                idle.item = None
                self._pending.appendleft(item)
                self._forget(idle)

    def _spawn(self) -> _Worker:
        ours, theirs = socket.socketpair()
        env = {**os.environ, "NBFLOW_WORKER_SYS_PATH": json.dumps(sys.path)}
        proc = subprocess.Popen(
            [sys.executable, "-m", "nbflow.executors.local", str(theirs.fileno())],
            pass_fds=[theirs.fileno()],
            stdin=subprocess.DEVNULL,
            env=env,
        )
        theirs.close()
        parent = Connection(ours.detach())
        worker = _Worker(proc, parent)
        self._workers[parent] = worker
        self._wake()
        return worker

    def _forget(self, worker: _Worker) -> None:
        self._workers.pop(worker.conn, None)
        try:
            worker.conn.close()
        except OSError:
            pass

    # -- events ---------------------------------------------------------------------------------
    def poll(self, timeout: float | None) -> list[Event]:
        """Wait up to ``timeout`` for an event, then return all that are ready."""
        return drain(self._events, timeout)

    def _wake(self) -> None:
        try:
            self._wake_w.send_bytes(b"")
        except OSError:
            pass

    def _read_loop(self) -> None:
        while True:
            with self._lock:
                if self._closing and not self._workers:
                    return
                conns: list[Any] = [*self._workers, self._wake_r]
            for conn in cast(list[Connection], wait(conns)):  # only Connections are waited on
                if conn is self._wake_r:
                    self._wake_r.recv_bytes()
                    continue
                with self._lock:
                    worker = self._workers.get(conn)
                if worker is None:
                    continue
                try:
                    message = pickle.loads(conn.recv_bytes())
                except (EOFError, OSError):
                    self._on_exit(worker)
                    continue
                self._on_message(worker, message)

    def _on_message(self, worker: _Worker, message: tuple) -> None:
        if message[0] == "started":
            _, key, at, host, pid = message
            worker.started = True
            self._events.put(Event("started", key, at, host, pid))
            return
        if message[0] == "process":
            worker.groups.add(message[2])
            return
        _, key, result = message
        with self._lock:
            worker.item = None
            worker.groups.clear()
            self._cancelling.discard(key)
            self._events.put(Event("finished", key, result.ended_at, result.hostname, result.pid, result=result))
            self._dispatch()

    def _on_exit(self, worker: _Worker) -> None:
        for pgid in worker.groups:  # a killed worker could not stop its kernel or shell itself
            procs.signal_group(pgid, signal.SIGKILL)
        try:
            code = worker.process.wait(5)
        except subprocess.TimeoutExpired:
            code = None
        with self._lock:
            self._forget(worker)
            item, worker.item = worker.item, None
            if item is not None:
                cancelled = item.key in self._cancelling
                self._cancelling.discard(item.key)
                how = f"signal {signal.Signals(-code).name}" if code is not None and code < 0 else f"exit code {code}"
                doing = "while running the task" if worker.started else "before the task started"
                self._events.put(
                    Event(
                        "lost",
                        item.key,
                        now(),
                        HOSTNAME,
                        worker.pid,
                        reason="cancelled" if cancelled else "worker_lost",
                        message=f"worker process {worker.pid} ended ({how}) {doing}",
                        started=worker.started,
                    )
                )
            self._dispatch()

    # -- cancelling -------------------------------------------------------------------------------
    def cancel(self, key: str) -> None:
        """Drop a queued attempt, or terminate the worker running it (kills its kernel/shell)."""
        with self._lock:
            for item in list(self._pending):
                if item.key == key:
                    self._pending.remove(item)
                    self._events.put(
                        Event("lost", key, now(), reason="cancelled", message="cancelled before it started")
                    )
                    return
            for worker in self._workers.values():
                if worker.item is not None and worker.item.key == key:
                    self._cancelling.add(key)
                    self._terminate(worker)
                    return

    def _terminate(self, worker: _Worker) -> None:
        """SIGTERM the worker (it kills what it started and exits); SIGKILL after the grace.
        The reader thread reaps it and reports its attempt."""
        procs.terminate_later([worker.pid], self.kill_grace + 1, name=f"nbflow-stop-worker-{worker.pid}")


if __name__ == "__main__":  # a worker process: python -m nbflow.executors.local FD
    for entry in reversed(json.loads(os.environ.pop("NBFLOW_WORKER_SYS_PATH", "[]"))):
        if entry not in sys.path:
            sys.path.insert(0, entry)
    _worker_main(Connection(int(sys.argv[1])))
