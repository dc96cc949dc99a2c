"""Connections and variables in the metadata database (tables ``connections``, ``variables``).

A connection's password and extra are stored as Fernet tokens (:func:`nbflow.vault.encrypt`),
never as text; storing one without ``NBFLOW_FERNET_KEY`` is refused. A variable's value is
its JSON, as a Fernet token when a key is configured (required for a variable whose key looks
secret, :func:`nbflow.vault.is_sensitive`). The api layer (:mod:`nbflow.api.secrets`) is the
only caller; :func:`work_item_bundle` is what the engine puts in every work item.
"""

from __future__ import annotations

import json
from typing import Any, cast

from sqlalchemy import Table, delete, insert, select, update

from nbflow import vault
from nbflow.connections import Connection
from nbflow.store import orm
from nbflow.store.orm import utcnow
from nbflow.store.store import Store

C = cast(Table, orm.ConnectionRow.__table__)
VAR = cast(Table, orm.VariableRow.__table__)
_FIELDS = ("conn_type", "host", "port", "login", "schema", "description")


def put_connection(store: Store, conn: Connection) -> bool:
    """Create or replace connection ``conn.name``; whether it existed. Password and extra are encrypted."""
    row: dict[str, Any] = {k: getattr(conn, k) for k in _FIELDS}
    row["description"] = row["description"] or ""
    row["password"] = (
        vault.encrypt(conn.password, f"the password of connection '{conn.name}'") if conn.password else None
    )
    row["extra"] = (
        vault.encrypt(json.dumps(conn.extra), f"the extra of connection '{conn.name}'") if conn.extra else None
    )

    def write(tx: Any) -> bool:
        now = utcnow()
        found = tx.conn.execute(select(C.c.name).where(C.c.name == conn.name)).first() is not None
        if found:
            tx.conn.execute(update(C).where(C.c.name == conn.name).values(updated_at=now, **row))
        else:
            tx.conn.execute(insert(C).values(name=conn.name, created_at=now, updated_at=now, **row))
        return found

    return bool(store.write(write, what=f"store connection '{conn.name}'"))


def connection_rows(store: Store, name: str | None = None) -> list[dict[str, Any]]:
    """Connection rows as stored (password and extra as tokens), by name; one when ``name`` is given."""
    stmt = select(C).order_by(C.c.name)
    if name is not None:
        stmt = stmt.where(C.c.name == name)
    return [dict(r) for r in store._all(stmt)]


def get_connection(store: Store, name: str) -> Connection | None:
    """Connection ``name`` decrypted (a wrong key: :class:`nbflow.vault.SecretsError` naming it), or None."""
    rows = connection_rows(store, name)
    return vault.decode_connection(rows[0]) if rows else None


def delete_connection(store: Store, name: str) -> bool:
    """Delete connection ``name``; whether it existed."""
    return bool(
        store.write(lambda tx: tx.conn.execute(delete(C).where(C.c.name == name)).rowcount, what="delete connection")
    )


def put_variable(store: Store, key: str, value: Any, description: str = "") -> bool:
    """Create or replace variable ``key`` (any JSON value); whether it existed. Encrypted when a
    key is configured; a sensitive-looking key without one is refused."""
    text = json.dumps(value)
    encrypted = bool(vault.fernet_key()) or vault.is_sensitive(key)
    row = {
        "value": vault.encrypt(text, f"variable '{key}'") if encrypted else text,
        "is_encrypted": encrypted,
        "description": description or "",
    }

    def write(tx: Any) -> bool:
        found = tx.conn.execute(select(VAR.c.key).where(VAR.c.key == key)).first() is not None
        if found:
            tx.conn.execute(update(VAR).where(VAR.c.key == key).values(updated_at=utcnow(), **row))
        else:
            tx.conn.execute(insert(VAR).values(key=key, updated_at=utcnow(), **row))
        return found

    return bool(store.write(write, what=f"store variable '{key}'"))


def variable_rows(store: Store, key: str | None = None) -> list[dict[str, Any]]:
    """Variable rows as stored (``value`` JSON or a token, ``is_encrypted``), by key."""
    stmt = select(VAR).order_by(VAR.c.key)
    if key is not None:
        stmt = stmt.where(VAR.c.key == key)
    return [dict(r) for r in store._all(stmt)]


def get_variable(store: Store, key: str) -> Any:
    """Variable ``key``'s value; ``KeyError`` when there is none."""
    rows = variable_rows(store, key)
    if not rows:
        raise KeyError(key)
    return vault.decode_variable(key, rows[0])


def delete_variable(store: Store, key: str) -> bool:
    """Delete variable ``key``; whether it existed."""
    return bool(
        store.write(lambda tx: tx.conn.execute(delete(VAR).where(VAR.c.key == key)).rowcount, what="delete variable")
    )


def work_item_bundle(store: Store) -> dict[str, Any]:
    """Every stored connection and variable as stored (secrets still Fernet tokens), for work
    items: ``{"connections": {name: row}, "variables": {key: {"value", "is_encrypted"}}}``."""
    conns = {
        r["name"]: {k: r[k] for k in (*_FIELDS, "password", "extra") if k != "description"}
        for r in connection_rows(store)
    }
    variables = {r["key"]: {"value": r["value"], "is_encrypted": r["is_encrypted"]} for r in variable_rows(store)}
    return {"connections": conns, "variables": variables}
