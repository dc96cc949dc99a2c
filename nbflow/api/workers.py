"""The workers view (Flower's role): every worker of the configured cluster with its host,
queues, slots, memory, CPU, last heartbeat and the attempts it runs now, and the queues that
have tasks waiting that no worker serves, with the command that starts one.

``nbflow workers``, ``GET /nbflow/api/workers`` and the JupyterLab Workers view show this.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from nbflow.api.runs import open_store
from nbflow.connections import masked_url
from nbflow.executors.base import ClusterWorker
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


def list_workers(
    *, address: str | None = None, engine: str | None = None, store: Store | None = None, timeout: float = 5.0
) -> WorkersView:
    """The workers view of the Dask cluster at ``address`` (default: ``NBFLOW_DASK_ADDRESS``),
    or of the Celery workers on the broker (``engine="celery"``, the default when
    ``NBFLOW_EXECUTOR=celery``; ``address``: the broker, default ``NBFLOW_CELERY_BROKER``)."""
    from nbflow.executors.daskinfo import cluster_workers

    store = store or open_store()
    if (engine or ("celery" if store.settings.executor == "celery" else ENGINE)) == "celery":
        return _celery_view(address, store, timeout)
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
    workers = _running(ENGINE, cluster.workers, store)
    return WorkersView(ENGINE, address, cluster.dashboard, workers, _unserved(workers, store, address))


def _running(engine: str, found: list[ClusterWorker], store: Store) -> list[Worker]:
    """The workers as the view shows them: each with the attempts it runs (the store's rows of
    the executor keys it processes: pipeline, run, task, try, state)."""
    attempts = {row["executor_key"]: row for row in store.attempts_by_key([k for w in found for k in w.processing])}
    shown = ("pipeline", "run_id", "task_id", "try_number", "state")
    return [
        Worker(
            engine,
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
            running=[{k: attempts[key][k] for k in shown} for key in w.processing if key in attempts],
        )
        for w in found
    ]


def _unserved(workers: list[Worker], store: Store, address: str) -> list[dict[str, Any]]:
    """Queues with tasks waiting that no worker can take (what the Dask executor's note says)."""
    advertised = [{**w.resources, **{queue_resource(q): float(w.slots) for q in w.queues}} for w in workers]
    waiting = store.waiting_by_queue(ENGINE, default=store.settings.executor == ENGINE)
    return [
        {"queue": queue, "waiting": count, "why": why, "command": start_command(queue, {}, advertised, address)}
        for queue, count in sorted(waiting.items())
        if (why := unmet(queue, {}, advertised)) is not None
    ]


def _celery_view(broker: str | None, store: Store, timeout: float) -> WorkersView:
    """The Celery half of :func:`list_workers`."""
    from nbflow.executors.celery import celery_workers, unconsumed
    from nbflow.executors.celery import start_command as celery_command
    from nbflow.executors.celeryapp import broker_and_backend

    engine = "celery"
    broker = broker or store.settings.celery_broker
    if not broker:
        return WorkersView(
            engine,
            None,
            None,
            [],
            [],
            note="no Celery broker is configured (NBFLOW_CELERY_BROKER): set it to redis://HOST:6379/0 or "
            "amqp://USER:PASSWORD@HOST:5672// and start workers with `nbflow worker --engine celery --queue NAME`",
        )
    shown = masked_url(broker_and_backend(broker)[0])
    try:
        found = celery_workers(broker, min(timeout, 2.0))
    except OSError as exc:
        return WorkersView(
            engine, shown, None, [], [], note=f"the Celery broker at {shown} cannot be reached ({exc})", reachable=False
        )
    workers = _running(engine, found, store)
    served = {q for w in workers for q in w.queues}
    waiting = store.waiting_by_queue(engine, default=store.settings.executor == engine)
    unserved = [
        {"queue": queue, "waiting": count, "why": why, "command": celery_command(queue)}
        for queue, count in sorted(waiting.items())
        if (why := unconsumed(queue, served, bool(workers))) is not None
    ]
    return WorkersView(engine, shown, None, workers, unserved)
