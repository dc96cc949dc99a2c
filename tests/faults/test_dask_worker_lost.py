"""RELIABILITY 18, 19 and 33: a Dask worker that dies charges only the attempt it had begun.

A real ``dask scheduler`` and ``nbflow worker`` processes (a Nanny restarts a worker that was
SIGKILLed). The scheduler runs with ``allowed-failures=0`` as the README tells an operator, and
without queuing (``worker-saturation=inf``), so that a task waiting behind another is held by
the worker itself and dies with it.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from nbflow import api
from nbflow.loader import load_pipeline
from tests.test_dask_executor import Cluster, _serve

pytestmark = [pytest.mark.faults, pytest.mark.slow]

NO_QUEUING = {"DASK_DISTRIBUTED__SCHEDULER__WORKER_SATURATION": "inf"}


@pytest.fixture
def one_worker(tmp_path, nbflow_home, monkeypatch):
    """One nthreads=1 worker (its Nanny starts a new one when it is killed)."""
    c = Cluster(tmp_path, scheduler_env=NO_QUEUING)
    c.worker("w1", "default")
    try:
        yield _serve(c, 1, monkeypatch)
    finally:
        c.close()


def _kill_when_written(marker: Path, killed: list[int]) -> threading.Thread:
    """SIGKILL the worker process whose pid a task writes into ``marker`` (once)."""

    def kill() -> None:
        for _ in range(600):
            if marker.exists() and marker.read_text():
                killed.append(int(marker.read_text()))
                time.sleep(0.3)  # the task behind it reaches the worker
                os.kill(killed[0], signal.SIGKILL)
                return
            time.sleep(0.05)

    thread = threading.Thread(target=kill, daemon=True)
    thread.start()
    return thread


SLOW_AND_QUEUED = """
import os, time
from pathlib import Path
from nbflow import Pipeline, task

HERE = Path(__file__).parent

with Pipeline("slow_queued") as pipeline:
    @task(retries=0)
    def x():
        marker = HERE / "x.pid"
        if not marker.exists():
            marker.write_text(str(os.getpid()))
            time.sleep(60)
        return "x"

    @task(retries=0)
    def y():
        return os.getpid()

    x()
    y()
"""


def test_queued_attempt_of_a_lost_worker_is_resubmitted_without_a_try(one_worker, write_pipeline):
    """x runs, y waits behind it on the one nthreads=1 worker; the worker is SIGKILLed. y never
    started: resubmitted, no try charged. x had started: one worker_lost try (with the dead
    worker's address and pid) that costs no retry, then success."""
    path = write_pipeline(SLOW_AND_QUEUED)
    killed: list[int] = []
    thread = _kill_when_written(path.parent / "x.pid", killed)
    result = api.run_pipeline(load_pipeline(path), executor="dask")
    thread.join()
    assert killed, "x never started"
    assert result.ok, [(t["task_id"], t["state"], t["error"]) for t in result.tasks]
    attempts = api.run_details(result.run_id)["attempts"]
    ys = [a for a in attempts if a["task_id"] == "y"]
    assert [(a["try_number"], a["state"], a["reason"]) for a in ys] == [(1, "success", None)]
    assert api.load_output(result.run_id, "y") != killed[0]  # it ran after the kill, elsewhere
    assert result.task("y")["try_number"] == 1
    assert ys[0]["executor_key"].endswith("r1")  # it was on the dead worker: resubmitted under a new key
    xs = [a for a in attempts if a["task_id"] == "x"]
    assert [(a["state"], a["reason"]) for a in xs] == [("up_for_retry", "worker_lost"), ("success", None)]
    assert xs[0]["pid"] == killed[0] and xs[0]["hostname"], xs[0]
    assert "KilledWorker" in xs[0]["message"] and "no retry used" in xs[0]["message"]


ZERO_RETRIES = """
import os, time
from pathlib import Path
from nbflow import Pipeline, task

HERE = Path(__file__).parent

with Pipeline("zero_retries") as pipeline:
    @task(retries=0)
    def once():
        marker = HERE / "once.pid"
        if not marker.exists():
            marker.write_text(str(os.getpid()))
            time.sleep(60)
        return "survived"

    once()
"""


def test_task_without_retries_survives_one_lost_worker(one_worker, write_pipeline):
    path = write_pipeline(ZERO_RETRIES)
    killed: list[int] = []
    thread = _kill_when_written(path.parent / "once.pid", killed)
    result = api.run_pipeline(load_pipeline(path), executor="dask")
    thread.join()
    assert killed and result.ok, result.tasks
    assert api.load_output(result.run_id, "once") == "survived"
    row = result.task("once")
    assert (row["try_number"], row["max_tries"]) == (2, 2)  # the lost try was given back
    attempts = api.run_details(result.run_id)["attempts"]
    assert [(a["state"], a["reason"]) for a in attempts] == [("up_for_retry", "worker_lost"), ("success", None)]


KILLS_EVERY_WORKER = """
import os, signal
from nbflow import Pipeline, task

with Pipeline("kills_every_worker") as pipeline:
    @task(retries=0)
    def poison():
        os.kill(os.getpid(), signal.SIGKILL)

    poison()
"""


def test_task_that_kills_every_worker_ends_after_bounded_tries(one_worker, write_pipeline):
    """RELIABILITY 19: 1 + max_infra_retries tries (retries=0), then killed_worker."""
    result = api.run_pipeline(load_pipeline(write_pipeline(KILLS_EVERY_WORKER)), executor="dask")
    row = result.task("poison")
    assert row["state"] == "failed" and row["reason"] == "killed_worker", row
    assert "the worker died during each of 3 tries" in row["error"]
    attempts = api.run_details(result.run_id)["attempts"]
    assert [a["reason"] for a in attempts] == ["worker_lost"] * 3
    assert all(a["pid"] for a in attempts)  # each had started: its marker names the worker process


def test_external_cluster_allowed_failures_is_read_not_changed(tmp_path, nbflow_home, monkeypatch, caplog):
    """Issue 11 item 6: nbflow leaves a cluster it did not start as it is and says what that means."""
    from distributed import Client

    from nbflow.executors import daskconf
    from nbflow.executors.dask import DaskExecutor

    c = Cluster(tmp_path, scheduler_env={"DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "3"})
    try:
        c.worker("w1", "default")
        c.wait_for(1)
        monkeypatch.setattr(daskconf, "_warned", set())
        with caplog.at_level(logging.WARNING, logger="nbflow.executors.dask"):
            for _ in range(2):
                executor = DaskExecutor(address=c.address)
                executor.start()
                executor.shutdown()
        warnings = [r.getMessage() for r in caplog.records if "allowed-failures" in r.getMessage()]
        assert len(warnings) == 1, warnings  # once per scheduler
        assert "distributed.scheduler.allowed-failures = 3" in warnings[0]
        assert "DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES=0" in warnings[0]
        with Client(c.address, timeout="10s") as client:
            assert client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.allowed_failures) == 3
    finally:
        c.close()


def test_guarantee_depends_on_the_cluster(nbflow_home):
    """Issue 12 item 10: the embedded LocalCluster dies with the driver (at least once); an
    external cluster outlives it and the next driver adopts the attempt (exactly once)."""
    from nbflow.executors.dask import DaskExecutor

    embedded = DaskExecutor(parallelism=1).guarantee
    assert "at least once" in embedded and "exactly once" in embedded.split("(")[-1]  # names the way to it
    assert embedded.startswith("the embedded Dask cluster dies with this process")
    external = DaskExecutor(address="tcp://127.0.0.1:1").guarantee
    assert external.endswith("(exactly once)") and "at least once" not in external
