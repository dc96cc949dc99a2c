"""Deterministic hashes of values and of Python code, for fingerprints (:mod:`nbflow.fingerprint`).

Pure functions. :func:`stable_repr` gives a value a text that is equal in every process (or
raises :class:`Unhashable`, naming it); :func:`code_digest` hashes a code object without its
line numbers; :func:`function_parts` follows a function into what it uses from its own module:
the functions it calls (decorated ones too), the classes it uses (methods, class attributes,
dataclass fields) and the values it reads.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import decimal
import enum
import functools
import hashlib
import logging
import types
from collections.abc import Callable, Iterable
from pathlib import PurePath
from typing import Any

from nbflow.refs import OutputRef, ParamRef

_SHORT = 60  # reprs up to this long are kept as they are (readable in reasons), longer ones hashed


class Unhashable(Exception):
    """A value a task depends on has no deterministic hash; the message names it."""


def digest(text: str | bytes) -> str:
    """sha256 hex of ``text``."""
    return hashlib.sha256(text.encode() if isinstance(text, str) else text).hexdigest()


# --- values ----------------------------------------------------------------------------------


def stable_repr(value: Any, what: str = "value") -> str:
    """A text that is equal for equal values in every process (sets and dicts sorted).

    Raises :class:`Unhashable` (naming ``what`` and the type) for values whose text would be
    arbitrary: objects of other types, whose ``repr`` may carry a memory address.
    """
    if value is None or isinstance(value, (bool, int, float, complex, str, bytes, decimal.Decimal, range)):
        return repr(value)
    if isinstance(value, (_dt.datetime, _dt.date, _dt.time, _dt.timedelta, PurePath)):
        return repr(value)
    if isinstance(value, enum.Enum):
        return f"{type(value).__qualname__}.{value.name}"
    if isinstance(value, (OutputRef, ParamRef)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        inner = ", ".join(stable_repr(v, what) for v in value)
        return f"[{inner}]" if isinstance(value, list) else f"({inner},)"
    if isinstance(value, (set, frozenset)):
        return "{" + ", ".join(sorted(stable_repr(v, what) for v in value)) + "}"
    if isinstance(value, dict):
        items = sorted((stable_repr(k, what), stable_repr(v, what)) for k, v in value.items())
        return "{" + ", ".join(f"{k}: {v}" for k, v in items) + "}"
    if isinstance(value, types.FunctionType):
        return f"<function {value.__qualname__} {code_digest(value.__code__)[:16]}>"
    raise Unhashable(
        f"{what} is a {type(value).__module__}.{type(value).__qualname__}, which has no deterministic hash"
    )


def short(value: Any, what: str = "value") -> str:
    """:func:`stable_repr`, kept readable: long texts become their start and a hash."""
    text = stable_repr(value, what)
    return text if len(text) <= _SHORT else f"{text[:40]}…#{digest(text)[:12]}"


# --- code ------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4096)
def code_digest(code: types.CodeType) -> str:
    """Hash of a code object: bytecode, names and constants, nested code objects included.

    Line numbers and comments are not part of it, so moving or commenting code changes nothing.
    Code objects never change, so each is hashed once per process (a pipeline of 1,000 calls of
    one function hashes it once).
    """
    h = hashlib.sha256()
    h.update(code.co_code)
    h.update(
        repr((code.co_names, code.co_varnames, code.co_freevars, code.co_argcount, code.co_kwonlyargcount)).encode()
    )
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            h.update(code_digest(const).encode())
        else:
            h.update(stable_repr(const, "a constant").encode())
    return h.hexdigest()


def _names(code: types.CodeType) -> Iterable[str]:
    yield from code.co_names
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _names(const)


#: Class attributes that are Python's bookkeeping, not behaviour (a dataclass's fields are hashed
#: from ``dataclasses.fields``; annotations name types, which hash as their qualified names).
_CLASS_BOOKKEEPING = frozenset(
    {
        "__module__", "__qualname__", "__doc__", "__dict__", "__weakref__", "__firstlineno__",
        "__static_attributes__", "__annotations__", "__dataclass_fields__", "__dataclass_params__",
        "__match_args__", "__orig_bases__", "__parameters__", "__slots__", "__hash__",
    }
)  # fmt: skip


def _unwrap_decorated(obj: Any) -> Any:
    """The function under ``functools.wraps``-style decorators (``lru_cache``, ``cache`` ...)."""
    for _ in range(100):
        inner = getattr(obj, "__wrapped__", None)
        if inner is None or isinstance(obj, types.ModuleType):
            return obj
        obj = inner
    return obj


def function_parts(fn: Callable[..., Any], unwrap: Callable[[Any], Any] = lambda obj: obj) -> dict[str, str]:
    """Parts of a function: its code, defaults and closure, and, recursively, what it reads from
    its own module: functions (decorated ones too), classes (their methods and attributes) and
    values (``function:NAME``, ``class:NAME``, ``global:NAME``).

    Modules, and functions and classes of other modules (installed libraries), are not part of it.
    Any other value it reads from a global must have a deterministic text (numbers, strings,
    lists, dicts ...) or :class:`Unhashable` is raised naming it: an object nbflow cannot hash
    makes the task stale, never wrongly reused. ``unwrap`` turns a wrapper found among the
    globals (a ``@task`` factory) into its function.
    """
    parts: dict[str, str] = {}
    seen: set[int] = set()
    module = getattr(fn, "__module__", None)

    def visit(f: Any) -> None:
        if id(f) in seen:
            return
        seen.add(id(f))
        name = getattr(f, "__qualname__", repr(f))
        code = getattr(f, "__code__", None)
        if code is None:
            if not isinstance(f, types.BuiltinFunctionType):
                raise Unhashable(f"callable {name} is a {type(f).__qualname__} object, which has no deterministic hash")
            parts[f"function:{name}"] = digest(repr(f))  # a builtin: its name says what it runs
            return
        h = hashlib.sha256(code_digest(code).encode())
        h.update(stable_repr(getattr(f, "__defaults__", None), f"a default of {name}").encode())
        h.update(stable_repr(getattr(f, "__kwdefaults__", None), f"a default of {name}").encode())
        for cell_name, cell in zip(code.co_freevars, getattr(f, "__closure__", None) or ()):
            try:
                inner = cell.cell_contents
            except ValueError:  # an empty cell
                continue
            inner = unwrap(inner)
            if isinstance(inner, types.FunctionType):
                visit(inner)
                continue
            if isinstance(inner, type) and cell_name == "__class__":  # zero-argument super()
                continue
            h.update(stable_repr(inner, f"variable {cell_name} that {name} closes over").encode())
        parts[f"function:{name}"] = h.hexdigest()
        scope = getattr(f, "__globals__", {})
        for gname in dict.fromkeys(_names(code)):
            if gname in scope:
                visit_global(gname, scope[gname])

    def visit_global(gname: str, value: Any) -> None:
        target = _unwrap_decorated(unwrap(value))
        if isinstance(target, (types.ModuleType, logging.Logger, logging.LoggerAdapter)):
            return  # an imported module; a logger (what it writes does not change results)
        if isinstance(target, functools.partial):
            parts[f"global:{gname}"] = short((target.args, target.keywords), f"global {gname}")
            target = _unwrap_decorated(target.func)
        if isinstance(target, (types.FunctionType, type)):
            if getattr(target, "__module__", None) != module:
                return  # another module's: the installed library
            if isinstance(target, type):
                visit_class(target)
            else:
                visit(target)
            return
        if callable(target) and getattr(target, "__module__", None) != module:
            return  # a library's callable object (a numpy ufunc, a builtin)
        parts[f"global:{gname}"] = short(target, f"global {gname}")

    def visit_class(cls: type) -> None:
        if id(cls) in seen:
            return
        seen.add(id(cls))
        for base in cls.__mro__[1:]:
            if base.__module__ == module:
                visit_class(base)
        h = hashlib.sha256()
        if dataclasses.is_dataclass(cls):
            for fld in dataclasses.fields(cls):
                factory = fld.default_factory
                if isinstance(factory, types.FunctionType) and factory.__module__ == module:
                    visit(factory)
                default = None if fld.default is dataclasses.MISSING else fld.default
                h.update(stable_repr([fld.name, default], f"field {fld.name} of class {cls.__qualname__}").encode())
                h.update(getattr(factory, "__qualname__", "").encode())
        for attr, value in sorted(vars(cls).items()):
            if attr in _CLASS_BOOKKEEPING:
                continue
            if isinstance(value, property):
                for accessor in (value.fget, value.fset, value.fdel):
                    if accessor is not None:
                        visit(_unwrap_decorated(accessor))
                continue
            inner = _unwrap_decorated(value.__func__ if isinstance(value, (staticmethod, classmethod)) else value)
            if isinstance(inner, types.FunctionType):
                if not inner.__code__.co_filename.startswith("<"):  # not made by dataclasses (hashed above)
                    visit(inner)
                continue
            if isinstance(inner, type):  # a nested class
                if inner.__module__ == module:
                    visit_class(inner)
                continue
            h.update(f"{attr}={stable_repr(value, f'attribute {attr} of class {cls.__qualname__}')}".encode())
        parts[f"class:{cls.__qualname__}"] = h.hexdigest()

    visit(fn)
    return parts
