"""The run-and-read commands of ``nbflow``: run, rerun, dag show, runs, tasks, logs, cancel,
worker, db upgrade (the parser and ``main`` are in :mod:`nbflow.cli`)."""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from nbflow.cli.dryrun import dry_run
from nbflow.exceptions import NbflowError
from nbflow.render import fmt_duration


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
        mapped = getattr(ev, "mapped", None)
        if mapped is not None and self.total:  # a mapped task's instances count as tasks of the run
            self.total += mapped
        symbol = self.SYMBOLS.get(state, ("?", "?"))[0 if self.unicode else 1]
        why = f": {ev.why}" if getattr(ev, "why", None) and ev.try_number <= 1 else ""
        detail = {
            "running": f"started (try {ev.try_number}{' on ' + ev.hostname if ev.hostname and self.verbose else ''}){why}",
            "cached": ev.why or "cached",
            "success": f"done in {fmt_duration(ev.duration)}",
            "up_for_retry": f"try {ev.try_number} failed, will retry: {ev.message}",
            "failed": f"FAILED (try {ev.try_number}): {ev.message}" if ev.try_number else f"FAILED: {ev.message}",
        }.get(state, f"{state}{': ' + ev.message if ev.message else ''}")
        if mapped is not None:
            detail = ev.message
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
    out.write(
        f"\nrun {result.run_id} of {result.pipeline}: {result.state.value} in {fmt_duration(time.time() - started)}\n"
    )
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
        pipeline,
        params=_params(args.param),
        only=args.only,
        trigger="cli",
        executor=executor,
        incremental=args.incremental,
        force=args.force,
        allow_stale_inputs=args.allow_stale_inputs,
        store=store,
    )
    details = api.run_details(run_id, store=store)
    progress.total = len(details["tasks"])
    for value in api.upstream_values(pipeline, args.only or (), details["run"]["params"], store=store):
        out.write(f"nbflow: upstream value of {value.describe()}\n")
    started = time.time()

    def on_start(ex: Any) -> None:
        out.write(f"nbflow: run {run_id} of {pipeline.name} ({_n_tasks(progress.total)}) on {ex.describe()}\n")
        out.write(f"  if this process dies: {ex.guarantee}\n")
        out.flush()

    result = api.drive_run(
        pipeline,
        run_id,
        executor=executor,
        parallelism=args.parallelism,
        listeners=[progress],
        store=store,
        on_start=on_start,
    )
    _summary(result, started, out)
    return 0 if result.ok else 1


def cmd_rerun(args: argparse.Namespace, out: TextIO) -> int:
    from nbflow import api

    if not args.task and not api.clear_run(args.run, dry_run=True):
        out.write(f"nothing to re-run: every task of run {args.run} succeeded (re-run one anyway: --task TASK)\n")
        return 0
    progress = Progress(out, args.verbose)
    started = time.time()
    out.write(f"nbflow: re-running run {args.run}\n")
    result = api.rerun(
        args.run, tasks=args.task or None, executor=args.executor, parallelism=args.parallelism, listeners=[progress]
    )
    _summary(result, started, out)
    return 0 if result.ok else 1


def cmd_dag_show(args: argparse.Namespace, out: TextIO) -> int:
    from nbflow import api
    from nbflow.loader import load_pipeline

    pipeline = load_pipeline(args.path, args.pipeline)
    if not args.output:
        definition = pipeline.definition()
        assets = ", ".join(a.name for a in pipeline.assets)
        schedule = pipeline.schedule or (f"when updated: {assets}" if assets else "none")
        out.write(f"pipeline {pipeline.name} ({_n_tasks(len(definition['tasks']))}, schedule {schedule})\n")
        for t in definition["tasks"]:
            group = f"  in group {t['group']}" if t.get("group") else ""
            role = "  (setup)" if t.get("setup") else "  (teardown)" if t.get("teardown") else ""
            after = f"  after {', '.join(t['upstream'])}" if t["upstream"] else ""
            mapped = f"  mapped over {', '.join(t['mapped'])}" if t.get("mapped") else ""
            produces = f"  produces {', '.join(a['name'] for a in t['produces'])}" if t.get("produces") else ""
            out.write(f"  {t['id']:<20} {t['label']}{group}{role}{after}{mapped}{produces}\n")
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
        rows.append(
            (
                r["id"],
                r["pipeline"],
                r["state"] + (", SLA missed" if r.get("sla_missed_at") else ""),
                r["trigger"],
                _fmt_time(r["logical_date"]),
                _fmt_time(r["created_at"]),
                fmt_duration(took),
                counts,
            )
        )
    _table(rows, ("run", "pipeline", "state", "trigger", "logical date", "created", "duration", "tasks"), out)
    return 0


def _task_cell(t: Any) -> str:
    """A task instance as ``nbflow tasks`` names it: a mapped task's instance with its values."""
    if not t["map_values"]:
        return str(t["task_id"])
    return f"{t['task_id']} ({', '.join(f'{k}={v}' for k, v in t['map_values'].items())})"


def cmd_tasks(args: argparse.Namespace, out: TextIO) -> int:
    from nbflow import api

    details = api.run_details(args.run)
    run = details["run"]
    missed = f", missed its SLA at {_fmt_time(run['sla_missed_at'])}" if run.get("sla_missed_at") else ""
    out.write(f"run {run['id']} of {run['pipeline']}: {run['state']}{missed} (params {run['params']})\n\n")
    arts: dict[str, list[str]] = {}
    for a in details["artifacts"]:
        arts.setdefault(a["task_id"], []).append(a["name"])
    rows: list[tuple[Any, ...]] = [
        (
            _task_cell(t),
            t["state"],
            f"{t['map_count']} mapped" if t["map_count"] is not None else f"{t['try_number']}/{t['max_tries']}",
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
            # the message names the cell as every other one does (Cell 5/7, or cell In [7] in a kernel)
            detail = a["message"] or f"{a['ename']}: {a['evalue']}"
            out.write(f"  {a['task_id']} try {a['try_number']}: {a['reason']}: {detail}\n")
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
    """Replace this process with a Dask worker that advertises nbflow queues as resources, or a
    Celery worker that consumes them (``--engine celery``)."""
    import os

    from nbflow import api

    queues = args.queue or ["default"]
    if args.engine == "celery":
        if args.resources or args.nworkers:
            raise NbflowError(
                "--resources and --nworkers are Dask's", hint="start more Celery workers, or raise --nthreads"
            )
        argv, env = api.celery_worker_command(queues=queues, nthreads=args.nthreads, name=args.name, broker=args.broker)
        out.write(f"nbflow worker: serving queues {', '.join(queues)} on Celery\n")
    else:
        if not args.scheduler:
            raise NbflowError(
                "a Dask worker needs the scheduler's address",
                hint="nbflow worker --scheduler tcp://HOST:8786 (or --engine celery for a Celery worker)",
            )
        argv, env = api.worker_command(
            args.scheduler,
            queues=queues,
            nthreads=args.nthreads,
            name=args.name,
            nworkers=args.nworkers,
            resources=args.resources or (),
        )
        out.write(f"nbflow worker: serving queues {', '.join(queues)} for {args.scheduler}\n")
    out.flush()
    os.execvpe(argv[0], argv, env)
    return 0  # not reached


def cmd_db_upgrade(args: argparse.Namespace, out: TextIO) -> int:
    from nbflow import api

    url, before, after = api.upgrade_database()
    out.write(
        f"database {url}: "
        + (f"upgraded {before or 'empty'} -> {after}\n" if before != after else f"already at {after}\n")
    )
    return 0


# --- parser ------------------------------------------------------------------------------------


def _n_tasks(count: int) -> str:
    """``1 task``, ``3 tasks``."""
    return f"{count} task{'' if count == 1 else 's'}"
