"""The ``%nbflow`` / ``%%nbflow`` magics: thin transports over :mod:`nbflow.api`.

Errors are shown in a few red lines (``nbflow: what, where, hint``), never as a traceback
through nbflow's internals; the cell still fails, so "Run All" stops there.
"""

from __future__ import annotations

import argparse
import os
import shlex
from typing import Any

from IPython.core.magic import Magics, line_cell_magic, magics_class

from nbflow import api
from nbflow.exceptions import NbflowError
from nbflow.jupyter.runs import TRIGGER, Run, run_pipeline
from nbflow.jupyter.session import ThisNotebook
from nbflow.jupyter.widgets import compare_html, runs_html
from nbflow.tasks.cellspec import ArgumentError, Parser

_RED, _RESET = "\x1b[0;31m", "\x1b[0m"


class MagicError(Exception):
    """An error of a magic, shown without a traceback (IPython calls ``_render_traceback_``)."""

    def _render_traceback_(self) -> list[str]:
        lines = str(self).splitlines() or [""]
        return [f"{_RED}nbflow: {lines[0]}{_RESET}", *lines[1:]]


def _params(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise NbflowError(f"parameter {pair!r} is not KEY=VALUE", hint="e.g. -p alpha=0.2 -p name=test")
        out[key.strip()] = value
    return out


def _parser() -> Parser:
    top = Parser(prog="%nbflow", add_help=False)
    sub = top.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    p = sub.add_parser("run", add_help=False)
    p.add_argument("target", nargs="?", default="this")
    p.add_argument("--pipeline")
    p.add_argument("-p", "--param", action="append", default=[])
    p.add_argument("--executor", "-e")
    p.add_argument("--parallelism", "-j", type=int)
    p.add_argument("--only", nargs="+")
    p.add_argument("--allow-stale-inputs", action="store_true")
    p.add_argument("--incremental", "-i", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--force", nargs="+")
    p.add_argument("--sweep", action="append", default=[])
    p = sub.add_parser("show", add_help=False)
    p.add_argument("target", nargs="?", default="this")
    p.add_argument("--pipeline")
    p.add_argument("--run", type=int)
    p = sub.add_parser("get", add_help=False)
    p.add_argument("task")
    p.add_argument("key", nargs="?")
    p.add_argument("--run", type=int)
    p = sub.add_parser("status", add_help=False)
    p.add_argument("run", nargs="?", type=int)
    p = sub.add_parser("runs", add_help=False)
    p.add_argument("pipeline", nargs="?")
    p.add_argument("-n", "--limit", type=int, default=10)
    p = sub.add_parser("logs", add_help=False)
    p.add_argument("task")
    p.add_argument("--run", type=int)
    p.add_argument("--try", dest="try_number", type=int)
    p = sub.add_parser("trigger", add_help=False)
    p.add_argument("name")
    p.add_argument("-p", "--param", action="append", default=[])
    p = sub.add_parser("mode", add_help=False)
    p.add_argument("mode", nargs="?", choices=["run", "declare"])
    p = sub.add_parser("forget", add_help=False)
    p.add_argument("task", nargs="?")
    p.add_argument("--all", action="store_true")
    sub.add_parser("help", add_help=False)
    return top


@magics_class
class NbflowMagics(Magics):
    """``%nbflow`` and ``%%nbflow`` (see the docstring of :meth:`nbflow` or ``%nbflow?``)."""

    def __init__(self, shell: Any):
        super().__init__(shell)
        self.this = ThisNotebook(shell)

    @line_cell_magic
    def nbflow(self, line: str, cell: str | None = None) -> Any:
        """nbflow inside the notebook: cells as tasks, runs with live status, DAG pictures.

        Cells (the first line of a cell):

          %%nbflow task NAME [--after A,B] [--inputs x,y] [--outputs a,b] [--retries N]
                             [--retry-delay S] [--timeout S] [--cell-timeout S] [--queue Q]
                             [--trigger-rule R]
              Declare this cell as task NAME of this notebook's pipeline, and run it here as
              usual (after `%nbflow mode declare`: declare only). In a pipeline run the cell runs
              in a kernel of its own: first the setup cells, then --inputs loaded from the
              --outputs of the --after tasks (else of the nearest task cell above), then the
              cell, then its --outputs saved as artifacts. Independent cells run in parallel.
          %%nbflow setup      run before every task (cells run before the first task cell are
                              setup cells already; use this for imports added later)
          %%nbflow params     setup cell whose literal assignments are the pipeline's
                              parameters (`-p name=value` overrides them in a run)

        Commands (PIPELINE: `this` notebook (default), a .py / .ipynb pipeline file, or the
        name of a pipeline nbflow knows from an earlier run or the scheduler):

          %nbflow run [PIPELINE] [-p K=V ...] [--executor local|inline|...] [-j N]
                      [--only TASK ...] [--allow-stale-inputs] [--pipeline NAME] [--incremental|-i] [--force TASK ...]
              Run it now through the engine and store the CLI uses, with a live table of
              tasks (state, tries, duration, log and output-notebook links). A failed run fails
              the cell with each failed task's error and cell. Returns the run.
          %nbflow show [PIPELINE] [--run N]   the DAG (SVG), coloured by the latest (or given) run
          %nbflow get TASK [KEY] [--run N]    a task's outputs (dict), or one of them
          %nbflow status [RUN]                this notebook's cells and its latest (or given) run
          %nbflow runs [PIPELINE] [-n N]      recent runs
          %nbflow logs TASK [--run N] [--try N]   a task's log
          %nbflow trigger NAME [-p K=V ...]   queue a run of pipeline NAME for the scheduler
          %nbflow pipeline NAME [--schedule CRON] [--kernel K]   name this notebook's pipeline
          %nbflow mode [run|declare]          whether %%nbflow task cells also run here (run)
          %nbflow forget TASK | --all         drop a declared task (or every declaration)

        A saved notebook is a pipeline file: `nbflow run notebook.ipynb` runs its task cells,
        with no kernel open. Cells may also be declared with tags instead of magics:
        nbflow:task=NAME, nbflow:after=A, nbflow:inputs=x, nbflow:outputs=y (repeat a tag for
        more names: tags cannot hold commas), nbflow:retries=N, nbflow:queue=Q, nbflow:setup,
        parameters; nbflow:pipeline=NAME names the pipeline.
        Python: `pipeline.run(params, only=, executor=)` returns the same run object.
        """
        try:
            if cell is not None:
                return self._cell(line, cell)
            return self._line(line)
        except NbflowError as exc:
            raise MagicError(str(exc)) from None
        except ArgumentError as exc:
            raise MagicError(f"{exc}\n  see %nbflow? for every command") from None

    # -- cells -------------------------------------------------------------------------------
    def _cell(self, line: str, cell: str) -> Any:
        role, _, args = line.strip().partition(" ")
        if role not in ("task", "setup", "params"):
            raise NbflowError(
                f"unknown cell command '%%nbflow {role}'",
                hint="use %%nbflow task NAME, %%nbflow setup or %%nbflow params",
            )
        decl = self.this.declare(role, args.strip(), cell)
        if role == "task" and self.this.mode == "declare":
            return None
        assert self.shell is not None  # a registered Magics has its shell
        self.this.nested += 1
        try:
            result = self.shell.run_cell(cell, store_history=False)
        finally:
            self.this.nested -= 1
        if not result.success:
            what = f"task '{decl.name}'" if role == "task" else f"this {role} cell"
            raise MagicError(f"{what} is declared; its code failed here (see above)")
        return None

    # -- commands -----------------------------------------------------------------------------
    def _line(self, line: str) -> Any:
        if not line.strip():
            print(type(self).nbflow.__doc__)
            return None
        sub, _, rest = line.strip().partition(" ")
        if sub == "pipeline":
            self.this.set_pipeline(rest)
            return None
        args = _parser().parse_args(shlex.split(line))
        return getattr(self, f"_cmd_{args.command}")(args)

    def _cmd_help(self, args: argparse.Namespace) -> None:
        print(type(self).nbflow.__doc__)

    def _pipeline(self, target: str, name: str | None = None) -> Any:
        if target == "this":
            return self.this.pipeline()
        from nbflow.loader import load_pipeline

        if os.path.exists(target):
            return load_pipeline(target, name)
        known = {p["name"]: p for p in api.list_pipelines()}
        if target in known and known[target].get("file"):
            return load_pipeline(known[target]["file"], target)
        raise NbflowError(
            f"no pipeline file or known pipeline {target}",
            hint=f"pass a .py or .ipynb file, `this` notebook, or a pipeline name: {', '.join(sorted(known)) or '(none known)'}",
        )

    def _cmd_run(self, args: argparse.Namespace) -> Run | None:
        pipeline = self._pipeline(args.target, args.pipeline)
        if args.sweep:
            self._sweep(pipeline, args)
            return None
        try:
            run = run_pipeline(
                pipeline,
                _params(args.param),
                only=args.only,
                executor=args.executor,
                parallelism=args.parallelism,
                incremental=args.incremental,
                force=args.force,
                allow_stale_inputs=args.allow_stale_inputs,
                live=True,
            )
        except KeyboardInterrupt:
            raise MagicError("interrupted: the run's unfinished tasks were cancelled") from None
        self.this.last_run_id = run.run_id
        return run.raise_for_state()

    def _sweep(self, pipeline: Any, args: argparse.Namespace) -> None:
        """``%nbflow run ... --sweep C=1,2``: one run per point, then their params and metrics."""
        from IPython.display import HTML, display

        def on_end(run_id: int, state: Any) -> None:
            print(f"run {run_id}: {state.value}", flush=True)

        try:
            result = api.run_sweep(
                pipeline,
                api.parse_sweep_args(args.sweep),
                params=_params(args.param),
                only=args.only,
                executor=args.executor,
                parallelism=args.parallelism,
                incremental=args.incremental,
                force=args.force,
                trigger=TRIGGER,
                on_end=on_end,
            )
        except KeyboardInterrupt:
            raise MagicError("interrupted: the sweep's unfinished runs were cancelled") from None
        self.this.last_run_id = result.runs[-1].run_id
        display(HTML(compare_html(api.compare(sweep=result.sweep_id))))
        failed = [f"run {r.run_id} {r.state.value}" for r in result.runs if not r.ok]
        if failed:
            raise MagicError(
                f"sweep {result.sweep_id}: {len(failed)} of {len(result.runs)} runs did not succeed ({', '.join(failed)})"
                f"\n  see %nbflow status RUN"
            )

    def _cmd_show(self, args: argparse.Namespace) -> Any:
        from IPython.display import SVG

        pipeline = self._pipeline(args.target, args.pipeline)
        run_id = args.run
        if run_id is None:
            latest = api.list_runs(pipeline.name, limit=1)
            run_id = latest[0]["id"] if latest else None
        return SVG(api.dag_picture(pipeline, run_id=run_id))

    def _default_run(self, run_id: int | None) -> int:
        if run_id is not None:
            return run_id
        if self.this.last_run_id is not None:
            return self.this.last_run_id
        latest = api.list_runs(self.this.name(), limit=1) or api.list_runs(limit=1)
        if not latest:
            raise NbflowError("no runs yet", hint="start one with %nbflow run")
        return latest[0]["id"]

    def _cmd_get(self, args: argparse.Namespace) -> Any:
        return Run(self._default_run(args.run)).get(args.task, args.key)

    def _cmd_logs(self, args: argparse.Namespace) -> None:
        run_id = self._default_run(args.run)
        text = api.read_log(run_id, args.task, try_number=args.try_number)
        print(text if text else f"(task '{args.task}' of run {run_id} wrote no log output)")

    def _cmd_status(self, args: argparse.Namespace) -> Any:
        from IPython.display import HTML, display

        if self.this.cells:
            setup = [c.label for c in self.this.cells if c.role != "task"]
            print(
                f"this notebook: pipeline '{self.this.name()}', mode {self.this.mode}, setup: {', '.join(setup) or 'none'}"
            )
            for c in self.this.cells:
                if c.role == "task":
                    o = c.task[1]
                    extra = "".join(
                        f" {flag} {','.join(v)}"
                        for flag, v in (("--after", o.after), ("--inputs", o.inputs), ("--outputs", o.outputs))
                        if v
                    )
                    print(f"  {c.name:<16} {c.label}{extra}")
        try:
            run_id = self._default_run(args.run)
        except NbflowError:
            if not self.this.cells:
                print("nothing declared and no runs yet: start a cell with %%nbflow task NAME")
            return None
        display(HTML(Run(run_id)._repr_html_()))
        return None

    def _cmd_runs(self, args: argparse.Namespace) -> Any:
        from IPython.display import HTML

        runs = api.list_runs(args.pipeline, limit=args.limit)
        if not runs:
            print("no runs yet: start one with %nbflow run")
            return None
        return HTML(runs_html(runs))

    def _cmd_trigger(self, args: argparse.Namespace) -> None:
        run_id = api.trigger(args.name, params=_params(args.param))
        print(f"queued run {run_id} of {args.name} (the scheduler runs it; see %nbflow status {run_id})")

    def _cmd_mode(self, args: argparse.Namespace) -> None:
        if args.mode:
            self.this.mode = args.mode
        what = "declared and run here" if self.this.mode == "run" else "declared only (not run here)"
        print(f"%%nbflow task cells are {what}")

    def _cmd_forget(self, args: argparse.Namespace) -> None:
        if not args.task and not args.all:
            raise NbflowError("forget what?", hint="%nbflow forget TASK, or %nbflow forget --all")
        dropped = self.this.forget(None if args.all else args.task)
        if not dropped:
            raise NbflowError(
                f"no declared task '{args.task}'", hint=f"declared: {', '.join(self.this.tasks()) or '(none)'}"
            )
        print(f"forgot: {', '.join(dropped)}")


def load(shell: Any) -> NbflowMagics:
    """Register the magics and the cell recorder of this notebook's pipeline."""
    magics = NbflowMagics(shell)
    shell.register_magics(magics)
    shell.events.register("pre_run_cell", magics.this.pre_run_cell)
    shell.events.register("post_run_cell", magics.this.post_run_cell)
    history = list(getattr(shell.history_manager, "input_hist_raw", []))
    magics.this.seed(history[1:-1])  # cells run before %load_ext nbflow (not that cell itself)
    return magics


def unload(shell: Any, magics: NbflowMagics) -> None:
    """Undo :func:`load` (``%unload_ext nbflow``)."""
    for event, fn in (("pre_run_cell", magics.this.pre_run_cell), ("post_run_cell", magics.this.post_run_cell)):
        try:
            shell.events.unregister(event, fn)
        except ValueError:
            pass
    shell.magics_manager.magics["line"].pop("nbflow", None)
    shell.magics_manager.magics["cell"].pop("nbflow", None)


__all__ = ["MagicError", "NbflowMagics", "load", "unload"]
