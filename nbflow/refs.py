"""References a task's inputs hold until run time: another task's output, a run parameter."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from nbflow.exceptions import DefinitionError


@dataclass(frozen=True)
class OutputRef:
    """The value of an upstream task (or one key of it, or one item of a list), resolved when the task runs."""

    task_id: str
    key: str | int | None = None

    def __getitem__(self, key: str) -> OutputRef:
        if self.key is not None:
            raise DefinitionError(f"cannot index {self} twice; index the value inside the task")
        return OutputRef(self.task_id, key)


@dataclass(frozen=True)
class ParamRef:
    """A pipeline parameter, resolved to the run's value when the task runs."""

    name: str


def find_refs(value: Any) -> Iterator[OutputRef | ParamRef]:
    """Every reference inside ``value`` (lists, tuples, sets and dict values are searched)."""
    if isinstance(value, (OutputRef, ParamRef)):
        yield value
    elif isinstance(value, (list, tuple, set, frozenset)):
        for item in value:
            yield from find_refs(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from find_refs(item)


def resolve_refs(value: Any, output: Callable[[OutputRef], Any], params: Mapping[str, Any]) -> Any:
    """Replace references inside ``value``: ``output(ref)`` gives an upstream value, ``params`` the run's."""
    if isinstance(value, OutputRef):
        return output(value)
    if isinstance(value, ParamRef):
        return params[value.name]
    if isinstance(value, (list, tuple)):
        return type(value)(resolve_refs(v, output, params) for v in value)
    if isinstance(value, dict):
        return {k: resolve_refs(v, output, params) for k, v in value.items()}
    return value


class ParamsView:
    """``pipeline.params``: ``params["alpha"]`` or ``params.alpha`` give a :class:`ParamRef`.

    Deliberately not a Mapping, so a parameter may be named ``keys`` or ``items``.
    """

    def __init__(self, pipeline: Any):  # a dag.Pipeline
        self._pipeline = pipeline

    def __getitem__(self, name: str) -> ParamRef:
        if name not in self._pipeline.param_defaults:
            raise DefinitionError(
                f"pipeline '{self._pipeline.name}' declares no parameter '{name}'",
                hint=f"declared: {', '.join(self._pipeline.param_defaults) or '(none)'}; add it to Pipeline(params=...)",
            )
        return ParamRef(name)

    def __getattr__(self, name: str) -> ParamRef:
        if name.startswith("_"):
            raise AttributeError(name)
        return self[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._pipeline.param_defaults)

    def __len__(self) -> int:
        return len(self._pipeline.param_defaults)

    def __contains__(self, name: object) -> bool:
        return name in self._pipeline.param_defaults
