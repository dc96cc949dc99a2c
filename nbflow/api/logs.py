"""Task logs: a byte range, or the last lines, of one attempt's log file.

Logs live under the fsspec artifact root (a local folder or any URL), and may be large (a
chatty task writes hundreds of MB), so a read never loads more of the file than it returns:
a byte range is one seek and one bounded read, and the last ``tail`` lines are found by
reading blocks backwards from the end. Chunk edges are moved to UTF-8 character starts, so
``end`` is always a place where the next read can start without splitting a character.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nbflow import vault
from nbflow.api.runs import open_store
from nbflow.api.secrets import mask_stored_secrets
from nbflow.config import Settings
from nbflow.exceptions import TryNotFoundError, UnknownTaskError
from nbflow.remotefs import store_errors
from nbflow.store import Store

#: bytes read per step when looking backwards for line ends
BLOCK = 64 * 1024


@dataclass(frozen=True)
class LogChunk:
    """A piece of a log: ``text`` is bytes ``[start, end)`` of a file of ``size`` bytes.

    ``truncated``: the piece stops short of what was asked for (bytes remain after ``end``
    for a range read, or the byte limit cut the ``tail`` lines); read on from ``end``.
    ``finished``: the try has ended, so the log grows no more (a reader may stop following it).
    """

    text: str
    start: int
    end: int
    size: int
    truncated: bool
    try_number: int | None
    finished: bool = False


def read_log(
    run_id: int,
    task_id: str,
    *,
    try_number: int | None = None,
    offset: int = 0,
    limit: int | None = None,
    tail: int | None = None,
    store: Store | None = None,
) -> str:
    """The log text of one attempt (default: the latest) of a task: from byte ``offset`` on
    (at most ``limit`` bytes), or its last ``tail`` lines. See :func:`log_chunk`."""
    return log_chunk(run_id, task_id, try_number=try_number, offset=offset, limit=limit, tail=tail, store=store).text


def log_chunk(
    run_id: int,
    task_id: str,
    *,
    try_number: int | None = None,
    offset: int = 0,
    limit: int | None = None,
    tail: int | None = None,
    store: Store | None = None,
) -> LogChunk:
    """A byte range (``offset``, at most ``limit`` bytes; no limit: to the end) or the last
    ``tail`` lines (at most ``limit`` bytes of them) of a task's log, with where it starts and ends.

    :class:`UnknownTaskError` for a task the run does not have, :class:`TryNotFoundError`
    for a try it does not have; a task not tried yet has an empty log.
    """
    store = store or open_store()
    run = store.get_run(run_id)
    attempts = store.attempts(run_id, task_id)
    if not attempts:
        rows = {r["task_id"]: r for r in store.task_instances(run_id)}
        if task_id not in rows:
            raise UnknownTaskError(run["pipeline"], task_id, list(rows), where=f"run {run_id}")
        reused = rows[task_id]["reused_run_id"]
        if reused is not None and try_number is None:  # cached: the log of the attempt it reuses
            return log_chunk(
                reused,
                task_id,
                try_number=rows[task_id]["reused_try"],
                offset=offset,
                limit=limit,
                tail=tail,
                store=store,
            )
        if try_number is not None:
            raise TryNotFoundError(run_id, task_id, try_number, [])
        return LogChunk("", 0, 0, 0, False, None)
    if try_number is None:
        attempt = attempts[-1]
    else:
        matching = [a for a in attempts if a["try_number"] == try_number]
        if not matching:
            raise TryNotFoundError(run_id, task_id, try_number, [a["try_number"] for a in attempts])
        attempt = matching[0]
    uri = attempt["log_uri"] or _default_log(store.settings, run["pipeline"], run_id, task_id, attempt["try_number"])
    import fsspec

    with store_errors(uri, "read"):  # a store that is away: ArtifactStoreError, said as such by the front doors
        fs, path = fsspec.core.url_to_fs(uri)
        if not fs.exists(path):
            return LogChunk("", 0, 0, 0, False, attempt["try_number"], attempt["end_date"] is not None)
        with fs.open(path, "rb") as fh:
            size = fs.size(path)
            if tail is not None:
                start, end, data, cut = _tail(fh, size, tail, limit)
            else:
                start, end, data, cut = _range(fh, size, offset, limit)
    finished = attempt["end_date"] is not None
    mask_stored_secrets(store)  # a log written live by a kernel or a subprocess is masked as it is read
    text = vault.redact(data.decode("utf-8", errors="replace"))
    return LogChunk(text, start, end, size, cut, attempt["try_number"], finished)


def _range(fh: Any, size: int, offset: int, limit: int | None) -> tuple[int, int, bytes, bool]:
    """Bytes from ``offset``, at most ``limit``, ending before a character that would be split."""
    start = min(offset, size)
    fh.seek(start)
    data = fh.read(size - start if limit is None else min(limit, size - start))
    if start + len(data) < size:
        data = data[: _char_start(data, len(data))] or data  # never return nothing for a long character
    return start, start + len(data), data, start + len(data) < size


def _tail(fh: Any, size: int, lines: int, limit: int | None) -> tuple[int, int, bytes, bool]:
    """The last ``lines`` lines (a final line without a newline counts), at most ``limit`` bytes."""
    budget = size if limit is None else min(limit, size)
    pos, data = size, b""
    while pos > 0 and len(data) < budget:
        step = min(BLOCK, pos, budget - len(data))
        pos -= step
        fh.seek(pos)
        data = fh.read(step) + data
        # newlines that start a line we keep: the one ending the file does not count
        if data[:-1].count(b"\n") >= lines:
            break
    body = data[:-1]
    cut = False
    if body.count(b"\n") >= lines:  # more lines than asked: keep the last ones
        skip = len(data)
        for _ in range(lines):
            skip = body.rfind(b"\n", 0, skip)
        data = data[skip + 1 :] if lines > 0 else b""
    elif pos > 0:  # the byte limit stopped the search: start at a line (or at least a character)
        cut = True
        newline = data.find(b"\n")
        data = data[newline + 1 :] if 0 <= newline < len(data) - 1 else data[_char_start(data, 0) :]
    return size - len(data), size, data, cut


def _char_start(data: bytes, index: int) -> int:
    """The first index at or after ``index`` (for ``index == len``: at or before it) that
    starts a UTF-8 character, i.e. is no continuation byte (0b10xxxxxx)."""
    if index >= len(data):
        index = len(data)
        while index > 0 and len(data) - index < 4 and (data[index - 1] & 0xC0) == 0x80:
            index -= 1
        # data[index-1] is a lead byte (or ASCII): keep its character only if it is complete
        if index > 0 and data[index - 1] >= 0xC0:
            need = 2 if data[index - 1] < 0xE0 else 3 if data[index - 1] < 0xF0 else 4
            if len(data) - (index - 1) < need:
                return index - 1
        return len(data)
    while index < len(data) and (data[index] & 0xC0) == 0x80:
        index += 1
    return index


def _default_log(settings: Settings, pipeline: str, run_id: int, task_id: str, try_number: int) -> str:
    from nbflow.artifacts import attempt_dir

    return f"{attempt_dir(settings.artifact_root, pipeline, run_id, task_id, try_number)}/log.txt"
