"""Case 32: processes that open a brand-new database at the same instant create its schema once.

Four real processes import nbflow, wait at a file barrier, and then all open the same empty
database at once, either through ``Store(url)`` (what a scheduler, a run or the server does
first) or through ``nbflow db upgrade``. Without a database-level lock around the check and
the upgrade, several see "no schema" and run the migrations: on PostgreSQL all but one die
on a duplicate key (``pg_type_typname_nsp_index``, creating ``alembic_version``); on SQLite
they hit "database is locked" (``nbflow db upgrade`` exits 1, a store logs retries).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

from nbflow.store.session import SCHEMA_HEAD

pytestmark = [pytest.mark.faults]

PROCESSES = 4

# Each process imports everything first, says it is ready, then waits for the "go" file, so
# the database work of all of them starts within a millisecond or two.
RACER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path

    mode, url, barrier, me = sys.argv[1:5]
    barrier = Path(barrier)
    from nbflow.store import Store
    from nbflow.cli import main
    # an upgrade imports Alembic lazily: import it before the barrier, or the seconds of imports
    # on a shared machine spread the racers out and hide the race
    import alembic.command, alembic.runtime.migration, alembic.script

    (barrier / f"ready-{me}").touch()
    deadline = time.time() + 60
    while not (barrier / "go").exists():
        if time.time() > deadline:
            sys.exit("the test never opened the barrier")
        time.sleep(0.001)
    if mode == "store":
        Store(url)
    else:
        sys.exit(main(["db", "upgrade"]))
    """
)


def _race(mode: str, url: str, tmp_path: Path) -> list[subprocess.CompletedProcess]:
    """Start PROCESSES racers against ``url``, release them together, and collect them."""
    barrier = tmp_path / f"barrier-{uuid.uuid4().hex[:6]}"
    barrier.mkdir()
    env = {**os.environ, "NBFLOW_DB_URL": url, "NBFLOW_HOME": str(tmp_path / "home"), "PYTHONIOENCODING": "utf-8"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, mode, url, str(barrier), str(i)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(PROCESSES)
    ]
    try:
        deadline = time.time() + 90
        while len(list(barrier.glob("ready-*"))) < PROCESSES:
            assert time.time() < deadline, "the racing processes did not get ready in 90 s"
            assert all(p.poll() is None for p in procs), [p.communicate() for p in procs if p.poll() is not None]
            time.sleep(0.02)
        (barrier / "go").touch()
        outputs = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return [subprocess.CompletedProcess(p.args, p.returncode, out, err) for p, (out, err) in zip(procs, outputs)]


def _check(results: list[subprocess.CompletedProcess], engine: sa.Engine, mode: str) -> None:
    report = "\n".join(f"--- process {i}: exit {r.returncode}\n{r.stdout}{r.stderr}" for i, r in enumerate(results))
    assert all(r.returncode == 0 for r in results), report
    assert all(r.stderr == "" for r in results), report  # no error, no warning, no retry logged
    with engine.connect() as conn:
        versions = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalars().all()
        runs = conn.execute(sa.text("SELECT count(*) FROM runs")).scalar()
    assert versions == [SCHEMA_HEAD], versions
    assert runs == 0  # the tables are there
    if mode == "cli":
        # exactly one process created the schema; the others waited for it and found it current
        said = sorted("upgraded empty" in r.stdout for r in results)
        assert said == [False] * (PROCESSES - 1) + [True], report
        assert sum(f"already at {SCHEMA_HEAD}" in r.stdout for r in results) == PROCESSES - 1, report


@pytest.fixture
def new_pg_database():
    """A brand-new, empty PostgreSQL database (dropped afterwards); skips without a server."""
    from tests.conftest import PG_URL, _pg_reachable

    if not _pg_reachable():
        pytest.skip("PostgreSQL is not reachable at 127.0.0.1:5432 (start it: pg_ctlcluster ... main start)")
    name = f"nbflow_schema_lock_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = sa.make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    engine = sa.create_engine(url)
    try:
        yield url, engine
    finally:
        engine.dispose()
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@pytest.mark.postgres
@pytest.mark.parametrize("mode", ["store", "cli"])
def test_processes_opening_a_new_postgres_database_at_once_create_the_schema_once(mode, new_pg_database, tmp_path):
    url, engine = new_pg_database
    _check(_race(mode, url, tmp_path), engine, mode)


@pytest.mark.parametrize("mode", ["store", "cli"])
def test_processes_opening_a_new_sqlite_file_at_once_create_the_schema_once(mode, tmp_path):
    url = f"sqlite:///{tmp_path / 'fresh' / 'nbflow.db'}"
    engine = sa.create_engine(url)
    try:
        _check(_race(mode, url, tmp_path), engine, mode)
    finally:
        engine.dispose()


HOLDER = textwrap.dedent(
    """
    import sys, time
    from nbflow.store.session import get_engine, schema_lock

    with schema_lock(get_engine(sys.argv[1])):
        print("locked", flush=True)
        time.sleep(60)
    """
)


@pytest.mark.postgres
def test_a_held_postgres_schema_lock_ends_the_wait_with_an_error_naming_the_holder(
    new_pg_database, nbflow_home, monkeypatch
):
    from nbflow.exceptions import StoreError
    from nbflow.store import Store, session

    url, _ = new_pg_database
    holder = sa.create_engine(url, connect_args={"application_name": "lock-holder-test"})
    try:
        with holder.connect() as conn:
            conn.execute(sa.text("SELECT pg_advisory_lock(CAST(:k AS bigint))"), {"k": session.SCHEMA_LOCK_KEY})
            conn.commit()
            pid = conn.execute(sa.text("SELECT pg_backend_pid()")).scalar()
            monkeypatch.setattr(session, "SCHEMA_LOCK_TIMEOUT", 1.0)
            t0 = time.monotonic()
            with pytest.raises(StoreError) as err:
                Store(url)
            assert time.monotonic() - t0 < 15  # one timeout, not one per retry
            message = str(err.value)
            assert "timed out after 1 s waiting for the schema lock" in message, message
            assert f"backend pid {pid} (lock-holder-test" in message, message
            assert "hint: another nbflow process is creating or migrating this database" in message, message
            conn.execute(sa.text("SELECT pg_advisory_unlock(CAST(:k AS bigint))"), {"k": session.SCHEMA_LOCK_KEY})
            conn.commit()
        store = Store(url)  # the lock is free again: the schema is created
        assert session.schema_revisions(store.engine)[0] == SCHEMA_HEAD
    finally:
        session.dispose_engines()
        holder.dispose()


def test_a_held_sqlite_schema_lock_ends_the_wait_with_an_error_naming_the_holder(tmp_path, nbflow_home, monkeypatch):
    from nbflow.exceptions import StoreError
    from nbflow.store import Store, session

    url = f"sqlite:///{tmp_path / 'held' / 'nbflow.db'}"
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, url], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        monkeypatch.setattr(session, "SCHEMA_LOCK_TIMEOUT", 1.0)
        with pytest.raises(StoreError) as err:
            Store(url)
        message = str(err.value)
        assert message.startswith(f"{tmp_path / 'held' / 'nbflow.db.schema-lock'}: timed out after 1 s"), message
        assert f"held by pid {proc.pid} on " in message, message
    finally:
        proc.kill()
        proc.wait()
    store = Store(url)  # the holder is gone, and with it its lock
    assert session.schema_revisions(store.engine)[0] == SCHEMA_HEAD


def test_an_in_memory_sqlite_database_is_upgraded_under_the_thread_lock_alone(nbflow_home):
    from nbflow.store import Store
    from nbflow.store.session import schema_revisions, sqlite_lock_file

    assert schema_revisions(Store("sqlite://").engine)[0] == SCHEMA_HEAD
    assert sqlite_lock_file("sqlite://") is None
    assert sqlite_lock_file("sqlite:///:memory:") is None
    assert sqlite_lock_file("sqlite:////data/nbflow.db") == Path("/data/nbflow.db.schema-lock")
