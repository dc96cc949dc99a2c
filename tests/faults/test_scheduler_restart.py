"""kill -9 of the scheduler mid-run, then a restart: the run finishes, nothing runs twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from nbflow import api
from tests.waiting import wait_for

pytestmark = pytest.mark.faults

PIPE = """
import time
from pathlib import Path
from nbflow import Pipeline, task

HERE = Path(__file__).parent

def mark(name):
    with open(HERE / "executions.log", "a") as fh:
        fh.write(name + "\\n")

with Pipeline("survivor") as pipeline:
    @task
    def first():
        mark("first")
        return 1

    @task
    def slow(x):
        mark("slow")
        time.sleep(4)
        return x + 1

    @task
    def last(y):
        mark("last")
        return y * 10

    last(slow(first()))
"""


def start_scheduler(env, log):
    return subprocess.Popen(
        [sys.executable, "-m", "nbflow", "scheduler", "-e", "local", "-j", "2"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def test_scheduler_killed_mid_run_resumes_after_restart(tmp_path, nbflow_home, monkeypatch):
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "survivor.py").write_text(textwrap.dedent(PIPE))
    env = {
        **os.environ,
        "NBFLOW_HOME": str(nbflow_home),
        "NBFLOW_DAGS_FOLDER": str(dags),
        "NBFLOW_ORPHAN_TIMEOUT": "2",
        "NBFLOW_HEARTBEAT": "0.3",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    api.reset()
    log = open(tmp_path / "scheduler.log", "ab")  # noqa: SIM115
    first = start_scheduler(env, log)
    try:
        wait_for(lambda: api.list_pipelines(), timeout=60)
        run_id = api.trigger("survivor", start=False)
        state = lambda: {t["task_id"]: t["state"] for t in api.run_details(run_id)["tasks"]}  # noqa: E731
        wait_for(lambda: state().get("slow") == "running", timeout=60)
        os.killpg(first.pid, signal.SIGKILL)  # the scheduler and its worker processes die
        first.wait()
        time.sleep(2.5)  # its lease expires
        second = start_scheduler(env, log)
        try:
            wait_for(lambda: api.run_details(run_id)["run"]["state"] == "success", timeout=90)
        finally:
            second.send_signal(signal.SIGTERM)
            second.wait(30)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
    details = api.run_details(run_id)
    assert api.load_output(run_id, "last") == 20
    assert [t["state"] for t in details["tasks"]] == ["success"] * 3
    executions = (dags / "executions.log").read_text().split()
    assert executions.count("first") == 1 and executions.count("last") == 1  # nothing finished twice
    slow = [a for a in details["attempts"] if a["task_id"] == "slow"]
    assert [(a["state"], a["reason"]) for a in slow] == [("up_for_retry", "worker_lost"), ("success", None)]
    assert len(api.list_runs("survivor")) == 1
