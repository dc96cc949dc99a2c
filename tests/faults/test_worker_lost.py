"""A local worker process that dies mid-task costs one try; the run goes on."""

from __future__ import annotations

import pytest

from nbflow import api
from nbflow.loader import load_pipeline

pytestmark = pytest.mark.faults

DIES = """
import os, signal
from pathlib import Path
from nbflow import Pipeline, task

MARK = Path(__file__).parent / "died_once"

with Pipeline("dies") as pipeline:
    @task(retries=1)
    def dies_first():
        if not MARK.exists():
            MARK.write_text("x")
            os.kill(os.getpid(), signal.SIGKILL)   # the worker process itself dies
        return "survived"

    @task
    def sibling():
        return "unaffected"

    @task
    def after(x, y):
        return x + " " + y

    after(dies_first(), sibling())
"""


def test_killed_worker_is_retried_on_a_new_worker(nbflow_home, write_pipeline):
    result = api.run_pipeline(load_pipeline(write_pipeline(DIES)), executor="local", parallelism=2)
    assert result.ok, result.tasks
    assert api.load_output(result.run_id, "after") == "survived unaffected"
    attempts = [a for a in api.run_details(result.run_id)["attempts"] if a["task_id"] == "dies_first"]
    assert [a["state"] for a in attempts] == ["up_for_retry", "success"]
    assert attempts[0]["reason"] == "worker_lost" and "SIGKILL" in attempts[0]["message"]
    assert attempts[0]["pid"] != attempts[1]["pid"]
    successes = [t for t in result.tasks if t["state"] == "success"]
    assert len(successes) == 3  # exactly one success per task


ALWAYS_DIES = """
import os, signal
from nbflow import Pipeline, task

with Pipeline("always_dies") as pipeline:
    @task(retries=1)
    def poison():
        os.kill(os.getpid(), signal.SIGKILL)

    @task
    def healthy():
        return "ok"

    poison()
    healthy()
"""


def test_task_that_kills_every_worker_fails_as_killed_worker(nbflow_home, write_pipeline):
    result = api.run_pipeline(load_pipeline(write_pipeline(ALWAYS_DIES)), executor="local", parallelism=2)
    row = result.task("poison")
    assert row["state"] == "failed" and row["reason"] == "killed_worker"
    # retries=1: two tries of its own plus max_infra_retries (2) lost-worker tries that cost no retry
    assert "the worker died during each of 4 tries" in row["error"]
    assert result.task("healthy")["state"] == "success"  # the others and the pool recover
    attempts = [a for a in api.run_details(result.run_id)["attempts"] if a["task_id"] == "poison"]
    assert [a["reason"] for a in attempts] == ["worker_lost"] * 4
    assert ["no retry used" in a["message"] for a in attempts] == [True, True, False, False]


SHELL_CHILD = """
from nbflow import Pipeline, shell

with Pipeline("shell_child") as pipeline:
    # the first try sleeps (a command of its own session, as every shell task's); the retry is quick
    shell('if [ "$NBFLOW_TRY_NUMBER" = 1 ]; then sleep {seconds}; fi; echo done', name="nap", retries=1)
"""


def test_a_killed_local_worker_takes_its_shell_command_with_it(nbflow_home, write_pipeline):
    """RELIABILITY 40: the command leads a process group of its own, so it would outlive a
    SIGKILLed worker, reparented to init, beside its own retry. The executor knows the group
    and kills it when it sees the worker die."""
    import os
    import signal
    import threading
    import time

    import psutil

    seconds = f"97.{os.getpid()}"  # unique to this test process: nothing else runs this command
    pipeline = load_pipeline(write_pipeline(SHELL_CHILD.replace("{seconds}", seconds)))
    done: dict = {}
    driver = threading.Thread(target=lambda: done.update(r=api.run_pipeline(pipeline, executor="local", parallelism=1)))
    driver.start()

    def sleeper() -> psutil.Process | None:
        return next((p for p in psutil.process_iter(["cmdline"]) if p.info["cmdline"] == ["sleep", seconds]), None)

    deadline = time.monotonic() + 60
    while (nap := sleeper()) is None:
        assert time.monotonic() < deadline, "the command never started"
        time.sleep(0.05)
    worker = next(p for p in nap.parents() if "nbflow.executors.local" in " ".join(p.cmdline()))
    os.kill(worker.pid, signal.SIGKILL)
    psutil.wait_procs([nap], timeout=5)
    assert not nap.is_running() or nap.status() == psutil.STATUS_ZOMBIE, "the command outlived its worker"
    driver.join(60)
    result = done["r"]
    assert result.ok, result.tasks
    attempts = api.run_details(result.run_id)["attempts"]
    assert [(a["state"], a["reason"]) for a in attempts] == [("up_for_retry", "worker_lost"), ("success", None)]
    assert "done" in api.read_log(result.run_id, "nap")
