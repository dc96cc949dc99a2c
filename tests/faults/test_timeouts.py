"""Timeouts kill what the task started: python functions, shell commands (and their children)."""

from __future__ import annotations

import time

import pytest

from nbflow import api
from nbflow.loader import load_pipeline
from tests.conftest import pid_alive

pytestmark = pytest.mark.faults

SLOW = """
import os, subprocess, time
from pathlib import Path
from nbflow import Pipeline, task, shell

HERE = Path(__file__).parent

with Pipeline("slow") as pipeline:
    @task(timeout=1)
    def slow_python():
        child = subprocess.Popen(["sleep", "60"])
        (HERE / "python_child.pid").write_text(str(child.pid))
        (HERE / "python_task.pid").write_text(str(os.getpid()))
        time.sleep(60)

    slow_shell = shell("sleep 60 & echo $! > shell_child.pid; wait", name="slow_shell", timeout=1)

    @task(timeout=5)
    def quick():
        return "fast enough"

    quick()
    slow_python()
"""


@pytest.mark.parametrize("executor", ["inline", "local"])
def test_timeouts_kill_the_task_and_its_children(nbflow_home, write_pipeline, executor):
    path = write_pipeline(SLOW)
    t0 = time.monotonic()
    result = api.run_pipeline(load_pipeline(path), executor=executor)
    elapsed = time.monotonic() - t0
    tis = {t["task_id"]: t for t in result.tasks}
    assert tis["slow_python"]["state"] == "failed" and tis["slow_python"]["reason"] == "task_timeout"
    assert tis["slow_shell"]["state"] == "failed" and tis["slow_shell"]["reason"] == "task_timeout"
    assert "timeout=1s" in tis["slow_python"]["error"]
    assert tis["quick"]["state"] == "success" and api.load_output(result.run_id, "quick") == "fast enough"
    assert elapsed < 30  # nowhere near the 60 s the tasks wanted
    time.sleep(0.5)
    for name in ("python_child.pid", "python_task.pid", "shell_child.pid"):
        pid = int((path.parent / name).read_text())
        assert not pid_alive(pid), f"{name} ({pid}) survived the timeout"
