"""Database engines, schema upgrades and retries of transient database errors.

SQLite (the embedded default) runs in WAL mode with ``synchronous=NORMAL`` (durable
against process crashes, fast commits) and a busy timeout; write transactions start
with ``BEGIN IMMEDIATE`` so two writers queue on the lock instead of failing on a
read-to-write upgrade. PostgreSQL connections are pinged before use.

Every write transaction goes through :func:`retrying`: a locked database or a dropped
connection is retried with capped exponential backoff, and the transaction is rolled
back before each retry, so there are no partial writes.

Schema upgrades (:func:`ensure_schema` when a store opens, :func:`migrate` for ``nbflow db
upgrade``) check and migrate under a lock of the database itself (:func:`schema_lock`), so
processes that open a new database at the same moment create its schema once.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError, OperationalError

from nbflow.exceptions import DatabaseUnavailableError, StoreError

log = logging.getLogger("nbflow.store")
T = TypeVar("T")

MIGRATIONS = Path(__file__).parent / "migrations"
#: The newest migration's revision (a test checks it against the migrations folder). Knowing
#: it lets a process skip loading Alembic when the database is already current.
SCHEMA_HEAD = "0010_assets"
SQLITE_BUSY_MS = 30_000
#: The PostgreSQL advisory lock taken around a schema check and upgrade: a fixed signed 64-bit
#: key derived from "nbflow-schema" (shown in ``pg_locks`` as classid/objid).
SCHEMA_LOCK_KEY = int.from_bytes(hashlib.sha256(b"nbflow-schema").digest()[:8], "big", signed=True)
#: Seconds a process waits for another one's schema upgrade before it gives up with an error.
SCHEMA_LOCK_TIMEOUT = 600.0

#: how long a health probe waits for a connection, a lock or a statement (seconds)
PROBE_TIMEOUT = 0.5

_engines: dict[str, Engine] = {}
_probes: dict[str, Engine] = {}
_upgraded: set[str] = set()
_schema_lock = threading.Lock()  # threads of this process (Alembic's context is global)
_lock = threading.Lock()


def _sqlite_engine(url: str, busy_ms: int = SQLITE_BUSY_MS) -> Engine:
    parsed = make_url(url)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": busy_ms / 1000, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):  # noqa: ANN001
        dbapi_conn.isolation_level = None  # we emit BEGIN ourselves (see _on_begin)
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute(f"PRAGMA busy_timeout={busy_ms}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):  # noqa: ANN001
        mode = "IMMEDIATE" if conn.get_execution_options().get("nbflow_write") else "DEFERRED"
        conn.exec_driver_sql(f"BEGIN {mode}")

    return engine


def get_engine(url: str) -> Engine:
    """A shared engine per URL (SQLite tuned as described above)."""
    with _lock:
        engine = _engines.get(url)
        if engine is None:
            if url.startswith("sqlite"):
                engine = _sqlite_engine(url)
            else:
                engine = create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10)
            _engines[url] = engine
        return engine


def probe_engine(url: str) -> Engine:
    """An engine for health checks that never waits long: SQLite's busy timeout, PostgreSQL's
    connect and statement timeouts and the pool's wait are :data:`PROBE_TIMEOUT` (rounded up
    to the 1 s libpq can express for connecting)."""
    with _lock:
        engine = _probes.get(url)
        if engine is None:
            if url.startswith("sqlite"):
                engine = _sqlite_engine(url, busy_ms=int(PROBE_TIMEOUT * 1000))
            else:
                engine = create_engine(
                    url, pool_size=1, max_overflow=2, pool_timeout=PROBE_TIMEOUT, connect_args={"connect_timeout": 1}
                )

                @event.listens_for(engine, "connect")
                def _statement_timeout(dbapi_conn, _record):  # noqa: ANN001
                    dbapi_conn.autocommit = True  # a SET outside any transaction, so it lasts
                    with dbapi_conn.cursor() as cur:
                        cur.execute(f"SET statement_timeout = {int(PROBE_TIMEOUT * 1000)}")
                    dbapi_conn.autocommit = False

            _probes[url] = engine
        return engine


def dispose_engines() -> None:
    """Close every pooled connection (tests; after fork)."""
    with _lock:
        for engine in (*_engines.values(), *_probes.values()):
            engine.dispose()
        _engines.clear()
        _probes.clear()
        _upgraded.clear()


def alembic_config(engine: Engine):  # noqa: ANN201 - alembic's Config
    """An Alembic config pointing at nbflow's migrations and ``engine``."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False).replace("%", "%%"))
    cfg.attributes["engine"] = engine
    return cfg


def schema_revisions(engine: Engine) -> tuple[str | None, str]:
    """(current revision of the database, head revision of the code)."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config(engine)).get_current_head()
    assert head is not None, "nbflow's migrations have one head revision"
    with engine.connect() as conn:
        current = MigrationContext.configure(conn).get_current_revision()
    return current, head


def upgrade(engine: Engine) -> tuple[str | None, str]:
    """Migrate the database to the newest schema; returns (from, to) revisions.

    The check and the migration happen under :func:`schema_lock`, so of several processes
    (or threads) upgrading one database at once, one migrates and the others then find the
    schema current and do nothing.
    """
    from alembic import command

    with schema_lock(engine):
        current, head = schema_revisions(engine)
        if current != head:
            log.info("upgrading nbflow database %s from %s to %s", engine.url, current, head)
            command.upgrade(alembic_config(engine), "head")
    _upgraded.add(str(engine.url))
    return current, head


def _current_revision(engine: Engine) -> str | None:
    from sqlalchemy.exc import DBAPIError as _DBAPIError

    try:
        with engine.connect() as conn:
            return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except _DBAPIError as exc:
        if is_transient(exc):
            raise
        return None  # no table yet: a new database


def ensure_schema(engine: Engine) -> None:
    """Upgrade once per process per database (new databases are created here).

    A current database is recognised without a lock or Alembic; otherwise :func:`upgrade`
    takes the schema lock, so processes and threads opening a new database at once wait for
    one upgrade instead of racing on ``alembic_version``.
    """
    if str(engine.url) in _upgraded:
        return
    with _explained(engine):
        if retrying(lambda: _current_revision(engine), what="schema check") != SCHEMA_HEAD:
            retrying(lambda: upgrade(engine), what="schema upgrade")
        _upgraded.add(str(engine.url))


def migrate(engine: Engine) -> tuple[str | None, str]:
    """:func:`upgrade` retried on transient errors (``nbflow db upgrade``); returns (from, to).
    A database that cannot be used raises a :class:`StoreError` that says which and why."""
    with _explained(engine):
        return retrying(lambda: upgrade(engine), what="schema upgrade")


@contextmanager
def _explained(engine: Engine) -> Iterator[None]:
    try:
        yield
    except DBAPIError as exc:
        kind = DatabaseUnavailableError if is_transient(exc) else StoreError
        raise kind(
            f"cannot open the metadata database {_label(engine)}: {exc.orig}",
            hint="check NBFLOW_DB_URL / NBFLOW_HOME, and that the database server is running",
        ) from exc


# --- the schema lock ------------------------------------------------------------------------


@contextmanager
def schema_lock(engine: Engine, timeout: float | None = None) -> Iterator[None]:
    """Hold the database's schema lock (one holder at a time across processes and hosts).

    * PostgreSQL: the session advisory lock :data:`SCHEMA_LOCK_KEY`, taken and released on
      one connection held for the whole block (a crashed holder's session releases it);
    * SQLite file: ``flock`` on :func:`sqlite_lock_file` beside the database (released by
      the kernel when the holder exits; the file stays, deleting it would let two processes
      lock two different files);
    * in-memory SQLite (one process): the thread lock alone.

    Threads of one process also queue on a thread lock (Alembic's context is global). Waiting
    longer than ``timeout`` (default :data:`SCHEMA_LOCK_TIMEOUT`) raises a :class:`StoreError`
    that names the holder.
    """
    timeout = SCHEMA_LOCK_TIMEOUT if timeout is None else timeout
    with _schema_lock:
        if engine.dialect.name == "postgresql":
            with _pg_advisory_lock(engine, timeout):
                yield
        elif engine.dialect.name == "sqlite" and (lock_file := sqlite_lock_file(engine.url)) is not None:
            with _file_lock(lock_file, timeout, engine):
                yield
        else:
            yield


def sqlite_lock_file(url: str | URL) -> Path | None:
    """The schema lock file of a SQLite database file (``nbflow.db`` -> ``nbflow.db.schema-lock``);
    None for an in-memory database."""
    url = make_url(url)
    database = url.database or ""
    if database in ("", ":memory:") or url.query.get("mode") == "memory" or database.startswith("file::memory:"):
        return None
    path = Path(database).expanduser()
    return path.with_name(path.name + ".schema-lock")


def _label(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=True)


@contextmanager
def _pg_advisory_lock(engine: Engine, timeout: float) -> Iterator[None]:
    with engine.connect() as conn:
        try:
            with conn.begin():  # set_config(..., true): the timeout ends with this transaction
                conn.execute(
                    text("SELECT set_config('lock_timeout', :ms, true)"), {"ms": f"{max(1, int(timeout * 1000))}ms"}
                )
                conn.execute(text("SELECT pg_advisory_lock(CAST(:key AS bigint))"), {"key": SCHEMA_LOCK_KEY})
        except OperationalError as exc:
            if getattr(exc.orig, "sqlstate", None) != "55P03":  # lock_not_available
                raise
            raise StoreError(
                f"timed out after {timeout:g} s waiting for the schema lock of {_label(engine)} "
                f"(PostgreSQL advisory lock {SCHEMA_LOCK_KEY}), held by {_pg_lock_holder(engine)}",
                hint="another nbflow process is creating or migrating this database: let it finish and try again; "
                "if that process hangs, end it (SELECT pg_terminate_backend(<pid>))",
            ) from exc
        try:
            yield
        finally:
            try:
                conn.execute(text("SELECT pg_advisory_unlock(CAST(:key AS bigint))"), {"key": SCHEMA_LOCK_KEY})
                conn.commit()
            except DBAPIError:
                log.warning(
                    "could not release the schema lock of %s; closing its connection releases it", _label(engine)
                )
                conn.invalidate()


def _pg_lock_holder(engine: Engine) -> str:
    """Who holds :data:`SCHEMA_LOCK_KEY` ("backend pid 123 (application, client, since ...)")."""
    key = SCHEMA_LOCK_KEY & 0xFFFF_FFFF_FFFF_FFFF  # pg_locks shows a bigint key as two oids
    try:
        with engine.connect() as conn:
            row = conn.execute(
                text(
                    "SELECT a.pid, a.application_name, a.client_addr, a.backend_start FROM pg_locks l "
                    "JOIN pg_stat_activity a ON a.pid = l.pid "
                    "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 "
                    "AND l.classid::bigint = :hi AND l.objid::bigint = :lo "
                    "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
                ),
                {"hi": key >> 32, "lo": key & 0xFFFF_FFFF},
            ).first()
    except DBAPIError as exc:
        return f"a session that could not be looked up ({exc.orig})"
    if row is None:
        return "a session that has released it since"
    client = f", client {row.client_addr}" if row.client_addr else ""
    return f"backend pid {row.pid} ({row.application_name or 'no application name'}{client}, connected {row.backend_start:%Y-%m-%d %H:%M:%S})"


@contextmanager
def _file_lock(path: Path, timeout: float, engine: Engine) -> Iterator[None]:
    import fcntl

    try:
        f = open(path, "a+")  # noqa: SIM115 - closed below; never truncated before it is locked
    except OSError as exc:
        raise StoreError(
            f"cannot create the schema lock file of {_label(engine)}: {exc.strerror}",
            where=str(path),
            hint="nbflow locks the database's schema with a file beside it: the folder must be writable "
            "(check NBFLOW_HOME / NBFLOW_DB_URL)",
        ) from exc
    with f:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    f.seek(0)
                    holder = f.read().strip() or "an unknown process"
                    raise StoreError(
                        f"timed out after {timeout:g} s waiting for the schema lock of {_label(engine)}, "
                        f"held by {holder}",
                        where=str(path),
                        hint="another nbflow process is creating or migrating this database: let it finish "
                        "and try again (the lock goes when that process exits)",
                    ) from None
                time.sleep(0.05)
        try:
            f.seek(0)
            f.truncate()
            f.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
            f.flush()
            yield
        finally:
            f.seek(0)
            f.truncate()
            f.flush()
            fcntl.flock(f, fcntl.LOCK_UN)


def is_transient(exc: BaseException) -> bool:
    """Whether a database error is worth retrying (locked, busy, connection lost)."""
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(exc, OperationalError):
        text = str(exc.orig).lower()
        return any(s in text for s in ("locked", "busy", "connection", "server closed", "terminating", "timeout"))
    return False


def outage_kind(exc: BaseException) -> str:
    """What a transient database error says happened, in a few words for a user (no SQL)."""
    text = str(getattr(exc, "orig", exc)).lower()
    if "locked" in text or "busy" in text:
        return "locked by another process"
    if "timeout" in text or "timed out" in text or "canceling statement" in text:
        return "timed out"
    return "connection refused or lost"


def retrying(
    fn: Callable[[], T],
    *,
    what: str = "database write",
    retries: int = 8,
    base_delay: float = 0.05,
    max_delay: float = 2.0,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Call ``fn``; on a transient database error wait (capped exponential backoff) and retry.

    The first failure is logged as a warning, the retries after it at debug level (one line
    says what is wrong; the caller reports it if the retries run out)."""
    for attempt in range(retries + 1):
        try:
            return fn()
        except DBAPIError as exc:
            if not is_transient(exc) or attempt == retries:
                raise
            delay = min(max_delay, base_delay * 2**attempt)
            level = logging.WARNING if attempt == 0 else logging.DEBUG
            log.log(
                level, "%s failed (%s); retry %d/%d in %.2fs", what, str(exc.orig).strip(), attempt + 1, retries, delay
            )
            sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover
