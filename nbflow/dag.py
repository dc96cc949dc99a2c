"""The pipeline model: tasks, edges, validation and fingerprints. Pure; no I/O but hashing.

A :class:`Pipeline` is a set of :class:`Task` objects keyed by id plus, on each task, the
ids of its upstream tasks. Edges come from data (passing one task's handle to another)
and from ordering (``a >> b``). Graph algorithms live in :mod:`nbflow.graph` and
references (outputs, parameters) in :mod:`nbflow.refs`; both are re-exported here.
"""

from __future__ import annotations

import contextvars
import hashlib
import os
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from types import FrameType
from typing import Any

from nbflow.exceptions import DagCycleError, DefinitionError, DuplicateTaskError, ScheduleError, UnknownTaskError
from nbflow.fingerprint import Fingerprinted
from nbflow.graph import find_cycle, toposort
from nbflow.mapspec import MapSpec, check_mapping
from nbflow.refs import OutputRef, ParamRef, ParamsView, find_refs, resolve_refs  # noqa: F401 - re-exported
from nbflow.schedule import Schedule, get_timezone, parse_date, validate_cron
from nbflow.setupteardown import SetupTeardown
from nbflow.typedparams import run_checks, split_params

TRIGGER_RULES: tuple[str, ...] = ("all_success", "all_failed", "all_done", "one_success", "one_failed", "none_failed")
TRIGGER_RULES += ("always", "one_done", "none_failed_min_one_success", "none_skipped", "all_skipped")
TRIGGER_RULES += ("all_done_setup_success",)  # a teardown's (nbflow.setupteardown)
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")
_NBFLOW_DIR = os.path.dirname(os.path.abspath(__file__))

_active: contextvars.ContextVar[tuple[Pipeline, ...]] = contextvars.ContextVar("nbflow_pipelines", default=())


def caller_site() -> tuple[str, int]:
    """(file, line) of the first stack frame outside the nbflow package: the user's code."""
    frame: FrameType | None = sys._getframe(1)
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(_NBFLOW_DIR):
        frame = frame.f_back
    if frame is None:  # pragma: no cover - only when nbflow calls itself at top level
        return ("<unknown>", 0)
    return (frame.f_code.co_filename, frame.f_lineno)


def _site(site: tuple[str, int]) -> str:
    return f"{site[0]}:{site[1]}"


def check_name(kind: str, name: str, where: str | None = None) -> str:
    """Validate a pipeline or task name (letters, digits, ``_ . -``)."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise DefinitionError(
            f"invalid {kind} name {name!r}",
            where=where,
            hint="use letters, digits, '_', '.' or '-', starting with a letter, digit or '_'",
        )
    return name


def current_pipeline() -> Pipeline | None:
    """The innermost pipeline of an active ``with Pipeline(...)`` block, if any."""
    stack = _active.get()
    return stack[-1] if stack else None


# --- references resolved at run time -----------------------------------------------------


def to_refs(value: Any) -> Any:
    """Replace task handles inside ``value`` by :class:`OutputRef` (so tasks pickle small)."""
    if isinstance(value, Task):
        return OutputRef(value.task_id)
    if isinstance(value, (list, tuple)):
        return type(value)(to_refs(v) for v in value)
    if isinstance(value, dict):
        return {k: to_refs(v) for k, v in value.items()}
    return value


# --- tasks ---------------------------------------------------------------------------------

_UNSET: Any = object()

#: Per-task options a pipeline's ``default_args`` may set, with their defaults.
TASK_OPTIONS: dict[str, Any] = {
    "retries": 0,
    "retry_delay": 0.0,
    "retry_backoff": False,
    "max_retry_delay": 3600.0,
    "timeout": None,
    "queue": "default",
    "trigger_rule": "all_success",
    "resources": None,
    "pool": None,
    "pool_slots": 1,
    "on_failure": None,
    "on_success": None,
    "on_retry": None,  # called when a failed attempt will be tried again
    # incremental runs (nbflow.fingerprint): files the task reads, whether and how long it may be reused
    "reads": (),
    "cache": True,
    "cache_ttl": None,
}


def check_default_args(args: Mapping[str, Any] | None, owner: str, where: str | None) -> dict[str, Any]:
    """The ``default_args`` of a pipeline or a task group (``owner``), refused with a key no task has."""
    unknown = set(args or {}) - set(TASK_OPTIONS)
    if unknown:
        raise DefinitionError(
            f"unknown default_args key(s) {', '.join(sorted(unknown))} in {owner}",
            where=where,
            hint=f"known: {', '.join(TASK_OPTIONS)}",
        )
    return dict(args or {})


def _seconds(name: str, value: Any, where: str) -> float | None:
    if value is None:
        return None
    if hasattr(value, "total_seconds"):
        value = value.total_seconds()
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
        raise DefinitionError(f"{name} must be a number of seconds >= 0 or a timedelta, got {value!r}", where=where)
    return float(value)


class Task(Fingerprinted, SetupTeardown):
    """A node of a pipeline. Kinds (python, notebook, shell) subclass it in ``nbflow.tasks``.

    Calling a task factory inside ``with Pipeline(...)`` returns the task itself, which acts
    as a handle: pass it to another task to send its value there, index it
    (``handle["key"]``) to send one key, or order tasks with ``a >> b``.
    """

    kind: str = "task"
    #: How downstream tasks see this task's value: "single" (the "return" artifact),
    #: "dict" (all saved artifacts by name) or "none".
    value_style: str = "single"
    #: A mapped task's mapped arguments (:mod:`nbflow.mapspec`); None when it is not mapped.
    mapping: MapSpec | None = None
    #: An instance of a mapped task: its index and the mapped task's id (None otherwise).
    map_index: int | None = None
    map_parent: str | None = None
    group_id: str | None = None  # made in `with nbflow.group(...)`: its innermost group (nbflow.groups.GroupTree.place)

    def __init__(
        self,
        task_id: str,
        *,
        pipeline: Pipeline | None = None,
        site: tuple[str, int] | None = None,
        explicit_id: bool = True,
        **options: Any,
    ):
        self.site = site or caller_site()
        where = _site(self.site)
        pipeline = pipeline or current_pipeline()
        if pipeline is None:
            raise DefinitionError(
                f"task '{task_id}' is created outside a pipeline",
                where=where,
                hint="create tasks inside `with Pipeline('name') as pipeline:`",
            )
        unknown = set(options) - set(TASK_OPTIONS)
        if unknown:
            raise DefinitionError(
                f"unknown task option(s) {', '.join(sorted(unknown))} for task '{task_id}'",
                where=where,
                hint=f"known options: {', '.join(TASK_OPTIONS)}",
            )
        task_id, defaults = pipeline.groups.place(self, task_id) if pipeline.groups else (task_id, {})
        merged = {**TASK_OPTIONS, **pipeline.default_args, **defaults}
        merged.update({k: v for k, v in options.items() if v is not _UNSET})
        self.retries = int(merged["retries"])
        if self.retries < 0:
            raise DefinitionError(f"retries must be >= 0 for task '{task_id}'", where=where)
        self.retry_delay = _seconds("retry_delay", merged["retry_delay"], where) or 0.0
        self.retry_backoff = bool(merged["retry_backoff"])
        self.max_retry_delay = _seconds("max_retry_delay", merged["max_retry_delay"], where) or 0.0
        self.timeout = _seconds("timeout", merged["timeout"], where)
        self.queue = check_name("queue", str(merged["queue"]), where)
        self.pool = None if merged["pool"] is None else check_name("pool", str(merged["pool"]), where)
        self.pool_slots = int(merged["pool_slots"])
        if self.pool_slots < 1:
            raise DefinitionError(f"pool_slots of task '{task_id}' must be >= 1", where=where)
        for label in ("on_failure", "on_success", "on_retry"):
            setattr(self, label, merged[label])
            if getattr(self, label) is not None and not callable(getattr(self, label)):
                raise DefinitionError(f"{label} of task '{task_id}' must be callable", where=where)
        self.resources = dict(merged["resources"] or {})
        for rname, amount in self.resources.items():
            if not isinstance(amount, (int, float)) or isinstance(amount, bool) or amount <= 0:
                raise DefinitionError(
                    f"resource {rname!r} of task '{task_id}' needs a positive amount, got {amount!r}",
                    where=where,
                    hint='e.g. resources={"GPU": 1, "MEM": 8e9}',
                )
        self.set_cache_options(
            task_id,
            merged["reads"],
            merged["cache"],
            _seconds("cache_ttl", merged["cache_ttl"], where),
            str(pipeline.base_dir),
            where,
        )
        self.trigger_rule = merged["trigger_rule"]
        if self.trigger_rule not in TRIGGER_RULES:
            raise DefinitionError(
                f"unknown trigger_rule {self.trigger_rule!r} for task '{task_id}'",
                where=where,
                hint=f"use one of {', '.join(TRIGGER_RULES)}",
            )
        self.pipeline_name = pipeline.name
        self.upstream_ids: set[str] = set()
        self.task_id = pipeline._add(self, check_name("task", task_id, where), explicit_id)
        self._pipeline = pipeline
        self._link_refs()

    # -- what kinds provide ------------------------------------------------------------
    def references(self) -> Iterable[OutputRef | ParamRef]:
        """References this task's inputs hold (kinds override)."""
        return ()

    def code_fingerprint(self) -> str:
        """A hash of what this task runs, without upstream (kinds override)."""
        return ""

    def label(self) -> str:
        """Short text for pictures: the kind and what it runs."""
        return self.kind

    def _map_over(self, fields: Mapping[str, str], zipped: bool) -> None:
        """Make this task mapped over ``fields`` (name -> the attribute holding its values)."""
        if self.mapping is not None:
            raise DefinitionError(
                f"task '{self.task_id}' is mapped already (over {', '.join(self.mapping.names)})",
                where=_site(self.site),
                hint="name every mapped argument in one call: .expand(C=[...], penalty=[...])",
            )
        sources = {name: getattr(self, attr)[name] for name, attr in fields.items()}
        check_mapping(self.task_id, sources, _site(self.site), zipped)
        self.mapping = MapSpec(dict(fields), bool(zipped))

    # -- graph helpers -----------------------------------------------------------------
    @property
    def pipeline(self) -> Pipeline:
        """The pipeline this task belongs to (not pickled with the task)."""
        return self._pipeline

    def _link_refs(self) -> None:
        for ref in self.references():
            if isinstance(ref, OutputRef):
                self.upstream_ids.add(ref.task_id)

    def set_upstream(self, *others: Task | Iterable[Task]) -> None:
        """Make this task run after ``others`` (no data passed)."""
        for other in _flatten(others, "leaves", self):
            if not isinstance(other, Task):
                raise _not_a_task(other, self.task_id, "after")
            if other.pipeline_name != self.pipeline_name:
                raise DefinitionError(
                    f"task '{other.task_id}' (pipeline '{other.pipeline_name}') and task "
                    f"'{self.task_id}' (pipeline '{self.pipeline_name}') are in different pipelines"
                )
            self.upstream_ids.add(other.task_id)

    def __rshift__(self, other: Task | list[Task]) -> Task | list[Task]:
        for o in _flatten([other], "roots", self):
            if not isinstance(o, Task):
                raise _not_a_task(o, self.task_id, "before")
            o.set_upstream(self)
        return other

    def __lshift__(self, other: Task | list[Task]) -> Task | list[Task]:
        self.set_upstream(other)
        return other

    def __rrshift__(self, other: list[Task]) -> Task:
        self.set_upstream(other)
        return self

    def __rlshift__(self, other: list[Task]) -> list[Task]:
        for o in _flatten([other], "roots", self):
            if not isinstance(o, Task):
                raise _not_a_task(o, self.task_id, "before")
            o.set_upstream(self)
        return other

    def __getitem__(self, key: str) -> OutputRef:
        return OutputRef(self.task_id, key)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_pipeline"] = None  # workers get one task, not the whole pipeline
        return state

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.pipeline_name}.{self.task_id}>"


def _jsonable(value: Any) -> Any:
    import json

    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return repr(value)


def _flatten(items: Iterable[Any], ends: str = "roots", peer: Any = None) -> Iterator[Any]:
    """Tasks of nested lists; a task group (nbflow.groups) gives its entry ("roots") or exit tasks."""
    for item in items:
        if isinstance(item, (list, tuple, set)):
            yield from _flatten(item, ends, peer)
        else:
            yield from item.wiring_ends(ends, peer) if hasattr(item, "wiring_ends") else (item,)


# --- the pipeline ----------------------------------------------------------------------------


class Pipeline:
    """A named DAG of tasks with parameters, default task options and a schedule.

    Use as a context manager; tasks created inside the block join it, and the graph is
    validated when the block ends::

        with Pipeline("ml_chain", schedule="0 3 * * *", params={"alpha": 1.0}) as pipeline:
            ...
    """

    def __init__(
        self,
        name: str,
        *,
        schedule: str | None = None,
        params: Mapping[str, Any] | None = None,
        default_args: Mapping[str, Any] | None = None,
        description: str = "",
        tags: Iterable[str] = (),
        start_date: Any = None,
        end_date: Any = None,
        timezone: str = "UTC",
        catchup: bool = False,
        max_active_runs: int = 16,
        max_active_tasks: int | None = None,
        on_failure: Callable[..., Any] | None = None,
        on_success: Callable[..., Any] | None = None,
        incremental: bool = False,
        sla: Any = None,
        on_sla_miss: Callable[..., Any] | None = None,
    ):
        self.site = caller_site()
        self.where = _site(self.site)
        self.name = check_name("pipeline", name, self.where)
        file = self.site[0]
        self.file = os.path.abspath(file) if os.path.isfile(file) else None
        self.base_dir = Path(self.file).parent if self.file else Path.cwd()
        self.schedule = schedule
        self.cron = validate_cron(schedule, pipeline=name, where=self.where) if schedule is not None else None
        self.timezone = timezone
        tz = get_timezone(timezone, pipeline=name, where=self.where)
        self.start_date = parse_date(start_date, pipeline=name, field="start_date", tz=tz, where=self.where)
        self.end_date = parse_date(end_date, pipeline=name, field="end_date", tz=tz, where=self.where)
        if self.start_date and self.end_date and self.end_date < self.start_date:
            raise ScheduleError(
                f"pipeline '{name}' ends ({self.end_date:%Y-%m-%d %H:%M}) before it starts ({self.start_date:%Y-%m-%d %H:%M})",
                where=self.where,
            )
        self.catchup = bool(catchup)
        for label, value in (("max_active_runs", max_active_runs), ("max_active_tasks", max_active_tasks)):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise DefinitionError(
                    f"{label} of pipeline '{name}' must be a whole number >= 1, got {value!r}", where=self.where
                )
        self.max_active_runs = max_active_runs
        self.max_active_tasks = max_active_tasks
        self.on_failure, self.on_success, self.on_sla_miss = on_failure, on_success, on_sla_miss
        #: seconds from a run's start within which it should finish, else on_sla_miss (nbflow.sla)
        self.sla = _seconds("sla", sla, self.where)
        for label, fn in (("on_failure", on_failure), ("on_success", on_success), ("on_sla_miss", on_sla_miss)):
            if fn is not None and not callable(fn):
                raise DefinitionError(f"{label} of pipeline '{name}' must be callable", where=self.where)
        #: runs of this pipeline reuse what is up to date unless asked otherwise (scheduled runs too)
        self.incremental = bool(incremental)
        self.param_defaults, self.param_schemas = split_params(params or {}, pipeline=name, where=self.where)
        for pname in self.param_defaults:
            check_name("parameter", pname, self.where)
        self.default_args = check_default_args(default_args, f"pipeline '{name}'", self.where)
        self.description = description
        self.tags = list(tags)
        self.tasks: dict[str, Task] = {}
        self.groups: Any = None  # its task groups: a nbflow.groups.GroupTree, made by the first nbflow.group()
        self._order: tuple[tuple[int, int], list[str]] | None = None
        self._token: contextvars.Token | None = None

    # -- context --------------------------------------------------------------------------
    def __enter__(self) -> Pipeline:
        self._token = _active.set(_active.get() + (self,))
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        if self._token is not None:
            _active.reset(self._token)
            self._token = None
        if exc_type is None:
            self.validate()

    # -- building ---------------------------------------------------------------------------
    def _add(self, task: Task, task_id: str, explicit: bool) -> str:
        if task_id in self.tasks:
            if explicit:
                raise DuplicateTaskError(self.name, task_id, _site(self.tasks[task_id].site), _site(task.site))
            n = 1
            while f"{task_id}__{n}" in self.tasks:
                n += 1
            task_id = f"{task_id}__{n}"
        self.tasks[task_id] = task
        return task_id

    def timetable(self) -> Schedule | None:
        """The pipeline's schedule as a :class:`~nbflow.schedule.Schedule` (None if unscheduled)."""
        if self.cron is None:
            return None
        return Schedule(self.cron, get_timezone(self.timezone, pipeline=self.name), self.start_date, self.end_date)

    @property
    def params(self) -> ParamsView:
        """References to this pipeline's parameters: ``pipeline.params.alpha``."""
        return ParamsView(self)

    # -- graph -----------------------------------------------------------------------------
    def upstream_map(self) -> dict[str, set[str]]:
        """``{task_id: upstream ids}`` for every task."""
        return {tid: set(t.upstream_ids) for tid, t in self.tasks.items()}

    def downstream_map(self) -> dict[str, set[str]]:
        """``{task_id: downstream ids}`` for every task."""
        down: dict[str, set[str]] = {tid: set() for tid in self.tasks}
        for tid, t in self.tasks.items():
            for u in t.upstream_ids:
                down[u].add(tid)
        return down

    def order(self) -> list[str]:
        """Task ids in a stable topological order (kept until a task or an edge is added: a run
        asks for it several times, and neither is ever removed)."""
        shape = (len(self.tasks), sum(len(t.upstream_ids) for t in self.tasks.values()))
        if self._order is None or self._order[0] != shape:
            self._order = (shape, toposort(self.upstream_map()))
        return list(self._order[1])

    def task(self, task_id: str) -> Task:
        """The task with that id (UnknownTaskError naming the known ones otherwise)."""
        try:
            return self.tasks[task_id]
        except KeyError:
            raise UnknownTaskError(self.name, task_id, self.tasks) from None

    def validate(self) -> None:
        """Check edges point at known tasks and the graph has no cycle."""
        for _tid, t in self.tasks.items():
            for u in t.upstream_ids:
                if u not in self.tasks:
                    raise UnknownTaskError(self.name, u, self.tasks, where=_site(t.site))
        for ref_task in self.tasks.values():
            for ref in ref_task.references():
                if isinstance(ref, ParamRef) and ref.name not in self.param_defaults:
                    raise DefinitionError(
                        f"task '{ref_task.task_id}' uses parameter '{ref.name}' that pipeline '{self.name}' does not declare",
                        where=_site(ref_task.site),
                        hint=f"declared: {', '.join(self.param_defaults) or '(none)'}",
                    )
        cycle = find_cycle(self.upstream_map())
        if cycle:
            raise DagCycleError(self.name, cycle, where=self.where)

    # -- fingerprints and plain data ---------------------------------------------------------
    def task_fingerprints(self) -> dict[str, str]:
        """Per task: hash of its code, options and its upstream tasks' fingerprints."""
        prints: dict[str, str] = {}
        for tid in self.order():
            t = self.tasks[tid]
            h = hashlib.sha256()
            for part in (t.kind, t.code_fingerprint(), repr(t.retries), repr(t.timeout), t.trigger_rule, t.queue):
                h.update(part.encode())
                h.update(b"\0")
            if t.mapping is not None:  # only when set, so unmapped tasks keep their fingerprints
                h.update(repr((sorted(t.mapping.fields.items()), t.mapping.zip)).encode())
            for u in sorted(t.upstream_ids):
                h.update(f"{u}={prints[u]}".encode())
            prints[tid] = h.hexdigest()[:16]
        return prints

    def fingerprint(self, prints: Mapping[str, str] | None = None) -> str:
        """Hash of every task fingerprint (``prints``, when computed already), the parameters'
        defaults and the schedule."""
        h = hashlib.sha256(repr(sorted((prints or self.task_fingerprints()).items())).encode())
        h.update(repr(sorted((k, repr(v)) for k, v in self.param_defaults.items())).encode())
        h.update(repr((self.schedule, self.timezone, self.start_date, self.end_date, self.catchup)).encode())
        if self.groups:  # only when there are groups (ids, nesting, labels: what the picture shows)
            h.update(repr(self.groups.definition()).encode())
        if self.incremental:  # only when set, so older pipelines keep their version
            h.update(b"incremental")
        if self.param_schemas:  # likewise: a new description or choice is a new version
            h.update(repr(sorted((k, repr(v)) for k, v in self.param_schemas.items())).encode())
        return h.hexdigest()[:16]

    def definition(self, prints: Mapping[str, str] | None = None) -> dict[str, Any]:
        """Plain, JSON-able description of the pipeline (stored with each version)."""
        prints = prints or self.task_fingerprints()
        return {
            **run_checks(self.param_schemas, self.tasks.values()),
            "name": self.name,
            "file": self.file,
            "schedule": self.schedule,
            "description": self.description,
            "params": {k: _jsonable(v) for k, v in self.param_defaults.items()},
            "timezone": self.timezone,
            "start_date": self.start_date.isoformat() if self.start_date else None,
            "end_date": self.end_date.isoformat() if self.end_date else None,
            "catchup": self.catchup,
            "max_active_runs": self.max_active_runs,
            "max_active_tasks": self.max_active_tasks,
            "incremental": self.incremental,
            "groups": self.groups.definition() if self.groups else [],
            "tasks": [
                {
                    "id": tid,
                    "kind": t.kind,
                    "label": t.label(),
                    "upstream": sorted(t.upstream_ids),
                    "queue": t.queue,
                    "pool": t.pool,
                    "pool_slots": t.pool_slots,
                    "retries": t.retries,
                    "timeout": t.timeout,
                    "trigger_rule": t.trigger_rule,
                    "mapped": t.mapping.names if t.mapping is not None else None,
                    "group": t.group_id,
                    "fingerprint": prints[tid],
                    "where": _site(t.site),
                    **t.role_fields(),  # setup / teardown (with its setups), for a re-run's clear
                }
                for tid, t in ((tid, self.tasks[tid]) for tid in self.order())
            ],
        }

    # -- in a notebook: run and draw through hooks the layers above install (see HOOKS) ----
    def run(self, params: Mapping[str, Any] | None = None, **options: Any) -> Any:
        """Run now through the engine and store (live view in a notebook); returns the run.

        Options: ``only=[task ...]``, ``incremental=``, ``force=[task ...]``, ``executor=``,
        ``parallelism=``, ``live=``; see
        :func:`nbflow.jupyter.runs.run_pipeline`.
        """
        return _hook("run")(self, params, **options)

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        return {"text/plain": repr(self), **_hook("picture")(self)}

    def __repr__(self) -> str:
        return f"<Pipeline {self.name!r}: {len(self.tasks)} tasks>"


#: What ``Pipeline.run`` ("run") and a pipeline's notebook picture ("picture") call. dag must
#: not import the layers that implement them (api, render); the package root installs them.
HOOKS: dict[str, Callable[..., Any]] = {}


def _hook(name: str) -> Callable[..., Any]:
    if name not in HOOKS:
        raise DefinitionError(
            f"nothing is installed to {name} pipelines", hint="import nbflow (its __init__ installs it)"
        )
    return HOOKS[name]


def _not_a_task(other: Any, task_id: str, where: str) -> DefinitionError:
    """The error for ordering task ``task_id`` ``where`` (before/after) something that is no
    task: most often the ``@task`` function itself instead of the handle its call returned."""
    fn = getattr(other, "__nbflow_task_factory__", None)
    if fn is not None:
        name = getattr(fn, "__name__", "f")
        example = f"{name}() >> {task_id}" if where == "after" else f"{task_id} >> {name}()"
        return DefinitionError(
            f"cannot order task '{task_id}' {where} {name}: {name} is the @task function, not a task of this pipeline",
            hint=f"order the handle its call returns: {example} (a handle: the value of {name}(...) inside the pipeline)",
        )
    return DefinitionError(
        f"cannot order task '{task_id}' {where} {other!r}: not a task",
        hint="order the handles that task calls return: a >> b, [a, b] >> c",
    )
