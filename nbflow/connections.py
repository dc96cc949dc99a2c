"""Connections: a named database or service a task opens, without its password in the pipeline.

A :class:`Connection` is plain data (type, host, port, login, password, schema, extra) with
Airflow's URI form (``postgresql://user:pass@host:5432/db?sslmode=require``): the URI's scheme
is the type, its path the schema, its query the extra fields. Where a connection comes from,
first found wins:

1. what the work item of the running task carries (workers need no database);
2. the environment, ``NBFLOW_CONN_<NAME>`` holding a URI (as Airflow's ``AIRFLOW_CONN_``);
3. the metadata database (``nbflow connections add``; password and extra encrypted).

This module knows the first two; the store half plugs in through :func:`set_lookup`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

from nbflow.exceptions import NbflowError

__all__ = ["Connection", "ConnectionError_", "connection", "env_name", "from_env", "masked_url", "set_lookup"]

ENV_PREFIX = "NBFLOW_CONN_"
#: a connection type's SQLAlchemy driver when the URI names none (``postgresql`` -> psycopg 3)
SQLALCHEMY_DRIVERS = {
    "postgresql": "postgresql+psycopg",
    "postgres": "postgresql+psycopg",
    "mysql": "mysql+pymysql",
    "mariadb": "mysql+pymysql",
}


class ConnectionError_(NbflowError):
    """A connection is unknown, malformed or cannot be opened (named so it does not shadow the builtin)."""


@dataclass(frozen=True)
class Connection:
    """A named connection's fields. ``extra`` holds what the type needs beyond the URI's parts."""

    name: str
    conn_type: str
    host: str | None = None
    port: int | None = None
    login: str | None = None
    password: str | None = None
    schema: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    description: str = ""

    @classmethod
    def from_uri(cls, name: str, uri: str) -> Connection:
        """Parse Airflow's URI form; a bad URI raises naming the connection and the fix."""
        parts = urlsplit(uri.strip())
        if not parts.scheme:
            raise ConnectionError_(
                f"connection '{name}': {masked_url(uri)!r} is not a URI (no type:// in front)",
                hint="write it as type://login:password@host:port/schema, e.g. postgresql://me:pw@db:5432/warehouse",
            )
        try:
            port = parts.port
        except ValueError:
            raise ConnectionError_(
                f"connection '{name}': the port of {masked_url(uri)!r} is not a number",
                hint="write host:5432, or leave the port out",
            ) from None
        path = unquote(parts.path[1:]) if parts.path.startswith("/") else unquote(parts.path)
        return cls(
            name=name,
            conn_type=parts.scheme,
            host=unquote(parts.hostname) if parts.hostname else None,
            port=port,
            login=unquote(parts.username) if parts.username is not None else None,
            password=unquote(parts.password) if parts.password is not None else None,
            schema=path or None,
            extra=dict(parse_qsl(parts.query, keep_blank_values=True)),
        )

    @property
    def uri(self) -> str:
        """The connection as a URI, password included (never print it: :attr:`masked_uri`)."""
        return self._uri(self.password)

    def __repr__(self) -> str:  # never the password (a print, a traceback's locals, a log line)
        return f"Connection({self.name!r}, {self.masked_uri!r})"

    @property
    def masked_uri(self) -> str:
        """The URI with the password as ``***``: safe to show."""
        return self._uri("***" if self.password else None)

    def _uri(self, password: str | None) -> str:
        auth = ""
        if self.login is not None or password is not None:
            auth = quote(self.login or "", safe="")
            if password is not None:
                auth += ":" + (password if password == "***" else quote(password, safe=""))
            auth += "@"
        host = self.host or ""
        if self.port is not None:
            host += f":{self.port}"
        path = "/" + quote(self.schema, safe="/") if self.schema else ""
        query = "?" + urlencode({k: v if isinstance(v, str) else json.dumps(v) for k, v in self.extra.items()})
        return f"{self.conn_type}://{auth}{host}{path}{query if self.extra else ''}"

    @property
    def sqlalchemy_url(self) -> str:
        """The URI with the SQLAlchemy driver nbflow uses for this type (psycopg, PyMySQL)."""
        driver = SQLALCHEMY_DRIVERS.get(self.conn_type, self.conn_type)
        return driver + self.uri[len(self.conn_type) :]

    def engine(self, **options: Any) -> Any:
        """A SQLAlchemy engine for this connection (``options`` go to ``create_engine``)."""
        from sqlalchemy import create_engine
        from sqlalchemy.exc import ArgumentError, NoSuchModuleError

        try:
            return create_engine(self.sqlalchemy_url, **options)
        except (NoSuchModuleError, ArgumentError, ImportError) as exc:
            raise ConnectionError_(
                f"connection '{self.name}' ({self.conn_type}) cannot be opened with SQLAlchemy: {exc}",
                hint="a database type needs its driver installed: pip install 'nbflow[postgres]' or 'nbflow[mysql]'",
            ) from None

    def to_dict(self, *, masked: bool = False) -> dict[str, Any]:
        """The fields as a dict (``masked``: the password as ``***``)."""
        data = asdict(self)
        if masked and data["password"]:
            data["password"] = "***"
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Connection:
        """The inverse of :meth:`to_dict` (unmasked)."""
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


def masked_url(uri: str) -> str:
    """``uri`` with any password in it as ``***`` (a broker's URL, a bad connection URI in an error)."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    return uri.replace(":" + parts.password + "@", ":***@", 1)


def env_name(name: str) -> str:
    """The environment variable holding connection ``name``: ``NBFLOW_CONN_`` + its name in upper case."""
    return ENV_PREFIX + name.upper().replace("-", "_").replace(".", "_")


def from_env(name: str, environ: Mapping[str, str] | None = None) -> Connection | None:
    """Connection ``name`` from ``NBFLOW_CONN_<NAME>``, or None when that is not set."""
    value = (os.environ if environ is None else environ).get(env_name(name))
    return None if value is None else Connection.from_uri(name, value)


#: the lookups after the environment, in order (the store's, plugged in by the api layer)
_LOOKUPS: list[Callable[[str], Connection | None]] = []
#: the lookups before the environment (what the running task's work item carries: nbflow.vault)
_FIRST: list[Callable[[str], Connection | None]] = []


def set_lookup(lookup: Callable[[str], Connection | None], *, first: bool = False) -> None:
    """Add a place connections are found after the environment (the metadata database), or
    before it (``first``: the work item's connections, which :mod:`nbflow.vault` plugs in)."""
    lookups = _FIRST if first else _LOOKUPS
    if lookup not in lookups:
        lookups.append(lookup)


def connection(name: str) -> Connection:
    """Connection ``name``, from the environment or the places :func:`set_lookup` added.

    Raises :class:`ConnectionError_` naming where it looked and how to add it. In a task,
    ``nbflow.connection`` (:func:`nbflow.vault.connection`) also masks its password in logs.
    """
    found = None
    for lookup in _FIRST:
        found = found or lookup(name)
    found = found or from_env(name)
    for lookup in _LOOKUPS:
        if found is not None:
            break
        found = lookup(name)
    if found is None:
        raise ConnectionError_(
            f"no connection named '{name}' (looked in ${env_name(name)}"
            + (" and the metadata database)" if _LOOKUPS else ")"),
            hint=f"add it: nbflow connections add {name} --uri type://login:password@host:port/schema, "
            f"or export {env_name(name)}=type://...",
        )
    return found
