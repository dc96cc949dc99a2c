"""Values that flow between tasks, stored under one fsspec root.

Layout of one attempt under the root (a local folder or any fsspec URL)::

    {root}/{pipeline}/run-{run_id}/{task_id}/try-{n}/
        log.txt               the task's stdout/stderr
        output.ipynb          the executed notebook (notebook tasks)
        artifacts/NAME.json   a JSON value that round-trips exactly
        artifacts/NAME.pkl    anything else, cloudpickled
        artifacts/_manifest.json   what a notebook's kernel saved
        artifacts/_metrics.json    the metrics a notebook's kernel recorded
        artifacts/_assets.json     the assets a notebook's kernel updated (save(..., asset=))

Inside a task, :func:`save` publishes a named value and :func:`load` resolves an
upstream value that arrived as a reference (or returns a plain value unchanged), so
a notebook works the same whether it is run by nbflow or by hand. :func:`metric` records a
named scalar (a number, a bool or a short string) for ``nbflow compare``; scalars given to
:func:`save` are recorded as metrics too. A worker carries them back in the attempt record
(``AttemptRecord.metrics``); the engine writes them to the store.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import numbers
import os
import posixpath
import sys
import threading
from dataclasses import dataclass
from typing import Any

from nbflow.remotefs import is_object_store, store_errors

REF_PREFIX = "nbflow-artifact:"
MANIFEST = "_manifest.json"
#: the saved value under which a notebook task publishes its output notebook's path (``handle.output_notebook``)
OUTPUT_NOTEBOOK = "_output_notebook"
METRICS = "_metrics.json"
ASSETS = "_assets.json"
#: longest string metric (characters) and metric name
METRIC_TEXT_LIMIT = 200
METRIC_NAME_LIMIT = 100
#: Largest JSON value (bytes) passed to a notebook as a literal parameter instead of a reference.
INLINE_LIMIT = 64 * 1024


@dataclass(frozen=True)
class ArtifactRef:
    """Where one stored value lives: ``uri`` (fsspec URL or path) and ``type`` (json|pickle)."""

    name: str
    uri: str
    type: str
    size: int
    #: sha256 of the stored bytes: the content hash incremental runs compare ("" when unknown)
    digest: str = ""

    def to_param(self) -> str:
        """The string form a notebook receives as a parameter; :func:`load` resolves it."""
        return f"{REF_PREFIX}{self.type}:{self.uri}"

    @classmethod
    def from_param(cls, text: str) -> ArtifactRef:
        """Parse :meth:`to_param` output."""
        kind, _, uri = text[len(REF_PREFIX) :].partition(":")
        return cls(name=uri.rsplit("/", 1)[-1].rsplit(".", 1)[0], uri=uri, type=kind, size=-1)

    def as_dict(self) -> dict[str, Any]:
        """Plain-data form (for result records and the store)."""
        return {"name": self.name, "uri": self.uri, "type": self.type, "size": self.size, "digest": self.digest}


def join(root: str, *parts: str) -> str:
    """Join path parts under an fsspec root."""
    return "/".join([root.rstrip("/"), *(p.strip("/") for p in parts)])


def attempt_dir(root: str, pipeline: str, run_id: int, task_id: str, try_number: int) -> str:
    """Folder of one attempt's log, output notebook and artifacts."""
    return join(root, pipeline, f"run-{run_id}", task_id, f"try-{try_number}")


def _json_roundtrips(value: Any) -> bytes | None:
    try:
        data = json.dumps(value, allow_nan=True).encode()
    except (TypeError, ValueError):
        return None
    return data if json.loads(data) == value else None


def write_value(folder: str, name: str, value: Any, *, internal: bool = False) -> ArtifactRef:
    """Store ``value`` as ``folder/NAME.json`` when JSON round-trips it, else as a pickle
    (``internal``: nbflow's own name such as :data:`OUTPUT_NOTEBOOK`, which starts with ``_``)."""
    if not name or "/" in name or (name.startswith("_") and not internal):
        raise ValueError(f"artifact name {name!r} must be non-empty, without '/', not starting with '_'")
    data = _json_roundtrips(value)
    kind = "json"
    if data is None:
        import cloudpickle

        data, kind = cloudpickle.dumps(value), "pickle"
    uri = join(folder, f"{name}.{'json' if kind == 'json' else 'pkl'}")
    write_bytes(uri, data)
    return ArtifactRef(name=name, uri=uri, type=kind, size=len(data), digest=hashlib.sha256(data).hexdigest())


def _is_local(uri: str) -> bool:
    return "://" not in uri


def write_bytes(uri: str, data: bytes, *, atomic: bool = False) -> None:
    """Write a file at a path or fsspec URL, creating its folder (plain file I/O for paths:
    fsspec's overhead is most of a small write). ``atomic``: through a temporary name and a
    rename, so a reader never sees half of it."""
    if _is_local(uri):
        os.makedirs(os.path.dirname(uri) or ".", exist_ok=True)
        target = f"{uri}.tmp" if atomic else uri
        try:
            with open(target, "wb") as fh:
                fh.write(data)
        except OSError:  # a full disk: leave no partial file behind to fill it for the next writer
            with contextlib.suppress(OSError):
                os.remove(target)
            raise
        if atomic:
            os.replace(target, uri)
        return
    import fsspec  # only for URL roots: its import costs every notebook kernel ~50 ms

    with store_errors(uri, "write"):
        fs, path = fsspec.core.url_to_fs(uri)
        if is_object_store(fs):  # one PUT: an object appears whole or not at all, and needs no folder
            fs.pipe_file(path, data)
            return
        fs.makedirs(posixpath.dirname(path), exist_ok=True)  # fsspec paths are '/'-separated
        with fs.open(f"{path}.tmp" if atomic else path, "wb") as fh:
            fh.write(data)
        if atomic:
            fs.mv(f"{path}.tmp", path)


def read_bytes(uri: str) -> bytes:
    """The contents of a file at a path or fsspec URL (FileNotFoundError when missing)."""
    if _is_local(uri):
        with open(uri, "rb") as fh:
            return fh.read()
    import fsspec

    with store_errors(uri, "read"), fsspec.open(uri, "rb") as fh:
        return fh.read()


def read_value(ref: ArtifactRef | dict[str, Any]) -> Any:
    """Load a stored value."""
    if isinstance(ref, dict):
        ref = ArtifactRef(**ref)
    data = read_bytes(ref.uri)
    if ref.type == "json":
        return json.loads(data)
    import cloudpickle

    return cloudpickle.loads(data)


def stored(uri: str, size: int | None = None) -> bool:
    """Whether a file (or folder, when ``size`` is None) exists at a path or fsspec URL, and
    a file has ``size`` bytes: an attempt's outputs that can still be read."""
    try:
        if _is_local(uri):
            if size is None:
                return os.path.isdir(uri)
            st = os.stat(uri)
            return st.st_size == size and os.access(uri, os.R_OK)
        import fsspec

        fs, path = fsspec.core.url_to_fs(uri)
        if size is None:
            return bool(fs.isdir(path))
        return int(fs.info(path).get("size", -1)) == size
    except (OSError, ValueError):
        return False


def read_manifest(folder: str) -> list[ArtifactRef]:
    """Artifacts a notebook kernel saved into ``folder`` (the last save of a name wins)."""
    try:
        saved = json.loads(read_bytes(join(folder, MANIFEST)))
    except FileNotFoundError:
        return []
    return list({d["name"]: ArtifactRef(**d) for d in saved}.values())


class UpstreamOutput:
    """What one upstream task produced, as seen by a downstream task on a worker.

    ``style`` is the upstream kind's ``value_style``: "single" (its value is the artifact
    named "return", or None), "dict" (all its artifacts by name) or "none".
    """

    def __init__(self, style: str, refs: list[ArtifactRef] | list[dict[str, Any]]):
        self.style = style
        if style == "mapped":  # a mapped task: each instance's {"style", "refs"}, in map-index order
            self.items = [UpstreamOutput(d["style"], d["refs"]) for d in refs]  # type: ignore[index]
            self.refs: dict[str, ArtifactRef] = {}
            return
        self.refs = {r.name: r for r in (x if isinstance(x, ArtifactRef) else ArtifactRef(**x) for x in refs)}

    def value(self, key: str | int | None = None) -> Any:
        """The upstream value, or one key of it (for "dict" style only that artifact is read).

        A mapped task's value is the list of its successful instances' values; an int ``key``
        is one instance's value, another key that key of each."""
        if self.style == "mapped":
            if isinstance(key, int):
                return self.items[key].value()
            return [item.value(key) for item in self.items]
        if self.style == "dict":
            if key is None:  # (a notebook's output notebook path only for who asks for it)
                return {name: read_value(ref) for name, ref in self.refs.items() if name != OUTPUT_NOTEBOOK}
            if key not in self.refs:
                raise KeyError(f"no artifact named {key!r}; saved: {', '.join(self.refs) or '(none)'}")
            return read_value(self.refs[key])
        whole: Any = read_value(self.refs["return"]) if self.style == "single" and "return" in self.refs else None
        if key is None:
            return whole
        try:
            return whole[key]
        except (KeyError, IndexError, TypeError) as exc:
            raise KeyError(f"upstream value {type(whole).__name__} has no key {key!r}") from exc

    def parameter(self, key: str | int | None = None) -> Any:
        """The value as a notebook parameter: small JSON values literally, others as references
        (a mapped task's: the list of its instances' parameters)."""
        if self.style == "mapped":
            if isinstance(key, int):
                return self.items[key].parameter()
            return [item.parameter(key) for item in self.items]
        if self.style == "dict":
            if key is None:
                return {name: _as_param(ref) for name, ref in self.refs.items() if name != OUTPUT_NOTEBOOK}
            if key not in self.refs:
                raise KeyError(f"no artifact named {key!r}; saved: {', '.join(self.refs) or '(none)'}")
            return _as_param(self.refs[key])
        if self.style == "single" and "return" in self.refs:
            ref = self.refs["return"]
            if key is None:
                return _as_param(ref)
            return read_value(ref)[key]
        if key is not None:
            raise KeyError(f"upstream value is None; cannot take key {key!r}")
        return None


def _as_param(ref: ArtifactRef) -> Any:
    if ref.type == "json" and 0 <= ref.size <= INLINE_LIMIT:
        return read_value(ref)
    return ref.to_param()


# --- the task context: where save() writes ---------------------------------------------

_local = threading.local()
_process_context: dict[str, Any] | None = None


def bind(**context: Any) -> None:
    """Bind the current task's context (``artifact_dir``, ``run_id``, ``task_id`` ...).

    Workers bind per thread; the hidden first cell of a notebook run binds per kernel.
    """
    global _process_context
    if context.pop("process_wide", False):
        _process_context = context
    else:
        _local.context = context


def unbind() -> None:
    """Forget this thread's task context."""
    _local.context = None


def current_context() -> dict[str, Any] | None:
    """The bound task context, or None outside a task."""
    return getattr(_local, "context", None) or _process_context


def save(name: str, value: Any, *, asset: str | None = None) -> Any:
    """Publish ``value`` under ``name`` for downstream tasks; returns ``value``.

    ``asset="model"``: this attempt also updates the asset ``model`` (as ``produces=`` does):
    when it succeeds, pipelines scheduled on that asset may run (:mod:`nbflow.assets`).
    Outside an nbflow run (a notebook opened by hand) this stores nothing, so the same
    notebook runs interactively unchanged.
    """
    ctx = current_context()
    if asset is not None:
        asset = _asset_name(asset)
    if ctx is None:
        return value
    if asset is not None and asset not in ctx.setdefault("assets", []):
        ctx["assets"].append(asset)
        if ctx.get("manifest", False):
            write_bytes(join(ctx["artifact_dir"], ASSETS), json.dumps(ctx["assets"]).encode(), atomic=True)
    ref = write_value(ctx["artifact_dir"], name, value)
    saved = ctx.setdefault("saved", [])
    saved.append(ref)
    if ctx.get("manifest", False):
        write_bytes(join(ctx["artifact_dir"], MANIFEST), json.dumps([r.as_dict() for r in saved]).encode(), atomic=True)
    try:  # a scalar saved is a metric too; anything else is only an artifact
        _record_metric(ctx, name, metric_value(name, value))
    except ValueError:
        pass
    return value


def metric_value(name: str, value: Any) -> float | bool | str:
    """``value`` as a metric (a finite number, a bool, or a string of at most
    :data:`METRIC_TEXT_LIMIT` characters); ValueError naming the metric and the fix otherwise."""
    if not isinstance(name, str) or not name or len(name) > METRIC_NAME_LIMIT:
        raise ValueError(f"metric name {name!r} must be a non-empty string of at most {METRIC_NAME_LIMIT} characters")
    if isinstance(value, bool) or (getattr(value, "dtype", None) is not None and value.dtype.kind == "b"):
        return bool(value)
    if isinstance(value, numbers.Real):
        try:
            number = float(value)
        except (OverflowError, ValueError):
            number = math.inf
        if not math.isfinite(number):
            raise ValueError(
                f"metric {name!r} is {value!r}: a metric must be a finite number; "
                f"record str(value) to keep a note of it, or nbflow.save({name!r}, value) for an artifact only"
            )
        return int(value) if isinstance(value, numbers.Integral) and abs(number) < 2**53 else number
    if isinstance(value, str):
        if len(value) > METRIC_TEXT_LIMIT:
            raise ValueError(
                f"metric {name!r} is a string of {len(value)} characters (at most {METRIC_TEXT_LIMIT}): "
                f"shorten it, or use nbflow.save({name!r}, value) to keep it as an artifact"
            )
        return value
    raise ValueError(
        f"metric {name!r} is a {type(value).__name__}: a metric is a number, a bool or a string of at most "
        f"{METRIC_TEXT_LIMIT} characters; pass one (e.g. float(x)), or use nbflow.save({name!r}, value) for "
        "an artifact"
    )


def metric(name: str, value: Any) -> Any:
    """Record ``value`` as the metric ``name`` of this attempt (shown by ``nbflow compare``);
    returns ``value``. A number, a bool or a short string, else :class:`ValueError` saying so.
    Outside an nbflow run this only checks the value, so a notebook runs by hand unchanged."""
    checked = metric_value(name, value)
    ctx = current_context()
    if ctx is not None:
        _record_metric(ctx, name, checked)
    return value


def _record_metric(ctx: dict[str, Any], name: str, value: float | bool | str) -> None:
    metrics = ctx.setdefault("metrics", {})
    metrics.pop(name, None)  # the last value of a name wins, in the order of the last records
    metrics[name] = value
    if ctx.get("manifest", False):
        data = json.dumps([{"name": n, "value": v} for n, v in metrics.items()]).encode()
        write_bytes(join(ctx["artifact_dir"], METRICS), data, atomic=True)


def recorded_metrics(folder: str | None = None) -> list[dict[str, Any]]:
    """The metrics of this thread's task (``{"name", "value"}``), followed by those a notebook
    kernel recorded into ``folder`` (its ``_metrics.json``), the last of a name winning."""
    merged: dict[str, Any] = dict((current_context() or {}).get("metrics", {}))
    if folder is not None:
        try:
            for item in json.loads(read_bytes(join(folder, METRICS))):
                merged.pop(item["name"], None)
                merged[item["name"]] = item["value"]
        except FileNotFoundError:
            pass
    return [{"name": n, "value": v} for n, v in merged.items()]


def _asset_name(asset: Any) -> str:
    from nbflow.assets import check_asset_name  # the same rule as produces= (a DefinitionError with the fix)

    return check_asset_name(getattr(asset, "name", asset))  # an nbflow.Asset, or its name


def recorded_assets(folder: str | None = None, declared: list[str] | None = None) -> list[str]:
    """The assets an attempt updated, each once: ``declared`` (its task's ``produces``), those
    this thread's task named with ``save(..., asset=)``, then those a notebook kernel recorded
    into ``folder`` (its ``_assets.json``; unreadable, it costs these events, not the attempt)."""
    names: list[str] = list(declared or [])
    names += [n for n in (current_context() or {}).get("assets", []) if n not in names]
    if folder is not None:
        try:
            names += [n for n in json.loads(read_bytes(join(folder, ASSETS))) if n not in names]
        except FileNotFoundError:
            pass
        except (OSError, ValueError) as exc:
            sys.stderr.write(f"nbflow: the assets this attempt saved could not be read: {exc}\n")
    return names


def load(value: Any) -> Any:
    """Resolve an upstream value: references are loaded, dicts and lists of them too (a mapped
    task's value is a list), plain values pass."""
    if isinstance(value, str) and value.startswith(REF_PREFIX):
        return read_value(ArtifactRef.from_param(value))
    if isinstance(value, ArtifactRef):
        return read_value(value)
    if isinstance(value, dict):
        return {k: load(v) for k, v in value.items()}
    if isinstance(value, list):  # a mapped task's value: one item per instance
        return [load(v) for v in value]
    return value
