"""Two schedulers on one PostgreSQL database: every run created once, every task started once,
even when one scheduler is killed mid-way."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from nbflow import api

pytestmark = [pytest.mark.faults, pytest.mark.postgres]

HOURS = 60

PIPE = """
from nbflow import Pipeline, task

with Pipeline("ha", schedule="@hourly", start_date={start!r}, catchup=True, max_active_runs=100) as pipeline:
    @task
    def extract(logical_date):
        return logical_date.hour

    @task
    def load(h):
        return h + 1

    load(extract())
"""


def test_two_schedulers_create_and_start_everything_exactly_once(tmp_path, pg_url, nbflow_home):
    dags = tmp_path / "dags"
    dags.mkdir()
    start = (datetime.now(UTC) - timedelta(hours=HOURS)).replace(minute=0, second=0, microsecond=0)
    (dags / "ha.py").write_text(textwrap.dedent(PIPE.format(start=start.isoformat())))
    env = {
        **os.environ,
        "NBFLOW_HOME": str(nbflow_home),
        "NBFLOW_DB_URL": pg_url,
        "NBFLOW_DAGS_FOLDER": str(dags),
        "NBFLOW_ORPHAN_TIMEOUT": "3",
        "NBFLOW_HEARTBEAT": "0.3",
    }
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "nbflow", "scheduler", "-e", "inline"],
            env=env,
            stdout=open(tmp_path / f"s{i}.log", "wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # noqa: SIM115
        for i in range(2)
    ]
    store = api.open_store()
    try:
        deadline = time.time() + 60
        while time.time() < deadline and store.count_runs("ha") < HOURS // 3:
            time.sleep(0.2)
        os.killpg(procs[0].pid, signal.SIGKILL)  # one scheduler dies mid-way
        procs[0].wait()
        deadline = time.time() + 240
        while time.time() < deadline:
            runs = store.list_runs("ha", limit=1000)
            if len(runs) >= HOURS and all(r["state"] == "success" for r in runs):
                break
            time.sleep(0.5)
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                p.wait(30)
    runs = store.list_runs("ha", limit=1000)
    assert len(runs) == HOURS, f"{len(runs)} runs for {HOURS} intervals"
    assert len({r["logical_date"] for r in runs}) == HOURS
    assert all(r["state"] == "success" for r in runs), sorted({r["state"] for r in runs})
    with store.engine.connect() as conn:
        attempts = conn.execute(
            sa.text(
                "SELECT a.run_id, a.task_id, a.try_number, a.state, a.reason FROM task_attempts a "
                "JOIN runs r ON r.id = a.run_id WHERE r.pipeline = 'ha'"
            )
        ).all()
        queued_twice = conn.execute(
            sa.text(
                "SELECT count(*) FROM (SELECT run_id, task_id FROM task_attempts WHERE state = 'success' "
                "GROUP BY run_id, task_id HAVING count(*) > 1) x"
            )
        ).scalar()
    assert queued_twice == 0
    success = [a for a in attempts if a.state == "success"]
    assert len(success) == 2 * HOURS  # exactly one success per task instance
    # every other attempt was in flight in the killed scheduler (an infra retry), at most one per task
    lost = [a for a in attempts if a.state != "success"]
    assert all(a.reason == "worker_lost" and a.try_number == 1 for a in lost)
    assert len({(a.run_id, a.task_id) for a in lost}) == len(lost)
