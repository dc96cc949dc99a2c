"""Run-level sweeps: one run per point of a parameter grid, driven together.

``nbflow run p.py --sweep C=0.01,0.1,1 --sweep penalty=l1,l2`` (and ``%nbflow run this
--sweep ...``, and the REST trigger's ``"sweep"``) make the cross product of the grid, check
every point like ``-p`` before any run exists, record a sweep row grouping the runs and drive
them under one executor, at most the pipeline's ``max_active_runs`` at a time.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from nbflow.api.driving import started_driver
from nbflow.api.runs import RunResult, create_runs, open_store, resolve_point
from nbflow.dag import Pipeline
from nbflow.driver import Driver
from nbflow.engine import Listener
from nbflow.exceptions import InputError, ParameterError
from nbflow.executors.base import Executor
from nbflow.states import RunState
from nbflow.store import Store

#: most runs one sweep may make
MAX_SWEEP_POINTS = 1024


@dataclass
class SweepResult:
    """How a sweep ended: its id and each run's result (in point order)."""

    sweep_id: int
    pipeline: str
    runs: list[RunResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether every run succeeded."""
        return all(r.ok for r in self.runs)


def parse_sweep_args(pairs: Sequence[str]) -> dict[str, list[str]]:
    """``["C=0.01,0.1,1", "penalty=l1,l2"]`` (command-line ``--sweep``) as a grid of strings;
    a JSON list after ``=`` (``C=[0.1, 1]``, ``name=["a,b", "c"]``) gives values with commas."""
    grid: dict[str, list[Any]] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip()
        if not sep or not key or not text.strip():
            raise ParameterError(
                f"--sweep {pair!r} is not KEY=V1,V2,...", hint="e.g. --sweep C=0.01,0.1,1 --sweep penalty=l1,l2"
            )
        if key in grid:
            raise ParameterError(f"--sweep {key} is given twice", hint=f"list every value once: --sweep {key}=A,B,C")
        if text.lstrip().startswith("["):
            try:
                values = json.loads(text)
            except ValueError as exc:
                raise ParameterError(f"--sweep {key}: {text!r} is not a JSON list: {exc}") from None
            grid[key] = [v if isinstance(v, str) else json.dumps(v) for v in values]
        else:
            grid[key] = [v.strip() for v in text.split(",")]
    return grid


def sweep_points(grid: Mapping[str, Sequence[Any]], params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """The cross product of ``grid`` (first parameter slowest), each over ``params``; refuses an
    empty list, a parameter both fixed and swept, and more than :data:`MAX_SWEEP_POINTS` points."""
    if not grid:
        raise InputError("sweep", "a sweep needs at least one parameter with values", hint="e.g. --sweep C=0.1,1")
    for name, values in grid.items():
        if isinstance(values, str | bytes) or not isinstance(values, Sequence) or not values:
            raise InputError(
                f"sweep.{name}", f"sweep parameter '{name}' needs a non-empty list of values", hint=f"{name}=A,B"
            )
    both = sorted(set(grid) & set(params or {}))
    if both:
        raise ParameterError(
            f"{', '.join(both)} is given both as a fixed parameter and as a sweep",
            hint="drop one of the two (-p or --sweep)",
            invalid=both,
        )
    total = 1
    for values in grid.values():
        total *= len(values)
    if total > MAX_SWEEP_POINTS:
        raise InputError(
            "sweep", f"the sweep has {total} points, more than {MAX_SWEEP_POINTS}", hint="sweep fewer values"
        )
    names = list(grid)
    return [{**(params or {}), **dict(zip(names, combo))} for combo in itertools.product(*grid.values())]


def create_sweep(
    pipeline: Pipeline,
    grid: Mapping[str, Sequence[Any]],
    *,
    params: Mapping[str, Any] | None = None,
    store: Store | None = None,
    **options: Any,
) -> tuple[int, list[int]]:
    """Record a sweep of ``pipeline`` over ``grid`` (``{param: [values]}``, strings converted
    like ``-p``) with fixed ``params``: one queued run per point, every point checked first (a
    bad one raises ParameterError naming the point and the parameter; no run is made).
    ``options`` as :func:`~nbflow.api.create_run`'s. Returns ``(sweep id, run ids)``."""
    points = sweep_points(grid, params)
    sweep_id, run_ids = create_runs(pipeline, points, sweep=_converted(pipeline, grid), store=store, **options)
    assert sweep_id is not None
    return sweep_id, run_ids


def _converted(pipeline: Pipeline, grid: Mapping[str, Sequence[Any]]) -> dict[str, Any]:
    """The grid with each value as its runs receive it (strings converted like ``-p``)."""
    from nbflow.params import resolve_run_params

    out: dict[str, list[Any]] = {}
    for name, values in grid.items():
        out[name] = []
        for value in values:
            try:
                out[name].append(
                    resolve_run_params(pipeline.param_defaults, {name: value}, pipeline=pipeline.name)[name]
                )
            except ParameterError:  # refused with its point by create_runs
                out[name].append(value)
    return out


def drive_runs(
    pipeline: Pipeline,
    run_ids: Sequence[int],
    *,
    executor: str | None = None,
    parallelism: int | None = None,
    listeners: Sequence[Listener] = (),
    store: Store | None = None,
    on_start: Callable[[Executor], None] | None = None,
    on_end: Callable[[int, RunState], None] | None = None,
) -> list[RunResult]:
    """Drive queued runs of ``pipeline`` in this process under one executor until all have
    ended, at most ``pipeline.max_active_runs`` running at a time (runs of the pipeline driven
    elsewhere count too); ``on_end(run_id, state)`` is called as each ends. Ctrl-C cancels them."""
    store = store or open_store()
    driver = started_driver(store, run_ids, executor, parallelism)
    pending, reported = list(run_ids), set[int]()
    try:
        if on_start is not None:
            on_start(driver.executor)
        while pending or any(driver.owns(r) for r in run_ids):
            if pending and not driver.in_outage:
                active = store.active_run_counts().get(pipeline.name, 0)
                while pending and active < max(1, pipeline.max_active_runs):
                    if driver.claim(pipeline, pending.pop(0), listeners=listeners):
                        active += 1
            driver.loop_once(store.settings.cancel_poll)
            for run_id in _ended(driver, run_ids, reported):
                if on_end is not None:
                    on_end(run_id, driver.ended[run_id])
    except KeyboardInterrupt:
        from nbflow.api.runs import cancel_run

        for run_id in pending:
            cancel_run(run_id, why="interrupted", store=store)
        driver.cancel_all("interrupted")
        raise
    finally:
        driver.close()
    return [
        RunResult(r, pipeline.name, RunState(store.get_run(r)["state"]), [dict(t) for t in store.task_instances(r)])
        for r in run_ids
    ]


def _ended(driver: Driver, run_ids: Iterable[int], reported: set[int]) -> list[int]:
    ended = [r for r in run_ids if r in driver.ended and r not in reported]
    reported.update(ended)
    return ended


def run_sweep(
    pipeline: Pipeline,
    grid: Mapping[str, Sequence[Any]],
    *,
    params: Mapping[str, Any] | None = None,
    executor: str | None = None,
    parallelism: int | None = None,
    listeners: Sequence[Listener] = (),
    store: Store | None = None,
    on_start: Callable[[Executor], None] | None = None,
    on_end: Callable[[int, RunState], None] | None = None,
    **options: Any,
) -> SweepResult:
    """Create a sweep (:func:`create_sweep`) and drive its runs here (:func:`drive_runs`)."""
    store = store or open_store()
    name = executor or store.settings.executor
    sweep_id, run_ids = create_sweep(pipeline, grid, params=params, executor=name, store=store, **options)
    runs = drive_runs(
        pipeline,
        run_ids,
        executor=name,
        parallelism=parallelism,
        listeners=listeners,
        store=store,
        on_start=on_start,
        on_end=on_end,
    )
    return SweepResult(sweep_id, pipeline.name, runs)


def trigger_sweep(
    name: str,
    grid: Mapping[str, Sequence[Any]],
    *,
    params: Mapping[str, Any] | None = None,
    incremental: bool | None = None,
    last_good: bool = False,
    idempotency_key: str | None = None,
    start: bool = True,
    store: Store | None = None,
) -> tuple[int, list[int]]:
    """Queue a sweep of a known pipeline (the REST trigger's ``"sweep"``): one run per point of
    ``grid``, each checked like :func:`~nbflow.api.trigger`'s parameters before any is made; the
    scheduler or a background driver runs them within ``max_active_runs``. The same
    ``idempotency_key`` again answers with the sweep the first request made (kept on its first
    run). Returns ``(sweep id, run ids)``."""
    from nbflow.api.pipelines import _definition, scheduler_alive, spawn_driver, triggerable
    from nbflow.store.scheduling import task_rows

    store = store or open_store()
    definition = _definition(store, name)
    if idempotency_key is not None:
        earlier = store.run_for_key(name, idempotency_key)
        if earlier is not None and earlier["sweep_id"] is not None:
            return int(earlier["sweep_id"]), store.sweep_run_ids(earlier["sweep_id"])
    row = triggerable(store, name, last_good)
    points = sweep_points(grid, params)
    resolved = [resolve_point(definition, p, n, len(points), grid) for n, p in enumerate(points, 1)]
    converted = {k: [resolved[i][k] for i in range(len(points))] for k in grid}
    converted = {k: list({json.dumps(v, sort_keys=True): v for v in vs}.values()) for k, vs in converted.items()}
    tasks = task_rows(definition)
    use_incremental = bool(definition.get("incremental")) if incremental is None else bool(incremental)

    def write(tx: Any) -> tuple[int, list[int]]:
        from datetime import timedelta

        from nbflow.store.orm import utcnow

        now, run_ids = utcnow(), []
        for n, values in enumerate(resolved):
            at = now + timedelta(microseconds=n)
            (run_id,) = tx.create_runs(
                pipeline=name,
                version_id=row["latest_version_id"],
                params=values,
                trigger="manual",
                tasks=tasks,
                intervals=[(at, at)],
                idempotency_key=idempotency_key if n == 0 else None,
                incremental=use_incremental,
            )
            run_ids.append(run_id)
        sweep_id = tx.create_sweep(name, converted)
        tx.set_sweep(run_ids, sweep_id)
        return sweep_id, run_ids

    created = store.write(write, what="trigger sweep")
    if start and not scheduler_alive(store):
        spawn_driver(store)
    return created
