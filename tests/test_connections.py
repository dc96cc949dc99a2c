"""Connections and variables (issue 17, item 1): the encrypted store, the CLI, the lookups a
task sees (work item, environment), templates, and `connections test` against the real
PostgreSQL and MariaDB of this machine."""

from __future__ import annotations

import io
import json
import socket
from pathlib import Path

import pytest
import sqlalchemy as sa

from nbflow import api, vault
from nbflow.cli import main
from nbflow.connections import ConnectionError_
from nbflow.loader import load_pipeline
from nbflow.store.secrets import work_item_bundle
from nbflow.templating import TemplateError
from nbflow.vault import SecretNotFoundError, SecretsError

PASSWORD = "pa:ss@w/rd-9Xq"  # characters a URI must encode


@pytest.fixture
def key(monkeypatch: pytest.MonkeyPatch, nbflow_home: Path) -> str:
    """A fresh NBFLOW_FERNET_KEY for one test."""
    value = vault.new_key()
    monkeypatch.setenv("NBFLOW_FERNET_KEY", value)
    for name in [n for n in __import__("os").environ if n.startswith(("NBFLOW_CONN_", "NBFLOW_VAR_"))]:
        monkeypatch.delenv(name)
    return value


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest, key: str) -> str:
    """The metadata database: SQLite under NBFLOW_HOME, or a fresh PostgreSQL schema."""
    if request.param == "postgresql":
        return str(request.getfixturevalue("pg_url"))
    return request.param


def cli(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(list(argv), out=out)
    return code, out.getvalue()


def _mariadb_reachable() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 3306), timeout=1):
            return True
    except OSError:
        return False


# --- the store: encrypted at rest ----------------------------------------------------------------


def test_password_and_extra_are_fernet_tokens_in_the_row(backend: str) -> None:
    """Read back through nbflow, the connection is whole; read with plain SQL, the row holds
    neither the password (nor its URL-encoded form) nor the extra's secret."""
    uri = "postgresql://etl:" + "pa%3Ass%40w%2Frd-9Xq" + "@db.example.com:5432/dw?sslmode=require"
    api.add_connection("warehouse", uri=uri, extra='{"api_key": "k-123456"}', description="dw")
    store = api.open_store()
    with store.engine.connect() as db:
        row = db.execute(sa.text("SELECT * FROM connections WHERE name = 'warehouse'")).mappings().one()
    raw = json.dumps({k: str(v) for k, v in row.items()})
    assert PASSWORD not in raw and "pa%3Ass" not in raw and "k-123456" not in raw and "sslmode" not in raw
    assert row["password"].startswith("gAAAAA") and row["extra"].startswith("gAAAAA")  # Fernet tokens
    assert row["host"] == "db.example.com" and row["login"] == "etl"
    conn = vault.connection("warehouse")  # this process has the store (api plugged it in)
    assert conn.password == PASSWORD and conn.extra == {"sslmode": "require", "api_key": "k-123456"}
    assert conn.schema == "dw" and conn.port == 5432
    assert PASSWORD not in repr(conn) and "etl:***@db.example.com" in repr(conn)
    shown = api.get_connection("warehouse")
    assert shown["password"] == "***" and shown["extra"] == {"sslmode": "require", "api_key": "***"}
    assert PASSWORD not in json.dumps(shown) and "postgresql://etl:***@db.example.com:5432/dw" in shown["uri"]


def test_variables_are_json_and_encrypted_with_a_key(backend: str) -> None:
    api.set_variable("threshold", 0.75)
    api.set_variable("regions", ["eu", "us"])
    api.set_variable("db_password", "hunter2-long")
    api.set_variable("service", {"url": "https://svc", "auth": {"api_key": "svc-key-4242"}})
    with api.open_store().engine.connect() as db:
        rows = {r["key"]: r for r in db.execute(sa.text("SELECT * FROM variables")).mappings()}
    assert all(r["is_encrypted"] for r in rows.values()) and "hunter2-long" not in rows["db_password"]["value"]
    assert vault.variable("threshold") == 0.75 and vault.variable("regions") == ["eu", "us"]
    listed = {v["key"]: v["value"] for v in api.list_variables()}
    service = {"url": "https://svc", "auth": {"api_key": "***"}}  # a sensitive field inside a value too
    assert listed == {"db_password": "***", "regions": ["eu", "us"], "service": service, "threshold": 0.75}
    assert vault.redact("key is svc-key-4242") == "key is ***"
    assert api.get_variable("db_password", reveal=True)["value"] == "hunter2-long"
    api.delete_variable("threshold")
    assert vault.variable("threshold", default=0.5) == 0.5
    with pytest.raises(SecretNotFoundError, match="no variable named 'threshold'"):
        api.delete_variable("threshold")


def test_no_key_refuses_a_secret_and_says_how_to_make_one(nbflow_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NBFLOW_FERNET_KEY", raising=False)
    with pytest.raises(SecretsError) as caught:
        api.add_connection("warehouse", uri="postgresql://etl:s3cret-pw@db/dw")
    assert "no NBFLOW_FERNET_KEY" in str(caught.value) and "nbflow connections key" in str(caught.value)
    assert "Fernet.generate_key()" in str(caught.value)
    with pytest.raises(SecretsError, match="variable 'api_token'"):
        api.set_variable("api_token", "abc-secret")
    code, out = cli("connections", "add", "warehouse", "--uri", "postgresql://etl:s3cret-pw@db/dw")
    assert code == 2 and api.list_connections() == []
    # no secret, no key needed: a connection without password or extra, a plain variable
    api.add_connection("local", uri="sqlite:///tmp/x.db")
    api.set_variable("threshold", 3)
    assert vault.variable("threshold") == 3 and api.get_connection("local")["conn_type"] == "sqlite"


def test_a_wrong_key_names_the_connection_and_never_shows_invalid_token(key: str, monkeypatch) -> None:
    api.add_connection("warehouse", uri="postgresql://etl:s3cret-pw@db/dw")
    api.set_variable("threshold", 1)
    monkeypatch.setenv("NBFLOW_FERNET_KEY", vault.new_key())
    with pytest.raises(SecretsError) as caught:
        vault.connection("warehouse")
    text = str(caught.value)
    assert "connection 'warehouse'" in text and "not the key it was encrypted with" in text
    assert "InvalidToken" not in text and caught.value.__cause__ is None
    code, out = cli("connections", "get", "warehouse")
    assert code == 2 and "Traceback" not in out
    (listed,) = api.list_connections()  # still listed, masked, saying why it cannot be read
    assert listed["password"] == "***" and "not the key it was encrypted with" in listed["description"]
    with pytest.raises(SecretsError, match="variable 'threshold'"):
        vault.variable("threshold")
    monkeypatch.setenv("NBFLOW_FERNET_KEY", "not-a-key")
    with pytest.raises(SecretsError, match="not a Fernet key"):
        vault.connection("warehouse")


# --- the CLI --------------------------------------------------------------------------------------


def test_cli_add_list_get_delete_masks_the_password(key: str) -> None:
    code, out = cli("connections", "add", "warehouse", "--uri", "postgresql://etl:s3cret-pw@db:5432/dw")
    assert code == 0 and "added connection 'warehouse': postgresql://etl:***@db:5432/dw" in out
    code, out = cli(
        "connections", "add", "shop", "--type", "mysql", "--host", "h", "--login", "me",
        "--password", "other-pw-77", "--schema", "shop", "--extra", '{"token": "tok-abcdef", "charset": "utf8"}',
    )  # fmt: skip
    assert code == 0
    code, out = cli("connections", "list")
    assert code == 0 and "warehouse" in out and "shop" in out and "***" in out
    assert "s3cret-pw" not in out and "other-pw-77" not in out and "tok-abcdef" not in out
    code, out = cli("connections", "get", "shop")
    assert code == 0 and "password     ***" in out and '"token": "***"' in out and '"charset": "utf8"' in out
    assert "other-pw-77" not in out
    code, out = cli("connections", "delete", "shop")
    assert code == 0 and [c["name"] for c in api.list_connections()] == ["warehouse"]
    code, out = cli("connections", "delete", "shop")
    assert code == 2
    code, out = cli("connections", "add", "dw2", "--uri", "postgresql://etl@db/dw", "--password", "kept-out-of-uri")
    assert code == 0 and vault.connection("dw2").password == "kept-out-of-uri" and "kept-out" not in out
    code, out = cli("connections", "key")
    assert code == 0 and len(out.strip()) == 44


def test_cli_variables_take_json_or_a_plain_string(key: str) -> None:
    assert cli("variables", "set", "threshold", "0.75")[0] == 0
    assert cli("variables", "set", "greeting", "hello world")[0] == 0
    assert cli("variables", "set", "cfg", '{"a": [1, 2]}')[0] == 0
    assert cli("variables", "get", "threshold") == (0, "0.75\n")
    assert cli("variables", "get", "greeting") == (0, "hello world\n")
    assert vault.variable("cfg") == {"a": [1, 2]}
    code, out = cli("variables", "list")
    assert code == 0 and "threshold" in out and '"hello world"' in out
    assert cli("variables", "delete", "cfg")[0] == 0 and cli("variables", "get", "cfg")[0] == 2


def test_help_texts_have_examples() -> None:
    for args in (["connections", "--help"], ["connections", "add", "--help"], ["variables", "set", "--help"]):
        out = io.StringIO()
        with pytest.raises(SystemExit), __import__("contextlib").redirect_stdout(out):
            main(args)
        assert "examples:" in out.getvalue() and "NBFLOW_" in out.getvalue()


def test_connections_test_of_sqlite_and_of_a_type_that_is_no_database(key: str, tmp_path: Path) -> None:
    api.add_connection("local", uri=f"sqlite:///{tmp_path}/local.db")
    assert vault.connection("local").sqlalchemy_url == f"sqlite:///{tmp_path}/local.db"
    code, out = cli("connections", "test", "local")
    assert code == 0 and out.startswith("OK: ") and "SELECT 1" in out
    api.add_connection("hook", conn_type="http", host="api.example.com", password="http-pw-1234")
    code, out = cli("connections", "test", "hook")
    assert code == 1 and "can only test SQL databases" in out and "http-pw-1234" not in out


def test_connections_test_opens_the_real_postgresql(key: str) -> None:
    pytest.importorskip("psycopg")
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", 5432)) != 0:
            pytest.skip("PostgreSQL is not reachable at 127.0.0.1:5432")
    api.add_connection("pg", uri="postgresql://postgres:any-pw-123@127.0.0.1:5432/test")
    code, out = cli("connections", "test", "pg")
    assert code == 0 and out.startswith("OK: ") and "SELECT 1" in out and "any-pw-123" not in out
    api.add_connection("pg_nodb", uri="postgresql://postgres:any-pw-123@127.0.0.1:5432/no_such_db_here")
    code, out = cli("connections", "test", "pg_nodb")
    assert code == 1 and out.startswith("FAILED: ") and "no_such_db_here" in out and "any-pw-123" not in out


def test_connections_test_opens_the_real_mariadb(key: str) -> None:
    pytest.importorskip("pymysql")
    if not _mariadb_reachable():
        pytest.skip("MariaDB is not reachable at 127.0.0.1:3306")
    api.add_connection("maria", conn_type="mysql", host="127.0.0.1", port=3306, login="root", schema="mysql")
    code, out = cli("connections", "test", "maria")
    assert code == 0 and out.startswith("OK: "), out
    engine = vault.connection("maria").engine()
    with engine.connect() as db:
        assert db.execute(sa.text("SELECT 1 + 1")).scalar() == 2
    engine.dispose()
    api.add_connection("maria_bad", uri="mysql://nobody:wrong-pw-456@127.0.0.1:3306/mysql")
    code, out = cli("connections", "test", "maria_bad")
    assert code == 1 and "Access denied" in out and "wrong-pw-456" not in out


def test_a_connection_from_the_environment(key: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NBFLOW_CONN_REPORTING", "postgresql://rep:env-pw-321@reports:5433/r")
    monkeypatch.setenv("NBFLOW_VAR_LIMIT", "[1, 2]")
    monkeypatch.setenv("NBFLOW_VAR_NAME", "plain text")
    conn = vault.connection("reporting")
    assert (conn.host, conn.port, conn.login, conn.password) == ("reports", 5433, "rep", "env-pw-321")
    assert vault.variable("limit") == [1, 2] and vault.variable("name") == "plain text"
    shown = api.get_connection("reporting")
    assert shown["source"] == "environment" and shown["password"] == "***"
    assert vault.redact("connect to postgresql://rep:env-pw-321@reports") == "connect to postgresql://rep:***@reports"
    with pytest.raises(ConnectionError_, match="NBFLOW_CONN_NOPE"):
        vault.connection("nope")


def test_outside_a_run_nbflow_connection_reads_the_store(key: str, nbflow_home: Path) -> None:
    """A notebook opened by hand (no work item): ``nbflow.connection`` and ``nbflow.variable`` find
    the stored ones (the package root plugs the store in); a default stands in for a missing one."""
    import os
    import subprocess
    import sys

    api.add_connection("warehouse", uri="postgresql://etl:by-hand-pw-5@wh.example.com/dw")
    api.set_variable("threshold", {"x": 1})
    code = (
        "import nbflow; c = nbflow.connection('warehouse'); "
        "print(c.host, c.password == 'by-hand-pw-5', nbflow.variable('threshold'), nbflow.variable('nope', None))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=os.environ.copy(), capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["wh.example.com", "True", "{'x':", "1}", "None"]


# --- inside a pipeline: what the work item carries -------------------------------------------------

WORK_ITEM = """
import sys
import nbflow
from nbflow import Pipeline, task, shell

with Pipeline("uses_secrets") as pipeline:
    @task
    def extract(host_from_template, threshold_from_template):
        from nbflow import connections, vault
        conn = nbflow.connection("warehouse")
        print("opened", conn.uri)          # the password, as a URI: masked in the log
        print("raw password", conn.password)
        return {
            "host": conn.host,
            "password_ok": conn.password == "wk-s3cret-pass",
            "threshold": nbflow.variable("threshold"),
            "missing": nbflow.variable("missing", default="dflt"),
            "templ": [host_from_template, threshold_from_template],
            "store_in_worker": "nbflow.store" in sys.modules or "nbflow.api" in sys.modules,
            "store_lookups": len(connections._LOOKUPS) + len(vault._variable_lookups),
        }

    extract("{{ conn.warehouse.host }}", "{{ var.threshold }}")
    shell("echo shell sees {{ conn.warehouse.password }}", name="echo")
"""


def test_a_task_on_the_local_executor_gets_connections_and_variables_with_its_work_item(
    key: str, write_pipeline
) -> None:
    """The store is only in the driver: the worker process has no store module loaded and no
    store lookup, yet the task opens the connection and reads the variable (from the work
    item's Fernet tokens, decrypted with the worker's key); prints of the password are ***."""
    api.add_connection("warehouse", uri="postgresql://etl:wk-s3cret-pass@wh.example.com:5432/dw")
    api.set_variable("threshold", 0.25)
    bundle = work_item_bundle(api.open_store())
    assert "wk-s3cret-pass" not in json.dumps(bundle)  # what crosses to workers: tokens
    result = api.run_pipeline(load_pipeline(write_pipeline(WORK_ITEM)), executor="local")
    assert result.state.value == "success", [(t["task_id"], t["error"]) for t in result.tasks]
    value = api.load_output(result.run_id, "extract")
    assert value == {
        "host": "wh.example.com",
        "password_ok": True,
        "threshold": 0.25,
        "missing": "dflt",
        "templ": ["wh.example.com", "0.25"],
        "store_in_worker": False,
        "store_lookups": 0,
    }
    log = api.read_log(result.run_id, "extract")
    assert "opened postgresql://etl:***@wh.example.com:5432/dw" in log and "raw password ***" in log
    assert "wk-s3cret-pass" not in log
    echo = api.read_log(result.run_id, "echo")
    assert "shell sees ***" in echo and "wk-s3cret-pass" not in echo
    attempt_logs = list((Path(api.open_store().settings.artifact_root)).rglob("log.txt"))
    assert attempt_logs and all("wk-s3cret-pass" not in p.read_text() for p in attempt_logs)  # on disk too


def test_an_unknown_connection_in_a_template_names_task_field_and_name(key: str, write_pipeline) -> None:
    path = write_pipeline(
        """
        from nbflow import Pipeline, shell

        with Pipeline("bad_conn") as pipeline:
            shell("echo {{ conn.nowhere.host }}", name="say")
        """
    )
    with pytest.raises(TemplateError) as caught:  # rendered before the run starts: refused at trigger time
        api.run_pipeline(load_pipeline(path), executor="inline")
    error = str(caught.value)
    assert "task 'say'" in error and "in command" in error and "conn.nowhere" in error, error
    assert "no connection named 'nowhere'" in error and "NBFLOW_CONN_NOWHERE" in error


def test_templates_may_name_conn_and_var_at_definition(write_pipeline) -> None:
    path = write_pipeline(
        """
        from nbflow import Pipeline, shell

        with Pipeline("names_ok") as pipeline:
            shell("echo {{ conn.db.host }} {{ var.limit }}", name="say")
        """
    )
    assert load_pipeline(path).tasks["say"].templates  # accepted: conn and var are known names


# --- Dask: secrets cross the network as Fernet tokens, workers decrypt with their own key ---------

DASK = """
from nbflow import Pipeline, task

with Pipeline("dask_secrets") as pipeline:
    @task
    def opens():
        import os, sys
        import nbflow
        conn = nbflow.connection("warehouse")
        print("password", conn.password)
        return {"ok": conn.password == "dask-s3cret-pw", "host": conn.host, "limit": nbflow.variable("limit"),
                "store": "nbflow.store" in sys.modules, "pid": os.getpid()}
    opens()
"""


@pytest.mark.slow
def test_a_task_on_dask_workers_gets_the_tokens_and_decrypts_with_the_workers_key(
    key: str, tmp_path: Path, write_pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    import cloudpickle

    from nbflow.worker import WorkItem
    from tests.test_dask_executor import Cluster, _serve

    api.add_connection("warehouse", uri="postgresql://etl:dask-s3cret-pw@wh.example.com/dw")
    api.set_variable("limit", 3)
    bundle = work_item_bundle(api.open_store())
    item = WorkItem("k", "p", 1, "t", 1, None, {}, {}, str(tmp_path), 1.0, context={"secrets": bundle}, payload=b"")
    wire = cloudpickle.dumps(item)  # what the Dask client sends the scheduler and a worker
    assert b"dask-s3cret-pw" not in wire and b"gAAAAA" in wire
    cluster = Cluster(tmp_path)
    cluster.worker("w1", "default")  # started with this test's NBFLOW_FERNET_KEY in its environment
    try:
        _serve(cluster, 1, monkeypatch)
        result = api.run_pipeline(load_pipeline(write_pipeline(DASK)), executor="dask")
    finally:
        cluster.close()
    assert result.ok, [(t["task_id"], t["error"]) for t in result.tasks]
    value = api.load_output(result.run_id, "opens")
    assert value["ok"] and value["host"] == "wh.example.com" and value["limit"] == 3 and not value["store"]
    assert "password ***" in api.read_log(result.run_id, "opens")


SQL_TASK = """
from nbflow import Pipeline, sql

with Pipeline("sql_stored_conn") as pipeline:
    sql("SELECT {{ var.base }} + 1 AS x", conn="maria", output="scalar", name="plus_one")
    sql("SELECT 2 AS y", conn="pg", output="scalar", name="two")
"""


def test_sql_tasks_open_stored_connections_from_the_work_item(key: str, write_pipeline) -> None:
    """The sql() task kind (another engineer's) looks its connection up in the worker: a stored
    one (password encrypted) reaches it with the work item, on the real MariaDB and PostgreSQL."""
    pytest.importorskip("pymysql")
    if not _mariadb_reachable():
        pytest.skip("MariaDB is not reachable at 127.0.0.1:3306")
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", 5432)) != 0:
            pytest.skip("PostgreSQL is not reachable at 127.0.0.1:5432")
    api.add_connection("maria", conn_type="mysql", host="127.0.0.1", port=3306, login="root", schema="mysql")
    api.add_connection("pg", uri="postgresql://postgres:sql-task-pw-8@127.0.0.1:5432/test")
    api.set_variable("base", 41)
    result = api.run_pipeline(load_pipeline(write_pipeline(SQL_TASK)), executor="local")
    assert result.ok, [(t["task_id"], t["error"]) for t in result.tasks]
    assert api.load_output(result.run_id, "plus_one") == 42 and api.load_output(result.run_id, "two") == 2
    log = api.read_log(result.run_id, "two")
    assert "postgresql://postgres:***@127.0.0.1:5432/test" in log and "sql-task-pw-8" not in log
