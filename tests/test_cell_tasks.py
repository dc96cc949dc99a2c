"""Cell tasks: notebooks of tagged / %%nbflow cells load as pipelines without a kernel, run
cell by cell in kernels of their own, and fail naming the notebook's cell."""

from __future__ import annotations

import nbformat
import pytest
from conftest import make_notebook

from nbflow import api
from nbflow.exceptions import DefinitionError, DuplicateTaskError, PipelineLoadError, UnknownTaskError
from nbflow.loader import load_file, load_pipeline
from nbflow.tasks.cell import CellTask

TAGGED = [
    "# A pipeline of tagged cells",
    "%load_ext nbflow\nimport math",  # setup (the %load_ext line is dropped)
    ("scale = 2\nlabel = 'x'\nnot_a_param = math.pi", ["parameters"]),  # setup + run parameters
    ("base = [1, 2, 3]", ["nbflow:task=base", "nbflow:outputs=base", "nbflow:retries=1"]),
    ("%%nbflow task other --outputs other --queue q2\nother = 10 * scale", []),
    (
        "total = sum(base) + other",
        ["nbflow:task=total", "nbflow:inputs=base", "nbflow:inputs=other", "nbflow:outputs=total"],
    ),
    ("%%nbflow task report --after total\nprint('report', label)", []),
    "print('exploring below the tasks: not part of the pipeline')",
    ("%%nbflow setup\nimport json", []),  # setup although it is below the task cells
]


def test_tagged_notebook_is_a_pipeline_file(tmp_path):
    path = make_notebook(tmp_path / "tagged.ipynb", TAGGED, metadata={"nbflow": {"schedule": "0 3 * * *"}})
    found = load_file(path)  # no kernel is started: nothing here executes cells
    assert list(found) == ["tagged"]
    pipeline = found["tagged"]
    assert pipeline.file == str(path) and pipeline.schedule == "0 3 * * *"
    assert pipeline.param_defaults == {"scale": 2, "label": "x"}
    assert pipeline.order() == ["base", "other", "total", "report"]
    assert pipeline.upstream_map() == {"base": set(), "other": set(), "total": {"base", "other"}, "report": {"total"}}
    base, other, total = (pipeline.tasks[t] for t in ("base", "other", "total"))
    assert isinstance(total, CellTask) and total.kind == "cell" and total.value_style == "dict"
    assert {v: r.task_id for v, r in total.inputs.items()} == {"base": "base", "other": "other"}
    assert base.retries == 1 and other.queue == "q2" and other.source == "other = 10 * scale"
    # cells named as JupyterLab's status bar names them: 1-based, of all 9 cells
    assert [(s.label, s.params) for s in total.setup] == [("Cell 2/9", False), ("Cell 3/9", True), ("Cell 9/9", False)]
    assert total.setup[0].source == "import math"
    assert total.cell_label == "Cell 6/9" and total.label() == "Cell 6/9"
    assert pipeline.definition()["tasks"][2]["where"] == f"{path}:Cell 6/9"


def test_pipeline_name_from_magic_line_tag_or_metadata(tmp_path):
    cells = ["%nbflow pipeline from_line --kernel python3", ("x = 1", ["nbflow:task=a"])]
    assert list(load_file(make_notebook(tmp_path / "one.ipynb", cells))) == ["from_line"]
    cells = [("x = 1", ["nbflow:task=a", "nbflow:pipeline=from_tag"])]
    assert list(load_file(make_notebook(tmp_path / "two.ipynb", cells))) == ["from_tag"]
    cells = [("x = 1", ["nbflow:task=a"])]
    path = make_notebook(tmp_path / "three.ipynb", cells, metadata={"nbflow": {"pipeline": "from_meta"}})
    assert list(load_file(path)) == ["from_meta"]


@pytest.mark.parametrize(
    "cells, error, text",
    [
        (
            ["x = 1", "%%nbflow task a --inputs y\nz = y"],
            DefinitionError,
            "Cell 2/2: task 'a' takes input 'y' but no task cell above it (or in --after) outputs 'y'",
        ),
        (
            ["%%nbflow task a --frobnicate 3\n1"],
            DefinitionError,
            "Cell 1/1: %%nbflow task: unrecognized arguments: --frobnicate 3",
        ),
        (
            [("1", ["nbflow:task=a", "nbflow:colour=red"])],
            DefinitionError,
            "Cell 1/1: %%nbflow task: unrecognized arguments: --colour red",
        ),
        (
            ["%%nbflow task a\n1", "%%nbflow task a\n2"],
            DuplicateTaskError,
            "(first at {path}:Cell 1/2, again at {path}:Cell 2/2)",
        ),
        (["%%nbflow task a --after ghost\n1"], UnknownTaskError, "{path}:Cell 1/1: pipeline 'bad' has no task 'ghost'"),
        (
            [("%%nbflow task a\n1", ["nbflow:task=b"])],
            DefinitionError,
            "Cell 1/1: the tag says task 'b' but %%nbflow says 'a'",
        ),
        (["%%nbflow frobnicate\n1"], DefinitionError, "Cell 1/1: unknown cell magic '%%nbflow frobnicate'"),
        (["import os"], PipelineLoadError, "declares no cell tasks"),
        (
            [
                "%%nbflow task a --outputs v\nv = 1",
                "%%nbflow task b --outputs v\nv = 2",
                "%%nbflow task c --after a,b --inputs v\nv",
            ],
            DefinitionError,
            "which its --after tasks a and b both output",
        ),
    ],
)
def test_definition_errors_name_the_notebook_cell(tmp_path, cells, error, text):
    path = make_notebook(tmp_path / "bad.ipynb", cells)
    with pytest.raises(error) as info:
        load_file(path)
    assert text.format(path=path) in str(info.value)
    assert str(path) in str(info.value)


def test_input_comes_from_the_nearest_producer_above(tmp_path):
    cells = [
        "%%nbflow task a --outputs v\nv = 1",
        "%%nbflow task b --outputs v\nv = 2",
        "%%nbflow task c --inputs v\nv",
        "%%nbflow task d --after a --inputs v\nv",
    ]
    pipeline = load_pipeline(make_notebook(tmp_path / "near.ipynb", cells))
    assert pipeline.tasks["c"].inputs["v"].task_id == "b"  # the nearest cell above, as in the notebook
    assert pipeline.tasks["d"].inputs["v"].task_id == "a"  # --after chooses


@pytest.mark.slow
def test_cells_run_in_kernels_and_fail_by_notebook_cell(nbflow_home, tmp_path):
    cells = [
        "import json",
        ("scale = 2", ["parameters"]),
        ("base = [1, 2]", ["nbflow:task=base", "nbflow:outputs=base"]),
        (
            "%%nbflow task total --inputs base --outputs total,blob\n"
            "total = sum(base) * scale\nblob = {1, 2}  # a set: saved pickled\nprint(json.dumps(total))"
        ),
        "%%nbflow task boom --inputs base\nx = 1\ny = base[0] / 0",
        "%%nbflow task forgetful --after base --outputs missing\nprint('defines nothing')",
        "%%nbflow task downstream --after boom\nprint('never runs')",
    ]
    path = make_notebook(tmp_path / "cells.ipynb", cells)
    result = api.run_pipeline(load_pipeline(path), params={"scale": "5"}, executor="local", parallelism=2)
    states = {t["task_id"]: t["state"] for t in result.tasks}
    assert states == {
        "base": "success",
        "total": "success",
        "boom": "failed",
        "forgetful": "failed",
        "downstream": "upstream_failed",
    }
    assert api.load_output(result.run_id, "total") == {"total": 15, "blob": {1, 2}}
    assert "15" in api.read_log(result.run_id, "total")
    artifacts = {(a["task_id"], a["name"], a["type"]) for a in api.run_details(result.run_id)["artifacts"]}
    assert {("base", "base", "json"), ("total", "total", "json"), ("total", "blob", "pickle")} <= artifacts
    attempts = {a["task_id"]: a for a in api.run_details(result.run_id)["attempts"]}
    boom = attempts["boom"]
    assert result.task("boom")["error"] == "Cell 5/7 raised ZeroDivisionError: division by zero"
    assert boom["cell_index"] == 4 and boom["ename"] == "ZeroDivisionError" and boom["reason"] == "cell_error"
    assert "----> 2 y = base[0] / 0" in boom["traceback"]
    assert result.task("forgetful")["error"] == "Cell 6/7 did not define missing (named in --outputs)"
    # the output notebook shows what ran: setup, inputs, the cell (with its error)
    out = nbformat.read(result.task("boom")["output_uri"], as_version=4)
    body = next(c for c in out.cells if c.metadata.get("nbflow", {}).get("task") == "boom")
    assert body.source == "x = 1\ny = base[0] / 0" and body.outputs[0]["ename"] == "ZeroDivisionError"
    assert [c.source for c in out.cells if c.metadata.get("nbflow", {}).get("setup")] == ["import json", "scale = 2"]
