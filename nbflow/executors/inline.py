"""``inline``: run attempts one at a time in this process and thread (debugging, tests)."""

from __future__ import annotations

import os
from collections import deque

from nbflow.executors.base import Event, Executor, now
from nbflow.tasks import kernelpool
from nbflow.worker import HOSTNAME, WorkItem, kill_attempt, run_work_item


class InlineExecutor(Executor):
    """Runs each attempt inside :meth:`poll`: first reports it started, then runs it."""

    name = "inline"
    guarantee = (
        "attempts run inside this process: one in flight when it dies runs again under the next driver (at least once)"
    )
    runs_in_poll = True

    def __init__(self, parallelism: int | None = None, **options: object):
        super().__init__(1, **options)
        # pre-started kernels in this process once it has run a notebook (drained at exit)
        kernelpool.activate(slots=1)
        self._queue: deque[WorkItem] = deque()
        self._started: WorkItem | None = None
        self._promised: str | None = None  # key of the attempt start_now said starts next
        self._running: str | None = None  # key of the attempt poll() is running now

    def start_now(self, items: list[WorkItem]) -> list[Event]:
        """The first of ``items`` when nothing runs or waits: it runs at the next poll (a
        promise for the submission that follows, and only that one)."""
        self._promised = None
        if self._started is not None or self._queue or not items:
            return []
        self._promised = items[0].key
        return [Event("started", items[0].key, now(), HOSTNAME, os.getpid())]

    def submit(self, item: WorkItem) -> None:
        """Queue the attempt; it runs during a later :meth:`poll`."""
        if item.key == self._promised and self._started is None:
            self._started, self._promised = item, None  # its start is recorded already
        else:
            self._queue.append(item)

    def poll(self, timeout: float | None) -> list[Event]:
        """Run the started attempt and report its end together with the next one's start.

        Pairing them keeps the store's view honest (the next task is reported running just
        before it runs) at one write transaction per task.
        """
        events = []
        if self._started is not None:
            item, self._started = self._started, None
            self._running = item.key
            try:
                result = run_work_item(item)
            finally:
                self._running = None
            events.append(Event("finished", item.key, result.ended_at, result.hostname, result.pid, result=result))
        if self._queue:
            self._started = self._queue.popleft()
            events.append(Event("started", self._started.key, now(), HOSTNAME, os.getpid()))
        if not events and timeout:
            import time

            time.sleep(timeout)
        return events

    def cancel(self, key: str) -> None:
        """Drop a queued or started attempt; one running now is killed (:meth:`interrupt`)."""
        self.interrupt(key)
        if self._started is not None and self._started.key == key:
            self._started = None
        if self._promised == key:
            self._promised = None
        for item in list(self._queue):
            if item.key == key:
                self._queue.remove(item)

    def interrupt(self, key: str) -> None:
        """Kill the process groups (kernel, shell command, timeout child) of the attempt that
        :meth:`poll` is running, if it is ``key``; its result then says ``cancelled``. A Python
        function running in this thread itself cannot be stopped: it ends when it returns."""
        if self._running == key:
            kill_attempt(key, self.kill_grace)

    def describe(self) -> str:
        """``inline (in this process)``."""
        return "inline (in this process)"
