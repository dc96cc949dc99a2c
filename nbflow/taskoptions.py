"""The options every task kind takes (``retries=``, ``queue=``, ``on_failure=`` ...), typed once.

The task factories (``@task``, ``notebook()``, ``shell()``, ``sql()``) take them as
``**options: Unpack[TaskOptions]``, so editors and mypy know each name and type, and a new
option is added here and in :data:`nbflow.dag.TASK_OPTIONS` (its default; a test checks that
the two name the same options) instead of in every factory's signature.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypedDict


class TaskOptions(TypedDict, total=False):
    """Options common to every task kind; one left out takes the pipeline's ``default_args``
    (or the task group's), else nbflow's default (:data:`nbflow.dag.TASK_OPTIONS`)."""

    #: tries after the first that fail (``retry_delay`` seconds apart, doubling with ``retry_backoff``
    #: up to ``max_retry_delay``)
    retries: int
    retry_delay: float
    retry_backoff: bool
    max_retry_delay: float
    #: seconds the whole attempt may take (its processes are killed after)
    timeout: float | None
    #: the worker queue (``nbflow worker --queue``) and resources (``{"GPU": 1}``) it needs
    queue: str
    resources: dict[str, float] | None
    #: when it runs, from its upstream tasks' states (Airflow's trigger rules)
    trigger_rule: str
    #: a named pool of slots (``nbflow pools set``) and how many it takes
    pool: str | None
    pool_slots: int
    #: callbacks (``nbflow.notify(...)`` or any callable taking the context dict)
    on_failure: Callable[..., Any] | None
    on_success: Callable[..., Any] | None
    on_retry: Callable[..., Any] | None
    #: incremental runs: files it reads, whether and how long its outputs may be reused
    reads: Any
    cache: bool
    cache_ttl: float | None
    #: the ``nbflow.Asset`` objects each success updates
    produces: Iterable[Any]
