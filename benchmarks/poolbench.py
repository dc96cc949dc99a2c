"""Row (a) of issue 14: one trivial notebook task taking a pre-started kernel vs bare papermill.

The kernel pool (:mod:`nbflow.tasks.kernelpool`) of this process is warm before every timed run
of either side: the replacement kernel an nbflow run starts in the background when its task
ends is waited for, untimed, so that no measurement of either side shares the CPU with a
booting kernel. Median of 5 per side, order alternated.
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.core import Config, Row, _verdict, fresh_home

WARM_POOL_TARGET = 0.35  # nbflow notebook task with a warm pool / bare papermill
REPEAT = 5


def warm_pool_group(cfg: Config) -> list[Row]:
    """``notebook-warm-pool``: nbflow ``notebook(...)`` on inline with a warm pool vs papermill."""
    import papermill

    from benchmarks import dags
    from nbflow import api
    from nbflow.tasks import kernelpool

    repeat = 3 if cfg.quick else REPEAT
    saved = os.environ.get("NBFLOW_KERNEL_POOL")
    os.environ["NBFLOW_KERNEL_POOL"] = "1"
    api.reset()
    pipeline = dags.trivial_notebook("bench_notebook_pool")
    out_dir = Path(tempfile.mkdtemp(prefix="nbflow-bench-pool-"))

    def run_papermill() -> float:
        t0 = time.perf_counter()
        papermill.execute_notebook(
            str(dags.TRIVIAL),
            str(out_dir / f"out-{time.monotonic_ns()}.ipynb"),
            parameters={"x": 1},
            kernel_name="python3",
            progress_bar=False,
        )
        return time.perf_counter() - t0

    def warm() -> None:
        pool = kernelpool.current()
        if pool is None or not pool.wait_ready(60) or not pool.kernels():
            raise RuntimeError("the kernel pool did not warm up")

    def run_nbflow() -> float:
        t0 = time.perf_counter()
        result = api.run_pipeline(pipeline, executor="inline")
        elapsed = time.perf_counter() - t0
        if not result.ok:
            raise RuntimeError(f"the notebook run ended {result.state.value}")
        return elapsed

    nb_times: list[float] = []
    pm_times: list[float] = []
    try:
        # One home for every run: a pooled kernel serves only the environment it was started in,
        # and a fresh home per run changes NBFLOW_HOME (the database is opened before the clock).
        with fresh_home():
            api.open_store()
            run_nbflow()  # warm-up: the first notebook starts its own kernel, then the pool fills
            run_papermill()
            for i in range(repeat):
                for side in ("nbflow", "papermill") if i % 2 == 0 else ("papermill", "nbflow"):
                    warm()
                    if side == "nbflow":
                        nb_times.append(run_nbflow())
                    else:
                        pm_times.append(run_papermill())
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)
        kernelpool.drain()
        if saved is None:
            os.environ.pop("NBFLOW_KERNEL_POOL", None)
        else:
            os.environ["NBFLOW_KERNEL_POOL"] = saved
        api.reset()
    nb, pm = statistics.median(nb_times), statistics.median(pm_times)
    ratio = nb / pm
    return [
        Row(
            name="notebook-warm-pool",
            group="notebook-warm-pool",
            compares="trivial notebook: nbflow notebook() on inline taking a pre-started kernel vs "
            "papermill.execute_notebook",
            nbflow=nb,
            baseline=pm,
            unit="s",
            result=ratio,
            result_unit="x",
            target=f"<= {WARM_POOL_TARGET:g}x",
            verdict=_verdict(ratio <= WARM_POOL_TARGET),
            note=(
                f"median of {repeat}, order alternated, pool warm before every run of either side; "
                f"papermill - nbflow = {(pm - nb) * 1000:.0f} ms; best-of ratio {min(nb_times) / min(pm_times):.2f}x"
            ),
            details={"nbflow_runs_s": nb_times, "papermill_runs_s": pm_times},
        )
    ]
