"""Why an attempt submitted to Dask waits, and the ``nbflow worker`` command that would serve it.

A pure function of the task's queue and resources and of the workers' resources (what the
scheduler reports), so the Dask executor can ask it again while the attempt waits: a worker
that joins (or leaves) changes the answer, and the note with it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

QUEUE_PREFIX = "queue-"


def queue_resource(name: str) -> str:
    """The Dask worker resource that stands for nbflow queue ``name``."""
    return f"{QUEUE_PREFIX}{name}"


def served_queues(workers: Iterable[Mapping[str, float]]) -> set[str]:
    """The queues the workers (their resources) advertise."""
    return {r[len(QUEUE_PREFIX) :] for w in workers for r in w if r.startswith(QUEUE_PREFIX)}


def _amount(value: float) -> str:
    return f"{value:g}"


def unmet(queue: str, resources: Mapping[str, float], workers: Sequence[Mapping[str, float]]) -> str | None:
    """Why no worker (of ``workers``, their resources) can run an attempt of ``queue`` needing
    ``resources``; None: one can, so it waits only for a free slot.

    Queues route only on a cluster whose workers advertise some queue (plain ``dask worker``
    processes and the embedded cluster run every queue); resources always count.
    """
    served = served_queues(workers)
    needs = {**resources, **({queue_resource(queue): 1} if served else {})}
    if any(all(w.get(name, 0) >= amount for name, amount in needs.items()) for w in workers):
        return None
    if served and queue not in served:
        return f"no worker serves queue '{queue}' (served: {', '.join(sorted(served))})"
    if not workers:
        return "the cluster has no worker"
    of = f" of queue '{queue}'" if served else ""
    wanted = ", ".join(f"{name}={_amount(amount)}" for name, amount in sorted(resources.items()))
    return f"no worker{of} has the resources {wanted}"


def start_command(
    queue: str, resources: Mapping[str, float], workers: Sequence[Mapping[str, float]], scheduler: str
) -> str:
    """The ``nbflow worker`` command that starts a worker for ``queue`` and ``resources`` (it
    names the queue when the cluster routes by queue)."""
    flags = f" --queue {queue}" if served_queues(workers) else ""
    flags += "".join(f" --resources {name}={_amount(amount)}" for name, amount in sorted(resources.items()))
    return f"nbflow worker --scheduler {scheduler}{flags}"


def waiting_note(
    queue: str, resources: Mapping[str, float], workers: Sequence[Mapping[str, float]], scheduler: str
) -> str | None:
    """:func:`unmet`'s reason with the command that starts a worker that can (None: one can)."""
    why = unmet(queue, resources, workers)
    if why is None:
        return None
    return f"waiting: {why}; start one with: {start_command(queue, resources, workers, scheduler)}"
