"""Every driver rides out a database outage (RELIABILITY 31): `nbflow run` and `nbflow drive`
for 120 s together against the real PostgreSQL, through a proxy the test cuts. Attempts
that finish meanwhile keep their results, written when the database is back; the run ends
as it would have, with exit code 0 and each task run once."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

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


def _through_outage(pg_url: str, write_pipeline, jobs: dict[str, tuple[list[str], Any]], outage: float) -> dict:
    """Start one ``nbflow <argv>`` per job (pipeline ``name``, each in its own folder) on the
    database through one proxy, cut it once every job's `slow` runs, restore it ``outage``
    seconds later; returns {name: (run id, cut time, restore time)}."""
    proxy = Proxy("127.0.0.1", 5432)
    proxied = pg_url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
    env = {**os.environ, "NBFLOW_DB_URL": proxied}
    started: dict[str, tuple[Path, int | None, subprocess.Popen]] = {}
    try:
        for name, (argv, prepare) in jobs.items():
            path = write_pipeline(PIPE.replace('Pipeline("outage")', f'Pipeline("{name}")'), folder=name)
            run_id = prepare(path) if prepare else None
            args = [a.replace("{path}", str(path)).replace("{run}", str(run_id)) for a in argv]
            proc = subprocess.Popen(
                [sys.executable, "-m", "nbflow", *args],
                env=env,
                cwd=path.parent,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                start_new_session=True,
            )
            started[name] = (path, run_id, proc)
        for path, _, _ in started.values():
            _wait_for(path.parent / "slow-started", 90)
        proxy.cut()
        cut = time.time()
        for path, _, _ in started.values():
            _wait_for(path.parent / "slow-done", 30)  # the attempts end while the database is away
        time.sleep(max(0.0, cut + outage - time.time()))
        for _, _, proc in started.values():
            assert proc.poll() is None, proc.communicate()  # still alive after the whole outage
        proxy.restore()
        restored = time.time()
        outputs = {name: proc.communicate(timeout=120) for name, (_, _, proc) in started.items()}
    finally:
        proxy.close()
        for _, _, proc in started.values():
            if proc.poll() is None:
                proc.kill()
    found = {}
    for name, (path, run_id, proc) in started.items():
        out, err = outputs[name]
        assert proc.returncode == 0, f"{name}: {out}{err}"
        assert "database unreachable" in err, name  # the user is told why nothing moves
        assert (path.parent / "executions.log").read_text().split() == ["first", "slow", "last"], name  # once each
        found[name] = (run_id or api.list_runs(name)[0]["id"], cut, restored)
    return found


def _check_recorded(run_id: int, cut: float, restored: float) -> None:
    details = api.run_details(run_id)
    assert details["run"]["state"] == "success" and details["run"]["driver_id"] is not None
    attempts = {a["task_id"]: a for a in details["attempts"]}
    assert {t: (a["try_number"], a["state"]) for t, a in attempts.items()} == {
        "first": (1, "success"),
        "slow": (1, "success"),
        "last": (1, "success"),
    }
    # slow's result was kept through the outage: it ended before the database came back
    assert cut < attempts["slow"]["end_date"].timestamp() < restored
    assert api.load_output(run_id, "last") == 20


def test_nbflow_run_and_nbflow_drive_ride_out_a_120_s_outage(pg_url, write_pipeline):
    """Both front doors that drive runs in a process of their own, through the same outage."""

    def queue(path: Path) -> int:
        return api.create_run(load_pipeline(path), trigger="manual", executor="local")

    found = _through_outage(
        pg_url,
        write_pipeline,
        {
            "outage_run": (["run", "{path}", "-e", "local", "-j", "1"], None),
            "outage_drive": (["drive", "{run}", "-e", "local", "-j", "1"], queue),
        },
        120,
    )
    for run_id, cut, restored in found.values():
        _check_recorded(run_id, cut, restored)


SLOW = """
import time
from nbflow import Pipeline, task

with Pipeline("taken") as pipeline:
    @task
    def slow():
        time.sleep(3)
        return "done"

    slow()
"""


def test_after_an_outage_longer_than_its_lease_a_driver_leaves_the_runs_another_took(pg_url, write_pipeline):
    """Driver A loses the database for longer than its lease; driver B claims A's run (A looks
    dead). When the database is back, A must see that the run is B's and stop driving it, so a
    run never has two drivers; B brings it to its end."""
    from nbflow.config import get_settings
    from nbflow.driver import Driver
    from nbflow.executors import get_executor
    from nbflow.states import RunState
    from nbflow.store import Store

    settings = get_settings().with_overrides(orphan_timeout=1.0, heartbeat=0.2, cancel_poll=0.2, db_retries=1)
    proxy = Proxy("127.0.0.1", 5432)
    store_a = Store(pg_url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}"), settings=settings)
    store_b = Store(pg_url, settings=settings)
    pipeline = load_pipeline(write_pipeline(SLOW))
    run_id = api.create_run(pipeline, executor="local", store=store_b)
    a = Driver(store_a, get_executor("local", parallelism=1))
    b = Driver(store_b, get_executor("local", parallelism=1))
    a.start()
    try:
        assert a.claim(pipeline, run_id)
        deadline = time.monotonic() + 60
        while store_b.task_instances(run_id)[0]["state"] != "running":
            assert time.monotonic() < deadline
            a.loop_once(0.1)
        proxy.cut()
        while not a.in_outage:
            a.loop_once(0.1)
        time.sleep(settings.orphan_timeout + 0.5)  # A's lease has expired
        b.start()
        assert b.claim(pipeline, run_id)  # B may take it: A looks dead
        proxy.restore()
        deadline = time.monotonic() + 60
        while a.in_outage or a.owns(run_id):
            assert time.monotonic() < deadline, "A never noticed that the run is B's"
            a.loop_once(0.2)
        assert a.status == "ok" and not a.busy and run_id not in a.ended  # A wrote no end of B's run
        assert b.drive([run_id]) == {run_id: RunState.SUCCESS}
    finally:
        proxy.close()
        a.close()
        b.close()
    run = store_b.get_run(run_id)
    assert run["state"] == "success" and run["driver_id"] == b.job_id
    assert store_b.task_instances(run_id)[0]["state"] == "success"
    # try 1 was B's to judge (lost with A's worker pool), try 2 B's own: A recorded neither
    attempts = [(x["try_number"], x["state"], x["reason"]) for x in store_b.attempts(run_id)]
    assert attempts == [(1, "up_for_retry", "worker_lost"), (2, "success", None)]
