"""``python -m benchmarks --quick`` runs end to end and reports every row (no timing asserts)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

EXPECTED_ROWS = {
    "wide-inline",
    "wide-local",
    "wide-sql",
    "chain-inline",
    "chain-local",
    "chain-sql",
    "flat-wide-100",
    "flat-wide-1000",
    "flatness",
    "fixed-cost-warm",
    "fixed-cost-cold",
    "notebook",
    "notebook-warm-pool",
    "map-inline",
    "map-dask",
    "notebook-sweep",
    "dask-wide",
    "dask-chain",
    "dask-handoff",
    "dask-handoff-p95",
    "dask-notebook",
    "scheduler-parse",
    "scheduler-cpu-run",
    "scheduler-cpu-task",
    "scheduler-sql-task",
    "scheduler-due-walk",
    "scheduler-trigger",
    "scheduler-trigger-p95",
    "incremental-chain-unchanged",
    "incremental-chain-leaf",
    "incremental-fanout-unchanged",
    "incremental-fanout-leaf",
    "incremental-decision-100",
    "incremental-decision-1000",
    "incremental-decision-3000",
    "incremental-decision-flatness",
    "celery-wide",
    "celery-chain",
    "celery-handoff",
    "cluster-wide",
    "cluster-notebook",
}
# rows that have no baseline of their own (a CPU or SQL count, a latency, a time per task)
NO_BASELINE = {
    "scheduler-cpu-run",
    "scheduler-sql-task",
    "scheduler-trigger",
    "scheduler-trigger-p95",
    "incremental-decision-100",
    "incremental-decision-1000",
    "incremental-decision-3000",
}


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_quick_benchmarks_print_a_table_and_write_json(tmp_path):
    out = tmp_path / "tmp.json"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--no-fail", "--json", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=390,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    table = proc.stdout
    assert "benchmark" in table and "verdict" in table, table
    for name in EXPECTED_ROWS:
        assert f"\n{name} " in table, f"row {name} missing from the table:\n{table}"
    assert "Prefect 3" in table  # the reference footer

    data = json.loads(out.read_text())
    assert data["quick"] is True
    rows = {r["name"]: r for r in data["rows"]}
    assert set(rows) == EXPECTED_ROWS, sorted(rows)
    for name, row in rows.items():
        assert row["verdict"] in {"PASS", "FAIL", "info"}, (name, row)
        for key in ("nbflow", "baseline", "result"):
            value = row[key]
            if key == "baseline" and name in NO_BASELINE:
                assert value is None, (name, value)
                continue
            assert isinstance(value, (int, float)) and math.isfinite(value), (name, key, value)
        assert row["compares"] and row["unit"] and row["result_unit"], (name, row)
        assert (row["verdict"] == "info") == (row["target"] == ""), (name, row)
    assert set(data["failed"]) == {n for n, r in rows.items() if r["verdict"] == "FAIL"}
