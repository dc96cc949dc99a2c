"""``nbflow connections ...`` and ``nbflow variables ...``: thin transports over :mod:`nbflow.api.secrets`."""

from __future__ import annotations

import argparse
import json
from typing import Any, TextIO

CONNECTIONS_EPILOG = """\
examples:
  nbflow connections key                                  print a new NBFLOW_FERNET_KEY (needed to store secrets)
  nbflow connections add warehouse --uri postgresql://etl:s3cret@db.example.com:5432/dw
  nbflow connections add shop --type mysql --host 127.0.0.1 --port 3306 --login root --schema shop
  nbflow connections add api --type http --host api.example.com --extra '{"api_key": "abc123"}'
  nbflow connections list                                 every stored connection, passwords as ***
  nbflow connections get warehouse                        one connection (stored, or $NBFLOW_CONN_WAREHOUSE)
  nbflow connections test warehouse                       connect and SELECT 1
  nbflow connections delete warehouse

In tasks and notebooks: nbflow.connection("warehouse").engine(), .host, .uri; in templates
{{ conn.warehouse.host }}. Without the database: export NBFLOW_CONN_WAREHOUSE=postgresql://...
Passwords and extras are stored encrypted with NBFLOW_FERNET_KEY (the same key on the server,
the scheduler and every worker) and shown as *** everywhere.
"""

VARIABLES_EPILOG = """\
examples:
  nbflow variables set threshold 0.75                     a JSON value (a number)
  nbflow variables set regions '["eu", "us"]'             a list
  nbflow variables set greeting hello                     not JSON: stored as the string "hello"
  nbflow variables set api_token abc123                   a sensitive key (token, password, secret...): masked, needs a key
  nbflow variables get threshold
  nbflow variables list                                   sensitive values as ***
  nbflow variables delete threshold

In tasks and notebooks: nbflow.variable("threshold", default=0.5); in templates {{ var.threshold }}.
Without the database: export NBFLOW_VAR_THRESHOLD=0.75
"""


def _table(rows: list[list[Any]], headers: list[str], out: TextIO) -> None:
    from nbflow.cli.commands import _table as table

    table(rows, headers, out)


def cmd_connections_add(args: argparse.Namespace, out: TextIO) -> int:
    from nbflow import api

    if not args.uri and not args.type:
        out.write("give --uri type://login:password@host:port/schema, or --type (and --host, --login ...)\n")
        return 2
    shown = api.add_connection(
        args.name,
        uri=args.uri,
        conn_type=args.type,
        host=args.host,
        port=args.port,
        login=args.login,
        password=args.password,
        schema=args.schema,
        extra=args.extra,
        description=args.description or "",
    )
    out.write(f"{'replaced' if shown['replaced'] else 'added'} connection '{args.name}': {shown['uri']}\n")
    return 0


def cmd_connections_list(args: argparse.Namespace, out: TextIO) -> int:
    from nbflow import api

    rows = api.list_connections()
    if not rows:
        out.write("no stored connections (nbflow connections add NAME --uri ...)\n")
        return 0
    _table(
        [[c["name"], c["conn_type"], c["uri"], c["description"]] for c in rows],
        ["name", "type", "uri", "description"],
        out,
    )
    return 0


def cmd_connections_get(args: argparse.Namespace, out: TextIO) -> int:
    from nbflow import api

    conn = api.get_connection(args.name)
    fields = (
        "name",
        "conn_type",
        "host",
        "port",
        "login",
        "password",
        "schema",
        "extra",
        "description",
        "uri",
        "source",
    )
    for field in fields:
        value = conn[field]
        out.write(f"{field:<12} {json.dumps(value) if isinstance(value, dict) else ('' if value is None else value)}\n")
    return 0


def cmd_connections_delete(args: argparse.Namespace, out: TextIO) -> int:
    from nbflow import api

    api.delete_connection(args.name)
    out.write(f"deleted connection '{args.name}'\n")
    return 0


def cmd_connections_test(args: argparse.Namespace, out: TextIO) -> int:
    from nbflow import api

    ok, message = api.check_connection(args.name)
    out.write(("OK: " if ok else "FAILED: ") + message + "\n")
    return 0 if ok else 1


def cmd_connections_key(args: argparse.Namespace, out: TextIO) -> int:
    from nbflow import api

    out.write(api.new_fernet_key() + "\n")
    return 0


def cmd_variables_set(args: argparse.Namespace, out: TextIO) -> int:
    from nbflow import api, vault

    shown = api.set_variable(args.key, vault.parse_value(args.value), args.description or "")
    out.write(f"{'replaced' if shown['replaced'] else 'set'} variable '{args.key}' = {json.dumps(shown['value'])}\n")
    return 0


def cmd_variables_get(args: argparse.Namespace, out: TextIO) -> int:
    from nbflow import api

    value = api.get_variable(args.key, reveal=True)["value"]
    out.write((value if isinstance(value, str) else json.dumps(value)) + "\n")
    return 0


def cmd_variables_list(args: argparse.Namespace, out: TextIO) -> int:
    from nbflow import api

    rows = api.list_variables()
    if not rows:
        out.write("no stored variables (nbflow variables set KEY VALUE)\n")
        return 0
    _table([[v["key"], json.dumps(v["value"]), v["description"]] for v in rows], ["key", "value", "description"], out)
    return 0


def cmd_variables_delete(args: argparse.Namespace, out: TextIO) -> int:
    from nbflow import api

    api.delete_variable(args.key)
    out.write(f"deleted variable '{args.key}'\n")
    return 0


def register(sub: Any) -> None:
    """Add ``connections`` and ``variables`` with their sub-commands to ``sub``."""
    raw = argparse.RawDescriptionHelpFormatter
    conns = sub.add_parser(
        "connections",
        help="named databases and services tasks open, passwords encrypted (add, list, get, test, delete, key)",
        description="Connections in Airflow's URI form, stored in the metadata database with the password and "
        "extra encrypted (NBFLOW_FERNET_KEY), or given as NBFLOW_CONN_<NAME>=URI in the environment.",
        epilog=CONNECTIONS_EPILOG,
        formatter_class=raw,
    ).add_subparsers(dest="connections_command", metavar="COMMAND", required=True)
    p = conns.add_parser(
        "add", help="store a connection (replacing one of that name)", epilog=CONNECTIONS_EPILOG, formatter_class=raw
    )
    p.add_argument("name", help="the name tasks open it by: nbflow.connection(NAME)")
    p.add_argument("--uri", help="type://login:password@host:port/schema?extra=value (e.g. postgresql://me:pw@db/dw)")
    p.add_argument("--type", help="the connection type without --uri: postgresql, mysql, sqlite, http ...")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--login")
    p.add_argument("--password", help="stored encrypted; shown as *** everywhere")
    p.add_argument("--schema", help="the database (the URI's path)")
    p.add_argument("--extra", metavar="JSON", help='more fields as a JSON object, e.g. \'{"sslmode": "require"}\'')
    p.add_argument("--description")
    p.set_defaults(func=cmd_connections_add)
    p = conns.add_parser("list", help="every stored connection (passwords as ***)")
    p.set_defaults(func=cmd_connections_list)
    p = conns.add_parser("get", help="one connection, masked (stored, or from NBFLOW_CONN_<NAME>)")
    p.add_argument("name")
    p.set_defaults(func=cmd_connections_get)
    p = conns.add_parser("delete", help="delete a stored connection")
    p.add_argument("name")
    p.set_defaults(func=cmd_connections_delete)
    p = conns.add_parser("test", help="open a connection (SQL databases: connect and SELECT 1); exit 1 if it fails")
    p.add_argument("name")
    p.set_defaults(func=cmd_connections_test)
    p = conns.add_parser("key", help="print a new Fernet key for NBFLOW_FERNET_KEY")
    p.set_defaults(func=cmd_connections_key)

    variables = sub.add_parser(
        "variables",
        help="named JSON values tasks read with nbflow.variable (set, get, list, delete)",
        description="Variables: JSON values in the metadata database (encrypted when NBFLOW_FERNET_KEY is set; "
        "required for keys that look secret), or NBFLOW_VAR_<KEY> in the environment.",
        epilog=VARIABLES_EPILOG,
        formatter_class=raw,
    ).add_subparsers(dest="variables_command", metavar="COMMAND", required=True)
    p = variables.add_parser("set", help="store a variable", epilog=VARIABLES_EPILOG, formatter_class=raw)
    p.add_argument("key")
    p.add_argument("value", help='JSON (0.75, true, [1, 2], {"a": 1}), or any other text as a string')
    p.add_argument("--description")
    p.set_defaults(func=cmd_variables_set)
    p = variables.add_parser("get", help="print a variable's value (JSON; a string as it is)")
    p.add_argument("key")
    p.set_defaults(func=cmd_variables_get)
    p = variables.add_parser("list", help="every stored variable (sensitive values as ***)")
    p.set_defaults(func=cmd_variables_list)
    p = variables.add_parser("delete", help="delete a variable")
    p.add_argument("key")
    p.set_defaults(func=cmd_variables_delete)
