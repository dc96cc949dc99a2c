"""Runs from a notebook: ``pipeline.run(...)`` and ``%nbflow run`` both end up here.

:func:`run_pipeline` records a run and drives it through :mod:`nbflow.api` (the same engine
and store as the CLI) with a live :class:`~nbflow.jupyter.widgets.RunView` as listener, and
returns a :class:`Run`: the run's rows, its outputs (``run["train"]``, ``run.get("train",
"model")``), logs, a DAG picture, and a table as its notebook display.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from nbflow import api
from nbflow.dag import Pipeline
from nbflow.exceptions import NbflowError
from nbflow.jupyter.session import running_count
from nbflow.jupyter.widgets import RunView, run_html

TRIGGER = "notebook"


class RunFailed(NbflowError):
    """A run from the notebook did not succeed; the message names each failed task and cell."""


class Run:
    """One run of a pipeline, as a notebook sees it. Displays as a table of its tasks."""

    def __init__(self, run_id: int, pipeline: Pipeline | None = None):
        self.run_id = run_id
        self.pipeline = pipeline
        self.shown_in: int | None = None  # execution count of the cell that showed it live
        self._details: dict[str, Any] | None = None

    @property
    def details(self) -> dict[str, Any]:
        """The run, task instance, attempt and artifact rows (read once; see :meth:`refresh`)."""
        if self._details is None:
            self._details = api.run_details(self.run_id)
        return self._details

    def refresh(self) -> Run:
        """Read the rows again (for a run still going on elsewhere)."""
        self._details = None
        return self

    @property
    def state(self) -> str:
        """``success``, ``failed``, ``running`` ..."""
        return self.details["run"]["state"]

    @property
    def ok(self) -> bool:
        """Whether the run succeeded."""
        return self.state == "success"

    @property
    def tasks(self) -> list[dict[str, Any]]:
        """Task instance rows (state, tries, duration, error, log and output notebook paths)."""
        return self.details["tasks"]

    def get(self, task_id: str, key: str | None = None) -> Any:
        """A task's value (a cell or notebook task: dict of its saved outputs), or one key of it."""
        value = api.load_output(self.run_id, task_id)
        if key is None:
            return value
        try:
            return value[key]
        except (KeyError, IndexError, TypeError):
            known = ", ".join(value) if isinstance(value, dict) else type(value).__name__
            raise NbflowError(
                f"task '{task_id}' of run {self.run_id} has no output '{key}' (it has: {known})"
            ) from None

    def __getitem__(self, task_id: str) -> Any:
        return self.get(task_id)

    def log(self, task_id: str, try_number: int | None = None) -> str:
        """The log text of a task's latest (or given) try."""
        return api.read_log(self.run_id, task_id, try_number=try_number)

    def show(self) -> Any:
        """The DAG coloured by this run's states, as an IPython SVG."""
        from IPython.display import SVG

        if self.pipeline is None:
            self.pipeline = api.pipeline_of_run(self.run_id)
        return SVG(api.dag_picture(self.pipeline, run_id=self.run_id))

    def failure_summary(self) -> str:
        """One line per failed task: its error (naming the failing cell) and where to look."""
        lines = []
        for t in self.tasks:
            if t["state"] in ("failed", "upstream_failed"):
                where = f"\n    output notebook: {t['output_uri']}" if t.get("output_uri") else ""
                lines.append(f"  {t['task_id']}: {t['state']}: {t.get('error') or t.get('reason') or ''}{where}")
        return "\n".join(lines)

    def raise_for_state(self) -> Run:
        """Raise :class:`RunFailed` unless the run succeeded; returns the run otherwise."""
        if not self.ok:
            name = self.details["run"]["pipeline"]
            raise RunFailed(
                f"run {self.run_id} of {name} {self.state}:\n{self.failure_summary()}",
                hint=f"%nbflow logs TASK --run {self.run_id} shows a log; fix the cell and run again",
            )
        return self

    def _repr_html_(self) -> str:
        return run_html(self.details)

    def _ipython_display_(self) -> None:
        # The live view of this run is already on screen when the run ends the cell that
        # started it (`%nbflow run`, `pipeline.run()` as the last line): do not show it twice.
        if self.shown_in is not None and self.shown_in == _execution_count():
            return
        from IPython.display import HTML, display

        display(HTML(self._repr_html_()))

    def __repr__(self) -> str:
        name = self.details["run"]["pipeline"]
        return f"<nbflow Run {self.run_id} of {name}: {self.state}>"


def _execution_count() -> int | None:
    from IPython import get_ipython

    shell = get_ipython()
    return None if shell is None else running_count(shell)


def in_kernel() -> bool:
    """Whether we run inside an IPython kernel that can show widgets."""
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython is a dependency
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def run_pipeline(
    pipeline: Pipeline,
    params: Mapping[str, Any] | None = None,
    *,
    only: Iterable[str] | None = None,
    executor: str | None = None,
    parallelism: int | None = None,
    live: bool | None = None,
    trigger: str = TRIGGER,
    incremental: bool | None = None,
    force: Iterable[str] | None = None,
    allow_stale_inputs: bool = False,
) -> Run:
    """Run ``pipeline`` now through the engine and store, showing a live view in a notebook.

    ``params``: run parameters (strings are converted to the declared type); ``only``: run
    these tasks (upstream values from their last success; one computed with other parameters
    is refused unless ``allow_stale_inputs``); ``incremental``: reuse the tasks
    that are up to date (default: the pipeline's ``incremental=``), except the ``force``d ones
    and their downstream; ``executor``: ``local`` (default
    from settings), ``inline``, ``dask`` ...; ``live``: show the live widget (default: when
    in a kernel). Returns the :class:`Run` whatever its outcome (``run.raise_for_state()``).
    """
    store = api.open_store()
    name = executor or store.settings.executor
    run_id = api.create_run(
        pipeline,
        params=params,
        only=only,
        trigger=trigger,
        executor=name,
        incremental=incremental,
        force=force,
        allow_stale_inputs=allow_stale_inputs,
        store=store,
    )
    listeners = []
    view = None
    if live if live is not None else in_kernel():
        from IPython.display import display

        view = RunView(api.run_details(run_id, store=store))
        display(view)
        listeners.append(view)
    try:
        api.drive_run(pipeline, run_id, executor=name, parallelism=parallelism, listeners=listeners, store=store)
    finally:
        run = Run(run_id, pipeline)
        if view is not None:
            view.finish(run.details)
            run.shown_in = _execution_count()
    return run
