"""Dates and times as people type and tap them, in their community's zone (the pickers' core).

Typed forms (full-width digits and colons, "/" or "." for "-", and "～" or "~" for the range
dash are read too):

    9:00                 today at 9:00
    12-09 9:00           9 December at 9:00 (this year; see below)
    2026-12-09 09:00     a full date
    …09:00-11:30         any of the above with an end time on the same day

A month and day without a year mean this year; one that has already passed this year is read
as next year only when it is more than 180 days back (typing "01-05" in late December means the
coming January), else it is refused as the past, like every other moment before `now`.

Monthly days (9/19/29): a day a month does not have falls on its last day (the 29th, 30th and
31st are the 28th in a common-year February), and days that fall together are sent once —
`month_days` below, shared with announcements' recurrence.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from models.errors import InvalidInput

DAYS_AHEAD = 14  # the date buttons: today and the next 13 days
COMMON_TIMES = (time(8, 0), time(9, 0), time(10, 0), time(14, 0), time(16, 0), time(19, 0))
NEXT_YEAR_AFTER = timedelta(days=180)

_FULL_WIDTH = str.maketrans("０１２３４５６７８９：／．－～", "0123456789:/.--")
_WHEN = re.compile(
    r"^(?:(?:(?P<year>\d{4})[-/.])?(?P<month>\d{1,2})[-/.](?P<day>\d{1,2})\s+)?"
    r"(?P<hour>\d{1,2})[:.](?P<minute>\d{2})"
    r"(?:\s*[-~]\s*(?P<end_hour>\d{1,2})[:.](?P<end_minute>\d{2}))?$"
)


@lru_cache(maxsize=64)
def zone_of(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def local_moment(day: date, at: time, zone: str) -> datetime:
    """The UTC instant of a local date and time (a skipped DST time lands after the jump, a
    repeated one is its first instance)."""
    return datetime.combine(day, at.replace(tzinfo=None), tzinfo=zone_of(zone)).astimezone(UTC)


def local_date(moment: datetime, zone: str) -> date:
    return moment.astimezone(zone_of(zone)).date()


@dataclass(frozen=True)
class Slot:
    """A moment, or a span on one day (`end` after `start`), as UTC instants."""

    start: datetime
    end: datetime | None = None


def parse(text: str, *, now: datetime, zone: str) -> Slot:
    """A typed date and time (see the module's docstring) as UTC; InvalidInput "bad_time" when
    it cannot be read, "time_past" when it is before `now`."""
    found = _WHEN.match(" ".join(text.translate(_FULL_WIDTH).split()))
    if found is None:
        raise InvalidInput("bad_time")
    g = found.groupdict()
    today = local_date(now, zone)
    try:
        at = time(int(g["hour"]), int(g["minute"]))
        if g["month"] is None:
            day = today
        else:
            year = int(g["year"]) if g["year"] else today.year
            day = date(year, int(g["month"]), int(g["day"]))
            if g["year"] is None and today - day > NEXT_YEAR_AFTER:
                day = date(year + 1, day.month, day.day)
        until = time(int(g["end_hour"]), int(g["end_minute"])) if g["end_hour"] else None
    except ValueError:
        raise InvalidInput("bad_time") from None
    start = local_moment(day, at, zone)
    end = local_moment(day, until, zone) if until is not None else None
    if end is not None and end <= start:
        raise InvalidInput("bad_time")
    if start < now:
        raise InvalidInput("time_past")
    return Slot(start, end)


def next_days(now: datetime, zone: str, count: int = DAYS_AHEAD) -> list[date]:
    """The date buttons: today and the following days, local to the community."""
    today = local_date(now, zone)
    return [today + timedelta(days=i) for i in range(count)]


def times_left(
    day: date, now: datetime, zone: str, times: Sequence[time] = COMMON_TIMES
) -> list[time]:
    """The common times of a day that are still ahead (all of them on a later day)."""
    return [t for t in times if local_moment(day, t, zone) > now]


def at(day: date, when: time, *, now: datetime, zone: str) -> datetime:
    """A tapped date and time as UTC, refusing the past (a button tapped after its time)."""
    moment = local_moment(day, when, zone)
    if moment < now:
        raise InvalidInput("time_past")
    return moment


def month_days(year: int, month: int, days: Sequence[int]) -> set[int]:
    """The days of this month a monthly schedule falls on (missing days → the last day)."""
    last = calendar.monthrange(year, month)[1]
    return {min(d, last) for d in days}
