"""``notebook(...)``: a papermill-parameterized notebook as a task.

The notebook receives ``parameters`` and ``inputs`` (upstream values) through papermill's
injected-parameters cell. Small JSON values arrive literally; anything else arrives as a
reference string that ``nbflow.load(x)`` turns into the value (``load`` returns plain
values unchanged, so the notebook also runs by hand). Pipeline parameters whose names the
notebook's ``parameters`` cell declares are passed too, unless given explicitly, and so are ``run_id``, ``logical_date``,
``data_interval_start`` and ``data_interval_end`` (ISO strings) when declared.

What the notebook publishes with ``nbflow.save(name, value)`` becomes its value for
downstream tasks: a dict ``{name: value}``; ``handle["name"]`` passes one entry.

Everything is checked when the pipeline is defined: the file exists, its kernel exists,
every passed name is declared by the ``parameters`` cell, and literal values have the
declared types.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Unpack

from nbflow import params as nbparams
from nbflow.dag import (
    OutputRef,
    ParamRef,
    Task,
    caller_site,
    current_pipeline,
    find_refs,
    resolve_refs,
    to_refs,
)
from nbflow.exceptions import DefinitionError, NbflowError, NotebookNotFoundError
from nbflow.fingerprint import notebook_cell_parts, short
from nbflow.masking import scrub_files
from nbflow.record import AttemptRecord
from nbflow.taskoptions import TaskOptions
from nbflow.tasks import nbexport
from nbflow.tasks.base import CONTEXT_NAMES, AttemptContext, BaseTask
from nbflow.tasks.flow import Flow, skipped_in_kernel
from nbflow.templating import TemplateError, is_template, render, render_value

PARAMS_CELL_MODES = ("strict", "inject_top")


class NotebookTask(Flow, BaseTask):
    """One execution of a notebook with papermill, in this worker process."""

    kind = "notebook"
    value_style = "dict"

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        name: str | None = None,
        parameters: dict[str, Any] | None = None,
        inputs: dict[str, Any] | None = None,
        kernel_name: str | None = None,
        cell_timeout: float | None = None,
        params_cell: str = "strict",
        env: dict[str, str] | None = None,
        expand: dict[str, Any] | None = None,
        zip: bool = False,
        branch: bool = False,
        cwd: str | os.PathLike[str] | None = None,
        report_mode: bool = False,
        export: str | None = None,
        output_path: str | None = None,
        **options: Any,
    ):
        site = caller_site()
        self.env = {str(k): str(v) for k, v in (env or {}).items()}
        expand = dict(expand or {})
        try:
            both = set(parameters or {}) & set(expand)
            if both:
                raise DefinitionError(
                    f"task '{name or Path(path).stem}' passes {', '.join(sorted(both))} both as parameters and expand",
                    hint="a mapped parameter goes in expand= only",
                )
            self._check(path, name, {**(parameters or {}), **expand}, inputs, kernel_name, params_cell, set(expand))
            pipeline = current_pipeline()
            self.cwd = nbexport.check_cwd(name or Path(path).stem, pipeline.base_dir if pipeline else Path.cwd(), cwd)
            self.export = nbexport.check_export(name or Path(path).stem, export)
        except NbflowError as exc:
            here = f"{site[0]}:{site[1]}"
            if not (exc.where or "").startswith(site[0]):
                exc.where = f"{here} ({exc.where})" if exc.where else here
            raise
        self.cell_timeout = cell_timeout
        self.params_cell = params_cell
        self.report_mode = bool(report_mode)
        self.publishes_output_notebook = False  # set when a downstream task asks for .output_notebook
        super().__init__(name or Path(path).stem, site=site, explicit_id=name is not None, **options)
        self.set_flow(branch=branch)
        self.output_path = output_path  # a copy of the output notebook there (a template), as papermill's OUTPUT
        self.declare_templates({"parameters": self.parameters, "output_path": output_path})
        if expand:
            self._map_over(dict.fromkeys(expand, "parameters"), zip)

    @property
    def output_notebook(self) -> OutputRef:
        """A reference to the path of this task's output notebook, for a downstream task's
        parameter or argument (papermill's output path, as Airflow users pass it on)."""
        self.publishes_output_notebook = True
        return OutputRef(self.task_id, nbexport.OUTPUT_NOTEBOOK)

    def expand_inputs(self, *names: str, zip: bool = False) -> NotebookTask:
        """Map this notebook over the inputs ``names`` (each an upstream list, or a mapped task):
        one instance per item (per point of their cross product, or pair with ``zip=True``)."""
        unknown = [n for n in names if n not in self.inputs]
        if not names or unknown:
            raise DefinitionError(
                f"task '{self.task_id}' cannot map over input(s) {', '.join(unknown) or '(none given)'}",
                where=f"{self.site[0]}:{self.site[1]}",
                hint=f"name inputs it passes: {', '.join(self.inputs) or '(it passes none)'}",
            )
        fields = dict(self.mapping.fields) if self.mapping is not None else {}
        self.mapping = None
        self._map_over({**fields, **dict.fromkeys(names, "inputs")}, zip)
        return self

    def _check(self, path, name, parameters, inputs, kernel_name, params_cell, mapped) -> None:  # noqa: ANN001
        pipeline = current_pipeline()
        base = pipeline.base_dir if pipeline else Path.cwd()
        self.path = str((base / path).resolve())
        site_name = name or Path(path).stem
        if params_cell not in PARAMS_CELL_MODES:
            raise DefinitionError(
                f"params_cell must be one of {', '.join(PARAMS_CELL_MODES)}, got {params_cell!r} (task '{site_name}')"
            )
        if not os.path.isfile(self.path):
            raise NotebookNotFoundError(
                f"notebook '{path}' of task '{site_name}' not found (looked for {self.path})",
                hint="paths are relative to the pipeline file's folder",
            )
        self.parameters = to_refs(dict(parameters or {}))
        self.inputs = to_refs(dict(inputs or {}))
        clash = set(self.parameters) & set(self.inputs)
        if clash:
            raise DefinitionError(
                f"task '{site_name}' passes {', '.join(sorted(clash))} both as parameters and inputs",
                hint="pass each name once",
            )
        self.kernel_name = nbparams.kernel_alias(kernel_name) if kernel_name else nbparams.check_kernel(self.path)
        self.context_params: list[str] = []
        given = {**self.parameters, **self.inputs}
        deferred = [
            k
            for k, v in given.items()
            if k in mapped or isinstance(v, Task) or any(True for _ in find_refs(v)) or is_template(v)
        ]
        if params_cell == "strict":
            for k in mapped:  # each item of a mapped list has the declared type
                for item in given[k] if isinstance(given[k], (list, tuple)) else ():
                    if not any(True for _ in find_refs(item)):
                        nbparams.check_notebook_parameters(
                            self.path, {k: item}, task_id=site_name, pipeline=pipeline.name if pipeline else "?"
                        )
            nbparams.check_notebook_parameters(
                self.path,
                given,
                task_id=site_name,
                pipeline=pipeline.name if pipeline else "?",
                deferred=deferred,
            )
            declared = nbparams.inspect_parameters(self.path)
            self.context_params = [n for n in CONTEXT_NAMES if n in declared and n not in given]
            if pipeline is not None:
                for pname in pipeline.param_defaults:
                    if pname in declared and pname not in given:
                        self.parameters[pname] = ParamRef(pname)

    def references(self) -> list[OutputRef | ParamRef]:
        """References among parameters and inputs."""
        return [*find_refs(self.parameters), *find_refs(self.inputs)]

    def code_fingerprint(self) -> str:
        """Hash of the notebook file's bytes and the passed parameters."""
        with open(self.path, "rb") as fh:
            content = hashlib.sha256(fh.read()).hexdigest()
        return hashlib.sha256(
            repr(
                (content, sorted(self.parameters.items()), sorted(self.inputs.items()), sorted(self.env.items()))
            ).encode()
        ).hexdigest()

    def code_parts(self, memo: dict) -> dict[str, str]:
        """The source and tags of each code cell (not outputs, counts, ids or other metadata),
        the kernel, and the literal parameters."""
        import json

        key = ("notebook", self.path)
        if key not in memo:  # read once per decision pass, however many tasks run it
            with open(self.path, encoding="utf-8") as fh:
                memo[key] = notebook_cell_parts(json.load(fh), os.path.basename(self.path))
        cell_parts, self._cell_names = memo[key]
        parts = {**cell_parts, "kernel": self.kernel_name}
        if self.cwd:
            parts["cwd"] = short(self.cwd, f"cwd of notebook {os.path.basename(self.path)}")
        if self.env:
            parts["env"] = short(sorted(self.env.items()), f"env of notebook {os.path.basename(self.path)}")
        for name, value in sorted({**self.parameters, **self.inputs}.items()):
            if not any(True for _ in find_refs(value)):
                parts[f"literal:{name}"] = short(value, f"parameter {name} of notebook {os.path.basename(self.path)}")
        return parts

    def part_label(self, key: str) -> str:
        """A code cell as the notebook names it now (``train.ipynb Cell 4/7``); a cell that is
        gone keeps its part's name (``train.ipynb code cell 5``)."""
        return getattr(self, "_cell_names", {}).get(key) or super().part_label(key)

    def received_context(self) -> list[str]:
        """The run values its parameters cell declares."""
        return list(self.context_params)

    def label(self) -> str:
        """``notebook: file.ipynb``."""
        return f"notebook: {os.path.basename(self.path)}"

    def run_attempt(self, ctx: AttemptContext) -> AttemptRecord:
        """Execute the notebook; collect what it saved; describe a failure by cell."""
        from nbflow.artifacts import read_manifest
        from nbflow.tasks.nbrun import run_notebook

        try:
            parameters = self.parameters  # templates rendered before references: values are never templates
            if self.templates:
                parameters = render_value(parameters, ctx.template_values(), task=self.task_id, field="parameters")
            values = resolve_refs(
                {**parameters, **self.inputs}, lambda ref: ctx.upstream[ref.task_id].parameter(ref.key), ctx.params
            )
        except Exception as exc:
            return AttemptRecord.from_exception(exc, reason="input_missing")
        for name in self.context_params:  # dates as ISO strings: parameters are literals
            value: Any = ctx.run_context.get(name)
            values[name] = value.isoformat() if hasattr(value, "isoformat") else value
        os.makedirs(ctx.attempt_dir, exist_ok=True)
        record = run_notebook(
            self.path,
            f"{ctx.attempt_dir}/output.ipynb",
            parameters=values,
            context_source=ctx.kernel_context_source(),
            kernel_name=self.kernel_name,
            cell_timeout=self.cell_timeout,
            timeout=self.timeout,
            log_path=ctx.log_path,
            cwd=self.cwd or os.path.dirname(self.path),
            kill_grace=ctx.kill_grace,
            on_kernel_start=ctx.register_process,
            env=self.env or None,
            report_mode=self.report_mode,
        )
        record.artifacts = [ref.as_dict() for ref in read_manifest(ctx.artifact_dir)]
        scrub_files(f"{ctx.attempt_dir}/output.ipynb")  # secrets as *** before any copy or export
        if self.output_path:
            self._copy_output(ctx, record)
        return self._papermill_extras(ctx, record)

    def _papermill_extras(self, ctx: AttemptContext, record: AttemptRecord) -> AttemptRecord:
        """The HTML export (``export="html"``) and the output notebook's path for downstream tasks."""
        from nbflow.artifacts import write_value

        output = f"{ctx.attempt_dir}/output.ipynb"
        if self.export == "html" and os.path.isfile(output):
            try:
                nbexport.export_html(output, exclude_input=self.report_mode)
            except Exception as exc:  # nbconvert's error: the notebook ran, its page could not be made
                if record.ok:
                    failed = AttemptRecord.from_exception(exc)
                    failed.message = f"task '{ctx.task_id}': the HTML export of {output} failed: {failed.message}"
                    failed.output_uri, failed.artifacts = record.output_uri, record.artifacts
                    return failed
        if self.publishes_output_notebook and record.ok:
            try:
                saved = write_value(ctx.artifact_dir, nbexport.OUTPUT_NOTEBOOK, output, internal=True)
            except OSError as exc:
                return AttemptRecord.storage_failure(exc)
            record.artifacts.append(saved.as_dict())
        if record.ename == "FailNow":
            record.reason = "fail_now"
        return self.with_saved_choice(skipped_in_kernel(record))

    def _copy_output(self, ctx: AttemptContext, record: AttemptRecord) -> None:
        """Copy the output notebook to ``output_path`` (rendered; relative to the notebook's folder)."""
        import shutil

        try:
            target = Path(os.path.dirname(self.path)) / render(
                self.output_path or "", ctx.template_values(), task=self.task_id, field="output_path"
            )
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f"{ctx.attempt_dir}/output.ipynb", target)
        except (OSError, TemplateError) as exc:
            if record.ok:  # a failed attempt keeps its own reason; its notebook is copied when it can be
                record.ok, record.reason = False, "storage_error" if isinstance(exc, OSError) else "exception"
                record.message = f"cannot copy the output notebook to output_path: {exc}"


def notebook(
    path: str | os.PathLike[str],
    *,
    name: str | None = None,
    parameters: dict[str, Any] | None = None,
    inputs: dict[str, Any] | None = None,
    kernel_name: str | None = None,
    cell_timeout: float | None = None,
    params_cell: str = "strict",
    env: dict[str, str] | None = None,
    expand: dict[str, Any] | None = None,
    zip: bool = False,
    branch: bool = False,
    cwd: str | os.PathLike[str] | None = None,
    report_mode: bool = False,
    export: str | None = None,
    output_path: str | None = None,
    **options: Unpack[TaskOptions],
) -> NotebookTask:
    """Add a notebook task to the current pipeline and return its handle.

    ``parameters``: literal values, ``pipeline.params.x``, or Jinja templates rendered when the
    task runs (``{"run_date": "{{ ds }}"}``, :mod:`nbflow.templating`); ``inputs``: upstream handles
    (or ``handle["name"]``). ``timeout`` bounds the whole notebook (its kernel is killed),
    ``cell_timeout`` each cell. ``params_cell="inject_top"`` allows a notebook without a
    ``parameters`` cell (nothing is checked then, as in plain papermill). ``env``: variables
    added to the kernel's environment (the kernel is then started for the attempt, never taken
    from the worker's pool of pre-started kernels). ``expand``: parameters to map over, each a
    list of values (or an upstream list): one instance of the notebook per value, per point of
    their cross product, or of their pairs with ``zip=True`` (see :mod:`nbflow.mapspec`).
    ``branch=True``: the notebook saves the tasks to follow, ``nbflow.save("branch", ["task_a"])``;
    the other tasks directly downstream are skipped. ``raise nbflow.Skip("why")`` in a cell ends
    the task ``skipped``.
    ``cwd``, ``report_mode``, ``export="html"``: papermill's options (see :mod:`nbflow.tasks.nbexport`).
    ``output_path``: also copy each attempt's output notebook there, relative to the notebook's
    folder, as papermill's output path (a template: ``"reports/{{ ds }}/train.ipynb"``).

    The options every task kind takes (``retries``, ``timeout``, ``queue``, ``pool``,
    ``on_failure`` ...) are :class:`nbflow.taskoptions.TaskOptions`.
    """
    return NotebookTask(
        path,
        name=name,
        parameters=parameters,
        inputs=inputs,
        kernel_name=kernel_name,
        cell_timeout=cell_timeout,
        params_cell=params_cell,
        env=env,
        expand=expand,
        zip=zip,
        branch=branch,
        cwd=cwd,
        report_mode=report_mode,
        export=export,
        output_path=output_path,
        **options,
    )
