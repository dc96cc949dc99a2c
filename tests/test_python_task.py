"""Python tasks (nbflow/tasks/python.py): a failing function's traceback names the pipeline file
and line, also where cloudpickle sent the function by value (its frames read "<dynamic-code>")."""

from __future__ import annotations

import pytest

from nbflow import api
from nbflow.loader import load_pipeline

FAILS = """
from nbflow import Pipeline, task

with Pipeline("fails") as pipeline:
    @task
    def boom():
        x = 1
        raise ValueError(f"boom {x}")  # line 8

    @task(timeout=60)
    def boom_in_child():
        raise KeyError("child")  # line 12

    boom()
    boom_in_child()
"""


@pytest.mark.parametrize("executor", ["inline", "local"])
def test_traceback_names_the_pipeline_file_and_line(nbflow_home, write_pipeline, executor):
    path = write_pipeline(FAILS)
    result = api.run_pipeline(load_pipeline(path), executor=executor)
    attempts = {a["task_id"]: a for a in api.run_details(result.run_id)["attempts"]}
    for task, line in (("boom", 8), ("boom_in_child", 12)):
        tb = attempts[task]["traceback"]
        assert "<dynamic-code>" not in tb, tb
        assert f'File "{path}", line {line}, in {task}' in tb, tb
        assert "raise " in tb.split(f"line {line}, in {task}")[1].splitlines()[1], tb  # and the line itself
    log = api.read_log(result.run_id, "boom")
    assert f'File "{path}", line 8, in boom' in log and "<dynamic-code>" not in log, log
