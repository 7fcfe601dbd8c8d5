"""Announcements: recurrence in local time, the rhythm filling the outbox, cancelling, reports."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

import pytest
from sqlmodel import select

from bot.db import Database
from models import announcements as ann
from models import flows, outbox, people, when
from models.announcements import Announcement, Schedule
from models.errors import Conflict, InvalidInput, NotAllowed
from models.outbox import Delivery, Status
from tests.conftest import NOW

SH = "Asia/Shanghai"
BERLIN = "Europe/Berlin"
LEAD, OTHER = 20, 21


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def weekly(days: tuple[int, ...], at: time = time(8, 0), zone: str = SH) -> Schedule:
    return Schedule("weekly", at, zone, days)


def monthly(days: tuple[int, ...], at: time = time(8, 0), zone: str = SH) -> Schedule:
    return Schedule("monthly", at, zone, days)


def local(moments: list[datetime], zone: str = SH) -> list[str]:
    return [m.astimezone(when.zone_of(zone)).strftime("%Y-%m-%d %H:%M %a") for m in moments]


# --- recurrence -----------------------------------------------------------------------------


def test_weekly_days_in_local_time() -> None:
    # NOW is Friday 20 Nov 2026, 10:00 in Shanghai: Friday's 08:00 has passed.
    found = ann.upcoming(weekly((0, 2, 4)), NOW, 4)
    assert local(found) == [
        "2026-11-23 08:00 Mon",
        "2026-11-25 08:00 Wed",
        "2026-11-27 08:00 Fri",
        "2026-11-30 08:00 Mon",
    ]
    assert found[0] == utc(2026, 11, 23, 0, 0)  # 08:00 in Shanghai is midnight UTC


def test_weekly_an_early_local_time_is_the_previous_day_in_utc() -> None:
    # 06:00 Monday in Shanghai is 22:00 Sunday UTC; starting on Sunday evening UTC finds it.
    found = ann.first_occurrence(weekly((0,), time(6, 0)), utc(2026, 11, 22, 21, 0))
    assert found == utc(2026, 11, 22, 22, 0)


def test_weekly_across_the_year_end() -> None:
    found = ann.upcoming(weekly((4,)), utc(2026, 12, 31, 12, 0), 2)
    assert local(found) == ["2027-01-01 08:00 Fri", "2027-01-08 08:00 Fri"]


def test_the_first_occurrence_may_be_the_start_itself() -> None:
    start = utc(2026, 11, 23, 0, 0)  # Monday 08:00 local
    assert ann.first_occurrence(weekly((0,)), start) == start
    assert ann.next_after(weekly((0,)), start) == start + timedelta(days=7)


def test_once_happens_once() -> None:
    once = Schedule("once", time(8, 0), SH)
    assert ann.first_occurrence(once, NOW) == NOW
    assert ann.next_after(once, NOW) is None
    assert ann.upcoming(once, NOW, 3) == [NOW]


def test_monthly_day_31_falls_on_the_last_day_of_shorter_months() -> None:
    found = ann.upcoming(monthly((31,)), utc(2026, 4, 1), 5)
    assert local(found) == [
        "2026-04-30 08:00 Thu",
        "2026-05-31 08:00 Sun",
        "2026-06-30 08:00 Tue",
        "2026-07-31 08:00 Fri",
        "2026-08-31 08:00 Mon",
    ]


def test_monthly_february_in_common_and_leap_years() -> None:
    assert local(ann.upcoming(monthly((30,)), utc(2027, 2, 1), 2)) == [
        "2027-02-28 08:00 Sun",
        "2027-03-30 08:00 Tue",
    ]
    assert local(ann.upcoming(monthly((30,)), utc(2028, 2, 1), 1)) == ["2028-02-29 08:00 Tue"]


def test_monthly_days_that_clamp_together_send_once() -> None:
    found = ann.upcoming(monthly((29, 30, 31)), utc(2027, 2, 1), 4)
    assert local(found) == [
        "2027-02-28 08:00 Sun",
        "2027-03-29 08:00 Mon",
        "2027-03-30 08:00 Tue",
        "2027-03-31 08:00 Wed",
    ]


def test_monthly_service_days_across_the_year_end() -> None:
    found = ann.upcoming(monthly((9, 19, 29)), utc(2026, 12, 20), 4)
    assert local(found) == [
        "2026-12-29 08:00 Tue",
        "2027-01-09 08:00 Sat",
        "2027-01-19 08:00 Tue",
        "2027-01-29 08:00 Fri",
    ]


def test_clamped_days_are_named_for_the_confirmation() -> None:
    assert ann.clamped_days(monthly((9, 19, 29))) == [29]
    assert ann.clamped_days(monthly((1, 15))) == []
    assert ann.clamped_days(weekly((0,))) == []


def test_a_time_the_clock_skips_is_sent_that_much_later() -> None:
    # Berlin springs forward on 29 March 2026: 02:00 CET becomes 03:00 CEST.
    found = ann.upcoming(weekly((6,), time(2, 30), BERLIN), utc(2026, 3, 28), 2)
    assert found[0] == utc(2026, 3, 29, 1, 30)
    assert local(found, BERLIN) == ["2026-03-29 03:30 Sun", "2026-04-05 02:30 Sun"]


def test_a_time_that_happens_twice_is_sent_the_first_time_only() -> None:
    # Berlin falls back on 25 October 2026: 02:30 happens in CEST, then again in CET.
    rule = weekly((6,), time(2, 30), BERLIN)
    first = ann.first_occurrence(rule, utc(2026, 10, 24))
    assert first == utc(2026, 10, 25, 0, 30)  # 02:30 CEST
    assert ann.next_after(rule, first) == utc(2026, 11, 1, 1, 30)  # a week later, 02:30 CET


def test_local_time_stays_put_across_a_dst_change() -> None:
    found = ann.upcoming(monthly((1,), time(9, 0), BERLIN), utc(2026, 3, 1), 2)
    assert local(found, BERLIN) == ["2026-03-01 09:00 Sun", "2026-04-01 09:00 Wed"]
    assert found[1] - found[0] == timedelta(days=31, hours=-1)


def _typed(text: str, now: datetime = NOW) -> datetime:
    """A time typed in /announce's date picker (models.when reads it)."""
    return when.parse(text, now=now, zone=SH).start


def test_parse_typed_times_in_the_communitys_zone() -> None:
    assert _typed("18:30") == utc(2026, 11, 20, 10, 30)
    assert _typed(" 7：05 ", NOW - timedelta(hours=10)) == utc(2026, 11, 19, 23, 5)
    assert _typed("2026-12-01 08:00") == utc(2026, 12, 1, 0, 0)
    assert _typed("2026/12/1 8:00") == utc(2026, 12, 1, 0, 0)


@pytest.mark.parametrize("text", ["tomorrow", "25:00", "08:61", "2026-02-30 08:00", ""])
def test_unreadable_times_are_refused(text: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        _typed(text)
    assert refused.value.key == "bad_time"


def test_past_times_are_refused() -> None:
    with pytest.raises(InvalidInput) as refused:
        _typed("09:59")
    assert refused.value.key == "time_past"


def test_text_is_kept_as_typed_but_not_empty_or_too_long() -> None:
    assert ann.clean_text("  <b>水管</b> & 电 \n", photo=False) == "<b>水管</b> & 电"
    with pytest.raises(InvalidInput) as empty:
        ann.clean_text(" \n ", photo=False)
    assert empty.value.key == "announce_empty"
    assert ann.clean_text("字" * ann.TEXT_LIMIT, photo=False)
    with pytest.raises(InvalidInput) as long:
        ann.clean_text("字" * (ann.CAPTION_LIMIT + 1), photo=True)
    assert long.value.key == "announce_too_long" and long.value.params == {"limit": 900}


def test_keys_use_the_local_date() -> None:
    # 23:30 UTC on the 19th is already the 20th in Shanghai.
    assert ann.occurrence_key(7, utc(2026, 11, 19, 23, 30), SH) == "ann:7:20261120"


# --- against the database -------------------------------------------------------------------


COMMUNITY: dict[str, int] = {}


async def _world(db: Database) -> tuple[int, int, int]:
    """A community with a grid (one chat) holding a building (two chats); LEAD leads the grid."""
    async with db.transaction() as s:
        c = await people.create_community(s, name="幸福里", timezone=SH, language="zh", now=NOW)
        assert c.id is not None
        COMMUNITY["id"] = c.id
        grid = await people.create_unit(
            s, community_id=c.id, parent_id=None, kind="grid", name="一网格", now=NOW
        )
        b3 = await people.create_unit(
            s, community_id=c.id, parent_id=grid.id, kind="building", name="3号楼", now=NOW
        )
        other = await people.create_unit(
            s, community_id=c.id, parent_id=None, kind="grid", name="二网格", now=NOW
        )
        assert grid.id is not None and b3.id is not None and other.id is not None
        for pid, name in ((LEAD, "张网格长"), (OTHER, "李")):
            await people.touch_person(
                s, person_id=pid, name=name, username=None, language_code="zh", now=NOW
            )
        for chat, unit in ((-1, grid.id), (-2, b3.id), (-3, b3.id)):
            await people.link_chat(
                s, chat_id=chat, thread_id=0, unit_id=unit, title=f"群{-chat}", by=LEAD, now=NOW
            )
        boss = people.Authority(person_id=1, superadmin=True)
        await people.grant_role(s, auth=boss, unit_id=grid.id, person_id=LEAD, kind="lead", now=NOW)
        return grid.id, b3.id, other.id


async def _auth(db: Database, person_id: int) -> people.Authority:
    async with db.transaction(write=False) as s:
        return await people.authority(s, person_id=person_id, superadmin=False)


async def _announcement(db: Database, unit_id: int, **fields: object) -> int:
    values: dict[str, object] = {
        "community_id": COMMUNITY["id"],
        "unit_id": unit_id,
        "subtree": True,
        "text": "周六上午打扫楼道",
        "created_by": LEAD,
        "created_at": NOW,
        "kind": "weekly",
        "days": [5],
        "at": time(8, 0),
        "first_due": utc(2026, 11, 21, 0, 0),
        "next_occurrence": utc(2026, 11, 21, 0, 0),
    }
    values.update(fields)
    async with db.transaction() as s:
        a = Announcement.model_validate(values)
        s.add(a)
        await s.flush()
        assert a.id is not None
        return a.id


async def _keys(db: Database) -> list[str]:
    async with db.transaction(write=False) as s:
        return sorted(d.key for d in (await s.exec(select(Delivery))).all())


async def _materialise(db: Database, now: datetime) -> int:
    async with db.transaction() as s:
        return await ann.materialise_due(s, now)


async def test_materialise_enqueues_due_occurrences_once(db: Database) -> None:
    grid, _b3, _ = await _world(db)
    aid = await _announcement(db, grid)
    assert await _materialise(db, NOW) == 0  # Saturday 08:00 is not within a few minutes
    before = utc(2026, 11, 20, 23, 57)  # 07:57 on Saturday, local
    assert await _materialise(db, before) == 3
    assert await _materialise(db, before) == 0
    assert await _keys(db) == [f"ann:{aid}:20261121:{c}:0" for c in (-1, -2, -3)]
    async with db.transaction() as s:
        a = await s.get(Announcement, aid)
        assert a is not None
        assert a.next_occurrence == utc(2026, 11, 28, 0, 0)
        assert a.last_occurrence == utc(2026, 11, 21, 0, 0)
        rows = (await s.exec(select(Delivery))).all()
        assert {r.due_at for r in rows} == {utc(2026, 11, 21, 0, 0)}
        assert {r.priority for r in rows} == {outbox.Priority.broadcast}
        assert rows[0].template == "announce/post"
        assert rows[0].context == {"text": "周六上午打扫楼道", "by": "张网格长", "unit": "一网格"}
        # A crash before the schedule moved on: running again adds nothing.
        a.next_occurrence = utc(2026, 11, 21, 0, 0)
    assert await _materialise(db, before) == 0
    assert len(await _keys(db)) == 3
    assert await _materialise(db, utc(2026, 11, 27, 23, 58)) == 3


async def test_recurring_occurrences_missed_long_ago_are_skipped(db: Database) -> None:
    grid, _b3, _ = await _world(db)
    aid = await _announcement(db, grid, subtree=False)
    # The bot was down all week: last Saturday is skipped, this one goes out.
    assert await _materialise(db, utc(2026, 11, 27, 23, 59)) == 1
    assert await _keys(db) == [f"ann:{aid}:20261128:-1:0"]


async def test_a_late_one_off_still_goes_out(db: Database) -> None:
    grid, _b3, _ = await _world(db)
    aid = await _announcement(db, grid, kind="once", days=[], subtree=False)
    assert await _materialise(db, utc(2026, 11, 22, 3, 0)) == 1
    assert await _keys(db) == [f"ann:{aid}:20261121:-1:0"]
    async with db.transaction(write=False) as s:
        a = await s.get(Announcement, aid)
        assert a is not None and a.next_occurrence is None


async def _draft(db: Database, unit_id: int, *, person_id: int = LEAD) -> int:
    """A lead's /announce flow, aimed at the unit and its subtree, to be sent now."""
    async with db.transaction() as s:
        flow = await flows.start(s, kind="ann", owner_id=person_id, now=NOW)
        await flows.update(s, flow, now=NOW, unit=unit_id, subtree=True, text="停水通知 <b>")
        assert flow.id is not None
        return flow.id


async def _confirm(db: Database, flow_id: int, *, person_id: int = LEAD) -> tuple[int, int, bool]:
    """Confirm the flow as /announce does: (announcement id, rows added, made now)."""
    auth = await _auth(db, person_id)
    added = 0
    async with db.transaction() as s:

        async def make(flow: flows.Flow) -> int:
            nonlocal added
            draft = ann.Draft(unit_id=flow.data["unit"], subtree=flow.data["subtree"],
                              text=flow.data["text"], photo=None, start=None)  # fmt: skip
            a, added = await ann.schedule_announcement(s, auth=auth, draft=draft, now=NOW)
            return a.id or 0

        flow, created = await flows.confirm(
            s, flow_id=flow_id, owner_id=person_id, now=NOW, kind="ann", make=make
        )
    return flow.result_id or 0, added, created


async def test_sending_now_writes_the_rows_with_the_announcement(db: Database) -> None:
    grid, _b3, _ = await _world(db)
    draft_id = await _draft(db, grid)
    aid, added, created = await _confirm(db, draft_id)
    async with db.transaction(write=False) as s:
        a = await s.get(Announcement, aid)
    assert a is not None and created
    assert added == 3 and a.next_occurrence is None and a.last_occurrence == NOW
    assert await _keys(db) == [f"ann:{a.id}:20261120:{c}:0" for c in (-1, -2, -3)]
    # A double tap makes nothing more: the same announcement, no new rows.
    assert await _confirm(db, draft_id) == (aid, 0, False)
    assert await _keys(db) == [f"ann:{a.id}:20261120:{c}:0" for c in (-1, -2, -3)]
    async with db.transaction(write=False) as s:
        assert len((await s.exec(select(Announcement))).all()) == 1


async def test_a_lead_cannot_aim_a_draft_at_a_unit_they_do_not_lead(db: Database) -> None:
    _grid, _b3, other = await _world(db)
    auth = await _auth(db, LEAD)
    async with db.transaction() as s:
        with pytest.raises(NotAllowed):
            await ann.aim(s, auth=auth, unit_id=other)
        draft = ann.Draft(unit_id=other, subtree=False, text="x", photo=None, start=None)
        with pytest.raises(NotAllowed):
            await ann.schedule_announcement(s, auth=auth, draft=draft, now=NOW)
    assert await _keys(db) == []


async def test_another_person_cannot_use_a_leads_draft(db: Database) -> None:
    grid, _b3, _ = await _world(db)
    draft_id = await _draft(db, grid)
    with pytest.raises(NotAllowed) as refused:
        await _confirm(db, draft_id, person_id=OTHER)
    assert refused.value.key == "flow_not_yours"
    assert await _keys(db) == []


async def test_cancel_withdraws_unsent_rows_and_reports_them(db: Database) -> None:
    grid, _b3, _ = await _world(db)
    aid = await _announcement(db, grid)
    await _materialise(db, utc(2026, 11, 20, 23, 57))
    async with db.transaction() as s:
        (first, *_rest) = await outbox.claim_due(s, now=utc(2026, 11, 21, 0, 0), limit=1)
        assert first.id is not None
        await outbox.finish(s, delivery_id=first.id, claim=first.claim, status=Status.sent, now=NOW)
    auth = await _auth(db, LEAD)
    async with db.transaction() as s:
        a, withdrawn = await ann.cancel(s, auth=auth, announcement_id=aid, now=NOW)
    assert withdrawn == 2 and a.next_occurrence is None and a.status == "cancelled"
    async with db.transaction() as s:
        with pytest.raises(Conflict):
            await ann.cancel(s, auth=auth, announcement_id=aid, now=NOW)
    async with db.transaction(write=False) as s:
        _a, _u, _c, report = await ann.delivery_report(s, auth=auth, announcement_id=aid)
    assert (report.sent, report.pending, report.cancelled, report.failed) == (1, 0, 2, 0)
    assert await _materialise(db, utc(2026, 11, 27, 23, 58)) == 0


async def test_report_names_unreachable_chats(db: Database) -> None:
    grid, _b3, _ = await _world(db)
    aid = await _announcement(db, grid)
    await _materialise(db, utc(2026, 11, 20, 23, 57))
    async with db.transaction() as s:
        await outbox.abandon_chat(s, chat_id=-2, now=NOW, reason="kicked")
    async with db.transaction(write=False) as s:
        _a, _u, _c, report = await ann.delivery_report(
            s, auth=await _auth(db, LEAD), announcement_id=aid
        )
    assert report.unreachable == ["群2"] and report.pending == 2


async def test_only_leads_of_the_unit_see_and_cancel(db: Database) -> None:
    grid, _b3, other = await _world(db)
    mine = await _announcement(db, grid)
    await _announcement(db, other)
    async with db.transaction(write=False) as s:
        found, total = await ann.announcements_for(
            s, auth=await _auth(db, LEAD), now=NOW, offset=0, limit=8
        )
        assert total == 1 and [a.id for a, _u, _c in found] == [mine]
        nobody, none = await ann.announcements_for(
            s, auth=await _auth(db, OTHER), now=NOW, offset=0, limit=8
        )
        assert (nobody, none) == ([], 0)
    async with db.transaction() as s:
        with pytest.raises(NotAllowed):
            await ann.cancel(s, auth=await _auth(db, OTHER), announcement_id=mine, now=NOW)
