"""Run ONE attempt of one task, on whatever machine, and return a small result record.

The worker needs the task (pickled by value when it crosses a process), the upstream
artifacts' references, the run's parameters and the artifact root; never the metadata
database. It writes the log, the output notebook and the artifacts under the attempt's
folder (see :mod:`nbflow.artifacts`) and returns the task kind's
:class:`~nbflow.record.AttemptRecord`, stamped with where and when it ran.

Output of ``print`` in Python tasks goes to the task's log through a stdout/stderr router
that sends each thread's writes to the log of the task that thread is running; other
threads write where they always did.

**Storage errors are the attempt's, not the worker's.** When the attempt folder cannot be
written (a read-only or full artifact root, an object store that refuses the upload) the
attempt ends ``storage_error`` with the path and the OS error, its retries apply, and the
worker process goes on with the next attempt (it used to die, and the attempt looked like a
lost worker).
"""

from __future__ import annotations

import io
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeGuard

from nbflow import artifacts, codeship, procs, remotefs, vault
from nbflow.artifacts import UpstreamOutput, attempt_dir
from nbflow.record import STORAGE_ERRNOS, AttemptRecord
from nbflow.tasks.base import AttemptContext, BaseTask

HOSTNAME = socket.gethostname()


@dataclass
class WorkItem:
    """One attempt to run: what the engine hands an executor."""

    key: str
    pipeline: str
    run_id: int
    task_id: str
    try_number: int
    task: BaseTask | None
    upstream: dict[str, tuple[str, list[dict[str, Any]]]]
    params: dict[str, Any]
    artifact_root: str
    #: seconds from SIGTERM to SIGKILL for the attempt's processes (the driver's setting)
    kill_grace: float
    context: dict[str, Any] = field(default_factory=dict)
    queue: str = "default"
    resources: dict[str, float] = field(default_factory=dict)
    sys_path: list[str] = field(default_factory=list)
    payload: bytes | None = None
    #: the source text of the files the pickled task's code comes from (see nbflow.codeship)
    sources: dict[str, str] = field(default_factory=dict)
    #: Also write the result record to ``result.json`` in the attempt folder, so a driver
    #: restarted while the attempt ran can still learn how it ended.
    durable_result: bool = False

    def pack(self) -> WorkItem:
        """A copy whose task is cloudpickled (for another process or machine)."""
        if self.payload is not None:
            return self
        payload, sources = codeship.dumps(self.task)
        return WorkItem(**{**self.__dict__, "task": None, "payload": payload, "sources": sources})

    def unpack(self) -> BaseTask:
        """The task, unpickled on the worker (after adding the pipeline's folder to sys.path)."""
        if self.task is None:
            import cloudpickle

            for path in self.sys_path:
                if path not in sys.path:
                    sys.path.insert(0, path)
            codeship.register_sources(self.sources)
            self.task = cloudpickle.loads(self.payload)
        return self.task


def attempt_paths(item: WorkItem) -> tuple[str, str]:
    """(attempt folder, log path) of a work item."""
    folder = attempt_dir(item.artifact_root, item.pipeline, item.run_id, item.task_id, item.try_number)
    return folder, f"{folder}/log.txt"


# --- attempts running in this process, so they can be cancelled from another thread ----------

_running: dict[str, set[int]] = {}
_cancelled: dict[str, float] = {}  # running attempts asked to stop -> their kill grace
_running_lock = threading.Lock()


def kill_attempt(key: str, grace: float) -> bool:
    """Stop the process groups (kernel, shell, timeout child) of a running attempt.

    SIGTERM now, SIGKILL after ``grace`` seconds from a background thread (a caller on an
    event loop is not blocked). Returns whether the attempt was running here; its record
    then reports ``cancelled``.
    """
    with _running_lock:
        if key not in _running:
            return False
        _cancelled[key] = grace
        groups = set(_running[key])
    procs.terminate_later(groups, grace, name=f"nbflow-kill-{key}")
    return True


def running_attempts() -> list[str]:
    """Keys of the attempts running in this process."""
    with _running_lock:
        return list(_running)


def run_work_item(item: WorkItem, on_process: Callable[[int], None] | None = None) -> AttemptRecord:
    """Execute one attempt and describe it; exceptions of the task never escape.

    ``on_process(pgid)`` hears of every process group the attempt starts (as :func:`kill_attempt`
    does), e.g. so that a pool can kill them if this worker process dies.
    """
    started = time.time()
    with _running_lock:
        _running[item.key] = set()
    try:
        result = _run(item, _register(item.key, on_process))
    except Exception as exc:  # the worker's own part failed (storage): still a record, the worker lives on
        result = _worker_failure(item, exc, started)
    finally:
        with _running_lock:
            _running.pop(item.key, None)
            cancelled = _cancelled.pop(item.key, None) is not None
    if cancelled:
        result.ok, result.reason, result.message = False, "cancelled", f"cancelled ({result.message or 'killed'})"
    if item.durable_result:
        try:
            write_result(result, attempt_paths(item)[0])
        except OSError as exc:  # the driver still gets the record (an event, the future's result)
            if result.ok or result.reason != "storage_error":
                result = AttemptRecord.storage_failure(exc, f"{attempt_paths(item)[0]}/result.json").stamp(
                    **_identity(result)
                )
    return result


def _is_storage(exc: BaseException, folder: str) -> TypeGuard[OSError]:
    """Whether ``exc`` is the attempt folder refusing a write (not an error of the task's own files)."""
    if not isinstance(exc, OSError):
        return False
    filename = str(exc.filename or "")
    return filename.startswith(folder) or (not filename and exc.errno in STORAGE_ERRNOS)


def _worker_failure(item: WorkItem, exc: Exception, started: float) -> AttemptRecord:
    folder = attempt_paths(item)[0]
    if isinstance(exc, OSError) and (_is_storage(exc, folder) or exc.errno in STORAGE_ERRNOS):
        record = AttemptRecord.storage_failure(exc)
    else:
        record = AttemptRecord.from_exception(exc)
        record.message = f"nbflow's worker failed running the attempt: {record.message}"
    return record.stamp(
        key=item.key,
        run_id=item.run_id,
        task_id=item.task_id,
        try_number=item.try_number,
        log_uri=attempt_paths(item)[1],
        hostname=HOSTNAME,
        pid=os.getpid(),
        started_at=started,
        ended_at=time.time(),
    )


def _identity(record: AttemptRecord) -> dict[str, Any]:
    return {
        name: getattr(record, name)
        for name in ("key", "run_id", "task_id", "try_number", "log_uri", "hostname", "pid", "started_at", "ended_at")
    }


def _register(key: str, also: Callable[[int], None] | None) -> Callable[[int], None]:
    def register(pgid: int) -> None:
        with _running_lock:
            if key in _running:
                _running[key].add(pgid)
            grace = _cancelled.get(key)
        if also is not None:
            also(pgid)
        if grace is not None:  # cancelled while this process was starting (a kernel): it goes too
            procs.terminate_later({pgid}, grace, name=f"nbflow-kill-{key}")

    return register


def write_result(result: AttemptRecord, folder: str) -> None:
    """Store a result record as ``result.json`` in the attempt folder (a path or fsspec URL)."""
    artifacts.write_bytes(f"{folder}/result.json", json.dumps(result.to_dict()).encode(), atomic=True)


def read_result(folder: str) -> AttemptRecord | None:
    """The result record a worker stored for an attempt; None when there is none or it cannot be read now."""
    try:
        return AttemptRecord.from_dict(json.loads(artifacts.read_bytes(f"{folder}/result.json")))
    except OSError:  # missing, or its store away (ArtifactStoreError): asked again later
        return None


def mark_started(item: WorkItem, host: str, pid: int) -> None:
    """Write ``started.json`` (host, pid, time) into the attempt folder before the attempt runs.

    When a worker dies, an attempt with this file had started (its loss is a lost-worker try);
    one without it was still waiting in the worker's queue (it is resubmitted, no try is
    charged). Dask workers write it (:func:`nbflow.executors.dask.run_on_worker`); a folder
    that refuses the write is the attempt's ``storage_error`` soon after, so it is ignored here.
    """
    record = {"key": item.key, "host": host, "pid": pid, "at": time.time()}
    try:
        artifacts.write_bytes(f"{attempt_paths(item)[0]}/started.json", json.dumps(record).encode())
    except OSError:
        pass


def read_started(folder: str) -> dict[str, Any] | None:
    """The start marker of an attempt (``key``, ``host``, ``pid``, ``at``), None if it never started."""
    try:
        return json.loads(artifacts.read_bytes(f"{folder}/started.json"))
    except (OSError, ValueError):
        return None


def _run(item: WorkItem, register: Callable[[int], None]) -> AttemptRecord:
    """Run in the attempt folder; for a remote root (``s3://``, ``file://`` ...) in a local
    staging folder that is uploaded when the attempt ends (logs then arrive at the end)."""
    remote, _ = attempt_paths(item)
    if "://" not in item.artifact_root:
        return _run_in(item, remote, register)
    import shutil
    import tempfile

    staging = tempfile.mkdtemp(prefix="nbflow-attempt-")
    try:
        result = _run_in(item, staging, register)
        remotefs.upload_folder(staging, remote)  # a store away: storage_error, never a success without its files
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    moved = lambda uri: uri and uri.replace(staging, remote)  # noqa: E731
    result.log_uri, result.output_uri = moved(result.log_uri), moved(result.output_uri)
    result.artifacts = [{**a, "uri": moved(a["uri"])} for a in result.artifacts]
    return result


def _metrics(folder: str) -> list[dict[str, Any]]:
    """What the attempt recorded with ``nbflow.metric`` (here, or in its notebook's kernel)."""
    try:
        return artifacts.recorded_metrics(folder)
    except (OSError, ValueError) as exc:  # an unreadable _metrics.json costs the metrics, not the attempt
        sys.stderr.write(f"nbflow: the metrics of this attempt could not be read: {exc}\n")
        return []


def _run_in(item: WorkItem, folder: str, register: Callable[[int], None]) -> AttemptRecord:
    started = time.time()
    log_path = f"{folder}/log.txt"
    ctx = AttemptContext(
        pipeline=item.pipeline,
        run_id=item.run_id,
        task_id=item.task_id,
        try_number=item.try_number,
        attempt_dir=folder,
        log_path=log_path,
        params=item.params,
        run_context=item.context,
        upstream={tid: UpstreamOutput(style, refs) for tid, (style, refs) in item.upstream.items()},
        kill_grace=item.kill_grace,
        register_process=register,
    )
    with capture_output(log_path) as log:
        artifacts.bind(artifact_dir=ctx.artifact_dir, pipeline=item.pipeline, run_id=item.run_id, task_id=item.task_id)
        task = None
        vault.carry(item.context.get("secrets") or {})  # the connections/variables it may open (see nbflow.vault)
        try:
            task = item.unpack()
        except Exception as exc:  # the worker cannot import what the task needs
            record = AttemptRecord.from_exception(exc)
            record.message = (
                f"worker {HOSTNAME} cannot load task '{item.task_id}': {record.message}; "
                f"modules the pipeline imports (from {', '.join(item.sys_path) or 'its folder'}) must be "
                "importable on every worker: use a shared folder or install them there"
            )
        else:
            try:
                record = task.execute(ctx)
            except Exception as exc:  # a kind's own bug, or the attempt folder refusing a write
                record = (
                    AttemptRecord.storage_failure(exc)
                    if _is_storage(exc, folder)
                    else AttemptRecord.from_exception(exc)
                )
        finally:
            saved = [r.as_dict() for r in (artifacts.current_context() or {}).get("saved", [])]
            metrics = _metrics(ctx.artifact_dir)
            assets = artifacts.recorded_assets(ctx.artifact_dir, [a.name for a in getattr(task, "produces", ())])
            artifacts.unbind()
            vault.carry(None)
        record.artifacts = [*saved, *record.artifacts]
        record.metrics = [*metrics, *record.metrics]
        record.assets = [*assets, *(n for n in record.assets if n not in assets)]  # produces=, save(asset=)
        if not record.ok and record.traceback and record.reason not in ("cell_error", "storage_error"):
            sys.stderr.write(record.traceback)
    vault.scrub_files(log_path, record.output_uri)  # what kernels and subprocesses wrote: secrets as ***
    record.message, record.evalue, record.traceback = vault.redact_each(record.message, record.evalue, record.traceback)
    if log.error is not None:  # nothing counts as done whose log could not be written
        record = AttemptRecord.storage_failure(log.error, log_path)
    return record.stamp(
        key=item.key,
        run_id=item.run_id,
        task_id=item.task_id,
        try_number=item.try_number,
        log_uri=log_path,
        hostname=HOSTNAME,
        pid=os.getpid(),
        started_at=started,
        ended_at=time.time(),
    )


# --- log capture -------------------------------------------------------------------------------


class _LazyLog(io.TextIOBase):
    """A log file opened on the first write (most no-op tasks print nothing).

    A log that cannot be written does not break the task's ``print``: the first error is kept
    (:attr:`error`, the attempt then ends ``storage_error``) and later writes are dropped.
    """

    def __init__(self, path: str):
        self.path = path
        self._fh: io.TextIOWrapper | None = None
        self.error: OSError | None = None

    def write(self, text: str) -> int:
        if self.error is not None:
            return len(text)
        try:
            if self._fh is None:
                os.makedirs(os.path.dirname(self.path), exist_ok=True)
                # line-buffered, so `nbflow logs --follow` sees lines as they are printed
                self._fh = open(self.path, "a", encoding="utf-8", errors="replace", buffering=1)  # noqa: SIM115
            self._fh.write(vault.redact(text))
            return len(text)
        except OSError as exc:
            self.error = exc
            return len(text)

    def flush(self) -> None:
        if self._fh is not None and self.error is None:
            try:
                self._fh.flush()
            except OSError as exc:
                self.error = exc

    def close(self) -> None:
        if self._fh is not None:
            try:
                self._fh.close()
            except OSError as exc:
                self.error = self.error or exc
            self._fh = None


class _Router(io.TextIOBase):
    """A stand-in for sys.stdout/stderr that routes each thread's writes to its task log."""

    def __init__(self, original: Any):
        self.original = original
        self.targets: dict[int, _LazyLog] = {}

    def _target(self) -> Any:
        return self.targets.get(threading.get_ident(), self.original)

    def write(self, text: str) -> int:
        return self._target().write(text)

    def flush(self) -> None:
        target = self._target()
        if target is not None:
            target.flush()

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        return self.original.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.original, "encoding", "utf-8")


_install_lock = threading.Lock()


def _install_routers() -> tuple[_Router, _Router]:
    # called with _install_lock held
    if not isinstance(sys.stdout, _Router):
        sys.stdout = _Router(sys.stdout)
    if not isinstance(sys.stderr, _Router):
        sys.stderr = _Router(sys.stderr)
    return sys.stdout, sys.stderr


class capture_output:  # noqa: N801 - used like a function
    """Within the block, this thread's stdout and stderr go to ``log_path``."""

    def __init__(self, log_path: str):
        self.log = _LazyLog(log_path)

    def __enter__(self) -> _LazyLog:
        ident = threading.get_ident()
        with _install_lock:
            self.routers = _install_routers()
            for router in self.routers:
                router.targets[ident] = self.log
        return self.log

    def __exit__(self, *exc: Any) -> None:
        ident = threading.get_ident()
        with _install_lock:
            for router in self.routers:
                router.targets.pop(ident, None)
            # Hand the original streams back once no thread captures: a Jupyter kernel's
            # OutStream must stay sys.stdout for its later cells' output to show.
            if not any(r.targets for r in self.routers):
                if sys.stdout is self.routers[0]:
                    sys.stdout = self.routers[0].original
                if sys.stderr is self.routers[1]:
                    sys.stderr = self.routers[1].original
        self.log.close()
