"""The benchmark pipelines, built programmatically from :mod:`benchmarks.funcs`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks import funcs
from nbflow import Pipeline, notebook, task

NOTEBOOKS = Path(__file__).resolve().parent / "notebooks"
TRIVIAL = NOTEBOOKS / "trivial.ipynb"


def wide(n: int, name: str | None = None) -> Pipeline:
    """``n`` independent no-op tasks (explicit ids ``t0`` ... so no renaming cost)."""
    with Pipeline(name or f"bench_wide_{n}") as pipeline:
        noop = task(funcs.noop)
        for i in range(n):
            noop.options_(name=f"t{i}")()
    return pipeline


def chain(n: int, name: str | None = None) -> Pipeline:
    """``n`` tasks, each taking the previous one's value (``start`` then ``n - 1`` steps)."""
    return _chain(n, name or f"bench_chain_{n}", funcs.start, funcs.step)


def timed_chain(n: int, name: str | None = None) -> Pipeline:
    """``n`` chained tasks, each returning ``[start, end]`` (``time.time()``) to the next one."""
    return _chain(n, name or f"bench_timed_chain_{n}", funcs.timed_start, funcs.timed_step)


def _chain(n: int, name: str, first: Any, then: Any) -> Pipeline:
    with Pipeline(name) as pipeline:
        handle = task(first, name="t0")()
        step = task(then)
        for i in range(1, n):
            handle = step.options_(name=f"t{i}")(handle)
    return pipeline


def notebooks(n: int, name: str | None = None) -> Pipeline:
    """``n`` independent notebook tasks, each running ``notebooks/trivial.ipynb`` with ``x=1``."""
    with Pipeline(name or f"bench_notebooks_{n}") as pipeline:
        for i in range(n):
            notebook(str(TRIVIAL), name=f"nb{i}", parameters={"x": 1})
    return pipeline


def trivial_notebook(name: str = "bench_notebook") -> Pipeline:
    """One notebook task running ``notebooks/trivial.ipynb`` with ``x=1``."""
    with Pipeline(name) as pipeline:
        notebook(str(TRIVIAL), name="trivial", parameters={"x": 1})
    return pipeline


def plain_wide(n: int) -> None:
    """The wide DAG's work in a plain loop."""
    noop = funcs.noop
    for _ in range(n):
        noop()


def plain_chain(n: int) -> int:
    """The chain's work in a plain loop."""
    x = funcs.start()
    for _ in range(1, n):
        x = funcs.step(x)
    return x
