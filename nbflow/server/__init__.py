"""nbflow's jupyter_server extension: the REST API under ``/nbflow/api/`` that the
JupyterLab extension (``extension/``) uses, and the managed scheduler.

Enabled on install by ``etc/jupyter/jupyter_server_config.d/nbflow.json`` (hatch
``shared-data``); every route is behind Jupyter's authentication and the ``nbflow``
authorization resource (see :mod:`nbflow.server.handlers`).

**Managed scheduler.** Unless ``c.NbflowExtension.manage_scheduler = False`` (or
``NBFLOW_MANAGE_SCHEDULER=0``), the server makes sure one ``nbflow scheduler`` serves the
home it shows: at start, and whenever it queues a run, it spawns a detached one when none
holds the lease (:func:`nbflow.api.start_scheduler`; never in the server's own process).
It outlives the server; a second server on the same home finds it and starts none.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from traitlets import Bool
from traitlets.config import LoggingConfigurable


class NbflowExtension(LoggingConfigurable):
    """Settings of the server extension (``c.NbflowExtension.<name>`` in Jupyter's config)."""

    manage_scheduler = Bool(
        True,
        help="Keep one `nbflow scheduler` running for this server's nbflow home: started detached when none holds "
        "the lease (at start and when a run is queued), so scheduled runs go on after JupyterLab closes. "
        "NBFLOW_MANAGE_SCHEDULER=0 switches it off too.",
    ).tag(config=True)

    @property
    def manages(self) -> bool:
        """``manage_scheduler``, unless NBFLOW_MANAGE_SCHEDULER says 0/false/no/off."""
        env = os.environ.get("NBFLOW_MANAGE_SCHEDULER", "").strip().lower()
        return self.manage_scheduler and env not in ("0", "false", "no", "off")


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    """Where jupyter_server finds this extension."""
    return [{"module": "nbflow.server"}]


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    """The prebuilt JupyterLab extension (installed by the wheel's shared-data)."""
    return [{"src": "labextension", "dest": "nbflow-jupyterlab"}]


def _load_jupyter_server_extension(server_app: Any) -> None:
    """Register the API handlers on the server's web application; start the managed scheduler."""
    from nbflow.server.handlers import setup_handlers

    settings = NbflowExtension(parent=server_app)
    cwd = os.getcwd()
    setup_handlers(
        server_app.web_app, root_dir=getattr(server_app, "root_dir", None), manage_scheduler=settings.manages, cwd=cwd
    )
    server_app.log.info("nbflow API available at %snbflow/api/", server_app.web_app.settings.get("base_url", "/"))
    if settings.manages:
        threading.Thread(
            target=_ensure_scheduler, args=(server_app.log, cwd), name="nbflow-scheduler-start", daemon=True
        ).start()


def _ensure_scheduler(log: Any, cwd: str) -> None:
    """Start the managed scheduler unless one serves (in a thread: the database may be slow)."""
    from nbflow import api

    try:
        pid = api.start_scheduler(cwd=cwd)
    except Exception as exc:  # noqa: BLE001 - the server runs without it; the panel says why
        log.warning("nbflow: could not start the managed scheduler: %s", exc)
        return
    if pid is not None:
        log.info("nbflow: started a scheduler (pid %s; log %s)", pid, api.scheduler_log())


# jupyter_server < 2 looked for the un-prefixed name
load_jupyter_server_extension = _load_jupyter_server_extension
