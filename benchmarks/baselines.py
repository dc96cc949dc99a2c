"""Baselines measured in the same run as nbflow: a plain loop, a plain process pool, bare SQL."""

from __future__ import annotations

import itertools
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

from benchmarks import funcs


def pool_wide(n: int, workers: int = 2) -> float:
    """Seconds to run ``n`` no-ops through a fresh ``ProcessPoolExecutor`` (submit all, then wait).

    The pool uses the ``spawn`` start method, as nbflow's ``local`` executor does, and its
    start-up and shutdown are timed, as nbflow's are.
    """
    t0 = time.perf_counter()
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(funcs.noop) for _ in range(n)]
        for f in futures:
            f.result()
    return time.perf_counter() - t0


def pool_chain(n: int, workers: int = 2) -> float:
    """Seconds to run the chain through a fresh pool: submit one step, wait for it, submit the next."""
    t0 = time.perf_counter()
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        x = pool.submit(funcs.start).result()
        for _ in range(1, n):
            x = pool.submit(funcs.step, x).result()
    assert x == n - 1
    return time.perf_counter() - t0


def bare_sql(n: int, path: Path, *, tuned: bool = True) -> float:
    """Seconds to write ``n`` tasks' state changes the naive way with SQLAlchemy Core.

    Per task, each its own committed transaction: insert the task instance row; update it
    to ``queued`` and insert an attempt row; update it to ``running``; update it to
    ``success``. That is 4 commits (5 statements) per task. ``tuned`` applies the pragmas
    nbflow uses (WAL journal, ``synchronous=NORMAL``); otherwise SQLite's defaults.
    """
    import sqlalchemy as sa

    engine = sa.create_engine(f"sqlite:///{path}")
    if tuned:

        @sa.event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record):  # noqa: ANN001
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

    meta = sa.MetaData()
    ti = sa.Table(
        "task_instances",
        meta,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("run_id", sa.Integer, nullable=False),
        sa.Column("task_id", sa.String(250), nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("try_number", sa.Integer, nullable=False),
        sa.Column("start_date", sa.DateTime),
        sa.Column("end_date", sa.DateTime),
        sa.Column("updated_at", sa.DateTime),
        sa.UniqueConstraint("run_id", "task_id"),
    )
    attempts = sa.Table(
        "task_attempts",
        meta,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("run_id", sa.Integer, nullable=False),
        sa.Column("task_id", sa.String(250), nullable=False),
        sa.Column("try_number", sa.Integer, nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("queued_at", sa.DateTime),
    )
    meta.create_all(engine)
    with engine.connect():  # open the pooled connection (and the pragmas) before timing
        pass
    now = lambda: datetime.now(UTC)  # noqa: E731
    t0 = time.perf_counter()
    for i in range(n):
        tid = f"t{i}"
        key = (ti.c.run_id == 1) & (ti.c.task_id == tid)
        with engine.begin() as conn:
            conn.execute(sa.insert(ti).values(run_id=1, task_id=tid, state="pending", try_number=0, updated_at=now()))
        with engine.begin() as conn:
            conn.execute(sa.update(ti).where(key, ti.c.state == "pending").values(state="queued", try_number=1))
            conn.execute(
                sa.insert(attempts).values(run_id=1, task_id=tid, try_number=1, state="queued", queued_at=now())
            )
        with engine.begin() as conn:
            conn.execute(sa.update(ti).where(key, ti.c.state == "queued").values(state="running", start_date=now()))
        with engine.begin() as conn:
            conn.execute(sa.update(ti).where(key, ti.c.state == "running").values(state="success", end_date=now()))
    elapsed = time.perf_counter() - t0
    engine.dispose()
    return elapsed


# --- raw Dask on the benchmark's LocalCluster ------------------------------------------------------


def dask_connect(address: str) -> float:
    """Seconds to connect a ``Client`` to the cluster and close it (both sides pay it once per run)."""
    from distributed import Client

    t0 = time.perf_counter()
    Client(address, timeout="10s").close()
    return time.perf_counter() - t0


def dask_map(address: str, n: int) -> float:
    """Seconds to run ``n`` no-ops with ``client.map`` and gather their results, on a new ``Client``.

    Connect and close are timed (nbflow's executor connects and closes one per run too), and
    the results are gathered (nbflow fetches every attempt's result).
    """
    from distributed import Client

    t0 = time.perf_counter()
    with Client(address, timeout="10s") as client:
        futures = client.map(funcs.noop_i, range(n), pure=False)
        results = client.gather(futures)
        del futures
    elapsed = time.perf_counter() - t0
    if len(results) != n:
        raise RuntimeError(f"raw Dask map: {len(results)} results for {n} tasks")
    return elapsed


def dask_chain(address: str, n: int) -> tuple[float, list[float]]:
    """A ``client.submit`` chain of ``n`` timed steps, each taking the previous future.

    Returns (seconds, with connect and close; hand-offs in ms: a step's end to the next one's
    start, from the ``[start, end]`` each step returns). Gathering the times is not timed.
    """
    from distributed import Client

    t0 = time.perf_counter()
    client = Client(address, timeout="10s")
    try:
        futures = [client.submit(funcs.timed_start, pure=False)]
        for _ in range(1, n):
            futures.append(client.submit(funcs.timed_step, futures[-1], pure=False))
        futures[-1].result()
        t1 = time.perf_counter()
        times = client.gather(futures)
        del futures
        t2 = time.perf_counter()
    finally:
        client.close()
    elapsed = (t1 - t0) + (time.perf_counter() - t2)
    ho = [(child[0] - parent[1]) * 1000 for parent, child in itertools.pairwise(times)]
    return elapsed, ho
