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


def waiting_note(
    queue: str, resources: Mapping[str, float], workers: Sequence[Mapping[str, float]], scheduler: str
) -> str | None:
    """Why no worker can run an attempt of ``queue`` needing ``resources`` (None: one can, so
    it waits only for a free slot), with the command that starts one that can.

    Queues route only on a cluster whose workers advertise some queue (plain ``dask worker``
    processes and the embedded cluster run every queue); resources always count.
    """
    served = served_queues(workers)
    needs = {**resources, **({queue_resource(queue): 1} if served else {})}
    if any(all(w.get(name, 0) >= amount for name, amount in needs.items()) for w in workers):
        return None
    flags = f" --queue {queue}" if served else ""
    flags += "".join(f" --resources {name}={_amount(amount)}" for name, amount in sorted(resources.items()))
    if served and queue not in served:
        why = f"no worker serves queue '{queue}' (served: {', '.join(sorted(served))})"
    elif not workers:
        why = "the cluster has no worker"
    else:
        of = f" of queue '{queue}'" if served else ""
        wanted = ", ".join(f"{name}={_amount(amount)}" for name, amount in sorted(resources.items()))
        why = f"no worker{of} has the resources {wanted}"
    return f"waiting: {why}; start one with: nbflow worker --scheduler {scheduler}{flags}"
