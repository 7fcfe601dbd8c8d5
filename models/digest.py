"""The weekly digest (周周碰): one message per unit's chat, with a section from each feature.

A feature adds its section with one decorated function:

    @digest.section("reports", template="reports/digest", order=10)
    async def digest_section(session, community, units, week) -> dict[int, dict]:
        ...  # {unit id: plain values for the section's template}; leave out units with nothing

`units` are the community's units that have a chat; a section counts what happened in each
of them and below. The template `<lang>/<template>.html.j2` is included in `digest/weekly`
with the values as `data`. A unit none of whose sections has anything to say gets no digest.

`weekly` is the rhythm: on the community's digest day and time (Monday 09:00 in its zone
unless changed) it builds the digest of the past week (Monday to Sunday) once, marked by a
`DigestRun` row, and queues one outbox row per chat.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import UniqueConstraint
from sqlmodel import Field, SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from models import outbox
from models.base import UTCDateTime, dialect_insert
from models.errors import InvalidInput
from models.people import ChatLink, Community, Unit, communities

TEMPLATE = "digest/weekly"
DEFAULT_WEEKDAY = 0  # Monday
DEFAULT_AT = time(9, 0)


@dataclass(frozen=True)
class Week:
    """Monday 00:00 to the next Monday 00:00 in the community's zone, as aware datetimes."""

    first: date  # the Monday
    start: datetime
    end: datetime

    @property
    def label(self) -> str:
        return self.first.isoformat()

    @property
    def last(self) -> date:
        return self.first + timedelta(days=6)


def week_of(day: date, zone: str) -> Week:
    """The Monday-to-Sunday week containing `day`."""
    first = day - timedelta(days=day.weekday())
    tz = ZoneInfo(zone)
    return Week(
        first,
        datetime.combine(first, time(), tz),
        datetime.combine(first + timedelta(days=7), time(), tz),
    )


SectionBuilder = Callable[
    [AsyncSession, Community, Sequence[Unit], Week], Awaitable[dict[int, dict[str, Any]]]
]


@dataclass(frozen=True)
class Section:
    name: str
    template: str
    order: int
    build: SectionBuilder


SECTIONS: dict[str, Section] = {}


def section(
    name: str, *, template: str, order: int = 50
) -> Callable[[SectionBuilder], SectionBuilder]:
    """Register a feature's digest section (one per name; registering again replaces it)."""

    def register(build: SectionBuilder) -> SectionBuilder:
        SECTIONS[name] = Section(name, template, order, build)
        return build

    return register


# --- tables -------------------------------------------------------------------------------


class DigestPolicy(SQLModel, table=True):
    """When a community's digest goes out (absent: Monday 09:00)."""

    community_id: int = Field(foreign_key="community.id", primary_key=True)
    weekday: int = DEFAULT_WEEKDAY  # 0 Monday … 6 Sunday
    at: time = DEFAULT_AT
    enabled: bool = True


class DigestRun(SQLModel, table=True):
    """The digest of one community's week was built (so it is built once, whoever runs it)."""

    __table_args__ = (UniqueConstraint("community_id", "week"),)
    id: int | None = Field(default=None, primary_key=True)
    community_id: int = Field(foreign_key="community.id")
    week: str = Field(max_length=10)
    units: int = 0  # digests queued
    at: datetime = Field(sa_type=UTCDateTime)


# --- building -----------------------------------------------------------------------------


async def policy(session: AsyncSession, community_id: int) -> DigestPolicy:
    found = await session.get(DigestPolicy, community_id)
    return found or DigestPolicy(community_id=community_id)


async def set_policy(
    session: AsyncSession,
    *,
    community_id: int,
    weekday: int | None = None,
    at: time | None = None,
    enabled: bool | None = None,
) -> DigestPolicy:
    """Change when the digest goes out (the caller checks the person is an admin)."""
    if weekday is not None and (isinstance(weekday, bool) or not 0 <= weekday <= 6):
        raise InvalidInput("digest_bad_day")
    found = await session.get(DigestPolicy, community_id)
    if found is None:
        found = DigestPolicy(community_id=community_id)
        session.add(found)
    if weekday is not None:
        found.weekday = weekday
    if at is not None:
        found.at = at
    if enabled is not None:
        found.enabled = enabled
    await session.flush()
    return found


async def linked_units(
    session: AsyncSession, community_id: int
) -> tuple[list[Unit], list[ChatLink]]:
    rows = (
        await session.exec(
            select(ChatLink, Unit)
            .join(Unit, col(Unit.id) == col(ChatLink.unit_id))
            .where(Unit.community_id == community_id)
            .order_by(col(Unit.path), col(ChatLink.id))
        )
    ).all()
    units = {u.id: u for _, u in rows}
    return list(units.values()), [link for link, _ in rows]


async def build(
    session: AsyncSession, community: Community, week: Week, units: Sequence[Unit] | None = None
) -> dict[int, list[dict[str, Any]]]:
    """Each unit's sections with something to say, in order: {unit id: [{template, data}]}."""
    if units is None:
        units, _ = await linked_units(session, community.id or 0)
    found: dict[int, list[dict[str, Any]]] = {}
    for entry in sorted(SECTIONS.values(), key=lambda s: (s.order, s.name)):
        for unit_id, data in (await entry.build(session, community, units, week)).items():
            found.setdefault(unit_id, []).append(
                {"name": entry.name, "template": entry.template, "data": data}
            )
    return found


def _due_week(community: Community, rule: DigestPolicy, now: datetime) -> Week | None:
    """The week whose digest is due now: on the digest day, from the digest time on."""
    local = now.astimezone(ZoneInfo(community.timezone))
    if not rule.enabled or local.weekday() != rule.weekday or local.time() < rule.at:
        return None
    return week_of(local.date() - timedelta(days=7), community.timezone)


async def _claim_run(session: AsyncSession, community_id: int, week: Week, now: datetime) -> bool:
    result = await session.exec(
        dialect_insert(session)(DigestRun)
        .values(community_id=community_id, week=week.label, units=0, at=now)
        .on_conflict_do_nothing(index_elements=["community_id", "week"])
    )
    return bool(result.rowcount)


async def queue(session: AsyncSession, community: Community, week: Week, now: datetime) -> int:
    """Build the community's digests of `week` and queue one row per chat; returns rows."""
    units, links = await linked_units(session, community.id or 0)
    built = await build(session, community, week, units)
    names = {u.id: u.name for u in units}
    rows = [
        {
            "key": f"digest:{week.label}:{link.unit_id}:{link.chat_id}:{link.thread_id}",
            "chat_id": link.chat_id,
            "thread_id": link.thread_id,
            "community_id": community.id,
            "link_id": link.id,
            "template": TEMPLATE,
            "context": {
                "unit": names.get(link.unit_id, ""),
                "first": week.first.isoformat(),
                "last": week.last.isoformat(),
                "sections": sections,
            },
            "due_at": now,
            "now": now,
            "silent": True,
            "priority": outbox.Priority.broadcast,
        }
        for link in links
        if (sections := built.get(link.unit_id))
    ]
    added = await outbox.enqueue_many(session, rows)
    run = (
        await session.exec(
            select(DigestRun).where(
                DigestRun.community_id == community.id, DigestRun.week == week.label
            )
        )
    ).first()
    if run is not None:
        run.units = added
    await session.flush()
    return added


async def weekly(session: AsyncSession, now: datetime) -> int:
    """The rhythm: every community whose digest is due and not yet built gets it now."""
    added = 0
    for community in await communities(session):
        assert community.id is not None
        week = _due_week(community, await policy(session, community.id), now)
        if week is None or not await _claim_run(session, community.id, week, now):
            continue
        added += await queue(session, community, week, now)
    return added
