"""``python -m benchmarks [--quick] [--only NAME] [--json PATH] [--no-fail]``: print the table.

Exits 1 when a target is missed (or a benchmark could not run), 0 otherwise; ``--no-fail``
always exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import textwrap
import time
import traceback
from typing import Any


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "s":
        return f"{value * 1000:.3f} ms" if value < 0.1 else f"{value:.3f} s"
    if unit == "x":
        return f"{value:.2f}x"
    return f"{value:.2f} {unit}"


def _result(row: Any) -> str:
    if row.result is None:
        return "-"
    if row.result_unit == "x":
        return f"{row.result:.2f}x"
    if row.result_unit in ("ms/task", "ms/run"):  # an overhead on top of the baseline
        return f"{row.result:+.2f} {row.result_unit}"
    return f"{row.result:.2f} {row.result_unit}"


def render(rows: list[Any], *, wrap: int = 58) -> str:
    """The table, then one line of notes per row that has some."""
    header = ["benchmark", "compares", "nbflow", "baseline", "ratio / overhead", "target", "verdict"]
    lines: list[list[str]] = []
    for row in rows:
        compares = textwrap.wrap(row.compares, wrap) or [""]
        first = [
            row.name,
            compares[0],
            _fmt(row.nbflow, row.unit),
            _fmt(row.baseline, row.unit),
            _result(row),
            row.target or "-",
            row.verdict,
        ]
        lines.append(first)
        lines.extend(["", more, "", "", "", "", ""] for more in compares[1:])
    widths = [max(len(str(c)) for c in col) for col in zip(header, *lines)]
    right = {2, 3, 4}

    def fmt_line(cells: list[str]) -> str:
        return " | ".join(
            c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))
        ).rstrip()

    out = [fmt_line(header), "-+-".join("-" * w for w in widths)]
    out += [fmt_line(cells) for cells in lines]
    notes = [f"  {row.name}: {row.note}" for row in rows if row.note]
    if notes:
        out += ["", "Notes:", *notes]
    return "\n".join(out)


def _group_of(row_name: str, groups: Any) -> str | None:
    """The group that produces a row: ``wide-local`` -> ``wide``, ``flat-wide-100`` -> ``flatness``."""
    if row_name.startswith("flat"):
        return "flatness"
    return next((g for g in groups if row_name.startswith(g + "-")), None)


def _use_workdir(path: str) -> str:
    """Make ``path`` (a fresh subfolder of it) the temporary folder of this process and its children."""
    os.makedirs(path, exist_ok=True)
    workdir = tempfile.mkdtemp(prefix="run-", dir=os.path.abspath(path))
    tempfile.tempdir = os.environ["TMPDIR"] = workdir
    return workdir


def main(argv: list[str] | None = None) -> int:
    from benchmarks.core import GROUPS, REFERENCES, Config, Row, warm_up

    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Run nbflow's benchmarks against baselines measured in the same run; print one table.",
    )
    parser.add_argument("--quick", action="store_true", help="small sizes for a smoke run")
    parser.add_argument(
        "--only",
        action="append",
        metavar="NAME",
        help=f"run only this group or row (repeatable, or comma-separated): {', '.join(GROUPS)} or a row name",
    )
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--no-fail", action="store_true", help="exit 0 even when a target is missed")
    parser.add_argument(
        "--budget",
        type=float,
        metavar="SECONDS",
        help="seconds a flatness size may take before it is skipped (default 900)",
    )
    parser.add_argument(
        "--workdir",
        metavar="DIR",
        default=os.environ.get("NBFLOW_BENCH_DIR", ".nbflow-bench"),
        help="temporary folder of both sides' homes, databases and outputs (default: ./.nbflow-bench, beside "
        "nbflow's default home ./.nbflow; on some machines /tmp is several times slower at creating folders, "
        "which every attempt does)",
    )
    parser.add_argument(
        "--notebook-repeat",
        type=int,
        metavar="N",
        help="runs of each side of the notebook comparison (default 3 for notebook, 5 for dask-notebook)",
    )
    args = parser.parse_args(argv)

    cfg = Config.make(args.quick, args.budget)
    if args.notebook_repeat:
        cfg.notebook_repeat = cfg.dask_notebook_repeat = args.notebook_repeat
    wanted = [w for item in (args.only or []) for w in item.split(",") if w]
    groups = list(GROUPS)
    if wanted:
        groups = []
        for name in wanted:
            group = name if name in GROUPS else _group_of(name, GROUPS)
            if group is None:
                parser.error(f"unknown benchmark {name!r}; groups: {', '.join(GROUPS)} (or a row name)")
            if group not in groups:
                groups.append(group)

    workdir = _use_workdir(args.workdir)
    started = time.perf_counter()
    print(f"nbflow benchmarks ({'quick' if cfg.quick else 'full'}): {', '.join(groups)}; in {workdir}", file=sys.stderr)
    rows: list[Row] = []
    warmed = False
    for group in groups:
        t0 = time.perf_counter()
        print(f"  running {group} ...", file=sys.stderr, flush=True)
        try:
            if not warmed and group != "fixed-cost":
                warm_up()
                warmed = True
            got = GROUPS[group](cfg)
        except Exception as exc:  # noqa: BLE001 - reported as an ERROR row, exit 1
            traceback.print_exc()
            got = [
                Row(
                    name=group,
                    group=group,
                    compares="(the benchmark could not run)",
                    nbflow=None,
                    baseline=None,
                    unit="s",
                    result=None,
                    result_unit="",
                    verdict="ERROR",
                    note=f"{type(exc).__name__}: {exc}",
                )
            ]
        if wanted:
            got = [r for r in got if r.group in wanted or r.name in wanted or r.verdict == "ERROR"]
        rows.extend(got)
        print(f"  {group} done in {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)

    print()
    print(render(rows))
    print()
    print("\n".join(REFERENCES))
    failed = [r.name for r in rows if r.verdict in ("FAIL", "ERROR")]
    print()
    print(
        f"{len(rows)} rows, {len(failed)} missed: {', '.join(failed) or 'none'} "
        f"({time.perf_counter() - started:.0f} s; {os.cpu_count()} CPUs, Python {platform.python_version()})"
    )

    shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        payload = {
            "workdir": workdir,
            "quick": cfg.quick,
            "config": {k: v for k, v in vars(cfg).items()},
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "seconds": time.perf_counter() - started,
            "rows": [r.as_dict() for r in rows],
            "failed": failed,
        }
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(payload, fh, indent=2, default=str)
    return 0 if args.no_fail or not failed else 1


if __name__ == "__main__":
    sys.exit(main())
