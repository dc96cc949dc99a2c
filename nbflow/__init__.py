"""nbflow: notebooks, notebook cells and ``@task`` functions as a DAG.

Authoring API::

    from nbflow import Pipeline, task, notebook, shell, sql

Inside a notebook task: ``nbflow.load(x)`` resolves an upstream value,
``nbflow.save(name, value)`` publishes one (``asset="model"``: it updates that asset too), ``nbflow.metric(name, value)`` records a
scalar for ``nbflow compare`` (saved scalars are metrics too); ``nbflow.connection("db")`` and
``nbflow.variable("key", default=...)`` read connections and variables (see nbflow/vault.py). ``raise nbflow.FailNow(...)`` fails a task
without retries; ``raise nbflow.Skip("why")`` ends it ``skipped``. ``nbflow.notify(url, ...)``
makes an ``on_failure=``/``on_retry=``/``on_sla_miss=`` callback sending a message (Apprise). Names are imported lazily
so ``import nbflow`` stays cheap in kernels.

In Jupyter: ``%load_ext nbflow`` (see ``%nbflow?``); ``pipeline.run()`` runs a pipeline with a
live view and a pipeline displays as its DAG.
"""

from __future__ import annotations

import importlib
from typing import Any

from nbflow import lazyimports

__version__ = "0.1.0"

lazyimports.defer()  # seconds of CPU in every process that reads a notebook: see nbflow/lazyimports.py

_LAZY = {
    "Pipeline": "nbflow.dag",
    "task": "nbflow.tasks.python",
    "notebook": "nbflow.tasks.notebook",
    "shell": "nbflow.tasks.shell",
    "sql": "nbflow.tasks.sql",
    "group": "nbflow.groups",
    "sensor": "nbflow.tasks.sensor",
    "file_exists": "nbflow.tasks.sensor",
    "pipeline_succeeded": "nbflow.tasks.sensor",
    "load": "nbflow.artifacts",
    "save": "nbflow.artifacts",
    "metric": "nbflow.artifacts",
    "FailNow": "nbflow.exceptions",
    "Skip": "nbflow.exceptions",
    "Param": "nbflow.typedparams",
    "Asset": "nbflow.assets",
    "NbflowError": "nbflow.exceptions",
    "notify": "nbflow.notifications",
}

__all__ = [*_LAZY, "__version__", "connection", "load_ipython_extension", "variable"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    if name in (
        "artifacts",
        "vault",
        "api",
        "dag",
        "engine",
        "config",
        "states",
        "store",
        "worker",
        "executors",
        "tasks",
    ):
        return importlib.import_module(f"nbflow.{name}")
    raise AttributeError(f"module 'nbflow' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)


def connection(name: str) -> Any:
    """Connection ``name`` (:func:`nbflow.vault.connection`): in a task, from its work item or
    ``NBFLOW_CONN_<NAME>``; outside a run (a notebook opened by hand), the metadata database too."""
    return _vault().connection(name)


def variable(key: str, default: Any = ...) -> Any:
    """Variable ``key`` (:func:`nbflow.vault.variable`, the same places), else ``default`` when one is given."""
    return _vault().variable(key) if default is ... else _vault().variable(key, default)


def _vault() -> Any:
    from nbflow import vault

    if vault.carried() is None:  # not inside an attempt: this process may read the store itself
        import nbflow.api.secrets  # noqa: F401 - plugs the store into the lookups

    return vault


def load_ipython_extension(shell: Any) -> None:
    """``%load_ext nbflow``: the ``%nbflow`` magics (IPython is imported only now)."""
    from nbflow.jupyter import load_ipython_extension as load

    load(shell)


def unload_ipython_extension(shell: Any) -> None:
    """``%unload_ext nbflow``."""
    from nbflow.jupyter import unload_ipython_extension as unload

    unload(shell)


# The package root wires what the layers cannot: ``Pipeline.run`` and a pipeline's notebook
# picture live on ``nbflow.dag.Pipeline`` but are implemented above it (jupyter, render);
# dag only holds hooks. The implementations are imported on first use, not here.
def _run_hook(pipeline: Any, params: Any = None, **options: Any) -> Any:
    from nbflow.jupyter.runs import run_pipeline

    return run_pipeline(pipeline, params, **options)


def _picture_hook(pipeline: Any) -> dict[str, Any]:
    from nbflow.render import render, to_dot

    try:
        return {"image/svg+xml": render(to_dot(pipeline.definition())).decode()}
    except NbflowError:  # no graphviz `dot`: the text form is shown
        return {}


from nbflow import dag as _dag  # noqa: E402 - pure and cheap; needed to install the hooks
from nbflow.exceptions import NbflowError  # noqa: E402

_dag.HOOKS.update(run=_run_hook, picture=_picture_hook)
