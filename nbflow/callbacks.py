"""The engine's callbacks (a mixin of :class:`nbflow.engine.RunEngine`): what a task's
``on_success``/``on_failure``/``on_retry`` and a pipeline's ``on_success``/``on_failure`` are
called with, and the call itself.

A callback runs in the driving process after the state change it reports is committed, with
one plain dict, the *context*:

* every callback: ``event`` (``success``, ``failure``, ``retry``; ``sla_miss`` from
  :mod:`nbflow.sla`), ``pipeline``, ``run_id``, ``state``, ``logical_date``;
* a task's: ``task_id``, ``kind``, ``try_number``, ``max_tries``, ``reason`` (``cell_error``,
  ``task_timeout``, ... see :data:`nbflow.states.REASONS`), ``error``, ``output_uri`` (a notebook
  task's output notebook), ``log_uri``, ``report_mode`` (when the notebook task has it); a failure's or retry's also ``cell_index`` (the failing
  cell of a notebook task), ``ename``, ``evalue`` and ``traceback``, read from its attempt row;
  a retry's ``next_retry_at``;
* a pipeline's: ``failed_tasks``, the task context of each task that failed.

An exception in a callback is logged and never reaches the run (:func:`call_back`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from nbflow.states import RunState, TaskState

if TYPE_CHECKING:
    from nbflow.dag import Pipeline
    from nbflow.store import Store
    from nbflow.tasks.base import BaseTask

log = logging.getLogger("nbflow.engine")
T = TaskState
_EVENTS = {T.SUCCESS: "success", T.FAILED: "failure", T.UP_FOR_RETRY: "retry"}
_ATTEMPT_DETAILS = ("cell_index", "ename", "evalue", "traceback", "output_uri", "log_uri")


def call_back(fn: Callable[..., Any], ctx: dict[str, Any]) -> None:
    """Call ``fn(ctx)``; an exception is logged, never raised (a notification must not break a run)."""
    try:
        fn(ctx)
    except Exception:  # noqa: BLE001
        log.exception("callback %r failed for %s", fn, {k: v for k, v in ctx.items() if k != "traceback"})


def _iso(value: Any) -> Any:
    return value.isoformat() if hasattr(value, "isoformat") else value


class Callbacks:
    """Mixin of :class:`nbflow.engine.RunEngine` (uses its ``store``, ``pipeline``, ``tis``, ``_callbacks``)."""

    store: Store
    pipeline: Pipeline
    run_id: int
    tis: dict[str, Any]
    context: dict[str, Any]
    _callbacks: list[tuple[Callable[..., Any], dict[str, Any]]]

    if TYPE_CHECKING:  # RunEngine's method

        def task(self, task_id: str) -> BaseTask: ...

    def _task_callback(self, ti: Any, to: TaskState, fields: dict[str, Any]) -> None:
        """Queue the callback of ``ti``'s change to ``to`` (called after the step's commit)."""
        event = _EVENTS.get(to)
        task = self.task(ti.task_id)
        fn = getattr(task, f"on_{event}", None) if event else None
        if fn is None:
            return
        ctx = {
            "event": event,
            "pipeline": self.pipeline.name,
            "run_id": self.run_id,
            "task_id": ti.task_id,
            "kind": task.kind,
            "state": to.value,
            "try_number": ti.try_number,
            "max_tries": ti.max_tries,
            "reason": fields.get("reason"),
            "error": fields.get("error"),
            "output_uri": fields.get("output_uri"),
            "log_uri": fields.get("log_uri"),
            "logical_date": _iso(getattr(self, "context", {}).get("logical_date")),
        }
        if to is T.UP_FOR_RETRY:
            ctx["next_retry_at"] = _iso(fields.get("next_retry_at"))
        if getattr(task, "report_mode", False):  # a notebook shown without its code (HTML attachments too)
            ctx["report_mode"] = True
        self._callbacks.append((fn, ctx))

    def _run_callback(self, final: RunState) -> None:
        """Call the pipeline's ``on_success``/``on_failure`` for the run's end (none when cancelled)."""
        fn = self.pipeline.on_success if final is RunState.SUCCESS else self.pipeline.on_failure
        if fn is None or final is RunState.CANCELLED:
            return
        ctx: dict[str, Any] = {
            "event": "success" if final is RunState.SUCCESS else "failure",
            "pipeline": self.pipeline.name,
            "run_id": self.run_id,
            "state": final.value,
            "logical_date": _iso(getattr(self, "context", {}).get("logical_date")),
        }
        if final is not RunState.SUCCESS:
            ctx["failed_tasks"] = self._failed_tasks()
        call_back(fn, ctx)

    def _call_back(self, fn: Callable[..., Any], ctx: dict[str, Any]) -> None:
        """Call a queued task callback, a failure's or retry's with its attempt's details first."""
        if ctx.get("event") in ("failure", "retry") and "task_id" in ctx:
            ctx.update(self._attempt_details(ctx["task_id"], ctx["try_number"]))
        call_back(fn, ctx)

    def _attempt_details(self, task_id: str, try_number: int) -> dict[str, Any]:
        try:
            rows = [a for a in self.store.attempts(self.run_id, task_id) if a["try_number"] == try_number]
        except Exception:  # noqa: BLE001 - the callback goes on with what the engine knows
            log.warning("could not read attempt %s of %s in run %s for its callback", try_number, task_id, self.run_id)
            return {}
        if not rows:
            return {}
        return {k: rows[0][k] for k in _ATTEMPT_DETAILS if rows[0][k] is not None}

    def _failed_tasks(self) -> list[dict[str, Any]]:
        """The task context of each failed task of the run (for the pipeline's ``on_failure``)."""
        failed, ids = [], [tid for tid, ti in self.tis.items() if ti.state is T.FAILED]
        try:
            rows = {r["task_id"]: r for r in self.store.task_instances(self.run_id) if r["task_id"] in ids}
        except Exception:  # noqa: BLE001 - the callback goes on with what the engine knows
            rows = {}
        for tid in ids:
            ti, task, row = self.tis[tid], self.task(tid), rows.get(tid)
            ctx = {"task_id": tid, "kind": task.kind, "try_number": ti.try_number, "max_tries": ti.max_tries}
            if getattr(task, "report_mode", False):
                ctx["report_mode"] = True
            if row is not None:
                ctx.update(reason=row["reason"], error=row["error"], output_uri=row["output_uri"])
            ctx.update(self._attempt_details(tid, ti.try_number))
            failed.append(ctx)
        return failed
