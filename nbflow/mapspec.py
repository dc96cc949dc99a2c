"""Dynamic task mapping, the model half: which arguments of a task are mapped, and the task
instance of one map point.

A task is *mapped* when some of its arguments are lists whose items each get a task instance
of their own (Airflow's ``.expand``)::

    models = train.expand(C=[0.01, 0.1, 1.0])                 # @task: keyword arguments
    models = train.partial(data=data).expand(C=grid)           # fixed arguments beside
    nb = notebook("train.ipynb", expand={"C": [0.1, 1.0]})     # notebook parameters
    scores = notebook("evaluate.ipynb", inputs={"model": models}).expand_inputs("model")

A mapped argument holds a list, a pipeline parameter, or an upstream task's value (known only
when the run gets there); several mapped arguments form their cross product, or are paired
with ``zip=True``. The engine (:mod:`nbflow.expansion`) turns the values into points with
:func:`points` when the task is ready, and runs one :func:`instance` per point: a copy of the
task with the point's values in place of the lists, named ``task[i]`` (``map_index`` i). An
item that is another mapped task's instance (mapping over a mapped task) makes the instance
depend on that instance alone, so a failed instance fails only its own branch.
"""

from __future__ import annotations

import copy
import itertools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from nbflow.exceptions import DefinitionError, NbflowError
from nbflow.refs import OutputRef, ParamRef, find_refs

_INSTANCE = re.compile(r"^(?P<parent>.+)\[(?P<index>\d+)\]$")


class MapError(NbflowError):
    """A mapped task's values cannot be mapped (not a list, too long, unequal zip lengths)."""


@dataclass(frozen=True)
class MapSpec:
    """The mapped arguments of a task: ``fields`` maps each mapped name to the attribute of the
    task that holds it (``kwargs`` of a ``@task``, ``parameters`` or ``inputs`` of a notebook)."""

    fields: Mapping[str, str]
    zip: bool = False

    @property
    def names(self) -> list[str]:
        """The mapped names, in the order the points list them."""
        return list(self.fields)


def instance_id(task_id: str, index: int) -> str:
    """The id of instance ``index`` of mapped task ``task_id``: ``train[2]``."""
    return f"{task_id}[{index}]"


def split_instance_id(task_id: str) -> tuple[str, int] | None:
    """``("train", 2)`` for ``train[2]``; None for a task id that names no mapped instance."""
    m = _INSTANCE.match(task_id)
    return (m["parent"], int(m["index"])) if m else None


def check_mapping(task_id: str, sources: Mapping[str, Any], where: str | None, zipped: bool) -> None:
    """Refuse at definition time what can never map: no names, or a literal that is no list."""
    if not sources:
        raise DefinitionError(
            f"task '{task_id}' maps over nothing",
            where=where,
            hint="name at least one argument and its values: .expand(C=[0.1, 1.0])",
        )
    for name, source in sources.items():
        if isinstance(source, (OutputRef, ParamRef, list, tuple)):
            continue
        raise DefinitionError(
            f"task '{task_id}' maps over {name}, a {type(source).__name__} ({_short(source)}), not a list",
            where=where,
            hint=f"give {name} a list of values, a task whose value is a list, or a pipeline parameter",
        )
    if zipped:
        lengths = {name: len(s) for name, s in sources.items() if isinstance(s, (list, tuple))}
        if len(set(lengths.values())) > 1:
            raise DefinitionError(
                f"task '{task_id}' zips lists of unequal lengths: {_lengths(lengths)}",
                where=where,
                hint="zip=True pairs the i-th items: give every list the same length, or drop zip for the cross product",
            )


def points(task_id: str, values: Mapping[str, Sequence[Any]], zipped: bool, limit: int) -> list[dict[str, Any]]:
    """The map points of a task: one ``{name: item}`` per instance, in map-index order (the
    cross product with the last name varying fastest, or the i-th items with ``zip``).

    Raises :class:`MapError` naming the task, the value's type or length, and the limit."""
    lists: dict[str, list[Any]] = {}
    for name, value in values.items():
        if not isinstance(value, (list, tuple)):
            raise MapError(
                f"task '{task_id}' maps over {name}, which is a {type(value).__name__} ({_short(value)}), not a list",
                hint=f"make {name} a list (or tuple) of the values to map over",
            )
        if len(value) > limit:
            raise MapError(
                f"task '{task_id}' maps over {len(value)} values of {name}, more than max_map_length {limit}",
                hint="map over fewer values, or raise the limit (NBFLOW_MAX_MAP_LENGTH)",
            )
        lists[name] = list(value)
    names = list(lists)
    if zipped:
        lengths = {name: len(items) for name, items in lists.items()}
        if len(set(lengths.values())) > 1:
            raise MapError(
                f"task '{task_id}' zips lists of unequal lengths: {_lengths(lengths)}",
                hint="zip=True pairs the i-th items: give every list the same length",
            )
        combos: list[tuple[Any, ...]] = list(zip(*lists.values(), strict=True))
    else:
        total = 1
        for items in lists.values():
            total *= len(items)
        if total > limit:
            raise MapError(
                f"task '{task_id}' maps over {total} points ({_lengths({n: len(v) for n, v in lists.items()})}), "
                f"more than max_map_length {limit}",
                hint="map over fewer values, pair the lists with zip=True, or raise NBFLOW_MAX_MAP_LENGTH",
            )
        combos = list(itertools.product(*lists.values()))
    return [dict(zip(names, combo, strict=True)) for combo in combos]


def mapped_from(task: Any) -> set[str]:
    """The tasks a mapped task's lists reference (its instances depend on their items instead)."""
    return {r.task_id for r in find_refs(list(map_sources(task).values())) if isinstance(r, OutputRef)}


def instance(task: Any, index: int, point: Mapping[str, Any], lists_from: set[str] | None = None) -> Any:
    """Instance ``index`` of mapped ``task``: a copy with ``point``'s values in place of the
    mapped lists, id ``task[index]``, depending on what the values reference (an upstream
    task's item, another mapped task's instance) instead of what the lists referenced
    (``lists_from``: :func:`mapped_from`, when known)."""
    spec: MapSpec = task.mapping
    child = copy.copy(task)
    for name, value in point.items():
        attr = spec.fields[name]
        setattr(child, attr, {**getattr(child, attr), name: value})
    child.task_id = instance_id(task.task_id, index)
    child.mapping = None
    child.map_index = index
    child.map_parent = task.task_id
    lists_from = mapped_from(task) if lists_from is None else lists_from
    now_from = {r.task_id for r in find_refs(list(point.values())) if isinstance(r, OutputRef)}
    child.upstream_ids = (set(task.upstream_ids) - lists_from) | now_from
    return child


def map_sources(task: Any) -> dict[str, Any]:
    """What each mapped argument of ``task`` holds: a list, an OutputRef or a ParamRef."""
    spec: MapSpec = task.mapping
    return {name: getattr(task, attr)[name] for name, attr in spec.fields.items()}


def display_point(point: Mapping[str, Any]) -> dict[str, Any]:
    """A map point as plain JSON for the store and the UI (references by the task they name)."""
    out: dict[str, Any] = {}
    for name, value in point.items():
        if isinstance(value, OutputRef):
            out[name] = f"<{value.task_id}{'' if value.key is None else f'[{value.key!r}]'}>"
        elif isinstance(value, (bool, int, float, str)) or value is None:
            out[name] = value
        else:
            out[name] = _short(value)
    return out


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _lengths(lengths: Mapping[str, int]) -> str:
    return ", ".join(f"{name} has {n}" for name, n in lengths.items())
