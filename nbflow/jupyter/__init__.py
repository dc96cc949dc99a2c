"""nbflow inside Jupyter: ``%load_ext nbflow`` for the ``%nbflow`` magics, cell tasks, live
run widgets and DAG pictures (see ``%nbflow?``).

Modules: :mod:`~nbflow.jupyter.magics` (the magics), :mod:`~nbflow.jupyter.session` (this
notebook's declared cells), :mod:`~nbflow.jupyter.runs` (``pipeline.run()`` and the run
object), :mod:`~nbflow.jupyter.widgets` (live view, HTML tables).
"""

from __future__ import annotations

from typing import Any

_loaded: dict[int, Any] = {}


def load_ipython_extension(shell: Any) -> None:
    """``%load_ext nbflow``: register the magics in this IPython shell."""
    from nbflow.jupyter.magics import load

    if id(shell) not in _loaded:
        _loaded[id(shell)] = load(shell)


def unload_ipython_extension(shell: Any) -> None:
    """``%unload_ext nbflow``."""
    from nbflow.jupyter.magics import unload

    magics = _loaded.pop(id(shell), None)
    if magics is not None:
        unload(shell, magics)
