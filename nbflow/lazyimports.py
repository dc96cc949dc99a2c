"""Imports that cost seconds of CPU for nothing nbflow needs, deferred until something uses them.

``jsonschema`` (which ``nbformat`` imports to validate notebooks) imports ``rfc3987_syntax`` when
it is installed (Jupyter installs it: ``jupyter-events`` asks for ``jsonschema[format-nongpl]``),
only to offer the ``iri`` and ``iri-reference`` formats, and ``rfc3987_syntax`` builds a Lark
parser of RFC 3987 while it is imported: ~2.2 s of CPU in every process that reads a notebook
(each CLI command, each worker), more than the rest of nbflow's start-up together.

:func:`defer` puts a stand-in module in ``sys.modules`` whose ``is_valid_syntax`` (what
``jsonschema`` takes) and every other attribute import the real module on first use and
delegate to it: the same answers, paid for only by a schema that checks an IRI's format.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import threading
import types
from typing import Any

__all__ = ["defer", "DEFERRED"]

DEFERRED = ("rfc3987_syntax",)

_lock = threading.Lock()


class _Deferred(types.ModuleType):
    """A module that stands for ``real_name`` until one of its attributes is used."""

    def __init__(self, real_name: str):
        super().__init__(real_name)
        self.__dict__["_nbflow_real"] = None

    def _load(self) -> types.ModuleType:
        with _lock:
            real = self.__dict__["_nbflow_real"]
            if real is None:
                name = self.__name__
                if sys.modules.get(name) is self:
                    del sys.modules[name]
                try:
                    real = importlib.import_module(name)
                except BaseException:
                    sys.modules.setdefault(name, self)
                    raise
                self.__dict__["_nbflow_real"] = real
            return real

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__") and attr.endswith("__"):
            raise AttributeError(attr)  # import machinery probing the stand-in: not a use
        return getattr(self._load(), attr)


def _is_valid_syntax(stand_in: _Deferred) -> Any:
    def is_valid_syntax(*args: Any, **kwargs: Any) -> Any:
        return stand_in._load().is_valid_syntax(*args, **kwargs)

    return is_valid_syntax


def defer() -> None:
    """Put the stand-ins of :data:`DEFERRED` in ``sys.modules`` (those installed and not imported yet)."""
    for name in DEFERRED:
        if name in sys.modules:
            continue
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            continue
        if spec is None:
            continue
        stand_in = _Deferred(name)
        stand_in.__spec__ = spec  # what importlib.util.find_spec(name) answers for an imported module
        stand_in.__dict__["is_valid_syntax"] = _is_valid_syntax(stand_in)
        sys.modules[name] = stand_in
