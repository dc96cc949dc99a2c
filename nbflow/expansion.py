"""How the engine runs mapped tasks (:mod:`nbflow.mapspec`): expansion into instances, and the
mapped task's end.

* **Expansion.** A mapped task whose upstream tasks finished and whose trigger rule says run
  is *expanded*: its mapped values (lists, run parameters, upstream values read here, or another
  mapped task's instances) become points (:func:`nbflow.mapspec.points`), one task instance per
  point, written with the mapped task's ``pending -> running`` in one transaction. Values that
  cannot be mapped (not a list, more than ``max_map_length``) fail the mapped task at once
  (reason ``map_error``, no retry: the values would be the same).
* **Instances** are task instances like any other (queued, retried, pooled, cached in an
  incremental run, each with its attempts, log and output notebook), named ``task[i]``. One that
  maps over another mapped task's instance depends on that instance only: a failed instance
  fails its own branch.
* **The mapped task ends** when its last instance does: ``success`` when none failed (zero
  instances included), ``skipped`` when every instance was skipped, else ``failed`` (reason
  ``mapped``) or ``cancelled``. Its downstream tasks see the mapped set: trigger rules count
  each instance's state, and the value they receive is the list of the successful instances'
  values in map-index order.
* **A restarted driver** finds the instance rows of a running mapped task and expands it again
  (the same values give the same points) to rebuild the instances' tasks; a cleared mapped task
  keeps the rows of its instances that were not cleared, and their states.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from nbflow.artifacts import UpstreamOutput
from nbflow.incremental import NO_OUTPUTS, Produced, value_style
from nbflow.mapspec import MapError, display_point, instance, map_sources, mapped_from, points, split_instance_id
from nbflow.refs import OutputRef, ParamRef
from nbflow.states import FAILED_STATES, FINISHED, TaskState

if TYPE_CHECKING:
    from nbflow.config import Settings
    from nbflow.dag import Pipeline
    from nbflow.store import Tx
    from nbflow.tasks.base import BaseTask

T = TaskState


def _dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


class MappedTasks:
    """Mixin of :class:`nbflow.engine.RunEngine` (uses its ``tis``, ``children``, ``produced``,
    ``_set``, ``_op``, ``_note`` and ``_undecided``)."""

    settings: Settings
    pipeline: Pipeline
    run_id: int
    params: dict[str, Any]
    tis: dict[str, Any]
    children: dict[str, list[str]]
    produced: dict[str, Produced]
    _undecided: Any
    _unfinished: int
    _notes: list[Any]
    clock: Callable[[], float]

    if TYPE_CHECKING:  # RunEngine's methods

        def task(self, task_id: str) -> BaseTask: ...

        def _op(self, fn: Callable[[Tx], Any], task_id: str | None = None) -> None: ...

        def _note(
            self, ti: Any, message: str = "", duration: float | None = None, hostname: str | None = None
        ) -> None: ...

        def _set(self, ti: Any, to: TaskState, expect_try: int | None = None, **fields: Any) -> None: ...

        def _ti_from_row(self, row: Mapping[str, Any]) -> Any: ...

    def _init_mapping(self) -> None:
        #: a mapped task's instance ids in map-index order, once it is expanded
        self.instances: dict[str, list[str]] = {}
        #: the task object of each instance (mapped tasks' instances are not in the pipeline)
        self.instance_tasks: dict[str, BaseTask] = {}
        self._open_instances: dict[str, int] = {}  # mapped task -> its instances not finished
        self._instance_rows: dict[str, list[Mapping[str, Any]]] = {}  # mapped task -> stored instance rows

    # -- loading ------------------------------------------------------------------------------
    def _keep_instance_rows(self, rows: Iterable[Any]) -> list[Any]:
        """The rows of the pipeline's tasks; instance rows are kept aside by mapped task."""
        own = []
        for row in rows:
            if row.get("map_parent"):
                self._instance_rows.setdefault(row["map_parent"], []).append(row)
            else:
                own.append(row)
        return own

    def _resume_mapping(self) -> None:
        """After loading: expand again the mapped tasks a driver expanded (running or finished),
        so their instances are task instances of this engine with their stored states."""
        for tid, rows in list(self._instance_rows.items()):
            ti = self.tis.get(tid)
            if ti is None or ti.state is T.PENDING:  # cleared: expanded again when it is ready
                continue
            rows = sorted(rows, key=lambda r: r["map_index"])
            if ti.state in FINISHED:  # no task objects needed: nothing of them runs again
                self._add_instances(ti, [(row["task_id"], None) for row in rows])
                continue
            made = self._instances_of(self.task(tid))
            if isinstance(made, str) or len(made) != len(rows):
                raise RuntimeError(f"mapped task {tid} does not expand as it did ({len(rows)} instances): {made}")
            self._add_instances(ti, [(child.task_id, child) for child, _ in made])

    # -- expansion -----------------------------------------------------------------------------
    def _expand(self, ti: Any, now: float) -> None:
        """Expand mapped task ``ti`` (ready to run) into its instances, or fail it."""
        task = self.task(ti.task_id)
        made = self._instances_of(task)
        tid, run_id = ti.task_id, self.run_id
        if isinstance(made, str):
            self._set(
                ti, T.FAILED, via=T.RUNNING, reason="map_error", error=made, start_date=_dt(now), end_date=_dt(now)
            )
            return
        rows = [
            {
                "task_id": child.task_id,
                "map_index": child.map_index,
                "map_values": shown,
                "kind": task.kind,
                "queue": task.queue,
                "pool": task.pool,
                "pool_slots": task.pool_slots,
                "max_tries": ti.max_tries,
            }
            for child, shown in made
        ]

        def write(tx: Tx) -> bool:
            if not tx.set_task_state(run_id, tid, T.RUNNING, map_count=len(rows), start_date=_dt(now), note=None):
                return False
            tx.add_map_instances(run_id, tid, rows)
            return True

        ti.state = T.RUNNING
        self._op(write, tid)
        self._note(ti, f"mapped into {len(rows)} instances")
        if self._notes:  # listeners hear how many instances there are now
            self._notes[-1].mapped = len(rows)
        kept = {r["task_id"]: r for r in self._instance_rows.pop(tid, ()) if r["map_index"] < len(rows)}
        self._add_instances(ti, [(child.task_id, child) for child, _ in made], kept)

    def _instances_of(self, task: BaseTask) -> list[tuple[BaseTask, dict[str, Any]]] | str:
        """The instances of mapped ``task`` with their points, or why it cannot be mapped."""
        assert task.mapping is not None
        values, shown = {}, {}
        for name, source in map_sources(task).items():
            try:
                values[name], shown[name] = self._map_values(source)
            except Exception as exc:  # an upstream value that cannot be read
                return f"task '{task.task_id}' cannot read the values of {name}: {type(exc).__name__}: {exc}"
        try:
            made = points(task.task_id, values, task.mapping.zip, self.settings.max_map_length)
        except MapError as exc:
            return f"{exc.message}; {exc.hint}"
        seen = points(task.task_id, shown, task.mapping.zip, self.settings.max_map_length)
        lists_from = mapped_from(task)
        return [(instance(task, i, point, lists_from), display_point(seen[i])) for i, point in enumerate(made)]

    def _map_values(self, source: Any) -> tuple[Any, Any]:
        """The values a mapped argument holding ``source`` maps over (a list, unless mistaken),
        and the values to show for them."""
        if isinstance(source, ParamRef):
            value = self.params.get(source.name)
            return value, value
        if not isinstance(source, OutputRef):
            return source, source
        kids = self.instances.get(source.task_id)
        if kids is not None:  # another mapped task: one item per instance (a branch each)
            refs = [OutputRef(kid, source.key) for kid in kids]
            return refs, refs
        up = self.task(source.task_id)
        value = UpstreamOutput(up.value_style, list(self.produced.get(source.task_id, NO_OUTPUTS).refs)).value(
            source.key
        )
        if source.key is None and up.value_style == "single" and isinstance(value, (list, tuple)):
            return [OutputRef(source.task_id, i) for i in range(len(value))], value  # items read by the worker
        return value, value

    def _add_instances(
        self, ti: Any, made: list[tuple[str, BaseTask | None]], kept: Mapping[str, Mapping[str, Any]] | None = None
    ) -> None:
        """Make ``made`` (instance id, task) task instances of this engine: stored rows keep their
        state (``kept``, or the loaded rows), the others start ``pending``."""
        tid = ti.task_id
        stored = {r["task_id"]: r for r in self._instance_rows.pop(tid, ())}
        stored.update(kept or {})
        self.instances[tid] = [cid for cid, _ in made]
        opened = 0
        for cid, child in made:
            row = stored.get(cid) or {"task_id": cid, "state": "pending", "try_number": 0, "max_tries": ti.max_tries}
            cti = self._ti_from_row(row)
            self.tis[cid] = cti
            self.children.setdefault(cid, [])
            if child is not None:
                self.instance_tasks[cid] = child
            if cti.state in FINISHED or child is None:  # (no task: its mapped task finished, nothing runs)
                continue
            opened += 1
            for up in child.upstream_ids:
                if up in self.tis:
                    self.children.setdefault(up, []).append(cid)
                    cti.waiting += self.tis[up].state not in FINISHED
            if cti.state is T.PENDING and cti.waiting == 0:
                self._undecided.append(cid)
        self._unfinished += opened
        self._open_instances[tid] = opened
        if opened == 0 and ti.state not in FINISHED:
            self._close_mapped(ti)

    def _instance_finished(self, task_id: str) -> None:
        """Bookkeeping of a finished instance: the last one ends its mapped task."""
        parent = self.instance_tasks[task_id].map_parent if task_id in self.instance_tasks else None
        if parent is None or parent not in self._open_instances:
            return
        self._open_instances[parent] -= 1
        if self._open_instances[parent] == 0:
            self._close_mapped(self.tis[parent])

    def _close_mapped(self, ti: Any) -> None:
        """End a mapped task whose instances all finished."""
        if ti.state in FINISHED:
            return
        ids = self.instances[ti.task_id]
        states = {cid: self.tis[cid].state for cid in ids}
        end = _dt(self.clock())  # the engine's clock, as every other end it writes
        if any(s is T.CANCELLED for s in states.values()):
            self._set(ti, T.CANCELLED, reason="cancelled", error="instances were cancelled", end_date=end)
            return
        bad = [cid for cid, s in states.items() if s in FAILED_STATES]
        if bad:
            shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
            error = f"{len(bad)} of {len(ids)} instances did not succeed: {shown}"
            self._set(ti, T.FAILED, reason="mapped", error=error, end_date=end)
            return
        if ids and all(s is T.SKIPPED for s in states.values()):  # nothing ran: skipped, as its instances
            self._set(ti, T.SKIPPED, reason="skipped", error=f"all {len(ids)} instances were skipped", end_date=end)
            return
        h = hashlib.sha256()
        for cid in ids:
            h.update(self.produced.get(cid, NO_OUTPUTS).digest.encode() + b"\0")
        digest = h.hexdigest()[:32]
        self.produced[ti.task_id] = Produced(digest)
        self._set(ti, T.SUCCESS, reason=None, error=None, end_date=end, output_digest=digest)

    # -- what downstream tasks see ---------------------------------------------------------------
    def _upstream_states(self, task: BaseTask) -> dict[str, TaskState]:
        """The states a task's trigger rule sees: a mapped upstream task as its instances; for a
        mapped task, not the mapped tasks it maps over (each instance sees its own branch)."""
        branches = set()
        if task.mapping is not None:
            branches = {s.task_id for s in map_sources(task).values() if isinstance(s, OutputRef)}
        out: dict[str, TaskState] = {}
        for up in task.upstream_ids:
            if up not in self.tis:
                continue
            kids = self.instances.get(up)
            if kids is None:
                out[up] = self.tis[up].state
            elif up not in branches:
                out.update((kid, self.tis[kid].state) for kid in kids)
        return out

    def _outside_instances(self, up: str) -> list[str]:
        """The instances of mapped task ``up``, left out of this run, whose outputs it knows
        (:func:`nbflow.incremental.known_outputs`), in map-index order."""
        found = [(split[1], tid) for tid in self.produced if (split := split_instance_id(tid)) and split[0] == up]
        return [tid for _, tid in sorted(found)]

    def _upstream_item(self, up: str) -> tuple[str, list[dict[str, Any]]]:
        """What a work item carries of upstream task ``up``: a mapped task's successful instances."""
        style = value_style(self.pipeline, up)
        kids = self.instances.get(up)
        if kids is None and up not in self.tis and self.pipeline.tasks[up].mapping is not None:
            kids = self._outside_instances(up)  # left out of this run (--only): its newest success's
        if kids is None:
            return style, list(self.produced.get(up, NO_OUTPUTS).refs)
        done = [kid for kid in kids if kid in self.produced]
        return "mapped", [{"style": style, "refs": list(self.produced[kid].refs)} for kid in done]
