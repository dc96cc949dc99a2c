"""The dask executor against a real `dask scheduler` and `nbflow worker` subprocesses on 127.0.0.1."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from nbflow import api
from nbflow.loader import load_pipeline
from tests.conftest import NOTEBOOKS, kernel_pids, pid_alive

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """A scheduler plus named `nbflow worker` processes."""

    def __init__(self, tmp: Path, scheduler_env: dict[str, str] | None = None):
        self.port = _free_port()
        self.address = f"tcp://127.0.0.1:{self.port}"
        self.tmp = tmp
        self.procs: dict[str, subprocess.Popen] = {}
        self._start(
            "scheduler",
            [
                sys.executable,
                "-m",
                "distributed.cli.dask_scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--no-dashboard",
            ],
            # as the README tells an operator: nbflow leaves a cluster's allowed-failures alone
            env={**os.environ, "DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "0", **(scheduler_env or {})},
        )

    def _start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        log = open(self.tmp / f"{name}.log", "w")  # noqa: SIM115
        self.procs[name] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)

    def worker(self, name: str, *queues: str) -> None:
        argv = [sys.executable, "-m", "nbflow", "worker", "--scheduler", self.address, "--name", name]
        for q in queues:
            argv += ["--queue", q]
        self._start(name, argv)

    def wait_for(self, n: int) -> dict[str, dict]:
        from distributed import Client

        with Client(self.address, timeout="20s") as client:
            client.wait_for_workers(n, timeout=60)
            return {
                w["name"]: {"address": addr, **w} for addr, w in client.scheduler_info(n_workers=-1)["workers"].items()
            }

    def close(self) -> None:
        for proc in self.procs.values():
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(10)


def _serve(c: Cluster, n: int, monkeypatch) -> Cluster:
    c.workers = c.wait_for(n)
    monkeypatch.setenv("NBFLOW_DASK_ADDRESS", c.address)
    api.reset()
    return c


@pytest.fixture
def cluster(tmp_path, nbflow_home, monkeypatch):
    c = Cluster(tmp_path)
    c.worker("cpu1", "default")
    c.worker("cpu2", "default")
    c.worker("gpu1", "gpu", "default")
    try:
        yield _serve(c, 3, monkeypatch)
    finally:
        c.close()


@pytest.fixture
def ttl_cluster(tmp_path, nbflow_home, monkeypatch):
    """Two workers; the scheduler removes a worker that sends no heartbeat for 3 s."""
    c = Cluster(tmp_path, scheduler_env={"DASK_DISTRIBUTED__SCHEDULER__WORKER_TTL": "3s"})
    c.worker("cpu1", "default")
    c.worker("cpu2", "default")
    try:
        yield _serve(c, 2, monkeypatch)
    finally:
        c.close()


FAN = """
import os, time
from nbflow import Pipeline, task

with Pipeline("fan") as pipeline:
    @task
    def part(i):
        time.sleep(0.5)
        return {"i": i, "pid": os.getpid()}

    @task(queue="gpu", resources={"GPU": 0} if False else None)
    def on_gpu():
        return os.getpid()

    @task
    def combine(*parts):
        return sorted(p["i"] for p in parts)

    combine(*[part(i) for i in range(6)])
    on_gpu()
"""


def test_fan_out_uses_several_workers_and_routes_queues(cluster, write_pipeline):
    result = api.run_pipeline(load_pipeline(write_pipeline(FAN)), executor="dask")
    assert result.ok, [(t["task_id"], t["state"], t["error"]) for t in result.tasks]
    assert api.load_output(result.run_id, "combine") == list(range(6))
    hosts = {t["hostname"] for t in result.tasks if t["task_id"].startswith("part")}
    assert len(hosts) > 1, "the fan-out ran on one worker only"
    assert result.task("on_gpu")["hostname"] == cluster.workers["gpu1"]["address"]
    assert sum(t["state"] == "success" for t in result.tasks) == len(result.tasks)


KILLED = """
import os, time
from pathlib import Path
from nbflow import Pipeline, task

HERE = Path(__file__).parent

with Pipeline("killed") as pipeline:
    @task(retries=1)
    def victim():
        marker = HERE / "worker.pid"
        if not marker.exists():
            marker.write_text(str(os.getpid()))
            time.sleep(30)
        return "done"

    victim()
"""


@pytest.mark.faults
def test_worker_killed_mid_task_is_a_new_try_on_another_worker(cluster, write_pipeline):
    path = write_pipeline(KILLED)
    marker = path.parent / "worker.pid"

    def killer():
        for _ in range(300):
            if marker.exists() and marker.read_text():
                os.kill(int(marker.read_text()), signal.SIGKILL)
                return
            time.sleep(0.1)

    thread = threading.Thread(target=killer)
    thread.start()
    result = api.run_pipeline(load_pipeline(path), executor="dask")
    thread.join()
    assert result.ok, result.tasks
    attempts = api.run_details(result.run_id)["attempts"]
    assert [a["state"] for a in attempts] == ["up_for_retry", "success"]
    assert attempts[0]["reason"] == "worker_lost" and "KilledWorker" in attempts[0]["message"]
    assert attempts[0]["executor_key"] != attempts[1]["executor_key"]
    assert [t["state"] for t in result.tasks] == ["success"]


@pytest.mark.faults
def test_hung_worker_is_removed_and_its_task_retried_elsewhere(ttl_cluster, write_pipeline):
    """RELIABILITY 20: a worker whose process stops (SIGSTOP: no heartbeat, blocked loop) is
    removed by the scheduler after worker-ttl; the attempt is a worker_lost try, retried."""
    path = write_pipeline(KILLED)
    marker = path.parent / "worker.pid"
    stopped: list[int] = []

    def freezer():
        store = api.open_store()
        for _ in range(300):
            runs = store.list_runs()
            running = runs and any(t["state"] == "running" for t in store.task_instances(runs[0]["id"]))
            if running and marker.exists() and marker.read_text():  # its start (and worker) recorded
                stopped.append(int(marker.read_text()))
                os.kill(stopped[0], signal.SIGSTOP)
                return
            time.sleep(0.1)

    thread = threading.Thread(target=freezer)
    thread.start()
    try:
        result = api.run_pipeline(load_pipeline(path), executor="dask")
    finally:
        thread.join()
        for pid in stopped:  # the nanny may have killed it already
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    assert stopped, "the task never started"
    assert result.ok, result.tasks
    attempts = api.run_details(result.run_id)["attempts"]
    assert [a["state"] for a in attempts] == ["up_for_retry", "success"]
    assert attempts[0]["reason"] == "worker_lost", attempts[0]
    assert attempts[0]["hostname"] and attempts[1]["hostname"] != attempts[0]["hostname"]


NO_WORKER = """
from nbflow import Pipeline, task

with Pipeline("tpu") as pipeline:
    @task(queue="tpu")
    def needs_tpu():
        return 1

    needs_tpu()
"""


def test_task_whose_queue_no_worker_serves_waits_and_says_why(cluster, write_pipeline):
    pipeline = load_pipeline(write_pipeline(NO_WORKER))
    store = api.open_store()
    run_id = api.create_run(pipeline, executor="dask", store=store)
    done: dict = {}
    driver = threading.Thread(
        target=lambda: done.update(r=api.drive_run(pipeline, run_id, executor="dask", store=store))
    )
    driver.start()
    note = None
    for _ in range(150):
        note = store.task_instances(run_id)[0]["note"]
        if note:
            break
        time.sleep(0.1)
    assert note and "no worker serves queue 'tpu'" in note and "nbflow worker" in note
    assert store.task_instances(run_id)[0]["state"] == "queued"
    api.cancel_run(run_id, store=store)
    driver.join(30)
    assert not driver.is_alive()
    assert done["r"].state.value == "cancelled"


NOTEBOOKS_PIPE = """
from nbflow import Pipeline, notebook

with Pipeline("remote_nb") as pipeline:
    notebook({ok!r}, parameters={{"alpha": 2.0}})
    notebook({slow!r}, parameters={{"seconds": 60}})
"""


@pytest.mark.faults
def test_notebooks_on_workers_and_cancel_kills_the_kernel(cluster, write_pipeline):
    path = write_pipeline(
        NOTEBOOKS_PIPE.format(ok=str(NOTEBOOKS / "params_ok.ipynb"), slow=str(NOTEBOOKS / "sleeps.ipynb"))
    )
    pipeline = load_pipeline(path)
    store = api.open_store()
    before = kernel_pids()
    run_id = api.create_run(pipeline, executor="dask", store=store)
    done: dict = {}
    driver = threading.Thread(
        target=lambda: done.update(r=api.drive_run(pipeline, run_id, executor="dask", store=store))
    )
    driver.start()
    states = {}
    for _ in range(300):
        states = {r["task_id"]: r["state"] for r in store.task_instances(run_id)}
        if states.get("params_ok") == "success" and states.get("sleeps") == "running" and kernel_pids() - before:
            break
        time.sleep(0.1)
    assert states == {"params_ok": "success", "sleeps": "running"}, states
    row = {r["task_id"]: r for r in store.task_instances(run_id)}["params_ok"]
    assert Path(row["output_uri"]).is_file() and str(row["output_uri"]).startswith(
        str(api.open_store().settings.artifact_root)
    )
    time.sleep(1.0)  # let the slow notebook's kernel start its sleeping cell
    api.cancel_run(run_id, store=store)
    driver.join(60)
    assert done["r"].state.value == "cancelled"
    deadline = time.time() + 15
    while time.time() < deadline and (kernel_pids() - before):
        time.sleep(0.2)
    assert not (kernel_pids() - before), "the cancelled notebook's kernel is still alive"


ADOPT = """
import time
from nbflow import Pipeline, task

with Pipeline("adopt") as pipeline:
    @task
    def long():
        time.sleep(4)
        return "finished"

    long()
"""


@pytest.mark.faults
def test_restarted_driver_adopts_work_in_flight(cluster, write_pipeline, nbflow_home, monkeypatch):
    path = write_pipeline(ADOPT)
    # a driver's lease expires soon here, so the run can be taken over a few seconds after the
    # kill; long enough that the first claim below (a Dask client start) comes before it expires
    lease = 6.0
    monkeypatch.setenv("NBFLOW_CANCEL_POLL", "0.3")
    monkeypatch.setenv("NBFLOW_ORPHAN_TIMEOUT", str(lease))
    api.reset()
    env = {**os.environ, "NBFLOW_HOME": str(nbflow_home), "NBFLOW_DASK_ADDRESS": cluster.address}
    driver = subprocess.Popen(
        [sys.executable, "-m", "nbflow", "run", str(path), "-e", "dask"], env=env, start_new_session=True
    )
    store = api.open_store()
    for _ in range(200):
        runs = store.list_runs()
        if runs and store.task_instances(runs[0]["id"])[0]["state"] == "running":
            break
        time.sleep(0.1)
    run_id = runs[0]["id"]
    os.killpg(driver.pid, signal.SIGKILL)  # the driver dies; the cluster keeps the task
    killed = time.monotonic()
    driver.wait()
    with pytest.raises(Exception, match="driven by job"):  # its lease is still fresh: no double driving
        api.drive_run(load_pipeline(path), run_id, executor="dask", store=store)
    time.sleep(max(0.0, lease + 0.3 - (time.monotonic() - killed)))
    result = api.drive_run(load_pipeline(path), run_id, executor="dask", store=store)
    assert result.ok and api.load_output(run_id, "long") == "finished"
    attempts = api.run_details(run_id)["attempts"]
    assert len(attempts) == 1 and attempts[0]["state"] == "success"  # adopted, not started twice


def test_embedded_local_cluster_and_dashboard_link(tmp_path, write_pipeline):
    path = write_pipeline(FAN.replace('queue="gpu", ', ""))
    env = {k: v for k, v in os.environ.items() if k != "NBFLOW_DASK_ADDRESS"}
    env["NBFLOW_HOME"] = str(tmp_path / "home")
    res = subprocess.run(
        [sys.executable, "-m", "nbflow", "run", str(path), "-e", "dask", "-j", "2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert "local Dask cluster, 2 workers, dashboard http://127.0.0.1:" in res.stdout
    assert "run 1 of fan: success" in res.stdout
    assert not any(
        pid_alive(p.pid) for p in psutil.Process().children(recursive=True) if "distributed" in " ".join(p.cmdline())
    )


FOLLOW = """
import time
from nbflow import Pipeline, task, shell

with Pipeline("follow") as pipeline:
    shell("for i in 1 2 3 4 5 6; do echo line $i; sleep 0.5; done", name="talk")

    @task(timeout=1)
    def too_slow():
        time.sleep(30)

    too_slow()
"""


def test_logs_follow_streams_while_running_and_timeouts_work_on_workers(cluster, write_pipeline, nbflow_home):
    path = write_pipeline(FOLLOW)
    env = {**os.environ, "NBFLOW_HOME": str(nbflow_home), "NBFLOW_DASK_ADDRESS": cluster.address}
    driver = subprocess.Popen(
        [sys.executable, "-m", "nbflow", "run", str(path), "-e", "dask"], env=env, stdout=subprocess.DEVNULL
    )
    store = api.open_store()
    for _ in range(200):
        runs = store.list_runs()
        if runs and any(r["state"] == "running" for r in store.task_instances(runs[0]["id"])):
            break
        time.sleep(0.1)
    follower = subprocess.Popen(
        [sys.executable, "-m", "nbflow", "logs", str(runs[0]["id"]), "talk", "--follow"],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    first = follower.stdout.readline()
    got_first_at = time.time()
    rest = follower.stdout.read()
    follower.wait(30)
    driver.wait(60)
    assert "line" in first or "nbflow: $" in first
    assert "line 6" in rest and time.time() - got_first_at > 1.0, "the log arrived only at the end"
    tis = {r["task_id"]: r for r in store.task_instances(runs[0]["id"])}
    assert tis["talk"]["state"] == "success"
    assert tis["too_slow"]["state"] == "failed" and tis["too_slow"]["reason"] == "task_timeout"


def test_worker_that_cannot_import_the_task_says_so(cluster, tmp_path, write_pipeline, monkeypatch):
    """A task pickled by reference to a module only the driver can import fails with a clear message."""
    lib = tmp_path / "driver_only"
    lib.mkdir()
    (lib / "driver_only_mod.py").write_text("def work():\n    return 1\n")
    monkeypatch.syspath_prepend(str(lib))
    path = write_pipeline(
        """
from nbflow import Pipeline, task
from driver_only_mod import work

with Pipeline("unimportable") as pipeline:
    task(work)()
"""
    )
    result = api.run_pipeline(load_pipeline(path), executor="dask")
    row = result.task("work")
    assert row["state"] == "failed"
    assert "cannot load task 'work'" in row["error"] and "driver_only_mod" in row["error"]
    assert "importable on every worker" in row["error"]


RESULTS = """
from nbflow import Pipeline, task

with Pipeline("results") as pipeline:
    @task
    def small(i):
        return i

    @task
    def huge_error():
        raise ValueError("x" * 40_000)

    [small(i) for i in range(4)]
    huge_error()
"""


def test_results_arrive_as_events_and_large_ones_are_fetched(cluster, write_pipeline, tmp_path):
    """Small result records come on the event topic (no fetch per task); a record too large
    for an event is fetched from its future; every attempt is reported exactly once."""
    from nbflow.executors.dask import RESULT_GRACE, DaskExecutor
    from nbflow.worker import WorkItem

    pipeline = load_pipeline(write_pipeline(RESULTS))
    items = [
        WorkItem(
            key=f"results/1/{tid}/1-t",
            pipeline="results",
            run_id=1,
            task_id=tid,
            try_number=1,
            task=task,
            upstream={},
            params={},
            artifact_root=str(tmp_path / "artifacts"),
            kill_grace=2.0,
            durable_result=True,
        )
        for tid, task in pipeline.tasks.items()
    ]
    with DaskExecutor(address=cluster.address) as executor:
        executor.submit_many(items)
        finished: dict[str, object] = {}
        deadline = time.time() + 60
        while len(finished) < len(items) and time.time() < deadline:
            for event in executor.poll(1.0):
                assert event.kind in ("started", "finished"), event
                if event.kind == "finished":
                    assert event.key not in finished, f"{event.key} reported twice"
                    finished[event.key] = event.result
        time.sleep(RESULT_GRACE + 0.2)  # a late duplicate would show up now
        assert executor.poll(0.1) == []
        fetched = executor.fetched_results
    assert sorted(finished) == sorted(item.key for item in items)
    small = [finished[f"results/1/{tid}/1-t"] for tid in ("small", "small__1", "small__2", "small__3")]
    assert all(r.ok and r.hostname.startswith("tcp://") for r in small)
    big = finished["results/1/huge_error/1-t"]
    assert not big.ok and big.evalue.startswith("xxxx") and len(big.traceback) > 40_000
    assert fetched == 1, "only the large record should have been fetched from its future"
    # the durable copy a restarted driver would read
    assert (tmp_path / "artifacts/results/run-1/huge_error/try-1/result.json").exists()


def test_a_fire_and_forget_claim_that_arrives_late_does_not_keep_the_result(cluster, write_pipeline, tmp_path):
    """Dask drops fire-and-forget's claim on a key when its task ends; a claim that reaches the
    scheduler after that (a task faster than the message after client.map) used to keep the
    key and its result on the cluster for good. The executor withdraws the claims of the
    attempts it reported. Here the late claim is sent by hand, after the task ended."""
    from distributed import Client, Future

    from nbflow.executors.dask import DaskExecutor
    from nbflow.worker import WorkItem

    pipeline = load_pipeline(write_pipeline(RESULTS))
    task = pipeline.tasks["small"]
    key = "late/1/small/1-t"
    item = WorkItem(
        key=key,
        pipeline="late",
        run_id=1,
        task_id="small",
        try_number=1,
        task=task,
        upstream={},
        params={},
        artifact_root=str(tmp_path / "artifacts"),
        kill_grace=2.0,
    )

    def state() -> str | None:
        with Client(cluster.address, timeout="20s") as probe:
            return probe.run_on_scheduler(lambda dask_scheduler: getattr(dask_scheduler.tasks.get(key), "state", None))

    with DaskExecutor(address=cluster.address) as executor:
        executor.submit(item)
        hold = Future(key, executor.client)  # keeps the ended task in memory for the late claim
        deadline = time.time() + 60
        while state() != "memory" and time.time() < deadline:
            time.sleep(0.1)
        assert state() == "memory"
        executor.client._send_to_scheduler({"op": "client-desires-keys", "keys": [key], "client": "fire-and-forget"})
        finished = []
        while not finished and time.time() < deadline:
            finished = [e for e in executor.poll(1.0) if e.kind == "finished"]
        assert finished and finished[0].result.ok
        executor.poll(0.1)  # claims are withdrawn by a poll (at most every second) or at shutdown
        del hold
    deadline = time.time() + 10
    while state() is not None and time.time() < deadline:
        time.sleep(0.2)
    assert state() is None, "the key (and its result) stayed on the cluster"
    # nor do its event subscriptions (Dask keeps those of a closed client: each later event
    # would be addressed to every driver that ever ran)
    with Client(cluster.address, timeout="20s") as probe:
        subscribers = probe.run_on_scheduler(
            lambda dask_scheduler: {
                t: len(dask_scheduler._broker._topics[t].subscribers) for t in ("nbflow-started", "nbflow-result")
            }
        )
    assert subscribers == {"nbflow-started": 0, "nbflow-result": 0}, subscribers
