"""Pure scheduling rules the engine applies: trigger rules, retry delays, a run's outcome."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from typing import Any

from nbflow.exceptions import NbflowError
from nbflow.states import FAILED_STATES, SUCCEEDED, RunState, TaskState

T = TaskState


def decide(rule: str, states: Iterable[TaskState], setups: Iterable[TaskState] = ()) -> TaskState | None:
    """Trigger rule over finished upstream states: None to run, else the state to set.

    As Airflow's: a skipped upstream skips an ``all_success`` task (never ``upstream_failed``);
    ``all_done_setup_success`` (a teardown's rule) runs when every upstream task finished and at
    least one of its ``setups`` (their states) succeeded: skipped when they all were skipped,
    ``upstream_failed`` when none succeeded otherwise; without setups it is ``all_done``.
    """
    states = list(states)
    failed = sum(s in FAILED_STATES for s in states)
    skipped = sum(s is T.SKIPPED for s in states)
    success = sum(s in SUCCEEDED for s in states)
    if rule == "all_success":
        return T.UPSTREAM_FAILED if failed else (T.SKIPPED if skipped else None)
    if rule == "all_failed":
        return None if failed == len(states) else T.SKIPPED
    if rule in ("all_done", "always"):
        return None
    if rule == "one_success":
        if success or not states:
            return None
        return T.SKIPPED if skipped == len(states) else T.UPSTREAM_FAILED
    if rule == "one_failed":
        return None if failed else T.SKIPPED
    if rule == "one_done":
        return None if failed or success or not states else T.SKIPPED
    if rule == "none_failed":
        return T.UPSTREAM_FAILED if failed else None
    if rule == "none_failed_min_one_success":
        if failed:
            return T.UPSTREAM_FAILED
        return T.SKIPPED if states and skipped == len(states) else None
    if rule == "none_skipped":
        return T.SKIPPED if skipped else None
    if rule == "all_skipped":
        return None if skipped == len(states) else T.SKIPPED
    if rule == "all_done_setup_success":
        setups = list(setups)
        if not setups or any(s in SUCCEEDED for s in setups):
            return None
        return T.SKIPPED if all(s is T.SKIPPED for s in setups) else T.UPSTREAM_FAILED
    raise NbflowError(f"unknown trigger rule {rule!r}")


def retry_delay(task: Any, try_number: int) -> float:
    """Seconds to wait after failed try ``try_number`` (1-based) before the next one.

    ``retry_delay``, doubled per try with ``retry_backoff``, capped by ``max_retry_delay``;
    no jitter, so a replayed scheduler tick computes the same times.
    """
    delay = float(task.retry_delay)
    if task.retry_backoff:
        delay *= 2 ** (try_number - 1)
    return min(delay, float(task.max_retry_delay)) if task.max_retry_delay else delay


def run_outcome(states: Mapping[str, TaskState], teardowns: Collection[str] = ()) -> RunState:
    """A finished run's state: cancelled if any task was; failed if any task other than a
    teardown failed or was ``upstream_failed`` (a failure stays a failure even when an
    ``all_done`` task after it is the only leaf and succeeded; teardowns are left out, as
    Airflow leaves them out of a run's state); else success. Skipped is never a failure."""
    if any(s is T.CANCELLED for s in states.values()):
        return RunState.CANCELLED
    if any(s in FAILED_STATES for tid, s in states.items() if tid not in teardowns):
        return RunState.FAILED
    return RunState.SUCCESS
