"""The work of the no-op benchmarks: plain functions, no nbflow import.

They live at module level so that spawned worker processes (nbflow's ``local`` executor
and the ``ProcessPoolExecutor`` baseline) unpickle them by reference, and importing this
module costs a baseline worker nothing beyond the module itself.
"""

from __future__ import annotations


def noop() -> None:
    """A task that does nothing (wide DAGs, fixed cost)."""
    return None


def start() -> int:
    """The head of the chain."""
    return 0


def step(x: int) -> int:
    """One link of the chain: the value is passed along."""
    return x + 1


def noop_i(i: int) -> None:
    """A no-op taking an argument, for ``client.map`` (the raw Dask baseline)."""
    return None


def timed_start() -> list[float]:
    """Head of the timed chain: ``[time.time() at start, at end]``."""
    import time

    t0 = time.time()
    return [t0, time.time()]


def timed_step(prev: list[float]) -> list[float]:
    """One link of the timed chain: receives the parent's times, returns its own."""
    import time

    t0 = time.time()
    return [t0, time.time()]


def run_notebook(src: str, out: str) -> None:
    """One bare ``papermill.execute_notebook`` (the notebook pool baseline)."""
    import papermill

    papermill.execute_notebook(src, out, parameters={"x": 1}, kernel_name="python3", progress_bar=False)


def leaf(x: int, version: int) -> int:
    """The leaf of the incremental benchmarks: a second of work (its ``version`` makes it change)."""
    import time

    time.sleep(1.0)
    return x + version
