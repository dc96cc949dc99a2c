"""Task and run states, and the one transition table every state write obeys.

The store (``nbflow.store``) turns each transition into a compare-and-set
``UPDATE ... WHERE state IN (sources)``; nothing else writes a state. A task
instance moves like this::

    pending -> queued -> running -> success
                  |         |  \\-> failed
                  |         \\---> up_for_retry -> queued (next try)
                  \\-> (a fast task may report its end before its start)
    pending -> upstream_failed | skipped       (decided by trigger rules, or a branch not followed)
    queued | running -> skipped                 (the attempt skipped itself: nbflow.Skip, skip_on_exit_code)
    pending -> cached                           (an incremental run reuses an earlier success)
    pending -> running -> success | failed      (a mapped task: running while its instances run)
    any unfinished -> cancelled                 (run cancelled)
    finished -> pending                         (cleared for a re-run)
    finished -> success | failed                (marked by a person, in a finished run: MARKABLE)
"""

from __future__ import annotations

from enum import Enum


class TaskState(str, Enum):
    """State of one task instance in one run."""

    PENDING = "pending"
    QUEUED = "queued"
    RUNNING = "running"
    UP_FOR_RETRY = "up_for_retry"
    SUCCESS = "success"
    #: not executed: an incremental run reuses the outputs of an earlier successful attempt
    CACHED = "cached"
    FAILED = "failed"
    UPSTREAM_FAILED = "upstream_failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"

    def __str__(self) -> str:
        return self.value


class RunState(str, Enum):
    """State of one pipeline run."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"
    CANCELLED = "cancelled"

    def __str__(self) -> str:
        return self.value


T = TaskState
R = RunState

FINISHED: frozenset[TaskState] = frozenset({T.SUCCESS, T.CACHED, T.FAILED, T.UPSTREAM_FAILED, T.SKIPPED, T.CANCELLED})
#: Finished states that count as a success (trigger rules, a run's outcome, downstream inputs).
SUCCEEDED: frozenset[TaskState] = frozenset({T.SUCCESS, T.CACHED})
UNFINISHED: frozenset[TaskState] = frozenset(set(TaskState) - FINISHED)
#: States whose work may still be in flight on an executor (a restarted driver adopts or resets them).
ADOPTABLE: frozenset[TaskState] = frozenset({T.QUEUED, T.RUNNING})
#: Finished states that count as "failed" for trigger rules and run outcome.
FAILED_STATES: frozenset[TaskState] = frozenset({T.FAILED, T.UPSTREAM_FAILED})

#: States a person may mark ``success`` or ``failed`` ("Mark success" in JupyterLab), only while
#: the run is finished, so that no driver writes the task meanwhile (``Tx.mark_task``).
MARKABLE: frozenset[TaskState] = FINISHED

#: to_state -> states it may be entered from.
TASK_TRANSITIONS: dict[TaskState, frozenset[TaskState]] = {
    T.PENDING: frozenset(FINISHED | {T.UP_FOR_RETRY}),  # clear / re-run
    T.QUEUED: frozenset({T.PENDING, T.UP_FOR_RETRY}),
    T.RUNNING: frozenset({T.QUEUED, T.PENDING}),  # from pending: a mapped task expanded into its instances
    T.UP_FOR_RETRY: frozenset({T.QUEUED, T.RUNNING}),
    T.SUCCESS: frozenset({T.QUEUED, T.RUNNING}),
    T.FAILED: frozenset({T.QUEUED, T.RUNNING, T.UP_FOR_RETRY}),
    T.UPSTREAM_FAILED: frozenset({T.PENDING}),
    T.SKIPPED: frozenset({T.PENDING, T.QUEUED, T.RUNNING}),  # from running: nbflow.Skip, a mapped task
    T.CACHED: frozenset({T.PENDING}),
    T.CANCELLED: frozenset(UNFINISHED),
}

RUN_FINISHED: frozenset[RunState] = frozenset({R.SUCCESS, R.FAILED, R.CANCELLED})

RUN_TRANSITIONS: dict[RunState, frozenset[RunState]] = {
    R.QUEUED: frozenset(RUN_FINISHED),  # a re-run of a finished run
    R.RUNNING: frozenset({R.QUEUED, R.RUNNING}),
    R.SUCCESS: frozenset({R.RUNNING}),
    R.FAILED: frozenset({R.QUEUED, R.RUNNING}),
    R.CANCELLED: frozenset({R.QUEUED, R.RUNNING}),
}


def task_sources(to_state: TaskState) -> frozenset[TaskState]:
    """States a task instance may move to ``to_state`` from."""
    return TASK_TRANSITIONS[TaskState(to_state)]


def run_sources(to_state: RunState) -> frozenset[RunState]:
    """States a run may move to ``to_state`` from."""
    return RUN_TRANSITIONS[RunState(to_state)]


def can_transition(from_state: TaskState, to_state: TaskState) -> bool:
    """Whether the task state machine allows ``from_state -> to_state``."""
    return TaskState(from_state) in TASK_TRANSITIONS[TaskState(to_state)]


#: Why an attempt ended the way it did (stored on the attempt row).
REASONS = (
    "cell_error",
    "cell_timeout",
    "task_timeout",
    "kernel_died",
    "kernel_start_failed",
    "exception",
    "exit_code",
    "fail_now",
    "worker_lost",
    "killed_worker",
    "cancelled",
    "input_missing",
    "sensor_timeout",
    "stopped_early",  # a success: the notebook ended itself with sys.exit(0)
    "driver_error",  # nbflow itself failed while driving the run (logged with its traceback)
    "storage_error",  # the artifact root refused a write (read-only, full): retries apply
    "map_error",  # a mapped task's values cannot be mapped (not a list, too many); no retry
    "mapped",  # a mapped task whose instances did not all succeed
    "skipped",  # not a failure: the attempt skipped itself (nbflow.Skip, skip_on_exit_code, a soft_fail sensor)
    "branch_error",  # a branch task chose a task that is not directly downstream of it
)
