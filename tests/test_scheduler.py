"""The scheduler: due runs on a controlled clock, catchup, pause, DAG folder errors, triggers,
backfill, pools, sensors, retries, cancellations, callbacks, the SQLite single-scheduler rule,
retention."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from nbflow import api
from nbflow.exceptions import ScheduleError
from nbflow.scheduler import Scheduler
from tests.waiting import wait_for

UTC = UTC


class Clock:
    """A controllable 'now' for the scheduler."""

    def __init__(self, now: datetime):
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def dags(tmp_path, nbflow_home, monkeypatch):
    folder = tmp_path / "dags"
    folder.mkdir()
    monkeypatch.setenv("NBFLOW_DAGS_FOLDER", str(folder))
    monkeypatch.setenv("NBFLOW_IMPORT_TIMEOUT", "3")
    monkeypatch.setenv("NBFLOW_HEARTBEAT", "0.2")
    monkeypatch.setenv("NBFLOW_CANCEL_POLL", "0.3")
    api.reset()
    return folder


def write(folder: Path, name: str, source: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(source))
    return path


HOURLY = """
from nbflow import Pipeline, task

with Pipeline("hourly", schedule="@hourly", start_date="2026-01-01", catchup={catchup}) as pipeline:
    @task
    def stamp(logical_date, data_interval_end):
        return [logical_date.isoformat(), data_interval_end.isoformat()]

    stamp()
"""


def runs_of(name):
    return sorted(api.list_runs(name, limit=1000), key=lambda r: r["logical_date"])


def test_catchup_creates_each_missed_interval_once_in_order(dags):
    write(dags, "hourly.py", HOURLY.format(catchup=True))
    clock = Clock(datetime(2026, 1, 1, 3, 30, tzinfo=UTC))
    sched = Scheduler(executor="inline", clock=clock)
    sched.start()
    try:
        sched.loop_once()
        runs = runs_of("hourly")
        assert [r["logical_date"].hour for r in runs] == [0, 1, 2]
        assert all(r["data_interval_end"] - r["data_interval_start"] == timedelta(hours=1) for r in runs)
        assert {r["trigger"] for r in runs} == {"scheduled"}
        sched.loop_once()
        assert len(runs_of("hourly")) == 3  # a second tick creates nothing new
        clock.now += timedelta(hours=2)
        sched.loop_once()
        assert [r["logical_date"].hour for r in runs_of("hourly")] == [0, 1, 2, 3, 4]
        for _ in range(200):  # drive them all
            if all(r["state"] == "success" for r in runs_of("hourly")):
                break
            sched.loop_once()
        first = runs_of("hourly")[0]
        assert api.load_output(first["id"], "stamp") == ["2026-01-01T00:00:00+00:00", "2026-01-01T01:00:00+00:00"]
    finally:
        sched.close()


def test_pipelines_whose_sync_write_failed_are_synced_on_the_next_loop(dags, monkeypatch):
    """The loader has already seen the files when the database write of the sync fails
    (database down): the next loop must write them, not wait for the files to change."""
    from sqlalchemy.exc import OperationalError

    write(dags, "hourly.py", HOURLY.format(catchup=False))
    sched = Scheduler(executor="inline", clock=Clock(datetime(2026, 1, 1, 3, 30, tzinfo=UTC)))
    real_write, failures = sched.store.write, []

    def write_failing_once(fn, *, what="database write", **kw):
        if what == "sync pipelines" and not failures:
            failures.append(what)
            raise OperationalError("UPDATE pipelines", {}, Exception("server closed the connection"))
        return real_write(fn, what=what, **kw)

    monkeypatch.setattr(sched.store, "write", write_failing_once)
    sched.start()
    try:
        with pytest.raises(OperationalError):
            sched.loop_once()
        assert failures and api.list_pipelines() == []
        sched.loop_once()  # the files did not change: nothing new for the loader
        assert [p["name"] for p in api.list_pipelines()] == ["hourly"]
        assert [r["logical_date"].hour for r in runs_of("hourly")] == [2]
    finally:
        sched.close()


def test_no_catchup_and_pause_resume_create_only_the_latest_interval(dags):
    write(dags, "hourly.py", HOURLY.format(catchup=False))
    clock = Clock(datetime(2026, 1, 1, 3, 30, tzinfo=UTC))
    sched = Scheduler(executor="inline", clock=clock, parse_interval=0)
    sched.start()
    try:
        sched.loop_once()
        assert [r["logical_date"].hour for r in runs_of("hourly")] == [2]
        api.set_paused("hourly", True)
        clock.now += timedelta(hours=3)  # three intervals pass while paused
        sched.loop_once()
        assert len(runs_of("hourly")) == 1
        api.set_paused("hourly", False)
        sched.loop_once()
        assert [r["logical_date"].hour for r in runs_of("hourly")] == [2, 5]
        sched.loop_once()
        assert len(runs_of("hourly")) == 2  # resuming twice creates nothing more
    finally:
        sched.close()


ENDED = """
from nbflow import Pipeline, shell

with Pipeline("ended", schedule="@hourly", start_date="2026-01-01", end_date="2026-01-01T01:00", catchup=True) as p:
    shell("true", name="noop")
"""


def test_only_due_pipelines_are_looked_at(dags):
    import sqlalchemy as sa

    write(dags, "hourly.py", HOURLY.format(catchup=False))
    write(dags, "ended.py", ENDED)
    clock = Clock(datetime(2026, 1, 1, 3, 30, tzinfo=UTC))
    sched = Scheduler(executor="inline", clock=clock)
    sched.start()
    statements: list[str] = []
    sa.event.listen(sched.store.engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    try:
        sched.loader.load()
        sched.sync_pipelines()
        assert len(sched.create_due_runs()) == 3  # hourly 02:00; ended 00:00 and 01:00, its last interval
        statements.clear()
        clock.now += timedelta(minutes=29)
        assert sched.create_due_runs() == [] and statements == []  # nothing due: no database round trip
        clock.now += timedelta(minutes=1)  # 04:00: hourly's 03:00 interval ended; ended stays done
        assert len(sched.create_due_runs()) == 1
        assert sum(s.startswith("BEGIN") for s in statements) == 1  # one transaction: hourly's
        assert [r["logical_date"].hour for r in runs_of("ended")] == [0, 1]
        sched.sync_pipelines()  # a sync makes every pipeline due again: nothing new to create
        assert sched.create_due_runs() == []
    finally:
        sched.close()


def test_dst_schedule_over_a_year_gives_one_run_per_day(dags):
    write(
        dags,
        "berlin.py",
        """
        from nbflow import Pipeline, shell
        with Pipeline("berlin", schedule="30 2 * * *", timezone="Europe/Berlin", start_date="2026-01-01", catchup=True) as p:
            shell("true", name="noop")
        """,
    )
    clock = Clock(datetime(2027, 1, 1, 3, 0, tzinfo=UTC))
    sched = Scheduler(executor="inline", clock=clock)
    sched.start()
    try:
        sched.loader.load()
        sched.sync_pipelines()
        created = sched.create_due_runs()
        assert len(created) == 365
        days = [
            r["logical_date"].astimezone(__import__("zoneinfo").ZoneInfo("Europe/Berlin")) for r in runs_of("berlin")
        ]
        assert len({d.date() for d in days}) == 365
        spring = next(d for d in days if d.month == 3 and d.day == 29)
        assert (spring.hour, spring.minute) == (3, 0)  # 02:30 does not exist that day: it runs at 03:00
    finally:
        sched.close()


def test_broken_and_hanging_files_do_not_stop_the_others(dags):
    write(dags, "good.py", HOURLY.format(catchup=False))
    write(dags, "broken.py", "from nbflow import Pipeline\n\nx = 1\nraise RuntimeError('bad config')\n")
    write(dags, "hangs.py", "import time\nfrom nbflow import Pipeline\ntime.sleep(60)\n")
    write(
        dags,
        "cyclic.py",
        """
        from nbflow import Pipeline, shell
        with Pipeline("cyc", schedule="@daily") as p:
            a = shell("true", name="a")
            b = shell("true", name="b")
            a >> b >> a
        """,
    )
    write(
        dags,
        "badcron.py",
        'from nbflow import Pipeline, shell\nwith Pipeline("cronbad", schedule="61 * * * *") as p:\n    shell("true", name="a")\n',
    )
    write(dags, "helpers.py", "def util():\n    return 1\n")  # not a pipeline file: ignored
    sched = Scheduler(executor="inline", clock=Clock(datetime(2026, 1, 1, 3, 30, tzinfo=UTC)))
    sched.start()
    t0 = time.monotonic()
    try:
        sched.loop_once()
    finally:
        sched.close()
    assert time.monotonic() - t0 < 20  # the hanging import was killed after 3 s
    errors = {Path(e["filename"]).name: e for e in api.import_errors()}
    assert set(errors) == {"broken.py", "hangs.py", "cyclic.py", "badcron.py"}
    assert (
        errors["broken.py"]["location"].endswith("broken.py:4")
        and "RuntimeError: bad config" in errors["broken.py"]["error"]
    )
    assert "longer than 3s" in errors["hangs.py"]["error"]
    assert "a -> b -> a" in errors["cyclic.py"]["error"]
    assert "'61 * * * *'" in errors["badcron.py"]["error"] and "cronbad" in errors["badcron.py"]["error"]
    assert [p["name"] for p in api.list_pipelines()] == ["hourly"]
    assert len(runs_of("hourly")) == 1


def test_removed_pipeline_stops_being_scheduled_but_keeps_history(dags):
    path = write(dags, "hourly.py", HOURLY.format(catchup=False))
    clock = Clock(datetime(2026, 1, 1, 3, 30, tzinfo=UTC))
    sched = Scheduler(executor="inline", clock=clock, parse_interval=0)
    sched.start()
    try:
        sched.loop_once()
        path.unlink()
        clock.now += timedelta(hours=2)
        sched.loop_once()
    finally:
        sched.close()
    row = next(p for p in api.list_pipelines() if p["name"] == "hourly")
    assert row["is_active"] is False and len(runs_of("hourly")) == 1


TRIGGERED = """
from nbflow import Pipeline, task

with Pipeline("manual", params={"n": 2}) as pipeline:
    @task
    def double(params):
        return params["n"] * 2

    double()
"""


@contextlib.contextmanager
def serving(sched: Scheduler, stop_within: float = 10.0) -> Iterator[Scheduler]:
    """The scheduler's loop in a thread for the block; stopped (and joined) after it."""
    sched.start()
    thread = threading.Thread(target=sched.serve_forever, daemon=True)
    thread.start()
    try:
        yield sched
    finally:
        sched.stop()
        thread.join(stop_within)


@contextlib.contextmanager
def triggered(name: str, sched: Scheduler) -> Iterator[int]:
    """``sched`` serving, and one manual run of ``name`` queued once the DAG folder is loaded: its id."""
    with serving(sched):
        wait_for(lambda: api.list_pipelines())
        yield api.trigger(name, start=False)


def ended(run_id: int) -> bool:
    return api.run_details(run_id)["run"]["state"] in ("failed", "success")


def task_states(run_id: int) -> dict[str, str]:
    return {t["task_id"]: t["state"] for t in api.run_details(run_id)["tasks"]}


def test_trigger_is_picked_up_and_duplicates_are_refused(dags):
    write(dags, "manual.py", TRIGGERED)
    sched = Scheduler(executor="inline")
    with serving(sched):
        wait_for(lambda: api.list_pipelines())
        run_id = api.trigger("manual", params={"n": "21"}, logical_date="2026-05-01T00:00:00+00:00")
        wait_for(lambda: api.run_details(run_id)["run"]["state"] == "success")
        assert api.load_output(run_id, "double") == 42
        with pytest.raises(api.DuplicateRunError) as info:
            api.trigger("manual", logical_date="2026-05-01T00:00:00+00:00")
        assert info.value.run_id == run_id
        with pytest.raises(Exception, match="(?s)no pipeline named .nope..*known pipelines: manual"):
            api.trigger("nope")
        with pytest.raises(Exception, match="'m'"):
            api.trigger("manual", params={"m": 1})


def test_an_error_of_one_run_or_one_step_fails_only_that_run(dags, monkeypatch, caplog):
    """The scheduler's loop outlives any exception: an error while stepping one run fails that
    run (with the error, its traceback logged) and the other runs go on; an error in an
    iteration of the loop itself (here creating due runs) is logged and the next one goes on."""
    from nbflow.engine import RunEngine

    write(dags, "manual.py", TRIGGERED)
    sched = Scheduler(executor="inline")
    broken: set[int] = set()
    real_step, real_due = RunEngine.step, sched.create_due_runs
    loop_errors = []

    def step(engine, events):
        if engine.run_id in broken:
            raise RuntimeError(f"injected into run {engine.run_id}")
        return real_step(engine, events)

    def create_due_runs():
        if not loop_errors:
            loop_errors.append(1)
            raise KeyError("injected into the loop")
        return real_due()

    monkeypatch.setattr(RunEngine, "step", step)
    monkeypatch.setattr(sched, "create_due_runs", create_due_runs)
    with serving(sched):
        wait_for(lambda: api.list_pipelines())
        first = api.trigger("manual", params={"n": 1}, start=False)
        broken.add(first)
        second = api.trigger("manual", params={"n": 2}, start=False)
        wait_for(lambda: ended(first) and ended(second))
        third = api.trigger("manual", params={"n": 3}, start=False)
        wait_for(lambda: ended(third))
    runs = {r["id"]: r for r in api.list_runs("manual")}
    assert runs[first]["state"] == "failed"
    assert "nbflow error while driving the run: RuntimeError: injected into run" in runs[first]["note"]
    assert task_states(first) == {"double": "cancelled"}
    assert api.run_details(first)["tasks"][0]["reason"] == "driver_error"
    assert runs[second]["state"] == runs[third]["state"] == "success" and api.load_output(third, "double") == 6
    assert loop_errors == [1] and "injected into the loop" in caplog.text and "Traceback" in caplog.text


def test_trigger_without_scheduler_runs_in_the_background(dags, write_pipeline):
    path = write_pipeline(TRIGGERED)
    api.run_file(path, executor="inline")  # makes the pipeline known
    run_id = api.trigger("manual", params={"n": 5})
    wait_for(lambda: api.run_details(run_id)["run"]["state"] == "success", timeout=60)
    assert api.load_output(run_id, "double") == 10


def test_ten_triggers_without_a_scheduler_start_one_background_driver(dags, write_pipeline):
    """RELIABILITY 38: with no scheduler alive each trigger used to start an `nbflow drive` of
    its own (10 triggers, 10 drivers, 2.5 GB) that nobody reaped. Now one background driver
    takes every queued run and the process that spawned it reaps it."""
    import psutil

    api.run_file(write_pipeline(TRIGGERED), executor="inline")  # makes the pipeline known
    me, home = psutil.Process(), os.environ["NBFLOW_HOME"]

    def drivers() -> list[psutil.Process]:  # of this test's home (an earlier test's may still linger)
        alive = []
        for p in me.children():
            try:
                if (
                    "drive" in p.cmdline()
                    and p.environ().get("NBFLOW_HOME") == home
                    and p.status() != psutil.STATUS_ZOMBIE
                ):
                    alive.append(p)
            except psutil.Error:  # ended meanwhile
                pass
        return alive

    ids = [api.trigger("manual", params={"n": i}) for i in range(10)]
    seen: set[int] = set()
    most = 0

    def all_ended() -> bool:
        nonlocal most
        alive = drivers()
        seen.update(p.pid for p in alive)
        most = max(most, len(alive))
        return all(ended(run_id) for run_id in ids)

    wait_for(all_ended, timeout=120)
    assert [api.load_output(run_id, "double") for run_id in ids] == [2 * i for i in range(10)]
    assert most == 1 and len(seen) == 1, seen  # one process took all ten
    wait_for(lambda: not drivers(), timeout=30)  # it exits once idle...
    time.sleep(0.5)
    assert not [p for p in me.children() if p.status() == psutil.STATUS_ZOMBIE]  # ...and is reaped
    assert len({api.run_details(run_id)["run"]["driver_id"] for run_id in ids}) == 1


def test_backfill_creates_the_range_once(dags):
    write(dags, "hourly.py", HOURLY.format(catchup=False))
    sched = Scheduler(executor="inline", clock=Clock(datetime(2026, 1, 1, 0, 30, tzinfo=UTC)))
    sched.start()
    try:
        sched.loop_once()
    finally:
        sched.close()
    created, existing = api.backfill("hourly", "2026-02-01T00:00", "2026-02-01T05:00")
    assert len(created) == 6 and existing == 0
    created, existing = api.backfill("hourly", "2026-02-01T03:00", "2026-02-01T07:00")
    assert len(created) == 2 and existing == 3
    assert {r["trigger"] for r in api.list_runs("hourly", limit=100)} >= {"backfill"}
    with pytest.raises(Exception, match="before --start"):
        api.backfill("hourly", "2026-03-01", "2026-02-01")


POOLED = """
import json, time
from pathlib import Path
from nbflow import Pipeline, task

OUT = Path(__file__).parent / "spans"

with Pipeline("pooled", max_active_runs=4) as pipeline:
    @task(pool="db")
    def query(i):
        start = time.time()
        time.sleep(0.4)
        OUT.mkdir(exist_ok=True)
        (OUT / f"{i}-{start}").write_text(json.dumps([start, time.time()]))
        return i

    for i in range(4):
        query(i)
"""


def test_pools_are_never_exceeded_across_runs(dags):
    path = write(dags, "pooled.py", POOLED)
    api.set_pool("db", 1)
    sched = Scheduler(executor="local", parallelism=2)
    with serving(sched, stop_within=20):
        wait_for(lambda: api.list_pipelines())
        ids = [api.trigger("pooled", start=False) for _ in range(2)]
        wait_for(lambda: all(api.run_details(i)["run"]["state"] == "success" for i in ids), timeout=60)
    spans = sorted(json.loads(p.read_text()) for p in (path.parent / "spans").iterdir())
    assert len(spans) == 8
    for (_s1, e1), (s2, _e2) in zip(spans, spans[1:]):
        assert s2 >= e1 - 0.01, "two tasks of pool 'db' (1 slot) overlapped"


SENSORS = """
from nbflow import Pipeline, shell
from nbflow.tasks.sensor import sensor, file_exists

with Pipeline("sensing") as pipeline:
    ready = sensor(file_exists("flag.txt"), poke_interval=0.2, timeout=20, name="ready")
    never = sensor(file_exists("never.txt"), poke_interval=0.2, timeout=1, name="never")
    ready >> shell("echo go", name="go")
"""


def test_sensor_success_and_timeout(dags):
    path = write(dags, "sensing.py", SENSORS)
    with triggered("sensing", Scheduler(executor="inline")) as run_id:
        wait_for(lambda: task_states(run_id).get("ready") == "running")
        (path.parent / "flag.txt").write_text("now")
        wait_for(lambda: ended(run_id), timeout=30)
    tasks = {t["task_id"]: t for t in api.run_details(run_id)["tasks"]}
    assert tasks["ready"]["state"] == "success" and tasks["go"]["state"] == "success"
    assert tasks["never"]["state"] == "failed" and tasks["never"]["reason"] == "sensor_timeout"
    assert "timed out after 1s" in tasks["never"]["error"] and "never.txt" in tasks["never"]["error"]


RETRIED = """
from pathlib import Path
from nbflow import Pipeline, task

MARK = Path(__file__).parent / "tried"

with Pipeline("retried") as pipeline:
    @task(retries=1, retry_delay=1)
    def flaky():
        if not MARK.exists():
            MARK.write_text("once")
            raise RuntimeError("the first try fails")
        return "ok"

    flaky()
"""


def test_retry_is_started_when_its_delay_has_passed(dags):
    """Nothing but the retry's timer wakes the run up: no executor event arrives meanwhile."""
    write(dags, "retried.py", RETRIED)
    with triggered("retried", Scheduler(executor="inline")) as run_id:
        wait_for(lambda: ended(run_id), timeout=30)
    details = api.run_details(run_id)
    assert details["run"]["state"] == "success" and api.load_output(run_id, "flaky") == "ok"
    first, second = sorted(details["attempts"], key=lambda a: a["try_number"])
    assert first["state"] == "up_for_retry" and second["state"] == "success"
    assert (second["queued_at"] - first["end_date"]).total_seconds() >= 0.9


def test_run_cancelled_elsewhere_stops_being_driven(dags):
    write(dags, "sensing.py", SENSORS)
    sched = Scheduler(executor="inline")
    with triggered("sensing", sched) as run_id:
        wait_for(lambda: sched.driver.owns(run_id))
        wait_for(lambda: task_states(run_id).get("ready") == "running")
        api.cancel_run(run_id)
        wait_for(lambda: not sched.driver.owns(run_id), timeout=5)  # noticed within cancel_poll (0.3 s here)
    details = api.run_details(run_id)
    assert details["run"]["state"] == "cancelled"
    assert {t["state"] for t in details["tasks"]} == {"cancelled"}


NAP = f"97.{os.getpid()}"  # a duration no other test or session sleeps for
NAPPING = f"""
from nbflow import Pipeline, shell

with Pipeline("napping") as pipeline:
    shell("sleep {NAP}", name="nap")
"""


def test_run_cancelled_while_inline_runs_a_command_kills_it(dags):
    """On inline the attempt runs inside the scheduler's own poll: a cancellation is noticed
    from another thread (CancelWatch), the command is killed and the loop goes on."""
    write(dags, "napping.py", NAPPING)
    sched = Scheduler(executor="inline")
    with triggered("napping", sched) as run_id:
        wait_for(lambda: _processes("sleep", NAP))
        api.cancel_run(run_id)
        wait_for(lambda: not sched.driver.owns(run_id), timeout=20)  # not the 97 s the command sleeps
        assert not _processes("sleep", NAP)
    details = api.run_details(run_id)
    assert details["run"]["state"] == "cancelled"
    (nap,) = details["tasks"]
    assert nap["state"] == "cancelled", nap


def _processes(*cmdline: str) -> list[int]:
    import psutil

    return [p.pid for p in psutil.process_iter(["cmdline"]) if p.info["cmdline"] == list(cmdline)]


CALLBACKS = """
import json
from pathlib import Path
from nbflow import Pipeline, task

LOG = Path(__file__).parent / "calls.jsonl"

def record(ctx):
    with LOG.open("a") as fh:
        fh.write(json.dumps({"task": ctx.get("task_id"), "state": ctx["state"]}) + "\\n")

with Pipeline("notify", on_failure=record, on_success=record) as pipeline:
    @task(retries=1, on_failure=record, on_success=record)
    def boom():
        raise ValueError("no")

    @task(on_success=record)
    def fine():
        return 1

    boom()
    fine()
"""


def test_callbacks_are_called_once_per_state_change(nbflow_home, write_pipeline):
    from nbflow.loader import load_pipeline

    path = write_pipeline(CALLBACKS)
    api.run_pipeline(load_pipeline(path), executor="inline")
    calls = [json.loads(line) for line in (path.parent / "calls.jsonl").read_text().splitlines()]
    assert sorted(calls, key=str) == sorted(
        [{"task": "boom", "state": "failed"}, {"task": "fine", "state": "success"}, {"task": None, "state": "failed"}],
        key=str,
    )


def test_second_scheduler_on_sqlite_is_refused(dags, nbflow_home):
    write(dags, "manual.py", TRIGGERED)
    sched = Scheduler(executor="inline")
    sched.start()
    try:
        env = {**os.environ, "NBFLOW_HOME": str(nbflow_home)}
        res = subprocess.run(
            [sys.executable, "-m", "nbflow", "scheduler", "-e", "inline"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert res.returncode == 2
        assert "SQLite supports one scheduler; use PostgreSQL for HA" in res.stderr
        assert len(api.open_store().live_jobs(60, kinds=("scheduler",))) == 1
    finally:
        sched.close()


def test_invalid_start_date_names_the_pipeline():
    from nbflow import Pipeline

    with pytest.raises(ScheduleError, match="pipeline 'dated' has an invalid start_date 'yesterday'"):
        Pipeline("dated", schedule="@daily", start_date="yesterday")
    with pytest.raises(ScheduleError, match="ends .* before it starts"):
        Pipeline("dated", schedule="@daily", start_date="2026-02-01", end_date="2026-01-01")
    with pytest.raises(ScheduleError, match="unknown timezone 'Mars/Base'"):
        Pipeline("dated", schedule="@daily", timezone="Mars/Base")


def test_real_time_short_schedule(dags):
    write(
        dags,
        "fast.py",
        """
        from nbflow import Pipeline, shell
        with Pipeline("fast", schedule="* * * * * */1") as p:
            shell("true", name="tick")
        """,
    )
    sched = Scheduler(executor="inline")
    with serving(sched):
        wait_for(lambda: len([r for r in api.list_runs("fast", limit=50) if r["state"] == "success"]) >= 3, timeout=30)
    dates = [r["logical_date"] for r in runs_of("fast")]
    assert len(dates) == len(set(dates)) and all(b - a >= timedelta(seconds=1) for a, b in zip(dates, dates[1:]))


def test_db_clean_removes_old_runs_and_their_files(nbflow_home, write_pipeline):
    from nbflow.loader import load_pipeline

    result = api.run_pipeline(load_pipeline(write_pipeline(TRIGGERED)), executor="inline")
    folder = Path(api.run_details(result.run_id)["artifacts"][0]["uri"]).parents[3]
    assert folder.name == f"run-{result.run_id}" and folder.exists()
    assert api.clean(api.parse_age("1d")) == []
    assert api.clean(timedelta(seconds=0), dry_run=True) == [result.run_id]
    assert api.clean(timedelta(seconds=0)) == [result.run_id]
    assert not folder.exists() and api.list_runs() == []


def test_notebooks_used_by_tasks_are_not_taken_for_pipelines(dags, monkeypatch):
    import shutil

    monkeypatch.setenv("NBFLOW_IMPORT_TIMEOUT", "120")  # this file imports papermill: not a hang
    api.reset()

    example = Path(__file__).parent.parent / "notebooks" / "ml_pipeline"
    for name in ("pipeline.py", "prepare.ipynb", "train.ipynb", "evaluate.ipynb"):
        shutil.copy(example / name, dags / name)
    sched = Scheduler(executor="inline")
    sched.start()
    try:
        sched.loop_once()
    finally:
        sched.close()
    assert api.import_errors() == []
    assert [p["name"] for p in api.list_pipelines()] == ["ml_notebooks"]


INCREMENTAL = """
from nbflow import Pipeline, task

with Pipeline("hourly_incr", schedule="@hourly", start_date="2026-01-01", catchup=True, incremental=True,
              max_active_runs=1) as pipeline:  # one after the other: the second sees the first finished
    @task
    def load():
        open({side!r}, "a").write("load\\n")
        return 1

    @task
    def stamp(x, logical_date):
        open({side!r}, "a").write("stamp\\n")
        return logical_date.isoformat()

    stamp(load())
"""


def test_scheduled_runs_of_an_incremental_pipeline_reuse_what_does_not_depend_on_the_date(dags, tmp_path):
    side = tmp_path / "executions.txt"
    write(dags, "hourly_incr.py", INCREMENTAL.format(side=str(side)))
    sched = Scheduler(executor="inline", clock=Clock(datetime(2026, 1, 1, 2, 30, tzinfo=UTC)))
    sched.start()
    try:
        for _ in range(200):
            runs = runs_of("hourly_incr")
            if len(runs) == 2 and all(r["state"] == "success" for r in runs):
                break
            sched.loop_once()
    finally:
        sched.close()
    first, second = runs_of("hourly_incr")
    assert first["incremental"] and second["incremental"] and first["trigger"] == "scheduled"
    assert sorted(side.read_text().split()) == ["load", "stamp", "stamp"]  # load once; stamp takes the date
    tasks = {t["task_id"]: t for t in api.run_details(second["id"])["tasks"]}
    assert (tasks["load"]["state"], tasks["load"]["why"]) == ("cached", f"reused from run {first['id']}, try 1")
    assert tasks["stamp"]["state"] == "success"
    assert tasks["stamp"]["why"].startswith("run value logical_date: datetime.datetime(2026, 1, 1, 0, 0")
