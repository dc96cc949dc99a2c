"""No absolute path of the server's disk in an answer.

Answers name files (a pipeline's file, log and output-notebook URIs, artifacts, import
errors). :class:`PathScrubber` rewrites every string of an answer: a path under the Jupyter
root becomes relative to it (what JupyterLab's contents API and ``docmanager:open`` take,
``file://`` dropped), one under the artifact root or NBFLOW_HOME outside the Jupyter root is
named by its setting (``$NBFLOW_ARTIFACT_ROOT/...``, ``$NBFLOW_HOME/...``). Other paths (a
pipeline file outside all of these) are left as they are.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

from nbflow.config import get_settings


class PathScrubber:
    """Replaces the known absolute prefixes in every string of a JSON-like value."""

    def __init__(self, prefixes: list[tuple[str, str]]):
        # longest first, so a folder inside another is replaced by its own name
        ordered = sorted(((p.rstrip("/"), r) for p, r in prefixes if p and p != "/"), key=lambda pr: -len(pr[0]))
        self._replacement = dict(ordered)
        self._pattern = (
            re.compile("(?:file://)?(" + "|".join(re.escape(p) for p, _ in ordered) + ")(/|(?=$|[^\\w.-]))")
            if ordered
            else None
        )

    @classmethod
    def of(cls, jupyter_root: str | None) -> PathScrubber:
        """The scrubber for this server's Jupyter root and nbflow settings (cached per settings)."""
        settings = get_settings()
        return _scrubber(jupyter_root, str(settings.home), settings.artifact_root)

    def scrub(self, value: Any) -> Any:
        """``value`` with every string rewritten (dicts, lists and their keys too)."""
        if self._pattern is None:
            return value
        if isinstance(value, str):
            return self._pattern.sub(self._replace, value) if "/" in value else value
        if isinstance(value, dict):
            return {self.scrub(k): self.scrub(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.scrub(v) for v in value]
        return value

    def _replace(self, match: re.Match[str]) -> str:
        replacement, slash = self._replacement[match.group(1)], match.group(2)
        if replacement == "":  # under the Jupyter root: "<root>/a/b" -> "a/b", "<root>" -> "."
            return "" if slash else "."
        return replacement + slash


@functools.lru_cache(maxsize=8)
def _scrubber(jupyter_root: str | None, home: str, artifact_root: str) -> PathScrubber:
    roots = [str(Path(jupyter_root).resolve())] if jupyter_root else []
    prefixes = [(r, "") for r in {jupyter_root or "", *roots} if r]
    for folder, name in ((artifact_root, "$NBFLOW_ARTIFACT_ROOT"), (home, "$NBFLOW_HOME")):
        if "://" in folder:
            continue
        for spelling in {folder, str(Path(folder).resolve())}:
            if not any(Path(spelling).is_relative_to(r) for r in roots):  # inside the Jupyter root: relative
                prefixes.append((spelling, name))
    return PathScrubber(prefixes)
