"""Pipeline SLAs: ``Pipeline(..., sla=timedelta(hours=1), on_sla_miss=nbflow.notify(...))``.

A run *misses its SLA* when it has not finished ``sla`` after its start (``runs.started_at``:
when a driver first started it; the time it waited in the queue does not count, and a re-run
of cleared tasks keeps the first start). The driver driving the run checks it (:class:`SlaWatch`):
on each turn of its loop (so within about ``cancel_poll`` seconds of the due time, or when the
running task returns on the ``inline`` executor, which runs it inside the loop) and when the run
ends (a run that ends late missed it too). A miss is recorded in ``runs.sla_missed_at`` with a
compare-and-set (``UPDATE ... WHERE sla_missed_at IS NULL``), so it is reported exactly once even
when another driver takes the run over; the one driver that set it calls ``on_sla_miss`` with
the context of :mod:`nbflow.callbacks` (``event="sla_miss"``, ``sla`` in seconds,
``started_at``, ``missed_at``). A miss never changes the run: it goes on.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from nbflow.callbacks import call_back
from nbflow.store import Store

if TYPE_CHECKING:
    from nbflow.dag import Pipeline

__all__ = ["SlaWatch"]

log = logging.getLogger("nbflow.sla")


def _iso(value: Any) -> Any:
    return value.isoformat() if hasattr(value, "isoformat") else value


class SlaWatch:
    """The SLA checks of one driver's runs (only runs of pipelines with an ``sla`` cost anything)."""

    def __init__(self, store: Store, clock: Callable[[], float] = time.time):
        self.store, self.clock = store, clock
        self._due: dict[int, float] = {}  # run id -> when it misses its SLA (inf: missed already)

    def check_all(self, runs: Iterable[tuple[int, Pipeline]]) -> None:
        """Check every driven run (one read per run with an SLA, the first time; then none until
        due); runs no longer driven (cancelled, failed by an error, taken over) are forgotten."""
        driven = set()
        for run_id, pipeline in runs:
            driven.add(run_id)
            if pipeline.sla is not None:
                self.check(run_id, pipeline)
        for gone in self._due.keys() - driven:
            del self._due[gone]

    def check(self, run_id: int, pipeline: Pipeline, *, ended: bool = False) -> bool:
        """Whether this call found run ``run_id`` past its SLA and reported it (``ended``: the run
        has just ended, and is forgotten here). Never raises: a failure is logged and checked again."""
        if pipeline.sla is None:
            return False
        try:
            return self._check(run_id, pipeline, pipeline.sla)
        except Exception as exc:  # noqa: BLE001 - an SLA check must never stop a run
            log.warning("could not check the SLA of run %s: %s", run_id, exc)
            return False
        finally:
            if ended:
                self._due.pop(run_id, None)

    def _check(self, run_id: int, pipeline: Pipeline, sla: float) -> bool:
        now = self.clock()
        due = self._due.get(run_id)
        if due is None:
            row = self.store.get_run(run_id)
            if row["started_at"] is None:  # not started yet: looked at again next time
                return False
            due = math.inf if row["sla_missed_at"] is not None else row["started_at"].timestamp() + sla
            self._due[run_id] = due
        if now < due:
            return False
        at = datetime.fromtimestamp(now, UTC)
        first = self.store.write(lambda tx: tx.mark_sla_missed(run_id, at), what=f"run {run_id} SLA miss")
        self._due[run_id] = math.inf
        if not first:
            return False  # reported already (by another driver)
        row = self.store.get_run(run_id)
        log.warning("run %s of %s missed its SLA of %.0fs (started %s)", run_id, pipeline.name, sla, row["started_at"])
        if pipeline.on_sla_miss is not None:
            ctx = {
                "event": "sla_miss",
                "pipeline": pipeline.name,
                "run_id": run_id,
                "state": row["state"],
                "sla": sla,
                "started_at": _iso(row["started_at"]),
                "missed_at": at.isoformat(),
                "logical_date": _iso(row["logical_date"]),
            }
            call_back(pipeline.on_sla_miss, ctx)
        return True
