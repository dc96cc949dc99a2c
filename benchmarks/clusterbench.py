"""The ``cluster`` group: nbflow across namespace hosts with an object-store root vs on 127.0.0.1.

The namespace cluster is ``tests/cluster/netcluster.py``'s: a Dask scheduler host,
moto's S3 server on a host of its own, two worker hosts (``nbflow worker --nthreads 1``) that share no
disk with this process, the artifact root ``s3://nbflow/bench-N``. The baseline is the same
processes on 127.0.0.1 (:func:`loopback_cluster`: a ``dask scheduler`` and two ``nbflow worker
--nthreads 1``) with a local artifact root. Both are started once, untimed; nbflow drives both
from this process, on a fresh database each run. Rows: 200 no-op tasks (reported: every attempt
on the object store PUTs its start marker and its result record, and moto is a Python server, so
the no-op ratio is mostly those round trips) and 16 trivial notebooks (target <= 1.5x).

Runs only where network namespaces can be made (root, iproute2): elsewhere the rows are SKIP
with the reason.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks.core import Config, Row, _verdict, alternate, nbflow_run
from benchmarks.daskbench import _name

NOTEBOOK_TARGET = 1.5  # notebooks on the namespace cluster with an S3 root / on 127.0.0.1 with a local root
REPO = Path(__file__).resolve().parent.parent
ROWS = ("cluster-wide", "cluster-notebook")
_roots = itertools.count()


@contextlib.contextmanager
def loopback_cluster() -> Iterator[str]:
    """A ``dask scheduler`` and two ``nbflow worker --nthreads 1`` processes on 127.0.0.1 (the
    namespace cluster's processes without the namespaces); its address, all killed after."""
    from distributed import Client

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    address = f"tcp://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONPATH": str(REPO), "DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "0"}
    scheduler = [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", str(port)]
    commands = [[*scheduler, "--dashboard-address", "127.0.0.1:0"]]
    commands += [["nbflow", "worker", "--scheduler", address, "--name", f"here{i}", "--nthreads", "1"] for i in (1, 2)]
    procs: list[subprocess.Popen] = []
    try:
        for argv in commands:
            procs.append(
                subprocess.Popen(
                    argv,
                    env=env,
                    cwd=REPO,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,
                )
            )
            if len(procs) == 1:
                time.sleep(1)  # the scheduler listens before the workers knock
        with Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=90)
        yield address
    finally:
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def cluster_group(cfg: Config) -> list[Row]:
    """200 no-op tasks and 16 notebooks: namespace hosts + object store vs 127.0.0.1 + local disk."""
    import fsspec.config

    from benchmarks import dags
    from tests.cluster import netcluster

    why = netcluster.unavailable()
    if why:
        return [Row(name, "cluster", why, None, None, "s", None, "", verdict="SKIP", note=why) for name in ROWS]
    n, k = (20, 2) if cfg.quick else (200, 16)
    repeat = 1 if cfg.quick else 3
    saved_s3 = fsspec.config.conf.get("s3")
    t0 = time.perf_counter()
    with loopback_cluster() as local_address, tempfile.TemporaryDirectory(prefix="nbflow-bench-hosts-") as root:
        local_s, t0 = time.perf_counter() - t0, time.perf_counter()
        with netcluster.NetCluster(Path(root)) as hosts:
            address = hosts.dask_scheduler()
            hosts.object_store()
            extra = {"PYTHONPATH": str(REPO)}  # the benchmark's task functions, as an image would ship them
            for name in ("w1", "w2"):
                hosts.worker(name, ["default"], dags=False, env=extra)
            hosts.wait_workers(["w1", "w2"])
            hosts_s = time.perf_counter() - t0
            fsspec.config.conf["s3"] = json.loads(hosts.s3_env()["FSSPEC_S3"])
            try:

                def remote(pipeline: Any) -> float:
                    root = f"s3://{netcluster.BUCKET}/bench-{next(_roots)}"
                    return nbflow_run(
                        pipeline, "dask", settings={"NBFLOW_DASK_ADDRESS": address, "NBFLOW_ARTIFACT_ROOT": root}
                    )

                def here(pipeline: Any) -> float:
                    return nbflow_run(pipeline, "dask", settings={"NBFLOW_DASK_ADDRESS": local_address})

                for run in (remote, here):  # warm-up, untimed: imports and a first kernel on every worker
                    run(dags.wide(4, _name("warm")))
                    run(dags.notebooks(2, _name("warm_nb")))
                wide_remote, wide_here = alternate(
                    repeat, lambda: remote(dags.wide(n, _name("wide"))), lambda: here(dags.wide(n, _name("wide")))
                )
                nb_remote, nb_here = alternate(
                    repeat,
                    lambda: remote(dags.notebooks(k, _name("nb"))),
                    lambda: here(dags.notebooks(k, _name("nb"))),
                )
            finally:
                if saved_s3 is None:
                    fsspec.config.conf.pop("s3", None)
                else:
                    fsspec.config.conf["s3"] = saved_s3
    wide_r, wide_h = min(wide_remote), min(wide_here)
    nb_r, nb_h = statistics.median(nb_remote), statistics.median(nb_here)
    setup = (
        f"2 worker hosts x 1 thread in network namespaces, moto S3 (set up in {hosts_s:.1f} s, untimed) vs "
        f"the same processes on 127.0.0.1 ({local_s:.1f} s, untimed)"
    )
    return [
        Row(
            name="cluster-wide",
            group="cluster",
            compares=f"{n} no-op tasks: namespace hosts + s3:// root vs 127.0.0.1 + local root, per task",
            nbflow=wide_r / n * 1000,
            baseline=wide_h / n * 1000,
            unit="ms/task",
            result=wide_r / wide_h,
            result_unit="x",
            note=f"best of {repeat}: {wide_r:.2f} s vs {wide_h:.2f} s; {setup}",
            details={"hosts_runs_s": wide_remote, "local_runs_s": wide_here},
        ),
        Row(
            name="cluster-notebook",
            group="cluster",
            compares=f"{k} trivial notebooks: namespace hosts + s3:// root vs 127.0.0.1 + local root",
            nbflow=nb_r,
            baseline=nb_h,
            unit="s",
            result=nb_r / nb_h,
            result_unit="x",
            target=f"<= {NOTEBOOK_TARGET:g}x",
            verdict=_verdict(nb_r / nb_h <= NOTEBOOK_TARGET),
            note=f"median of {repeat}; per notebook {nb_r / k * 1000:.0f} vs {nb_h / k * 1000:.0f} ms",
            details={"hosts_runs_s": nb_remote, "local_runs_s": nb_here},
        ),
    ]
