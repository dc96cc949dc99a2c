"""Row (b) of issue 14: a 32-point notebook sweep on 2 worker slots vs 32 papermill runs in a 2-process pool.

- nbflow: ``api.run_sweep`` of a one-notebook pipeline (``benchmarks/notebooks/trivial.ipynb``,
  its ``x`` from the pipeline parameter ``x``) over ``x = 0 .. N-1``, on the ``local`` executor
  with 2 worker processes and the kernel pool at its default (1 per worker slot), on a fresh
  home whose database is opened before the clock. The clock covers what ``nbflow run --sweep``
  does after loading the file: the sweep and its runs created, the executor started (2 fresh
  worker processes, whose pools start empty: each one's first notebook starts its own kernel),
  every run driven to its end, the executor stopped (pools drained).
- papermill: ``concurrent.futures.ProcessPoolExecutor(2)`` (spawn, as nbflow's local workers)
  started inside the clock, N ``papermill.execute_notebook`` calls submitted at once, waited
  for, the pool shut down inside the clock: the same start-up and shutdown as nbflow's side. A
  papermill measurement that fails (its kernels' TCP port race: ``core.measured_again``) is
  measured again and said in the note; nbflow's are measured once.
- One untimed warm-up of each side (8 points), then ``repeat`` runs per side, order alternated;
  ratio of medians. The CPU time of each side (this process and every reaped child: workers,
  kernels) per notebook is in the note: on 2 CPUs both sides are mostly CPU-bound, so it says
  where the time goes.
"""

from __future__ import annotations

import itertools
import multiprocessing
import resource
import shutil
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from benchmarks.core import BenchmarkError, Config, Row, _verdict, fresh_home, measured_again

SWEEP_TARGET = 0.5  # nbflow's 32-point sweep on 2 worker slots / 32 papermill runs in a 2-process pool
WARM_UP_POINTS = 8


def _cpu() -> float:
    """CPU seconds of this process and of its reaped descendants so far."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def sweep_pipeline(name: str = "bench_sweep") -> Any:
    """One notebook task whose ``x`` is the pipeline parameter ``x`` (what ``--sweep x=...`` varies)."""
    from benchmarks import dags
    from nbflow import Pipeline, notebook

    with Pipeline(name, params={"x": 1}) as pipeline:
        notebook(str(dags.TRIVIAL), name="trivial", parameters={"x": pipeline.params.x})
    return pipeline


def sweep_group(cfg: Config) -> list[Row]:
    """``notebook-sweep``: nbflow ``run_sweep`` on ``local`` (2 workers) vs papermill in a 2-process pool."""
    from benchmarks import dags, funcs
    from nbflow import api

    points = cfg.sweep_points
    pipeline = sweep_pipeline()
    out_dir = Path(tempfile.mkdtemp(prefix="nbflow-bench-sweep-"))
    counter = itertools.count()

    def run_nbflow(n: int) -> tuple[float, float]:
        with fresh_home():
            api.open_store()
            cpu, t0 = _cpu(), time.perf_counter()
            result = api.run_sweep(pipeline, {"x": list(range(n))}, executor="local", parallelism=2)
            elapsed, cpu = time.perf_counter() - t0, _cpu() - cpu
            if not result.ok or len(result.runs) != n:
                raise BenchmarkError(f"the sweep did not succeed: {[r.state.value for r in result.runs]}")
        return elapsed, cpu

    def run_papermill(n: int) -> tuple[float, float]:
        cpu, t0 = _cpu(), time.perf_counter()
        with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [
                pool.submit(funcs.run_notebook, str(dags.TRIVIAL), str(out_dir / f"out-{next(counter)}.ipynb"))
                for _ in range(n)
            ]
            for future in futures:
                future.result()
        return time.perf_counter() - t0, _cpu() - cpu

    nb_runs: list[tuple[float, float]] = []
    pm_runs: list[tuple[float, float]] = []
    failures: list[str] = []  # the baseline's measurements lost to its TCP port race, repeated
    try:
        run_nbflow(WARM_UP_POINTS)  # untimed: imports, file caches
        measured_again(lambda: run_papermill(WARM_UP_POINTS), failures)
        for i in range(cfg.sweep_repeat):
            for side in ("nbflow", "papermill") if i % 2 == 0 else ("papermill", "nbflow"):
                if side == "nbflow":
                    nb_runs.append(run_nbflow(points))
                else:
                    pm_runs.append(measured_again(lambda: run_papermill(points), failures))
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)
    nb = statistics.median(t for t, _ in nb_runs)
    pm = statistics.median(t for t, _ in pm_runs)
    nb_cpu = statistics.median(c for _, c in nb_runs) / points
    pm_cpu = statistics.median(c for _, c in pm_runs) / points
    ratio = nb / pm
    return [
        Row(
            name="notebook-sweep",
            group="notebook-sweep",
            compares=(
                f"{points}-point sweep of a one-notebook pipeline: nbflow run_sweep on local (2 workers, kernel pool on) "
                f"vs {points} papermill.execute_notebook in ProcessPoolExecutor(2, spawn)"
            ),
            nbflow=nb,
            baseline=pm,
            unit="s",
            result=ratio,
            result_unit="x",
            target=f"<= {SWEEP_TARGET:g}x",
            verdict=_verdict(ratio <= SWEEP_TARGET),
            note=(
                f"median of {len(nb_runs)}, order alternated, start-up and shutdown inside the clock on both sides; "
                f"per notebook {nb / points * 1000:.0f} vs {pm / points * 1000:.0f} ms wall, "
                f"{nb_cpu * 1000:.0f} vs {pm_cpu * 1000:.0f} ms CPU (processes and kernels); "
                f"best-of ratio {min(t for t, _ in nb_runs) / min(t for t, _ in pm_runs):.2f}x"
                + (f"; {len(failures)} papermill measurement(s) repeated, first: {failures[0]}" if failures else "")
            ),
            details={
                "points": points,
                "nbflow_runs_s": [t for t, _ in nb_runs],
                "papermill_runs_s": [t for t, _ in pm_runs],
                "nbflow_cpu_s": [c for _, c in nb_runs],
                "papermill_cpu_s": [c for _, c in pm_runs],
                "papermill_failures": failures,
            },
        )
    ]
