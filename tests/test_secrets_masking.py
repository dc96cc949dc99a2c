"""Secrets are *** wherever nbflow writes or shows them (issue 17, Airflow's secrets masker as
the anchor): an output notebook, a kernel's log, the masker's own rules, and the REST API of a
real `jupyter server` (connections, variables, a task's log)."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest

from nbflow import api, vault
from nbflow.loader import load_pipeline
from tests.conftest import make_notebook
from tests.jupyter_procs import JupyterProc, nbflow_env, register_pipelines, start_jupyter

SECRET = "nb-s3cret/pw+42"  # '/' and '+' differ URL-encoded


@pytest.fixture
def key(monkeypatch: pytest.MonkeyPatch, nbflow_home: Path) -> str:
    value = vault.new_key()
    monkeypatch.setenv("NBFLOW_FERNET_KEY", value)
    return value


def test_the_masker_hides_passwords_plain_and_url_encoded_and_sensitive_names_only() -> None:
    vault.mask_secret("plain-Secret-1")
    vault.mask_secret({"charset": "utf8", "api_key": "ak-9876543", "nested": {"auth_token": "tk-555555"}}, name="extra")
    text = "a plain-Secret-1 b plain-Secret-1 utf8 ak-9876543 tk-555555"
    assert vault.redact(text) == "a *** b *** utf8 *** ***"
    vault.mask_secret("p@ss word/7")
    assert vault.redact("mysql://u:p%40ss%20word%2F7@h and p%40ss+word%2F7") == "mysql://u:***@h and ***"
    assert (
        vault.is_sensitive("DB_PASSWORD") and vault.is_sensitive("slack_token") and not vault.is_sensitive("threshold")
    )
    vault.mask_secret("ab")  # too short to mask: every "ab" would go
    assert vault.redact("abc") == "abc"
    nb = {"cells": [{"cell_type": "code", "source": "x", "outputs": [{"text": ["plain-Secret-1\n"]}]}]}
    assert vault.redact_notebook(nb) and nb["cells"][0]["outputs"][0]["text"] == ["***\n"]


NOTEBOOK_PIPELINE = """
from nbflow import Pipeline, notebook

with Pipeline("nb_secrets") as pipeline:
    notebook("uses_conn.ipynb", name="report", output_path="copies/report.ipynb", export="html")
"""


def test_a_notebook_that_prints_a_password_has_it_masked_in_its_output_notebook_and_log(
    key: str, write_pipeline
) -> None:
    """The kernel opens the connection and reads a sensitive variable (handed over from the
    work item through a file that is gone after the attempt); what it prints, displays and
    raises is *** in the output notebook and the log."""
    api.add_connection("warehouse", uri="postgresql://etl:nb-s3cret%2Fpw%2B42@wh:5432/dw")
    api.set_variable("slack_token", "xoxb-1234567890")
    api.set_variable("threshold", 7)
    path = write_pipeline(NOTEBOOK_PIPELINE)
    make_notebook(
        path.parent / "uses_conn.ipynb",
        [
            "import nbflow, sys\nconn = nbflow.connection('warehouse')\nprint('password is', conn.password)",
            "print('uri', conn.uri, file=sys.stderr)\nconn.uri",
            "print('token', nbflow.variable('slack_token'), 'threshold', nbflow.variable('threshold'))",
        ],
    )
    result = api.run_pipeline(load_pipeline(path), executor="local")
    assert result.ok, [(t["task_id"], t["error"]) for t in result.tasks]
    row = result.task("report")
    text = Path(row["output_uri"]).read_text()
    assert SECRET not in text and "nb-s3cret%2Fpw%2B42" not in text and "xoxb-1234567890" not in text
    nb = nbformat.read(row["output_uri"], as_version=4)
    outputs = json.dumps([c.get("outputs", []) for c in nb.cells])
    assert "password is ***" in outputs and "postgresql://etl:***@wh:5432/dw" in outputs
    assert "token *** threshold 7" in outputs
    copy, page = path.parent / "copies" / "report.ipynb", Path(row["output_uri"]).with_suffix(".html")
    for other in (copy.read_text(), page.read_text()):  # papermill's output path and the HTML export
        assert "password is ***" in other and SECRET not in other and "xoxb-1234567890" not in other
    context = nb.metadata["nbflow"]["context"]
    assert "carry_file" in context and "gAAAA" not in context  # only a file's path in the metadata
    carried_file = context.split("carry_file(")[1].split(")")[0].strip("'\"")
    assert not Path(carried_file).exists()  # removed when the attempt ended
    log = api.read_log(result.run_id, "report")
    assert SECRET not in log and "xoxb-1234567890" not in log


def test_a_kernel_without_the_key_gets_a_clear_error(key: str, write_pipeline, monkeypatch) -> None:
    """The driver needs no key (it passes tokens on); a worker without one fails the task with
    a message saying how to set it."""
    api.add_connection("warehouse", uri="postgresql://etl:nokey-pw-1@wh/dw")
    path = write_pipeline(
        """
        from nbflow import Pipeline, task

        with Pipeline("nokey") as pipeline:
            @task
            def opens():
                import nbflow
                return nbflow.connection("warehouse").host
            opens()
        """
    )
    monkeypatch.delenv("NBFLOW_FERNET_KEY")
    result = api.run_pipeline(load_pipeline(path), executor="local")
    error = result.task("opens")["error"]
    assert result.state.value == "failed" and "password of connection 'warehouse'" in error, error
    assert "no NBFLOW_FERNET_KEY" in error and "InvalidToken" not in error


# --- the REST API of a real jupyter server --------------------------------------------------------

CHATTY = """
from nbflow import Pipeline, task

with Pipeline("leaky") as pipeline:
    @task
    def leak():
        import nbflow
        conn = nbflow.connection("warehouse")
        print("connecting with", conn.password, "to", conn.uri)
        raise ValueError("login failed for " + conn.uri)
    leak()
"""
REST_PASSWORD = "rest-s3cret-pw"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterProc]:
    root = tmp_path_factory.mktemp("secrets")
    (root / "pipelines").mkdir()
    (root / "pipelines" / "leaky.py").write_text(CHATTY)
    env = nbflow_env(root)
    env["NBFLOW_FERNET_KEY"] = vault.new_key()
    register_pipelines(root, env)
    proc = start_jupyter(root, env, "server")
    yield proc
    proc.stop()


@pytest.mark.server
def test_the_rest_api_never_returns_a_password(server: JupyterProc) -> None:
    status, added = server.request(
        "POST",
        "connections",
        {
            "name": "warehouse",
            "uri": f"postgresql://etl:{REST_PASSWORD}@wh:5432/dw",
            "extra": {"api_key": "ak-rest-777"},
        },
    )
    assert status == 201, added
    assert added["password"] == "***" and added["extra"] == {"api_key": "***"} and "etl:***@wh" in added["uri"]
    status, listed = server.request("GET", "connections")
    assert status == 200 and [c["name"] for c in listed["connections"]] == ["warehouse"]
    status, one = server.request("GET", "connections/warehouse")
    assert status == 200 and one["password"] == "***" and one["source"] == "database"
    status, _ = server.request("GET", "connections/nowhere")
    assert status == 404
    status, var = server.request("PUT", "variables/db_password", {"value": "var-s3cret-99"})
    assert status == 200 and var["value"] == "***" and var["sensitive"]
    status, var = server.request("PUT", "variables/threshold", {"value": [1, 2]})
    assert status == 200 and var["value"] == [1, 2]
    status, variables = server.request("GET", "variables")
    assert {v["key"]: v["value"] for v in variables["variables"]} == {"db_password": "***", "threshold": [1, 2]}

    status, answer = server.request("POST", "pipelines/leaky/trigger", {})
    assert status == 201, answer
    run_id, deadline = answer["run_id"], time.monotonic() + 90
    while (details := server.request("GET", f"runs/{run_id}")[1])["run"]["state"] not in ("success", "failed"):
        assert time.monotonic() < deadline, details
        time.sleep(0.3)
    status, log = server.request("GET", f"runs/{run_id}/tasks/leak/log")
    assert status == 200 and "connecting with *** to postgresql://etl:***@wh:5432/dw" in log["text"], log
    assert "ValueError: login failed for postgresql://etl:***@wh" in log["text"]
    status, download = server.request("GET", f"runs/{run_id}/tasks/leak/log.txt")
    assert status == 200 and "connecting with ***" in download
    everything = json.dumps([added, listed, one, variables, details, log]) + download
    assert REST_PASSWORD not in everything and "ak-rest-777" not in everything and "var-s3cret-99" not in everything
    assert "login failed for" in json.dumps(details)  # the error is there, masked
    with sqlite3.connect(server.root / "home" / "nbflow.db") as db:  # the worker masked it before the database
        stored = json.dumps(
            db.execute("SELECT * FROM task_attempts").fetchall()
            + db.execute("SELECT * FROM task_instances").fetchall(),
            default=str,
        )
    assert "login failed for postgresql://etl:***@wh" in stored and REST_PASSWORD not in stored
    status, gone = server.request("DELETE", "connections/warehouse")
    assert status == 200 and gone == {"name": "warehouse", "deleted": True}
    assert server.request("DELETE", "variables/threshold")[0] == 200
    assert server.request("GET", "variables/threshold")[0] == 404


def test_a_carried_bundle_is_decrypted_once_per_process_and_a_changed_row_again(key, monkeypatch) -> None:
    """Every attempt of a run carries the same rows: the worker masks them at its first attempt
    only (no Fernet work per task start), and a row whose stored token changed is masked anew."""
    first, second = "carried-pw-one", "carried-pw-two"

    def bundle(password: str) -> dict:
        row = {"conn_type": "postgresql", "host": "db", "port": 5432, "login": "etl", "schema": "dw"}
        return {
            "connections": {"dw": {**row, "password": vault.encrypt(password, "p"), "extra": None}},
            "variables": {},
        }

    decrypted: list[str] = []
    real = vault.decrypt
    monkeypatch.setattr(vault, "decrypt", lambda token, what: decrypted.append(what) or real(token, what))
    one = bundle(first)
    for _ in range(3):  # three attempts of one run
        vault.carry(one)
        vault.carry(None)
    assert len(decrypted) == 1 and vault.redact(f"pw={first}") == "pw=***"
    vault.carry(bundle(second))  # the password was changed (a new token)
    vault.carry(None)
    assert len(decrypted) == 2 and vault.redact(f"pw={second}") == "pw=***"
