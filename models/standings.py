"""What the neighbour bank shows: a resident's summary, the honour board (红榜), the books.

Reads the ledger (`models.ledger`); the only writes are a person's own choice to hide from the
board and the monthly statement's outbox rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import (
    and_,
    case,
    func,
    update,
)
from sqlalchemy.orm import aliased
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from models import outbox
from models.errors import InvalidInput, NotAllowed
from models.ledger import (
    CONTRIBUTIONS,
    PERSON_LEG,
    Kind,
    LedgerEntry,
    PointAccount,
    history,
    open_account,
)
from models.people import (
    Authority,
    Community,
    Household,
    Membership,
    Person,
    Resident,
    ResidentStatus,
    Role,
    Unit,
    communities,
    get_community,
    living_under,
    memberships,
)
from models.points import EarningRule, rules

# --- what a resident sees: balance, household, rank, history ------------------------------


def month_bounds(now: datetime, zone: str, *, back: int = 0) -> tuple[datetime, datetime]:
    """The calendar month (in the community's zone) containing `now`, or `back` months before,
    as [start, end) in UTC-aware datetimes."""
    local = now.astimezone(ZoneInfo(zone))
    year, month = local.year, local.month - back
    while month < 1:
        year, month = year - 1, month + 12
    start = datetime(year, month, 1, tzinfo=ZoneInfo(zone))
    end = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=ZoneInfo(zone))
    return start, end


def period(code: str, now: datetime, zone: str) -> tuple[datetime | None, datetime | None]:
    """Export periods: m this month, l last month, y this year, a everything."""
    if code == "m":
        return month_bounds(now, zone)
    if code == "l":
        return month_bounds(now, zone, back=1)
    if code == "y":
        year = now.astimezone(ZoneInfo(zone)).year
        return datetime(year, 1, 1, tzinfo=ZoneInfo(zone)), datetime(
            year + 1, 1, 1, tzinfo=ZoneInfo(zone)
        )
    if code == "a":
        return None, None
    raise InvalidInput("stale_button")


def parse_range(text: str, zone: str) -> tuple[datetime, datetime]:
    """ "2026-10-01 2026-10-31" → [start of the first day, end of the last day) in the zone."""
    parts = text.replace("～", " ").replace("~", " ").replace("至", " ").split()
    try:
        first, last = (date.fromisoformat(p) for p in parts)
    except ValueError:
        raise InvalidInput("points_bad_range") from None
    if last < first:
        raise InvalidInput("points_bad_range")
    tz = ZoneInfo(zone)
    return datetime.combine(first, time(), tz), datetime.combine(
        last + timedelta(days=1), time(), tz
    )


def _scores(community_id: int, start: datetime | None, end: datetime | None) -> Any:
    """Contribution points per person (person legs of CONTRIBUTIONS kinds) in [start, end)."""
    query: Any = select(
        col(LedgerEntry.person_id).label("person_id"),
        func.sum(LedgerEntry.amount).label("score"),
    ).where(
        LedgerEntry.community_id == community_id,
        col(LedgerEntry.kind).in_(sorted(CONTRIBUTIONS)),
    )
    if start is not None:
        query = query.where(col(LedgerEntry.created_at) >= start)
    if end is not None:
        query = query.where(col(LedgerEntry.created_at) < end)
    return query


def _residents_under(community_id: int, unit: Unit) -> Any:
    """Person ids of the verified residents living in a unit's subtree."""
    return living_under(unit).where(Resident.community_id == community_id)


@dataclass(frozen=True)
class Summary:
    community: Community
    building: Unit
    balance: int
    household_balance: int
    household_people: int
    month_points: int
    rank: int | None  # in the building this month; None until the person earned something
    ranked: int
    entries: list[LedgerEntry]
    more: bool
    rule_names: dict[str, EarningRule]


async def summary(
    session: AsyncSession, *, membership: Membership, now: datetime, limit: int = 10
) -> Summary:
    """Everything /points shows: a handful of indexed queries, whatever the ledger's size."""
    community = membership.community
    assert community.id is not None
    person_id = membership.resident.person_id
    mine_only = case((col(Resident.person_id) == person_id, PointAccount.balance), else_=0)
    mine, household_total, household_people = (
        await session.exec(
            select(
                func.coalesce(func.sum(mine_only), 0),
                func.coalesce(func.sum(PointAccount.balance), 0),
                func.count(col(Resident.id)),
            )
            .select_from(Resident)
            .outerjoin(
                PointAccount,
                and_(
                    col(PointAccount.person_id) == col(Resident.person_id),
                    col(PointAccount.community_id) == col(Resident.community_id),
                ),
            )
            .where(
                Resident.household_id == membership.household.id,
                Resident.status == ResidentStatus.verified,
            )
        )
    ).one()
    start, end = month_bounds(now, community.timezone)
    assert membership.building.id is not None
    neighbours = (
        select(Resident.person_id)
        .join(Household, col(Household.id) == col(Resident.household_id))
        .where(
            Household.building_id == membership.building.id,
            Resident.community_id == community.id,
            Resident.status == ResidentStatus.verified,
        )
    )
    scores_query = (
        _scores(community.id, start, end)
        .where(col(LedgerEntry.person_id).in_(neighbours))
        .group_by(col(LedgerEntry.person_id))
    )
    scores = {int(p): int(s) for p, s in (await session.exec(scores_query)).all()}
    my_score = scores.get(person_id, 0)
    ranked = sum(1 for s in scores.values() if s > 0)
    rank = 1 + sum(1 for s in scores.values() if s > my_score) if my_score > 0 else None
    entries = await history(
        session, community_id=community.id, person_id=person_id, limit=limit + 1
    )
    names = {}
    if any(e.rule_code for e in entries):
        names = {r.code: r for r in await rules(session, community_id=community.id, now=now)}
    return Summary(
        community=community,
        building=membership.building,
        balance=int(mine),
        household_balance=int(household_total),
        household_people=int(household_people),
        month_points=my_score,
        rank=rank,
        ranked=ranked,
        entries=entries[:limit],
        more=len(entries) > limit,
        rule_names=names,
    )


async def verified_memberships(session: AsyncSession, *, person_id: int) -> list[Membership]:
    return [
        m
        for m in await memberships(session, person_id=person_id)
        if m.resident.status == ResidentStatus.verified
    ]


# --- the honour board (红榜) ----------------------------------------------------------------


@dataclass(frozen=True)
class BoardLine:
    person: Person
    points: int


async def board(
    session: AsyncSession, *, unit: Unit, now: datetime, monthly: bool, limit: int = 10
) -> list[BoardLine]:
    """The unit's top contributors this month (or ever), names only, without those who hid."""
    community = await get_community(session, unit.community_id)
    assert community.id is not None
    neighbours = _residents_under(community.id, unit)
    hidden = select(PointAccount.person_id).where(
        PointAccount.community_id == community.id, col(PointAccount.hidden).is_(True)
    )
    if monthly:
        start, end = month_bounds(now, community.timezone)
        scored = (
            _scores(community.id, start, end)
            .where(col(LedgerEntry.person_id).in_(neighbours))
            .where(col(LedgerEntry.person_id).not_in(hidden))
            .group_by(col(LedgerEntry.person_id))
            .subquery()
        )
        query = (
            select(Person, scored.c.score)
            .join(scored, scored.c.person_id == col(Person.id))
            .where(scored.c.score > 0)
            .order_by(scored.c.score.desc(), col(Person.name), col(Person.id))
        )
    else:
        query = (
            select(Person, PointAccount.earned)
            .join(PointAccount, col(PointAccount.person_id) == col(Person.id))
            .where(
                PointAccount.community_id == community.id,
                col(PointAccount.hidden).is_(False),
                col(PointAccount.earned) > 0,
                col(PointAccount.person_id).in_(neighbours),
            )
            .order_by(col(PointAccount.earned).desc(), col(Person.name), col(Person.id))
        )
    rows = (await session.exec(query.limit(limit))).all()
    return [BoardLine(person, int(score)) for person, score in rows]


async def is_hidden(session: AsyncSession, *, community_id: int, person_id: int) -> bool:
    query = select(PointAccount.hidden).where(
        PointAccount.community_id == community_id, PointAccount.person_id == person_id
    )
    return bool((await session.exec(query)).first())


async def is_resident_of(session: AsyncSession, *, person_id: int, community_id: int) -> bool:
    """A verified resident of this community (a pending request does not count)."""
    found = await verified_memberships(session, person_id=person_id)
    return any(m.community.id == community_id for m in found)


async def require_board_reader(
    session: AsyncSession, *, auth: Authority, unit: Unit, chat_unit_id: int | None
) -> None:
    """Who may see a unit's honour board: its community's residents and the leads covering it,
    and anyone in the group the board is posted to (`chat_unit_id`: the unit that chat serves)."""
    if chat_unit_id is not None and chat_unit_id == unit.id:
        return
    if auth.covers(unit):
        return
    if not await is_resident_of(session, person_id=auth.person_id, community_id=unit.community_id):
        raise NotAllowed("not_a_member")


async def set_hidden(
    session: AsyncSession, *, community_id: int, person_id: int, hidden: bool, now: datetime
) -> None:
    """A resident may keep their name off their community's honour board (or put it back);
    it changes nothing else, and setting the state it already has is a no-op."""
    if not await is_resident_of(session, person_id=person_id, community_id=community_id):
        raise NotAllowed("not_a_member")
    if await is_hidden(session, community_id=community_id, person_id=person_id) == hidden:
        return
    await open_account(session, community_id=community_id, person_id=person_id, now=now)
    await session.exec(
        update(PointAccount)
        .where(
            col(PointAccount.community_id) == community_id,
            col(PointAccount.person_id) == person_id,
        )
        .values(hidden=hidden)
        .execution_options(synchronize_session=False)
    )


# --- the books for admins: export and the monthly statement -------------------------------


@dataclass(frozen=True)
class ExportRow:
    entry: LedgerEntry
    person: str
    by: str


async def export_rows(
    session: AsyncSession,
    *,
    community_id: int,
    start: datetime | None,
    end: datetime | None,
) -> list[ExportRow]:
    """The people's side of every posting in [start, end), oldest first, with names."""
    by = aliased(Person)
    query = (
        select(LedgerEntry, Person.name, by.name)
        .join(Person, col(Person.id) == col(LedgerEntry.person_id))
        .outerjoin(by, col(by.id) == col(LedgerEntry.by))
        .where(LedgerEntry.community_id == community_id, LedgerEntry.leg == PERSON_LEG)
    )
    if start is not None:
        query = query.where(col(LedgerEntry.created_at) >= start)
    if end is not None:
        query = query.where(col(LedgerEntry.created_at) < end)
    query = query.order_by(col(LedgerEntry.created_at), col(LedgerEntry.id))
    return [
        ExportRow(e, name, by_name or "") for e, name, by_name in (await session.exec(query)).all()
    ]


@dataclass(frozen=True)
class MonthFigures:
    issued: int  # credits, refunds excepted
    redeemed: int  # spent on rewards, net of refunds
    top: list[BoardLine]


async def month_figures(
    session: AsyncSession, *, unit: Unit, start: datetime, end: datetime
) -> MonthFigures:
    neighbours = _residents_under(unit.community_id, unit)
    base = select(LedgerEntry.kind, func.sum(LedgerEntry.amount)).where(
        LedgerEntry.community_id == unit.community_id,
        col(LedgerEntry.person_id).in_(neighbours),
        col(LedgerEntry.created_at) >= start,
        col(LedgerEntry.created_at) < end,
    )
    sums = {
        str(k): int(v) for k, v in (await session.exec(base.group_by(col(LedgerEntry.kind)))).all()
    }
    credits = await session.exec(
        select(func.coalesce(func.sum(LedgerEntry.amount), 0)).where(
            LedgerEntry.community_id == unit.community_id,
            col(LedgerEntry.person_id).in_(neighbours),
            col(LedgerEntry.created_at) >= start,
            col(LedgerEntry.created_at) < end,
            col(LedgerEntry.amount) > 0,
            LedgerEntry.kind != Kind.refund,
        )
    )
    redeemed = -(sums.get(Kind.redeem, 0) + sums.get(Kind.refund, 0))
    top_query = (
        _scores(unit.community_id, start, end)
        .where(col(LedgerEntry.person_id).in_(neighbours))
        .group_by(col(LedgerEntry.person_id))
        .subquery()
    )
    rows = (
        await session.exec(
            select(Person, top_query.c.score)
            .join(top_query, top_query.c.person_id == col(Person.id))
            .where(top_query.c.score > 0)
            .order_by(top_query.c.score.desc(), col(Person.name))
            .limit(3)
        )
    ).all()
    return MonthFigures(int(credits.one()), redeemed, [BoardLine(p, int(s)) for p, s in rows])


async def monthly_statements(session: AsyncSession, now: datetime) -> int:
    """A rhythm (bot.delivery.RHYTHMS): on the 1st of each month in a community's zone, one
    statement of last month per lead of each unit. Keyed, so running it all day adds each once.
    Returns the rows enqueued."""
    added = 0
    for community in await communities(session):
        assert community.id is not None
        if now.astimezone(ZoneInfo(community.timezone)).day != 1:
            continue
        start, end = month_bounds(now, community.timezone, back=1)
        month = start.strftime("%Y-%m")
        prefix = f"statement:{month}:"
        done = set(
            (
                await session.exec(
                    select(outbox.Delivery.key).where(
                        col(outbox.Delivery.key).startswith(prefix),
                        outbox.Delivery.community_id == community.id,
                    )
                )
            ).all()
        )
        led = (
            await session.exec(
                select(Role, Unit)
                .join(Unit, col(Unit.id) == col(Role.unit_id))
                .where(Unit.community_id == community.id)
                .order_by(col(Unit.path), col(Role.id))
            )
        ).all()
        by_unit: dict[int, tuple[Unit, list[int]]] = {}
        for role, unit in led:
            assert unit.id is not None
            by_unit.setdefault(unit.id, (unit, []))[1].append(role.person_id)
        for unit_id, (unit, leads) in by_unit.items():
            keys = {lead: f"{prefix}{unit_id}:{lead}" for lead in dict.fromkeys(leads)}
            if all(k in done for k in keys.values()):
                continue
            figures = await month_figures(session, unit=unit, start=start, end=end)
            held = await _tasks_line(session, unit=unit, start=start, end=end)
            context = {
                "month": month,
                "unit": unit.name,
                "community": community.name,
                "issued": figures.issued,
                "redeemed": figures.redeemed,
                "top": [{"name": line.person.name, "points": line.points} for line in figures.top],
                "tasks": held,
            }
            for lead, key in keys.items():
                if key in done:
                    continue
                added += await outbox.enqueue_private(
                    session,
                    key=key,
                    person_id=lead,
                    community_id=community.id,
                    template="points/statement",
                    context=context,
                    now=now,
                    priority=outbox.Priority.broadcast,
                )
    return added


async def _tasks_line(
    session: AsyncSession, *, unit: Unit, start: datetime, end: datetime
) -> dict[str, Any] | None:
    """The statement's volunteer-task line (None in a month without tasks)."""
    from models.tasks import month_line  # tasks post through this ledger: imported late

    line = await month_line(session, unit=unit, start=start, end=end)
    if not line.held:
        return None
    rate = None if line.no_show_rate is None else round(line.no_show_rate * 100)
    return {"held": line.held, "hours": line.hours, "volunteers": line.volunteers, "no_show": rate}
