"""Where a run of ``--only`` tasks takes its upstream values from, and whether they still fit.

A task left out of the run gives its downstream the outputs of its newest success in any run
of the pipeline. Those were computed with that run's parameters: when the parameters the
upstream task (or anything upstream of it) receives differ from this run's, the value is
stale, and the run is refused unless the caller allows it (``--allow-stale-inputs``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from nbflow.dag import Pipeline
from nbflow.exceptions import NbflowError
from nbflow.store import Store


@dataclass(frozen=True)
class UpstreamValue:
    """The value a task outside the run gives: its attempt, and the parameters it received
    that differ from this run's (name -> (that run's value, this run's value))."""

    task_id: str
    run_id: int
    try_number: int
    differs: dict[str, tuple[Any, Any]] = field(default_factory=dict)

    def changes(self) -> str:
        """The differing parameters: ``C=1.0 there, 0.5 here``."""
        return ", ".join(f"{n}={_text(then)} there, {_text(now)} here" for n, (then, now) in self.differs.items())

    def describe(self) -> str:
        """``prepare: from run 3, try 1``, with the parameters that differ if any."""
        text = f"{self.task_id}: from run {self.run_id}, try {self.try_number}"
        return text + (f" (computed with other parameters: {self.changes()})" if self.differs else "")


def _text(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _received(pipeline: Pipeline, task_id: str, params: Mapping[str, Any]) -> set[str]:
    """The run parameters ``task_id`` and every task upstream of it receive."""
    names: set[str] = set()
    seen, todo = set(), [task_id]
    while todo:
        tid = todo.pop()
        if tid in seen or tid not in pipeline.tasks:
            continue
        seen.add(tid)
        task = pipeline.tasks[tid]
        names.update(task.received_params(params))
        todo.extend(task.upstream_ids)
    return names


def upstream_values(
    pipeline: Pipeline, only: Iterable[str], params: Mapping[str, Any], *, store: Store
) -> list[UpstreamValue]:
    """The upstream values a run of the ``only`` tasks with ``params`` would use (tasks that
    never succeeded are left out: :func:`~nbflow.api.runs.create_runs` refuses those)."""
    selected = set(only)
    external = sorted({u for tid in selected for u in pipeline.tasks[tid].upstream_ids} - selected)
    out = []
    for up in external:
        row = store.latest_success(pipeline.name, up)
        if row is None:
            continue
        then = store.get_run(row["source_run_id"])["params"] or {}
        differs = {
            n: (then.get(n), params.get(n))
            for n in sorted(_received(pipeline, up, params))
            if _text(then.get(n)) != _text(params.get(n))
        }
        out.append(UpstreamValue(up, row["source_run_id"], row["source_try"], differs))
    return out


def refuse_stale(pipeline: Pipeline, values: Iterable[UpstreamValue], selected: Iterable[str]) -> None:
    """:class:`NbflowError` naming the first upstream value computed with other parameters."""
    for value in values:
        if value.differs:
            raise NbflowError(
                f"--only: the value of upstream task '{value.task_id}' would come from run {value.run_id}, "
                f"whose parameters differ: {value.changes()}",
                where=f"pipeline '{pipeline.name}'",
                hint=f"run it too (--only {' '.join([value.task_id, *selected])}), or pass --allow-stale-inputs to use run "
                f"{value.run_id}'s value anyway",
            )
