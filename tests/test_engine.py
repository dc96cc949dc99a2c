"""The run engine: data passing, retries, trigger rules, upstream failures, re-runs, --only."""

from __future__ import annotations

from datetime import UTC

import pytest

from nbflow import api
from nbflow.exceptions import NbflowError, ParameterError, UnknownTaskError
from nbflow.loader import load_pipeline
from nbflow.rules import decide, retry_delay
from nbflow.states import TaskState as T

CHAIN = """
from pathlib import Path
from nbflow import Pipeline, task, shell, FailNow

HERE = Path(__file__).parent

with Pipeline("chain", params={"n": 3, "fail": ""}) as pipeline:
    @task
    def numbers(params):
        print("making", params["n"], "numbers")
        return list(range(params["n"]))

    @task
    def total(xs):
        return {"sum": sum(xs), "count": len(xs)}

    @task
    def describe(stats, xs, scale=1):
        return f"{stats['sum'] * scale} over {len(xs)}"

    xs = numbers()
    stats = total(xs)
    text = describe(stats, xs, scale=pipeline.params.n)
"""


def rows(result):
    return {t["task_id"]: t for t in result.tasks}


@pytest.mark.parametrize("executor", ["inline", "local"])
def test_values_flow_downstream(nbflow_home, write_pipeline, executor):
    p = load_pipeline(write_pipeline(CHAIN))
    result = api.run_pipeline(p, params={"n": "4"}, executor=executor)
    assert result.ok, result.tasks
    assert api.load_output(result.run_id, "describe") == "24 over 4"
    assert api.load_output(result.run_id, "total") == {"sum": 6, "count": 4}
    assert "making 4 numbers" in api.read_log(result.run_id, "numbers")
    details = api.run_details(result.run_id)
    assert details["run"]["params"] == {"n": 4, "fail": ""}  # "4" was converted to the default's type
    assert {a["task_id"] for a in details["artifacts"]} == {"numbers", "total", "describe"}
    assert all(a["state"] == "success" and a["start_date"] and a["hostname"] for a in details["attempts"])
    assert all(t["duration"] is not None and t["try_number"] == 1 for t in details["tasks"])


def test_unknown_parameter_is_refused_before_any_write(nbflow_home, write_pipeline):
    p = load_pipeline(write_pipeline(CHAIN))
    with pytest.raises(ParameterError) as info:
        api.run_pipeline(p, params={"m": "1"}, executor="inline")
    assert "'m'" in str(info.value) and "n" in str(info.value)
    with pytest.raises(ParameterError, match="n"):
        api.run_pipeline(p, params={"n": "many"}, executor="inline")
    assert api.list_runs() == []


FLAKY = """
from pathlib import Path
from nbflow import Pipeline, task, FailNow

COUNTER = Path(__file__).parent / "tries.txt"

with Pipeline("flaky") as pipeline:
    @task(retries=2, retry_delay=0.3)
    def flaky():
        COUNTER.write_text(COUNTER.read_text() + "x" if COUNTER.exists() else "x")
        if len(COUNTER.read_text()) < 2:
            raise ValueError("first try fails")
        return "ok"

    @task(retries=3)
    def hopeless():
        raise FailNow("no point retrying")

    flaky()
    hopeless()
"""


@pytest.mark.parametrize("executor", ["inline", "local"])
def test_retry_then_success_and_failnow(nbflow_home, write_pipeline, executor):
    p = load_pipeline(write_pipeline(FLAKY))
    result = api.run_pipeline(p, executor=executor)
    tis = rows(result)
    assert tis["flaky"]["state"] == "success" and tis["flaky"]["try_number"] == 2
    assert tis["hopeless"]["state"] == "failed" and tis["hopeless"]["try_number"] == 1
    assert tis["hopeless"]["reason"] == "fail_now"
    assert result.state.value == "failed"
    attempts = api.run_details(result.run_id)["attempts"]
    flaky = [a for a in attempts if a["task_id"] == "flaky"]
    assert [a["state"] for a in flaky] == ["up_for_retry", "success"]
    assert flaky[0]["ename"] == "ValueError" and "first try fails" in flaky[0]["evalue"]
    assert "Traceback" in flaky[0]["traceback"]
    gap = (flaky[1]["queued_at"] - flaky[0]["end_date"]).total_seconds()
    assert gap >= 0.25  # retry_delay respected (no busy retry)
    assert len([a for a in attempts if a["task_id"] == "hopeless"]) == 1


def test_retry_delay_backoff_is_capped():
    class Opts:
        retry_delay, retry_backoff, max_retry_delay = 10.0, True, 25.0

    assert [retry_delay(Opts, n) for n in (1, 2, 3)] == [10.0, 20.0, 25.0]
    Opts.retry_backoff = False
    assert retry_delay(Opts, 3) == 10.0


def test_trigger_rules():
    S, F, U, K = T.SUCCESS, T.FAILED, T.UPSTREAM_FAILED, T.SKIPPED
    assert decide("all_success", [S, S]) is None
    assert decide("all_success", [S, F]) is U
    assert decide("all_success", [S, K]) is K
    assert decide("all_done", [F, U]) is None
    assert decide("one_failed", [S, S]) is K and decide("one_failed", [S, U]) is None
    assert decide("one_success", [F, S]) is None and decide("one_success", [F, F]) is U
    assert decide("none_failed", [S, K]) is None and decide("none_failed", [S, F]) is U
    assert decide("all_failed", [F, U]) is None and decide("all_failed", [F, S]) is K
    assert decide("always", []) is None


BRANCHES = """
from nbflow import Pipeline, task, shell

with Pipeline("branches") as pipeline:
    @task
    def bad():
        raise RuntimeError("broken input")

    @task
    def after_bad(x):
        return x

    @task
    def further(x):
        return x

    @task
    def good():
        return 1

    cleanup = shell("echo cleaning", name="cleanup", trigger_rule="all_done")
    alert = shell("echo alert", name="alert", trigger_rule="one_failed")
    ok_only = shell("echo fine", name="ok_only", trigger_rule="none_failed")
    b = bad()
    a = after_bad(b)
    f = further(a)
    g = good()
    [f, g] >> cleanup
    [b, g] >> alert
    g >> ok_only
"""


def test_upstream_failed_propagates_and_trigger_rules_run(nbflow_home, write_pipeline):
    result = api.run_pipeline(load_pipeline(write_pipeline(BRANCHES)), executor="inline")
    states = {t: r["state"] for t, r in rows(result).items()}
    assert states == {
        "bad": "failed",
        "after_bad": "upstream_failed",
        "further": "upstream_failed",
        "good": "success",
        "cleanup": "success",
        "alert": "success",
        "ok_only": "success",
    }
    assert "upstream failed: bad" in rows(result)["after_bad"]["error"]
    # the leaves cleanup, alert, ok_only all succeeded, yet bad failed: the run fails (a failure is
    # never hidden by an all_done task after it; Airflow's leaf rule would call it a success)
    assert result.state.value == "failed"
    assert "cleaning" in api.read_log(result.run_id, "cleanup")


RERUN = """
from pathlib import Path
from nbflow import Pipeline, task

HERE = Path(__file__).parent

with Pipeline("rerun") as pipeline:
    @task
    def first():
        with open(HERE / "first.log", "a") as fh:
            fh.write("ran\\n")
        return 10

    @task
    def second(x):
        if not (HERE / "fixed").exists():
            raise ValueError("not fixed yet")
        return x + 1

    @task
    def third(y):
        return y * 2

    third(second(first()))
"""


def test_rerun_after_failure_runs_only_what_failed(nbflow_home, write_pipeline):
    path = write_pipeline(RERUN)
    result = api.run_pipeline(load_pipeline(path), executor="inline")
    assert result.state.value == "failed"
    assert [rows(result)[t]["state"] for t in ("first", "second", "third")] == ["success", "failed", "upstream_failed"]
    (path.parent / "fixed").write_text("yes")
    again = api.rerun(result.run_id, executor="inline")
    assert again.run_id == result.run_id and again.ok
    assert api.load_output(result.run_id, "third") == 22
    assert (path.parent / "first.log").read_text() == "ran\n"  # the successful task was not run again
    tis = rows(again)
    assert tis["second"]["try_number"] == 2 and tis["first"]["try_number"] == 1
    with pytest.raises(UnknownTaskError):
        api.rerun(result.run_id, tasks=["nope"], executor="inline")


def test_only_uses_upstream_outputs_of_the_last_success(nbflow_home, write_pipeline):
    path = write_pipeline(RERUN)
    p = load_pipeline(path)
    with pytest.raises(NbflowError, match="never succeeded"):
        api.run_pipeline(p, only=["third"], executor="inline")
    assert api.list_runs() == []
    (path.parent / "fixed").write_text("yes")
    api.run_pipeline(p, executor="inline")
    only = api.run_pipeline(p, only=["third"], executor="inline")
    assert only.ok and [t["task_id"] for t in only.tasks] == ["third"]
    assert api.load_output(only.run_id, "third") == 22
    with pytest.raises(UnknownTaskError, match="known tasks: first, second, third"):
        api.run_pipeline(p, only=["fourth"], executor="inline")


def test_orphaned_attempts_of_a_dead_driver_are_retried(nbflow_home, write_pipeline):
    """A run whose driver died with a task 'running' is resumed: the lost try is an infra retry."""
    from datetime import datetime

    path = write_pipeline(RERUN)
    (path.parent / "fixed").write_text("yes")
    p = load_pipeline(path)
    store = api.open_store()
    run_id = api.create_run(p, executor="inline", store=store)
    now = datetime.now(UTC)
    store.write(lambda tx: tx.queue_attempt(run_id, "first", 1, "k", now))
    store.write(lambda tx: tx.set_task_state(run_id, "first", T.RUNNING))
    result = api.drive_run(p, run_id, executor="inline", store=store)
    tis = rows(result)
    # 'first' has retries=0, yet it runs again: a try lost with its driver is not the task's fault
    assert result.ok and tis["first"]["try_number"] == 2 and tis["first"]["max_tries"] == 2
    attempts = [a for a in api.run_details(run_id)["attempts"] if a["task_id"] == "first"]
    assert [(a["state"], a["reason"]) for a in attempts] == [("up_for_retry", "worker_lost"), ("success", None)]


@pytest.mark.postgres
def test_a_run_on_postgres_records_the_same_rows(pg_url, write_pipeline):
    p = load_pipeline(write_pipeline(FLAKY))
    result = api.run_pipeline(p, executor="local")
    store = api.open_store()
    assert store.engine.dialect.name == "postgresql"
    tis = rows(result)
    assert tis["flaky"]["state"] == "success" and tis["flaky"]["try_number"] == 2
    assert tis["hopeless"]["state"] == "failed" and tis["hopeless"]["reason"] == "fail_now"
    details = api.run_details(result.run_id)
    assert [a["state"] for a in details["attempts"] if a["task_id"] == "flaky"] == ["up_for_retry", "success"]
    assert details["run"]["state"] == "failed" and details["run"]["ended_at"] is not None
    assert api.load_output(result.run_id, "flaky") == "ok"


def test_a_failed_state_write_is_kept_and_retried_next_step(nbflow_home, write_pipeline, monkeypatch):
    """When the database stays unreachable past the store's retries, nothing of the step is lost."""
    from nbflow.engine import RunEngine
    from nbflow.executors import get_executor
    from nbflow.store import Store

    p = load_pipeline(write_pipeline(CHAIN))
    store = api.open_store()
    run_id = api.create_run(p, executor="inline", store=store)
    real_write = Store.write
    outage = {"left": 2}

    def flaky_write(self, fn, what="database write", **kw):
        if "state update" in what and outage["left"]:
            outage["left"] -= 1
            raise RuntimeError("database unreachable")
        return real_write(self, fn, what=what, **kw)

    monkeypatch.setattr(Store, "write", flaky_write)
    with get_executor("inline") as ex:
        engine = RunEngine(store, p, run_id, ex)
        with pytest.raises(RuntimeError):
            engine.start()
        with pytest.raises(RuntimeError):
            engine.step([])
        while not engine.done:  # the database is back: the kept writes go through
            engine.step(ex.poll(0.1))
        assert engine.finish().value == "success"
    assert api.load_output(run_id, "describe") == "9 over 3"
    assert [a["try_number"] for a in api.run_details(run_id)["attempts"]] == [1, 1, 1]


WIDE_POOLED = """
import time
from nbflow import Pipeline, task

with Pipeline("wide_pooled") as pipeline:
    @task(pool="slots")
    def part(i):
        time.sleep(0.01)  # long enough for two workers to overlap, were the pool not there
        return i * i

    @task
    def total(*xs):
        return sum(xs)

    total(*[part(i) for i in range({n})])
"""


def test_a_step_larger_than_a_submit_batch_with_a_pool(nbflow_home, write_pipeline):
    """More tasks become ready in one step than one batch holds: batches are queued and
    submitted as the step goes, the pool refuses the overflow, and each task still runs once."""
    from nbflow.engine import SUBMIT_BATCH

    n = SUBMIT_BATCH * 2 + 7
    api.set_pool("slots", 1)  # two worker processes could run two at once: the pool must not let them
    result = api.run_pipeline(
        load_pipeline(write_pipeline(WIDE_POOLED.replace("{n}", str(n)))), executor="local", parallelism=2
    )
    assert result.ok, [t for t in result.tasks if t["state"] != "success"][:3]
    assert api.load_output(result.run_id, "total") == sum(i * i for i in range(n))
    details = api.run_details(result.run_id)
    assert len(details["attempts"]) == n + 1, "a task ran more than once"
    assert all(t["try_number"] == 1 for t in details["tasks"])
    spans = [(a["start_date"], a["end_date"]) for a in details["attempts"] if a["task_id"] != "total"]
    most = max(sum(s <= start < e for s, e in spans) for start, _ in spans)
    assert most <= 1, f"{most} tasks of a 1-slot pool ran at once"


LONG_CHAIN = """
from nbflow import Pipeline, task

with Pipeline("long_chain") as pipeline:
    @task
    def step(x):
        return x + 1

    x = 0
    for _ in range(12):
        x = step(x)
"""


def test_inline_chain_writes_one_transaction_per_task_with_honest_attempts(nbflow_home, write_pipeline):
    """On inline, a task that starts as soon as it is queued is written running by its
    queueing: one write transaction per task, and every attempt still has its start."""
    import sqlalchemy as sa

    p = load_pipeline(write_pipeline(LONG_CHAIN))
    store = api.open_store()
    commits: list[int] = []
    sa.event.listen(store.engine, "commit", lambda conn: commits.append(1))
    result = api.run_pipeline(p, executor="inline")
    assert result.ok and api.load_output(result.run_id, "step__11") == 12
    # create the run, the driver's job, claim, one per task (+1: the last finish), end the run and the job
    assert len(commits) == len(p.tasks) + 6, len(commits)
    details = api.run_details(result.run_id)
    assert all(a["state"] == "success" and a["start_date"] and a["hostname"] and a["pid"] for a in details["attempts"])
    assert all(a["start_date"] <= a["end_date"] for a in details["attempts"])
    assert all(t["start_date"] and t["duration"] is not None for t in details["tasks"])


PAIR = """
from nbflow import Pipeline, task

with Pipeline("pair") as pipeline:
    @task
    def a():
        return 1

    @task
    def b(x):
        return x + 1

    b(a())
"""


class _Scripted:
    """An executor whose events the test writes (no process, no timing): the engine alone."""

    name, runs_in_poll, durable_results = "scripted", False, False

    def __init__(self):
        self.submitted, self.cancelled = [], []

    def start_now(self, items):
        return []

    def submit_many(self, items):
        self.submitted.extend(items)

    def cancel(self, key):
        self.cancelled.append(key)


def _finished_event(item, ok=True):
    import time

    from nbflow.executors.base import Event
    from nbflow.record import AttemptRecord

    now = time.time()
    record = AttemptRecord(ok=ok).stamp(
        key=item.key,
        run_id=item.run_id,
        task_id=item.task_id,
        try_number=item.try_number,
        log_uri="",
        hostname="here",
        pid=1,
        started_at=now,
        ended_at=now,
    )
    return Event("finished", item.key, now, "here", 1, result=record)


def test_a_task_found_finished_elsewhere_releases_its_children(nbflow_home, write_pipeline):
    """A compare-and-set that finds the row finished by someone else (another driver, a user
    marking it) adopts the stored state through the engine's one bookkeeping of a finished
    task, so the children are decided and the run ends (before: it waited for ever)."""
    import time

    from nbflow.engine import RunEngine
    from nbflow.executors.base import Event

    p = load_pipeline(write_pipeline(PAIR))
    store = api.open_store()
    run_id = api.create_run(p, store=store)
    ex = _Scripted()
    engine = RunEngine(store, p, run_id, ex)
    engine.start()
    (a,) = ex.submitted
    store.write(lambda tx: tx.set_task_state(run_id, "a", T.SUCCESS))  # finished elsewhere while queued here
    engine.step([Event("started", a.key, time.time(), "here", 1)])  # its compare-and-set misses
    assert engine.wakeup_in() == 0  # the stale task is read back at once, not after a timer
    engine.step([])
    assert [i.task_id for i in ex.submitted] == ["a", "b"] and ex.cancelled == [a.key]
    engine.step([_finished_event(ex.submitted[1])])
    assert engine.done and engine.finish().value == "success"
    assert {t["task_id"]: t["state"] for t in store.task_instances(run_id)} == {"a": "success", "b": "success"}
