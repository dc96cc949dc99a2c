"""The ``celery`` group: nbflow's celery executor vs its dask executor on the same machine.

Two Celery workers of one thread each (``nbflow worker --engine celery``, Redis as broker and
result backend) against a ``LocalCluster`` of two one-thread workers, both started once and
untimed; the same 200-task fan-out and 100-step chain (quick: 50 and 20) run on each. Reported:
the per-task cost on the fan-out and per step on the chain as celery / dask (target: Celery
within 2x of Dask), and the chain's hand-off (a task's end to its child's start).

Needs Redis at ``NBFLOW_BENCH_CELERY_BROKER`` (default ``redis://127.0.0.1:6379/12``; the
database is flushed): without it the rows are SKIP with the reason.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

from benchmarks.core import Config, Row, _verdict, best, nbflow_run
from benchmarks.daskbench import _name, handoffs, percentile, shared_cluster

CELERY_TARGET = 2.0  # celery per-task (per-step) cost / dask's
REPO = Path(__file__).resolve().parent.parent
ROWS = ("celery-wide", "celery-chain", "celery-handoff")


def _reachable(url: str) -> bool:
    parts = urlsplit(url)
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex((parts.hostname or "127.0.0.1", parts.port or 6379)) == 0


@contextlib.contextmanager
def celery_workers(broker: str, n: int = 2) -> Iterator[float]:
    """``n`` one-thread Celery workers on ``broker`` (the seconds they took to answer), stopped after."""
    from nbflow.executors.celeryapp import make_app

    env = {**os.environ, "PYTHONPATH": str(REPO), "NBFLOW_CELERY_BROKER": broker}
    t0 = time.perf_counter()
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "nbflow", "worker", "--engine", "celery", "--name", f"bench{i}", "--nthreads", "1"],
            cwd=REPO,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        for i in range(n)
    ]
    app = make_app(broker)
    try:
        deadline = time.time() + 90
        while len({h for reply in app.control.ping(timeout=0.5) for h in reply}) < n:
            if time.time() > deadline or any(p.poll() is not None for p in procs):
                raise RuntimeError(f"{n} celery workers did not start on {broker}")
        yield time.perf_counter() - t0
    finally:
        app.close()
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait(10)


def celery_group(cfg: Config) -> list[Row]:
    """Fan-out and chain on celery vs dask, and the celery chain's hand-offs."""
    from benchmarks import dags

    broker = os.environ.get("NBFLOW_BENCH_CELERY_BROKER", "redis://127.0.0.1:6379/12")
    if not _reachable(broker):
        why = f"no broker at {broker} (start Redis, or set NBFLOW_BENCH_CELERY_BROKER)"
        return [Row(name, "celery", why, None, None, "ms/task", None, "", verdict="SKIP", note=why) for name in ROWS]
    import redis

    redis.Redis.from_url(broker).flushdb()
    n, m = (50, 20) if cfg.quick else (200, 100)
    repeat = 1 if cfg.quick else 3
    saved = os.environ.get("NBFLOW_CELERY_BROKER")
    os.environ["NBFLOW_CELERY_BROKER"] = broker
    try:
        with shared_cluster() as (_, cluster_s), celery_workers(broker) as workers_s:
            for executor in ("dask", "celery"):  # warm-up, untimed: imports on every worker
                nbflow_run(dags.wide(4, _name("warm")), executor)
            wide = {
                ex: best(lambda ex=ex: nbflow_run(dags.wide(n, _name("wide")), ex), repeat)[0]
                for ex in ("dask", "celery")
            }
            chain: dict[str, float] = {}
            hands: dict[str, list[float]] = {"dask": [], "celery": []}
            for ex in ("dask", "celery"):

                def collect(result: object, ex: str = ex) -> None:
                    from nbflow import api

                    times = [api.load_output(result.run_id, f"t{i}") for i in range(m)]  # type: ignore[attr-defined]
                    hands[ex].extend(handoffs(times))

                chain[ex] = min(
                    nbflow_run(dags.timed_chain(m, _name("chain")), ex, after=collect) for _ in range(repeat)
                )
    finally:
        if saved is None:
            os.environ.pop("NBFLOW_CELERY_BROKER", None)
        else:
            os.environ["NBFLOW_CELERY_BROKER"] = saved
    setup = (
        f"2 celery workers x 1 process on {broker} ({workers_s:.1f} s to start, untimed) vs LocalCluster 2x1 "
        f"({cluster_s:.1f} s, untimed); best of {repeat}"
    )
    wide_ratio, chain_ratio = wide["celery"] / wide["dask"], chain["celery"] / chain["dask"]
    med, p95 = statistics.median(hands["celery"]), percentile(hands["celery"], 95)
    return [
        Row(
            name="celery-wide",
            group="celery",
            compares=f"{n} independent no-op tasks: nbflow on celery vs nbflow on dask, per task",
            nbflow=wide["celery"] / n * 1000,
            baseline=wide["dask"] / n * 1000,
            unit="ms/task",
            result=wide_ratio,
            result_unit="x",
            target=f"<= {CELERY_TARGET:g}x",
            verdict=_verdict(wide_ratio <= CELERY_TARGET),
            note=f"runs {wide['celery']:.2f} s vs {wide['dask']:.2f} s; {setup}",
        ),
        Row(
            name="celery-chain",
            group="celery",
            compares=f"{m} chained tasks passing a value: nbflow on celery vs nbflow on dask, per step",
            nbflow=chain["celery"] / m * 1000,
            baseline=chain["dask"] / m * 1000,
            unit="ms/task",
            result=chain_ratio,
            result_unit="x",
            target=f"<= {CELERY_TARGET:g}x",
            verdict=_verdict(chain_ratio <= CELERY_TARGET),
            note=f"runs {chain['celery']:.2f} s vs {chain['dask']:.2f} s",
        ),
        Row(
            name="celery-handoff",
            group="celery",
            compares="a task's end -> its child's start along the chain: median on celery (baseline: on dask)",
            nbflow=med,
            baseline=statistics.median(hands["dask"]),
            unit="ms",
            result=med,
            result_unit="ms",
            note=f"p95 {p95:.1f} ms on celery, {percentile(hands['dask'], 95):.1f} ms on dask",
        ),
    ]
