"""Notebook tasks end to end: values python -> notebook -> python, failures by cell, validation."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import nbformat
import psutil
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from nbflow import Pipeline, api, notebook
from nbflow.exceptions import NotebookNotFoundError, ParameterError
from nbflow.loader import load_pipeline
from tests.conftest import kernel_pids

NOTEBOOKS = Path(__file__).parent / "notebooks"


def make_notebook(path: Path, params: str | None, *cells: str) -> Path:
    nb_cells = []
    if params is not None:
        cell = new_code_cell(params)
        cell.metadata["tags"] = ["parameters"]
        nb_cells.append(cell)
    nb_cells += [new_code_cell(c) for c in cells]
    nb = new_notebook(
        cells=nb_cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}
    )
    nbformat.write(nb, path)
    return path


CHAIN = """
from nbflow import Pipeline, task, notebook

with Pipeline("nbchain", params={"alpha": 1.0}) as pipeline:
    @task
    def make():
        return {"k": [1, 2, 3]}

    @task
    def big():
        return bytearray(b"x" * 100)          # not JSON: reaches the notebook as a reference

    consumed = notebook("consume.ipynb", inputs={"small": make(), "blob": big()})

    @task
    def final(total, everything):
        return {"total": total, "names": sorted(everything)}

    final(consumed["total"], consumed)
"""


def test_values_flow_python_notebook_python(nbflow_home, write_pipeline):
    path = write_pipeline(CHAIN)
    make_notebook(
        path.parent / "consume.ipynb",
        "small = None\nblob = None\nalpha: float = 0.0",
        "import nbflow\nblob = nbflow.load(blob)\nprint('blob type', type(blob).__name__, len(blob))",
        "total = sum(small['k']) + len(blob) * alpha\nnbflow.save('total', total)\nnbflow.save('echo', small)",
    )
    result = api.run_pipeline(load_pipeline(path), params={"alpha": "2"}, executor="local")
    assert result.ok, [(t["task_id"], t["state"], t["error"]) for t in result.tasks]
    # alpha was not passed explicitly: the pipeline parameter reached the notebook's declared alpha
    assert api.load_output(result.run_id, "final") == {"total": 206.0, "names": ["echo", "total"]}
    assert api.load_output(result.run_id, "consume") == {"total": 206.0, "echo": {"k": [1, 2, 3]}}
    row = result.task("consume")
    out = nbformat.read(row["output_uri"], as_version=4)
    injected = next(c for c in out.cells if "injected-parameters" in c.metadata.get("tags", []))
    assert "alpha = 2.0" in injected.source and 'small = {"k": [1, 2, 3]}' in injected.source
    assert "nbflow-artifact:pickle:" in injected.source  # the bytearray went by reference
    assert "blob type bytearray 100" in api.read_log(result.run_id, "consume")
    names = {a["name"] for a in api.run_details(result.run_id)["artifacts"] if a["task_id"] == "consume"}
    assert names == {"total", "echo"}


FAILING = """
from nbflow import Pipeline, task, notebook

with Pipeline("nbfail") as pipeline:
    broken = notebook({nb!r}, parameters={{"alpha": 3}}, retries=1)

    @task
    def after(x):
        return x

    after(broken)
"""


def test_failing_cell_is_recorded_with_index_and_output_notebook(nbflow_home, write_pipeline):
    path = write_pipeline(FAILING.format(nb=str(NOTEBOOKS / "raises.ipynb")))
    result = api.run_pipeline(load_pipeline(path), executor="inline")
    assert result.state.value == "failed"
    row = result.task("raises")
    assert row["state"] == "failed" and row["try_number"] == 2 and row["reason"] == "cell_error"
    assert result.task("after")["state"] == "upstream_failed"
    attempts = [a for a in api.run_details(result.run_id)["attempts"] if a["task_id"] == "raises"]
    assert len(attempts) == 2
    first = attempts[0]
    assert first["state"] == "up_for_retry" and first["cell_index"] == 2 and first["ename"] == "ValueError"
    assert "bad alpha 3" in first["evalue"]
    # the output notebook of each try is kept, with the error in it
    for a in attempts:
        text = Path(a["output_uri"]).read_text()
        assert "ValueError" in text and "bad alpha 3" in text
    assert "before the error" in api.read_log(result.run_id, "raises", try_number=1)


@pytest.mark.faults
def test_notebook_timeout_kills_the_kernel(nbflow_home, write_pipeline):
    path = write_pipeline(
        f"""
from nbflow import Pipeline, notebook
with Pipeline("nbslow") as pipeline:
    notebook({str(NOTEBOOKS / "sleeps.ipynb")!r}, parameters={{"seconds": 60}}, timeout=3)
"""
    )
    before = kernel_pids()
    t0 = time.monotonic()
    result = api.run_pipeline(load_pipeline(path), executor="local")
    assert time.monotonic() - t0 < 40
    row = result.task("sleeps")
    assert row["state"] == "failed" and row["reason"] == "task_timeout"
    out = nbformat.read(row["output_uri"], as_version=4)
    assert "before sleep" in json.dumps(out.cells[2].outputs) or "before sleep" in json.dumps(
        [c.get("outputs") for c in out.cells]
    )
    time.sleep(1)
    left = kernel_pids() - before
    assert not left, [(p, psutil.Process(p).cwd(), psutil.Process(p).ppid(), os.getpid()) for p in left]


def test_notebook_definition_errors_name_task_notebook_and_fix(nbflow_home):
    with pytest.raises(ParameterError) as info:
        with Pipeline("nbbad"):
            notebook(NOTEBOOKS / "params_ok.ipynb", parameters={"alpah": 1.0})
    msg = str(info.value)
    assert "alpah" in msg and "params_ok.ipynb" in msg and "alpha" in msg and "test_notebook_task.py:" in msg

    with pytest.raises(ParameterError) as info:
        with Pipeline("nbbad2"):
            notebook(NOTEBOOKS / "no_params.ipynb", parameters={"x": 1})
    assert "parameters" in str(info.value) and "no_params.ipynb" in str(info.value)

    with pytest.raises(ParameterError) as info:
        with Pipeline("nbbad3"):
            notebook(NOTEBOOKS / "params_ok.ipynb", parameters={"n": "five"})
    assert "'n'" in str(info.value) and "int" in str(info.value) and "str" in str(info.value)

    with pytest.raises(NotebookNotFoundError, match="missing.ipynb"):
        with Pipeline("nbbad4"):
            notebook("missing.ipynb")

    with Pipeline("nbok") as p:
        # the opt-out: papermill's own behaviour, nothing checked
        notebook(NOTEBOOKS / "no_params.ipynb", parameters={"x": 1}, params_cell="inject_top")
    assert list(p.tasks) == ["no_params"]
