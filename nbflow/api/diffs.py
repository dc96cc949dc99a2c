"""Two runs' output notebooks of one task, diffed by nbdime (the REST ``.../diff`` route,
the Compare view's "Diff output notebooks").

nbdime does the diffing (``nbdime.diff_notebooks``): its answer, with the base notebook, is what
nbdime's own web widgets (``NotebookDiffModel`` + ``NotebookDiffWidget``) render. What differs in
every run whatever the code did (papermill's and the kernel's timings in the notebook's and each
cell's metadata: :data:`VOLATILE`) is left out of both notebooks first, so a cell shows as
changed when its source or outputs changed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from nbflow.api.notebooks import output_of, read_notebook
from nbflow.api.runs import open_store
from nbflow.exceptions import NbflowError, OutputNotFoundError
from nbflow.store import Store

#: metadata keys (of the notebook and of each cell) that papermill and the kernel write per run
VOLATILE = ("papermill", "execution")


def diff_outputs(
    run_id: int,
    task_id: str,
    against: int,
    *,
    try_number: int | None = None,
    against_try: int | None = None,
    prepare: Callable[[Any], Any] | None = None,
    store: Store | None = None,
) -> dict[str, Any]:
    """The nbdime diff from task ``task_id``'s output notebook in run ``against`` (the base, left)
    to the one in run ``run_id`` (the remote, right); each the latest try that has one unless a
    try is given. Returns ``{"base": notebook, "diff": nbdime diff, "base_run", "remote_run",
    "base_try", "remote_try", "task_id"}``. Errors name the task and the run: RunNotFoundError,
    UnknownTaskError, TryNotFoundError, OutputNotFoundError (no output notebook in that run,
    or its file is gone). ``prepare`` rewrites each notebook before the diff (the REST route's
    path scrubbing: a diff's keys are offsets into the texts it was computed from, so the texts
    sent must be those)."""
    store = store or open_store()
    base_out = output_of(against, task_id, against_try, store=store)
    remote_out = output_of(run_id, task_id, try_number, store=store)
    base = _steady(_read(base_out))
    remote = _steady(_read(remote_out))
    if prepare is not None:
        import nbformat

        base, remote = nbformat.from_dict(prepare(base)), nbformat.from_dict(prepare(remote))
    try:
        import nbdime
    except ImportError as exc:  # a dependency of nbflow; a broken environment says so
        raise NbflowError(
            "diffing output notebooks needs nbdime, which is not installed", hint="pip install nbdime"
        ) from exc
    return {
        "task_id": task_id,
        "base_run": against,
        "base_try": base_out["try"],
        "remote_run": run_id,
        "remote_try": remote_out["try"],
        "base": base,
        "diff": nbdime.diff_notebooks(base, remote),
    }


def _read(found: dict[str, Any]) -> Any:
    """The output notebook ``found`` (:func:`output_of`), or OutputNotFoundError naming it."""
    try:
        return read_notebook(found["uri"])
    except FileNotFoundError:
        raise OutputNotFoundError(
            f"the output notebook of task '{found['task_id']}' in run {found['run_id']} (try {found['try']}) "
            "is gone from the artifact root",
            hint="retention (nbflow db clean) or a person may have removed it",
        ) from None


def _steady(nb: Any) -> Any:
    """``nb`` without the :data:`VOLATILE` metadata of the notebook and its cells."""
    for holder in (nb, *nb.get("cells", [])):
        for key in VOLATILE:
            holder.get("metadata", {}).pop(key, None)
    return nb
