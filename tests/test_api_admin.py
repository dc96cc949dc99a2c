"""The operating functions of the facade: database upgrade, the worker command, reset."""

from __future__ import annotations

import sys

from nbflow import api
from nbflow.store.session import SCHEMA_HEAD


def test_upgrade_database_creates_then_reports_a_current_database(nbflow_home):
    first = api.upgrade_database()
    assert first == (f"sqlite:///{nbflow_home / 'nbflow.db'}", None, SCHEMA_HEAD)
    assert api.upgrade_database() == (first.url, SCHEMA_HEAD, SCHEMA_HEAD)


def test_upgrade_database_hides_the_password(pg_url):
    from dataclasses import replace

    from nbflow.config import get_settings

    with_password = pg_url.replace("postgres@", "postgres:s3cret@")  # trust auth ignores it
    upgrade = api.upgrade_database(replace(get_settings(), db_url=with_password))
    assert "s3cret" not in upgrade.url and "postgres:***@" in upgrade.url
    assert upgrade.after == SCHEMA_HEAD


def test_reset_forgets_the_settings_and_store_of_the_old_environment(nbflow_home, tmp_path, monkeypatch):
    first = api.open_store()
    monkeypatch.setenv("NBFLOW_HOME", str(tmp_path / "other"))
    assert api.open_store() is first  # settings are read once per process
    api.reset()
    second = api.open_store()
    assert second is not first
    assert second.url == f"sqlite:///{tmp_path / 'other' / 'nbflow.db'}"


def test_worker_command_advertises_each_queue_as_a_resource():
    argv, env = api.worker_command(
        "tcp://10.0.0.5:8786", queues=["gpu", "default"], nthreads=2, name="w1", resources=["GPU=1"]
    )
    assert argv == [
        sys.executable,
        "-m",
        "distributed.cli.dask_worker",
        "tcp://10.0.0.5:8786",
        "--nthreads",
        "2",
        "--resources",
        "queue-gpu=2 queue-default=2 GPU=1",
        "--name",
        "w1",
    ]
    from nbflow.executors.dask import worker_environment

    dask_settings = worker_environment()
    assert dask_settings and {k: env[k] for k in dask_settings} == dask_settings
    assert env["PATH"]  # the rest of this process's environment


def test_an_executor_that_cannot_start_fails_the_run_with_the_reason(nbflow_home, monkeypatch):
    """api.started_driver: the run is not left queued; its note and the error say why."""
    import pytest

    from nbflow import Pipeline, task
    from nbflow.exceptions import NbflowError
    from nbflow.executors.inline import InlineExecutor

    with Pipeline("nostart") as pipeline:

        @task
        def noop():
            return 1

        noop()

    def refuse(self):
        raise OSError("no workers can be started here")

    monkeypatch.setattr(InlineExecutor, "start", refuse)
    run_id = api.create_run(pipeline, executor="inline")
    with pytest.raises(NbflowError, match=rf"run {run_id}: executor 'inline' could not start: OSError: no workers"):
        api.drive_run(pipeline, run_id, executor="inline")
    run = api.run_details(run_id)["run"]
    assert run["state"] == "failed" and "no workers can be started here" in run["note"]
