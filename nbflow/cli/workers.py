"""``nbflow workers``: the cluster's workers, what each runs now, and queues no worker serves."""

from __future__ import annotations

import argparse
import json
from typing import Any, TextIO


def _size(n: float | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return "-"


def _running(items: list[dict[str, Any]]) -> str:
    return ", ".join(f"{r['pipeline']}/{r['run_id']}/{r['task_id']}#{r['try_number']}" for r in items) or "idle"


def cmd_workers(args: argparse.Namespace, out: TextIO) -> int:
    """Print the workers view (``--json``: as the REST API gives it); 1 when the cluster is unreachable."""
    from nbflow import api
    from nbflow.cli.commands import _table

    view = api.list_workers(address=args.scheduler, engine=args.engine)
    if args.json:
        out.write(json.dumps(view.as_dict(), indent=2, default=str) + "\n")
        return 0 if view.reachable else 1
    if view.note:
        out.write(view.note + "\n")
        return 0 if view.reachable else 1
    out.write(
        f"{view.engine} cluster {view.address}" + (f", dashboard {view.dashboard}" if view.dashboard else "") + "\n"
    )
    if not view.workers:
        out.write("no workers are connected\n")
    else:
        rows = [
            (
                w.name,
                w.host,
                ",".join(w.queues) or "(all)",
                w.slots,
                _running(w.running),
                f"{_size(w.memory)} / {_size(w.memory_limit)}",
                "-" if w.cpu is None else f"{w.cpu:.0f}%",
                "-" if w.last_seen_s is None else f"{w.last_seen_s:.1f} s ago",
            )
            for w in view.workers
        ]
        _table(rows, ("worker", "host", "queues", "slots", "running", "memory", "cpu", "heartbeat"), out)
    for q in view.unserved:
        out.write(f"! queue {q['queue']}: {q['waiting']} task(s) waiting; {q['why']}; start one with: {q['command']}\n")
    return 0


def register(sub: Any) -> None:
    """Add ``nbflow workers`` to ``sub``."""
    p = sub.add_parser(
        "workers",
        help="list the cluster's workers and what they run now",
        description="Every worker of the Dask cluster at NBFLOW_DASK_ADDRESS (or --scheduler), or the Celery workers on "
        "the broker (--engine celery): host, queues, slots, "
        "the attempts it runs now (pipeline/run/task#try), memory, CPU and last heartbeat. Queues with tasks waiting "
        "that no worker serves are flagged with the `nbflow worker` command that starts one.",
        epilog="examples:\n  nbflow workers\n  nbflow workers --scheduler tcp://10.0.0.5:8786 --json\n"
        "  nbflow workers --engine celery --scheduler redis://10.0.0.5:6379/0",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--engine",
        choices=("dask", "celery"),
        help="whose workers (default: celery when NBFLOW_EXECUTOR=celery, else dask)",
    )
    p.add_argument(
        "--scheduler",
        help="address of the Dask scheduler (default NBFLOW_DASK_ADDRESS); with --engine celery, the broker "
        "(default NBFLOW_CELERY_BROKER)",
    )
    p.add_argument("--json", action="store_true", help="print the view as JSON (the REST API's shape)")
    p.set_defaults(func=cmd_workers)
