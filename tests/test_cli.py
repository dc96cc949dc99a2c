"""The real `nbflow` command in a subprocess: exit codes, progress, summary, errors as file:line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

GOOD = """
from nbflow import Pipeline, task, shell

with Pipeline("cli_demo", params={"n": 2}) as pipeline:
    @task
    def square(params):
        print("squaring", params["n"])
        return params["n"] ** 2

    @task
    def show(x):
        print("result is", x)

    fetch = shell("echo fetched", name="fetch")
    sq = square()
    fetch >> sq
    show(sq)
"""

BAD_TASK = GOOD.replace('print("result is", x)', 'raise ValueError(f"bad value {x}")')


def nbflow(*args: str, home: Path, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "NBFLOW_HOME": str(home), "PYTHONIOENCODING": "utf-8"}
    env.pop("NBFLOW_DB_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "nbflow", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=120
    )


def test_run_success_shows_progress_summary_and_records_everything(tmp_path, write_pipeline):
    path = write_pipeline(GOOD)
    home = tmp_path / "home"
    res = nbflow("run", str(path), "-p", "n=7", home=home)
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert "run 1 of cli_demo (3 tasks) on dask (local Dask cluster" in out
    assert "if this process dies: the embedded Dask cluster dies with this process" in out and "(at least once" in out
    assert "done in" in out  # (fast tasks on Dask report no separate start)
    assert "task" in out and "state" in out and "tries" in out and "duration" in out
    assert "run 1 of cli_demo: success" in out

    runs = nbflow("runs", home=home)
    assert runs.returncode == 0 and "cli_demo" in runs.stdout and "3 success" in runs.stdout
    tasks = nbflow("tasks", "1", home=home)
    assert tasks.returncode == 0 and "square" in tasks.stdout and "return" in tasks.stdout
    logs = nbflow("logs", "1", "square", home=home)
    assert logs.returncode == 0 and "squaring 7" in logs.stdout
    assert "fetched" in nbflow("logs", "1", "fetch", home=home).stdout


def test_failed_run_exits_1_and_rerun_fixes_it(tmp_path, write_pipeline):
    path = write_pipeline(BAD_TASK)
    home = tmp_path / "home"
    res = nbflow("run", str(path), "--executor", "inline", home=home)
    assert res.returncode == 1
    assert "if this process dies: attempts run inside this process" in res.stdout and "(at least once)" in res.stdout
    assert "FAILED (try 1): ValueError: bad value 4" in res.stdout
    assert "run 1 of cli_demo: failed" in res.stdout and "nbflow rerun 1" in res.stdout
    assert "ValueError: bad value 4" in nbflow("tasks", "1", home=home).stdout
    assert "Traceback" in nbflow("logs", "1", "show", home=home).stdout
    path.write_text(GOOD)
    again = nbflow("rerun", "1", "--executor", "inline", home=home)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "run 1 of cli_demo: success" in again.stdout


def test_bad_pipeline_file_is_reported_as_file_line_without_traceback(tmp_path, write_pipeline):
    path = write_pipeline(
        """
        from nbflow import Pipeline, shell
        with Pipeline("cyc") as p:
            a = shell("true", name="a")
            b = shell("true", name="b")
            a >> b >> a
        """
    )
    res = nbflow("run", str(path), home=tmp_path / "home")
    assert res.returncode == 2
    assert res.stderr.startswith(f"error: {path}:3: pipeline 'cyc' has a cycle: a -> b -> a")
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "home" / "nbflow.db").exists() or "no runs" in nbflow("runs", home=tmp_path / "home").stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["-p", "m=1"], "no parameter 'm'"),
        (["-p", "n"], "is not KEY=VALUE"),
        (["--only", "nope"], "has no task 'nope'"),
        (["--executor", "dask2"], "No executor named 'dask2'"),
    ],
)
def test_bad_arguments_exit_2_and_write_no_run(tmp_path, write_pipeline, args, message):
    path = write_pipeline(GOOD)
    home = tmp_path / "home"
    res = nbflow("run", str(path), *args, home=home)
    assert res.returncode == 2 and message in res.stderr, res.stderr
    assert "no runs yet" in nbflow("runs", home=home).stdout


def test_unknown_run_and_task(tmp_path):
    home = tmp_path / "home"
    res = nbflow("tasks", "42", home=home)
    assert res.returncode == 2 and "no run with id 42" in res.stderr


def test_dag_show_lists_and_draws(tmp_path, write_pipeline):
    path = write_pipeline(GOOD)
    home = tmp_path / "home"
    listing = nbflow("dag", "show", str(path), home=home)
    assert listing.returncode == 0
    assert "square" in listing.stdout and "python: " in listing.stdout and "after fetch" in listing.stdout
    svg = tmp_path / "dag.svg"
    res = nbflow("dag", "show", str(path), "-o", str(svg), home=home)
    assert res.returncode == 0, res.stderr
    text = svg.read_text()
    assert text.startswith("<?xml") and "<svg" in text and "square" in text and "shell: echo fetched" in text
    dot = tmp_path / "dag.dot"
    assert nbflow("dag", "show", str(path), "-o", str(dot), home=home).returncode == 0
    assert '"fetch" -> "square"' in dot.read_text()


def test_help_teaches(tmp_path):
    res = nbflow("--help", home=tmp_path)
    assert res.returncode == 0 and "examples:" in res.stdout and "nbflow run" in res.stdout
    run_help = nbflow("run", "--help", home=tmp_path)
    assert "--only" in run_help.stdout and "KEY=VALUE" in run_help.stdout


def test_db_upgrade_creates_and_reports(tmp_path):
    home = tmp_path / "home"
    first = nbflow("db", "upgrade", home=home)
    from nbflow.store.session import SCHEMA_HEAD

    assert first.returncode == 0 and f"upgraded empty -> {SCHEMA_HEAD}" in first.stdout
    assert (home / "nbflow.db").exists()
    second = nbflow("db", "upgrade", home=home)
    assert f"already at {SCHEMA_HEAD}" in second.stdout


def test_db_upgrade_of_a_database_it_cannot_use_says_why_without_a_traceback(tmp_path):
    env = {**os.environ, "NBFLOW_HOME": str(tmp_path / "home"), "NBFLOW_DB_URL": "sqlite:////proc/nbflow.db"}
    res = subprocess.run(
        [sys.executable, "-m", "nbflow", "db", "upgrade"], capture_output=True, text=True, env=env, timeout=120
    )
    assert res.returncode == 2, res.stdout + res.stderr
    assert "Traceback" not in res.stderr, res.stderr
    assert (
        "error: /proc/nbflow.db.schema-lock: cannot create the schema lock file of sqlite:////proc/nbflow.db"
        in res.stderr
    )
    assert "hint: nbflow locks the database's schema with a file beside it" in res.stderr


def test_scheduler_says_what_it_serves(tmp_path):
    dags = tmp_path / "dags"
    dags.mkdir()
    home = tmp_path / "home"
    res = nbflow("scheduler", "--loops", "1", "-e", "inline", "--dags-folder", str(dags), home=home)
    assert res.returncode == 0, res.stderr
    assert res.stdout == (
        f"nbflow scheduler (job 1): folder {dags}, executor inline (in this process), database sqlite:///{home / 'nbflow.db'}\n"
    )
