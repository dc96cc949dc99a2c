"""``sensor(...)``: wait for a condition, poking it every ``poke_interval`` seconds.

Sensors run in *reschedule* mode only: each poke is a short call made by the process
driving the run (the scheduler or ``nbflow run``), in a small thread pool, so a waiting
sensor holds no worker slot, kernel or process. The task is ``running`` from its first
poke until the condition is true (``success``) or ``timeout`` seconds have passed since
the first poke (``failed``, reason ``sensor_timeout``; ``skipped`` with ``soft_fail=True``). A poke that raises is a failed try
(retries apply).

A condition is a callable taking a :class:`SensorContext` (or nothing) and returning a
truthy value. Built-in conditions: :func:`file_exists`, :func:`pipeline_succeeded`.
"""

from __future__ import annotations

import glob
import hashlib
import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from nbflow.dag import _UNSET, current_pipeline
from nbflow.exceptions import DefinitionError
from nbflow.record import AttemptRecord
from nbflow.tasks.base import AttemptContext, BaseTask


@dataclass
class SensorContext:
    """What a condition may look at: the run's parameters and dates, other pipelines' runs."""

    pipeline: str
    run_id: int
    params: dict[str, Any]
    logical_date: datetime | None
    data_interval_start: datetime | None = None
    data_interval_end: datetime | None = None
    #: ``run_state(pipeline, logical_date) -> str | None``: the state of another pipeline's run
    run_state: Callable[[str, datetime | None], str | None] = field(default=lambda p, d: None, repr=False)


class SensorTask(BaseTask):
    """A task that waits for a condition without holding a worker."""

    kind = "sensor"
    value_style = "none"
    runs_on_driver = True

    def __init__(
        self,
        condition: Callable[..., Any],
        *,
        name: str | None = None,
        poke_interval: float = 30.0,
        timeout: float | None = 3600.0,
        soft_fail: bool = False,
        **options: Any,
    ):
        #: at its timeout the sensor ends ``skipped`` instead of failed (Airflow's soft_fail)
        self.soft_fail = bool(soft_fail)
        if not callable(condition):
            raise DefinitionError(f"sensor condition must be callable, got {condition!r}")
        if poke_interval <= 0:
            raise DefinitionError(f"sensor poke_interval must be > 0 seconds, got {poke_interval!r}")
        self.condition = condition
        self.poke_interval = float(poke_interval)
        self.takes_context = bool(_arity(condition))
        label = getattr(condition, "__name__", None) or type(condition).__name__
        pipeline = current_pipeline()
        self.base_dir = pipeline.base_dir if pipeline else Path.cwd()
        super().__init__(name or f"wait_{label}".strip("_<>"), explicit_id=name is not None, timeout=timeout, **options)

    def code_fingerprint(self) -> str:
        """Hash of the condition's description and the poke settings."""
        return hashlib.sha256(repr((describe(self.condition), self.poke_interval)).encode()).hexdigest()

    def never_reused(self) -> str | None:
        """A sensor's condition is about now: it waits in every run."""
        return "a sensor waits for its condition in every run"

    def label(self) -> str:
        """``sensor: <condition>``."""
        return f"sensor: {describe(self.condition)}"

    def poke(self, ctx: SensorContext) -> bool:
        """Check the condition once."""
        return bool(self.condition(ctx) if self.takes_context else self.condition())

    def run_attempt(self, ctx: AttemptContext) -> AttemptRecord:  # pragma: no cover - the driver pokes
        """Sensors are poked by the driver, never run by a worker."""
        return AttemptRecord.failure("exception", "sensors are poked by the driver, not run on workers")


def _arity(fn: Callable[..., Any]) -> int:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return 1
    return sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty for p in params)


def describe(condition: Callable[..., Any]) -> str:
    """Short text naming a condition."""
    return getattr(condition, "description", "") or getattr(condition, "__qualname__", repr(condition))


class file_exists:  # noqa: N801 - used like a function
    """Condition: a file (or a glob match) exists; relative paths are relative to the pipeline file."""

    def __init__(self, path: str | os.PathLike[str]):
        pipeline = current_pipeline()
        base = pipeline.base_dir if pipeline else Path.cwd()
        self.path = str(base / path)
        self.description = f"file_exists({path})"

    def __call__(self) -> bool:
        return bool(glob.glob(self.path))


class pipeline_succeeded:  # noqa: N801 - used like a function
    """Condition: pipeline ``name`` has a successful run for the same logical date as this run."""

    def __init__(self, name: str):
        self.name = name
        self.description = f"pipeline_succeeded({name})"

    def __call__(self, ctx: SensorContext) -> bool:
        return ctx.run_state(self.name, ctx.logical_date) == "success"


def sensor(
    condition: Callable[..., Any],
    *,
    name: str | None = None,
    poke_interval: float = 30.0,
    timeout: float | None = 3600.0,
    soft_fail: bool = False,
    retries: int = _UNSET,
    retry_delay: float = _UNSET,
    trigger_rule: str = _UNSET,
    on_failure: Any = _UNSET,
    on_success: Any = _UNSET,
    on_retry: Any = _UNSET,
) -> SensorTask:
    """Add a sensor to the current pipeline and return its handle.

    ``sensor(file_exists("data/*.csv"), poke_interval=60, timeout=3600)``,
    ``sensor(pipeline_succeeded("ingest"))`` or ``sensor(lambda ctx: ..., name="ready")``.
    ``soft_fail=True``: at its timeout the sensor ends ``skipped`` (its downstream tasks follow
    their trigger rules) instead of failed.
    """
    return SensorTask(
        condition,
        name=name,
        poke_interval=poke_interval,
        timeout=timeout,
        soft_fail=soft_fail,
        retries=retries,
        retry_delay=retry_delay,
        trigger_rule=trigger_rule,
        on_failure=on_failure,
        on_success=on_success,
        on_retry=on_retry,
    )
