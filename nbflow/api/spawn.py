"""Detached nbflow processes started once per home: the background driver and the managed scheduler.

:func:`spawn_once` starts ``python -m nbflow ARGS`` in a session of its own (it outlives the
process that started it: a Jupyter server that stops or restarts, a notebook kernel), its
output appended to a log under ``$NBFLOW_HOME/<folder>/``. Spawns of one kind are serialised
by a lock file, and a process spawned a moment ago that does not hold its lease yet counts as
serving, so ten callers at once start one process, not ten. The child is reaped when it exits
(a thread waits for it), so a long-lived caller collects no zombies.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from nbflow.store import Store

#: seconds a spawned process may take to hold its lease
STARTING = 15.0


def spawn_once(
    store: Store, folder: str, name: str, args: Sequence[str], serving: Callable[[], bool], *, cwd: str | None = None
) -> int | None:
    """Start ``python -m nbflow *args`` detached unless ``serving()`` or one spawned moments ago
    is still starting; returns its pid (None: one serves). Its pid is kept in
    ``$NBFLOW_HOME/<folder>/<name>.pid``, its output in ``<name>.log`` there."""
    where = store.settings.home / folder
    where.mkdir(parents=True, exist_ok=True)
    with open(where / f"{name}.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        pidfile = where / f"{name}.pid"
        if starting(pidfile, args[0]) or serving():
            return None
        with open(where / f"{name}.log", "ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "nbflow", *args],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=cwd,
                env={**os.environ, "NBFLOW_HOME": str(store.settings.home), "NBFLOW_DB_URL": store.url},
            )
        pidfile.write_text(str(proc.pid))
    threading.Thread(target=proc.wait, name=f"nbflow-reap-{proc.pid}", daemon=True).start()
    return proc.pid


def spawned_pid(pidfile: Path, command: str) -> int | None:
    """The pid in ``pidfile`` when that process is alive and runs ``nbflow COMMAND``."""
    import psutil

    try:
        proc = psutil.Process(int(pidfile.read_text()))
        if proc.status() != psutil.STATUS_ZOMBIE and command in proc.cmdline():
            return proc.pid
    except (OSError, ValueError, psutil.Error):
        pass
    return None


def starting(pidfile: Path, command: str) -> bool:
    """Whether the process spawned last is still starting (alive, spawned moments ago)."""
    import psutil

    pid = spawned_pid(pidfile, command)
    try:
        return pid is not None and time.time() - psutil.Process(pid).create_time() < STARTING
    except psutil.Error:
        return False
