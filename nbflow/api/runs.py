"""Running pipelines: create, drive, re-run and cancel runs; read their records."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from nbflow import params as nbparams
from nbflow.api.upstream import refuse_stale, upstream_values
from nbflow.config import Settings, get_settings
from nbflow.dag import Pipeline
from nbflow.exceptions import NbflowError, ParameterError, StateConflictError, UnknownTaskError
from nbflow.executors import executor_class
from nbflow.incremental import PlannedTask, choose, known_outputs, plan
from nbflow.loader import load_pipeline
from nbflow.render import map_badges, render, to_dot
from nbflow.setupteardown import by_id, rows_of, with_setups_and_teardowns
from nbflow.states import FINISHED, SUCCEEDED, RunState, TaskState
from nbflow.store import Store
from nbflow.store.orm import utcnow
from nbflow.store.scheduling import task_rows

_stores: dict[str, Store] = {}


def open_store(settings: Settings | None = None) -> Store:
    """The store of the configured database (created and upgraded on first use)."""
    settings = settings or get_settings()
    store = _stores.get(settings.db_url)
    if store is None or store.settings != settings:
        store = _stores[settings.db_url] = Store(settings=settings)
    return store


@dataclass
class RunResult:
    """How a run ended: its id, state and task instance rows."""

    run_id: int
    pipeline: str
    state: RunState
    tasks: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether the run succeeded."""
        return self.state is RunState.SUCCESS

    def task(self, task_id: str) -> dict[str, Any]:
        """One task instance row."""
        for row in self.tasks:
            if row["task_id"] == task_id:
                return row
        raise KeyError(task_id)


def _only_subset(pipeline: Pipeline, only: Iterable[str] | None) -> list[str]:
    order = pipeline.order()
    if not only:
        return order
    wanted = list(dict.fromkeys(only))
    for tid in wanted:
        if tid not in pipeline.tasks:
            raise UnknownTaskError(pipeline.name, tid, pipeline.tasks, where="--only")
    chosen = with_setups_and_teardowns(rows_of(pipeline.tasks), wanted)  # a task runs with its setups and teardowns
    return [tid for tid in order if tid in chosen]


def create_run(
    pipeline: Pipeline,
    *,
    params: Mapping[str, Any] | None = None,
    only: Iterable[str] | None = None,
    trigger: str = "manual",
    executor: str | None = None,
    incremental: bool | None = None,
    force: Iterable[str] | None = None,
    allow_stale_inputs: bool = False,
    store: Store | None = None,
) -> int:
    """Validate parameters and the task selection, record the pipeline version and a queued run.

    ``incremental`` (default: the pipeline's ``incremental=``): reuse up-to-date tasks, except
    the ``force``d ones and their downstream (:mod:`nbflow.incremental`). With ``only``, an
    upstream value computed with other parameters is refused unless ``allow_stale_inputs``
    (:mod:`nbflow.api.upstream`).
    """
    return create_runs(
        pipeline,
        [dict(params or {})],
        only=only,
        trigger=trigger,
        executor=executor,
        incremental=incremental,
        force=force,
        allow_stale_inputs=allow_stale_inputs,
        store=store,
    )[1][0]


def create_runs(
    pipeline: Pipeline,
    points: Sequence[Mapping[str, Any]],
    *,
    sweep: Mapping[str, Sequence[Any]] | None = None,
    only: Iterable[str] | None = None,
    trigger: str = "manual",
    executor: str | None = None,
    incremental: bool | None = None,
    force: Iterable[str] | None = None,
    allow_stale_inputs: bool = False,
    store: Store | None = None,
) -> tuple[int | None, list[int]]:
    """:func:`create_run` for each parameter set of ``points``, in one transaction; every set
    is validated before anything is written. With ``sweep`` (the grid ``{param: [values]}``
    the points came from) a sweep row groups the runs. Returns ``(sweep id or None, run ids)``."""
    store = store or open_store()
    if executor is not None:
        executor_class(executor)  # an unknown name fails before anything is written
    incremental, force = choose(pipeline, incremental, force)
    resolved = [resolve_point(pipeline, point, n, len(points), sweep) for n, point in enumerate(points, 1)]
    selected = _only_subset(pipeline, only)
    external = {u for tid in selected for u in pipeline.tasks[tid].upstream_ids} - set(selected)
    missing = sorted(u for u in external if store.latest_success(pipeline.name, u) is None)
    if missing:
        raise NbflowError(
            f"--only needs the output of {', '.join(missing)}, which never succeeded in pipeline '{pipeline.name}'",
            hint=f"run them first or add them: --only {' '.join([*missing, *selected])}",
        )
    if external and not allow_stale_inputs:
        for values in resolved:
            refuse_stale(pipeline, upstream_values(pipeline, selected, values, store=store), selected)
    prints = pipeline.task_fingerprints()  # once: a 1,000-task pipeline hashes every task for both
    definition, fingerprint = pipeline.definition(prints), pipeline.fingerprint(prints)
    tasks = task_rows(definition, selected)
    now = utcnow()

    def write(tx: Any) -> tuple[int | None, list[int]]:
        version = tx.upsert_pipeline(definition, fingerprint)
        run_ids = []
        for n, values in enumerate(resolved):
            at = now + timedelta(microseconds=n)  # runs are unique per (pipeline, logical date)
            (run_id,) = tx.create_runs(
                pipeline=pipeline.name,
                version_id=version,
                params=values,
                trigger=trigger,
                tasks=tasks,
                executor=executor,
                intervals=[(at, at)],
                incremental=incremental,
                force=force,
            )
            run_ids.append(run_id)
        if sweep is None:
            return None, run_ids
        sweep_id = tx.create_sweep(pipeline.name, sweep)
        tx.set_sweep(run_ids, sweep_id)
        return sweep_id, run_ids

    return store.write(write, what="create runs" if sweep else "create run")


def resolve_point(
    pipeline: Pipeline | Mapping[str, Any],
    point: Mapping[str, Any],
    n: int,
    total: int,
    sweep: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """Run parameters of point ``n`` of ``total`` for ``pipeline`` (a Pipeline or its stored
    definition; see ``nbflow.params.resolve_for``); a sweep's bad point raises a ParameterError
    that names the point and says no run was created."""
    try:
        return nbparams.resolve_for(pipeline, dict(point))
    except ParameterError as exc:
        if sweep is None:
            raise
        shown = ", ".join(f"{k}={point[k]}" for k in sweep if k in point)
        raise ParameterError(
            f"sweep point {n} of {total} ({shown}): {exc.message}; no run was created",
            where=exc.where,
            hint=exc.hint,
            unknown=exc.unknown,
            invalid=exc.invalid,
        ) from None


def plan_run(
    pipeline: Pipeline,
    *,
    params: Mapping[str, Any] | None = None,
    only: Iterable[str] | None = None,
    incremental: bool | None = None,
    force: Iterable[str] | None = None,
    store: Store | None = None,
) -> list[PlannedTask]:
    """What a run would do, task by task (``reuse`` with the attempt, or ``run`` with the
    reason), executing nothing and writing no run (``nbflow run --dry-run``)."""
    store = store or open_store()
    incremental, force = choose(pipeline, incremental, force)
    resolved = nbparams.resolve_for(pipeline, dict(params or {}))
    selected = _only_subset(pipeline, only)
    return plan(
        store,
        pipeline,
        resolved,
        artifact_root=store.settings.artifact_root,
        incremental=incremental,
        selected=selected,
        force=force,
    )


def pipeline_of_run(run_id: int, *, store: Store | None = None) -> Pipeline:
    """Load the pipeline of a run from the file it was defined in."""
    store = store or open_store()
    run = store.get_run(run_id)
    row = store.get_pipeline(run["pipeline"])
    if not row or not row["file"]:
        raise NbflowError(f"run {run_id}: pipeline '{run['pipeline']}' has no file to load it from")
    return load_pipeline(row["file"], run["pipeline"])


def clear_run(
    run_id: int,
    tasks: Iterable[str] | None = None,
    *,
    downstream: bool = True,
    upstream: bool = False,
    dry_run: bool = False,
    store: Store | None = None,
) -> list[str]:
    """Reset tasks of a finished run (default: those that failed or were cancelled; skipped is
    no failure), with what is downstream of them (``downstream``) and what they depend on
    (``upstream``), and their setups and teardowns (:mod:`nbflow.setupteardown`), to
    ``pending``, and queue the run again; returns the cleared task ids (with ``dry_run``: the
    ones it would clear, writing nothing). A cleared task gets its retries again (``max_tries``
    grows by them). In an incremental run the chosen ``tasks`` join its ``--force`` list (they
    run, not reused)."""
    store = store or open_store()
    run = store.get_run(run_id)
    if run["state"] not in {s.value for s in (RunState.SUCCESS, RunState.FAILED, RunState.CANCELLED)}:
        raise StateConflictError(
            f"run {run_id} is {run['state']}; only a finished run can be re-run",
            hint="wait until it has finished, or cancel it first",
        )
    tis = {r["task_id"]: r for r in store.task_instances(run_id)}
    if tasks is None:
        # what failed (or was cancelled); a skipped task is no failure (Airflow's "clear failed")
        chosen = [tid for tid, r in tis.items() if TaskState(r["state"]) not in SUCCEEDED | {TaskState.SKIPPED}]
    else:
        chosen = list(tasks)
        for tid in chosen:
            if tid not in tis:
                raise UnknownTaskError(run["pipeline"], tid, tis, where=f"run {run_id}")
    version = store.get_version(run["version_id"]) if run["version_id"] else None
    definition = version["definition"]["tasks"] if version else []
    # A mapped task's instances are not in the definition: a chosen instance brings its mapped
    # task (which expands again, keeping the instances not cleared) and what is downstream of it.
    instances = {tid: r["map_parent"] for tid, r in tis.items() if r["map_parent"]}
    via_instance = {instances[tid] for tid in chosen if tid in instances}
    seeds = [tid for tid in chosen if tid not in instances] + sorted(via_instance)
    down = _edges(definition, down=True)
    closure = set(chosen) | via_instance
    if downstream:
        closure |= _closure(seeds, down)
    if upstream:
        closure |= _closure(seeds, _edges(definition, down=False))
    closure |= with_setups_and_teardowns(by_id(definition), closure)  # a cleared task's setups and teardowns
    # ... but a mapped task cleared for its upstream's sake (or chosen alone) runs every instance again
    reached = _closure([c for tid in seeds for c in down.get(tid, ())], down) if downstream else set()
    whole = {tid for tid in closure if tid in reached or (tid in chosen and tid not in via_instance)}
    closure |= {tid for tid, parent in instances.items() if parent in whole}
    closure &= set(tis)
    if dry_run:
        return [tid for tid in tis if tid in closure]
    retries = {t["id"]: int(t.get("retries") or 0) for t in definition}
    retries.update({tid: retries.get(parent, 0) for tid, parent in instances.items()})

    # an incremental run would reuse a chosen task again: choosing it is asking for it to run
    fields = {"force": sorted({*(run["force"] or ()), *chosen})} if run["incremental"] and tasks is not None else {}

    def write(tx: Any) -> list[str]:
        cleared = tx.clear_tasks(run_id, [tid for tid in tis if tid in closure], retries)
        tx.set_run_state(run_id, RunState.QUEUED, driver_id=None, **fields)
        return cleared

    return store.write(write, what="clear tasks")


def _edges(tasks: Iterable[Mapping[str, Any]], *, down: bool) -> dict[str, list[str]]:
    """task -> its direct downstream (``down``) or upstream tasks, from a stored definition."""
    out: dict[str, list[str]] = {}
    for t in tasks:
        for up in t["upstream"]:
            if down:
                out.setdefault(up, []).append(t["id"])
            else:
                out.setdefault(t["id"], []).append(up)
    return out


def _closure(start: Iterable[str], edges: Mapping[str, list[str]]) -> set[str]:
    """Every task reachable from ``start`` along ``edges``."""
    seen: set[str] = set()
    stack = list(start)
    while stack:
        tid = stack.pop()
        if tid not in seen:
            seen.add(tid)
            stack.extend(edges.get(tid, ()))
    return seen


def cancel_run(run_id: int, *, why: str = "cancelled by request", store: Store | None = None) -> list[str]:
    """Cancel a queued or running run; returns the tasks that were still unfinished.

    The run and its unfinished tasks are marked ``cancelled`` at once; the process driving
    the run notices within ``cancel_poll`` seconds and kills what is in flight (notebook
    kernels, shell commands, Dask futures).
    """
    store = store or open_store()
    run = store.get_run(run_id)
    if run["state"] not in (RunState.QUEUED.value, RunState.RUNNING.value):
        raise StateConflictError(f"run {run_id} is {run['state']}; only a queued or running run can be cancelled")
    open_tasks = [r["task_id"] for r in store.task_instances(run_id) if TaskState(r["state"]) not in FINISHED]

    def write(tx: Any) -> None:
        tx.set_run_state(run_id, RunState.CANCELLED, note=why)
        for tid in open_tasks:
            tx.set_task_state(run_id, tid, TaskState.CANCELLED, reason="cancelled", error=why)

    store.write(write, what="cancel run")
    return open_tasks


# --- reading -------------------------------------------------------------------------------


def list_runs(
    pipeline: str | None = None, *, limit: int = 20, offset: int = 0, store: Store | None = None
) -> list[dict[str, Any]]:
    """Newest runs first (skipping ``offset``), with their task counts by state and their
    ``metrics`` (:func:`run_metrics`)."""
    store = store or open_store()
    runs = store.list_runs(pipeline, limit=limit, offset=offset)
    metrics, _ = run_metrics([r["id"] for r in runs], store=store)
    out = []
    for run in runs:
        counts: dict[str, int] = {}
        for ti in store.task_instances(run["id"]):
            counts[ti["state"]] = counts.get(ti["state"], 0) + 1
        out.append({**dict(run), "task_counts": counts, "metrics": metrics[run["id"]]})
    return out


def run_metrics(run_ids: Sequence[int], *, store: Store | None = None) -> tuple[dict[int, dict[str, Any]], list[str]]:
    """Each run's metrics by column ``task.metric`` (a mapped instance: ``task[i].metric``): those
    of the final try of each task (a task reused by an incremental run: the attempt it reused);
    and the columns in order of first appearance."""
    store = store or open_store()
    values: dict[int, dict[str, Any]] = {i: {} for i in run_ids}
    columns: dict[str, None] = {}
    for m in store.final_metrics(list(values)):
        task = m["task_id"] if m["map_index"] is None else f"{m['task_id']}[{m['map_index']}]"
        column = f"{task}.{m['name']}"
        columns.setdefault(column)
        values[m["run_id"]][column] = m["value"]
    return values, list(columns)


def run_details(run_id: int, *, store: Store | None = None) -> dict[str, Any]:
    """A run, its task instances, attempts (each with ``traceback_short``: its traceback with
    library frames folded, :mod:`nbflow.api.tracebacks`; ``html_export``: whether it wrote an
    ``export="html"`` page) and artifacts."""
    from nbflow.api.exports import has_export
    from nbflow.api.tracebacks import fold_library_frames

    store = store or open_store()
    return {
        "run": dict(store.get_run(run_id)),
        "tasks": [dict(r) for r in store.task_instances(run_id)],
        "attempts": [
            {**r, "traceback_short": fold_library_frames(r["traceback"]), "html_export": has_export(r["output_uri"])}
            for r in store.attempts(run_id)
        ],
        "artifacts": [dict(r) for r in store.artifacts(run_id)],
    }


def load_output(run_id: int, task_id: str, *, store: Store | None = None) -> Any:
    """The value a successful task of a run produced (as downstream tasks saw it)."""
    from nbflow.artifacts import UpstreamOutput
    from nbflow.tasks import get_kind

    store = store or open_store()
    rows = store.task_instances(run_id)
    ti = next((r for r in rows if r["task_id"] == task_id), None)
    if ti is None or TaskState(ti["state"]) not in SUCCEEDED:
        raise NbflowError(f"task '{task_id}' of run {run_id} has no successful output")
    style = get_kind(ti["kind"]).value_style
    if ti["map_count"] is not None:  # a mapped task: its successful instances' values, in map-index order
        done = sorted(
            (r for r in rows if r["map_parent"] == task_id and TaskState(r["state"]) in SUCCEEDED),
            key=lambda r: r["map_index"],
        )
        outputs = known_outputs(store, done)
        items = [{"style": style, "refs": list(outputs[r["task_id"]].refs)} for r in done]
        return UpstreamOutput("mapped", items).value()
    refs = known_outputs(store, [ti])[task_id].refs  # a cached task: the outputs of the attempt it reused
    return UpstreamOutput(style, list(refs)).value()


def dag_picture(
    pipeline: Pipeline | Mapping[str, Any],
    *,
    run_id: int | None = None,
    fmt: str = "svg",
    store: Store | None = None,
    collapsed: Iterable[str] = (),
) -> bytes | str:
    """The DAG as DOT text (``fmt="dot"``) or rendered bytes, coloured by a run's states; the task
    groups in ``collapsed`` drawn as one node each."""
    definition = pipeline.definition() if isinstance(pipeline, Pipeline) else pipeline
    states = badges = None
    if run_id is not None:
        store = store or open_store()
        rows = store.task_instances(run_id)
        states, badges = {r["task_id"]: r["state"] for r in rows}, map_badges(rows)
    dot = to_dot(definition, states, badges, collapsed)
    return dot if fmt == "dot" else render(dot, fmt)


def task_finished(run_id: int, task_id: str, *, store: Store | None = None) -> bool:
    """Whether a task of a run has reached a final state (for following its log)."""
    store = store or open_store()
    for row in store.task_instances(run_id):
        if row["task_id"] == task_id:
            return TaskState(row["state"]) in FINISHED
    raise UnknownTaskError(store.get_run(run_id)["pipeline"], task_id, [], where=f"run {run_id}")
