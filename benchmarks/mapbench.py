"""The ``mapping`` group: a mapped task's instances against the same number of plain tasks.

A 1,000-way mapped no-op ``@task`` (``task(noop_i).expand(i=range(1000))``: one mapped task
expanded at run time into 1,000 instances) against a pipeline of 1,000 plain no-op tasks
(``noop_i(i)`` each), both on ``inline`` and on ``dask`` (one ``LocalCluster(2 x 1)`` shared by
both sides, started once, untimed, as in the ``dask`` group). The ratio is per task: the same
count on both sides, so it is the ratio of the run times. What mapping adds is the expansion
(the points, 1,000 instance rows written in one statement) and the mapped task's own rows;
what it saves is defining and registering 1,000 tasks. Order alternated, best of N each.
"""

from __future__ import annotations

import os
from typing import Any

from benchmarks.core import Config, Row, _verdict, nbflow_run

MAP_TARGET = 1.2  # mapped instances / plain tasks, per task


def mapped(n: int, name: str) -> Any:
    """One no-op task mapped over ``range(n)``."""
    from benchmarks import funcs
    from nbflow import Pipeline, task

    with Pipeline(name) as pipeline:
        task(funcs.noop_i, name="noop").expand(i=list(range(n)))
    return pipeline


def plain(n: int, name: str) -> Any:
    """``n`` no-op tasks, one per value."""
    from benchmarks import funcs
    from nbflow import Pipeline, task

    with Pipeline(name) as pipeline:
        step = task(funcs.noop_i)
        for i in range(n):
            step.options_(name=f"noop{i}")(i)
    return pipeline


def _pair(n: int, executor: str, repeat: int, tag: str) -> tuple[float, float]:
    """Best seconds of the mapped and the plain run (building the pipeline untimed), alternated."""
    mapped_s, plain_s = [], []
    for k in range(repeat):
        for kind in ("mapped", "plain") if k % 2 == 0 else ("plain", "mapped"):
            name = f"bench_map_{tag}_{kind}_{os.getpid()}_{k}"
            pipeline = mapped(n, name) if kind == "mapped" else plain(n, name)
            seconds = nbflow_run(pipeline, executor, after=_check(kind, n))
            (mapped_s if kind == "mapped" else plain_s).append(seconds)
    return min(mapped_s), min(plain_s)


def _check(kind: str, n: int) -> Any:
    def check(result: Any) -> None:
        if kind == "mapped" and sum(1 for t in result.tasks if t["task_id"].startswith("noop[")) != n:
            raise RuntimeError(f"the mapped run has not {n} instances")

    return check


def mapping_group(cfg: Config) -> list[Row]:
    """(c) of issue 14: 1,000-way mapped no-op on inline and dask vs the same count of plain tasks."""
    from benchmarks.daskbench import shared_cluster

    n = 100 if cfg.quick else 1_000
    repeat = 1 if cfg.quick else 3
    rows = []
    inline = _pair(n, "inline", repeat, "inline")
    with shared_cluster() as (_, cluster_s):
        nbflow_run(plain(4, f"bench_map_warmup_{os.getpid()}"), "dask")  # imports on both workers, untimed
        on_dask = _pair(n, "dask", repeat, "dask")
    for executor, (m, p) in (("inline", inline), ("dask", on_dask)):
        ratio = m / p
        rows.append(
            Row(
                name=f"map-{executor}",
                group="mapping",
                compares=f"a {n}-way mapped no-op @task vs {n} plain no-op tasks on {executor}, per task",
                nbflow=m / n * 1000,
                baseline=p / n * 1000,
                unit="ms/task",
                result=ratio,
                result_unit="x",
                target=f"<= {MAP_TARGET}x",
                verdict=_verdict(ratio <= MAP_TARGET),
                note=(
                    f"best of {repeat}, order alternated; LocalCluster 2x1 started once ({cluster_s:.1f} s, untimed)"
                    if executor == "dask"
                    else f"best of {repeat}, order alternated"
                ),
            )
        )
    return rows
