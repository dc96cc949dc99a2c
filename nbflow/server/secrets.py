"""REST handlers of connections and variables (``/nbflow/api/connections``, ``/variables``).

Connections are only ever answered masked (password and sensitive extra fields ``***``, the
URI's password too); a sensitive variable's value is ``***``. Every answer also goes through
the base class's masking of known secrets (:meth:`NbflowHandler.scrub`).
"""

from __future__ import annotations

import tornado.web
from jupyter_server.auth.decorator import authorized

from nbflow import api
from nbflow.server import limits
from nbflow.server.base import NbflowHandler


class ConnectionsHandler(NbflowHandler):
    """``GET /nbflow/api/connections``: stored connections, masked; ``POST`` adds (or replaces) one."""

    body_fields = {
        "name": (str, True),
        "uri": (str, False),
        "conn_type": (str, False),
        "host": (str, False),
        "port": (int, False),
        "login": (str, False),
        "password": (str, False),
        "schema": (str, False),
        "extra": (dict, False),
        "description": (str, False),
    }

    @tornado.web.authenticated
    @authorized
    async def get(self) -> None:
        """Every stored connection (masked)."""
        self.reply({"connections": await self.call(api.list_connections)})

    @tornado.web.authenticated
    @authorized
    async def post(self) -> None:
        """Store a connection from ``uri`` or its fields; 201 with it masked."""
        data = self.body()
        name = limits.text("name", data.pop("name"))
        self.reply(await self.call(api.add_connection, name, **data), status=201)


class ConnectionHandler(NbflowHandler):
    """``GET /nbflow/api/connections/{name}`` (masked), ``DELETE`` it."""

    @tornado.web.authenticated
    @authorized
    async def get(self, name: str) -> None:
        """One connection, masked: stored, or from ``NBFLOW_CONN_<NAME>`` of the server."""
        self.reply(await self.call(api.get_connection, limits.text("name", name)))

    @tornado.web.authenticated
    @authorized
    async def delete(self, name: str) -> None:
        """Delete a stored connection (404 when there is none)."""
        await self.call(api.delete_connection, limits.text("name", name))
        self.reply({"name": name, "deleted": True})


class VariablesHandler(NbflowHandler):
    """``GET /nbflow/api/variables``: stored variables (sensitive values ``***``)."""

    @tornado.web.authenticated
    @authorized
    async def get(self) -> None:
        """Every stored variable."""
        self.reply({"variables": await self.call(api.list_variables)})


class VariableHandler(NbflowHandler):
    """``GET|PUT|DELETE /nbflow/api/variables/{key}``; ``PUT {value, description?}`` sets it."""

    body_fields = {"value": ((str, int, float, bool, list, dict, type(None)), True), "description": (str, False)}

    @tornado.web.authenticated
    @authorized
    async def get(self, key: str) -> None:
        """One variable (a sensitive one's value ``***``)."""
        self.reply(await self.call(api.get_variable, limits.text("key", key)))

    @tornado.web.authenticated
    @authorized
    async def put(self, key: str) -> None:
        """Set a variable to any JSON value."""
        data = self.body()
        limits.text("key", key)
        self.reply(await self.call(api.set_variable, key, data["value"], data.get("description") or ""))

    @tornado.web.authenticated
    @authorized
    async def delete(self, key: str) -> None:
        """Delete a variable (404 when there is none)."""
        await self.call(api.delete_variable, limits.text("key", key))
        self.reply({"key": key, "deleted": True})
