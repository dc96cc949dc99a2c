"""sql() tasks on the real PostgreSQL and MariaDB of this machine: bind parameters, outputs,
scripts, sqlsafe, timeouts and cancels that reach the server, error messages."""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from nbflow import api
from nbflow.exceptions import DefinitionError
from nbflow.loader import load_pipeline
from nbflow.tasks.sqlrender import render_sql, split_statements
from nbflow.templating import TemplateError

PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
MARIA_ADMIN = "mysql+pymysql://root@127.0.0.1:3306/"


def _reachable(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@dataclass
class Db:
    kind: str  # "postgresql" or "mariadb"
    admin: Any  # a SQLAlchemy engine on the same database, for the test's own checks
    sleep: str  # a statement that sleeps 60 s

    def scalar(self, sql: str) -> Any:
        with self.admin.connect() as conn:
            return conn.exec_driver_sql(sql).scalar()

    def running(self, marker: str) -> int:
        """How many sessions run a statement containing ``marker`` now."""
        if self.kind == "postgresql":
            query = f"SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%%{marker}%%' AND pid <> pg_backend_pid()"
        else:
            query = (
                "SELECT count(*) FROM information_schema.processlist "
                f"WHERE info LIKE '%%{marker}%%' AND id <> CONNECTION_ID()"
            )
        return int(self.scalar(query))


@pytest.fixture(params=["postgresql", "mariadb"])
def db(request: pytest.FixtureRequest, nbflow_home: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Db]:
    """A fresh schema (PostgreSQL) or database (MariaDB) as connection ``warehouse``."""
    import sqlalchemy as sa

    name = f"nbflow_sql_{uuid.uuid4().hex[:10]}"
    if request.param == "postgresql":
        if not _reachable(5432):
            pytest.skip("PostgreSQL is not reachable at 127.0.0.1:5432")
        root = sa.create_engine(PG_ADMIN)
        with root.begin() as conn:
            conn.exec_driver_sql(f'CREATE SCHEMA "{name}"')
        uri = f"postgresql://postgres@127.0.0.1:5432/test?options=-csearch_path%3D{name}"
        admin = sa.create_engine(f"{PG_ADMIN}?options=-csearch_path%3D{name}")
        found = Db("postgresql", admin, "SELECT pg_sleep(60)")
    else:
        if not _reachable(3306):
            pytest.skip("MariaDB is not reachable at 127.0.0.1:3306")
        root = sa.create_engine(MARIA_ADMIN)
        with root.begin() as conn:
            conn.exec_driver_sql(f"CREATE DATABASE `{name}`")
        uri = f"mysql://root@127.0.0.1:3306/{name}"
        admin = sa.create_engine(f"{MARIA_ADMIN}{name}")
        found = Db("mariadb", admin, "SELECT SLEEP(60)")
    monkeypatch.setenv("NBFLOW_CONN_WAREHOUSE", uri)
    try:
        yield found
    finally:
        admin.dispose()
        with root.begin() as conn:
            if request.param == "postgresql":
                conn.exec_driver_sql(f'DROP SCHEMA "{name}" CASCADE')
            else:
                conn.exec_driver_sql(f"DROP DATABASE `{name}`")
        root.dispose()


def _run(write_pipeline: Any, source: str, executor: str = "local", **options: Any) -> Any:
    return api.run_pipeline(load_pipeline(write_pipeline(source)), executor=executor, **options)


def _states(result: Any) -> dict[str, str]:
    return {t["task_id"]: t["state"] for t in result.tasks}


def _failure(result: Any, task_id: str) -> dict[str, Any]:
    attempts = [a for a in api.run_details(result.run_id)["attempts"] if a["task_id"] == task_id]
    return attempts[-1]


ETL = """
from datetime import datetime
from nbflow import Pipeline, sql, task

with Pipeline("etl", params={"region": "north", "evil": "x'; DROP TABLE sales; --"}, start_date=datetime(2026, 1, 1)) as pipeline:
    load = sql(path="queries/load.sql", conn="warehouse", output="none", name="load")
    extract = sql(
        "SELECT region, amount FROM sales WHERE day = {{ ds }} AND region = {{ params.region }} ORDER BY amount",
        conn="warehouse",
        name="extract",
    )
    evil = sql("SELECT count(*) FROM sales WHERE region = {{ params.evil }}", conn="warehouse", output="scalar", name="evil")
    rows = sql("SELECT region, amount FROM sales WHERE region LIKE '%o%' ORDER BY amount", conn="warehouse", output="rows", name="rows")
    load >> [extract, evil, rows]

    @task
    def total(df):
        return {"columns": list(df.columns), "sum": int(df["amount"].sum()), "n": len(df)}

    total(extract)
"""

LOAD_SQL = """-- the day's sales, loaded in one transaction
CREATE TABLE sales (day DATE, region VARCHAR(40), amount INTEGER);
INSERT INTO sales VALUES ({{ ds }}, {{ params.region }}, 5);
INSERT INTO sales VALUES ({{ ds }}, {{ params.region }}, 7);
INSERT INTO sales VALUES ({{ ds }}, 'south', 100);
INSERT INTO sales VALUES ('1999-01-01', {{ params.region }}, 1000)
"""


def test_etl_binds_outputs_and_downstream_dataframe(db, write_pipeline):
    """path= file with several statements (DDL + DML in one transaction), {{ ds }} and
    {{ params.x }} as bind values, a DataFrame into a downstream @task, rows and scalar outputs,
    the row count as the metric 'rows' and in the log; a value holding SQL stays data."""
    path = write_pipeline(ETL)
    (path.parent / "queries").mkdir()
    (path.parent / "queries" / "load.sql").write_text(LOAD_SQL)
    result = api.run_pipeline(load_pipeline(path), executor="local")
    assert _states(result) == dict.fromkeys(("load", "extract", "evil", "rows", "total"), "success"), _failure(
        result, "load"
    )["message"]
    assert api.load_output(result.run_id, "total") == {"columns": ["region", "amount"], "sum": 12, "n": 2}
    frame = api.load_output(result.run_id, "extract")
    assert list(frame["amount"]) == [5, 7]
    assert api.load_output(result.run_id, "evil") == 0  # the injection was a string compared, nothing ran
    assert db.scalar("SELECT count(*) FROM sales") == 4  # the table is still there
    assert [r["amount"] for r in api.load_output(result.run_id, "rows")] == [5, 7, 100, 1000]
    metrics, _ = api.run_metrics([result.run_id])
    assert metrics[result.run_id]["extract.rows"] == 2
    assert metrics[result.run_id]["rows.rows"] == 4
    assert metrics[result.run_id]["load.rows"] == 1  # rows the last INSERT changed
    log = api.read_log(result.run_id, "extract")
    assert "day = :nbflow_p0 AND region = :nbflow_p1" in log and "'north'" in log
    assert "returned 2 row(s)" in log
    assert "statement 5/5 (line 6)" in api.read_log(result.run_id, "load")


def test_error_in_a_sql_file_names_the_file_and_line(db, write_pipeline):
    path = write_pipeline(
        'from nbflow import Pipeline, sql\nwith Pipeline("f") as pipeline:\n    sql(path="q/bad.sql", conn="warehouse", output="none")\n'
    )
    (path.parent / "q").mkdir()
    (path.parent / "q" / "bad.sql").write_text(
        "CREATE TABLE ok (n INTEGER);\n\n-- then a typo\nINSERT INTO ok VALUSE (1);\n"
    )
    result = api.run_pipeline(load_pipeline(path), executor="local")
    attempt = _failure(result, "bad")
    assert f"{path.parent / 'q' / 'bad.sql'}, statement 2 of 2, line 4" in attempt["message"], attempt["message"]
    assert "VALUSE" in attempt["evalue"]


SQLSAFE = """
from nbflow import Pipeline, sql

with Pipeline("safe", params={"table": "metrics_2026", "n": 3}) as pipeline:
    make = sql("CREATE TABLE {{ params.table | sqlsafe }} (n INTEGER); INSERT INTO {{ params.table | sqlsafe }} VALUES ({{ params.n }})",
               conn="warehouse", output="none", name="make")
    read = sql("SELECT n * 2 FROM {{ params.table | sqlsafe }}", conn="warehouse", output="scalar", name="read")
    make >> read
"""


def test_sqlsafe_pastes_a_table_name(db, write_pipeline):
    result = _run(write_pipeline, SQLSAFE)
    assert _states(result) == {"make": "success", "read": "success"}
    assert api.load_output(result.run_id, "read") == 6
    assert db.scalar("SELECT n FROM metrics_2026") == 3
    if db.kind == "postgresql":  # a PostgreSQL cast right after a value
        cast = SQLSAFE.replace(
            "SELECT n * 2 FROM {{ params.table | sqlsafe }}",
            "SELECT {{ params.n }}::int + n FROM {{ params.table | sqlsafe }}",
        )
        again = api.run_pipeline(
            load_pipeline(write_pipeline(cast, name="cast.py")), params={"table": "t2"}, executor="local"
        )
        assert api.load_output(again.run_id, "read") == 6


ERROR = """
from nbflow import Pipeline, sql

with Pipeline("broken", params={"who": "me"}) as pipeline:
    sql("SELECT 1;\\nSELECT *\\nFROM no_such_table WHERE who = {{ params.who }}", conn="warehouse", name="bad")
"""


def test_sql_error_names_the_database_message_statement_and_line(db, write_pipeline):
    result = _run(write_pipeline, ERROR)
    assert _states(result) == {"bad": "failed"}
    attempt = _failure(result, "bad")
    assert "no_such_table" in attempt["message"]
    assert "statement 2 of 2" in attempt["message"]
    line = 3 if db.kind == "postgresql" else 2  # PostgreSQL points at the table, MariaDB at the statement
    assert f"line {line}" in attempt["message"], attempt["message"]
    assert "who = :nbflow_p0" in attempt["evalue"] and "'me'" in attempt["evalue"]
    assert "no_such_table" in api.read_log(result.run_id, "bad")


TIMEOUT = """
from nbflow import Pipeline, sql

with Pipeline("slow") as pipeline:
    sql("{sleep} -- {marker}", conn="warehouse", output="none", name="slow", timeout=2)
"""


def test_timeout_cancels_the_statement_on_the_server(db, write_pipeline):
    marker = f"nbflow_timeout_{uuid.uuid4().hex[:8]}"
    started = time.monotonic()
    result = _run(write_pipeline, TIMEOUT.format(sleep=db.sleep, marker=marker))
    assert time.monotonic() - started < 30
    assert _states(result) == {"slow": "failed"}
    attempt = _failure(result, "slow")
    assert attempt["reason"] == "task_timeout", attempt
    assert "timeout=2s" in attempt["message"]
    assert db.running(marker) == 0


CANCEL = """
from nbflow import Pipeline, sql

with Pipeline("long") as pipeline:
    sql("{sleep} -- {marker}", conn="warehouse", output="none", name="long")
"""


@pytest.mark.parametrize("executor", ["local", "inline"])
def test_cancelled_run_stops_the_statement_on_the_server(db, write_pipeline, monkeypatch, executor):
    """local (cancelled with `nbflow cancel`): the worker process is told to stop (its stop hook cancels the statement; PostgreSQL
    would run it on after the client died). inline: the driving process lives on, the attempt's
    registered sentinel process is signalled and its watcher cancels the statement."""
    monkeypatch.setenv("NBFLOW_CANCEL_POLL", "0.3")
    api.reset()
    marker = f"nbflow_cancel_{uuid.uuid4().hex[:8]}"
    pipeline = load_pipeline(write_pipeline(CANCEL.format(sleep=db.sleep, marker=marker)))
    results: list[Any] = []
    driver = threading.Thread(target=lambda: results.append(api.run_pipeline(pipeline, executor=executor)), daemon=True)
    driver.start()
    deadline = time.monotonic() + 30
    while db.running(marker) == 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert db.running(marker) == 1, "the statement never started"
    (run,) = api.list_runs("long")
    if executor == "local":  # as a user does, from another process
        import subprocess

        done = subprocess.run(
            [sys.executable, "-m", "nbflow", "cancel", str(run["id"])], capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
    else:
        api.cancel_run(run["id"])
    driver.join(30)
    assert not driver.is_alive()
    assert results[0].state.value == "cancelled"
    deadline = time.monotonic() + 5
    while db.running(marker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert db.running(marker) == 0, "the statement still runs on the server"


# --- without a server -----------------------------------------------------------------------------


def test_values_render_as_bind_parameters():
    values = {"ds": "2026-01-01", "params": {"x": "a'; DROP TABLE t; --"}}
    text, binds = render_sql(
        "SELECT * FROM t WHERE day = {{ ds }} AND x = '{{ params['x'] }}' {% for i in [1, 2] %}OR n = {{ i }} {% endfor %}",
        values,
        task="t",
    )
    assert text.startswith("SELECT * FROM t WHERE day = :nbflow_p0 AND x = ':nbflow_p1' OR n = :nbflow_p2")
    assert binds == {"nbflow_p0": "2026-01-01", "nbflow_p1": "a'; DROP TABLE t; --", "nbflow_p2": 1, "nbflow_p3": 2}
    (statement,) = split_statements(text, binds)
    assert "x =  :nbflow_p1 " in statement.text  # a quoted {{ value }} is the value, unquoted
    from datetime import UTC, datetime

    from nbflow.templating import run_values

    when = datetime(2026, 3, 4, 5, 6, tzinfo=UTC)
    run = run_values({"n": 2}, {"logical_date": when, "run_id": 9}, task_id="t", pipeline="p")
    _, dated = render_sql("SELECT {{ logical_date }}, {{ ds_nodash }}, {{ run_id }}, {{ params.n }}", run, task="t")
    assert list(dated.values()) == [when, "20260304", 9, 2] and type(dated["nbflow_p0"]) is datetime
    (cast,) = split_statements(*render_sql("SELECT {{ ds }}::date", values, task="t"))
    assert cast.text == "SELECT :nbflow_p0 ::date" and cast.binds == {"nbflow_p0": "2026-01-01"}
    with pytest.raises(TemplateError, match="inside the SQL string"):
        split_statements(*render_sql("SELECT '{{ ds }}%'", values, task="t"))


def test_stop_hooks_run_newest_first_and_survive_errors():
    from nbflow import procs

    calls: list[str] = []

    def broken() -> None:
        calls.append("broken")
        raise RuntimeError("no server")

    with procs.stop_hook(lambda: calls.append("first")), procs.stop_hook(broken):
        procs.run_stop_hooks()
    procs.run_stop_hooks()  # none left once the blocks ended
    assert calls == ["broken", "first"]


def test_split_statements_respects_quotes_comments_and_dollar_bodies():
    script = "SELECT ';';\n-- a comment; still a comment\nCREATE FUNCTION f() RETURNS int AS $$ SELECT 1; $$ LANGUAGE sql;\n\n/* ; */ SELECT 2;"
    statements = split_statements(script)
    assert [s.text for s in statements] == [
        "SELECT ';'",
        "-- a comment; still a comment\nCREATE FUNCTION f() RETURNS int AS $$ SELECT 1; $$ LANGUAGE sql",
        "/* ; */ SELECT 2",
    ]
    assert [s.line for s in statements] == [1, 2, 5]


def test_definition_errors(write_pipeline):
    with pytest.raises(DefinitionError, match="unknown name 'nope'"):
        load_pipeline(
            write_pipeline(
                'from nbflow import Pipeline, sql\nwith Pipeline("p"):\n    sql("SELECT {{ nope }}", conn="w")\n'
            )
        )
    with pytest.raises(DefinitionError, match=r"missing\.sql"):
        load_pipeline(
            write_pipeline(
                'from nbflow import Pipeline, sql\nwith Pipeline("p"):\n    sql(path="missing.sql", conn="w")\n',
                name="p2.py",
            )
        )
    with pytest.raises(DefinitionError, match="output of sql task"):
        load_pipeline(
            write_pipeline(
                'from nbflow import Pipeline, sql\nwith Pipeline("p"):\n    sql("SELECT 1", conn="w", output="csv")\n',
                name="p3.py",
            )
        )


def test_trigger_time_check_renders_sql_templates(nbflow_home, write_pipeline):
    source = 'from nbflow import Pipeline, sql\nwith Pipeline("p", params={"cfg": {}}) as pipeline:\n    sql("SELECT {{ params.cfg.bucket | sqlsafe }}", conn="w", name="q")\n'
    with pytest.raises(TemplateError, match="bucket"):
        _run(write_pipeline, source, executor="inline")
    assert api.list_runs() == []
    ok = api.run_pipeline(
        load_pipeline(write_pipeline(source, name="ok.py")), params={"cfg": {"bucket": "1"}}, executor="inline"
    )
    assert ok.run_id  # sqlsafe passes the trigger-time check (the connection is missing: it then fails)
    assert "NBFLOW_CONN_W" in _failure(ok, "q")["message"]


def test_sqlite_timeout_without_a_server_timeout(nbflow_home, write_pipeline, monkeypatch, tmp_path):
    """SQLite has no statement timeout: nbflow's backstop interrupts the statement."""
    monkeypatch.setenv("NBFLOW_CONN_LITE", f"sqlite:///{tmp_path}/lite.db")
    source = ONE.replace(
        "SELECT 1 AS one", "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c) SELECT max(n) FROM c"
    )
    started = time.monotonic()
    result = _run(write_pipeline, source.format(name="spin", extra=", timeout=0.5"), executor="inline")
    assert time.monotonic() - started < 20
    attempt = _failure(result, "q")
    assert attempt["reason"] == "task_timeout", attempt["message"]
    assert "interrupted" in attempt["message"]


def test_missing_connection_and_password_never_shown(nbflow_home, write_pipeline, monkeypatch):
    monkeypatch.delenv("NBFLOW_CONN_WAREHOUSE", raising=False)
    result = _run(
        write_pipeline,
        'from nbflow import Pipeline, sql\nwith Pipeline("p") as pipeline:\n    sql("SELECT 1", conn="warehouse", name="q")\n',
        executor="inline",
    )
    assert "NBFLOW_CONN_WAREHOUSE" in _failure(result, "q")["message"]
    monkeypatch.setenv("NBFLOW_CONN_WAREHOUSE", "postgresql://u:s3cret-pw@127.0.0.1:1/db")
    result = api.run_pipeline(
        load_pipeline(
            write_pipeline(
                'from nbflow import Pipeline, sql\nwith Pipeline("p2") as pipeline:\n    sql("SELECT 1", conn="warehouse", name="q")\n',
                name="p2.py",
            )
        ),
        executor="inline",
    )
    attempt = _failure(result, "q")
    assert attempt["reason"] == "exception"
    shown = " ".join(str(attempt[k]) for k in ("message", "evalue", "traceback")) + api.read_log(result.run_id, "q")
    assert "s3cret-pw" not in shown
    assert "u:***@127.0.0.1:1/db" in shown
    assert os.environ["NBFLOW_CONN_WAREHOUSE"].endswith("/db")


ONE = 'from nbflow import Pipeline, sql\nwith Pipeline("{name}") as pipeline:\n    sql("SELECT 1 AS one", conn="lite", name="q"{extra})\n'


def test_missing_driver_and_pandas_name_the_extra(nbflow_home, write_pipeline, monkeypatch, tmp_path):
    """Inline: the attempt runs in this process, where the driver and pandas are hidden."""
    monkeypatch.setenv("NBFLOW_CONN_LITE", "mysql://u:pw-123@127.0.0.1:1/db")
    monkeypatch.setitem(sys.modules, "pymysql", None)  # import pymysql raises ImportError
    result = _run(write_pipeline, ONE.format(name="nodriver", extra=""), executor="inline")
    message = _failure(result, "q")["message"]
    assert "pip install 'nbflow[mysql]'" in message and "pw-123" not in message
    monkeypatch.setenv("NBFLOW_CONN_LITE", f"sqlite:///{tmp_path}/lite.db")
    monkeypatch.setitem(sys.modules, "pandas", None)
    result = api.run_pipeline(
        load_pipeline(write_pipeline(ONE.format(name="nopandas", extra=""), name="p2.py")), executor="inline"
    )
    assert "pip install 'nbflow[sql]'" in _failure(result, "q")["message"]
    rows = ONE.format(name="rows", extra=', output="rows"')
    result = api.run_pipeline(load_pipeline(write_pipeline(rows, name="p3.py")), executor="inline")
    assert api.load_output(result.run_id, "q") == [{"one": 1}]  # without pandas: rows work


def test_sql_task_is_never_reused_by_an_incremental_run(nbflow_home, write_pipeline, monkeypatch, tmp_path):
    monkeypatch.setenv("NBFLOW_CONN_LITE", f"sqlite:///{tmp_path}/lite.db")
    pipeline = load_pipeline(write_pipeline(ONE.format(name="again", extra=', output="scalar"')))
    first = api.run_pipeline(pipeline, executor="inline")
    second = api.run_pipeline(pipeline, executor="inline", incremental=True)
    assert _states(first) == _states(second) == {"q": "success"}
    assert api.load_output(second.run_id, "q") == 1


@pytest.mark.slow
def test_cancel_on_dask_stops_the_statement_on_the_server(db, write_pipeline, monkeypatch, tmp_path):
    """dask: the attempt runs in a thread of a `nbflow worker`; the cancel signals the sentinel
    process it registered, and its watcher cancels the statement."""
    from tests.test_dask_executor import Cluster, _serve

    monkeypatch.setenv("NBFLOW_CANCEL_POLL", "0.3")
    marker = f"nbflow_dask_{uuid.uuid4().hex[:8]}"
    cluster = Cluster(tmp_path)
    try:
        cluster.worker("w1", "default")  # it inherits NBFLOW_CONN_WAREHOUSE
        _serve(cluster, 1, monkeypatch)
        pipeline = load_pipeline(write_pipeline(CANCEL.format(sleep=db.sleep, marker=marker)))
        results: list[Any] = []
        driver = threading.Thread(
            target=lambda: results.append(api.run_pipeline(pipeline, executor="dask")), daemon=True
        )
        driver.start()
        deadline = time.monotonic() + 60
        while db.running(marker) == 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert db.running(marker) == 1, "the statement never started"
        (run,) = api.list_runs("long")
        api.cancel_run(run["id"])
        driver.join(60)
        assert not driver.is_alive()
        assert results[0].state.value == "cancelled"
        deadline = time.monotonic() + 5
        while db.running(marker) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert db.running(marker) == 0, "the statement still runs on the server"
    finally:
        cluster.close()


def test_dml_with_a_row_output_fails_and_commits_nothing(nbflow_home, write_pipeline, monkeypatch, tmp_path):
    import sqlite3

    db = tmp_path / "lite.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE t (n INTEGER)")
    monkeypatch.setenv("NBFLOW_CONN_LITE", f"sqlite:///{db}")
    source = ONE.replace("SELECT 1 AS one", "INSERT INTO t VALUES (1); INSERT INTO t VALUES (2)")
    result = _run(write_pipeline, source.format(name="dml", extra=""), executor="inline")
    message = _failure(result, "q")["message"]
    assert "returns no rows" in message and "output='none'" in message
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM t").fetchone() == (0,)
    done = api.run_pipeline(
        load_pipeline(write_pipeline(source.format(name="dml2", extra=', output="none"'), name="p2.py")),
        executor="inline",
    )
    assert _states(done) == {"q": "success"} and api.load_output(done.run_id, "q") is None
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM t").fetchone() == (2,)


def test_a_sql_task_in_the_dag_picture(write_pipeline):
    from nbflow.render import to_dot

    pipeline = load_pipeline(write_pipeline(ONE.format(name="pic", extra="")))
    (node,) = pipeline.definition()["tasks"]
    assert node["kind"] == "sql" and node["label"] == "sql: SELECT 1 AS one"
    assert "shape=cylinder" in to_dot(pipeline.definition()).replace(" ", "").replace('"', "")
