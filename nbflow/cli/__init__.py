"""The ``nbflow`` command: a thin transport over :mod:`nbflow.api`.

Exit codes: 0 success, 1 the run failed (or was cancelled), 2 bad input (a pipeline that
does not load, an unknown parameter, task or run), 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from nbflow import __version__
from nbflow.cli import scheduling
from nbflow.cli.dryrun import dry_run
from nbflow.render import fmt_duration
from nbflow.exceptions import NbflowError

EPILOG = """\
examples:
  nbflow run notebooks/ml_pipeline/pipeline.py -p C=0.5     run a pipeline file
  nbflow run pipeline.py --only train --executor inline     run one task (upstream outputs from the last success)
  nbflow run pipeline.py -i                                 run only what changed since the last success
  nbflow run pipeline.py -i --dry-run                       say what would run and why, run nothing
  nbflow dag show pipeline.py -o dag.svg                    draw the DAG with graphviz
  nbflow runs                                               list recent runs
  nbflow tasks 3                                            task instances of run 3
  nbflow logs 3 train                                       log of task 'train' in run 3
  nbflow rerun 3                                            run the failed tasks of run 3 again
  nbflow scheduler                                          keep ./pipelines on schedule (NBFLOW_DAGS_FOLDER)
  nbflow trigger ml_chain -p C=0.5                          queue a run for the scheduler
  nbflow backfill ml_chain --start 2026-01-01 --end 2026-01-31

settings come from NBFLOW_HOME (default ./.nbflow), NBFLOW_DB_URL (default SQLite under
NBFLOW_HOME), NBFLOW_ARTIFACT_ROOT, NBFLOW_EXECUTOR, NBFLOW_PARALLELISM, or [tool.nbflow]
in ./pyproject.toml.
"""


def _fmt_time(value: datetime | None) -> str:
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def _table(rows: Sequence[Sequence[Any]], headers: Sequence[str], out: TextIO) -> None:
    cells = [[str(c) for c in headers]] + [[("-" if c is None else str(c)) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for n, row in enumerate(cells):
        out.write("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() + "\n")
        if n == 0:
            out.write("  ".join("-" * w for w in widths) + "\n")


class Progress:
    """Prints one line per task state change while a run goes on."""

    SYMBOLS = {
        "queued": ("·", "."),
        "running": ("▶", ">"),
        "success": ("✔", "+"),
        "cached": ("≡", "="),
        "failed": ("✘", "x"),
        "up_for_retry": ("↻", "r"),
        "upstream_failed": ("⊘", "-"),
        "skipped": ("⊘", "-"),
        "cancelled": ("■", "#"),
    }

    def __init__(self, out: TextIO, verbose: bool = False):
        self.out, self.verbose = out, verbose
        self.t0 = time.time()
        enc = (getattr(out, "encoding", None) or "ascii").lower()
        self.unicode = enc.startswith("utf")
        self.done = 0
        self.total = 0

    def __call__(self, ev: Any) -> None:
        state = ev.state.value
        if state == "queued" and not self.verbose:
            return
        if state in ("success", "cached", "failed", "upstream_failed", "skipped", "cancelled"):
            self.done += 1
        symbol = self.SYMBOLS.get(state, ("?", "?"))[0 if self.unicode else 1]
        why = f": {ev.why}" if getattr(ev, "why", None) and ev.try_number <= 1 else ""
        detail = {
            "running": f"started (try {ev.try_number}{' on ' + ev.hostname if ev.hostname and self.verbose else ''}){why}",
            "cached": ev.why or "cached",
            "success": f"done in {fmt_duration(ev.duration)}",
            "up_for_retry": f"try {ev.try_number} failed, will retry: {ev.message}",
            "failed": f"FAILED (try {ev.try_number}): {ev.message}",
        }.get(state, f"{state}{': ' + ev.message if ev.message else ''}")
        counter = f"{self.done}/{self.total}" if self.total else ""
        self.out.write(f"  [{time.time() - self.t0:6.1f}s {counter:>7}] {symbol} {ev.task_id:<20} {detail}\n")
        self.out.flush()


def _params(pairs: Sequence[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise NbflowError(f"parameter {pair!r} is not KEY=VALUE", hint="e.g. -p alpha=0.2 -p name=test")
        out[key.strip()] = value
    return out


def _summary(result: Any, started: float, out: TextIO) -> None:
    rows = [
        (t["task_id"], t["state"], t["try_number"], fmt_duration(t["duration"]), t["error"] or t.get("why") or "")
        for t in result.tasks
    ]
    out.write("\n")
    _table(rows, ("task", "state", "tries", "duration", "error / why"), out)
    out.write(f"\nrun {result.run_id} of {result.pipeline}: {result.state.value} in {fmt_duration(time.time() - started)}\n")
    out.write(f"  details: nbflow tasks {result.run_id}   logs: nbflow logs {result.run_id} TASK\n")
    if not result.ok:
        out.write(f"  fix and re-run what failed: nbflow rerun {result.run_id}\n")


# --- commands --------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace, out: TextIO) -> int:
    from nbflow import api
    from nbflow.loader import load_pipeline

    pipeline = load_pipeline(args.path, args.pipeline)
    store = api.open_store()
    if args.dry_run:
        return dry_run(pipeline, _params(args.param), args, store, out)
    executor = args.executor or store.settings.executor
    progress = Progress(out, args.verbose)
    run_id = api.create_run(
        pipeline, params=_params(args.param), only=args.only, trigger="cli", executor=executor,
        incremental=args.incremental, force=args.force, store=store,
    )
    progress.total = len(api.run_details(run_id, store=store)["tasks"])
    started = time.time()

    def on_start(ex: Any) -> None:
        out.write(f"nbflow: run {run_id} of {pipeline.name} ({progress.total} tasks) on {ex.describe()}\n")
        out.write(f"  if this process dies: {ex.guarantee}\n")
        out.flush()

    result = api.drive_run(
        pipeline, run_id, executor=executor, parallelism=args.parallelism, listeners=[progress], store=store, on_start=on_start
    )
    _summary(result, started, out)
    return 0 if result.ok else 1


def cmd_rerun(args: argparse.Namespace, out: TextIO) -> int:
    from nbflow import api

    progress = Progress(out, args.verbose)
    started = time.time()
    out.write(f"nbflow: re-running run {args.run}\n")
    result = api.rerun(args.run, tasks=args.task or None, executor=args.executor, parallelism=args.parallelism, listeners=[progress])
    _summary(result, started, out)
    return 0 if result.ok else 1


def cmd_dag_show(args: argparse.Namespace, out: TextIO) -> int:
    from nbflow import api
    from nbflow.loader import load_pipeline

    pipeline = load_pipeline(args.path, args.pipeline)
    if not args.output:
        definition = pipeline.definition()
        out.write(f"pipeline {pipeline.name} ({len(definition['tasks'])} tasks, schedule {pipeline.schedule or 'none'})\n")
        for t in definition["tasks"]:
            after = f"  after {', '.join(t['upstream'])}" if t["upstream"] else ""
            out.write(f"  {t['id']:<20} {t['label']}{after}\n")
        out.write("draw it: nbflow dag show PATH -o dag.svg (or .png, .dot)\n")
        return 0
    fmt = Path(args.output).suffix.lstrip(".").lower() or "svg"
    if fmt not in ("svg", "png", "pdf", "dot"):
        raise NbflowError(f"cannot write a '.{fmt}' picture", hint="use an .svg, .png, .pdf or .dot file name")
    data = api.dag_picture(pipeline, run_id=args.run, fmt=fmt)
    mode = "w" if isinstance(data, str) else "wb"
    with open(args.output, mode) as fh:
        fh.write(data)
    out.write(f"wrote {args.output}\n")
    return 0


def cmd_runs(args: argparse.Namespace, out: TextIO) -> int:
    from nbflow import api

    runs = api.list_runs(args.pipeline, limit=args.limit)
    if not runs:
        out.write("no runs yet: start one with `nbflow run PIPELINE.py`\n")
        return 0
    rows = []
    for r in runs:
        took = (r["ended_at"] - r["started_at"]).total_seconds() if r["ended_at"] and r["started_at"] else None
        counts = ", ".join(f"{n} {s}" for s, n in sorted(r["task_counts"].items()))
        rows.append((r["id"], r["pipeline"], r["state"], r["trigger"], _fmt_time(r["created_at"]), fmt_duration(took), counts))
    _table(rows, ("run", "pipeline", "state", "trigger", "created", "duration", "tasks"), out)
    return 0


def cmd_tasks(args: argparse.Namespace, out: TextIO) -> int:
    from nbflow import api

    details = api.run_details(args.run)
    run = details["run"]
    out.write(f"run {run['id']} of {run['pipeline']}: {run['state']} (params {run['params']})\n\n")
    arts: dict[str, list[str]] = {}
    for a in details["artifacts"]:
        arts.setdefault(a["task_id"], []).append(a["name"])
    rows = [
        (
            t["task_id"],
            t["state"],
            f"{t['try_number']}/{t['max_tries']}",
            t["queue"],
            t["hostname"],
            fmt_duration(t["duration"]),
            ", ".join(arts.get(t["task_id"], [])),
            t["error"] or t["note"] or "",
        )
        for t in details["tasks"]
    ]
    why = any(t["why"] for t in details["tasks"])  # an incremental run: why each task ran or was reused
    rows = [(*row, t["why"] or "") if why else row for row, t in zip(rows, details["tasks"])]
    headers = ("task", "state", "tries", "queue", "host", "duration", "artifacts", "error / why waiting")
    _table(rows, headers + (("why it ran / reused",) if why else ()), out)
    outputs = [(t["task_id"], t["output_uri"]) for t in details["tasks"] if t["output_uri"]]
    if outputs:
        out.write("\noutput notebooks:\n")
        for tid, uri in outputs:
            out.write(f"  {tid}: {uri}\n")
    failed = [a for a in details["attempts"] if a["state"] in ("failed", "up_for_retry") and a["ename"]]
    if failed:
        out.write("\nfailed attempts:\n")
        for a in failed:
            cell = f" in Cell {a['cell_index'] + 1}" if a["cell_index"] is not None else ""
            out.write(f"  {a['task_id']} try {a['try_number']}: {a['reason']}{cell}: {a['ename']}: {a['evalue']}\n")
    return 0


def cmd_logs(args: argparse.Namespace, out: TextIO) -> int:
    from nbflow import api

    if not args.follow:
        text = api.read_log(args.run, args.task, try_number=args.try_number)
        out.write(text if text else f"(task '{args.task}' of run {args.run} wrote no log output)\n")
        return 0
    offset = 0
    while True:  # tail the log until the task has finished and nothing new arrives
        finished = api.task_finished(args.run, args.task)
        chunk = api.read_log(args.run, args.task, try_number=args.try_number, offset=offset)
        if chunk:
            out.write(chunk)
            out.flush()
            offset += len(chunk.encode("utf-8"))
        elif finished:
            return 0
        else:
            time.sleep(args.interval)


def cmd_cancel(args: argparse.Namespace, out: TextIO) -> int:
    from nbflow import api

    stopped = api.cancel_run(args.run)
    out.write(f"run {args.run} cancelled; {len(stopped)} unfinished task(s) stopped: {', '.join(stopped) or '-'}\n")
    return 0


def cmd_worker(args: argparse.Namespace, out: TextIO) -> int:
    """Replace this process with a Dask worker that advertises nbflow queues as resources."""
    import os

    from nbflow import api

    queues = args.queue or ["default"]
    argv, env = api.worker_command(
        args.scheduler, queues=queues, nthreads=args.nthreads, name=args.name, nworkers=args.nworkers,
        resources=args.resources or (),
    )
    out.write(f"nbflow worker: serving queues {', '.join(queues)} for {args.scheduler}\n")
    out.flush()
    os.execvpe(argv[0], argv, env)
    return 0  # not reached


def cmd_db_upgrade(args: argparse.Namespace, out: TextIO) -> int:
    from nbflow import api

    url, before, after = api.upgrade_database()
    out.write(f"database {url}: " + (f"upgraded {before or 'empty'} -> {after}\n" if before != after else f"already at {after}\n"))
    return 0


# --- parser ------------------------------------------------------------------------------------


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
        p.add_argument("--executor", "-e", help="where tasks run: inline (this process), local (worker processes), dask (a Dask cluster; default)")
        p.add_argument("--parallelism", "-j", type=int, help="worker processes of the local executor / local Dask cluster (default: CPUs)")
        p.add_argument("--dask-address", metavar="tcp://HOST:8786", help="use this Dask scheduler instead of starting a local cluster (or NBFLOW_DASK_ADDRESS)")
        p.add_argument("--verbose", "-v", action="store_true", help="also show queued tasks and hosts")

    p = sub.add_parser(
        "run",
        help="run a pipeline file now and show progress",
        description="Load PATH, record a run, execute it and print a summary. Exit code 1 if the run failed.",
    )
    p.add_argument("path", help="a .py file that defines a Pipeline at module level, or a notebook of %%%%nbflow task cells")
    p.add_argument("--pipeline", help="which pipeline, when the file defines several")
    p.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE", help="override a pipeline parameter (repeatable); converted to the default's type")
    p.add_argument("--only", nargs="+", metavar="TASK", help="run only these tasks; upstream values come from their last successful run")
    p.add_argument("--incremental", "-i", action=argparse.BooleanOptionalAction, help="reuse every task that is up to date (same code, parameters, read files and upstream outputs as its last success, whose outputs still exist): it ends 'cached' (default: the pipeline's incremental=)")
    p.add_argument("--force", nargs="+", metavar="TASK", help="with --incremental: run these tasks (and so their downstream) anyway")
    p.add_argument("--dry-run", action="store_true", help="print what would run (and why) or be reused; run nothing, record no run")
    executor_args(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("rerun", help="run the unsuccessful (or chosen) tasks of a finished run again", description="Clear tasks of run RUN (default: every task that did not succeed, and what is downstream of it), load the pipeline file again and execute them.")
    p.add_argument("run", type=int, help="run id (see `nbflow runs`)")
    p.add_argument("--task", action="append", metavar="TASK", help="clear this task (repeatable) instead of the failed ones")
    executor_args(p)
    p.set_defaults(func=cmd_rerun)

    dag = sub.add_parser("dag", help="inspect a pipeline's DAG").add_subparsers(dest="dag_command", metavar="SUBCOMMAND")
    dag.required = True
    p = dag.add_parser("show", help="list the tasks, or draw the DAG with graphviz", description="Without -o, list tasks and edges; with -o, draw the DAG (nodes labelled with their kind, coloured by a run's states with --run).")
    p.add_argument("path", help="pipeline file")
    p.add_argument("--pipeline", help="which pipeline, when the file defines several")
    p.add_argument("-o", "--output", help="write a picture: dag.svg, dag.png, dag.pdf or dag.dot")
    p.add_argument("--run", type=int, help="colour the nodes by this run's task states")
    p.set_defaults(func=cmd_dag_show)

    p = sub.add_parser("runs", help="list recent runs")
    p.add_argument("--pipeline", help="only runs of this pipeline")
    p.add_argument("--limit", "-n", type=int, default=20, help="how many (default 20)")
    p.set_defaults(func=cmd_runs)

    p = sub.add_parser("tasks", help="show the task instances of a run", description="State, tries, host, duration, artifacts and errors of each task of RUN, and where the output notebooks are.")
    p.add_argument("run", type=int, help="run id")
    p.set_defaults(func=cmd_tasks)

    p = sub.add_parser("logs", help="print a task's log")
    p.add_argument("run", type=int, help="run id")
    p.add_argument("task", help="task id")
    p.add_argument("--try", dest="try_number", type=int, help="which try (default: the latest)")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing new lines until the task finishes")
    p.add_argument("--interval", type=float, default=0.5, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_logs)

    p = sub.add_parser("cancel", help="cancel a queued or running run", description="Mark run RUN and its unfinished tasks cancelled. The process driving the run notices within seconds and kills running notebook kernels, shell commands and Dask tasks.")
    p.add_argument("run", type=int, help="run id")
    p.set_defaults(func=cmd_cancel)

    p = sub.add_parser(
        "worker",
        help="start a Dask worker that serves nbflow queues",
        description="A thin wrapper around `dask worker`: queue Q is advertised as the Dask resource queue-Q, so tasks with queue='Q' run only on workers that serve it.",
        epilog="example: nbflow worker --scheduler tcp://10.0.0.5:8786 --queue gpu --queue default --nthreads 1 --resources GPU=1",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--scheduler", required=True, help="address of the Dask scheduler, e.g. tcp://host:8786")
    p.add_argument("--queue", "-q", action="append", help="a queue to serve (repeatable; default: default)")
    p.add_argument("--nthreads", type=int, default=1, help="tasks this worker runs at once (default 1)")
    p.add_argument("--nworkers", type=int, help="worker processes to start (default 1)")
    p.add_argument("--name", help="worker name (shown in `nbflow tasks`)")
    p.add_argument("--resources", action="append", metavar="NAME=AMOUNT", help="extra resources, e.g. GPU=1 (repeatable)")
    p.set_defaults(func=cmd_worker)

    db = sub.add_parser("db", help="manage the metadata database").add_subparsers(dest="db_command", metavar="SUBCOMMAND")
    db.required = True
    p = db.add_parser("upgrade", help="create or migrate the database to the newest schema")
    p.set_defaults(func=cmd_db_upgrade)
    scheduling.register_db(db)
    scheduling.register(sub, executor_args)
    return parser


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Entry point of the ``nbflow`` console script; returns the exit code."""
    out = out or sys.stdout
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
    except KeyboardInterrupt:
        sys.stderr.write("\ninterrupted: running tasks were cancelled\n")
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
