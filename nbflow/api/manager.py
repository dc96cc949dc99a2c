"""The managed scheduler: one ``nbflow scheduler`` per home, started by whoever needs one.

The Jupyter server extension calls :func:`start_scheduler` when it starts and whenever it
queues a run: when no live scheduler holds the lease on the database, it spawns
``python -m nbflow scheduler`` as a detached process (a session of its own, so scheduled runs
go on after JupyterLab closes or restarts; its log is ``$NBFLOW_HOME/scheduler/scheduler.log``).
It never runs a scheduler in the caller's process. Two servers on one home start one
scheduler: spawns are serialised by a lock file and a scheduler that is still starting counts
as serving; beyond that the database's lease decides (SQLite refuses a second scheduler).

:func:`scheduler_state` says whether one runs (since when, how old its heartbeat is) or why
not; :func:`waiting_reason` says why a queued run has not been picked up.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from nbflow.api.pipelines import (
    background_driver_alive,
    import_error_text,
    scheduler_alive,
)
from nbflow.api.runs import open_store
from nbflow.api.spawn import spawn_once, spawned_pid, starting
from nbflow.states import RunState
from nbflow.store import Store
from nbflow.store.orm import utcnow

FOLDER = "scheduler"  # under NBFLOW_HOME: scheduler.pid, scheduler.log, scheduler.lock
#: seconds a queued run may wait for a driver before the UI is told why it waits
STALL_AFTER = 5.0


def start_scheduler(
    *, dags_folder: str | None = None, cwd: str | None = None, store: Store | None = None
) -> int | None:
    """Spawn a detached ``nbflow scheduler`` for this home unless a live one holds the lease
    (or one is starting); returns its pid (None: one serves already)."""
    store = store or open_store()
    folder = dags_folder or store.settings.dags_folder
    return spawn_once(
        store, FOLDER, "scheduler", ["scheduler", "--dags-folder", folder], lambda: scheduler_alive(store), cwd=cwd
    )


def scheduler_log(store: Store | None = None) -> str:
    """Where the managed scheduler writes its output."""
    store = store or open_store()
    return str(store.settings.home / FOLDER / "scheduler.log")


def scheduler_state(*, store: Store | None = None) -> dict[str, Any]:
    """``{"state": running | starting | stopped, "since", "heartbeat_age", "reason", "pid",
    "hostname", "log"}``: the live scheduler with the freshest heartbeat, else the last one and
    why it stopped (or that a managed one is starting)."""
    store = store or open_store()
    now = utcnow()
    jobs = sorted(
        store.live_jobs(store.settings.orphan_timeout, kinds=("scheduler",)).values(),
        key=lambda j: j["heartbeat_at"],
        reverse=True,
    )
    answer: dict[str, Any] = {"log": scheduler_log(store)}
    if jobs:
        job = jobs[0]
        return {
            **answer,
            "state": "running",
            "since": job["started_at"],
            "heartbeat_age": _age(now, job["heartbeat_at"]),
            "reason": None,
            "pid": job["pid"],
            "hostname": job["hostname"],
        }
    pidfile = store.settings.home / FOLDER / "scheduler.pid"
    if starting(pidfile, "scheduler"):
        return {
            **answer,
            "state": "starting",
            "since": None,
            "heartbeat_age": None,
            "pid": spawned_pid(pidfile, "scheduler"),
            "hostname": None,
            "reason": "a scheduler was started moments ago and does not hold its lease yet",
        }
    last = store.last_job("scheduler")
    if last is None:
        reason = "no scheduler has run on this database yet"
    elif last["state"] == "stopped":
        reason = f"the scheduler (pid {last['pid']} on {last['hostname']}) stopped at {_clock(last['ended_at'])}"
    else:
        reason = (
            f"the scheduler (pid {last['pid']} on {last['hostname']}) stopped sending heartbeats at "
            f"{_clock(last['heartbeat_at'])}: it was killed, or its machine is away"
        )
    said = _last_words(store)
    if said:
        reason += f"; its log ends: {said}"
    return {
        **answer,
        "state": "stopped",
        "since": last["ended_at"] or last["heartbeat_at"] if last else None,
        "heartbeat_age": _age(now, last["heartbeat_at"]) if last else None,
        "reason": reason,
        "pid": None,
        "hostname": None,
    }


def waiting_reason(run: dict[str, Any], *, store: Store | None = None) -> str | None:
    """Why a queued run that no driver took has waited more than :data:`STALL_AFTER` seconds
    (None: it is not waiting, or not for long)."""
    if run["state"] != RunState.QUEUED.value or run.get("driver_id") is not None:
        return None
    waited = _age(utcnow(), run["created_at"])
    if waited < STALL_AFTER:
        return None
    store = store or open_store()
    row = store.get_pipeline(run["pipeline"])
    if row is not None and not row["file"]:
        return (
            f"queued {waited:.0f} s ago, but pipeline '{run['pipeline']}' exists only in a notebook kernel: "
            'no scheduler can load it (save the notebook and use "Run as pipeline")'
        )
    alive = scheduler_alive(store)
    broken = {e["filename"]: e for e in store.import_errors()}.get(row["file"] if row is not None else "")
    if broken is not None:
        who = (
            "the scheduler runs the version it loaded last, if it has one"
            if alive
            else ("no scheduler is running to run the version it loaded last, and no other driver can load the file")
        )
        return f"queued {waited:.0f} s ago; its file is broken ({import_error_text(broken)}): {who}"
    if alive:
        return (
            f"queued {waited:.0f} s ago and the scheduler has not taken it yet (max_active_runs reached, or "
            f"its file cannot be loaded: see {scheduler_log(store)})"
        )
    if background_driver_alive(store):
        return f"queued {waited:.0f} s ago; the background driver has not taken it yet"
    return f"queued {waited:.0f} s ago and no scheduler is running: start one (Start in the nbflow panel, or `nbflow scheduler`)"


def _age(now: datetime, then: datetime | None) -> float:
    return max(0.0, (now - then).total_seconds()) if then is not None else 0.0


def _clock(when: datetime | None) -> str:
    return when.strftime("%Y-%m-%d %H:%M:%S UTC") if when is not None else "an unknown time"


def _last_words(store: Store) -> str:
    """The last non-empty line of the managed scheduler's log when its process is gone."""
    path = store.settings.home / FOLDER / "scheduler.log"
    if spawned_pid(path.with_suffix(".pid"), "scheduler") is not None or not path.is_file():
        return ""
    with open(path, "rb") as fh:
        fh.seek(max(0, path.stat().st_size - 2000))
        lines = [line.strip() for line in fh.read().decode("utf-8", "replace").splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


__all__ = ["STALL_AFTER", "scheduler_log", "scheduler_state", "start_scheduler", "waiting_reason"]
