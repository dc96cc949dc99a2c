"""Issue 16, item 8: what translating Airflow and papermill examples found, one test per fix."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from nbflow import api
from nbflow.loader import load_pipeline
from tests.conftest import make_notebook

SOURCE = """
from nbflow import Pipeline, task


def helper(x):
    raise ValueError(f"boom {x}")  # line 6


with Pipeline("shipped") as pipeline:
    @task
    def show():
        import inspect

        print(inspect.getsource(helper))

    @task
    def fail():
        helper(3)  # line 18

    show()
    fail()
"""


@pytest.mark.parametrize("executor", ["local", "dask"])
def test_functions_keep_their_file_line_and_source_on_workers(nbflow_home, write_pipeline, executor):
    path = write_pipeline(SOURCE)
    pipeline = load_pipeline(path)
    path.unlink()  # as on a worker machine without the file: the source travels with the task
    result = api.run_pipeline(pipeline, executor=executor, parallelism=1)
    details = api.run_details(result.run_id)
    assert 'def helper(x):\n    raise ValueError(f"boom {x}")' in api.read_log(result.run_id, "show")
    tb = next(a for a in details["attempts"] if a["task_id"] == "fail")["traceback"]
    assert "<dynamic-code>" not in tb, tb
    assert f'File "{path}", line 18, in fail' in tb and "helper(3)" in tb, tb
    assert f'File "{path}", line 6, in helper' in tb and 'raise ValueError(f"boom {x}")' in tb, tb


SIMPLE = """
from nbflow import Pipeline, task

with Pipeline("simple", params={"n": 2}) as pipeline:
    @task
    def first(params):
        return params["n"]

    @task
    def second(x):
        return x + 1

    second(first())
"""


def nbflow_cli(
    *args: str, home: Path, cwd: Path | None = None, stdout_closed: bool = False
) -> subprocess.CompletedProcess:
    """The real ``nbflow`` command; ``stdout_closed``: its reader has gone (``| head`` that exited)."""
    env = {**os.environ, "NBFLOW_HOME": str(home), "PYTHONIOENCODING": "utf-8", "TZ": "UTC"}
    env.pop("NBFLOW_DB_URL", None)
    argv = [sys.executable, "-m", "nbflow", *args]
    if not stdout_closed:
        return subprocess.run(argv, capture_output=True, text=True, env=env, cwd=cwd, timeout=120)
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=cwd)
    assert proc.stdout is not None
    proc.stdout.close()
    _, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(argv, proc.returncode, "", err)


def test_a_closed_stdout_neither_fails_the_run_nor_prints_a_traceback(tmp_path, write_pipeline):
    path = write_pipeline(SIMPLE)
    home = tmp_path / "home"
    res = nbflow_cli("run", str(path), "-e", "inline", home=home, stdout_closed=True)
    assert (res.returncode, res.stderr) == (0, ""), res.stderr
    row = next(line for line in nbflow_cli("runs", home=home).stdout.splitlines() if line.startswith("1 "))
    assert row.split()[1:3] == ["simple", "success"], row  # driven to its end, not failed by the pipe
    for command in (("tasks", "1"), ("runs",), ("logs", "1", "first")):
        res = nbflow_cli(*command, home=home, stdout_closed=True)
        assert (res.returncode, res.stderr) == (0, ""), (command, res.stderr)


def test_rerun_of_a_successful_run_says_nothing_to_rerun_and_starts_nothing(tmp_path, write_pipeline):
    path = write_pipeline(SIMPLE)
    home = tmp_path / "home"
    assert nbflow_cli("run", str(path), "-e", "inline", home=home).returncode == 0
    res = nbflow_cli("rerun", "1", home=home)  # the default executor: dask, whose cluster it used to start
    assert res.returncode == 0, res.stderr
    assert res.stdout == "nothing to re-run: every task of run 1 succeeded (re-run one anyway: --task TASK)\n"
    assert "dask" not in res.stderr.lower()
    tasks = nbflow_cli("tasks", "1", home=home).stdout
    assert "success  1/1" in tasks and "2/" not in tasks  # no task ran again


LISTS = """
from nbflow import Pipeline, task

with Pipeline("lists", params={"items": [1, 2], "opts": {"a": 1}}) as pipeline:
    @task
    def total(params):
        return sum(params["items"])

    total()
"""


def test_error_says_its_where_once(tmp_path, write_pipeline):
    path = write_pipeline(LISTS)
    res = nbflow_cli("run", str(path), "-e", "inline", "-p", "itms=[3]", home=tmp_path / "home")
    assert res.returncode == 2
    assert res.stderr.startswith("error: pipeline 'lists' has no parameter 'itms'; declared: items, opts\n"), res.stderr


@pytest.mark.parametrize("param", ["items", "opts"])
def test_list_parameter_hint_is_syntax_the_parser_takes(tmp_path, write_pipeline, param):
    path = write_pipeline(LISTS)
    home = tmp_path / "home"
    bad = nbflow_cli("run", str(path), "-e", "inline", "-p", f"{param}=1,2", home=home)
    assert bad.returncode == 2 and "hint:" in bad.stderr, bad.stderr
    suggested = shlex.split(bad.stderr.split("on the command line: ", 1)[1])  # as a shell would split it
    assert suggested[0] == "-p", suggested
    good = nbflow_cli("run", str(path), "-e", "inline", *suggested, home=home)
    assert good.returncode == 0, good.stderr


DAILY = """
from nbflow import Pipeline, task

with Pipeline("daily", schedule="@daily", start_date="2026-01-01") as pipeline:
    @task
    def work(logical_date):
        return str(logical_date)

    work()
"""


def test_backfill_refuses_dates_whose_interval_has_not_ended(tmp_path, write_pipeline):
    from datetime import UTC, datetime, timedelta

    path = write_pipeline(DAILY)
    home = tmp_path / "home"
    today = datetime.now(UTC).date()
    start, end = today - timedelta(days=2), today + timedelta(days=3)
    res = nbflow_cli("backfill", str(path), "--start", str(start), "--end", str(end), home=home)
    assert res.returncode == 2, res.stdout + res.stderr
    assert f"the data interval of {today} has not ended (it ends {today + timedelta(days=1)} UTC)" in res.stderr
    assert "nor have the 3 after it; no run was queued" in res.stderr
    assert f"end the range at --end {today - timedelta(days=1)}" in res.stderr
    assert "no runs yet" in nbflow_cli("runs", home=home).stdout  # nothing was queued
    ok = nbflow_cli("backfill", "daily", "--start", str(start), "--end", str(today - timedelta(days=1)), home=home)
    assert ok.returncode == 0 and "backfill of daily: 2 run(s) queued" in ok.stdout, ok.stderr


def test_backfill_takes_a_file_not_run_yet_and_dags_register_records_one(tmp_path, write_pipeline):
    path = write_pipeline(DAILY)
    home = tmp_path / "home"
    by_name = nbflow_cli("backfill", "daily", "--start", "2026-01-01", "--end", "2026-01-02", home=home)
    assert by_name.returncode == 2 and "nbflow dags register FILE" in by_name.stderr, by_name.stderr
    by_path = nbflow_cli("backfill", str(path), "--start", "2026-01-01", "--end", "2026-01-02", home=home)
    assert by_path.returncode == 0 and "backfill of daily: 2 run(s) queued" in by_path.stdout, by_path.stderr

    other = tmp_path / "other_home"
    reg = nbflow_cli("dags", "register", str(path), home=other)
    assert reg.returncode == 0 and "registered pipeline daily" in reg.stdout, reg.stderr
    again = nbflow_cli("backfill", "daily", "--start", "2026-01-01", "--end", "2026-01-01", home=other)
    assert again.returncode == 0 and "1 run(s) queued" in again.stdout, again.stderr


def test_runs_lists_the_logical_date(tmp_path, write_pipeline):
    path = write_pipeline(DAILY)
    home = tmp_path / "home"
    nbflow_cli("backfill", str(path), "--start", "2026-01-01", "--end", "2026-01-02", home=home)
    header, _, *rows = nbflow_cli("runs", home=home).stdout.splitlines()
    assert header.split()[:6] == ["run", "pipeline", "state", "trigger", "logical", "date"], header
    at = header.index("logical date")
    assert [r[at : at + 10] for r in rows] == ["2026-01-02", "2026-01-01"], rows


NOTEBOOK_PIPELINE = """
from nbflow import Pipeline, notebook

with Pipeline("nb") as pipeline:
    notebook("work.ipynb", name="work", parameters={"x": 21}, params_cell=PARAMS_CELL)
"""


@pytest.fixture
def no_pool(nbflow_home, monkeypatch):
    """One notebook attempt per test: no pre-started kernel for a next one."""
    monkeypatch.setenv("NBFLOW_KERNEL_POOL", "0")
    api.reset()


def _notebook_run(write_pipeline, cells, *, kernel="python3", params_cell="strict"):
    path = write_pipeline(NOTEBOOK_PIPELINE.replace("PARAMS_CELL", repr(params_cell)))
    spec = {"kernelspec": {"name": kernel, "display_name": "Python", "language": "python"}}
    make_notebook(path.parent / "work.ipynb", cells, metadata=spec)
    result = api.run_pipeline(load_pipeline(path), executor="inline")
    return result, api.run_details(result.run_id)


def test_kernelspec_named_python_runs_as_papermill_runs_it(no_pool, write_pipeline):
    result, _ = _notebook_run(write_pipeline, [("x = 1", ["parameters"]), "print('doubled', x * 2)"], kernel="python")
    assert result.ok, result.tasks
    assert "doubled 42" in api.read_log(result.run_id, "work")


def test_papermill_does_not_warn_of_parameters_nbflow_injects_on_purpose(no_pool, write_pipeline):
    result, _ = _notebook_run(write_pipeline, ["print('got', x)"], params_cell="inject_top")
    assert result.ok, result.tasks
    log = api.read_log(result.run_id, "work")
    assert "got 21" in log and "Passed unknown parameter" not in log, log


def test_line_magic_error_keeps_its_type_and_message(no_pool, write_pipeline):
    result, details = _notebook_run(write_pipeline, [("x = 1", ["parameters"]), "%nosuchmagic 1"])
    assert not result.ok
    (attempt,) = details["attempts"]
    assert (attempt["ename"], attempt["evalue"]) == ("UsageError", "Line magic function `%nosuchmagic` not found.")
    assert attempt["message"] == "Cell 2/2 raised UsageError: Line magic function `%nosuchmagic` not found."


GPU = """
from nbflow import Pipeline, task

with Pipeline("gpu") as pipeline:
    @task(queue="gpu", resources={"GPU": 1})
    def train():
        return 1

    train()
"""


def _note_when(store, run_id, done, predicate, seconds=60):
    import time

    note = None
    for _ in range(int(seconds * 10)):
        note = store.task_instances(run_id)[0]["note"]
        if predicate(note) or done:
            break
        time.sleep(0.1)
    return note


@pytest.mark.slow
def test_queue_waiting_note_follows_the_workers_and_names_the_resources(
    tmp_path, nbflow_home, monkeypatch, write_pipeline
):
    import threading

    from tests.test_dask_executor import Cluster, _serve

    cluster = Cluster(tmp_path)
    cluster.worker("cpu", "default")
    try:
        _serve(cluster, 1, monkeypatch)
        pipeline = load_pipeline(write_pipeline(GPU))
        store = api.open_store()
        run_id = api.create_run(pipeline, executor="dask", store=store)
        done: dict = {}
        driver = threading.Thread(target=lambda: done.update(r=api.drive_run(pipeline, run_id, store=store)))
        driver.start()
        start = f"start one with: nbflow worker --scheduler {cluster.address} --queue gpu --resources GPU=1"
        note = _note_when(store, run_id, done, lambda n: bool(n))
        assert note == f"waiting: no worker serves queue 'gpu' (served: default); {start}", note

        cluster.worker("gpu-without-gpus", "gpu")  # serves the queue, but has no GPU: the note says so
        note = _note_when(store, run_id, done, lambda n: n and "has the resources" in n)
        assert note == f"waiting: no worker of queue 'gpu' has the resources GPU=1; {start}", note

        argv = [sys.executable, "-m", "nbflow", *start.split("nbflow ", 1)[1].split(), "--name", "gpu1"]
        cluster._start("gpu1", argv)  # the command the note gives
        driver.join(90)
        assert done["r"].ok, done["r"].tasks
        assert done["r"].task("train")["hostname"] is not None and store.task_instances(run_id)[0]["note"] is None
    finally:
        cluster.close()


ONLY = """
from nbflow import Pipeline, task

with Pipeline("only", params={"rows": 10, "C": 1.0}) as pipeline:
    @task
    def prepare(rows):
        return list(range(rows))

    @task
    def train(data, C):
        return len(data) * C

    train(prepare(pipeline.params.rows), pipeline.params.C)
"""


def test_only_names_the_run_of_each_upstream_value_and_refuses_one_with_other_parameters(tmp_path, write_pipeline):
    path = write_pipeline(ONLY)
    home = tmp_path / "home"
    assert nbflow_cli("run", str(path), "-e", "inline", home=home).returncode == 0  # run 1: rows=10, C=1.0
    # train's own parameter may change: prepare's value (rows=10) still fits
    fits = nbflow_cli("run", str(path), "-e", "inline", "--only", "train", "-p", "C=0.5", home=home)
    assert fits.returncode == 0, fits.stderr
    assert fits.stdout.startswith("nbflow: upstream value of prepare: from run 1, try 1\n"), fits.stdout

    stale = nbflow_cli("run", str(path), "-e", "inline", "--only", "train", "-p", "rows=5", home=home)
    assert stale.returncode == 2, stale.stdout
    assert stale.stderr == (
        "error: pipeline 'only': --only: the value of upstream task 'prepare' would come from run 1, whose "
        "parameters differ: rows=10 there, 5 here\n"
        "  hint: run it too (--only prepare train), or pass --allow-stale-inputs to use run 1's value anyway\n"
    )
    assert [line.split()[0] for line in nbflow_cli("runs", home=home).stdout.splitlines()[2:]] == [
        "2",
        "1",
    ]  # no run made

    allowed = nbflow_cli(
        "run", str(path), "-e", "inline", "--only", "train", "-p", "rows=5", "--allow-stale-inputs", home=home
    )
    assert allowed.returncode == 0, allowed.stderr
    assert "upstream value of prepare: from run 1, try 1 (computed with other parameters: rows=10 there, 5 here)" in (
        allowed.stdout
    )
