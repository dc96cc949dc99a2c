"""Cron schedules (croniter): validation, logical dates and data intervals.

A sixth field (croniter's seconds, e.g. ``* * * * * */10`` for every 10 s) is accepted for
short test schedules. Semantics follow Airflow 2: a scheduled run with logical date ``L`` covers the data
interval ``[L, next_tick(L))`` and is created once that interval has ended. Ticks are
computed in the pipeline's time zone (so ``30 2 * * *`` in ``Europe/Berlin`` is 02:30
Berlin time all year) and stored in UTC.

DST policy: on the spring-forward day a wall time that does not exist (02:30 when clocks
jump from 02:00 to 03:00) runs at the first valid instant after the gap (03:00 local); on
the fall-back day a wall time that occurs twice runs once, at its first occurrence.
Either way there is exactly one run per calendar day, and never two runs for one logical
date (the runs table is unique on ``(pipeline, logical_date)``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, overload
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from nbflow.exceptions import ScheduleError


def _croniter(*args: Any) -> Any:
    """A ``croniter``, imported on first use (every notebook kernel imports nbflow)."""
    from croniter import croniter

    return croniter(*args)


PRESETS = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}
UTC = UTC


def normalize(expr: str) -> str:
    """The five-field cron form of ``expr`` (presets expanded)."""
    return PRESETS.get(expr.strip(), expr.strip())


def validate_cron(expr: str, *, pipeline: str, where: str | None = None) -> str:
    """Return the normalized expression or raise :class:`ScheduleError` naming the pipeline."""
    if not isinstance(expr, str) or not expr.strip():
        raise ScheduleError(f"pipeline '{pipeline}' has an empty or non-string schedule {expr!r}", where=where)
    cron = normalize(expr)
    problem = None
    if len(cron.split()) not in (5, 6):
        problem = f"expected 5 fields (minute hour day month weekday), got {len(cron.split())}"
    else:
        try:
            _croniter(cron, datetime(2000, 1, 1, tzinfo=UTC))
        except (ValueError, KeyError) as exc:  # croniter raises CroniterBadCronError (a ValueError)
            problem = str(exc) or type(exc).__name__
    if problem:
        raise ScheduleError(
            f"pipeline '{pipeline}' has an invalid cron schedule {expr!r}: {problem}",
            where=where,
            hint="use 5 cron fields such as '0 3 * * *' (03:00 daily) or a preset: " + ", ".join(PRESETS),
        )
    return cron


def get_timezone(name: str, *, pipeline: str, where: str | None = None) -> ZoneInfo:
    """The IANA time zone ``name`` or a :class:`ScheduleError` naming the pipeline."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError) as exc:
        raise ScheduleError(
            f"pipeline '{pipeline}' has an unknown timezone {name!r}",
            where=where,
            hint="use an IANA name such as 'UTC', 'Europe/Berlin' or 'America/New_York'",
        ) from exc


@overload
def parse_date(value: None, *, pipeline: str, field: str, tz: ZoneInfo, where: str | None = None) -> None: ...
@overload
def parse_date(
    value: datetime | date | str, *, pipeline: str, field: str, tz: ZoneInfo, where: str | None = None
) -> datetime: ...
def parse_date(value: object, *, pipeline: str, field: str, tz: ZoneInfo, where: str | None = None) -> datetime | None:
    """A start/end date as an aware UTC datetime; naive values are in the pipeline's zone."""
    if value is None:
        return None
    parsed: datetime | None = None
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, date):
        parsed = datetime.combine(value, time())
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            parsed = None
    if parsed is None:
        raise ScheduleError(
            f"pipeline '{pipeline}' has an invalid {field} {value!r}",
            where=where,
            hint="use a datetime, a date or an ISO string such as '2026-01-31' or '2026-01-31T03:00'",
        )
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=tz)
    return parsed.astimezone(UTC)


@dataclass(frozen=True)
class Schedule:
    """A cron schedule in a time zone, bounded by optional start and end dates (aware UTC)."""

    cron: str
    tz: ZoneInfo = ZoneInfo("UTC")
    start: datetime | None = None
    end: datetime | None = None

    def next_tick(self, after: datetime) -> datetime:
        """The first tick strictly after ``after`` (aware), in UTC."""
        local = after.astimezone(self.tz)
        nxt = _croniter(self.cron, local).get_next(datetime)
        if nxt.tzinfo is None:
            nxt = nxt.replace(tzinfo=self.tz)
        result = nxt.astimezone(UTC)
        same_wall_time = nxt.replace(tzinfo=None, fold=0) == local.replace(tzinfo=None, fold=0)
        if result <= after or same_wall_time:  # a wall time repeated by a DST fold runs once
            return self.next_tick(result if result > after else after + timedelta(minutes=1))
        return result

    def first_tick_at_or_after(self, t: datetime) -> datetime:
        """The first tick at or after ``t``."""
        return self.next_tick(t - timedelta(microseconds=1))

    def interval(self, logical: datetime) -> tuple[datetime, datetime]:
        """The data interval of the run with logical date ``logical``."""
        return logical, self.next_tick(logical)

    def latest_complete(self, now: datetime) -> datetime:
        """Logical date of the newest interval that has ended by ``now``."""
        it = _croniter(self.cron, now.astimezone(self.tz))
        it.get_prev(datetime)  # the newest tick <= now: the end of that interval
        start = it.get_prev(datetime)
        start = (start if start.tzinfo else start.replace(tzinfo=self.tz)).astimezone(UTC)
        while self.interval(start)[1] <= now and self.next_tick(start) <= now:
            nxt = self.next_tick(start)
            if self.next_tick(nxt) > now:
                break
            start = nxt
        return start

    def due(self, pointer: datetime | None, now: datetime, catchup: bool) -> tuple[list[datetime], datetime | None]:
        """Logical dates to create now, and the new pointer (next logical date to consider).

        ``pointer`` is the first logical date not created yet (None: never scheduled).
        With ``catchup`` every ended interval from the pointer (or the start date) on is
        due, oldest first; without it only the newest ended interval is.
        """
        if pointer is None:
            pointer = self.first_tick_at_or_after(self.start) if self.start else None
        if pointer is None:  # no start date: begin with the newest ended interval
            pointer = self.latest_complete(now)
        if not catchup:  # jump straight to the newest ended interval (no walk over the gap)
            latest = self.latest_complete(now)
            if latest >= pointer and (self.end is None or latest <= self.end):
                return [latest], self.next_tick(latest)
        dates: list[datetime] = []
        current = pointer
        while True:
            if self.end is not None and current > self.end:
                break
            start, end = self.interval(current)
            if end > now:
                break
            dates.append(start)
            current = end
        if not catchup and len(dates) > 1:
            dates = dates[-1:]
        return dates, current


def utcnow() -> datetime:
    """Now, aware, in UTC."""
    return datetime.now(UTC)


def next_after(expr: str, after: datetime) -> datetime:
    """The first tick of ``expr`` strictly after ``after`` (aware datetimes, UTC zone)."""
    return Schedule(normalize(expr)).next_tick(after)


def refuse_unended(pipeline: str, intervals: list[tuple[datetime, datetime]], tz: ZoneInfo) -> None:
    """A backfill makes a run only for a data interval that has ended (as the scheduler does):
    a range that reaches an interval still to come is refused, naming it and the ``--end`` to use."""
    now = utcnow()
    ended = [start for start, end in intervals if end <= now]
    if len(ended) == len(intervals):
        return

    def when(t: datetime) -> str:
        local = t.astimezone(tz)
        return f"{local:%Y-%m-%d}" if local.time() == time(0) else f"{local:%Y-%m-%dT%H:%M}"

    start, end = intervals[len(ended)]
    more = len(intervals) - len(ended) - 1
    raise ScheduleError(
        f"backfill of '{pipeline}': the data interval of {when(start)} has not ended (it ends {when(end)} {tz}"
        f"){f', nor have the {more} after it' if more else ''}; no run was queued",
        hint=(f"end the range at --end {when(ended[-1])}; " if ended else "")
        + "the scheduler queues each later run when its interval has ended",
    )
