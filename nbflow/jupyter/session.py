"""This notebook's pipeline, as the kernel has seen it (``%nbflow run this`` needs no saved file).

The kernel never sees the notebook file, so it records what it executes:

* ``%%nbflow task|setup|params`` cells declare themselves when run (a re-run replaces the
  declaration; JupyterLab sends a cell id, so a renamed task replaces its old name too);
* plain cells run successfully *before the first task cell* are setup cells (imports ...),
  in the order they ran, ``%nbflow`` lines dropped; so are cells run before ``%load_ext nbflow``
  (from the kernel's input history). Later plain cells are exploration, not pipeline, unless
  they are ``%%nbflow setup`` cells. This mirrors the file rule "untagged cells above the first
  task cell" for a notebook run top to bottom.
"""

from __future__ import annotations

import os
from typing import Any

from nbflow.dag import Pipeline
from nbflow.exceptions import DefinitionError
from nbflow.tasks.cellspec import (
    CellDecl,
    PipelineDecl,
    build_pipeline,
    clean_setup,
    kernel_pipeline_name,
    parse,
    pipeline_parser,
    resolve_inputs,
    split_magic,
    task_decl,
)

PREFIX = "this notebook"


def running_count(shell: Any) -> int:
    """The ``In [N]`` of the cell the shell is running now: the number the notebook shows.

    ``shell.execution_count`` is not it on every IPython: before 9 it is incremented after a
    cell ran (so it is N while the cell runs), from 9 on before the cell runs (N + 1). The
    running cell's ``ExecutionResult`` (the display hook holds it while user code runs) carries
    N on both; outside a cell (a magic called from code) the shell's counter is all there is.
    """
    result = getattr(getattr(shell, "displayhook", None), "exec_result", None)
    count = getattr(result, "execution_count", None)
    return count if isinstance(count, int) else shell.execution_count


class ThisNotebook:
    """The cells of the notebook in this kernel that make up its pipeline."""

    def __init__(self, shell: Any):
        self.shell = shell
        self.cells: list[CellDecl] = []
        self.decl = PipelineDecl()
        self.mode = "run"  # "declare": %%nbflow task cells are declared but not run
        self.sealed = False  # a task cell was declared: later plain cells are not setup
        self.nested = 0  # >0 while a task cell's body runs (its own cell events are not cells)
        self.cell_id: str | None = None
        self.last_run_id: int | None = None

    # -- recording --------------------------------------------------------------------------
    def seed(self, history: list[str]) -> None:
        """Cells run before the extension was loaded (the kernel's input history)."""
        for n, raw in enumerate(history, start=1):
            if raw and split_magic(raw)[0] is None:
                self._setup(raw, f"cell In [{n}]", None)

    def pre_run_cell(self, info: Any) -> None:
        """IPython event: remember the cell id of the cell about to run."""
        if not self.nested:
            self.cell_id = getattr(info, "cell_id", None)

    def post_run_cell(self, result: Any) -> None:
        """IPython event: a plain cell that ran fine may be a setup cell."""
        info = result.info
        if self.nested or info.silent or not result.success or split_magic(info.raw_cell)[0] is not None:
            return
        self._setup(info.raw_cell, f"cell In [{result.execution_count}]", info.cell_id)

    def _setup(self, raw: str, label: str, cell_id: str | None) -> None:
        source = clean_setup(raw)
        key = cell_id or source
        for i, cell in enumerate(self.cells):
            if cell.key == key and cell.role == "setup":
                if source:
                    self.cells[i] = CellDecl("setup", source, label, key=key)
                else:
                    del self.cells[i]
                return
        if source and not self.sealed:
            self.cells.append(CellDecl("setup", source, label, key=key))

    # -- declaring ----------------------------------------------------------------------------
    def label(self) -> str:
        """``cell In [N]`` for the cell running now, N as the notebook shows it."""
        return f"cell In [{running_count(self.shell)}]"

    def declare(self, role: str, args: str, body: str) -> CellDecl:
        """Declare the running ``%%nbflow task|setup|params`` cell; errors name the cell."""
        label = self.label()
        where = f"{PREFIX}:{label}"
        if role == "task":
            cell = task_decl(args, body, label, where)
            cell.key = self.cell_id or ("task", cell.name)
            for other in self.cells:
                if other.role == "task" and other.name == cell.name and other.key != cell.key:
                    raise DefinitionError(
                        f"task '{cell.name}' is already declared by {other.label}",
                        where=where,
                        hint=f"rename one of them, or drop the old one: %nbflow forget {cell.name}",
                    )
        elif args:
            raise DefinitionError(f"%%nbflow {role} takes no arguments, got {args!r}", where=where)
        else:
            cell = CellDecl(role, clean_setup(body), label, key=self.cell_id or ("source", body))
        cells = list(self.cells)
        same = [i for i, c in enumerate(cells) if c.key == cell.key]
        if same:
            cells[same[0]] = cell
        else:
            cells.append(cell)
        resolve_inputs(cells, PREFIX)  # an --inputs name no task above outputs fails now
        self.cells = cells
        self.sealed = self.sealed or role == "task"
        return cell

    def forget(self, name: str | None) -> list[str]:
        """Drop the task ``name`` (None: every declaration); returns what was dropped."""
        dropped = [c.name or c.label for c in self.cells if name is None or (c.role == "task" and c.name == name)]
        self.cells = [c for c in self.cells if not (name is None or (c.role == "task" and c.name == name))]
        if name is None:
            self.sealed = False
        return dropped

    def set_pipeline(self, args: str) -> None:
        """``%nbflow pipeline NAME [--schedule CRON] [--kernel K] [--description TEXT]``."""
        opts = parse(pipeline_parser(), args, f"{PREFIX}:{self.label()}")
        self.decl = PipelineDecl(opts.name, opts.schedule, opts.kernel, opts.description)

    # -- the pipeline ---------------------------------------------------------------------------
    def name(self) -> str:
        """``%nbflow pipeline NAME``, else the notebook's file name (JupyterLab tells the kernel), else "notebook"."""
        if self.decl.name:
            return self.decl.name
        return kernel_pipeline_name(self.shell.user_ns.get("__session__") or os.environ.get("JPY_SESSION_NAME") or "")

    def tasks(self) -> list[str]:
        """Names of the declared task cells."""
        return [c.task[0] for c in self.cells if c.role == "task"]

    def pipeline(self) -> Pipeline:
        """The pipeline these cells declare (built fresh; each cell task runs in a kernel of its own)."""
        decl = PipelineDecl(self.decl.name, self.decl.schedule, self.decl.kernel, self.decl.description, self.cells)
        return build_pipeline(
            decl, name=self.name(), prefix=PREFIX, file=None, cwd=os.getcwd(), kernel_name=self.decl.kernel or "python3"
        )
