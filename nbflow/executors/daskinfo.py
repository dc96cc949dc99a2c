"""What a Dask cluster's scheduler says about its workers, as plain data (the workers view).

One short-lived client asks the scheduler for each worker's host, name, slots, resources
(nbflow queues among them, see :mod:`nbflow.executors.waiting`), memory, CPU and last
heartbeat, and which task keys each one is processing (nbflow's keys are its attempts'
executor keys, so the store says which pipeline, run, task and try they are).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from nbflow.executors.base import ClusterWorker
from nbflow.executors.waiting import QUEUE_PREFIX


@dataclass
class DaskCluster:
    """A cluster's scheduler address, dashboard link and workers."""

    address: str
    dashboard: str | None
    workers: list[ClusterWorker]


def _dashboard(address: str, info: dict[str, Any]) -> str | None:
    port = (info.get("services") or {}).get("dashboard")
    if not port:
        return None
    host = urlsplit(address).hostname or "127.0.0.1"
    return f"http://{host}:{port}/status"


def cluster_workers(address: str, timeout: float = 5.0) -> DaskCluster:
    """Ask the scheduler at ``address`` about its workers (raises OSError when it cannot be reached)."""
    from distributed import Client

    with Client(address, timeout=f"{timeout}s", set_as_default=False) as client:
        info = client.scheduler_info(n_workers=-1)
        processing = client.processing()
    now = time.time()
    workers = []
    for addr, w in sorted(info.get("workers", {}).items(), key=lambda kv: str(kv[1].get("name", kv[0]))):
        metrics = w.get("metrics") or {}
        resources = {str(k): float(v) for k, v in (w.get("resources") or {}).items()}
        last_seen = w.get("last_seen")
        workers.append(
            ClusterWorker(
                address=addr,
                name=str(w.get("name", addr)),
                host=str(w.get("host") or urlsplit(addr).hostname or ""),
                slots=int(w.get("nthreads") or 0),
                queues=sorted(r[len(QUEUE_PREFIX) :] for r in resources if r.startswith(QUEUE_PREFIX)),
                resources={k: v for k, v in resources.items() if not k.startswith(QUEUE_PREFIX)},
                memory=metrics.get("memory"),
                memory_limit=w.get("memory_limit"),
                cpu=metrics.get("cpu"),
                last_seen_s=max(0.0, now - float(last_seen)) if last_seen else None,
                processing=[str(k) for k in processing.get(addr, ())],
            )
        )
    return DaskCluster(address=address, dashboard=_dashboard(address, info), workers=workers)
