"""The files a notebook task's ``export=`` wrote beside its output notebook (``output.html``)."""

from __future__ import annotations

from typing import Any

from nbflow.api.notebooks import output_of
from nbflow.store import Store

__all__ = ["exported_html", "export_uri", "has_export"]


def export_uri(output_uri: str, fmt: str = "html") -> str:
    """Where the ``fmt`` export of the output notebook ``output_uri`` is (beside it, any fsspec URL)."""
    stem = output_uri[: -len(".ipynb")] if output_uri.endswith(".ipynb") else output_uri
    return f"{stem}.{fmt}"


def has_export(output_uri: str | None, fmt: str = "html") -> bool:
    """Whether the try whose output notebook is ``output_uri`` wrote an export in ``fmt``."""
    if not output_uri:
        return False
    import fsspec

    fs, path = fsspec.core.url_to_fs(export_uri(output_uri, fmt))
    return bool(fs.exists(path))


def exported_html(
    run_id: int, task_id: str, try_number: int | None = None, *, store: Store | None = None
) -> tuple[str, str]:
    """The HTML page that ``export="html"`` wrote for a try (default: the latest with an output
    notebook): (download name, the page). :class:`OutputNotFoundError` naming the try and the fix
    when it wrote none."""
    import fsspec

    from nbflow.exceptions import OutputNotFoundError

    found: dict[str, Any] = output_of(run_id, task_id, try_number, store=store)
    uri = export_uri(found["uri"])
    if not has_export(found["uri"]):
        raise OutputNotFoundError(
            f"try {found['try']} of task '{task_id}' of run {run_id} has no HTML export",
            hint='give the task notebook(..., export="html"); GET .../output.html converts any output notebook',
        )
    with fsspec.open(uri, "r", encoding="utf-8") as fh:
        page = fh.read()
    return f"{found['pipeline']}-run{run_id}-{task_id}-try{found['try']}.html", page
