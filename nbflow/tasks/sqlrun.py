"""Running a SQL task's statements: one connection, one transaction, a statement timeout, and
a cancel that reaches the server.

A database does not stop a statement because its client died: PostgreSQL runs a
``pg_sleep(3600)`` to its end after the worker process is killed, MariaDB a ``SLEEP(3600)``.
So the running statement is cancelled **on the server**:

- on the task's ``timeout``: the server's own statement timeout (PostgreSQL
  ``SET LOCAL statement_timeout``, MariaDB ``SET SESSION max_statement_time``, MySQL
  ``max_execution_time``), and a timer that cancels it ``CANCEL_MARGIN`` seconds later in case
  the server did not (SQLite: ``interrupt()``);
- when the task is cancelled: the ``local`` worker told to stop runs its stop hooks
  (:func:`nbflow.procs.stop_hook`) before it exits, and this one cancels the statement: psycopg's
  cancel request for PostgreSQL, ``KILL QUERY <connection id>`` from a second connection for
  MariaDB/MySQL. Where the attempt runs in a thread of a process that lives on (the ``inline``
  and ``dask`` executors stop an attempt by signalling the process groups it registered), the
  statement has a **sentinel**: a ``sleep`` process registered as the attempt's, whose end (the
  cancel's SIGTERM) makes a watching thread cancel the statement.

The engine uses no pool (``NullPool``): the session's timeout setting dies with its connection.
"""

from __future__ import annotations

import re
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from nbflow import procs
from nbflow.tasks.sqlrender import Statement

__all__ = ["Canceller", "Outcome", "SqlFailure", "run_statements", "driver_hint"]

CANCEL_MARGIN = 2.0  # seconds after the server's own timeout before nbflow cancels the statement itself

#: connection type -> the extra that installs its driver
_EXTRAS = {"postgresql": "postgres", "postgres": "postgres", "mysql": "mysql", "mariadb": "mysql"}


def driver_hint(conn_type: str) -> str:
    """How to install the driver of a connection type."""
    extra = _EXTRAS.get(conn_type)
    if extra is None:
        return f"install the SQLAlchemy driver of '{conn_type}' connections in the worker's environment"
    return f"pip install 'nbflow[{extra}]' in the worker's environment"


@dataclass
class Outcome:
    """What the last statement gave: ``rows`` and ``columns`` when it returned rows, else its rowcount."""

    columns: list[str] | None
    rows: list[tuple] | None
    rowcount: int


class SqlFailure(Exception):
    """A statement failed: ``statement`` (its number, 1-based), ``timed_out``, ``cancelled``."""

    def __init__(self, message: str, *, ename: str, statement: int, timed_out: bool = False):
        super().__init__(message)
        self.ename, self.statement, self.timed_out = ename, statement, timed_out


class Canceller:
    """Cancels the statement running on one connection, from any thread (or a signal handler)."""

    def __init__(self, engine: Any, conn: Any):
        self.engine = engine
        self.dialect = engine.dialect.name
        self.dbapi = conn.connection.dbapi_connection
        self.server_id: int | None = None
        self.timed_out = False  # the backstop timer cancelled it (the server's own timeout did not)
        if self.dialect == "mysql":
            self.server_id = conn.exec_driver_sql("SELECT CONNECTION_ID()").scalar()

    def time_out(self) -> None:
        """The task's time is up and the server has not stopped the statement: cancel it."""
        self.timed_out = True
        self.cancel()

    def cancel(self) -> None:
        """Ask the server to stop the running statement (idempotent enough: a second ask finds nothing)."""
        if self.dialect == "postgresql":
            cancel = getattr(self.dbapi, "cancel_safe", None)
            if cancel is not None:
                cancel(timeout=5.0)
            else:  # psycopg < 3.2
                self.dbapi.cancel()
        elif self.dialect == "mysql" and self.server_id is not None:
            with self.engine.connect() as other:
                other.exec_driver_sql(f"KILL QUERY {int(self.server_id)}")
        elif self.dialect == "sqlite":
            self.dbapi.interrupt()


def _set_timeout(conn: Any, timeout: float | None) -> None:
    if timeout is None:
        return
    dialect = conn.dialect
    if dialect.name == "postgresql":
        conn.exec_driver_sql(f"SET LOCAL statement_timeout = {max(1, int(timeout * 1000))}")
    elif dialect.name == "mysql" and getattr(dialect, "is_mariadb", False):
        conn.exec_driver_sql(f"SET SESSION max_statement_time = {max(0.001, float(timeout)):.3f}")
    elif dialect.name == "mysql":
        conn.exec_driver_sql(f"SET SESSION max_execution_time = {max(1, int(timeout * 1000))}")


@contextmanager
def _timer(seconds: float | None, action: Callable[[], None]) -> Iterator[None]:
    if seconds is None:
        yield
        return
    timer = threading.Timer(seconds, action)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


@contextmanager
def _sentinel(register: Callable[[int], None], cancel: Callable[[], None]) -> Iterator[None]:
    """While the block runs, a ``sleep`` process registered with ``register``: when something
    else ends it (an attempt's cancel signals its registered groups), ``cancel()`` is called."""

    def start() -> subprocess.Popen:
        return subprocess.Popen(
            ["sleep", "2147483647"],
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=procs.parent_death_preexec(),  # noqa: PLW1509 - forked on the lasting thread
        )

    proc = procs.in_lasting_thread(start)
    done = threading.Event()

    def watch() -> None:
        proc.wait()
        if not done.is_set():
            cancel()

    threading.Thread(target=watch, name="nbflow-sql-sentinel", daemon=True).start()
    register(proc.pid)
    try:
        yield
    finally:
        done.set()
        proc.kill()
        proc.wait()


def run_statements(
    engine: Any,
    statements: list[Statement],
    *,
    want_rows: bool,
    timeout: float | None,
    log: Callable[[str], None],
    register: Callable[[int], None] = lambda pgid: None,
    source: str | None = None,
) -> Outcome:
    """Run ``statements`` in order in one transaction (committed when all succeed); the last
    one's rows (``want_rows``) or rowcount. :class:`SqlFailure` naming the statement (and the
    ``source`` file, if any) when one fails."""
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError, StatementError

    outcome = Outcome(None, None, -1)
    with engine.connect() as conn:
        canceller: Canceller | None = None
        number = 0
        try:
            with conn.begin():
                canceller = Canceller(engine, conn)
                backstop = None if timeout is None else timeout + CANCEL_MARGIN
                with (
                    procs.stop_hook(canceller.cancel),
                    _timer(backstop, canceller.time_out),
                    _sentinel(register, canceller.cancel),
                ):
                    _set_timeout(conn, timeout)
                    for number, statement in enumerate(statements, 1):
                        log(
                            f"nbflow: sql statement {number}/{len(statements)} (line {statement.line}): {statement.shown()}"
                        )
                        result = conn.execute(text(statement.text), statement.binds)
                        if number < len(statements):
                            result.close()
                        elif want_rows and result.returns_rows:
                            rows = [tuple(r) for r in result.fetchall()]
                            outcome = Outcome(list(result.keys()), rows, len(rows))
                        elif want_rows:  # raised inside the transaction: what it changed is rolled back
                            raise SqlFailure(
                                f"the last statement (line {statement.line}) returns no rows, and the task's "
                                "output wants them: nothing was committed; use output='none' for DDL/DML",
                                ename="NoRows",
                                statement=number,
                            )
                        else:
                            outcome.rowcount = result.rowcount if result.rowcount is not None else -1
                            result.close()
        except DBAPIError as exc:
            raise _failure(exc, statements, number, canceller, timeout, source) from None
        except StatementError as exc:  # a bind parameter the text names but nobody gave (a stray ':name')
            raise SqlFailure(
                f"statement {number} (line {statements[number - 1].line}) cannot be sent: {exc.orig}: "
                f"{statements[number - 1].shown()}",
                ename=type(exc.orig).__name__,
                statement=number,
            ) from None
    return outcome


_TIMEOUT_CODES = {1969, 3024}  # MariaDB max_statement_time, MySQL max_execution_time


def _failure(
    exc: Any,
    statements: list[Statement],
    number: int,
    canceller: Canceller | None,
    timeout: float | None,
    source: str | None,
) -> SqlFailure:
    orig = exc.orig
    ename = type(orig).__name__
    code = orig.args[0] if orig is not None and orig.args and isinstance(orig.args[0], int) else None
    text = str(orig.args[1]) if code is not None and len(orig.args) > 1 else str(orig).strip()
    if number == 0:  # before any statement: opening the session
        return SqlFailure(f"the database refused the session: {text}", ename=ename, statement=0)
    statement = statements[number - 1]
    timed_out = timeout is not None and (
        code in _TIMEOUT_CODES or "statement timeout" in text or (canceller is not None and canceller.timed_out)
    )
    line = statement.line + _line_in(orig, statement) - 1
    where = f"statement {number} of {len(statements)}, line {line}" if len(statements) > 1 else f"line {line}"
    where = f"{source}, {where}" if source else where
    head, _, rest = text.partition("\n")
    if timed_out:
        message = f"the statement exceeded timeout={timeout:g}s and was cancelled on the server ({where}): {head}"
    else:
        message = f"{head} ({where})"
    message += f"\n{rest}" if rest.strip() else ""
    return SqlFailure(
        f"{message}\n  statement: {statement.shown()}", ename=ename, statement=number, timed_out=timed_out
    )


def _line_in(orig: Any, statement: Statement) -> int:
    """The line inside the statement the database points at (1 when it does not say)."""
    position = getattr(getattr(orig, "diag", None), "statement_position", None)
    if position:  # PostgreSQL: a character offset (placeholders hold no newline: lines match)
        return statement.text.count("\n", 0, max(0, int(position) - 1)) + 1
    found = re.search(r"at line (\d+)", str(orig))  # MariaDB/MySQL say it in the message
    return int(found.group(1)) if found else 1
