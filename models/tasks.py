"""Volunteer tasks (一呼百应): a lead posts a task with slots; neighbours sign up, are reminded,
check in, and are credited through the neighbour bank once attendance is confirmed.

Every write that depends on how many are in (sign up, withdraw, slots changed, attendance
confirmed) first locks the task's row: SELECT … FOR UPDATE on PostgreSQL; on SQLite the write
transaction (BEGIN IMMEDIATE) already holds the database's one write lock. Under that lock
each tap gets the next number of the task (`Task.taps`), so "tap order" is the order in which
the taps were decided, and the waitlist is served in it.

What the bot says later is written to the outbox in the same transaction as the change that
caused it: reminders 24 hours and 1 hour before the start (keys carry the task's version, so an
edit withdraws the old ones and writes new ones), promotions, changes, thanks.
"""

from __future__ import annotations

import calendar
import re
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from typing import Any, Literal
from zoneinfo import ZoneInfo

from sqlalchemy import JSON, Column, Index, UniqueConstraint, exists, func
from sqlmodel import Field, SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from models import ledger, outbox, points
from models.base import TelegramId, UTCDateTime, must_get
from models.errors import Conflict, InvalidInput, NotAllowed, NotFound
from models.people import (
    Authority,
    ChatLink,
    Community,
    Household,
    Person,
    Resident,
    ResidentStatus,
    Unit,
    communities,
    get_community,
    get_unit,
    homes_and_above,
    link_for,
    links_of_units,
    one_line,
    require,
)

TITLE_LIMIT = 100
DESCRIPTION_LIMIT = 1000
PLACE_LIMIT = 200
SLOTS_LIMIT = 1000
POINTS_LIMIT = 1000
DEFAULT_CUTOFF = timedelta(hours=2)
CUTOFF_LIMIT = timedelta(days=7)
CHECKIN_OPENS = timedelta(hours=1)  # before the start
REMINDERS = (24, 1)  # hours before the start
AHEAD = timedelta(weeks=4)  # how far ahead a recurrence's occurrences exist
EVENING = time(19, 0)  # the lead's line about tomorrow goes out from this local time
CODE_DIGITS = 6
RULE = "task"  # the earning rule whose points a new task offers by default
UNLIMITED: Literal["unlimited"] = "unlimited"
CARD = "task"  # the live card's kind (bot/cards.py builds it)
CONFIRMATION = "tasksignup"  # the private confirmation of a sign-up, a card too
CARD_AHEAD = timedelta(days=7)  # a series' occurrence is posted a week before it starts

SKILLS = ("health", "legal", "teaching", "repairs", "elderly_care", "cleaning", "other")


class TaskStatus(StrEnum):
    open = "open"
    cancelled = "cancelled"


class SignupStatus(StrEnum):
    signed_up = "signed_up"
    waitlisted = "waitlisted"
    withdrawn = "withdrawn"
    attended = "attended"
    no_show = "no_show"


# What a card and /mytasks show: who is in, waiting, or came.
SHOWN = (SignupStatus.signed_up, SignupStatus.waitlisted, SignupStatus.attended)


class ClaimStatus(StrEnum):
    pending = "pending"
    approved = "approved"
    rejected = "rejected"


class Repeat(StrEnum):
    weekly = "weekly"
    monthly = "monthly"


ACTIVE = (SignupStatus.signed_up, SignupStatus.waitlisted)


# --- tables -------------------------------------------------------------------------------


class Terms(SQLModel):
    """What a lead sets for a task, and for a series (which each occurrence copies)."""

    community_id: int = Field(foreign_key="community.id", index=True)
    unit_id: int = Field(foreign_key="unit.id")
    title: str = Field(max_length=TITLE_LIMIT)
    description: str = Field(default="", max_length=DESCRIPTION_LIMIT)
    place: str = Field(default="", max_length=PLACE_LIMIT)
    latitude: float | None = None
    longitude: float | None = None
    slots: int | None = None  # None: unlimited
    points: int = 0
    skill: str | None = Field(default=None, max_length=16)
    cutoff_minutes: int = int(DEFAULT_CUTOFF.total_seconds() // 60)


class TaskSeries(Terms, table=True):
    """A recurring task: each occurrence is its own Task, created ahead by a rhythm."""

    __tablename__ = "task_series"
    id: int | None = Field(default=None, primary_key=True)
    lead_id: int = Field(sa_type=TelegramId, foreign_key="person.id")
    repeat: str = Field(max_length=8)  # weekly | monthly
    days: list[int] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    start_time: time  # local, in the community's zone
    end_time: time
    active: bool = True
    starts_on: date | None = None  # the local date of the first occurrence (None: from creation)
    created_at: datetime = Field(sa_type=UTCDateTime)


class Task(Terms, table=True):
    __table_args__ = (
        UniqueConstraint("series_id", "occurs_on"),
        Index("ix_task_unit_start", "unit_id", "starts_at"),
    )
    id: int | None = Field(default=None, primary_key=True)
    lead_id: int = Field(sa_type=TelegramId, foreign_key="person.id", index=True)
    series_id: int | None = Field(default=None, foreign_key="task_series.id")
    occurs_on: date | None = None  # the local date of a series' occurrence
    starts_at: datetime = Field(sa_type=UTCDateTime)
    ends_at: datetime = Field(sa_type=UTCDateTime)
    code: str = Field(max_length=CODE_DIGITS, index=True)  # the check-in code
    status: str = Field(default=TaskStatus.open, max_length=10)
    version: int = 1  # raised by every change of time; reminder keys carry it
    taps: int = 0  # sign-ups decided so far: each gets the next number
    notes: int = 0  # private notices written so far (their keys carry the number)
    confirmed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    confirmed_by: int | None = Field(default=None, sa_type=TelegramId)
    created_at: datetime = Field(sa_type=UTCDateTime)
    updated_at: datetime = Field(sa_type=UTCDateTime)

    @property
    def cutoff(self) -> datetime:
        """Withdrawing closes here."""
        return self.starts_at - timedelta(minutes=self.cutoff_minutes)

    @property
    def hours(self) -> float:
        return (self.ends_at - self.starts_at).total_seconds() / 3600


class TaskSignup(SQLModel, table=True):
    """One person on one task (a withdrawn person signing up again reuses their row)."""

    __tablename__ = "task_signup"
    __table_args__ = (
        UniqueConstraint("task_id", "person_id"),
        Index("ix_task_signup_person", "person_id", "status"),
    )
    id: int | None = Field(default=None, primary_key=True)
    task_id: int = Field(foreign_key="task.id")
    person_id: int = Field(sa_type=TelegramId, foreign_key="person.id")
    by: int = Field(sa_type=TelegramId)  # who tapped: the person, or a lead for a proxy sign-up
    status: str = Field(max_length=12)
    seq: int  # the task's tap number: the waitlist is served in this order
    hidden: bool = False  # the volunteer chose to be only a count on the card
    checked_in_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    present: bool | None = None  # the lead's toggle on the attendance sheet
    claim: str | None = Field(default=None, max_length=10)  # pending | approved | rejected
    claimed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    signed_at: datetime = Field(sa_type=UTCDateTime)
    updated_at: datetime = Field(sa_type=UTCDateTime)


class TaskPolicy(SQLModel, table=True):
    """A community's choices for tasks; a community without a row has the defaults."""

    __tablename__ = "task_policy"
    community_id: int = Field(primary_key=True, foreign_key="community.id")
    hide_names: bool = False  # cards show only how many signed up
    updated_at: datetime = Field(sa_type=UTCDateTime)


# --- input ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fields:
    """What a lead fills in for a task (one occurrence or a series)."""

    title: str
    starts_at: datetime
    ends_at: datetime
    place: str = ""
    description: str = ""
    slots: int | None = None  # None: unlimited
    points: int | None = None  # None: the community's "task" rule
    skill: str | None = None
    cutoff_minutes: int = int(DEFAULT_CUTOFF.total_seconds() // 60)
    latitude: float | None = None
    longitude: float | None = None


def clean_title(text: str) -> str:
    return one_line(text, limit=TITLE_LIMIT, short="task_title_empty", error="task_title_long")


def clean_text(text: str, *, limit: int, error: str) -> str:
    cleaned = text.strip()
    if len(cleaned) > limit:
        raise InvalidInput(error, limit=limit, length=len(cleaned))
    return cleaned


def check_slots(slots: int | None) -> int | None:
    if slots is None:
        return None
    if isinstance(slots, bool) or slots < 1:
        raise InvalidInput("task_slots_min")
    if slots > SLOTS_LIMIT:
        raise InvalidInput("task_slots_max", limit=SLOTS_LIMIT)
    return slots


def parse_slots(text: str) -> int | None:
    """Typed slots: a whole number 1–1000, or 不限/unlimited."""
    cleaned = text.strip().lower()
    if cleaned in {"不限", "无限", "unlimited", "∞", "no limit"}:
        return None
    if not re.fullmatch(r"[-+]?\d{1,7}", cleaned):
        raise InvalidInput("task_slots_number")
    return check_slots(int(cleaned))


def check_points(value: int) -> int:
    if isinstance(value, bool) or value < 0 or value > POINTS_LIMIT:
        raise InvalidInput("task_points_range", limit=POINTS_LIMIT)
    return value


def check_time(starts_at: datetime, ends_at: datetime, *, now: datetime) -> None:
    if starts_at <= now:
        raise InvalidInput("task_starts_in_past")
    if ends_at <= starts_at:
        raise InvalidInput("task_ends_before_start")


def check_skill(skill: str | None) -> str | None:
    if skill is not None and skill not in SKILLS:
        raise InvalidInput("task_bad_skill")
    return skill


def check_cutoff(minutes: int) -> int:
    if minutes < 0 or timedelta(minutes=minutes) > CUTOFF_LIMIT:
        raise InvalidInput("task_bad_cutoff")
    return minutes


def _checked(fields: Fields, *, now: datetime, default_points: int) -> dict[str, Any]:
    check_time(fields.starts_at, fields.ends_at, now=now)
    return {
        "title": clean_title(fields.title),
        "description": clean_text(
            fields.description, limit=DESCRIPTION_LIMIT, error="task_description_long"
        ),
        "place": clean_text(fields.place, limit=PLACE_LIMIT, error="task_place_long"),
        "slots": check_slots(fields.slots),
        "points": check_points(default_points if fields.points is None else fields.points),
        "skill": check_skill(fields.skill),
        "cutoff_minutes": check_cutoff(fields.cutoff_minutes),
        "latitude": fields.latitude,
        "longitude": fields.longitude,
    }


async def default_points(session: AsyncSession, *, community_id: int, now: datetime) -> int:
    """What the community's "task attended" earning rule gives (0 when it is off)."""
    found = await points.rule(session, community_id=community_id, code=RULE, now=now)
    return found.points if found.active else 0


# --- reading -------------------------------------------------------------------------------


async def get_task(session: AsyncSession, task_id: int, *, lock: bool = False) -> Task:
    """The task; with lock=True its row is locked to the end of the transaction."""
    return await must_get(session, Task, task_id, "task_not_found", lock=lock)


async def signup_of(session: AsyncSession, task_id: int, person_id: int) -> TaskSignup | None:
    query = select(TaskSignup).where(
        TaskSignup.task_id == task_id, TaskSignup.person_id == person_id
    )
    return (await session.exec(query.execution_options(populate_existing=True))).first()


async def signups(
    session: AsyncSession, task_id: int, statuses: Iterable[str] | None = None
) -> list[TaskSignup]:
    """The task's sign-ups in tap order."""
    query = select(TaskSignup).where(TaskSignup.task_id == task_id)
    if statuses is not None:
        query = query.where(col(TaskSignup.status).in_(list(statuses)))
    query = query.order_by(col(TaskSignup.seq)).execution_options(populate_existing=True)
    return list((await session.exec(query)).all())


async def get_signup(session: AsyncSession, signup_id: int) -> TaskSignup:
    return await must_get(session, TaskSignup, signup_id, "task_not_signed_up")


def _first_name(name: str) -> str:
    parts = name.split()
    return parts[0] if parts else "?"


@dataclass(frozen=True)
class Card:
    """What a task's card in a group shows: never a flat, never a no-show."""

    task: Task
    filled: int
    waitlist: int
    names: list[str]  # first names of those in, in tap order; the hidden ones only counted
    hidden: int  # how many of those in are not named
    ended: bool
    attended: int | None  # after attendance is confirmed


async def card(session: AsyncSession, task_id: int, *, now: datetime) -> Card:
    task = await get_task(session, task_id)
    rows = (
        await session.exec(
            select(TaskSignup, Person)
            .join(Person, col(Person.id) == col(TaskSignup.person_id))
            .where(
                TaskSignup.task_id == task_id,
                col(TaskSignup.status).in_(SHOWN),
            )
            .order_by(col(TaskSignup.seq))
        )
    ).all()
    hide_all = await names_hidden(session, task.community_id)
    counted = (
        (SignupStatus.attended,)
        if task.confirmed_at
        else (SignupStatus.signed_up, SignupStatus.attended)
    )
    inside = [(s, p) for s, p in rows if s.status in counted]
    names = [_first_name(p.name) for s, p in inside if not (hide_all or s.hidden)]
    return Card(
        task=task,
        filled=len(inside),
        waitlist=sum(1 for s, _ in rows if s.status == SignupStatus.waitlisted),
        names=names,
        hidden=len(inside) - len(names),
        ended=now >= task.ends_at,
        attended=len(inside) if task.confirmed_at else None,
    )


async def names_hidden(session: AsyncSession, community_id: int) -> bool:
    policy = await session.get(TaskPolicy, community_id)
    return policy is not None and policy.hide_names


async def set_names_hidden(
    session: AsyncSession, *, auth: Authority, community_id: int, hidden: bool, now: datetime
) -> None:
    """A community admin chooses whether cards name volunteers or only count them."""
    community = await get_community(session, community_id)
    points.require_admin(auth, community)
    policy = await session.get(TaskPolicy, community_id)
    if policy is None:
        policy = TaskPolicy(community_id=community_id, updated_at=now)
        session.add(policy)
    policy.hide_names, policy.updated_at = hidden, now
    await session.flush()


async def set_hidden(
    session: AsyncSession, *, task_id: int, person_id: int, hidden: bool, now: datetime
) -> TaskSignup:
    """A volunteer chooses to be only a count on this task's card (a state, not a toggle)."""
    signup = await signup_of(session, task_id, person_id)
    if signup is None or signup.status == SignupStatus.withdrawn:
        raise NotFound("task_not_signed_up")
    if signup.hidden != hidden:
        signup.hidden, signup.updated_at = hidden, now
        await changed_card(session, await get_task(session, task_id), now=now)
    await session.flush()
    return signup


# --- who may sign up -----------------------------------------------------------------------


async def home_unit(session: AsyncSession, *, person_id: int, community_id: int) -> Unit | None:
    """The unit of the person's verified household in this community."""
    row = (
        await session.exec(
            select(Unit)
            .join(Household, col(Household.unit_id) == col(Unit.id))
            .join(Resident, col(Resident.household_id) == col(Household.id))
            .where(
                Resident.person_id == person_id,
                Resident.community_id == community_id,
                Resident.status == ResidentStatus.verified,
            )
        )
    ).first()
    return row


async def may_volunteer(session: AsyncSession, *, person_id: int, task: Task) -> bool:
    """Verified residents of the task's unit and below."""
    home = await home_unit(session, person_id=person_id, community_id=task.community_id)
    if home is None:
        return False
    unit = await get_unit(session, task.unit_id)
    return home.path.startswith(unit.path)


async def _require_lead(session: AsyncSession, auth: Authority, task: Task) -> Unit:
    unit = await get_unit(session, task.unit_id)
    require(auth, unit)
    return unit


# --- the outbox: reminders and private notices ----------------------------------------------


def when(task: Task, zone: str) -> dict[str, Any]:
    """The task's time as plain values for templates (and outbox contexts), in the zone."""
    start = task.starts_at.astimezone(ZoneInfo(zone))
    end = task.ends_at.astimezone(ZoneInfo(zone))
    return {
        "date": start.strftime("%Y-%m-%d"),
        "month": start.month,
        "day": start.day,
        "weekday": start.weekday(),
        "start": start.strftime("%H:%M"),
        "end": end.strftime("%H:%M"),
        "end_date": end.strftime("%Y-%m-%d") if end.date() != start.date() else "",
    }


async def about(session: AsyncSession, task: Task) -> dict[str, Any]:
    """The plain values a private notice about the task needs."""
    community = await get_community(session, task.community_id)
    return {
        "task_id": task.id,
        "title": task.title,
        "place": task.place,
        "points": task.points,
        "when": when(task, community.timezone),
    }


async def _fallback_link(session: AsyncSession, task: Task) -> int | None:
    """The chat where a person who never opened a private chat is mentioned instead: the
    task's unit's first linked chat, else the nearest unit above with one."""
    unit = await get_unit(session, task.unit_id)
    links = await links_of_units(session, unit.lineage)
    by_unit: dict[int, ChatLink] = {}
    for link in links:
        by_unit.setdefault(link.unit_id, link)
    for unit_id in reversed(unit.lineage):
        if unit_id in by_unit:
            return by_unit[unit_id].id
    return None


def reminder_prefix(task_id: int, person_id: int | None = None) -> str:
    return f"taskrem:{task_id}:" + ("" if person_id is None else f"{person_id}:")


async def remind(
    session: AsyncSession, task: Task, person_ids: Sequence[int], *, now: datetime
) -> int:
    """The 24-hour and 1-hour reminders of these volunteers (those still ahead); keyed, so a
    repeat adds nothing. Returns rows added."""
    assert task.id is not None
    context = await about(session, task)
    fallback = await _fallback_link(session, task)
    added = 0
    for person_id in person_ids:
        for hours in REMINDERS:
            due = task.starts_at - timedelta(hours=hours)
            if due <= now:
                continue
            added += await outbox.enqueue_private(
                session,
                key=f"{reminder_prefix(task.id, person_id)}v{task.version}:{hours}",
                person_id=person_id,
                community_id=task.community_id,
                fallback_link_id=fallback,
                template="tasks/reminder",
                context={**context, "hours": hours},
                due_at=due,
                now=now,
                priority=outbox.Priority.reminder,
                # An hour before an early start falls in the quiet hours: it matters most.
                urgent=hours == 1,
            )
    return added


async def _tell(
    session: AsyncSession,
    task: Task,
    person_id: int,
    template: str,
    *,
    now: datetime,
    key: str | None = None,
    **context: Any,
) -> None:
    """A private notice about the task to one person (urgent: it is news to them now)."""
    assert task.id is not None
    if key is None:
        task.notes += 1
        key = f"task:{task.id}:n{task.notes}:{person_id}"
    await outbox.enqueue_private(
        session,
        key=key,
        person_id=person_id,
        community_id=task.community_id,
        template=template,
        context={**(await about(session, task)), **context},
        now=now,
        priority=outbox.Priority.normal,
    )


# --- creating, editing, cancelling ---------------------------------------------------------


async def _new_code(session: AsyncSession, *, now: datetime) -> str:
    """Six digits no task still running or ahead uses (a typed code then finds one task)."""
    while True:
        code = f"{secrets.randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"
        clash = await session.exec(
            select(Task.id).where(Task.code == code, col(Task.ends_at) > now - timedelta(days=2))
        )
        if clash.first() is None:
            return code


async def _posted_by(
    session: AsyncSession, auth: Authority, unit_id: int, fields: Fields, *, now: datetime
) -> tuple[Unit, dict[str, Any]]:
    """The unit a task (or series) is posted on, which `auth` must lead, and the task's checked
    values with where and by whom it is posted."""
    unit = await get_unit(session, unit_id)
    require(auth, unit)
    default = await default_points(session, community_id=unit.community_id, now=now)
    values = _checked(fields, now=now, default_points=default)
    return unit, {
        **values,
        "community_id": unit.community_id,
        "unit_id": unit_id,
        "lead_id": auth.person_id,
    }


async def create_task(
    session: AsyncSession,
    *,
    auth: Authority,
    unit_id: int,
    fields: Fields,
    now: datetime,
    series_id: int | None = None,
    occurs_on: date | None = None,
    here: tuple[int, int] | None = None,
) -> Task:
    """Post a task on a unit the lead leads; its card goes to the unit's chats (and to `here`,
    the (chat, topic) the lead posted from, when that is a group)."""
    unit, values = await _posted_by(session, auth, unit_id, fields, now=now)
    task = Task(
        series_id=series_id,
        occurs_on=occurs_on,
        starts_at=fields.starts_at,
        ends_at=fields.ends_at,
        code=await _new_code(session, now=now),
        created_at=now,
        updated_at=now,
        **values,
    )
    session.add(task)
    await session.flush()
    await _post_card(session, task, unit, now=now, here=here)
    return task


async def _post_card(
    session: AsyncSession, task: Task, unit: Unit, *, now: datetime, here: tuple[int, int] | None
) -> None:
    """The card goes to the unit's chats (to the chats below it when it has none of its own),
    and to the group or topic where the lead posted it; a series' occurrence a week ahead."""
    assert task.id is not None
    due = max(now, task.starts_at - CARD_AHEAD) if task.series_id is not None else now
    own = await links_of_units(session, [unit.id or 0])
    await outbox.post_card_to_unit(
        session,
        kind=CARD,
        subject_id=task.id,
        unit=unit,
        now=now,
        due_at=due,
        subtree_too=not own,
    )
    if here is not None and await _serves_community(session, here, task.community_id):
        await outbox.post_card(
            session,
            kind=CARD,
            subject_id=task.id,
            chat_id=here[0],
            thread_id=here[1],
            community_id=task.community_id,
            now=now,
            due_at=due,
        )


async def _serves_community(
    session: AsyncSession, here: tuple[int, int], community_id: int
) -> bool:
    """Whether a group (or topic) is linked to a unit of this community: only there does a
    card go besides the unit's own chats (never into a group the community does not know)."""
    chat_id, thread_id = here
    if chat_id >= 0:
        return False
    link = await link_for(session, chat_id=chat_id, thread_id=thread_id)
    return link is not None and (await get_unit(session, link.unit_id)).community_id == community_id


async def changed_card(session: AsyncSession, task: Task, *, now: datetime) -> None:
    """Every posted copy of the card will show the task as it now is (edits coalesced)."""
    assert task.id is not None
    await outbox.mark_changed(session, kind=CARD, subject_id=task.id, now=now)


def _editable(task: Task, *, now: datetime) -> None:
    if task.status == TaskStatus.cancelled:
        raise Conflict("task_cancelled", title=task.title)
    if now >= task.starts_at:
        raise Conflict("task_started", title=task.title)


async def editable(session: AsyncSession, *, auth: Authority, task_id: int, now: datetime) -> Task:
    """An upcoming open task its lead may change (the edit screen opens only for one)."""
    task = await get_task(session, task_id)
    await _require_lead(session, auth, task)
    _editable(task, now=now)
    return task


@dataclass
class Edited:
    task: Task
    changed: list[str]  # names of the fields that changed
    moved_to_waitlist: list[int] = field(default_factory=list)
    promoted: list[int] = field(default_factory=list)
    told: int = 0  # volunteers told privately what changed (besides those moved)


async def edit_task(
    session: AsyncSession,
    *,
    auth: Authority,
    task_id: int,
    now: datetime,
    title: str | None = None,
    description: str | None = None,
    starts_at: datetime | None = None,
    ends_at: datetime | None = None,
    place: str | None = None,
    where: tuple[float, float] | None = None,
    slots: int | Literal["unlimited"] | None = None,
    cutoff_minutes: int | None = None,
) -> Edited:
    """Change an upcoming task. Volunteers are told privately what changed; a new time
    withdraws their reminders and writes new ones; fewer slots than are in moves the latest
    sign-ups to the front of the waitlist (and tells them); more slots promote the waitlist."""
    task = await get_task(session, task_id, lock=True)
    await _require_lead(session, auth, task)
    _editable(task, now=now)
    changed: list[str] = []
    if title is not None and (value := clean_title(title)) != task.title:
        task.title = value
        changed.append("title")
    if description is not None:
        value = clean_text(description, limit=DESCRIPTION_LIMIT, error="task_description_long")
        if value != task.description:
            task.description = value
            changed.append("description")
    if place is not None:
        value = clean_text(place, limit=PLACE_LIMIT, error="task_place_long")
        spot = (None, None) if where is None else (_coordinate(where[0], 90),
                                                   _coordinate(where[1], 180))  # fmt: skip
        if value != task.place:
            task.place = value
            changed.append("place")
        if spot != (task.latitude, task.longitude):  # a pin alone is not news to volunteers
            task.latitude, task.longitude = spot
            changed.append("location")
    if starts_at is not None or ends_at is not None:
        new_start = starts_at or task.starts_at
        new_end = ends_at or (new_start + (task.ends_at - task.starts_at))
        if (new_start, new_end) != (task.starts_at, task.ends_at):
            check_time(new_start, new_end, now=now)
            task.starts_at, task.ends_at = new_start, new_end
            task.version += 1
            changed.append("time")
    if cutoff_minutes is not None and check_cutoff(cutoff_minutes) != task.cutoff_minutes:
        task.cutoff_minutes = cutoff_minutes
        changed.append("cutoff")
    result = Edited(task=task, changed=changed)
    if slots is not None:
        new_slots = None if slots == UNLIMITED else check_slots(slots)
        if new_slots != task.slots:
            task.slots = new_slots
            changed.append("slots")
            await _fit_to_slots(session, task, result, now=now)
    if not changed:
        return result
    task.updated_at = now
    await changed_card(session, task, now=now)
    assert task.id is not None
    people_in = await signups(session, task.id, ACTIVE)
    if "time" in changed:
        await outbox.withdraw(session, key_prefix=reminder_prefix(task.id), now=now)
        inside = [x.person_id for x in people_in if x.status == SignupStatus.signed_up]
        await remind(session, task, inside, now=now)
    told = [c for c in changed if c in ("title", "time", "place", "description", "cutoff")]
    if told:
        for signup in people_in:
            if signup.person_id not in result.moved_to_waitlist + result.promoted:
                await _tell(session, task, signup.person_id, "tasks/changed", now=now, changes=told)
                result.told += 1
    await session.flush()
    return result


async def _fit_to_slots(
    session: AsyncSession, task: Task, result: Edited, *, now: datetime
) -> None:
    assert task.id is not None
    inside = await signups(session, task.id, (SignupStatus.signed_up,))
    if task.slots is not None and len(inside) > task.slots:
        # The latest in move out first; their tap numbers keep them ahead of later taps.
        for signup in inside[task.slots :]:
            signup.status, signup.updated_at = SignupStatus.waitlisted, now
            result.moved_to_waitlist.append(signup.person_id)
            await outbox.withdraw(
                session, key_prefix=reminder_prefix(task.id, signup.person_id), now=now
            )
        await session.flush()
        for person_id in result.moved_to_waitlist:
            position = await waitlist_position(session, task.id, person_id)
            await _tell(
                session, task, person_id, "tasks/moved_to_waitlist", now=now, position=position
            )
    else:
        result.promoted.extend(await _promote(session, task, now=now))


async def cancel_task(
    session: AsyncSession, *, auth: Authority, task_id: int, now: datetime
) -> Task:
    """Cancel an upcoming task: volunteers (and the waitlist) are told, reminders withdrawn."""
    task = await get_task(session, task_id, lock=True)
    await _require_lead(session, auth, task)
    _editable(task, now=now)
    task.status, task.updated_at = TaskStatus.cancelled, now
    await changed_card(session, task, now=now)
    assert task.id is not None
    await outbox.withdraw(session, key_prefix=reminder_prefix(task.id), now=now)
    for signup in await signups(session, task.id, ACTIVE):
        await _tell(
            session,
            task,
            signup.person_id,
            "tasks/cancelled",
            now=now,
            key=f"task:{task.id}:cancelled:{signup.person_id}",
        )
    await session.flush()
    return task


# --- signing up and withdrawing ------------------------------------------------------------


class Outcome(StrEnum):
    signed_up = "signed_up"
    waitlisted = "waitlisted"
    already_in = "already_in"
    already_waitlisted = "already_waitlisted"


@dataclass(frozen=True)
class SignedUp:
    task: Task
    signup: TaskSignup
    outcome: Outcome
    position: int | None  # on the waitlist
    overlaps: list[Task]  # the person's other tasks at the same time (a warning, not a refusal)


async def count_in(session: AsyncSession, task_id: int) -> int:
    query = select(func.count()).where(
        TaskSignup.task_id == task_id, TaskSignup.status == SignupStatus.signed_up
    )
    return int((await session.exec(query)).one())


async def waitlist_position(session: AsyncSession, task_id: int, person_id: int) -> int | None:
    waiting = await signups(session, task_id, (SignupStatus.waitlisted,))
    for position, signup in enumerate(waiting, start=1):
        if signup.person_id == person_id:
            return position
    return None


async def overlapping(session: AsyncSession, *, person_id: int, task: Task) -> list[Task]:
    rows = await session.exec(
        select(Task)
        .join(TaskSignup, col(TaskSignup.task_id) == col(Task.id))
        .where(
            TaskSignup.person_id == person_id,
            col(TaskSignup.status).in_(list(ACTIVE)),
            Task.status == TaskStatus.open,
            Task.id != task.id,
            col(Task.starts_at) < task.ends_at,
            col(Task.ends_at) > task.starts_at,
        )
        .order_by(col(Task.starts_at))
    )
    return list(rows.all())


async def sign_up(
    session: AsyncSession,
    *,
    task_id: int,
    person_id: int,
    now: datetime,
    auth: Authority | None = None,
) -> SignedUp:
    """One tap on Sign up. With `auth` (a lead), a proxy sign-up of `person_id`.

    Race-safe: the task row is locked first, so 30 taps for 10 slots are decided one after
    another: 10 in, 20 waitlisted in tap order. A second tap changes nothing and says so.
    """
    task = await get_task(session, task_id, lock=True)
    _signup_open(task, now)
    by = person_id
    if auth is not None and auth.person_id != person_id:
        await _require_lead(session, auth, task)
        by = auth.person_id
    if not await may_volunteer(session, person_id=person_id, task=task):
        raise NotAllowed("task_not_resident" if by == person_id else "task_proxy_not_resident")
    assert task.id is not None
    signup = await signup_of(session, task.id, person_id)
    overlaps = await overlapping(session, person_id=person_id, task=task)
    if signup is not None and signup.status in ACTIVE:
        outcome = (
            Outcome.already_in
            if signup.status == SignupStatus.signed_up
            else Outcome.already_waitlisted
        )
        position = await waitlist_position(session, task.id, person_id)
        return SignedUp(task, signup, outcome, position, overlaps)
    full = task.slots is not None and await count_in(session, task.id) >= task.slots
    status = SignupStatus.waitlisted if full else SignupStatus.signed_up
    task.taps += 1
    if signup is None:
        signup = TaskSignup(
            task_id=task.id,
            person_id=person_id,
            by=by,
            status=status,
            seq=task.taps,
            signed_at=now,
            updated_at=now,
        )
        session.add(signup)
    else:
        signup.status, signup.by, signup.seq = status, by, task.taps
        signup.signed_at = signup.updated_at = now
        signup.present = None
    await session.flush()
    await changed_card(session, task, now=now)
    # The private confirmation (with Withdraw) goes through the outbox: paced, so a burst of
    # taps never runs into Telegram's limits, and built from the database when it is sent.
    assert signup.id is not None
    await outbox.post_card(
        session,
        kind=CONFIRMATION,
        subject_id=signup.id,
        chat_id=person_id,
        person_id=person_id,
        community_id=task.community_id,
        now=now,
        round=str(signup.seq),
    )
    if status == SignupStatus.signed_up:
        await remind(session, task, [person_id], now=now)
        return SignedUp(task, signup, Outcome.signed_up, None, overlaps)
    position = await waitlist_position(session, task.id, person_id)
    return SignedUp(task, signup, Outcome.waitlisted, position, overlaps)


async def proxy_task(
    session: AsyncSession, *, auth: Authority, task_id: int, now: datetime
) -> Task:
    """The task a lead is about to sign a neighbour up for (the resident picker lists its unit's
    residents): theirs, not cancelled, not begun."""
    task = await get_task(session, task_id)
    await _require_lead(session, auth, task)
    _signup_open(task, now)
    return task


def _signup_open(task: Task, now: datetime) -> None:
    """Refuses a sign-up to a cancelled task or one that has begun."""
    if task.status == TaskStatus.cancelled:
        raise Conflict("task_cancelled", title=task.title)
    if now >= task.starts_at:
        raise Conflict("task_signup_closed", title=task.title)


@dataclass(frozen=True)
class Withdrawn:
    task: Task
    signup: TaskSignup
    promoted: list[int]


async def withdraw(
    session: AsyncSession,
    *,
    task_id: int,
    person_id: int,
    now: datetime,
    auth: Authority | None = None,
) -> Withdrawn:
    """Leave a task (or its waitlist). Closes at the lead's cut-off for the volunteer; a lead
    (with `auth`) may take someone off until the start. The first waitlisted moves up."""
    task = await get_task(session, task_id, lock=True)
    if task.status == TaskStatus.cancelled:
        raise Conflict("task_cancelled", title=task.title)
    as_lead = auth is not None and auth.person_id != person_id
    if as_lead:
        assert auth is not None
        await _require_lead(session, auth, task)
    assert task.id is not None
    signup = await signup_of(session, task.id, person_id)
    if signup is None or signup.status not in ACTIVE:
        raise Conflict("task_not_signed_up", title=task.title)
    if now >= task.starts_at:
        raise Conflict("task_started", title=task.title)
    if not as_lead and signup.status == SignupStatus.signed_up and now >= task.cutoff:
        raise Conflict("task_withdraw_closed", title=task.title)
    was_in = signup.status == SignupStatus.signed_up
    signup.status, signup.updated_at = SignupStatus.withdrawn, now
    await changed_card(session, task, now=now)
    await outbox.withdraw(session, key_prefix=reminder_prefix(task.id, person_id), now=now)
    await session.flush()
    promoted = await _promote(session, task, now=now) if was_in else []
    return Withdrawn(task, signup, promoted)


async def _promote(session: AsyncSession, task: Task, *, now: datetime) -> list[int]:
    """Fill free slots from the waitlist, first come first served; each is told privately."""
    assert task.id is not None
    waiting = await signups(session, task.id, (SignupStatus.waitlisted,))
    free = len(waiting) if task.slots is None else task.slots - await count_in(session, task.id)
    promoted = []
    for signup in waiting[: max(free, 0)]:
        signup.status, signup.updated_at = SignupStatus.signed_up, now
        promoted.append(signup.person_id)
        await _tell(session, task, signup.person_id, "tasks/promoted", now=now)
    await remind(session, task, promoted, now=now)
    await session.flush()
    return promoted


# --- lists -----------------------------------------------------------------------------------


async def upcoming_for(
    session: AsyncSession, *, person_id: int, now: datetime, limit: int = 20
) -> list[Task]:
    """Open tasks ahead in the units of the person's verified households, soonest first,
    leaving out those the person is already on (signed up or waiting: see `mine`)."""
    lineage = await homes_and_above(session, person_id)
    if not lineage:
        return []
    query = (
        select(Task)
        .where(
            col(Task.unit_id).in_(lineage),
            Task.status == TaskStatus.open,
            col(Task.starts_at) > now,
            ~exists().where(
                col(TaskSignup.task_id) == col(Task.id),
                col(TaskSignup.person_id) == person_id,
                col(TaskSignup.status).in_(ACTIVE),
            ),
        )
        .order_by(col(Task.starts_at), col(Task.id))
        .limit(limit)
    )
    return list((await session.exec(query)).all())


async def mine(
    session: AsyncSession, *, person_id: int, now: datetime, limit: int = 20
) -> list[tuple[Task, TaskSignup]]:
    """The person's tasks: ahead (in or waitlisted), then those attended, newest first."""
    rows = (
        await session.exec(
            select(Task, TaskSignup)
            .join(TaskSignup, col(TaskSignup.task_id) == col(Task.id))
            .where(
                TaskSignup.person_id == person_id,
                col(TaskSignup.status).in_(SHOWN),
                Task.status == TaskStatus.open,
            )
            .order_by(col(Task.starts_at))
        )
    ).all()
    ahead = [(t, s) for t, s in rows if t.ends_at > now and s.status in ACTIVE]
    done = [(t, s) for t, s in rows if s.status == SignupStatus.attended]
    return (ahead + done[::-1])[:limit]


async def volunteers(
    session: AsyncSession, *, unit: Unit, since: datetime, limit: int
) -> list[Person]:
    """The unit's volunteers: verified residents of its community who attended a task in the
    unit or below since `since`, those with most tasks first (a lead assigns a report to one)."""
    attended = func.count(col(TaskSignup.id))
    verified = select(Resident.person_id).where(
        Resident.community_id == unit.community_id, Resident.status == ResidentStatus.verified
    )
    rows = await session.exec(
        select(Person, attended)
        .join(TaskSignup, col(TaskSignup.person_id) == col(Person.id))
        .join(Task, col(Task.id) == col(TaskSignup.task_id))
        .join(Unit, col(Unit.id) == col(Task.unit_id))
        .where(
            TaskSignup.status == SignupStatus.attended,
            col(Task.starts_at) >= since,
            col(Unit.path).startswith(unit.path),
            col(Person.id).in_(verified),
        )
        .group_by(col(Person.id))
        .order_by(attended.desc(), col(Person.id))
        .limit(limit)
    )
    return [person for person, _ in rows.all()]


@dataclass(frozen=True)
class LeadLine:
    task: Task
    filled: int
    waitlist: int


async def led_by(
    session: AsyncSession, *, auth: Authority, now: datetime, limit: int = 20
) -> list[LeadLine]:
    """Tasks on the units this lead leads that are ahead or ended in the last week."""
    within = auth.covering()
    if within is None:
        return []
    query = (
        select(Task)
        .join(Unit, col(Unit.id) == col(Task.unit_id))
        .where(col(Task.ends_at) > now - timedelta(days=7), within)
    )
    tasks = list(
        (await session.exec(query.order_by(col(Task.starts_at), col(Task.id)).limit(limit))).all()
    )
    counts = await _counts(session, [t.id for t in tasks if t.id is not None])
    return [LeadLine(t, *counts.get(t.id or 0, (0, 0))) for t in tasks]


async def fill_counts(session: AsyncSession, task_ids: Sequence[int]) -> dict[int, int]:
    """How many are in, per task."""
    return {task_id: pair[0] for task_id, pair in (await _counts(session, task_ids)).items()}


async def _counts(session: AsyncSession, task_ids: Sequence[int]) -> dict[int, tuple[int, int]]:
    if not task_ids:
        return {}
    rows = await session.exec(
        select(TaskSignup.task_id, TaskSignup.status, func.count())
        .where(col(TaskSignup.task_id).in_(list(task_ids)))
        .group_by(col(TaskSignup.task_id), col(TaskSignup.status))
    )
    found: dict[int, list[int]] = {}
    for task_id, status, n in rows.all():
        pair = found.setdefault(int(task_id), [0, 0])
        if status in (SignupStatus.signed_up, SignupStatus.attended):
            pair[0] += int(n)
        elif status == SignupStatus.waitlisted:
            pair[1] += int(n)
    return {k: (v[0], v[1]) for k, v in found.items()}


# --- check-in, the attendance sheet, claims --------------------------------------------------


@dataclass(frozen=True)
class CheckedIn:
    task: Task
    already: bool


async def check_in(
    session: AsyncSession, *, person_id: int, code: str, now: datetime, task_id: int | None = None
) -> CheckedIn:
    """A volunteer sends the 6-digit code (or scans its QR, which also names the task)."""
    code = re.sub(r"\s", "", code)
    if not re.fullmatch(rf"\d{{{CODE_DIGITS}}}", code):
        raise InvalidInput("task_code_wrong")
    if task_id is not None:
        task = await get_task(session, task_id)
        if task.code != code:
            raise InvalidInput("task_code_wrong")
        matches = [task]
    else:
        matches = list(
            (
                await session.exec(
                    select(Task)
                    .where(Task.code == code, Task.status == TaskStatus.open)
                    .order_by(col(Task.starts_at).desc())
                )
            ).all()
        )
    if not matches:
        raise InvalidInput("task_code_wrong")
    mine_ = {
        s.task_id: s
        for s in (
            await session.exec(
                select(TaskSignup).where(
                    col(TaskSignup.task_id).in_([t.id for t in matches]),
                    TaskSignup.person_id == person_id,
                    col(TaskSignup.status).in_(list(ACTIVE)),
                )
            )
        ).all()
    }
    found = next((t for t in matches if t.id in mine_), None)
    if found is None or found.id is None:
        raise Conflict("task_code_other_task", title=matches[0].title)
    task = found
    if task.status == TaskStatus.cancelled:
        raise Conflict("task_cancelled", title=task.title)
    if now < task.starts_at - CHECKIN_OPENS:
        raise Conflict("task_code_early", title=task.title)
    if now > task.ends_at:
        raise Conflict("task_code_expired", title=task.title)
    signup = mine_[found.id]
    if signup.checked_in_at is not None:
        return CheckedIn(task, True)
    signup.checked_in_at = signup.updated_at = now
    await session.flush()
    return CheckedIn(task, False)


@dataclass(frozen=True)
class SheetLine:
    signup: TaskSignup
    person: Person
    present: bool


async def sheet(
    session: AsyncSession, *, auth: Authority, task_id: int, now: datetime
) -> tuple[Task, list[SheetLine]]:
    """The lead's attendance sheet: who signed up (and waitlisted people who checked in), each
    present or not — pre-set from check-ins until the lead sets it."""
    task = await get_task(session, task_id)
    await _require_lead(session, auth, task)
    rows = (
        await session.exec(
            select(TaskSignup, Person)
            .join(Person, col(Person.id) == col(TaskSignup.person_id))
            .where(TaskSignup.task_id == task_id, TaskSignup.status != SignupStatus.withdrawn)
            .order_by(col(TaskSignup.seq))
        )
    ).all()
    lines = []
    for signup, person in rows:
        if signup.status == SignupStatus.waitlisted and signup.checked_in_at is None:
            continue
        if signup.status in (SignupStatus.attended, SignupStatus.no_show):
            present = signup.status == SignupStatus.attended
        elif signup.present is not None:
            present = signup.present
        else:
            present = signup.checked_in_at is not None
        lines.append(SheetLine(signup, person, present))
    return task, lines


async def mark(
    session: AsyncSession,
    *,
    auth: Authority,
    task_id: int,
    person_id: int,
    present: bool,
    now: datetime,
) -> TaskSignup:
    """Set one volunteer's line on the sheet (a state the button carries, never a toggle)."""
    task = await get_task(session, task_id, lock=True)
    await _require_lead(session, auth, task)
    if task.confirmed_at is not None:
        raise Conflict("task_attendance_done", title=task.title)
    signup = await signup_of(session, task_id, person_id)
    if signup is None or signup.status not in ACTIVE:
        raise NotFound("task_not_signed_up", title=task.title)
    signup.present, signup.updated_at = present, now
    await session.flush()
    return signup


def credit_key(task_id: int, person_id: int) -> str:
    return f"task:{task_id}:{person_id}"


async def _credit(
    session: AsyncSession, task: Task, signup: TaskSignup, *, by: int, now: datetime
) -> None:
    """Attended: credit through the neighbour bank (once per key) and thank them privately."""
    assert task.id is not None
    signup.status, signup.updated_at = SignupStatus.attended, now
    if task.points > 0:
        await ledger.post(
            session,
            community_id=task.community_id,
            person_id=signup.person_id,
            amount=task.points,
            key=credit_key(task.id, signup.person_id),
            reason=task.title,
            kind=ledger.Kind.task,
            by=by,
            now=now,
            rule_code=RULE,
        )
    balance = await ledger.balance(
        session, community_id=task.community_id, person_id=signup.person_id
    )
    await _tell(
        session,
        task,
        signup.person_id,
        "tasks/thanks",
        now=now,
        key=f"task:{task.id}:thanks:{signup.person_id}",
        balance=balance,
    )


@dataclass(frozen=True)
class Confirmed:
    task: Task
    attended: list[int]
    no_show: list[int]


async def confirm_attendance(
    session: AsyncSession, *, auth: Authority, task_id: int, now: datetime
) -> Confirmed:
    """Confirm the sheet once (a second confirmation, or a second lead at the same moment, is
    refused and changes nothing): attendees credited and thanked, no-shows recorded."""
    task = await get_task(session, task_id, lock=True)
    await _require_lead(session, auth, task)
    if task.status == TaskStatus.cancelled:
        raise Conflict("task_cancelled", title=task.title)
    if now < task.ends_at:
        raise Conflict("task_not_ended", title=task.title)
    if task.confirmed_at is not None:
        raise Conflict("task_attendance_done", title=task.title)
    _, lines = await sheet(session, auth=auth, task_id=task_id, now=now)
    attended, no_show = [], []
    for line in lines:
        if line.signup.status not in ACTIVE:
            continue
        if line.present:
            await _credit(session, task, line.signup, by=auth.person_id, now=now)
            attended.append(line.signup.person_id)
        elif line.signup.status == SignupStatus.signed_up:
            line.signup.status, line.signup.updated_at = SignupStatus.no_show, now
            no_show.append(line.signup.person_id)
    task.confirmed_at, task.confirmed_by, task.updated_at = now, auth.person_id, now
    await changed_card(session, task, now=now)
    await session.flush()
    return Confirmed(task, attended, no_show)


def claim_deadline(task: Task, zone: str) -> datetime:
    """Claims close at the end of the day after the task ends (local time)."""
    local_end = task.ends_at.astimezone(ZoneInfo(zone))
    return datetime.combine(local_end.date() + timedelta(days=2), time(0), tzinfo=ZoneInfo(zone))


async def claim(
    session: AsyncSession, *, task_id: int, person_id: int, now: datetime
) -> TaskSignup:
    """A volunteer who was not checked in says they were there; their leads are asked."""
    task = await get_task(session, task_id, lock=True)
    if task.status == TaskStatus.cancelled:
        raise Conflict("task_cancelled", title=task.title)
    signup = await signup_of(session, task_id, person_id)
    if signup is None or signup.status not in (*ACTIVE, SignupStatus.no_show):
        raise Conflict(
            "task_already_credited"
            if signup is not None and signup.status == SignupStatus.attended
            else "task_not_signed_up",
            title=task.title,
        )
    community = await get_community(session, task.community_id)
    if now < task.starts_at:
        raise Conflict("task_claim_early", title=task.title)
    if now >= claim_deadline(task, community.timezone):
        raise Conflict("task_claim_closed", title=task.title)
    if signup.claim == ClaimStatus.pending:
        return signup
    if signup.claim == ClaimStatus.rejected:
        raise Conflict("task_claim_rejected", title=task.title)
    signup.claim, signup.claimed_at, signup.updated_at = ClaimStatus.pending, now, now
    person = await session.get(Person, person_id)
    await outbox.enqueue_private(
        session,
        key=f"task:{task_id}:claim:{person_id}",
        person_id=task.lead_id,
        community_id=task.community_id,
        template="tasks/claim_to_lead",
        context={
            **(await about(session, task)),
            "person_id": person_id,
            "person_name": person.name if person else str(person_id),
        },
        now=now,
    )
    await session.flush()
    return signup


async def decide_claim(
    session: AsyncSession,
    *,
    auth: Authority,
    task_id: int,
    person_id: int,
    approve: bool,
    now: datetime,
) -> tuple[TaskSignup, bool]:
    """The lead approves (credited, once) or rejects a claim; returns (signup, changed)."""
    task = await get_task(session, task_id, lock=True)
    await _require_lead(session, auth, task)
    signup = await signup_of(session, task_id, person_id)
    if signup is None or signup.claim is None:
        raise NotFound("task_claim_not_found")
    if signup.claim != ClaimStatus.pending:
        return signup, False
    signup.claim, signup.updated_at = (
        (ClaimStatus.approved if approve else ClaimStatus.rejected),
        now,
    )
    if approve:
        await _credit(session, task, signup, by=auth.person_id, now=now)
        await changed_card(session, task, now=now)
    else:
        await _tell(
            session,
            task,
            person_id,
            "tasks/claim_rejected",
            now=now,
            key=f"task:{task_id}:claimed:{person_id}",
        )
    await session.flush()
    return signup, True


async def claimable(session: AsyncSession, *, person_id: int, now: datetime) -> list[Task]:
    """The person's tasks that started, were not checked in or credited, and may still be
    claimed (until the end of the day after)."""
    rows = await session.exec(
        select(Task, TaskSignup)
        .join(TaskSignup, col(TaskSignup.task_id) == col(Task.id))
        .where(
            TaskSignup.person_id == person_id,
            col(TaskSignup.status).in_([*ACTIVE, SignupStatus.no_show]),
            col(TaskSignup.checked_in_at).is_(None),
            col(TaskSignup.claim).is_(None),
            Task.status == TaskStatus.open,
            col(Task.starts_at) <= now,
            col(Task.ends_at) > now - timedelta(days=3),
        )
        .order_by(col(Task.starts_at))
    )
    found = []
    for task, _ in rows.all():
        community = await get_community(session, task.community_id)
        if now < claim_deadline(task, community.timezone):
            found.append(task)
    return found


async def pending_claims(session: AsyncSession, *, task_id: int) -> list[tuple[TaskSignup, Person]]:
    rows = await session.exec(
        select(TaskSignup, Person)
        .join(Person, col(Person.id) == col(TaskSignup.person_id))
        .where(TaskSignup.task_id == task_id, TaskSignup.claim == ClaimStatus.pending)
        .order_by(col(TaskSignup.claimed_at))
    )
    return [(s, p) for s, p in rows.all()]


# --- recurrence -------------------------------------------------------------------------------


def check_days(repeat: str, days: Iterable[int]) -> list[int]:
    chosen = sorted(set(days))
    if repeat == Repeat.weekly:
        valid = all(0 <= d <= 6 for d in chosen)
    elif repeat == Repeat.monthly:
        valid = all(1 <= d <= 31 for d in chosen)
    else:
        raise InvalidInput("task_bad_repeat")
    if not chosen or not valid:
        raise InvalidInput("task_no_days")
    return chosen


def occurrence_dates(repeat: str, days: Sequence[int], first: date, last: date) -> list[date]:
    """The dates in [first, last] a series falls on. Monthly days past a short month's end land
    on its last day (29, 30, 31 in February are one date, the 28th or 29th)."""
    found: set[date] = set()
    day = first
    if repeat == Repeat.weekly:
        while day <= last:
            if day.weekday() in days:
                found.add(day)
            day += timedelta(days=1)
        return sorted(found)
    year, month = first.year, first.month
    while date(year, month, 1) <= last:
        length = calendar.monthrange(year, month)[1]
        for d in days:
            candidate = date(year, month, min(d, length))
            if first <= candidate <= last:
                found.add(candidate)
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return sorted(found)


def short_months(days: Sequence[int]) -> bool:
    """Whether some chosen monthly day does not exist in every month (the preview says so)."""
    return any(d > 28 for d in days)


async def create_series(
    session: AsyncSession,
    *,
    auth: Authority,
    unit_id: int,
    fields: Fields,
    repeat: str,
    days: Iterable[int],
    now: datetime,
    here: tuple[int, int] | None = None,
) -> tuple[TaskSeries, list[Task]]:
    """A recurring task, from the local date of `fields.starts_at` on, at its clock times; its
    occurrences for the next four weeks (at least the next one) are created at once, later ones
    by the rhythm. The first occurrence's card also goes to `here` (see create_task)."""
    unit, values = await _posted_by(session, auth, unit_id, fields, now=now)
    chosen = check_days(repeat, days)
    community = await get_community(session, unit.community_id)
    zone = ZoneInfo(community.timezone)
    series = TaskSeries(
        repeat=repeat,
        days=chosen,
        start_time=fields.starts_at.astimezone(zone).time().replace(tzinfo=None),
        end_time=fields.ends_at.astimezone(zone).time().replace(tzinfo=None),
        starts_on=fields.starts_at.astimezone(zone).date(),
        created_at=now,
        **values,
    )
    session.add(series)
    await session.flush()
    created = await _materialise(session, series, community, now=now, here=here)
    return series, created


def _series_fields(series: TaskSeries, day: date, zone: ZoneInfo) -> Fields:
    starts = datetime.combine(day, series.start_time, tzinfo=zone)
    ends = datetime.combine(day, series.end_time, tzinfo=zone)
    if ends <= starts:
        ends += timedelta(days=1)
    return Fields(
        title=series.title,
        starts_at=starts,
        ends_at=ends,
        place=series.place,
        description=series.description,
        slots=series.slots,
        points=series.points,
        skill=series.skill,
        cutoff_minutes=series.cutoff_minutes,
        latitude=series.latitude,
        longitude=series.longitude,
    )


def upcoming_dates(series: TaskSeries, today: date) -> list[date]:
    """The dates a series has tasks for from `today`: the next four weeks, and at least the next
    one (a monthly day that falls later still gets its task, and its card a week ahead)."""
    first = max(today, series.starts_on or today)
    found = occurrence_dates(series.repeat, series.days, first, first + AHEAD)
    if not found:
        found = occurrence_dates(series.repeat, series.days, first, first + 2 * AHEAD)[:1]
    return found


async def _materialise(
    session: AsyncSession,
    series: TaskSeries,
    community: Community,
    *,
    now: datetime,
    here: tuple[int, int] | None = None,
) -> list[Task]:
    assert series.id is not None
    zone = ZoneInfo(community.timezone)
    today = now.astimezone(zone).date()
    existing = {
        task.occurs_on
        for task in (await session.exec(select(Task).where(Task.series_id == series.id))).all()
    }
    auth = Authority(person_id=series.lead_id, superadmin=True)  # the series was authorised
    created: list[Task] = []
    for day in upcoming_dates(series, today):
        if day in existing:
            continue
        fields = _series_fields(series, day, zone)
        if fields.starts_at <= now:
            continue
        created.append(
            await create_task(
                session,
                auth=auth,
                unit_id=series.unit_id,
                fields=fields,
                now=now,
                series_id=series.id,
                occurs_on=day,
                here=None if created else here,
            )
        )
    return created


async def stop_series(
    session: AsyncSession, *, auth: Authority, series_id: int, now: datetime
) -> TaskSeries:
    """No more occurrences are created (those already posted stay, each cancellable)."""
    series = await must_get(session, TaskSeries, series_id, "task_not_found")
    require(auth, await get_unit(session, series.unit_id))
    series.active = False
    await session.flush()
    return series


async def series_rhythm(session: AsyncSession, now: datetime) -> list[Task]:
    """Keep each active series' next four weeks of occurrences in place."""
    created: list[Task] = []
    for community in await communities(session):
        rows = await session.exec(
            select(TaskSeries).where(
                TaskSeries.community_id == community.id, col(TaskSeries.active).is_(True)
            )
        )
        for series in rows.all():
            created.extend(await _materialise(session, series, community, now=now))
    return created


# --- a lead's draft (/newtask): read back from its flow, shown, posted once -----------------

SLOT_CHOICES = (3, 5, 10, 20)  # the slots buttons (besides unlimited and a typed number)
DEFAULT_LENGTH = timedelta(hours=2)  # when the lead chose a start and no end
PREVIEW_DATES = 6  # a series' first dates the preview lists


@dataclass(frozen=True)
class Draft:
    """What a /newtask flow's data (plain JSON) describes, every field checked again: the data
    came through buttons and typing over many updates, and is trusted only once re-read here."""

    unit_id: int
    fields: Fields
    repeat: str | None = None  # weekly | monthly | None (once)
    days: tuple[int, ...] = ()


def _whole(value: Any, error: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(error)
    return value


def _moment(value: Any) -> datetime:
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        raise InvalidInput("task_draft_incomplete") from None
    if moment.tzinfo is None:
        raise InvalidInput("task_draft_incomplete")
    return moment


def _coordinate(value: Any, limit: float) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or abs(value) > limit:
        raise InvalidInput("task_bad_location")
    return float(value)


def slots_of(value: Any) -> int | None:
    """The draft's slots: a number, or "unlimited" (None)."""
    if value == UNLIMITED:
        return None
    return check_slots(_whole(value, "task_slots_number"))


def repeat_of(value: Any) -> tuple[str | None, tuple[int, ...]]:
    """The recurrence picker's choice: None (once), {"weekly": [0, 2]}, {"monthly": [9, 19]}."""
    if value is None:
        return None, ()
    if not isinstance(value, dict) or len(value) != 1:
        raise InvalidInput("task_bad_repeat")
    ((repeat, days),) = value.items()
    if not isinstance(days, list) or not all(isinstance(d, int) for d in days):
        raise InvalidInput("task_bad_repeat")
    return repeat, tuple(check_days(repeat, days))


def draft_of(data: Mapping[str, Any]) -> Draft:
    """Read a draft back. Missing or malformed fields (a forged or unfinished flow) are refused
    with InvalidInput; limits are the same as for any task (title, slots, points, skill)."""
    missing = [k for k in ("title", "when", "unit_id", "slots") if data.get(k) is None]
    if missing or not isinstance(data["when"], dict) or not data["when"].get("start"):
        raise InvalidInput("task_draft_incomplete")
    starts_at = _moment(data["when"]["start"])
    end = data["when"].get("end")
    ends_at = _moment(end) if end else starts_at + DEFAULT_LENGTH
    points_value = data.get("points")
    repeat, days = repeat_of(data.get("repeat"))
    fields = Fields(
        title=clean_title(str(data["title"])),
        starts_at=starts_at,
        ends_at=ends_at,
        place=clean_text(str(data.get("place") or ""), limit=PLACE_LIMIT, error="task_place_long"),
        description=clean_text(
            str(data.get("description") or ""),
            limit=DESCRIPTION_LIMIT,
            error="task_description_long",
        ),
        slots=slots_of(data["slots"]),
        points=None
        if points_value is None
        else check_points(_whole(points_value, "task_points_range")),
        skill=check_skill(data.get("skill")),
        latitude=_coordinate(data.get("latitude"), 90),
        longitude=_coordinate(data.get("longitude"), 180),
    )
    return Draft(_whole(data["unit_id"], "task_draft_incomplete"), fields, repeat, days)


@dataclass(frozen=True)
class Preview:
    """The card as residents will see it (an unsaved Task), and what the lead should know."""

    task: Task
    unit: Unit
    repeat: str | None
    days: tuple[int, ...]
    dates: list[date]  # a series' first dates
    short: list[int]  # monthly days some months lack: those months use their last day


async def preview(
    session: AsyncSession, *, auth: Authority, data: Mapping[str, Any], now: datetime
) -> Preview:
    """What posting the draft would make, checked as posting checks it (the lead leads the
    unit, the time is ahead), without writing anything."""
    draft = draft_of(data)
    unit = await get_unit(session, draft.unit_id)
    require(auth, unit)
    community = await get_community(session, unit.community_id)
    default = await default_points(session, community_id=unit.community_id, now=now)
    values = _checked(draft.fields, now=now, default_points=default)
    task = Task(
        community_id=unit.community_id,
        unit_id=draft.unit_id,
        lead_id=auth.person_id,
        starts_at=draft.fields.starts_at,
        ends_at=draft.fields.ends_at,
        code="",
        created_at=now,
        updated_at=now,
        **values,
    )
    dates: list[date] = []
    if draft.repeat is not None:
        zone = ZoneInfo(community.timezone)
        first = draft.fields.starts_at.astimezone(zone).date()
        dates = occurrence_dates(draft.repeat, draft.days, first, first + 4 * AHEAD)
        dates = dates[:PREVIEW_DATES]
        if dates:  # the card shows the first occurrence (the chosen day may not be one)
            length = task.ends_at - task.starts_at
            clock = draft.fields.starts_at.astimezone(zone).time()
            task.starts_at = datetime.combine(dates[0], clock, tzinfo=zone).astimezone(UTC)
            task.ends_at = task.starts_at + length
    short = [d for d in draft.days if d > 28] if draft.repeat == Repeat.monthly else []
    return Preview(task, unit, draft.repeat, draft.days, dates, short)


async def post_draft(
    session: AsyncSession,
    *,
    auth: Authority,
    data: Mapping[str, Any],
    now: datetime,
    here: tuple[int, int] | None = None,
) -> Task:
    """Post a lead's draft: one task, or a series and its first occurrences (the first one is
    returned). Run it through `flows.confirm`, so a double tap on Post posts once."""
    draft = draft_of(data)
    if draft.repeat is None:
        return await create_task(
            session, auth=auth, unit_id=draft.unit_id, fields=draft.fields, now=now, here=here
        )
    _, created = await create_series(
        session,
        auth=auth,
        unit_id=draft.unit_id,
        fields=draft.fields,
        repeat=draft.repeat,
        days=draft.days,
        now=now,
        here=here,
    )
    if not created:  # the chosen start matches none of the chosen days within eight weeks
        raise InvalidInput("task_no_occurrence")
    return created[0]


# --- the leads' lines: the evening before, after the end, the month -------------------------


async def evening_rhythm(session: AsyncSession, now: datetime) -> int:
    """From 19:00 local the evening before, each task's lead gets who is coming and who waits;
    after the end, a prompt to open the attendance sheet. Keyed: once each, however often run."""
    added = 0
    for community in await communities(session):
        zone = ZoneInfo(community.timezone)
        local = now.astimezone(zone)
        tomorrow = datetime.combine(local.date() + timedelta(days=1), time(0), tzinfo=zone)
        if local.time() >= EVENING:
            soon = await session.exec(
                select(Task).where(
                    Task.community_id == community.id,
                    Task.status == TaskStatus.open,
                    col(Task.starts_at) >= tomorrow,
                    col(Task.starts_at) < tomorrow + timedelta(days=1),
                )
            )
            for task in soon.all():
                added += await _evening_line(session, task, now=now)
        ended = await session.exec(
            select(Task).where(
                Task.community_id == community.id,
                Task.status == TaskStatus.open,
                col(Task.confirmed_at).is_(None),
                col(Task.ends_at) <= now,
                col(Task.ends_at) > now - timedelta(days=1),
            )
        )
        for task in ended.all():
            assert task.id is not None
            key = f"task:{task.id}:sheet:{task.lead_id}"
            if await _exists(session, key) or not await count_in(session, task.id):
                continue
            await _tell(session, task, task.lead_id, "tasks/sheet_ready", now=now, key=key)
            added += 1
    return added


async def _exists(session: AsyncSession, key: str) -> bool:
    found = await session.exec(select(outbox.Delivery.id).where(outbox.Delivery.key == key))
    return found.first() is not None


async def _evening_line(session: AsyncSession, task: Task, *, now: datetime) -> int:
    assert task.id is not None
    key = f"task:{task.id}:eve:{task.lead_id}"
    if await _exists(session, key):
        return 0
    rows = (
        await session.exec(
            select(TaskSignup, Person)
            .join(Person, col(Person.id) == col(TaskSignup.person_id))
            .where(TaskSignup.task_id == task.id, col(TaskSignup.status).in_(list(ACTIVE)))
            .order_by(col(TaskSignup.seq))
        )
    ).all()
    coming = [{"id": p.id, "name": p.name} for s, p in rows if s.status == SignupStatus.signed_up]
    waiting = [{"id": p.id, "name": p.name} for s, p in rows if s.status == SignupStatus.waitlisted]
    await _tell(
        session,
        task,
        task.lead_id,
        "tasks/evening",
        now=now,
        key=key,
        coming=coming,
        waiting=waiting,
        slots=task.slots,
    )
    return 1


@dataclass(frozen=True)
class MonthLine:
    held: int
    hours: float
    volunteers: int
    no_show_rate: float | None  # None when nobody was expected


async def month_line(
    session: AsyncSession, *, unit: Unit, start: datetime, end: datetime
) -> MonthLine:
    """For the leads' monthly statement: tasks held on the unit and below that ended in
    [start, end), volunteer-hours attended, distinct volunteers, share of no-shows."""
    rows = (
        await session.exec(
            select(Task, TaskSignup)
            .join(Unit, col(Unit.id) == col(Task.unit_id))
            .join(TaskSignup, col(TaskSignup.task_id) == col(Task.id), isouter=True)
            .where(
                col(Unit.path).startswith(unit.path),
                Task.status == TaskStatus.open,
                col(Task.ends_at) >= start,
                col(Task.ends_at) < end,
            )
        )
    ).all()
    held: set[int] = set()
    hours = 0.0
    volunteers: set[int] = set()
    attended = no_show = 0
    for task, signup in rows:
        assert task.id is not None
        held.add(task.id)
        if signup is None:
            continue
        if signup.status == SignupStatus.attended:
            attended += 1
            hours += task.hours
            volunteers.add(signup.person_id)
        elif signup.status == SignupStatus.no_show:
            no_show += 1
    expected = attended + no_show
    return MonthLine(
        held=len(held),
        hours=round(hours, 1),
        volunteers=len(volunteers),
        no_show_rate=round(no_show / expected, 3) if expected else None,
    )


# --- the calendar file ----------------------------------------------------------------------


def _ics_text(value: str) -> str:
    return (
        value.replace("\\", "\\\\")
        .replace(";", "\\;")
        .replace(",", "\\,")
        .replace("\r\n", "\\n")
        .replace("\n", "\\n")
    )


def _fold(line: str) -> list[str]:
    """RFC 5545: lines of at most 75 octets, continued with a leading space."""
    out: list[str] = []
    current = ""
    for char in line:
        limit = 75 if not out else 74
        if len((current + char).encode()) > limit:
            out.append(current)
            current = char
        else:
            current += char
    out.append(current)
    return [out[0]] + [" " + rest for rest in out[1:]]


def ics(task: Task, *, now: datetime, host: str = "linli") -> str:
    """The task as an iCalendar event (UTC times), for "Add to calendar"."""
    stamp = "%Y%m%dT%H%M%SZ"
    utc = ZoneInfo("UTC")
    lines = [
        "BEGIN:VCALENDAR",
        "VERSION:2.0",
        "PRODID:-//Linli//tasks//EN",
        "CALSCALE:GREGORIAN",
        "METHOD:PUBLISH",
        "BEGIN:VEVENT",
        f"UID:task-{task.id}-v{task.version}@{host}",
        f"DTSTAMP:{now.astimezone(utc).strftime(stamp)}",
        f"DTSTART:{task.starts_at.astimezone(utc).strftime(stamp)}",
        f"DTEND:{task.ends_at.astimezone(utc).strftime(stamp)}",
        f"SUMMARY:{_ics_text(task.title)}",
    ]
    if task.place:
        lines.append(f"LOCATION:{_ics_text(task.place)}")
    if task.latitude is not None and task.longitude is not None:
        lines.append(f"GEO:{task.latitude:.6f};{task.longitude:.6f}")
    if task.description:
        lines.append(f"DESCRIPTION:{_ics_text(task.description)}")
    if task.status == TaskStatus.cancelled:
        lines.append("STATUS:CANCELLED")
    lines += [
        "BEGIN:VALARM",
        "ACTION:DISPLAY",
        "TRIGGER:-PT1H",
        f"DESCRIPTION:{_ics_text(task.title)}",
        "END:VALARM",
    ]
    lines += ["END:VEVENT", "END:VCALENDAR"]
    return "\r\n".join(folded for line in lines for folded in _fold(line)) + "\r\n"


# --- rhythms ---------------------------------------------------------------------------------


async def rhythm(session: AsyncSession, now: datetime) -> int:
    """Everything tasks do on the clock: occurrences ahead, the leads' lines."""
    created = await series_rhythm(session, now)
    return len(created) + await evening_rhythm(session, now)
