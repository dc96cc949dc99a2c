"""How the engine drives sensors: pokes in a small thread pool of the driving process.

A sensor task never goes to the executor. When it is queued the engine sets its first
poke; each step starts due pokes (``poke_interval`` apart) without blocking, collects the
finished ones, and turns a true condition, a timeout or an exception into an attempt
result like any other task's.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

from nbflow.record import AttemptRecord
from nbflow.states import FINISHED, TaskState
from nbflow.tasks.sensor import SensorContext, SensorTask

if TYPE_CHECKING:
    from nbflow.dag import Pipeline
    from nbflow.store import Store

T = TaskState


def _dt(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC)


class SensorPoking:
    """Mixin of :class:`nbflow.engine.RunEngine` (uses its ``tis``, ``_set``, ``_apply_result``)."""

    store: Store
    pipeline: Pipeline
    run_id: int
    params: dict[str, Any]
    context: dict[str, Any]
    tis: dict[str, Any]
    _sensors: list[Any]
    _pokers: ThreadPoolExecutor | None

    if TYPE_CHECKING:  # RunEngine's methods

        def _set(self, ti: Any, to: TaskState, expect_try: int | None = None, **fields: Any) -> None: ...

        def _apply_result(self, ti: Any, res: AttemptRecord) -> None: ...

    def _start_pokes(self, now: float) -> None:
        for ti in self._sensors:
            if ti.next_poke is None or ti.poke is not None or ti.next_poke > now or ti.state in FINISHED:
                continue
            if ti.state is T.QUEUED:
                self._set(ti, T.RUNNING, expect_try=ti.try_number, start_date=_dt(now), hostname="(driver)")
            if self._pokers is None:
                self._pokers = ThreadPoolExecutor(4, thread_name_prefix=f"nbflow-poke-{self.run_id}")
            ti.poke = self._pokers.submit(self._sensor(ti.task_id).poke, self._sensor_context())

    def _sensor(self, task_id: str) -> SensorTask:
        """The task of one of :attr:`_sensors` (only sensor tasks are poked)."""
        return cast(SensorTask, self.pipeline.tasks[task_id])

    def _sensor_context(self) -> SensorContext:
        def run_state(pipeline: str, logical_date: datetime | None) -> str | None:
            row = self.store.run_for_date(pipeline, logical_date)
            return row["state"] if row else None

        return SensorContext(
            pipeline=self.pipeline.name,
            run_id=self.run_id,
            params=self.params,
            logical_date=self.context["logical_date"],
            data_interval_start=self.context["data_interval_start"],
            data_interval_end=self.context["data_interval_end"],
            run_state=run_state,
        )

    def _collect_pokes(self, now: float) -> None:
        for ti in self._sensors:
            if ti.poke is None or not ti.poke.done():
                continue
            future, ti.poke = ti.poke, None
            task = self._sensor(ti.task_id)
            result = self._sensor_result(ti, task, future, now)
            if result is not None:
                self._apply_result(ti, result)
                ti.next_poke = ti.first_poke = None
            else:
                ti.next_poke = now + task.poke_interval

    def _sensor_result(self, ti: Any, task: Any, future: Future, now: float) -> AttemptRecord | None:
        """The attempt's record when the poke ends it, None to poke again later."""
        try:
            ok = future.result()
        except Exception as exc:  # the condition itself failed: a failed try
            record = AttemptRecord.failure(
                "exception", f"{type(exc).__name__}: {exc}", ename=type(exc).__name__, evalue=str(exc)
            )
        else:
            if ok:
                record = AttemptRecord(ok=True)
            elif task.timeout is not None and now - (ti.first_poke or now) >= task.timeout:
                msg = f"sensor timed out after {task.timeout:g}s: condition {task.label()[8:]} never became true"
                record = AttemptRecord.skipped(msg) if task.soft_fail else AttemptRecord.failure("sensor_timeout", msg)
            else:
                return None
        return record.stamp(
            key=ti.key or "",
            run_id=self.run_id,
            task_id=ti.task_id,
            try_number=ti.try_number,
            log_uri="",
            hostname="(driver)",
            pid=0,
            started_at=ti.first_poke or now,
            ended_at=now,
        )
