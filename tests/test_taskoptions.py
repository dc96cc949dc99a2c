"""One list of the options every task kind takes: ``TaskOptions`` (the factories' types) names
exactly the options ``dag.TASK_OPTIONS`` gives defaults to, and every factory takes each one."""

from __future__ import annotations

import typing

import pytest

from nbflow import Pipeline, notebook, shell, sql, task
from nbflow.dag import TASK_OPTIONS
from nbflow.exceptions import DefinitionError
from nbflow.taskoptions import TaskOptions
from tests.conftest import NOTEBOOKS

SET = {  # a value of each option that is not its default
    "retries": 2,
    "retry_delay": 1.5,
    "retry_backoff": True,
    "max_retry_delay": 60.0,
    "timeout": 30.0,
    "queue": "gpu",
    "trigger_rule": "all_done",
    "resources": {"GPU": 1.0},
    "pool": "db",
    "pool_slots": 2,
    "on_failure": print,
    "on_success": print,
    "on_retry": print,
    "reads": ("data.csv",),
    "cache": False,
    "cache_ttl": 600.0,
    "produces": (),
}


def test_the_typed_options_are_the_options_with_defaults():
    assert set(typing.get_type_hints(TaskOptions)) == set(TASK_OPTIONS) == set(SET)


@pytest.mark.parametrize("kind", ["task", "notebook", "shell", "sql"])
def test_every_factory_takes_every_option(kind, tmp_path):
    with Pipeline("opts") as pipeline:
        if kind == "task":
            made = task(lambda: 1, name="t", **SET)()
        elif kind == "notebook":
            made = notebook(NOTEBOOKS / "params_ok.ipynb", name="t", **SET)
        elif kind == "shell":
            made = shell("true", name="t", **SET)
        else:
            made = sql("SELECT 1", conn="db", name="t", **SET)
    assert pipeline.tasks["t"] is made
    for option in ("retries", "retry_delay", "retry_backoff", "max_retry_delay", "timeout", "queue", "pool"):
        assert getattr(made, option) == SET[option], option
    assert (made.trigger_rule, made.resources, made.pool_slots) == ("all_done", {"GPU": 1.0}, 2)
    assert made.on_failure is made.on_success is made.on_retry is print
    assert (made.cache, made.cache_ttl) == (False, 600.0)


@pytest.mark.parametrize("kind", ["task", "shell"])
def test_a_misspelled_option_names_the_task_and_the_known_ones(kind):
    with (
        Pipeline("typo"),
        pytest.raises(
            DefinitionError, match=r"(?s)unknown task option\(s\) retires for task 't'.*known options: retries"
        ),
    ):
        if kind == "task":
            task(lambda: 1, name="t", retires=2)()  # type: ignore[call-arg]
        else:
            shell("true", name="t", retires=2)  # type: ignore[call-arg]
