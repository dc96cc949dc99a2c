"""The ``incremental`` group: what a re-run that reuses up-to-date tasks costs.

All on ``inline`` in one fresh home per shape (the decision is the engine's, whatever the
executor): a first run records the history, then

* **unchanged**: ``run_pipeline(..., incremental=True)`` again; every task ends ``cached``, so
  the whole re-run is overhead (create the run, read the earlier successes, fingerprint every
  task, check its outputs exist, write the cached rows);
* **one leaf changed**: the leaf task (:func:`benchmarks.funcs.leaf`, one second of work) gets a
  new literal argument; the incremental re-run (one task runs, the others are reused) against
  ``only=["leaf"]`` (what a user types to run just that task: its upstream values come from
  their latest success), order alternated;
* **decision cost**: the unchanged re-run of fan-outs of 100, 1,000 and 10,000 tasks, per task
  (the run's fixed cost included, so small sizes look dearer); flatness compares the cost of
  each *added* task (the slope from 1,000 to 10,000 tasks against the slope from 100 to 1,000),
  in which the fixed cost cancels.
"""

from __future__ import annotations

import time
from typing import Any

from benchmarks.core import Config, Row, _ms, _verdict, fresh_home

REPEAT = 5  # best of 5: every run is cheap, and on a shared machine noise only adds time
UNCHANGED_TARGET_S = 0.5  # the unchanged 1,000-task fan-out re-run, in total
LEAF_TARGET = 1.2  # one leaf changed: incremental re-run / a run of just that task
DECISION_FLATNESS = 1.5  # unchanged re-run per task: largest size / smallest


def fanout(n: int, version: int = 0, name: str | None = None) -> Any:
    """``root`` -> ``n - 2`` no-op children and one ``leaf`` child (a second of work)."""
    from benchmarks import funcs
    from nbflow import Pipeline, task

    with Pipeline(name or f"bench_fanout_{n}") as pipeline:
        root = task(funcs.start, name="root")()
        step = task(funcs.step)
        for i in range(1, n - 1):
            step.options_(name=f"t{i}")(root)
        task(funcs.leaf, name="leaf")(root, version)
    return pipeline


def chain(n: int, version: int = 0, name: str | None = None) -> Any:
    """``n - 1`` chained no-op steps passing a value, then the ``leaf`` (a second of work)."""
    from benchmarks import funcs
    from nbflow import Pipeline, task

    with Pipeline(name or f"bench_incr_chain_{n}") as pipeline:
        handle = task(funcs.start, name="t0")()
        step = task(funcs.step)
        for i in range(1, n - 1):
            handle = step.options_(name=f"t{i}")(handle)
        task(funcs.leaf, name="leaf")(handle, version)
    return pipeline


def _run(pipeline: Any, **options: Any) -> tuple[float, Any]:
    from nbflow import api

    t0 = time.perf_counter()
    result = api.run_pipeline(pipeline, executor="inline", **options)
    elapsed = time.perf_counter() - t0
    if not result.ok:
        raise RuntimeError(f"run of {pipeline.name} ended {result.state.value}")
    return elapsed, result


def _shape(kind: str, n: int, cfg: Config) -> list[Row]:
    from nbflow import api

    build = fanout if kind == "fanout" else chain
    rows: list[Row] = []
    with fresh_home():
        api.open_store()
        first_s, _ = _run(build(n))
        unchanged, executed = [], set()
        for _ in range(cfg.repeat if cfg.quick else REPEAT):
            seconds, result = _run(build(n), incremental=True)
            unchanged.append(seconds)
            executed |= {t["task_id"] for t in result.tasks if t["state"] != "cached"}
        if executed:
            raise RuntimeError(f"an unchanged incremental re-run of {kind} executed {sorted(executed)[:3]}")
        best_unchanged = min(unchanged)
        target = kind == "fanout"
        rows.append(
            Row(
                name=f"incremental-{kind}-unchanged",
                group="incremental",
                compares=f"{n}-task {kind}, nothing changed: incremental re-run (executes nothing) vs the first run",
                nbflow=best_unchanged,
                baseline=first_s,
                unit="s",
                result=best_unchanged / first_s,
                result_unit="x",
                target=f"<= {UNCHANGED_TARGET_S:g} s in total" if target else "",
                verdict=_verdict(best_unchanged <= UNCHANGED_TARGET_S) if target else "info",
                note=f"{_ms(best_unchanged, n):.3f} ms per task; best of {len(unchanged)}",
                details={"tasks": n, "first_s": first_s, "unchanged_s": unchanged},
            )
        )
        incremental, alone = [], []
        for i in range(cfg.repeat if cfg.quick else REPEAT):
            version = 100 + i
            runs = [
                ("incremental", lambda v=version: _run(build(n, v), incremental=True)),
                ("alone", lambda v=version: _run(build(n, v + 50), only=["leaf"])),
            ]
            for label, fn in runs if i % 2 == 0 else runs[::-1]:
                seconds, result = fn()
                ran = sorted(t["task_id"] for t in result.tasks if t["state"] == "success")
                if ran != ["leaf"]:
                    raise RuntimeError(f"{label} run of {kind} executed {ran[:3]}, not only the leaf")
                (incremental if label == "incremental" else alone).append(seconds)
        ratio = min(incremental) / min(alone)
        rows.append(
            Row(
                name=f"incremental-{kind}-leaf",
                group="incremental",
                compares=f"{n}-task {kind}, one leaf (1 s of work) changed: incremental re-run vs a run of just that task (only=[leaf])",
                nbflow=min(incremental),
                baseline=min(alone),
                unit="s",
                result=ratio,
                result_unit="x",
                target=f"<= {LEAF_TARGET:g}x",
                verdict=_verdict(ratio <= LEAF_TARGET),
                note=f"vs the first run: {min(incremental) / first_s:.2f}x; best of {len(incremental)} each, order alternated",
                details={"incremental_s": incremental, "alone_s": alone},
            )
        )
    return rows


def _decision(n: int, cfg: Config) -> float:
    from nbflow import api

    with fresh_home():
        api.open_store()
        _run(fanout(n, name=f"bench_decide_{n}"))
        repeat = 2 if n >= 10_000 else (cfg.repeat if cfg.quick else REPEAT)  # one noisy run must not decide the ratio
        return min(_run(fanout(n, name=f"bench_decide_{n}"), incremental=True)[0] for _ in range(repeat))


def incremental_group(cfg: Config) -> list[Row]:
    """The rows of the ``incremental`` group (see the module docstring)."""
    chain_n, fanout_n, sizes = (50, 200, (100, 1_000, 3_000)) if cfg.quick else (200, 1_000, (100, 1_000, 10_000))
    rows = _shape("chain", chain_n, cfg) + _shape("fanout", fanout_n, cfg)
    times: list[tuple[int, float]] = []
    for n in sizes:
        seconds = _decision(n, cfg)
        times.append((n, seconds))
        rows.append(
            Row(
                name=f"incremental-decision-{n}",
                group="incremental",
                compares=f"{n}-task fan-out, nothing changed: incremental re-run per task",
                nbflow=seconds,
                baseline=None,
                unit="s",
                result=_ms(seconds, n),
                result_unit="ms/task",
                details={"tasks": n},
            )
        )
    # The cost of each added task: the slope between two sizes, so the run's fixed cost cancels
    # (per task it would weigh most at the smallest size and flatter the ratio).
    (n0, t0), (n1, t1), (n2, t2) = times
    low, high = _ms(t1 - t0, n1 - n0), _ms(t2 - t1, n2 - n1)
    rows.append(
        Row(
            name="incremental-decision-flatness",
            group="incremental",
            compares=f"decision cost per added task, {n1}->{n2} tasks vs {n0}->{n1} (unchanged re-runs)",
            nbflow=high,
            baseline=low,
            unit="ms/task",
            result=high / low,
            result_unit="x",
            target=f"<= {DECISION_FLATNESS:g}x",
            verdict=_verdict(high / low <= DECISION_FLATNESS),
            note=f"fixed cost cancelled: slopes between sizes ({t0 * 1000:.1f} ms for {n0} tasks)",
            details={"seconds": {str(n): t for n, t in times}},
        )
    )
    return rows
