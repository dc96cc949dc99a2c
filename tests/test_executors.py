"""Executors: the registry, parallelism on `local`, shell and python tasks in worker processes."""

from __future__ import annotations

import pytest

from nbflow import api
from nbflow.exceptions import ExecutorNotFoundError
from nbflow.executors import get_executor, known_executors
from nbflow.loader import load_pipeline


def test_registry_fails_loudly_naming_known_executors():
    assert {"inline", "local"} <= set(known_executors())
    with pytest.raises(ExecutorNotFoundError, match="No executor named 'dask2'; known: .*inline.*local"):
        get_executor("dask2")


PARALLEL = """
import time, json
from pathlib import Path
from nbflow import Pipeline, task

OUT = Path(__file__).parent / "spans"

with Pipeline("parallel") as pipeline:
    @task
    def branch(name):
        start = time.time()
        time.sleep(1.0)
        OUT.mkdir(exist_ok=True)
        (OUT / name).write_text(json.dumps([start, time.time()]))
        return name

    @task
    def join(a, b):
        return a + b

    join(branch("left"), branch("right"))
"""


def test_independent_branches_overlap_on_local(nbflow_home, write_pipeline):
    import json

    path = write_pipeline(PARALLEL)
    result = api.run_pipeline(load_pipeline(path), executor="local", parallelism=2)
    assert result.ok and api.load_output(result.run_id, "join") == "leftright"
    (s1, e1), (s2, e2) = (json.loads((path.parent / "spans" / n).read_text()) for n in ("left", "right"))
    assert max(s1, s2) < min(e1, e2), "the two 1 s branches did not run at the same time"
    hosts = {t["pid"] for t in result.tasks if t["task_id"].startswith("branch")}
    assert len(hosts) == 2  # two different worker processes


def test_parallelism_one_serialises(nbflow_home, write_pipeline):
    import json

    path = write_pipeline(PARALLEL)
    result = api.run_pipeline(load_pipeline(path), executor="local", parallelism=1)
    assert result.ok
    (s1, e1), (s2, e2) = sorted(json.loads((path.parent / "spans" / n).read_text()) for n in ("left", "right"))
    assert s2 >= e1 - 0.01


SHELL = """
from nbflow import Pipeline, shell

with Pipeline("shells", params={"greeting": "hi"}) as pipeline:
    ok = shell("echo $NBFLOW_PARAM_GREETING from $NBFLOW_TASK_ID; echo to-stderr >&2", name="ok")
    bad = shell("echo about to fail; exit 3", name="bad")
    ok >> bad
"""


@pytest.mark.parametrize("executor", ["inline", "local"])
def test_shell_output_is_logged_and_exit_code_fails(nbflow_home, write_pipeline, executor):
    result = api.run_pipeline(load_pipeline(write_pipeline(SHELL)), params={"greeting": "hello"}, executor=executor)
    tis = {t["task_id"]: t for t in result.tasks}
    log = api.read_log(result.run_id, "ok")
    assert "hello from ok" in log and "to-stderr" in log
    assert tis["bad"]["state"] == "failed" and tis["bad"]["reason"] == "exit_code"
    assert "exited with code 3" in tis["bad"]["error"]
    assert "about to fail" in api.read_log(result.run_id, "bad")


def test_local_executor_works_from_a_script_without_main_guard(tmp_path, write_pipeline):
    """Workers are not started with multiprocessing's spawn, which would re-run the script."""
    import os
    import subprocess
    import sys

    path = write_pipeline(PARALLEL)
    script = tmp_path / "driver.py"
    script.write_text(
        "from nbflow import api\n"
        f"result = api.run_file({str(path)!r}, executor='local', parallelism=2)\n"
        "print('STATE', result.state.value, api.load_output(result.run_id, 'join'))\n"
    )
    env = {**os.environ, "NBFLOW_HOME": str(tmp_path / "home")}
    res = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "STATE success leftright" in res.stdout


def test_nbflow_worker_environment_is_the_worker_config_dask_reads():
    """`nbflow worker` hands WORKER_CONFIG to `dask worker` as DASK_* variables: Dask must read them back."""
    import json
    import os
    import subprocess
    import sys

    from nbflow.executors.dask import WORKER_CONFIG, worker_environment

    code = (
        "import json, sys, dask, distributed; print(json.dumps([dask.config.get(k) for k in json.loads(sys.argv[1])]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, json.dumps(list(WORKER_CONFIG))],
        env={**os.environ, **worker_environment()},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert json.loads(out.stdout) == list(WORKER_CONFIG.values())


def test_inline_run_cancelled_from_elsewhere_kills_its_running_command(nbflow_home, write_pipeline, monkeypatch):
    """`nbflow run`/`nbflow drive` on inline: the attempt runs in the driving thread, yet a
    cancellation from another process (here: api.cancel_run from the test thread) kills it."""
    import os
    import threading
    import time

    import psutil

    monkeypatch.setenv("NBFLOW_CANCEL_POLL", "0.3")
    api.reset()
    nap = f"98.{os.getpid()}"  # a duration no other test or session sleeps for
    path = write_pipeline(
        f"""
        from nbflow import Pipeline, shell

        with Pipeline("dozing") as pipeline:
            shell("sleep {nap}", name="doze")
        """
    )
    pipeline = load_pipeline(path)
    results = []
    driver = threading.Thread(target=lambda: results.append(api.run_pipeline(pipeline, executor="inline")), daemon=True)
    driver.start()

    def sleepers() -> list[int]:
        return [p.pid for p in psutil.process_iter(["cmdline"]) if p.info["cmdline"] == ["sleep", nap]]

    deadline = time.monotonic() + 30
    while not sleepers() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sleepers(), "the command never started"
    (run,) = api.list_runs("dozing")
    api.cancel_run(run["id"])
    driver.join(30)  # not the 98 s the command sleeps
    assert not driver.is_alive()
    assert results[0].state.value == "cancelled"
    assert not sleepers()
    assert {t["task_id"]: t["state"] for t in results[0].tasks} == {"doze": "cancelled"}


def test_attempt_keys_group_by_task_in_dask_and_name_their_run():
    """Dask groups keys by ``key_split``: every attempt of one task, across runs and tries,
    shares the prefix ``pipeline.task`` (its scheduler never forgets a prefix, so a prefix
    per attempt grew without bound); the run id is read back even when names hold "-"."""
    from dask.utils import key_split

    from nbflow.executors.base import attempt_key, key_run_id

    keys = [attempt_key("ml_daily", "train", run, tries, "0a1b2c3d") for run in (1, 2, 117) for tries in (1, 2)]
    assert len(set(keys)) == 6
    assert {key_split(k) for k in keys} == {"ml_daily.train"}
    assert [key_run_id(k) for k in keys] == [1, 1, 2, 2, 117, 117]
    assert key_run_id(attempt_key("ml-daily", "train-2", 42, 3, "ffffffff")) == 42
    assert key_run_id("someone-else's-key") is None and key_run_id("x") is None
