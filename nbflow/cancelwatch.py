"""Notice runs cancelled from elsewhere while an executor runs an attempt in the caller's thread.

The ``inline`` executor runs each attempt inside ``poll()``. The driver's loop, which reads
the state of its runs every ``cancel_poll`` (:class:`~nbflow.driver.Driver`: ``nbflow run``,
the scheduler), is blocked for as long as that attempt runs, so a run cancelled from the CLI
or the web UI would go on until the attempt ended by itself. A :class:`CancelWatch` reads the states from a thread of its own
while such a poll lasts longer than ``interval``, and calls ``on_cancel(run_id)`` for each
run found cancelled; the caller kills that run's running attempt
(:meth:`Executor.interrupt`), and its own loop cancels the rest as usual once ``poll()``
returns.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from nbflow.states import RunState

__all__ = ["CancelWatch"]

log = logging.getLogger(__name__)


class CancelWatch:
    """Reads run states while :meth:`polling` lasts longer than ``interval``; a no-op unless ``enabled``."""

    def __init__(
        self,
        store: Any,
        interval: float,
        run_ids: Callable[[], Iterable[int]],
        on_cancel: Callable[[int], None],
        *,
        enabled: bool = True,
    ):
        self.store, self.interval, self.run_ids, self.on_cancel = store, interval, run_ids, on_cancel
        self.enabled = enabled
        self._since: float | None = None  # when the poll in progress began
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @contextlib.contextmanager
    def polling(self) -> Iterator[None]:
        """Wrap one ``executor.poll(...)``: run states are read while it lasts longer than ``interval``."""
        if not self.enabled:
            yield
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._watch, name="nbflow-cancel-watch", daemon=True)
            self._thread.start()
        self._since = time.monotonic()
        try:
            yield
        finally:
            self._since = None

    def close(self) -> None:
        """Stop the thread (if it was started)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.interval + 5)
            self._thread = None

    def _watch(self) -> None:
        while not self._stop.wait(self.interval):
            since = self._since
            if since is None or time.monotonic() - since < self.interval:
                continue
            try:
                states = self.store.run_states(list(self.run_ids()))
            except Exception as exc:  # noqa: BLE001 - the main loop meets the same error and reports it
                log.debug("cancel watch: could not read run states: %s", exc)
                continue
            for run_id, state in states.items():  # again each interval while the poll lasts: a kill may miss
                if state == RunState.CANCELLED.value and self._since is not None:
                    self.on_cancel(run_id)
