"""The Celery application both sides share: the driver's :class:`~nbflow.executors.celery.CeleryExecutor`
sends ``nbflow.run_attempt`` messages, ``nbflow worker --engine celery`` runs them
(``celery -A nbflow.executors.celeryapp worker``).

Settings: ``NBFLOW_CELERY_BROKER`` (``redis://host:6379/0`` or ``amqp://user:pass@host:5672//``)
and ``NBFLOW_CELERY_BACKEND`` (default: the broker for Redis, ``rpc://`` for RabbitMQ).

* **Late acks, nbflow owns retries.** ``task_acks_late``: a message is acknowledged when its
  attempt ended, so a worker killed mid-task leaves it unacknowledged and the broker delivers it
  again. nbflow has by then recorded that try ``worker_lost`` (the driver sees the worker go) and
  started another under a new key, so the redelivered copy finds the attempt's ``started.json``
  and does nothing: never a second success. Celery's own retries are not used.
* **Processes.** A worker runs each attempt in a process of its prefork pool (``--nthreads N``
  is ``--concurrency N``); Celery's thread pool waits up to 2 s between messages when it may
  take one at a time, as late acks need. Cancelling revokes the attempt with ``terminate``:
  the pool process is killed, and the kernels and shell commands it started die with it.
* **Messages.** JSON, with the work item pickled inside it (base64; the task's code is
  cloudpickled as on Dask), so the broker must be trusted as a Dask scheduler is: anyone who
  can publish to it can run code on the workers. Results are the record as JSON.
"""

from __future__ import annotations

import base64
import os
import pickle
import threading
from typing import Any

from celery import Celery

from nbflow.config import get_settings
from nbflow.exceptions import NbflowError
from nbflow.tasks import kernelpool
from nbflow.worker import WorkItem, attempt_paths, mark_started, read_started, run_work_item

TASK = "nbflow.run_attempt"
#: what the task returns for a message delivered again after its worker died (not run twice)
DUPLICATE = "duplicate"


def broker_and_backend(broker: str | None = None, backend: str | None = None) -> tuple[str, str]:
    """The broker and result backend URLs (arguments, else settings); raises when no broker is set."""
    settings = get_settings()
    broker = broker or settings.celery_broker
    if not broker:
        raise NbflowError(
            "the celery executor needs a broker: NBFLOW_CELERY_BROKER is not set",
            hint="export NBFLOW_CELERY_BROKER=redis://127.0.0.1:6379/0 (or amqp://guest:guest@127.0.0.1:5672//)",
        )
    backend = backend or settings.celery_backend or ("rpc://" if broker.startswith(("amqp", "pyamqp")) else broker)
    return broker, backend


def make_app(broker: str | None = None, backend: str | None = None) -> Celery:
    """A Celery app for nbflow's attempts on ``broker`` (see :func:`broker_and_backend`)."""
    broker, backend = broker_and_backend(broker, backend)
    app = Celery("nbflow", broker=broker, backend=backend, set_as_current=False)
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_acks_late=True,
        task_reject_on_worker_lost=False,
        task_track_started=True,
        task_default_queue="default",
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        result_expires=7 * 24 * 3600,
    )
    app.task(name=TASK, bind=True)(_run_attempt)
    return app


def encode(item: WorkItem) -> str:
    """A work item as the text of a message (pickled, base64)."""
    return base64.b64encode(pickle.dumps(item.pack(), protocol=pickle.HIGHEST_PROTOCOL)).decode("ascii")


def decode(text: str) -> WorkItem:
    """The inverse of :func:`encode`."""
    item = pickle.loads(base64.b64decode(text))
    if not isinstance(item, WorkItem):
        raise TypeError(f"an nbflow message holds a {type(item).__name__}, not a work item")
    return item


def _run_attempt(task: Any, message: str) -> dict[str, Any] | str:
    """Run one attempt on this worker; a copy of a message already begun elsewhere does nothing."""
    item = decode(message)
    folder = attempt_paths(item)[0]
    if read_started(folder) is not None:  # delivered again after its first worker died: that try is lost
        return DUPLICATE
    hostname = task.request.hostname or "celery"
    mark_started(item, hostname, os.getpid())
    kernelpool.activate(slots=1)  # one attempt at a time in each pool process
    result = run_work_item(item)
    result.hostname = hostname
    return result.to_dict()


_app: Celery | None = None
_app_lock = threading.Lock()


def __getattr__(name: str) -> Any:
    """``celery -A nbflow.executors.celeryapp`` finds ``app``, made from the settings on first use."""
    global _app
    if name == "app":
        with _app_lock:
            if _app is None:
                _app = make_app()
        return _app
    raise AttributeError(name)
