"""Sweeps (``nbflow run --sweep``), metrics (``nbflow.metric``, saved scalars) and ``nbflow compare``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from nbflow import api
from nbflow.api.compare import log_scale
from nbflow.record import AttemptRecord
from nbflow.store import orm
from tests.conftest import make_notebook

SWEPT = """
import nbflow
from nbflow import Pipeline, task

with Pipeline("swept", params={"C": 1.0, "penalty": "l2"}) as pipeline:
    @task
    def train(params):
        C = params["C"]
        nbflow.metric("accuracy", round(C / (1 + C), 4))
        nbflow.metric("converged", C >= 1)
        nbflow.save("score", C * 10)          # a saved scalar is a metric too
        nbflow.save("model", {"C": C})        # not a scalar: only an artifact
        return C

    @task
    def report(x):
        nbflow.metric("note", f"C was {x}")

    report(train())
"""


def nbflow(*args: str, home: Path, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "NBFLOW_HOME": str(home), "PYTHONIOENCODING": "utf-8"}
    env.pop("NBFLOW_DB_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "nbflow", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=180
    )


@pytest.fixture
def swept(nbflow_home, write_pipeline):
    """A 3-point sweep run through the real CLI on the local executor: (home, its output)."""
    path = write_pipeline(SWEPT)
    res = nbflow("run", str(path), "-e", "local", "-j", "2", "--sweep", "C=0.01,1,100", home=nbflow_home)
    assert res.returncode == 0, res.stdout + res.stderr
    return nbflow_home, res.stdout


def test_sweep_runs_every_point_under_one_executor_and_ends_with_the_table(swept):
    home, out = swept
    assert "nbflow: sweep 1 of swept: 3 runs (runs 1-3, C: 3) on local" in out
    assert "run 2 (C=1.0) train" in out  # progress lines name their point
    assert "sweep 1 of swept: 3/3 runs succeeded" in out
    table = out[out.index("run  state") :].split("\n\n")[0]
    assert table.splitlines()[0].split() == [
        "run",
        "state",
        "C",
        "penalty",
        "train.accuracy",
        "train.converged",
        "train.score",
        "report.note",
    ]
    assert [line.split() for line in table.splitlines()[2:]] == [
        ["1", "success", "0.01", "l2", "0.0099", "false", "0.1", "C", "was", "0.01"],
        ["2", "success", "1.0", "l2", "0.5", "true", "10", "C", "was", "1.0"],
        ["3", "success", "100.0", "l2", "0.9901", "true", "1000", "C", "was", "100.0"],
    ]
    store = api.open_store()
    runs = store.runs_by_id([1, 2, 3])
    assert [r["sweep_id"] for r in runs] == [1, 1, 1]
    assert [r["params"] for r in runs] == [
        {"C": 0.01, "penalty": "l2"},
        {"C": 1.0, "penalty": "l2"},
        {"C": 100.0, "penalty": "l2"},
    ]
    assert dict(store.get_sweep(1)["grid"]) == {"C": [0.01, 1.0, 100.0]}  # converted like -p
    stored = {(m["run_id"], m["task_id"], m["name"]): m["value"] for m in store.final_metrics([1, 2, 3])}
    assert stored[(2, "train", "accuracy")] == 0.5 and stored[(2, "train", "converged")] is True
    assert stored[(3, "train", "score")] == 1000 and stored[(1, "report", "note")] == "C was 0.01"
    assert not any(name == "model" for _, _, name in stored)  # a dict saved is not a metric


def test_compare_csv_and_json_are_exact(swept):
    home, _ = swept
    csv = nbflow("compare", "--sweep", "1", "--csv", home=home)
    assert csv.returncode == 0, csv.stderr
    assert csv.stdout == (
        "run,state,C,penalty,train.accuracy,train.converged,train.score,report.note\n"
        "1,success,0.01,l2,0.0099,false,0.1,C was 0.01\n"
        "2,success,1.0,l2,0.5,true,10,C was 1.0\n"
        "3,success,100.0,l2,0.9901,true,1000,C was 100.0\n"
    )
    res = nbflow("compare", "--sweep", "1", "--json", home=home)
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert data["sweep"] == {"id": 1, "pipeline": "swept", "grid": {"C": [0.01, 1.0, 100.0]}}
    assert data["params"] == ["C", "penalty"]
    assert data["metrics"] == ["train.accuracy", "train.converged", "train.score", "report.note"]
    assert data["runs"][1] == {
        "run_id": 2,
        "pipeline": "swept",
        "state": "success",
        "sweep_id": 1,
        "params": {"C": 1.0, "penalty": "l2"},
        "metrics": {"train.accuracy": 0.5, "train.converged": True, "train.score": 10, "report.note": "C was 1.0"},
    }
    by_ids = nbflow("compare", "1", "3", "--csv", home=home)
    assert by_ids.stdout.splitlines()[1:] == [csv.stdout.splitlines()[1], csv.stdout.splitlines()[3]]
    last = nbflow("compare", "--pipeline", "swept", "--last", "2", "--csv", home=home)
    assert [line.split(",")[0] for line in last.stdout.splitlines()[1:]] == ["2", "3"]
    missing = nbflow("compare", "1", "9", home=home)
    assert missing.returncode == 2 and "no run 9" in missing.stderr


def test_compare_plot_writes_a_png_with_a_log_x_axis(swept, tmp_path):
    home, _ = swept
    png = tmp_path / "sweep.png"
    res = nbflow("compare", "--sweep", "1", "--plot", "x=C", "y=train.accuracy", "-o", str(png), home=home)
    assert res.returncode == 0, res.stderr
    assert "(log x)" in res.stdout  # 0.01 .. 100 spans four decades
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
    bad = nbflow("compare", "--sweep", "1", "--plot", "x=C", "y=nope", "-o", str(png), home=home)
    assert bad.returncode == 2 and "no column 'nope'" in bad.stderr and "train.accuracy" in bad.stderr


def test_log_scale_only_for_positive_numbers_over_two_decades():
    assert log_scale([0.01, 0.1, 1]) and log_scale([1, 100])
    assert not log_scale([1, 2, 50]) and not log_scale([0, 1, 1000]) and not log_scale(["a", "b"])
    assert not log_scale([1, None, 100])


def test_a_bad_sweep_value_is_refused_before_any_run_exists(nbflow_home, write_pipeline):
    path = write_pipeline(SWEPT)
    res = nbflow("run", str(path), "-e", "local", "--sweep", "C=0.1,abc", "--sweep", "penalty=l1,l2", home=nbflow_home)
    assert res.returncode == 2, res.stdout + res.stderr
    assert "sweep point 3 of 4 (C=abc, penalty=l1)" in res.stderr and "parameter 'C' expects float" in res.stderr
    assert "no run was created" in res.stderr
    store = api.open_store()
    assert store.count_runs() == 0 and store.get_sweep(1) is None
    both = nbflow("run", str(path), "-p", "C=2", "--sweep", "C=1,2", home=nbflow_home)
    assert both.returncode == 2 and "C is given both as a fixed parameter and as a sweep" in both.stderr
    unknown = nbflow("run", str(path), "--sweep", "gamma=1,2", home=nbflow_home)
    assert unknown.returncode == 2 and "no parameter 'gamma'" in unknown.stderr
    assert store.count_runs() == 0


def test_a_failed_point_makes_the_sweep_exit_1(nbflow_home, write_pipeline):
    path = write_pipeline(SWEPT.replace('C = params["C"]', "C = params[\"C\"]\n        assert C < 50, 'too big'"))
    res = nbflow("run", str(path), "-e", "local", "--sweep", "C=1,100", home=nbflow_home)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "sweep 1 of swept: 1/2 runs succeeded" in res.stdout and "run 2 failed: nbflow tasks 2" in res.stdout


def _metrics_pipeline(write_pipeline):
    from nbflow.loader import load_pipeline

    return load_pipeline(write_pipeline(SWEPT))


@pytest.mark.parametrize("db", ["sqlite", "postgres"])
def test_metrics_are_stored_on_both_databases(db, request, write_pipeline):
    if db == "postgres":
        request.getfixturevalue("pg_url")
    else:
        request.getfixturevalue("nbflow_home")
    pipeline = _metrics_pipeline(write_pipeline)
    result = api.run_sweep(pipeline, {"C": ["0.5", "2"]}, executor="inline")
    assert result.ok and len(result.runs) == 2
    data = api.compare(sweep=result.sweep_id)
    assert [r["metrics"]["train.accuracy"] for r in data["runs"]] == [0.3333, 0.6667]
    assert [r["metrics"]["train.converged"] for r in data["runs"]] == [False, True]
    assert [r["metrics"]["report.note"] for r in data["runs"]] == ["C was 0.5", "C was 2.0"]
    store = api.open_store()
    assert store.is_sqlite == (db == "sqlite")
    with store.engine.connect() as conn:
        rows = [r._mapping for r in conn.execute(sa.select(orm.metrics))]
    assert {(r["name"], r["value_num"], r["value_text"]) for r in rows if r["run_id"] == result.runs[1].run_id} == {
        ("accuracy", 0.6667, None),
        ("converged", 1.0, "true"),
        ("score", 20.0, None),
        ("note", None, "C was 2.0"),
    }
    assert all(r["map_index"] is None and r["try_number"] == 1 for r in rows)


def test_only_the_final_try_counts_and_a_bad_metric_names_the_fix(nbflow_home, tmp_path, write_pipeline):
    marker = tmp_path / "tried"
    path = write_pipeline(
        f"""
        import os
        import nbflow
        from nbflow import Pipeline, task

        with Pipeline("retried") as pipeline:
            @task(retries=1, retry_delay=0)
            def flaky():
                try_number = 2 if os.path.exists({str(marker)!r}) else 1
                nbflow.metric("try", try_number)
                nbflow.metric(f"only_try_{{try_number}}", True)
                if try_number == 1:
                    open({str(marker)!r}, "w").close()
                    raise RuntimeError("first try fails")

            @task
            def bad():
                nbflow.metric("weights", [1, 2, 3])

            flaky()
            bad()
        """
    )
    from nbflow.loader import load_pipeline

    result = api.run_pipeline(load_pipeline(path), executor="inline")
    assert not result.ok
    data = api.compare([result.run_id])
    assert data["runs"][0]["metrics"] == {"flaky.try": 2, "flaky.only_try_2": True}
    error = result.task("bad")["error"]
    assert "metric 'weights' is a list" in error and "nbflow.save('weights', value)" in error


def test_a_notebook_task_records_metrics_from_its_kernel(nbflow_home, tmp_path, write_pipeline):
    make_notebook(
        tmp_path / "pipelines" / "evaluate.ipynb",
        [
            ("C = 1.0", ["parameters"]),
            "import nbflow\nnbflow.metric('accuracy', C / 4)\nnbflow.metric('accuracy', C / 2)  # the last wins",
            "nbflow.save('label', 'C-' + str(C))\nnbflow.save('table', [1, 2])",
            "nbflow.metric('n_rows', 3)",
        ],
    )
    path = write_pipeline(
        """
        from nbflow import Pipeline, notebook

        with Pipeline("nb_metrics", params={"C": 1.0}) as pipeline:
            notebook("evaluate.ipynb", name="evaluate", parameters={"C": pipeline.params.C})
        """
    )
    from nbflow.loader import load_pipeline

    result = api.run_pipeline(load_pipeline(path), params={"C": "3"}, executor="inline")
    assert result.ok, result.tasks
    data = api.compare([result.run_id])
    assert data["runs"][0]["metrics"] == {"evaluate.accuracy": 1.5, "evaluate.label": "C-3.0", "evaluate.n_rows": 3}


def test_the_record_carries_metrics_across_processes():
    record = AttemptRecord(ok=True, metrics=[{"name": "acc", "value": 0.5}, {"name": "ok", "value": True}])
    assert AttemptRecord.from_dict(json.loads(json.dumps(record.to_dict()))) == record
    assert "metrics" not in record.to_row()  # written to their own table, not the attempt row


def test_metric_outside_a_run_only_checks_the_value():
    import nbflow

    assert nbflow.metric("acc", 0.5) == 0.5
    with pytest.raises(ValueError, match="metric 'acc' is nan: a metric must be a finite number"):
        nbflow.metric("acc", float("nan"))
    with pytest.raises(ValueError, match="string of 201 characters"):
        nbflow.metric("acc", "x" * 201)


@pytest.mark.server
@pytest.mark.slow
def test_rest_trigger_with_a_sweep_and_compare(tmp_path):
    """The trigger route's "sweep" queues one run per point (the background driver runs them);
    GET compare answers the table's data; every answer is checked against docs/openapi.yaml."""
    import textwrap
    import time

    from tests.jupyter_procs import nbflow_env, register_pipelines, start_jupyter

    root = tmp_path / "jroot"
    (root / "pipelines").mkdir(parents=True)
    (root / "pipelines" / "swept.py").write_text(textwrap.dedent(SWEPT))
    env = nbflow_env(root)
    register_pipelines(root, env)
    server = start_jupyter(root, env, "server")
    try:
        status, bad = server.request("POST", "pipelines/swept/trigger", {"sweep": {"C": [0.5, "x"]}})
        assert status == 400 and "sweep point 2 of 2 (C=x)" in bad["message"], bad
        status, bad = server.request("POST", "pipelines/swept/trigger", {"sweep": {"C": 0.5}})
        assert status == 400 and bad["fields"] == {"sweep.C": "'sweep.C' must be a list of values"}, bad
        status, answer = server.request(
            "POST", "pipelines/swept/trigger", {"sweep": {"C": [0.5, 2]}, "params": {"penalty": "l1"}}
        )
        assert status == 201, answer
        assert answer["run_ids"] == [1, 2] and answer["run_id"] == 1, answer  # the bad requests made no run
        sweep = answer["sweep_id"]
        deadline = time.monotonic() + 120
        while True:
            status, data = server.request("GET", f"compare?sweep={sweep}")
            assert status == 200, data
            if all(r["state"] in ("success", "failed") for r in data["runs"]) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert data["sweep"] == {"id": sweep, "pipeline": "swept", "grid": {"C": [0.5, 2.0]}}
        assert [(r["state"], r["params"], r["metrics"]["train.accuracy"]) for r in data["runs"]] == [
            ("success", {"C": 0.5, "penalty": "l1"}, 0.3333),
            ("success", {"C": 2.0, "penalty": "l1"}, 0.6667),
        ]
        status, by_ids = server.request("GET", "compare?runs=2,1")
        assert status == 200 and [r["run_id"] for r in by_ids["runs"]] == [1, 2] and by_ids["sweep"] is None
        status, last = server.request("GET", "compare?pipeline=swept&last=1")
        assert status == 200 and [r["run_id"] for r in last["runs"]] == [2]
        status, missing = server.request("GET", "compare?sweep=99")
        assert status == 404 and "sweep 99 does not exist" in missing["message"]
        status, neither = server.request("GET", "compare")
        assert status == 400 and "exactly one of" in neither["message"]
        status, bad_ids = server.request("GET", "compare?runs=1,x")
        assert status == 400 and "runs" in bad_ids["fields"]
    finally:
        server.stop()


@pytest.mark.slow
def test_magic_run_this_with_a_sweep_shows_the_table(nbflow_home, tmp_path):
    """``%nbflow run this --sweep C=1,3`` in a real kernel: a sweep of the notebook's cells,
    ending with its params and metrics (a cell task's nbflow.metric and its saved output)."""
    import nbformat
    from nbclient import NotebookClient

    path = make_notebook(
        tmp_path / "sweep_cells.ipynb",
        [
            "%load_ext nbflow\n%nbflow pipeline sweep_cells",
            "%%nbflow params\nC = 1.0",
            "%%nbflow task train --outputs acc\nimport nbflow\nacc = C / (1 + C)\nnbflow.metric('accuracy', round(acc, 3))",
            "%nbflow run this --sweep C=1,3 -e inline",
        ],
    )
    nb = nbformat.read(str(path), as_version=4)
    NotebookClient(nb, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = nb.cells[-1].outputs
    text = "".join(o.get("text", "") for o in outputs)
    assert "run 1: success" in text and "run 2: success" in text, outputs
    shown = [o["data"]["text/html"] for o in outputs if o.output_type == "display_data"]
    assert shown and "sweep 1 of sweep_cells" in shown[-1] and "train.accuracy" in shown[-1]
    data = api.compare(sweep=1)
    assert [r["params"]["C"] for r in data["runs"]] == [1.0, 3.0]
    assert [r["metrics"]["train.accuracy"] for r in data["runs"]] == [0.5, 0.75]
    assert [r["metrics"]["train.acc"] for r in data["runs"]] == [0.5, 0.75]  # the saved output is a metric too
    assert {r["trigger"] for r in api.list_runs("sweep_cells")} == {"notebook"}


def test_a_plot_draws_a_line_per_combination_of_the_other_swept_params():
    from nbflow.api.compare import _groups

    runs = [{"params": {"C": c, "penalty": p, "seed": 1}} for p in ("l1", "l2") for c in (0.1, 1)]
    data = {"params": ["C", "penalty", "seed"], "runs": runs}
    assert _groups(data, "C") == {"penalty=l1": [True, True, False, False], "penalty=l2": [False, False, True, True]}
    assert _groups({"params": ["C"], "runs": runs[:2]}, "C") == {"": [True, True]}


def test_the_text_table_rounds_long_floats_and_keeps_short_ones():
    from nbflow.cli.compare import _readable

    assert _readable(0.9882629107981221) == "0.988263"  # --csv and --json keep every digit
    assert _readable(1.0) == "1.0" and _readable(0.01) == "0.01"
    assert _readable(True) == "true" and _readable("l1") == "l1"
