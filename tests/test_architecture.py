"""The module layers of docs/ARCHITECTURE.md hold (import-linter contract in pyproject.toml)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_import_layers_are_kept():
    exe = shutil.which("lint-imports")
    if exe is None:
        pytest.skip("import-linter is not installed (pip install -e '.[dev]')")
    res = subprocess.run([exe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "1 kept, 0 broken" in res.stdout


def test_no_module_of_the_package_is_huge():
    """DESIGN.md: no module over ~400 lines without a reason (the reason goes in this list)."""
    allowed = {
        "nbflow/tasks/nbrun.py": 520,  # papermill's failure modes, one per branch, each documented
        "nbflow/params.py": 460,  # papermill's parameter inspection gaps, patched with ast
        "nbflow/engine.py": 600,  # the run driver: one state machine over events (sensors, rules, cancel watch split out)
        "nbflow/dag.py": 560,  # Pipeline + Task: the authoring model (graph algorithms and refs split out)
    }
    for path in (ROOT / "nbflow").rglob("*.py"):
        rel = path.relative_to(ROOT).as_posix()
        lines = len(path.read_text().splitlines())
        assert lines <= allowed.get(rel, 420), f"{rel} has {lines} lines"
