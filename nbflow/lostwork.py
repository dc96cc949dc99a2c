"""How the engine charges attempts lost with their worker (or their driver).

* An attempt whose worker died before it started (no ``started.json`` in its folder on Dask,
  no "started" message on ``local``: it waited in the dead worker's queue) is resubmitted
  under a new key and the same try; nothing is charged (at most :data:`MAX_RESUBMITS` times
  per task, in case a task kills its worker before it can start).
* One that had started, or whose driver died, is a ``worker_lost`` try recorded with its
  host and pid when known. The first ``max_infra_retries`` of a task's lost-worker tries
  consume no retry (its ``max_tries`` grows by one each), so a task with ``retries=0``
  survives a lost worker; past them each costs a retry, and a task whose every try died with
  its worker fails ``killed_worker``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from nbflow.executors.base import Event, WorkItem, attempt_key
from nbflow.states import TaskState

if TYPE_CHECKING:
    from nbflow.config import Settings
    from nbflow.dag import Pipeline
    from nbflow.store import Tx
    from nbflow.tasks.base import BaseTask

MAX_RESUBMITS = 10  # resubmissions of a task's never-started attempts; past it a loss counts as a try


class LostWork:
    """Mixin of :class:`nbflow.engine.RunEngine` (uses its ``settings``, ``by_key``, ``_op``,
    ``_note``, ``_submits``, ``_work_item`` and ``_fail_attempt``)."""

    by_key: dict[str, str]
    _submits: list[Any]
    settings: Settings
    pipeline: Pipeline
    run_id: int
    _nonce: str

    if TYPE_CHECKING:  # RunEngine's methods

        def task(self, task_id: str) -> BaseTask: ...

        def _op(self, fn: Callable[[Tx], Any], task_id: str | None = None) -> None: ...

        def _note(
            self, ti: Any, message: str = "", duration: float | None = None, hostname: str | None = None
        ) -> None: ...

        def _work_item(self, ti: Any, task: BaseTask) -> WorkItem: ...

        def _fail_attempt(self, ti: Any, reason: str, message: str, at: float, **where: Any) -> None: ...

    def _worker_lost(self, ti: Any, event: Event) -> None:
        """An attempt lost with its worker or driver (see the module's docstring)."""
        if event.started is False and ti.state is TaskState.QUEUED and ti.resubmits < MAX_RESUBMITS:
            ti.resubmits += 1
            return self._resubmit(ti, event.message)
        ti.lost += 1
        message, limit = event.message, self.settings.max_infra_retries
        if ti.lost <= limit:
            ti.max_tries += 1
            run_id, tid, tries = self.run_id, ti.task_id, ti.max_tries
            self._op(lambda tx: tx.set_max_tries(run_id, tid, tries))
            message += f" (lost-worker try {ti.lost} of {limit} free: no retry used)"
        where = {k: v for k, v in (("hostname", event.hostname), ("pid", event.pid)) if v is not None}
        self._fail_attempt(ti, "worker_lost", message, event.at, **where)

    def _resubmit(self, ti: Any, message: str) -> None:
        """Submit the current try again under a new key: its worker died before it started."""
        self.by_key.pop(ti.key or "", None)
        nonce = f"{self._nonce}r{ti.resubmits}"  # an attempt key ends with its nonce: no "-" in it
        ti.key = key = attempt_key(self.pipeline.name, ti.task_id, self.run_id, ti.try_number, nonce)
        self.by_key[key] = ti.task_id
        run_id, tid, try_number, note = self.run_id, ti.task_id, ti.try_number, f"resubmitted: {message}"
        self._op(lambda tx: tx.rekey_attempt(run_id, tid, try_number, key, note))
        self._note(ti, note)
        self._submits.append(self._work_item(ti, self.task(tid)))
