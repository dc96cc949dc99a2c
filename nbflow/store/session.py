"""Database engines, schema upgrades and retries of transient database errors.

SQLite (the embedded default) runs in WAL mode with ``synchronous=NORMAL`` (durable
against process crashes, fast commits) and a busy timeout; write transactions start
with ``BEGIN IMMEDIATE`` so two writers queue on the lock instead of failing on a
read-to-write upgrade. PostgreSQL connections are pinged before use.

Every write transaction goes through :func:`retrying`: a locked database or a dropped
connection is retried with capped exponential backoff, and the transaction is rolled
back before each retry, so there are no partial writes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError

from nbflow.exceptions import DatabaseUnavailableError, StoreError

log = logging.getLogger("nbflow.store")
T = TypeVar("T")

MIGRATIONS = Path(__file__).parent / "migrations"
#: The newest migration's revision (a test checks it against the migrations folder). Knowing
#: it lets a process skip loading Alembic when the database is already current.
SCHEMA_HEAD = "0003"
SQLITE_BUSY_MS = 30_000

#: how long a health probe waits for a connection, a lock or a statement (seconds)
PROBE_TIMEOUT = 0.5

_engines: dict[str, Engine] = {}
_probes: dict[str, Engine] = {}
_upgraded: set[str] = set()
_schema_lock = threading.Lock()
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
                engine = create_engine(url, pool_size=1, max_overflow=2, pool_timeout=PROBE_TIMEOUT,
                                       connect_args={"connect_timeout": 1})

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
    with engine.connect() as conn:
        current = MigrationContext.configure(conn).get_current_revision()
    return current, head


def upgrade(engine: Engine) -> tuple[str | None, str]:
    """Migrate the database to the newest schema; returns (from, to) revisions."""
    from alembic import command

    current, head = schema_revisions(engine)
    if current != head:
        log.info("upgrading nbflow database %s from %s to %s", engine.url, current, head)
        command.upgrade(alembic_config(engine), "head")
    _upgraded.add(str(engine.url))
    return current, head


def _current_revision(engine: Engine) -> str | None:
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError as _DBAPIError

    try:
        with engine.connect() as conn:
            return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except _DBAPIError as exc:
        if is_transient(exc):
            raise
        return None  # no table yet: a new database


def ensure_schema(engine: Engine) -> None:
    """Upgrade once per process per database (new databases are created here); threads
    opening a store at the same time wait for one upgrade (Alembic's context is global)."""
    if str(engine.url) in _upgraded:
        return
    try:
        with _schema_lock:
            if str(engine.url) in _upgraded:
                return
            if retrying(lambda: _current_revision(engine), what="schema check") == SCHEMA_HEAD:
                _upgraded.add(str(engine.url))
                return
            retrying(lambda: upgrade(engine), what="schema upgrade")
    except DBAPIError as exc:
        kind = DatabaseUnavailableError if is_transient(exc) else StoreError
        raise kind(
            f"cannot open the metadata database {engine.url.render_as_string(hide_password=True)}: {exc.orig}",
            hint="check NBFLOW_DB_URL / NBFLOW_HOME, and that the database server is running",
        ) from exc


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
    """Call ``fn``; on a transient database error wait (capped exponential backoff) and retry."""
    for attempt in range(retries + 1):
        try:
            return fn()
        except DBAPIError as exc:
            if not is_transient(exc) or attempt == retries:
                raise
            delay = min(max_delay, base_delay * 2**attempt)
            log.warning("%s failed (%s); retry %d/%d in %.2fs", what, exc.orig, attempt + 1, retries, delay)
            sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover
