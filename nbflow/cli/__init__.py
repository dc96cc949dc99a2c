"""The ``nbflow`` command: a thin transport over :mod:`nbflow.api`.

Exit codes: 0 success, 1 the run failed (or was cancelled), 2 bad input (a pipeline that
does not load, an unknown parameter, task or run), 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TextIO

from nbflow import __version__
from nbflow.cli import assets, compare, scheduling, secrets, workers
from nbflow.cli.commands import (
    cmd_cancel,
    cmd_dag_show,
    cmd_db_upgrade,
    cmd_logs,
    cmd_rerun,
    cmd_runs,
    cmd_tasks,
    cmd_worker,
)
from nbflow.exceptions import ArtifactStoreError, NbflowError

EPILOG = """\
examples:
  nbflow run notebooks/ml_pipeline/pipeline.py -p C=0.5     run a pipeline file
  nbflow run pipeline.py --only train --executor inline     run one task (upstream outputs from the last success)
  nbflow run pipeline.py -i                                 run only what changed since the last success
  nbflow run pipeline.py -i --dry-run                       say what would run and why, run nothing
  nbflow run pipeline.py --sweep C=0.01,0.1,1 -e local     one run per value, then their metrics side by side
  nbflow compare --sweep 1 --plot x=C y=train.accuracy -o sweep.png
  nbflow dag show pipeline.py -o dag.svg                    draw the DAG with graphviz
  nbflow runs                                               list recent runs
  nbflow tasks 3                                            task instances of run 3
  nbflow logs 3 train                                       log of task 'train' in run 3
  nbflow rerun 3                                            run the failed tasks of run 3 again
  nbflow scheduler                                          keep ./pipelines on schedule (NBFLOW_DAGS_FOLDER)
  nbflow trigger ml_chain -p C=0.5                          queue a run for the scheduler
  nbflow backfill ml_chain --start 2026-01-01 --end 2026-01-31
  nbflow assets show model                                  an asset's updates and the runs they triggered
  nbflow connections add warehouse --uri postgresql://etl:pw@db/dw   a connection (NBFLOW_FERNET_KEY)
  nbflow variables set threshold 0.75                       a variable tasks read with nbflow.variable

settings come from NBFLOW_HOME (default ./.nbflow), NBFLOW_DB_URL (default SQLite under
NBFLOW_HOME), NBFLOW_ARTIFACT_ROOT, NBFLOW_EXECUTOR, NBFLOW_PARALLELISM, or [tool.nbflow]
in ./pyproject.toml.
"""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``nbflow`` (all sub-commands)."""
    parser = argparse.ArgumentParser(
        prog="nbflow",
        description="nbflow: run notebooks, notebook cells and @task functions as a DAG, with every run recorded in SQL.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"nbflow {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    def executor_args(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--executor",
            "-e",
            help="where tasks run: inline (this process), local (worker processes), dask (a Dask cluster; default)",
        )
        p.add_argument(
            "--parallelism",
            "-j",
            type=int,
            help="worker processes of the local executor / local Dask cluster (default: CPUs)",
        )
        p.add_argument(
            "--dask-address",
            metavar="tcp://HOST:8786",
            help="use this Dask scheduler instead of starting a local cluster (or NBFLOW_DASK_ADDRESS)",
        )
        p.add_argument("--verbose", "-v", action="store_true", help="also show queued tasks and hosts")

    p = sub.add_parser(
        "run",
        help="run a pipeline file now and show progress",
        description="Load PATH, record a run, execute it and print a summary. Exit code 1 if the run failed.",
    )
    p.add_argument(
        "path", help="a .py file that defines a Pipeline at module level, or a notebook of %%%%nbflow task cells"
    )
    p.add_argument("--pipeline", help="which pipeline, when the file defines several")
    p.add_argument(
        "-p",
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a pipeline parameter (repeatable); converted to the default's type",
    )
    p.add_argument(
        "--only",
        nargs="+",
        metavar="TASK",
        help="run only these tasks; upstream values come from their last successful run (each named as the run starts)",
    )
    p.add_argument(
        "--allow-stale-inputs",
        action="store_true",
        help="with --only: use an upstream value even when the run it comes from had other parameters "
        "(refused by default)",
    )
    p.add_argument(
        "--incremental",
        "-i",
        action=argparse.BooleanOptionalAction,
        help="reuse every task that is up to date (same code, parameters, read files and upstream outputs as its last success, whose outputs still exist): it ends 'cached' (default: the pipeline's incremental=)",
    )
    p.add_argument(
        "--force",
        nargs="+",
        metavar="TASK",
        help="with --incremental: run these tasks (and so their downstream) anyway",
    )
    p.add_argument(
        "--dry-run", action="store_true", help="print what would run (and why) or be reused; run nothing, record no run"
    )
    p.add_argument(
        "--sweep",
        action="append",
        default=[],
        metavar="KEY=V1,V2,...",
        help="one run per point of the cross product of these values (repeatable), driven together; "
        "ends with the runs' params and metrics (nbflow compare --sweep ID)",
    )
    executor_args(p)
    p.set_defaults(func=compare.run_or_sweep)

    p = sub.add_parser(
        "rerun",
        help="run the unsuccessful (or chosen) tasks of a finished run again",
        description="Clear tasks of run RUN (default: every task that did not succeed, and what is downstream of it), load the pipeline file again and execute them.",
    )
    p.add_argument("run", type=int, help="run id (see `nbflow runs`)")
    p.add_argument(
        "--task", action="append", metavar="TASK", help="clear this task (repeatable) instead of the failed ones"
    )
    executor_args(p)
    p.set_defaults(func=cmd_rerun)

    dag = sub.add_parser("dag", help="inspect a pipeline's DAG").add_subparsers(
        dest="dag_command", metavar="SUBCOMMAND"
    )
    dag.required = True
    p = dag.add_parser(
        "show",
        help="list the tasks, or draw the DAG with graphviz",
        description="Without -o, list tasks and edges; with -o, draw the DAG (nodes labelled with their kind, coloured by a run's states with --run).",
    )
    p.add_argument("path", help="pipeline file")
    p.add_argument("--pipeline", help="which pipeline, when the file defines several")
    p.add_argument("-o", "--output", help="write a picture: dag.svg, dag.png, dag.pdf or dag.dot")
    p.add_argument("--run", type=int, help="colour the nodes by this run's task states")
    p.set_defaults(func=cmd_dag_show)

    p = sub.add_parser("runs", help="list recent runs")
    p.add_argument("--pipeline", help="only runs of this pipeline")
    p.add_argument("--limit", "-n", type=int, default=20, help="how many (default 20)")
    p.set_defaults(func=cmd_runs)

    p = sub.add_parser(
        "tasks",
        help="show the task instances of a run",
        description="State, tries, host, duration, artifacts and errors of each task of RUN, and where the output notebooks are.",
    )
    p.add_argument("run", type=int, help="run id")
    p.set_defaults(func=cmd_tasks)

    p = sub.add_parser("logs", help="print a task's log")
    p.add_argument("run", type=int, help="run id")
    p.add_argument("task", help="task id")
    p.add_argument("--try", dest="try_number", type=int, help="which try (default: the latest)")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing new lines until the task finishes")
    p.add_argument("--interval", type=float, default=0.5, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_logs)

    p = sub.add_parser(
        "cancel",
        help="cancel a queued or running run",
        description="Mark run RUN and its unfinished tasks cancelled. The process driving the run notices within seconds and kills running notebook kernels, shell commands and Dask tasks.",
    )
    p.add_argument("run", type=int, help="run id")
    p.set_defaults(func=cmd_cancel)

    p = sub.add_parser(
        "worker",
        help="start a Dask (or Celery) worker that serves nbflow queues",
        description="A thin wrapper around `dask worker`: queue Q is advertised as the Dask resource queue-Q, so tasks "
        "with queue='Q' run only on workers that serve it. With --engine celery, a wrapper around `celery worker`: "
        "it consumes the Celery queues Q (broker from --broker or NBFLOW_CELERY_BROKER), runs attempts in threads.",
        epilog="examples:\n"
        "  nbflow worker --scheduler tcp://10.0.0.5:8786 --queue gpu --queue default --nthreads 1 --resources GPU=1\n"
        "  nbflow worker --engine celery --broker redis://10.0.0.5:6379/0 --queue gpu --nthreads 2",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--engine", choices=("dask", "celery"), default="dask", help="the executor it serves (default dask)")
    p.add_argument("--scheduler", help="dask: address of the Dask scheduler, e.g. tcp://host:8786 (required)")
    p.add_argument("--broker", help="celery: the broker URL (default NBFLOW_CELERY_BROKER)")
    p.add_argument("--queue", "-q", action="append", help="a queue to serve (repeatable; default: default)")
    p.add_argument("--nthreads", type=int, default=1, help="tasks this worker runs at once (default 1)")
    p.add_argument("--nworkers", type=int, help="dask: worker processes to start (default 1)")
    p.add_argument("--name", help="worker name (shown in `nbflow tasks` and `nbflow workers`)")
    p.add_argument(
        "--resources", action="append", metavar="NAME=AMOUNT", help="dask: extra resources, e.g. GPU=1 (repeatable)"
    )
    p.set_defaults(func=cmd_worker)

    db = sub.add_parser("db", help="manage the metadata database").add_subparsers(
        dest="db_command", metavar="SUBCOMMAND"
    )
    db.required = True
    p = db.add_parser("upgrade", help="create or migrate the database to the newest schema")
    p.set_defaults(func=cmd_db_upgrade)
    scheduling.register_db(db)
    scheduling.register(sub, executor_args)
    compare.register(sub)
    secrets.register(sub)
    workers.register(sub)
    assets.register(sub)
    return parser


class QuietPipe:
    """``out`` that stops printing, quietly, once its reader has gone (``nbflow run ... | head``):
    the command goes on (a run is driven to its end and recorded as it ends) and exits as it
    would have. Python ignores SIGPIPE, so a closed pipe is a ``BrokenPipeError`` on write."""

    def __init__(self, out: TextIO):
        self.out, self.closed_by_reader = out, False

    def _quiet(self) -> None:
        if not self.closed_by_reader and self.out is sys.stdout:
            import os

            # the interpreter flushes stdout at exit: give it somewhere to go
            with open(os.devnull, "w") as devnull:
                os.dup2(devnull.fileno(), sys.stdout.fileno())
        self.closed_by_reader = True

    def write(self, text: str) -> int:
        if not self.closed_by_reader:
            try:
                return self.out.write(text)
            except BrokenPipeError:
                self._quiet()
        return len(text)

    def flush(self) -> None:
        if not self.closed_by_reader:
            try:
                self.out.flush()
            except BrokenPipeError:
                self._quiet()

    def __getattr__(self, name: str) -> object:
        return getattr(self.out, name)


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Entry point of the ``nbflow`` console script; returns the exit code."""
    out = QuietPipe(out or sys.stdout)  # type: ignore[assignment]
    args = build_parser().parse_args(argv)
    if getattr(args, "dask_address", None):
        import os

        from nbflow.config import reset_settings

        os.environ["NBFLOW_DASK_ADDRESS"] = args.dask_address
        reset_settings()
        args.executor = args.executor or "dask"
    try:
        return args.func(args, out)
    except NbflowError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    except ArtifactStoreError as exc:  # logs, outputs, notebooks on a store this host cannot reach now
        sys.stderr.write(f"error: {exc}\n  hint: {exc.hint}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("\ninterrupted: running tasks were cancelled\n")
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
