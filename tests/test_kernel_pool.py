"""Tests for nbflow/tasks/kernelpool.py: pre-started kernels, on real ipykernels (no mocks)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import nbformat
import psutil
import pytest

from nbflow import api
from nbflow.loader import load_pipeline
from nbflow.tasks import kernelpool, zygote
from nbflow.tasks.nbrun import run_notebook
from tests.conftest import NOTEBOOKS, make_notebook, pid_alive

pytestmark = pytest.mark.timeout(120)

PROBE = """
import json, os
print(json.dumps({"count": get_ipython().execution_count, "marker": "MARKER" in globals(),
                  "pid": os.getpid(), "cwd": os.getcwd(), "var": os.environ.get("NBFLOW_POOL_TEST_VAR")}))
MARKER = 1
"""


@pytest.fixture
def pool(monkeypatch: pytest.MonkeyPatch):
    """This process's kernel pool, size 1, drained (and forgotten) after the test."""
    monkeypatch.setenv("NBFLOW_KERNEL_POOL", "1")
    api.reset()
    made = kernelpool.activate(slots=1)
    assert made is not None and made.size == 1
    yield made
    pids = [k.pid for k in made.kernels() if k.pid]
    kernelpool.drain()
    kernelpool._pool = None
    api.reset()
    assert not [p for p in pids if pid_alive(p)]


@pytest.fixture
def probe(tmp_path: Path) -> Path:
    return make_notebook(tmp_path / "nbdir" / "probe.ipynb", [PROBE])


def _run(nb: Path, tmp_path: Path, **kw):
    out = tmp_path / f"out-{time.monotonic_ns()}.ipynb"
    record = run_notebook(str(nb), str(out), log_path=str(tmp_path / "log.txt"), startup_timeout=30, **kw)
    seen = None
    if record.ok:
        cells = nbformat.read(str(out), as_version=4).cells
        text = "".join(o.get("text", "") for c in cells for o in c.get("outputs", []))
        last = text.strip().splitlines()[-1] if text.strip() else ""
        seen = json.loads(last) if last.startswith("{") else None
    return record, seen


def test_an_attempt_takes_a_fresh_kernel_and_the_next_gets_another(pool, probe, tmp_path):
    cold, first = _run(probe, tmp_path)  # nothing pooled yet: a fresh start, as without a pool
    assert cold.ok and first["marker"] is False
    assert pool.wait_ready(60) and len(pool.kernels()) == 1  # started in the background afterwards
    pooled = pool.kernels()[0].pid
    assert isinstance(pool.kernels()[0].process, zygote.ForkedProcess)  # forked by the zygote (the default)

    warm, seen = _run(probe, tmp_path)
    assert warm.ok and warm.kernel_pid == pooled == seen["pid"]
    # never ran code before: same execution count as a fresh kernel, no variable of an earlier attempt
    assert seen["count"] == first["count"] and seen["marker"] is False
    # the attempt's working folder (the notebook's) is honoured by os.chdir in the kernel
    assert seen["cwd"] == first["cwd"] == str(probe.parent)
    assert not pid_alive(cold.kernel_pid) and not pid_alive(warm.kernel_pid)

    assert pool.wait_ready(60)
    again, third = _run(probe, tmp_path)
    assert again.ok and again.kernel_pid not in (warm.kernel_pid, cold.kernel_pid)
    assert third["marker"] is False and third["count"] == first["count"]
    assert not pid_alive(warm.kernel_pid)


def test_with_the_zygote_turned_off_pooled_kernels_are_launched(pool, probe, tmp_path, monkeypatch):
    monkeypatch.setenv("NBFLOW_KERNEL_ZYGOTE", "0")
    assert not zygote.enabled()
    assert _run(probe, tmp_path)[0].ok
    assert pool.wait_ready(60)
    launched = pool.kernels()[0]
    assert isinstance(launched.process, subprocess.Popen)  # jupyter_client's launch, no zygote
    record, seen = _run(probe, tmp_path)
    assert record.ok and record.kernel_pid == launched.pid == seen["pid"] and seen["marker"] is False


def test_a_dead_pooled_kernel_is_replaced_and_the_task_succeeds(pool, probe, tmp_path):
    assert _run(probe, tmp_path)[0].ok
    assert pool.wait_ready(60)
    dead = pool.kernels()[0].pid
    os.kill(dead, signal.SIGKILL)
    time.sleep(0.2)
    record, seen = _run(probe, tmp_path)
    assert record.ok and record.kernel_pid != dead and seen["marker"] is False
    assert not pid_alive(dead)
    assert pool.wait_ready(60) and pool.kernels()[0].alive()


def test_a_task_with_env_gets_a_fresh_kernel_that_sees_it(pool, probe, tmp_path):
    assert _run(probe, tmp_path)[0].ok
    assert pool.wait_ready(60)
    pooled = pool.kernels()[0]
    record, seen = _run(probe, tmp_path, env={"NBFLOW_POOL_TEST_VAR": "here"})
    assert record.ok and seen["var"] == "here" and record.kernel_pid != pooled.pid
    assert pool.kernels() == [pooled] and pooled.alive()  # left for an attempt that can use it
    record, seen = _run(probe, tmp_path)
    assert record.kernel_pid == pooled.pid and seen["var"] is None


def test_a_changed_worker_environment_is_not_served_a_stale_kernel(pool, probe, tmp_path, monkeypatch):
    assert _run(probe, tmp_path)[0].ok
    assert pool.wait_ready(60)
    stale = pool.kernels()[0].pid
    monkeypatch.setenv("NBFLOW_POOL_TEST_VAR", "changed")
    record, seen = _run(probe, tmp_path)
    assert record.ok and seen["var"] == "changed" and record.kernel_pid != stale
    assert not pid_alive(stale)


def test_a_pooled_kernel_is_killed_on_timeout_like_a_fresh_one(pool, tmp_path):
    sleeps = NOTEBOOKS / "sleeps.ipynb"
    assert _run(NOTEBOOKS / "params_ok.ipynb", tmp_path)[0].ok
    assert pool.wait_ready(60)
    pooled = pool.kernels()[0].pid
    groups: list[int] = []
    record, _ = _run(sleeps, tmp_path, parameters={"seconds": 60}, timeout=3, on_kernel_start=groups.append)
    assert record.reason == "task_timeout" and record.kernel_pid == pooled and groups == [pooled]
    assert not pid_alive(pooled)
    assert "nbflow: failed" in (tmp_path / "log.txt").read_text()


def test_the_pool_never_holds_more_than_its_size_and_drains(pool, probe, tmp_path):
    most = 0
    stop = threading.Event()

    def watch() -> None:
        nonlocal most
        while not stop.is_set():
            most = max(most, len(pool.kernels()))
            time.sleep(0.005)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        for _ in range(4):
            assert _run(probe, tmp_path)[0].ok
            pool.refill("python3")  # asking again never adds beyond the size
    finally:
        stop.set()
        watcher.join()
    assert most <= 1  # (0 too: under load the runs may take each kernel before the watcher sees it)
    assert pool.wait_ready(60)
    pids = [k.pid for k in pool.kernels()]
    assert len(pids) == 1 and pid_alive(pids[0])
    kernelpool.drain()
    assert not [p for p in pids if pid_alive(p)]
    assert pool.take("python3") is None  # a drained pool hands out and starts nothing
    pool.refill("python3")
    assert pool.kernels() == []


def test_no_pool_with_size_zero(monkeypatch):
    monkeypatch.setenv("NBFLOW_KERNEL_POOL", "0")
    api.reset()
    try:
        assert kernelpool.activate(slots=4) is None
    finally:
        api.reset()


def _pool_kernels() -> set[int]:
    """Pooled kernels (in a pool's folder) of this test (its NBFLOW_HOME in their environment:
    other sessions on this machine keep pools of their own)."""
    found = set()
    for proc in psutil.process_iter(["cmdline"]):
        if "ipykernel" in " ".join(proc.info["cmdline"] or []):
            try:
                if (
                    kernelpool.POOL_DIR_PREFIX in proc.cwd()
                    and proc.environ().get("NBFLOW_HOME") == os.environ["NBFLOW_HOME"]
                ):
                    found.add(proc.pid)
            except psutil.Error:
                pass
    return found


def test_local_workers_use_their_pool_and_leave_no_kernel(nbflow_home, write_pipeline, probe, monkeypatch):
    monkeypatch.setenv("NBFLOW_KERNEL_POOL", "1")
    path = write_pipeline(
        f"""
from nbflow import Pipeline, notebook
with Pipeline("pooled") as pipeline:
    a = notebook({str(probe)!r}, name="a", params_cell="inject_top")
    b = notebook({str(probe)!r}, name="b", params_cell="inject_top")
    c = notebook({str(probe)!r}, name="c", params_cell="inject_top")
    a >> b >> c
"""
    )
    before = _pool_kernels()
    result = api.run_pipeline(load_pipeline(path), executor="local", parallelism=1)
    assert result.ok
    attempts = {a["task_id"]: a for a in api.run_details(result.run_id)["attempts"]}
    pids = [attempts[t]["kernel_pid"] for t in "abc"]
    assert len(set(pids)) == 3  # one kernel per attempt
    time.sleep(0.5)
    assert not [p for p in pids if pid_alive(p)]
    assert not (_pool_kernels() - before), "a pooled kernel outlived its worker"


# --- a worker killed outright takes its pooled kernels with it ------------------------------------


@pytest.fixture
def pollerless_kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Kernel 'nopoller': ipykernel without its parent poller (``parent_handle=0``), so only
    nbflow's own guard can stop it when its worker dies (as with a Python kernel that has no
    poller, or a parent that died while ipykernel booted and an orphan reparented to a subreaper)."""
    import sys

    spec = tmp_path / "jupyter" / "kernels" / "nopoller"
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}", "--IPKernelApp.parent_handle=0"]
    (spec / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": "nopoller", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    return "nopoller"


def _gone_within(pids: list[int], seconds: float) -> list[int]:
    """The pids still alive after up to ``seconds`` (SIGKILLed after, so no test leaves them)."""
    deadline = time.monotonic() + seconds
    while (alive := [p for p in pids if pid_alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in alive:
        os.killpg(pid, signal.SIGKILL)
    return alive


def _fill_pool_on_worker(notebook: str, out: str, kernel_name: str) -> tuple[int, list[int]]:
    """Run on a Dask worker: one notebook attempt as ``run_on_worker`` makes it (this worker's
    pool, then the notebook), then wait for the pool's replacement kernel."""
    from distributed import get_worker

    from nbflow.tasks import kernelpool
    from nbflow.tasks.nbrun import run_notebook

    pool = kernelpool.activate(slots=get_worker().state.nthreads)
    assert pool is not None
    assert run_notebook(notebook, out, kernel_name=kernel_name, startup_timeout=30).ok
    assert pool.wait_ready(60)
    return os.getpid(), [k.pid for k in pool.kernels() if k.pid]


@pytest.mark.faults
def test_a_sigkilled_dask_worker_leaves_no_pooled_kernel(nbflow_home, pollerless_kernel, probe, tmp_path, monkeypatch):
    """RELIABILITY 18 for pre-started kernels: a Dask worker (under its nanny) holding a pooled
    kernel is SIGKILLed; the kernel, which has no parent poller, is gone within a few seconds."""
    from distributed import Client, LocalCluster

    monkeypatch.setenv("NBFLOW_KERNEL_POOL", "1")
    with (
        LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        job = client.submit(
            _fill_pool_on_worker, str(probe), str(tmp_path / "out.ipynb"), pollerless_kernel, pure=False
        )
        worker_pid, pooled = job.result(timeout=120)
        assert len(pooled) == 1 and pid_alive(pooled[0])
        # forked by the worker's kernel zygote (nbflow.tasks.zygote), or launched by the worker itself
        parent = psutil.Process(pooled[0]).parent()
        assert parent is not None and worker_pid in (parent.pid, parent.ppid())
        os.kill(worker_pid, signal.SIGKILL)
        assert not _gone_within(pooled, 5), "a pooled kernel outlived its SIGKILLed worker"


@pytest.mark.faults
def test_a_pooled_kernel_that_never_answers_costs_no_more_than_the_start_up_allowance(pool, tmp_path, monkeypatch):
    """A pooled kernel still booting is waited for at most the attempt's start-up allowance
    (here its 1.5 s timeout): it used to be waited for up to 60 s, past the task's timeout."""
    spec = tmp_path / "jupyter" / "kernels" / "mute"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(
        json.dumps({"argv": ["sleep", "60"], "display_name": "mute", "language": "python"})
    )
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    # as if an attempt here had asked for it (no extra arguments: nbclient adds IPython's
    # history option only for kernels named python*)
    pool._seen.add(("mute", ()))
    pool.refill("mute")
    held = pool.kernels()
    assert len(held) == 1 and not held[0].ready.is_set()
    started = time.monotonic()
    record, _ = _run(NOTEBOOKS / "no_params.ipynb", tmp_path, kernel_name="mute", timeout=1.5, kill_grace=1)
    assert time.monotonic() - started < 1.5 + 1.5 + 1 + 5
    assert record.reason == "task_timeout"
    assert not pid_alive(held[0].pid)  # taken, not ready within the allowance: thrown away
    assert all(k is not held[0] for k in pool.kernels())


@pytest.mark.faults
@pytest.mark.parametrize("forked", [True, False], ids=["zygote", "launched"])
def test_a_sigkilled_local_worker_leaves_no_pooled_kernel(
    nbflow_home, write_pipeline, pollerless_kernel, probe, tmp_path, monkeypatch, forked
):
    """A local worker process holding pooled kernels dies by SIGKILL (its task kills it, once):
    its kernels go with it, without ipykernel's parent poller, whether they were forked by the
    worker's zygote (their parent is the zygote, which dies too; the default) or launched by the
    worker (NBFLOW_KERNEL_ZYGOTE=0); the retry on a new worker succeeds."""
    monkeypatch.setenv("NBFLOW_KERNEL_POOL", "1")
    monkeypatch.setenv("NBFLOW_KERNEL_ZYGOTE", "1" if forked else "0")
    pids_file = tmp_path / "pooled.json"
    path = write_pipeline(
        f"""
import json, os, signal
from pathlib import Path
import psutil
from nbflow import Pipeline, notebook, task

@task
def die_holding_the_pool():
    from nbflow.tasks import kernelpool, zygote
    marker = Path({str(pids_file)!r})
    if not marker.exists():
        pool = kernelpool.current()
        assert pool is not None and pool.wait_ready(60) and pool.kernels()
        kernels = pool.kernels()
        marker.write_text(json.dumps({{
            "worker": os.getpid(),
            "kernels": [k.pid for k in kernels],
            "forked": [type(k.process).__name__ == "ForkedProcess" for k in kernels],
            "parents": [psutil.Process(k.pid).ppid() for k in kernels],
            "zygotes": [z.process.pid for z in zygote.zygotes()],
        }}))
        os.kill(os.getpid(), signal.SIGKILL)
    return "retried"

with Pipeline("pooled_killed") as pipeline:
    nb = notebook({str(probe)!r}, name="nb", params_cell="inject_top", kernel_name={pollerless_kernel!r})
    nb >> die_holding_the_pool()
"""
    )
    result = api.run_pipeline(load_pipeline(path), executor="local", parallelism=1)
    seen = json.loads(pids_file.read_text())
    assert seen["kernels"] and all(f is forked for f in seen["forked"]), seen
    if forked:
        assert len(seen["zygotes"]) == 1 and set(seen["parents"]) == set(seen["zygotes"]), seen
    else:
        assert not seen["zygotes"] and set(seen["parents"]) == {seen["worker"]}, seen
    assert not _gone_within(seen["kernels"] + seen["zygotes"], 5), "a pooled kernel outlived its SIGKILLed worker"
    assert result.ok, result.tasks
