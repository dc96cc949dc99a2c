"""What the REST API accepts, on SQLite and on the real PostgreSQL (RELIABILITY 35, 36).

Wrongly typed parameters, NUL bytes, over-long values and bodies, out-of-range ids and
deeply nested JSON are 400 (413 for a body over the limit) naming the field, for every route
of ``handlers.ROUTES``; a bug is a 500 with a generic body; and no answer carries SQL, a
traceback or an absolute path of the server. Every answer is also checked against
docs/openapi.yaml (``JupyterProc.request``).
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nbflow.server.handlers import ROUTES
from tests.conftest import PG_URL, _pg_reachable
from tests.jupyter_procs import JupyterProc, nbflow_env, register_pipelines, start_jupyter, stop_nbflow_processes
from tests.openapi_check import check_answer

pytestmark = [pytest.mark.server, pytest.mark.slow]

LIMITS = """
from nbflow import Pipeline, task

with Pipeline("limits", params={"n": 2, "C": 1.0, "msg": "hi", "flag": False}) as pipeline:
    @task
    def show(params):
        print("C is", repr(params["C"]), "n is", params["n"])
    show()
"""
BUGGY_EXTENSION = '''
"""A server extension that plants a bug in nbflow's facade (the test of the 500 answer)."""
from nbflow import api


def _broken(*args, **kwargs):
    raise ZeroDivisionError("planted bug at /srv/secret/path.py: SELECT * FROM runs")


def _load_jupyter_server_extension(app):
    api.list_runs = _broken
'''


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterProc]:
    """A jupyter server with the ``limits`` pipeline and one finished run, on either database."""
    root = tmp_path_factory.mktemp(f"limits-{request.param}")
    (root / "pipelines").mkdir()
    (root / "pipelines" / "limits.py").write_text(LIMITS)
    (root / "plugins").mkdir()
    (root / "plugins" / "buggy_nbflow.py").write_text(BUGGY_EXTENSION)
    env = {**nbflow_env(root), "NBFLOW_MAX_PARAM_BYTES": "1000"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root / "plugins"), env.get("PYTHONPATH")]))
    schema = None
    if request.param == "postgres":
        if not _pg_reachable():
            pytest.skip("PostgreSQL is not reachable at 127.0.0.1:5432 (start it: pg_ctlcluster ... main start)")
        import sqlalchemy as sa

        schema = f"nbflow_rest_{uuid.uuid4().hex[:10]}"
        with sa.create_engine(PG_URL).begin() as conn:
            conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
        env["NBFLOW_DB_URL"] = f"{PG_URL}?options=-csearch_path%3D{schema}"
    register_pipelines(root, env)
    proc = start_jupyter(root, env, "server")
    status, answer = proc.request("POST", "pipelines/limits/trigger", {})
    assert status == 201, answer
    proc.extra["run_id"] = answer["run_id"]
    deadline = time.monotonic() + 90
    while proc.request("GET", f"runs/{answer['run_id']}")[1]["run"]["state"] not in ("success", "failed"):
        assert time.monotonic() < deadline, "the run did not finish"
        time.sleep(0.3)
    yield proc
    proc.stop()
    stop_nbflow_processes(root)  # POST scheduler/start (every route is asked) starts a detached scheduler
    if schema:
        import sqlalchemy as sa

        with sa.create_engine(PG_URL).begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')


def leaks(server: JupyterProc, answer: Any) -> list[str]:
    """What in an answer must not be there: SQL, a traceback, an absolute server path."""
    text = answer if isinstance(answer, str) else json.dumps(answer)
    found = [w for w in ("[SQL", "SELECT ", "Traceback", 'File "', "sqlalche", "psycopg") if w in text]
    found += re.findall(r"(?<![\w.$])/(?:tmp|root|home|usr|srv|var|work|opt)/[^\s\"']*", text)
    found += [str(server.root)] if str(server.root) in text else []
    return found


def ask(server: JupyterProc, method: str, path: str, body: Any = None, raw: bytes | None = None) -> tuple[int, Any]:
    """A request whose answer must leak nothing (it is also checked against the OpenAPI document)."""
    status, answer = server.request(method, path, body, raw=raw)
    assert not leaks(server, answer), (method, path, status, leaks(server, answer), answer)
    return status, answer


def runs_of(server: JupyterProc) -> int:
    return len(ask(server, "GET", "pipelines/limits/runs?limit=500")[1]["runs"])


@pytest.mark.parametrize(
    "raw,field,words",
    [
        (b'{"params": {"n": [1, 2]}}', "params.n", "expects int"),
        (b'{"params": {"n": {"a": 1}}}', "params.n", "expects int"),
        (b'{"params": {"n": true}}', "params.n", "got boolean true"),
        (b'{"params": {"n": NaN}}', "params.n", "NaN"),
        (b'{"params": {"C": Infinity}}', "params.C", "Infinity"),
        (b'{"params": {"C": -Infinity}}', "params.C", "-Infinity"),
        (b'{"params": {"n": 2.5}}', "params.n", "got number 2.5"),
        (b'{"params": {"flag": 0}}', "params.flag", "expects bool"),
        (b'{"params": {"msg": 7}}', "params.msg", "expects string"),
        (b'{"params": {"msg": "a\\u0000b"}}', "params.msg", "NUL byte"),
        (json.dumps({"params": {"msg": "x" * 2000}}).encode(), "params.msg", "more than the limit of 1000"),
        (b'{"params": {"n": 1, "C": true}}', "params.C", "expects float"),
        (b'{"logical_date": "2026-01-01\\u0000"}', "logical_date", "control characters"),
        (b'{"params": 5}', "params", "must be an object"),
    ],
)
def test_a_bad_trigger_body_is_400_naming_the_field_and_queues_nothing(
    server: JupyterProc, raw: bytes, field: str, words: str
) -> None:
    before = runs_of(server)
    status, answer = ask(server, "POST", "pipelines/limits/trigger", raw=raw)
    assert status == 400, answer
    assert field in answer["fields"] and words in answer["fields"][field], answer
    assert runs_of(server) == before


def test_a_float_parameter_stays_a_float(server: JupyterProc) -> None:
    for given in (2.0, 2):
        status, answer = ask(server, "POST", "pipelines/limits/trigger", raw=f'{{"params": {{"C": {given}}}}}'.encode())
        assert status == 201, answer
        _, details = ask(server, "GET", f"runs/{answer['run_id']}")
        assert details["run"]["params"]["C"] == 2.0 and isinstance(details["run"]["params"]["C"], float), details["run"]


def _sample(pattern: str, **values: str) -> str:
    path = pattern.replace(r"(?P<svg>\.svg)?", "").replace("\\.", ".")
    defaults = {"name": "limits", "run_id": "1", "task_id": "show", "path": "limits/run-1/show/try-1/output.ipynb"}
    for group, value in {**defaults, **values}.items():
        path = re.sub(rf"\(\?P<{group}>[^)]*\)", value, path)
    return path


def _routes_with(group: str) -> list[tuple[str, str]]:
    return [(m, p) for p, _h, methods in ROUTES if f"?P<{group}>" in p for m in methods]


@pytest.mark.parametrize("value", ["9" * 5000, "2147483648", "0", "-1", "1e3", "%D9%A3"])
def test_a_run_id_out_of_range_is_400_on_every_route(server: JupyterProc, value: str) -> None:
    routes = _routes_with("run_id")
    assert len(routes) >= 5
    for method, pattern in routes:
        status, answer = ask(server, method, _sample(pattern, run_id=value))
        assert status == 400 and "run_id" in answer["fields"], (method, pattern, answer)


@pytest.mark.parametrize("group", ["name", "task_id"])
def test_nul_and_overlong_names_are_400_on_every_route(server: JupyterProc, group: str) -> None:
    routes = _routes_with(group)
    assert routes
    for method, pattern in routes:
        for value in ("a%00b", "x" * 300):
            status, answer = ask(server, method, _sample(pattern, **{group: value}))
            assert status == 400 and group in answer["fields"], (method, pattern, value, answer)


@pytest.mark.parametrize(
    "query,field",
    [
        ("pipelines/limits/runs?offset=1e20", "offset"),
        ("pipelines/limits/runs?offset=100000000000000000000", "offset"),
        ("pipelines/limits/runs?limit=0", "limit"),
        ("pipelines/limits/graph?run=99999999999", "run"),
        ("runs/1/tasks/show/log?try=" + "1" * 31, "try"),
        ("runs/1/tasks/show/output?try=" + "1" * 31, "try"),
        ("runs/1/tasks/show/log?tail=0", "tail"),
        ("runs/1/tasks/show/log?tail=3&offset=0", "tail"),
        ("pipelines?notebook=" + "a" * 5000, "notebook"),
    ],
)
def test_query_arguments_out_of_range_are_400(server: JupyterProc, query: str, field: str) -> None:
    status, answer = ask(server, "GET", query)
    assert status == 400 and field in answer["fields"], answer


def test_json_nested_100k_deep_is_400_on_every_post_route(server: JupyterProc) -> None:
    deep = b'{"params": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    posts = [(m, p) for p, _h, methods in ROUTES for m in methods if m == "POST"]
    assert len(posts) >= 4
    for method, pattern in posts:
        status, answer = ask(server, method, _sample(pattern), raw=deep)
        assert status == 400 and "body" in answer["fields"], (pattern, answer)


def _raw_http(server: JupyterProc, head: str, body: bytes = b"") -> tuple[int, dict[str, Any], float]:
    """Send a hand-made request; (status, JSON body, seconds) of the answer."""
    host, port = server.url.split("//")[1].rstrip("/").split(":")
    started = time.monotonic()
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(head.encode() + body)
        data = b""
        while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < int(
            re.search(rb"Content-Length: (\d+)", data.split(b"\r\n\r\n", 1)[0] + b"Content-Length: 0").group(1)
        ):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    elapsed = time.monotonic() - started
    header, _, payload = data.partition(b"\r\n\r\n")
    return int(header.split()[1]), json.loads(payload or b"{}"), elapsed


def test_a_body_over_the_limit_is_413_before_it_is_read(server: JupyterProc) -> None:
    """150 MB announced, a few bytes sent: the answer comes at once, and nothing is stored."""
    before = runs_of(server)
    head = (
        f"POST /nbflow/api/pipelines/limits/trigger HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: token {server.token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {150 * 1024 * 1024}\r\n\r\n"
    )
    status, answer, elapsed = _raw_http(server, head, b'{"params": {"msg": "')
    assert status == 413 and "1048576" in answer["message"] and answer["fields"] == {"body": "at most 1048576 bytes"}, (
        answer
    )
    assert elapsed < 5, elapsed
    check_answer("POST", "pipelines/limits/trigger", status, "application/json", answer)
    # a chunked body (no Content-Length) is counted as it arrives
    chunk = b'{"params": {"msg": "' + b"x" * (1100 * 1024) + b'"}}'
    head = (
        f"POST /nbflow/api/pipelines/limits/trigger HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: token {server.token}\r\n"
        f"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    status, answer, _ = _raw_http(server, head, f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n0\r\n\r\n")
    assert status == 413, answer
    assert runs_of(server) == before


def test_the_output_route_refuses_a_try_that_does_not_exist(server: JupyterProc) -> None:
    run_id = server.extra["run_id"]
    status, answer = ask(server, "GET", f"runs/{run_id}/tasks/show/output?try=7")
    assert status == 404 and "task 'show'" in answer["message"] and "try 7" in answer["message"], answer
    assert answer["hint"] == "its tries: 1", answer
    status, answer = ask(server, "GET", f"runs/{run_id}/tasks/show/output?try={10**30}")
    assert status == 400 and "try" in answer["fields"], answer
    status, answer = ask(server, "GET", f"runs/{run_id}/tasks/show/output?try=1")
    assert (
        status == 404 and "try 1 of task 'show'" in answer["message"] and "no output notebook" in answer["message"]
    ), answer


def test_state_conflicts_are_409_and_unknown_things_404(server: JupyterProc) -> None:
    run_id = server.extra["run_id"]
    status, answer = ask(server, "POST", f"runs/{run_id}/cancel")
    assert status == 409 and "only a queued or running run can be cancelled" in answer["message"], answer
    for method, path in [
        ("GET", "runs/2147483647"),
        ("GET", f"runs/{run_id}/tasks/nosuch/log"),
        ("GET", "pipelines/nosuch/runs"),
        ("POST", "runs/2147483647/tasks/show/clear"),
    ]:
        status, answer = ask(server, method, path)
        assert status == 404, (path, answer)


def test_no_answer_of_any_route_leaks_sql_tracebacks_or_paths(server: JupyterProc) -> None:
    """Every route, with good and with bad arguments (``ask`` checks each answer)."""
    run_id = str(server.extra["run_id"])
    for pattern, _handler, methods in ROUTES:
        for method in methods:
            for values in ({"run_id": run_id}, {"name": "nosuch", "task_id": "nosuch", "run_id": "2147483647"}):
                ask(server, method, _sample(pattern, **values), raw=b"{}" if method == "POST" else None)
                ask(
                    server,
                    method,
                    _sample(pattern, **values) + ".svg" if "svg" in pattern else _sample(pattern, **values),
                )


def test_a_bug_is_a_500_with_a_generic_body_and_the_traceback_in_the_log(tmp_path: Path) -> None:
    """A facade function that raises something that is no nbflow error (planted by a server
    extension): 500, a generic message, nothing of the exception in the answer."""
    root = tmp_path / "root"
    (root / "pipelines").mkdir(parents=True)
    (root / "pipelines" / "limits.py").write_text(LIMITS)
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "buggy_nbflow.py").write_text(BUGGY_EXTENSION)
    env = nbflow_env(root)
    register_pipelines(root, env)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tmp_path / "plugins"), env.get("PYTHONPATH")]))
    proc = start_jupyter(root, env, "server", extra_args=("--ServerApp.jpserver_extensions={'buggy_nbflow': True}",))
    try:
        status, answer = ask(proc, "GET", "pipelines/limits/runs")
        assert status == 500, answer
        assert answer == {
            "error": "Internal Server Error",
            "message": "internal error in the nbflow server extension; the server's log has the details",
        }
        log = proc.log.read_text()
        assert "Traceback" in log and "ZeroDivisionError: planted bug" in log, log[-3000:]
    finally:
        proc.stop()
