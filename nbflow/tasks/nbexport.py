"""papermill's options of ``notebook(...)`` beyond parameters: ``cwd=``, ``report_mode=``,
``export=`` and the output notebook's path for downstream tasks (``handle.output_notebook``).

- ``cwd``: the folder the kernel starts in (papermill's ``cwd``; default: the notebook's folder),
  relative to the pipeline file's folder;
- ``report_mode=True``: the output notebook's code cells have their sources hidden (papermill's
  ``report_mode``), and an HTML export leaves them out;
- ``export="html"``: ``output.html`` beside ``output.ipynb`` in the attempt folder (nbconvert's
  ``HTMLExporter``, the ``lab`` template), served by ``GET runs/{id}/tasks/{task}/export.html``;
- ``handle.output_notebook``: a reference to the path of the task's output notebook; the
  notebook task then publishes it as the value :data:`OUTPUT_NOTEBOOK` (downstream only).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from nbflow.artifacts import OUTPUT_NOTEBOOK
from nbflow.exceptions import DefinitionError

__all__ = [
    "EXPORT_FORMATS",
    "OUTPUT_NOTEBOOK",
    "check_cwd",
    "check_export",
    "export_html",
    "export_path",
    "notebook_html",
]

EXPORT_FORMATS = ("html",)


def check_cwd(task_name: str, base: Path, cwd: str | os.PathLike[str] | None) -> str | None:
    """``cwd=`` as an absolute folder (relative to the pipeline file's folder ``base``); a
    DefinitionError naming the task when it is not an existing folder."""
    if cwd is None:
        return None
    path = (base / os.fspath(cwd)).resolve()
    if not path.is_dir():
        raise DefinitionError(
            f"cwd={os.fspath(cwd)!r} of task '{task_name}' is not a folder (looked for {path})",
            hint="cwd= is relative to the pipeline file's folder; create the folder or fix the path",
        )
    return str(path)


def check_export(task_name: str, export: str | None) -> str | None:
    """``export=`` checked against the formats nbflow writes."""
    if export is not None and export not in EXPORT_FORMATS:
        raise DefinitionError(
            f"export={export!r} of task '{task_name}' is not a known format",
            hint=f"known: {', '.join(repr(f) for f in EXPORT_FORMATS)}",
        )
    return export


def export_path(output_notebook: str, fmt: str = "html") -> str:
    """Where the export of ``output_notebook`` in format ``fmt`` goes: beside it."""
    return str(Path(output_notebook).with_suffix(f".{fmt}"))


def export_html(output_notebook: str, *, exclude_input: bool = False) -> str:
    """Write ``output.html`` beside ``output_notebook`` (the code cells' sources left out with
    ``exclude_input``, as papermill's report mode hides them); returns its path."""
    import nbformat

    html = notebook_html(nbformat.read(output_notebook, as_version=4), exclude_input=exclude_input)
    target = export_path(output_notebook)
    tmp = f"{target}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(html)
    os.replace(tmp, target)  # never a half-written page under the served name
    return target


def notebook_html(nb: Any, *, exclude_input: bool = False) -> str:
    """A notebook (an ``nbformat`` node) as one HTML page: nbconvert's ``HTMLExporter``, the
    ``lab`` template (also the page a notification attaches, :mod:`nbflow.notifications`)."""
    from nbconvert import HTMLExporter

    exporter: Any = HTMLExporter(template_name="lab", exclude_input=exclude_input)
    html, _ = exporter.from_notebook_node(nb)
    return str(html)
