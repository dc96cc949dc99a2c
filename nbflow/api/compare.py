"""Comparing runs: their parameters and metrics side by side (``nbflow compare``, the REST
``compare`` route, the end of ``nbflow run --sweep``), as a table, CSV, JSON or a chart.

A run's metrics are those of the final try of each task (``task.metric``; a mapped instance's
``task[i].metric``); a task an incremental run reused shows those of the attempt it reused.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from typing import Any

from nbflow.api.runs import open_store, run_metrics
from nbflow.exceptions import InputError, NbflowError, RunNotFoundError
from nbflow.store import Store

#: the fixed columns of a comparison, before its parameters and metrics
FIXED = ("run", "state")


def compare(
    runs: Sequence[int] | None = None,
    *,
    sweep: int | None = None,
    pipeline: str | None = None,
    last: int | None = None,
    task: str | None = None,
    store: Store | None = None,
) -> dict[str, Any]:
    """The parameters and metrics of some runs: the ``runs`` given, a ``sweep``'s runs, or the
    ``last`` N runs of ``pipeline`` (exactly one of the three). With ``task`` (a mapped task),
    one row per instance of it in those runs instead: its mapped values join the parameters,
    its metrics are the columns, and each row has ``task_id`` and ``map_index`` too.

    Returns plain data: ``{"sweep": {"id", "pipeline", "grid"} | None, "params": [names],
    "metrics": ["task.metric", ...], "runs": [{"run_id", "pipeline", "state", "sweep_id",
    "params": {...}, "metrics": {...}}]}`` (runs by id; columns in order of first appearance,
    a sweep's swept parameters first).
    """
    store = store or open_store()
    chosen = sum(x is not None and x != [] for x in (runs, sweep, pipeline))
    if chosen != 1:
        raise InputError(
            "runs",
            "compare needs exactly one of: run ids, a sweep, a pipeline",
            hint="e.g. nbflow compare 3 4 5, nbflow compare --sweep 2, nbflow compare --pipeline ml_chain --last 5",
        )
    sweep_row: dict[str, Any] | None = None
    if sweep is not None:
        row = store.get_sweep(sweep)
        if row is None:
            raise RunNotFoundError(f"sweep {sweep} does not exist", hint="sweep ids are printed by nbflow run --sweep")
        sweep_row = {"id": row["id"], "pipeline": row["pipeline"], "grid": dict(row["grid"])}
        ids = store.sweep_run_ids(sweep)
    elif pipeline is not None:
        if last is not None and last < 1:
            raise InputError("last", f"--last {last}: give a number of runs of at least 1")
        ids = store.last_run_ids(pipeline, last or 10)
        if not ids:
            raise RunNotFoundError(f"pipeline '{pipeline}' has no runs", hint="see nbflow runs")
    else:
        ids = list(dict.fromkeys(runs or []))
    rows = {r["id"]: r for r in store.runs_by_id(ids)}
    missing = [i for i in ids if i not in rows]
    if missing:
        raise RunNotFoundError(f"no run {', '.join(map(str, missing))}", hint="run ids are listed by nbflow runs")
    params: dict[str, None] = dict.fromkeys(sweep_row["grid"] if sweep_row else [])
    out = []
    values, metrics = run_metrics(ids, store=store)
    for run_id in sorted(ids):
        run = rows[run_id]
        run_params = dict(run["params"] or {})
        for name in run_params:
            params.setdefault(name)
        out.append(
            {
                "run_id": run_id,
                "pipeline": run["pipeline"],
                "state": run["state"],
                "sweep_id": run["sweep_id"],
                "params": run_params,
                "metrics": values[run_id],
            }
        )
    data = {"sweep": sweep_row, "params": list(params), "metrics": metrics, "runs": out}
    return _instances(data, task, store) if task is not None else data


def _instances(data: dict[str, Any], task: str, store: Store) -> dict[str, Any]:
    """``data`` (a comparison of runs) as one row per instance of mapped task ``task``."""
    rows: list[dict[str, Any]] = []
    params: dict[str, None] = {}
    metrics: dict[str, None] = {}
    run_ids = [run["run_id"] for run in data["runs"]]
    by_task: dict[tuple[int, str], dict[str, Any]] = {}
    for m in store.final_metrics(run_ids):
        column = f"{task}.{m['name']}"
        by_task.setdefault((m["run_id"], m["task_id"]), {})[column] = m["value"]
    for run in data["runs"]:
        for ti in store.task_instances(run["run_id"]):
            if ti["map_parent"] != task:
                continue
            values = dict(ti["map_values"] or {})
            params.update(dict.fromkeys(values))
            got = by_task.get((run["run_id"], ti["task_id"]), {})
            metrics.update(dict.fromkeys(got))
            row = {**run, "task_id": ti["task_id"], "map_index": ti["map_index"], "state": ti["state"]}
            rows.append({**row, "params": {**values, **run["params"]}, "metrics": got})
    if not rows:
        raise InputError(
            "task",
            f"task '{task}' has no mapped instances in run(s) {', '.join(map(str, run_ids))}",
            hint="give a mapped task (one made with .expand, expand= or .expand_inputs) that ran",
        )
    params.update(dict.fromkeys(data["params"]))
    return {**data, "task": task, "params": list(params), "metrics": list(metrics), "runs": rows}


def compare_columns(data: dict[str, Any]) -> list[str]:
    """The columns of a comparison's table: run (and a mapped task's instance), state, each
    parameter, each metric."""
    fixed = ("run", "task", "state") if data.get("task") else FIXED
    return [*fixed, *data["params"], *data["metrics"]]


def compare_rows(data: dict[str, Any]) -> list[list[Any]]:
    """One row of values per run, in :func:`compare_columns` order (None where a run has none)."""
    return [
        [
            run["run_id"],
            *((run["task_id"],) if data.get("task") else ()),
            run["state"],
            *(run["params"].get(p) for p in data["params"]),
            *(run["metrics"].get(m) for m in data["metrics"]),
        ]
        for run in data["runs"]
    ]


def format_value(value: Any) -> str:
    """A cell as text: JSON's spelling for bools, lists and dicts; numbers as Python prints them."""
    if value is None:
        return ""
    if isinstance(value, bool | list | dict):
        return json.dumps(value)
    return str(value)


def compare_csv(data: dict[str, Any]) -> str:
    """The comparison as CSV (a header row, then one row per run; empty where a run has no value)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(compare_columns(data))
    for row in compare_rows(data):
        writer.writerow([format_value(v) for v in row])
    return buf.getvalue()


def column_values(data: dict[str, Any], column: str) -> list[Any]:
    """The values of one column of a comparison (by run), or InputError naming the columns."""
    columns = compare_columns(data)
    if column not in columns:
        raise InputError(
            "plot",
            f"no column {column!r} in this comparison",
            hint=f"columns: {', '.join(columns)}",
        )
    index = columns.index(column)
    return [row[index] for row in compare_rows(data)]


def log_scale(xs: Sequence[Any]) -> bool:
    """Whether x values call for a log axis: all positive numbers spanning two decades or more."""
    nums = [x for x in xs if isinstance(x, int | float) and not isinstance(x, bool)]
    if len(nums) < 2 or len(nums) != len(xs) or min(nums) <= 0:
        return False
    return math.log10(max(nums) / min(nums)) >= 2


def plot_compare(data: dict[str, Any], x: str, y: Sequence[str], path: str) -> dict[str, Any]:
    """Draw ``y`` (metric or parameter columns) against ``x`` for the compared runs into
    ``path`` (PNG, SVG or PDF by its suffix) with matplotlib; a log x axis when the x values
    are positive and span two decades or more. Returns ``{"path", "log_x", "points"}``."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise NbflowError(
            "nbflow compare --plot needs matplotlib, which is not installed",
            hint='pip install "nbflow[plot]" (or pip install matplotlib)',
        ) from exc
    if not y:
        raise InputError("plot", "--plot needs y=COLUMN", hint="e.g. --plot x=C y=train.accuracy")
    xs = column_values(data, x)
    series: dict[str, list[Any]] = {}
    for name in y:
        values = column_values(data, name)
        for label, keep in _groups(data, x).items():  # a line per combination of the other varying params
            series[f"{name} ({label})" if label else name] = [v if k else None for v, k in zip(values, keep)]
    numeric_x = all(isinstance(v, int | float) and not isinstance(v, bool) for v in xs)
    log_x = numeric_x and log_scale(xs)
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    points = 0
    try:
        for name, ys in series.items():
            pairs = [(a, b) for a, b in zip(xs, ys) if a is not None and isinstance(b, int | float) and b is not None]
            if numeric_x:
                pairs.sort(key=lambda p: p[0])
            if not pairs:
                continue
            px = [p[0] if numeric_x else format_value(p[0]) for p in pairs]
            ax.plot(px, [float(p[1]) for p in pairs], marker="o", label=name)
            points += len(pairs)
        if points == 0:
            raise InputError(
                "plot",
                f"no run has numbers for {', '.join(y)} against {x}",
                hint="see the table: nbflow compare without --plot",
            )
        if log_x:
            ax.set_xscale("log")
        ax.set_xlabel(x)
        ax.set_ylabel(y[0] if len(y) == 1 else "value")
        if len(series) > 1:
            ax.legend()
        ax.grid(True, alpha=0.3)
        title = f"sweep {data['sweep']['id']}" if data.get("sweep") else f"{len(data['runs'])} runs"
        ax.set_title(title)
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)
    return {"path": path, "log_x": log_x, "points": points}


def _groups(data: dict[str, Any], x: str) -> dict[str, list[bool]]:
    """Runs grouped by the parameters other than ``x`` whose values differ between them:
    ``{"penalty=l1": [True, False, ...], ...}`` (one group ``""`` when none differ)."""
    others = [
        p
        for p in data["params"]
        if p != x and len({json.dumps(r["params"].get(p), sort_keys=True) for r in data["runs"]}) > 1
    ]
    groups: dict[str, list[bool]] = {}
    keys = [", ".join(f"{p}={format_value(r['params'].get(p))}" for p in others) for r in data["runs"]]
    for key in dict.fromkeys(keys):
        groups[key] = [k == key for k in keys]
    return groups
