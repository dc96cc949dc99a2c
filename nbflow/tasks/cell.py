"""Cell tasks: one notebook cell as a task (``%%nbflow task NAME`` or the tag ``nbflow:task=NAME``).

Each attempt runs the cell as a tiny notebook through the notebook machinery
(:func:`nbflow.tasks.nbrun.run_notebook`), so magics, rich display, timeouts, kernel tracking
and the output notebook work as for notebook tasks. The tiny notebook is::

    [setup cells]                       untagged cells above the first task cell (imports ...)
      [run parameters]                  injected after the parameters cell, when there is one
    [inputs]                            x = nbflow.load(<artifact of the upstream task>)
    [the cell body]                     the cell without its %%nbflow line
    [outputs]                           nbflow.save("model", model) for each --outputs name

Outputs are saved artifacts, so a cell task's value is a dict (like a notebook task's) and
another cell's ``--inputs model`` reads the artifact named ``model`` of the task that outputs
it. Failures are reported by the *notebook's* cell (``Cell 5/9`` in a file, ``cell In [7]`` in a
kernel), not by the tiny notebook's. How cells become tasks: :mod:`nbflow.tasks.cellspec`.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from dataclasses import dataclass
from typing import Any

from nbflow.dag import OutputRef
from nbflow.fingerprint import digest
from nbflow.record import AttemptRecord
from nbflow.tasks.base import AttemptContext, BaseTask
from nbflow.tasks.flow import skipped_in_kernel

INJECTED_TAG = "injected-parameters"  # nbrun does not count these cells as source cells


@dataclass(frozen=True)
class SetupCell:
    """A cell every cell task of the notebook runs first (imports, constants, parameters)."""

    label: str  # how the user finds it: "cell 2" in a file, "cell In [3]" in a kernel
    source: str
    params: bool = False  # the parameters cell: a run's parameter values are injected after it
    index: int | None = None  # its index in the notebook file


class CellTask(BaseTask):
    """One notebook cell, run after the notebook's setup cells in a kernel of its own."""

    kind = "cell"
    value_style = "dict"

    def __init__(
        self,
        name: str,
        source: str,
        *,
        label: str,
        index: int | None = None,
        setup: tuple[SetupCell, ...] | list[SetupCell] = (),
        inputs: dict[str, str] | None = None,
        outputs: tuple[str, ...] | list[str] = (),
        params: tuple[str, ...] | list[str] = (),
        kernel_name: str = "python3",
        cwd: str | None = None,
        cell_timeout: float | None = None,
        site: tuple[str, Any] | None = None,
        **options: Any,
    ):
        self.source = source
        self.cell_label, self.cell_index = label, index
        self.setup = tuple(setup)
        #: variable name -> reference to the artifact of that name of the producing task
        self.inputs = {var: OutputRef(task_id, var) for var, task_id in (inputs or {}).items()}
        self.outputs = tuple(outputs)
        self.param_names = tuple(params)
        self.kernel_name = kernel_name
        self.cwd = cwd or os.getcwd()
        self.cell_timeout = cell_timeout
        super().__init__(name, site=site, **options)

    def references(self) -> list[OutputRef]:
        """The upstream artifacts this cell loads."""
        return list(self.inputs.values())

    def code_fingerprint(self) -> str:
        """Hash of the cell, the setup cells, the inputs, outputs and kernel."""
        setup = [(s.source, s.params) for s in self.setup]
        inputs = sorted((var, ref.task_id) for var, ref in self.inputs.items())
        what = (self.source, setup, inputs, self.outputs, self.param_names, self.kernel_name)
        return hashlib.sha256(repr(what).encode()).hexdigest()

    def code_parts(self, memo: dict) -> dict[str, str]:
        """The cell's source, the setup cells' sources (by position: a kernel numbers cells
        anew at every execution), its ``--outputs`` and the kernel; its ``--inputs`` are the
        upstream parts of the artifacts it loads."""
        parts = {"code:cell": digest(self.source), "outputs": digest(repr(self.outputs)), "kernel": self.kernel_name}
        for n, setup in enumerate(self.setup):
            parts[f"code:setup {n}"] = digest(repr((setup.source, setup.params)))
        return parts

    def received_params(self, params: Any) -> list[str]:
        """The parameters injected after its parameters cell."""
        return list(self.param_names)

    def part_label(self, key: str) -> str:
        """``analysis.ipynb cell 5`` for its own cell and its setup cells."""
        where = os.path.basename(str(self.site[0]))
        if key == "code:cell":
            return f"{where} {self.cell_label}"
        if key.startswith("code:setup "):
            n = int(key.rsplit(" ", 1)[1])
            return f"{where} {self.setup[n].label}" if n < len(self.setup) else f"{where} setup cell {n}"
        return super().part_label(key)

    def label(self) -> str:
        """``Cell 5/9`` (in a file, as JupyterLab's status bar) / ``cell In [7]`` (in a kernel, its prompt)."""
        return self.cell_label

    # -- running -------------------------------------------------------------------------
    def run_attempt(self, ctx: AttemptContext) -> AttemptRecord:
        """Run setup + inputs + cell + outputs as a notebook; report failures by notebook cell."""
        import nbformat

        from nbflow.artifacts import read_manifest
        from nbflow.tasks.nbrun import run_notebook

        try:
            load = self._inputs_source(ctx)
        except KeyError as exc:
            return AttemptRecord.failure("input_missing", str(exc.args[0]), ename="KeyError")
        output_path = f"{ctx.attempt_dir}/output.ipynb"
        os.makedirs(ctx.attempt_dir, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="nbflow-cell-") as tmp:
            source_path = os.path.join(tmp, f"{ctx.task_id}.ipynb")
            nbformat.write(self._notebook(ctx, load), source_path)
            result = run_notebook(
                source_path,
                output_path,
                context_source=ctx.kernel_context_source(),
                kernel_name=self.kernel_name,
                cell_timeout=self.cell_timeout,
                timeout=self.timeout,
                log_path=ctx.log_path,
                cwd=self.cwd,
                kill_grace=ctx.kill_grace,
                on_kernel_start=ctx.register_process,
            )
        result.artifacts = [ref.as_dict() for ref in read_manifest(ctx.artifact_dir)]
        if result.ok:
            return result
        where, index = self._where(result.cell_index)
        if result.reason == "cell_error" and result.cell_index == len(self.setup) + 1 and result.ename == "NameError":
            message = str(result.evalue)  # "Cell 5/9 did not define model (named in --outputs)"
        elif result.reason == "cell_error":
            message = f"{where} raised {result.ename}: {result.evalue}"
        else:  # timeouts and kernel deaths name the tiny notebook's cell: name the user's
            message = re.sub(r"\bCell (\d+)/\d+\b", lambda m: self._where(int(m.group(1)) - 1)[0], result.message)
        result.reason = "fail_now" if result.ename == "FailNow" else result.reason
        result.message = message.splitlines()[0] if message else ""
        result.cell_index = index
        return skipped_in_kernel(result)

    def _inputs_source(self, ctx: AttemptContext) -> str:
        lines = ["# nbflow: this cell task's --inputs", "import nbflow as _nbflow"]
        for var, ref in self.inputs.items():
            saved = ctx.upstream[ref.task_id].refs
            if var not in saved:
                raise KeyError(
                    f"upstream task '{ref.task_id}' saved no '{var}' (it saved: {', '.join(saved) or 'nothing'})"
                )
            lines.append(f"{var} = _nbflow.load({saved[var].to_param()!r})")
        return "\n".join(lines)

    def _outputs_source(self) -> str:
        names = list(self.outputs)
        return "\n".join(
            [
                "# nbflow: this cell task's --outputs",
                f"_nbflow_missing = [_n for _n in {names!r} if _n not in globals()]",
                "if _nbflow_missing:",
                f"    raise NameError({self.cell_label!r} + ' did not define ' + ', '.join(_nbflow_missing)"
                " + ' (named in --outputs)')",
                "import nbflow as _nbflow",
                *(f"_nbflow.save({n!r}, {n})" for n in names),
                "del _nbflow_missing  # (a statement last: the saved values are not displayed)",
            ]
        )

    def _notebook(self, ctx: AttemptContext, inputs_source: str) -> Any:
        from nbformat.v4 import new_code_cell, new_notebook

        def injected(source: str) -> Any:
            cell = new_code_cell(source)
            cell.metadata["tags"] = [INJECTED_TAG]
            return cell

        cells = []
        for setup in self.setup:
            cell = new_code_cell(setup.source)
            cell.metadata["nbflow"] = {"setup": setup.label}
            cells.append(cell)
            if setup.params and self.param_names:
                from papermill.translators import PythonTranslator

                values = {n: ctx.params[n] for n in self.param_names if n in ctx.params}
                cells.append(injected(PythonTranslator.codify(values, "Parameters of this run")))
        cells.append(injected(inputs_source))
        body = new_code_cell(self.source)
        body.metadata["nbflow"] = {"task": ctx.task_id, "cell": self.cell_label}
        cells.append(body)
        if self.outputs:
            cells.append(new_code_cell(self._outputs_source()))
        spec = {"name": self.kernel_name, "display_name": self.kernel_name, "language": "python"}
        return new_notebook(cells=cells, metadata={"kernelspec": spec, "language_info": {"name": "python"}})

    def _where(self, index: int | None) -> tuple[str, int | None]:
        """(words for the user, index in the notebook file) of a source cell of the tiny notebook."""
        if index is None:
            return "the cell task", None
        if index < len(self.setup):
            return f"setup {self.setup[index].label}", self.setup[index].index
        if index == len(self.setup):
            return self.cell_label, self.cell_index
        return "saving --outputs", self.cell_index
