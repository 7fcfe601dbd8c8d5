"""Announcements leads post to their units' chats: drafts, schedules, recurrence, cancelling.

Times of day are local to the community. Recurrence rules, chosen for people who think in
wall-clock time:
- weekly days are 0 (Monday) … 6 (Sunday); monthly days are 1 … 31, and a day a month lacks
  (31 in April, 29–31 in February) falls on that month's last day, once;
- a local time the clock skips (spring forward) is sent that much later (02:30 → 03:30), and
  a local time that happens twice (fall back) is sent the first time;
- an occurrence the bot missed by more than MISSED_GRACE (it was down) is skipped for
  recurring schedules, since the next one will come; a one-off is still sent, late, because
  the lead was told it would go out.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Column, Text, func
from sqlmodel import Field, SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from models import outbox, when
from models.base import TelegramId, UTCDateTime, must_get
from models.errors import Conflict, InvalidInput
from models.people import (
    Authority,
    Chat,
    ChatLink,
    Community,
    Person,
    Unit,
    get_unit,
    links_of_units,
    require,
    subtree,
)
from models.when import local_date, local_moment, month_days

TEMPLATE = "announce/post"
KEY_PREFIX = "ann"
# The rhythm runs every minute; occurrences this close are handed to the outbox with their
# exact due time, so a late or skipped tick still sends them on time.
LOOKAHEAD = timedelta(minutes=5)
MISSED_GRACE = timedelta(hours=2)
TEXT_LIMIT = 3500  # Telegram allows 4096 for a message, with room for the header and name
CAPTION_LIMIT = 900  # …and 1024 for a photo's caption
PREVIEW = 60
CANCELLED = "cancelled"


class ScheduleKind(StrEnum):
    once = "once"
    weekly = "weekly"
    monthly = "monthly"


class AnnouncementStatus(StrEnum):
    active = "active"
    cancelled = "cancelled"


# --- tables -------------------------------------------------------------------------------


class Announcement(SQLModel, table=True):
    """A notice to a unit's chats (optionally its whole subtree), once or on a rhythm."""

    id: int | None = Field(default=None, primary_key=True)
    community_id: int = Field(foreign_key="community.id", index=True)
    unit_id: int = Field(foreign_key="unit.id", index=True)
    subtree: bool = False
    text: str = Field(sa_column=Column(Text, nullable=False))
    photo: str | None = Field(default=None, max_length=300)
    created_by: int = Field(sa_type=TelegramId, foreign_key="person.id")
    created_at: datetime = Field(sa_type=UTCDateTime)
    pin: bool = False
    silent: bool = False
    kind: str = Field(default=ScheduleKind.once, max_length=10)
    days: list[int] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    at: time  # local time of day in the community's zone
    first_due: datetime = Field(sa_type=UTCDateTime)
    next_occurrence: datetime | None = Field(default=None, sa_type=UTCDateTime, index=True)
    last_occurrence: datetime | None = Field(default=None, sa_type=UTCDateTime)
    status: str = Field(default=AnnouncementStatus.active, max_length=12, index=True)
    cancelled_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    cancelled_by: int | None = Field(default=None, sa_type=TelegramId)


# --- recurrence (pure) ----------------------------------------------------------------------


@dataclass(frozen=True)
class Schedule:
    kind: str
    at: time
    zone: str
    days: tuple[int, ...] = ()


def falls_on(schedule: Schedule, day: date) -> bool:
    if schedule.kind == ScheduleKind.weekly:
        return day.weekday() in schedule.days
    if schedule.kind == ScheduleKind.monthly:
        return day.day in month_days(day.year, day.month, schedule.days)
    return False


def following(schedule: Schedule, moment: datetime, *, inclusive: bool) -> datetime | None:
    """The first occurrence after `moment` (or at it, if inclusive) of a recurring schedule."""
    if schedule.kind not in (ScheduleKind.weekly, ScheduleKind.monthly) or not schedule.days:
        return None
    # From the day before: a local time early in the day may still be ahead in UTC terms.
    day = local_date(moment, schedule.zone) - timedelta(days=1)
    for _ in range(400):
        if falls_on(schedule, day):
            found = local_moment(day, schedule.at, schedule.zone)
            if found > moment or (inclusive and found == moment):
                return found
        day += timedelta(days=1)
    return None


def first_occurrence(schedule: Schedule, start: datetime) -> datetime | None:
    """When a schedule starting at `start` first sends: start itself for a one-off."""
    if schedule.kind == ScheduleKind.once:
        return start
    return following(schedule, start, inclusive=True)


def next_after(schedule: Schedule, moment: datetime) -> datetime | None:
    """The occurrence after the one at `moment`; None once a one-off has gone out."""
    if schedule.kind == ScheduleKind.once:
        return None
    return following(schedule, moment, inclusive=False)


def upcoming(schedule: Schedule, start: datetime, count: int) -> list[datetime]:
    first = first_occurrence(schedule, start)
    found = [first] if first is not None else []
    while found and len(found) < count:
        later = next_after(schedule, found[-1])
        if later is None:
            break
        found.append(later)
    return found


def clamped_days(schedule: Schedule) -> list[int]:
    """Monthly days some months lack (29, 30, 31): the confirmation says where they go."""
    if schedule.kind != ScheduleKind.monthly:
        return []
    return sorted(d for d in schedule.days if d >= 29)


def occurrence_key(announcement_id: int, moment: datetime, zone: str) -> str:
    return f"{KEY_PREFIX}:{announcement_id}:{local_date(moment, zone):%Y%m%d}"


def report_prefix(announcement_id: int) -> str:
    return f"{KEY_PREFIX}:{announcement_id}:"


def text_size(text: str) -> int:
    """Length as Telegram counts it (UTF-16 code units)."""
    return len(text.encode("utf-16-le")) // 2


def clean_text(text: str | None, *, photo: bool) -> str:
    """The text as typed (markup and all: it is escaped when shown), refusing empty or long."""
    cleaned = (text or "").strip()
    if not cleaned:
        raise InvalidInput("announce_empty")
    limit = CAPTION_LIMIT if photo else TEXT_LIMIT
    if text_size(cleaned) > limit:
        raise InvalidInput("announce_too_long", limit=limit)
    return cleaned


def preview(text: str, limit: int = PREVIEW) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


# --- what a lead chose in /announce (their guided flow's data, see handlers/announce.py) ------


@dataclass(frozen=True)
class Draft:
    """An announcement before it is confirmed: nothing is sent from it, nothing is stored but the
    lead's flow (models.flows). `start` None means "now" (and once)."""

    unit_id: int
    subtree: bool
    text: str
    photo: str | None
    start: datetime | None
    kind: str = ScheduleKind.once
    days: tuple[int, ...] = ()
    pin: bool = False
    silent: bool = False


async def aim(session: AsyncSession, *, auth: Authority, unit_id: int) -> Unit:
    """The unit an announcement is for, which the lead must (still) lead."""
    unit = await get_unit(session, unit_id)
    require(auth, unit)
    return unit


async def audience_links(session: AsyncSession, unit: Unit, *, subtree_too: bool) -> list[ChatLink]:
    units = list(await subtree(session, unit)) if subtree_too else [unit]
    return list(await links_of_units(session, [u.id for u in units if u.id is not None]))


def draft_schedule(draft: Draft, community: Community) -> Schedule:
    if draft.start is None:
        raise InvalidInput("stale_button")
    local = draft.start.astimezone(when.zone_of(community.timezone))
    return Schedule(draft.kind, local.time(), community.timezone, tuple(sorted(draft.days)))


@dataclass(frozen=True)
class Plan:
    """What the confirmation shows: who gets it, when, and the fine print."""

    unit: Unit
    community: Community
    chats: int
    times: list[datetime]  # the first few sends; empty for "now"
    schedule: Schedule | None
    clamped: list[int]
    quiet_until: datetime | None  # the first send falls in quiet hours and waits until then


async def plan(session: AsyncSession, *, auth: Authority, draft: Draft, now: datetime) -> Plan:
    unit = await aim(session, auth=auth, unit_id=draft.unit_id)
    community = await session.get(Community, unit.community_id)
    assert community is not None
    chats = len(await audience_links(session, unit, subtree_too=draft.subtree))
    rule: Schedule | None = None
    times: list[datetime] = []
    first = now
    if draft.start is not None:
        rule = draft_schedule(draft, community)
        if draft.kind != ScheduleKind.once and not rule.days:
            raise InvalidInput("announce_no_days")
        times = upcoming(rule, max(draft.start, now), 3)
        first = times[0] if times else now
    later = outbox.after_quiet_hours(
        first,
        zone=community.timezone,
        quiet_from=community.quiet_from,
        quiet_until=community.quiet_until,
    )
    return Plan(
        unit,
        community,
        chats,
        times,
        rule,
        clamped_days(rule) if rule else [],
        later if later != first else None,
    )


async def poster_name(session: AsyncSession, person_id: int) -> str:
    person = await session.get(Person, person_id)
    return person.name if person is not None else ""


async def _enqueue_occurrence(
    session: AsyncSession,
    announcement: Announcement,
    *,
    unit: Unit,
    community: Community,
    moment: datetime,
    now: datetime,
) -> int:
    assert announcement.id is not None
    context: dict[str, Any] = {
        "text": announcement.text,
        "by": await poster_name(session, announcement.created_by),
        "unit": unit.name,
    }
    return await outbox.enqueue_to_unit(
        session,
        key=occurrence_key(announcement.id, moment, community.timezone),
        unit=unit,
        subtree_too=announcement.subtree,
        template=TEMPLATE,
        context=context,
        due_at=moment,
        now=now,
        photo=announcement.photo,
        pin=announcement.pin,
        silent=announcement.silent,
        priority=outbox.Priority.broadcast,
    )


async def schedule_announcement(
    session: AsyncSession, *, auth: Authority, draft: Draft, now: datetime
) -> tuple[Announcement, int]:
    """Make the announcement a lead confirmed; "now" is in the outbox when this commits. Run it
    as the `make` of `flows.confirm`, so a double tap makes one announcement.

    Returns the announcement and the outbox rows added (0 unless sent now).
    """
    unit = await aim(session, auth=auth, unit_id=draft.unit_id)
    community = await session.get(Community, unit.community_id)
    assert community is not None
    text = clean_text(draft.text, photo=draft.photo is not None)
    if draft.start is None:
        kind, days, first = ScheduleKind.once, [], now
        if not await audience_links(session, unit, subtree_too=draft.subtree):
            raise InvalidInput("announce_no_chats", unit=unit.name)
    else:
        rule = draft_schedule(draft, community)
        if draft.kind != ScheduleKind.once and not rule.days:
            raise InvalidInput("announce_no_days")
        if rule.kind == ScheduleKind.once and draft.start < now - timedelta(minutes=1):
            raise InvalidInput("announce_past")
        # A recurring schedule confirmed after its first time starts with the next one.
        found = first_occurrence(rule, max(draft.start, now))
        if found is None:
            raise InvalidInput("announce_no_days")
        kind, days, first = ScheduleKind(draft.kind), list(rule.days), found
    local_at = (draft.start or now).astimezone(when.zone_of(community.timezone)).time()
    assert unit.id is not None
    announcement = Announcement(
        community_id=unit.community_id,
        unit_id=unit.id,
        subtree=draft.subtree,
        text=text,
        photo=draft.photo,
        created_by=auth.person_id,
        created_at=now,
        pin=draft.pin,
        silent=draft.silent,
        kind=kind,
        days=days,
        at=local_at,
        first_due=first,
        next_occurrence=None if draft.start is None else first,
    )
    session.add(announcement)
    await session.flush()
    added = 0
    if draft.start is None:
        added = await _enqueue_occurrence(
            session, announcement, unit=unit, community=community, moment=now, now=now
        )
        announcement.last_occurrence = now
        await session.flush()
    return announcement, added


# --- the rhythm -----------------------------------------------------------------------------


def announcement_schedule(announcement: Announcement, community: Community) -> Schedule:
    return Schedule(
        announcement.kind, announcement.at, community.timezone, tuple(announcement.days)
    )


async def materialise_due(session: AsyncSession, now: datetime) -> int:
    """Hand occurrences due within LOOKAHEAD to the outbox and move each schedule on.

    Idempotent: the keys are per announcement and local date, so a repeat adds nothing.
    Returns the outbox rows added.
    """
    horizon = now + LOOKAHEAD
    query = (
        select(Announcement)
        .where(
            Announcement.status == AnnouncementStatus.active,
            col(Announcement.next_occurrence).is_not(None),
            col(Announcement.next_occurrence) <= horizon,
        )
        .order_by(col(Announcement.next_occurrence), col(Announcement.id))
    )
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    added = 0
    for announcement in (await session.exec(query)).all():
        unit = await session.get(Unit, announcement.unit_id)
        community = await session.get(Community, announcement.community_id)
        assert unit is not None and community is not None
        rule = announcement_schedule(announcement, community)
        while announcement.next_occurrence is not None and announcement.next_occurrence <= horizon:
            moment = announcement.next_occurrence
            if now - moment <= MISSED_GRACE or rule.kind == ScheduleKind.once:
                added += await _enqueue_occurrence(
                    session, announcement, unit=unit, community=community, moment=moment, now=now
                )
                announcement.last_occurrence = moment
            announcement.next_occurrence = next_after(rule, moment)
    await session.flush()
    return added


# --- listing, cancelling, reporting ----------------------------------------------------------

RECENT = timedelta(days=7)  # sent one-offs stay listed this long, for their delivery report


def _covered(query: Any, auth: Authority) -> Any:
    within = auth.covering()
    return None if within is None else query.where(within)


async def announcements_for(
    session: AsyncSession, *, auth: Authority, now: datetime, offset: int, limit: int
) -> tuple[list[tuple[Announcement, Unit, Community]], int]:
    """Scheduled, recurring and recently sent announcements in the units this lead covers."""
    base = (
        select(Announcement, Unit, Community)
        .join(Unit, col(Unit.id) == col(Announcement.unit_id))
        .join(Community, col(Community.id) == col(Announcement.community_id))
        .where(
            Announcement.status == AnnouncementStatus.active,
            col(Announcement.next_occurrence).is_not(None)
            | (col(Announcement.last_occurrence) >= now - RECENT),
        )
    )
    scoped = _covered(base, auth)
    if scoped is None:
        return [], 0
    total = (await session.exec(select(func.count()).select_from(scoped.subquery()))).one()
    rows = (
        await session.exec(
            scoped.order_by(
                col(Announcement.next_occurrence).is_(None),
                col(Announcement.next_occurrence),
                col(Announcement.id).desc(),
            )
            .offset(offset)
            .limit(limit)
        )
    ).all()
    return [(a, u, c) for a, u, c in rows], int(total)


async def get_announcement(
    session: AsyncSession, *, auth: Authority, announcement_id: int
) -> tuple[Announcement, Unit, Community]:
    announcement = await must_get(session, Announcement, announcement_id, "announce_not_found")
    unit = await get_unit(session, announcement.unit_id)
    require(auth, unit)
    community = await session.get(Community, announcement.community_id)
    assert community is not None
    return announcement, unit, community


async def cancel(
    session: AsyncSession, *, auth: Authority, announcement_id: int, now: datetime
) -> tuple[Announcement, int]:
    """Stop future sends and withdraw unsent messages; returns (announcement, withdrawn).

    Cancelling twice is a Conflict the lead is told about, with nothing changed.
    """
    await session.exec(
        select(Announcement).where(Announcement.id == announcement_id).with_for_update()
    )
    announcement, _unit, _community = await get_announcement(
        session, auth=auth, announcement_id=announcement_id
    )
    if announcement.status == AnnouncementStatus.cancelled:
        raise Conflict("announce_already_cancelled")
    announcement.status = AnnouncementStatus.cancelled
    announcement.next_occurrence = None
    announcement.cancelled_at, announcement.cancelled_by = now, auth.person_id
    await session.flush()
    withdrawn = await outbox.withdraw(
        session, key_prefix=report_prefix(announcement_id), now=now, reason=CANCELLED
    )
    return announcement, withdrawn


@dataclass(frozen=True)
class Report:
    sent: int
    pending: int
    failed: int
    cancelled: int
    unreachable: list[str]  # titles of chats the bot could not reach


async def delivery_report(
    session: AsyncSession, *, auth: Authority, announcement_id: int
) -> tuple[Announcement, Unit, Community, Report]:
    announcement, unit, community = await get_announcement(
        session, auth=auth, announcement_id=announcement_id
    )
    rows = await outbox.delivery_report(session, key_prefix=report_prefix(announcement_id))
    gone = rows[outbox.Status.gone]
    links = await outbox.link_rows(session, [r.link_id for r in gone if r.link_id is not None])
    chat_ids = {r.chat_id for r in gone}
    chats = (
        {c.id: c for c in (await session.exec(select(Chat).where(col(Chat.id).in_(chat_ids))))}
        if chat_ids
        else {}
    )
    titles = []
    for row in gone:
        link = links.get(row.link_id) if row.link_id is not None else None
        chat = chats.get(row.chat_id)
        titles.append(
            (link.title if link is not None else "")
            or (chat.title if chat else "")
            or str(row.chat_id)
        )
    failed = rows[outbox.Status.failed]
    withdrawn = sum(1 for r in failed if r.last_error == CANCELLED)
    report = Report(
        sent=len(rows[outbox.Status.sent]),
        pending=len(rows[outbox.Status.pending]),
        failed=len(failed) - withdrawn,
        cancelled=withdrawn,
        unreachable=titles,
    )
    return announcement, unit, community, report
