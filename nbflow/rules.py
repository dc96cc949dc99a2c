"""Pure scheduling rules the engine applies: trigger rules, retry delays, a run's outcome."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from nbflow.exceptions import NbflowError
from nbflow.states import FAILED_STATES, SUCCEEDED, RunState, TaskState

T = TaskState


def decide(rule: str, states: Iterable[TaskState]) -> TaskState | None:
    """Trigger rule over finished upstream states: None to run, else the state to set."""
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
    if rule == "none_failed":
        return T.UPSTREAM_FAILED if failed else None
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


def run_outcome(states: Mapping[str, TaskState], leaves: Iterable[str]) -> RunState:
    """A finished run's state: cancelled if any task was, failed if a leaf failed, else success."""
    if any(s is T.CANCELLED for s in states.values()):
        return RunState.CANCELLED
    if any(states[tid] in FAILED_STATES for tid in leaves):
        return RunState.FAILED
    return RunState.SUCCESS
