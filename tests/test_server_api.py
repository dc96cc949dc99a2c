"""The REST API of nbflow's server extension against a real `jupyter server` process
(RELIABILITY case 30: auth 403, bad input 400, unknown 404, duplicate 409, import errors)."""

from __future__ import annotations

import os
import re
import shutil
import textwrap
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from nbflow.server.handlers import ROUTES
from tests.jupyter_procs import JupyterProc, nbflow_env, register_pipelines, start_jupyter

pytestmark = [pytest.mark.server, pytest.mark.slow]
NOTEBOOKS = Path(__file__).parent / "notebooks"

QUICK = """
from nbflow import Pipeline, task, notebook

with Pipeline("quick", params={"n": 2}) as pipeline:
    @task
    def first(params):
        for i in range(params["n"]):
            print(f"line {i}")
        return params["n"]

    @task
    def second(x):
        print("second got", x)
        return x * 2

    nb = notebook("params_ok.ipynb", name="nb", parameters={"n": pipeline.params.n})
    s = second(first())
    s >> nb
"""
FRAGILE = """
from nbflow import Pipeline, task

with Pipeline("fragile") as pipeline:
    @task
    def only():
        return 1
    only()
"""


def _quick_root(root: Path) -> Path:
    """``root/pipelines`` holding the QUICK pipeline and its notebook."""
    (root / "pipelines").mkdir(parents=True)
    (root / "pipelines" / "quick.py").write_text(textwrap.dedent(QUICK))
    shutil.copy(NOTEBOOKS / "params_ok.ipynb", root / "pipelines" / "params_ok.ipynb")
    return root


def _finished(server: JupyterProc, run_id: int, timeout: float = 90) -> dict:
    """The run's details once it has ended (or after ``timeout``)."""
    deadline = time.monotonic() + timeout
    while True:
        _, details = server.request("GET", f"runs/{run_id}")
        if details["run"]["state"] in ("success", "failed", "cancelled") or time.monotonic() > deadline:
            return details
        time.sleep(0.5)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterProc]:
    """A jupyter server rooted at a folder with a DAG folder, a notebook and NBFLOW_HOME."""
    root = _quick_root(tmp_path_factory.mktemp("jroot"))
    (root / "pipelines" / "fragile.py").write_text(textwrap.dedent(FRAGILE))
    env = nbflow_env(root)
    register_pipelines(root, env)
    # break fragile.py after it was registered: the pipeline stays, with an import error
    time.sleep(1.1)
    (root / "pipelines" / "fragile.py").write_text(
        "from nbflow import Pipeline\nraise RuntimeError('boom at import')\n"
    )
    register_pipelines(root, env)
    proc = start_jupyter(root, env, "server")
    yield proc
    proc.stop()


def _sample_path(pattern: str) -> str:
    """A concrete URL for a route pattern (its named groups filled in)."""
    path = pattern.replace(r"(?P<svg>\.svg)?", "").replace("\\.", ".")
    for group, value in (
        ("name", "quick"),
        ("run_id", "1"),
        ("task_id", "first"),
        ("key", "threshold"),
        ("path", "quick/run-1/nb/try-1/output.ipynb"),
    ):
        path = re.sub(rf"\(\?P<{group}>[^)]*\)", value, path)
    return path


def test_every_route_refuses_requests_without_a_token(server: JupyterProc) -> None:
    """No token, no cookie: 403 with no data, for every route and method of the URL table."""
    assert len(ROUTES) >= 10
    for pattern, _handler, methods in ROUTES:
        for method in methods:
            status, body = server.request(method, _sample_path(pattern), token=False)
            assert status == 403, (method, pattern, status, body)
            assert "quick" not in str(body)


def test_cookie_post_without_xsrf_is_refused(server: JupyterProc) -> None:
    """A browser-style session (login cookie) may GET, but a POST without the XSRF token is 403."""
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())
    opener.open(f"{server.url}login?token={server.token}", timeout=30).read()  # sets the login cookie
    with opener.open(f"{server.url}nbflow/api/pipelines", timeout=30) as resp:
        assert resp.status == 200
    for pattern, _handler, methods in ROUTES:
        if "POST" not in methods:
            continue
        req = urllib.request.Request(f"{server.url}nbflow/api/{_sample_path(pattern)}", data=b"{}", method="POST")
        with pytest.raises(urllib.error.HTTPError) as err:
            opener.open(req, timeout=30)
        assert err.value.code == 403, pattern


def test_pipelines_list_and_graph(server: JupyterProc) -> None:
    status, body = server.request("GET", "pipelines")
    assert status == 200
    names = {p["name"]: p for p in body["pipelines"]}
    assert names["quick"]["params"] == {"n": 2} and names["quick"]["tasks"] == 3
    status, graph = server.request("GET", "pipelines/quick/graph")
    assert status == 200
    assert {t["id"] for t in graph["definition"]["tasks"]} == {"first", "second", "nb"}
    status, svg = server.request("GET", "pipelines/quick/graph.svg")
    assert status == 200 and "<svg" in svg and 'id="task-first"' in svg.replace("&#45;", "-")  # graphviz escapes "-"
    status, body = server.request("GET", "pipelines?notebook=pipelines/params_ok.ipynb")
    assert [p["name"] for p in body["pipelines"]] == ["quick"]


def test_import_error_is_a_graph_payload_not_a_crash(server: JupyterProc) -> None:
    status, graph = server.request("GET", "pipelines/fragile/graph")
    assert status == 200
    assert graph["import_error"] and "boom at import" in str(graph["import_error"])
    _, body = server.request("GET", "pipelines")
    assert any("boom at import" in str(e) for e in body["import_errors"])


@pytest.mark.parametrize(
    "method,path,body,field",
    [
        ("POST", "pipelines/quick/trigger", {"params": {"nope": 1}}, "params.nope"),
        ("POST", "pipelines/quick/trigger", {"params": {"n": "many"}}, "params.n"),
        ("POST", "pipelines/quick/trigger", {"params": [1]}, "params"),
        ("POST", "pipelines/quick/trigger", {"parms": {}}, "parms"),
        ("POST", "pipelines/quick/trigger", {"incremental": "yes"}, "incremental"),
        ("POST", "pipelines/quick/pause", {"paused": "yes"}, "paused"),
        ("POST", "pipelines/quick/pause", {}, "paused"),
        ("GET", "pipelines/quick/runs?limit=abc", None, "limit"),
        ("GET", "runs/1/tasks/first/log?offset=-1", None, "offset"),
    ],
)
def test_bad_input_is_400_naming_the_field(
    server: JupyterProc, method: str, path: str, body: object, field: str
) -> None:
    status, answer = server.request(method, path, body)
    assert status == 400, answer
    assert field in answer.get("fields", {}) or field in answer["message"], answer


def test_malformed_json_is_400(server: JupyterProc) -> None:
    status, answer = server.request("POST", "pipelines/quick/trigger", raw=b"{not json")
    assert status == 400 and answer["fields"] == {"body": "not JSON"}


@pytest.mark.parametrize(
    "method,path",
    [
        ("GET", "pipelines/nosuch/graph"),
        ("GET", "pipelines/nosuch/graph.svg"),
        ("GET", "pipelines/nosuch/runs"),
        ("POST", "pipelines/nosuch/trigger"),
        ("POST", "pipelines/nosuch/pause"),
        ("GET", "runs/999999"),
        ("GET", "runs/999999/tasks/first/log"),
        ("POST", "runs/999999/cancel"),
    ],
)
def test_unknown_pipeline_or_run_is_404(server: JupyterProc, method: str, path: str) -> None:
    body = {"paused": True} if path.endswith("pause") else None
    status, answer = server.request(method, path, body)
    assert status == 404, answer
    assert "nosuch" in answer["message"] or "999999" in answer["message"]


def test_trigger_runs_to_success_with_log_tailing_output_and_409(server: JupyterProc) -> None:
    status, answer = server.request(
        "POST", "pipelines/quick/trigger", {"params": {"n": 3}, "logical_date": "2026-01-02"}
    )
    assert status == 201, answer
    run_id = answer["run_id"]
    status, dup = server.request("POST", "pipelines/quick/trigger", {"logical_date": "2026-01-02"})
    assert status == 409 and dup["run_id"] == run_id, dup

    details = _finished(server, run_id)
    assert details["run"]["state"] == "success", details
    assert {t["task_id"]: t["state"] for t in details["tasks"]} == {
        "first": "success",
        "second": "success",
        "nb": "success",
    }

    status, log = server.request("GET", f"runs/{run_id}/tasks/first/log")
    assert status == 200 and "line 2" in log["text"]
    status, rest = server.request("GET", f"runs/{run_id}/tasks/first/log?offset={log['offset'] - 7}")
    assert rest["text"] == log["text"][-7:] and rest["offset"] == log["offset"]
    status, answer = server.request("GET", f"runs/{run_id}/tasks/first/log?try=9")
    assert status == 404 and "task 'first' of run" in answer["message"] and "try 9" in answer["message"], answer
    assert answer["hint"] == "its tries: 1", answer

    status, graph = server.request("GET", f"pipelines/quick/graph?run={run_id}")
    assert graph["states"] == {"first": "success", "second": "success", "nb": "success"}
    status, svg = server.request("GET", f"pipelines/quick/graph.svg?run={run_id}")
    assert 'class="node nbflow-success"' in svg.replace("&#45;", "-")

    status, out = server.request("GET", f"runs/{run_id}/tasks/nb/output")
    assert status == 200, out
    assert out["path"] == f"nbflow-runs:quick/run-{run_id}/nb/try-1/nb · run {run_id} · try 1.ipynb", out
    assert out["title"] == f"nb · run {run_id} · try 1", out
    status, answer = server.request("GET", f"runs/{run_id}/tasks/first/output")
    assert status == 404
    status, answer = server.request("GET", f"runs/{run_id}/tasks/nosuch/output")
    assert status == 404 and "nosuch" in answer["message"]
    status, answer = server.request("GET", f"runs/{run_id}/tasks/nosuch/log")
    assert status == 404 and "nosuch" in answer["message"]

    status, answer = server.request("POST", f"runs/{run_id}/cancel")
    assert status == 409 and "success" in answer["message"]
    status, answer = server.request("POST", f"runs/{run_id}/tasks/nosuch/clear")
    assert status == 404
    status, runs = server.request("GET", "pipelines/quick/runs?limit=5&offset=0")
    assert status == 200 and runs["runs"][0]["id"] == run_id


def test_an_incremental_trigger_reuses_up_to_date_tasks_and_says_from_where(server: JupyterProc) -> None:
    status, answer = server.request("POST", "pipelines/quick/trigger", {"params": {"n": 11}})
    assert status == 201, answer
    first = _finished(server, answer["run_id"])
    assert first["run"]["state"] == "success" and first["run"]["incremental"] is False, first
    status, answer = server.request("POST", "pipelines/quick/trigger", {"params": {"n": 11}, "incremental": True})
    assert status == 201, answer
    details = _finished(server, answer["run_id"])  # every answer is checked against docs/openapi.yaml
    assert details["run"]["state"] == "success" and details["run"]["incremental"] is True, details
    run_id = first["run"]["id"]
    for t in details["tasks"]:
        assert (t["state"], t["reused_run_id"], t["reused_try"], t["why"]) == (
            "cached",
            run_id,
            1,
            f"reused from run {run_id}, try 1",
        )
        assert "cache_parts" not in t  # one part per notebook cell: not sent
    assert {a["task_id"] for a in first["artifacts"] if a["digest"]} == {"first", "second"}
    status, svg = server.request("GET", f"pipelines/quick/graph.svg?run={details['run']['id']}")
    assert status == 200 and 'class="node nbflow-cached"' in svg.replace("&#45;", "-")


def test_pause_and_health(server: JupyterProc) -> None:
    status, answer = server.request("POST", "pipelines/quick/pause", {"paused": True})
    assert status == 200 and answer["paused"] is True
    _, body = server.request("GET", "pipelines")
    assert next(p for p in body["pipelines"] if p["name"] == "quick")["is_paused"]
    server.request("POST", "pipelines/quick/pause", {"paused": False})
    status, health = server.request("GET", "health")  # no scheduler runs beside this server
    assert status == 503 and health["status"] == "degraded" and health["database"] == "ok", health
    assert "no scheduler holds the lease" in health["reason"] and health["serving"] in ("none", "runners"), health


def test_database_down_is_503_not_a_hang(tmp_path: Path) -> None:
    """An unreachable database: 503 with a clear message, within the call time limit."""
    root = tmp_path / "root"
    root.mkdir()
    env = nbflow_env(root)
    env["NBFLOW_DB_URL"] = "postgresql+psycopg://postgres@127.0.0.1:1/nowhere"  # nothing listens on port 1
    proc = start_jupyter(root, env, "server")
    try:
        started = time.monotonic()
        status, answer = proc.request("GET", "pipelines")
        assert status == 503 and "database" in answer["message"], answer
        status, health = proc.request("GET", "health")
        assert status == 503 and health["status"] == "degraded"
        assert time.monotonic() - started < 40
    finally:
        proc.stop()


DENY_NBFLOW = '''
from jupyter_server.auth.authorizer import Authorizer


class DenyNbflow(Authorizer):
    """Every resource but nbflow's: a user whose role lacks the nbflow permission."""

    def is_authorized(self, handler, user, action, resource):
        return resource != "nbflow"
'''


def test_a_user_without_the_nbflow_permission_gets_403_everywhere(tmp_path: Path) -> None:
    """RELIABILITY 30: authenticated (valid token) but not authorized for resource ``nbflow``:
    403 with no data on every route and method of the URL table, while Jupyter's own API answers."""
    root = _quick_root(tmp_path / "root")
    (tmp_path / "authz").mkdir()
    (tmp_path / "authz" / "deny_nbflow.py").write_text(DENY_NBFLOW)
    env = nbflow_env(root)
    register_pipelines(root, env)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tmp_path / "authz"), env.get("PYTHONPATH")]))
    proc = start_jupyter(
        root, env, "server", extra_args=("--ServerApp.authorizer_class=deny_nbflow.DenyNbflow",), up=(403,)
    )
    try:
        req = urllib.request.Request(
            f"{proc.url}api/contents/pipelines", headers={"Authorization": f"token {proc.token}"}
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            assert resp.status == 200 and "quick.py" in resp.read().decode()
        for pattern, _handler, methods in ROUTES:
            for method in methods:
                status, body = proc.request(method, _sample_path(pattern))
                assert status == 403, (method, pattern, status, body)
                assert "quick" not in str(body) and "line 0" not in str(body)
    finally:
        proc.stop()


def test_an_output_notebook_in_a_hidden_home_opens_through_the_drive(tmp_path: Path) -> None:
    """The default home ``./.nbflow`` is hidden and Jupyter's contents API does not open hidden
    files (no --ContentsManager.allow_hidden here): the output route names the notebook in the
    extension's drive, which serves it read-only as a contents model; nothing outside the
    artifact root is served."""
    root = _quick_root(tmp_path / "root")
    env = {**nbflow_env(root), "NBFLOW_HOME": str(root / ".nbflow")}
    register_pipelines(root, env)
    proc = start_jupyter(root, env, "server")
    try:
        status, answer = proc.request("POST", "pipelines/quick/trigger", {})
        assert status == 201, answer
        run_id = answer["run_id"]
        details = _finished(proc, run_id)
        assert details["run"]["state"] == "success", details
        status, out = proc.request("GET", f"runs/{run_id}/tasks/nb/output")
        assert status == 200 and out["path"].startswith("nbflow-runs:"), out
        drive_file = urllib.parse.quote(out["path"].removeprefix("nbflow-runs:"))
        status, model = proc.request("GET", f"contents/{drive_file}?type=notebook&content=1")
        assert status == 200 and model["type"] == "notebook" and model["writable"] is False, model
        assert model["content"]["cells"] and model["name"] == f"nb · run {run_id} · try 1.ipynb", model
        status, checkpoints = proc.request("GET", f"contents/{drive_file}/checkpoints")
        assert status == 200 and checkpoints == []
        # Jupyter itself refuses the hidden path: the drive is what makes it open
        req = urllib.request.Request(
            f"{proc.url}api/contents/.nbflow/runs/quick/run-{run_id}/nb/try-1/output.ipynb",
            headers={"Authorization": f"token {proc.token}"},
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(req, timeout=30)
        assert refused.value.code == 404
        for bad in ("../nbflow.db", "quick/../../nbflow.db"):
            status, answer = proc.request("GET", f"contents/{bad}")
            assert status in (400, 404), (bad, status, answer)
        status, answer = proc.request("GET", "contents/quick/no-such.ipynb")
        assert status == 404 and "cleaned up" in answer["message"], answer
        (root / ".nbflow" / "runs" / "quick" / "escape.txt").symlink_to(root / "pipelines" / "quick.py")
        status, answer = proc.request("GET", "contents/quick/escape.txt")
        assert status == 404 and "outside the nbflow artifact root" in answer["message"], answer
    finally:
        proc.stop()
