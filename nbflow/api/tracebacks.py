"""A failed try's traceback with the frames of library code folded away, so what the web UI
shows first is the user's own code: the pipeline file's or the notebook's frames, and the
error. The full traceback stays in the attempt row and the log.

Both layouts are read: Python's (``  File "path", line N, in name`` and its indented source
lines) and IPython's, as a notebook's failing cell shows it (``File path:N, in name(...)``
blocks ending at a blank line; ``Cell In[N], line M`` blocks are the notebook's own). A frame
is library code when its file lies in Python's standard library, in site-packages /
dist-packages, or in nbflow itself; consecutive library frames become one line naming their
modules.
"""

from __future__ import annotations

import os
import re
import sysconfig
from functools import lru_cache
from pathlib import Path

_PY_FRAME = re.compile(r'^  File "(?P<path>[^"]+)", line \d+, in ')
_IPY_FRAME = re.compile(r"^File (?P<path>\S+?):\d+, in ")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


@lru_cache(maxsize=1)
def _library_roots() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    roots = {paths[k] for k in ("stdlib", "platstdlib", "purelib", "platlib") if paths.get(k)}
    roots.add(str(Path(__file__).resolve().parent.parent))  # nbflow's own package
    return tuple(sorted(roots))


def is_library(path: str) -> bool:
    """Whether a traceback's file is library code (see the module docstring)."""
    full = os.path.expanduser(path)
    if "site-packages" in full or "dist-packages" in full:
        return True
    return any(full.startswith(root.rstrip("/") + "/") for root in _library_roots())


def fold_library_frames(text: str | None) -> str | None:
    """``text`` with each run of library frames replaced by ``... N frames in library code (mods) ...``."""
    if not text:
        return text
    lines = _ANSI.sub("", text).splitlines()
    out: list[str] = []
    folded: list[str] = []  # files of the library frames being folded
    indent = ""  # of the folded frames: Python's are indented by two spaces, IPython's not

    def flush() -> None:
        if folded:
            mods = sorted({Path(p).parent.name if Path(p).stem == "__init__" else Path(p).stem for p in folded})
            shown = ", ".join(mods[:4]) + (", ..." if len(mods) > 4 else "")
            plural = "s" if len(folded) > 1 else ""
            out.append(f"{indent}... {len(folded)} frame{plural} in library code ({shown}) ...")
            folded.clear()

    i = 0
    while i < len(lines):
        py, ipy = _PY_FRAME.match(lines[i]), _IPY_FRAME.match(lines[i])
        if not (py or ipy):
            flush()
            out.append(lines[i])
            i += 1
            continue
        # the frame's own lines: Python's are indented deeper, IPython's run to a blank line
        j = i + 1
        while j < len(lines) and (lines[j].startswith("    ") if py else lines[j].strip()):
            j += 1
        if ipy and j < len(lines):
            j += 1  # the blank line that ends an IPython frame
        path = (py or ipy).group("path")  # type: ignore[union-attr]
        if is_library(path):
            indent = "  " if py else ""
            folded.append(path)
        else:
            flush()
            out.extend(lines[i:j])
        i = j
    flush()
    return "\n".join(out) + ("\n" if text.endswith("\n") else "")
