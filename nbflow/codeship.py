"""Functions sent to workers by value, with their file, line numbers and source.

cloudpickle pickles the functions of a pipeline file by value (the loader registers the
file's module for that) and, to make its payload deterministic, renames every code object's
file ``<dynamic-code>``: a traceback on the ``local`` or ``dask`` executor then named no file,
and ``inspect.getsource`` failed in the task. :func:`dumps` pickles with cloudpickle but
sends code objects through :mod:`marshal` (what ``.pyc`` files hold: the file name, the line
table and nested code kept), and collects the source text of each file those code objects
come from. :func:`register_sources` puts that text into :mod:`linecache` on the worker, keyed
by the original file name, so tracebacks show the lines and ``inspect.getsource`` works even
on a machine where the file does not exist (or has been edited since the run started).
"""

from __future__ import annotations

import linecache
import marshal
import os
import types
from typing import Any

import cloudpickle


def _code(data: bytes) -> types.CodeType:
    """A code object sent by :func:`dumps` (a module-level function: pickled by reference)."""
    code = marshal.loads(data)
    assert isinstance(code, types.CodeType)
    return code


class _Pickler(cloudpickle.Pickler):
    """cloudpickle's pickler, except that code objects keep their file name."""

    def __init__(self, file: Any) -> None:
        super().__init__(file)
        self.files: set[str] = set()

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, types.CodeType):
            self.files.add(obj.co_filename)
            return _code, (marshal.dumps(obj),)
        return super().reducer_override(obj)


def dumps(obj: Any) -> tuple[bytes, dict[str, str]]:
    """``obj`` pickled by cloudpickle with its code objects' file names kept, and the source text
    of those files (those this process can read) by file name."""
    import io

    buffer = io.BytesIO()
    pickler = _Pickler(buffer)
    pickler.dump(obj)
    return buffer.getvalue(), {f: text for f in sorted(pickler.files) if (text := _source(f)) is not None}


_loaded: dict[str, str] = {}  # pipeline files' text as it was when they were loaded


def remember(filename: str, text: str) -> None:
    """The text of a file whose code is being loaded (the loader calls this): what workers get,
    even when the file is edited or removed afterwards."""
    _loaded[filename] = text


def _source(filename: str) -> str | None:
    if filename in _loaded:
        return _loaded[filename]
    if filename.startswith("<") or not os.path.isfile(filename):
        return None  # <string>, <stdin>, an IPython cell: nothing on disk to send
    linecache.checkcache(filename)  # the file may have changed since it was last read here
    lines = linecache.getlines(filename)
    return "".join(lines) if lines else None


def register_sources(sources: dict[str, str]) -> None:
    """Make ``linecache`` (so tracebacks and ``inspect.getsource``) serve these files' text."""
    for filename, text in sources.items():
        lines = text.splitlines(keepends=True)
        # no modification time: linecache.checkcache keeps the entry instead of re-reading the file
        linecache.cache[filename] = (len(text), None, lines, filename)
