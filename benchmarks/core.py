"""The benchmarks: each group measures nbflow and its baselines in this process and returns rows.

Every nbflow measurement runs against a fresh temporary ``NBFLOW_HOME`` (a new SQLite
database and artifact root); opening (creating) that database is done before the clock
starts, because schema creation is a once-per-database cost, not a per-run one (the
``fixed-cost-cold`` row reports it). Times are ``time.perf_counter`` wall-clock seconds;
no-op timings take the best of a few repeats (noise on a shared machine only adds), the
notebook comparison takes the median as asked.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
INLINE_TARGET_MS = 2.0  # per-task overhead on the inline executor, SQL writes included
FLATNESS_TARGET = 1.5  # overhead at the largest size / overhead at the smallest
FIXED_COST_TARGET_S = 0.2  # one 1-task run on a warm process
NOTEBOOK_TARGET = 1.15  # nbflow notebook task / bare papermill


@dataclass
class Config:
    """Sizes and repeats; ``quick`` shrinks them for a smoke run."""

    quick: bool = False
    wide: int = 500
    chain: int = 100
    flat_sizes: tuple[int, ...] = (100, 1_000, 10_000)
    repeat: int = 3
    local_repeat: int = 2
    notebook_repeat: int = 3
    budget_s: float = 900.0  # skip (and say why) a flatness size projected to take longer
    dask_wide: int = 1_000
    dask_chain: int = 100
    dask_repeat: int = 2  # nbflow runs per dask measurement (raw Dask: repeat + 2)
    dask_notebooks: int = 8
    dask_notebook_repeat: int = 5  # kernel starts on 2 shared CPUs: the noisiest row
    sweep_points: int = 32
    sweep_repeat: int = 3
    sched_pipelines: int = 200
    sched_tasks: int = 10
    sched_minutes: int = 3
    trigger_repeat: int = 20

    @classmethod
    def make(cls, quick: bool, budget_s: float | None = None) -> Config:
        cfg = (
            cls(
                quick=True,
                wide=100,
                chain=20,
                flat_sizes=(100, 1_000),
                repeat=2,
                local_repeat=1,
                dask_wide=100,
                dask_chain=20,
                dask_repeat=1,
                dask_notebooks=4,
                dask_notebook_repeat=1,
                sweep_points=8,
                sweep_repeat=1,
                sched_pipelines=20,
                sched_minutes=1,
                trigger_repeat=5,
            )
            if quick
            else cls()
        )
        if budget_s is not None:
            cfg.budget_s = budget_s
        return cfg


@dataclass
class Row:
    """One line of the table (and of the JSON file)."""

    name: str
    group: str
    compares: str
    nbflow: float | None  # the nbflow measurement, in ``unit``
    baseline: float | None  # the baseline measurement, in ``unit``
    unit: str  # "s" or "ms/task"
    result: float | None  # the compared quantity, in ``result_unit``
    result_unit: str  # "ms/task" (overhead) or "x" (ratio)
    target: str = ""  # e.g. "<= 2 ms/task"; empty: reported for information
    verdict: str = "info"  # PASS | FAIL | info | SKIP
    note: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class BenchmarkError(RuntimeError):
    """A benchmark could not measure what it should (a run failed)."""


# --- measuring helpers ------------------------------------------------------------------------


def _reset_nbflow() -> None:
    import nbflow.api

    nbflow.api.reset()


@contextmanager
def fresh_home(settings: dict[str, str] | None = None) -> Iterator[Path]:
    """A new temporary ``NBFLOW_HOME`` (SQLite database and artifacts), removed afterwards;
    ``settings``: more ``NBFLOW_*`` variables for the block (restored after it)."""
    names = ("NBFLOW_HOME", "NBFLOW_DB_URL", "NBFLOW_ARTIFACT_ROOT", "NBFLOW_EXECUTOR", "NBFLOW_PARALLELISM")
    saved = {k: os.environ.get(k) for k in (*names, *(settings or {}))}
    home = Path(tempfile.mkdtemp(prefix="nbflow-bench-"))
    for k in names:
        os.environ.pop(k, None)
    os.environ["NBFLOW_HOME"] = str(home)
    os.environ.update(settings or {})
    _reset_nbflow()
    try:
        yield home
    finally:
        _reset_nbflow()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        shutil.rmtree(home, ignore_errors=True)


def best(fn: Callable[[], float], repeat: int) -> tuple[float, list[float]]:
    """``fn`` returns seconds; the smallest of ``repeat`` calls, and all of them."""
    times = [fn() for _ in range(max(1, repeat))]
    return min(times), times


def measured_again(fn: Callable[[], Any], failures: list[str], tries: int = 3) -> Any:
    """``fn()``, measured again (up to ``tries`` times) when it fails, each failure noted in
    ``failures``: for a *baseline* whose kernels listen on TCP ports, where two kernels starting
    at once in two processes can be handed the same free port by jupyter_client ("Address
    already in use", then "Kernel died before replying to kernel_info" or "Kernel didn't
    respond"); that race is not what is measured. (nbflow's kernels listen on Unix sockets,
    ``nbflow/tasks/kernel.py``; nbflow's own measurements are never repeated this way.)"""
    for attempt in range(tries):
        try:
            return fn()
        except Exception as exc:
            if attempt == tries - 1:
                raise
            failures.append(f"{type(exc).__name__}: {str(exc)[:120]}")
    raise AssertionError("unreachable")


def alternate(repeat: int, ours: Callable[[], float], theirs: Callable[[], float]) -> tuple[list[float], list[float]]:
    """``repeat`` measurements of each side, which goes first alternating (noise falls on both)."""
    a: list[float] = []
    b: list[float] = []
    for i in range(repeat):
        if i % 2 == 0:
            a.append(ours())
            b.append(theirs())
        else:
            b.append(theirs())
            a.append(ours())
    return a, b


def clock(fn: Callable[[], Any], repeat: int = 5) -> float:
    """Best wall time of ``fn()`` over ``repeat`` calls."""
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return min(out)


def nbflow_run(
    pipeline: Any,
    executor: str,
    parallelism: int | None = None,
    after: Callable[[Any], Any] | None = None,
    settings: dict[str, str] | None = None,
) -> float:
    """Seconds of one ``api.run_pipeline`` on a fresh home (database opened before the clock).

    ``after(result)`` is called, untimed, while the home (its database and artifacts) still
    exists; ``settings``: more ``NBFLOW_*`` variables for the run (see :func:`fresh_home`).
    """
    from nbflow import api

    with fresh_home(settings):
        api.open_store()
        t0 = time.perf_counter()
        result = api.run_pipeline(pipeline, executor=executor, parallelism=parallelism)
        elapsed = time.perf_counter() - t0
        if not result.ok:
            bad = [(t["task_id"], t["state"], t["error"]) for t in result.tasks if t["state"] != "success"][:3]
            raise BenchmarkError(f"run of {pipeline.name} on {executor} ended {result.state.value}: {bad}")
        if after is not None:
            after(result)
    return elapsed


def warm_up() -> None:
    """One small inline run, so lazy imports and first-use costs are not charged to a benchmark."""
    from benchmarks import dags

    nbflow_run(dags.wide(3, "bench_warmup"), "inline")


def _ms(seconds: float, n: int) -> float:
    return seconds / n * 1000.0


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


# --- (a) no-op DAGs: wide and chain ------------------------------------------------------------------


def dag_group(shape: str, cfg: Config) -> list[Row]:
    """``shape`` is "wide" or "chain": nbflow inline and local vs loop, process pool and bare SQL."""
    from benchmarks import baselines, dags

    n = cfg.wide if shape == "wide" else cfg.chain
    pipeline = dags.wide(n) if shape == "wide" else dags.chain(n)
    plain = (lambda: dags.plain_wide(n)) if shape == "wide" else (lambda: dags.plain_chain(n))
    desc = f"{n} independent no-op tasks" if shape == "wide" else f"{n} chained tasks passing a value"

    loop_s = clock(plain, 5)
    inline_s, inline_all = best(lambda: nbflow_run(pipeline, "inline"), cfg.repeat)
    local_s, local_all = best(lambda: nbflow_run(pipeline, "local", parallelism=2), cfg.local_repeat)
    pool = baselines.pool_wide if shape == "wide" else baselines.pool_chain
    pool_s, pool_all = best(lambda: pool(n, 2), cfg.local_repeat)
    with tempfile.TemporaryDirectory(prefix="nbflow-bench-sql-") as tmp:
        sql_s, sql_all = best(lambda: baselines.bare_sql(n, Path(tmp) / f"bare-{time.monotonic_ns()}.db"), cfg.repeat)
        sql_default_s = baselines.bare_sql(n, Path(tmp) / "bare-default.db", tuned=False)

    inline_ovh = _ms(inline_s - loop_s, n)
    local_ovh = _ms(local_s - loop_s, n)
    sql_ms = _ms(sql_s, n)
    rows = [
        Row(
            name=f"{shape}-inline",
            group=shape,
            compares=f"{desc}: nbflow inline vs plain loop",
            nbflow=inline_s,
            baseline=loop_s,
            unit="s",
            result=inline_ovh,
            result_unit="ms/task",
            target=f"<= {INLINE_TARGET_MS:g} ms/task",
            verdict=_verdict(inline_ovh <= INLINE_TARGET_MS),
            details={"tasks": n, "inline_runs_s": inline_all},
        ),
        Row(
            name=f"{shape}-local",
            group=shape,
            compares=f"{desc}: nbflow local(2) vs ProcessPoolExecutor(2)",
            nbflow=local_s,
            baseline=pool_s,
            unit="s",
            result=local_s / pool_s,
            result_unit="x",
            note=(
                f"local overhead vs plain loop {local_ovh:.2f} ms/task, vs the pool "
                f"{_ms(local_s - pool_s, n):.2f} ms/task; both spawn 2 workers (timed)"
            ),
            details={
                "tasks": n,
                "local_runs_s": local_all,
                "pool_runs_s": pool_all,
                "overhead_vs_loop_ms_per_task": local_ovh,
                "overhead_vs_pool_ms_per_task": _ms(local_s - pool_s, n),
            },
        ),
        Row(
            name=f"{shape}-sql",
            group=shape,
            compares=f"{desc}: nbflow inline overhead vs bare SQL (4 commits/task)",
            nbflow=inline_ovh,
            baseline=sql_ms,
            unit="ms/task",
            result=inline_ovh / sql_ms,
            result_unit="x",
            note=(
                f"bare SQL: SQLAlchemy Core, WAL + synchronous=NORMAL like nbflow; "
                f"with SQLite defaults {_ms(sql_default_s, n):.2f} ms/task"
            ),
            details={
                "tasks": n,
                "commits_per_task": 4,
                "bare_sql_runs_s": sql_all,
                "bare_sql_ms_per_commit": sql_ms / 4,
                "bare_sql_default_pragmas_ms_per_task": _ms(sql_default_s, n),
            },
        ),
    ]
    return rows


# --- flatness: the inline wide DAG at growing sizes ----------------------------------------------------


def flatness_group(cfg: Config) -> list[Row]:
    """Per-task overhead of the inline wide DAG at each size, and largest/smallest."""
    from benchmarks import dags

    rows: list[Row] = []
    measured: list[tuple[int, float]] = []  # (size, overhead ms/task)
    last: tuple[int, float] | None = None  # (size, seconds)
    for n in cfg.flat_sizes:
        name = f"flat-wide-{n}"
        compares = f"{n} no-op tasks: nbflow inline vs plain loop"
        if last is not None:
            projected = last[1] * n / last[0] * 2  # linear, doubled: the per-task cost may grow
            if projected > cfg.budget_s:
                rows.append(
                    Row(
                        name=name,
                        group="flatness",
                        compares=compares,
                        nbflow=None,
                        baseline=None,
                        unit="s",
                        result=None,
                        result_unit="ms/task",
                        target=f"<= {INLINE_TARGET_MS:g} ms/task",
                        verdict="SKIP",
                        note=(
                            f"not run: projected {projected:.0f} s > budget {cfg.budget_s:.0f} s "
                            f"({last[0]} tasks took {last[1]:.1f} s); raise --budget to run it"
                        ),
                    )
                )
                continue
        pipeline = dags.wide(n, f"bench_flat_{n}")
        loop_s = clock(lambda n=n: dags.plain_wide(n), 5)
        repeat = 1 if n >= 10_000 else (cfg.repeat + 2 if n <= 100 else cfg.repeat)
        run_s, runs = best(lambda pipeline=pipeline: nbflow_run(pipeline, "inline"), repeat)
        ovh = _ms(run_s - loop_s, n)
        measured.append((n, ovh))
        last = (n, run_s)
        rows.append(
            Row(
                name=name,
                group="flatness",
                compares=compares,
                nbflow=run_s,
                baseline=loop_s,
                unit="s",
                result=ovh,
                result_unit="ms/task",
                target=f"<= {INLINE_TARGET_MS:g} ms/task",
                verdict=_verdict(ovh <= INLINE_TARGET_MS),
                details={"tasks": n, "runs_s": runs},
            )
        )
    if len(measured) >= 2:
        (n0, o0), (n1, o1) = measured[0], measured[-1]
        ratio = o1 / o0
        ok = ratio <= FLATNESS_TARGET and o1 <= INLINE_TARGET_MS
        skipped = [r.name for r in rows if r.verdict == "SKIP"]
        rows.append(
            Row(
                name="flatness",
                group="flatness",
                compares=f"per-task overhead at {n1} vs {n0} tasks (inline)",
                nbflow=o1,
                baseline=o0,
                unit="ms/task",
                result=ratio,
                result_unit="x",
                target=f"<= {FLATNESS_TARGET:g}x and <= {INLINE_TARGET_MS:g} ms",
                verdict=_verdict(ok),
                note=f"sizes {', '.join(str(s) for s, _ in measured)}"
                + (f"; skipped: {', '.join(skipped)}" if skipped else ""),
                details={"overhead_ms_per_task": dict((str(s), o) for s, o in measured)},
            )
        )
    return rows


# --- fixed cost per run: a 1-task pipeline, cold and warm process ----------------------------------------


def fixed_cost_group(cfg: Config) -> list[Row]:
    """Runs :mod:`benchmarks.fixedcost` in a fresh interpreter so "cold" really is cold."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.fixedcost", "--repeat", str(cfg.repeat + 2)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if proc.returncode != 0:
        raise BenchmarkError(f"benchmarks.fixedcost failed:\n{proc.stdout}\n{proc.stderr}")
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    task_s = data["task_own_s"]
    warm = data["warm_best_s"] - task_s
    cold = data["cold_run_s"] - task_s
    return [
        Row(
            name="fixed-cost-warm",
            group="fixed-cost",
            compares="1-task no-op run on inline, warm process: run_pipeline time - task's own time",
            nbflow=data["warm_best_s"],
            baseline=task_s,
            unit="s",
            result=warm * 1000,
            result_unit="ms/run",
            target=f"<= {FIXED_COST_TARGET_S * 1000:g} ms/run",
            verdict=_verdict(warm <= FIXED_COST_TARGET_S),
            note=(
                f"median {data['warm_median_s'] * 1000:.1f} ms; second run on the same database "
                f"{data['same_db_s'] * 1000:.1f} ms"
            ),
            details=data,
        ),
        Row(
            name="fixed-cost-cold",
            group="fixed-cost",
            compares="the same, first run in a fresh process (after imports and opening the store)",
            nbflow=data["cold_run_s"],
            baseline=task_s,
            unit="s",
            result=cold * 1000,
            result_unit="ms/run",
            note=(
                f"import nbflow {data['import_s'] * 1000:.0f} ms, create the database schema "
                f"{data['cold_store_s'] * 1000:.0f} ms (not included)"
            ),
            details=data,
        ),
    ]


# --- (b) one trivial notebook: nbflow vs bare papermill --------------------------------------------------


def notebook_group(cfg: Config) -> list[Row]:
    """nbflow ``notebook(...)`` on inline vs ``papermill.execute_notebook`` of the same notebook."""
    import papermill

    from benchmarks import dags

    pipeline = dags.trivial_notebook()
    out_dir = Path(tempfile.mkdtemp(prefix="nbflow-bench-pm-"))

    def run_papermill() -> float:
        out = out_dir / f"out-{time.monotonic_ns()}.ipynb"
        t0 = time.perf_counter()
        papermill.execute_notebook(
            str(dags.TRIVIAL),
            str(out),
            parameters={"x": 1},
            kernel_name="python3",
            progress_bar=False,
        )
        return time.perf_counter() - t0

    def run_nbflow() -> float:
        return nbflow_run(pipeline, "inline")

    from nbflow import api

    saved = os.environ.get("NBFLOW_KERNEL_POOL")
    os.environ["NBFLOW_KERNEL_POOL"] = "0"  # every attempt starts its kernel (notebook-warm-pool: a pooled one)
    api.reset()
    try:
        run_papermill(), run_nbflow()  # warm-up: imports and first kernel start, for both
        nb_times, pm_times = alternate(cfg.notebook_repeat, run_nbflow, run_papermill)
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)
        if saved is None:
            os.environ.pop("NBFLOW_KERNEL_POOL", None)
        else:
            os.environ["NBFLOW_KERNEL_POOL"] = saved
        api.reset()
    nb, pm = statistics.median(nb_times), statistics.median(pm_times)
    ratio = nb / pm
    return [
        Row(
            name="notebook",
            group="notebook",
            compares="trivial notebook: nbflow notebook() on inline vs papermill.execute_notebook",
            nbflow=nb,
            baseline=pm,
            unit="s",
            result=ratio,
            result_unit="x",
            target=f"<= {NOTEBOOK_TARGET:g}x",
            verdict=_verdict(ratio <= NOTEBOOK_TARGET),
            note=(
                f"median of {cfg.notebook_repeat}, order alternated; nbflow - papermill = {(nb - pm) * 1000:.0f} ms; "
                f"best-of ratio {min(nb_times) / min(pm_times):.2f}x (a kernel start dominates both)"
            ),
            details={"nbflow_runs_s": nb_times, "papermill_runs_s": pm_times},
        )
    ]


# --- the dask executor and the scheduler (modules of their own) ------------------------------------------


def warm_pool_group(cfg: Config) -> list[Row]:
    """One notebook task taking a pre-started kernel vs bare papermill (:mod:`benchmarks.poolbench`)."""
    from benchmarks.poolbench import warm_pool_group as run

    return run(cfg)


def sweep_group(cfg: Config) -> list[Row]:
    """A notebook sweep on 2 local workers vs papermill in a 2-process pool (:mod:`benchmarks.sweepbench`)."""
    from benchmarks.sweepbench import sweep_group as run

    return run(cfg)


def dask_group(cfg: Config) -> list[Row]:
    """nbflow on a 2-worker ``LocalCluster`` vs raw Dask and a papermill pool (:mod:`benchmarks.daskbench`)."""
    from benchmarks.daskbench import dask_group as run

    return run(cfg)


def incremental_group(cfg: Config) -> list[Row]:
    """Incremental re-runs: unchanged, one leaf changed, decision cost per task (:mod:`benchmarks.incrbench`)."""
    from benchmarks.incrbench import incremental_group as run

    return run(cfg)


def mapping_group(cfg: Config) -> list[Row]:
    """Mapped instances vs the same count of plain tasks, inline and dask (:mod:`benchmarks.mapbench`)."""
    from benchmarks.mapbench import mapping_group as run

    return run(cfg)


def celery_group(cfg: Config) -> list[Row]:
    """nbflow on celery vs on dask: fan-out, chain, hand-off (:mod:`benchmarks.celerybench`)."""
    from benchmarks.celerybench import celery_group as run

    return run(cfg)


def cluster_group(cfg: Config) -> list[Row]:
    """Namespace hosts with an object-store root vs 127.0.0.1 (:mod:`benchmarks.clusterbench`)."""
    from benchmarks.clusterbench import cluster_group as run

    return run(cfg)


def scheduler_group(cfg: Config) -> list[Row]:
    """The scheduler's loop on a simulated clock, and trigger-to-start latency (:mod:`benchmarks.schedbench`)."""
    from benchmarks.schedbench import scheduler_group as run

    return run(cfg)


GROUPS: dict[str, Callable[[Config], list[Row]]] = {
    "wide": lambda cfg: dag_group("wide", cfg),
    "chain": lambda cfg: dag_group("chain", cfg),
    "flatness": flatness_group,
    "fixed-cost": fixed_cost_group,
    "notebook": notebook_group,
    "notebook-warm-pool": warm_pool_group,
    "notebook-sweep": sweep_group,
    "dask": dask_group,
    "scheduler": scheduler_group,
    "incremental": incremental_group,
    "mapping": mapping_group,
    "celery": celery_group,
    "cluster": cluster_group,
}

REFERENCES = [
    "Reference numbers from the issue (other machines, for scale):",
    "  Prefect 3: 12.5 ms per no-op task at 1,000 tasks (77 ms at 100), plus 1.15 s per flow run",
    "  Airflow 3 `dags test`: about 81-149 ms per task",
    "  one committed SQLite state change: 0.45 ms with SQLAlchemy Core, 0.9 ms with an ORM session",
    "  raw Dask: about 2 ms per task on a wide map, 6 ms per step of a chain",
    "  Airflow 3: about 10 s to run a one-task DAG (trigger to done)",
]
