"""Pipelines as the scheduler, the web UI and the magics see them: list, trigger, pause,
clear, backfill, pools, retention."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import RowMapping
from sqlalchemy.exc import DBAPIError, IntegrityError

from nbflow import params as nbparams
from nbflow.api.driving import BACKGROUND
from nbflow.api.runs import open_store
from nbflow.api.spawn import spawn_once
from nbflow.artifacts import join
from nbflow.config import get_settings
from nbflow.exceptions import (
    DuplicateRunError,
    NbflowError,
    PipelineNotFoundError,
    StateConflictError,
)
from nbflow.schedule import Schedule, get_timezone, normalize, parse_date, refuse_unended
from nbflow.store import Store, Tx
from nbflow.store.orm import utcnow
from nbflow.store.scheduling import task_rows
from nbflow.store.session import is_transient, outage_kind, probe_engine

log = logging.getLogger("nbflow.api")


def _pipeline_row(store: Store, name: str) -> RowMapping:
    """A known pipeline's row (one with a stored version); :class:`PipelineNotFoundError` otherwise."""
    row = store.get_pipeline(name)
    if row is None or row["latest_version_id"] is None:
        known = [p["name"] for p in store.list_pipelines()]
        raise PipelineNotFoundError(
            f"no pipeline named '{name}'",
            hint=f"known pipelines: {', '.join(known) or '(none)'}; a file not run or scheduled yet: "
            "`nbflow dags register FILE` records its pipeline",
        )
    return row


def _version_definition(store: Store, version_id: int) -> dict[str, Any]:
    version = store.get_version(version_id)
    assert version is not None, f"pipeline version {version_id} is referenced by a row (a foreign key)"
    return dict(version["definition"])


def _definition(store: Store, name: str) -> dict[str, Any]:
    return _version_definition(store, _pipeline_row(store, name)["latest_version_id"])


def _param_types(definition: Mapping[str, Any]) -> dict[str, str]:
    """Each declared parameter's type (bool, int, float, string, ...): JSON cannot tell 1.0 from 1."""
    return {k: nbparams.value_type(v) for k, v in (definition.get("params") or {}).items()}


def pipeline_file(name: str, *, store: Store | None = None) -> str | None:
    """The file a known pipeline is defined in (None: it exists only in a notebook kernel)."""
    store = store or open_store()
    _definition(store, name)
    return _pipeline_row(store, name)["file"]


def scheduler_alive(store: Store | None = None) -> bool:
    """Whether a scheduler holds a fresh heartbeat lease on this database."""
    store = store or open_store()
    return bool(store.live_jobs(store.settings.orphan_timeout, kinds=("scheduler",)))


def background_driver_alive(store: Store | None = None) -> bool:
    """Whether a background driver (``nbflow drive`` without a run) holds a fresh lease here."""
    store = store or open_store()
    return bool(store.live_jobs(store.settings.orphan_timeout, kinds=(BACKGROUND,)))


def spawn_driver(store: Store | None = None) -> int | None:
    """Start a background ``nbflow drive`` process that drives every queued run until none is
    left, unless one serves this database already; returns its pid (None: one serves).

    Used when no scheduler is alive, so a run triggered from a notebook or the command line
    still runs (one at a time per home, see :func:`nbflow.api.spawn.spawn_once`). Its log is
    ``$NBFLOW_HOME/drivers/background.log``.
    """
    store = store or open_store()
    return spawn_once(store, "drivers", "background", ["drive"], lambda: background_driver_alive(store))


def trigger(
    name: str,
    *,
    params: Mapping[str, Any] | None = None,
    logical_date: datetime | str | None = None,
    incremental: bool | None = None,
    start: bool = True,
    last_good: bool = False,
    idempotency_key: str | None = None,
    store: Store | None = None,
) -> int:
    """Queue a manual run of a known pipeline with validated parameters; returns its id.

    ``incremental``: the run reuses the tasks that are up to date (default: the pipeline's
    ``incremental=``).

    The scheduler picks it up; when no scheduler is alive and ``start`` is true, a
    background ``nbflow drive`` process runs it. A second trigger for the same logical date
    raises :class:`DuplicateRunError` with the existing run's id; a second trigger with the
    same ``idempotency_key`` returns the run the first one made. Refused
    (:class:`StateConflictError`): a pipeline that exists only in a notebook kernel (no file
    a driver could load), and one whose file is broken now unless ``last_good`` (then the
    last version that loaded runs).
    """
    store = store or open_store()
    definition = _definition(store, name)
    if idempotency_key is not None:
        earlier = store.run_for_key(name, idempotency_key)
        if earlier is not None:
            return int(earlier["id"])
    row = triggerable(store, name, last_good)
    resolved = nbparams.resolve_for(definition, dict(params or {}))
    if isinstance(logical_date, str):
        logical_date = parse_date(
            logical_date, pipeline=name, field="logical_date", tz=get_timezone("UTC", pipeline=name)
        )
    logical = logical_date or utcnow()
    if logical_date is not None:
        existing = store.run_for_date(name, logical)
        if existing is not None:
            raise DuplicateRunError(name, logical, existing["id"])
    version = row["latest_version_id"]
    try:
        (run_id,) = store.write(
            lambda tx: tx.create_runs(
                pipeline=name,
                version_id=version,
                params=resolved,
                trigger="manual",
                tasks=task_rows(definition),
                intervals=[(logical, logical)],
                idempotency_key=idempotency_key,
                incremental=bool(definition.get("incremental")) if incremental is None else bool(incremental),
            ),
            what="trigger",
        )
    except IntegrityError as exc:
        if idempotency_key is not None and (earlier := store.run_for_key(name, idempotency_key)) is not None:
            return int(earlier["id"])  # a concurrent request with the same key won
        existing = store.run_for_date(name, logical)
        raise DuplicateRunError(name, logical, existing["id"] if existing else None) from exc
    if start and not scheduler_alive(store):
        spawn_driver(store)
    return run_id


def triggerable(store: Store, name: str, last_good: bool = False) -> RowMapping:
    """The row of a pipeline a trigger may queue runs of; refused (:class:`StateConflictError`)
    when it exists only in a notebook kernel, or its file is broken now unless ``last_good``."""
    row = _pipeline_row(store, name)
    if not row["file"]:
        raise StateConflictError(
            f"pipeline '{name}' exists only in a notebook kernel (%nbflow run this): no scheduler or background "
            "driver can load it, so a triggered run would wait forever",
            hint='save the notebook and use "Run as pipeline" (or `nbflow run NOTEBOOK.ipynb`), or run it '
            "again in the kernel with %nbflow run this",
        )
    broken = {e["filename"]: e for e in store.import_errors()}.get(row["file"])
    if broken is not None and not last_good:
        raise StalePipelineError(
            f"the file of pipeline '{name}' is broken now ({import_error_text(broken)}); a run would use "
            f"the last version that loaded (saved {row['updated_at']:%Y-%m-%d %H:%M} UTC)",
            hint="fix the file, or trigger again with last_good=true to run the last good version",
        )
    return row


def import_error_text(error: Mapping[str, Any] | RowMapping) -> str:
    """An import error as ``file:line: message``, the location said once (the loader's message
    often starts with it already)."""
    where, what = error.get("location") or error.get("filename") or "", error.get("error") or ""
    return what if not where or what.startswith(where) else f"{where}: {what}"


class StalePipelineError(StateConflictError):
    """A pipeline's file is broken now: a run would use its last good version (ask first)."""


def clear_tasks(
    run_id: int,
    task_ids: Iterable[str] | None = None,
    *,
    downstream: bool = True,
    upstream: bool = False,
    dry_run: bool = False,
    start: bool = True,
    store: Store | None = None,
) -> list[str]:
    """Clear tasks of a finished run (default: the unsuccessful ones) and what is downstream
    (``upstream``: and what they depend on); queue the run again. See :func:`~nbflow.api.runs.clear_run`."""
    from nbflow.api.runs import clear_run

    store = store or open_store()
    cleared = clear_run(run_id, task_ids, downstream=downstream, upstream=upstream, dry_run=dry_run, store=store)
    if start and not dry_run and not scheduler_alive(store):
        spawn_driver(store)
    return cleared


def set_paused(name: str, paused: bool, *, store: Store | None = None) -> None:
    """Pause (no new scheduled runs) or unpause a pipeline."""
    store = store or open_store()
    _definition(store, name)
    store.write(lambda tx: tx.set_paused(name, paused), what="pause")


def list_pipelines(*, store: Store | None = None) -> list[dict[str, Any]]:
    """Every known pipeline with schedule, paused, last run, task count and any import error."""
    store = store or open_store()
    errors = {e["filename"]: dict(e) for e in store.import_errors()}
    out = []
    for row in store.list_pipelines():
        last = store.list_runs(row["name"], limit=1)
        version = store.get_version(row["latest_version_id"]) if row["latest_version_id"] else None
        definition = version["definition"] if version else {"tasks": []}
        out.append(
            {
                **dict(row),
                "tasks": len(definition["tasks"]),
                "params": definition.get("params", {}),
                "param_types": _param_types(definition),
                "param_schemas": definition.get("param_schemas") or {},
                "schedule_assets": [a["name"] for a in definition.get("schedule_assets") or []],
                "last_run": dict(last[0]) if last else None,
                "import_error": errors.get(row["file"] or ""),
            }
        )
    return out


def import_errors(*, store: Store | None = None) -> list[dict[str, Any]]:
    """Files of the DAG folder that failed to load, with ``file:line`` and the message."""
    store = store or open_store()
    return [dict(e) for e in store.import_errors()]


def pipeline_graph(name: str, *, run_id: int | None = None, store: Store | None = None) -> dict[str, Any]:
    """A pipeline's DAG (nodes, edges, kinds) and a run's task states (default: its latest run)."""
    store = store or open_store()
    definition = _definition(store, name)
    run = store.get_run(run_id) if run_id is not None else next(iter(store.list_runs(name, limit=1)), None)
    if run is not None and run["pipeline"] != name:
        raise NbflowError(f"run {run_id} belongs to pipeline '{run['pipeline']}', not '{name}'")
    if run is not None and run["version_id"]:
        definition = _version_definition(store, run["version_id"])
    tasks = {r["task_id"]: dict(r) for r in store.task_instances(run["id"])} if run is not None else {}
    errors = {e["filename"]: dict(e) for e in store.import_errors()}
    return {
        "pipeline": name,
        "definition": definition,
        "run": dict(run) if run is not None else None,
        "states": {tid: r["state"] for tid, r in tasks.items()},
        "tasks": tasks,
        "import_error": errors.get(definition.get("file") or ""),
        "param_types": _param_types(definition),
    }


def backfill(
    name: str, start: datetime | str, end: datetime | str, *, store: Store | None = None
) -> tuple[list[int], int]:
    """Queue the scheduled runs of ``name`` whose logical dates fall in [start, end].

    Returns (new run ids, number that existed already): creating a run twice is a no-op.
    """
    store = store or open_store()
    definition = _definition(store, name)
    if not definition.get("schedule"):
        raise NbflowError(f"pipeline '{name}' has no schedule to backfill", hint="give it Pipeline(schedule='...')")
    tz = get_timezone(definition.get("timezone") or "UTC", pipeline=name)
    first = parse_date(start, pipeline=name, field="--start", tz=tz)
    last = parse_date(end, pipeline=name, field="--end", tz=tz)
    if last < first:
        raise NbflowError(f"backfill of '{name}': --end {last:%Y-%m-%d %H:%M} is before --start {first:%Y-%m-%d %H:%M}")
    schedule = Schedule(normalize(definition["schedule"]), tz)
    intervals, tick = [], schedule.first_tick_at_or_after(first)
    while tick <= last:
        intervals.append(schedule.interval(tick))
        tick = intervals[-1][1]
    refuse_unended(name, intervals, tz)
    version = _pipeline_row(store, name)["latest_version_id"]
    params = nbparams.resolve_for(definition, {})
    created = store.write(
        lambda tx: tx.create_runs(
            pipeline=name,
            version_id=version,
            params=params,
            trigger="backfill",
            tasks=task_rows(definition),
            intervals=intervals,
            skip_existing=True,
            incremental=bool(definition.get("incremental")),
        ),
        what="backfill",
    )
    return created, len(intervals) - len(created)


def set_pool(name: str, slots: int, description: str = "", *, store: Store | None = None) -> None:
    """Create or resize a pool (``slots`` >= 0)."""
    if not isinstance(slots, int) or slots < 0:
        raise NbflowError(f"pool '{name}' needs a whole number of slots >= 0, got {slots!r}")
    store = store or open_store()
    store.write(lambda tx: tx.set_pool(name, slots, description), what="set pool")


def delete_pool(name: str, *, store: Store | None = None) -> None:
    """Remove a pool."""
    store = store or open_store()
    if not store.write(lambda tx: tx.delete_pool(name), what="delete pool"):
        raise NbflowError(f"no pool named '{name}'", hint="`nbflow pools list` shows them")


def pools(*, store: Store | None = None) -> list[dict[str, Any]]:
    """Pools with slots and slots in use."""
    store = store or open_store()
    return [dict(p) for p in store.pools()]


def clean(older_than: timedelta, *, dry_run: bool = False, store: Store | None = None) -> list[int]:
    """Delete finished runs created more than ``older_than`` ago, with their logs and artifacts."""
    import fsspec

    store = store or open_store()
    runs = store.finished_runs_before(utcnow() - older_than)
    ids = [r["id"] for r in runs]
    if dry_run or not ids:
        return ids
    root = store.settings.artifact_root
    fs, _ = fsspec.core.url_to_fs(root)
    for run in runs:
        folder = fsspec.core.url_to_fs(join(root, run["pipeline"], f"run-{run['id']}"))[1]
        if fs.exists(folder):
            fs.rm(folder, recursive=True)
    for chunk in range(0, len(ids), 500):

        def delete(tx: Tx, part: list[int] = ids[chunk : chunk + 500]) -> None:
            tx.delete_runs(part)

        store.write(delete, what="clean")
    return ids


def parse_age(text: str) -> timedelta:
    """``30d``, ``12h``, ``90m`` or ``45s`` as a timedelta."""
    units = {"d": "days", "h": "hours", "m": "minutes", "s": "seconds"}
    try:
        return timedelta(**{units[text[-1]]: float(text[:-1])})
    except (KeyError, ValueError, IndexError):
        raise NbflowError(f"cannot read the age {text!r}", hint="use a number and a unit: 30d, 12h, 90m, 45s") from None


def health(*, store: Store | None = None) -> dict[str, Any]:
    """Whether runs are being served: the database answers and a scheduler holds its lease.

    Never raises and never waits long: it uses a probe connection with short timeouts and no
    retries (:func:`nbflow.store.session.probe_engine`), and first marks ``dead`` the jobs
    whose lease expired (``Tx.expire_jobs``). ``status`` is ``ok``, or ``degraded`` with a
    ``reason``: the database is unavailable, or no scheduler is alive (then ``serving`` says
    whether runners — ``nbflow run``, background ``nbflow drive`` processes — are driving runs).
    """
    settings = store.settings if store is not None else get_settings()
    url = store.url if store is not None else settings.db_url
    probe = Store(url, settings=settings.with_overrides(db_retries=0), upgrade=False, engine=probe_engine(url))

    def look() -> tuple[int, list[dict[str, Any]]]:
        expired = probe.write(lambda tx: tx.expire_jobs(settings.orphan_timeout), what="health: expire jobs")
        return expired, [dict(j) for j in probe.live_jobs(settings.orphan_timeout).values()]

    try:
        try:
            expired, jobs = look()
        except DBAPIError as exc:
            if is_transient(exc):
                raise
            open_store(settings)  # not an outage: a database without nbflow's tables yet gets them
            expired, jobs = look()
    except Exception as exc:  # report, never raise
        kind = outage_kind(exc) if isinstance(exc, DBAPIError) and is_transient(exc) else f"error: {type(exc).__name__}"
        log.warning("health: the database is unavailable: %s", exc)
        return {
            "status": "degraded",
            "reason": f"the nbflow database is unavailable ({kind})",
            "database": kind,
            "schedulers": [],
            "runners": 0,
            "serving": "unknown",
            "expired_jobs": 0,
        }
    schedulers = [j for j in jobs if j["kind"] == "scheduler"]
    runners = len(jobs) - len(schedulers)
    answer = {
        "status": "ok",
        "reason": None,
        "database": "ok",
        "schedulers": schedulers,
        "runners": runners,
        "serving": "scheduler" if schedulers else "runners" if runners else "none",
        "expired_jobs": expired,
    }
    if not schedulers:
        answer["status"] = "degraded"
        answer["reason"] = (
            f"no scheduler holds the lease (none heartbeat within {settings.orphan_timeout:g} s): scheduled runs are "
            "not created, and each triggered run is driven by a background `nbflow drive` process; "
            + (f"{runners} runner(s) are driving runs now" if runners else "no runner is driving runs now")
            + ". Start one: nbflow scheduler"
        )
    return answer


__all__ = [
    "DuplicateRunError",
    "backfill",
    "background_driver_alive",
    "clean",
    "clear_tasks",
    "delete_pool",
    "health",
    "import_errors",
    "list_pipelines",
    "parse_age",
    "pipeline_file",
    "pipeline_graph",
    "pools",
    "scheduler_alive",
    "set_paused",
    "set_pool",
    "spawn_driver",
    "trigger",
]
