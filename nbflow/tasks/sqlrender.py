"""SQL text from a template, with every template value as a **bind parameter**.

``sql("SELECT * FROM sales WHERE day = {{ ds }} AND region = {{ params.region }}")`` renders
to ``SELECT * FROM sales WHERE day = :nbflow_p0 AND region = :nbflow_p1`` with
``{"nbflow_p0": "2026-01-01", "nbflow_p1": "north"}``: the values travel to the database
beside the statement (SQLAlchemy ``text()`` bind parameters, the driver's placeholders), so a
parameter ``x'; DROP TABLE t; --`` stays one string value and can never become SQL. The
environment's ``finalize`` does it: each ``{{ expr }}`` outputs a placeholder and records its
value (``{% for %}`` loops and ``{% if %}`` work; each output is one more placeholder).

``{{ value | sqlsafe }}`` opts out: the value is pasted into the SQL text as it is. That is
what a table or column name needs (placeholders stand for values only), and it is dangerous:
whoever sets the value writes SQL. Use it for values your pipeline controls, never for a
parameter a user types in a trigger form.

A text may hold several statements separated by ``;`` (outside quotes, comments and
PostgreSQL's ``$$`` bodies): :func:`split_statements` cuts it; the SQL task runs them in order in
one transaction, and the last one's result is the task's.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from nbflow.templating import TemplateError, is_template

__all__ = ["SqlSafe", "Statement", "render_sql", "split_statements"]

BIND_PREFIX = "nbflow_p"
_COLLECTOR = "__nbflow_sql_binds__"
_PLACEHOLDER = re.compile(rf":{BIND_PREFIX}\d+")
_PLACEHOLDER_CAST = re.compile(rf"(:{BIND_PREFIX}\d+)(?=:)")


class SqlSafe(str):
    """A value ``| sqlsafe`` marked: pasted into the SQL text, not bound."""


@dataclass
class Statement:
    """One statement to run: its text (``:nbflow_pN`` placeholders), its bind values, its first line."""

    text: str
    binds: dict[str, Any] = field(default_factory=dict)
    line: int = 1  # the line of the rendered SQL it starts on (1-based)

    def shown(self) -> str:
        """The statement with its bind values, for logs and error messages."""
        if not self.binds:
            return self.text.strip()
        values = ", ".join(f"{k}={v!r}" for k, v in self.binds.items())
        return f"{self.text.strip()}  -- binds: {values}"


@functools.cache
def _environment() -> Any:
    from jinja2 import StrictUndefined, pass_context
    from jinja2.sandbox import SandboxedEnvironment

    from nbflow.templating import _environment as base

    @pass_context
    def finalize(context: Any, value: Any) -> Any:
        binds = context.get(_COLLECTOR)
        if binds is None or isinstance(value, SqlSafe):
            return value
        name = f"{BIND_PREFIX}{len(binds)}"
        binds[name] = _plain(value)
        return f":{name}"

    env = SandboxedEnvironment(
        undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True, finalize=finalize
    )
    env.filters.update(base().filters)  # ds, ts_nodash ... as in every template
    env.filters["sqlsafe"] = SqlSafe
    return env


def _plain(value: Any) -> Any:
    """A template value as the driver takes it (nbflow's ISO-printing datetimes as datetimes)."""
    from datetime import datetime

    if isinstance(value, datetime) and type(value) is not datetime:
        return datetime.fromisoformat(value.isoformat())
    return value


def render_sql(text: str, values: Mapping[str, Any], *, task: str, field: str = "sql") -> tuple[str, dict[str, Any]]:
    """``(SQL text with placeholders, {placeholder: value})``; a :class:`TemplateError` naming
    the task and field when a name has no value."""
    if not is_template(text):
        return text, {}
    from jinja2 import TemplateError as JinjaError
    from jinja2 import UndefinedError

    binds: dict[str, Any] = {}
    try:
        sql = _environment().from_string(text).render({**values, _COLLECTOR: binds})
    except UndefinedError as exc:
        raise TemplateError(f"template in {field} of task '{task}' cannot render: {exc.message}") from None
    except JinjaError as exc:
        raise TemplateError(f"template in {field} of task '{task}' cannot render: {exc}") from None
    return sql, binds


_TOKEN = re.compile(
    r"""'(?:[^']|'')*'?            # a string literal ('' inside)
      |"(?:[^"]|"")*"?             # a quoted identifier
      |`[^`]*`?                    # a MySQL identifier
      |--[^\n]*                    # a line comment
      |/\*.*?(?:\*/|\Z)            # a block comment
      |(\$[A-Za-z_]*\$).*?(?:\1|\Z)  # a PostgreSQL dollar-quoted body
      |;                           # the end of a statement
    """,
    re.VERBOSE | re.DOTALL,
)


def split_statements(sql: str, binds: Mapping[str, Any] | None = None) -> list[Statement]:
    """The statements of ``sql`` in order (empty ones dropped), each with the binds it uses."""
    binds = binds or {}
    pieces: list[tuple[int, int]] = []
    start = 0
    out: list[str] = []  # sql with '{{ value }}' unquoted: the quotes would make the placeholder text
    done = 0
    for match in _TOKEN.finditer(sql):
        token = match.group(0)
        if token.startswith("'") and _PLACEHOLDER.search(token):
            if not _PLACEHOLDER.fullmatch(token[1:-1]):
                raise TemplateError(
                    f"a template value is inside the SQL string {token!r}: values are bound parameters, "
                    "not text pasted into quotes",
                    hint="write the value alone (day = {{ ds }}, no quotes); build a text in the template "
                    "({{ params.prefix ~ '%' }}) or in SQL (CONCAT(...))",
                )
            out += [sql[done : match.start()], " " + token[1:-1] + " "]
            done = match.end()
    if out:
        return split_statements("".join(out) + sql[done:], binds)
    for match in _TOKEN.finditer(sql):
        if match.group(0) == ";":
            pieces.append((start, match.start()))
            start = match.end()
    pieces.append((start, len(sql)))
    statements = []
    for begin, end in pieces:
        text = _PLACEHOLDER_CAST.sub(r"\1 ", sql[begin:end])  # {{ ds }}::date: SQLAlchemy reads no ':x:' as a bind
        if not _has_code(text):
            continue
        lead = len(text) - len(text.lstrip())
        used = {k: v for k, v in binds.items() if re.search(rf":{k}\b", text)}
        statements.append(Statement(text.strip(), used, sql.count("\n", 0, begin + lead) + 1))
    return statements


def _has_code(text: str) -> bool:
    """Whether ``text`` holds more than blanks and comments."""
    stripped = re.sub(r"--[^\n]*|/\*.*?\*/", "", text, flags=re.DOTALL)
    return bool(stripped.strip())
