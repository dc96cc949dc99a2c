"""``api.log_chunk`` / ``api.read_log``: byte ranges and the last lines of a log, read without
loading the file, from a local artifact root and from an fsspec URL (RELIABILITY 37)."""

from __future__ import annotations

import fsspec
import pytest

from nbflow import Pipeline, api, task
from nbflow.exceptions import TryNotFoundError, UnknownTaskError


@pytest.fixture
def run_id(nbflow_home) -> int:
    with Pipeline("logs") as p:

        @task
        def talk():
            for i in range(1000):
                print(f"line {i} é€")  # multi-byte characters: chunk edges must not split them

        talk()
    return api.run_pipeline(p, executor="inline").run_id


def test_tail_and_ranges_reassemble_the_log(run_id: int) -> None:
    whole = api.read_log(run_id, "talk")
    assert whole.count("\n") == 1000
    tail = api.log_chunk(run_id, "talk", tail=3)
    assert tail.text == "line 997 é€\nline 998 é€\nline 999 é€\n" and tail.end == tail.size and not tail.truncated
    assert api.log_chunk(run_id, "talk", tail=5000).text == whole
    cut = api.log_chunk(run_id, "talk", tail=1000, limit=100)
    assert cut.truncated and len(cut.text.encode()) <= 100 and cut.text.startswith("line ") and whole.endswith(cut.text)
    pieces, offset = [], 0
    while True:
        chunk = api.log_chunk(run_id, "talk", offset=offset, limit=4093)  # an odd size: edges fall inside characters
        assert "\ufffd" not in chunk.text and chunk.start == offset
        pieces.append(chunk.text)
        offset = chunk.end
        if not chunk.truncated:
            break
    assert "".join(pieces) == whole


def test_a_log_under_an_fsspec_url_is_read_the_same_way(run_id: int) -> None:
    from nbflow.api.runs import open_store

    store = open_store()
    local = api.read_log(run_id, "talk")
    with fsspec.open("memory://nbflow-test/logs/talk.txt", "wb") as fh:
        fh.write(local.encode())
    store.write(lambda tx: tx.update_attempt(run_id, "talk", 1, log_uri="memory://nbflow-test/logs/talk.txt"))
    assert api.log_chunk(run_id, "talk", tail=2).text == "line 998 é€\nline 999 é€\n"
    assert api.log_chunk(run_id, "talk", offset=7, limit=5).text == local.encode()[7:12].decode()


def test_unknown_task_and_try_are_typed_errors(run_id: int) -> None:
    with pytest.raises(UnknownTaskError):
        api.log_chunk(run_id, "nosuch")
    with pytest.raises(TryNotFoundError) as info:
        api.log_chunk(run_id, "talk", try_number=4)
    assert info.value.tries == [1] and "its tries: 1" in str(info.value)


def test_a_chunk_says_whether_the_try_has_ended(run_id: int) -> None:
    """The log tab follows a try while it runs and stops once it ended (it polled for ever)."""
    from sqlalchemy import update

    from nbflow.api.runs import open_store
    from nbflow.store.orm import task_attempts

    assert api.log_chunk(run_id, "talk", tail=1).finished
    assert api.log_chunk(run_id, "talk", offset=0, limit=10).finished
    running = update(task_attempts).where(task_attempts.c.run_id == run_id).values(state="running", end_date=None)
    open_store().write(lambda tx: tx.conn.execute(running))  # the row as it is while the try runs
    assert not api.log_chunk(run_id, "talk", tail=1).finished
