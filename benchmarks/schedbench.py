"""The ``scheduler`` group: the scheduler's loop on a simulated clock, and trigger-to-start latency.

(a) ``cfg.sched_pipelines`` pipeline files of ``cfg.sched_tasks`` no-op tasks each (a
fan-out/fan-in: ``t0 >> [t1 .. t8] >> t9``), all on ``* * * * *`` with ``catchup=False``, in a
temporary DAG folder, driven by :class:`nbflow.scheduler.Scheduler` on the ``inline``
executor with a fake clock. One warm-up minute (the DAG folder is parsed then: reported
apart) is not measured; then each of ``cfg.sched_minutes`` minutes advances the clock by
60 s and calls ``loop_once()`` until every run created that minute has finished. The
numbers are this process's CPU time (``time.process_time``) and the SQL statements sent
to the database (a ``before_cursor_execute`` listener on ``store.engine``) over those
minutes. On ``inline`` the no-op attempts run in this process, so their execution (nbflow's
per-attempt wrapper around a function that does nothing) is included, and reported apart.

(b) A real ``nbflow scheduler -e local -j 2`` subprocess on its own DAG folder; this
process calls ``api.trigger(name, start=False)`` and waits for the run to succeed; the
task returns ``time.time()`` at its start. Latency = task start - the moment before
``trigger`` was called. Each trigger follows a random pause, so that it falls at a random
point of the scheduler's loop (which waits up to ``loop_interval`` for executor events).
"""

from __future__ import annotations

import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from benchmarks.core import REPO, BenchmarkError, Config, Row, _verdict, fresh_home
from benchmarks.daskbench import percentile

SQL_TARGET = 20.0  # statements per task instance
CPU_TARGET_MS = 5.0  # scheduler CPU per task instance
TRIGGER_TARGET_MS = 250.0  # median trigger -> first task start

PIPELINE = """\
from nbflow import Pipeline, task


def noop():
    return None


with Pipeline("{name}", schedule="* * * * *", start_date="2026-06-01", catchup=False) as pipeline:
    first = task(noop, name="t0")()
    middle = [task(noop, name=f"t{{i}}")() for i in range(1, {tasks} - 1)]
    last = task(noop, name="t{last}")()
    first >> middle >> last
"""

TRIGGERED = """\
import time

from nbflow import Pipeline, task


def stamp():
    return time.time()


with Pipeline("bench_trigger") as pipeline:
    task(stamp, name="t0")()
"""


class FakeClock:
    """A controllable "now" for the scheduler's schedule logic."""

    def __init__(self, now: datetime):
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def scheduler_group(cfg: Config) -> list[Row]:
    """(a) CPU and SQL per task instance of the scheduler's loop; (b) trigger-to-start latency."""
    return [*_loop(cfg), _due_walk(cfg), *_trigger_latency(cfg)]


def _due_walk(cfg: Config) -> Row:
    """First scheduling of a ``* * * * *`` pipeline, catchup=False, ``days`` after its start date."""
    from nbflow.schedule import Schedule, normalize

    days = 1 if cfg.quick else 7
    now = datetime(2026, 6, 1, 0, 0, 30, tzinfo=UTC)
    schedule = Schedule(normalize("* * * * *"), start=now - timedelta(days=days, seconds=30))
    t0 = time.perf_counter()
    dates, _ = schedule.due(None, now, catchup=False)
    elapsed = time.perf_counter() - t0
    t0 = time.perf_counter()
    schedule.latest_complete(now)
    direct = time.perf_counter() - t0
    return Row(
        name="scheduler-due-walk",
        group="scheduler",
        compares=(
            f"first due-date computation of a '* * * * *' pipeline (catchup=False) started {days} day(s) ago: "
            f"Schedule.due() vs Schedule.latest_complete()"
        ),
        nbflow=elapsed,
        baseline=direct,
        unit="s",
        result=elapsed / direct,
        result_unit="x",
        note=(
            f"due() steps through the {days * 1440} intervals to keep {len(dates)}: "
            f"{elapsed / (days * 1440) * 1e6:.0f} us per interval, paid when a pipeline is first scheduled "
            f"or resumes after a pause"
            if elapsed > 10 * direct
            else f"due() goes straight to the newest of the {days * 1440} intervals (no walk over the gap)"
        ),
        details={"days": days, "due_s": elapsed, "latest_complete_s": direct},
    )


# --- (a) the loop on a simulated clock -----------------------------------------------------------------


def _loop(cfg: Config) -> list[Row]:
    import sqlalchemy as sa

    from nbflow.executors import inline
    from nbflow.scheduler import Scheduler
    from nbflow.states import RunState

    n, k, minutes = cfg.sched_pipelines, cfg.sched_tasks, cfg.sched_minutes
    if k < 3:
        raise BenchmarkError("the scheduler benchmark needs at least 3 tasks per pipeline")
    folder = Path(tempfile.mkdtemp(prefix="nbflow-bench-dags-"))
    for i in range(n):
        (folder / f"bench_sched_{i:03d}.py").write_text(
            PIPELINE.format(name=f"bench_sched_{i:03d}", tasks=k, last=k - 1)
        )

    # the no-op attempts run inside this process on inline: time them to report their share
    attempt_cpu = [0.0, 0]
    real_run = inline.run_work_item

    def timed_run(item: Any) -> Any:
        t0 = time.process_time()
        try:
            return real_run(item)
        finally:
            attempt_cpu[0] += time.process_time() - t0
            attempt_cpu[1] += 1

    statements = [0, 0]  # all, BEGINs
    counting = [False]

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if counting[0]:
            statements[0] += 1
            statements[1] += statement.startswith("BEGIN")

    # start_date is 10 minutes before the fake "now": Schedule.due() walks every interval from
    # start_date on before keeping the newest when catchup=False (see the scheduler-due-walk row)
    clock = FakeClock(datetime(2026, 6, 1, 0, 10, 30, tzinfo=UTC))
    created: list[int] = []
    claimed: set[int] = set()
    per_minute: list[dict[str, float]] = []
    inline.run_work_item = timed_run
    try:
        with fresh_home():
            sched = Scheduler(dags_folder=str(folder), executor="inline", clock=clock)
            sa.event.listen(sched.store.engine, "before_cursor_execute", count)
            real_create, real_claim = sched.create_due_runs, sched.claim_runs

            def create_due_runs() -> list[int]:
                ids = real_create()
                created.extend(ids)
                return ids

            def claim_runs() -> list[int]:
                ids = real_claim()
                claimed.update(ids)
                return ids

            sched.create_due_runs, sched.claim_runs = create_due_runs, claim_runs  # type: ignore[method-assign]

            def minute() -> int:
                """Loop until every run created in this minute has finished; returns the loops."""
                first = len(created)
                loops = 0
                while True:
                    sched.loop_once()
                    loops += 1
                    mine = created[first:]
                    if mine and not sched.driver.busy and claimed.issuperset(mine):
                        return loops
                    if loops > 200 * n * k:
                        raise BenchmarkError(f"the scheduler did not finish the minute's runs after {loops} loops")

            sched.start()
            try:
                t0, c0 = time.perf_counter(), time.process_time()
                sched.loader.load()
                sched.sync_pipelines()
                sched._last_parse = time.monotonic()  # parsed just now: the loop need not parse again
                parse_wall, parse_cpu = time.perf_counter() - t0, time.process_time() - c0
                warm_loops = minute()
                if len(created) != n:
                    raise BenchmarkError(f"warm-up minute created {len(created)} runs, expected {n}")
                attempt_cpu[:] = [0.0, 0]
                counting[0] = True
                wall0, cpu0 = time.perf_counter(), time.process_time()
                for _ in range(minutes):
                    clock.now += timedelta(seconds=60)
                    before, s0, c_0, w_0 = len(created), statements[0], time.process_time(), time.perf_counter()
                    loops = minute()
                    per_minute.append(
                        {
                            "runs": len(created) - before,
                            "loops": loops,
                            "cpu_s": time.process_time() - c_0,
                            "wall_s": time.perf_counter() - w_0,
                            "sql": statements[0] - s0,
                        }
                    )
                cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
                counting[0] = False
            finally:
                sched.close()
            runs = created[n:]
            states = {sched.store.get_run(r)["state"] for r in runs}
            if states != {RunState.SUCCESS.value}:
                raise BenchmarkError(f"scheduled runs ended {sorted(states)}")
    finally:
        inline.run_work_item = real_run
        shutil.rmtree(folder, ignore_errors=True)

    n_runs = len(runs)
    n_tis = n_runs * k
    if n_runs != n * minutes:
        raise BenchmarkError(f"{n_runs} runs in {minutes} minute(s), expected {n * minutes}")
    cpu_run_ms = cpu / n_runs * 1000
    cpu_ti_ms = cpu / n_tis * 1000
    sql_ti = statements[0] / n_tis
    attempts_ms = attempt_cpu[0] / max(1, attempt_cpu[1]) * 1000
    loops = sum(m["loops"] for m in per_minute)
    desc = f"{n} pipelines x {k} no-op tasks due every minute, inline, {minutes} simulated minute(s)"
    details = {
        "pipelines": n,
        "tasks_per_pipeline": k,
        "minutes": minutes,
        "runs": n_runs,
        "task_instances": n_tis,
        "cpu_s": cpu,
        "wall_s": wall,
        "sql_statements": statements[0],
        "sql_begins": statements[1],
        "attempt_cpu_s": attempt_cpu[0],
        "attempts": attempt_cpu[1],
        "loops": loops,
        "warmup_loops": warm_loops,
        "per_minute": per_minute,
        "parse_wall_s": parse_wall,
        "parse_cpu_s": parse_cpu,
    }
    return [
        Row(
            name="scheduler-parse",
            group="scheduler",
            compares=f"first parse of the DAG folder ({n} pipeline files) and recording them, per file (warm-up, not in the rows below)",
            nbflow=parse_wall / n * 1000,
            baseline=parse_cpu / n * 1000,
            unit="ms",
            result=parse_wall / n * 1000,
            result_unit="ms/file",
            note=f"{parse_wall:.1f} s wall, {parse_cpu:.1f} s CPU of this process (the baseline column; each file is first imported in a subprocess)",
            details=details,
        ),
        Row(
            name="scheduler-cpu-run",
            group="scheduler",
            compares=f"{desc}: scheduler CPU per scheduled run",
            nbflow=cpu_run_ms,
            baseline=None,
            unit="ms",
            result=cpu_run_ms,
            result_unit="ms CPU/run",
            note=f"{cpu:.2f} s CPU, {wall:.2f} s wall for {n_runs} runs; {loops} loop_once() calls",
            details=details,
        ),
        Row(
            name="scheduler-cpu-task",
            group="scheduler",
            compares=f"{desc}: scheduler CPU per task instance (executing the no-op attempts included)",
            nbflow=cpu_ti_ms,
            baseline=attempts_ms,
            unit="ms",
            result=cpu_ti_ms,
            result_unit="ms CPU/task",
            target=f"< {CPU_TARGET_MS:g} ms CPU/task",
            verdict=_verdict(cpu_ti_ms < CPU_TARGET_MS),
            note=(
                f"baseline column: CPU of executing one no-op attempt on inline (run_work_item), "
                f"{attempts_ms * n_tis / 1000 / max(cpu, 1e-9) * 100:.0f}% of the total"
            ),
            details=details,
        ),
        Row(
            name="scheduler-sql-task",
            group="scheduler",
            compares=f"{desc}: SQL statements per task instance",
            nbflow=sql_ti,
            baseline=None,
            unit="SQL",
            result=sql_ti,
            result_unit="SQL/task",
            target=f"< {SQL_TARGET:g} SQL/task",
            verdict=_verdict(sql_ti < SQL_TARGET),
            note=(
                f"{statements[0]} statements for {n_tis} task instances ({statements[1]} of them BEGIN; "
                f"commits are not statements), {statements[0] / max(1, loops):.1f} per loop_once()"
            ),
            details=details,
        ),
    ]


# --- (b) trigger -> first task start, with `nbflow scheduler` running ------------------------------------


def _trigger_latency(cfg: Config) -> list[Row]:
    from nbflow import api

    folder = Path(tempfile.mkdtemp(prefix="nbflow-bench-trigger-"))
    (folder / "bench_trigger.py").write_text(TRIGGERED)
    latencies: list[float] = []
    proc: subprocess.Popen[bytes] | None = None
    log = folder.parent / f"{folder.name}.log"
    try:
        with fresh_home() as home, open(log, "wb") as out:
            store = api.open_store()
            env = {
                **os.environ,
                "NBFLOW_HOME": str(home),
                "NBFLOW_DAGS_FOLDER": str(folder),
                "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
            }
            proc = subprocess.Popen(
                [sys.executable, "-m", "nbflow", "scheduler", "-e", "local", "-j", "2"],
                cwd=REPO,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
            _wait_for(
                lambda: store.get_pipeline("bench_trigger") is not None and api.scheduler_alive(store), 60, proc, log
            )
            jitter = random.Random(4)
            for i in range(cfg.trigger_repeat + 1):  # the first one warms the executor's worker processes up
                # a random phase against the scheduler's loop (it waits up to loop_interval = 0.1 s
                # for executor events): right after the previous run ended it would always be the same
                time.sleep(jitter.uniform(0, 0.2))
                t0 = time.time()
                run_id = api.trigger("bench_trigger", start=False, store=store)
                _wait_for(
                    lambda r=run_id: store.get_run(r)["state"] in ("success", "failed", "cancelled"), 60, proc, log
                )
                if store.get_run(run_id)["state"] != "success":
                    raise BenchmarkError(f"triggered run {run_id} ended {store.get_run(run_id)['state']}")
                if i:
                    latencies.append((api.load_output(run_id, "t0", store=store) - t0) * 1000)
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(folder, ignore_errors=True)
        log.unlink(missing_ok=True)
    med, p95 = statistics.median(latencies), percentile(latencies, 95)
    return [
        Row(
            name="scheduler-trigger",
            group="scheduler",
            compares="api.trigger() -> the task's first line, `nbflow scheduler -e local -j 2` running: median",
            nbflow=med,
            baseline=None,
            unit="ms",
            result=med,
            result_unit="ms",
            target=f"< {TRIGGER_TARGET_MS:g} ms",
            verdict=_verdict(med < TRIGGER_TARGET_MS),
            note=(
                f"{len(latencies)} triggers, one at a time, each after a random 0-200 ms pause, after a warm-up one; "
                f"p95 {p95:.0f} ms, min {min(latencies):.0f} ms, max {max(latencies):.0f} ms"
            ),
            details={"latencies_ms": latencies},
        ),
        Row(
            name="scheduler-trigger-p95",
            group="scheduler",
            compares="the same, 95th percentile",
            nbflow=p95,
            baseline=None,
            unit="ms",
            result=p95,
            result_unit="ms",
        ),
    ]


def _wait_for(cond: Any, timeout: float, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if proc.poll() is not None:
            raise BenchmarkError(
                f"nbflow scheduler exited ({proc.returncode}):\n{log.read_text(errors='replace')[-2000:]}"
            )
        if time.monotonic() > deadline:
            raise BenchmarkError(
                f"timed out after {timeout:g} s; scheduler log:\n{log.read_text(errors='replace')[-2000:]}"
            )
        time.sleep(0.005)
