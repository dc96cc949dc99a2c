"""nbflow: notebooks, notebook cells and ``@task`` functions as a DAG.

Authoring API::

    from nbflow import Pipeline, task, notebook, shell

Inside a notebook task: ``nbflow.load(x)`` resolves an upstream value,
``nbflow.save(name, value)`` publishes one. ``raise nbflow.FailNow(...)`` fails a task
without retries. Names are imported lazily so ``import nbflow`` stays cheap in kernels.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "Pipeline": "nbflow.dag",
    "task": "nbflow.tasks.python",
    "notebook": "nbflow.tasks.notebook",
    "shell": "nbflow.tasks.shell",
    "load": "nbflow.artifacts",
    "save": "nbflow.artifacts",
    "FailNow": "nbflow.exceptions",
    "NbflowError": "nbflow.exceptions",
}

__all__ = [*_LAZY, "__version__"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    if name in ("artifacts", "api", "dag", "engine", "config", "states", "store", "worker", "executors", "tasks"):
        return importlib.import_module(f"nbflow.{name}")
    raise AttributeError(f"module 'nbflow' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
