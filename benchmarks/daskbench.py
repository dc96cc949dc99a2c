"""The ``dask`` group: nbflow's dask executor vs raw Dask on ONE ``LocalCluster(2 workers x 1 thread)``.

The cluster is started once (untimed) and its address handed to nbflow through
``NBFLOW_DASK_ADDRESS``, so nbflow and the baselines share the same two worker processes.
Both sides connect a ``Client`` of their own inside the clock (nbflow's executor does so in
``start``, the baselines in :mod:`benchmarks.baselines`) and close it inside the clock.

Every nbflow run uses a pipeline name of its own: nbflow's Dask keys are
``{pipeline}.{task}-{run}-{try}-{driver nonce}``, and every measurement starts a fresh database whose run
ids start at 1 again, so reusing a name on the same cluster would reuse keys that are
still held there (see the README).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import multiprocessing
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from benchmarks.core import BenchmarkError, Config, Row, _verdict, alternate, best, measured_again, nbflow_run

DASK_WIDE_TARGET = 1.5  # nbflow per-task cost / raw Dask per-task cost on the fan-out
HANDOFF_TARGET_MS = 15.0  # median parent end -> child start
NOTEBOOK_POOL_TARGET = 1.15  # nbflow on dask / papermill in a 2-process pool

_names = itertools.count()


def _name(kind: str) -> str:
    return f"bench_dask_{kind}_{os.getpid()}_{next(_names)}"


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def handoffs(times: list[list[float]]) -> list[float]:
    """Milliseconds from each task's end to its child's start, along a chain of ``[start, end]``."""
    return [(child[0] - parent[1]) * 1000 for parent, child in itertools.pairwise(times)]


def start_cluster() -> Any:
    """``LocalCluster(n_workers=2, threads_per_worker=1)`` on 127.0.0.1, set up as nbflow's
    embedded one (:data:`nbflow.executors.dask.WORKER_CONFIG`); both sides run on it."""
    import dask
    from distributed import LocalCluster

    from nbflow.executors.dask import WORKER_CONFIG

    with dask.config.set(WORKER_CONFIG):
        return LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            silence_logs=logging.ERROR,
        )


@contextlib.contextmanager
def shared_cluster() -> Iterator[tuple[Any, float]]:
    """:func:`start_cluster` (and the seconds it took) as ``NBFLOW_DASK_ADDRESS`` (read by every
    ``fresh_home()``: settings are reset there) until the block ends; then closed."""
    saved = os.environ.get("NBFLOW_DASK_ADDRESS")
    t0 = time.perf_counter()
    cluster = start_cluster()
    cluster_s = time.perf_counter() - t0
    os.environ["NBFLOW_DASK_ADDRESS"] = cluster.scheduler_address
    try:
        yield cluster, cluster_s
    finally:
        cluster.close()
        if saved is None:
            os.environ.pop("NBFLOW_DASK_ADDRESS", None)
        else:
            os.environ["NBFLOW_DASK_ADDRESS"] = saved


def dask_group(cfg: Config) -> list[Row]:
    """(a) fan-out and chain vs raw Dask, (b) parent-end -> child-start, (c) notebooks vs a pool."""
    from benchmarks import baselines, dags

    with shared_cluster() as (cluster, cluster_s):
        address = cluster.scheduler_address
        connect_s = min(baselines.dask_connect(address) for _ in range(3))
        # warm-up, untimed: imports of nbflow and of the task functions on both workers
        nbflow_run(dags.wide(4, _name("warmup")), "dask")
        baselines.dask_map(address, 4)

        # (a) fan-out
        n = cfg.dask_wide
        raw_wide_s, raw_wide_all = best(lambda: baselines.dask_map(address, n), cfg.repeat + 1)
        nb_wide_s, nb_wide_all = best(lambda: nbflow_run(dags.wide(n, _name("wide")), "dask"), cfg.dask_repeat)
        raw_wide_s = min(raw_wide_s, baselines.dask_map(address, n))  # once more after nbflow: noise only adds

        # (a) chain and (b) hand-off: the chain's tasks return [start, end]
        m = cfg.dask_chain
        raw_runs: list[tuple[float, list[float]]] = [baselines.dask_chain(address, m) for _ in range(cfg.repeat + 1)]
        nb_handoffs: list[float] = []
        nb_chain_all: list[float] = []

        def collect(result: Any) -> None:
            from nbflow import api

            times = [api.load_output(result.run_id, f"t{i}") for i in range(m)]
            nb_handoffs.extend(handoffs(times))

        for _ in range(cfg.dask_repeat):
            nb_chain_all.append(nbflow_run(dags.timed_chain(m, _name("chain")), "dask", after=collect))
        raw_runs.append(baselines.dask_chain(address, m))
        raw_chain_s = min(s for s, _ in raw_runs)
        raw_handoffs = [h for _, hs in raw_runs for h in hs]
        nb_chain_s = min(nb_chain_all)

        # (c) notebooks
        nb_rows = _notebooks(cfg, address)
        time.sleep(0.5)
        leftover = _leftover_keys(cluster)

    setup = f"LocalCluster 2x1 started once ({cluster_s:.1f} s, untimed); a Client connect+close {connect_s * 1000:.0f} ms is in both sides"
    if leftover:
        setup += f"; {len(leftover)} nbflow key(s) still on the cluster after every run ended, e.g. {leftover[0]}"
    wide_ratio = nb_wide_s / raw_wide_s
    chain_ratio = nb_chain_s / raw_chain_s
    med, p95 = statistics.median(nb_handoffs), percentile(nb_handoffs, 95)
    raw_med, raw_p95 = statistics.median(raw_handoffs), percentile(raw_handoffs, 95)
    rows = [
        Row(
            name="dask-wide",
            group="dask",
            compares=f"{n} independent no-op tasks on dask: nbflow vs client.map, per task",
            nbflow=nb_wide_s / n * 1000,
            baseline=raw_wide_s / n * 1000,
            unit="ms/task",
            result=wide_ratio,
            result_unit="x",
            target=f"<= {DASK_WIDE_TARGET:g}x",
            verdict=_verdict(wide_ratio <= DASK_WIDE_TARGET),
            note=f"runs {nb_wide_s:.2f} s vs {raw_wide_s:.2f} s; {setup}",
            details={
                "tasks": n,
                "nbflow_runs_s": nb_wide_all,
                "raw_runs_s": raw_wide_all,
                "cluster_start_s": cluster_s,
                "connect_close_s": connect_s,
                "leftover_keys": leftover,
            },
        ),
        Row(
            name="dask-chain",
            group="dask",
            compares=f"{m} chained tasks passing a value on dask: nbflow vs a client.submit chain, per step",
            nbflow=nb_chain_s / m * 1000,
            baseline=raw_chain_s / m * 1000,
            unit="ms/task",
            result=chain_ratio,
            result_unit="x",
            note=f"runs {nb_chain_s:.2f} s vs {raw_chain_s:.2f} s; the baseline submits all steps at once, each taking the previous future",
            details={"tasks": m, "nbflow_runs_s": nb_chain_all, "raw_runs_s": [s for s, _ in raw_runs]},
        ),
        Row(
            name="dask-handoff",
            group="dask",
            compares="a task's end -> its child's start (time.time() in the tasks) along the chain: median",
            nbflow=med,
            baseline=raw_med,
            unit="ms",
            result=med,
            result_unit="ms",
            target=f"< {HANDOFF_TARGET_MS:g} ms",
            verdict=_verdict(med < HANDOFF_TARGET_MS),
            note=f"{len(nb_handoffs)} hand-offs over {cfg.dask_repeat} run(s); raw Dask: the client.submit chain's own hand-offs",
            details={"nbflow_ms": nb_handoffs, "raw_ms": raw_handoffs},
        ),
        Row(
            name="dask-handoff-p95",
            group="dask",
            compares="the same, 95th percentile",
            nbflow=p95,
            baseline=raw_p95,
            unit="ms",
            result=p95,
            result_unit="ms",
        ),
        *nb_rows,
    ]
    return rows


def _leftover_keys(cluster: Any) -> list[str]:
    """nbflow's keys the (in-process) Dask scheduler still holds: every run has ended by now."""
    try:
        return sorted(
            f"{k} ({ts.state})" for k, ts in list(cluster.scheduler.tasks.items()) if str(k).startswith("bench_dask_")
        )
    except Exception:  # noqa: BLE001 - a diagnostic only
        return []


def _notebooks(cfg: Config, address: str) -> list[Row]:
    """(c) ``cfg.dask_notebooks`` trivial notebooks through nbflow on the cluster vs a 2-process pool."""
    from benchmarks import dags, funcs

    k = cfg.dask_notebooks
    out_dir = Path(tempfile.mkdtemp(prefix="nbflow-bench-nbpool-"))
    counter = itertools.count()
    src = str(dags.TRIVIAL)

    def run_pool(pool: ProcessPoolExecutor, count: int) -> float:
        t0 = time.perf_counter()
        futures = [
            pool.submit(funcs.run_notebook, src, str(out_dir / f"out-{next(counter)}.ipynb")) for _ in range(count)
        ]
        for f in futures:
            f.result()
        return time.perf_counter() - t0

    def run_nbflow(count: int) -> float:
        return nbflow_run(dags.notebooks(count, _name("notebooks")), "dask")

    failures: list[str] = []

    def again(fn: Any) -> float:  # the baseline's TCP kernels only; nbflow's runs are measured once
        return measured_again(fn, failures)

    try:
        with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
            # warm-up, untimed: papermill imports and a first kernel start in each process
            again(lambda: run_pool(pool, 2))
            run_nbflow(2)
            nb_times, pool_times = alternate(
                cfg.dask_notebook_repeat, lambda: run_nbflow(k), lambda: again(lambda: run_pool(pool, k))
            )
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)
    if not nb_times:
        raise BenchmarkError("no notebook runs")
    nb, pl = statistics.median(nb_times), statistics.median(pool_times)
    ratio = nb / pl
    return [
        Row(
            name="dask-notebook",
            group="dask",
            compares=(
                f"{k} trivial notebooks: nbflow on dask (2 workers) vs papermill.execute_notebook "
                f"in ProcessPoolExecutor(2, spawn)"
            ),
            nbflow=nb,
            baseline=pl,
            unit="s",
            result=ratio,
            result_unit="x",
            target=f"<= {NOTEBOOK_POOL_TARGET:g}x",
            verdict=_verdict(ratio <= NOTEBOOK_POOL_TARGET),
            note=(
                f"median of {len(nb_times)}, order alternated, both sides warmed up; "
                f"per notebook {nb / k * 1000:.0f} vs {pl / k * 1000:.0f} ms; best-of ratio {min(nb_times) / min(pool_times):.2f}x"
                + (f"; {len(failures)} failed measurement(s) repeated, first: {failures[0]}" if failures else "")
            ),
            details={"notebooks": k, "nbflow_runs_s": nb_times, "pool_runs_s": pool_times, "failures": failures},
        )
    ]
