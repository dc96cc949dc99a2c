"""The workers view (Flower's role): every worker of the configured cluster with its host,
queues, slots, memory, CPU, last heartbeat and the attempts it runs now, and the queues that
have tasks waiting that no worker serves, with the command that starts one.

``nbflow workers``, ``GET /nbflow/api/workers`` and the JupyterLab Workers view show this.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from nbflow.api.runs import open_store
from nbflow.executors.waiting import queue_resource, start_command, unmet
from nbflow.store import Store

ENGINE = "dask"


@dataclass
class Worker:
    """One worker and what it runs now (``running``: pipeline, run_id, task_id, try_number, state)."""

    engine: str
    name: str
    address: str
    host: str
    #: queues it serves; empty: a plain worker of a cluster that does not route by queue (it runs all)
    queues: list[str]
    slots: int
    resources: dict[str, float]
    memory: int | None
    memory_limit: int | None
    cpu: float | None
    last_seen_s: float | None
    running: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class WorkersView:
    """The cluster, its workers, and the queues waiting for a worker (``note``: why there is no list)."""

    engine: str
    address: str | None
    dashboard: str | None
    workers: list[Worker]
    #: queues with waiting tasks that no worker can take: ``queue``, ``waiting``, ``why``, ``command``
    unserved: list[dict[str, Any]]
    note: str | None = None
    reachable: bool = True

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (the REST answer)."""
        return asdict(self)


def list_workers(*, address: str | None = None, store: Store | None = None, timeout: float = 5.0) -> WorkersView:
    """The workers view of the Dask cluster at ``address`` (default: ``NBFLOW_DASK_ADDRESS``)."""
    from nbflow.executors.daskinfo import cluster_workers

    store = store or open_store()
    address = address or store.settings.dask_address
    if not address:
        return WorkersView(
            ENGINE,
            None,
            None,
            [],
            [],
            note="no Dask cluster is configured (NBFLOW_DASK_ADDRESS): each `nbflow run` and scheduler starts "
            "a local cluster of its own, whose workers live as long as it does; set NBFLOW_DASK_ADDRESS to a "
            "shared scheduler and start workers with `nbflow worker --scheduler ADDRESS --queue NAME`",
        )
    try:
        cluster = cluster_workers(address, timeout)
    except (OSError, TimeoutError) as exc:
        return WorkersView(
            ENGINE,
            address,
            None,
            [],
            [],
            note=f"the Dask scheduler at {address} cannot be reached ({exc}); is it running? "
            f"start one with: dask scheduler --port {address.rsplit(':', 1)[-1]}",
            reachable=False,
        )
    keys = [k for w in cluster.workers for k in w.processing]
    attempts = {row["executor_key"]: row for row in store.attempts_by_key(keys)}
    workers = [
        Worker(
            ENGINE,
            w.name,
            w.address,
            w.host,
            w.queues,
            w.slots,
            w.resources,
            w.memory,
            w.memory_limit,
            w.cpu,
            w.last_seen_s,
            running=[
                {k: attempts[key][k] for k in ("pipeline", "run_id", "task_id", "try_number", "state")}
                for key in w.processing
                if key in attempts
            ],
        )
        for w in cluster.workers
    ]
    return WorkersView(ENGINE, address, cluster.dashboard, workers, _unserved(workers, store, address))


def _unserved(workers: list[Worker], store: Store, address: str) -> list[dict[str, Any]]:
    """Queues with tasks waiting that no worker can take (what the Dask executor's note says)."""
    advertised = [{**w.resources, **{queue_resource(q): float(w.slots) for q in w.queues}} for w in workers]
    waiting = store.waiting_by_queue(ENGINE, default=store.settings.executor == ENGINE)
    return [
        {"queue": queue, "waiting": count, "why": why, "command": start_command(queue, {}, advertised, address)}
        for queue, count in sorted(waiting.items())
        if (why := unmet(queue, {}, advertised)) is not None
    ]
