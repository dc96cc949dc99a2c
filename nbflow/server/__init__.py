"""nbflow's jupyter_server extension: the REST API under ``/nbflow/api/`` that the
JupyterLab extension (``extension/``) uses.

Enabled on install by ``etc/jupyter/jupyter_server_config.d/nbflow.json`` (hatch
``shared-data``); every route is behind Jupyter's authentication and the ``nbflow``
authorization resource (see :mod:`nbflow.server.handlers`).
"""

from __future__ import annotations

from typing import Any


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    """Where jupyter_server finds this extension."""
    return [{"module": "nbflow.server"}]


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    """The prebuilt JupyterLab extension (installed by the wheel's shared-data)."""
    return [{"src": "labextension", "dest": "nbflow-jupyterlab"}]


def _load_jupyter_server_extension(server_app: Any) -> None:
    """Register the API handlers on the server's web application."""
    from nbflow.server.handlers import setup_handlers

    setup_handlers(server_app.web_app, root_dir=getattr(server_app, "root_dir", None))
    server_app.log.info("nbflow API available at %snbflow/api/", server_app.web_app.settings.get("base_url", "/"))


# jupyter_server < 2 looked for the un-prefixed name
load_jupyter_server_extension = _load_jupyter_server_extension
