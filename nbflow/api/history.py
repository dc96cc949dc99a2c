"""A pipeline's history at a glance: the grid (runs × tasks), task durations over runs, the
schedule in words with its next run, and a person's "mark success / mark failed"."""

from __future__ import annotations

from typing import Any

from nbflow.api.pipelines import _definition
from nbflow.api.runs import open_store
from nbflow.exceptions import StateConflictError, UnknownTaskError
from nbflow.graph import toposort
from nbflow.rules import run_outcome
from nbflow.schedule import Schedule, get_timezone, normalize
from nbflow.setupteardown import by_id, teardown_ids
from nbflow.states import TaskState
from nbflow.store import Store
from nbflow.store.orm import utcnow


def run_grid(name: str, *, limit: int = 25, offset: int = 0, store: Store | None = None) -> dict[str, Any]:
    """The newest ``limit`` runs of ``name`` (skipping ``offset``) as rows of the grid: each run
    with its parameters, times and, per task, state, try, duration and times; ``tasks`` in the
    order of the latest definition (upstream first), ``total`` runs for paging, the schedule in
    words and the next scheduled run."""
    from nbflow.api.notebooks import describe

    store = store or open_store()
    definition = _definition(store, name)
    order = toposort({t["id"]: t["upstream"] for t in definition["tasks"]})
    runs = []
    for run in store.list_runs(name, limit=limit, offset=offset):
        cells = {}
        for ti in store.task_instances(run["id"]):
            cells[ti["task_id"]] = {
                k: ti[k] for k in ("state", "try_number", "max_tries", "duration", "start_date", "end_date")
            }
            if ti["task_id"] not in order:  # a task of an older version
                order.append(ti["task_id"])
        runs.append({**dict(run), "cells": cells})
    row = store.get_pipeline(name)
    return {
        "pipeline": name,
        "tasks": order,
        "runs": runs,
        "total": store.count_runs(name),
        "limit": limit,
        "offset": offset,
        "schedule": row["schedule"] if row else None,
        "schedule_text": describe(row["schedule"] if row else None),
        "timezone": row["timezone"] if row else "UTC",
        "next_run": next_run(row),
    }


def next_run(row: Any) -> str | None:
    """When the next scheduled run of a pipeline row starts (the end of its next data
    interval), as ISO text in the pipeline's time zone; None without a schedule or paused."""
    if row is None or not row["schedule"] or row["is_paused"]:
        return None
    tz = get_timezone(row["timezone"] or "UTC", pipeline=row["name"])
    schedule = Schedule(normalize(row["schedule"]), tz)
    now = utcnow()
    logical = row["next_logical_date"] or schedule.latest_complete(now)
    start = schedule.interval(logical)[1]
    while start < now:  # catchup=False skips missed intervals: the next one that ends in the future
        start = schedule.next_tick(start)
    return start.astimezone(tz).isoformat()


def mark_task(run_id: int, task_id: str, state: str, *, store: Store | None = None) -> dict[str, Any]:
    """Mark a finished task of a finished run ``success`` or ``failed`` (what a person decided);
    the run's state follows from its tasks again. Returns ``{"run_id", "task_id", "state",
    "run_state"}``. Only this task changes: clear what is downstream to run it again."""
    store = store or open_store()
    to = TaskState(state)
    if to not in (TaskState.SUCCESS, TaskState.FAILED):
        raise StateConflictError(f"a task can be marked success or failed, not {state}")
    run = store.get_run(run_id)
    tis = {r["task_id"]: r for r in store.task_instances(run_id)}
    if task_id not in tis:
        raise UnknownTaskError(run["pipeline"], task_id, tis, where=f"run {run_id}")
    version = store.get_version(run["version_id"]) if run["version_id"] else None
    definition = version["definition"] if version is not None else {"tasks": []}
    teardowns = teardown_ids(by_id(definition["tasks"]))

    def write(tx: Any) -> str:
        if not tx.mark_task(run_id, task_id, to, note=f"marked {to.value} by a person"):
            raise StateConflictError(
                f"task '{task_id}' of run {run_id} is {tis[task_id]['state']} in a {run['state']} run; only a finished "
                "task of a finished run can be marked",
                hint="wait until the run has finished, or cancel it",
            )
        states = {t: TaskState(r["state"]) for t, r in tis.items()}
        states[task_id] = to
        outcome = run_outcome(states, teardowns)
        tx.set_finished_run_state(run_id, outcome)
        return outcome.value

    run_state = store.write(write, what="mark task")
    return {"run_id": run_id, "task_id": task_id, "state": to.value, "run_state": run_state}
