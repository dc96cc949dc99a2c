"""The metadata store: migrations, compare-and-set state writes, locked databases."""

from __future__ import annotations

import sqlite3
import threading
import time
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import OperationalError

from nbflow import states
from nbflow.states import RunState, TaskState
from nbflow.store import Store
from nbflow.store.orm import Base, utcnow
from nbflow.store.session import SCHEMA_HEAD, get_engine, retrying, schema_revisions

TABLES = {
    "pipelines",
    "pipeline_versions",
    "runs",
    "task_instances",
    "task_attempts",
    "artifacts",
    "alembic_version",
    "jobs",
    "import_errors",
    "pools",
}


def _new_run(store: Store, tasks=("a", "b")) -> int:
    def write(tx):
        version = tx.upsert_pipeline({"name": "p", "file": None, "schedule": None}, "f1")
        now = utcnow()
        (run_id,) = tx.create_runs(
            pipeline="p",
            version_id=version,
            params={},
            trigger="test",
            tasks=[{"task_id": t, "kind": "python", "max_tries": 2} for t in tasks],
            intervals=[(now, now)],
        )
        return run_id

    return store.write(write)


def test_transition_table_is_consistent():
    for to, sources in states.TASK_TRANSITIONS.items():
        assert to in TaskState and sources <= set(TaskState)
    assert states.can_transition(TaskState.QUEUED, TaskState.RUNNING)
    assert not states.can_transition(TaskState.SUCCESS, TaskState.RUNNING)
    assert not states.can_transition(TaskState.PENDING, TaskState.SUCCESS)
    assert states.FINISHED.isdisjoint(states.UNFINISHED)


def _check_fresh_database(store: Store) -> None:
    insp = sa.inspect(store.engine)
    assert TABLES <= set(insp.get_table_names())
    current, head = schema_revisions(store.engine)
    assert current == head == SCHEMA_HEAD


def _check_models_match_migrations(store: Store) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": False}), Base.metadata)
    assert diff == []


def test_new_sqlite_database_is_migrated_and_matches_models(nbflow_home):
    store = Store()
    assert (nbflow_home / "nbflow.db").exists()
    assert "note" in {c["name"] for c in sa.inspect(store.engine).get_columns("task_instances")}
    _check_fresh_database(store)
    _check_models_match_migrations(store)
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"


@pytest.mark.postgres
def test_new_postgres_database_is_migrated_and_matches_models(pg_url):
    store = Store()
    assert store.engine.dialect.name == "postgresql"
    _check_fresh_database(store)
    _check_models_match_migrations(store)


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_compare_and_set_writes(backend, request, nbflow_home):
    if backend == "postgres":
        request.getfixturevalue("pg_url")
    store = Store()
    run_id = _new_run(store)
    now = datetime.now(UTC)
    assert store.write(lambda tx: tx.queue_attempt(run_id, "a", 1, "k1", now))
    # queueing try 1 again finds the row at try 1 already: no change, no second attempt row
    assert not store.write(lambda tx: tx.queue_attempt(run_id, "a", 1, "k1", now))
    assert store.write(lambda tx: tx.set_task_state(run_id, "a", TaskState.RUNNING, expect_try=1))
    # a report for another try changes nothing
    assert not store.write(lambda tx: tx.set_task_state(run_id, "a", TaskState.SUCCESS, expect_try=2))
    assert store.write(lambda tx: tx.set_task_state(run_id, "a", TaskState.SUCCESS, expect_try=1, duration=1.5))
    # duplicate success report: ignored, not raised
    assert not store.write(lambda tx: tx.set_task_state(run_id, "a", TaskState.SUCCESS, expect_try=1))
    # pending -> success skips the machine: refused
    assert not store.write(lambda tx: tx.set_task_state(run_id, "b", TaskState.SUCCESS))
    rows = {r["task_id"]: r for r in store.task_instances(run_id)}
    assert rows["a"]["state"] == "success" and rows["a"]["duration"] == 1.5 and rows["a"]["try_number"] == 1
    assert rows["b"]["state"] == "pending"
    assert len(store.attempts(run_id, "a")) == 1
    assert store.write(lambda tx: tx.set_run_state(run_id, RunState.RUNNING))
    assert store.write(lambda tx: tx.set_run_state(run_id, RunState.SUCCESS))
    assert not store.write(lambda tx: tx.set_run_state(run_id, RunState.FAILED))
    run = store.get_run(run_id)
    assert run["state"] == "success" and run["ended_at"].tzinfo is not None
    # a cleared task goes back to pending, keeping its try count
    assert store.write(lambda tx: tx.clear_tasks(run_id, ["a", "b"])) == ["a"]
    assert {r["task_id"]: r["try_number"] for r in store.task_instances(run_id)}["a"] == 1


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_run_states_reads_many_runs_in_one_query(backend, request, nbflow_home):
    if backend == "postgres":
        request.getfixturevalue("pg_url")
    store = Store()
    first, second, third = (_new_run(store) for _ in range(3))
    assert store.write(lambda tx: tx.set_run_state(second, RunState.RUNNING))
    assert store.write(lambda tx: tx.set_run_state(third, RunState.CANCELLED))
    statements = []
    sa.event.listen(store.engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    states = store.run_states([first, second, third, third + 100])  # a run that does not exist is left out
    assert states == {first: "queued", second: "running", third: "cancelled"}
    assert len([s for s in statements if s.lstrip().upper().startswith("SELECT")]) == 1
    assert store.run_states([]) == {}


def test_pipeline_versions_are_deduplicated(nbflow_home):
    store = Store()
    d = {"name": "v", "file": "/x.py", "schedule": "@daily"}
    v1 = store.write(lambda tx: tx.upsert_pipeline(d, "aaa"))
    v2 = store.write(lambda tx: tx.upsert_pipeline(d, "aaa"))
    v3 = store.write(lambda tx: tx.upsert_pipeline(d, "bbb"))
    assert v1 == v2 != v3
    assert store.get_pipeline("v")["latest_version_id"] == v3
    assert store.get_version(v1)["definition"]["schedule"] == "@daily"


@pytest.mark.faults
def test_write_waits_for_a_locked_database_and_completes(nbflow_home):
    store = Store()
    run_id = _new_run(store)
    db = str(nbflow_home / "nbflow.db")
    locked, release = threading.Event(), threading.Event()

    def hold_lock():
        conn = sqlite3.connect(db, isolation_level=None)
        conn.execute("BEGIN EXCLUSIVE")
        locked.set()
        release.wait(10)
        time.sleep(1.0)
        conn.execute("COMMIT")
        conn.close()

    holder = threading.Thread(target=hold_lock)
    holder.start()
    locked.wait(5)
    release.set()
    t0 = time.monotonic()
    ok = store.write(lambda tx: tx.set_run_state(run_id, RunState.RUNNING))
    waited = time.monotonic() - t0
    holder.join()
    assert ok and store.get_run(run_id)["state"] == "running"
    assert waited >= 0.5  # it really waited for the lock instead of failing


def test_retrying_retries_transient_errors_with_capped_backoff():
    calls, sleeps = [], []

    def flaky():
        calls.append(1)
        if len(calls) < 4:
            raise OperationalError("UPDATE ...", {}, sqlite3.OperationalError("database is locked"))
        return "done"

    assert retrying(flaky, base_delay=0.1, max_delay=0.25, sleep=sleeps.append) == "done"
    assert sleeps == [0.1, 0.2, 0.25]

    def broken():
        raise OperationalError("SELECT", {}, sqlite3.OperationalError("no such table: x"))

    with pytest.raises(OperationalError):
        retrying(broken, sleep=sleeps.append)
    assert len(sleeps) == 3  # not retried: not transient


def test_failed_transaction_leaves_no_partial_writes(nbflow_home):
    store = Store()
    run_id = _new_run(store)

    def half(tx):
        tx.set_run_state(run_id, RunState.RUNNING)
        raise RuntimeError("crash mid-transaction")

    with pytest.raises(RuntimeError):
        store.write(half)
    assert store.get_run(run_id)["state"] == "queued"


def test_engines_are_shared_per_url(nbflow_home):
    a, b = Store(), Store()
    assert a.engine is b.engine is get_engine(a.url)


def test_upgrade_from_an_older_schema_keeps_data(nbflow_home):
    """A database at revision 0001 (with a run in it) is migrated to the head on open."""
    from alembic import command

    from nbflow.store.session import _upgraded, alembic_config, dispose_engines

    url = f"sqlite:///{nbflow_home / 'old.db'}"
    engine = get_engine(url)
    command.upgrade(alembic_config(engine), "0001")
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO pipelines (name, description, is_paused, created_at, updated_at) VALUES ('old', '', 0, '2026-01-01', '2026-01-01')"
        )
    dispose_engines()
    assert str(engine.url) not in _upgraded
    store = Store(url)
    assert schema_revisions(store.engine)[0] == SCHEMA_HEAD
    assert store.get_pipeline("old")["name"] == "old"


def test_threads_opening_a_new_database_at_once_upgrade_it_once(nbflow_home):
    """Two threads of one process open the same new database together (the API server and
    a run, a test and its helper thread): one upgrade, no error in either."""
    from nbflow.config import get_settings

    url = get_settings().db_url
    barrier, errors, stores = threading.Barrier(4), [], []

    def open_one():
        barrier.wait()
        try:
            stores.append(Store(url))
        except Exception as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert len(stores) == 4
    _check_fresh_database(stores[0])


def test_expire_jobs_marks_expired_leases_dead_and_a_beat_revives(nbflow_home):
    from datetime import timedelta

    from sqlalchemy import update

    from nbflow.store import orm

    store = Store()
    old, fresh = store.write(lambda tx: tx.start_job("scheduler")), store.write(lambda tx: tx.start_job("runner"))
    store.write(
        lambda tx: tx.conn.execute(
            update(orm.jobs).where(orm.jobs.c.id == old).values(heartbeat_at=orm.utcnow() - timedelta(seconds=60))
        )
    )
    assert store.write(lambda tx: tx.expire_jobs(30)) == 1
    assert store.write(lambda tx: tx.expire_jobs(30)) == 0
    assert set(store.live_jobs(30)) == {fresh}
    store.write(lambda tx: tx.heartbeat(old))  # it was only slow: beating again makes it live
    assert set(store.live_jobs(30)) == {old, fresh}


@pytest.mark.postgres
def test_two_schedulers_recording_a_new_pipeline_at_once_both_succeed(pg_url):
    """A new pipeline (and its first version) synced by two schedulers at the same moment: the
    second one's inserts wait for the first's transaction, find the rows taken, and it keeps
    them instead of failing its sync on the primary key."""
    first, second = Store(), Store()
    definition = {"name": "raced", "file": None, "schedule": None}
    inside, release = threading.Event(), threading.Event()
    got: dict[str, int] = {}

    def hold(tx):  # the first scheduler records the pipeline, then stays inside its transaction
        version = tx.upsert_pipeline(definition, "fp1")
        inside.set()
        assert release.wait(30)
        return version

    holder = threading.Thread(target=lambda: got.update(first=first.write(hold)))
    holder.start()
    assert inside.wait(30)
    racer = threading.Thread(
        target=lambda: got.update(second=second.write(lambda tx: tx.upsert_pipeline(definition, "fp1")))
    )
    racer.start()
    time.sleep(1.0)  # the second one's insert now waits on the first's uncommitted row
    assert racer.is_alive()
    release.set()
    holder.join(30)
    racer.join(30)
    assert got["first"] == got["second"]
    assert [p["name"] for p in second.list_pipelines()] == ["raced"]
