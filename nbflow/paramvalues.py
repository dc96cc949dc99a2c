"""Run-parameter values: command-line strings coerced to a default's type, and JSON values
checked against it (used by :func:`nbflow.params.resolve_run_params`, so REST, CLI and magics
share one check)."""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Mapping
from typing import Any

__all__ = ["check_run_value", "coerce_value"]

_TRUE = {"true", "1", "yes", "y", "on"}
_FALSE = {"false", "0", "no", "n", "off"}


def coerce_value(raw: str, default: Any) -> Any:
    """Convert a command-line string to the type of ``default`` (ValueError if it cannot)."""
    if isinstance(default, bool):  # before int: bool is a subclass of int
        low = raw.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise ValueError(f"expected a bool (true/false, yes/no, 1/0), got {raw!r}")
    if isinstance(default, int):
        try:
            return int(raw.strip())
        except ValueError:
            raise ValueError(f"expected an int, got {raw!r}") from None
    if isinstance(default, float):
        try:
            return float(raw.strip())
        except ValueError:
            raise ValueError(f"expected a float, got {raw!r}") from None
    if isinstance(default, (list, tuple, dict)):
        kind = "dict" if isinstance(default, dict) else "list"
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ValueError(f"expected a JSON {kind}, got {raw!r} ({exc.msg})") from None
        if not isinstance(value, dict if kind == "dict" else list):
            raise ValueError(f"expected a JSON {kind}, got {raw!r} ({type(value).__name__})")
        return tuple(value) if isinstance(default, tuple) else value
    if default is None:
        try:
            return json.loads(raw)
        except json.JSONDecodeError:
            return raw
    return raw  # str, and types nbflow cannot build from text, stay strings


_JSON_KINDS = (str, int, float, bool, list, tuple, dict, type(None))


def _type_name(default: Any) -> str:
    """A parameter's type as messages name it: 'int', 'float', 'string', 'list' ..."""
    names = {bool: "bool", int: "int", float: "float", str: "string", tuple: "list", list: "list", dict: "dict"}
    return names.get(type(default), type(default).__name__)


def value_type(default: Any) -> str:
    """A declared default's type as the web UI builds its input from it: bool, int, float,
    string, list, dict, or null (any JSON value)."""
    return "null" if default is None else _type_name(default)


def _kind(default: Any) -> str:
    """The type with its article: 'an int', 'a float' ..."""
    name = _type_name(default)
    return ("an " if name[0] in "aeiou" else "a ") + name


def _json_problem(value: Any, depth: int = 0) -> str | None:
    """Why ``value`` cannot be a run parameter (not JSON, NaN/Infinity, a NUL byte), or None."""
    if depth > 100:
        return "is nested more than 100 levels deep"
    if isinstance(value, float) and not math.isfinite(value):
        return f"is {json.dumps(value)}, which is not a number (use a finite number or null)"
    if isinstance(value, str) and "\x00" in value:
        return "contains a NUL byte (\\u0000)"
    if isinstance(value, (list, tuple)):
        return next((p for p in (_json_problem(v, depth + 1) for v in value) if p), None)
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                return f"has a key {key!r} that is not a string"
            problem = _json_problem(key, depth + 1) or _json_problem(item, depth + 1)
            if problem:
                return problem
        return None
    if not isinstance(value, _JSON_KINDS) and not isinstance(value, numbers.Real):
        return f"is a {type(value).__name__}, not a JSON value (string, number, true/false, null, list or object)"
    return None


def check_run_value(name: str, value: Any, default: Any, *, max_bytes: int) -> Any:
    """``value`` for the run parameter ``name`` whose declared default is ``default``, as the
    default's type; ValueError (naming the parameter) when it does not fit.

    A string for a non-string default is parsed as on the command line (:func:`coerce_value`).
    Else the JSON type must match: a bool is not a number, an int parameter takes whole
    numbers only, a float parameter takes ints (stored as floats) and floats; NaN and
    Infinity, NUL bytes, and values whose JSON is longer than ``max_bytes`` are refused.
    """
    if isinstance(value, str) and not isinstance(default, str):
        try:
            value = coerce_value(value, default)
        except ValueError as exc:
            detail = str(exc).partition(" (")[2]  # a JSON list/dict: what the parser said
            raise ValueError(
                f"parameter '{name}' expects {_type_name(default)}, got {value[:80]!r}"
                + (f" ({detail}" if detail else "")
            ) from None
    problem = _json_problem(value)
    if problem:
        raise ValueError(f"parameter '{name}' {problem}")
    size = len(json.dumps(value, default=str).encode("utf-8"))
    if size > max_bytes:
        raise ValueError(
            f"parameter '{name}' is {size} bytes as JSON, more than the limit of {max_bytes} "
            "(max_param_bytes, NBFLOW_MAX_PARAM_BYTES); pass a reference to the data (a path or URL) instead"
        )
    if value is None or default is None:
        return value
    got = f"{_json_type(value)} {json.dumps(value, default=str)[:80]}"
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
        value = int(value) if ok else value
    elif isinstance(default, float):
        ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif isinstance(default, str):
        ok = isinstance(value, str)
    elif isinstance(default, (list, tuple)):
        ok = isinstance(value, (list, tuple))
    elif isinstance(default, Mapping):
        ok = isinstance(value, Mapping)
    else:
        ok = True  # a default of a type nbflow does not know: nothing to check
    if not ok:
        raise ValueError(
            f"parameter '{name}' expects {_type_name(default)} (default {json.dumps(default, default=str)}), got {got}"
        )
    return value


def _json_type(value: Any) -> str:
    """The JSON name of a value's type: 'boolean', 'number', 'string', 'array', 'object'."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, numbers.Integral):
        return "integer"
    if isinstance(value, numbers.Real):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)):
        return "array"
    if isinstance(value, Mapping):
        return "object"
    return type(value).__name__
