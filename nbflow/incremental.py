"""Decisions before execution: reuse an earlier success, or run, and say why.

A task is *up to date* when its fingerprint (:mod:`nbflow.fingerprint`: its code, the values
and files it depends on, the content hashes of the upstream outputs it receives) equals the
fingerprint of its newest success in an earlier run of the same pipeline, and that success's
outputs are still readable under this artifact root. An incremental run does not execute an
up-to-date task: it ends ``cached``, naming the attempt whose outputs it reuses, and its
downstream tasks receive exactly those outputs.

The order of the checks, and the reason each gives when it fails:

1. ``--force`` named it (``forced (--force)``) or one of its upstreams (``upstream X forced``);
2. the task is never reused (``cache=False``, a sensor);
3. a value it depends on has no deterministic hash (``... has no deterministic hash``);
4. no earlier success (``no earlier success``);
5. the fingerprints differ: :func:`nbflow.fingerprint.explain` names the parts
   (``parameter C: 1.0 -> 0.5``, ``code changed: train.ipynb Cell 4/7``, ``upstream prepare
   changed``; in a plan ``upstream prepare will run``);
6. ``cache_ttl`` and the success is older (``older than cache_ttl=60s ...``);
7. its outputs (the attempt folder, each artifact with its size) are gone, or under another
   artifact root (``outputs of run 12 are gone``).

The engine asks a :class:`Decider` when a task's upstream tasks have finished, so upstream
content hashes are the real ones: an upstream that ran again and wrote the same bytes does not
make its downstream stale. :func:`plan` asks the same questions before a run (``--dry-run``),
where an upstream that will run makes its downstream run. Reuse only ever picks finished
successes of earlier runs, so two incremental runs started at once each make a consistent choice.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import RowMapping

from nbflow.artifacts import attempt_dir, stored
from nbflow.dag import OutputRef, Pipeline, Task
from nbflow.exceptions import NbflowError, UnknownTaskError
from nbflow.fingerprint import (
    WILL_RUN,
    Unhashable,
    combine,
    explain,
    output_digest,
    outputs_key,
)
from nbflow.mapspec import split_instance_id
from nbflow.states import SUCCEEDED, TaskState
from nbflow.store import Store
from nbflow.store.reuse import Previous, artifact_ref, source_of

__all__ = ["Decider", "Decision", "PlannedTask", "Produced", "choose", "forced_closure", "known_outputs", "plan"]

NOT_INCREMENTAL = "not incremental"


@dataclass(frozen=True)
class Produced:
    """What an upstream task gave its downstream: its outputs and their content hash; or
    ``state`` when it did not succeed; or :data:`~nbflow.fingerprint.WILL_RUN` (a plan)."""

    digest: str
    refs: tuple[dict[str, Any], ...] = ()
    state: str | None = None


#: what a task that gave nothing (not run, not in the run) gives its downstream
NO_OUTPUTS = Produced("")


@dataclass
class Decision:
    """Reuse the attempt ``source`` names, or run (``source`` None), with the reason (None
    outside incremental runs), the fingerprint and its parts (None: it has none)."""

    why: str | None
    cache_key: str | None = None
    parts: dict[str, str] | None = None
    source: Previous | None = None

    @property
    def given(self) -> Produced | None:
        """A reuse: what the task gives downstream (the reused attempt's outputs); else None."""
        src = self.source
        return produced(src.artifacts, src.source_run_id, src.source_try, src.output_digest) if src else None

    def fields(self) -> dict[str, Any]:
        """The task instance's columns this decision sets."""
        out: dict[str, Any] = {"why": self.why, "cache_key": self.cache_key, "cache_parts": self.parts}
        src, given = self.source, self.given
        if src is not None and given is not None:
            out.update(
                reused_run_id=src.source_run_id,
                reused_try=src.source_try,
                output_digest=given.digest,
                log_uri=src.log_uri,
                output_uri=src.output_uri,
            )
        return out


def choose(pipeline: Pipeline, incremental: bool | None, force: Iterable[str] | None) -> tuple[bool, list[str]]:
    """Whether a run is incremental (the pipeline's ``incremental=`` when None) and its
    ``--force`` list: refused, before anything runs, when it names a task the pipeline lacks
    (naming the known ones) or when the run is not incremental (where it means nothing)."""
    chosen = pipeline.incremental if incremental is None else bool(incremental)
    names = list(dict.fromkeys(force or ()))
    for tid in names:
        if tid not in pipeline.tasks:
            raise UnknownTaskError(pipeline.name, tid, pipeline.tasks, where="--force")
    if names and not chosen:
        raise NbflowError(
            "--force only matters in an incremental run (without it every task runs)",
            hint="add --incremental (-i), or leave out --force",
        )
    return chosen, names


def forced_closure(pipeline: Pipeline, force: Iterable[str]) -> dict[str, str]:
    """``{task: why}`` for the forced tasks and everything downstream of them."""
    down = pipeline.downstream_map()
    why: dict[str, str] = {}
    for origin in force:
        why[origin] = "forced (--force)"
    for origin in force:
        stack = list(down.get(origin, ()))
        while stack:
            tid = stack.pop()
            if tid not in why:
                why[tid] = f"upstream {origin} forced"
                stack.extend(down.get(tid, ()))
    return why


def produced(refs: Iterable[dict[str, Any]], run_id: int, try_number: int, digest: str | None = None) -> Produced:
    """What a successful attempt gives downstream (``digest`` when it is stored already)."""
    refs = tuple(refs)
    return Produced(digest or outputs_key(refs, run_id, try_number), refs)


def value_style(pipeline: Pipeline, task_id: str) -> str:
    """How task ``task_id`` (or, for a mapped task's instance, its mapped task) gives its value."""
    of = split_instance_id(task_id) if task_id not in pipeline.tasks else None
    return pipeline.tasks[of[0] if of else task_id].value_style


def known_outputs(
    store: Store, rows: Iterable[Mapping[str, Any] | RowMapping], *, pipeline: str = "", external: Iterable[str] = ()
) -> dict[str, Produced]:
    """What the successful or cached ones of task instance ``rows`` give downstream: the outputs
    of the attempts they stand for (one artifact query per run involved); and the newest success
    of each ``external`` task (upstream of a run of ``--only`` tasks), refused when it has none
    (a mapped one with its successful instances of that run, ``task[i]``)."""
    rows = [row for row in rows if TaskState(row["state"]) in SUCCEEDED]
    for up in external:
        row = store.latest_success(pipeline, up)
        if row is None:
            raise NbflowError(
                f"task '{up}' is upstream of the selected tasks but has never succeeded",
                where=f"pipeline '{pipeline}'",
                hint=f"run it first, or include it: --only {up} ...",
            )
        rows.append(row)
        if row.get("map_count") is not None:  # a mapped task: its instances of that run hold the values
            rows.extend(
                kid
                for kid in store.task_instances(row["run_id"])
                if kid["map_parent"] == up and TaskState(kid["state"]) in SUCCEEDED
            )
    wanted = {row["task_id"]: (*source_of(row), row["output_digest"]) for row in rows}
    refs: dict[str, list[dict[str, Any]]] = {tid: [] for tid in wanted}
    for run in sorted({run for run, _, _ in wanted.values()}):
        for art in store.artifacts(run):
            want = wanted.get(art["task_id"])
            if want is not None and want[:2] == (run, art["try_number"]):
                refs[art["task_id"]].append(artifact_ref(art))
    return {tid: produced(refs[tid], run, try_number, digest) for tid, (run, try_number, digest) in wanted.items()}


class Decider:
    """Answers "reuse or run, and why" for the tasks of one run (or of a plan)."""

    def __init__(
        self,
        store: Store,
        pipeline: Pipeline,
        *,
        artifact_root: str,
        incremental: bool,
        before_run: int | None = None,
        force: Iterable[str] = (),
        clock: Callable[[], float] = time.time,
    ):
        self.pipeline, self.artifact_root, self.incremental, self.clock = pipeline, artifact_root, incremental, clock
        self.previous: dict[str, Previous] = store.previous_successes(pipeline.name, before_run) if incremental else {}
        self.forced = forced_closure(pipeline, force) if incremental else {}
        self._memo: dict[tuple, Any] = {}  # file digests and code parts shared by this run's decisions

    @classmethod
    def for_run(
        cls,
        store: Store,
        pipeline: Pipeline,
        run: Mapping[str, Any] | RowMapping,
        artifact_root: str,
        clock: Callable[[], float] = time.time,
    ) -> Decider:
        """The decider of a stored run (incremental or not, its ``--force`` list)."""
        return cls(
            store,
            pipeline,
            artifact_root=artifact_root,
            incremental=bool(run["incremental"]),
            before_run=run["id"],
            force=run["force"] or (),
            clock=clock,
        )

    def fingerprint(
        self, task: Task, params: Mapping[str, Any], context: Mapping[str, Any], upstream: Mapping[str, Produced]
    ) -> dict[str, str]:
        """The task's fingerprint parts, upstream outputs included (raises Unhashable)."""
        parts = task.cache_parts(params, context, self._memo)
        keyed: dict[str, set[str | int | None]] = {}
        for ref in task.references():
            if isinstance(ref, OutputRef):
                keyed.setdefault(ref.task_id, set()).add(ref.key)
        for up in sorted(task.upstream_ids):
            given = upstream.get(up)
            keys = keyed.get(up)
            if given is None:
                parts[f"upstream:{up}"] = "not in this run"
            elif given.state is not None:
                parts[f"upstream:{up}"] = f"state {given.state}"
            elif keys and None not in keys and value_style(self.pipeline, up) == "dict":
                for key in sorted(str(k) for k in keys):  # only the saved values it loads
                    known = given.digest != WILL_RUN and output_digest(given.refs, [key])
                    parts[f"upstream:{up}:{key}"] = known or given.digest
            else:
                parts[f"upstream:{up}"] = given.digest
        return parts

    def decide_ready(
        self,
        task: Task,
        params: Mapping[str, Any],
        context: Mapping[str, Any],
        state_of: Callable[[str], TaskState | None],
        outputs: Mapping[str, Produced],
    ) -> Decision:
        """:meth:`decide` in a run: ``state_of(upstream)`` is its finished state (None: not in
        the run), ``outputs`` what the successful ones gave."""
        upstream = {}
        for up in task.upstream_ids:
            state = state_of(up)
            failed = Produced("", state=state.value) if state is not None and state not in SUCCEEDED else None
            upstream[up] = failed or outputs.get(up, NO_OUTPUTS)
        return self.decide(task, params, context, upstream)

    def decide(
        self, task: Task, params: Mapping[str, Any], context: Mapping[str, Any], upstream: Mapping[str, Produced]
    ) -> Decision:
        """Reuse or run ``task`` (its upstream tasks finished, with ``upstream`` outputs)."""
        tid = task.task_id
        try:
            parts: dict[str, str] | None = self.fingerprint(task, params, context, upstream)
            problem = None
        except Unhashable as exc:  # no fingerprint: never reused, and not reusable later
            parts, problem = None, f"{exc} (so it always runs)"
        except OSError as exc:  # a notebook or a read file vanished: the attempt will say more
            parts, problem = None, f"cannot fingerprint it: {type(exc).__name__}: {exc}"
        key = combine(parts) if parts is not None else None
        if not self.incremental:
            return Decision(None, key, parts)

        def run(why: str) -> Decision:
            return Decision(why, key, parts)

        if problem is not None:
            return run(problem)
        assert parts is not None  # no problem: fingerprinted
        if tid in self.forced:
            return run(self.forced[tid])
        blocked = task.never_reused()
        if blocked:
            return run(blocked)
        prev = self.previous.get(tid)
        if prev is None:
            return run("no earlier success")
        if prev.cache_key is None:  # a success older than fingerprints, or of a value without one
            return run(f"run {prev.run_id} recorded no fingerprint for it")
        if prev.cache_key != key:
            return run(explain(prev.cache_parts, parts, task.part_label))
        if task.cache_ttl is not None:
            age = self.clock() - prev.ended_at.timestamp() if prev.ended_at else None
            if age is None or age > task.cache_ttl:
                ago = f"run {prev.source_run_id} ended {age:.0f}s ago" if age is not None else "its end is unknown"
                return run(f"older than cache_ttl={task.cache_ttl:g}s ({ago})")
        gone = self._outputs_gone(tid, prev)
        if gone:
            return run(gone)
        return Decision(f"reused from run {prev.source_run_id}, try {prev.source_try}", key, parts, prev)

    def _outputs_gone(self, tid: str, prev: Previous) -> str | None:
        root = self.artifact_root.rstrip("/")
        for art in prev.artifacts:
            if not art["uri"].startswith(root + "/"):
                return f"outputs of run {prev.source_run_id} are under another artifact root"
        if not prev.artifacts and not prev.output_uri:  # it returned nothing and kept no notebook: nothing to lose
            return None
        folder = attempt_dir(self.artifact_root, self.pipeline.name, prev.source_run_id, tid, prev.source_try)
        if not stored(folder) or not all(stored(a["uri"], a["size"]) for a in prev.artifacts):
            return f"outputs of run {prev.source_run_id} are gone"
        return None


@dataclass
class PlannedTask:
    """One line of a plan: ``reuse`` (with the attempt) or ``run`` (with the reason)."""

    task_id: str
    action: str  # "reuse" | "run"
    why: str
    reused_run_id: int | None = None
    reused_try: int | None = None


def plan(
    store: Store,
    pipeline: Pipeline,
    params: Mapping[str, Any],
    *,
    artifact_root: str,
    incremental: bool,
    selected: Iterable[str] | None = None,
    force: Iterable[str] = (),
) -> list[PlannedTask]:
    """What an incremental run would do, task by task, writing nothing (``--dry-run``).

    Tasks outside ``selected`` (``--only``) are upstream values from their newest success.
    """
    decider = Decider(store, pipeline, artifact_root=artifact_root, incremental=incremental, force=force)
    chosen = set(selected) if selected is not None else set(pipeline.tasks)
    context = dict.fromkeys(("run_id", "logical_date", "data_interval_start", "data_interval_end"), "<the new run>")
    given: dict[str, Produced] = {}
    out: list[PlannedTask] = []
    for tid in pipeline.order():
        task = pipeline.tasks[tid]
        if tid not in chosen:
            row = store.latest_success(pipeline.name, tid)
            if row is not None:
                given.update(known_outputs(store, [row]))
            continue
        decision = decider.decide(task, params, context, {u: given[u] for u in task.upstream_ids if u in given})
        if decision.given is not None and decision.source is not None:
            given[tid] = decision.given
            out.append(
                PlannedTask(tid, "reuse", decision.why or "", decision.source.source_run_id, decision.source.source_try)
            )
        else:
            given[tid] = Produced(WILL_RUN)
            out.append(PlannedTask(tid, "run", decision.why or NOT_INCREMENTAL))
    return out
