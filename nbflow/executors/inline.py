"""``inline``: run attempts one at a time in this process and thread (debugging, tests)."""

from __future__ import annotations

import os
from collections import deque

from nbflow.executors.base import Event, Executor, now
from nbflow.worker import HOSTNAME, WorkItem, run_work_item


class InlineExecutor(Executor):
    """Runs each attempt inside :meth:`poll`: first reports it started, then runs it."""

    name = "inline"

    def __init__(self, parallelism: int | None = None, **options: object):
        super().__init__(1, **options)
        self._queue: deque[WorkItem] = deque()
        self._started: WorkItem | None = None
        self._promised: str | None = None  # key of the attempt start_now said starts next

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
            result = run_work_item(item)
            events.append(Event("finished", item.key, result.ended_at, result.hostname, result.pid, result=result))
        if self._queue:
            self._started = self._queue.popleft()
            events.append(Event("started", self._started.key, now(), HOSTNAME, os.getpid()))
        if not events and timeout:
            import time

            time.sleep(timeout)
        return events

    def cancel(self, key: str) -> None:
        """Drop a queued attempt (a running inline attempt cannot be interrupted)."""
        for item in list(self._queue):
            if item.key == key:
                self._queue.remove(item)

    def describe(self) -> str:
        """``inline (in this process)``."""
        return "inline (in this process)"
