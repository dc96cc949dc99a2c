"""Issue 16, item 8: what translating Airflow and papermill examples found, one test per fix."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from nbflow import api
from nbflow.loader import load_pipeline

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
