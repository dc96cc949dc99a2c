"""``GET runs/{run}/tasks/{task}/diff?against=RUN`` (nbdime's diff of two runs' output
notebooks of one task) and the runs listing's ``metrics``, against a real `jupyter server`;
every answer is checked against docs/openapi.yaml."""

from __future__ import annotations

import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import make_notebook
from tests.jupyter_procs import JupyterProc, nbflow_env, register_pipelines, start_jupyter

pytestmark = [pytest.mark.server, pytest.mark.slow]
pytest.importorskip("nbdime", reason="nbdime is a dependency of nbflow (pip install -e .)")

SCORED = """
from nbflow import Pipeline, notebook, task

with Pipeline("scored", params={"C": 1.0}) as pipeline:
    @task
    def gate(params):
        if params["C"] > 500:
            raise ValueError("C too large")
        return params["C"]

    gate() >> notebook("score.ipynb", name="score", parameters={"C": pipeline.params.C})
"""


def score_notebook(path: Path) -> Path:
    """A notebook that saves a metric depending on C and prints it (its output differs by C)."""
    return make_notebook(
        path,
        [
            ("C = 1.0", ["parameters"]),
            "import nbflow\naccuracy = round(1 - 1 / (1 + C), 4)\n_ = nbflow.metric('accuracy', accuracy)",
            "print(f'accuracy is {accuracy}')",
        ],
    )


def entries(diff: list) -> list:
    """A diff from JSON as nbdime's DiffEntry objects (what nbdime.patch takes)."""
    from nbdime.diff_format import DiffEntry

    return [DiffEntry(e, **({"diff": entries(e["diff"])} if "diff" in e else {})) for e in diff]


def wait_finished(server: JupyterProc, run_ids: list[int], timeout: float = 120) -> None:
    """Wait until every run has ended."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = [server.request("GET", f"runs/{r}")[1]["run"]["state"] for r in run_ids]
        if all(s in ("success", "failed", "cancelled") for s in states):
            return
        time.sleep(0.5)
    raise AssertionError(f"runs {run_ids} did not end within {timeout} s: {states}")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterProc]:
    """A server with the `scored` pipeline and three finished runs: C=1 and C=9 (a sweep), and
    C=999 whose gate fails, so its notebook task never runs."""
    root = tmp_path_factory.mktemp("diffroot")
    (root / "pipelines").mkdir()
    (root / "pipelines" / "scored.py").write_text(textwrap.dedent(SCORED))
    score_notebook(root / "pipelines" / "score.ipynb")
    env = nbflow_env(root)
    register_pipelines(root, env)
    proc = start_jupyter(root, env, "server")
    try:
        status, swept = proc.request("POST", "pipelines/scored/trigger", {"sweep": {"C": ["1", "9"]}})
        assert status == 201 and swept["run_ids"] == [1, 2], swept
        wait_finished(proc, [1, 2])
        status, third = proc.request("POST", "pipelines/scored/trigger", {"params": {"C": 999}})
        assert status == 201 and third["run_id"] == 3, third
        wait_finished(proc, [3])
        yield proc
    finally:
        proc.stop()


def test_the_diff_of_two_runs_output_notebooks_is_nbdimes(server: JupyterProc) -> None:
    """The base is run `against`'s notebook; the diff says the printed accuracy changed."""
    import nbdime

    status, found = server.request("GET", "runs/2/tasks/score/diff?against=1")
    assert status == 200, found
    assert (found["task_id"], found["base_run"], found["remote_run"]) == ("score", 1, 2)
    assert (found["base_try"], found["remote_try"]) == (1, 1)
    base_cells = found["base"]["cells"]
    assert any("accuracy is 0.5" in "".join(o.get("text", "")) for c in base_cells for o in c.get("outputs", []))
    cells = next(d for d in found["diff"] if d["key"] == "cells")
    changed = [d["key"] for d in cells["diff"] if d["op"] == "patch"]
    printing = next(i for i, c in enumerate(base_cells) if "print(" in "".join(c["source"]))
    assert printing in changed, cells  # the cell whose output differs (0.5 against 0.9)
    metric = next(i for i, c in enumerate(base_cells) if "nbflow.metric(" in "".join(c["source"]))
    assert metric not in changed, cells  # same source, no output: papermill's timings are left out
    assert "papermill" not in found["base"]["metadata"]
    # what nbdime itself says: applying the diff to the base gives run 2's notebook outputs
    patched = nbdime.patch(found["base"], entries(found["diff"]))
    outputs = "".join(o.get("text", "") for o in patched["cells"][printing]["outputs"])
    assert "accuracy is 0.9" in outputs
    # ... in every cell, paths included (the answer names no server path: the diff was computed
    # on the texts it carries, so nbdime's web widgets can apply its offsets)
    _, reverse = server.request("GET", "runs/1/tasks/score/diff?against=2")
    assert [c["source"] for c in patched["cells"]] == [c["source"] for c in reverse["base"]["cells"]]
    assert str(server.root) not in str(found)


def test_a_run_with_no_output_notebook_of_the_task_is_a_404_naming_task_and_run(server: JupyterProc) -> None:
    """Run 3's notebook task never ran (its upstream failed); a Python task has no notebook."""
    status, err = server.request("GET", "runs/3/tasks/score/diff?against=1")
    assert status == 404, err
    assert "task 'score' of run 3 has no output notebook" in err["message"], err
    status, err = server.request("GET", "runs/1/tasks/score/diff?against=3")
    assert status == 404 and "task 'score' of run 3" in err["message"], err
    status, err = server.request("GET", "runs/2/tasks/gate/diff?against=1")
    assert status == 404 and "task 'gate' of run 1 has no output notebook" in err["message"], err


def test_unknown_runs_tasks_and_a_missing_against_are_typed_errors(server: JupyterProc) -> None:
    status, err = server.request("GET", "runs/999/tasks/score/diff?against=1")
    assert status == 404 and "999" in err["message"], err
    status, err = server.request("GET", "runs/2/tasks/score/diff?against=998")
    assert status == 404 and "998" in err["message"], err
    status, err = server.request("GET", "runs/2/tasks/nope/diff?against=1")
    assert status == 404 and "no task 'nope'" in err["message"], err
    status, err = server.request("GET", "runs/2/tasks/score/diff")
    assert status == 400 and "against" in err["fields"], err
    status, err = server.request("GET", "runs/2/tasks/score/diff?against=x")
    assert status == 400 and "against" in err["fields"], err
    status, err = server.request("GET", "runs/2/tasks/score/diff?against=1&try=7")
    assert status == 404 and "no try 7" in err["message"], err


def test_the_runs_listing_carries_each_runs_params_sweep_and_metrics(server: JupyterProc) -> None:
    status, page = server.request("GET", "pipelines/scored/runs?limit=10")
    assert status == 200, page
    rows = {r["id"]: r for r in page["runs"]}
    assert rows[1]["params"] == {"C": 1.0} and rows[1]["metrics"] == {"score.accuracy": 0.5}
    assert rows[2]["metrics"] == {"score.accuracy": 0.9}
    assert rows[1]["sweep_id"] == rows[2]["sweep_id"] is not None
    assert rows[3]["sweep_id"] is None and rows[3]["metrics"] == {}
