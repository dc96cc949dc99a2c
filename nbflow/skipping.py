"""How the engine skips: attempts that skip themselves, branches, short-circuits, teardowns.

* **A skipped attempt** (``nbflow.Skip`` raised by a function, a notebook cell or a cell task;
  a shell exit code in ``skip_on_exit_code``; a ``soft_fail`` sensor's timeout) ends its task
  ``skipped`` with the reason, at once: no retry, and never a failure.
* **A branch task's success** skips the tasks directly downstream of it that it did not choose
  (:mod:`nbflow.tasks.flow`); a short-circuit's falsy value skips every task downstream of it
  (or only the direct ones, with ``ignore_downstream_trigger_rules=False``).
  Teardowns are never skipped this way (their setups ran; Airflow's rule). Tasks further down
  follow their trigger rules, which see ``skipped`` (an ``all_success`` task is skipped, not
  ``upstream_failed``). A branch choosing a task not directly downstream fails, reason
  ``branch_error``, naming the tasks it may choose.
* **Teardowns** are decided by ``all_done_setup_success`` over their setups' states
  (:mod:`nbflow.setupteardown`) and left out of the run's outcome.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from nbflow.artifacts import UpstreamOutput
from nbflow.incremental import NO_OUTPUTS, Produced
from nbflow.record import AttemptRecord
from nbflow.rules import decide, run_outcome
from nbflow.setupteardown import TEARDOWN_RULE, rows_of, setups_of, teardown_ids
from nbflow.states import SUCCEEDED, RunState, TaskState
from nbflow.tasks.flow import Flow, follow_of

if TYPE_CHECKING:
    from nbflow.dag import Pipeline
    from nbflow.store import Tx
    from nbflow.tasks.base import BaseTask

T = TaskState
log = logging.getLogger("nbflow.engine")


class Skipping:
    """Mixin of :class:`nbflow.engine.RunEngine` (uses its ``tis``, ``children``, ``_set``, ``_op``)."""

    pipeline: Pipeline
    run_id: int
    tis: dict[str, Any]
    children: dict[str, list[str]]
    clock: Callable[[], float]
    produced: dict[str, Produced]
    _roles: dict[str, dict[str, Any]] | None = None
    _follows: dict[str, list[str] | None] | None = None

    if TYPE_CHECKING:  # RunEngine's methods

        def task(self, task_id: str) -> BaseTask: ...

        def _op(self, fn: Callable[[Tx], Any], task_id: str | None = None) -> None: ...

        def _set(self, ti: Any, to: TaskState, expect_try: int | None = None, **fields: Any) -> None: ...

    def _choices(self) -> dict[str, list[str] | None]:
        """What each branch or short-circuit task of this run chose to follow (None: everything)."""
        if self._follows is None:
            self._follows = {}
        return self._follows

    def _role_rows(self) -> dict[str, dict[str, Any]]:
        if self._roles is None:
            self._roles = rows_of(self.pipeline.tasks)
        return self._roles

    def _verdict(self, task: BaseTask, states: Mapping[str, TaskState]) -> TaskState | None:
        """The trigger rule's verdict for ready ``task`` (a teardown's over its setups too); a
        task a succeeded branch or short-circuit upstream did not follow stays skipped (after a
        re-run cleared it: the first time, :meth:`_skip_or_branch` skipped it already)."""
        own = task.map_parent or task.task_id  # a branch chooses a mapped task, never one instance
        if not task.is_teardown and any(self._not_followed(up, own) for up in states):
            return T.SKIPPED
        setups: list[TaskState] = []
        if task.trigger_rule == TEARDOWN_RULE:
            setups = [self.tis[s].state for s in setups_of(self._role_rows(), own) if s in self.tis]
        return decide(task.trigger_rule, states.values(), setups)

    def _not_followed(self, up: str, task_id: str) -> bool:
        """Whether succeeded branch or short-circuit ``up`` chose not to go on to ``task_id``."""
        if up not in self.pipeline.tasks or self.tis[up].state not in SUCCEEDED:
            return False
        flow = self.task(up)
        if not (isinstance(flow, Flow) and (flow.branch or flow.short_circuit)):
            return False
        choices = self._choices()
        if up not in choices:  # decided before this engine: its saved value says
            try:
                value = UpstreamOutput(flow.value_style, list(self.produced.get(up, NO_OUTPUTS).refs)).value(
                    "branch" if flow.value_style == "dict" else None
                )
                choices[up] = follow_of(value) if flow.branch else (None if value else [])
            except Exception:  # an unreadable value: the task's trigger rule decides
                log.warning("cannot read what %s chose to follow", up, exc_info=True)
                choices[up] = None
        follow = choices[up]
        return follow is not None and task_id not in follow

    def _outcome(self) -> RunState:
        """The finished run's state (teardowns left out)."""
        return run_outcome({tid: ti.state for tid, ti in self.tis.items()}, teardown_ids(self._role_rows()))

    def _skip_or_branch(self, ti: Any, res: AttemptRecord) -> bool:
        """Apply what a finished attempt says of skipping: True when it ended the task ``skipped``
        (written here); a branch or short-circuit's success skips what it does not follow (and
        a branch's wrong choice turns ``res`` into a ``branch_error`` failure); False then."""
        if res.reason == "skipped":
            row, fields = res.to_row(), res.task_fields()
            run_id, tid, try_number = self.run_id, ti.task_id, ti.try_number
            self._set(ti, T.SKIPPED, expect_try=try_number, reason="skipped", error=res.message, note=None, **fields)
            self._op(lambda tx: tx.update_attempt(run_id, tid, try_number, state="skipped", **row))
            return True
        if res.ok:
            self._choices()[ti.task_id] = res.follow
        if not res.ok or res.follow is None:
            return False
        task, kids = self.task(ti.task_id), self.children.get(ti.task_id, [])
        if isinstance(task, Flow) and task.short_circuit:
            below = self._below(ti.task_id) if task.ignore_downstream_trigger_rules else kids
            self._skip_all(below, f"short-circuit {ti.task_id} returned a falsy value")
            return False
        wrong = [f for f in res.follow if f not in kids]
        if wrong:
            res.ok, res.reason, res.ename = False, "branch_error", "BranchError"
            res.message = res.evalue = (
                f"branch task '{ti.task_id}' chose {', '.join(wrong)}, not directly downstream of it; "
                f"it may choose among: {', '.join(sorted(kids)) or '(no task downstream)'}"
            )
            return False
        chosen = ", ".join(res.follow) or "no task"
        self._skip_all(
            [k for k in kids if k not in res.follow], f"not chosen by branch {ti.task_id} (it chose {chosen})"
        )
        return False

    def _below(self, task_id: str) -> list[str]:
        """Every task downstream of ``task_id`` in this run."""
        seen: dict[str, None] = {}
        stack = list(self.children.get(task_id, ()))
        while stack:
            tid = stack.pop()
            if tid not in seen:
                seen[tid] = None
                stack.extend(self.children.get(tid, ()))
        return list(seen)

    def _skip_all(self, task_ids: list[str], why: str) -> None:
        """Skip the pending ones of ``task_ids``, teardowns excepted."""
        end = datetime.fromtimestamp(self.clock(), UTC)
        teardowns = teardown_ids(self._role_rows())
        for tid in task_ids:
            ti = self.tis[tid]
            if ti.state is T.PENDING and tid not in teardowns:
                self._set(ti, T.SKIPPED, reason="skipped", error=why, end_date=end)
