"""The one record of how an attempt ended, from the task kind to the store.

A task kind makes an :class:`AttemptRecord` (``ok``, the reason, the failing cell, the
exception, the output notebook, what it saved); the worker completes the same object with
where and when it ran (:meth:`AttemptRecord.stamp`); the executor carries it back (as plain
data through :meth:`to_dict`/:meth:`from_dict` when it crosses a process or a machine, or
as ``result.json`` in the attempt folder); the engine writes it with :meth:`to_row`. A new
field is one line here (and a column, if it is stored).
"""

from __future__ import annotations

import dataclasses
import errno
import traceback as tb_module
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from nbflow.exceptions import ArtifactStoreError, FailNow, Skip

__all__ = ["AttemptRecord", "RECORD_FIELDS", "ATTEMPT_COLUMNS", "TASK_COLUMNS", "STORAGE_ERRNOS"]

#: errno values that say a file system cannot take a write (read-only, full, refused, failing)
STORAGE_ERRNOS = frozenset({errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EIO})


@dataclass
class AttemptRecord:
    """How one attempt ended: small, picklable plain data."""

    ok: bool
    #: None on success (or ``stopped_early``), else why it failed: ``cell_error``, ``cell_timeout``,
    #: ``task_timeout``, ``kernel_died``, ``exception``, ``exit_code``, ``fail_now``, ... (states.REASONS)
    reason: str | None = None
    message: str = ""  # one line for humans
    ename: str | None = None
    evalue: str | None = None
    traceback: str | None = None
    cell_index: int | None = None  # the failing cell of the SOURCE notebook (injected cells not counted)
    exec_count: int | None = None
    output_uri: str | None = None  # the executed notebook
    artifacts: list[dict[str, Any]] = field(default_factory=list)  # ArtifactRef.as_dict() of what it saved
    #: ``{"name", "value"}`` of what it recorded with ``nbflow.metric`` (and scalars it saved):
    #: a finite number, a bool or a short string; the engine writes them to the ``metrics`` table
    metrics: list[dict[str, Any]] = field(default_factory=list)
    #: names of the assets it updated (the task's ``produces`` and ``save(..., asset=)``); the
    #: engine records an asset event for each when the attempt succeeded
    assets: list[str] = field(default_factory=list)
    kernel_pid: int | None = None
    #: a branch or short-circuit task's choice: the ids of the downstream tasks to follow (None:
    #: not a branch, or a short-circuit that goes on); the engine skips the others
    follow: list[str] | None = None
    # -- identity, place and time: filled by the worker (stamp) ------------------------------
    key: str = ""
    run_id: int = 0
    task_id: str = ""
    try_number: int = 0
    log_uri: str = ""
    hostname: str = ""
    pid: int = 0
    started_at: float = 0.0
    ended_at: float = 0.0

    @classmethod
    def failure(
        cls, reason: str, message: str, *, ename: str | None = None, evalue: str | None = None, **fields: Any
    ) -> AttemptRecord:
        """A failed attempt (``evalue`` defaults to ``message`` when an exception name is given)."""
        if ename is not None and evalue is None:
            evalue = message
        return cls(ok=False, reason=reason, message=message, ename=ename, evalue=evalue, **fields)

    @classmethod
    def skipped(cls, message: str) -> AttemptRecord:
        """An attempt that skipped itself (``nbflow.Skip``, ``skip_on_exit_code``, a ``soft_fail``
        sensor's timeout): the task ends ``skipped`` with ``message`` as its reason, no retry."""
        return cls(ok=False, reason="skipped", message=message, ename="Skip", evalue=message)

    @classmethod
    def from_exception(cls, exc: BaseException, *, skip_frames: int = 0, reason: str | None = None) -> AttemptRecord:
        """A failed attempt describing ``exc`` (``fail_now`` for :class:`FailNow`, else ``reason`` or
        ``exception``); a skipped one for :class:`Skip`."""
        if isinstance(exc, Skip):
            return cls.skipped(str(exc) or "skipped by nbflow.Skip")
        tb = exc.__traceback__
        for _ in range(skip_frames):
            if tb is not None and tb.tb_next is not None:
                tb = tb.tb_next
        name = type(exc).__name__
        return cls(
            ok=False,
            reason="fail_now" if isinstance(exc, FailNow) else (reason or "exception"),
            message=f"{name}: {exc}",
            ename=name,
            evalue=str(exc),
            traceback="".join(tb_module.format_exception(type(exc), exc, tb)),
        )

    @classmethod
    def storage_failure(cls, exc: OSError, path: str | None = None) -> AttemptRecord:
        """A ``storage_error``: the artifact root refused a write (or, for a store behind a URL,
        could not be reached: :class:`~nbflow.exceptions.ArtifactStoreError`); names what could not be
        written or read, and the OS or store client's error."""
        if isinstance(exc, ArtifactStoreError):  # it says what it tried where, and the fix
            message = f"{exc}; {exc.hint}"
        else:
            where = path or exc.filename or "the attempt folder"
            message = (
                f"cannot write {where}: {exc.strerror or exc} (errno {exc.errno}); "
                "check the artifact root (NBFLOW_ARTIFACT_ROOT)"
            )
        return cls.failure(
            "storage_error",
            message,
            ename=type(exc).__name__,
            evalue=str(exc),
        )

    def stamp(
        self,
        *,
        key: str,
        run_id: int,
        task_id: str,
        try_number: int,
        log_uri: str,
        hostname: str,
        pid: int,
        started_at: float,
        ended_at: float,
    ) -> AttemptRecord:
        """Fill in which attempt this was, where and when it ran (the worker's part); returns self."""
        self.key, self.run_id, self.task_id, self.try_number = key, run_id, task_id, try_number
        self.log_uri, self.hostname, self.pid = log_uri, hostname, pid
        self.started_at, self.ended_at = started_at, ended_at
        return self

    @property
    def duration(self) -> float:
        """Seconds the attempt ran."""
        return self.ended_at - self.started_at

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON and msgpack can carry it); its fields are plain already, so this
        is a shallow copy, not ``dataclasses.asdict``'s deep one."""
        return {name: getattr(self, name) for name in RECORD_FIELDS}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AttemptRecord:
        """The record :meth:`to_dict` made (other keys, e.g. added by a transport, are ignored;
        missing ones take their defaults, so a record written by an older worker still reads)."""
        return cls(**{name: data[name] for name in RECORD_FIELDS if name in data})

    def to_row(self) -> dict[str, Any]:
        """The attempt row's columns (``task_attempts``) this record sets; :data:`TASK_COLUMNS`
        of it, plus ``duration``, are the task instance's."""
        row = {name: getattr(self, name) for name in _ROW_FIELDS}
        row["start_date"], row["end_date"] = _dt(self.started_at), _dt(self.ended_at)
        row["log_uri"] = self.log_uri or None
        row["message"] = self.message or None
        return row

    def task_fields(self) -> dict[str, Any]:
        """The task instance's columns this record sets (a subset of :meth:`to_row`, plus the duration)."""
        row = self.to_row()
        return {**{name: row[name] for name in TASK_COLUMNS}, "duration": self.duration}


def _dt(ts: float) -> datetime | None:
    return datetime.fromtimestamp(ts, UTC) if ts else None


RECORD_FIELDS = tuple(f.name for f in dataclasses.fields(AttemptRecord))
_ROW_FIELDS = (
    "reason",
    "ename",
    "evalue",
    "traceback",
    "cell_index",
    "exec_count",
    "output_uri",
    "hostname",
    "pid",
    "kernel_pid",
)
#: columns of ``task_attempts`` that :meth:`AttemptRecord.to_row` returns
ATTEMPT_COLUMNS = (*_ROW_FIELDS, "start_date", "end_date", "log_uri", "message")
#: of those, the columns a task instance row takes over from its latest attempt
TASK_COLUMNS = ("start_date", "end_date", "log_uri", "output_uri", "hostname", "pid")
