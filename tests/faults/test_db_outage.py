"""Every driver rides out a database outage (RELIABILITY 31): `nbflow run` for 120 s and
`nbflow drive` for 45 s against the real PostgreSQL, through a proxy the test cuts. Attempts
that finish meanwhile keep their results, written when the database is back; the run ends
as it would have, with exit code 0 and each task run once."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nbflow import api
from nbflow.loader import load_pipeline
from tests.faults.proxy import Proxy

pytestmark = [pytest.mark.faults, pytest.mark.postgres, pytest.mark.slow, pytest.mark.timeout(400)]

PIPE = """
import time
from pathlib import Path
from nbflow import Pipeline, task

HERE = Path(__file__).parent

def mark(name):
    with open(HERE / "executions.log", "a") as fh:
        fh.write(name + "\\n")

with Pipeline("outage") as pipeline:
    @task
    def first():
        mark("first")
        return 1

    @task
    def slow(x):
        mark("slow")
        (HERE / "slow-started").write_text("x")
        time.sleep(4)
        (HERE / "slow-done").write_text("x")
        return x + 1

    @task
    def last(y):
        mark("last")
        return y * 10

    last(slow(first()))
"""


def _wait_for(path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path.name} did not appear"
        time.sleep(0.05)


def _through_outage(pg_url: str, write_pipeline, argv: list[str], outage: float, prepare=None) -> tuple[int, float, float]:
    """Start ``nbflow <argv>`` on the database through a proxy, cut it while `slow` runs, restore
    it ``outage`` seconds later; returns (run id, cut time, restore time)."""
    path = write_pipeline(PIPE)
    proxy = Proxy("127.0.0.1", 5432)
    proxied = pg_url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
    run_id = prepare(path) if prepare else None
    env = {**os.environ, "NBFLOW_DB_URL": proxied}
    args = [a.replace("{path}", str(path)).replace("{run}", str(run_id)) for a in argv]
    proc = subprocess.Popen([sys.executable, "-m", "nbflow", *args], env=env, cwd=path.parent,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _wait_for(path.parent / "slow-started", 90)
        proxy.cut()
        cut = time.time()
        _wait_for(path.parent / "slow-done", 30)  # the attempt ends while the database is away
        time.sleep(max(0.0, cut + outage - time.time()))
        assert proc.poll() is None, proc.communicate()  # still alive after the whole outage
        proxy.restore()
        restored = time.time()
        out, err = proc.communicate(timeout=120)
    finally:
        proxy.close()
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out + err
    assert "database unreachable" in err  # the user is told why nothing moves
    assert (path.parent / "executions.log").read_text().split() == ["first", "slow", "last"]  # each ran once
    run_id = run_id or api.list_runs("outage")[0]["id"]
    return run_id, cut, restored


def _check_recorded(run_id: int, cut: float, restored: float) -> None:
    details = api.run_details(run_id)
    assert details["run"]["state"] == "success" and details["run"]["driver_id"] is not None
    attempts = {a["task_id"]: a for a in details["attempts"]}
    assert {t: (a["try_number"], a["state"]) for t, a in attempts.items()} == {
        "first": (1, "success"), "slow": (1, "success"), "last": (1, "success")
    }
    # slow's result was kept through the outage: it ended before the database came back
    assert cut < attempts["slow"]["end_date"].timestamp() < restored
    assert api.load_output(run_id, "last") == 20


def test_nbflow_run_rides_out_a_120_s_outage(pg_url, write_pipeline):
    run_id, cut, restored = _through_outage(pg_url, write_pipeline, ["run", "{path}", "-e", "local", "-j", "1"], 120)
    _check_recorded(run_id, cut, restored)


def test_nbflow_drive_rides_out_an_outage(pg_url, write_pipeline):
    def queue(path: Path) -> int:
        return api.create_run(load_pipeline(path), trigger="manual", executor="local")

    run_id, cut, restored = _through_outage(pg_url, write_pipeline, ["drive", "{run}", "-e", "local", "-j", "1"], 45, queue)
    _check_recorded(run_id, cut, restored)
