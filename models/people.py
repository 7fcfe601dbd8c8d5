"""Communities, their unit trees, linked chats, households, residents and the roles of leads."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any

from sqlalchemy import Column, ColumnElement, UniqueConstraint, bindparam, delete, func, true
from sqlalchemy.orm import aliased
from sqlmodel import Field, SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from models.base import TelegramId, UTCDateTime, dialect_insert, must_get, upserted
from models.errors import Conflict, InvalidInput, NotAllowed, NotFound

LANGUAGES = ("zh", "en")
CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I: read aloud from a door notice
CODE_LENGTH = 8
PROMPT_TTL = timedelta(minutes=15)
# A guided flow's question lives as long as its flow (models.flows expires it and says so).
FLOW_PROMPT = "flow"


class UnitKind(StrEnum):
    estate = "estate"
    grid = "grid"
    building = "building"
    entrance = "entrance"
    neighbourhood = "neighbourhood"


class ResidentStatus(StrEnum):
    pending = "pending"
    verified = "verified"
    rejected = "rejected"
    left = "left"


class RoleKind(StrEnum):
    lead = "lead"
    admin = "admin"


class BotStatus(StrEnum):
    member = "member"
    administrator = "administrator"
    left = "left"
    kicked = "kicked"


# --- tables -------------------------------------------------------------------------------


class Community(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=120, unique=True)
    timezone: str = Field(default="Asia/Shanghai", max_length=64)
    language: str = Field(default="zh", max_length=8)
    # Non-urgent messages the bot sends on its own wait until morning (local time).
    quiet_from: time = time(22, 0)
    quiet_until: time = time(8, 0)
    created_at: datetime = Field(sa_type=UTCDateTime)


class Unit(SQLModel, table=True):
    """A node of a community's tree. `path` is "/root/…/self/" so a subtree is a prefix."""

    # Names are unique among siblings; on PostgreSQL top-level units (no parent) too.
    __table_args__ = (
        UniqueConstraint("community_id", "parent_id", "name", postgresql_nulls_not_distinct=True),
    )
    id: int | None = Field(default=None, primary_key=True)
    community_id: int = Field(foreign_key="community.id", index=True)
    parent_id: int | None = Field(default=None, foreign_key="unit.id", index=True)
    kind: str = Field(max_length=20)
    name: str = Field(max_length=80)
    path: str = Field(default="", max_length=400, index=True)
    created_at: datetime = Field(sa_type=UTCDateTime)

    @property
    def lineage(self) -> list[int]:
        """Ids from the root down to this unit."""
        return [int(p) for p in self.path.strip("/").split("/") if p]


class Chat(SQLModel, table=True):
    """A Telegram group the bot has been in, and what it may do there."""

    id: int = Field(sa_column=Column(TelegramId, primary_key=True, autoincrement=False))
    type: str = Field(max_length=20)
    title: str = Field(default="", max_length=255)
    is_forum: bool = False
    bot_status: str = Field(default=BotStatus.member, max_length=20)
    migrated_to: int | None = Field(default=None, sa_type=TelegramId)
    updated_at: datetime = Field(sa_type=UTCDateTime)


class ChatLink(SQLModel, table=True):
    """A group, or one forum topic of it (thread_id > 0), serving one unit."""

    __table_args__ = (UniqueConstraint("chat_id", "thread_id"),)
    id: int | None = Field(default=None, primary_key=True)
    chat_id: int = Field(sa_type=TelegramId, index=True)
    thread_id: int = 0
    unit_id: int = Field(foreign_key="unit.id", index=True)
    title: str = Field(default="", max_length=255)
    linked_by: int = Field(sa_type=TelegramId)
    created_at: datetime = Field(sa_type=UTCDateTime)


class Household(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("building_id", "flat"),)
    id: int | None = Field(default=None, primary_key=True)
    community_id: int = Field(foreign_key="community.id", index=True)
    building_id: int = Field(foreign_key="unit.id", index=True)
    unit_id: int = Field(foreign_key="unit.id", index=True)  # deepest unit (may be the building)
    flat: str = Field(max_length=40)
    # Floor area in hundredths of a square metre: Civil Code thresholds need exact sums.
    area_centi_m2: int | None = None
    code: str = Field(max_length=16, unique=True)
    created_at: datetime = Field(sa_type=UTCDateTime)


class Person(SQLModel, table=True):
    """A Telegram user the bot has seen."""

    id: int = Field(sa_column=Column(TelegramId, primary_key=True, autoincrement=False))
    name: str = Field(default="", max_length=255)
    username: str | None = Field(default=None, max_length=64)
    language_code: str | None = Field(default=None, max_length=16)
    lang: str | None = Field(default=None, max_length=8)  # explicit /lang choice
    created_at: datetime = Field(sa_type=UTCDateTime)
    updated_at: datetime = Field(sa_type=UTCDateTime)


class Resident(SQLModel, table=True):
    """A person's membership of one household; one per person per community."""

    __table_args__ = (UniqueConstraint("community_id", "person_id"),)
    id: int | None = Field(default=None, primary_key=True)
    community_id: int = Field(foreign_key="community.id", index=True)
    person_id: int = Field(sa_type=TelegramId, foreign_key="person.id", index=True)
    household_id: int = Field(foreign_key="household.id", index=True)
    status: str = Field(default=ResidentStatus.pending, max_length=12, index=True)
    requested_at: datetime = Field(sa_type=UTCDateTime)
    decided_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    decided_by: int | None = Field(default=None, sa_type=TelegramId)


class Role(SQLModel, table=True):
    """A lead or admin of a unit; it covers the unit and everything below it."""

    __table_args__ = (UniqueConstraint("unit_id", "person_id", "kind"),)
    id: int | None = Field(default=None, primary_key=True)
    unit_id: int = Field(foreign_key="unit.id", index=True)
    person_id: int = Field(sa_type=TelegramId, foreign_key="person.id", index=True)
    kind: str = Field(default=RoleKind.lead, max_length=12)
    granted_by: int | None = Field(default=None, sa_type=TelegramId)
    created_at: datetime = Field(sa_type=UTCDateTime)


class Prompt(SQLModel, table=True):
    """The bot asked this person, in this chat, to type something next (a name, a code)."""

    __table_args__ = (UniqueConstraint("person_id", "chat_id"),)
    id: int | None = Field(default=None, primary_key=True)
    person_id: int = Field(sa_type=TelegramId)
    chat_id: int = Field(sa_type=TelegramId)
    kind: str = Field(max_length=32)
    payload: str = Field(default="", max_length=200)
    created_at: datetime = Field(sa_type=UTCDateTime)


# --- people and languages ----------------------------------------------------------------


def language_for(person: Person | None, community: Community | None = None) -> str:
    """The person's /lang choice, else Telegram's language_code, else the community's."""
    if person is not None:
        if person.lang in LANGUAGES:
            return person.lang
        if person.language_code:
            return "zh" if person.language_code.lower().startswith("zh") else "en"
    if community is not None and community.language in LANGUAGES:
        return community.language
    return "zh"


async def get_person(session: AsyncSession, person_id: int) -> Person | None:
    return await session.get(Person, person_id)


def person_is_current(
    person: Person | None, *, name: str, username: str | None, language_code: str | None
) -> bool:
    """Whether the stored person already matches what Telegram says (so no write is needed)."""
    return (
        person is not None
        and person.name == name
        and person.username == username
        and person.language_code == language_code
    )


async def touch_person(
    session: AsyncSession,
    *,
    person_id: int,
    name: str,
    username: str | None,
    language_code: str | None,
    now: datetime,
) -> Person:
    """Create or refresh the person as Telegram describes them: one statement, so two first
    updates of a new person at once make one row (an upsert on both databases)."""
    name = name.strip()[:255]
    values = {"name": name, "username": username, "language_code": language_code}
    statement = (
        dialect_insert(session)(Person)
        .values(id=person_id, created_at=now, updated_at=now, **values)
        .on_conflict_do_update(index_elements=["id"], set_={**values, "updated_at": now})
        .returning(Person)
    )
    return await upserted(session, statement, Person)


async def set_language(
    session: AsyncSession, *, person_id: int, lang: str, now: datetime
) -> Person:
    if lang not in LANGUAGES:
        raise InvalidInput("bad_language")
    person = await must_get(session, Person, person_id, "unknown_person")
    person.lang = lang
    person.updated_at = now
    await session.flush()
    return person


# --- communities and units ---------------------------------------------------------------


def one_line(
    text: str, *, limit: int, error: str = "name_too_long", low: int = 1, short: str = ""
) -> str:
    """Typed text on one line: runs of spaces and line breaks folded to one space. Shorter than
    `low` characters is refused as `short` (default: `error`), longer than `limit` as `error`
    (the error's parameters: `limit` and the text's `length`)."""
    line = " ".join(text.split())
    if not low <= len(line) <= limit:
        key = (short or error) if len(line) < low else error
        raise InvalidInput(key, limit=limit, length=len(line))
    return line


def paragraphs(text: str, *, limit: int, error: str) -> str:
    """Typed text that may run over lines: each line's spaces folded, blank ends dropped; longer
    than `limit` characters is refused as `error` (with `limit`)."""
    folded = "\n".join(" ".join(row.split()) for row in text.strip().splitlines()).strip()
    if len(folded) > limit:
        raise InvalidInput(error, limit=limit, length=len(folded))
    return folded


def clean_name(name: str, *, limit: int) -> str:
    """A typed name with its spaces folded; empty or over `limit` characters is refused."""
    return one_line(name, limit=limit, short="empty_name")


# The reads every update may take (a person's standing, the join picker) are built once, with
# their values bound at execution: building a select of several entities cost more than
# running it (bench/updates.py: memberships 3.3 ms to build and run, 1 ms to run).
_COMMUNITIES = select(Community).order_by(col(Community.id))


async def communities(session: AsyncSession) -> Sequence[Community]:
    return (await session.exec(_COMMUNITIES)).all()


async def create_community(
    session: AsyncSession, *, name: str, timezone: str, language: str, now: datetime
) -> Community:
    name = clean_name(name, limit=120)
    if language not in LANGUAGES:
        raise InvalidInput("bad_language")
    statement = (
        dialect_insert(session)(Community)
        .values(name=name, timezone=timezone, language=language, created_at=now)
        .on_conflict_do_nothing(index_elements=["name"])
        .returning(Community)
    )
    community = (await session.exec(statement)).scalar_one_or_none()
    if community is None:
        raise Conflict("community_exists", name=name)
    assert isinstance(community, Community)
    return community


async def get_unit(session: AsyncSession, unit_id: int) -> Unit:
    return await must_get(session, Unit, unit_id, "unit_not_found")


async def create_unit(
    session: AsyncSession,
    *,
    community_id: int,
    parent_id: int | None,
    kind: str,
    name: str,
    now: datetime,
) -> Unit:
    name = clean_name(name, limit=80)
    if kind not in UnitKind.__members__:
        raise InvalidInput("bad_unit_kind", kind=kind)
    # Lock the parent (the community for a top-level unit): two leads adding one name at
    # once under it take turns, and the second sees the first's unit.
    parent_path = "/"
    if parent_id is not None:
        parent = await must_get(session, Unit, parent_id, "unit_not_found", lock=True)
        if parent.community_id != community_id:
            raise InvalidInput("unit_other_community")
        parent_path = parent.path
    elif await session.get(Community, community_id, with_for_update=True) is None:
        raise NotFound("community_not_found")
    clash = await session.exec(
        select(Unit).where(
            Unit.community_id == community_id, Unit.parent_id == parent_id, Unit.name == name
        )
    )
    if clash.first() is not None:
        raise Conflict("unit_exists", name=name)
    unit = Unit(
        community_id=community_id, parent_id=parent_id, kind=kind, name=name, created_at=now
    )
    session.add(unit)
    await session.flush()
    unit.path = f"{parent_path}{unit.id}/"
    await session.flush()
    return unit


async def children(
    session: AsyncSession, *, community_id: int, parent_id: int | None
) -> Sequence[Unit]:
    query = select(Unit).where(Unit.community_id == community_id, Unit.parent_id == parent_id)
    return (await session.exec(query.order_by(col(Unit.name), col(Unit.id)))).all()


async def subtree(session: AsyncSession, unit: Unit) -> Sequence[Unit]:
    """The unit and everything below it, in tree order."""
    query = select(Unit).where(col(Unit.path).startswith(unit.path))
    return (await session.exec(query.order_by(col(Unit.path)))).all()


_UNITS_BY_ID = select(Unit).where(col(Unit.id).in_(bindparam("ids", expanding=True)))


async def units_by_id(session: AsyncSession, ids: Sequence[int]) -> dict[int, Unit]:
    if not ids:
        return {}
    rows = await session.exec(_UNITS_BY_ID, params={"ids": list(set(ids))})
    return {u.id: u for u in rows.all() if u.id is not None}


async def lineage_names(session: AsyncSession, unit: Unit) -> list[str]:
    """Names from the root down, for showing where a unit sits ("Grid 1 › Building 3")."""
    found = await units_by_id(session, unit.lineage)
    return [found[i].name for i in unit.lineage if i in found]


_BUILDINGS = (
    select(Unit)
    .where(col(Unit.community_id) == bindparam("community_id"), Unit.kind == UnitKind.building)
    .order_by(col(Unit.name), col(Unit.id))
)


async def buildings(session: AsyncSession, *, community_id: int) -> Sequence[Unit]:
    return (await session.exec(_BUILDINGS, params={"community_id": community_id})).all()


# --- chats and their links ---------------------------------------------------------------


async def record_chat(
    session: AsyncSession,
    *,
    chat_id: int,
    type: str,
    title: str,
    is_forum: bool,
    bot_status: str,
    now: datetime,
) -> Chat:
    values = {
        "type": type,
        "title": title[:255],
        "is_forum": is_forum,
        "bot_status": bot_status,
        "updated_at": now,
    }
    statement = (
        dialect_insert(session)(Chat)
        .values(id=chat_id, **values)
        .on_conflict_do_update(index_elements=["id"], set_=values)
        .returning(Chat)
    )
    return await upserted(session, statement, Chat)


def chat_is_reachable(chat: Chat | None) -> bool:
    return chat is None or chat.bot_status in (BotStatus.member, BotStatus.administrator)


async def migrate_chat(
    session: AsyncSession, *, old_chat_id: int, new_chat_id: int, now: datetime
) -> int:
    """A group became a supergroup: move its links to the new id. Returns links moved.

    Idempotent: Telegram reports a migration from both sides, and either may repeat.
    """
    old = await session.get(Chat, old_chat_id)
    new = await session.get(Chat, new_chat_id)
    if old is not None:
        old.migrated_to = new_chat_id
        old.updated_at = now
        if new is None:
            new = Chat(
                id=new_chat_id,
                type="supergroup",
                title=old.title,
                is_forum=False,
                bot_status=old.bot_status,
                updated_at=now,
            )
            session.add(new)
    taken = {
        link.thread_id
        for link in (
            await session.exec(select(ChatLink).where(ChatLink.chat_id == new_chat_id))
        ).all()
    }
    moved = 0
    for link in (await session.exec(select(ChatLink).where(ChatLink.chat_id == old_chat_id))).all():
        if link.thread_id in taken:
            await session.delete(link)
        else:
            link.chat_id = new_chat_id
            moved += 1
    await session.flush()
    return moved


async def link_for(
    session: AsyncSession, *, chat_id: int, thread_id: int | None
) -> ChatLink | None:
    """The unit this chat (or this topic of it) serves: the topic's own link, else the group's."""
    threads = [thread_id, 0] if thread_id else [0]
    rows = (
        await session.exec(
            select(ChatLink).where(
                ChatLink.chat_id == chat_id, col(ChatLink.thread_id).in_(threads)
            )
        )
    ).all()
    by_thread = {link.thread_id: link for link in rows}
    for t in threads:
        if t in by_thread:
            return by_thread[t]
    return None


async def link_chat(
    session: AsyncSession,
    *,
    chat_id: int,
    thread_id: int,
    unit_id: int,
    title: str,
    by: int,
    now: datetime,
) -> tuple[ChatLink, int | None]:
    """Link a group or topic to a unit; returns the link and the unit it served before, if any."""
    await get_unit(session, unit_id)
    statement = (
        dialect_insert(session)(ChatLink)
        .values(
            chat_id=chat_id,
            thread_id=thread_id,
            unit_id=unit_id,
            title=title[:255],
            linked_by=by,
            created_at=now,
        )
        .on_conflict_do_nothing(index_elements=["chat_id", "thread_id"])
    )
    created = bool((await session.exec(statement)).rowcount)
    link = (
        await session.exec(
            select(ChatLink)
            .where(ChatLink.chat_id == chat_id, ChatLink.thread_id == thread_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    ).one()
    if created:
        return link, None
    previous = link.unit_id
    link.unit_id, link.title, link.linked_by = unit_id, title[:255], by
    await session.flush()
    return link, (previous if previous != unit_id else None)


async def links_of_units(session: AsyncSession, unit_ids: Sequence[int]) -> Sequence[ChatLink]:
    if not unit_ids:
        return []
    query = select(ChatLink).where(col(ChatLink.unit_id).in_(set(unit_ids)))
    return (await session.exec(query.order_by(col(ChatLink.id)))).all()


# --- roles and authority: who may do what (the one place every feature asks) -------------


class Can(StrEnum):
    """What a feature asks before it acts. One definition each:

    - `lead`: lead work on a unit (announce, award, approve joins, appoint leads, post a task):
      a lead or admin role on the unit or any unit above it (inherited down the tree).
    - `admin`: admin work on a unit (appoint admins): an admin role on it or above it.
    - `run_community`: the community's shared things (the rewards catalogue, the redemption
      day): a lead or admin role on one of its top-level units, i.e. a reach over all of it.
    - `admin_community`: a community admin (earning rules, the books, new top-level units): an
      admin role on one of its top-level units. An admin of one building is not one.
    - `hand_over`: confirm the handover of a redeemed reward: the reward's merchant (pass
      `merchant_id`), or whoever may `run_community`.

    A super-admin may do everything.
    """

    lead = "lead"
    admin = "admin"
    run_community = "run_community"
    admin_community = "admin_community"
    hand_over = "hand_over"


@dataclass(frozen=True)
class Authority:
    """What one person may do: super-admin everywhere, else what their roles' units allow.

    Ask `may(Can.x, unit=…)` or `may(Can.x, community_id=…)`; `require_can` raises the refusal.
    """

    person_id: int
    superadmin: bool = False
    roles: tuple[tuple[Unit, str], ...] = field(default_factory=tuple)

    def covers(self, unit: Unit, *, kind: str = RoleKind.lead) -> bool:
        """Whether a role on this unit or above it allows `kind` work (admin implies lead)."""
        if self.superadmin:
            return True
        lineage = set(unit.lineage)
        return any(
            role_unit.id in lineage and (role == RoleKind.admin or kind == RoleKind.lead)
            for role_unit, role in self.roles
        )

    def _tops(self, community_id: int, kinds: frozenset[str]) -> bool:
        return self.superadmin or any(
            u.community_id == community_id and u.parent_id is None and role in kinds
            for u, role in self.roles
        )

    def may(
        self,
        can: Can,
        *,
        unit: Unit | None = None,
        community_id: int | None = None,
        merchant_id: int | None = None,
    ) -> bool:
        """Whether this person may do `can` on the unit (lead, admin) or community (the rest)."""
        if can in (Can.lead, Can.admin):
            assert unit is not None, f"{can} is asked about a unit"
            return self.covers(unit, kind=can.value)
        assert community_id is not None, f"{can} is asked about a community"
        if can == Can.hand_over and merchant_id is not None and merchant_id == self.person_id:
            return True
        if can == Can.admin_community:
            return self._tops(community_id, _ADMIN_ROLE)
        return self._tops(community_id, _ANY_ROLE)

    def community_admin_of(self) -> set[int]:
        """The communities this person is a community admin of (super-admins: ask `may`)."""
        return {u.community_id for u, role in self.roles if u.parent_id is None and role == "admin"}

    @property
    def is_lead(self) -> bool:
        return self.superadmin or bool(self.roles)

    @property
    def is_admin(self) -> bool:
        """A community admin somewhere (the admins' commands are shown to them)."""
        return self.superadmin or bool(self.community_admin_of())

    def top_units(self) -> list[Unit]:
        """The highest units this person covers (a role under another of theirs is redundant)."""
        units = {u.id: u for u, _ in self.roles}
        return [
            u
            for u in sorted(units.values(), key=lambda u: u.path)
            if not any(o.id != u.id and u.path.startswith(o.path) for o in units.values())
        ]

    def covering(self) -> ColumnElement[bool] | None:
        """A condition on `Unit` for the units this person covers (all of them for a
        super-admin); None when they cover none, so a caller returns nothing at once."""
        if self.superadmin:
            return true()
        tops = self.top_units()
        if not tops:
            return None
        within = col(Unit.path).startswith(tops[0].path)
        for top in tops[1:]:
            within = within | col(Unit.path).startswith(top.path)
        return within

    def may_remove(self, role: Role, unit: Unit) -> bool:
        """Step down from one's own role; remove someone else's only from a unit above it (of
        the role's kind) or as a super-admin, so co-leads of one unit cannot remove each other.
        The /me preview and the removal itself both ask this."""
        if role.person_id == self.person_id or self.superadmin:
            return True
        above = set(unit.lineage[:-1])
        return any(
            role_unit.id in above and (held == RoleKind.admin or role.kind == RoleKind.lead)
            for role_unit, held in self.roles
        )


_ANY_ROLE = frozenset({RoleKind.lead.value, RoleKind.admin.value})
_ADMIN_ROLE = frozenset({RoleKind.admin.value})


def require_can(
    auth: Authority,
    can: Can,
    *,
    unit: Unit | None = None,
    community: Community | None = None,
    error: str | None = None,
) -> None:
    """Raise NotAllowed unless `auth.may(can, …)`; `error` names the refusal a feature shows."""
    community_id = community.id if community is not None else None
    if auth.may(can, unit=unit, community_id=community_id):
        return
    place = unit.name if unit is not None else community.name if community is not None else ""
    default = "not_your_unit" if can == Can.lead else "admins_only"
    raise NotAllowed(error or default, unit=place)


_ROLES_OF = (
    select(Role, Unit)
    .join(Unit, col(Role.unit_id) == col(Unit.id))
    .where(col(Role.person_id) == bindparam("person_id"))
    .order_by(col(Unit.path), col(Role.id))
)


async def roles_of(session: AsyncSession, *, person_id: int) -> list[tuple[Role, Unit]]:
    rows = await session.exec(_ROLES_OF, params={"person_id": person_id})
    return [(role, unit) for role, unit in rows.all()]


async def authority(session: AsyncSession, *, person_id: int, superadmin: bool) -> Authority:
    return authority_of(person_id, superadmin, await roles_of(session, person_id=person_id))


def authority_of(person_id: int, superadmin: bool, roles: Sequence[tuple[Role, Unit]]) -> Authority:
    """The Authority these roles (as roles_of returns them) give."""
    kinds = tuple((unit, role.kind) for role, unit in roles)
    return Authority(person_id=person_id, superadmin=superadmin, roles=kinds)


def require(auth: Authority, unit: Unit, *, kind: str = RoleKind.lead) -> None:
    """Lead (or admin, with kind="admin") work on this unit, else NotAllowed."""
    require_can(auth, Can(kind), unit=unit)


async def grant_role(
    session: AsyncSession,
    *,
    auth: Authority,
    unit_id: int,
    person_id: int,
    kind: str,
    now: datetime,
) -> tuple[Role, bool]:
    """Appoint someone; returns (role, created). Only admins appoint admins."""
    if kind not in RoleKind.__members__:
        raise InvalidInput("bad_role")
    unit = await get_unit(session, unit_id)
    require(auth, unit, kind=kind)
    if await session.get(Person, person_id) is None:
        raise NotFound("unknown_person")
    # Two leads appointing one person at once: one row, and the second is told it exists.
    statement = (
        dialect_insert(session)(Role)
        .values(
            unit_id=unit_id,
            person_id=person_id,
            kind=kind,
            granted_by=auth.person_id,
            created_at=now,
        )
        .on_conflict_do_nothing(index_elements=["unit_id", "person_id", "kind"])
    )
    created = bool((await session.exec(statement)).rowcount)
    role = (
        await session.exec(
            select(Role).where(
                Role.unit_id == unit_id, Role.person_id == person_id, Role.kind == kind
            )
        )
    ).one()
    return role, created


async def revoke_role(session: AsyncSession, *, auth: Authority, role_id: int) -> Role:
    """Step down (your own role), or remove someone's role from above.

    Co-leads of one unit cannot remove each other: only a role on a unit above (of the
    right kind) or a super-admin can.
    """
    role = await must_get(session, Role, role_id, "role_not_found")
    unit = await get_unit(session, role.unit_id)
    if not auth.may_remove(role, unit):
        raise NotAllowed("not_your_unit", unit=unit.name)
    await session.delete(role)
    await session.flush()
    return role


async def roles_in(session: AsyncSession, unit_ids: Sequence[int]) -> Sequence[tuple[Role, Person]]:
    if not unit_ids:
        return []
    query = (
        select(Role, Person)
        .join(Person, col(Person.id) == col(Role.person_id))
        .where(col(Role.unit_id).in_(set(unit_ids)))
        .order_by(col(Role.unit_id), col(Role.id))
    )
    return [(r, p) for r, p in (await session.exec(query)).all()]


async def leads_covering(session: AsyncSession, unit: Unit) -> Sequence[Person]:
    """Everyone whose role covers this unit, nearest first, each once."""
    rows = await roles_in(session, unit.lineage)
    depth = {uid: i for i, uid in enumerate(unit.lineage)}
    seen: dict[int, Person] = {}
    for _role, person in sorted(rows, key=lambda rp: -depth.get(rp[0].unit_id, 0)):
        seen.setdefault(person.id, person)
    return list(seen.values())


# --- households --------------------------------------------------------------------------


def parse_area(text: str | None) -> int | None:
    """ "89.5" → 8950 hundredths of m²; exact, at most two decimals, positive."""
    if text is None or not str(text).strip():
        return None
    try:
        value = Decimal(str(text).strip())
    except InvalidOperation:
        raise InvalidInput("bad_area", value=str(text)) from None
    if not value.is_finite() or value <= 0 or value >= 100_000:
        raise InvalidInput("bad_area", value=str(text))
    scaled = value * 100
    if scaled != scaled.to_integral_value():
        raise InvalidInput("bad_area", value=str(text))
    return int(scaled)


def new_code() -> str:
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))


def normalise_code(text: str) -> str:
    return "".join(ch for ch in text.upper() if ch.isascii() and ch.isalnum())


async def add_household(
    session: AsyncSession,
    *,
    unit_id: int,
    flat: str,
    area_centi_m2: int | None,
    now: datetime,
    code: str | None = None,
) -> Household:
    unit = await get_unit(session, unit_id)
    building = await building_of(session, unit)
    flat = clean_name(flat, limit=40)
    assert building.id is not None
    household = Household(
        community_id=unit.community_id,
        building_id=building.id,
        unit_id=unit_id,
        flat=flat,
        area_centi_m2=area_centi_m2,
        code=code or await _unused_code(session),
        created_at=now,
    )
    session.add(household)
    await session.flush()
    return household


async def _unused_code(session: AsyncSession) -> str:
    while True:
        code = new_code()
        if (await session.exec(select(Household.id).where(Household.code == code))).first() is None:
            return code


async def building_of(session: AsyncSession, unit: Unit) -> Unit:
    """The building a unit belongs to: itself, or its nearest building ancestor."""
    if unit.kind == UnitKind.building:
        return unit
    found = await units_by_id(session, unit.lineage)
    for uid in reversed(unit.lineage):
        if uid in found and found[uid].kind == UnitKind.building:
            return found[uid]
    raise InvalidInput("not_in_a_building", unit=unit.name)


async def households_in(session: AsyncSession, *, building_id: int) -> Sequence[Household]:
    query = select(Household).where(Household.building_id == building_id)
    return (await session.exec(query.order_by(col(Household.flat)))).all()


async def get_household(session: AsyncSession, household_id: int) -> Household:
    return await must_get(session, Household, household_id, "household_not_found")


async def household_by_code(session: AsyncSession, code: str) -> Household:
    cleaned = normalise_code(code)
    household = (
        (await session.exec(select(Household).where(Household.code == cleaned))).first()
        if cleaned
        else None
    )
    if household is None:
        raise NotFound("bad_household_code")
    return household


# --- residents ---------------------------------------------------------------------------


async def request_join(
    session: AsyncSession,
    *,
    person_id: int,
    household_id: int,
    now: datetime,
    verified_by_code: bool = False,
) -> tuple[Resident, bool]:
    """Ask to join a household (pending), or join at once with its code.

    Returns (resident, changed). Repeating the same request changes nothing; a verified
    member of another household in the community must leave it first.
    """
    household = await get_household(session, household_id)
    status = ResidentStatus.verified if verified_by_code else ResidentStatus.pending
    # Insert unless the person has a row in this community (one statement: concurrent first
    # requests make one row), then work on that row, locked.
    statement = (
        dialect_insert(session)(Resident)
        .values(
            community_id=household.community_id,
            person_id=person_id,
            household_id=household_id,
            status=status,
            requested_at=now,
            decided_at=now if verified_by_code else None,
        )
        .on_conflict_do_nothing(index_elements=["community_id", "person_id"])
    )
    created = bool((await session.exec(statement)).rowcount)
    resident = (
        await session.exec(
            select(Resident)
            .where(Resident.community_id == household.community_id, Resident.person_id == person_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    ).one()
    if not created:
        if resident.status == ResidentStatus.verified:
            if resident.household_id == household_id:
                return resident, False
            raise Conflict("already_member")
        if resident.household_id == household_id and resident.status == status:
            return resident, False
        resident.household_id = household_id
        resident.status = status
        resident.requested_at = now
        resident.decided_at = now if verified_by_code else None
        resident.decided_by = None
        await session.flush()
    return resident, True


@dataclass(frozen=True)
class Membership:
    resident: Resident
    household: Household
    building: Unit
    unit: Unit
    community: Community


_BUILDING, _UNIT = aliased(Unit, name="building"), aliased(Unit, name="deepest")  # made once


_MEMBERSHIPS = (
    select(  # type: ignore[call-overload]  # sqlmodel types up to 4 entities
        Resident, Household, _BUILDING, _UNIT, Community
    )
    .join(Household, col(Household.id) == col(Resident.household_id))
    .join(_BUILDING, _BUILDING.id == Household.building_id)
    .join(_UNIT, _UNIT.id == Household.unit_id)
    .join(Community, col(Community.id) == col(Resident.community_id))
    .where(col(Resident.person_id) == bindparam("person_id"))
    .order_by(col(Resident.id))
)  # one query, not one more for the units


async def memberships(session: AsyncSession, *, person_id: int) -> list[Membership]:
    """Every community this person has asked to join or belongs to, with the household."""
    rows = (await session.exec(_MEMBERSHIPS, params={"person_id": person_id})).all()
    return [Membership(r, h, b, u, c) for r, h, b, u, c in rows]


async def get_membership(session: AsyncSession, resident_id: int) -> Membership:
    resident = await must_get(session, Resident, resident_id, "request_not_found")
    household = await get_household(session, resident.household_id)
    community = await session.get(Community, resident.community_id)
    assert community is not None
    units = await units_by_id(session, [household.building_id, household.unit_id])
    return Membership(
        resident, household, units[household.building_id], units[household.unit_id], community
    )


async def decide_join(
    session: AsyncSession, *, auth: Authority, resident_id: int, approve: bool, now: datetime
) -> Membership:
    """A lead approves or rejects a pending request. A second decision is a Conflict."""
    membership = await get_membership(session, resident_id)
    require(auth, membership.unit)
    resident = membership.resident
    if resident.person_id == auth.person_id and not auth.superadmin:
        # A lead moving into their own area is vouched for by someone else.
        raise NotAllowed("own_request")
    if resident.status != ResidentStatus.pending:
        raise Conflict("already_decided", status=resident.status)
    resident.status = ResidentStatus.verified if approve else ResidentStatus.rejected
    resident.decided_at = now
    resident.decided_by = auth.person_id
    await session.flush()
    return membership


async def pending_requests(
    session: AsyncSession, *, auth: Authority
) -> list[tuple[Membership, Person]]:
    """Requests waiting for a decision in the units this person covers, oldest first."""
    rows = (
        await session.exec(
            select(Resident, Person, Household, Community)
            .join(Person, col(Person.id) == col(Resident.person_id))
            .join(Household, col(Household.id) == col(Resident.household_id))
            .join(Community, col(Community.id) == col(Resident.community_id))
            .where(Resident.status == ResidentStatus.pending)
            .order_by(col(Resident.requested_at), col(Resident.id))
        )
    ).all()
    units = await units_by_id(
        session, [h.building_id for _, _, h, _ in rows] + [h.unit_id for _, _, h, _ in rows]
    )
    return [
        (Membership(r, h, units[h.building_id], units[h.unit_id], c), p)
        for r, p, h, c in rows
        if auth.covers(units[h.unit_id])
    ]


async def leave(
    session: AsyncSession, *, person_id: int, community_id: int, now: datetime
) -> Resident:
    resident = (
        await session.exec(
            select(Resident).where(
                Resident.community_id == community_id, Resident.person_id == person_id
            )
        )
    ).first()
    if resident is None or resident.status in (ResidentStatus.left, ResidentStatus.rejected):
        raise NotFound("not_a_member")
    resident.status = ResidentStatus.left
    resident.decided_at = now
    await session.flush()
    return resident


async def residents_under(
    session: AsyncSession,
    unit: Unit,
    *,
    offset: int = 0,
    limit: int = 20,
    name: str = "",
    exclude: Sequence[int] = (),
) -> tuple[Sequence[tuple[Resident, Person]], int]:
    """Verified residents in a unit's subtree (for picking someone), with the total count;
    `name`: only those whose name contains it (any case); `exclude`: people left off."""
    base = (
        select(Resident, Person)
        .join(Person, col(Person.id) == col(Resident.person_id))
        .join(Household, col(Household.id) == col(Resident.household_id))
        .join(Unit, col(Unit.id) == col(Household.unit_id))
        .where(Resident.status == ResidentStatus.verified, col(Unit.path).startswith(unit.path))
    )
    if name:
        base = base.where(func.lower(col(Person.name)).contains(name.lower(), autoescape=True))
    if exclude:
        base = base.where(col(Person.id).not_in(list(exclude)))
    total = (await session.exec(select(func.count()).select_from(base.subquery()))).one()
    rows = (
        await session.exec(
            base.order_by(col(Person.name), col(Person.id)).offset(offset).limit(limit)
        )
    ).all()
    return [(r, p) for r, p in rows], int(total)


def living_under(unit: Unit) -> Any:
    """SELECT the person ids of the verified residents of households in the unit's subtree."""
    return (
        select(Resident.person_id)
        .join(Household, col(Household.id) == col(Resident.household_id))
        .join(Unit, col(Unit.id) == col(Household.unit_id))
        .where(Resident.status == ResidentStatus.verified, col(Unit.path).startswith(unit.path))
    )


async def lives_under(session: AsyncSession, unit: Unit, person_id: int) -> bool:
    """Whether this person is a verified resident of a household in the unit's subtree."""
    query = living_under(unit).where(Resident.person_id == person_id)
    return (await session.exec(query.limit(1))).first() is not None


async def homes_and_above(session: AsyncSession, person_id: int) -> set[int]:
    """The units a person lives in or under: the unit of each verified home and every unit
    above it (what is posted there is for them)."""
    paths = (
        await session.exec(
            select(Unit.path)
            .join(Household, col(Household.unit_id) == col(Unit.id))
            .join(Resident, col(Resident.household_id) == col(Household.id))
            .where(Resident.person_id == person_id, Resident.status == ResidentStatus.verified)
        )
    ).all()
    return {int(p) for path in paths for p in path.strip("/").split("/") if p}


# --- prompts (the bot waits for typed input) ---------------------------------------------


async def set_prompt(
    session: AsyncSession, *, person_id: int, chat_id: int, kind: str, payload: str, now: datetime
) -> None:
    values = {"kind": kind, "payload": payload[:200], "created_at": now}
    statement = (
        dialect_insert(session)(Prompt)
        .values(person_id=person_id, chat_id=chat_id, **values)
        .on_conflict_do_update(index_elements=["person_id", "chat_id"], set_=values)
    )
    await session.exec(statement)


async def take_prompt(
    session: AsyncSession, *, person_id: int, chat_id: int, now: datetime
) -> Prompt | None:
    """The fresh prompt this person is answering here, removed so it is answered once."""
    prompt = (
        await session.exec(
            select(Prompt).where(Prompt.person_id == person_id, Prompt.chat_id == chat_id)
        )
    ).first()
    if prompt is None:
        return None
    await session.delete(prompt)
    await session.flush()
    fresh = prompt.kind == FLOW_PROMPT or now - prompt.created_at <= PROMPT_TTL
    return prompt if fresh else None


async def waiting_prompt(session: AsyncSession, *, person_id: int, chat_id: int) -> Prompt | None:
    """The question this person is to answer here, if any, left in place (a photo may answer it)."""
    query = select(Prompt).where(Prompt.person_id == person_id, Prompt.chat_id == chat_id)
    return (await session.exec(query)).first()


async def drop_prompts(
    session: AsyncSession, *, person_id: int, kind: str, payload_prefix: str
) -> None:
    """Forget this person's questions of `kind` about one thing (a cancelled draft), so their
    next message in that chat is not taken for an answer."""
    await session.exec(
        delete(Prompt).where(
            col(Prompt.person_id) == person_id,
            col(Prompt.kind) == kind,
            col(Prompt.payload).startswith(payload_prefix, autoescape=True),
        )
    )


async def has_prompt(session: AsyncSession, *, person_id: int, chat_id: int) -> bool:
    query = select(Prompt.id).where(Prompt.person_id == person_id, Prompt.chat_id == chat_id)
    return (await session.exec(query)).first() is not None


# --- joining: decisions from buttons, codes for door notices -----------------------------


async def decide_pending_join(
    session: AsyncSession,
    *,
    auth: Authority,
    resident_id: int,
    household_id: int,
    approve: bool,
    now: datetime,
) -> tuple[Membership, bool]:
    """Decide the request a lead's message shows; returns (membership, changed).

    The row is locked first so two leads tapping at once cannot both decide it. A request that
    was already decided is returned unchanged, so the caller can say who decided it. If the
    person has since asked for another flat, the old message's buttons no longer apply.
    """
    await session.exec(select(Resident).where(Resident.id == resident_id).with_for_update())
    membership = await get_membership(session, resident_id)
    require(auth, membership.unit)
    if membership.household.id != household_id:
        raise Conflict("join_replaced")
    if membership.resident.status != ResidentStatus.pending:
        return membership, False
    return await decide_join(
        session, auth=auth, resident_id=resident_id, approve=approve, now=now
    ), True


async def households_covered(
    session: AsyncSession, *, auth: Authority
) -> list[tuple[Household, Unit]]:
    """Every household (with its building) in the units this person covers."""
    within = auth.covering()
    if within is None:
        return []
    query = select(Household, Unit).join(Unit, col(Unit.id) == col(Household.unit_id))
    query = query.where(within)
    rows = (await session.exec(query)).all()
    buildings_found = await units_by_id(session, [h.building_id for h, _ in rows])
    found = [(h, buildings_found[h.building_id]) for h, _ in rows]
    return sorted(found, key=lambda hb: (hb[1].community_id, hb[1].name, hb[1].id, hb[0].flat))


# --- appointing leads and showing who leads what (handlers/leads.py) ----------------------


async def get_community(session: AsyncSession, community_id: int) -> Community:
    return await must_get(session, Community, community_id, "community_not_found")


async def note_person(
    session: AsyncSession,
    *,
    person_id: int,
    name: str,
    username: str | None,
    language_code: str | None,
    now: datetime,
) -> Person:
    """Remember someone Telegram showed us second-hand (the author of a replied-to message).

    A person already known keeps what their own updates told us: second-hand copies may lack
    fields such as the language.
    """
    person = await session.get(Person, person_id)
    if person is not None:
        return person
    return await touch_person(
        session,
        person_id=person_id,
        name=name,
        username=username,
        language_code=language_code,
        now=now,
    )


async def root_units(session: AsyncSession) -> Sequence[Unit]:
    """The top unit(s) of every community: where a super-admin's pickers start."""
    query = select(Unit).where(col(Unit.parent_id).is_(None))
    return (await session.exec(query.order_by(col(Unit.community_id), col(Unit.name)))).all()


async def units_with_children(session: AsyncSession, unit_ids: Sequence[int]) -> set[int]:
    """Which of these units have units below them (a picker opens those, and picks the rest)."""
    if not unit_ids:
        return set()
    query = select(Unit.parent_id).where(col(Unit.parent_id).in_(set(unit_ids))).distinct()
    return {pid for pid in (await session.exec(query)).all() if pid is not None}


async def role_with_unit(session: AsyncSession, role_id: int) -> tuple[Role, Unit, Person] | None:
    """A role with its unit and holder, or None once it is gone (stepped down, removed)."""
    row = (
        await session.exec(
            select(Role, Unit, Person)
            .join(Unit, col(Unit.id) == col(Role.unit_id))
            .join(Person, col(Person.id) == col(Role.person_id))
            .where(Role.id == role_id)
        )
    ).first()
    return (row[0], row[1], row[2]) if row is not None else None


async def led_units_under(
    session: AsyncSession, unit: Unit, *, limit: int
) -> tuple[Sequence[Unit], int]:
    """Units in a unit's subtree that have a lead or admin, in tree order, with their count."""
    base = select(Unit).where(
        col(Unit.path).startswith(unit.path),
        col(Unit.id).in_(select(Role.unit_id).distinct()),
    )
    total = (await session.exec(select(func.count()).select_from(base.subquery()))).one()
    rows = (await session.exec(base.order_by(col(Unit.path)).limit(limit))).all()
    return rows, int(total)


# --- linking chats to units (handlers/setup.py) -------------------------------------------


async def add_unit(
    session: AsyncSession,
    *,
    auth: Authority,
    community_id: int,
    parent_id: int | None,
    kind: str,
    name: str,
    now: datetime,
) -> Unit:
    """Add a unit where this person may: under a unit they cover, or at the top as an admin."""
    if parent_id is None:
        community = await get_community(session, community_id)
        # A new top-level unit reshapes the whole community: its admins only.
        require_can(auth, Can.admin_community, community=community)
    else:
        require(auth, await get_unit(session, parent_id))
    return await create_unit(
        session, community_id=community_id, parent_id=parent_id, kind=kind, name=name, now=now
    )


async def own_link(session: AsyncSession, *, chat_id: int, thread_id: int) -> ChatLink | None:
    """This exact group or topic's link, without falling back to the group's (see link_for)."""
    query = select(ChatLink).where(ChatLink.chat_id == chat_id, ChatLink.thread_id == thread_id)
    return (await session.exec(query)).first()


@dataclass(frozen=True)
class LinkResult:
    link: ChatLink
    unit: Unit
    previous: Unit | None  # the unit the chat or topic served before it moved here
    changed: bool  # False when it already served this unit


async def link_chat_as(
    session: AsyncSession,
    *,
    auth: Authority,
    chat_id: int,
    thread_id: int,
    unit_id: int,
    title: str,
    now: datetime,
    chat_admin: bool = False,
) -> LinkResult:
    """Link a group or topic to a unit this person covers; linking it again changes nothing.

    A group or topic that already serves another unit (its own link, or a topic's group's)
    moves only for a lead of the unit it serves now, or for an administrator of the Telegram
    chat (`chat_admin`, as Telegram says) who also leads the new unit: a lead who is merely a
    member of a building's group cannot take its notices elsewhere.
    """
    if chat_id > 0:  # Telegram numbers private chats (people) above zero, groups below
        raise InvalidInput("link_groups_only")
    unit = await get_unit(session, unit_id)
    require(auth, unit)
    existing = await own_link(session, chat_id=chat_id, thread_id=thread_id)
    if existing is not None and existing.unit_id == unit_id:
        return LinkResult(existing, unit, None, False)
    serving = await link_for(session, chat_id=chat_id, thread_id=thread_id)
    if serving is not None and serving.unit_id != unit_id and not chat_admin:
        current = await get_unit(session, serving.unit_id)
        if not auth.covers(current):
            raise NotAllowed("link_takeover", unit=current.name)
    link, previous_id = await link_chat(
        session,
        chat_id=chat_id,
        thread_id=thread_id,
        unit_id=unit_id,
        title=title,
        by=auth.person_id,
        now=now,
    )
    previous = await session.get(Unit, previous_id) if previous_id is not None else None
    return LinkResult(link, unit, previous, True)


async def unlink_chat_as(
    session: AsyncSession, *, auth: Authority, chat_id: int, thread_id: int, unit_id: int
) -> ChatLink | None:
    """Remove the link of this group or topic to `unit_id`; None when it is already gone.

    The unit comes from the confirmation the person saw: if the link has moved to another
    unit since, that confirmation no longer applies.
    """
    require(auth, await get_unit(session, unit_id))
    link = await own_link(session, chat_id=chat_id, thread_id=thread_id)
    if link is None:
        return None
    if link.unit_id != unit_id:
        raise Conflict("link_changed")
    await session.delete(link)
    await session.flush()
    return link


async def chats_of_community(session: AsyncSession, community_id: int) -> list[int]:
    """The groups linked to any unit of this community."""
    query = (
        select(ChatLink.chat_id)
        .join(Unit, col(Unit.id) == col(ChatLink.unit_id))
        .where(Unit.community_id == community_id)
        .distinct()
    )
    return sorted((await session.exec(query)).all())


async def links_of_chat(session: AsyncSession, *, chat_id: int) -> list[tuple[ChatLink, Unit]]:
    """Every link of a group (the group itself first, then its topics) with the unit served."""
    rows = await session.exec(
        select(ChatLink, Unit)
        .join(Unit, col(Unit.id) == col(ChatLink.unit_id))
        .where(ChatLink.chat_id == chat_id)
        .order_by(col(ChatLink.thread_id), col(ChatLink.id))
    )
    return [(link, unit) for link, unit in rows.all()]
