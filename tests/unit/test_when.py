"""The date-and-time picker's core: typed dates in the community's zone, the past refused."""

from __future__ import annotations

from datetime import UTC, date, datetime, time

import pytest

from models import when
from models.errors import InvalidInput
from tests.conftest import NOW

SH = "Asia/Shanghai"  # NOW is Friday 20 Nov 2026, 10:00 there


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def test_a_time_alone_is_today_and_a_month_day_this_year() -> None:
    assert when.parse("18:30", now=NOW, zone=SH) == when.Slot(utc(2026, 11, 20, 10, 30))
    assert when.parse("12-09 9:00", now=NOW, zone=SH).start == utc(2026, 12, 9, 1, 0)
    assert when.parse("12/9 9:00", now=NOW, zone=SH).start == utc(2026, 12, 9, 1, 0)


def test_a_full_date_with_a_range_on_one_day() -> None:
    slot = when.parse("2026-12-09 09:00-11:30", now=NOW, zone=SH)
    assert slot == when.Slot(utc(2026, 12, 9, 1, 0), utc(2026, 12, 9, 3, 30))
    assert when.parse("２０２６－１２－０９ ０９：００～１１：３０", now=NOW, zone=SH) == slot
    assert when.parse("12-09 9:00 - 11:30", now=NOW, zone=SH) == slot


def test_the_zone_is_the_communitys() -> None:
    assert when.parse("2026-12-09 09:00", now=NOW, zone="Europe/London").start == utc(
        2026, 12, 9, 9, 0
    )


@pytest.mark.parametrize("text", ["9:00", "11-19 23:00", "2025-12-09 09:00", "2026-11-20 09:59"])
def test_the_past_is_refused_clearly(text: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        when.parse(text, now=NOW, zone=SH)
    assert refused.value.key == "time_past"


def test_a_month_day_long_gone_this_year_means_next_year() -> None:
    late_december = utc(2026, 12, 28, 2, 0)
    assert when.parse("01-05 9:00", now=late_december, zone=SH).start == utc(2027, 1, 5, 1, 0)


@pytest.mark.parametrize(
    "text",
    ["", "tomorrow", "25:00", "9:60", "02-30 9:00", "2026-13-01 9:00", "9:00-8:00", "12-09"],
)
def test_what_cannot_be_read_is_refused(text: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        when.parse(text, now=NOW, zone=SH)
    assert refused.value.key == "bad_time"


def test_the_date_buttons_and_the_times_still_ahead() -> None:
    days = when.next_days(NOW, SH)
    assert len(days) == 14 and days[0] == date(2026, 11, 20) and days[-1] == date(2026, 12, 3)
    assert when.times_left(days[0], NOW, SH) == [time(14, 0), time(16, 0), time(19, 0)]
    assert when.times_left(days[1], NOW, SH) == list(when.COMMON_TIMES)
    with pytest.raises(InvalidInput):
        when.at(days[0], time(8, 0), now=NOW, zone=SH)


def test_monthly_days_in_short_months_fall_on_the_last_day_once() -> None:
    assert when.month_days(2027, 2, (9, 19, 29)) == {9, 19, 28}
    assert when.month_days(2028, 2, (9, 19, 29)) == {9, 19, 29}  # a leap year
    assert when.month_days(2026, 4, (29, 30, 31)) == {29, 30}
    assert when.month_days(2027, 2, (29, 30, 31)) == {28}
