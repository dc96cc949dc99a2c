"""Errors of the REST API: one table from nbflow's typed errors to HTTP statuses.

An answer's body is JSON ``{error, message, hint?, fields?, run_id?, ...}``; its ``message``
is written for the user and never carries SQL, a traceback or a path of the server's disk.

* nbflow's typed errors (:mod:`nbflow.exceptions`) map through :data:`STATUS`, first match
  wins: unknown pipeline/run/task/try and a missing output notebook 404, duplicate run and state conflicts 409, a database
  outage 503, and any other :class:`~nbflow.exceptions.NbflowError` (bad parameters, dates,
  values) 400.
* Database errors the store lets through (:func:`nbflow.api.database_trouble`): a lost or
  refused connection, a lock or a timeout is an outage, 503; a value the database refuses
  (out of range, a NUL byte) is bad input, 400.
* Anything else is a bug: 500 with a generic body; the traceback goes to the server's log.
"""

from __future__ import annotations

import logging
from datetime import date, datetime
from typing import Any

import tornado.httputil
import tornado.web

from nbflow import api
from nbflow.exceptions import (
    ArtifactStoreError,
    AssetNotFoundError,
    DatabaseUnavailableError,
    DuplicateRunError,
    InputError,
    NbflowError,
    OutputNotFoundError,
    ParameterError,
    PipelineNotFoundError,
    RunNotFoundError,
    StateConflictError,
    StoreError,
    TryNotFoundError,
    UnknownTaskError,
)
from nbflow.vault import SecretNotFoundError

log = logging.getLogger("nbflow.server")

#: nbflow's typed errors and their statuses, most specific first (the first match wins)
STATUS: tuple[tuple[type[NbflowError], int], ...] = (
    (PipelineNotFoundError, 404),
    (RunNotFoundError, 404),
    (AssetNotFoundError, 404),
    (UnknownTaskError, 404),
    (TryNotFoundError, 404),
    (OutputNotFoundError, 404),
    (SecretNotFoundError, 404),
    (DuplicateRunError, 409),
    (StateConflictError, 409),
    (DatabaseUnavailableError, 503),
    (StoreError, 500),  # the database answers but cannot be used (a failed schema upgrade): the operator's job
    (NbflowError, 400),  # ParameterError, ScheduleError, InputError and every other bad-input error
)
DB_HINT = "check NBFLOW_DB_URL and that the database server is running; then try again"


class ApiError(tornado.web.HTTPError):
    """An error answer with a JSON body: ``{"error", "message", "hint"?, "fields"?, ...}``."""

    def __init__(self, status: int, message: str, **extra: Any):
        super().__init__(status, reason=None)
        self.body = {"error": tornado.httputil.responses.get(status, "Error"), "message": message, **extra}


def bad_input(field: str, message: str, **extra: Any) -> ApiError:
    """A 400 naming ``field``."""
    return ApiError(400, message, fields={field: message}, **extra)


def json_default(value: Any) -> Any:
    """JSON for what the facade returns besides plain data (dates, paths)."""
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    return str(value)


def database_down(what: str) -> ApiError:
    """The 503 of a database outage (``what`` happened: refused, lost, locked, timed out)."""
    return ApiError(503, f"the nbflow database is unavailable ({what}); nothing was changed", hint=DB_HINT)


def to_api_error(exc: BaseException, *, context: str = "") -> ApiError:
    """The answer for an exception a facade call raised (see the module docstring)."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, NbflowError):
        status = next(code for kind, code in STATUS if isinstance(exc, kind))
        if status == 503:
            log.warning("%s: %s", context, exc)
            return database_down("unreachable or not answering")
        if status == 500:
            log.error("%s: %s", context, exc, exc_info=exc)
            return ApiError(500, "the nbflow database cannot be used; the server's log says why", hint=DB_HINT)
        return _typed(exc, status)
    if isinstance(exc, ArtifactStoreError):  # the object store of the artifact root is away: an outage, not a bug
        log.warning("%s: %s", context, exc)
        return ApiError(503, str(exc), hint=exc.hint)
    trouble = api.database_trouble(exc)
    if trouble is not None and trouble[0] == "outage":
        log.warning("%s: database outage: %s", context, getattr(exc, "orig", exc))
        return database_down(trouble[1])
    if trouble is not None:
        log.info("%s: the database refused a value: %s", context, getattr(exc, "orig", exc))
        return ApiError(
            400,
            "a value of the request does not fit the database (a number out of range, or a NUL byte in a text)",
            hint="check the ids and numbers in the URL and body",
        )
    log.error("%s: unexpected error", context, exc_info=exc)
    return ApiError(500, "internal error in the nbflow server extension; the server's log has the details")


def _typed(exc: NbflowError, status: int) -> ApiError:
    extra: dict[str, Any] = {}
    if exc.hint:
        extra["hint"] = exc.hint
    if isinstance(exc, DuplicateRunError):
        extra["run_id"] = exc.run_id
    if isinstance(exc, ParameterError):
        extra["fields"] = {f"params.{n}": exc.message for n in exc.names} or {"params": exc.message}
    if isinstance(exc, InputError):
        extra["fields"] = {exc.field: exc.message}
    if isinstance(exc, api.StalePipelineError):  # the UI asks, then sends last_good: true
        extra["fields"] = {"last_good": "the file is broken now: confirm running the last good version"}
    return ApiError(status, exc.message, **extra)


__all__ = ["STATUS", "ApiError", "bad_input", "database_down", "json_default", "to_api_error"]
