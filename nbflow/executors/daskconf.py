"""The configuration nbflow gives Dask clusters, and reads from them (:mod:`nbflow.executors.dask`).

* :data:`WORKER_CONFIG`: the settings of nbflow's workers (the embedded cluster's and
  ``nbflow worker``'s), and the same as environment variables (:func:`worker_environment`).
* ``allowed-failures``: the embedded cluster nbflow starts has 0 (a task whose worker died
  fails at once, and nbflow's retries decide). A cluster at an address belongs to someone
  else: :func:`check_allowed_failures` reads the setting and never changes it, and warns once
  per scheduler when it is not 0 (Dask may then re-run a task whose worker died on another
  worker before nbflow sees the loss).
* The guarantee each kind of cluster gives an attempt in flight when the driver dies.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("nbflow.executors.dask")

#: Dask settings of nbflow's workers (the embedded cluster's and ``nbflow worker``'s): tasks
#: may start processes of their own (kernels, timeouts); the statistical profiler's 10 ms
#: sampling of every thread costs a notebook task a tenth of its time; the system monitor
#: (psutil every 0.5 s, sent to the scheduler) and the 20 ms event-loop tick cost another
#: ~14% of a worker's CPU on 8 notebooks (the dashboard's system plots update every 5 s).
WORKER_CONFIG = {
    "distributed.worker.daemon": False,
    "distributed.worker.profile.enabled": False,
    "distributed.admin.system-monitor.interval": "5s",
    "distributed.admin.tick.interval": "500ms",
}


def worker_environment() -> dict[str, str]:
    """:data:`WORKER_CONFIG` as the ``DASK_*`` environment variables a worker process reads."""
    return {
        "DASK_" + key.upper().replace(".", "__").replace("-", "_"): str(value) for key, value in WORKER_CONFIG.items()
    }


EXACTLY_ONCE = (
    "an attempt in flight when this process dies finishes on the cluster and the next driver adopts its result "
    "(exactly once)"
)
EMBEDDED_AT_LEAST_ONCE = (
    "the embedded Dask cluster dies with this process: an attempt in flight then runs again under the next driver "
    "(at least once; a cluster at --dask-address gives exactly once)"
)

ALLOWED_FAILURES_WARNING = (
    "the Dask scheduler at %s has distributed.scheduler.allowed-failures = %s: Dask may re-run a task whose worker "
    "died on another worker before nbflow sees the loss (it then runs twice, and a task that kills workers kills "
    "that many more). Start the scheduler with DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES=0 so that nbflow's "
    "retries decide alone"
)
_warned: set[str] = set()  # scheduler addresses whose allowed-failures was warned about


def _allowed_failures(dask_scheduler: Any) -> int:
    """The scheduler's ``allowed-failures`` (read only: a shared cluster's setting is its owner's)."""
    return dask_scheduler.allowed_failures


def check_allowed_failures(client: Any, address: str) -> Any:
    """Read the scheduler's ``allowed-failures``; warn once per scheduler when it is not 0."""
    try:
        allowed = client.run_on_scheduler(_allowed_failures)
    except Exception as exc:  # noqa: BLE001 - a scheduler that forbids run_on_scheduler
        allowed = f"unknown ({type(exc).__name__}: {exc})"
    if allowed != 0 and address not in _warned:
        _warned.add(address)
        log.warning(ALLOWED_FAILURES_WARNING, address, allowed)
    return allowed
