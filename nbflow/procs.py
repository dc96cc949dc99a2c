"""Stopping what an attempt started: SIGTERM to a process group, a grace, then SIGKILL.

Every process an attempt starts (a notebook's kernel, a shell command, a Python function's
timeout child) leads a process group of its own, so signalling the group also reaches what
*it* started. One sequence serves every caller: :func:`terminate` (wait here),
:func:`terminate_later` (wait in a thread, for callers on an event loop) and :func:`kill_now`.
The grace is always the caller's ``kill_grace`` setting (``NBFLOW_KILL_GRACE``).

A process that must not outlive the one that started it even when that one is SIGKILLed (a
worker's pre-started kernels) is started by :func:`in_lasting_thread` with the ``preexec_fn``
of :func:`parent_death_preexec`: Linux's ``PR_SET_PDEATHSIG`` sends the child SIGKILL when the
*thread* that forked it ends, so the fork happens on one thread that lives as long as the
process (never on a short-lived one, whose end would kill the child at once).
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing.process
import os
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from typing import Any, Protocol, TypeVar

__all__ = [
    "terminate",
    "terminate_later",
    "kill_now",
    "kill_descendants",
    "signal_group",
    "alive",
    "waiter",
    "parent_death_preexec",
    "in_lasting_thread",
    "KILL_WAIT",
    "POLL",
    "stop_hook",
    "run_stop_hooks",
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


class PopenLike(Protocol):
    """What :func:`waiter` uses of a ``subprocess.Popen`` (also a kernel zygote's fork)."""

    def wait(self, timeout: float | None = None) -> int: ...


def waiter(proc: PopenLike | multiprocessing.process.BaseProcess) -> Callable[[float], bool]:
    """An ``exited`` callable for :func:`terminate`: waits for (and reaps) a ``subprocess.Popen``
    (or an object with its ``wait``, raising ``TimeoutExpired``) or a ``multiprocessing`` process,
    and says whether it is gone."""
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


# --- children that die with this process ----------------------------------------------------------

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
T = TypeVar("T")


def _prctl() -> Any:
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # not Linux (no prctl): the caller goes without
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    return prctl


def parent_death_preexec(sig: int = signal.SIGKILL) -> Callable[[], None] | None:
    """A ``preexec_fn`` for a child that gets ``sig`` when the thread forking it ends (so also when
    this process dies, however: SIGKILL too); None where Linux's ``PR_SET_PDEATHSIG`` is missing.

    Fork such children with :func:`in_lasting_thread` only. A child whose parent died between the
    fork and the ``prctl`` exits at once (its parent pid is no longer this process's).
    """
    prctl = _prctl()
    if prctl is None:
        return None
    parent = os.getpid()

    def preexec() -> None:  # runs in the child, between fork and exec
        prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)

    return preexec


class _LastingThread:
    """One daemon thread per process that runs the calls given to it, and never ends."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._calls: queue.SimpleQueue[tuple[Callable[[], Any], Future]] = queue.SimpleQueue()

    def run(self, fn: Callable[[], T]) -> T:
        with self._lock:
            if self._pid != os.getpid():  # first call, or a forked child (it has no such thread)
                self._calls = queue.SimpleQueue()
                threading.Thread(target=self._serve, args=(self._calls,), name="nbflow-lasting", daemon=True).start()
                self._pid = os.getpid()
            calls = self._calls
        done: Future = Future()
        calls.put((fn, done))
        return done.result()

    @staticmethod
    def _serve(calls: queue.SimpleQueue) -> None:
        while True:
            fn, done = calls.get()
            try:
                done.set_result(fn())
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                done.set_exception(exc)


_lasting = _LastingThread()


def in_lasting_thread(fn: Callable[[], T]) -> T:
    """Call ``fn()`` on this process's lasting thread (started on first use, never ended) and
    return its result or raise its exception: children forked there with
    :func:`parent_death_preexec` live until this process ends, not until the caller's thread does."""
    return _lasting.run(fn)


# --- what a process told to stop must undo elsewhere first ------------------------------------------

_stop_hooks: list[Callable[[], None]] = []


@contextlib.contextmanager
def stop_hook(hook: Callable[[], None]) -> Iterator[None]:
    """While the block runs, ``hook()`` is called if this process is told to stop (a ``local``
    worker's SIGTERM, before it kills its children and exits): for work that lives outside it,
    e.g. a SQL task's statement running on a database server, which a dead client does not stop."""
    _stop_hooks.append(hook)
    try:
        yield
    finally:
        _stop_hooks.remove(hook)


def run_stop_hooks() -> None:
    """Call every :func:`stop_hook` registered now (newest first); their errors are ignored."""
    for hook in reversed(list(_stop_hooks)):
        try:
            hook()
        except Exception:  # noqa: BLE001,S110 - the process is stopping: the other hooks still run
            pass
