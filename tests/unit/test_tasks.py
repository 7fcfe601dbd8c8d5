"""Volunteer tasks against a real database: slots and waitlist under concurrent taps, reminders
in the outbox, check-in, attendance credited once, recurrence, the leads' lines."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlmodel import col, select

from bot.db import Database
from bot.render import Renderer
from models import ledger, people, standings, tasks
from models.errors import Conflict, DomainError, InvalidInput, NotAllowed
from models.ledger import LedgerEntry
from models.outbox import Delivery, Status
from models.tasks import Fields, SignupStatus
from tests.conftest import NOW

ZONE = ZoneInfo("Asia/Shanghai")
LEAD, CO_LEAD, OUTSIDER = 1, 2, 99
RESIDENTS = list(range(100, 140))  # 40 verified residents of building 3


@dataclass
class World:
    community: int
    grid: int
    building: int
    other_building: int


@pytest.fixture
async def world(db: Database) -> World:
    async with db.transaction() as s:
        c = await people.create_community(
            s, name="幸福里", timezone="Asia/Shanghai", language="zh", now=NOW
        )
        assert c.id is not None
        grid = await people.create_unit(
            s, community_id=c.id, parent_id=None, kind="grid", name="第一网格", now=NOW
        )
        assert grid.id is not None
        b3 = await people.create_unit(
            s, community_id=c.id, parent_id=grid.id, kind="building", name="3号楼", now=NOW
        )
        b5 = await people.create_unit(
            s, community_id=c.id, parent_id=grid.id, kind="building", name="5号楼", now=NOW
        )
        assert b3.id is not None and b5.id is not None
        for pid in (LEAD, CO_LEAD, OUTSIDER, *RESIDENTS):
            await people.touch_person(
                s, person_id=pid, name=f"P{pid} X", username=None, language_code="zh", now=NOW
            )
        for i, pid in enumerate(RESIDENTS):
            h = await people.add_household(
                s, unit_id=b3.id, flat=f"3-{i:03d}", area_centi_m2=None, now=NOW
            )
            assert h.id is not None
            await people.request_join(
                s, person_id=pid, household_id=h.id, now=NOW, verified_by_code=True
            )
        h5 = await people.add_household(s, unit_id=b5.id, flat="5-101", area_centi_m2=None, now=NOW)
        assert h5.id is not None
        await people.request_join(
            s, person_id=OUTSIDER, household_id=h5.id, now=NOW, verified_by_code=True
        )
        for lead in (LEAD, CO_LEAD):
            s.add(people.Role(unit_id=b3.id, person_id=lead, kind="lead", created_at=NOW))
        await s.flush()
        return World(c.id, grid.id, b3.id, b5.id)


def at(day: int, hour: int, minute: int = 0, month: int = 11) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=ZONE)


SAT = at(28, 9)  # the coming Saturday, 09:00 local


async def new_task(
    db: Database,
    w: World,
    *,
    slots: int | None = 10,
    start: datetime = SAT,
    hours: float = 2.5,
    points_: int | None = None,
    title: str = "清扫楼道",
) -> int:
    fields = Fields(
        title=title,
        starts_at=start,
        ends_at=start + timedelta(hours=hours),
        place="3号楼门口",
        slots=slots,
        points=points_,
    )
    async with db.transaction() as s:
        task = await tasks.create_task(
            s,
            auth=await people.authority(s, person_id=LEAD, superadmin=False),
            unit_id=w.building,
            fields=fields,
            now=NOW,
        )
        assert task.id is not None
        return task.id


async def sign(
    db: Database, task_id: int, person: int, *, now: datetime = NOW, by: int | None = None
) -> tasks.SignedUp:
    async with db.transaction() as s:
        lead = await people.authority(s, person_id=by, superadmin=False) if by else None
        return await tasks.sign_up(s, task_id=task_id, person_id=person, now=now, auth=lead)


async def rows(db: Database, prefix: str) -> list[Delivery]:
    async with db.transaction(write=False) as s:
        found = await s.exec(
            select(Delivery).where(col(Delivery.key).startswith(prefix)).order_by(col(Delivery.id))
        )
        return list(found.all())


async def statuses(db: Database, task_id: int) -> dict[int, str]:
    async with db.transaction(write=False) as s:
        return {x.person_id: x.status for x in await tasks.signups(s, task_id)}


# --- creating: every rule ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"title": "x" * 101}, "task_title_long"),
        ({"title": "   "}, "task_title_empty"),
        ({"ends_at": SAT - timedelta(minutes=1)}, "task_ends_before_start"),
        ({"ends_at": SAT}, "task_ends_before_start"),
        ({"starts_at": NOW - timedelta(minutes=1)}, "task_starts_in_past"),
        ({"slots": 0}, "task_slots_min"),
        ({"slots": -3}, "task_slots_min"),
        ({"slots": 1001}, "task_slots_max"),
        ({"points": -1}, "task_points_range"),
        ({"place": "x" * 201}, "task_place_long"),
        ({"description": "x" * 1001}, "task_description_long"),
        ({"skill": "juggling"}, "task_bad_skill"),
    ],
)
async def test_bad_task_is_refused_and_nothing_written(
    db: Database, world: World, change: dict[str, object], key: str
) -> None:
    values: dict[str, object] = {
        "title": "清扫楼道",
        "starts_at": SAT,
        "ends_at": SAT + timedelta(hours=2),
        "slots": 10,
    }
    values.update(change)
    with pytest.raises(InvalidInput) as raised:
        async with db.transaction() as s:
            await tasks.create_task(
                s,
                auth=await people.authority(s, person_id=LEAD, superadmin=False),
                unit_id=world.building,
                fields=Fields(**values),  # type: ignore[arg-type]
                now=NOW,
            )
    assert raised.value.key == key
    async with db.transaction(write=False) as s:
        assert (await s.exec(select(tasks.Task))).first() is None


async def test_only_a_lead_of_the_unit_posts_and_points_default_to_the_rule(
    db: Database, world: World
) -> None:
    fields = Fields(title="t", starts_at=SAT, ends_at=SAT + timedelta(hours=1))
    async with db.transaction() as s:
        stranger = await people.authority(s, person_id=OUTSIDER, superadmin=False)
        with pytest.raises(NotAllowed):
            await tasks.create_task(
                s, auth=stranger, unit_id=world.building, fields=fields, now=NOW
            )
        lead = await people.authority(s, person_id=LEAD, superadmin=False)
        with pytest.raises(NotAllowed):  # leads 3号楼, not 5号楼
            await tasks.create_task(
                s, auth=lead, unit_id=world.other_building, fields=fields, now=NOW
            )
        task = await tasks.create_task(s, auth=lead, unit_id=world.building, fields=fields, now=NOW)
        assert task.points == 10 and task.slots is None and len(task.code) == 6
    assert tasks.parse_slots("不限") is None and tasks.parse_slots(" 12 ") == 12
    for bad, key in (
        ("0", "task_slots_min"),
        ("1001", "task_slots_max"),
        ("abc", "task_slots_number"),
    ):
        with pytest.raises(InvalidInput, match=key):
            tasks.parse_slots(bad)


# --- signing up -------------------------------------------------------------------------------


async def test_thirty_taps_for_ten_slots_ten_in_twenty_waitlisted_in_tap_order(
    db: Database, world: World
) -> None:
    task_id = await new_task(db, world, slots=10)
    tappers = RESIDENTS[:30]
    results = await asyncio.gather(*(sign(db, task_id, p) for p in tappers))
    outcomes = {r.signup.person_id: r for r in results}
    async with db.transaction(write=False) as s:
        found = await tasks.signups(s, task_id)
        assert await tasks.count_in(s, task_id) == 10
    assert sorted(x.seq for x in found) == list(range(1, 31))
    inside = [x for x in found if x.status == SignupStatus.signed_up]
    waiting = [x for x in found if x.status == SignupStatus.waitlisted]
    assert len(inside) == 10 and len(waiting) == 20
    # the first ten decided are in; the waitlist is everyone after, in the order decided
    assert [x.seq for x in inside] == list(range(1, 11))
    assert [outcomes[x.person_id].position for x in waiting] == list(range(1, 21))
    for x in found:
        assert outcomes[x.person_id].outcome == x.status
    # a second tap changes nothing and says so
    again = await sign(db, task_id, inside[0].person_id)
    assert again.outcome == tasks.Outcome.already_in
    again = await sign(db, task_id, waiting[3].person_id)
    assert again.outcome == tasks.Outcome.already_waitlisted and again.position == 4
    # reminders: two per person who is in, none for the waitlist
    reminders = await rows(db, f"taskrem:{task_id}:")
    assert len(reminders) == 20
    assert {r.person_id for r in reminders} == {x.person_id for x in inside}
    due = {r.due_at for r in reminders}
    assert due == {SAT - timedelta(hours=24), SAT - timedelta(hours=1)}


async def test_who_may_sign_up(db: Database, world: World) -> None:
    task_id = await new_task(db, world)
    with pytest.raises(NotAllowed, match="task_not_resident"):
        await sign(db, task_id, OUTSIDER)  # lives in 5号楼
    with pytest.raises(NotAllowed, match="task_not_resident"):
        await sign(db, task_id, LEAD)  # leads it but lives nowhere
    with pytest.raises(Conflict, match="task_signup_closed"):
        await sign(db, task_id, RESIDENTS[0], now=SAT)


async def test_tasks_to_sign_up_for_leave_out_those_one_is_on(db: Database, world: World) -> None:
    first = await new_task(db, world, title="一")
    second = await new_task(db, world, title="二")

    async def offered(person: int) -> list[int | None]:
        async with db.transaction(write=False) as s:
            return [t.id for t in await tasks.upcoming_for(s, person_id=person, now=NOW)]

    assert await offered(RESIDENTS[0]) == [first, second]
    await sign(db, first, RESIDENTS[0])
    assert await offered(RESIDENTS[0]) == [second]
    async with db.transaction() as s:
        await tasks.withdraw(s, task_id=first, person_id=RESIDENTS[0], now=NOW)
    assert await offered(RESIDENTS[0]) == [first, second]  # withdrawn: offered again


async def test_withdraw_promotes_the_first_waitlisted_and_closes_at_the_cutoff(
    db: Database, world: World
) -> None:
    task_id = await new_task(db, world, slots=2)
    for p in RESIDENTS[:4]:
        await sign(db, task_id, p)
    async with db.transaction() as s:
        gone = await tasks.withdraw(s, task_id=task_id, person_id=RESIDENTS[0], now=NOW)
    assert gone.promoted == [RESIDENTS[2]]
    found = await statuses(db, task_id)
    assert found[RESIDENTS[0]] == "withdrawn" and found[RESIDENTS[2]] == "signed_up"
    assert found[RESIDENTS[3]] == "waitlisted"
    # the one who left has no reminder left; the promoted one has theirs and is told
    assert all(
        r.status == Status.failed for r in await rows(db, f"taskrem:{task_id}:{RESIDENTS[0]}:")
    )
    assert len(await rows(db, f"taskrem:{task_id}:{RESIDENTS[2]}:")) == 2
    told = [r for r in await rows(db, f"task:{task_id}:n") if r.person_id == RESIDENTS[2]]
    assert [r.template for r in told] == ["tasks/promoted"]
    # the waitlisted may leave any time before the start; the one in, not after the cut-off
    late = SAT - timedelta(minutes=90)
    with pytest.raises(Conflict, match="task_withdraw_closed"):
        async with db.transaction() as s:
            await tasks.withdraw(s, task_id=task_id, person_id=RESIDENTS[1], now=late)
    async with db.transaction() as s:
        await tasks.withdraw(s, task_id=task_id, person_id=RESIDENTS[3], now=late)
        with pytest.raises(Conflict, match="task_not_signed_up"):
            await tasks.withdraw(s, task_id=task_id, person_id=RESIDENTS[3], now=late)
    # signing up again after leaving takes a new place at the end
    again = await sign(db, task_id, RESIDENTS[0])
    assert again.outcome == tasks.Outcome.waitlisted and again.signup.seq == 5


async def test_proxy_sign_up_recorded_and_the_resident_withdraws_themself(
    db: Database, world: World
) -> None:
    task_id = await new_task(db, world)
    with pytest.raises(NotAllowed):  # a neighbour is not a lead
        await sign(db, task_id, RESIDENTS[5], by=RESIDENTS[6])
    with pytest.raises(NotAllowed, match="task_proxy_not_resident"):
        await sign(db, task_id, OUTSIDER, by=LEAD)
    result = await sign(db, task_id, RESIDENTS[5], by=LEAD)
    assert result.outcome == tasks.Outcome.signed_up and result.signup.by == LEAD
    async with db.transaction() as s:
        await tasks.withdraw(s, task_id=task_id, person_id=RESIDENTS[5], now=NOW)
    assert (await statuses(db, task_id))[RESIDENTS[5]] == "withdrawn"


async def test_overlapping_tasks_are_allowed_with_a_warning(db: Database, world: World) -> None:
    first = await new_task(db, world, title="一")
    second = await new_task(db, world, title="二", start=SAT + timedelta(hours=1))
    third = await new_task(db, world, title="三", start=SAT + timedelta(hours=4))
    assert (await sign(db, first, RESIDENTS[0])).overlaps == []
    warned = await sign(db, second, RESIDENTS[0])
    assert warned.outcome == tasks.Outcome.signed_up and [t.id for t in warned.overlaps] == [first]
    assert (await sign(db, third, RESIDENTS[0])).overlaps == []


# --- editing and cancelling -------------------------------------------------------------------


async def test_fewer_slots_move_the_latest_to_the_front_of_the_waitlist(
    db: Database, world: World
) -> None:
    task_id = await new_task(db, world, slots=4)
    for p in RESIDENTS[:6]:
        await sign(db, task_id, p)
    async with db.transaction() as s:
        lead = await people.authority(s, person_id=LEAD, superadmin=False)
        edited = await tasks.edit_task(s, auth=lead, task_id=task_id, now=NOW, slots=2)
    assert edited.moved_to_waitlist == [RESIDENTS[2], RESIDENTS[3]]
    async with db.transaction(write=False) as s:
        waiting = await tasks.signups(s, task_id, (SignupStatus.waitlisted,))
    assert [x.person_id for x in waiting] == RESIDENTS[2:6]
    moved = [
        r for r in await rows(db, f"task:{task_id}:n") if r.template == "tasks/moved_to_waitlist"
    ]
    assert {r.person_id: r.context["position"] for r in moved} == {RESIDENTS[2]: 1, RESIDENTS[3]: 2}
    assert all(
        r.status == Status.failed for r in await rows(db, f"taskrem:{task_id}:{RESIDENTS[3]}:")
    )
    # more slots again: the waitlist moves up in order
    async with db.transaction() as s:
        lead = await people.authority(s, person_id=LEAD, superadmin=False)
        edited = await tasks.edit_task(s, auth=lead, task_id=task_id, now=NOW, slots="unlimited")
    assert edited.promoted == RESIDENTS[2:6]


async def test_a_new_time_re_times_reminders_and_tells_volunteers(
    db: Database, world: World
) -> None:
    task_id = await new_task(db, world)
    await sign(db, task_id, RESIDENTS[0])
    later = SAT + timedelta(days=1)
    async with db.transaction() as s:
        lead = await people.authority(s, person_id=LEAD, superadmin=False)
        edited = await tasks.edit_task(
            s, auth=lead, task_id=task_id, now=NOW, starts_at=later, place="5号楼门口"
        )
        assert edited.changed == ["place", "time"] and edited.task.ends_at - later == timedelta(
            hours=2.5
        )
        with pytest.raises(InvalidInput, match="task_starts_in_past"):
            await tasks.edit_task(s, auth=lead, task_id=task_id, now=NOW, starts_at=NOW)
    reminders = await rows(db, f"taskrem:{task_id}:")
    pending = {r.due_at for r in reminders if r.status == Status.pending}
    assert pending == {later - timedelta(hours=24), later - timedelta(hours=1)}
    assert sum(r.status == Status.failed for r in reminders) == 2
    (changed,) = [r for r in await rows(db, f"task:{task_id}:n") if r.template == "tasks/changed"]
    assert changed.person_id == RESIDENTS[0] and changed.context["changes"] == ["place", "time"]
    assert changed.context["place"] == "5号楼门口"


async def test_cancel_withdraws_reminders_and_tells_everyone_once(
    db: Database, world: World
) -> None:
    task_id = await new_task(db, world, slots=1)
    await sign(db, task_id, RESIDENTS[0])
    await sign(db, task_id, RESIDENTS[1])
    async with db.transaction() as s:
        with pytest.raises(NotAllowed):
            await tasks.cancel_task(
                s,
                auth=await people.authority(s, person_id=OUTSIDER, superadmin=False),
                task_id=task_id,
                now=NOW,
            )
        lead = await people.authority(s, person_id=LEAD, superadmin=False)
        await tasks.cancel_task(s, auth=lead, task_id=task_id, now=NOW)
        with pytest.raises(Conflict, match="task_cancelled"):
            await tasks.cancel_task(s, auth=lead, task_id=task_id, now=NOW)
    assert {r.status for r in await rows(db, f"taskrem:{task_id}:")} == {Status.failed}
    told = await rows(db, f"task:{task_id}:cancelled:")
    assert sorted(r.person_id or 0 for r in told) == RESIDENTS[:2]
    with pytest.raises(Conflict, match="task_cancelled"):
        await sign(db, task_id, RESIDENTS[2])


# --- check-in, attendance, claims -------------------------------------------------------------


async def _code(db: Database, task_id: int) -> str:
    async with db.transaction(write=False) as s:
        return (await tasks.get_task(s, task_id)).code


async def _check_in(
    db: Database, person: int, code: str, now: datetime, task_id: int | None = None
) -> tasks.CheckedIn:
    async with db.transaction() as s:
        return await tasks.check_in(s, person_id=person, code=code, now=now, task_id=task_id)


async def test_check_in_codes(db: Database, world: World) -> None:
    task_id = await new_task(db, world)
    other = await new_task(db, world, title="别的", start=SAT + timedelta(days=1))
    await sign(db, task_id, RESIDENTS[0])
    await sign(db, other, RESIDENTS[1])
    code, other_code = await _code(db, task_id), await _code(db, other)
    assert code != other_code
    during = SAT + timedelta(minutes=30)
    wrong = "000000" if code != "000000" and other_code != "000000" else "111111"
    for bad in (wrong, "12ab56", "1234567"):
        with pytest.raises(InvalidInput, match="task_code_wrong"):
            await _check_in(db, RESIDENTS[0], bad, during)
    with pytest.raises(Conflict, match="task_code_other_task"):
        await _check_in(db, RESIDENTS[0], other_code, during)
    with pytest.raises(InvalidInput, match="task_code_wrong"):  # a QR of this task, other code
        await _check_in(db, RESIDENTS[0], other_code, during, task_id=task_id)
    with pytest.raises(Conflict, match="task_code_early"):
        await _check_in(db, RESIDENTS[0], code, SAT - timedelta(hours=2))
    with pytest.raises(Conflict, match="task_code_expired"):
        await _check_in(db, RESIDENTS[0], code, SAT + timedelta(hours=3))
    assert not (await _check_in(db, RESIDENTS[0], f"{code[:3]} {code[3:]}", during)).already
    assert (await _check_in(db, RESIDENTS[0], code, during, task_id=task_id)).already


async def _confirm(db: Database, task_id: int, lead: int, now: datetime) -> tasks.Confirmed:
    async with db.transaction() as s:
        auth = await people.authority(s, person_id=lead, superadmin=False)
        return await tasks.confirm_attendance(s, auth=auth, task_id=task_id, now=now)


async def test_attendance_credits_once_even_when_two_leads_confirm_at_once(
    db: Database, world: World
) -> None:
    task_id = await new_task(db, world, slots=3, points_=15)
    for p in RESIDENTS[:4]:
        await sign(db, task_id, p)
    code = await _code(db, task_id)
    during, after = SAT + timedelta(minutes=10), SAT + timedelta(hours=3)
    await _check_in(db, RESIDENTS[0], code, during)
    await _check_in(db, RESIDENTS[3], code, during)  # waitlisted, came anyway
    async with db.transaction() as s:
        lead = await people.authority(s, person_id=LEAD, superadmin=False)
        _, lines = await tasks.sheet(s, auth=lead, task_id=task_id, now=after)
        assert [(x.person.id, x.present) for x in lines] == [
            (RESIDENTS[0], True),
            (RESIDENTS[1], False),
            (RESIDENTS[2], False),
            (RESIDENTS[3], True),
        ]
        await tasks.mark(
            s, auth=lead, task_id=task_id, person_id=RESIDENTS[1], present=True, now=after
        )
    with pytest.raises(Conflict, match="task_not_ended"):
        await _confirm(db, task_id, LEAD, during)
    outcomes = await asyncio.gather(
        _confirm(db, task_id, LEAD, after),
        _confirm(db, task_id, CO_LEAD, after),
        return_exceptions=True,
    )
    done = [o for o in outcomes if isinstance(o, tasks.Confirmed)]
    refused = [o for o in outcomes if isinstance(o, DomainError)]
    assert len(done) == 1 and [e.key for e in refused] == ["task_attendance_done"]
    assert sorted(done[0].attended) == sorted([RESIDENTS[0], RESIDENTS[1], RESIDENTS[3]])
    assert done[0].no_show == [RESIDENTS[2]]
    with pytest.raises(Conflict, match="task_attendance_done"):
        await _confirm(db, task_id, LEAD, after)
    async with db.transaction(write=False) as s:
        entries = (
            await s.exec(
                select(LedgerEntry).where(col(LedgerEntry.key).startswith(f"task:{task_id}:"))
            )
        ).all()
        assert sorted((e.key, e.amount) for e in entries if e.leg == 0) == sorted(
            (tasks.credit_key(task_id, p), 15) for p in (RESIDENTS[0], RESIDENTS[1], RESIDENTS[3])
        )
        assert await ledger.balance(s, community_id=world.community, person_id=RESIDENTS[0]) == 15
    assert (await statuses(db, task_id))[RESIDENTS[2]] == "no_show"
    thanks = await rows(db, f"task:{task_id}:thanks:")
    assert {r.person_id: r.context["balance"] for r in thanks} == {
        RESIDENTS[0]: 15,
        RESIDENTS[1]: 15,
        RESIDENTS[3]: 15,
    }


async def test_a_claim_is_approved_once_and_closes_after_the_next_day(
    db: Database, world: World
) -> None:
    task_id = await new_task(db, world, points_=10)
    for p in RESIDENTS[:3]:
        await sign(db, task_id, p)
    after = SAT + timedelta(hours=3)
    await _confirm(db, task_id, LEAD, after)  # nobody checked in: all no-shows
    async with db.transaction() as s:
        with pytest.raises(Conflict, match="task_not_signed_up"):
            await tasks.claim(s, task_id=task_id, person_id=RESIDENTS[5], now=after)
        await tasks.claim(s, task_id=task_id, person_id=RESIDENTS[0], now=after)
        await tasks.claim(s, task_id=task_id, person_id=RESIDENTS[0], now=after)  # repeat: one
        await tasks.claim(s, task_id=task_id, person_id=RESIDENTS[1], now=after)
        deadline = tasks.claim_deadline(await tasks.get_task(s, task_id), "Asia/Shanghai")
        assert deadline == at(30, 0)  # Sunday ends at midnight
        with pytest.raises(Conflict, match="task_claim_closed"):
            await tasks.claim(s, task_id=task_id, person_id=RESIDENTS[2], now=deadline)
    assert len(await rows(db, f"task:{task_id}:claim:")) == 2
    async with db.transaction() as s:
        lead = await people.authority(s, person_id=LEAD, superadmin=False)
        signup, changed = await tasks.decide_claim(
            s, auth=lead, task_id=task_id, person_id=RESIDENTS[0], approve=True, now=after
        )
        assert changed and signup.status == SignupStatus.attended
        _, changed = await tasks.decide_claim(
            s, auth=lead, task_id=task_id, person_id=RESIDENTS[0], approve=True, now=after
        )
        assert not changed
        await tasks.decide_claim(
            s, auth=lead, task_id=task_id, person_id=RESIDENTS[1], approve=False, now=after
        )
        assert await ledger.balance(s, community_id=world.community, person_id=RESIDENTS[0]) == 10
        assert await ledger.balance(s, community_id=world.community, person_id=RESIDENTS[1]) == 0
        with pytest.raises(Conflict, match="task_already_credited"):
            await tasks.claim(s, task_id=task_id, person_id=RESIDENTS[0], now=after)
        with pytest.raises(Conflict, match="task_claim_rejected"):
            await tasks.claim(s, task_id=task_id, person_id=RESIDENTS[1], now=after)
    assert (await statuses(db, task_id))[RESIDENTS[1]] == "no_show"


# --- recurrence -------------------------------------------------------------------------------


def test_monthly_days_across_february_and_a_thirty_day_month() -> None:
    days = tasks.occurrence_dates("monthly", [9, 19, 29], date(2027, 1, 20), date(2027, 4, 30))
    assert days == [
        date(2027, 1, 29),
        date(2027, 2, 9),
        date(2027, 2, 19),
        date(2027, 2, 28),
        date(2027, 3, 9),
        date(2027, 3, 19),
        date(2027, 3, 29),
        date(2027, 4, 9),
        date(2027, 4, 19),
        date(2027, 4, 29),
    ]
    leap = tasks.occurrence_dates("monthly", [29, 30, 31], date(2028, 2, 1), date(2028, 2, 29))
    assert leap == [date(2028, 2, 29)]
    april = tasks.occurrence_dates("monthly", [31], date(2027, 4, 1), date(2027, 5, 31))
    assert april == [date(2027, 4, 30), date(2027, 5, 31)]
    weekly = tasks.occurrence_dates("weekly", [5], date(2026, 11, 20), date(2026, 12, 10))
    assert weekly == [date(2026, 11, 21), date(2026, 11, 28), date(2026, 12, 5)]
    assert tasks.short_months([9, 19, 29]) and not tasks.short_months([9, 19])
    with pytest.raises(InvalidInput, match="task_no_days"):
        tasks.check_days("monthly", [])
    with pytest.raises(InvalidInput, match="task_no_days"):
        tasks.check_days("weekly", [7])


async def test_a_series_keeps_four_weeks_ahead(db: Database, world: World) -> None:
    start = datetime(2027, 1, 29, 8, 30, tzinfo=ZONE)
    fields = Fields(title="服务日", starts_at=start, ends_at=start + timedelta(hours=3), slots=20)
    now = datetime(2027, 1, 25, 2, 0, tzinfo=UTC)
    async with db.transaction() as s:
        lead = await people.authority(s, person_id=LEAD, superadmin=False)
        series, created = await tasks.create_series(
            s,
            auth=lead,
            unit_id=world.building,
            fields=fields,
            repeat="monthly",
            days=[29, 19, 9],
            now=now,
        )
    assert [t.occurs_on for t in created] == [
        date(2027, 1, 29),
        date(2027, 2, 9),
        date(2027, 2, 19),
    ]
    assert all(t.starts_at.astimezone(ZONE).hour == 8 and t.slots == 20 for t in created)
    async with db.transaction() as s:
        assert await tasks.series_rhythm(s, now) == []  # nothing new the same day
        later = await tasks.series_rhythm(s, now + timedelta(days=7))
        assert [t.occurs_on for t in later] == [date(2027, 2, 28)]
        assert await tasks.series_rhythm(s, now + timedelta(days=7)) == []
        lead = await people.authority(s, person_id=LEAD, superadmin=False)
        assert series.id is not None
        await tasks.stop_series(s, auth=lead, series_id=series.id, now=now)
        assert await tasks.series_rhythm(s, now + timedelta(days=30)) == []


# --- the leads' lines -------------------------------------------------------------------------


async def test_evening_line_and_sheet_prompt_once(db: Database, world: World) -> None:
    task_id = await new_task(db, world, slots=1)
    await sign(db, task_id, RESIDENTS[0])
    await sign(db, task_id, RESIDENTS[1])
    eve = at(27, 19, 5).astimezone(UTC)
    async with db.transaction() as s:
        assert await tasks.evening_rhythm(s, at(27, 18).astimezone(UTC)) == 0
        assert await tasks.evening_rhythm(s, eve) == 1
        assert await tasks.evening_rhythm(s, eve + timedelta(minutes=1)) == 0
    (line,) = await rows(db, f"task:{task_id}:eve:")
    assert line.person_id == LEAD
    assert [p["id"] for p in line.context["coming"]] == [RESIDENTS[0]]
    assert [p["id"] for p in line.context["waiting"]] == [RESIDENTS[1]]
    async with db.transaction() as s:
        end = SAT + timedelta(hours=2, minutes=31)
        assert await tasks.evening_rhythm(s, end) == 1
        assert await tasks.evening_rhythm(s, end) == 0
    assert [r.template for r in await rows(db, f"task:{task_id}:sheet:")] == ["tasks/sheet_ready"]


async def test_month_line(db: Database, world: World) -> None:
    one = await new_task(db, world, hours=2)
    two = await new_task(db, world, hours=3, start=SAT + timedelta(days=1))
    await new_task(db, world, start=at(5, 9, month=12))  # next month: not counted
    for p in RESIDENTS[:3]:
        await sign(db, one, p)
    for p in RESIDENTS[:2]:
        await sign(db, two, p)
    async with db.transaction() as s:
        lead = await people.authority(s, person_id=LEAD, superadmin=False)
        await tasks.mark(s, auth=lead, task_id=one, person_id=RESIDENTS[0], present=True, now=NOW)
        await tasks.mark(s, auth=lead, task_id=one, person_id=RESIDENTS[1], present=True, now=NOW)
        await tasks.mark(s, auth=lead, task_id=two, person_id=RESIDENTS[0], present=True, now=NOW)
    await _confirm(db, one, LEAD, SAT + timedelta(hours=5))
    await _confirm(db, two, LEAD, SAT + timedelta(days=2))
    async with db.transaction(write=False) as s:
        grid = await people.get_unit(s, world.grid)
        start, end = standings.month_bounds(NOW, "Asia/Shanghai")
        line = await tasks.month_line(s, unit=grid, start=start, end=end)
    assert line == tasks.MonthLine(held=2, hours=7.0, volunteers=2, no_show_rate=0.4)


# --- the card and the calendar ----------------------------------------------------------------


async def test_card_names_only_those_who_may_be_named(db: Database, world: World) -> None:
    task_id = await new_task(db, world, slots=2)
    for p in RESIDENTS[:3]:
        await sign(db, task_id, p)
    async with db.transaction() as s:
        await tasks.set_hidden(s, task_id=task_id, person_id=RESIDENTS[1], hidden=True, now=NOW)
        found = await tasks.card(s, task_id, now=NOW)
    assert (found.filled, found.waitlist, found.names, found.hidden) == (2, 1, ["P100"], 1)
    async with db.transaction() as s:
        admin = people.Authority(person_id=0, superadmin=True)
        await tasks.set_names_hidden(
            s, auth=admin, community_id=world.community, hidden=True, now=NOW
        )
        found = await tasks.card(s, task_id, now=NOW)
    assert (found.names, found.hidden) == ([], 2)


async def test_ics_is_valid_icalendar_text(db: Database, world: World) -> None:
    task_id = await new_task(db, world, title="清扫, 楼道; 一起来")
    async with db.transaction(write=False) as s:
        task = await tasks.get_task(s, task_id)
    text = tasks.ics(task, now=NOW)
    lines = text.split("\r\n")
    assert lines[0] == "BEGIN:VCALENDAR" and lines[-2] == "END:VCALENDAR" and lines[-1] == ""
    assert "DTSTART:20261128T010000Z" in lines and "DTEND:20261128T033000Z" in lines
    assert "SUMMARY:清扫\\, 楼道\\; 一起来" in lines and "LOCATION:3号楼门口" in lines
    assert all(len(line.encode()) <= 75 for line in lines)


def test_every_task_error_has_a_message_in_both_languages() -> None:
    import re
    from pathlib import Path

    source = Path(tasks.__file__).read_text()
    keys = set(re.findall(r'"(task_[a-z_]+)"', source)) - {
        "task_id",
        "task_policy",
        "task_series",
        "task_signup",
    }
    templates = Path(__file__).parents[2] / "bot" / "templates"
    missing = [
        f"{lang}/{key}"
        for lang in ("zh", "en")
        for key in sorted(keys)
        if not (templates / lang / "errors" / f"{key}.html.j2").exists()
    ]
    assert missing == []


async def test_the_leads_monthly_statement_has_the_tasks_line(db: Database, world: World) -> None:
    task_id = await new_task(db, world, hours=2)
    for p in RESIDENTS[:2]:
        await sign(db, task_id, p)
    async with db.transaction() as s:
        lead = await people.authority(s, person_id=LEAD, superadmin=False)
        await tasks.mark(s, auth=lead, task_id=task_id, person_id=RESIDENTS[0], present=True,
                         now=NOW)  # fmt: skip
    await _confirm(db, task_id, LEAD, SAT + timedelta(hours=3))
    async with db.transaction() as s:
        assert await standings.monthly_statements(s, at(1, 10, month=12).astimezone(UTC)) == 2
        found = await s.exec(select(Delivery).where(col(Delivery.key).startswith("statement:")))
        statement = next(r for r in found.all() if r.person_id == LEAD)
    line = statement.context["tasks"]
    assert line == {"held": 1, "hours": 2.0, "volunteers": 1, "no_show": 50}
    renderer = Renderer()
    assert "缺席率 50%" in renderer.render("zh", "points/statement", **statement.context)
    assert "no-show rate 50%" in renderer.render("en", "points/statement", **statement.context)


@pytest.mark.parametrize("lang", ["zh", "en"])
async def test_every_notice_tasks_write_renders(db: Database, world: World, lang: str) -> None:
    one = await new_task(db, world, slots=2, title="清扫<楼道>")
    for p in RESIDENTS[:3]:
        await sign(db, one, p)
    async with db.transaction() as s:
        lead = await people.authority(s, person_id=LEAD, superadmin=False)
        await tasks.edit_task(s, auth=lead, task_id=one, now=NOW, slots=1, place="5号楼")
        await tasks.withdraw(s, task_id=one, person_id=RESIDENTS[0], now=NOW)
        await tasks.evening_rhythm(s, at(27, 20).astimezone(UTC))
    after = SAT + timedelta(hours=3)
    async with db.transaction() as s:
        lead = await people.authority(s, person_id=LEAD, superadmin=False)
        await tasks.mark(s, auth=lead, task_id=one, person_id=RESIDENTS[1], present=True, now=NOW)
        assert await tasks.evening_rhythm(s, after) == 1
    await _confirm(db, one, LEAD, after)
    async with db.transaction() as s:
        lead = await people.authority(s, person_id=LEAD, superadmin=False)
        await tasks.claim(s, task_id=one, person_id=RESIDENTS[2], now=after)
        await tasks.decide_claim(s, auth=lead, task_id=one, person_id=RESIDENTS[2], approve=False,
                                 now=after)  # fmt: skip
    two = await new_task(db, world, title="二")
    await sign(db, two, RESIDENTS[0])
    async with db.transaction() as s:
        lead = await people.authority(s, person_id=LEAD, superadmin=False)
        await tasks.cancel_task(s, auth=lead, task_id=two, now=NOW)
        await tasks.evening_rhythm(s, after + timedelta(minutes=1))
    found = await rows(db, "task")
    templates = {r.template for r in found}
    assert templates == {
        "tasks/reminder", "tasks/changed", "tasks/moved_to_waitlist", "tasks/promoted",
        "tasks/evening", "tasks/thanks", "tasks/claim_to_lead", "tasks/claim_rejected",
        "tasks/cancelled", "tasks/sheet_ready",
    }  # fmt: skip
    renderer = Renderer()
    for row in found:
        text = renderer.render(lang, row.template, **row.context)
        assert row.context["title"].replace("<", "&lt;").replace(">", "&gt;") in text
        assert "<楼道>" not in text


# --- a lead's draft (/newtask) ----------------------------------------------------------------


def draft(w: World, **changes: object) -> dict[str, object]:
    """A finished /newtask flow's data, as the flow stores it (plain JSON)."""
    data: dict[str, object] = {
        "title": "清扫楼道",
        "description": "",
        "when": {"start": SAT.astimezone(UTC).isoformat(), "end": None},
        "place": "3号楼门口",
        "slots": 5,
        "points": None,
        "unit_id": w.building,
        "skill": "cleaning",
        "repeat": None,
    }
    data.update(changes)
    return data


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"title": None}, "task_draft_incomplete"),
        ({"when": {"start": None}}, "task_draft_incomplete"),
        ({"when": {"start": "2026-11-28T09:00"}}, "task_draft_incomplete"),  # no zone
        ({"title": "长" * 101}, "task_title_long"),
        ({"slots": 0}, "task_slots_min"),
        ({"slots": 1001}, "task_slots_max"),
        ({"slots": True}, "task_slots_number"),
        ({"slots": "5"}, "task_slots_number"),
        ({"points": -1}, "task_points_range"),
        ({"skill": "juggling"}, "task_bad_skill"),
        ({"repeat": {"yearly": [1]}}, "task_bad_repeat"),
        ({"repeat": {"monthly": []}}, "task_no_days"),
        ({"repeat": {"weekly": [7]}}, "task_no_days"),
        ({"latitude": 91.0, "longitude": 0.0}, "task_bad_location"),
    ],
)
def test_a_draft_is_checked_again_when_read_back(changes: dict[str, object], error: str) -> None:
    w = World(1, 2, 3, 4)
    with pytest.raises(InvalidInput, match=error):
        tasks.draft_of(draft(w, **changes))


def test_a_draft_without_an_end_lasts_two_hours_and_unlimited_slots_are_none() -> None:
    found = tasks.draft_of(draft(World(1, 2, 3, 4), slots="unlimited"))
    assert found.fields.ends_at - found.fields.starts_at == timedelta(hours=2)
    assert found.fields.slots is None and found.repeat is None


async def test_preview_shows_the_card_writes_nothing_and_names_short_months(
    db: Database, world: World
) -> None:
    start = datetime(2027, 1, 29, 8, 30, tzinfo=ZONE)
    data = draft(
        world,
        when={"start": start.isoformat(), "end": (start + timedelta(hours=3)).isoformat()},
        repeat={"monthly": [9, 19, 29]},
    )
    now = datetime(2027, 1, 20, 2, 0, tzinfo=UTC)
    async with db.transaction() as s:
        lead = await people.authority(s, person_id=LEAD, superadmin=False)
        seen = await tasks.preview(s, auth=lead, data=data, now=now)
        assert (await s.exec(select(tasks.Task))).all() == []
    assert seen.task.title == "清扫楼道" and seen.task.slots == 5 and seen.unit.name == "3号楼"
    assert seen.dates[:4] == [date(2027, 1, 29), date(2027, 2, 9), date(2027, 2, 19),
                              date(2027, 2, 28)]  # fmt: skip
    assert seen.short == [29]
    async with db.transaction() as s:
        outsider = await people.authority(s, person_id=OUTSIDER, superadmin=False)
        with pytest.raises(NotAllowed):
            await tasks.preview(s, auth=outsider, data=data, now=now)


async def test_posting_a_draft_twice_posts_one_task(db: Database, world: World) -> None:
    from models import flows

    async with db.transaction() as s:
        flow = await flows.start(s, kind="task", owner_id=LEAD, now=NOW, data=draft(world))
        fid = flow.id or 0

    async def post() -> tuple[int | None, bool]:
        async with db.transaction() as s:
            lead = await people.authority(s, person_id=LEAD, superadmin=False)

            async def make(f: flows.Flow) -> int:
                task = await tasks.post_draft(s, auth=lead, data=f.data, now=NOW)
                return task.id or 0

            done, created = await flows.confirm(s, flow_id=fid, owner_id=LEAD, now=NOW, make=make)
            return done.result_id, created

    first, second = await asyncio.gather(post(), post())
    assert first[0] == second[0] and sorted([first[1], second[1]]) == [False, True]
    async with db.transaction(write=False) as s:
        (task,) = (await s.exec(select(tasks.Task))).all()
    assert task.points == 10 and task.skill == "cleaning" and task.slots == 5  # the "task" rule


async def test_a_weekly_draft_starts_on_its_first_matching_day_never_before(
    db: Database, world: World
) -> None:
    # Chosen: Saturday 28 November, repeating on Mondays and Wednesdays.
    data = draft(world, repeat={"weekly": [0, 2]})
    async with db.transaction() as s:
        lead = await people.authority(s, person_id=LEAD, superadmin=False)
        first = await tasks.post_draft(s, auth=lead, data=data, now=NOW)
        assert first.occurs_on == date(2026, 11, 30)
        assert first.starts_at.astimezone(ZONE).hour == 9
        made = await s.exec(select(tasks.Task).order_by(col(tasks.Task.starts_at)))
        assert [t.occurs_on for t in made.all()] == [
            date(2026, 11, 30), date(2026, 12, 2), date(2026, 12, 7), date(2026, 12, 9),
            date(2026, 12, 14), date(2026, 12, 16), date(2026, 12, 21), date(2026, 12, 23),
        ]  # fmt: skip
        # The rhythm the same day adds nothing before the chosen start (the 23rd, 25th).
        assert await tasks.series_rhythm(s, NOW) == []


async def test_the_card_goes_where_the_lead_asked_only_in_a_chat_of_the_community(
    db: Database, world: World
) -> None:
    async with db.transaction() as s:
        await people.link_chat(s, chat_id=-500, thread_id=0, unit_id=world.other_building,
                               title="5号楼", by=LEAD, now=NOW)  # fmt: skip
        lead = await people.authority(s, person_id=LEAD, superadmin=False)
        linked = await tasks.post_draft(s, auth=lead, data=draft(world), now=NOW, here=(-500, 0))
        stranger = await tasks.post_draft(
            s, auth=lead, data=draft(world, title="另一个"), now=NOW, here=(-777, 0)
        )
        rows = (await s.exec(select(Delivery.chat_id, Delivery.key))).all()
    cards = {(chat, key.split(":")[2]) for chat, key in rows if key.startswith("card:task:")}
    assert (-500, str(linked.id)) in cards
    assert all(chat != -777 for chat, _ in cards) and stranger.id is not None
