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
