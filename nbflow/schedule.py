"""Cron schedules (croniter): validation now; next/previous logical dates for the scheduler.

Presets such as ``@daily`` are accepted. Times are computed in UTC unless a time zone is
given.
"""

from __future__ import annotations

from datetime import datetime, timezone

from croniter import croniter

from nbflow.exceptions import ScheduleError

PRESETS = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}


def normalize(expr: str) -> str:
    """The five-field cron form of ``expr`` (presets expanded)."""
    return PRESETS.get(expr.strip(), expr.strip())


def validate_cron(expr: str, *, pipeline: str, where: str | None = None) -> str:
    """Return the normalized expression or raise :class:`ScheduleError` naming the pipeline."""
    if not isinstance(expr, str) or not expr.strip():
        raise ScheduleError(f"pipeline '{pipeline}' has an empty or non-string schedule {expr!r}", where=where)
    cron = normalize(expr)
    problem = None
    if len(cron.split()) != 5:
        problem = f"expected 5 fields (minute hour day month weekday), got {len(cron.split())}"
    else:
        try:
            croniter(cron, datetime(2000, 1, 1, tzinfo=timezone.utc))
        except (ValueError, KeyError) as exc:  # croniter raises CroniterBadCronError (a ValueError)
            problem = str(exc) or type(exc).__name__
    if problem:
        raise ScheduleError(
            f"pipeline '{pipeline}' has an invalid cron schedule {expr!r}: {problem}",
            where=where,
            hint="use 5 cron fields such as '0 3 * * *' (03:00 daily) or a preset: " + ", ".join(PRESETS),
        )
    return cron


def next_after(expr: str, after: datetime) -> datetime:
    """The first tick of ``expr`` strictly after ``after`` (aware datetimes)."""
    return croniter(normalize(expr), after).get_next(datetime)
