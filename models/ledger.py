"""The points ledger (街坊银行) core: accounts and append-only double entries.

Every posting writes two rows with the same idempotency key: the person's entry (leg 0) and its
counter-entry on the community's own account (leg 1, person_id NULL), so a community's books
always sum to zero. A person's balance is the sum of their entries; `PointAccount.balance` caches
it and is changed in the same statement sequence, under the account row's lock.

Every feature that moves points (awards, rewards, tasks, reports) posts through `post` here.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from functools import cache
from typing import Any

from sqlalchemy import Index, Table, UniqueConstraint, and_, bindparam, delete, func, or_, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.sql.expression import Executable
from sqlmodel import Field, SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from models.base import TelegramId, UTCDateTime, dialect_insert
from models.errors import Conflict, InvalidInput, NotAllowed
from models.people import Authority, Can

KEY_LIMIT = 160
REASON_LIMIT = 200
PERSON_LEG = 0
COUNTER_LEG = 1


class Kind(StrEnum):
    """Why an entry exists. Callers may use other short kinds (≤ 20 characters)."""

    award = "award"
    deduct = "deduct"
    task = "task"
    report = "report"
    welcome = "welcome"
    redeem = "redeem"
    refund = "refund"
    correct = "correct"  # a community admin's correction: the one kind that may overdraw


# What counts for the honour board (红榜): work for the neighbourhood, and its corrections.
# Welcome credits, redemptions and refunds move a balance but earn no honour.
CONTRIBUTIONS = frozenset({Kind.award, Kind.deduct, Kind.task, Kind.report, Kind.correct})


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


async def open_account(
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
        await open_account(session, community_id=community_id, person_id=person_id, now=now)
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
    auth: Authority | None = None,
) -> LedgerEntry | None:
    """Credit (amount > 0) or debit (amount < 0) a person, with the community's counter-entry.

    Idempotent by `key`: a posting whose key exists already returns None and changes nothing
    (whatever its other arguments), so a repeated update, a double tap or a retried job counts
    once; `entry_by_key` finds the first one. A debit below zero raises InsufficientPoints and
    writes nothing. Runs in the caller's transaction.

    A correction (`Kind.correct`, e.g. undoing an over-award that was already spent) is the
    one posting that may take a balance below zero: it needs a community admin's (or a
    super-admin's) `auth` and a reason, else it is refused and nothing is written; statements,
    the books and the resident's history show it as a correction.

    The first statement updates the person's account row, which locks it (PostgreSQL holds the
    row lock to the end of the transaction; SQLite's BEGIN IMMEDIATE holds the write lock), so
    concurrent postings to one person run one after another and each sees the last one's
    balance and keys. Two statements on the common path: measured, each statement costs as
    much as the whole transaction's begin and commit.
    """
    overdraw = kind == Kind.correct
    if overdraw:
        if auth is None or not auth.may(Can.admin_community, community_id=community_id):
            raise NotAllowed("points_corrections_admins_only")
        if not reason.strip():
            raise InvalidInput("points_reason_required")
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
        await open_account(session, community_id=community_id, person_id=person_id, now=now)
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
    if PERSON_LEG not in inserted or (after < 0 and amount < 0 and not overdraw):
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
