"""%nbflow magics in real kernels (nbclient), the same notebook from the CLI, and the kernel's
record of this notebook's cells (in-process IPython shell)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from conftest import _reset, make_notebook

from nbflow import api

DEMO = [
    "%load_ext nbflow\n%nbflow pipeline cells_demo",
    "import time\nfactor = 3",
    "%%nbflow task load_a --outputs a\na = [1, 2, 3]\ntime.sleep(1)\nlen(a)",
    "%%nbflow task load_b --outputs b\nb = 10 * factor\ntime.sleep(1)",
    "%%nbflow task combine --inputs a,b --outputs total\ntotal = sum(a) + b\nprint('total is', total)",
    "print('interactive value', total)",  # the task cells also ran here, as cells do
    "%nbflow run this --executor local -j 2",
    "%nbflow get combine total",
    "%nbflow status",
    "%nbflow show this",
    "%nbflow logs combine",
    "%nbflow runs",
]


def _execute(path: Path, allow_errors: bool = False) -> nbformat.NotebookNode:
    from nbclient import NotebookClient

    nb = nbformat.read(str(path), as_version=4)
    NotebookClient(
        nb,
        timeout=180,
        kernel_name="python3",
        allow_errors=allow_errors,
        resources={"metadata": {"path": str(path.parent)}},
    ).execute()
    return nb


def _cell(nb: nbformat.NotebookNode, first_line: str) -> nbformat.NotebookNode:
    return next(c for c in nb.cells if c.source.splitlines()[0] == first_line)


def _outputs(nb: nbformat.NotebookNode, first_line: str) -> list:
    return _cell(nb, first_line).outputs


def _in(nb: nbformat.NotebookNode, first_line: str) -> str:
    """``cell In [N]`` with the N the executed notebook shows for that cell (as a user reads it)."""
    return f"cell In [{_cell(nb, first_line).execution_count}]"


def _text(outputs: list) -> str:
    return "".join(o.get("text", "") or o.get("data", {}).get("text/plain", "") for o in outputs)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The DEMO notebook executed by nbclient in a real kernel, with its own NBFLOW_HOME."""
    folder = tmp_path_factory.mktemp("magics")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NBFLOW_HOME", str(folder / "home"))
        for var in ("NBFLOW_DB_URL", "NBFLOW_ARTIFACT_ROOT", "NBFLOW_EXECUTOR", "NBFLOW_PARALLELISM"):
            mp.delenv(var, raising=False)
        _reset()
        path = make_notebook(folder / "demo.ipynb", DEMO)
        yield path, _execute(path)
        _reset()


@pytest.mark.slow
def test_run_this_runs_the_cells_through_the_engine(demo):
    path, nb = demo
    assert "interactive value 36" in _text(_outputs(nb, "print('interactive value', total)"))
    runs = api.list_runs("cells_demo")
    assert [(r["state"], r["trigger"], r["task_counts"]) for r in runs] == [("success", "notebook", {"success": 3})]
    run_id = runs[0]["id"]
    details = api.run_details(run_id)
    assert {(a["task_id"], a["name"]) for a in details["artifacts"]} == {
        ("load_a", "a"),
        ("load_b", "b"),
        ("combine", "total"),
    }
    assert api.load_output(run_id, "combine") == {"total": 36}
    tasks = {t["task_id"]: t for t in details["tasks"]}
    assert all(t["kind"] == "cell" and os.path.isfile(t["output_uri"]) for t in tasks.values())
    a, b = tasks["load_a"], tasks["load_b"]
    assert a["start_date"] < b["end_date"] and b["start_date"] < a["end_date"]  # independent cells overlapped
    run_out = _outputs(nb, "%nbflow run this --executor local -j 2")
    assert [o.output_type for o in run_out] == ["display_data"]  # the live view, and no second copy
    assert "application/vnd.jupyter.widget-view+json" in run_out[0]["data"]
    assert _text(_outputs(nb, "%nbflow get combine total")) == "36"
    assert "total is 36" in _text(_outputs(nb, "%nbflow logs combine"))
    status = _outputs(nb, "%nbflow status")
    combine = "%%nbflow task combine --inputs a,b --outputs total"
    assert f"combine          {_in(nb, combine)} --inputs a,b --outputs total" in _text(status)
    assert _in(nb, "import time") in _text(status).splitlines()[0]  # "...setup: cell In [2]"
    assert 'data-task="combine" data-state="success"' in status[-1]["data"]["text/html"]
    assert "cells_demo" in _outputs(nb, "%nbflow runs")[0]["data"]["text/html"]


@pytest.mark.slow
def test_show_draws_the_dag_coloured_by_the_latest_run(demo):
    _, nb = demo
    svg = _outputs(nb, "%nbflow show this")[0]["data"]["image/svg+xml"]
    assert svg.count('fill="#8fdb8f"') == 3  # three task nodes in the success colour
    assert all(f"task-{t}" in svg for t in ("load_a", "load_b", "combine"))


@pytest.mark.slow
def test_cli_runs_the_same_notebook_without_a_kernel(demo):
    path, _ = demo
    res = subprocess.run(
        [sys.executable, "-m", "nbflow", "run", str(path), "--executor", "local", "-j", "2"],
        capture_output=True,
        text=True,
        timeout=180,
        env=os.environ.copy(),
        cwd=path.parent,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert "of cells_demo: success" in res.stdout
    runs = api.list_runs("cells_demo")
    assert [r["trigger"] for r in runs] == ["cli", "notebook"]
    assert runs[0]["version_id"] == runs[1]["version_id"]  # the cells the kernel saw are the file's cells
    assert api.load_output(runs[0]["id"], "combine") == {"total": 36}


FAILS = [
    "%load_ext nbflow\n%nbflow pipeline fails_demo",
    "%%nbflow task boom\nx = 1\ny = x / 0",
    "%%nbflow task after_boom --after boom\nprint('ran after boom')",
    "%nbflow mode declare",
    "%%nbflow task forgetful --outputs z\nprint('not run here')",
    "%nbflow run this --executor local -j 2",
    "%%nbflow task bad --inputs nope\n1",
    "%nbflow run nowhere.py",
]


@pytest.mark.slow
def test_errors_are_short_and_name_the_cell(nbflow_home, tmp_path):
    nb = _execute(make_notebook(tmp_path / "fails.ipynb", FAILS), allow_errors=True)
    boom = _outputs(nb, "%%nbflow task boom")
    assert [o.get("ename") for o in boom] == ["ZeroDivisionError", "MagicError"]  # it ran here and failed
    assert "task 'boom' is declared" in boom[1]["evalue"]
    assert "ran after boom" in _text(_outputs(nb, "%%nbflow task after_boom --after boom"))
    assert _outputs(nb, "%%nbflow task forgetful --outputs z") == []  # mode declare: not run here
    (error,) = [o for o in _outputs(nb, "%nbflow run this --executor local -j 2") if o.output_type == "error"]
    assert error["ename"] == "MagicError"
    text = "\n".join(error["traceback"])
    assert f"boom: failed: {_in(nb, '%%nbflow task boom')} raised ZeroDivisionError: division by zero" in text
    assert (
        f"forgetful: failed: {_in(nb, '%%nbflow task forgetful --outputs z')} did not define z (named in --outputs)"
        in text
    )
    assert "after_boom: upstream_failed" in text
    assert len(text.splitlines()) <= 12 and "site-packages" not in text and "Traceback" not in text
    bad = _outputs(nb, "%%nbflow task bad --inputs nope")[0]
    assert f"this notebook:{_in(nb, '%%nbflow task bad --inputs nope')}: task 'bad' takes input 'nope'" in bad["evalue"]
    assert "no pipeline file or known pipeline nowhere.py" in _outputs(nb, "%nbflow run nowhere.py")[0]["evalue"]
    (run,) = api.list_runs("fails_demo")
    attempt = next(a for a in api.run_details(run["id"])["attempts"] if a["task_id"] == "boom")
    assert run["state"] == "failed" and attempt["ename"] == "ZeroDivisionError" and "y = x / 0" in attempt["traceback"]


# --- the kernel's record of this notebook (a real IPython shell in this process) ----------------


@pytest.fixture
def shell(nbflow_home):
    from IPython.core.interactiveshell import InteractiveShell

    from nbflow import jupyter

    ip = InteractiveShell.instance()
    ip.run_cell("import os", store_history=True)  # before %load_ext: found in the history
    assert ip.run_cell("%load_ext nbflow", store_history=True).success
    yield ip, jupyter._loaded[id(ip)].this
    ip.run_cell("%unload_ext nbflow")
    InteractiveShell.clear_instance()


def _run(ip, source: str, cell_id: str | None = None):
    return ip.run_cell(source, store_history=True, cell_id=cell_id)


def test_setup_cells_are_those_run_before_the_first_task(shell):
    ip, this = shell
    _run(ip, "import math", "c1")
    _run(ip, "1 / 0", "c2")  # failed: not a setup cell
    _run(ip, "%nbflow pipeline interactive\nfactor = 2", "c3")
    assert _run(ip, "%%nbflow task a --outputs x\nx = math.pi * factor", "c4").success
    assert ip.user_ns["x"] == pytest.approx(2 * 3.14159, rel=1e-4)  # the cell also ran here
    _run(ip, "x + 1", "c5")  # exploration below the first task: not setup
    _run(ip, "import math  # again", "c1")  # a setup cell run again is updated in place
    _run(ip, "%%nbflow setup\nimport json", "c6")  # explicit setup, below the tasks
    assert [(c.role, c.source) for c in this.cells] == [
        ("setup", "import os"),
        ("setup", "import math  # again"),
        ("setup", "factor = 2"),
        ("task", "x = math.pi * factor"),
        ("setup", "import json"),
    ]
    pipeline = this.pipeline()
    assert pipeline.name == "interactive" and pipeline.file is None and list(pipeline.tasks) == ["a"]


def test_declarations_replace_by_cell_and_modes(shell):
    ip, this = shell
    _run(ip, "%%nbflow task a --outputs v\nv = 1", "c1")
    _run(ip, "%%nbflow task renamed --outputs v\nv = 1", "c1")  # same cell, new name: replaces
    assert this.tasks() == ["renamed"]
    result = _run(ip, "%%nbflow task renamed\nv = 2", "c2")  # another cell, same name: refused
    assert not result.success and "already declared by cell In [" in str(result.error_in_exec)
    _run(ip, "%nbflow mode declare")
    _run(ip, "%%nbflow task b --inputs v\nw = v + 1", "c3")
    assert "w" not in ip.user_ns and this.tasks() == ["renamed", "b"]
    _run(ip, "%nbflow forget b")
    assert this.tasks() == ["renamed"]
    bad = _run(ip, "%nbflow frobnicate")
    assert "invalid choice: 'frobnicate'" in str(bad.error_in_exec)
    assert bad.error_in_exec._render_traceback_()[0].startswith("\x1b[0;31mnbflow: ")


def test_magic_help_documents_every_command():
    from nbflow.jupyter.magics import NbflowMagics, _parser

    doc = NbflowMagics.nbflow.__doc__
    commands = _parser()._subparsers._group_actions[0].choices
    for command in [*commands, "pipeline"]:
        assert re.search(rf"%nbflow {command}\b", doc) or command == "help", command
    for cell in ("task", "setup", "params"):
        assert f"%%nbflow {cell}" in doc


QUICK = """
from nbflow import Pipeline, task

with Pipeline("quick", params={"x": 1}) as pipeline:
    @task
    def double(params):
        return params["x"] * 2
    double()
"""


@pytest.mark.slow
def test_run_by_name_and_trigger_for_the_scheduler(shell, write_pipeline):
    import time

    ip, _ = shell
    missing = _run(ip, "%nbflow trigger quick")
    assert "no pipeline named 'quick'" in str(missing.error_in_exec)
    assert _run(ip, f"%nbflow run {write_pipeline(QUICK)} --executor inline").success
    assert _run(ip, "%nbflow run quick -p x=4 --executor inline").success  # a known pipeline, by name
    assert ip.run_cell("%nbflow get double").result == 8
    assert _run(ip, "%nbflow trigger quick -p x=5").success  # no scheduler alive: a driver process runs it
    deadline = time.monotonic() + 60
    while (latest := api.list_runs("quick", limit=1)[0])["state"] not in ("success", "failed"):
        assert time.monotonic() < deadline, latest
        time.sleep(0.2)
    assert latest["trigger"] == "manual" and latest["state"] == "success"
    assert api.load_output(latest["id"], "double") == 10


@pytest.mark.slow
def test_run_incremental_in_a_kernel_reuses_cells_that_did_not_change(nbflow_home, tmp_path):
    side = tmp_path / "executions.txt"
    cells = [
        "%load_ext nbflow\n%nbflow pipeline incr_demo\n%nbflow mode declare",
        f"SIDE = {str(side)!r}",
        "%%nbflow task first --outputs a\nopen(SIDE, 'a').write('first\\n')\na = 2",
        "%%nbflow task second --inputs a --outputs b\nopen(SIDE, 'a').write('second\\n')\nb = a * 10",
        "%nbflow run this --executor local",
        "%nbflow run this --executor local -i",
        "%nbflow status",
    ]
    nb = _execute(make_notebook(tmp_path / "incr.ipynb", cells))
    assert sorted(side.read_text().split()) == ["first", "second"]  # the second run executed nothing
    runs = api.list_runs("incr_demo")
    assert [(r["state"], r["task_counts"]) for r in runs] == [("success", {"cached": 2}), ("success", {"success": 2})]
    tasks = {t["task_id"]: t for t in api.run_details(runs[0]["id"])["tasks"]}
    assert {t["why"] for t in tasks.values()} == {f"reused from run {runs[1]['id']}, try 1"}
    html = _outputs(nb, "%nbflow status")[-1]["data"]["text/html"]
    assert 'data-task="second" data-state="cached"' in html and "reused from run" in html
