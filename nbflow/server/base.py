"""The base of every REST handler: Jupyter's authentication, bounded bodies, facade calls in a
thread with a time limit, errors mapped to statuses, answers without server paths.

The facade's calls are blocking (SQL), so they run in the server's thread pool
(:meth:`NbflowHandler.call`); errors map to statuses in one table,
:data:`nbflow.server.errors.STATUS`; what a request may carry is bounded in
:mod:`nbflow.server.limits`; answers name files relative to the Jupyter root
(:mod:`nbflow.server.paths`).
"""

from __future__ import annotations

import asyncio
import functools
import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import tornado.httputil
import tornado.ioloop
import tornado.web
from jupyter_server.base.handlers import APIHandler

from nbflow import api
from nbflow.config import get_settings
from nbflow.server import limits
from nbflow.server.errors import ApiError, database_down, json_default, to_api_error
from nbflow.server.paths import PathScrubber

#: seconds an API call may take before the request answers 503 (a locked or unreachable database)
CALL_TIMEOUT = 30.0


_learning = threading.Lock()  # held while one thread reads the stored secrets


def _learn_stored_secrets() -> None:
    """Teach the masker the stored secrets (re-read at most every few seconds; log reads do it
    too). One read at a time: answers come faster than a hung database, and each read waiting
    on it would hold a thread and a connection."""
    if not _learning.acquire(blocking=False):
        return
    try:
        api.mask_stored_secrets()
    except Exception:  # noqa: BLE001 - a database outage or a wrong key: the secrets known so far still mask
        pass
    finally:
        _learning.release()


@tornado.web.stream_request_body
class NbflowHandler(APIHandler):
    """Base: bounded bodies, JSON answers, facade calls in a thread, errors mapped to statuses."""

    auth_resource = "nbflow"
    #: the body's fields: {name: (JSON types, required)}; handlers that take a body set it
    body_fields: dict[str, tuple[type | tuple[type, ...], bool]] = {}

    # ignore[override]: APIHandler.prepare's own signature, which jupyter_server also marks ignore[override]
    async def prepare(self) -> None:  # type: ignore[override]
        """Jupyter's checks (authentication, XSRF), then refuse a body over the size limit
        before reading it (the body is streamed to :meth:`data_received` after this)."""
        await super().prepare()
        self._body = limits.BodyReader(get_settings().max_body_bytes, self.request.headers.get("Content-Length"))

    def data_received(self, chunk: bytes) -> None:
        """A piece of the body (kept up to the limit)."""
        self._body.feed(chunk)

    def body(self) -> dict[str, Any]:
        """The JSON object body checked against :attr:`body_fields` (400/413 otherwise)."""
        return self._body.json_object(self.body_fields)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """Every error as ``{error, message, ...}`` (:class:`ApiError` bodies; Jupyter's own
        403s and tornado's 405s get the same shape), never a traceback."""
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if not isinstance(exc, ApiError):
            message = exc.log_message if isinstance(exc, tornado.web.HTTPError) and exc.log_message else None
            exc = ApiError(status_code, message or tornado.httputil.responses.get(status_code, "error"))
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(self.scrub(exc.body), default=json_default))

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        """Tracebacks of bugs are logged by :func:`to_api_error`; expected errors are not."""
        if not isinstance(value, ApiError):
            super().log_exception(typ, value, tb)

    async def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run a blocking facade call in the thread pool; map its errors (see :mod:`.errors`)."""
        loop = tornado.ioloop.IOLoop.current()
        try:
            return await asyncio.wait_for(
                loop.run_in_executor(None, functools.partial(fn, *args, **kwargs)), CALL_TIMEOUT
            )
        except TimeoutError:
            raise database_down(f"no answer within {CALL_TIMEOUT:.0f} s") from None
        except Exception as exc:
            raise to_api_error(exc, context=f"{self.request.method} {self.request.path}") from exc

    def reply(self, data: Any, status: int = 200) -> None:
        """Finish with JSON (paths relative to the Jupyter root, see :class:`PathScrubber`)."""
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(self.scrub(data), default=json_default))

    def scrub(self, data: Any) -> Any:
        """``data`` with the server's absolute paths made relative (or named by their setting) and
        every secret this process knows of (connections and variables it read, the log reads'
        stored secrets, ``NBFLOW_CONN_*``) as ``***``."""
        tornado.ioloop.IOLoop.current().run_in_executor(None, _learn_stored_secrets)  # never blocks the loop
        return api.redact_secrets(PathScrubber.of(self.settings.get("nbflow_root_dir")).scrub(data))

    def int_arg(self, name: str, default: int | None, minimum: int = 0, maximum: int = limits.MAX_ID) -> int | None:
        """A whole-number query argument; 400 naming it when it is not one in range."""
        return limits.whole_number(name, self.get_query_argument(name, None), default, minimum, maximum)

    def run_arg(self, run_id: str) -> int:
        """The run id of the path (400 when out of range)."""
        return limits.whole_number("run_id", run_id, None, minimum=1)  # type: ignore[return-value]

    @property
    def root(self) -> Path:
        """The Jupyter root folder (what JupyterLab's file browser shows)."""
        return Path(self.settings.get("nbflow_root_dir") or ".").resolve()

    def in_root(self, field: str, relative: str) -> Path:
        """A path of the request (relative to the Jupyter root) as an absolute path inside it;
        400 naming ``field`` when it leaves the root."""
        limits.text(field, relative, max_length=4096)
        path = (self.root / relative).resolve()
        if not path.is_relative_to(self.root):
            raise limits.bad_input(field, f"path {limits.text_preview(relative)!r} leaves the Jupyter root")
        return path

    @property
    def managed(self) -> bool:
        """Whether this server keeps a scheduler running (``NbflowExtension.manage_scheduler``)."""
        return bool(self.settings.get("nbflow_manage_scheduler"))

    async def runs_queued(self) -> None:
        """A run was queued from here: with a managed scheduler, make sure one is alive (the
        facade's own fallback, a background driver, serves the unmanaged case)."""
        if self.managed:
            await self.call(api.start_scheduler, cwd=self.settings.get("nbflow_cwd"))
