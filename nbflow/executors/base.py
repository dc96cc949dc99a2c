"""The executor interface: submit work items, then poll for events about them.

An executor never touches the metadata database. The engine submits
:class:`~nbflow.worker.WorkItem` objects and calls :meth:`Executor.poll`, which blocks
until at least one :class:`Event` is available (or the timeout passes):

* ``started``  -- a worker began the attempt (host and pid known);
* ``finished`` -- the attempt ended; ``result`` is the worker's record;
* ``lost``     -- the attempt will never report (worker died, cancelled); ``reason`` says why;
* ``note``     -- something worth showing about a waiting attempt (``message``), e.g. that
  no worker serves its queue.
"""

from __future__ import annotations

import queue
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from nbflow.config import get_settings
from nbflow.record import AttemptRecord
from nbflow.worker import WorkItem, read_started


@dataclass
class Event:
    """Something an executor observed about one attempt."""

    kind: str  # "started" | "finished" | "lost"
    key: str
    at: float
    hostname: str | None = None
    pid: int | None = None
    result: AttemptRecord | None = None
    reason: str | None = None
    message: str = ""
    #: of a ``lost`` attempt: whether its worker had begun it (None: not known, taken as begun).
    #: One that had not waited in the dead worker's queue and is resubmitted, charging nothing.
    started: bool | None = None


@dataclass
class ClusterWorker:
    """One worker as its cluster reports it (a Dask scheduler, a Celery broker's replies);
    ``processing``: the executor keys (attempt keys) it runs now."""

    address: str
    name: str
    host: str
    slots: int
    queues: list[str]
    resources: dict[str, float]
    memory: int | None
    memory_limit: int | None
    cpu: float | None
    #: seconds since the cluster last heard from the worker
    last_seen_s: float | None
    processing: list[str] = field(default_factory=list)


class Executor(ABC):
    """Runs work items somewhere; subclasses register under the ``nbflow.executors`` entry point."""

    name = "base"
    #: What happens to an attempt in flight when the driving process dies (``nbflow run`` says it).
    guarantee = "an attempt in flight when this process dies runs again under the next driver (at least once)"
    #: Whether workers should also write each result to the attempt folder (executors whose
    #: work survives the driver, so a restarted driver can adopt it).
    durable_results = False
    #: Whether attempts run inside :meth:`poll`, in the caller's thread (``inline``): the
    #: caller then watches for cancellations from another thread and calls :meth:`interrupt`.
    runs_in_poll = False

    def __init__(self, parallelism: int | None = None, **options: Any):
        self.parallelism = parallelism
        self.options = options
        #: seconds from SIGTERM to SIGKILL when an attempt's processes are killed
        self.kill_grace = float(options.get("kill_grace", get_settings().kill_grace))

    def start(self) -> None:
        """Acquire resources (processes, clusters). Called once before the first submit."""

    @abstractmethod
    def submit(self, item: WorkItem) -> None:
        """Hand over one attempt; returns at once."""

    def submit_many(self, items: list[WorkItem]) -> None:
        """Hand over the attempts one engine step made ready (executors may batch them)."""
        for item in items:
            self.submit(item)

    def start_now(self, items: list[WorkItem]) -> list[Event]:
        """``started`` events for those of ``items`` (about to be submitted) that will start
        at once, with nothing before them: the engine records them running in the same
        transaction that queues them, instead of one more transaction after they start."""
        return []

    @abstractmethod
    def poll(self, timeout: float | None) -> list[Event]:
        """Events since the last call; waits up to ``timeout`` seconds (None: until one arrives)."""

    def adopt(self, key: str, attempt_folder: str) -> bool:
        """Re-attach to an attempt a previous driver submitted; True if its events will follow."""
        return False

    def cancel(self, key: str) -> None:
        """Stop one attempt (kill its kernel or process); a ``lost`` event follows."""

    def interrupt(self, key: str) -> None:
        """Kill the attempt ``key`` if it is running inside :meth:`poll` right now (called from
        another thread while ``poll`` blocks; only executors with :attr:`runs_in_poll`)."""

    def shutdown(self) -> None:
        """Release resources; running attempts are stopped."""

    def describe(self) -> str:
        """One line for progress output."""
        return self.name

    def __enter__(self) -> Executor:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()


def attempt_key(pipeline: str, task_id: str, run_id: int, try_number: int, nonce: str) -> str:
    """``{pipeline}.{task}-{run}-{try}-{nonce}``: unique per attempt and driver; see :func:`key_run_id`."""
    return f"{pipeline}.{task_id}-{run_id}-{try_number}-{nonce}"


def key_run_id(key: str) -> int | None:
    """The run id an :func:`attempt_key` names (pipeline and task names may hold "-"; the last three parts do not)."""
    try:
        return int(key.rsplit("-", 3)[-3])
    except (IndexError, ValueError):
        return None


def drain(events: queue.Queue[Event], timeout: float | None) -> list[Event]:
    """Wait up to ``timeout`` for one event on ``events``, then take all that are ready."""
    try:
        out = [events.get(timeout=timeout)]
    except queue.Empty:
        return []
    while True:
        try:
            out.append(events.get_nowait())
        except queue.Empty:
            return out


def now() -> float:
    """Wall-clock seconds (the time base of events)."""
    return time.time()


def finished(result: AttemptRecord) -> Event:
    """The ``finished`` event of a worker's result record."""
    return Event("finished", result.key, result.ended_at, result.hostname, result.pid, result=result)


def worker_lost(key: str, folder: str | None, message: str) -> Event:
    """A ``worker_lost`` event: ``started`` (with the marker's host and pid) when the worker
    had begun the attempt, else not (it waited in the dead worker's queue); ``folder`` None:
    not known here, the engine counts it as started."""
    if folder is None:
        return Event("lost", key, now(), reason="worker_lost", message=message)
    marker = read_started(folder)
    if marker is None or marker.get("key") != key:
        return Event("lost", key, now(), reason="worker_lost", message=message, started=False)
    return Event("lost", key, now(), marker["host"], marker["pid"], reason="worker_lost", message=message, started=True)
