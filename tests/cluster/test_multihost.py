"""nbflow across hosts that share no disk: network namespaces on one bridge (see netcluster.py).

One cluster serves the module: the scheduler host (this process: the driver, SQLite in its
NBFLOW_HOME, the REST API), a Dask scheduler host, moto's S3 server holding the artifact root
``s3://nbflow/runs``, worker hosts ``w1`` and ``w2`` (queue ``default``), ``gpu`` (queue
``gpu``) and ``bare`` (queue ``bare``, without the DAG folder). Every worker host has its own
hostname and disk: the scheduler host's folder is hidden from it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.cluster import netcluster
from tests.cluster.netcluster import NetCluster
from tests.waiting import wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

DAGS = Path(__file__).parent / "dags"
WORKERS = {"w1": ["default"], "w2": ["default"], "gpu": ["gpu"], "bare": ["bare"]}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NetCluster]:
    why = netcluster.unavailable()
    if why:
        pytest.skip(why)
    with NetCluster(tmp_path_factory.mktemp("netcluster")) as made:
        made.dask_scheduler()
        made.object_store()
        for path in DAGS.iterdir():
            if path.is_file():
                (made.dags / path.name).write_bytes(path.read_bytes())
        for name, queues in WORKERS.items():
            made.worker(name, queues, dags=name != "bare")
        made.wait_workers(list(WORKERS))
        yield made


def nbflow(cluster: NetCluster, *args: str, timeout: float = 240, check: bool = True) -> subprocess.CompletedProcess:
    """The nbflow CLI on the scheduler host."""
    done = subprocess.run(
        ["nbflow", *args],
        env=cluster.driver_env(),
        cwd=cluster.driver_folder,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and done.returncode != 0:
        raise AssertionError(f"nbflow {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return done


@contextmanager
def as_driver(cluster: NetCluster) -> Iterator[Any]:
    """nbflow.api in this process with the scheduler host's settings (and fsspec's S3 options)."""
    import fsspec.config

    from nbflow import api

    saved_env, saved_s3 = dict(os.environ), dict(fsspec.config.conf.get("s3", {}))
    os.environ.clear()
    os.environ.update(cluster.driver_env())
    fsspec.config.conf["s3"] = json.loads(os.environ["FSSPEC_S3"])
    api.reset()
    try:
        yield api
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
        fsspec.config.conf["s3"] = saved_s3
        api.reset()


def run_id_of(output: str) -> int:
    return int(output.split("nbflow: run ", 1)[1].split()[0])


def attempts(cluster: NetCluster, run_id: int) -> list[dict[str, Any]]:
    with as_driver(cluster) as api:
        return api.run_details(run_id)["attempts"]


def host_of(cluster: NetCluster, attempt: dict[str, Any]) -> str:
    """The namespace host an attempt ran on (its worker's address is the host's)."""
    address = attempt["hostname"].removeprefix("tcp://").rsplit(":", 1)[0]
    return next(name for name, host in cluster.hosts.items() if host.address == address)


def test_worker_hosts_share_no_disk_and_cannot_reach_the_database(cluster: NetCluster) -> None:
    w1 = cluster.hosts["w1"]
    probe = (
        "import os, socket\n"
        f"print(socket.gethostname(), os.path.exists({str(cluster.home)!r}), sorted(os.listdir({str(cluster.dags)!r})))\n"
        f"print(socket.socket().connect_ex(({cluster.gateway!r}, 5432)))\n"
    )
    done = w1.run([sys.executable, "-c", probe], cluster.worker_env(w1))
    assert done.returncode == 0, done.stderr
    first, second = done.stdout.splitlines()
    name, home_seen, dags = first.split(" ", 2)
    assert name == w1.netns and home_seen == "False"  # its own hostname; the driver's NBFLOW_HOME is not there
    assert "ml_cluster.py" in dags  # its own copy of the DAG folder, at the same path
    assert second != "0"  # PostgreSQL on the scheduler host listens on its 127.0.0.1 only
    bare = cluster.hosts["bare"]
    listed = bare.run(["ls", "-A", str(cluster.dags)], cluster.worker_env(bare))
    assert listed.returncode == 0 and listed.stdout.strip() == ""


@pytest.fixture(scope="module")
def ml_run(cluster: NetCluster) -> int:
    """The ML example run once on the cluster (``nbflow run ... -p C=0.5``): its run id."""
    return run_id_of(nbflow(cluster, "run", str(cluster.dags / "ml_cluster.py"), "-p", "C=0.5").stdout)


def test_ml_example_runs_on_workers_without_a_shared_disk(cluster: NetCluster, ml_run: int) -> None:
    run_id = ml_run
    rows = attempts(cluster, run_id)
    assert {(a["task_id"], a["state"]) for a in rows} == {
        (t, "success") for t in ("prepare", "train", "evaluate", "report", "archive", "on_gpu")
    }
    placed = {a["task_id"]: host_of(cluster, a) for a in rows}
    assert placed["on_gpu"] == "gpu"
    assert {placed[t] for t in placed if t != "on_gpu"} <= {"w1", "w2"}
    # Everything the attempts wrote is in the object store, nothing on the scheduler host's disk.
    s3 = cluster.s3fs()
    stored = set(s3.find(f"{netcluster.BUCKET}/runs/ml_cluster/run-{run_id}"))
    for task in ("prepare", "train", "evaluate"):
        folder = f"{netcluster.BUCKET}/runs/ml_cluster/run-{run_id}/{task}/try-1"
        assert {f"{folder}/output.ipynb", f"{folder}/log.txt"} <= stored
    assert f"{netcluster.BUCKET}/runs/ml_cluster/run-{run_id}/archive/try-1/artifacts/archive.txt" in stored
    assert not (cluster.home / "runs").exists()
    # The CLI on the scheduler host reads them from there.
    tasks = nbflow(cluster, "tasks", str(run_id)).stdout
    assert f"s3://nbflow/runs/ml_cluster/run-{run_id}/train/try-1/output.ipynb" in tasks
    report = nbflow(cluster, "logs", str(run_id), "report").stdout
    assert "C=0.5: accuracy 0.9" in report and "on nbf" in report
    archive = nbflow(cluster, "logs", str(run_id), "archive").stdout
    assert f"archived on {cluster.hosts[placed['archive']].netns}" in archive
    notebook_log = nbflow(cluster, "logs", str(run_id), "train").stdout
    assert notebook_log.strip()
    with as_driver(cluster) as api:
        assert api.load_output(run_id, "report")["C"] == 0.5
        assert api.load_output(run_id, "on_gpu")["host"] == cluster.hosts["gpu"].netns


def test_rest_api_reads_runs_from_the_object_store(cluster: NetCluster, ml_run: int) -> None:
    from tests.jupyter_procs import start_jupyter

    run_id = ml_run
    env = {**cluster.driver_env(), "NBFLOW_DAGS_FOLDER": str(cluster.dags), "NBFLOW_MANAGE_SCHEDULER": "0"}
    server = start_jupyter(cluster.driver_folder, env)
    try:
        status, details = server.request("GET", f"runs/{run_id}")
        assert status == 200 and details["run"]["state"] == "success"
        outputs = {a["task_id"]: a["output_uri"] for a in details["attempts"] if a["output_uri"]}
        assert outputs["train"] == f"s3://nbflow/runs/ml_cluster/run-{run_id}/train/try-1/output.ipynb"
        status, log = server.request("GET", f"runs/{run_id}/tasks/report/log")
        assert status == 200 and "C=0.5: accuracy" in json.dumps(log)
        # the output notebook through the extension's read-only drive, from the store
        status, model = server.request("GET", f"contents/ml_cluster/run-{run_id}/train/try-1/output.ipynb")
        assert status == 200 and model["type"] == "notebook" and model["writable"] is False
        assert any("LogisticRegression" in "".join(cell["source"]) for cell in model["content"]["cells"])
    finally:
        server.stop()


def test_queue_gpu_lands_only_on_the_gpu_host(cluster: NetCluster) -> None:
    run_id = run_id_of(nbflow(cluster, "run", str(cluster.dags / "placement.py")).stdout)
    with as_driver(cluster) as api:
        hosts = {t: api.load_output(run_id, t) for t in [f"{k}_{i}" for k in ("gpu", "cpu") for i in range(6)]}
    gpu = cluster.hosts["gpu"].netns
    assert {hosts[f"gpu_{i}"] for i in range(6)} == {gpu}
    assert gpu not in {hosts[f"cpu_{i}"] for i in range(6)}
    assert {hosts[f"cpu_{i}"] for i in range(6)} <= {cluster.hosts["w1"].netns, cluster.hosts["w2"].netns}


def test_a_host_that_cannot_import_the_pipelines_module_says_so(cluster: NetCluster) -> None:
    done = nbflow(cluster, "run", str(cluster.dags / "uses_helpers.py"), check=False)
    assert done.returncode != 0
    [attempt] = attempts(cluster, run_id_of(done.stdout))
    assert attempt["state"] == "failed"
    message = attempt["message"]
    assert f"worker {cluster.hosts['bare'].netns} cannot load task 'doubled'" in message
    assert "No module named 'helpers'" in message and "must be importable on every worker" in message


def _start_run(cluster: NetCluster, pipeline: str) -> tuple[subprocess.Popen, int]:
    """``nbflow run`` in the background; (the process, its run id)."""
    proc = subprocess.Popen(
        ["nbflow", "run", str(cluster.dags / pipeline)],
        env=cluster.driver_env(),
        cwd=cluster.driver_folder,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    first = proc.stdout.readline()
    return proc, run_id_of(first)


def _running(cluster: NetCluster, run_id: int, task: str) -> dict[str, Any] | None:
    return next((a for a in attempts(cluster, run_id) if a["task_id"] == task and a["state"] == "running"), None)


def test_object_store_unreachable_for_30_s(cluster: NetCluster) -> None:
    proc, run_id = _start_run(cluster, "outage.py")
    try:
        wait_for(lambda: _running(cluster, run_id, "step_1"), 60, "step_1 to start", interval=0.3)
        cluster.cut("s3")
        time.sleep(30)
        cluster.restore("s3")
        output, _ = proc.communicate(timeout=240)
    finally:
        cluster.restore("s3")
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, output
    rows = attempts(cluster, run_id)
    failed = [a for a in rows if a["state"] != "success"]
    assert failed, f"no attempt failed while the store was away: {rows}"
    for attempt in failed:  # a clear reason: the store could not be written or read, and where
        assert attempt["reason"] == "storage_error", (
            attempt["task_id"],
            attempt["reason"],
            attempt["message"],
            attempt["traceback"],
        )
        assert "s3://nbflow/runs/outage/" in attempt["message"] and "NBFLOW_ARTIFACT_ROOT" in attempt["message"]
    s3 = cluster.s3fs()
    successes = [a for a in rows if a["state"] == "success"]
    assert sorted(a["task_id"] for a in successes) == [f"step_{i}" for i in range(4)]  # one success each
    for attempt in successes:  # none recorded without its output
        folder = f"nbflow/runs/outage/run-{run_id}/{attempt['task_id']}/try-{attempt['try_number']}"
        assert s3.exists(f"{folder}/artifacts/return.json"), folder
    with as_driver(cluster) as api:
        assert api.load_output(run_id, "step_3") == 4


def test_a_cut_link_is_one_lost_try_then_one_success_elsewhere(cluster: NetCluster) -> None:
    proc, run_id = _start_run(cluster, "long.py")
    try:
        first = wait_for(lambda: _running(cluster, run_id, "slow"), 60, "the task to start", interval=0.3)
        time.sleep(1)
        lost = host_of(cluster, first)
        cluster.cut(lost)
        retry = wait_for(
            lambda: (a := _running(cluster, run_id, "slow")) and a["try_number"] == 2 and a,
            90,
            "the retry to start",
            interval=0.3,
        )
        assert host_of(cluster, retry) != lost
        # The link comes back while the retry runs: the lost host's worker (its first attempt
        # ended meanwhile) talks to the scheduler again, and the driver is still listening.
        cluster.restore(lost)
        output, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, output
        rows = attempts(cluster, run_id)
        assert [(a["try_number"], a["state"], a["reason"]) for a in rows] == [
            (1, "up_for_retry", "worker_lost"),
            (2, "success", None),
        ], rows
        assert host_of(cluster, rows[0]) == lost and host_of(cluster, rows[1]) != lost
        assert "KilledWorker" in rows[0]["message"]  # Dask removed the worker while it ran the attempt
        # ... and heard from it again before the run ended: its late word changed nothing
        assert f"unregistered worker 'tcp://{cluster.hosts[lost].address}:" in cluster.hosts["dask"].log(
            "scheduler.log"
        )
        with as_driver(cluster) as api:
            assert api.load_output(run_id, "slow") == cluster.hosts[host_of(cluster, rows[1])].netns
            assert api.run_details(run_id)["run"]["state"] == "success"
    finally:
        for name in WORKERS:
            cluster.restore(name)
        if proc.poll() is None:
            proc.kill()
