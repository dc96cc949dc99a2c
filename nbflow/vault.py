"""Secrets inside a task: Fernet encryption, the connections and variables a work item carries,
``nbflow.connection`` / ``nbflow.variable``, and the masker that writes ``***`` for secrets.

**Encryption.** Passwords and extras of stored connections (and variable values) are Fernet
tokens (``cryptography``) under the key ``NBFLOW_FERNET_KEY``. Nothing secret is stored without
a key; a wrong key is an error naming what could not be decrypted (never ``InvalidToken``).

**Work items carry the store's rows as stored**: the driver reads the ``connections`` and
``variables`` rows once per run (tokens, never decrypted there: the driver needs no key) and
puts them in the run context of every work item (``context["secrets"]``). A worker binds them
for the attempt (:func:`carry`) and decrypts only what the task asks for, with its own
``NBFLOW_FERNET_KEY``: on a Dask cluster without TLS, secrets cross the network encrypted.
A notebook's kernel gets them through a file only its user can read, deleted when the attempt ends.

**Lookup order** (``nbflow.connection(name)``, ``nbflow.variable(key)``): what the work item
carries, then ``NBFLOW_CONN_<NAME>`` / ``NBFLOW_VAR_<KEY>``, then the metadata database when
the process has one (the api layer plugs it in with :func:`nbflow.connections.set_lookup`
and :func:`set_variable_lookup`).

**Masking** follows Airflow's secrets masker: every connection password (also URL-encoded, so
inside a URI), the extra fields and the variables whose name contains a sensitive word
(:data:`SENSITIVE_WORDS`) are replaced by ``***`` wherever nbflow writes or shows text: task
logs (on write, and the whole log file when the attempt ends, for what subprocesses and kernels
wrote), output notebooks, REST answers. Airflow masks a secret once a task opens it; nbflow
masks every secret a work item carries (the kernel opens them in another process).
"""

from __future__ import annotations

import functools
import json
import os
import tempfile
import threading
from collections.abc import Callable, Mapping
from typing import Any

from nbflow import connections
from nbflow.config import get_settings
from nbflow.connections import Connection, ConnectionError_
from nbflow.exceptions import NbflowError
from nbflow.masking import MASK, is_sensitive, mask_secret, redact, redact_each, redact_notebook, scrub_files

__all__ = [
    "MASK",
    "SecretNotFoundError",
    "SecretsError",
    "connection",
    "decrypt",
    "encrypt",
    "is_sensitive",
    "mask_secret",
    "redact",
    "redact_each",
    "redact_notebook",
    "scrub_files",
    "variable",
]

KEY_ENV = "NBFLOW_FERNET_KEY"
VAR_PREFIX = "NBFLOW_VAR_"
MAKE_KEY = (
    'make one with: nbflow connections key  (or python -c "from cryptography.fernet import Fernet; '
    'print(Fernet.generate_key().decode())"), then export NBFLOW_FERNET_KEY=<it> for the CLI, '
    "the scheduler, the server and every worker"
)


class SecretsError(NbflowError):
    """A secret cannot be stored or read: no key, a wrong key, an unknown variable."""


class SecretNotFoundError(SecretsError):
    """No connection or variable of that name (the REST API answers 404)."""


# --- Fernet ------------------------------------------------------------------------------------


def new_key() -> str:
    """A fresh Fernet key (url-safe base64 of 32 bytes)."""
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode()


def fernet_key() -> str | None:
    """The configured key: ``$NBFLOW_FERNET_KEY``, else the ``fernet_key`` setting."""
    return os.environ.get(KEY_ENV) or get_settings().fernet_key or None


def _fernet(what: str, doing: str) -> Any:
    from cryptography.fernet import Fernet

    key = fernet_key()
    if not key:
        raise SecretsError(f"cannot {doing} {what}: no NBFLOW_FERNET_KEY is set", hint=MAKE_KEY)
    try:
        return Fernet(key.encode())
    except ValueError:
        raise SecretsError(
            f"cannot {doing} {what}: NBFLOW_FERNET_KEY is not a Fernet key (32 url-safe base64-encoded bytes)",
            hint=MAKE_KEY,
        ) from None


def encrypt(text: str, what: str) -> str:
    """``text`` as a Fernet token; ``what`` ("the password of connection 'db'") names it in errors."""
    return str(_fernet(what, "encrypt").encrypt(text.encode()).decode())


def decrypt(token: str, what: str) -> str:
    """The text of a Fernet token; a wrong key raises :class:`SecretsError` naming ``what``."""
    from cryptography.fernet import InvalidToken

    try:
        return str(_fernet(what, "decrypt").decrypt(token.encode()).decode())
    except InvalidToken:
        raise SecretsError(
            f"cannot decrypt {what}: NBFLOW_FERNET_KEY is not the key it was encrypted with",
            hint="set the key the secret was stored with (the same on the server, the scheduler and every "
            "worker), or store the secret again under this key",
        ) from None


# --- rows as stored <-> plain values -----------------------------------------------------------


def decode_connection(row: Mapping[str, Any]) -> Connection:
    """A stored connection row (password and extra as Fernet tokens) as a :class:`Connection`."""
    name = row["name"]
    password = decrypt(row["password"], f"the password of connection '{name}'") if row.get("password") else None
    extra = json.loads(decrypt(row["extra"], f"the extra of connection '{name}'")) if row.get("extra") else {}
    fields: dict[str, Any] = {k: row.get(k) for k in ("conn_type", "host", "port", "login", "schema")}
    return Connection(name=name, password=password, extra=extra, description=row.get("description") or "", **fields)


def decode_variable(key: str, row: Mapping[str, Any]) -> Any:
    """A stored variable's value (``value`` JSON, or a Fernet token of it when ``is_encrypted``)."""
    text = row["value"]
    if row.get("is_encrypted"):
        text = decrypt(text, f"variable '{key}'")
    return json.loads(text)


def parse_value(text: str) -> Any:
    """A variable given as text: JSON when it parses, else the string itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text


# --- the masker --------------------------------------------------------------------------------


def mask_connection(conn: Connection) -> None:
    """Mask a connection's password and its sensitive extra fields."""
    if conn.password:
        mask_secret(conn.password)
    mask_secret(conn.extra, name="extra")


# --- what a work item carries ------------------------------------------------------------------

_local = threading.local()
_process_bundle: dict[str, Any] | None = None


def carry(bundle: Mapping[str, Any] | None, *, process_wide: bool = False) -> None:
    """Bind the connections and variables a work item carries (rows as stored) for this
    thread (or this process: a kernel); ``None`` forgets them and removes the kernel's file.
    Every secret in them that this process can decrypt is masked from now on."""
    global _process_bundle
    if bundle is None:
        for path in getattr(_local, "files", []):
            try:
                os.unlink(path)
            except OSError:
                pass
        _local.bundle, _local.files = None, []
        return
    bundle = {"connections": dict(bundle.get("connections", {})), "variables": dict(bundle.get("variables", {}))}
    if process_wide:
        _process_bundle = bundle
    else:
        _local.bundle = bundle
    _mask_carried(bundle)


def carry_file(path: str) -> None:
    """In a kernel: bind what the attempt's work item carries, from the file the worker wrote."""
    with open(path, encoding="utf-8") as fh:
        carry(json.load(fh), process_wide=True)


def carried() -> dict[str, Any] | None:
    """The bundle bound for this thread (or process), if any."""
    return getattr(_local, "bundle", None) or _process_bundle


def kernel_source() -> str:
    """Code for a kernel's hidden first cell that binds this thread's bundle in the kernel
    (through a file readable by this user only, removed by :func:`carry` ``(None)``)."""
    bundle = carried()
    if not bundle or not (bundle["connections"] or bundle["variables"]):
        return "_nbflow.vault.carry({}, process_wide=True)"  # in a run: never the store, from a kernel
    fd, path = tempfile.mkstemp(prefix="nbflow-secrets-", suffix=".json")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(bundle, fh)
    _local.files = [*getattr(_local, "files", []), path]
    return f"_nbflow.vault.carry_file({path!r})"


#: what the masker has been taught already (environment entries, carried rows as stored): every
#: attempt carries its run's rows, and decrypting them again per attempt would cost each task start
_masked: set[tuple[str, str, str]] = set()


def mask_environment() -> None:
    """Mask the passwords of this process's ``NBFLOW_CONN_<NAME>`` connections and sensitive ``NBFLOW_VAR_``s."""
    for env, text in os.environ.items():
        if not env.startswith((connections.ENV_PREFIX, VAR_PREFIX)) or ("env", env, text) in _masked:
            continue
        _masked.add(("env", env, text))
        try:
            if env.startswith(connections.ENV_PREFIX):
                mask_connection(Connection.from_uri(env, text))
            else:
                mask_secret(parse_value(text), name=env[len(VAR_PREFIX) :])
        except ConnectionError_:
            pass


def _mask_carried(bundle: Mapping[str, Any]) -> None:
    """Mask what a bundle carries (each row once per process, as stored: a changed row is new)."""
    mask_environment()
    for name, row in bundle["connections"].items():
        _mask_once("connection", name, row, functools.partial(_mask_connection_row, name, row))
    for key, row in bundle["variables"].items():  # a sensitive key's value; any value's sensitive fields
        _mask_once("variable", key, row, functools.partial(_mask_variable_row, key, row))


def _mask_once(kind: str, name: str, row: Mapping[str, Any], mask: Callable[[], None]) -> None:
    seen = (kind, name, json.dumps(row, sort_keys=True, default=str))
    if seen in _masked:
        return
    try:
        mask()
    except (SecretsError, ValueError):
        return  # no key, another key: the task hears of it when it opens the connection
    _masked.add(seen)


def _mask_connection_row(name: str, row: Mapping[str, Any]) -> None:
    mask_connection(_decode_connection_row(name, row))


def _mask_variable_row(key: str, row: Mapping[str, Any]) -> None:
    mask_secret(decode_variable(key, row), name=key)


def _decode_connection_row(name: str, row: Mapping[str, Any]) -> Connection:
    return decode_connection({**row, "name": name})


def _carried_connection(name: str) -> Connection | None:
    bundle = carried()
    row = bundle["connections"].get(name) if bundle else None
    return None if row is None else _decode_connection_row(name, row)


connections.set_lookup(_carried_connection, first=True)


# --- inside tasks ------------------------------------------------------------------------------

_variable_lookups: list[Callable[[str], Any]] = []
_MISSING: Any = object()


def set_variable_lookup(lookup: Callable[[str], Any]) -> None:
    """Add a place variables are found after the environment (the metadata database):
    ``lookup(key)`` returns the value or raises ``KeyError``."""
    if lookup not in _variable_lookups:
        _variable_lookups.append(lookup)


def connection(name: str) -> Connection:
    """Connection ``name`` (``nbflow.connection``): from the work item, ``NBFLOW_CONN_<NAME>``,
    or the metadata database; its password is masked in logs from now on."""
    conn = connections.connection(name)
    mask_connection(conn)
    return conn


def var_env_name(key: str) -> str:
    """The environment variable holding variable ``key``: ``NBFLOW_VAR_`` + its key in upper case."""
    return VAR_PREFIX + key.upper().replace("-", "_").replace(".", "_")


def variable(key: str, default: Any = _MISSING) -> Any:
    """Variable ``key`` (``nbflow.variable``), a JSON value: from the work item, ``NBFLOW_VAR_<KEY>``
    (JSON, or a plain string), or the metadata database; else ``default``, else an error."""
    value = _find_variable(key)
    if value is _MISSING:
        if default is not _MISSING:
            return default
        raise SecretNotFoundError(
            f"no variable named '{key}' (looked in the work item, ${var_env_name(key)}"
            + (" and the metadata database)" if _variable_lookups else ")"),
            hint=f"set it: nbflow variables set {key} VALUE, or export {var_env_name(key)}=VALUE, "
            f"or give a default: nbflow.variable({key!r}, default=...)",
        )
    mask_secret(value, name=key)  # all of it for a sensitive key, else its sensitive fields (a dict's "password")
    return value


def _find_variable(key: str) -> Any:
    bundle = carried()
    if bundle and key in bundle["variables"]:
        return decode_variable(key, bundle["variables"][key])
    if (text := os.environ.get(var_env_name(key))) is not None:
        return parse_value(text)
    for lookup in _variable_lookups:
        try:
            return lookup(key)
        except KeyError:
            continue
    return _MISSING


# --- templates: {{ conn.NAME.host }}, {{ var.KEY }} ----------------------------------------------


class _Namespace:
    """``conn`` / ``var`` in a template: an attribute per connection or variable."""

    def __init__(self, kind: str):
        self._kind = kind

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return self[name]

    def __getitem__(self, name: str) -> Any:
        from jinja2.exceptions import UndefinedError

        try:
            return connection(name) if self._kind == "conn" else variable(name)
        except (ConnectionError_, SecretsError) as exc:
            undefined = UndefinedError(f"{self._kind}.{name}: {exc.message}")
            undefined.hint = exc.hint  # type: ignore[attr-defined]  # the template error's hint: the fix for this
            raise undefined from None


def template_namespace(kind: str) -> Callable[[Mapping[str, Any]], Any]:
    """What :func:`nbflow.templating.register_name` takes for ``conn`` and ``var``."""
    return lambda values: _Namespace(kind)
