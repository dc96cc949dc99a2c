"""The REST routes of JupyterLab as the whole workplace (issue 15), against real `jupyter server`
processes: the managed scheduler (started once by two servers on one home, the lease respected,
left running when the servers stop), "Schedule this notebook", the grid, clear up/downstream,
mark success, the debug copy of a failed try, the HTML export, the log download, a trigger's
Idempotency-Key, and the refusals of a kernel-only pipeline and of a broken file."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import make_notebook
from tests.jupyter_procs import (
    JupyterProc,
    nbflow_env,
    register_pipelines,
    schedulers_of,
    start_jupyter,
    stop_nbflow_processes,
)

pytestmark = [pytest.mark.server, pytest.mark.slow]
NOTEBOOKS = Path(__file__).parent / "notebooks"

CHAIN = """
from nbflow import Pipeline, task, notebook

with Pipeline("chain", params={"C": 1.0}) as pipeline:
    @task
    def up():
        return (2, "two")  # a tuple is pickled: a notebook gets a reference to load

    @task
    def mid(x):
        raise ValueError(f"mid got {x}")

    @task
    def down(x):
        return x

    @task
    def side():
        return "side"

    u = up()
    down(mid(u))
    side()
    check = notebook("check.ipynb", name="check", inputs={"x": u})
"""
FRAGILE = """
from nbflow import Pipeline, task

with Pipeline("fragile") as pipeline:
    @task
    def only():
        return 1
    only()
"""


def _finished(server: JupyterProc, run_id: int, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        _, details = server.request("GET", f"runs/{run_id}")
        if details["run"]["state"] in ("success", "failed", "cancelled") or time.monotonic() > deadline:
            return details
        time.sleep(0.5)


def _lab_root(root: Path) -> Path:
    (root / "pipelines").mkdir(parents=True)
    (root / "pipelines" / "chain.py").write_text(textwrap.dedent(CHAIN))
    (root / "pipelines" / "fragile.py").write_text(textwrap.dedent(FRAGILE))
    make_notebook(
        root / "pipelines" / "check.ipynb",
        [
            ("x = None", ["parameters"]),
            "import nbflow\nx = nbflow.load(x)",
            'assert x[0] < 0, f"x is {x[0]}"',
        ],
    )
    (root / "analysis").mkdir()
    shutil.copy(NOTEBOOKS / "params_ok.ipynb", root / "analysis" / "report.ipynb")
    make_notebook(
        root / "analysis" / "cells.ipynb",
        [
            "%%nbflow task numbers --outputs numbers\nnumbers = list(range(4))",
            "%%nbflow task total --inputs numbers --outputs total\ntotal = sum(numbers)",
        ],
    )
    return root


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterProc]:
    """A jupyter server (no managed scheduler: a background driver runs what is queued)."""
    root = _lab_root(tmp_path_factory.mktemp("labapi"))
    env = nbflow_env(root)
    register_pipelines(root, env)
    time.sleep(1.1)
    (root / "pipelines" / "fragile.py").write_text(
        "from nbflow import Pipeline\nraise RuntimeError('broken on purpose')\n"
    )
    register_pipelines(root, env)
    proc = start_jupyter(root, env, "server")
    yield proc
    proc.stop()
    stop_nbflow_processes(root)


@pytest.fixture(scope="module")
def failed_run(server: JupyterProc) -> dict:
    """A finished run of ``chain``: up and side succeed, mid fails, down upstream_failed, check fails."""
    status, answer = server.request("POST", "pipelines/chain/trigger", {"params": {"C": 2.0}})
    assert status == 201, answer
    details = _finished(server, answer["run_id"])
    states = {t["task_id"]: t["state"] for t in details["tasks"]}
    assert states == {
        "up": "success",
        "mid": "failed",
        "down": "upstream_failed",
        "side": "success",
        "check": "failed",
    }, details
    return details


def test_schedule_this_notebook_writes_a_pipeline_file_and_lists_it(server: JupyterProc) -> None:
    status, form = server.request("GET", "notebooks/form?path=analysis/report.ipynb")
    assert status == 200, form
    types = {p["name"]: (p["type"], p["default"]) for p in form["parameters"]}
    assert types["alpha"] == ("float", 0.5) and types["n"] == ("int", 5) and types["flag"] == ("bool", False), types
    assert form["name"] == "report" and form["kernel"] == "python3" and form["cell_tasks"] is False

    status, preview = server.request("GET", "schedule/preview?schedule=0%206%20*%20*%201-5&timezone=Europe/Berlin")
    assert status == 200, preview
    assert preview["description"] == "At 06:00, Monday through Friday", preview
    assert len(preview["next"]) == 5 and all(
        t.endswith(("+01:00", "+02:00")) and "T06:00:00" in t for t in preview["next"]
    )

    body = {
        "path": "analysis/report.ipynb",
        "name": "report_daily",
        "schedule": "@daily",
        "timezone": "Europe/Berlin",
        "parameters": {"alpha": 2.0, "n": 3},
        "retries": 1,
        "timeout": 600,
    }
    status, made = server.request("POST", "notebooks/schedule", body)
    assert status == 201, made
    assert made["file"] == "pipelines/report_daily.py" and made["pipeline"] == "report_daily", made
    source = (server.root / made["file"]).read_text()
    assert source.startswith("# nbflow: scheduled from JupyterLab for ../analysis/report.ipynb")
    assert "schedule='@daily'" in source and "'alpha': 2.0, 'n': 3, 'name': 'world', 'flag': False" in source
    assert "notebook('../analysis/report.ipynb', name='report', retries=1, timeout=600" in source
    _, listed = server.request("GET", "pipelines")
    report = next(p for p in listed["pipelines"] if p["name"] == "report_daily")
    assert {k: report["params"][k] for k in ("alpha", "n", "name")} == {"alpha": 2.0, "n": 3, "name": "world"}, report
    assert report["param_types"]["alpha"] == "float" and report["schedule_text"] == "At 00:00" and report["next_run"]

    status, again = server.request("POST", "notebooks/schedule", {**body, "schedule": "@hourly"})
    assert status == 201, again  # the same notebook under the same name: its file is rewritten
    assert "schedule='@hourly'" in (server.root / made["file"]).read_text()


@pytest.mark.parametrize(
    "change,field",
    [
        ({"schedule": "61 * * * *"}, "schedule"),
        ({"schedule": "every day"}, "schedule"),
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"parameters": {"alpha": True}}, "parameters.alpha"),
        ({"parameters": {"n": 2.5}}, "parameters.n"),
        ({"parameters": {"nope": 1}}, "parameters.nope"),
        ({"path": "../outside.ipynb"}, "path"),
        ({"path": "pipelines/chain.py"}, "path"),
        ({"name": "1bad name"}, "name"),
        ({"retries": -1}, "retries"),
        ({"kernel": "no-such-kernel"}, "kernel"),
        ({"schedule": None}, "schedule"),
    ],
)
def test_schedule_this_notebook_400_names_the_field(server: JupyterProc, change: dict, field: str) -> None:
    body = {"path": "analysis/report.ipynb", "name": "report_bad", "schedule": "@daily", **change}
    status, answer = server.request("POST", "notebooks/schedule", body)
    assert status == 400, answer
    assert field in answer["fields"], answer
    assert not (server.root / "pipelines" / "report_bad.py").exists()


def test_schedule_this_notebook_never_overwrites_another_pipeline(server: JupyterProc) -> None:
    status, answer = server.request(
        "POST", "notebooks/schedule", {"path": "analysis/report.ipynb", "name": "chain", "schedule": "@daily"}
    )
    assert status == 409 and "chain.py already exists" in answer["message"], answer
    assert "raise ValueError" in (server.root / "pipelines" / "chain.py").read_text()


def test_run_as_pipeline_records_a_notebook_of_cell_tasks_and_runs_it(server: JupyterProc) -> None:
    status, form = server.request("GET", "notebooks/form?path=analysis/cells.ipynb")
    assert status == 200 and form["cell_tasks"] is True, form
    status, answer = server.request("POST", "notebooks/run", {"path": "analysis/cells.ipynb"})
    assert status == 201 and answer["pipeline"] == "cells" and answer["file"] == "analysis/cells.ipynb", answer
    details = _finished(server, answer["run_id"])
    assert {t["task_id"]: t["state"] for t in details["tasks"]} == {"numbers": "success", "total": "success"}, details
    status, answer = server.request("POST", "notebooks/run", {"path": "pipelines/chain.py"})
    assert status == 400 and "path" in answer["fields"], answer


def test_a_double_trigger_with_one_idempotency_key_makes_one_run(server: JupyterProc) -> None:
    _, before = server.request("GET", "pipelines/chain/grid?limit=1")
    key = {"Idempotency-Key": f"click-{time.time()}"}
    first = server.request("POST", "pipelines/chain/trigger", {"params": {"C": 2.0}}, headers=key)
    second = server.request("POST", "pipelines/chain/trigger", {"params": {"C": 2.0}}, headers=key)
    assert first[0] == second[0] == 201 and first[1]["run_id"] == second[1]["run_id"], (first, second)
    _, after = server.request("GET", "pipelines/chain/grid?limit=1")
    assert after["total"] == before["total"] + 1
    details = _finished(server, first[1]["run_id"])
    assert details["run"]["params"] == {"C": 2.0} and isinstance(details["run"]["params"]["C"], float)


def test_a_pipeline_only_in_a_kernel_is_refused_not_queued_forever(server: JupyterProc) -> None:
    script = textwrap.dedent("""
        from nbflow import api
        store = api.open_store()
        store.write(lambda tx: tx.upsert_pipeline({"name": "kernelonly", "file": None, "tasks": [], "params": {}}, "fp"))
    """)
    subprocess.run([sys.executable, "-c", script], env=nbflow_env(server.root), check=True, timeout=60)
    status, answer = server.request("POST", "pipelines/kernelonly/trigger", {})
    assert status == 409, answer
    assert "exists only in a notebook kernel" in answer["message"] and "Run as pipeline" in answer["hint"], answer


def test_a_broken_file_is_said_and_queued_only_when_confirmed(server: JupyterProc) -> None:
    """Without a scheduler (which keeps the version it loaded last) nothing can load the broken
    file: the queued run says so instead of waiting silently."""
    status, answer = server.request("POST", "pipelines/fragile/trigger", {})
    assert status == 409 and "broken now" in answer["message"] and "broken on purpose" in answer["message"], answer
    assert answer["message"].count("fragile.py:") == 1, answer  # the location said once
    assert "last_good" in answer["fields"], answer
    status, answer = server.request("POST", "pipelines/fragile/trigger", {"last_good": True})
    assert status == 201, answer
    time.sleep(6)  # past STALL_AFTER
    _, listed = server.request("GET", "pipelines")
    waiting = next(p for p in listed["pipelines"] if p["name"] == "fragile")["waiting"]
    assert waiting and waiting.startswith("queued") and "broken on purpose" in waiting, waiting
    assert "no scheduler is running" in waiting, waiting
    server.request("POST", f"runs/{answer['run_id']}/cancel")


def test_grid_shows_runs_by_tasks(server: JupyterProc, failed_run: dict) -> None:
    status, grid = server.request("GET", "pipelines/chain/grid?limit=5")
    assert status == 200, grid
    assert grid["tasks"].index("up") < grid["tasks"].index("mid") < grid["tasks"].index("down")
    row = next(r for r in grid["runs"] if r["id"] == failed_run["run"]["id"])
    assert row["cells"]["mid"]["state"] == "failed" and row["cells"]["up"]["duration"] is not None
    assert grid["schedule"] is None and grid["schedule_text"].startswith("not scheduled")
    status, page = server.request("GET", "pipelines/chain/grid?limit=1&offset=1")
    assert status == 200 and len(page["runs"]) == 1 and page["total"] == grid["total"]


def test_clear_lists_affected_tasks_then_reruns_with_fresh_tries(server: JupyterProc, failed_run: dict) -> None:
    run_id = failed_run["run"]["id"]
    status, down = server.request("POST", f"runs/{run_id}/tasks/mid/clear", {"dry_run": True})
    assert status == 200 and down["dry_run"] and down["cleared"] == ["mid", "down"], down
    _, up = server.request(
        "POST", f"runs/{run_id}/tasks/mid/clear", {"dry_run": True, "downstream": False, "upstream": True}
    )
    assert up["cleared"] == ["up", "mid"], up
    _, only = server.request("POST", f"runs/{run_id}/tasks/mid/clear", {"dry_run": True, "downstream": False})
    assert only["cleared"] == ["mid"], only
    _, still = server.request("GET", f"runs/{run_id}")
    assert still["run"]["state"] == "failed"  # a dry run writes nothing

    started = failed_run["run"]["started_at"]
    status, cleared = server.request("POST", f"runs/{run_id}/tasks/mid/clear", {})
    assert status == 200 and cleared["cleared"] == ["mid", "down"], cleared
    details = _finished(server, run_id)
    mid = next(t for t in details["tasks"] if t["task_id"] == "mid")
    assert mid["state"] == "failed" and mid["try_number"] == 2 and mid["max_tries"] == 2, mid  # "try 2 of 2"
    assert details["run"]["started_at"] == started, details["run"]  # the re-run kept when the run started


def test_mark_success_and_the_run_follows(server: JupyterProc, failed_run: dict) -> None:
    status, answer = server.request("POST", "pipelines/chain/trigger", {})
    run_id = answer["run_id"]
    _finished(server, run_id)
    status, answer = server.request("POST", f"runs/{run_id}/tasks/mid/mark", {"state": "success"})
    assert status == 200 and answer["state"] == "success" and answer["run_state"] == "failed", (
        answer
    )  # leaves still fail
    for leaf in ("down", "check"):
        status, answer = server.request("POST", f"runs/{run_id}/tasks/{leaf}/mark", {"state": "success"})
    assert status == 200 and answer["run_state"] == "success", answer
    _, details = server.request("GET", f"runs/{run_id}")
    assert details["run"]["state"] == "success"
    assert {t["task_id"]: t["reason"] for t in details["tasks"]}["mid"] == "marked"
    status, answer = server.request("POST", f"runs/{run_id}/tasks/down/mark", {"state": "failed"})  # Mark failed
    assert status == 200 and answer["state"] == "failed" and answer["run_state"] == "failed", answer
    _, details = server.request("GET", f"runs/{run_id}")
    assert details["run"]["state"] == "failed"
    assert {t["task_id"]: t["state"] for t in details["tasks"]}["down"] == "failed"
    status, answer = server.request("POST", f"runs/{run_id}/tasks/mid/mark", {"state": "running"})
    assert status == 400 and "state" in answer["fields"], answer


def test_debug_copy_of_a_failed_try_runs_in_a_kernel_as_the_try_did(server: JupyterProc, failed_run: dict) -> None:
    import nbclient
    import nbformat

    run_id = failed_run["run"]["id"]
    status, answer = server.request("POST", f"runs/{run_id}/tasks/check/debug", {"try": 1})
    assert status == 201, answer
    assert answer["path"] == f"pipelines/check-debug-run{run_id}-try1.ipynb", answer
    nb = nbformat.read(str(server.root / answer["path"]), as_version=4)
    first = nb.cells[0].source
    assert 'x = "nbflow-artifact:pickle:' in first and "x = nbflow.load(x)" in first, first
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")
    client = nbclient.NotebookClient(
        nb, kernel_name="python3", resources={"metadata": {"path": str(server.root / "pipelines")}}
    )
    with pytest.raises(nbclient.exceptions.CellExecutionError, match="x is 2"):
        client.execute()  # the inputs are loaded: the copy fails where the try failed, with the same value

    status, answer = server.request("POST", f"runs/{run_id}/tasks/up/debug", {})
    assert status == 404 and "no output notebook" in answer["message"], answer


def test_html_export_and_log_download(server: JupyterProc, failed_run: dict) -> None:
    import urllib.request

    run_id = failed_run["run"]["id"]
    status, html = server.request("GET", f"runs/{run_id}/tasks/check/output.html")
    assert status == 200 and "<html" in html and "x is 2" in html
    req = urllib.request.Request(
        f"{server.url}nbflow/api/runs/{run_id}/tasks/check/output.html?download=1",
        headers={"Authorization": f"token {server.token}"},
    )
    with urllib.request.urlopen(req, timeout=60) as resp:
        assert f'filename="chain-run{run_id}-check-try1.html"' in resp.headers["Content-Disposition"]
    status, log = server.request("GET", f"runs/{run_id}/tasks/mid/log.txt?try=1")
    assert status == 200 and "mid got (2, 'two')" in log, log
    status, answer = server.request("GET", f"runs/{run_id}/tasks/mid/output.html")
    assert status == 404, answer


# --- the managed scheduler -------------------------------------------------------------------------


def _wait_state(server: JupyterProc, state: str, timeout: float = 90) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        status, answer = server.request("GET", "scheduler")
        assert status == 200, answer
        if answer["state"] == state or time.monotonic() > deadline:
            return answer
        time.sleep(0.5)


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    """The environment of a database: SQLite in the home (nothing to set), or a fresh PostgreSQL
    schema (where any number of schedulers may share the lease, so only the spawn lock and a
    starting scheduler counting as serving keep it at one)."""
    if request.param == "sqlite":
        yield {}
        return
    import socket

    import sqlalchemy as sa

    from tests.conftest import PG_URL

    try:
        socket.create_connection(("127.0.0.1", 5432), timeout=1).close()
    except OSError:
        pytest.skip("PostgreSQL is not reachable at 127.0.0.1:5432 (start it: pg_ctlcluster ... main start)")
    schema = f"nbflow_lab_{uuid.uuid4().hex[:10]}"
    engine = sa.create_engine(PG_URL)
    with engine.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    yield {"NBFLOW_DB_URL": f"{PG_URL}?options=-csearch_path%3D{schema}"}
    with engine.begin() as conn:
        conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
    engine.dispose()


def test_two_servers_on_one_home_start_one_scheduler_that_outlives_them(tmp_path: Path, database: dict) -> None:
    root = _lab_root(tmp_path / "root")
    env = {**nbflow_env(root, managed=True), **database}
    register_pipelines(root, env)
    servers: list[JupyterProc] = []
    try:
        servers = [start_jupyter(root, env, "server"), start_jupyter(root, env, "server")]
        state = _wait_state(servers[0], "running")
        assert state["state"] == "running" and state["managed"] is True, state
        assert state["heartbeat_age"] < 30 and state["since"], state
        time.sleep(3)  # a second scheduler would be up by now
        assert len(schedulers_of(root)) == 1, schedulers_of(root)
        _, second = servers[1].request("GET", "scheduler")
        assert second["pid"] == state["pid"], (state, second)
        status, started = servers[1].request("POST", "scheduler/start")
        assert status == 200 and started["started"] is None and started["state"] == "running", started

        status, answer = servers[1].request("POST", "pipelines/chain/trigger", {})  # the scheduler runs it
        assert status == 201
        assert _finished(servers[1], answer["run_id"])["run"]["state"] == "failed"

        for server in servers:
            server.stop()
        pid = state["pid"]
        time.sleep(2)
        assert schedulers_of(root) == [pid], "the scheduler stopped with the servers"
        log = (root / "home" / "scheduler" / "scheduler.log").read_text()
        assert "nbflow scheduler (job" in log, log
    finally:
        for server in servers:
            server.stop()
        stop_nbflow_processes(root)


def test_a_live_scheduler_holds_the_lease_and_a_stopped_one_says_why(tmp_path: Path) -> None:
    root = _lab_root(tmp_path / "root")
    env = nbflow_env(root, managed=True)
    register_pipelines(root, env)
    log = open(tmp_path / "own-scheduler.log", "wb")
    own = subprocess.Popen(
        [sys.executable, "-m", "nbflow", "scheduler", "--dags-folder", str(root / "pipelines")],
        cwd=root,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    server = None
    try:
        deadline = time.monotonic() + 60
        while b"nbflow scheduler (job" not in (tmp_path / "own-scheduler.log").read_bytes():
            assert own.poll() is None and time.monotonic() < deadline, (tmp_path / "own-scheduler.log").read_text()
            time.sleep(0.3)
        server = start_jupyter(root, env, "server")
        state = _wait_state(server, "running")
        assert state["pid"] == own.pid, state
        time.sleep(3)
        assert schedulers_of(root) == [own.pid], "a second scheduler was started beside a live one"
        assert not (root / "home" / "scheduler" / "scheduler.pid").exists()

        own.terminate()
        own.wait(30)
        state = _wait_state(server, "stopped")
        assert (
            state["state"] == "stopped" and f"pid {own.pid}" in state["reason"] and "stopped at" in state["reason"]
        ), state
        status, started = server.request("POST", "scheduler/start")
        assert status == 200 and started["started"], started
        assert _wait_state(server, "running")["pid"] == started["started"]
    finally:
        if own.poll() is None:
            own.kill()
        if server is not None:
            server.stop()
        stop_nbflow_processes(root)
        log.close()


def test_manage_scheduler_false_starts_none(tmp_path: Path) -> None:
    root = _lab_root(tmp_path / "root")
    env = nbflow_env(root, managed=True)
    register_pipelines(root, env)
    config = tmp_path / "jupyter_server_config.json"
    config.write_text(json.dumps({"NbflowExtension": {"manage_scheduler": False}}))
    server = start_jupyter(root, env, "server", extra_args=(f"--config={config}",))
    try:
        time.sleep(3)
        status, state = server.request("GET", "scheduler")
        assert status == 200 and state["managed"] is False and state["state"] == "stopped", state
        assert "no scheduler has run" in state["reason"], state
        assert schedulers_of(root) == []
    finally:
        server.stop()
        stop_nbflow_processes(root)
