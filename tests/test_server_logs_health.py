"""The log route reads only what it sends (RELIABILITY 37) and health tells the truth within
a second (RELIABILITY 39), against a real `jupyter server`."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.jupyter_procs import JupyterProc, free_port, nbflow_env, register_pipelines, start_jupyter

pytestmark = [pytest.mark.server, pytest.mark.slow]

CHATTY = """
from nbflow import Pipeline, task

with Pipeline("chatty") as pipeline:
    @task
    def talk():
        for i in range(5):
            print(f"line {i}")
    talk()
"""
LINE = b"0123456789 the same log line, again and again, to make a big file quickly.............\n"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterProc]:
    root = tmp_path_factory.mktemp("logs")
    (root / "pipelines").mkdir()
    (root / "pipelines" / "chatty.py").write_text(CHATTY)
    env = nbflow_env(root)
    register_pipelines(root, env)
    proc = start_jupyter(root, env, "server")
    status, answer = proc.request("POST", "pipelines/chatty/trigger", {})
    assert status == 201, answer
    run_id = answer["run_id"]
    deadline = time.monotonic() + 90
    while (details := proc.request("GET", f"runs/{run_id}")[1])["run"]["state"] != "success":
        assert time.monotonic() < deadline and details["run"]["state"] != "failed", details
        time.sleep(0.3)
    proc.extra.update(run_id=run_id, log=root / details["attempts"][0]["log_uri"])  # relative to the Jupyter root
    yield proc
    proc.stop()


def test_tail_and_byte_ranges_of_a_log(server: JupyterProc) -> None:
    run_id, log = server.extra["run_id"], server.extra["log"]
    assert log.is_file(), log
    whole = log.read_bytes()
    status, chunk = server.request("GET", f"runs/{run_id}/tasks/talk/log?tail=2")
    assert status == 200 and chunk["text"] == "line 3\nline 4\n" and not chunk["truncated"], chunk
    assert chunk["finished"] is True, chunk  # the try ended: a reader may stop following
    assert chunk["offset"] == chunk["size"] == len(whole) and chunk["start"] == len(whole) - len(b"line 3\nline 4\n")
    pieces, offset = [], 0
    while True:  # read the log 7 bytes at a time, as the UI or a client tailing it would
        status, chunk = server.request("GET", f"runs/{run_id}/tasks/talk/log?offset={offset}&limit=7")
        assert status == 200 and chunk["start"] == offset and len(chunk["text"].encode()) <= 7, chunk
        pieces.append(chunk["text"])
        offset = chunk["offset"]
        if not chunk["truncated"]:
            break
    assert "".join(pieces).encode() == whole and offset == len(whole)


def _rss(pid: int) -> int:
    return psutil.Process(pid).memory_info().rss


def test_a_200_mb_log_is_read_without_the_server_growing(server: JupyterProc) -> None:
    run_id, log = server.extra["run_id"], server.extra["log"]
    block = LINE * (1024 * 1024 // len(LINE))
    with open(log, "wb") as fh:  # ~200 MB, then a last line to look for
        for _ in range(200):
            fh.write(block)
        fh.write(b"the very last line\n")
    size = log.stat().st_size
    assert size > 200 * 1000 * 1000
    server.request("GET", f"runs/{run_id}/tasks/talk/log?tail=40")  # warm up (imports, caches)
    before = _rss(server.proc.pid)
    status, tail = server.request("GET", f"runs/{run_id}/tasks/talk/log?tail=40")
    assert status == 200 and tail["text"].endswith(
        "again and again, to make a big file quickly.............\nthe very last line\n"
    )
    assert tail["text"].count("\n") == 40 and tail["offset"] == size and not tail["truncated"]
    status, middle = server.request("GET", f"runs/{run_id}/tasks/talk/log?offset={size // 2}&limit=100000000")
    assert status == 200 and middle["truncated"] and len(middle["text"].encode()) == 1024 * 1024, middle["offset"]
    status, first = server.request("GET", f"runs/{run_id}/tasks/talk/log")
    assert status == 200 and first["start"] == 0 and first["offset"] == 1024 * 1024 and first["truncated"]
    grown = _rss(server.proc.pid) - before
    assert grown < 12 * 1024 * 1024, f"the server grew by {grown / 2**20:.1f} MB reading a {size / 2**20:.0f} MB log"


def test_health_is_degraded_without_a_scheduler_and_ok_with_one(server: JupyterProc) -> None:
    status, health = server.request("GET", "health")
    assert status == 503 and health["status"] == "degraded" and health["database"] == "ok", health
    assert "no scheduler holds the lease" in health["reason"] and "nbflow scheduler" in health["reason"], health
    root = server.root
    env = nbflow_env(root)
    scheduler = subprocess.Popen(
        [sys.executable, "-m", "nbflow", "scheduler", "-e", "inline"],
        cwd=root,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while (answer := server.request("GET", "health"))[0] != 200:
            assert time.monotonic() < deadline and scheduler.poll() is None, answer
            time.sleep(0.5)
        status, health = answer
        assert health["status"] == "ok" and health["reason"] is None and health["serving"] == "scheduler", health
        assert [s["pid"] for s in health["schedulers"]] == [scheduler.pid], health
    finally:
        scheduler.terminate()
        scheduler.wait(30)


def test_health_marks_jobs_whose_lease_expired_dead(server: JupyterProc) -> None:
    db = server.root / "home" / "nbflow.db"
    with sqlite3.connect(db) as conn:
        conn.execute(
            "INSERT INTO jobs (kind, hostname, pid, state, started_at, heartbeat_at) VALUES "
            "('scheduler', 'gone', 1, 'running', '2020-01-01 00:00:00', '2020-01-01 00:00:00')"
        )
        job = conn.execute("SELECT max(id) FROM jobs").fetchone()[0]
    status, health = server.request("GET", "health")
    assert health["expired_jobs"] >= 1 and health["schedulers"] == [], health
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT state FROM jobs WHERE id = ?", (job,)).fetchone() == ("dead",)


def test_health_answers_within_a_second_while_sqlite_is_locked(server: JupyterProc) -> None:
    lock = sqlite3.connect(server.root / "home" / "nbflow.db", isolation_level=None, timeout=1)
    lock.execute("BEGIN EXCLUSIVE")
    try:
        started = time.monotonic()
        status, health = server.request("GET", "health")
        elapsed = time.monotonic() - started
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    assert elapsed < 1.0, elapsed
    assert status == 503 and health["status"] == "degraded" and "locked" in health["reason"], health


def test_health_answers_within_a_second_when_the_database_is_unreachable(tmp_path: Path) -> None:
    """A PostgreSQL URL to a closed local port (the shared server cannot be stopped)."""
    root = tmp_path / "root"
    root.mkdir()
    env = {**nbflow_env(root), "NBFLOW_DB_URL": f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/nowhere"}
    proc = start_jupyter(root, env, "server")
    try:
        for _ in range(3):
            started = time.monotonic()
            status, health = proc.request("GET", "health")
            assert time.monotonic() - started < 1.0
            assert status == 503 and health["database"] == "connection refused or lost", health
            assert health["reason"] == "the nbflow database is unavailable (connection refused or lost)", health
        status, answer = proc.request("GET", "pipelines")
        assert status == 503 and answer["message"].startswith("the nbflow database is unavailable"), answer
    finally:
        proc.stop()


def test_health_answers_within_a_second_when_the_database_hangs(tmp_path: Path) -> None:
    """A database host that takes the connection and never answers (a hung server, a dropped
    route): health still answers within a second, every time, and says the database is away."""
    import socket
    import threading

    hole = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    hole.bind(("127.0.0.1", 0))
    hole.listen(64)
    held: list[socket.socket] = []

    def take() -> None:
        while True:
            try:
                held.append(hole.accept()[0])  # accepted, never read from or written to
            except OSError:
                return

    threading.Thread(target=take, daemon=True).start()
    root = tmp_path / "root"
    root.mkdir()
    port = hole.getsockname()[1]
    env = {**nbflow_env(root), "NBFLOW_DB_URL": f"postgresql+psycopg://postgres@127.0.0.1:{port}/hung"}
    proc = start_jupyter(root, env, "server")
    try:
        proc.request("GET", "health")  # checked against docs/openapi.yaml (its first load is not timed)
        for _ in range(5):  # one check at a time hangs; the others wait for it, never past the limit
            started = time.monotonic()
            status, health = proc.request("GET", "health")
            assert time.monotonic() - started < 1.0
            assert status == 503 and health["status"] == "degraded" and health["database"] != "ok", health
        assert held, "the health check never reached the hung database"
        assert len(held) <= 4, f"{len(held)} connections: health checks piled up on the hung database"
    finally:
        proc.stop()
        hole.close()
        for conn in held:
            conn.close()
