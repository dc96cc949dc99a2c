"""Connections and variables for the front doors (``nbflow connections``/``variables``, the
REST API): plain dicts, secrets masked as ``***`` unless a caller asks for a value itself.

Importing this module plugs the metadata database into :func:`nbflow.connection` and
:func:`nbflow.variable` of this process (after the work item and the environment). Workers
never import it: they get what tasks need with the work item (:mod:`nbflow.vault`).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from nbflow import connections, vault
from nbflow.api.runs import open_store
from nbflow.connections import Connection, ConnectionError_
from nbflow.exceptions import InputError
from nbflow.masking import masked_value
from nbflow.store import Store
from nbflow.store import secrets as stored
from nbflow.vault import MASK, SecretNotFoundError

#: seconds the stored secrets the masker knows of are trusted before being read again
KNOWN_TTL = 5.0


def _store_connection(name: str) -> Connection | None:
    return stored.get_connection(open_store(), name)


def _store_variable(key: str) -> Any:
    return stored.get_variable(open_store(), key)


connections.set_lookup(_store_connection)
vault.set_variable_lookup(_store_variable)


def new_fernet_key() -> str:
    """A fresh key for ``NBFLOW_FERNET_KEY``."""
    return vault.new_key()


# --- connections -------------------------------------------------------------------------------


def masked(conn: Connection, *, source: str = "database") -> dict[str, Any]:
    """A connection as shown anywhere: password ``***``, sensitive extra fields ``***``, a masked URI."""
    extra = {k: MASK if vault.is_sensitive(k) else v for k, v in conn.extra.items()}
    shown = replace(conn, password=MASK if conn.password else None, extra=extra)
    data = shown.to_dict()
    data["uri"] = shown.uri.replace("%2A%2A%2A", MASK)
    data["source"] = source
    return data


def add_connection(
    name: str,
    *,
    uri: str | None = None,
    conn_type: str | None = None,
    host: str | None = None,
    port: int | None = None,
    login: str | None = None,
    password: str | None = None,
    schema: str | None = None,
    extra: Mapping[str, Any] | str | None = None,
    description: str = "",
    store: Store | None = None,
) -> dict[str, Any]:
    """Store connection ``name`` from a URI or from its fields (replacing one of that name);
    returns it masked, with ``replaced``. Password and extra are encrypted (a key is required)."""
    if not name or len(name) > 250:
        raise InputError("name", "a connection needs a name of at most 250 characters")
    if isinstance(extra, str):
        try:
            extra = json.loads(extra)
        except ValueError as exc:
            raise InputError("extra", f"extra is not JSON: {exc}") from None
    if extra is not None and not isinstance(extra, Mapping):
        raise InputError("extra", 'extra must be a JSON object, e.g. \'{"sslmode": "require"}\'')
    if uri:  # fields given beside the URI win (e.g. --password kept out of the URI)
        conn = Connection.from_uri(name, uri)
        given: dict[str, Any] = {
            "conn_type": conn_type,
            "host": host,
            "port": port,
            "login": login,
            "password": password,
        }
        conn = replace(conn, **{k: v for k, v in {**given, "schema": schema}.items() if v is not None})
        if extra:
            conn = replace(conn, extra={**conn.extra, **extra})
    elif conn_type:
        conn = Connection(name, conn_type, host, port, login, password, schema, dict(extra or {}))
    else:
        raise InputError(
            "uri", "give the connection as a URI (--uri type://login:password@host:port/schema) or its type"
        )
    conn = replace(conn, description=description or "")
    existed = stored.put_connection(store or open_store(), conn)
    return {**masked(conn), "replaced": existed}


def list_connections(store: Store | None = None) -> list[dict[str, Any]]:
    """Every stored connection, masked, by name; one this process cannot decrypt (no key, another
    key) is listed with its password ``***``, no extra and the reason in its description."""
    found = []
    for row in stored.connection_rows(store or open_store()):
        try:
            conn = vault.decode_connection(row)
        except vault.SecretsError as exc:
            fields = {k: row[k] for k in ("conn_type", "host", "port", "login", "schema")}
            conn = Connection(row["name"], password=MASK if row["password"] else None, **fields)
            conn = replace(conn, description=f"({exc.message}) {row['description']}".strip())
        vault.mask_connection(conn)
        found.append(masked(conn))
    return found


def get_connection(name: str, store: Store | None = None) -> dict[str, Any]:
    """Connection ``name`` masked: the stored one, else ``NBFLOW_CONN_<NAME>`` (``source`` says which)."""
    conn = stored.get_connection(store or open_store(), name)
    source = "database"
    if conn is None:
        conn, source = connections.from_env(name), "environment"
    if conn is None:
        raise SecretNotFoundError(
            f"no connection named '{name}'", hint=f"add it: nbflow connections add {name} --uri type://..."
        )
    vault.mask_connection(conn)
    return masked(conn, source=source)


def delete_connection(name: str, store: Store | None = None) -> None:
    """Delete stored connection ``name`` (unknown: :class:`SecretNotFoundError`)."""
    if not stored.delete_connection(store or open_store(), name):
        raise SecretNotFoundError(f"no stored connection named '{name}'", hint="nbflow connections list")


def check_connection(name: str) -> tuple[bool, str]:
    """Open connection ``name`` (for a SQLAlchemy type: connect and ``SELECT 1``): (ok, what happened)."""
    from sqlalchemy.dialects import registry
    from sqlalchemy.exc import NoSuchModuleError

    conn = vault.connection(name)
    try:
        registry.load(connections.SQLALCHEMY_DRIVERS.get(conn.conn_type, conn.conn_type).split("+")[0])
    except NoSuchModuleError:
        return False, f"connection '{name}' is a '{conn.conn_type}' connection: nbflow can only test SQL databases"
    try:
        engine = conn.engine(pool_pre_ping=False)
        try:
            with engine.connect() as db:
                from sqlalchemy import text

                db.execute(text("SELECT 1")).scalar()
        finally:
            engine.dispose()
    except ConnectionError_ as exc:
        return False, vault.redact(exc.message, [conn.password or ""])
    except Exception as exc:  # the driver's own error: said as it is, secrets masked
        return False, vault.redact(f"{type(exc).__name__}: {exc}".splitlines()[0], [conn.password or ""])
    return True, f"connection '{name}' ({conn.masked_uri}) answered SELECT 1"


# --- variables ---------------------------------------------------------------------------------


def set_variable(key: str, value: Any, description: str = "", store: Store | None = None) -> dict[str, Any]:
    """Store variable ``key`` (any JSON value); returns it as shown (sensitive: ``***``)."""
    if not key or len(key) > 250:
        raise InputError("key", "a variable needs a key of at most 250 characters")
    existed = stored.put_variable(store or open_store(), key, value, description)
    return {**_shown(key, value, description), "replaced": existed}


def _shown(key: str, value: Any, description: str = "", *, reveal: bool = False) -> dict[str, Any]:
    vault.mask_secret(value, name=key)
    return {
        "key": key,
        "value": value if reveal else masked_value(value, key),
        "sensitive": vault.is_sensitive(key),
        "description": description,
    }


def get_variable(key: str, *, reveal: bool = False, store: Store | None = None) -> dict[str, Any]:
    """Variable ``key`` (stored, else ``NBFLOW_VAR_<KEY>``); a sensitive one's value is ``***``
    unless ``reveal`` (the CLI's ``variables get``)."""
    rows = stored.variable_rows(store or open_store(), key)
    if rows:
        return _shown(key, vault.decode_variable(key, rows[0]), rows[0]["description"], reveal=reveal)
    import os

    if (text := os.environ.get(vault.var_env_name(key))) is not None:
        return {**_shown(key, vault.parse_value(text), reveal=reveal), "source": "environment"}
    raise SecretNotFoundError(f"no variable named '{key}'", hint=f"set it: nbflow variables set {key} VALUE")


def list_variables(store: Store | None = None) -> list[dict[str, Any]]:
    """Every stored variable, sensitive values ``***``, by key."""
    return [
        _shown(r["key"], vault.decode_variable(r["key"], r), r["description"])
        for r in stored.variable_rows(store or open_store())
    ]


def delete_variable(key: str, store: Store | None = None) -> None:
    """Delete variable ``key`` (unknown: :class:`SecretNotFoundError`)."""
    if not stored.delete_variable(store or open_store(), key):
        raise SecretNotFoundError(f"no variable named '{key}'", hint="nbflow variables list")


# --- masking what the front doors show -----------------------------------------------------------

_known_at: dict[str, float] = {}
_known_lock = threading.Lock()


def mask_stored_secrets(store: Store | None = None) -> None:
    """Teach this process's masker the stored secrets (passwords, sensitive extras and
    variables), read at most every :data:`KNOWN_TTL` seconds; with no key, only the environment's."""
    vault.mask_environment()  # NBFLOW_CONN_* of this process
    if not vault.fernet_key():
        return  # nothing stored can be read: the database is not asked
    store = store or open_store()
    with _known_lock:
        if time.monotonic() - _known_at.get(store.url, -KNOWN_TTL) < KNOWN_TTL:
            return
        _known_at[store.url] = time.monotonic()
    for row in stored.connection_rows(store):
        try:
            vault.mask_connection(vault.decode_connection(row))
        except vault.SecretsError:
            continue
    for row in stored.variable_rows(store):
        try:
            vault.mask_secret(vault.decode_variable(row["key"], row), name=row["key"])
        except vault.SecretsError:
            continue


def redact(data: Any) -> Any:
    """``data`` (an answer: dicts, lists, strings) with every known secret as ``***``."""
    if isinstance(data, str):
        return vault.redact(data)
    if isinstance(data, list):
        return [redact(v) for v in data]
    if isinstance(data, dict):
        return {k: redact(v) for k, v in data.items()}
    return data
