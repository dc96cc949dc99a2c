"""Executors, registered under the entry-point group ``nbflow.executors``.

Built in: ``inline`` (this process), ``local`` (a pool of worker processes), ``dask`` (a
Dask cluster, embedded or remote). A plugin adds
one by subclassing :class:`nbflow.executors.base.Executor` and declaring an entry point.
"""

from __future__ import annotations

import functools
import importlib
from importlib.metadata import entry_points
from typing import Any

from nbflow.exceptions import ExecutorNotFoundError
from nbflow.executors.base import Event, Executor

_BUILTIN = {
    "inline": "nbflow.executors.inline:InlineExecutor",
    "local": "nbflow.executors.local:LocalExecutor",
    "dask": "nbflow.executors.dask:DaskExecutor",
}


@functools.lru_cache(maxsize=1)
def known_executors() -> dict[str, str]:
    """Executor name -> ``module:Class`` (built-in ones and entry points; read once)."""
    found = dict(_BUILTIN)
    for ep in entry_points(group="nbflow.executors"):
        found[ep.name] = ep.value
    return found


def executor_class(name: str) -> type[Executor]:
    """The executor class registered as ``name``; fails naming the known ones."""
    known = _BUILTIN if name in _BUILTIN else known_executors()
    if name not in known:
        raise ExecutorNotFoundError(f"No executor named '{name}'; known: {', '.join(sorted(known))}")
    module, _, attr = known[name].partition(":")
    return getattr(importlib.import_module(module), attr)


def get_executor(name: str, **options: Any) -> Executor:
    """Instantiate the executor registered as ``name``."""
    return executor_class(name)(**options)


__all__ = ["Event", "Executor", "executor_class", "get_executor", "known_executors"]
