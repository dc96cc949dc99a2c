"""Stopping what an attempt started: SIGTERM to a process group, a grace, then SIGKILL.

Every process an attempt starts (a notebook's kernel, a shell command, a Python function's
timeout child) leads a process group of its own, so signalling the group also reaches what
*it* started. One sequence serves every caller: :func:`terminate` (wait here),
:func:`terminate_later` (wait in a thread, for callers on an event loop) and :func:`kill_now`.
The grace is always the caller's ``kill_grace`` setting (``NBFLOW_KILL_GRACE``).
"""

from __future__ import annotations

import multiprocessing.process
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable

__all__ = [
    "terminate",
    "terminate_later",
    "kill_now",
    "kill_descendants",
    "signal_group",
    "alive",
    "waiter",
    "KILL_WAIT",
    "POLL",
]

KILL_WAIT = 5.0  # seconds to wait for a group leader to exit after SIGKILL
POLL = 0.05  # seconds between checks that a process has exited


def signal_group(pgid: int, sig: int) -> None:
    """Send ``sig`` to process group ``pgid`` (or to the process, if it leads no group); gone is fine."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        try:
            os.kill(pgid, sig)
        except ProcessLookupError:
            pass
    except PermissionError:  # a pid reused by another user's process: not ours to signal
        pass


def alive(pid: int) -> bool:
    """Whether process ``pid`` exists (a zombie counts until it is reaped)."""
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def _groups(pgids: int | Iterable[int]) -> list[int]:
    return [pgids] if isinstance(pgids, int) else list(pgids)


def _gone(pgids: list[int]) -> Callable[[float], bool]:
    def wait(timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while any(alive(p) for p in pgids):
            if time.monotonic() >= deadline:
                return False
            time.sleep(POLL)
        return True

    return wait


def terminate(
    pgids: int | Iterable[int],
    grace: float,
    *,
    exited: Callable[[float], bool] | None = None,
    stop: threading.Event | None = None,
) -> bool:
    """SIGTERM the group(s), wait up to ``grace`` seconds for them to exit, then SIGKILL.

    ``exited(timeout)`` waits for the leader and says whether it is gone (give the child's
    own wait, e.g. ``Popen.wait``, so that it is also reaped); by default the pids are polled.
    With ``stop``, a set event ends the grace early and skips the SIGKILL (its setter takes
    over the cleanup). Returns whether they ended within the grace.
    """
    groups = _groups(pgids)
    for pgid in groups:
        signal_group(pgid, signal.SIGTERM)
    return _grace_then_kill(groups, grace, exited or _gone(groups), stop)


def _grace_then_kill(
    groups: list[int], grace: float, wait: Callable[[float], bool], stop: threading.Event | None
) -> bool:
    deadline = time.monotonic() + grace
    step = POLL if stop is not None else grace
    while True:
        left = deadline - time.monotonic()
        if wait(max(0.0, min(left, step))):
            return True
        if stop is not None and stop.is_set():
            return False
        if left <= 0:
            break
    kill_now(groups, exited=wait)
    return False


def kill_now(pgids: int | Iterable[int], *, exited: Callable[[float], bool] | None = None) -> None:
    """SIGKILL the group(s) and wait up to :data:`KILL_WAIT` for the leader(s) to go."""
    groups = _groups(pgids)
    for pgid in groups:
        signal_group(pgid, signal.SIGKILL)
    (exited or _gone(groups))(KILL_WAIT)


def terminate_later(pgids: Iterable[int], grace: float, *, name: str = "nbflow-kill") -> threading.Thread:
    """:func:`terminate` from a daemon thread: SIGTERM is sent before this returns, the
    grace and the SIGKILL follow in the background. Returns the thread."""
    groups = _groups(pgids)
    for pgid in groups:
        signal_group(pgid, signal.SIGTERM)
    thread = threading.Thread(
        target=_grace_then_kill, args=(groups, grace, _gone(groups), None), name=name, daemon=True
    )
    thread.start()
    return thread


def waiter(proc: subprocess.Popen | multiprocessing.process.BaseProcess) -> Callable[[float], bool]:
    """An ``exited`` callable for :func:`terminate`: waits for (and reaps) a ``subprocess.Popen``
    or a ``multiprocessing`` process, and says whether it is gone."""
    if isinstance(proc, multiprocessing.process.BaseProcess):

        def join(timeout: float) -> bool:
            proc.join(timeout)
            return not proc.is_alive()

        return join

    def wait(timeout: float) -> bool:
        try:
            proc.wait(timeout=timeout)
            return True
        except subprocess.TimeoutExpired:
            return False

    return wait


def kill_descendants(timeout: float = KILL_WAIT) -> None:
    """SIGKILL every process this one started, at any depth (a worker process about to exit)."""
    import psutil

    children = psutil.Process().children(recursive=True)
    for child in children:
        try:
            child.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(children, timeout=timeout)
