"""Sub-commands for scheduled operation: scheduler, trigger, backfill, pause, pools, dags, db clean."""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO


def cmd_scheduler(args: argparse.Namespace, out: TextIO) -> int:
    from nbflow import api

    def started(s: api.SchedulerStarted) -> None:
        out.write(
            f"nbflow scheduler (job {s.job_id}): folder {s.dags_folder}, executor {s.executor}, database {s.database}\n"
        )
        out.flush()

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    api.serve_scheduler(
        dags_folder=args.dags_folder,
        executor=args.executor,
        parallelism=args.parallelism,
        max_loops=args.loops,
        on_start=started,
    )
    return 0


def cmd_trigger(args: argparse.Namespace, out: TextIO) -> int:
    from nbflow import api
    from nbflow.cli.commands import _params

    run_id = api.trigger(args.name, params=_params(args.param), logical_date=args.logical_date)
    how = (
        "the scheduler will run it"
        if api.scheduler_alive()
        else "no scheduler is running, so it runs now in the background"
    )
    out.write(f"queued run {run_id} of {args.name}; {how} (follow it: nbflow tasks {run_id})\n")
    return 0


def _is_path(name: str) -> bool:
    """Whether a NAME argument is a pipeline file (a ``.py`` file or a notebook) rather than a name."""
    return name.endswith((".py", ".ipynb")) or "/" in name or os.path.isfile(name)


def cmd_backfill(args: argparse.Namespace, out: TextIO) -> int:
    from nbflow import api

    if _is_path(args.name):  # a file not run or scheduled yet is registered first
        args.name = api.register_file(Path(args.name), args.pipeline)
    created, existing = api.backfill(args.name, args.start, args.end)
    out.write(f"backfill of {args.name}: {len(created)} run(s) queued, {existing} existed already\n")
    if args.run:
        failed = 0
        for run_id in created:
            result = api.drive_existing(run_id, executor=args.executor)
            out.write(f"  run {run_id}: {result.state.value}\n")
            failed += not result.ok
        return 1 if failed else 0
    if created and not api.scheduler_alive():
        out.write("no scheduler is running: start `nbflow scheduler`, or pass --run to run them here\n")
    return 0


def cmd_pause(args: argparse.Namespace, out: TextIO) -> int:
    from nbflow import api

    api.set_paused(args.name, args.paused)
    out.write(f"{args.name} {'paused' if args.paused else 'unpaused'}\n")
    return 0


def cmd_pools(args: argparse.Namespace, out: TextIO) -> int:
    from nbflow import api
    from nbflow.cli.commands import _table

    if args.pools_command == "set":
        api.set_pool(args.name, args.slots, args.description or "")
        out.write(f"pool {args.name}: {args.slots} slot(s)\n")
    elif args.pools_command == "delete":
        api.delete_pool(args.name)
        out.write(f"pool {args.name} deleted\n")
    else:
        rows = [(p["name"], p["slots"], p["used"], p["description"]) for p in api.pools()]
        if not rows:
            out.write("no pools: create one with `nbflow pools set NAME SLOTS`\n")
        else:
            _table(rows, ("pool", "slots", "in use", "description"), out)
    return 0


def cmd_dags(args: argparse.Namespace, out: TextIO) -> int:
    from nbflow import api
    from nbflow.cli.commands import _fmt_time, _table

    if args.dags_command == "register":
        name = api.register_file(Path(args.path), args.pipeline)
        out.write(f"registered pipeline {name} from {args.path}: trigger, backfill or schedule it by name\n")
        return 0
    if args.dags_command == "errors":
        errors = api.import_errors()
        if not errors:
            out.write("no import errors\n")
        for e in errors:
            out.write(f"{e['error']}\n")
        return 1 if errors else 0
    rows = []
    for p in api.list_pipelines():
        last = p["last_run"]
        state = (
            "broken"
            if p["import_error"]
            else ("paused" if p["is_paused"] else ("active" if p["is_active"] else "removed"))
        )
        rows.append(
            (
                p["name"],
                state,
                p["schedule"] or (f"assets: {', '.join(p['schedule_assets'])}" if p["schedule_assets"] else "-"),
                p["tasks"],
                f"{last['id']} {last['state']}" if last else "-",
                _fmt_time(p["next_logical_date"]),
                p["file"] or "-",
            )
        )
    _table(rows, ("pipeline", "status", "schedule", "tasks", "last run", "next logical date", "file"), out)
    return 0


def cmd_db_clean(args: argparse.Namespace, out: TextIO) -> int:
    from nbflow import api

    ids = api.clean(api.parse_age(args.older_than), dry_run=args.dry_run)
    verb = "would delete" if args.dry_run else "deleted"
    out.write(f"{verb} {len(ids)} finished run(s) older than {args.older_than} with their logs and artifacts\n")
    return 0


def cmd_drive(args: argparse.Namespace, out: TextIO) -> int:
    from nbflow import api

    if args.run is None:
        ended = api.drive_queued(executor=args.executor, parallelism=args.parallelism)
        if not ended:
            out.write("no queued runs (or another background driver serves them)\n")
        for run_id, state in sorted(ended.items()):
            out.write(f"run {run_id}: {state.value}\n")
        return 0
    result = api.drive_existing(args.run, executor=args.executor)
    out.write(f"run {args.run}: {result.state.value}\n")
    return 0 if result.ok else 1


def register(sub: Any, executor_args: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add the scheduling sub-commands to ``sub``."""
    p = sub.add_parser(
        "scheduler",
        help="run the scheduler: keep the DAG folder's pipelines on schedule",
        description="Re-parse the DAG folder, create runs on cron ticks (with catchup), drive queued and orphaned runs, "
        "heartbeat. Several schedulers may share a PostgreSQL database; SQLite allows one.",
    )
    p.add_argument("--dags-folder", help="folder of pipeline files (default NBFLOW_DAGS_FOLDER or ./pipelines)")
    p.add_argument("--loops", type=int, help=argparse.SUPPRESS)
    executor_args(p)
    p.set_defaults(func=cmd_scheduler)

    p = sub.add_parser(
        "trigger",
        help="queue a run of a known pipeline",
        description="Queue a manual run; the scheduler runs it, or a background process when no scheduler is alive.",
    )
    p.add_argument("name", help="pipeline name (see `nbflow dags list`)")
    p.add_argument(
        "-p", "--param", action="append", default=[], metavar="KEY=VALUE", help="override a pipeline parameter"
    )
    p.add_argument("--logical-date", help="ISO date of the run (default now); one run per logical date")
    p.set_defaults(func=cmd_trigger)

    p = sub.add_parser(
        "backfill",
        help="queue the scheduled runs of a date range",
        description="Create the runs whose logical dates fall in [START, END] (existing ones are kept).",
    )
    p.add_argument("name", help="pipeline name, or its file (registered first, as `nbflow dags register` does)")
    p.add_argument("--pipeline", help="which pipeline, when the file defines several")
    p.add_argument("--start", required=True, help="first logical date, e.g. 2026-01-01")
    p.add_argument("--end", required=True, help="last logical date, e.g. 2026-01-31")
    p.add_argument(
        "--run", action="store_true", help="run them here, one after another, instead of leaving them to the scheduler"
    )
    executor_args(p)
    p.set_defaults(func=cmd_backfill)

    for verb, paused in (("pause", True), ("unpause", False)):
        p = sub.add_parser(verb, help=f"{verb} a pipeline's schedule")
        p.add_argument("name", help="pipeline name")
        p.set_defaults(func=cmd_pause, paused=paused)

    pools = sub.add_parser("pools", help="named pools of slots that limit concurrent tasks").add_subparsers(
        dest="pools_command", metavar="SUBCOMMAND"
    )
    pools.required = True
    p = pools.add_parser("set", help="create or resize a pool")
    p.add_argument("name")
    p.add_argument("slots", type=int)
    p.add_argument("--description", default="")
    p.set_defaults(func=cmd_pools)
    p = pools.add_parser("list", help="pools with slots in use")
    p.set_defaults(func=cmd_pools)
    p = pools.add_parser("delete", help="remove a pool")
    p.add_argument("name")
    p.set_defaults(func=cmd_pools)

    dags = sub.add_parser("dags", help="pipelines known to the scheduler").add_subparsers(
        dest="dags_command", metavar="SUBCOMMAND"
    )
    dags.required = True
    dags.add_parser("list", help="pipelines with status, schedule and last run").set_defaults(func=cmd_dags)
    dags.add_parser("errors", help="files of the DAG folder that failed to load (file:line: message)").set_defaults(
        func=cmd_dags
    )
    p = dags.add_parser(
        "register",
        help="record a pipeline file's pipeline(s) so they can be triggered and backfilled by name",
        description="Load PATH and record its pipeline as the scheduler would (without running anything).",
    )
    p.add_argument("path", help="a .py pipeline file, or a notebook of %%%%nbflow task cells")
    p.add_argument("--pipeline", help="which pipeline, when the file defines several")
    p.set_defaults(func=cmd_dags)

    p = sub.add_parser(
        "drive",
        help="drive a queued run (or every queued run) in this process",
        description="Drive run RUN here until it ends; without RUN, drive every run that no live scheduler or driver "
        "drives until none has come for a few seconds (what a trigger starts when no scheduler is alive; at most "
        "one such driver per database).",
    )
    p.add_argument("run", type=int, nargs="?", help="run id (default: every queued run)")
    executor_args(p)
    p.set_defaults(func=cmd_drive)


def register_db(db: Any) -> None:
    """Add `nbflow db clean`."""
    p = db.add_parser("clean", help="delete old finished runs with their logs and artifacts")
    p.add_argument("--older-than", required=True, metavar="AGE", help="e.g. 30d, 12h")
    p.add_argument("--dry-run", action="store_true", help="only count them")
    p.set_defaults(func=cmd_db_clean)
