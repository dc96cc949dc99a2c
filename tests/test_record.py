"""nbflow/record.py: the one attempt record, from a task kind to the store's rows."""

from __future__ import annotations

import json

import sqlalchemy as sa

from nbflow.exceptions import FailNow
from nbflow.record import ATTEMPT_COLUMNS, RECORD_FIELDS, TASK_COLUMNS, AttemptRecord
from nbflow.store import orm


def _stamped(**fields) -> AttemptRecord:
    return AttemptRecord(
        ok=False,
        reason="cell_error",
        message="cell 2 raised ValueError: bad",
        ename="ValueError",
        evalue="bad",
        traceback="Traceback ...",
        cell_index=2,
        exec_count=3,
        output_uri="/o.ipynb",
        artifacts=[{"name": "m", "uri": "/m.json", "type": "json", "size": 3}],
        kernel_pid=77,
        **fields,
    ).stamp(
        key="p.t-1-1-x",
        run_id=1,
        task_id="t",
        try_number=1,
        log_uri="/log.txt",
        hostname="h",
        pid=42,
        started_at=100.0,
        ended_at=102.5,
    )


def test_a_record_crosses_processes_as_plain_data_unchanged():
    record = _stamped()
    data = json.loads(json.dumps(record.to_dict()))  # what result.json and the Dask event carry
    assert AttemptRecord.from_dict({**data, "worker": "tcp://x"}) == record  # a transport's extra keys are ignored
    assert set(data) == set(RECORD_FIELDS)
    assert AttemptRecord.from_dict({"ok": True}) == AttemptRecord(ok=True)  # an older worker's record still reads


def test_to_row_fills_exactly_columns_of_the_attempt_and_task_tables():
    row = _stamped().to_row()
    assert set(row) == set(ATTEMPT_COLUMNS) <= set(orm.task_attempts.c.keys())
    assert set(TASK_COLUMNS) <= set(orm.task_instances.c.keys())
    assert row["start_date"].timestamp() == 100.0 and row["end_date"].timestamp() == 102.5
    assert row["kernel_pid"] == 77 and row["pid"] == 42 and row["cell_index"] == 2
    fields = _stamped().task_fields()
    assert fields["duration"] == 2.5 and set(fields) == {*TASK_COLUMNS, "duration"}


def test_failures_from_exceptions_name_the_exception():
    try:
        raise FailNow("no point retrying")
    except FailNow as exc:
        record = AttemptRecord.from_exception(exc)
    assert (record.ok, record.reason, record.ename, record.evalue) == (
        False,
        "fail_now",
        "FailNow",
        "no point retrying",
    )
    assert record.message == "FailNow: no point retrying" and "raise FailNow" in record.traceback
    try:
        {}["x"]
    except KeyError as exc:
        assert AttemptRecord.from_exception(exc, reason="input_missing").reason == "input_missing"
    failed = AttemptRecord.failure("exit_code", "command exited with code 3", ename="CalledProcessError")
    assert failed.evalue == "command exited with code 3" and not failed.ok


def test_the_migrated_schema_has_every_column_a_record_fills(nbflow_home):
    """The migrations (not only the models) create every column to_row() fills."""
    from nbflow import api

    store = api.open_store()
    with store.engine.connect() as conn:
        columns = {c["name"] for c in sa.inspect(conn).get_columns("task_attempts")}
    assert set(ATTEMPT_COLUMNS) <= columns  # the migrated schema, not only the models
