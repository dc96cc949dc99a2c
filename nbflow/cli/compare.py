"""``nbflow compare`` (params and metrics of runs side by side: table, CSV, JSON, chart) and
``nbflow run --sweep`` (one run per point of a grid, driven together, ending with the table)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from collections.abc import Callable
from typing import Any, TextIO

from nbflow.cli.commands import Progress, _params, _table, cmd_run
from nbflow.exceptions import InputError
from nbflow.render import fmt_duration


def register(sub: Any) -> None:
    """Add ``compare`` to the sub-commands."""
    p = sub.add_parser(
        "compare",
        help="params and metrics of runs side by side",
        description="One row per run: its state, parameters and the metrics of the final try of each task "
        "(task.metric; recorded with nbflow.metric or scalars given to nbflow.save).",
        epilog="examples:\n  nbflow compare 3 4 5\n  nbflow compare --sweep 2 --csv\n"
        "  nbflow compare --pipeline ml_chain --last 5 --json\n"
        "  nbflow compare --sweep 2 --plot x=C y=train.accuracy -o sweep.png\n"
        "  nbflow compare 7 --task train --plot x=C y=train.accuracy    (a mapped task's instances)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("runs", nargs="*", type=int, metavar="RUN", help="run ids")
    p.add_argument("--sweep", type=int, metavar="ID", help="the runs of this sweep (nbflow run --sweep prints its id)")
    p.add_argument("--pipeline", metavar="NAME", help="the newest runs of this pipeline (see --last)")
    p.add_argument("--last", "-n", type=int, metavar="N", help="with --pipeline: how many runs (default 10)")
    p.add_argument(
        "--task",
        metavar="MAPPED",
        help="one row per instance of this mapped task (its mapped values are parameters, its metrics the columns)",
    )
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--csv", action="store_true", help="print CSV")
    fmt.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument(
        "--plot",
        nargs="+",
        metavar="x=COL|y=COL",
        help="draw y against x with matplotlib (y=a,b for several); log x when x spans two decades or more",
    )
    p.add_argument(
        "-o", "--output", default="compare.png", help="the chart's file (.png, .svg, .pdf; default compare.png)"
    )
    p.set_defaults(func=cmd_compare)


def run_or_sweep(args: argparse.Namespace, out: TextIO) -> int:
    """``nbflow run``: a sweep when ``--sweep`` is given, else one run."""
    if getattr(args, "sweep", None):
        return cmd_sweep(args, out)
    return cmd_run(args, out)


def print_compare(data: dict[str, Any], out: TextIO) -> None:
    """The comparison as a text table."""
    from nbflow import api

    rows = [[None if v is None else _readable(v) for v in row] for row in api.compare_rows(data)]
    _table(rows, api.compare_columns(data), out)


def _readable(value: Any) -> str:
    """A table cell: a float with many digits to 6 significant ones (``--csv``/``--json`` keep all)."""
    from nbflow import api

    if isinstance(value, float) and len(repr(value)) > 8:
        return f"{value:.6g}"
    return api.format_value(value)


def _plot_spec(items: list[str]) -> tuple[str, list[str]]:
    spec = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in ("x", "y") or not value:
            raise InputError(
                "plot", f"--plot {item!r}: give x=COLUMN and y=COLUMN", hint="e.g. --plot x=C y=train.accuracy"
            )
        spec[key] = value
    if "x" not in spec or "y" not in spec:
        raise InputError("plot", "--plot needs both x=COLUMN and y=COLUMN", hint="e.g. --plot x=C y=train.accuracy")
    return spec["x"], [y for y in spec["y"].split(",") if y]


def cmd_compare(args: argparse.Namespace, out: TextIO) -> int:
    from nbflow import api

    data = api.compare(args.runs or None, sweep=args.sweep, pipeline=args.pipeline, last=args.last, task=args.task)
    if args.plot:
        x, ys = _plot_spec(args.plot)
        drawn = api.plot_compare(data, x, ys, args.output)
        out.write(f"wrote {drawn['path']}: {', '.join(ys)} against {x}{' (log x)' if drawn['log_x'] else ''}\n")
        return 0
    if args.csv:
        out.write(api.compare_csv(data))
    elif args.json:
        out.write(json.dumps(data, indent=2) + "\n")
    else:
        print_compare(data, out)
    return 0


class SweepProgress(Progress):
    """:class:`Progress` with each line naming its run's point."""

    def __init__(self, out: TextIO, verbose: bool, label: Callable[[int], str]):
        super().__init__(out, verbose)
        self.label = label

    def __call__(self, ev: Any) -> None:
        super().__call__(dataclasses.replace(ev, task_id=f"{self.label(ev.run_id)} {ev.task_id}"))


def cmd_sweep(args: argparse.Namespace, out: TextIO) -> int:
    from nbflow import api
    from nbflow.loader import load_pipeline

    if args.dry_run:
        raise InputError("sweep", "--dry-run cannot be combined with --sweep", hint="dry-run one point with -p")
    pipeline = load_pipeline(args.path, args.pipeline)
    store = api.open_store()
    executor = args.executor or store.settings.executor
    grid = api.parse_sweep_args(args.sweep)
    sweep_id, run_ids = api.create_sweep(
        pipeline,
        grid,
        params=_params(args.param),
        only=args.only,
        trigger="cli",
        executor=executor,
        incremental=args.incremental,
        force=args.force,
        allow_stale_inputs=args.allow_stale_inputs,
        store=store,
    )
    labels = {
        r: f"run {r} ({', '.join(f'{k}={api.format_value(v)}' for k, v in _point(store, r, grid).items())})"
        for r in run_ids
    }
    progress = SweepProgress(out, args.verbose, lambda r: labels.get(r, f"run {r}"))
    progress.total = sum(len(api.run_details(r, store=store)["tasks"]) for r in run_ids)
    started = time.time()

    def on_start(ex: Any) -> None:
        out.write(
            f"nbflow: sweep {sweep_id} of {pipeline.name}: {len(run_ids)} runs "
            f"(runs {run_ids[0]}-{run_ids[-1]}, {' x '.join(f'{k}: {len(v)}' for k, v in grid.items())}) "
            f"on {ex.describe()}, at most {pipeline.max_active_runs} at a time\n"
        )
        out.write(f"  if this process dies: {ex.guarantee}\n")
        out.flush()

    def on_end(run_id: int, state: Any) -> None:
        out.write(f"  {labels.get(run_id, run_id)}: {state.value}\n")
        out.flush()

    results = api.drive_runs(
        pipeline,
        run_ids,
        executor=executor,
        parallelism=args.parallelism,
        listeners=[progress],
        store=store,
        on_start=on_start,
        on_end=on_end,
    )
    out.write("\n")
    print_compare(api.compare(sweep=sweep_id, store=store), out)
    good = sum(r.ok for r in results)
    out.write(
        f"\nsweep {sweep_id} of {pipeline.name}: {good}/{len(results)} runs succeeded in "
        f"{fmt_duration(time.time() - started)}\n"
    )
    out.write(f"  compare again: nbflow compare --sweep {sweep_id} [--csv | --json | --plot x=PARAM y=TASK.METRIC]\n")
    for r in results:
        if not r.ok:
            out.write(f"  run {r.run_id} {r.state.value}: nbflow tasks {r.run_id}; re-run: nbflow rerun {r.run_id}\n")
    return 0 if good == len(results) else 1


def _point(store: Any, run_id: int, grid: dict[str, Any]) -> dict[str, Any]:
    params = store.get_run(run_id)["params"] or {}
    return {k: params.get(k) for k in grid}
