"""Problem reports against a real database: filing, support, lead actions and their races, the
neighbours' verdict, escalation by the clock, lists, stats, export and the weekly digest."""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import col, select

from bot.db import Database
from bot.render import TEMPLATES, Renderer
from models import digest, ledger, people, reports
from models.errors import Conflict, DomainError, InvalidInput, NotAllowed, NotFound
from models.outbox import Delivery
from models.reports import Action, Place, Report, Status
from tests.conftest import NOW

ADMIN, GRID_LEAD, B3_LEAD, B5_LEAD = 1, 2, 3, 4
REPORTER, S1, S2, S3 = 21, 22, 23, 24


@dataclass
class World:
    community: int
    estate: int
    grid: int
    b3: int
    b5: int
    households: list[int]


@pytest.fixture
async def world(db: Database) -> World:
    """幸福里: estate (admin 1) › 一网格 (lead 2) › 3号楼 (lead 3) and 5号楼 (lead 4);
    residents 21–24 in 3号楼, 25 in 5号楼; chats linked to the grid and both buildings."""
    async with db.transaction() as s:
        c = await people.create_community(
            s, name="幸福里", timezone="Asia/Shanghai", language="zh", now=NOW
        )
        assert c.id is not None
        estate = await people.create_unit(
            s, community_id=c.id, parent_id=None, kind="estate", name="幸福里小区", now=NOW
        )
        grid = await people.create_unit(
            s, community_id=c.id, parent_id=estate.id, kind="grid", name="一网格", now=NOW
        )
        b3 = await people.create_unit(
            s, community_id=c.id, parent_id=grid.id, kind="building", name="3号楼", now=NOW
        )
        b5 = await people.create_unit(
            s, community_id=c.id, parent_id=grid.id, kind="building", name="5号楼", now=NOW
        )
        assert estate.id and grid.id and b3.id and b5.id
        for pid in (ADMIN, GRID_LEAD, B3_LEAD, B5_LEAD, REPORTER, S1, S2, S3, 25):
            await people.touch_person(
                s, person_id=pid, name=f"P{pid}", username=None, language_code="zh", now=NOW
            )
        households = []
        for i, pid in enumerate((REPORTER, S1, S2, S3, 25)):
            unit = b3 if pid != 25 else b5
            assert unit.id is not None
            h = await people.add_household(
                s, unit_id=unit.id, flat=f"{i + 1}01", area_centi_m2=None, now=NOW
            )
            assert h.id is not None
            households.append(h.id)
            await people.request_join(
                s, person_id=pid, household_id=h.id, now=NOW, verified_by_code=True
            )
        for unit, pid, kind in (
            (estate, ADMIN, "admin"),
            (grid, GRID_LEAD, "lead"),
            (b3, B3_LEAD, "lead"),
            (b5, B5_LEAD, "lead"),
        ):
            s.add(people.Role(unit_id=unit.id or 0, person_id=pid, kind=kind, created_at=NOW))
        for chat, unit in ((-1001, grid), (-1003, b3), (-1005, b5)):
            assert unit.id is not None
            await people.link_chat(
                s, chat_id=chat, thread_id=0, unit_id=unit.id, title="", by=ADMIN, now=NOW
            )
        return World(c.id, estate.id, grid.id, b3.id, b5.id, households)


async def auth(db: Database, person_id: int) -> people.Authority:
    async with db.transaction(write=False) as s:
        return await people.authority(s, person_id=person_id, superadmin=False)


async def file(db: Database, w: World, **kw: Any) -> Report:
    values: dict[str, Any] = {
        "reporter_id": REPORTER,
        "unit_id": w.b3,
        "category": "lights",
        "text": "3楼楼道灯不亮",
        "place": Place.stairwell,
        "floor": 3,
        "now": NOW,
        "chat_id": -1003,
    }
    values.update(kw)
    async with db.transaction() as s:
        report, _ = await reports.file(s, **values)
        return report


async def act(db: Database, who: int, report: Report, action: str, **kw: Any) -> reports.Changed:
    a = await auth(db, who)
    async with db.transaction() as s:
        kw.setdefault("now", NOW + timedelta(hours=1))
        return await reports.act(s, auth=a, report_id=report.id or 0, action=action, **kw)


async def outbox_rows(db: Database, prefix: str) -> list[Delivery]:
    async with db.transaction(write=False) as s:
        rows = await s.exec(
            select(Delivery).where(col(Delivery.key).startswith(prefix)).order_by(col(Delivery.id))
        )
        return list(rows.all())


async def cards_of(db: Database, kind: str, report: Report, round_: str = "") -> list[Delivery]:
    """The posted live cards of one kind about a report (`round_`: e.g. "overdue1r0")."""
    rows = await outbox_rows(db, f"card:{kind}:{report.id}:")
    return [r for r in rows if r.edits is None and r.key.endswith(round_)]


async def fresh(db: Database, report: Report) -> Report:
    async with db.transaction(write=False) as s:
        return await reports.get(s, report.id or 0)


# --- filing -------------------------------------------------------------------------------


async def test_reports_are_numbered_per_community_and_tell_the_nearest_leads(
    db: Database, world: World
) -> None:
    first = await file(db, world)
    second = await file(db, world, category="water", place=Place.basement)
    assert (first.label, second.label) == ("R-1", "R-2")
    assert first.visibility == "group" and first.status == Status.open and first.is_open
    assert first.escalate_at == NOW + timedelta(hours=24)
    told = await cards_of(db, reports.LEAD_CARD, first, "new0r0")
    assert [r.person_id for r in told] == [B3_LEAD]
    (card,) = await cards_of(db, reports.CARD, first)
    assert (card.chat_id, card.person_id) == (-1003, None)
    async with db.transaction(write=False) as s:
        history = await reports.events(s, first.id or 0)
    assert [(e.kind, e.by, e.to_status) for e in history] == [("filed", REPORTER, "open")]


async def test_safety_and_lift_escalate_after_two_hours(db: Database, world: World) -> None:
    lift = await file(db, world, category="lift", place=Place.lift, floor=None)
    assert lift.escalate_at == NOW + timedelta(hours=2)
    assert lift.floor is None


async def test_a_private_report_has_no_chat_and_a_repeat_makes_one(
    db: Database, world: World
) -> None:
    a = await file(db, world, chat_id=None, origin_key="draft:7")
    b = await file(db, world, chat_id=None, origin_key="draft:7")
    assert a.id == b.id and a.visibility == "private" and a.chat_id is None


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"text": "  ", "photos": []}, "report_empty"),
        ({"text": "x" * 1001}, "report_too_long"),
        ({"photos": [f"p{i}" for i in range(6)]}, "report_too_many_photos"),
        ({"category": "nonsense"}, "report_bad_category"),
        ({"floor": 999}, "report_bad_floor"),
        ({"place": "kitchen"}, "stale_button"),
        ({"latitude": 30.5, "longitude": None}, "report_bad_location"),
        ({"latitude": 130.5, "longitude": 10.0}, "report_bad_location"),
    ],
)
async def test_bad_reports_are_refused_and_nothing_is_written(
    db: Database, world: World, changes: dict[str, Any], error: str
) -> None:
    with pytest.raises(InvalidInput) as caught:
        await file(db, world, **changes)
    assert caught.value.key == error
    async with db.transaction(write=False) as s:
        assert (await s.exec(select(Report))).first() is None


async def test_a_photo_only_report_and_an_outdoor_one(db: Database, world: World) -> None:
    photo = await file(db, world, text="", photos=["AgAD1", "AgAD1", "AgAD2"])
    assert photo.photos == ["AgAD1", "AgAD2"] and photo.text == ""
    outdoors = await file(db, world, place=None, latitude=30.55, longitude=114.3, venue="北门")
    assert outdoors.place == Place.outdoors and outdoors.floor is None


async def test_duplicates_are_open_same_unit_category_and_place_but_never_a_flat(
    db: Database, world: World
) -> None:
    a = await file(db, world)
    await file(db, world, place=Place.corridor)  # another place
    await file(db, world, category="water")  # another category
    await file(db, world, unit_id=world.b5, reporter_id=25)  # another building
    flat = await file(db, world, place=Place.my_flat)
    async with db.transaction(write=False) as s:
        same = await reports.duplicates(
            s, unit_id=world.b3, category="lights", place=Place.stairwell
        )
        flats = await reports.duplicates(
            s, unit_id=world.b3, category="lights", place=Place.my_flat
        )
    assert [r.id for r in same] == [a.id]
    assert flats == [] and flat.place == Place.my_flat
    await act(db, B3_LEAD, a, Action.decline, note="不是问题")
    async with db.transaction(write=False) as s:
        assert (
            await reports.duplicates(s, unit_id=world.b3, category="lights", place="stairwell")
            == []
        )


# --- support ------------------------------------------------------------------------------


async def test_support_counts_once_and_not_for_the_reporter(db: Database, world: World) -> None:
    report = await file(db, world)
    async with db.transaction() as s:
        _, added = await reports.support(s, report_id=report.id or 0, person_id=S1, now=NOW)
        _, again = await reports.support(s, report_id=report.id or 0, person_id=S1, now=NOW)
    assert (added, again) == (True, False)
    with pytest.raises(Conflict) as own:
        async with db.transaction() as s:
            await reports.support(s, report_id=report.id or 0, person_id=REPORTER, now=NOW)
    assert own.value.key == "report_own"
    assert (await fresh(db, report)).supporters == 1


async def test_concurrent_supporters_are_all_counted(db: Database, world: World) -> None:
    report = await file(db, world)

    async def tap(pid: int) -> None:
        async with db.transaction() as s:
            await reports.support(s, report_id=report.id or 0, person_id=pid, now=NOW)

    await asyncio.gather(*(tap(p) for p in (S1, S2, S3, 25, S1, S2)))
    assert (await fresh(db, report)).supporters == 4


# --- lead actions -------------------------------------------------------------------------


async def test_acknowledging_credits_the_reporter_once_and_tells_the_followers(
    db: Database, world: World
) -> None:
    report = await file(db, world)
    async with db.transaction() as s:
        await reports.support(s, report_id=report.id or 0, person_id=S1, now=NOW)
    changed = await act(db, B3_LEAD, report, Action.acknowledge, rev=0)
    assert changed.credited and changed.report.status == Status.acknowledged
    assert changed.report.escalate_at is None and changed.report.rev == 1
    again = await act(db, B3_LEAD, changed.report, Action.in_progress, rev=1)
    assert not again.credited
    async with db.transaction(write=False) as s:
        assert await ledger.balance(s, community_id=world.community, person_id=REPORTER) == 3
        entry = await ledger.entry_by_key(s, f"report:{report.id}")
    assert entry is not None and entry.kind == "report"
    told = await outbox_rows(db, f"report:{report.id}:ev:{changed.event.id}:")
    assert sorted(r.person_id or 0 for r in told) == [REPORTER, S1]


async def test_declined_and_duplicate_reports_earn_nothing(db: Database, world: World) -> None:
    a = await file(db, world)
    b = await file(db, world, reporter_id=S2)
    with pytest.raises(InvalidInput) as no_reason:
        await act(db, B3_LEAD, a, Action.decline, note="  ")
    assert no_reason.value.key == "report_reason_required"
    await act(db, B3_LEAD, a, Action.decline, note="物业负责")
    with pytest.raises(Conflict) as finished:
        await act(db, B3_LEAD, b, Action.duplicate, target_number=a.number)
    assert finished.value.key == "report_finished"
    c = await file(db, world, reporter_id=S3)
    dup = await act(db, B3_LEAD, b, Action.duplicate, target_number=c.number)
    assert dup.target is not None and dup.target.id == c.id
    async with db.transaction(write=False) as s:
        assert await ledger.balance(s, community_id=world.community, person_id=REPORTER) == 0
        assert await ledger.balance(s, community_id=world.community, person_id=S2) == 0


async def test_duplicate_of_moves_the_supporters_and_tells_the_reporter(
    db: Database, world: World
) -> None:
    target = await file(db, world)
    copy = await file(db, world, reporter_id=S1)
    async with db.transaction() as s:
        await reports.support(s, report_id=copy.id or 0, person_id=S2, now=NOW)
        await reports.support(s, report_id=copy.id or 0, person_id=REPORTER, now=NOW)
    changed = await act(db, B3_LEAD, copy, Action.duplicate, target_number=target.number)
    assert changed.report.status == Status.duplicate and changed.report.duplicate_of == target.id
    async with db.transaction(write=False) as s:
        assert await reports.supporter_ids(s, target.id or 0) == [S1, S2]
    assert (await fresh(db, target)).supporters == 2
    told = await outbox_rows(db, f"report:{copy.id}:ev:{changed.event.id}:{S1}")
    assert len(told) == 1 and told[0].context["event"] == "duplicate"
    with pytest.raises(InvalidInput) as self_dup:
        await act(db, B3_LEAD, target, Action.duplicate, target_number=target.number)
    assert self_dup.value.key == "report_duplicate_self"


async def test_a_lead_outside_the_unit_is_refused(db: Database, world: World) -> None:
    report = await file(db, world)
    with pytest.raises(NotAllowed) as caught:
        await act(db, B5_LEAD, report, Action.acknowledge)
    assert caught.value.key == "not_your_unit"
    await act(db, GRID_LEAD, report, Action.acknowledge)  # the grid covers 3号楼


async def test_a_closed_report_cannot_be_resolved_and_a_stale_sheet_cannot_act(
    db: Database, world: World
) -> None:
    report = await file(db, world)
    await act(db, B3_LEAD, report, Action.decline, note="重复")
    with pytest.raises(Conflict) as closed:
        await act(db, B3_LEAD, report, Action.resolve)
    assert closed.value.key == "report_closed"
    other = await file(db, world)
    await act(db, B3_LEAD, other, Action.acknowledge, rev=0)
    with pytest.raises(Conflict) as stale:
        await act(db, GRID_LEAD, other, Action.in_progress, rev=0)
    assert stale.value.key == "report_changed"


async def test_two_leads_acting_at_once_one_wins(db: Database, world: World) -> None:
    for _ in range(3):
        report = await file(db, world)
        a, b = await auth(db, B3_LEAD), await auth(db, GRID_LEAD)

        async def go(who: people.Authority, action: str, report: Report = report) -> str:
            try:
                async with db.transaction() as s:
                    await reports.act(
                        s,
                        auth=who,
                        report_id=report.id or 0,
                        action=action,
                        rev=0,
                        note="reason",
                        now=NOW,
                    )
                return "won"
            except Conflict as exc:
                return exc.key

        results = await asyncio.gather(go(a, Action.resolve), go(b, Action.decline))
        assert sorted(results) == ["report_changed", "won"]
        final = await fresh(db, report)
        assert final.rev == 1
        async with db.transaction(write=False) as s:
            kinds = [e.kind for e in await reports.events(s, report.id or 0)]
        assert len([k for k in kinds if k in ("resolved", "declined")]) == 1


async def test_assign_to_a_lead_or_a_resident_who_is_told(db: Database, world: World) -> None:
    report = await file(db, world)
    changed = await act(db, B3_LEAD, report, Action.assign, assignee_id=S3)
    assert changed.report.assignee_id == S3 and changed.report.status == Status.acknowledged
    assert changed.credited
    told = await outbox_rows(db, f"report:{report.id}:ev:{changed.event.id}:{S3}")
    assert told[0].template == "reports/notice_assigned_you"
    with pytest.raises(InvalidInput) as stranger:
        await act(db, B3_LEAD, changed.report, Action.assign, assignee_id=ADMIN + 100)
    assert stranger.value.key in ("report_bad_assignee",)


async def test_redaction_replaces_text_and_photo_and_is_recorded(
    db: Database, world: World
) -> None:
    report = await file(db, world, text="我是3-201的王芳 13800000000", photos=["a", "b"])
    a = await auth(db, B3_LEAD)
    async with db.transaction() as s:
        await reports.redact(s, auth=a, report_id=report.id or 0, what="text", now=NOW)
        done = await reports.redact(s, auth=a, report_id=report.id or 0, what="photo:0", now=NOW)
        kept = list((await s.exec(select(reports.ReportRedaction))).all())
    assert done.text == reports.REDACTED and done.photos == ["b"]
    assert [(r.what, r.by) for r in kept] == [("text", B3_LEAD), ("photo:0", B3_LEAD)]
    with pytest.raises(Conflict):
        async with db.transaction() as s:
            await reports.redact(s, auth=a, report_id=report.id or 0, what="text", now=NOW)


# --- the neighbours' verdict ----------------------------------------------------------------


async def _resolved(db: Database, w: World, supporters: tuple[int, ...] = (S1, S2)) -> Report:
    report = await file(db, w)
    async with db.transaction() as s:
        for pid in supporters:
            await reports.support(s, report_id=report.id or 0, person_id=pid, now=NOW)
    changed = await act(db, B3_LEAD, report, Action.resolve, note="已更换灯泡")
    assert changed.report.followup_due_at == NOW + timedelta(hours=1, days=3)
    return changed.report


async def test_resolving_asks_the_reporter_and_supporters(db: Database, world: World) -> None:
    report = await _resolved(db, world)
    asked = await cards_of(db, reports.ASK_CARD, report)
    assert sorted(r.person_id or 0 for r in asked) == [REPORTER, S1, S2]


async def test_the_reporters_fixed_closes_and_a_rating_follows(db: Database, world: World) -> None:
    report = await _resolved(db, world)
    async with db.transaction() as s:
        v = await reports.verdict(
            s, report_id=report.id or 0, person_id=REPORTER, fixed=True, now=NOW
        )
        rated = await reports.rate(
            s, report_id=report.id or 0, person_id=REPORTER, rating=5, now=NOW
        )
    assert v.closed and v.report.status == Status.closed and v.report.fixed is True
    assert rated.rating == 5
    with pytest.raises(InvalidInput):
        async with db.transaction() as s:
            await reports.rate(s, report_id=report.id or 0, person_id=REPORTER, rating=6, now=NOW)
    with pytest.raises(Conflict) as first:
        async with db.transaction() as s:
            await reports.rate(s, report_id=report.id or 0, person_id=S3, rating=4, now=NOW)
    assert first.value.key == "report_rate_first"


async def test_two_supporters_not_fixed_reopen_and_escalate(db: Database, world: World) -> None:
    report = await _resolved(db, world)
    async with db.transaction() as s:
        one = await reports.verdict(s, report_id=report.id or 0, person_id=S1, fixed=False, now=NOW)
    assert not one.reopened
    async with db.transaction() as s:
        two = await reports.verdict(s, report_id=report.id or 0, person_id=S2, fixed=False, now=NOW)
    assert two.reopened and two.report.status == Status.reopened and two.report.is_open
    assert two.report.round == 1 and two.report.escalation_level == 1
    up = await cards_of(db, reports.LEAD_CARD, report, "reopened1r1")
    assert [r.person_id for r in up] == [GRID_LEAD]
    with pytest.raises(NotAllowed):
        async with db.transaction() as s:
            await reports.verdict(s, report_id=report.id or 0, person_id=25, fixed=False, now=NOW)


async def test_the_reporters_not_fixed_reopens_alone(db: Database, world: World) -> None:
    report = await _resolved(db, world, supporters=())
    async with db.transaction() as s:
        v = await reports.verdict(
            s, report_id=report.id or 0, person_id=REPORTER, fixed=False, now=NOW, photo="AgX"
        )
    assert v.reopened
    with pytest.raises(Conflict) as over:
        async with db.transaction() as s:
            await reports.verdict(
                s, report_id=report.id or 0, person_id=REPORTER, fixed=True, now=NOW
            )
    assert over.value.key == "report_followup_over"


async def test_no_answer_in_three_days_closes_it_as_resolved(db: Database, world: World) -> None:
    report = await _resolved(db, world)
    async with db.transaction() as s:
        assert await reports.due_work(s, NOW + timedelta(days=3)) == 0
    async with db.transaction() as s:
        assert await reports.due_work(s, NOW + timedelta(days=3, hours=1)) == 1
    closed = await fresh(db, report)
    assert (
        closed.status == Status.closed and closed.fixed is None and closed.followup_due_at is None
    )


# --- escalation by the clock --------------------------------------------------------------


async def test_escalation_climbs_the_tree_to_the_admins_then_stops(
    db: Database, world: World
) -> None:
    report = await file(db, world)
    async with db.transaction() as s:
        assert await reports.due_work(s, NOW + timedelta(hours=23)) == 0
    steps = []
    for hours in (24, 48, 72, 96):
        async with db.transaction() as s:
            steps.append(await reports.due_work(s, NOW + timedelta(hours=hours)))
    assert steps == [1, 1, 0, 0]
    after = await fresh(db, report)
    assert after.overdue and after.escalation_level == 2 and after.escalate_at is None
    told = {
        r.person_id
        for r in await cards_of(db, reports.LEAD_CARD, report)
        if "overdue" in r.key
        if r.person_id is not None
    }
    assert told == {GRID_LEAD, ADMIN}
    # Acknowledging clears the flag; the events keep the history.
    done = await act(db, GRID_LEAD, after, Action.acknowledge, now=NOW + timedelta(hours=50))
    assert not done.report.overdue


async def test_edited_hours_apply_to_new_reports(db: Database, world: World) -> None:
    admin = await auth(db, ADMIN)
    async with db.transaction() as s:
        await reports.set_hours(
            s, auth=admin, community_id=world.community, code="noise", hours=6, now=NOW
        )
    report = await file(db, world, category="noise", place=None)
    assert report.escalate_at == NOW + timedelta(hours=6)
    lead = await auth(db, B3_LEAD)
    with pytest.raises(NotAllowed):
        async with db.transaction() as s:
            await reports.set_hours(
                s, auth=lead, community_id=world.community, code="noise", hours=1, now=NOW
            )
    with pytest.raises(InvalidInput):
        async with db.transaction() as s:
            await reports.set_hours(
                s, auth=admin, community_id=world.community, code="noise", hours=0, now=NOW
            )


async def test_many_due_at_once_are_all_escalated_in_one_run(db: Database, world: World) -> None:
    for _ in range(reports.BATCH + 20):
        await file(db, world, place=None, text="x")
    async with db.transaction() as s:
        assert await reports.due_work(s, NOW + timedelta(hours=24)) == reports.BATCH + 20
    async with db.transaction(write=False) as s:
        left = await s.exec(select(Report).where(col(Report.overdue).is_(False)))
        assert left.first() is None


# --- lists, stats, export -----------------------------------------------------------------


async def test_the_open_list_is_overdue_then_most_supported_then_oldest(
    db: Database, world: World
) -> None:
    old = await file(db, world, now=NOW - timedelta(days=2), category="water")
    supported = await file(db, world, now=NOW - timedelta(hours=1), category="noise")
    newest = await file(db, world, now=NOW, category="parking")
    elsewhere = await file(db, world, unit_id=world.b5, reporter_id=25, category="lift")
    async with db.transaction() as s:
        await reports.support(s, report_id=supported.id or 0, person_id=S1, now=NOW)
        await reports.escalate_due(s, NOW + timedelta(hours=2))  # the lift (2 h) and the old one
    async with db.transaction(write=False) as s:
        page = await reports.open_list(s, community_id=world.community, unit_ids=None)
        b3 = await reports.open_list(s, community_id=world.community, unit_ids=[world.b3])
        water = await reports.open_list(
            s, community_id=world.community, unit_ids=None, category="water"
        )
    assert [r.id for r in page.reports] == [old.id, elsewhere.id, supported.id, newest.id]
    assert [r.id for r in b3.reports] == [old.id, supported.id, newest.id] and b3.total == 3
    assert [r.id for r in water.reports] == [old.id]


async def test_mine_lists_my_reports_and_the_ones_i_support(db: Database, world: World) -> None:
    mine = await file(db, world)
    theirs = await file(db, world, reporter_id=S1, now=NOW + timedelta(minutes=5))
    await file(db, world, reporter_id=S2)
    async with db.transaction() as s:
        await reports.support(s, report_id=theirs.id or 0, person_id=REPORTER, now=NOW)
        found = await reports.mine(s, person_id=REPORTER)
        last = await reports.last_events(s, [mine.id or 0])
    assert {(r.id, own) for r, own in found} == {(mine.id, True), (theirs.id, False)}
    assert last[mine.id or 0].kind == "filed"


async def test_stats_on_a_known_data_set(db: Database, world: World) -> None:
    """Four reports: one acknowledged after 2 h and fixed after 10 h (rated 4), one fixed after
    100 h (beyond its 72 h target, reopened once before), one declined, one open."""
    a = await file(db, world)
    await act(db, B3_LEAD, a, Action.acknowledge, now=NOW + timedelta(hours=2))
    await act(db, B3_LEAD, a, Action.resolve, now=NOW + timedelta(hours=10))
    async with db.transaction() as s:
        await reports.verdict(s, report_id=a.id or 0, person_id=REPORTER, fixed=True, now=NOW)
        await reports.rate(s, report_id=a.id or 0, person_id=REPORTER, rating=4, now=NOW)
    b = await file(db, world, category="water", reporter_id=S1)
    await act(db, B3_LEAD, b, Action.resolve, now=NOW + timedelta(hours=4))
    async with db.transaction() as s:
        await reports.verdict(s, report_id=b.id or 0, person_id=S1, fixed=False, now=NOW)
        await reports.rate(s, report_id=b.id or 0, person_id=S1, rating=2, now=NOW)
    await act(db, B3_LEAD, b, Action.resolve, now=NOW + timedelta(hours=100))
    c = await file(db, world, category="water", reporter_id=S2)
    await act(db, B3_LEAD, c, Action.decline, note="不归我们管", now=NOW + timedelta(hours=6))
    await file(db, world, category="noise", reporter_id=S3)
    async with db.transaction(write=False) as s:
        unit = await people.get_unit(s, world.grid)
        got = await reports.stats(
            s,
            unit=unit,
            start=NOW - timedelta(days=1),
            end=NOW + timedelta(days=1),
            now=NOW,
            zone="Asia/Shanghai",
        )
    assert got.total == 4
    assert got.by_category == {"water": 2, "lights": 1, "noise": 1}
    assert got.by_status == {"closed": 1, "resolved": 1, "declined": 1, "open": 1}
    assert got.median_ack_hours == pytest.approx(3)  # 2 h and 4 h
    assert got.median_resolve_hours == pytest.approx(55)  # 10 h and 100 h
    assert got.fixed_within_target == pytest.approx(0.5)
    assert got.reopen_rate == pytest.approx(0.5)
    assert got.average_rating == pytest.approx(3)
    assert sum(o for _, o, _ in got.weeks) == 4


async def test_export_rows_neutralise_formulas(db: Database, world: World) -> None:
    await file(db, world, text='=HYPERLINK("http://x")')
    async with db.transaction(write=False) as s:
        rows = await reports.export_rows(
            s, community_id=world.community, start=None, end=None, lang="zh", zone="Asia/Shanghai"
        )
    assert len(rows) == 1 and len(rows[0]) == len(reports.EXPORT_COLUMNS)
    assert rows[0][0] == "R-1" and rows[0][3] == "照明用电"
    assert rows[0][9].startswith("'=")


async def test_unknown_numbers_and_parsing(db: Database, world: World) -> None:
    assert [reports.parse_number(t) for t in ("R-12", "r12", "#12", " 12 ")] == [12] * 4
    with pytest.raises(InvalidInput):
        reports.parse_number("twelve")
    with pytest.raises(NotFound) as caught:
        async with db.transaction(write=False) as s:
            await reports.by_number(s, community_id=world.community, number=99)
    assert caught.value.params == {"number": "R-99"}


async def test_reply_templates_per_community(db: Database, world: World) -> None:
    lead = await auth(db, B3_LEAD)
    async with db.transaction() as s:
        saved = await reports.save_reply_template(
            s,
            auth=lead,
            community_id=world.community,
            title="已通知物业",
            text="已通知物业，三日内处理",
            now=NOW,
        )
    with pytest.raises(Conflict):
        async with db.transaction() as s:
            await reports.save_reply_template(
                s, auth=lead, community_id=world.community, title="已通知物业", text="x", now=NOW
            )
    stranger = people.Authority(person_id=S1)
    with pytest.raises(NotAllowed):
        async with db.transaction() as s:
            await reports.save_reply_template(
                s, auth=stranger, community_id=world.community, title="t", text="x", now=NOW
            )
    async with db.transaction() as s:
        assert [t.id for t in await reports.reply_templates(s, community_id=world.community)] == [
            saved.id
        ]
        await reports.delete_reply_template(s, auth=lead, template_id=saved.id or 0)
        assert await reports.reply_templates(s, community_id=world.community) == []


# --- the weekly digest --------------------------------------------------------------------

# NOW is Friday 2026-11-20 10:00 in Shanghai; its week is Monday 11-16 to Sunday 11-22, and
# its digest goes out on Monday 11-23 at 09:00 (01:00 UTC).
DIGEST_DUE = NOW + timedelta(days=2, hours=23)


async def test_the_digest_of_a_known_week(db: Database, world: World) -> None:
    a = await file(db, world)  # fixed in 10 h, rated 5
    await act(db, B3_LEAD, a, Action.resolve, now=NOW + timedelta(hours=10))
    async with db.transaction() as s:
        await reports.verdict(
            s, report_id=a.id or 0, person_id=REPORTER, fixed=True, now=NOW + timedelta(hours=11)
        )
        await reports.rate(
            s, report_id=a.id or 0, person_id=REPORTER, rating=5, now=NOW + timedelta(hours=11)
        )
    await file(db, world, category="lift", place=Place.lift)  # open, overdue after 2 h
    await file(db, world, unit_id=world.b5, reporter_id=25, category="water")  # open, 5号楼
    await file(db, world, now=NOW - timedelta(days=10), category="noise")  # older, still open
    async with db.transaction() as s:
        await reports.escalate_due(s, NOW + timedelta(hours=3))
    async with db.transaction() as s:
        assert await digest.weekly(s, DIGEST_DUE - timedelta(minutes=1)) == 0  # 08:59
        assert await digest.weekly(s, DIGEST_DUE) == 3  # grid, 3号楼, 5号楼
        assert await digest.weekly(s, DIGEST_DUE + timedelta(minutes=1)) == 0  # once
    rows = {r.chat_id: r for r in await outbox_rows(db, "digest:2026-11-16:")}
    b3 = rows[-1003].context
    assert (b3["first"], b3["last"]) == ("2026-11-16", "2026-11-22")
    section = b3["sections"][0]
    assert section["name"] == "reports"
    assert section["data"] == {
        "new": 2,
        "resolved": 1,
        "open": 2,
        "overdue": 2,  # the lift after 2 h, the old noise report long ago
        "median_fix_hours": 10.0,
        "rating": 5.0,
    }
    assert rows[-1001].context["sections"][0]["data"]["new"] == 3
    assert rows[-1005].context["sections"][0]["data"]["open"] == 1
    renderer = Renderer()
    for lang in ("zh", "en"):
        text = renderer.render(lang, digest.TEMPLATE, **rows[-1003].context)
        assert "3号楼" in text and "101" not in text and "P21" not in text


async def test_a_quiet_week_posts_nothing(db: Database, world: World) -> None:
    old = await file(db, world, now=NOW - timedelta(days=30))
    await act(db, B3_LEAD, old, Action.decline, note="x", now=NOW - timedelta(days=29))
    async with db.transaction() as s:
        assert await digest.weekly(s, DIGEST_DUE) == 0


async def test_a_feature_adds_a_section_with_one_function(
    db: Database, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(digest, "SECTIONS", dict(digest.SECTIONS))

    @digest.section("echo", template="reports/digest", order=99)
    async def echo(
        session: Any, community: Any, units: Any, week: digest.Week
    ) -> dict[int, dict[str, Any]]:
        return {
            world.b5: {
                "new": 1,
                "resolved": 0,
                "open": 0,
                "overdue": 0,
                "median_fix_hours": None,
                "rating": None,
            }
        }

    await file(db, world)
    async with db.transaction(write=False) as s:
        community = await people.get_community(s, world.community)
        built = await digest.build(s, community, digest.week_of(NOW.date(), "Asia/Shanghai"))
    assert [sec["name"] for sec in built[world.b5]] == ["echo"]
    assert [sec["name"] for sec in built[world.b3]] == ["reports"]


async def test_the_digest_day_and_time_are_per_community(db: Database, world: World) -> None:
    from datetime import time

    async with db.transaction() as s:
        await digest.set_policy(s, community_id=world.community, weekday=4, at=time(18, 0))
    await file(db, world)
    async with db.transaction() as s:
        assert await digest.weekly(s, DIGEST_DUE) == 0
        # Friday 2026-11-27 18:00 Shanghai = 10:00 UTC.
        assert await digest.weekly(s, NOW + timedelta(days=7, hours=8)) == 2  # grid, 3号楼
    with pytest.raises(InvalidInput):
        async with db.transaction() as s:
            await digest.set_policy(s, community_id=world.community, weekday=7)


# --- every refusal has a message in both languages -----------------------------------------


def test_every_report_error_has_a_template_in_both_languages() -> None:
    sources = [Path(reports.__file__), Path(digest.__file__)]
    keys = {
        k
        for p in sources
        for k in re.findall(
            r"(?:InvalidInput|Conflict|NotAllowed|NotFound)\(\s*\"(\w+)\"", p.read_text()
        )
    }
    assert "report_empty" in keys and len(keys) > 15
    missing = [
        f"{lang}/errors/{k}"
        for lang in ("zh", "en")
        for k in sorted(keys)
        if not (TEMPLATES / lang / "errors" / f"{k}.html.j2").exists()
    ]
    assert missing == []
    assert issubclass(Conflict, DomainError)


async def test_every_message_the_domain_queues_renders_in_both_languages(
    db: Database, world: World
) -> None:
    report = await _resolved(db, world)
    async with db.transaction() as s:
        await reports.verdict(s, report_id=report.id or 0, person_id=REPORTER, fixed=False, now=NOW)
    await act(db, B3_LEAD, report, Action.assign, assignee_id=S3)
    rows = await outbox_rows(db, f"report:{report.id}:")
    assert {r.template for r in rows} == {"reports/notice_change", "reports/notice_assigned_you"}
    renderer = Renderer()
    for row in rows:
        for lang in ("zh", "en"):
            text = renderer.render(lang, row.template, **row.context)
            assert report.label in text and "101" not in text


async def test_an_admin_adds_categories_of_the_communitys_own(db: Database, world: World) -> None:
    admin = await auth(db, ADMIN)
    async with db.transaction() as s:
        pets = await reports.add_category(
            s, auth=admin, community_id=world.community, name="  宠物  ", now=NOW
        )
        bikes = await reports.add_category(
            s, auth=admin, community_id=world.community, name="单车", now=NOW
        )
    assert (pets.name_zh, pets.code, bikes.code) == ("宠物", "c1", "c2")
    with pytest.raises(Conflict) as taken:
        async with db.transaction() as s:
            await reports.add_category(
                s, auth=admin, community_id=world.community, name="宠物", now=NOW
            )
    assert taken.value.key == "report_category_exists"
    with pytest.raises(NotAllowed):
        async with db.transaction() as s:
            await reports.add_category(
                s, auth=await auth(db, B3_LEAD), community_id=world.community, name="x", now=NOW
            )
    async with db.transaction(write=False) as s:
        listed = await reports.categories(
            s, community_id=world.community, now=NOW, active_only=False
        )
    # The defaults were saved with the first one, in their order; custom ones come after.
    assert [c.code for c in listed][-2:] == ["c1", "c2"]
    assert len(listed) == len(reports.DEFAULT_CATEGORIES) + 2
    assert [c.position for c in listed] == list(range(len(listed)))
    with pytest.raises(InvalidInput) as unknown:
        async with db.transaction() as s:
            await reports.set_hours(
                s, auth=admin, community_id=world.community, code="c9", hours=6, now=NOW
            )
    assert unknown.value.key == "report_bad_category"
