"""The loop after a poll (民议、民决、民解、民评): a winning topic becomes a tracked report in one
tap or is carried out by a volunteer task; when the report is resolved or the task held, the
topic is done, its card says where it went, and the weekly digest counts it."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlmodel import select

from bot.db import Database
from models import agenda, digest, loop, people, polls, reports, tasks
from models.agenda import Proposal, ProposalStatus
from models.errors import Conflict, InvalidInput, NotAllowed
from models.people import Community
from tests.conftest import NOW
from tests.world import BOSS, GROUP_B3, LEAD, OTHER_LEAD, world

LATER = NOW + timedelta(days=3)


async def _auth(db: Database, pid: int) -> people.Authority:
    async with db.transaction(write=False) as s:
        return await people.authority(s, person_id=pid, superadmin=False)


async def _ballot(db: Database, unit_id: int, titles: list[str]) -> tuple[int, list[int]]:
    """Proposals in the unit, put on a 5-3-1 poll; returns (poll, proposals)."""
    async with db.transaction() as s:
        ids = []
        for title in titles:
            p = await agenda.propose(s, auth=BOSS, unit_id=unit_id, title=title, body="", now=NOW)
            assert p.id is not None
            ids.append(p.id)
        poll = await polls.create_poll(
            s,
            auth=BOSS,
            spec=polls.PollSpec(unit_id, "本月议题", titles, NOW, LATER,
                                method="ranking", proposal_ids=list(ids)),
            now=NOW,
        )  # fmt: skip
        assert len(await agenda.put_on_poll(s, poll, now=NOW)) == len(titles)
        assert poll.id is not None
        return poll.id, ids


async def _proposal(db: Database, pid: int) -> Proposal:
    async with db.transaction(write=False) as s:
        found = await s.get(Proposal, pid)
    assert found is not None
    return found


async def test_a_topic_becomes_a_report_once_and_is_done_when_it_is_resolved(
    db: Database,
) -> None:
    w = await world(db)
    poll_id, (rail, bench) = await _ballot(db, w.b3, ["楼道扶手", "门口长椅"])
    lead = await _auth(db, LEAD)
    # Before the poll closes: refused.
    with pytest.raises(Conflict, match="proposal_poll_open"):
        async with db.transaction() as s:
            await loop.to_report(s, auth=lead, proposal_id=rail, now=NOW)
    async with db.transaction() as s:
        await polls.close(s, poll_id=poll_id, now=LATER)
    # Another grid's lead: refused, nothing filed.
    with pytest.raises(NotAllowed):
        async with db.transaction() as s:
            await loop.to_report(s, auth=await _auth(db, OTHER_LEAD), proposal_id=rail, now=LATER)
    for _ in range(2):  # a repeated tap finds the same report
        async with db.transaction() as s:
            proposal, report = await loop.to_report(s, auth=lead, proposal_id=rail, now=LATER)
    async with db.transaction(write=False) as s:
        filed = (await s.exec(select(reports.Report))).all()
        went = await loop.outcome_of(s, proposal)
    assert [r.id for r in filed] == [report.id] and filed[0].unit_id == w.b3
    # The 3号楼 group is linked: the report is public there, as the topic was.
    assert filed[0].text == "楼道扶手" and filed[0].chat_id == GROUP_B3
    assert proposal.outcome == f"report:{report.id}"
    assert went == loop.Outcome("report", report.label, False)
    # The same topic cannot also go to a task.
    with pytest.raises(Conflict, match="proposal_followed_up"):
        async with db.transaction() as s:
            await loop.to_task(s, auth=lead, proposal_id=rail, task_id=1, now=LATER)
    # Not done until the report is resolved.
    async with db.transaction() as s:
        assert await loop.follow_outcomes(s, LATER) == 0
        await reports.act(s, auth=lead, report_id=report.id or 0, action="resolve", now=LATER)
    async with db.transaction() as s:
        assert await loop.follow_outcomes(s, LATER) == 1
        assert await loop.follow_outcomes(s, LATER) == 0
    assert (await _proposal(db, rail)).status == ProposalStatus.done
    assert (await _proposal(db, bench)).status == ProposalStatus.polled
    with pytest.raises(Conflict, match="proposal_done"):
        async with db.transaction() as s:
            await loop.to_report(s, auth=lead, proposal_id=rail, now=LATER)
    # The weekly digest of that week says it is done.
    async with db.transaction(write=False) as s:
        community = await s.get(Community, w.community)
        assert community is not None
        week = digest.week_of(LATER.date(), community.timezone)
        built = await digest.build(s, community, week, [await people.get_unit(s, w.b3)])
    (section,) = [x for x in built[w.b3] if x["name"] == "agenda"]
    assert section["data"]["done"] == ["楼道扶手"]


async def test_a_topic_carried_out_by_a_task_is_done_once_the_task_is_held(db: Database) -> None:
    w = await world(db)
    poll_id, (rail, _bench) = await _ballot(db, w.b3, ["楼道扶手", "门口长椅"])
    lead = await _auth(db, LEAD)
    starts = LATER + timedelta(days=2)
    async with db.transaction() as s:
        await polls.close(s, poll_id=poll_id, now=LATER)
        here = await tasks.create_task(
            s, auth=lead, unit_id=w.b3, now=LATER,
            fields=tasks.Fields("安装扶手", starts, starts + timedelta(hours=2)),
        )  # fmt: skip
        there = await tasks.create_task(
            s, auth=BOSS, unit_id=w.b9, now=LATER,
            fields=tasks.Fields("9号楼清扫", starts, starts + timedelta(hours=2)),
        )  # fmt: skip
        proposal = await agenda.get_proposal(s, rail)
        offered = await loop.tasks_for(s, auth=lead, proposal=proposal, now=LATER)
    assert [t.id for t in offered] == [here.id]
    # Another unit's task (a forged button): refused.
    with pytest.raises(InvalidInput, match="stale_button"):
        async with db.transaction() as s:
            await loop.to_task(s, auth=lead, proposal_id=rail, task_id=there.id or 0, now=LATER)
    async with db.transaction() as s:
        proposal, _ = await loop.to_task(
            s, auth=lead, proposal_id=rail, task_id=here.id or 0, now=LATER
        )
        went = await loop.outcome_of(s, proposal)
    assert went == loop.Outcome("task", "安装扶手", False)
    async with db.transaction() as s:
        assert await loop.follow_outcomes(s, starts) == 0  # not over yet
    async with db.transaction() as s:
        assert await loop.follow_outcomes(s, starts + timedelta(hours=3)) == 1
    assert (await _proposal(db, rail)).status == ProposalStatus.done
