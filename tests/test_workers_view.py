"""The workers view (``nbflow workers``, ``GET workers``) against a real Dask scheduler and
``nbflow worker`` processes: who runs what now, and the queue no worker serves."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from nbflow import api
from nbflow.cli import main as cli_main
from tests.openapi_check import check_answer
from tests.test_dask_executor import Cluster, _free_port, _serve

pytestmark = pytest.mark.slow

BUSY = """
import time
from nbflow import Pipeline, task

with Pipeline("busy") as pipeline:
    @task(queue="gpu")
    def train():
        time.sleep(60)

    @task(queue="bigmem")
    def huge():
        return 1

    train()
    huge()
"""


@pytest.fixture
def two_workers(tmp_path, nbflow_home, monkeypatch):
    c = Cluster(tmp_path)
    c.worker("cpu1", "default")
    c.worker("gpu1", "gpu", "default")
    try:
        yield _serve(c, 2, monkeypatch)
    finally:
        c.close()


def _cli(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    code = cli_main(["workers", *args], out=out)
    return code, out.getvalue()


def test_workers_show_what_each_runs_and_the_queue_nobody_serves(two_workers, write_pipeline, nbflow_home):
    path = write_pipeline(BUSY)
    env = {**os.environ, "NBFLOW_HOME": str(nbflow_home), "NBFLOW_DASK_ADDRESS": two_workers.address}
    driver = subprocess.Popen(
        [sys.executable, "-m", "nbflow", "run", str(path), "-e", "dask"], env=env, start_new_session=True
    )
    try:
        view = None
        for _ in range(300):  # until train runs on gpu1 and huge waits for a bigmem worker
            view = api.list_workers()
            gpu = next(w for w in view.workers if w.name == "gpu1")
            if [r["state"] for r in gpu.running] == ["running"] and view.unserved:
                break
            time.sleep(0.2)
        assert view is not None and view.reachable and view.address == two_workers.address
        by_name = {w.name: w for w in view.workers}
        assert set(by_name) == {"cpu1", "gpu1"}
        assert by_name["gpu1"].queues == ["default", "gpu"] and by_name["cpu1"].queues == ["default"]
        assert by_name["gpu1"].running == [
            {"pipeline": "busy", "run_id": 1, "task_id": "train", "try_number": 1, "state": "running"}
        ]
        assert by_name["cpu1"].running == []
        assert all(w.slots == 1 and w.memory and w.memory_limit and w.last_seen_s is not None for w in view.workers)
        assert all(w.last_seen_s < 30 for w in view.workers)
        assert view.unserved == [
            {
                "queue": "bigmem",
                "waiting": 1,
                "why": "no worker serves queue 'bigmem' (served: default, gpu)",
                "command": f"nbflow worker --scheduler {two_workers.address} --queue bigmem",
            }
        ]
        check_answer("GET", "workers", 200, "application/json", json.loads(json.dumps(view.as_dict())))

        code, text = _cli()
        assert code == 0, text
        assert f"dask cluster {two_workers.address}" in text
        lines = {line.split()[0]: line for line in text.splitlines() if line.startswith(("cpu1", "gpu1"))}
        assert "busy/1/train#1" in lines["gpu1"] and "default,gpu" in lines["gpu1"]
        assert "idle" in lines["cpu1"]
        assert (
            f"! queue bigmem: 1 task(s) waiting; no worker serves queue 'bigmem' (served: default, gpu); "
            f"start one with: nbflow worker --scheduler {two_workers.address} --queue bigmem" in text
        )
        code, text = _cli("--json")
        assert code == 0 and json.loads(text)["workers"][1]["running"][0]["task_id"] == "train"
    finally:
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()


def test_no_cluster_configured_says_how_to_get_one(nbflow_home, monkeypatch):
    monkeypatch.delenv("NBFLOW_DASK_ADDRESS", raising=False)
    api.reset()
    view = api.list_workers()
    assert view.workers == [] and view.reachable and view.address is None
    assert "NBFLOW_DASK_ADDRESS" in (view.note or "") and "nbflow worker --scheduler" in (view.note or "")
    check_answer("GET", "workers", 200, "application/json", json.loads(json.dumps(view.as_dict())))
    code, text = _cli()
    assert code == 0 and "no Dask cluster is configured" in text


def test_unreachable_scheduler_is_said_and_fails_the_command(nbflow_home):
    address = f"tcp://127.0.0.1:{_free_port()}"  # nothing listens there
    view = api.list_workers(address=address, timeout=1.0)
    assert not view.reachable and view.workers == []
    assert f"the Dask scheduler at {address} cannot be reached" in (view.note or "")
    code, text = _cli("--scheduler", address)
    assert code == 1 and "cannot be reached" in text
