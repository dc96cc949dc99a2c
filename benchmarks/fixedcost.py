"""Fixed cost of one run, measured in a fresh interpreter: ``python -m benchmarks.fixedcost``.

Prints one JSON line. "cold" is the first run in this process (after ``import nbflow`` and
after opening the store, which creates the schema of the new database: reported apart);
it doubles as the warm-up. "warm" runs then take a fresh ``NBFLOW_HOME`` each.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    t0 = time.perf_counter()
    from benchmarks import dags, funcs
    from benchmarks.core import clock, fresh_home
    from nbflow import api

    import_s = time.perf_counter() - t0
    pipeline = dags.wide(1, "bench_fixed")
    task_own_s = clock(funcs.noop, 100)

    with fresh_home():
        t0 = time.perf_counter()
        api.open_store()
        cold_store_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        ok = api.run_pipeline(pipeline, executor="inline").ok
        cold_run_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        ok = api.run_pipeline(pipeline, executor="inline").ok and ok
        same_db_s = time.perf_counter() - t0

    warm: list[float] = []
    stores: list[float] = []
    for _ in range(args.repeat):
        with fresh_home():
            t0 = time.perf_counter()
            api.open_store()
            stores.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            ok = api.run_pipeline(pipeline, executor="inline").ok and ok
            warm.append(time.perf_counter() - t0)
    if not ok:
        raise SystemExit("a 1-task run did not succeed")
    print(
        json.dumps(
            {
                "import_s": import_s,
                "task_own_s": task_own_s,
                "cold_store_s": cold_store_s,
                "cold_run_s": cold_run_s,
                "same_db_s": same_db_s,
                "warm_store_s": min(stores),
                "warm_best_s": min(warm),
                "warm_median_s": statistics.median(warm),
                "warm_runs_s": warm,
            }
        )
    )


if __name__ == "__main__":
    main()
