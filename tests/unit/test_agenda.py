"""Proposals, support and the monthly talk against a real database."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlmodel import col, select

from bot.db import Database
from models import agenda, people, polls
from models.errors import Conflict, InvalidInput, NotAllowed
from models.outbox import Delivery
from tests.conftest import NOW
from tests.unit.test_polls import BOSS, World, make_world, person


async def auth_of(db: Database, pid: int) -> people.Authority:
    async with db.transaction(write=False) as s:
        return await people.authority(s, person_id=pid, superadmin=False)


async def propose(db: Database, w: World, pid: int, title: str) -> int:
    async with db.transaction() as s:
        p = await agenda.propose(
            s,
            auth=await people.authority(s, person_id=pid, superadmin=False),
            unit_id=w.building,
            title=title,
            body="  几句话\n说明  ",
            now=NOW,
        )
        assert p.id is not None
        return p.id


async def support(db: Database, pid: int, proposal: int) -> bool:
    async with db.transaction() as s:
        auth = await people.authority(s, person_id=pid, superadmin=False)
        _, added = await agenda.support(s, auth=auth, proposal_id=proposal, now=NOW)
        return added


async def test_propose_and_support_once(db: Database) -> None:
    w = await make_world(db, [100] * 4)
    pid = await propose(db, w, person(0), "  车棚   漏雨 ")
    assert await support(db, person(1), pid)
    assert not await support(db, person(1), pid)  # a repeat changes nothing
    await asyncio.gather(*(support(db, person(i), pid) for i in (2, 3, 2, 3)))
    async with db.transaction(write=False) as s:
        found = await agenda.get_proposal(s, pid)
    assert (found.title, found.body, found.support) == ("车棚 漏雨", "几句话\n说明", 3)


async def test_proposal_refusals(db: Database) -> None:
    w = await make_world(db, [100])
    with pytest.raises(NotAllowed):
        await propose(db, w, 900, "5号楼的人")  # lives in 5号楼, not 3号楼
    with pytest.raises(InvalidInput):
        await propose(db, w, person(0), "x")
    with pytest.raises(InvalidInput):
        async with db.transaction() as s:
            await agenda.propose(
                s, auth=BOSS, unit_id=w.building, title="太长", body="字" * 601, now=NOW
            )
    pid = await propose(db, w, person(0), "修车棚")
    with pytest.raises(NotAllowed):
        await support(db, 900, pid)
    async with db.transaction() as s:
        await agenda.withdraw(
            s,
            auth=await people.authority(s, person_id=person(0), superadmin=False),
            proposal_id=pid,
            now=NOW,
        )
    with pytest.raises(Conflict):
        await support(db, person(0), pid)


async def test_agenda_most_supported_first(db: Database) -> None:
    w = await make_world(db, [100] * 4)
    a = await propose(db, w, person(0), "甲议题")
    b = await propose(db, w, person(0), "乙议题")
    c = await propose(db, w, person(0), "丙议题")
    for voter in (1, 2):
        await support(db, person(voter), b)
    await support(db, person(3), c)
    async with db.transaction(write=False) as s:
        unit = await people.get_unit(s, w.estate)
        found = await agenda.agenda(s, unit=unit)
    assert [p.id for p in found] == [b, c, a]


async def test_talk_day_ranks_the_month_once(db: Database) -> None:
    w = await make_world(db, [100] * 4)
    ids = [await propose(db, w, person(0), f"议题{i}") for i in range(4)]
    for i, pid in enumerate(ids):
        for voter in range(i):
            await support(db, person(1 + voter), pid)
    async with db.transaction() as s:
        await agenda.set_talk_day(s, auth=BOSS, unit_id=w.building, day=25, top=3, now=NOW)
    before = datetime(2026, 11, 24, 16, 0, tzinfo=UTC)  # 24 Nov, 00:00 in Shanghai
    on_day = datetime(2026, 11, 24, 16, 30, tzinfo=UTC)  # 25 Nov, 00:30 in Shanghai
    async with db.transaction() as s:
        assert await agenda.run_talk_days(s, now=before - timedelta(hours=1)) == []
        runs = await agenda.run_talk_days(s, now=on_day)
        assert await agenda.run_talk_days(s, now=on_day + timedelta(hours=3)) == []
    assert len(runs) == 1 and runs[0].poll is not None
    poll = runs[0].poll
    assert poll.method == "ranking" and poll.weights == "5-3-1"
    assert poll.closes_at == on_day + timedelta(days=7)
    async with db.transaction(write=False) as s:
        options = await polls.options_of(s, poll.id or 0)
        moved = [await agenda.get_proposal(s, i) for i in ids]
        notes = (
            await s.exec(select(Delivery).where(col(Delivery.key).startswith("card:poll:")))
        ).all()
    assert [o.proposal_id for o in options] == [ids[3], ids[2], ids[1]]
    assert [p.status for p in moved] == ["open", "polled", "polled", "polled"]
    assert len(notes) == 1 and notes[0].chat_id == w.chat


def test_short_month_talk_falls_on_the_last_day() -> None:
    feb = datetime(2027, 2, 10, tzinfo=UTC)
    assert agenda.talk_date_this_month(31, feb) == 28
    assert agenda.talk_date_this_month(9, feb) == 9


async def test_talk_day_needs_two_proposals(db: Database) -> None:
    w = await make_world(db, [100])
    await propose(db, w, person(0), "唯一议题")
    async with db.transaction() as s:
        await agenda.set_talk_day(s, auth=BOSS, unit_id=w.building, day=1, now=NOW)
        runs = await agenda.run_talk_days(s, now=NOW)
    assert len(runs) == 1 and runs[0].poll is None
    with pytest.raises(InvalidInput):
        async with db.transaction() as s:
            await agenda.set_talk_day(s, auth=BOSS, unit_id=w.building, day=32, now=NOW)


def test_every_refusal_has_a_message_in_both_languages() -> None:
    import re
    from pathlib import Path

    from bot.render import Renderer

    renderer = Renderer()
    root = Path(__file__).parents[2]
    source = "".join(
        (root / "models" / f).read_text() for f in ("polls.py", "agenda.py", "loop.py")
    )
    keys = set(re.findall(r'(?:InvalidInput|NotAllowed|NotFound|Conflict)\(\s*"(\w+)"', source))
    assert len(keys) > 30
    for key in sorted(keys):
        for lang in ("zh", "en"):
            text = renderer.render(lang, f"errors/{key}", limit=1, options=2, places=3, unit="x")
            assert text and "{{" not in text


async def test_weekly_digest_section(db: Database) -> None:
    from bot.render import Renderer
    from models import digest
    from models.people import Community

    w = await make_world(db, [100] * 3)
    rail = await propose(db, w, person(0), "楼道加装扶手")
    await propose(db, w, person(1), "修车棚")
    await support(db, person(2), rail)
    async with db.transaction() as s:
        done = await s.get(agenda.Proposal, rail)
        assert done is not None
        done.status, done.outcome, done.updated_at = agenda.ProposalStatus.done, "task:1", NOW
        poll = await polls.create_poll(
            s,
            auth=BOSS,
            spec=polls.PollSpec(w.building, "换物业？", [], NOW, NOW + timedelta(days=2),
                                method="yesno"),
            now=NOW,
        )  # fmt: skip
        await polls.cast(
            s, poll_id=poll.id or 0, person_id=person(0), choices=[1],
            now=NOW + timedelta(minutes=5), ballot_key=b"k",
        )  # fmt: skip
        await polls.close_early(
            s, auth=BOSS, poll_id=poll.id or 0, reason="已有结果", now=NOW + timedelta(hours=1)
        )
    async with db.transaction(write=False) as s:
        community = await s.get(Community, w.community)
        assert community is not None
        week = digest.week_of(NOW.date(), community.timezone)
        units = [await people.get_unit(s, w.building)]
        built = await digest.build(s, community, week, units)
    (section,) = [x for x in built[w.building] if x["name"] == "agenda"]
    data = section["data"]
    assert data["new"] == 2 and data["done"] == ["楼道加装扶手"] and data["open"] == 1
    assert data["closed"] == [
        {"question": "换物业？", "method": "yesno", "leader": "yes", "passed": None}
    ]
    zh = Renderer().render("zh", "agenda/digest", data=data)
    en = Renderer().render("en", "agenda/digest", data=data)
    assert "✅ 已办结：楼道加装扶手" in zh and "领先：赞成" in zh
    assert "Done: 楼道加装扶手" in en and "leading: Yes" in en
