"""The celery executor against the real Redis and the real RabbitMQ on 127.0.0.1, with real
``nbflow worker --engine celery`` processes: queues, a SIGKILLed worker, cancel, a queue no
worker consumes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from nbflow import api
from nbflow.loader import load_pipeline
from tests.conftest import pid_alive
from tests.openapi_check import check_answer

pytestmark = pytest.mark.slow
celery = pytest.importorskip("celery", reason="celery is not installed (pip install -e '.[dev]')")

BROKERS = {
    "redis": ("redis://127.0.0.1:6379/13", 6379),
    "rabbitmq": ("amqp://guest:guest@127.0.0.1:5672//", 5672),
}


def _reachable(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


class Workers:
    """``nbflow worker --engine celery`` processes on one broker."""

    def __init__(self, broker: str, tmp: Path):
        self.broker, self.tmp = broker, tmp
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, name: str, *queues: str, nthreads: int = 1) -> None:
        argv = [sys.executable, "-m", "nbflow", "worker", "--engine", "celery", "--broker", self.broker]
        argv += ["--name", name, "--nthreads", str(nthreads)]
        for q in queues:
            argv += ["--queue", q]
        log = open(self.tmp / f"{name}.log", "w")  # noqa: SIM115
        self.procs[name] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.wait_for(name)

    def wait_for(self, name: str, timeout: float = 60) -> None:
        from nbflow.executors.celeryapp import make_app

        app = make_app(self.broker)
        try:
            deadline = time.time() + timeout
            while time.time() < deadline:
                replies = app.control.ping(timeout=0.5)
                if any(host.startswith(f"{name}@") for reply in replies for host in reply):
                    return
                assert self.procs[name].poll() is None, (self.tmp / f"{name}.log").read_text()
            raise AssertionError(
                f"celery worker {name} did not answer a ping: {(self.tmp / f'{name}.log').read_text()}"
            )
        finally:
            app.close()

    def kill(self, name: str) -> None:
        os.killpg(self.procs[name].pid, signal.SIGKILL)
        self.procs[name].wait(10)

    def close(self) -> None:
        for proc in self.procs.values():
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(10)


def _purge(broker: str, queues: tuple[str, ...]) -> None:
    """Empty the queues a test uses (a message left by an earlier test is never run)."""
    from nbflow.executors.celeryapp import make_app

    app = make_app(broker)
    try:
        with app.connection_for_write() as conn:
            channel = conn.default_channel
            for name in queues:
                try:
                    channel.queue_purge(name)
                except Exception:  # noqa: BLE001 - a queue that does not exist yet is empty
                    channel = conn.channel()
    finally:
        app.close()


QUEUES = ("default", "gpu", "bigmem")


@pytest.fixture(params=sorted(BROKERS))
def workers(request, tmp_path, nbflow_home, monkeypatch) -> Iterator[Workers]:
    url, port = BROKERS[request.param]
    if not _reachable(port):
        pytest.skip(f"{request.param} is not reachable on 127.0.0.1:{port} (.ci/run starts it)")
    if request.param == "redis":
        import redis

        redis.Redis.from_url(url).flushdb()
    _purge(url, QUEUES)
    monkeypatch.setenv("NBFLOW_CELERY_BROKER", url)
    monkeypatch.delenv("NBFLOW_CELERY_BACKEND", raising=False)
    api.reset()
    w = Workers(url, tmp_path)
    try:
        yield w
    finally:
        w.close()
        _purge(url, QUEUES)


FAN = """
import os, time
from nbflow import Pipeline, task, shell

with Pipeline("fan") as pipeline:
    @task
    def part(i):
        time.sleep(0.3)
        return {"i": i, "pid": os.getpid()}

    @task(queue="gpu")
    def total(parts):
        print("total of", len(parts), "parts")
        return sorted(p["i"] for p in parts)

    total([part(i) for i in range(4)])
    shell("echo shell on $NBFLOW_TASK_ID", name="hello")
"""


def test_fan_out_routes_queues_and_logs(workers, write_pipeline):
    workers.start("w1", "default", nthreads=2)
    workers.start("g1", "gpu")
    result = api.run_pipeline(load_pipeline(write_pipeline(FAN)), executor="celery")
    assert result.ok, [(t["task_id"], t["state"], t["error"]) for t in result.tasks]
    assert api.load_output(result.run_id, "total") == [0, 1, 2, 3]
    hosts = {t["task_id"]: t["hostname"] for t in result.tasks}
    assert hosts["total"].startswith("g1@")
    assert all(hosts[f"part__{i}" if i else "part"].startswith("w1@") for i in range(4))
    assert "total of 4 parts" in api.read_log(result.run_id, "total")
    assert "shell on hello" in api.read_log(result.run_id, "hello")


KILLED = """
import os, time
from pathlib import Path
from nbflow import Pipeline, task

HERE = Path(__file__).parent

with Pipeline("killed") as pipeline:
    @task
    def victim():
        marker = HERE / "worker.pid"
        if not marker.exists():
            marker.write_text(str(os.getpid()))
            time.sleep(60)
        return "done"

    victim()
"""


@pytest.mark.faults
def test_sigkilled_worker_is_one_lost_try_and_one_success(workers, write_pipeline):
    """A worker SIGKILLed mid-task: that try is ``worker_lost`` (no retry is used up), the next
    runs on the other worker, and the broker's redelivery of the first message runs nothing."""
    path = write_pipeline(KILLED)
    marker = path.parent / "worker.pid"
    workers.start("w1", "default")
    workers.start("w2", "default")

    def killer() -> None:
        for _ in range(600):
            if marker.exists() and marker.read_text():
                pid = int(marker.read_text())
                parent = psutil.Process(pid).ppid()  # the attempt runs in a process of the worker's pool
                victim = next(name for name, p in workers.procs.items() if p.pid in (pid, parent))
                workers.kill(victim)
                return
            time.sleep(0.05)

    thread = threading.Thread(target=killer)
    thread.start()
    result = api.run_pipeline(load_pipeline(path), executor="celery")
    thread.join()
    attempts = api.run_details(result.run_id)["attempts"]
    assert result.ok, attempts
    assert [(a["try_number"], a["state"], a["reason"]) for a in attempts] == [
        (1, "up_for_retry", "worker_lost"),
        (2, "success", None),
    ]
    assert "stopped answering" in attempts[0]["message"] or "delivered it again" in attempts[0]["message"]
    assert attempts[0]["hostname"] != attempts[1]["hostname"]
    assert api.load_output(result.run_id, "victim") == "done"
    time.sleep(3)  # RabbitMQ hands the unacknowledged message to the live worker meanwhile
    again = api.run_details(result.run_id)["attempts"]
    assert sum(a["state"] == "success" for a in again) == 1 and len(again) == 2


SLEEPER = """
from nbflow import Pipeline, shell

with Pipeline("sleeper") as pipeline:
    shell("echo $$ > {pidfile}; sleep 60", name="nap")
"""


def test_cancel_kills_the_running_shell_on_its_worker(workers, write_pipeline, tmp_path):
    """Also: while it runs, the workers view names the attempt its worker runs."""
    workers.start("w1", "default")
    pidfile = tmp_path / "nap.pid"
    pipeline = load_pipeline(write_pipeline(SLEEPER.format(pidfile=pidfile)))
    box: dict = {}
    thread = threading.Thread(target=lambda: box.update(result=api.run_pipeline(pipeline, executor="celery")))
    thread.start()
    for _ in range(600):
        if pidfile.exists() and pidfile.read_text().strip():
            break
        time.sleep(0.05)
    shell_pid = int(pidfile.read_text())
    run_id = api.list_runs()[0]["id"]
    running = api.list_workers(engine="celery").workers[0].running
    assert running == [{"pipeline": "sleeper", "run_id": run_id, "task_id": "nap", "try_number": 1, "state": "running"}]
    api.cancel_run(run_id)
    thread.join(60)
    assert not thread.is_alive()
    assert box["result"].state.value == "cancelled"
    deadline = time.time() + 10
    while pid_alive(shell_pid) and time.time() < deadline:
        time.sleep(0.1)
    assert not pid_alive(shell_pid), "the cancelled task's shell still runs on the worker"


ONE = """
from nbflow import Pipeline, task

with Pipeline("big") as pipeline:
    @task(queue="bigmem")
    def crunch():
        return 42

    crunch()
"""


def test_a_queue_no_worker_consumes_is_said_until_one_comes(workers, write_pipeline, monkeypatch):
    monkeypatch.setattr("nbflow.executors.celery.QUEUES_INTERVAL", 0.5)
    workers.start("w1", "default")
    pipeline = load_pipeline(write_pipeline(ONE))
    box: dict = {}
    thread = threading.Thread(target=lambda: box.update(result=api.run_pipeline(pipeline, executor="celery")))
    thread.start()
    note = ""
    for _ in range(300):
        runs = api.list_runs()
        if runs:
            note = api.open_store().task_instances(runs[0]["id"])[0]["note"] or ""
            if "bigmem" in note:
                break
        time.sleep(0.1)
    assert "no celery worker consumes queue 'bigmem' (consumed: default)" in note, note
    assert "nbflow worker --engine celery --queue bigmem" in note
    view = api.list_workers(engine="celery")  # nbflow workers --engine celery, GET workers?engine=celery
    assert [(w.name.split("@")[0], w.queues, w.slots) for w in view.workers] == [("w1", ["default"], 1)]
    assert view.workers[0].running == [] and view.workers[0].memory
    assert view.unserved == [
        {
            "queue": "bigmem",
            "waiting": 1,
            "why": "no celery worker consumes queue 'bigmem' (consumed: default)",
            "command": "nbflow worker --engine celery --queue bigmem",
        }
    ]
    check_answer("GET", "workers", 200, "application/json", json.loads(json.dumps(view.as_dict())))
    workers.start("b1", "bigmem")
    thread.join(60)
    assert box["result"].ok and api.load_output(box["result"].run_id, "crunch") == 42
