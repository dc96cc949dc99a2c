"""REST handlers of assets (runs triggered by data): ``GET /nbflow/api/assets`` and
``GET /nbflow/api/assets/{name}``, transports over :func:`nbflow.api.list_assets` and
:func:`nbflow.api.asset_details`."""

from __future__ import annotations

import tornado.web
from jupyter_server.auth.decorator import authorized

from nbflow import api
from nbflow.server import limits
from nbflow.server.base import NbflowHandler


class AssetsHandler(NbflowHandler):
    """``GET /nbflow/api/assets``: every asset with producers, consumers, last update, pending consumers."""

    @tornado.web.authenticated
    @authorized
    async def get(self) -> None:
        """List assets."""
        self.reply({"assets": await self.call(api.list_assets)})


class AssetHandler(NbflowHandler):
    """``GET /nbflow/api/assets/{name}?limit=N``: one asset with its newest updates (each with its
    producing run and the runs it triggered)."""

    @tornado.web.authenticated
    @authorized
    async def get(self, name: str) -> None:
        """One asset's lineage; 404 for an unknown name."""
        limits.text("name", name)
        limit = self.int_arg("limit", 50, minimum=1, maximum=500)
        self.reply(await self.call(api.asset_details, name, limit=limit))
