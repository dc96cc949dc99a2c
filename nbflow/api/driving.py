"""Driving runs in this process: a run, a file, a re-run, a queued run, or every queued run
(the background driver). Each is a :class:`~nbflow.driver.Driver` over one executor."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from nbflow.api.runs import RunResult, clear_run, create_run, open_store, pipeline_of_run
from nbflow.dag import Pipeline
from nbflow.driver import Driver
from nbflow.engine import Listener
from nbflow.exceptions import NbflowError
from nbflow.executors import get_executor
from nbflow.executors.base import Executor
from nbflow.loader import load_pipeline
from nbflow.states import RunState
from nbflow.store import Store


def started_driver(store: Store, run_ids: Sequence[int], executor: str | None, parallelism: int | None) -> Driver:
    """A :class:`~nbflow.driver.Driver` with its executor up, for ``run_ids``; when the executor
    cannot start, those runs fail with the reason and :class:`NbflowError` says it."""
    name = executor or store.settings.executor
    driver = Driver(store, get_executor(name, parallelism=parallelism))
    try:
        driver.start()
    except Exception as exc:
        said = exc.message if isinstance(exc, NbflowError) else str(exc)  # its hint goes in the hint, once
        note = f"executor '{name}' could not start: {type(exc).__name__}: {said}"
        store.write(lambda tx: [tx.set_run_state(r, RunState.FAILED, note=note) for r in run_ids], what="runs failed")
        which = f"run {run_ids[0]}" if len(run_ids) == 1 else f"runs {', '.join(map(str, run_ids))}"
        settings = {"dask": "NBFLOW_DASK_ADDRESS", "celery": "NBFLOW_CELERY_BROKER"}.get(name, "NBFLOW_EXECUTOR")
        hint = getattr(exc, "hint", None) or f"check the executor's settings (e.g. {settings})"
        raise NbflowError(f"{which}: {note}", hint=hint) from exc
    return driver


def drive_run(
    pipeline: Pipeline,
    run_id: int,
    *,
    executor: str | None = None,
    parallelism: int | None = None,
    listeners: Sequence[Listener] = (),
    store: Store | None = None,
    on_start: Callable[[Executor], None] | None = None,
) -> RunResult:
    """Execute a queued run in this process on the chosen executor until it ends.

    A :class:`~nbflow.driver.Driver` of its own drives it (job lease, cancel checks, database
    outages ridden out). ``on_start(executor)`` is called once the executor is up, before the
    first task is queued.
    """
    store = store or open_store()
    driver = started_driver(store, [run_id], executor, parallelism)
    try:
        if on_start is not None:
            on_start(driver.executor)
        if not driver.claim(pipeline, run_id, listeners=listeners):
            run = store.get_run(run_id)
            raise NbflowError(
                f"run {run_id} is {run['state']} and driven by job {run['driver_id']}; it cannot be driven here too"
            )
        ended = driver.drive([run_id])
    finally:
        driver.close()
    state = ended.get(run_id) or RunState(store.get_run(run_id)["state"])
    return RunResult(run_id, pipeline.name, state, [dict(r) for r in store.task_instances(run_id)])


BACKGROUND = "background"  # the job kind of `nbflow drive` without a run: one per database at a time
LINGER = 5.0  # seconds an idle background driver waits for more runs before it exits


def drive_queued(
    *, executor: str | None = None, parallelism: int | None = None, linger: float = LINGER, store: Store | None = None
) -> dict[int, RunState]:
    """Drive every run that no live job drives (queued, or left by a driver that died), in this
    process, until none has come for ``linger`` seconds; returns the runs driven and how they ended.

    What a trigger starts when no scheduler is alive. At most one such driver serves a database
    at a time: while another is alive this returns ``{}`` at once (that one takes the run).
    Before it exits it gives up its lease and looks once more, so a run queued meanwhile is never
    left without a driver: either it is seen here, or its trigger saw no background driver and
    started one.
    """
    from nbflow.driver import StoredPipelines
    from nbflow.store.scheduling import SchedulerBusyError

    store = store or open_store()
    driver = Driver(store, get_executor(executor or store.settings.executor, parallelism=parallelism), kind=BACKGROUND)
    try:
        driver.start(exclusive=True)
    except SchedulerBusyError:
        return {}
    pipelines = StoredPipelines(store)
    try:
        idle_since = time.monotonic()
        while True:
            if not driver.in_outage:
                driver.claim_waiting(pipelines)
            driver.loop_once(0.5)
            if driver.busy or driver.in_outage:
                idle_since = time.monotonic()
            elif time.monotonic() - idle_since >= linger and not driver.hand_over():
                return dict(driver.ended)
    finally:
        driver.close()


def run_pipeline(
    pipeline: Pipeline,
    *,
    params: Mapping[str, Any] | None = None,
    only: Iterable[str] | None = None,
    executor: str | None = None,
    parallelism: int | None = None,
    trigger: str = "manual",
    incremental: bool | None = None,
    force: Iterable[str] | None = None,
    allow_stale_inputs: bool = False,
    listeners: Sequence[Listener] = (),
    store: Store | None = None,
    on_start: Callable[[Executor], None] | None = None,
) -> RunResult:
    """Create a run of ``pipeline`` and drive it to its end (see :func:`create_run`)."""
    store = store or open_store()
    name = executor or store.settings.executor
    run_id = create_run(
        pipeline,
        params=params,
        only=only,
        trigger=trigger,
        executor=name,
        incremental=incremental,
        force=force,
        allow_stale_inputs=allow_stale_inputs,
        store=store,
    )
    return drive_run(
        pipeline, run_id, executor=name, parallelism=parallelism, listeners=listeners, store=store, on_start=on_start
    )


def run_file(path: str | os.PathLike[str], *, pipeline_name: str | None = None, **kwargs: Any) -> RunResult:
    """Load a pipeline file and run it (see :func:`run_pipeline`)."""
    return run_pipeline(load_pipeline(path, pipeline_name), **kwargs)


def rerun(
    run_id: int,
    *,
    tasks: Iterable[str] | None = None,
    executor: str | None = None,
    parallelism: int | None = None,
    listeners: Sequence[Listener] = (),
    store: Store | None = None,
) -> RunResult:
    """Clear tasks of a finished run (see :func:`clear_run`) and drive it again here.

    The pipeline is loaded again from its file, so a fixed notebook or function is used;
    successful tasks keep their outputs and are not run again. When there is nothing to clear
    (every task succeeded), nothing is loaded or started and the run is returned as it is.
    """
    store = store or open_store()
    if not clear_run(run_id, tasks, dry_run=True, store=store):  # every task succeeded: nothing to start
        run = store.get_run(run_id)
        return RunResult(
            run_id, run["pipeline"], RunState(run["state"]), [dict(r) for r in store.task_instances(run_id)]
        )
    pipeline = pipeline_of_run(run_id, store=store)
    clear_run(run_id, tasks, store=store)
    return drive_run(pipeline, run_id, executor=executor, parallelism=parallelism, listeners=listeners, store=store)


def drive_existing(run_id: int, *, executor: str | None = None, store: Store | None = None, **kwargs: Any) -> RunResult:
    """Drive a queued run (one triggered from the UI or a notebook) in this process."""
    store = store or open_store()
    run = store.get_run(run_id)
    return drive_run(
        pipeline_of_run(run_id, store=store), run_id, executor=executor or run["executor"], store=store, **kwargs
    )
