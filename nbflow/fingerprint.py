"""Fingerprints that mean "the result would be the same", and why two of them differ.

Pure functions over plain data (file hashing is the only I/O). A task's fingerprint is a flat
dict of named *parts*, each a short string; its *key* is the hash of all parts
(:func:`combine`). Keeping the parts (not only the key) lets :func:`explain` say which part
changed, in words a person can read:

| part key                      | value                               | reason when it changed            |
|-------------------------------|-------------------------------------|-----------------------------------|
| ``code:train.ipynb code cell 3`` | hash of one code cell (source+tags) | ``code changed: train.ipynb Cell 4/7`` |
| ``function:evaluate``         | hash of a function's code objects   | ``function evaluate changed``     |
| ``global:THRESHOLD``          | repr of a module value it reads     | ``global THRESHOLD: 1 -> 2``      |
| ``class:Model``               | hash of a module class it uses      | ``class Model changed``           |
| ``param:C`` / ``context:run_id`` | repr of the value it receives    | ``parameter C: 1.0 -> 0.5``       |
| ``literal:k`` / ``args``      | repr of literal arguments           | ``literal k: 1 -> 2`` / ``arguments changed`` |
| ``reads:data/raw.csv``        | content hash of a declared file     | ``reads data/raw.csv changed``    |
| ``upstream:prepare``          | content hash of the upstream's outputs | ``upstream prepare changed`` (``will run`` in a plan) |
| ``command``, ``env``, ``cwd``, ``kernel``, ``outputs``, ``kind``, ``code`` | hashes | ``command changed`` ... |

A value without a deterministic hash (an object whose ``repr`` carries its address, an open
file, ...) raises :class:`Unhashable`: the task is then stale, never wrongly reused.

:class:`Fingerprinted` is what every task contributes (``nbflow.dag.Task`` mixes it in): the
``reads=``/``cache=``/``cache_ttl=`` options, and :meth:`~Fingerprinted.cache_parts` from the
kind's :meth:`~Fingerprinted.code_parts` and the values it receives. The upstream parts are added
by the engine's decider (:mod:`nbflow.incremental`), which knows the upstream outputs.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from nbflow.codehash import (  # values' and code's hashes: this module's vocabulary, re-exported
    Unhashable as Unhashable,
)
from nbflow.codehash import (
    digest as digest,
)
from nbflow.codehash import (
    function_parts as function_parts,
)
from nbflow.codehash import (
    short as short,
)
from nbflow.codehash import (
    stable_repr as stable_repr,
)
from nbflow.exceptions import DefinitionError
from nbflow.refs import ParamRef
from nbflow.templating import inputs_of, is_template, render, run_values

#: Files larger than this are fingerprinted by size, mtime and a hash of their first and last MiB.
LARGE_FILE = 64 * 2**20
_EDGE = 2**20
#: The value of an ``upstream:`` part whose task will run (a plan cannot know its outputs yet).
WILL_RUN = "<will run>"


# --- files -------------------------------------------------------------------------------------


def file_digest(path: str) -> str:
    """Content hash of a file; for one over :data:`LARGE_FILE`: size, mtime and a hash of its
    first and last MiB (reading it whole at every decision would cost more than the task)."""
    st = os.stat(path)
    with open(path, "rb") as fh:
        if st.st_size <= LARGE_FILE:
            return hashlib.file_digest(fh, "sha256").hexdigest()
        h = hashlib.sha256(fh.read(_EDGE))
        fh.seek(-_EDGE, os.SEEK_END)
        h.update(fh.read(_EDGE))
    return f"size={st.st_size},mtime={st.st_mtime_ns},edges={h.hexdigest()}"


def reads_parts(patterns: Iterable[str], base_dir: str, memo: dict[tuple, Any] | None = None) -> dict[str, str]:
    """``reads:PATH`` parts for the files ``patterns`` name (globs, relative to ``base_dir``;
    a folder stands for every file below it). A pattern that matches nothing is a part
    ``missing`` (so the file appearing makes the task stale); an unreadable file names its error.

    ``memo`` (one decision pass) maps (path, size, mtime, inode) to a digest already computed.
    """
    parts: dict[str, str] = {}
    for pattern in patterns:
        full = os.path.join(base_dir, pattern)
        matches = (
            sorted(glob.glob(full, recursive=True))
            if glob.has_magic(pattern)
            else ([full] if os.path.exists(full) else [])
        )
        files: list[str] = []
        for match in matches:
            if os.path.isdir(match):
                for root, dirs, names in os.walk(match):
                    dirs.sort()
                    files.extend(os.path.join(root, n) for n in sorted(names))
            else:
                files.append(match)
        if not files:
            parts[f"reads:{pattern}"] = "missing"
        for path in files:
            rel = os.path.relpath(path, base_dir)
            try:
                st = os.stat(path)
                key = (path, st.st_size, st.st_mtime_ns, st.st_ino)
                if memo is not None and key in memo:
                    parts[f"reads:{rel}"] = memo[key]
                    continue
                parts[f"reads:{rel}"] = value = file_digest(path)
                if memo is not None:
                    memo[key] = value
            except OSError as exc:
                parts[f"reads:{rel}"] = f"unreadable: {type(exc).__name__}: {exc.strerror or exc}"
    return parts


def notebook_cell_parts(nb: Mapping[str, Any], label: str) -> tuple[dict[str, str], dict[str, str]]:
    """The parts of a notebook's code cells and how reasons name them.

    Parts are ``code:LABEL code cell K`` (K counting code cells only, from 1, so adding or
    editing a markdown cell changes nothing), each the hash of the cell's source and tags;
    outputs, execution counts, ids and other metadata are left out. Names are ``LABEL Cell
    N/M``, as JupyterLab's status bar names the cell (N counting every cell).
    """
    parts: dict[str, str] = {}
    names: dict[str, str] = {}
    cells = nb.get("cells", [])
    for index, cell in enumerate(cells):
        if cell.get("cell_type") != "code":
            continue
        source = cell.get("source", "")
        source = "".join(source) if isinstance(source, list) else source
        tags = sorted((cell.get("metadata") or {}).get("tags") or [])
        key = f"code:{label} code cell {len(parts) + 1}"
        parts[key] = digest(json.dumps([source, tags]))
        names[key] = f"{label} Cell {index + 1}/{len(cells)}"
    return parts, names


# --- keys and reasons -------------------------------------------------------------------------


def combine(parts: Mapping[str, str]) -> str:
    """The fingerprint of a set of parts (sha256 hex of them, sorted)."""
    return digest(json.dumps(sorted(parts.items())))


def output_digest(refs: Iterable[Mapping[str, Any]], keys: Iterable[str] | None = None) -> str | None:
    """Content hash of an attempt's outputs (all, or the artifacts named ``keys``) from the
    digests its artifacts carry; None when one has no digest (written before nbflow kept them)."""
    by_name = {r["name"]: r.get("digest") for r in refs}
    names = sorted(by_name) if keys is None else sorted(set(keys))
    if any(not by_name.get(n) for n in names if n in by_name):
        return None
    return digest(json.dumps([(n, by_name.get(n) or "missing") for n in names]))


def outputs_key(refs: Iterable[Mapping[str, Any]], run_id: int, try_number: int) -> str:
    """What downstream fingerprints take from an attempt: the content hash of its outputs. An
    attempt without outputs (or with artifacts older than their digests) stands for itself,
    so what follows it runs again whenever it runs again."""
    refs = list(refs)
    return (output_digest(refs) if refs else None) or f"attempt {run_id}/{try_number}"


_LABELS = {"param": "parameter", "context": "run value", "literal": "literal", "global": "global"}
_ORDER = (
    "kind",
    "code",
    "function",
    "class",
    "command",
    "env",
    "cwd",
    "kernel",
    "args",
    "outputs",
    "literal",
    "global",
    "param",
    "context",
    "reads",
    "upstream",
)


def _phrase(key: str, name: str, old: str | None, new: str | None) -> str:
    kind = key.partition(":")[0]
    if kind == "code":
        return f"code changed: {name}" if name else "code changed"
    if kind in ("function", "class"):
        return f"{kind} {name} {'changed' if old and new else 'added' if new else 'no longer used'}"
    if kind == "reads":
        if new == "missing":
            return f"reads {name}: no such file"
        return f"reads {name} {'changed' if old and new else 'added' if new else 'removed'}"
    if kind == "upstream":
        upstream = name.split(":", 1)[0]
        return f"upstream {upstream} will run" if new == WILL_RUN else f"upstream {upstream} changed"
    if kind == "args":
        return "arguments changed"
    if kind in _LABELS:
        return (
            f"{_LABELS[kind]} {name}: {old if old is not None else '(none)'} -> {new if new is not None else '(none)'}"
        )
    return f"{kind} changed"


def changes(
    old: Mapping[str, str] | None, new: Mapping[str, str], label: Callable[[str], str] | None = None
) -> list[str]:
    """Why ``new`` differs from ``old``: one phrase per changed part, most telling first
    (the task's own code and values before its inputs). ``label(key)`` names a part (default:
    the key after its ``kind:``)."""
    label = label or (lambda key: key.partition(":")[2])
    if old is None:
        return ["fingerprint changed"]
    keys = [k for k in set(old) | set(new) if old.get(k) != new.get(k)]
    rank = {k: i for i, k in enumerate(_ORDER)}
    keys.sort(key=lambda k: (rank.get(k.partition(":")[0], len(_ORDER)), k))
    return list(dict.fromkeys(_phrase(k, label(k), old.get(k), new.get(k)) for k in keys))  # one per upstream


def explain(
    old: Mapping[str, str] | None, new: Mapping[str, str], label: Callable[[str], str] | None = None, *, most: int = 2
) -> str:
    """:func:`changes` as one line: the first ``most`` phrases and how many more."""
    found = changes(old, new, label) or ["fingerprint changed"]
    text = "; ".join(found[:most])
    return text + (f" (+{len(found) - most} more)" if len(found) > most else "")


# --- what a task contributes (mixed into nbflow.dag.Task) --------------------------------------


class Fingerprinted:
    """The fingerprint of a task: kinds override :meth:`code_parts` and say what they receive."""

    kind: str
    task_id: str
    pipeline_name: str
    reads: list[str]
    cache: bool
    cache_ttl: float | None
    reads_base: str

    def references(self) -> Iterable[Any]:  # provided by Task
        raise NotImplementedError

    def code_fingerprint(self) -> str:  # provided by Task (kinds override)
        raise NotImplementedError

    def set_cache_options(
        self, task_id: str, reads: Any, cache: Any, cache_ttl: float | None, base_dir: str, where: str
    ) -> None:
        """Check and keep ``reads=`` (paths or globs), ``cache=`` and ``cache_ttl=`` (seconds)."""
        paths = [reads] if isinstance(reads, (str, os.PathLike)) else list(reads or ())
        if not all(isinstance(r, (str, os.PathLike)) and str(r) for r in paths):
            raise DefinitionError(
                f"reads of task '{task_id}' must be file paths or glob patterns, got {reads!r}",
                where=where,
                hint='e.g. reads=["data/raw.csv", "conf/*.yaml"] (relative to the pipeline file\'s folder)',
            )
        if not isinstance(cache, bool):
            raise DefinitionError(f"cache of task '{task_id}' must be True or False, got {cache!r}", where=where)
        self.reads, self.cache, self.cache_ttl = [os.fspath(r) for r in paths], cache, cache_ttl
        self.reads_base = base_dir

    def code_parts(self, memo: dict) -> dict[str, str]:
        """Fingerprint parts of what this task runs, without values or upstream (kinds override;
        ``memo`` lives for one decision pass: what many tasks share is computed once in it)."""
        return {"code": self.code_fingerprint()}

    def received_params(self, params: Mapping[str, Any]) -> Iterable[str]:
        """Names of the run parameters this task receives (kinds override)."""
        return [ref.name for ref in self.references() if isinstance(ref, ParamRef)]

    def received_context(self) -> Iterable[str]:
        """Names of the run's values (``run_id``, ``logical_date`` ...) this task receives."""
        return ()

    def never_reused(self) -> str | None:
        """Why this task always runs in an incremental run (None: it may be reused)."""
        return "cache=False" if not self.cache else None

    def part_label(self, key: str) -> str:
        """How a reason names the part ``key`` (kinds whose keys are not readable override)."""
        return key.partition(":")[2]

    def cache_parts(
        self, params: Mapping[str, Any], context: Mapping[str, Any], memo: dict | None = None
    ) -> dict[str, str]:
        """This task's fingerprint parts except its upstream outputs: its code, the parameters
        and run values it receives, the files it ``reads``. Raises
        :class:`~nbflow.fingerprint.Unhashable` naming a value without a deterministic hash.

        Computed afresh at every decision (a notebook edited or a module constant changed in a
        kernel since the pipeline was defined counts); ``memo`` (one decision pass) shares work."""
        memo = {} if memo is None else memo
        parts = {"kind": self.kind, **self.code_parts(memo)}
        templated, templated_context = inputs_of(text for text, _ in getattr(self, "templates", {}).values())
        received = set(self.received_params(params)) | (set(params) if "*" in templated else templated & set(params))
        for name in sorted(received):
            parts[f"param:{name}"] = short(params.get(name), f"parameter {name}")
        for name in dict.fromkeys([*self.received_context(), *sorted(templated_context)]):
            parts[f"context:{name}"] = short(context.get(name), name)
        parts.update(reads_parts(self.rendered_reads(params, context), self.reads_base, memo))
        return parts

    def rendered_reads(self, params: Mapping[str, Any], context: Mapping[str, Any]) -> list[str]:
        """``reads=`` with its templates (``data/{{ ds }}.csv``) rendered for the run."""
        if not any(is_template(r) for r in self.reads):
            return self.reads
        values = run_values(params, context, task_id=self.task_id, pipeline=self.pipeline_name)
        return [render(r, values, task=self.task_id, field="reads") for r in self.reads]
