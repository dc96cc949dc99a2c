"""``sql(...)``: a SQL query or script run on a named connection; its result is the task's value.

::

    extract = sql("SELECT * FROM sales WHERE day = {{ ds }}", conn="warehouse", name="extract")
    load = sql(path="queries/load.sql", conn="warehouse", output="none")

The text is a Jinja template whose values are **bind parameters**, never SQL text (see
:mod:`nbflow.tasks.sqlrender`; ``| sqlsafe`` pastes one on purpose). ``path=`` reads a ``.sql``
file relative to the pipeline file when the pipeline is defined (its text travels with the
task, like a shell command). Several statements run in order in one transaction; the last one's
result is the task's value, as ``output`` says:

- ``"dataframe"`` (the default): a pandas DataFrame (``pip install 'nbflow[sql]'``);
- ``"rows"``: a list of dicts, one per row; ``"scalar"``: the first column of the first row
  (None without rows);
- ``"none"``: no value (DDL, DML: the transaction is committed).

The row count is the attempt's metric ``rows`` (rows returned, or rows changed for ``"none"``
where the database says) and a line of the task log. ``conn`` names a connection
(:func:`nbflow.connections.connection`, looked up in the worker). The task's ``timeout``
becomes the server's statement timeout, and a cancelled task's statement is cancelled on the
server (:mod:`nbflow.tasks.sqlrun`).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Unpack

from nbflow.artifacts import write_value
from nbflow.dag import current_pipeline
from nbflow.exceptions import DefinitionError
from nbflow.fingerprint import digest
from nbflow.masking import redact
from nbflow.record import AttemptRecord
from nbflow.taskoptions import TaskOptions
from nbflow.tasks.base import AttemptContext, BaseTask
from nbflow.tasks.sqlrender import render_sql, split_statements
from nbflow.templating import TemplateError

__all__ = ["OUTPUTS", "SqlTask", "sql"]

OUTPUTS = ("dataframe", "rows", "scalar", "none")


class SqlTask(BaseTask):
    """SQL statements on a connection; the last one's result (``output``) is the task's value."""

    kind = "sql"
    value_style = "single"

    def __init__(
        self,
        query: str | None = None,
        *,
        conn: str,
        path: str | None = None,
        output: str = "dataframe",
        name: str | None = None,
        **options: Any,
    ):
        label = name or path or "sql"
        if (query is None) == (path is None):
            raise DefinitionError(
                f"sql task {label!r} needs the SQL text or path= (one of them)",
                hint='sql("SELECT ...", conn="warehouse") or sql(path="queries/extract.sql", conn="warehouse")',
            )
        if not isinstance(conn, str) or not conn:
            raise DefinitionError(f"sql task {label!r} needs conn=, the name of a connection, got {conn!r}")
        if output not in OUTPUTS:
            raise DefinitionError(
                f"output of sql task {label!r} must be one of {', '.join(OUTPUTS)}, got {output!r}",
                hint="'dataframe' (pandas), 'rows' (a list of dicts), 'scalar' (one value), 'none' (DDL/DML)",
            )
        pipeline = current_pipeline()
        self.path = None
        if path is not None:
            file = (pipeline.base_dir if pipeline else Path.cwd()) / path
            try:
                query = file.read_text(encoding="utf-8")
            except OSError as exc:
                raise DefinitionError(
                    f"sql task {label!r}: cannot read its SQL file {file}: {exc.strerror or exc}",
                    hint="path= is relative to the pipeline file's folder",
                ) from None
            self.path = str(file)
        if not isinstance(query, str) or not query.strip():
            raise DefinitionError(f"sql task {label!r} has no SQL (an empty text or file)")
        self.query, self.conn, self.output = query, conn, output
        default_name = Path(path).stem if path else "sql"
        super().__init__(name or default_name, explicit_id=name is not None, **options)
        self.declare_templates({"sql": self.query})

    def code_fingerprint(self) -> str:
        """Hash of the SQL, the connection's name and the output form."""
        return digest(repr((self.query, self.conn, self.output)))

    def code_parts(self, memo: dict) -> dict[str, str]:
        """The SQL text, the connection's name and the output form."""
        return {"sql": digest(self.query), "conn": digest(self.conn), "output": digest(self.output)}

    def never_reused(self) -> str | None:
        """The database is outside nbflow's fingerprints: an incremental run runs the task again."""
        return "a SQL task reads and writes a database nbflow cannot fingerprint: it runs in every run"

    def label(self) -> str:
        """``sql: <file or first line>``."""
        text = Path(self.path).name if self.path else " ".join(self.query.split())
        return f"sql: {text if len(text) <= 40 else text[:37] + '...'}"

    def run_attempt(self, ctx: AttemptContext) -> AttemptRecord:
        """Render, connect, run, store the result; every failure is a record naming the statement."""
        from nbflow.connections import ConnectionError_, connection
        from nbflow.tasks.sqlrun import SqlFailure, driver_hint, run_statements

        where = self.path or f"the SQL of task '{self.task_id}'"
        try:
            text, binds = render_sql(self.query, ctx.template_values(), task=self.task_id)
            statements = split_statements(text, binds)
        except TemplateError as exc:
            return AttemptRecord.from_exception(exc, reason="input_missing")
        if not statements:
            return AttemptRecord.failure("exception", f"{where} holds no statement after rendering")
        pandas: Any = None
        if self.output == "dataframe":
            try:
                pandas = importlib.import_module("pandas")
            except ImportError:
                return AttemptRecord.failure(
                    "exception",
                    f"sql task '{self.task_id}' returns a DataFrame but pandas is not installed: "
                    "pip install 'nbflow[sql]' in the worker's environment (or use output='rows')",
                    ename="ImportError",
                )
        try:
            found = connection(self.conn)
        except ConnectionError_ as exc:
            return AttemptRecord.failure("exception", f"{exc.message} ({exc.hint})", ename="ConnectionError")
        try:
            engine = _engine(found)
        except ConnectionError_ as exc:  # no driver for its type
            message = f"{exc.message} ({driver_hint(found.conn_type)})"
            return AttemptRecord.failure("exception", redact(message, [found.password or ""]), ename="ImportError")
        print(
            f"nbflow: sql on connection '{self.conn}' ({found.masked_uri}), {len(statements)} statement(s) from {where}"
        )
        try:
            outcome = run_statements(
                engine,
                statements,
                want_rows=self.output != "none",
                timeout=self.timeout,
                log=lambda line: print(redact(line, [found.password or ""])),
                register=ctx.register_process,
                source=self.path,
            )
        except SqlFailure as exc:
            message = redact(str(exc), [found.password or ""])
            print(f"nbflow: sql failed: {message}")
            return AttemptRecord.failure(
                "task_timeout" if exc.timed_out else "exception",
                message.splitlines()[0],
                ename=exc.ename,
                evalue=message,
            )
        except Exception as exc:  # the server unreachable, a missing driver at connect time
            record = AttemptRecord.from_exception(exc)
            hint = driver_hint(found.conn_type) if isinstance(exc, ImportError) else ""
            record.message = redact(
                f"sql task '{self.task_id}' cannot run on connection '{self.conn}': {exc}", [found.password or ""]
            )
            record.message += f" ({hint})" if hint else ""
            record.evalue = record.message
            record.traceback = redact(record.traceback or "", [found.password or ""]) or None
            return record
        finally:
            engine.dispose()
        return self._stored(ctx, outcome, pandas)

    def _stored(self, ctx: AttemptContext, outcome: Any, pandas: Any) -> AttemptRecord:
        value: Any = None
        if self.output == "dataframe" and outcome.rows is not None:
            value = pandas.DataFrame.from_records(outcome.rows, columns=outcome.columns)
        elif self.output == "rows" and outcome.rows is not None:
            value = [dict(zip(outcome.columns, row, strict=True)) for row in outcome.rows]
        elif self.output == "scalar" and outcome.rows:
            value = outcome.rows[0][0]
        record = AttemptRecord(ok=True)
        if outcome.rowcount >= 0:
            print(f"nbflow: sql {'returned' if outcome.rows is not None else 'changed'} {outcome.rowcount} row(s)")
            record.metrics.append({"name": "rows", "value": outcome.rowcount})
        if value is not None:
            try:
                record.artifacts.append(write_value(ctx.artifact_dir, "return", value).as_dict())
            except OSError as exc:
                return AttemptRecord.storage_failure(exc)
        return record


def _engine(found: Any) -> Any:
    """The connection's SQLAlchemy engine without a pool (its session settings die with it)."""
    from sqlalchemy.pool import NullPool

    return found.engine(poolclass=NullPool)


def sql(
    query: str | None = None,
    *,
    conn: str,
    path: str | None = None,
    output: str = "dataframe",
    name: str | None = None,
    **options: Unpack[TaskOptions],
) -> SqlTask:
    """Add a SQL task to the current pipeline and return its handle (see the module's text).

    The options every task kind takes (``retries``, ``timeout``, ``queue``, ``pool``,
    ``on_failure`` ...) are :class:`nbflow.taskoptions.TaskOptions`.
    """
    return SqlTask(
        query,
        conn=conn,
        path=path,
        output=output,
        name=name,
        **options,
    )
