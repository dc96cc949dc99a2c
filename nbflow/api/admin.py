"""Operating nbflow: the database schema, the scheduler daemon, Dask workers, and this
process's cached settings and stores.

The front doors (``nbflow db upgrade``, ``nbflow scheduler``, ``nbflow worker``, tests) call
these instead of importing the store, the scheduler or the executors themselves.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from nbflow.api.runs import _stores
from nbflow.config import Settings, get_settings, reset_settings
from nbflow.store.session import dispose_engines, get_engine, migrate


class SchemaUpgrade(NamedTuple):
    """What ``upgrade_database`` did: the database (password hidden) and its revisions before
    (None: a new database) and after."""

    url: str
    before: str | None
    after: str


def upgrade_database(settings: Settings | None = None) -> SchemaUpgrade:
    """Create or migrate the configured database to the newest schema.

    Takes the database's schema lock (as every process opening a store does), so it is safe
    while schedulers start or run; a current database is left as it is.
    """
    settings = settings or get_settings()
    engine = get_engine(settings.db_url)
    before, after = migrate(engine)
    return SchemaUpgrade(engine.url.render_as_string(hide_password=True), before, after)


@dataclass(frozen=True)
class SchedulerStarted:
    """A scheduler that has registered itself and is about to loop."""

    job_id: int
    dags_folder: str
    executor: str
    database: str


def serve_scheduler(
    *,
    dags_folder: str | None = None,
    executor: str | None = None,
    parallelism: int | None = None,
    max_loops: int | None = None,
    on_start: Callable[[SchedulerStarted], None] | None = None,
) -> None:
    """Run the scheduler daemon in this process until SIGTERM/SIGINT (or ``max_loops``).

    ``on_start`` is called once it holds its job row (a second scheduler on SQLite fails
    before that, with the reason).
    """
    from nbflow.scheduler import Scheduler

    scheduler = Scheduler(dags_folder=dags_folder, executor=executor, parallelism=parallelism)
    scheduler.start()
    if on_start is not None:
        on_start(
            SchedulerStarted(
                job_id=scheduler.driver.lease,  # held since start()
                dags_folder=str(scheduler.loader.folder),
                executor=scheduler.executor.describe(),
                database=scheduler.store.engine.url.render_as_string(hide_password=True),
            )
        )
    scheduler.serve_forever(max_loops=max_loops)


def worker_command(
    scheduler: str,
    *,
    queues: Sequence[str] = ("default",),
    nthreads: int = 1,
    name: str | None = None,
    nworkers: int | None = None,
    resources: Sequence[str] = (),
) -> tuple[list[str], dict[str, str]]:
    """The command line and environment of a Dask worker that serves nbflow ``queues``.

    Each queue is advertised as a worker resource with ``nthreads`` slots (``resources`` adds
    others, as ``NAME=COUNT``); the environment is this process's plus the Dask settings of
    nbflow's workers.
    """
    from nbflow.executors.dask import worker_environment
    from nbflow.executors.waiting import queue_resource

    advertised = [f"{queue_resource(q)}={nthreads}" for q in queues] + list(resources)
    argv = [sys.executable, "-m", "distributed.cli.dask_worker", scheduler, "--nthreads", str(nthreads)]
    argv += ["--resources", " ".join(advertised)]
    if name:
        argv += ["--name", name]
    if nworkers:
        argv += ["--nworkers", str(nworkers)]
    return argv, {**os.environ, **worker_environment()}


def celery_worker_command(
    *, queues: Sequence[str] = ("default",), nthreads: int = 1, name: str | None = None, broker: str | None = None
) -> tuple[list[str], dict[str, str]]:
    """The command line and environment of a Celery worker that consumes nbflow ``queues``
    (``nthreads`` attempts at once, each in a process of its prefork pool; ``broker`` or
    ``NBFLOW_CELERY_BROKER``)."""
    from nbflow.executors.celeryapp import broker_and_backend

    broker, backend = broker_and_backend(broker)
    argv = [sys.executable, "-m", "celery", "-A", "nbflow.executors.celeryapp", "worker", "--loglevel", "WARNING"]
    argv += ["-Q", ",".join(queues), "--pool", "prefork", "--concurrency", str(nthreads)]
    argv += ["--hostname", f"{name or 'nbflow'}@%h", "--without-gossip", "--without-mingle"]
    return argv, {**os.environ, "NBFLOW_CELERY_BROKER": broker, "NBFLOW_CELERY_BACKEND": backend}


def database_trouble(exc: BaseException) -> tuple[str, str] | None:
    """What a database error that reached a front door means for the user, without SQL:
    ``("outage", what happened)`` for a refused or lost connection, a lock or a timeout (worth
    retrying later), ``("bad_value", "")`` for a value the database refuses (a number out of
    range, a NUL byte: bad input); None for any other exception."""
    from sqlalchemy.exc import DataError, DBAPIError
    from sqlalchemy.exc import TimeoutError as PoolTimeoutError

    from nbflow.store.session import is_transient, outage_kind

    if isinstance(exc, DBAPIError) and is_transient(exc) or isinstance(exc, PoolTimeoutError):
        return "outage", outage_kind(exc)
    if isinstance(exc, DataError):
        return "bad_value", ""
    return None


def reset() -> None:
    """Forget this process's settings, stores and database engines (their pooled connections
    are closed); the next call reads ``NBFLOW_*`` and opens the store afresh. For tests, and for
    a process that changed its ``NBFLOW_*`` variables."""
    reset_settings()
    _stores.clear()
    dispose_engines()
