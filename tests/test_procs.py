"""nbflow/procs.py: the one SIGTERM -> grace -> SIGKILL sequence, on real process groups."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest

from nbflow import procs

IGNORES_TERM = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(60)"
)
CHILD_OF_GROUP = (
    "import subprocess, time; p = subprocess.Popen(['sleep', '60']); print(p.pid, flush=True); time.sleep(60)"
)


def _group(code: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, start_new_session=True)
    proc.first_line = proc.stdout.readline().strip()  # type: ignore[attr-defined]
    return proc


def test_a_group_that_obeys_sigterm_ends_within_the_grace():
    proc = _group(CHILD_OF_GROUP)
    child = int(proc.first_line)  # type: ignore[attr-defined]
    started = time.monotonic()
    assert procs.terminate(proc.pid, 10.0, exited=procs.waiter(proc)) is True
    assert time.monotonic() - started < 5  # not the 10 s grace
    assert proc.returncode is not None  # reaped by the waiter
    for _ in range(100):  # the group's other member got SIGTERM too
        if not procs.alive(child):
            break
        time.sleep(0.05)
    assert not procs.alive(child)


def test_a_group_that_ignores_sigterm_is_killed_after_the_grace():
    proc = _group(IGNORES_TERM)
    started = time.monotonic()
    assert procs.terminate(proc.pid, 0.5, exited=procs.waiter(proc)) is False
    took = time.monotonic() - started
    assert 0.5 <= took < 5 and proc.returncode == -9


def test_terminate_later_returns_at_once_and_kills_after_the_grace():
    proc = _group(IGNORES_TERM)
    started = time.monotonic()
    thread = procs.terminate_later([proc.pid], 0.5)
    assert time.monotonic() - started < 0.2
    assert proc.wait(10) == -9 and time.monotonic() - started >= 0.5
    thread.join(10)
    assert not thread.is_alive()


def test_a_stop_event_ends_the_grace_without_killing():
    proc = _group(IGNORES_TERM)
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    started = time.monotonic()
    assert procs.terminate(proc.pid, 30.0, exited=procs.waiter(proc), stop=stop) is False
    assert time.monotonic() - started < 5 and proc.poll() is None  # handed over: still alive
    procs.kill_now(proc.pid, exited=procs.waiter(proc))
    assert proc.returncode == -9


def test_signalling_a_group_that_is_gone_is_harmless():
    proc = _group(CHILD_OF_GROUP)
    procs.kill_now(proc.pid, exited=procs.waiter(proc))
    procs.signal_group(proc.pid, 15)  # no ProcessLookupError
    assert procs.terminate(proc.pid, 0.1, exited=procs.waiter(proc)) is True


@pytest.mark.parametrize("grace", [0.0, 0.2])
def test_a_multiprocessing_child_is_joined(grace):
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    proc = ctx.Process(target=time.sleep, args=(60,), daemon=True)
    proc.start()
    procs.terminate(proc.pid, grace, exited=procs.waiter(proc))
    assert not proc.is_alive() and proc.exitcode is not None


def test_a_child_bound_to_this_process_outlives_the_thread_that_asked_for_it():
    """PR_SET_PDEATHSIG fires when the forking *thread* ends: children are forked on the lasting
    thread, so the short-lived thread that asks for one can end without killing it."""
    preexec = procs.parent_death_preexec()
    if preexec is None:
        pytest.skip("no prctl(PR_SET_PDEATHSIG) here")
    started: list[subprocess.Popen] = []

    def ask() -> None:
        started.append(procs.in_lasting_thread(lambda: subprocess.Popen(["sleep", "30"], preexec_fn=preexec)))

    thread = threading.Thread(target=ask)
    thread.start()
    thread.join()
    time.sleep(0.3)
    child = started[0]
    try:
        assert child.poll() is None, "the child died with the thread that asked for it"
    finally:
        child.kill()
        child.wait()
