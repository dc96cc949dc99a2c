"""What the REST API accepts: request bodies, path and query arguments, all bounded.

Every value is checked before it reaches the facade or the database, and a value that does
not fit is a 400 naming its field (413 for a body over the size limit):

* ids (a run id, ``try``, ``offset``) are whole numbers written in ASCII digits, in the
  range of the database's INTEGER columns (at most :data:`MAX_ID`), so neither SQLite nor
  PostgreSQL ever sees a number it cannot store;
* names (a pipeline, a task) and other texts have no NUL or control characters and at most
  :data:`MAX_NAME` characters (the columns are VARCHAR(250));
* a body is read only up to ``max_body_bytes`` (NBFLOW_MAX_BODY_BYTES): a larger
  ``Content-Length`` is refused before its first byte is read, and a chunked body is counted
  as it arrives and dropped past the limit; it must be a JSON object with the route's fields.
"""

from __future__ import annotations

import json
import re
from typing import Any

from nbflow.server.errors import ApiError, bad_input

__all__ = ["MAX_ID", "MAX_NAME", "MAX_OFFSET", "BodyReader", "bad_input", "text", "text_preview", "whole_number"]

#: the largest id or count the API accepts: PostgreSQL's INTEGER (SQLite takes more)
MAX_ID = 2**31 - 1
#: the largest byte offset into a log (not a database value: logs may pass 2 GiB)
MAX_OFFSET = 2**53
#: the longest pipeline or task name (VARCHAR(250) in the database)
MAX_NAME = 250
_DIGITS = re.compile(r"[0-9]{1,16}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def whole_number(
    field: str, text: str | None, default: int | None, minimum: int = 0, maximum: int = MAX_ID
) -> int | None:
    """``text`` (a path or query argument) as an int in ``[minimum, maximum]``; ``default`` when absent."""
    if text is None or text == "":
        return default
    limit = f"a whole number from {minimum} to {maximum}"
    if not _DIGITS.fullmatch(text):
        shown = text if len(text) <= 40 else f"{text[:20]}...({len(text)} characters)"
        raise bad_input(field, f"'{field}' must be {limit}, got {shown!r}")
    value = int(text)
    if not minimum <= value <= maximum:
        raise bad_input(field, f"'{field}' must be {limit}, got {value}")
    return value


def text(field: str, value: str, max_length: int = MAX_NAME) -> str:
    """``value`` when it has no NUL or control characters and at most ``max_length`` characters."""
    if _CONTROL.search(value):
        raise bad_input(field, f"'{field}' must not contain NUL or control characters")
    if len(value) > max_length:
        raise bad_input(field, f"'{field}' is {len(value)} characters long; at most {max_length} are allowed")
    return value


class BodyReader:
    """Collects a streamed request body up to ``limit`` bytes (see the module docstring)."""

    def __init__(self, limit: int, content_length: str | None):
        self.limit, self.size = limit, 0
        self.chunks: list[bytes] = []
        if content_length is not None and content_length.strip().isdigit() and int(content_length) > limit:
            raise self.too_large(int(content_length))

    def too_large(self, size: int) -> ApiError:
        """The 413 answer."""
        return ApiError(
            413,
            f"the request body is {size} bytes, more than the limit of {self.limit}",
            fields={"body": f"at most {self.limit} bytes"},
            hint="send smaller parameters (pass large data by reference: a path or URL), "
            "or raise max_body_bytes (NBFLOW_MAX_BODY_BYTES) on the server",
        )

    def feed(self, chunk: bytes) -> None:
        """One chunk; past the limit only its size is kept."""
        self.size += len(chunk)
        if self.size <= self.limit:
            self.chunks.append(chunk)
        else:
            self.chunks.clear()

    def json_object(self, fields: dict[str, tuple[type | tuple[type, ...], bool]]) -> dict[str, Any]:
        """The body as a JSON object checked against ``{field: (types, required)}``; 400 naming
        the bad fields, 413 past the limit."""
        if self.size > self.limit:
            raise self.too_large(self.size)
        raw = b"".join(self.chunks) or b"{}"
        try:
            data = json.loads(raw)
        except RecursionError:
            raise bad_input("body", "the request body is nested too deeply") from None
        except ValueError as exc:
            raise ApiError(400, f"the request body is not valid JSON: {exc}", fields={"body": "not JSON"}) from None
        if not isinstance(data, dict):
            raise ApiError(400, "the request body must be a JSON object", fields={"body": "not an object"})
        errors: dict[str, str] = {}
        for name in data:
            if name not in fields:
                shown = text_preview(name)
                errors[shown] = f"unknown field; known: {', '.join(sorted(fields)) or '(none)'}"
        for name, (types, required) in fields.items():
            kinds = types if isinstance(types, tuple) else (types,)
            if name not in data:
                if required:
                    errors[name] = "required"
            elif not isinstance(data[name], kinds) or (isinstance(data[name], bool) and bool not in kinds):
                errors[name] = (
                    f"must be {' or '.join(_JSON_NAMES.get(t, t.__name__) for t in kinds)}, got {_json_name(data[name])}"
                )
            elif isinstance(data[name], str) and _CONTROL.search(data[name]):
                errors[name] = "must not contain NUL or control characters"
        if errors:
            raise ApiError(
                400, "invalid request body: " + "; ".join(f"{k}: {v}" for k, v in errors.items()), fields=errors
            )
        return data


_JSON_NAMES = {dict: "an object", str: "a string", bool: "true or false", list: "an array", int: "an integer"}


def _json_name(value: Any) -> str:
    for kind, name in (
        (bool, "a boolean"),
        (dict, "an object"),
        (list, "an array"),
        (str, "a string"),
        (int, "an integer"),
        (float, "a number"),
    ):
        if isinstance(value, kind):
            return name
    return "null"


def text_preview(value: str, length: int = 40) -> str:
    """``value`` shortened for a message, control characters escaped."""
    shown = value if len(value) <= length else value[:length] + "..."
    return shown.encode("unicode_escape").decode("ascii") if _CONTROL.search(shown) else shown
