"""The examples under notebooks/ml_pipeline/ run for real, end to end (kernels, scikit-learn).

Both versions of the chain (notebooks and ``@task`` functions) are run with ``-p C=0.5``
through :func:`nbflow.api.run_file`, as ``nbflow run`` does, and their outputs are checked:
every task succeeded, the metrics are sensible, ``C`` reached the training step and the
executed notebooks are where the task rows say.
"""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest

from nbflow import api
from nbflow.config import get_settings
from nbflow.states import RunState, TaskState

pytest.importorskip("sklearn")
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "notebooks" / "ml_pipeline"
NOTEBOOKS = ("prepare.ipynb", "train.ipynb", "evaluate.ipynb")


@pytest.fixture
def example_env(nbflow_home: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A fresh NBFLOW_HOME, kernels that can ``import nbflow`` and a neutral working directory."""
    # Kernels are subprocesses of the workers: give them this checkout even when nbflow is not installed.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    # No [tool.nbflow] of some pyproject.toml in the current directory may change the settings.
    monkeypatch.chdir(tmp_path)
    return nbflow_home


def _assert_all_success(result: api.RunResult, expected: set[str]) -> None:
    states = {row["task_id"]: row["state"] for row in result.tasks}
    assert result.state is RunState.SUCCESS, states
    assert states == dict.fromkeys(expected, TaskState.SUCCESS.value)


def _assert_good_metrics(metrics: dict) -> None:
    assert metrics["accuracy"] > 0.9
    assert metrics["f1"] > 0.9
    assert 0.9 < metrics["roc_auc"] <= 1.0
    assert metrics["test_rows"] == 143  # 25 % of the 569 rows
    assert sum(map(sum, metrics["confusion_matrix"])) == metrics["test_rows"]


def test_notebook_pipeline(example_env: Path) -> None:
    result = api.run_file(EXAMPLE / "pipeline.py", params={"C": "0.5"}, executor="local")
    _assert_all_success(result, {"prepare", "train", "evaluate", "report"})
    run_id = result.run_id

    prepared = api.load_output(run_id, "prepare")
    assert prepared["summary"]["rows"] == 569 and prepared["summary"]["features"] == 30
    assert prepared["train"]["X"].shape == (426, 30)

    # C=0.5 (a string, as from the command line) was coerced to float and reached train.ipynb.
    trained = api.load_output(run_id, "train")
    assert trained["hyperparams"] == {"C": 0.5, "max_iter": 200}
    assert trained["model"][-1].C == 0.5
    assert 0.9 < trained["train_score"] <= 1.0

    metrics = api.load_output(run_id, "evaluate")["metrics"]
    _assert_good_metrics(metrics)
    report = api.load_output(run_id, "report")
    assert report == {"C": 0.5, **{k: metrics[k] for k in ("accuracy", "f1", "roc_auc")}}

    # The executed notebooks are kept under the run's artifact folder.
    run_dir = Path(get_settings().artifact_root) / "ml_notebooks" / f"run-{run_id}"
    for task_id in ("prepare", "train", "evaluate"):
        uri = result.task(task_id)["output_uri"]
        assert uri and Path(uri).is_file(), (task_id, uri)
        assert Path(uri).resolve().is_relative_to(run_dir.resolve())
    assert result.task("report")["output_uri"] is None
    executed = nbformat.read(result.task("train")["output_uri"], as_version=4)
    injected = [c.source for c in executed.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1 and "C = 0.5" in injected[0]
    assert "train accuracy" in api.read_log(run_id, "train")
    assert "accuracy" in api.read_log(run_id, "report")


@pytest.mark.parametrize("executor", ["inline", "local"])
def test_task_pipeline(example_env: Path, executor: str) -> None:
    result = api.run_file(EXAMPLE / "pipeline_tasks.py", params={"C": "0.5"}, executor=executor)
    _assert_all_success(result, {"prepare", "train", "evaluate", "report"})
    run_id = result.run_id
    assert api.load_output(run_id, "train")[-1].C == 0.5
    metrics = api.load_output(run_id, "evaluate")
    _assert_good_metrics(metrics)
    assert api.load_output(run_id, "report")["C"] == 0.5
    assert "C=0.5" in api.read_log(run_id, "train")


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_is_clean(name: str) -> None:
    nb = nbformat.read(EXAMPLE / name, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), f"{name} is saved with outputs"
    assert sum("parameters" in c.metadata.get("tags", []) for c in code) == 1


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_by_hand(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Outside nbflow and without parameters (``papermill NAME out.ipynb``), each notebook still runs."""
    import papermill

    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    out = tmp_path / name
    papermill.execute_notebook(str(EXAMPLE / name), str(out), progress_bar=False, cwd=str(EXAMPLE))
    if name == "evaluate.ipynb":
        executed = nbformat.read(out, as_version=4)
        text = "".join(o.get("text", "") for c in executed.cells for o in c.get("outputs", []))
        assert "accuracy" in text and "pred benign" in text
