"""notebooks/quickstart.ipynb runs top to bottom in a real kernel (so the tour never rots)."""

from __future__ import annotations

import shutil
from pathlib import Path

import nbformat
import pytest

from nbflow import api

QUICKSTART = Path(__file__).resolve().parent.parent / "notebooks" / "quickstart.ipynb"


@pytest.mark.slow
def test_quickstart_runs_top_to_bottom(nbflow_home, tmp_path):
    from nbclient import NotebookClient

    path = tmp_path / "quickstart.ipynb"
    shutil.copy(QUICKSTART, path)
    nb = nbformat.read(str(path), as_version=4)
    NotebookClient(nb, timeout=240, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = {c.source: c.outputs for c in nb.cells if c.cell_type == "code"}
    assert not [o for outs in outputs.values() for o in outs if o.output_type == "error"]

    def text(source: str) -> str:
        return "".join(o.get("text", "") or o.get("data", {}).get("text/plain", "") for o in outputs[source])

    assert text("%nbflow get mean") == "{'mean': 5.5}"  # -p n=10 reached the tasks
    assert "mean 5.50 ± 2.87" in text("%nbflow logs report")
    result = [o for o in outputs['run = pipeline.run({"x": 3})\nrun["plus_one"]'] if o.output_type == "execute_result"]
    assert result[0]["data"]["text/plain"] == "10"
    assert 'data-task="plus_one" data-state="success"' in outputs["run"][0]["data"]["text/html"]
    (drawn,) = next(outs for source, outs in outputs.items() if source.endswith("\n\npipeline"))
    assert "square" in drawn["data"]["image/svg+xml"]  # a pipeline displays as its DAG
    first, latest = [c.outputs[0]["data"]["image/svg+xml"] for c in nb.cells if c.source == "%nbflow show this"]
    assert 'fill="#8fdb8f"' not in first and latest.count('fill="#8fdb8f"') == 4
    (run,) = api.list_runs("quickstart")
    assert run["state"] == "success" and run["params"] == {"n": 10}
