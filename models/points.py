"""The points ledger (街坊银行): append-only double entries, earning rules, awards and boards.

Every posting writes two rows with the same idempotency key: the person's entry (leg 0) and its
counter-entry on the community's own account (leg 1, person_id NULL), so a community's books
always sum to zero. A person's balance is the sum of their entries; `PointAccount.balance` caches
it and is changed in the same statement sequence, under the account row's lock.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from enum import StrEnum
from functools import cache
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import (
    JSON,
    Column,
    Index,
    Table,
    UniqueConstraint,
    and_,
    bindparam,
    case,
    delete,
    func,
    or_,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import aliased
from sqlalchemy.sql.expression import Executable
from sqlmodel import Field, SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from models import outbox
from models.base import TelegramId, UTCDateTime, dialect_insert
from models.errors import Conflict, InvalidInput, NotAllowed, NotFound
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
    can_add_root,
    communities,
    get_community,
    get_unit,
    memberships,
    require,
)

KEY_LIMIT = 160
REASON_LIMIT = 200
PERSON_LEG = 0
COUNTER_LEG = 1
DEFAULT_MAX_AWARD = 100
RULE_NAME_LIMIT = 40
RULE_POINTS_LIMIT = 1_000
MAX_AWARD_LIMIT = 10_000
MAX_PICKED = 50  # residents in one award: one event's helpers, not a whole building
WELCOME = "welcome"


class Kind(StrEnum):
    """Why an entry exists. Callers may use other short kinds (≤ 20 characters)."""

    award = "award"
    deduct = "deduct"
    task = "task"
    report = "report"
    welcome = "welcome"
    redeem = "redeem"
    refund = "refund"


class Per(StrEnum):
    event = "event"
    hour = "hour"


class DraftStatus(StrEnum):
    open = "open"
    done = "done"
    cancelled = "cancelled"


# What counts for the honour board (红榜): work for the neighbourhood, and its corrections.
# Welcome credits, redemptions and refunds move a balance but earn no honour.
CONTRIBUTIONS = frozenset({Kind.award, Kind.deduct, Kind.task, Kind.report})


class InsufficientPoints(Conflict):
    """A debit larger than the balance: nothing is written."""

    def __init__(self, *, needed: int, balance: int) -> None:
        super().__init__("not_enough_points", needed=needed, balance=balance)
        self.needed = needed
        self.balance = balance


# --- tables -------------------------------------------------------------------------------


class PointAccount(SQLModel, table=True):
    """One person's account in one community: the row every write to it locks first."""

    __table_args__ = (UniqueConstraint("community_id", "person_id"),)
    id: int | None = Field(default=None, primary_key=True)
    community_id: int = Field(foreign_key="community.id")
    person_id: int = Field(sa_type=TelegramId, foreign_key="person.id", index=True)
    balance: int = 0  # == sum of the person's entries (tests check it)
    earned: int = 0  # == sum of the person's CONTRIBUTIONS entries: the all-time honour board
    hidden: bool = False  # left off the honour board at their own wish
    created_at: datetime = Field(sa_type=UTCDateTime)


class LedgerEntry(SQLModel, table=True):
    """One leg of a posting. Never updated or deleted: a correction is a new posting."""

    __table_args__ = (
        UniqueConstraint("key", "leg"),
        # Covers the monthly scores (kind, amount) without reading the table: /points ranks a
        # person among their building's residents from this index alone.
        Index("ix_ledger_person_time", "person_id", "community_id", "created_at", "kind", "amount"),
        Index("ix_ledger_community_time", "community_id", "created_at"),
    )
    id: int | None = Field(default=None, primary_key=True)
    community_id: int = Field(foreign_key="community.id")
    # NULL: the community's own account (the counter-entry of a posting).
    person_id: int | None = Field(default=None, sa_type=TelegramId, foreign_key="person.id")
    leg: int = PERSON_LEG
    amount: int
    key: str = Field(max_length=KEY_LIMIT)
    kind: str = Field(max_length=20)
    rule_code: str | None = Field(default=None, max_length=32)
    reason: str = Field(default="", max_length=REASON_LIMIT)
    by: int | None = Field(default=None, sa_type=TelegramId)  # who posted it; None: the bot
    created_at: datetime = Field(sa_type=UTCDateTime)


class EarningRule(SQLModel, table=True):
    """What a kind of work earns in one community; admins change the points or turn it off."""

    __table_args__ = (UniqueConstraint("community_id", "code"),)
    id: int | None = Field(default=None, primary_key=True)
    community_id: int = Field(foreign_key="community.id")
    code: str = Field(max_length=32)
    name_zh: str = Field(max_length=RULE_NAME_LIMIT)
    name_en: str = Field(max_length=RULE_NAME_LIMIT)
    points: int
    per: str = Field(default=Per.event, max_length=8)
    active: bool = True
    created_at: datetime = Field(sa_type=UTCDateTime)
    updated_at: datetime = Field(sa_type=UTCDateTime)

    def name(self, lang: str) -> str:
        return self.name_en if lang == "en" else self.name_zh


class PointPolicy(SQLModel, table=True):
    """A community's limits; a community without a row has the defaults."""

    community_id: int = Field(primary_key=True, foreign_key="community.id")
    max_award: int = DEFAULT_MAX_AWARD  # one award above this is a typo (5000 for 50)
    updated_at: datetime = Field(sa_type=UTCDateTime)


class AwardDraft(SQLModel, table=True):
    """An award or deduction a lead is putting together, tap by tap, until it is saved once."""

    id: int | None = Field(default=None, primary_key=True)
    community_id: int = Field(foreign_key="community.id")
    unit_id: int = Field(foreign_key="unit.id")
    lead_id: int = Field(sa_type=TelegramId, index=True)
    kind: str = Field(default=Kind.award, max_length=8)  # award | deduct
    person_ids: list[int] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    amount: int | None = None
    rule_code: str | None = Field(default=None, max_length=32)
    reason: str = Field(default="", max_length=REASON_LIMIT)
    status: str = Field(default=DraftStatus.open, max_length=10)
    created_at: datetime = Field(sa_type=UTCDateTime)
    updated_at: datetime = Field(sa_type=UTCDateTime)


# --- the ledger core ----------------------------------------------------------------------


# Core tables: the hot path skips the ORM's bookkeeping (measured: ~4x the postings per second).
_ACCOUNTS: Table = PointAccount.__table__  # type: ignore[attr-defined]
_ENTRIES: Table = LedgerEntry.__table__  # type: ignore[attr-defined]
_LOCK = (
    select(_ACCOUNTS.c.id, _ACCOUNTS.c.balance)
    .where(
        _ACCOUNTS.c.community_id == bindparam("community_id"),
        _ACCOUNTS.c.person_id == bindparam("person_id"),
    )
    .with_for_update()
)
# Locks the row and moves the cached totals in one statement: the lock a posting takes first.
_CREDIT = (
    update(_ACCOUNTS)
    .where(
        _ACCOUNTS.c.community_id == bindparam("b_community"),
        _ACCOUNTS.c.person_id == bindparam("b_person"),
    )
    .values(
        balance=_ACCOUNTS.c.balance + bindparam("b_amount"),
        earned=_ACCOUNTS.c.earned + bindparam("b_earned"),
    )
    .returning(_ACCOUNTS.c.balance)
)
_UNDO = delete(_ENTRIES).where(_ENTRIES.c.key == bindparam("key"))


@cache
def _claim_for(dialect: str) -> Executable:
    """Insert a posting's legs unless its key exists; one statement, compiled once."""
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    return (
        insert(_ENTRIES)
        .on_conflict_do_nothing(index_elements=["key", "leg"])
        .returning(_ENTRIES.c.id, _ENTRIES.c.leg)
    )


def _claim(session: AsyncSession) -> Executable:
    return _claim_for(session.get_bind().dialect.name)


async def _open_account(
    session: AsyncSession, *, community_id: int, person_id: int, now: datetime
) -> None:
    """Create the account unless it exists; two first postings at once make one row."""
    statement = (
        dialect_insert(session)(_ACCOUNTS)
        .values(
            community_id=community_id,
            person_id=person_id,
            balance=0,
            earned=0,
            hidden=False,
            created_at=now,
        )
        .on_conflict_do_nothing(index_elements=["community_id", "person_id"])
    )
    await (await session.connection()).execute(statement)


async def lock_account(
    session: AsyncSession, *, community_id: int, person_id: int, now: datetime
) -> tuple[int, int]:
    """Lock the person's account row (creating it if needed); returns (account id, balance).

    For callers that must decide something from the balance before posting. On PostgreSQL
    this is SELECT … FOR UPDATE, held until the transaction ends; on SQLite the write
    transaction (BEGIN IMMEDIATE) already holds the database's one write lock.
    """
    conn = await session.connection()
    who = {"community_id": community_id, "person_id": person_id}
    row = (await conn.execute(_LOCK, who)).first()
    if row is None:
        await _open_account(session, community_id=community_id, person_id=person_id, now=now)
        row = (await conn.execute(_LOCK, who)).first()
        assert row is not None
    return int(row[0]), int(row[1])


async def post(
    session: AsyncSession,
    *,
    community_id: int,
    person_id: int,
    amount: int,
    key: str,
    reason: str,
    kind: str,
    by: int | None,
    now: datetime,
    rule_code: str | None = None,
) -> LedgerEntry | None:
    """Credit (amount > 0) or debit (amount < 0) a person, with the community's counter-entry.

    Idempotent by `key`: a posting whose key exists already returns None and changes nothing
    (whatever its other arguments), so a repeated update, a double tap or a retried job counts
    once; `entry_by_key` finds the first one. A debit below zero raises InsufficientPoints and
    writes nothing. Runs in the caller's transaction.

    The first statement updates the person's account row, which locks it (PostgreSQL holds the
    row lock to the end of the transaction; SQLite's BEGIN IMMEDIATE holds the write lock), so
    concurrent postings to one person run one after another and each sees the last one's
    balance and keys. Two statements on the common path: measured, each statement costs as
    much as the whole transaction's begin and commit.
    """
    if isinstance(amount, bool) or not isinstance(amount, int) or amount == 0:
        raise InvalidInput("points_not_whole")
    if not key or len(key) > KEY_LIMIT:
        raise ValueError(f"ledger key must be 1..{KEY_LIMIT} characters: {key!r}")
    conn = await session.connection()
    earned = amount if kind in CONTRIBUTIONS else 0
    who = {"b_community": community_id, "b_person": person_id}
    change = {**who, "b_amount": amount, "b_earned": earned}
    after = (await conn.execute(_CREDIT, change)).scalar()
    if after is None:
        await _open_account(session, community_id=community_id, person_id=person_id, now=now)
        after = (await conn.execute(_CREDIT, change)).scalar()
        assert after is not None
    person_leg: dict[str, Any] = {
        "community_id": community_id,
        "person_id": person_id,
        "leg": PERSON_LEG,
        "amount": amount,
        "key": key,
        "kind": kind,
        "rule_code": rule_code,
        "reason": " ".join(reason.split())[:REASON_LIMIT],
        "by": by,
        "created_at": now,
    }
    counter_leg = {**person_leg, "person_id": None, "leg": COUNTER_LEG, "amount": -amount}
    # Inserting the key claims it: nothing inserted means this posting happened already.
    rows = await conn.execute(_claim(session), [person_leg, counter_leg])
    inserted = {int(leg): int(entry_id) for entry_id, leg in rows}
    if PERSON_LEG not in inserted or after < 0:
        # Put the totals back (the rows were never visible outside this transaction).
        undo = {**who, "b_amount": -amount, "b_earned": -earned}
        await conn.execute(_CREDIT, undo)
        if PERSON_LEG not in inserted:
            return None
        await conn.execute(_UNDO, {"key": key})
        raise InsufficientPoints(needed=-amount, balance=after - amount)
    return LedgerEntry(id=inserted[PERSON_LEG], **person_leg)


async def balance(session: AsyncSession, *, community_id: int, person_id: int) -> int:
    """The person's balance in the community (0 before their first entry)."""
    query = select(PointAccount.balance).where(
        PointAccount.community_id == community_id, PointAccount.person_id == person_id
    )
    found = (await session.exec(query)).first()
    return int(found) if found is not None else 0


async def ledger_sum(session: AsyncSession, *, community_id: int, person_id: int | None) -> int:
    """The balance recomputed from the entries (person_id None: the community's own account)."""
    owner = (
        col(LedgerEntry.person_id).is_(None)
        if person_id is None
        else col(LedgerEntry.person_id) == person_id
    )
    query = select(func.coalesce(func.sum(LedgerEntry.amount), 0)).where(
        LedgerEntry.community_id == community_id, owner
    )
    return int((await session.exec(query)).one())


async def entry_by_key(session: AsyncSession, key: str) -> LedgerEntry | None:
    """The person's entry of the posting with this key, if it exists."""
    query = select(LedgerEntry).where(LedgerEntry.key == key, LedgerEntry.leg == PERSON_LEG)
    return (await session.exec(query)).first()


async def history(
    session: AsyncSession,
    *,
    community_id: int,
    person_id: int,
    before_id: int | None = None,
    limit: int = 10,
) -> list[LedgerEntry]:
    """The person's entries, newest first; `before_id` pages back from an entry already shown."""
    query = select(LedgerEntry).where(
        LedgerEntry.person_id == person_id, LedgerEntry.community_id == community_id
    )
    if before_id is not None:
        anchor = await session.get(LedgerEntry, before_id)
        if anchor is None or anchor.person_id != person_id:
            raise InvalidInput("stale_button")
        query = query.where(
            or_(
                col(LedgerEntry.created_at) < anchor.created_at,
                and_(
                    col(LedgerEntry.created_at) == anchor.created_at,
                    col(LedgerEntry.id) < before_id,
                ),
            )
        )
    query = query.order_by(col(LedgerEntry.created_at).desc(), col(LedgerEntry.id).desc())
    return list((await session.exec(query.limit(limit))).all())


# --- earning rules and limits -------------------------------------------------------------


@dataclass(frozen=True)
class DefaultRule:
    code: str
    name_zh: str
    name_en: str
    points: int
    per: Per = Per.event


DEFAULT_RULES = (
    DefaultRule("task", "志愿服务", "Volunteer task", 10),
    DefaultRule("task_hour", "志愿服务（每小时）", "Volunteer hour", 5, Per.hour),
    DefaultRule("report", "问题上报被采纳", "Accepted problem report", 3),
    DefaultRule(WELCOME, "新邻居欢迎积分", "Welcome credit", 5),
    DefaultRule("garbage", "垃圾分类", "Garbage sorting", 2),
    DefaultRule("patrol", "巡逻", "Patrol", 5),
)
# The kind an entry from a rule gets, so the boards and statements can tell work apart.
RULE_KINDS = {
    "task": Kind.task,
    "task_hour": Kind.task,
    "report": Kind.report,
    WELCOME: Kind.welcome,
}


def _default_rows(community_id: int, now: datetime) -> list[EarningRule]:
    return [
        EarningRule(
            community_id=community_id,
            code=d.code,
            name_zh=d.name_zh,
            name_en=d.name_en,
            points=d.points,
            per=d.per,
            created_at=now,
            updated_at=now,
        )
        for d in DEFAULT_RULES
    ]


async def rules(
    session: AsyncSession, *, community_id: int, now: datetime, active_only: bool = False
) -> list[EarningRule]:
    """The community's rules in the order they were made; the defaults (unsaved) until an admin
    first changes one, so reading never writes."""
    query = select(EarningRule).where(EarningRule.community_id == community_id)
    stored = list((await session.exec(query.order_by(col(EarningRule.id)))).all())
    found = stored or _default_rows(community_id, now)
    return [r for r in found if r.active or not active_only]


async def ensure_rules(session: AsyncSession, *, community_id: int, now: datetime) -> None:
    """Save the default rules for a community that has none (repeats and races add nothing)."""
    rows = [r.model_dump(exclude={"id"}) for r in _default_rows(community_id, now)]
    statement = (
        dialect_insert(session)(EarningRule.__table__)  # type: ignore[attr-defined]
        .values(rows)
        .on_conflict_do_nothing(index_elements=["community_id", "code"])
    )
    exists = select(EarningRule.id).where(EarningRule.community_id == community_id)
    if (await session.exec(exists)).first() is None:
        await session.exec(statement)


async def rule(
    session: AsyncSession, *, community_id: int, code: str, now: datetime
) -> EarningRule:
    for found in await rules(session, community_id=community_id, now=now):
        if found.code == code:
            return found
    raise NotFound("points_rule_not_found")


def require_admin(auth: Authority, community: Community) -> None:
    if not can_add_root(auth, community_id=community.id or 0):
        raise NotAllowed("admins_only", unit=community.name)


def _whole_number(value: int | str, *, low: int, high: int, error: str) -> int:
    """A typed or tapped number as an int in [low, high], else the named InvalidInput."""
    if isinstance(value, str):
        text = value.strip().translate(_FULL_WIDTH_DIGITS).removeprefix("+")
        if not text.isascii() or not text.isdigit():
            raise InvalidInput(error, low=low, high=high)
        value = int(text)
    if isinstance(value, bool) or value < low or value > high:
        raise InvalidInput(error, low=low, high=high)
    return value


_FULL_WIDTH_DIGITS = str.maketrans("０１２３４５６７８９＋", "0123456789+")


async def edit_rule(
    session: AsyncSession,
    *,
    auth: Authority,
    community_id: int,
    code: str,
    now: datetime,
    points: int | str | None = None,
    active: bool | None = None,
) -> EarningRule:
    """An admin changes what a rule earns, or turns it on or off."""
    require_admin(auth, await get_community(session, community_id))
    await ensure_rules(session, community_id=community_id, now=now)
    found = (
        await session.exec(
            select(EarningRule).where(
                EarningRule.community_id == community_id, EarningRule.code == code
            )
        )
    ).first()
    if found is None:
        raise NotFound("points_rule_not_found")
    if points is not None:
        found.points = _whole_number(
            points, low=1, high=RULE_POINTS_LIMIT, error="points_bad_rule_points"
        )
    if active is not None:
        found.active = active
    found.updated_at = now
    await session.flush()
    return found


async def add_rule(
    session: AsyncSession, *, auth: Authority, community_id: int, name: str, now: datetime
) -> EarningRule:
    """A custom rule (patrol of the north gate, stairwell clearing…) worth 1 point until set."""
    require_admin(auth, await get_community(session, community_id))
    name = " ".join(name.split())
    if not name:
        raise InvalidInput("empty_name")
    if len(name) > RULE_NAME_LIMIT:
        raise InvalidInput("name_too_long", limit=RULE_NAME_LIMIT)
    # Two admins adding rules at once take turns on the community row: each sees the other's
    # rule (no duplicate name) and takes the next free code.
    await session.get(Community, community_id, with_for_update=True)
    await ensure_rules(session, community_id=community_id, now=now)
    existing = await rules(session, community_id=community_id, now=now)
    if any(name in (r.name_zh, r.name_en) for r in existing):
        raise Conflict("points_rule_exists", name=name)
    numbers = [int(r.code[1:]) for r in existing if r.code[:1] == "c" and r.code[1:].isdigit()]
    found = EarningRule(
        community_id=community_id,
        code=f"c{max(numbers, default=0) + 1}",
        name_zh=name,
        name_en=name,
        points=1,
        created_at=now,
        updated_at=now,
    )
    session.add(found)
    await session.flush()
    return found


async def max_award(session: AsyncSession, *, community_id: int) -> int:
    policy = await session.get(PointPolicy, community_id)
    return policy.max_award if policy is not None else DEFAULT_MAX_AWARD


async def set_max_award(
    session: AsyncSession, *, auth: Authority, community_id: int, value: int | str, now: datetime
) -> int:
    require_admin(auth, await get_community(session, community_id))
    amount = _whole_number(value, low=1, high=MAX_AWARD_LIMIT, error="points_bad_max")
    values = {"max_award": amount, "updated_at": now}
    statement = (
        dialect_insert(session)(PointPolicy)
        .values(community_id=community_id, **values)
        .on_conflict_do_update(index_elements=["community_id"], set_=values)
    )
    await session.exec(statement)
    return amount


async def earn(
    session: AsyncSession,
    *,
    community_id: int,
    person_id: int,
    rule_code: str,
    key: str,
    by: int | None,
    now: datetime,
    units: int = 1,
) -> LedgerEntry | None:
    """Credit what a rule earns (times `units`, e.g. hours); None if the rule is off or this key
    was credited already. For features that reward work (tasks attended, reports accepted)."""
    found = await rule(session, community_id=community_id, code=rule_code, now=now)
    if not found.active or units < 1:
        return None
    community = await get_community(session, community_id)
    return await post(
        session,
        community_id=community_id,
        person_id=person_id,
        amount=found.points * units,
        key=key,
        reason=found.name(community.language),
        kind=RULE_KINDS.get(rule_code, Kind.award),
        by=by,
        now=now,
        rule_code=rule_code,
    )


async def welcome(
    session: AsyncSession, *, community_id: int, person_id: int, now: datetime
) -> LedgerEntry | None:
    """The welcome credit of a newly verified resident: once per person per community, ever."""
    return await earn(
        session,
        community_id=community_id,
        person_id=person_id,
        rule_code=WELCOME,
        key=f"welcome:{community_id}:{person_id}",
        by=None,
        now=now,
    )


# --- who may be awarded ---------------------------------------------------------------------


async def home_of(
    session: AsyncSession, *, community_id: int, person_id: int
) -> tuple[Household, Unit] | None:
    """A verified resident's household and its unit (None for anyone else)."""
    row = (
        await session.exec(
            select(Household, Unit)
            .join(Resident, col(Resident.household_id) == col(Household.id))
            .join(Unit, col(Unit.id) == col(Household.unit_id))
            .where(
                Resident.community_id == community_id,
                Resident.person_id == person_id,
                Resident.status == ResidentStatus.verified,
            )
        )
    ).first()
    return (row[0], row[1]) if row is not None else None


async def check_awardable(
    session: AsyncSession, *, auth: Authority, community_id: int, person_id: int, within: Unit
) -> Unit:
    """The resident's unit, if they live under `within` and the lead covers it.

    One refusal for every case, so a forged button learns nothing about who lives where. Leads
    do not award themselves: another lead (or a super-admin) vouches for their work.
    """
    if person_id == auth.person_id and not auth.superadmin:
        raise NotAllowed("points_own_award")
    home = await home_of(session, community_id=community_id, person_id=person_id)
    if home is None or not home[1].path.startswith(within.path) or not auth.covers(home[1]):
        raise NotAllowed("points_not_your_resident")
    return home[1]


# --- awards and deductions, tap by tap ------------------------------------------------------


async def start_draft(
    session: AsyncSession,
    *,
    auth: Authority,
    unit_id: int,
    kind: str,
    now: datetime,
    person_ids: Sequence[int] = (),
) -> AwardDraft:
    """Begin an award (or deduction) for residents of a unit the lead covers."""
    if kind not in (Kind.award, Kind.deduct):
        raise InvalidInput("stale_button")
    unit = await get_unit(session, unit_id)
    require(auth, unit)
    for person_id in person_ids:
        await check_awardable(
            session, auth=auth, community_id=unit.community_id, person_id=person_id, within=unit
        )
    assert unit.id is not None
    draft = AwardDraft(
        community_id=unit.community_id,
        unit_id=unit.id,
        lead_id=auth.person_id,
        kind=kind,
        person_ids=list(dict.fromkeys(person_ids)),
        created_at=now,
        updated_at=now,
    )
    session.add(draft)
    await session.flush()
    return draft


async def get_draft(
    session: AsyncSession, *, auth: Authority, draft_id: int, lock: bool = False
) -> tuple[AwardDraft, Unit]:
    """The lead's own draft and its unit, with the lead's cover of it checked again."""
    query = select(AwardDraft).where(AwardDraft.id == draft_id)
    if lock:
        query = query.with_for_update().execution_options(populate_existing=True)
    draft = (await session.exec(query)).first()
    if draft is None:
        raise InvalidInput("stale_button")
    if draft.lead_id != auth.person_id:
        raise NotAllowed("points_not_your_picker")
    unit = await get_unit(session, draft.unit_id)
    require(auth, unit)
    return draft, unit


async def _open_draft(
    session: AsyncSession, *, auth: Authority, draft_id: int
) -> tuple[AwardDraft, Unit]:
    draft, unit = await get_draft(session, auth=auth, draft_id=draft_id, lock=True)
    if draft.status != DraftStatus.open:
        raise Conflict("points_award_closed")
    return draft, unit


async def pick_person(
    session: AsyncSession,
    *,
    auth: Authority,
    draft_id: int,
    person_id: int,
    picked: bool,
    now: datetime,
) -> AwardDraft:
    """Pick a resident for the draft (or unpick them); picking one already picked changes
    nothing, so a double tap or a repeated update leaves the choice as the lead made it."""
    draft, unit = await _open_draft(session, auth=auth, draft_id=draft_id)
    chosen = list(draft.person_ids)
    if (person_id in chosen) == picked:
        return draft
    if not picked:
        chosen.remove(person_id)
    else:
        await check_awardable(
            session, auth=auth, community_id=draft.community_id, person_id=person_id, within=unit
        )
        if len(chosen) >= MAX_PICKED:
            raise InvalidInput("points_too_many", limit=MAX_PICKED)
        chosen.append(person_id)
    draft.person_ids = chosen  # a new list, so the JSON column is seen as changed
    draft.updated_at = now
    await session.flush()
    return draft


async def set_amount(
    session: AsyncSession, *, auth: Authority, draft_id: int, amount: int | str, now: datetime
) -> AwardDraft:
    """A tapped or typed amount: a whole number from 1 to the community's maximum."""
    draft, _unit = await _open_draft(session, auth=auth, draft_id=draft_id)
    limit = await max_award(session, community_id=draft.community_id)
    draft.amount = _whole_number(amount, low=1, high=limit, error="points_bad_amount")
    draft.updated_at = now
    await session.flush()
    return draft


async def choose_rule(
    session: AsyncSession,
    *,
    auth: Authority,
    draft_id: int,
    code: str,
    now: datetime,
    with_amount: bool,
) -> AwardDraft:
    """An award for a rule's work: its name is the reason, and (if asked) its points the amount.

    Deductions take no rule: they need a reason in the lead's own words.
    """
    draft, _unit = await _open_draft(session, auth=auth, draft_id=draft_id)
    if draft.kind != Kind.award:
        raise InvalidInput("stale_button")
    found = await rule(session, community_id=draft.community_id, code=code, now=now)
    if not found.active:
        raise NotFound("points_rule_not_found")
    if with_amount:
        limit = await max_award(session, community_id=draft.community_id)
        if found.points > limit:
            raise InvalidInput("points_bad_amount", low=1, high=limit)
        draft.amount = found.points
    community = await get_community(session, draft.community_id)
    draft.rule_code, draft.reason = found.code, found.name(community.language)
    draft.updated_at = now
    await session.flush()
    return draft


async def set_reason(
    session: AsyncSession, *, auth: Authority, draft_id: int, text: str, now: datetime
) -> AwardDraft:
    draft, _unit = await _open_draft(session, auth=auth, draft_id=draft_id)
    reason = " ".join(text.split())
    if not reason:
        raise InvalidInput("points_reason_required")
    if len(reason) > REASON_LIMIT:
        raise InvalidInput("name_too_long", limit=REASON_LIMIT)
    draft.rule_code, draft.reason = None, reason
    draft.updated_at = now
    await session.flush()
    return draft


async def cancel_draft(
    session: AsyncSession, *, auth: Authority, draft_id: int, now: datetime
) -> AwardDraft:
    draft, _unit = await get_draft(session, auth=auth, draft_id=draft_id, lock=True)
    if draft.status == DraftStatus.open:
        draft.status, draft.updated_at = DraftStatus.cancelled, now
        await session.flush()
    return draft


@dataclass(frozen=True)
class Posted:
    """One resident's entry from a saved award, with their balance after it."""

    person: Person
    entry: LedgerEntry
    balance: int


async def confirm_draft(
    session: AsyncSession, *, auth: Authority, draft_id: int, now: datetime
) -> tuple[AwardDraft, list[Posted], bool]:
    """Save the award: one posting per resident and a private notice to each, in one go.

    Everything is checked again (the lead's cover, each resident, the amount against today's
    maximum). Returns (draft, postings, changed); a second confirmation changes nothing.
    """
    draft, unit = await get_draft(session, auth=auth, draft_id=draft_id, lock=True)
    if draft.status == DraftStatus.done:
        return draft, [], False
    if draft.status != DraftStatus.open:
        raise Conflict("points_award_closed")
    if not draft.person_ids:
        raise InvalidInput("points_nobody_picked")
    limit = await max_award(session, community_id=draft.community_id)
    if draft.amount is None or not 1 <= draft.amount <= limit:
        raise InvalidInput("points_bad_amount", low=1, high=limit)
    if not draft.reason:
        raise InvalidInput("points_reason_required")
    community = await get_community(session, draft.community_id)
    found_rule = (
        await rule(session, community_id=draft.community_id, code=draft.rule_code, now=now)
        if draft.rule_code
        else None
    )
    lead = await session.get(Person, auth.person_id)
    sign = 1 if draft.kind == Kind.award else -1
    posted: list[Posted] = []
    # In id order, so two awards to the same people lock their accounts in the same order.
    for person_id in sorted(draft.person_ids):
        await check_awardable(
            session, auth=auth, community_id=draft.community_id, person_id=person_id, within=unit
        )
        entry = await post(
            session,
            community_id=draft.community_id,
            person_id=person_id,
            amount=sign * draft.amount,
            key=f"{draft.kind}:{draft.id}:{person_id}",
            reason=draft.reason,
            kind=draft.kind,
            by=auth.person_id,
            now=now,
            rule_code=draft.rule_code,
        )
        if entry is None:
            continue  # saved by an earlier attempt that did not finish marking the draft
        person = await session.get(Person, person_id)
        assert person is not None and entry.id is not None
        after = await balance(session, community_id=draft.community_id, person_id=person_id)
        await outbox.enqueue(
            session,
            key=f"{draft.kind}:{entry.id}",
            chat_id=person_id,
            person_id=person_id,
            community_id=draft.community_id,
            template=f"points/{'awarded' if sign > 0 else 'deducted'}",
            context={
                "amount": draft.amount,
                "reason": draft.reason,
                "rule_zh": found_rule.name_zh if found_rule else None,
                "rule_en": found_rule.name_en if found_rule else None,
                "balance": after,
                "community": community.name,
                "by": lead.name if lead is not None else "",
            },
            due_at=now,
            now=now,
        )
        posted.append(Posted(person, entry, after))
    draft.status, draft.updated_at = DraftStatus.done, now
    await session.flush()
    return draft, posted, True


async def draft_people(session: AsyncSession, draft: AwardDraft) -> list[Person]:
    if not draft.person_ids:
        return []
    rows = await session.exec(select(Person).where(col(Person.id).in_(draft.person_ids)))
    found = {p.id: p for p in rows.all()}
    return [found[i] for i in draft.person_ids if i in found]


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
    return (
        select(Resident.person_id)
        .join(Household, col(Household.id) == col(Resident.household_id))
        .join(Unit, col(Unit.id) == col(Household.unit_id))
        .where(
            Resident.community_id == community_id,
            Resident.status == ResidentStatus.verified,
            col(Unit.path).startswith(unit.path),
        )
    )


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
    await _open_account(session, community_id=community_id, person_id=person_id, now=now)
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
                added += await outbox.enqueue(
                    session,
                    key=key,
                    chat_id=lead,
                    person_id=lead,
                    community_id=community.id,
                    template="points/statement",
                    context=context,
                    due_at=now,
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


async def flats_of(session: AsyncSession, household_ids: Sequence[int]) -> dict[int, str]:
    """Flat numbers by household, for telling apart two neighbours of the same name."""
    if not household_ids:
        return {}
    rows = await session.exec(
        select(Household.id, Household.flat).where(col(Household.id).in_(set(household_ids)))
    )
    return {int(i): flat for i, flat in rows.all() if i is not None}
