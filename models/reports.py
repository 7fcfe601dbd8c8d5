"""Problem reports (报事, 随手拍): filed by residents, followed by leads, judged by the neighbours.

A report belongs to one unit and one category. Its life is a small state machine (`ACTIONS`
says which lead action is allowed from which status); every change is an event row, and the
reporter and supporters are told privately through the outbox in the same transaction.

Time-driven work runs from rows due at a time, never from one scheduler job per report: a
report not yet acknowledged carries `escalate_at` (when it goes to the leads of the next unit
up) and a resolved one carries `followup_due_at` (when an unanswered follow-up closes it).
`due_work` is the rhythm that claims both (SKIP LOCKED on PostgreSQL), in batches.

Two leads acting at once: each action locks the report row first (FOR UPDATE on PostgreSQL,
SQLite's write transaction holds the one write lock) and checks the revision the lead saw
(`rev`, which every status or assignee change bumps), so one wins and the other is told.
"""

from __future__ import annotations

import re
import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy import JSON, Column, Index, UniqueConstraint, func, or_, update
from sqlmodel import Field, SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from models import agenda, catalog, digest, outbox, points
from models.base import TelegramId, UTCDateTime, dialect_insert, must_get, spreadsheet_safe
from models.errors import Conflict, InvalidInput, NotAllowed, NotFound
from models.people import (
    Authority,
    Community,
    Person,
    Resident,
    ResidentStatus,
    Role,
    RoleKind,
    Unit,
    clean_name,
    get_community,
    get_unit,
    one_line,
    units_by_id,
)

TEXT_LIMIT = 1_000
PHOTO_LIMIT = 5
NOTE_LIMIT = 500
VENUE_LIMIT = 120
TEMPLATE_TITLE_LIMIT = 40
FLOOR_RANGE = (-5, 200)
FOLLOWUP_WINDOW = timedelta(days=3)
REOPEN_SUPPORTERS = 2  # "not fixed" from this many supporters reopens a report
DEFAULT_HOURS = 24
DEFAULT_FIX_HOURS = 72
BATCH = 500  # due reports handled per query in the rhythm
CREDIT_RULE = "report"  # the neighbour bank's earning rule "accepted problem report"
REDACTED = "⋯"  # what a redacted text reads as
# Live cards (bot/cards.py builds them from the report as it is when each is sent or edited).
CARD = "report"  # in the group the report was filed in, with +1
LEAD_CARD = "reportlead"  # a lead's private notice, with the button that opens the sheet
ASK_CARD = "reportask"  # "is it fixed?" and the rating, in a follower's private chat
CARDS = (CARD, LEAD_CARD, ASK_CARD)


class Status(StrEnum):
    open = "open"
    acknowledged = "acknowledged"
    in_progress = "in_progress"
    resolved = "resolved"  # waiting for the neighbours' verdict
    reopened = "reopened"
    closed = "closed"
    declined = "declined"
    duplicate = "duplicate"


# A lead still has work on these; they are on /reports and counted as "still open".
OPEN = frozenset({Status.open, Status.acknowledged, Status.in_progress, Status.reopened})
# Not yet accepted: these escalate when their category's time runs out.
UNACKNOWLEDGED = frozenset({Status.open, Status.reopened})
FINISHED = frozenset({Status.closed, Status.declined, Status.duplicate})


class Action(StrEnum):
    acknowledge = "acknowledge"
    assign = "assign"
    in_progress = "in_progress"
    resolve = "resolve"
    decline = "decline"
    duplicate = "duplicate"


ACTIONS: dict[Action, frozenset[Status]] = {
    Action.acknowledge: UNACKNOWLEDGED,
    Action.assign: OPEN,
    Action.in_progress: frozenset({Status.open, Status.acknowledged, Status.reopened}),
    Action.resolve: OPEN,
    Action.decline: OPEN,
    Action.duplicate: OPEN,
}
# Accepting a report in any of these ways acknowledges it (and credits the reporter once).
ACCEPTING = frozenset({Action.acknowledge, Action.assign, Action.in_progress, Action.resolve})


class Visibility(StrEnum):
    group = "group"  # filed in a group: a card there
    private = "private"  # filed privately: only leads see it


class Place(StrEnum):
    stairwell = "stairwell"
    lift = "lift"
    entrance = "entrance"
    corridor = "corridor"
    basement = "basement"
    roof = "roof"
    parking = "parking"
    garden = "garden"
    my_flat = "my_flat"  # never shown in a group, never a duplicate of a neighbour's
    outdoors = "outdoors"  # a Telegram location or venue


# Places where the floor matters (a floor button row is offered).
FLOORED = frozenset({Place.stairwell, Place.lift, Place.corridor, Place.my_flat})


@dataclass(frozen=True)
class DefaultCategory:
    code: str
    name_zh: str
    name_en: str
    hours: int = DEFAULT_HOURS
    fix_hours: int = DEFAULT_FIX_HOURS


DEFAULT_CATEGORIES = (
    DefaultCategory("lift", "电梯", "Lift", 2, 24),
    DefaultCategory("water", "水管漏水", "Water"),
    DefaultCategory("lights", "照明用电", "Lights / electricity"),
    DefaultCategory("sanitation", "环境卫生", "Sanitation"),
    DefaultCategory("safety", "安全隐患", "Safety", 2, 24),
    DefaultCategory("noise", "噪音", "Noise"),
    DefaultCategory("parking", "停车", "Parking"),
    DefaultCategory("greenery", "绿化", "Greenery"),
    DefaultCategory("other", "其他", "Other"),
)
HOURS_RANGE = (1, 24 * 14)


class EventKind(StrEnum):
    filed = "filed"
    supported = "supported"
    acknowledged = "acknowledged"
    assigned = "assigned"
    in_progress = "in_progress"
    resolved = "resolved"
    declined = "declined"
    duplicate = "duplicate"
    merged = "merged"  # another report was marked a duplicate of this one
    escalated = "escalated"
    verdict = "verdict"
    reopened = "reopened"
    closed = "closed"
    redacted = "redacted"
    agenda = "agenda"  # put on the unit's agenda (a proposal)


EVENT_OF = {
    Action.acknowledge: EventKind.acknowledged,
    Action.assign: EventKind.assigned,
    Action.in_progress: EventKind.in_progress,
    Action.resolve: EventKind.resolved,
    Action.decline: EventKind.declined,
    Action.duplicate: EventKind.duplicate,
}


# --- tables -------------------------------------------------------------------------------


class ReportCategory(SQLModel, table=True):
    """A community's own category list; the defaults apply (unsaved) until an admin edits one."""

    __table_args__ = (UniqueConstraint("community_id", "code"),)
    id: int | None = Field(default=None, primary_key=True)
    community_id: int = Field(foreign_key="community.id")
    code: str = Field(max_length=20)
    name_zh: str = Field(max_length=40)
    name_en: str = Field(max_length=40)
    hours: int = DEFAULT_HOURS  # to acknowledge before it escalates
    fix_hours: int = DEFAULT_FIX_HOURS  # the target for fixing it (stats: share within target)
    active: bool = True
    position: int = 0
    updated_at: datetime = Field(sa_type=UTCDateTime)

    def name(self, lang: str) -> str:
        return self.name_zh if lang == "zh" else self.name_en


class ReportSequence(SQLModel, table=True):
    """The last report number of a community (R-1, R-2, …); its row is the numbering lock."""

    community_id: int = Field(foreign_key="community.id", primary_key=True)
    last: int = 0


class Report(SQLModel, table=True):
    __table_args__ = (
        UniqueConstraint("community_id", "number"),
        # /reports: a community's open reports, overdue first, most supported, oldest.
        Index(
            "ix_report_open_list", "community_id", "is_open", "overdue", "supporters", "created_at"
        ),
        # The duplicate lookup before filing.
        Index("ix_report_same", "unit_id", "category", "place", "is_open"),
        # Due work (escalation, follow-up closing): rows due at a time.
        Index("ix_report_escalate_at", "escalate_at"),
        Index("ix_report_followup_due_at", "followup_due_at"),
        Index("ix_report_community_time", "community_id", "created_at"),
    )
    id: int | None = Field(default=None, primary_key=True)
    community_id: int = Field(foreign_key="community.id")
    number: int
    reporter_id: int = Field(sa_type=TelegramId, foreign_key="person.id", index=True)
    show_name: bool = False  # the reporter chose to be named on the group card
    category: str = Field(max_length=20)
    unit_id: int = Field(foreign_key="unit.id")
    place: str | None = Field(default=None, max_length=20)
    floor: int | None = None
    latitude: float | None = None
    longitude: float | None = None
    venue: str | None = Field(default=None, max_length=VENUE_LIMIT)
    text: str = Field(default="", max_length=TEXT_LIMIT)
    photos: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    visibility: str = Field(default=Visibility.private, max_length=10)
    chat_id: int | None = Field(default=None, sa_type=TelegramId)  # the group it was filed in
    thread_id: int = 0
    status: str = Field(default=Status.open, max_length=14)
    is_open: bool = True
    rev: int = 0  # bumped by every status or assignee change: a stale sheet cannot act
    overdue: bool = False
    supporters: int = 0
    assignee_id: int | None = Field(default=None, sa_type=TelegramId)
    duplicate_of: int | None = Field(default=None, foreign_key="report.id")
    escalation_level: int = 0  # units above the report's own that have been told
    escalate_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    followup_due_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    round: int = 0  # follow-up round: +1 each time it is reopened
    reopened: int = 0
    fixed: bool | None = None  # the neighbours' verdict once closed (None: nobody answered)
    origin_key: str | None = Field(default=None, max_length=80, unique=True)
    created_at: datetime = Field(sa_type=UTCDateTime)
    updated_at: datetime = Field(sa_type=UTCDateTime)
    acknowledged_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    resolved_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    closed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)

    @property
    def label(self) -> str:
        return f"R-{self.number}"


class ReportSupporter(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("report_id", "person_id"),)
    id: int | None = Field(default=None, primary_key=True)
    report_id: int = Field(foreign_key="report.id")
    person_id: int = Field(sa_type=TelegramId, foreign_key="person.id", index=True)
    created_at: datetime = Field(sa_type=UTCDateTime)


class ReportEvent(SQLModel, table=True):
    """Who changed what, when: the full history leads see."""

    id: int | None = Field(default=None, primary_key=True)
    report_id: int = Field(foreign_key="report.id", index=True)
    kind: str = Field(max_length=14)
    by: int | None = Field(default=None, sa_type=TelegramId)  # None: the bot itself (the clock)
    from_status: str | None = Field(default=None, max_length=14)
    to_status: str | None = Field(default=None, max_length=14)
    note: str = Field(default="", max_length=NOTE_LIMIT)
    photo: str | None = Field(default=None, max_length=200)
    at: datetime = Field(sa_type=UTCDateTime)


class ReportAssignment(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    report_id: int = Field(foreign_key="report.id", index=True)
    assignee_id: int = Field(sa_type=TelegramId, foreign_key="person.id")
    by: int = Field(sa_type=TelegramId)
    at: datetime = Field(sa_type=UTCDateTime)


class ReportRedaction(SQLModel, table=True):
    """A text or photo removed for containing personal data: who and when (not what)."""

    id: int | None = Field(default=None, primary_key=True)
    report_id: int = Field(foreign_key="report.id", index=True)
    what: str = Field(max_length=12)  # text | photo:<n>
    by: int = Field(sa_type=TelegramId)
    at: datetime = Field(sa_type=UTCDateTime)


class ReportVerdict(SQLModel, table=True):
    """One neighbour's answer to "is it fixed?" in one follow-up round, and their rating."""

    __table_args__ = (UniqueConstraint("report_id", "round", "person_id"),)
    id: int | None = Field(default=None, primary_key=True)
    report_id: int = Field(foreign_key="report.id", index=True)
    round: int = 0
    person_id: int = Field(sa_type=TelegramId)
    fixed: bool
    rating: int | None = None
    photo: str | None = Field(default=None, max_length=200)
    at: datetime = Field(sa_type=UTCDateTime)


class ReplyTemplate(SQLModel, table=True):
    """A saved answer leads reuse ("the property company has been told; fixed within 3 days")."""

    __table_args__ = (UniqueConstraint("community_id", "title"),)
    id: int | None = Field(default=None, primary_key=True)
    community_id: int = Field(foreign_key="community.id")
    title: str = Field(max_length=TEMPLATE_TITLE_LIMIT)
    text: str = Field(max_length=NOTE_LIMIT)
    created_by: int = Field(sa_type=TelegramId)
    created_at: datetime = Field(sa_type=UTCDateTime)


# --- small helpers ------------------------------------------------------------------------


def _is_pg(session: AsyncSession) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def clean_text(text: str | None) -> str:
    """Trimmed text within the limit; over it is refused (the flow keeps the draft)."""
    cleaned = (text or "").strip()
    if len(cleaned) > TEXT_LIMIT:
        raise InvalidInput("report_too_long", limit=TEXT_LIMIT, length=len(cleaned))
    return cleaned


def clean_note(
    text: str | None, *, required: bool = False, error: str = "report_note_required"
) -> str:
    return one_line(
        text or "",
        limit=NOTE_LIMIT,
        low=1 if required else 0,
        short=error,
        error="report_note_too_long",
    )


def check_photos(photos: Sequence[str]) -> list[str]:
    found = list(dict.fromkeys(p for p in photos if p))
    if len(found) > PHOTO_LIMIT:
        raise InvalidInput("report_too_many_photos", limit=PHOTO_LIMIT)
    return found


def check_floor(floor: int | None) -> int | None:
    if floor is None:
        return None
    if isinstance(floor, bool) or not FLOOR_RANGE[0] <= floor <= FLOOR_RANGE[1]:
        raise InvalidInput("report_bad_floor", low=FLOOR_RANGE[0], high=FLOOR_RANGE[1])
    return floor


def check_place(place: str | None) -> str | None:
    if place is None:
        return None
    if place not in Place.__members__:
        raise InvalidInput("stale_button")
    return place


_NUMBER = re.compile(r"^\s*#?\s*(?:R\s*-?\s*)?(\d{1,9})\s*$", re.IGNORECASE)


def parse_number(text: str) -> int:
    """ "R-12", "r12", "#12", "12" → 12."""
    found = _NUMBER.match(text or "")
    if found is None:
        raise InvalidInput("report_bad_number", text=(text or "")[:20])
    return int(found.group(1))


def shown_place(report: Report) -> str | None:
    """The place a group may see: never "my flat"."""
    return None if report.place == Place.my_flat else report.place


# --- categories ---------------------------------------------------------------------------


def _default_rows(community_id: int, now: datetime) -> list[ReportCategory]:
    return [
        ReportCategory(community_id=community_id, position=i, updated_at=now, **asdict(d))
        for i, d in enumerate(DEFAULT_CATEGORIES)
    ]


async def categories(
    session: AsyncSession, *, community_id: int, now: datetime, active_only: bool = True
) -> list[ReportCategory]:
    """The community's categories in order; the defaults (unsaved) until an admin edits one."""
    return await catalog.entries(
        session, ReportCategory, _default_rows, community_id=community_id, now=now,
        order=[col(ReportCategory.position), col(ReportCategory.id)], active_only=active_only,
    )  # fmt: skip


async def get_category(
    session: AsyncSession, *, community_id: int, code: str, now: datetime
) -> ReportCategory:
    for found in await categories(session, community_id=community_id, now=now, active_only=False):
        if found.code == code:
            return found
    raise InvalidInput("report_bad_category")


async def _category_map(
    session: AsyncSession, community_id: int, now: datetime
) -> dict[str, ReportCategory]:
    rows = await categories(session, community_id=community_id, now=now, active_only=False)
    return {c.code: c for c in rows}


require_admin = points.require_admin


async def set_hours(
    session: AsyncSession,
    *,
    auth: Authority,
    community_id: int,
    code: str,
    now: datetime,
    hours: int | None = None,
    fix_hours: int | None = None,
) -> ReportCategory:
    """An admin changes how long a category may wait before it escalates, or its fix target."""
    require_admin(auth, await get_community(session, community_id))
    for value in (hours, fix_hours):
        if value is not None and (
            isinstance(value, bool) or not HOURS_RANGE[0] <= value <= HOURS_RANGE[1]
        ):
            raise InvalidInput("report_bad_hours", low=HOURS_RANGE[0], high=HOURS_RANGE[1])
    return await catalog.edit(
        session, ReportCategory, _default_rows, community_id=community_id, code=code, now=now,
        missing=InvalidInput("report_bad_category"), hours=hours, fix_hours=fix_hours,
    )  # fmt: skip


async def add_category(
    session: AsyncSession, *, auth: Authority, community_id: int, name: str, now: datetime
) -> ReportCategory:
    """A community's own category (e.g. "pets"), with the default times until changed."""
    require_admin(auth, await get_community(session, community_id))
    name = clean_name(name, limit=40)

    def make(code: str, count: int) -> ReportCategory:
        return ReportCategory(
            community_id=community_id, code=code, name_zh=name, name_en=name, position=count,
            updated_at=now,
        )  # fmt: skip

    return await catalog.add(
        session, ReportCategory, _default_rows, community_id=community_id, name=name, now=now,
        taken="report_category_exists", make=make,
    )  # fmt: skip


# --- reading ------------------------------------------------------------------------------


async def get(session: AsyncSession, report_id: int, *, lock: bool = False) -> Report:
    return await must_get(session, Report, report_id, "report_not_found", lock=lock, number="?")


async def by_number(session: AsyncSession, *, community_id: int, number: int) -> Report:
    found = (
        await session.exec(
            select(Report).where(Report.community_id == community_id, Report.number == number)
        )
    ).first()
    if found is None:
        raise NotFound("report_not_found", number=f"R-{number}")
    return found


async def supporter_ids(session: AsyncSession, report_id: int) -> list[int]:
    rows = await session.exec(
        select(ReportSupporter.person_id)
        .where(ReportSupporter.report_id == report_id)
        .order_by(col(ReportSupporter.id))
    )
    return [int(p) for p in rows.all()]


async def names_of(session: AsyncSession, person_ids: Sequence[int]) -> dict[int, str]:
    """People's names by id, in one query (a report's reporter, assignee and history)."""
    wanted = {i for i in person_ids if i}
    if not wanted:
        return {}
    rows = await session.exec(select(Person.id, Person.name).where(col(Person.id).in_(wanted)))
    return {int(pid): name for pid, name in rows.all()}


async def events(session: AsyncSession, report_id: int) -> list[ReportEvent]:
    rows = await session.exec(
        select(ReportEvent).where(ReportEvent.report_id == report_id).order_by(col(ReportEvent.id))
    )
    return list(rows.all())


def may_see(auth: Authority, report: Report, unit: Unit, *, person_id: int) -> bool:
    """Leads of the unit see every report; others only their own, one they support (checked by
    the caller) or one filed in a group."""
    return (
        auth.covers(unit)
        or report.reporter_id == person_id
        or report.visibility == Visibility.group
    )


async def require_lead(session: AsyncSession, auth: Authority, report: Report) -> Unit:
    unit = await get_unit(session, report.unit_id)
    if not auth.covers(unit):
        raise NotAllowed("not_your_unit", unit=unit.name)
    return unit


# --- filing -------------------------------------------------------------------------------


async def duplicates(
    session: AsyncSession, *, unit_id: int, category: str, place: str | None, limit: int = 5
) -> list[Report]:
    """Open reports in the same unit, category and place: "Same problem? +1".

    A problem in someone's own flat is never another flat's duplicate.
    """
    if place == Place.my_flat:
        return []
    query = (
        select(Report)
        .where(
            Report.unit_id == unit_id,
            Report.category == category,
            Report.place == place if place is not None else col(Report.place).is_(None),
            col(Report.is_open).is_(True),
        )
        .order_by(col(Report.supporters).desc(), col(Report.created_at))
        .limit(limit)
    )
    return list((await session.exec(query)).all())


async def _next_number(session: AsyncSession, community_id: int) -> int:
    """The community's next number; the sequence row's update is the lock two filers queue on."""
    conn = await session.connection()
    table = ReportSequence.__table__  # type: ignore[attr-defined]
    bump = (
        update(table)
        .where(table.c.community_id == community_id)
        .values(last=table.c.last + 1)
        .returning(table.c.last)
    )
    found = (await conn.execute(bump)).scalar()
    if found is None:
        await conn.execute(
            dialect_insert(session)(table)
            .values(community_id=community_id, last=0)
            .on_conflict_do_nothing(index_elements=["community_id"])
        )
        found = (await conn.execute(bump)).scalar()
    assert found is not None
    return int(found)


async def file(
    session: AsyncSession,
    *,
    reporter_id: int,
    unit_id: int,
    category: str,
    text: str | None,
    now: datetime,
    place: str | None = None,
    floor: int | None = None,
    photos: Sequence[str] = (),
    latitude: float | None = None,
    longitude: float | None = None,
    venue: str | None = None,
    chat_id: int | None = None,
    thread_id: int = 0,
    show_name: bool = False,
    origin_key: str | None = None,
) -> tuple[Report, bool]:
    """File a report; returns (report, created). With `chat_id` (a group) it gets a card there,
    without it the report is private (only leads see it).

    `origin_key` (the draft or the update that made it) makes a repeat return the first report.
    The leads of the nearest unit with leads are told; the escalation clock starts.
    """
    if origin_key is not None:
        existing = (
            await session.exec(select(Report).where(Report.origin_key == origin_key))
        ).first()
        if existing is not None:
            return existing, False
    unit = await get_unit(session, unit_id)
    cat = await get_category(session, community_id=unit.community_id, code=category, now=now)
    if not cat.active:
        raise InvalidInput("report_bad_category")
    cleaned = clean_text(text)
    pictures = check_photos(photos)
    if not cleaned and not pictures:
        raise InvalidInput("report_empty")
    place = check_place(place)
    if (latitude is None) != (longitude is None):
        raise InvalidInput("report_bad_location")
    if latitude is not None and longitude is not None:
        if not (-90 <= latitude <= 90 and -180 <= longitude <= 180):
            raise InvalidInput("report_bad_location")
        place = place or Place.outdoors
    report = Report(
        community_id=unit.community_id,
        number=await _next_number(session, unit.community_id),
        reporter_id=reporter_id,
        show_name=show_name,
        category=cat.code,
        unit_id=unit_id,
        place=place,
        floor=check_floor(floor) if place in FLOORED else None,
        latitude=latitude,
        longitude=longitude,
        venue=(venue or "").strip()[:VENUE_LIMIT] or None,
        text=cleaned,
        photos=pictures,
        visibility=Visibility.group if chat_id is not None else Visibility.private,
        chat_id=chat_id,
        thread_id=thread_id if chat_id is not None else 0,
        escalate_at=now + timedelta(hours=cat.hours),
        origin_key=origin_key,
        created_at=now,
        updated_at=now,
    )
    session.add(report)
    await session.flush()
    await _event(session, report, EventKind.filed, by=reporter_id, to=Status.open, now=now)
    await _tell_leads(session, report, unit, level=0, kind="new", now=now)
    if chat_id is not None:
        await outbox.post_card(
            session,
            kind=CARD,
            subject_id=report.id or 0,
            chat_id=chat_id,
            thread_id=report.thread_id,
            community_id=report.community_id,
            now=now,
        )
    return report, True


# --- support ------------------------------------------------------------------------------


async def support(
    session: AsyncSession, *, report_id: int, person_id: int, now: datetime
) -> tuple[Report, bool]:
    """+1: the person becomes a supporter (counted, told of changes). Returns (report, added);
    a repeated tap adds nothing."""
    report = await get(session, report_id)
    if report.reporter_id == person_id:
        raise Conflict("report_own", number=report.label)
    if report.status not in OPEN and report.status != Status.resolved:
        raise Conflict("report_finished", number=report.label, status=report.status)
    added = await _add_supporter(session, report.id or 0, person_id, now)
    if added:
        await _bump_supporters(session, report.id or 0, 1)
        await session.refresh(report)
        await _event(session, report, EventKind.supported, by=person_id, now=now)
        await changed(session, [report], now)
    return report, added


async def _add_supporter(
    session: AsyncSession, report_id: int, person_id: int, now: datetime
) -> bool:
    result = await session.exec(
        dialect_insert(session)(ReportSupporter)
        .values(report_id=report_id, person_id=person_id, created_at=now)
        .on_conflict_do_nothing(index_elements=["report_id", "person_id"])
    )
    return bool(result.rowcount)


async def _bump_supporters(session: AsyncSession, report_id: int, by: int) -> None:
    await session.exec(
        update(Report)
        .where(col(Report.id) == report_id)
        .values(supporters=col(Report.supporters) + by)
    )


async def withdraw_support(
    session: AsyncSession, *, report_id: int, person_id: int, now: datetime
) -> tuple[Report, bool]:
    """Stop supporting (the "+1 ✓" button sets this state; a repeat removes nothing)."""
    report = await get(session, report_id)
    found = (
        await session.exec(
            select(ReportSupporter).where(
                ReportSupporter.report_id == report_id, ReportSupporter.person_id == person_id
            )
        )
    ).first()
    if found is None:
        return report, False
    await session.delete(found)
    await session.flush()
    await _bump_supporters(session, report_id, -1)
    await session.refresh(report)
    await changed(session, [report], now)
    return report, True


async def show_name(
    session: AsyncSession, *, report_id: int, person_id: int, shown: bool, now: datetime
) -> Report:
    """The reporter chooses whether the group card names them (it never does by default)."""
    report = await get(session, report_id)
    if report.reporter_id != person_id:
        raise NotAllowed("report_not_reporter", number=report.label)
    if report.show_name != shown:
        report.show_name = shown
        report.updated_at = now
        await session.flush()
        await changed(session, [report], now)
    return report


# --- lead actions -------------------------------------------------------------------------


@dataclass(frozen=True)
class Changed:
    report: Report
    event: ReportEvent
    credited: bool = False
    target: Report | None = None  # duplicate-of: the report the supporters moved to


async def act(
    session: AsyncSession,
    *,
    auth: Authority,
    report_id: int,
    action: Action | str,
    now: datetime,
    rev: int | None = None,
    note: str | None = None,
    photo: str | None = None,
    assignee_id: int | None = None,
    target_number: int | None = None,
) -> Changed:
    """A lead acts on a report. Locks it, checks the lead covers its unit, the revision they saw
    and that the action is allowed from its status; then changes it, records the event and
    tells the reporter and supporters (and an assignee). Accepting credits the reporter once.
    """
    try:
        action = Action(action)
    except ValueError:
        raise InvalidInput("stale_button") from None
    report = await get(session, report_id, lock=True)
    unit = await require_lead(session, auth, report)
    if rev is not None and rev != report.rev:
        raise Conflict("report_changed", number=report.label, status=report.status)
    if report.status not in ACTIONS[action]:
        if report.status in FINISHED or report.status == Status.resolved:
            raise Conflict("report_closed", number=report.label, status=report.status)
        raise Conflict("report_changed", number=report.label, status=report.status)
    before = report.status
    text = clean_note(
        note,
        required=action in (Action.decline, Action.duplicate) and target_number is None,
        error="report_reason_required",
    )
    credited = False
    target: Report | None = None
    if action in ACCEPTING and report.acknowledged_at is None:
        report.acknowledged_at = now
    if action in ACCEPTING:
        report.overdue = False
        report.escalate_at = None
        credited = await _credit(session, report, by=auth.person_id, now=now)
    after: Status = {
        Action.acknowledge: Status.acknowledged,
        Action.in_progress: Status.in_progress,
        Action.resolve: Status.resolved,
        Action.decline: Status.declined,
        Action.duplicate: Status.duplicate,
        Action.assign: Status.acknowledged if before in UNACKNOWLEDGED else Status(before),
    }[action]
    kind = EVENT_OF[action]
    if action == Action.assign:
        if assignee_id is None:
            raise InvalidInput("stale_button")
        await _check_assignee(session, report, unit, assignee_id)
        report.assignee_id = assignee_id
        session.add(
            ReportAssignment(
                report_id=report_id, assignee_id=assignee_id, by=auth.person_id, at=now
            )
        )
    if action == Action.resolve:
        report.resolved_at = now
        report.followup_due_at = now + FOLLOWUP_WINDOW
    if action == Action.duplicate:
        if target_number is None:
            raise InvalidInput("report_bad_number", text="")
        target = await _merge_into(session, auth, report, target_number, now=now)
        report.duplicate_of = target.id
        text = text or target.label
    if after in FINISHED:
        report.closed_at = now
        report.escalate_at = None
    _set_status(report, after, now)
    await session.flush()
    event = await _event(
        session,
        report,
        kind,
        by=auth.person_id,
        frm=before,
        to=after,
        note=text,
        photo=photo,
        now=now,
    )
    await _tell_followers(session, report, event, now=now)
    await changed(session, [report], now)
    if target is not None:
        await changed(session, [target], now)
    if action == Action.assign and assignee_id is not None and assignee_id != auth.person_id:
        await _notify(session, report, assignee_id, "reports/notice_assigned_you", event, now=now)
    if action == Action.resolve:
        await _ask_followup(session, report, now=now)
    return Changed(report, event, credited, target)


def _set_status(report: Report, status: Status, now: datetime) -> None:
    report.status = status
    report.is_open = status in OPEN
    report.rev += 1
    report.updated_at = now


async def _credit(session: AsyncSession, report: Report, *, by: int, now: datetime) -> bool:
    entry = await points.earn(
        session,
        community_id=report.community_id,
        person_id=report.reporter_id,
        rule_code=CREDIT_RULE,
        key=f"report:{report.id}",
        by=by,
        now=now,
    )
    return entry is not None


async def _check_assignee(
    session: AsyncSession, report: Report, unit: Unit, person_id: int
) -> None:
    """A lead covering the unit, or a verified resident of the community (a volunteer)."""
    if await session.get(Person, person_id) is None:
        raise InvalidInput("report_bad_assignee")
    lead = (
        await session.exec(
            select(Role.id).where(Role.person_id == person_id, col(Role.unit_id).in_(unit.lineage))
        )
    ).first()
    if lead is not None:
        return
    resident = (
        await session.exec(
            select(Resident.id).where(
                Resident.person_id == person_id,
                Resident.community_id == report.community_id,
                Resident.status == ResidentStatus.verified,
            )
        )
    ).first()
    if resident is None:
        raise InvalidInput("report_bad_assignee")


async def _merge_into(
    session: AsyncSession, auth: Authority, report: Report, number: int, *, now: datetime
) -> Report:
    """Duplicate of R-n: the reporter and supporters become supporters of R-n."""
    target = await by_number(session, community_id=report.community_id, number=number)
    if target.id == report.id:
        raise InvalidInput("report_duplicate_self", number=target.label)
    if target.status not in OPEN and target.status != Status.resolved:
        raise Conflict("report_finished", number=target.label, status=target.status)
    await require_lead(session, auth, target)
    moved = 0
    for person_id in [report.reporter_id, *await supporter_ids(session, report.id or 0)]:
        if person_id != target.reporter_id and await _add_supporter(
            session, target.id or 0, person_id, now
        ):
            moved += 1
    if moved:
        await _bump_supporters(session, target.id or 0, moved)
        await session.refresh(target)
    await _event(session, target, EventKind.merged, by=auth.person_id, note=report.label, now=now)
    return target


async def redact(
    session: AsyncSession,
    *,
    auth: Authority,
    report_id: int,
    what: str,
    now: datetime,
) -> Report:
    """Remove the text ("text") or one photo ("photo:<n>") that shows personal data. The bot
    shows the redaction everywhere it shows the report; who and when are kept, not what."""
    report = await get(session, report_id, lock=True)
    await require_lead(session, auth, report)
    if what == "text":
        if not report.text or report.text == REDACTED:
            raise Conflict("report_nothing_to_redact")
        report.text = REDACTED
    elif what.startswith("photo:") and what[6:].isdigit():
        index = int(what[6:])
        if index >= len(report.photos):
            raise Conflict("report_nothing_to_redact")
        report.photos = [p for i, p in enumerate(report.photos) if i != index]
    else:
        raise InvalidInput("stale_button")
    report.updated_at = now
    session.add(ReportRedaction(report_id=report_id, what=what, by=auth.person_id, at=now))
    await session.flush()
    await _event(session, report, EventKind.redacted, by=auth.person_id, note=what, now=now)
    await changed(session, [report], now)
    return report


# --- the neighbours' verdict ----------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    report: Report
    reopened: bool
    closed: bool


async def verdict(
    session: AsyncSession,
    *,
    report_id: int,
    person_id: int,
    fixed: bool,
    now: datetime,
    photo: str | None = None,
) -> Verdict:
    """Is it fixed? The reporter's "fixed" closes the report; "not fixed" from the reporter or
    from two supporters reopens and escalates it. One answer per person per round (a second
    answer replaces the first while the round is open)."""
    report = await get(session, report_id, lock=True)
    supporters = await supporter_ids(session, report_id)
    if person_id != report.reporter_id and person_id not in supporters:
        raise NotAllowed("report_not_yours", number=report.label)
    if report.status != Status.resolved:
        raise Conflict("report_followup_over", number=report.label, status=report.status)
    found = (
        await session.exec(
            select(ReportVerdict).where(
                ReportVerdict.report_id == report_id,
                ReportVerdict.round == report.round,
                ReportVerdict.person_id == person_id,
            )
        )
    ).first()
    if found is None:
        found = ReportVerdict(
            report_id=report_id, round=report.round, person_id=person_id, fixed=fixed, at=now
        )
        session.add(found)
    found.fixed, found.at = fixed, now
    found.photo = photo or found.photo
    await session.flush()
    await _event(
        session,
        report,
        EventKind.verdict,
        by=person_id,
        note="fixed" if fixed else "not_fixed",
        photo=photo,
        now=now,
    )
    await changed(session, [report], now)
    if fixed and person_id == report.reporter_id:
        await _close(session, report, fixed=True, by=person_id, now=now)
        return Verdict(report, reopened=False, closed=True)
    if not fixed:
        not_fixed = (
            await session.exec(
                select(func.count()).where(
                    ReportVerdict.report_id == report_id,
                    ReportVerdict.round == report.round,
                    ReportVerdict.person_id != report.reporter_id,
                    col(ReportVerdict.fixed).is_(False),
                )
            )
        ).one()
        if person_id == report.reporter_id or int(not_fixed) >= REOPEN_SUPPORTERS:
            await _reopen(session, report, by=person_id, now=now)
            return Verdict(report, reopened=True, closed=False)
    return Verdict(report, reopened=False, closed=False)


async def verdict_photo(
    session: AsyncSession,
    *,
    report_id: int,
    person_id: int,
    round: int,
    photo: str | None,
    note: str | None,
    now: datetime,
) -> Report:
    """What a neighbour shows with their "not fixed" (a photo, a few words): kept with their
    answer of that round and in the history leads see, with the photo by Telegram file id."""
    report = await get(session, report_id, lock=True)
    found = (
        await session.exec(
            select(ReportVerdict).where(
                ReportVerdict.report_id == report_id,
                ReportVerdict.round == round,
                ReportVerdict.person_id == person_id,
            )
        )
    ).first()
    if found is None or found.fixed:
        raise Conflict("report_followup_over", number=report.label, status=report.status)
    words = clean_note(note)
    if not photo and not words:
        raise InvalidInput("report_verdict_empty")
    found.photo = photo or found.photo
    await session.flush()
    await _event(session, report, EventKind.verdict, by=person_id, note=words or "not_fixed",
                 photo=photo, now=now)  # fmt: skip
    return report


async def photos_of(session: AsyncSession, report: Report) -> list[tuple[str, str]]:
    """Every photo about a report, for leads: the reporter's (unless redacted), then those of
    the history (a resolution, a "not fixed"), as (file id, event kind)."""
    found = [(p, "filed") for p in report.photos if p != REDACTED]
    found += [(e.photo, e.kind) for e in await events(session, report.id or 0) if e.photo]
    return found


async def on_agenda(session: AsyncSession, report_id: int) -> agenda.Proposal | None:
    """The proposal a report was put on the agenda as, if it was."""
    query = select(agenda.Proposal).where(agenda.Proposal.origin == f"report:{report_id}")
    return (await session.exec(query)).first()


async def put_on_agenda(
    session: AsyncSession, *, auth: Authority, report_id: int, now: datetime
) -> agenda.Proposal:
    """A lead puts a report on its unit's agenda (one proposal per report): its number,
    category and unit as the title; the text only when the report was public already (a
    private report's words may name a flat). The event is recorded; the agenda posts the
    proposal's card in the unit's chats."""
    report = await get(session, report_id, lock=True)
    unit = await require_lead(session, auth, report)
    if report.status in FINISHED:
        raise Conflict("report_closed", number=report.label, status=report.status)
    if await on_agenda(session, report.id or 0) is not None:
        raise Conflict("report_on_agenda", number=report.label)
    community = await get_community(session, report.community_id)
    cat = await get_category(
        session, community_id=report.community_id, code=report.category, now=now
    )
    public = report.visibility == Visibility.group and report.text != REDACTED
    # A private report's number is not for the unit's chats; its category and unit are.
    title = f"{cat.name(community.language)} · {unit.name}"
    if public:
        title = f"{report.label} {title}"
    proposal = await agenda.propose(
        session,
        auth=auth,
        unit_id=unit.id or 0,
        title=title[: agenda.TITLE_LIMIT],
        body=report.text[: agenda.BODY_LIMIT] if public else "",
        now=now,
        origin=f"report:{report.id}",
    )
    await _event(session, report, EventKind.agenda, by=auth.person_id, note=proposal.title,
                 now=now)  # fmt: skip
    return proposal


async def rate(
    session: AsyncSession, *, report_id: int, person_id: int, rating: int, now: datetime
) -> ReportVerdict:
    """1–5 stars, after answering "is it fixed?" in the report's latest round."""
    if isinstance(rating, bool) or not 1 <= rating <= 5:
        raise InvalidInput("report_bad_rating")
    report = await get(session, report_id)
    found = (
        await session.exec(
            select(ReportVerdict)
            .where(ReportVerdict.report_id == report_id, ReportVerdict.person_id == person_id)
            .order_by(col(ReportVerdict.round).desc())
        )
    ).first()
    if found is None:
        raise Conflict("report_rate_first", number=report.label)
    found.rating, found.at = rating, now
    await session.flush()
    await changed(session, [report], now)
    return found


async def _close(
    session: AsyncSession, report: Report, *, fixed: bool | None, by: int | None, now: datetime
) -> ReportEvent:
    before = report.status
    report.fixed = fixed
    report.closed_at = now
    report.followup_due_at = None
    _set_status(report, Status.closed, now)
    await session.flush()
    event = await _event(
        session,
        report,
        EventKind.closed,
        by=by,
        frm=before,
        to=Status.closed,
        note="fixed" if fixed else "no_answer",
        now=now,
    )
    await _tell_followers(session, report, event, now=now)
    await changed(session, [report], now)
    return event


async def _reopen(session: AsyncSession, report: Report, *, by: int, now: datetime) -> None:
    """Not fixed: back to the leads, one unit higher than before."""
    before = report.status
    cat = await get_category(
        session, community_id=report.community_id, code=report.category, now=now
    )
    report.round += 1
    report.reopened += 1
    report.fixed = None
    report.resolved_at = None
    report.followup_due_at = None
    _set_status(report, Status.reopened, now)
    event = await _event(
        session, report, EventKind.reopened, by=by, frm=before, to=Status.reopened, now=now
    )
    await _tell_followers(session, report, event, now=now)
    await _escalate(session, report, now=now, hours=cat.hours, overdue=False)


async def _ask_followup(session: AsyncSession, report: Report, *, now: datetime) -> None:
    """The "is it fixed?" card in the reporter's and each supporter's private chat."""
    for person_id in [report.reporter_id, *await supporter_ids(session, report.id or 0)]:
        await outbox.post_card(
            session,
            kind=ASK_CARD,
            subject_id=report.id or 0,
            chat_id=person_id,
            person_id=person_id,
            community_id=report.community_id,
            now=now,
            round=str(report.round),
        )


async def my_verdict(
    session: AsyncSession, *, report: Report, person_id: int
) -> ReportVerdict | None:
    """This person's latest answer to "is it fixed?" about the report."""
    found = await session.exec(
        select(ReportVerdict)
        .where(ReportVerdict.report_id == report.id, ReportVerdict.person_id == person_id)
        .order_by(col(ReportVerdict.round).desc())
    )
    return found.first()


async def changed(session: AsyncSession, subjects: Sequence[Report], now: datetime) -> None:
    """Every posted card about these reports shows their new state (edits coalesced by the
    outbox).

    One look for the cards that have a copy out (sent, or being sent) first: a report's cards
    are usually not all posted, and a copy still waiting renders the new state when it goes.
    """
    cards = {
        outbox.card_of(kind, report.id or 0): (kind, report.id or 0)
        for report in subjects
        for kind in CARDS
    }
    for i in range(0, len(cards), BATCH):
        chunk = list(cards)[i : i + BATCH]
        out = await session.exec(
            select(outbox.Delivery.card)
            .where(
                col(outbox.Delivery.card).in_(chunk),
                col(outbox.Delivery.edits).is_(None),
                (col(outbox.Delivery.status) == outbox.Status.sent) | outbox.in_flight(now),
            )
            .distinct()
        )
        for card in out.all():
            if card in cards:
                kind, subject_id = cards[card]
                await outbox.mark_changed(session, kind=kind, subject_id=subject_id, now=now)


# --- escalation and follow-up: rows due at a time -----------------------------------------


async def _leads_at(session: AsyncSession, unit_ids: Sequence[int]) -> dict[int, list[int]]:
    """People whose role is on each of these units (lead or admin), by unit."""
    if not unit_ids:
        return {}
    rows = await session.exec(
        select(Role.unit_id, Role.person_id)
        .where(col(Role.unit_id).in_(set(unit_ids)))
        .order_by(col(Role.id))
    )
    found: dict[int, list[int]] = {}
    for unit_id, person_id in rows.all():
        found.setdefault(int(unit_id), [])
        if int(person_id) not in found[int(unit_id)]:
            found[int(unit_id)].append(int(person_id))
    return found


async def _admins(session: AsyncSession, community_id: int) -> list[int]:
    rows = await session.exec(
        select(Role.person_id)
        .join(Unit, col(Unit.id) == col(Role.unit_id))
        .where(Unit.community_id == community_id, Role.kind == RoleKind.admin)
        .order_by(col(Role.id))
    )
    return list(dict.fromkeys(int(p) for p in rows.all()))


@dataclass
class _Chain:
    """Who hears about a report at each escalation level: the leads of the report's unit, then
    of each unit above with leads, then the community's admins. Cached per rhythm tick."""

    leads: dict[int, list[int]] = field(default_factory=dict)
    admins: dict[int, list[int]] = field(default_factory=dict)

    async def load(self, session: AsyncSession, units: Sequence[Unit]) -> None:
        wanted = {u for unit in units for u in unit.lineage} - self.leads.keys()
        found = await _leads_at(session, list(wanted))
        for unit_id in wanted:
            self.leads[unit_id] = found.get(unit_id, [])
        for community_id in {u.community_id for u in units} - self.admins.keys():
            self.admins[community_id] = await _admins(session, community_id)

    def levels(self, unit: Unit) -> list[list[int]]:
        """The groups of people told, nearest first; units without leads are skipped."""
        steps = [self.leads[u] for u in reversed(unit.lineage) if self.leads.get(u)]
        admins = self.admins.get(unit.community_id, [])
        if admins and (not steps or set(admins) != set(steps[-1])):
            steps.append(admins)
        return steps


async def _tell_leads(
    session: AsyncSession, report: Report, unit: Unit, *, level: int, kind: str, now: datetime
) -> bool:
    """Tell the people at escalation `level`; False when there is no such level (top reached)."""
    chain = _Chain()
    await chain.load(session, [unit])
    return await _tell_level(session, report, chain.levels(unit), level, kind, now)


def _level_cards(
    report: Report, levels: list[list[int]], level: int, kind: str, now: datetime
) -> list[dict[str, Any]] | None:
    """The lead cards telling the people at escalation `level` (outbox rows); None when there
    is no such level (the top was reached)."""
    if level >= len(levels):
        return None
    return [
        outbox.card_row(
            kind=LEAD_CARD,
            subject_id=report.id or 0,
            chat_id=person_id,
            person_id=person_id,
            community_id=report.community_id,
            now=now,
            round=f"{kind}{level}r{report.round}",
            urgent=kind == "overdue",
            priority=outbox.Priority.reminder,
        )
        for person_id in levels[level]
    ]


async def _tell_level(
    session: AsyncSession,
    report: Report,
    levels: list[list[int]],
    level: int,
    kind: str,
    now: datetime,
) -> bool:
    rows = _level_cards(report, levels, level, kind, now)
    if rows is None:
        return False
    await outbox.enqueue_many(session, rows)
    return True


def _step_up(
    report: Report, levels: list[list[int]], *, now: datetime, hours: int, overdue: bool
) -> tuple[list[dict[str, Any]], ReportEvent]:
    """Move the report one level up (in memory): the cards to queue and the event to add."""
    level = report.escalation_level + 1
    rows = _level_cards(report, levels, level, "overdue" if overdue else "reopened", now)
    if rows is not None:
        report.escalation_level = level
    report.overdue = report.overdue or overdue
    # Past the top (the admins were told), it stays overdue and stops escalating.
    report.escalate_at = now + timedelta(hours=hours) if level + 1 < len(levels) else None
    report.updated_at = now
    event = _new_event(report, EventKind.escalated, by=None, note=str(report.escalation_level),
                       now=now)  # fmt: skip
    return rows or [], event


async def _escalate(
    session: AsyncSession, report: Report, *, now: datetime, hours: int, overdue: bool
) -> None:
    unit = await get_unit(session, report.unit_id)
    chain = _Chain()
    await chain.load(session, [unit])
    rows, event = _step_up(report, chain.levels(unit), now=now, hours=hours, overdue=overdue)
    await outbox.enqueue_many(session, rows)
    session.add(event)
    await session.flush()
    await changed(session, [report], now)


async def _due(session: AsyncSession, column: Any, now: datetime) -> list[Report]:
    query = select(Report).where(column <= now).order_by(column, col(Report.id)).limit(BATCH)
    if _is_pg(session):
        query = query.with_for_update(skip_locked=True)
    return list((await session.exec(query)).all())


async def escalate_due(session: AsyncSession, now: datetime) -> int:
    """Every unacknowledged report past its time goes to the next level up. Returns how many.

    A batch of due reports costs a fixed number of statements, whatever its size: the units
    and the people of every level at once, the cards and the events in one insert each, the
    reports' changes in one flush, one look for posted cards to edit."""
    done = 0
    chain = _Chain()
    hours: dict[int, dict[str, ReportCategory]] = {}
    while batch := await _due(session, col(Report.escalate_at), now):
        units = await units_by_id(session, [r.unit_id for r in batch])
        await chain.load(session, list(units.values()))
        for community_id in {r.community_id for r in batch} - hours.keys():
            hours[community_id] = await _category_map(session, community_id, now)
        cards: list[dict[str, Any]] = []
        moved: list[Report] = []
        for report in batch:
            if report.status not in UNACKNOWLEDGED:
                report.escalate_at = None
                continue
            cat = hours[report.community_id].get(report.category)
            rows, event = _step_up(
                report,
                chain.levels(units[report.unit_id]),
                now=now,
                hours=cat.hours if cat else DEFAULT_HOURS,
                overdue=True,
            )
            cards += rows
            session.add(event)
            moved.append(report)
        await outbox.enqueue_many(session, cards)
        await session.flush()
        await changed(session, moved, now)
        done += len(moved)
    return done


async def close_unanswered(session: AsyncSession, now: datetime) -> int:
    """A resolved report nobody judged within 3 days closes as resolved."""
    done = 0
    while batch := await _due(session, col(Report.followup_due_at), now):
        for report in batch:
            if report.status != Status.resolved:
                report.followup_due_at = None
                continue
            await _close(session, report, fixed=None, by=None, now=now)
            done += 1
        await session.flush()
    return done


async def due_work(session: AsyncSession, now: datetime) -> int:
    """The reports rhythm: escalations and follow-ups that came due."""
    return await escalate_due(session, now) + await close_unanswered(session, now)


# --- telling people -----------------------------------------------------------------------


def _new_event(
    report: Report,
    kind: EventKind,
    *,
    by: int | None,
    now: datetime,
    frm: str | None = None,
    to: str | None = None,
    note: str = "",
    photo: str | None = None,
) -> ReportEvent:
    return ReportEvent(
        report_id=report.id or 0,
        kind=kind,
        by=by,
        from_status=frm,
        to_status=to,
        note=note[:NOTE_LIMIT],
        photo=photo,
        at=now,
    )


async def _event(
    session: AsyncSession,
    report: Report,
    kind: EventKind,
    *,
    by: int | None,
    now: datetime,
    **fields: Any,
) -> ReportEvent:
    event = _new_event(report, kind, by=by, now=now, **fields)
    session.add(event)
    await session.flush()
    return event


async def _context(session: AsyncSession, report: Report) -> dict[str, Any]:
    """Plain values for the outbox: what any message about the report needs, and nothing a
    group may not see beyond what the template shows (no flat, no hidden name)."""
    unit = await get_unit(session, report.unit_id)
    cat = await get_category(
        session, community_id=report.community_id, code=report.category, now=report.created_at
    )
    return {
        "report_id": report.id,
        "number": report.label,
        "category": {"zh": cat.name_zh, "en": cat.name_en},
        "unit": unit.name,
        "place": shown_place(report),
        "status": report.status,
    }


async def _notify(
    session: AsyncSession,
    report: Report,
    person_id: int,
    template: str,
    event: ReportEvent,
    *,
    now: datetime,
) -> None:
    context = await _context(session, report)
    context.update(event=event.kind, note=event.note, to=event.to_status)
    await outbox.enqueue_private(
        session,
        key=f"report:{report.id}:ev:{event.id}:{person_id}",
        person_id=person_id,
        community_id=report.community_id,
        template=template,
        context=context,
        now=now,
        photo=event.photo,
    )


async def _tell_followers(
    session: AsyncSession, report: Report, event: ReportEvent, *, now: datetime
) -> None:
    """The reporter and supporters hear of a change, each in their own language; not the one
    who made it."""
    for person_id in [report.reporter_id, *await supporter_ids(session, report.id or 0)]:
        if person_id != event.by:
            await _notify(session, report, person_id, "reports/notice_change", event, now=now)


# --- lists ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Page:
    reports: list[Report]
    total: int


def _in_units(query: Any, unit_ids: Sequence[int] | None) -> Any:
    return query if unit_ids is None else query.where(col(Report.unit_id).in_(set(unit_ids)))


async def open_list(
    session: AsyncSession,
    *,
    community_id: int,
    unit_ids: Sequence[int] | None,
    offset: int = 0,
    limit: int = 8,
    status: str | None = None,
    category: str | None = None,
) -> Page:
    """A lead's /reports: overdue first, then most supported, then oldest.

    `unit_ids` None is the whole community; `status` one of the open statuses or "resolved"
    (waiting for the verdict); without it every open one.
    """
    query: Any = select(Report).where(Report.community_id == community_id)
    if status is None:
        query = query.where(col(Report.is_open).is_(True))
    else:
        if status not in Status.__members__:
            raise InvalidInput("stale_button")
        query = query.where(col(Report.is_open).is_(status in OPEN), Report.status == status)
    if category is not None:
        query = query.where(Report.category == category)
    query = _in_units(query, unit_ids)
    total = (await session.exec(select(func.count()).select_from(query.subquery()))).one()
    rows = await session.exec(
        query.order_by(
            col(Report.overdue).desc(),
            col(Report.supporters).desc(),
            col(Report.created_at),
            col(Report.id),
        )
        .offset(offset)
        .limit(limit)
    )
    return Page(list(rows.all()), int(total))


async def mine(
    session: AsyncSession, *, person_id: int, limit: int = 20
) -> list[tuple[Report, bool]]:
    """/myreports: the person's reports and the ones they support, latest change first;
    (report, is it theirs)."""
    supported = select(ReportSupporter.report_id).where(ReportSupporter.person_id == person_id)
    rows = await session.exec(
        select(Report)
        .where(or_(col(Report.reporter_id) == person_id, col(Report.id).in_(supported)))
        .order_by(col(Report.updated_at).desc(), col(Report.id).desc())
        .limit(limit)
    )
    return [(r, r.reporter_id == person_id) for r in rows.all()]


async def last_events(session: AsyncSession, report_ids: Sequence[int]) -> dict[int, ReportEvent]:
    if not report_ids:
        return {}
    latest = (
        select(func.max(ReportEvent.id))
        .where(col(ReportEvent.report_id).in_(set(report_ids)))
        .group_by(col(ReportEvent.report_id))
    )
    rows = await session.exec(select(ReportEvent).where(col(ReportEvent.id).in_(latest)))
    return {e.report_id: e for e in rows.all()}


# --- reply templates ----------------------------------------------------------------------


async def reply_templates(session: AsyncSession, *, community_id: int) -> list[ReplyTemplate]:
    rows = await session.exec(
        select(ReplyTemplate)
        .where(ReplyTemplate.community_id == community_id)
        .order_by(col(ReplyTemplate.title))
    )
    return list(rows.all())


def leads_of(auth: Authority, community_id: int) -> bool:
    """Whether the person leads any unit of the community (or is a super-admin)."""
    return auth.superadmin or any(u.community_id == community_id for u, _ in auth.roles)


async def save_reply_template(
    session: AsyncSession,
    *,
    auth: Authority,
    community_id: int,
    title: str,
    text: str,
    now: datetime,
) -> ReplyTemplate:
    """Any lead of the community saves one; titles are unique per community."""
    if not leads_of(auth, community_id):
        raise NotAllowed("leads_only")
    title = clean_name(title, limit=TEMPLATE_TITLE_LIMIT)
    body = clean_note(text, required=True, error="report_note_required")
    clash = (
        await session.exec(
            select(ReplyTemplate).where(
                ReplyTemplate.community_id == community_id, ReplyTemplate.title == title
            )
        )
    ).first()
    if clash is not None:
        raise Conflict("report_template_exists", name=title)
    found = ReplyTemplate(
        community_id=community_id, title=title, text=body, created_by=auth.person_id, created_at=now
    )
    session.add(found)
    await session.flush()
    return found


async def reply_template(
    session: AsyncSession, *, auth: Authority, template_id: int
) -> ReplyTemplate:
    found = await session.get(ReplyTemplate, template_id)
    if found is None or not leads_of(auth, found.community_id):
        raise NotFound("report_template_not_found")
    return found


async def delete_reply_template(
    session: AsyncSession, *, auth: Authority, template_id: int
) -> None:
    found = await reply_template(session, auth=auth, template_id=template_id)
    await session.delete(found)
    await session.flush()


# --- stats and export ---------------------------------------------------------------------


def _hours(a: datetime | None, b: datetime | None) -> float | None:
    return None if a is None or b is None else (b - a).total_seconds() / 3600


def _median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


@dataclass(frozen=True)
class Stats:
    total: int
    by_category: dict[str, int]
    by_status: dict[str, int]
    median_ack_hours: float | None
    median_resolve_hours: float | None
    fixed_within_target: float | None  # share of resolved ones fixed within their fix target
    reopen_rate: float | None  # share of resolved-at-least-once ones that were reopened
    average_rating: float | None
    ratings: int
    weeks: list[tuple[str, int, int]]  # (week starting, opened, resolved)


async def _reports_in(
    session: AsyncSession, *, unit: Unit, start: datetime | None, end: datetime | None
) -> list[Report]:
    units = select(Unit.id).where(col(Unit.path).startswith(unit.path))
    query = select(Report).where(
        Report.community_id == unit.community_id, col(Report.unit_id).in_(units)
    )
    if start is not None:
        query = query.where(col(Report.created_at) >= start)
    if end is not None:
        query = query.where(col(Report.created_at) < end)
    return list((await session.exec(query.order_by(col(Report.created_at)))).all())


async def stats(
    session: AsyncSession,
    *,
    unit: Unit,
    start: datetime,
    end: datetime,
    now: datetime,
    zone: str,
) -> Stats:
    """Reports filed in [start, end) in the unit and below."""
    found = await _reports_in(session, unit=unit, start=start, end=end)
    cats = await _category_map(session, unit.community_id, now)
    ack = [h for r in found if (h := _hours(r.created_at, r.acknowledged_at)) is not None]
    resolved = [r for r in found if r.resolved_at is not None or r.reopened or r.fixed is not None]
    fix = [h for r in found if (h := _hours(r.created_at, r.resolved_at)) is not None]
    within = [
        r
        for r in found
        if r.resolved_at is not None
        and (h := _hours(r.created_at, r.resolved_at)) is not None
        and h <= (cats[r.category].fix_hours if r.category in cats else DEFAULT_FIX_HOURS)
    ]
    ids = [r.id for r in found if r.id is not None]
    ratings: list[int] = []
    if ids:
        rows = await session.exec(
            select(ReportVerdict.rating).where(
                col(ReportVerdict.report_id).in_(ids), col(ReportVerdict.rating).is_not(None)
            )
        )
        ratings = [int(r) for r in rows.all() if r is not None]
    return Stats(
        total=len(found),
        by_category=dict(Counter(r.category for r in found).most_common()),
        by_status=dict(Counter(r.status for r in found).most_common()),
        median_ack_hours=_median(ack),
        median_resolve_hours=_median(fix),
        fixed_within_target=len(within) / len(fix) if fix else None,
        reopen_rate=sum(1 for r in resolved if r.reopened) / len(resolved) if resolved else None,
        average_rating=sum(ratings) / len(ratings) if ratings else None,
        ratings=len(ratings),
        weeks=_weeks(found, start, end, zone),
    )


def _weeks(
    found: Sequence[Report], start: datetime, end: datetime, zone: str
) -> list[tuple[str, int, int]]:
    """Opened and resolved per week (weeks start on Monday in the community's zone)."""
    tz = ZoneInfo(zone)

    def monday(moment: datetime) -> str:
        day = moment.astimezone(tz).date()
        return (day - timedelta(days=day.weekday())).isoformat()

    weeks: dict[str, list[int]] = {}
    cursor = start
    while cursor < end:
        weeks.setdefault(monday(cursor), [0, 0])
        cursor += timedelta(days=7)
    for r in found:
        weeks.setdefault(monday(r.created_at), [0, 0])[0] += 1
        if r.resolved_at is not None and start <= r.resolved_at < end:
            weeks.setdefault(monday(r.resolved_at), [0, 0])[1] += 1
    return [(w, o, s) for w, (o, s) in sorted(weeks.items())]


EXPORT_COLUMNS = (
    "number",
    "created",
    "unit",
    "category",
    "place",
    "floor",
    "status",
    "supporters",
    "reporter",
    "text",
    "acknowledged",
    "resolved",
    "closed",
    "fixed",
    "rating",
    "reopened",
)


async def export_rows(
    session: AsyncSession,
    *,
    community_id: int,
    start: datetime | None,
    end: datetime | None,
    lang: str,
    zone: str,
) -> list[list[str]]:
    """One row per report filed in [start, end), oldest first, every typed cell made safe for a
    spreadsheet (a leading = + - @ would be run as a formula)."""
    query = select(Report).where(Report.community_id == community_id)
    if start is not None:
        query = query.where(col(Report.created_at) >= start)
    if end is not None:
        query = query.where(col(Report.created_at) < end)
    found = list((await session.exec(query.order_by(col(Report.created_at), col(Report.id)))).all())
    units = await units_by_id(session, [r.unit_id for r in found])
    people_rows = await session.exec(
        select(Person.id, Person.name).where(col(Person.id).in_({r.reporter_id for r in found}))
    )
    names = {int(i): n for i, n in people_rows.all()}
    cats = await _category_map(session, community_id, datetime.now(ZoneInfo(zone)))
    ratings: dict[int, list[int]] = {}
    if found:
        rows = await session.exec(
            select(ReportVerdict.report_id, ReportVerdict.rating).where(
                col(ReportVerdict.report_id).in_([r.id for r in found]),
                col(ReportVerdict.rating).is_not(None),
            )
        )
        for report_id, rating in rows.all():
            ratings.setdefault(int(report_id), []).append(int(rating or 0))
    tz = ZoneInfo(zone)

    def when(moment: datetime | None) -> str:
        return moment.astimezone(tz).strftime("%Y-%m-%d %H:%M") if moment else ""

    out = []
    for r in found:
        given = ratings.get(r.id or 0, [])
        out.append(
            [
                r.label,
                when(r.created_at),
                spreadsheet_safe(units[r.unit_id].name if r.unit_id in units else ""),
                spreadsheet_safe(cats[r.category].name(lang) if r.category in cats else r.category),
                r.place or "",
                "" if r.floor is None else str(r.floor),
                r.status,
                str(r.supporters),
                spreadsheet_safe(names.get(r.reporter_id, "")),
                spreadsheet_safe(r.text),
                when(r.acknowledged_at),
                when(r.resolved_at),
                when(r.closed_at),
                "" if r.fixed is None else ("yes" if r.fixed else "no"),
                f"{sum(given) / len(given):.1f}" if given else "",
                str(r.reopened),
            ]
        )
    return out


# --- the weekly digest's section ----------------------------------------------------------


@digest.section("reports", template="reports/digest", order=10)
async def digest_section(
    session: AsyncSession, community: Community, units: Sequence[Unit], week: digest.Week
) -> dict[int, dict[str, Any]]:
    """For each unit: new, resolved and still open reports in it and below, overdue ones, the
    median time to fix and the neighbours' average rating of the week."""
    assert community.id is not None
    start, end = week.start, week.end
    by_path = {u.path: u.id for u in units if u.id is not None}
    interesting = sa.select(
        col(Report.id),
        col(Report.unit_id),
        col(Report.created_at),
        col(Report.resolved_at),
        col(Report.is_open),
        col(Report.overdue),
    ).where(
        col(Report.community_id) == community.id,
        col(Report.is_open).is_(True)
        | ((col(Report.created_at) >= start) & (col(Report.created_at) < end))
        | ((col(Report.resolved_at) >= start) & (col(Report.resolved_at) < end)),
    )
    rows = (await (await session.connection()).execute(interesting)).all()
    if not rows:
        return {}
    unit_paths = {
        int(i or 0): p
        for i, p in (
            await session.exec(select(Unit.id, Unit.path).where(Unit.community_id == community.id))
        ).all()
    }
    rated = await session.exec(
        select(ReportVerdict.report_id, ReportVerdict.rating)
        .join(Report, col(Report.id) == col(ReportVerdict.report_id))
        .where(
            Report.community_id == community.id,
            col(ReportVerdict.rating).is_not(None),
            col(ReportVerdict.at) >= start,
            col(ReportVerdict.at) < end,
        )
    )
    rating_rows = list(rated.all())
    report_unit = {int(r[0] or 0): int(r[1]) for r in rows}
    missing = {int(i) for i, _ in rating_rows} - report_unit.keys()
    if missing:
        extra = await session.exec(
            select(Report.id, Report.unit_id).where(col(Report.id).in_(missing))
        )
        report_unit.update({int(i or 0): int(u) for i, u in extra.all()})

    def targets(unit_id: int) -> list[int]:
        path = unit_paths.get(unit_id, "")
        ids = [p for p in path.strip("/").split("/") if p]
        return [
            uid
            for k in range(len(ids))
            if (uid := by_path.get("/" + "/".join(ids[: k + 1]) + "/")) is not None
        ]

    tally: dict[int, dict[str, Any]] = {}

    def bucket(uid: int) -> dict[str, Any]:
        return tally.setdefault(
            uid, {"new": 0, "resolved": 0, "open": 0, "overdue": 0, "fix": [], "ratings": []}
        )

    for _rid, unit_id, created, resolved, is_open, overdue in rows:
        for uid in targets(int(unit_id)):
            b = bucket(uid)
            if start <= created < end:
                b["new"] += 1
            if resolved is not None and start <= resolved < end:
                b["resolved"] += 1
                b["fix"].append((resolved - created).total_seconds() / 3600)
            if is_open:
                b["open"] += 1
                b["overdue"] += 1 if overdue else 0
    for report_id, rating in rating_rows:
        for uid in targets(report_unit.get(int(report_id), 0)):
            bucket(uid)["ratings"].append(int(rating or 0))
    out: dict[int, dict[str, Any]] = {}
    for uid, b in tally.items():
        if not (b["new"] or b["resolved"] or b["open"]):
            continue
        fix = _median(b["fix"])
        out[uid] = {
            "new": b["new"],
            "resolved": b["resolved"],
            "open": b["open"],
            "overdue": b["overdue"],
            "median_fix_hours": None if fix is None else round(fix, 1),
            "rating": round(sum(b["ratings"]) / len(b["ratings"]), 1) if b["ratings"] else None,
        }
    return out
