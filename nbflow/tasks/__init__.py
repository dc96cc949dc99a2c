"""Task kinds, registered under the entry-point group ``nbflow.task_kinds``.

Built in: ``python`` (``@task``), ``notebook`` (``notebook(...)``), ``shell``
(``shell(...)``), ``sql`` (``sql(...)``), ``cell`` (notebook cells: ``%%nbflow task`` or ``nbflow:task=NAME`` tags).
A plugin adds a kind by subclassing :class:`nbflow.tasks.base.BaseTask` and declaring an
entry point.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import TYPE_CHECKING

from nbflow.exceptions import NbflowError

if TYPE_CHECKING:
    from nbflow.tasks.base import BaseTask

_BUILTIN = {
    "python": "nbflow.tasks.python:PythonTask",
    "notebook": "nbflow.tasks.notebook:NotebookTask",
    "shell": "nbflow.tasks.shell:ShellTask",
    "sql": "nbflow.tasks.sql:SqlTask",
    "sensor": "nbflow.tasks.sensor:SensorTask",
    "cell": "nbflow.tasks.cell:CellTask",
}


def known_kinds() -> dict[str, str]:
    """Kind name -> ``module:Class`` for built-in and entry-point kinds."""
    kinds = dict(_BUILTIN)
    for ep in entry_points(group="nbflow.task_kinds"):
        kinds[ep.name] = ep.value
    return kinds


def get_kind(name: str) -> type[BaseTask]:
    """The task class registered as ``name``; fails naming the known kinds."""
    kinds = known_kinds()
    if name not in kinds:
        raise NbflowError(f"No task kind named '{name}'; known: {', '.join(sorted(kinds))}")
    module, _, attr = kinds[name].partition(":")
    import importlib

    return getattr(importlib.import_module(module), attr)
