"""``nbflow run --dry-run``: what a run would execute and reuse, and why; nothing runs."""

from __future__ import annotations

import argparse
from typing import Any, TextIO


def dry_run(pipeline: Any, params: dict[str, str], args: argparse.Namespace, store: Any, out: TextIO) -> int:
    """``nbflow run --dry-run``: one line per task, ``reuse`` (from which attempt) or ``run`` (why)."""
    from nbflow import api

    planned = api.plan_run(
        pipeline, params=params, only=args.only, incremental=args.incremental, force=args.force, store=store
    )
    incremental = pipeline.incremental if args.incremental is None else args.incremental
    mode = "incremental" if incremental else "not incremental: every task runs; add --incremental (-i) to reuse"
    out.write(f"nbflow: dry run of {pipeline.name} ({len(planned)} tasks, {mode}); nothing runs, no run is recorded\n")
    width = max(len(p.task_id) for p in planned) if planned else 0
    for p in planned:
        detail = f"from run {p.reused_run_id}, try {p.reused_try}" if p.action == "reuse" else p.why
        out.write(f"  {p.action:<5}  {p.task_id:<{width}}  {detail}\n")
    runs = sum(p.action == "run" for p in planned)
    out.write(f"{runs} to run, {len(planned) - runs} to reuse\n")
    return 0
