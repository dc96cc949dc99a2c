"""Notebooks from JupyterLab: schedule one, run one of cell tasks as a pipeline, and the
notebooks of finished tries (an HTML export, a debug copy to run in a live kernel).

"Schedule this notebook" writes a pipeline file into the DAG folder, ``<name>.py``, with one
``notebook(...)`` task: plain Python that the scheduler picks up like any other and that can
be edited by hand. Its first line marks it as made here for that notebook, so scheduling the
same notebook again under the same name rewrites it, while any other file of that name (a
pipeline someone wrote) is never overwritten. The file is also recorded in the store at once,
so the pipeline is listed before the scheduler's next parse of the folder.
"""

from __future__ import annotations

import ast
import json
import re
from datetime import datetime
from pathlib import Path
from typing import Any

from nbflow import params as nbparams
from nbflow.api.runs import open_store
from nbflow.exceptions import InputError, NbflowError, StateConflictError
from nbflow.loader import load_pipeline
from nbflow.schedule import Schedule, get_timezone, normalize, validate_cron
from nbflow.store import Store
from nbflow.store.orm import utcnow

#: the first line of a pipeline file "Schedule this notebook" wrote (then: the notebook's path)
MARKER = "# nbflow: scheduled from JupyterLab for "
NAME = re.compile(r"[A-Za-z][A-Za-z0-9_\-]{0,99}")
PRESETS = ("@hourly", "@daily", "@weekly", "@monthly", "@yearly")


def notebook_form(path: Path) -> dict[str, Any]:
    """What the "Schedule this notebook" dialog offers for ``path``: its declared parameters
    (name, type, default as JSON), its kernel, whether it is a notebook of cell tasks."""
    import nbformat

    if path.suffix != ".ipynb" or not path.is_file():
        raise InputError("path", f"{path.name} is not a notebook file (.ipynb)")
    nb = nbformat.read(str(path), as_version=4)
    specs = nbparams.inspect_parameters(path)
    parameters = []
    for spec in specs.values():
        default, ok = _literal(spec.default)
        parameters.append(
            {
                "name": spec.name,
                "type": spec.type_name if ok else None,
                "default": default if ok else None,
                "settable": ok,
                "help": spec.help,
            }
        )
    cell_tasks = any(
        (c.get("source") or "").lstrip().startswith("%%nbflow task")
        or any(str(t).startswith("nbflow:task=") for t in c.get("metadata", {}).get("tags", []))
        for c in nb.cells
        if c.get("cell_type") == "code"
    )
    return {
        "path": str(path),
        "name": _default_name(path),
        "parameters": parameters,
        "has_parameters_cell": nbparams.has_parameters_cell(path),
        "kernel": nb.metadata.get("kernelspec", {}).get("name"),
        "cell_tasks": cell_tasks,
        "presets": list(PRESETS),
    }


def schedule_preview(
    schedule: str, timezone: str = "UTC", *, count: int = 5, now: datetime | None = None
) -> dict[str, Any]:
    """A schedule in words and its next ``count`` run times in ``timezone`` (when a run with
    that logical date starts: at the end of its data interval)."""
    cron = _cron(schedule, "schedule")
    tz = _zone(timezone)
    ticks, t = [], now or utcnow()
    sched = Schedule(cron, tz)
    first = sched.next_tick(t)
    for _ in range(count):
        ticks.append(first.astimezone(tz).isoformat())
        first = sched.next_tick(first)
    return {"schedule": schedule, "cron": cron, "timezone": timezone, "description": describe(schedule), "next": ticks}


def describe(schedule: str | None) -> str:
    """A cron string or preset in plain language ("At 06:00, Monday through Friday")."""
    if not schedule:
        return "not scheduled (manual runs only)"
    from cron_descriptor import Options, get_description

    options = Options()
    options.use_24hour_time_format = True
    try:
        return str(get_description(normalize(schedule), options))
    except Exception:  # noqa: BLE001 - a description is a nicety; the cron itself was validated elsewhere
        return schedule


def schedule_notebook(
    path: Path,
    *,
    name: str,
    schedule: str | None,
    timezone: str = "UTC",
    catchup: bool = False,
    parameters: dict[str, Any] | None = None,
    retries: int = 0,
    timeout: float | None = None,
    queue: str = "default",
    kernel: str | None = None,
    store: Store | None = None,
) -> dict[str, Any]:
    """Write ``<DAG folder>/<name>.py`` running the notebook on ``schedule`` and record it;
    returns ``{"pipeline", "file", "schedule", "description"}``. Every field is checked first
    (:class:`InputError` names it); a name taken by another pipeline or file is a
    :class:`StateConflictError`. A file that then does not load is put back as it was."""
    store = store or open_store()
    form = notebook_form(path)
    if not NAME.fullmatch(name or ""):
        raise InputError(
            "name",
            f"pipeline name {name!r} must start with a letter and hold only letters, digits, '_' "
            "and '-' (at most 100 characters)",
            hint=f"for example {form['name']!r}",
        )
    cron = _cron(schedule, "schedule") if schedule else None
    _zone(timezone)
    for field, value, low in (("retries", retries, 0), ("timeout", timeout, 1)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value < low):
            raise InputError(field, f"'{field}' must be a number of at least {low}, got {value!r}")
    if not re.fullmatch(r"[A-Za-z0-9_.\-]{1,100}", queue or ""):
        raise InputError("queue", f"queue {queue!r} must be 1-100 letters, digits, '_', '.' or '-'")
    try:
        kernel = nbparams.check_kernel(path, kernel or None)
    except NbflowError as exc:
        raise InputError("kernel", exc.message, hint=exc.hint) from None
    declared = {p["name"]: p["default"] for p in form["parameters"] if p["settable"]}
    given = dict(parameters or {})
    for key in given:
        if key not in declared:
            raise InputError(
                f"parameters.{key}",
                f"the notebook declares no settable parameter {key!r}; declared: "
                f"{', '.join(declared) or '(none: it has no parameters cell)'}",
            )
    try:
        values = nbparams.resolve_run_params(declared, given, pipeline=name)
    except NbflowError as exc:
        bad = getattr(exc, "invalid", None) or [next(iter(given), "")]
        raise InputError(f"parameters.{bad[0]}", exc.message, hint=exc.hint) from None
    folder = Path(store.settings.dags_folder)
    target = folder / f"{name}.py"
    _check_free(store, name, target, path)
    source = pipeline_source(
        path,
        folder,
        name=name,
        schedule=schedule or None,
        timezone=timezone,
        catchup=catchup,
        params=values,
        retries=retries,
        timeout=timeout,
        queue=queue,
        kernel=kernel,
    )
    folder.mkdir(parents=True, exist_ok=True)
    before = target.read_text() if target.is_file() else None
    _write(target, source)
    try:
        register_file(target, name, store=store)
    except BaseException:
        target.unlink() if before is None else _write(target, before)
        raise
    return {"pipeline": name, "file": str(target), "schedule": cron, "description": describe(schedule)}


def pipeline_source(
    notebook: Path,
    folder: Path,
    *,
    name: str,
    schedule: str | None,
    timezone: str,
    catchup: bool,
    params: dict[str, Any],
    retries: int,
    timeout: float | None,
    queue: str,
    kernel: str | None,
) -> str:
    """The text of the pipeline file that runs ``notebook`` (see :func:`schedule_notebook`)."""
    import os

    relative = Path(os.path.relpath(notebook.resolve(), folder.resolve())).as_posix()
    task = re.sub(r"[^A-Za-z0-9_\-]", "_", notebook.stem) or "notebook"
    options = [f"name={task!r}"]
    if retries:
        options.append(f"retries={retries!r}")
    if timeout:
        options.append(f"timeout={timeout!r}")
    if queue != "default":
        options.append(f"queue={queue!r}")
    if kernel:
        options.append(f"kernel_name={kernel!r}")
    return (
        f"{MARKER}{relative}\n"
        f'"""Runs {notebook.name} ({describe(schedule)}). Written by "Schedule this notebook" in JupyterLab;\n'
        'edit it by hand as any pipeline file: the scheduler reloads it when it changes."""\n\n'
        "from nbflow import Pipeline, notebook\n\n"
        "with Pipeline(\n"
        f"    {name!r},\n"
        f"    schedule={schedule!r},\n"
        f"    timezone={timezone!r},\n"
        f"    catchup={bool(catchup)!r},\n"
        f"    params={_py(params)},\n"
        ") as pipeline:\n"
        f"    notebook({relative!r}, {', '.join(options)})\n"
    )


def register_file(path: Path, name: str | None = None, *, store: Store | None = None) -> str:
    """Load a pipeline file (a ``.py`` file, or a notebook of cell tasks) and record it in the
    store as the scheduler would; returns the pipeline's name."""
    store = store or open_store()
    pipeline = load_pipeline(path, name)
    definition, fingerprint = pipeline.definition(), pipeline.fingerprint()
    store.write(lambda tx: tx.sync_pipeline(definition, fingerprint), what="register pipeline file")
    return pipeline.name


def _write(target: Path, text: str) -> None:
    """Write a file at once (the scheduler never reads half of it)."""
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(text)
    tmp.replace(target)


def _check_free(store: Store, name: str, target: Path, notebook: Path) -> None:
    ours = target.is_file() and target.read_text().startswith(MARKER)
    if target.exists() and not ours:
        raise StateConflictError(
            f"{target.name} already exists in the DAG folder and was not written by "
            '"Schedule this notebook"; it is not overwritten',
            hint="choose another name",
        )
    row = store.get_pipeline(name)
    if row is not None and row["file"] and Path(row["file"]).resolve() != target.resolve():
        raise StateConflictError(
            f"pipeline name '{name}' is taken by {Path(row['file']).name}", hint="choose another name"
        )
    if ours:
        import os

        first = target.read_text().splitlines()[0][len(MARKER) :]
        if (target.parent / first).resolve() != notebook.resolve():
            raise StateConflictError(
                f"{target.name} schedules another notebook ({os.path.basename(first)})", hint="choose another name"
            )


def _cron(schedule: Any, field: str) -> str:
    if not isinstance(schedule, str):
        raise InputError(field, f"'{field}' must be a cron string or a preset ({', '.join(PRESETS)})")
    try:
        return validate_cron(schedule, pipeline="(new)")
    except NbflowError as exc:
        raise InputError(field, exc.message.replace("pipeline '(new)' has an", "an"), hint=exc.hint) from None


def _zone(name: Any) -> Any:
    try:
        return get_timezone(name, pipeline="(new)")
    except NbflowError as exc:
        raise InputError("timezone", f"unknown time zone {name!r}", hint=exc.hint) from None


def _literal(source: str) -> tuple[Any, bool]:
    """A parameter's default as a JSON-able value, if it is a literal."""
    try:
        value = ast.literal_eval(source)
        json.dumps(value)
        return (list(value) if isinstance(value, tuple) else value), True
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None, False


def _py(value: dict[str, Any]) -> str:
    """A dict of JSON values as Python source (True/False/None, floats keep their point)."""
    return repr(value) if value else "{}"


def _default_name(path: Path) -> str:
    stem = re.sub(r"[^A-Za-z0-9_\-]", "_", path.stem).strip("_-") or "notebook"
    return stem if stem[0].isalpha() else f"nb_{stem}"


# --- notebooks of finished tries ---------------------------------------------------------------


def output_of(
    run_id: int, task_id: str, try_number: int | None = None, *, store: Store | None = None
) -> dict[str, Any]:
    """The output notebook of a task's try (default: the latest try that has one):
    ``{"uri", "try", "task_id", "run_id", "pipeline", "state"}``. :class:`UnknownTaskError`,
    :class:`TryNotFoundError`, or :class:`OutputNotFoundError` when it has none (a pending task)."""
    from nbflow.exceptions import (
        OutputNotFoundError,
        TryNotFoundError,
        UnknownTaskError,
    )

    store = store or open_store()
    run = store.get_run(run_id)
    tis = {r["task_id"]: r for r in store.task_instances(run_id)}
    if task_id not in tis:
        raise UnknownTaskError(run["pipeline"], task_id, tis, where=f"run {run_id}")
    attempts = store.attempts(run_id, task_id)
    if try_number is not None:
        chosen = [a for a in attempts if a["try_number"] == try_number]
        if not chosen:
            raise TryNotFoundError(run_id, task_id, try_number, [a["try_number"] for a in attempts])
    else:
        chosen = [a for a in attempts if a["output_uri"]][-1:]
    which = f"try {try_number} of task '{task_id}'" if try_number else f"task '{task_id}'"
    if not chosen or not chosen[0]["output_uri"]:
        state = tis[task_id]["state"]
        raise OutputNotFoundError(
            f"{which} of run {run_id} has no output notebook"
            + (f" (it is {state}: not run yet)" if state in ("pending", "queued") else "")
        )
    attempt = chosen[0]
    return {
        "uri": attempt["output_uri"],
        "try": attempt["try_number"],
        "task_id": task_id,
        "run_id": run_id,
        "pipeline": run["pipeline"],
        "state": attempt["state"],
    }


def read_notebook(uri: str) -> Any:
    """A notebook under the artifact root (any fsspec URL) as an nbformat node."""
    import fsspec
    import nbformat

    with fsspec.open(uri, "r", encoding="utf-8") as fh:
        return nbformat.read(fh, as_version=4)


def export_html(
    run_id: int, task_id: str, try_number: int | None = None, *, store: Store | None = None
) -> tuple[str, str]:
    """The output notebook of a try as a standalone HTML page (nbconvert's ``lab`` template);
    returns (file name, html)."""
    from nbconvert import HTMLExporter

    found = output_of(run_id, task_id, try_number, store=store)
    html, _ = HTMLExporter(template_name="lab").from_notebook_node(read_notebook(found["uri"]))
    return f"{found['pipeline']}-run{run_id}-{task_id}-try{found['try']}.html", html


def debug_copy(run_id: int, task_id: str, try_number: int | None, folder: Path, *, store: Store | None = None) -> Path:
    """Write a runnable copy of a try's notebook into ``folder`` and return its path.

    The copy is the executed notebook without outputs and without nbflow's own cells (the
    context cell, the error banner), led by one cell that sets the try's injected parameters
    and loads its upstream inputs (``x = nbflow.load(x)``), so it runs top to bottom in a live
    kernel as the try did; the ``parameters`` cell stays, commented out (its defaults would
    undo the first cell). A copy that exists is replaced.
    """
    import nbformat

    from nbflow.artifacts import REF_PREFIX
    from nbflow.tasks.nbrun import (
        BANNER_TAG,
        CONTEXT_TAG,
        INJECTED_TAG,
        MARKER_TAG,
        PAPERMILL_ERROR_TAG,
    )

    found = output_of(run_id, task_id, try_number, store=store)
    nb = read_notebook(found["uri"])
    skip = {CONTEXT_TAG, BANNER_TAG, MARKER_TAG, PAPERMILL_ERROR_TAG}  # nbflow's and papermill's own cells
    injected, cells = [], []
    for cell in nb.cells:
        tags = set(cell.get("metadata", {}).get("tags", []))
        if tags & skip:
            continue
        if INJECTED_TAG in tags:
            injected.append(cell.source)
            continue
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
        if "parameters" in tags:  # its defaults would undo the first cell: kept for reading, inert
            cell.source = "# nbflow debug: the first cell sets these for this try\n" + "\n".join(
                f"# {line}" if line.strip() else line for line in cell.source.splitlines()
            )
        cell.metadata.pop("papermill", None)
        cell.metadata.pop("execution", None)
        cells.append(cell)
    loads = []
    for source in injected:
        for node in ast.parse(source).body:
            if (
                isinstance(node, ast.Assign)
                and isinstance(node.value, ast.Constant)
                and isinstance(node.value.value, str)
                and node.value.value.startswith(REF_PREFIX)
            ):
                loads += [f"{t.id} = nbflow.load({t.id})" for t in node.targets if isinstance(t, ast.Name)]
    first = [
        f"# nbflow: debug copy of try {found['try']} of task '{task_id}', run {run_id} ({found['pipeline']})",
        "# the try's injected parameters and its upstream inputs:",
        *injected,
    ]
    if loads:
        first += ["import nbflow", *loads]
    head = nbformat.v4.new_code_cell("\n".join(first))
    head.metadata["tags"] = ["nbflow-debug"]
    nb.cells = [head, *cells]
    nb.metadata.pop("papermill", None)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{task_id}-debug-run{run_id}-try{found['try']}.ipynb"
    nbformat.write(nb, str(target))
    return target


def run_as_pipeline(path: Path, *, start: bool = True, store: Store | None = None) -> dict[str, Any]:
    """Record a saved notebook of cell tasks as a pipeline (its file is the notebook) and queue a
    run of it: ``{"pipeline", "run_id", "file"}``; ``start`` as for :func:`~nbflow.api.trigger`."""
    from nbflow.api.pipelines import trigger

    store = store or open_store()
    name = register_file(path, store=store)
    return {"pipeline": name, "run_id": trigger(name, start=start, store=store), "file": str(path)}
