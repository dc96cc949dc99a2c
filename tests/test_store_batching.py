"""Store.write_ops: many writes as a few executemany calls, with one-by-one results."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from nbflow.states import RunState, TaskState
from nbflow.store import Store
from nbflow.store.orm import utcnow

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
TASKS = [f"t{i}" for i in range(20)]
NOW = datetime(2026, 11, 22, tzinfo=UTC)


@pytest.fixture
def store(request, nbflow_home):
    if request.param == "postgres":
        request.getfixturevalue("pg_url")
    return Store()


def _new_run(store: Store) -> int:
    def write(tx):
        version = tx.upsert_pipeline({"name": "p", "file": None, "schedule": None}, "f1")
        tasks = [{"task_id": t, "kind": "python", "max_tries": 3} for t in TASKS]
        now = utcnow()
        return tx.create_runs(
            pipeline="p", version_id=version, params={}, trigger="test", tasks=tasks, intervals=[(now, now)]
        )[0]

    return store.write(write)


def _count_executions(store: Store) -> list[str]:
    calls: list[str] = []
    sa.event.listen(store.engine, "before_cursor_execute", lambda conn, cursor, stmt, *rest: calls.append(stmt))
    return calls


def _queue(run_id: int, tid: str, try_number: int = 1):
    return lambda tx: tx.queue_attempt(run_id, tid, try_number, f"p/{run_id}/{tid}/{try_number}", NOW)


def _succeed(run_id: int, tid: str, try_number: int = 1):
    def op(tx):
        ok = tx.set_task_state(run_id, tid, TaskState.SUCCESS, expect_try=try_number, end_date=NOW, duration=0.1)
        tx.update_attempt(run_id, tid, try_number, state="success", end_date=NOW)
        tx.add_artifacts(
            run_id, tid, try_number, [{"name": "return", "uri": f"/a/{tid}.json", "type": "json", "size": 2}]
        )
        return ok

    return op


@pytest.mark.parametrize("store", BACKENDS, indirect=True)
def test_a_wide_step_is_a_few_statements_with_every_write_made(store):
    run_id = _new_run(store)
    calls = _count_executions(store)
    ops = [lambda tx: tx.set_run_state(run_id, RunState.RUNNING)] + [_queue(run_id, t) for t in TASKS]
    assert store.write_ops(ops) == [True] * (len(TASKS) + 1)
    writes = [c for c in calls if c.lstrip().upper().startswith(("UPDATE", "INSERT"))]
    assert len(writes) <= 3, writes  # run state, one UPDATE of 20 task rows, one INSERT of 20 attempts

    calls.clear()
    assert store.write_ops([_succeed(run_id, t) for t in TASKS]) == [True] * len(TASKS)
    assert len([c for c in calls if c.lstrip().upper().startswith(("UPDATE", "INSERT"))]) <= 3
    rows = store.task_instances(run_id)
    assert {r["state"] for r in rows} == {"success"} and all(r["duration"] == 0.1 for r in rows)
    assert {a["state"] for a in store.attempts(run_id)} == {"success"} and len(store.attempts(run_id)) == len(TASKS)
    assert len(store.artifacts(run_id)) == len(TASKS)
    assert store.get_run(run_id)["state"] == "running"


@pytest.mark.parametrize("store", BACKENDS, indirect=True)
def test_a_refused_write_in_a_batch_gets_its_own_false_and_the_rest_are_made(store):
    run_id = _new_run(store)
    store.write_ops([_queue(run_id, t) for t in TASKS])
    ops = [_succeed(run_id, t) for t in TASKS]
    ops[7] = _succeed(run_id, "t7", try_number=2)  # a late report of another try: must change nothing
    results = store.write_ops(ops)
    assert results == [t != "t7" for t in TASKS]
    states = {r["task_id"]: r["state"] for r in store.task_instances(run_id)}
    assert states.pop("t7") == "queued" and set(states.values()) == {"success"}
    # the refused operation's other writes ran as written, one by one (here: its attempt row update)
    assert len(store.attempts(run_id)) == len(TASKS)


@pytest.mark.parametrize("store", BACKENDS, indirect=True)
def test_writes_to_one_row_keep_their_order(store):
    """Fail then retry the same task in one step: the retry's queueing must follow the failure."""
    run_id = _new_run(store)
    store.write_ops([_queue(run_id, t) for t in TASKS])

    def fail_and_requeue(tid):
        def op(tx):
            tx.set_task_state(run_id, tid, TaskState.UP_FOR_RETRY, expect_try=1, error="boom")
            tx.update_attempt(run_id, tid, 1, state="up_for_retry")
            return tx.queue_attempt(run_id, tid, 2, f"p/{run_id}/{tid}/2", NOW)

        return op

    ops = [_succeed(run_id, t) for t in TASKS[:10]] + [fail_and_requeue(t) for t in TASKS[10:]]
    assert store.write_ops(ops) == [True] * len(TASKS)
    rows = {r["task_id"]: r for r in store.task_instances(run_id)}
    assert all(rows[t]["state"] == "queued" and rows[t]["try_number"] == 2 for t in TASKS[10:])
    assert all(rows[t]["state"] == "success" for t in TASKS[:10])
    assert [a["state"] for a in store.attempts(run_id, "t15")] == ["up_for_retry", "queued"]


@pytest.mark.parametrize("store", BACKENDS, indirect=True)
def test_an_operation_that_reads_runs_everything_one_by_one(store):
    """A queueing into a pool reads the pool's use first: the batch is written unbatched, pool rules hold."""
    run_id = _new_run(store)
    store.write(lambda tx: tx.set_pool("two", 2))

    def pooled(tid):
        return lambda tx: tx.queue_attempt(run_id, tid, 1, f"p/{run_id}/{tid}/1", NOW, pool="two")

    results = store.write_ops([pooled(t) for t in TASKS[:10]])
    assert results[:2] == [True, True]
    assert all(isinstance(r, str) and "pool 'two'" in r for r in results[2:])
    assert sum(r["state"] == "queued" for r in store.task_instances(run_id)) == 2
