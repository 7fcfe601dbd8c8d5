"""The agenda (民事民提): proposals with support, and the monthly talk day (月月谈).

On a unit's talk day the month's most supported open proposals become a 5-3-1 ranking poll,
once per unit and month (the poll's `origin` is unique), announced in the unit's chats.
A proposal remembers the poll it went to and, later, where it went after (a task, a report).
"""

from __future__ import annotations

import calendar
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import update
from sqlmodel import Field, SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from models import digest, flows, outbox
from models.base import TelegramId, UTCDateTime, dialect_insert, must_get
from models.errors import Conflict, InvalidInput, NotAllowed
from models.flows import Flow
from models.people import (
    Authority,
    Community,
    Household,
    Resident,
    ResidentStatus,
    Unit,
    get_unit,
    one_line,
    paragraphs,
    require,
)
from models.polls import (
    MAX_OPTIONS,
    Counting,
    Poll,
    PollSpec,
    check_spec,
    draft_unit,
    insert_poll,
    options_of,
)
from models.tally import DEFAULT_WEIGHTS, Method, Rule

CARD = "proposal"  # the live card's kind (handlers/agenda.py builds it)
TITLE_LIMIT = 80
BODY_LIMIT = 600


class ProposalStatus:
    open = "open"
    polled = "polled"  # on a poll's ballot
    done = "done"  # the task was held or the report resolved
    withdrawn = "withdrawn"


class Proposal(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    community_id: int = Field(foreign_key="community.id", index=True)
    unit_id: int = Field(foreign_key="unit.id", index=True)
    title: str = Field(max_length=TITLE_LIMIT)
    body: str = Field(default="", max_length=BODY_LIMIT)
    author_id: int = Field(sa_type=TelegramId)
    status: str = Field(default=ProposalStatus.open, max_length=10, index=True)
    support: int = 0
    poll_id: int | None = Field(default=None, foreign_key="poll.id")
    origin: str | None = Field(default=None, max_length=40)  # e.g. "report:12"
    outcome: str | None = Field(default=None, max_length=40)  # e.g. "task:7"
    created_at: datetime = Field(sa_type=UTCDateTime)
    updated_at: datetime = Field(sa_type=UTCDateTime)


class Support(SQLModel, table=True):
    proposal_id: int = Field(foreign_key="proposal.id", primary_key=True)
    person_id: int = Field(sa_type=TelegramId, primary_key=True)
    created_at: datetime = Field(sa_type=UTCDateTime)


class TalkDay(SQLModel, table=True):
    """A unit's monthly talk: the day of the month, how many proposals, how long the poll runs."""

    unit_id: int = Field(foreign_key="unit.id", primary_key=True)
    day: int  # 1–31; in a shorter month, its last day
    top: int = 5
    open_days: int = 7
    last_month: str = Field(default="", max_length=7)  # "2026-11": already held
    set_by: int = Field(sa_type=TelegramId)
    updated_at: datetime = Field(sa_type=UTCDateTime)


async def _resident_under(session: AsyncSession, *, person_id: int, unit: Unit) -> None:
    statuses = (
        await session.exec(
            select(Resident.status)
            .join(Household, col(Household.id) == col(Resident.household_id))
            .join(Unit, col(Unit.id) == col(Household.unit_id))
            .where(Resident.person_id == person_id, col(Unit.path).startswith(unit.path))
        )
    ).all()
    if not statuses:
        raise NotAllowed("proposal_not_your_unit")
    if ResidentStatus.verified not in statuses:
        raise NotAllowed("poll_not_verified")


async def may_take_part(session: AsyncSession, *, auth: Authority, unit: Unit) -> None:
    """Verified residents of the unit's tree, and its leads, may propose and support."""
    if auth.covers(unit):
        return
    await _resident_under(session, person_id=auth.person_id, unit=unit)


async def propose(
    session: AsyncSession,
    *,
    auth: Authority,
    unit_id: int,
    title: str,
    body: str,
    now: datetime,
    origin: str | None = None,
) -> Proposal:
    unit = await get_unit(session, unit_id)
    await may_take_part(session, auth=auth, unit=unit)
    assert unit.id is not None
    proposal = Proposal(
        community_id=unit.community_id,
        unit_id=unit.id,
        title=one_line(title, limit=TITLE_LIMIT, low=2, error="proposal_title_length"),
        body=paragraphs(body, limit=BODY_LIMIT, error="proposal_body_length"),
        author_id=auth.person_id,
        origin=origin,
        created_at=now,
        updated_at=now,
    )
    session.add(proposal)
    await session.flush()
    assert proposal.id is not None
    await outbox.post_card_to_unit(session, kind=CARD, subject_id=proposal.id, unit=unit, now=now)
    return proposal


async def get_proposal(session: AsyncSession, proposal_id: int) -> Proposal:
    return await must_get(session, Proposal, proposal_id, "proposal_not_found")


async def support(
    session: AsyncSession, *, auth: Authority, proposal_id: int, now: datetime
) -> tuple[Proposal, bool]:
    """Add this person's support (once; a repeat changes nothing). True when it was added."""
    proposal = await get_proposal(session, proposal_id)
    if proposal.status != ProposalStatus.open:
        raise Conflict("proposal_not_open")
    await may_take_part(session, auth=auth, unit=await get_unit(session, proposal.unit_id))
    statement = (
        dialect_insert(session)(Support)
        .values(proposal_id=proposal_id, person_id=auth.person_id, created_at=now)
        .on_conflict_do_nothing(index_elements=["proposal_id", "person_id"])
    )
    added = bool((await session.exec(statement)).rowcount)
    if added:
        await session.exec(
            update(Proposal)
            .where(col(Proposal.id) == proposal_id)
            .values(support=col(Proposal.support) + 1, updated_at=now)
        )
        await session.refresh(proposal)
        await outbox.mark_changed(session, kind=CARD, subject_id=proposal_id, now=now)
    return proposal, added


async def withdraw(
    session: AsyncSession, *, auth: Authority, proposal_id: int, now: datetime
) -> Proposal:
    """The author, or a lead of the unit, takes an open proposal off the agenda."""
    proposal = await get_proposal(session, proposal_id)
    if proposal.author_id != auth.person_id:
        require(auth, await get_unit(session, proposal.unit_id))
    if proposal.status != ProposalStatus.open:
        raise Conflict("proposal_not_open")
    proposal.status, proposal.updated_at = ProposalStatus.withdrawn, now
    await session.flush()
    return proposal


async def agenda(
    session: AsyncSession, *, unit: Unit, offset: int = 0, limit: int = 10
) -> list[Proposal]:
    """Open proposals of a unit's tree, most supported first."""
    query = (
        select(Proposal)
        .join(Unit, col(Unit.id) == col(Proposal.unit_id))
        .where(Proposal.status == ProposalStatus.open, col(Unit.path).startswith(unit.path))
        .order_by(col(Proposal.support).desc(), col(Proposal.created_at), col(Proposal.id))
        .offset(offset)
        .limit(limit)
    )
    return list((await session.exec(query)).all())


# --- the monthly talk ------------------------------------------------------------------


async def set_talk_day(
    session: AsyncSession,
    *,
    auth: Authority,
    unit_id: int,
    day: int | None,
    now: datetime,
    top: int = 5,
    open_days: int = 7,
) -> TalkDay | None:
    """Set (or, with day None, stop) a unit's monthly talk."""
    unit = await get_unit(session, unit_id)
    require(auth, unit)
    found = await session.get(TalkDay, unit_id)
    if day is None:
        if found is not None:
            await session.delete(found)
        return None
    if not 1 <= day <= 31:
        raise InvalidInput("talk_bad_day")
    if not 2 <= top <= 10 or not 1 <= open_days <= 30:
        raise InvalidInput("talk_bad_settings")
    if found is None:
        found = TalkDay(unit_id=unit_id, day=day, set_by=auth.person_id, updated_at=now)
        session.add(found)
    found.day, found.top, found.open_days = day, top, open_days
    found.set_by, found.updated_at = auth.person_id, now
    await session.flush()
    return found


def talk_date_this_month(day: int, local: datetime) -> int:
    """The talk's day in this month: a day past the month's end falls on its last day."""
    return min(day, calendar.monthrange(local.year, local.month)[1])


@dataclass(frozen=True)
class TalkRun:
    unit_id: int
    poll: Poll | None  # None: fewer than two proposals, nothing to rank


async def run_talk_days(session: AsyncSession, *, now: datetime) -> list[TalkRun]:
    """Hold every talk due today (in each community's zone), once per unit and month."""
    rows = (
        await session.exec(
            select(TalkDay, Unit, Community)
            .join(Unit, col(Unit.id) == col(TalkDay.unit_id))
            .join(Community, col(Community.id) == col(Unit.community_id))
        )
    ).all()
    runs = []
    for talk, unit, community in rows:
        local = now.astimezone(ZoneInfo(community.timezone))
        month = f"{local.year:04d}-{local.month:02d}"
        if talk.last_month == month or local.day < talk_date_this_month(talk.day, local):
            continue
        talk.last_month = month
        poll = await _hold_talk(session, talk, unit, community, month, now)
        runs.append(TalkRun(talk.unit_id, poll))
    await session.flush()
    return runs


TALK_QUESTION = {
    "zh": "{month} 月月谈：本月议题排序（5-3-1）",
    "en": "Monthly talk {month}: rank this month's issues (5-3-1)",
}


async def _hold_talk(
    session: AsyncSession,
    talk: TalkDay,
    unit: Unit,
    community: Community,
    month: str,
    now: datetime,
) -> Poll | None:
    top = await agenda(session, unit=unit, limit=talk.top)
    if len(top) < 2:
        return None
    spec = check_spec(
        PollSpec(
            unit_id=talk.unit_id,
            question=TALK_QUESTION.get(community.language, TALK_QUESTION["en"]).format(month=month),
            options=[p.title for p in top],
            proposal_ids=[p.id for p in top],
            opens_at=now,
            closes_at=now + timedelta(days=talk.open_days),
            method=Method.ranking,
            weights=DEFAULT_WEIGHTS,
            counting=Counting.person,
            rule=Rule.none,
        ),
        now=now,
    )
    origin = f"talk:{talk.unit_id}:{month}"
    if (await session.exec(select(Poll.id).where(Poll.origin == origin))).first() is not None:
        return None
    poll = await insert_poll(session, unit=unit, spec=spec, by=talk.set_by, now=now, origin=origin)
    await put_on_poll(session, poll, now=now)
    return poll  # its card, posted with it, announces it in the unit's chats


async def put_on_poll(session: AsyncSession, poll: Poll, *, now: datetime) -> list[Proposal]:
    """The open proposals among a poll's options go on its ballot; their cards say so."""
    assert poll.id is not None
    ids = [o.proposal_id for o in await options_of(session, poll.id) if o.proposal_id]
    found = []
    for proposal_id in ids:
        proposal = await session.get(Proposal, proposal_id, with_for_update=True)
        if proposal is None or proposal.status != ProposalStatus.open:
            continue
        proposal.status, proposal.poll_id, proposal.updated_at = ProposalStatus.polled, poll.id, now
        await outbox.mark_changed(session, kind=CARD, subject_id=proposal_id, now=now)
        found.append(proposal)
    await session.flush()
    return found


async def add_to_draft(
    session: AsyncSession, flow: Flow, proposal_id: int, *, now: datetime
) -> None:
    """A /newpoll draft takes an open proposal of its unit's agenda as an option (its title);
    a proposal already there stays once; another unit's or a closed one is a stale button."""
    unit = await draft_unit(session, flow)
    proposal = await session.get(Proposal, proposal_id)
    if proposal is None or proposal.status != ProposalStatus.open:
        raise InvalidInput("stale_button")
    if not (await get_unit(session, proposal.unit_id)).path.startswith(unit.path):
        raise InvalidInput("stale_button")
    options = list(flow.data.get("options", []))
    if any(o.get("p") == proposal_id for o in options):
        return
    if any(str(o["t"]).casefold() == proposal.title.casefold() for o in options):
        raise InvalidInput("poll_duplicate_option")
    if len(options) >= MAX_OPTIONS:
        raise InvalidInput("poll_too_many_options", limit=MAX_OPTIONS)
    await flows.append(session, flow, key="options", value={"t": proposal.title, "p": proposal_id},
                       limit=MAX_OPTIONS, now=now)  # fmt: skip


# --- the weekly digest's section -------------------------------------------------------


@digest.section("agenda", template="agenda/digest", order=20)
async def digest_section(
    session: AsyncSession, community: Community, units: Sequence[Unit], week: digest.Week
) -> dict[int, dict[str, Any]]:
    """For each unit: topics raised and done this week, the most supported open topic, polls
    that closed this week (with their leading option) and polls open now, in it and below."""
    start, end = week.start, week.end
    proposals = (
        await session.exec(
            select(Proposal, Unit.path)
            .join(Unit, col(Unit.id) == col(Proposal.unit_id))
            .where(
                Proposal.community_id == community.id,
                (col(Proposal.status) == ProposalStatus.open)
                | ((col(Proposal.updated_at) >= start) & (col(Proposal.updated_at) < end)),
            )
        )
    ).all()
    polls_found = (
        await session.exec(
            select(Poll, Unit.path)
            .join(Unit, col(Unit.id) == col(Poll.unit_id))
            .where(
                Poll.community_id == community.id,
                (col(Poll.status) == "open")
                | ((col(Poll.closed_at) >= start) & (col(Poll.closed_at) < end)),
            )
        )
    ).all()
    out: dict[int, dict[str, Any]] = {}
    for unit in units:
        assert unit.id is not None
        mine = [p for p, path in proposals if path.startswith(unit.path)]
        new = [p for p in mine if start <= p.created_at < end]
        done = [p for p in mine if p.status == ProposalStatus.done and start <= p.updated_at < end]
        waiting = sorted(
            (p for p in mine if p.status == ProposalStatus.open), key=lambda p: -p.support
        )
        closed = [p for p, path in polls_found if path.startswith(unit.path) and p.result]
        running = [p for p, path in polls_found if path.startswith(unit.path) and not p.result]
        if not (new or done or closed or running):
            continue
        out[unit.id] = {
            "new": len(new),
            "done": [p.title for p in done[:3]],
            "open": len(waiting),
            "top": waiting[0].title if waiting else None,
            "top_support": waiting[0].support if waiting else 0,
            "closed": [_closed_line(p) for p in closed[:3]],
            "running": len(running),
        }
    return out


def _closed_line(poll: Poll) -> dict[str, Any]:
    result = poll.result or {}
    leader = result.get("leader")
    options = result.get("options", [])
    verdict = result.get("verdict")
    return {
        "question": poll.question,
        "method": poll.method,
        "leader": options[leader - 1]["text"] if leader else None,
        "passed": verdict["passed"] if verdict else None,
    }
