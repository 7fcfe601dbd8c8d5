"""The outbox: everything the bot says on its own is a row, written with the change that caused it.

A row names its target (a chat and topic, or a person's private chat), what to say (a template
and plain-value context, rendered in the reader's language when it is sent, or a photo), when
(`due_at`), how urgent, and a unique idempotency key `kind:id:target`, so the same effect
enqueued twice is one row. The paced sender (bot/delivery.py) claims due rows, sends them and
records how each ended: sent, gone (the chat or person cannot be reached) or failed.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, time, timedelta
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import JSON, Column, Index, case, func, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Field, SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from models.base import TelegramId, UTCDateTime
from models.people import ChatLink, Unit, links_of_units, subtree

RESERVED_CONTEXT = frozenset({"lang", "name"})  # the renderer's own parameters
LEASE = timedelta(minutes=2)  # a claimed row another process may take over after a crash


class Status(StrEnum):
    pending = "pending"
    sent = "sent"
    gone = "gone"  # the bot was removed, or the person never opened a private chat
    failed = "failed"  # gave up after retries; last_error says why


class Priority:
    """Lower goes first. Replies to people are not in the outbox and always come first."""

    urgent = 0
    reminder = 3
    normal = 5
    broadcast = 7


class Delivery(SQLModel, table=True):
    __table_args__ = (Index("ix_delivery_due", "status", "due_at", "priority"),)

    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(max_length=160, unique=True)
    chat_id: int = Field(sa_type=TelegramId, index=True)
    thread_id: int = 0
    person_id: int | None = Field(default=None, sa_type=TelegramId)  # private messages
    community_id: int | None = Field(default=None, foreign_key="community.id")
    link_id: int | None = Field(default=None, foreign_key="chatlink.id")
    # When a private message cannot be delivered, mention the person in this chat link instead.
    fallback_link_id: int | None = Field(default=None, foreign_key="chatlink.id")
    template: str = Field(max_length=120)
    context: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    lang: str | None = Field(default=None, max_length=8)
    photo: str | None = Field(default=None, max_length=300)
    pin: bool = False
    silent: bool = False
    urgent: bool = False  # ignores quiet hours
    priority: int = Priority.normal
    due_at: datetime = Field(sa_type=UTCDateTime)
    status: str = Field(default=Status.pending, max_length=10)
    attempts: int = 0
    lease_until: datetime | None = Field(default=None, sa_type=UTCDateTime)
    message_id: int | None = None  # the first message, when the text went out in parts
    parts_sent: int = 0  # a long text goes out in parts; a resumed row skips those already sent
    last_error: str | None = Field(default=None, max_length=300)
    sent_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    created_at: datetime = Field(sa_type=UTCDateTime)


async def enqueue(
    session: AsyncSession,
    *,
    key: str,
    chat_id: int,
    template: str,
    context: dict[str, Any],
    due_at: datetime,
    now: datetime,
    thread_id: int = 0,
    person_id: int | None = None,
    community_id: int | None = None,
    link_id: int | None = None,
    fallback_link_id: int | None = None,
    lang: str | None = None,
    photo: str | None = None,
    pin: bool = False,
    silent: bool = False,
    urgent: bool = False,
    priority: int = Priority.normal,
) -> bool:
    """Add a row unless one with this key exists; True when it was added.

    Runs inside the caller's transaction, so the row exists exactly when the change does.
    The context is rendered as `renderer.render(lang, template, **context)`, so `lang` and
    `name` cannot be context keys.
    """
    if RESERVED_CONTEXT & context.keys():
        raise ValueError(f"outbox context keys {sorted(RESERVED_CONTEXT)} are reserved")
    values = {
        "key": key[:160],
        "chat_id": chat_id,
        "thread_id": thread_id,
        "person_id": person_id,
        "community_id": community_id,
        "link_id": link_id,
        "fallback_link_id": fallback_link_id,
        "template": template,
        "context": context,
        "lang": lang,
        "photo": photo,
        "pin": pin,
        "silent": silent,
        "urgent": urgent,
        "priority": priority,
        "due_at": due_at,
        "status": Status.pending,
        "attempts": 0,
        "created_at": now,
    }
    bind = session.get_bind()
    insert = pg_insert if bind.dialect.name == "postgresql" else sqlite_insert
    statement = insert(Delivery).values(**values).on_conflict_do_nothing(index_elements=["key"])
    result = await session.exec(statement)
    return bool(result.rowcount)


async def enqueue_to_unit(
    session: AsyncSession,
    *,
    key: str,
    unit: Unit,
    subtree_too: bool,
    template: str,
    context: dict[str, Any],
    due_at: datetime,
    now: datetime,
    **options: Any,
) -> int:
    """One row per chat linked to the unit (and, if asked, to every unit below it).

    Keys are `<key>:<chat>:<topic>`, so repeating the call adds nothing. Returns rows added.
    """
    units = list(await subtree(session, unit)) if subtree_too else [unit]
    links = await links_of_units(session, [u.id for u in units if u.id is not None])
    added = 0
    for link in links:
        added += await enqueue(
            session,
            key=f"{key}:{link.chat_id}:{link.thread_id}",
            chat_id=link.chat_id,
            thread_id=link.thread_id,
            community_id=unit.community_id,
            link_id=link.id,
            template=template,
            context=context,
            due_at=due_at,
            now=now,
            **options,
        )
    return added


async def claim_due(session: AsyncSession, *, now: datetime, limit: int) -> list[Delivery]:
    """Take up to `limit` due rows, most urgent first, and lease them to this process.

    On PostgreSQL rows another process holds are skipped (FOR UPDATE SKIP LOCKED), so two
    senders never send the same row; SQLite has one writer at a time anyway.
    """
    query = (
        select(Delivery)
        .where(
            Delivery.status == Status.pending,
            col(Delivery.due_at) <= now,
            (col(Delivery.lease_until).is_(None)) | (col(Delivery.lease_until) < now),
        )
        .order_by(col(Delivery.priority), col(Delivery.due_at), col(Delivery.id))
        .limit(limit)
    )
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    rows = list((await session.exec(query)).all())
    for row in rows:
        row.lease_until = now + LEASE
        row.attempts += 1
    await session.flush()
    return rows


async def next_due_at(session: AsyncSession, *, now: datetime | None = None) -> datetime | None:
    """When the sender next has something to do (None: nothing pending).

    With `now`, rows another sender holds (leased beyond `now`) are left out: they are not
    this sender's work until the lease runs out, and counting them would make it spin.
    """
    query = select(func.min(Delivery.due_at)).where(Delivery.status == Status.pending)
    if now is not None:
        query = query.where(
            (col(Delivery.lease_until).is_(None)) | (col(Delivery.lease_until) <= now)
        )
    return (await session.exec(query)).one()


async def _update(session: AsyncSession, where: Any, **values: Any) -> int:
    """One UPDATE of outbox rows, without loading them (the sender writes after every send)."""
    statement = (
        update(Delivery).where(where).values(**values).execution_options(synchronize_session=False)
    )
    result = await session.exec(statement)
    return int(result.rowcount)


async def finish(
    session: AsyncSession,
    *,
    delivery_id: int,
    status: Status,
    now: datetime,
    message_id: int | None = None,
    error: str | None = None,
    parts_sent: int | None = None,
) -> None:
    """Record how a row ended."""
    values: dict[str, Any] = {"status": status, "lease_until": None}
    if message_id is not None:
        values["message_id"] = message_id
    if parts_sent is not None:
        values["parts_sent"] = parts_sent
    if error:
        values["last_error"] = error[:300]
    if status == Status.sent:
        values["sent_at"] = now
    await _update(session, col(Delivery.id) == delivery_id, **values)


async def progress(
    session: AsyncSession, *, delivery_id: int, parts_sent: int, message_id: int | None
) -> None:
    """Some parts of a long text are out: a resumed row sends only the rest."""
    values: dict[str, Any] = {"parts_sent": parts_sent}
    if message_id is not None:
        values["message_id"] = message_id
    await _update(session, col(Delivery.id) == delivery_id, **values)


async def note_error(session: AsyncSession, *, delivery_id: int, error: str) -> None:
    """Keep a side problem (a pin refused) on a row without changing how it ended."""
    await _update(session, col(Delivery.id) == delivery_id, last_error=error[:300])


async def retry_later(
    session: AsyncSession, *, delivery_id: int, at: datetime, error: str | None = None
) -> None:
    """Try again at `at`; the attempt that failed stays counted (backoff, then `failed`)."""
    values: dict[str, Any] = {"due_at": at, "lease_until": None}
    if error:
        values["last_error"] = error[:300]
    await _update(session, col(Delivery.id) == delivery_id, **values)


async def defer(
    session: AsyncSession, *, delivery_ids: Sequence[int], at: datetime, error: str | None = None
) -> None:
    """Hand claimed rows back, due at `at`, without counting an attempt.

    For rows that were not tried at all: the chat's rate limit, quiet hours, the bot pausing
    for Telegram's flood wait, or the sender stopping.
    """
    if not delivery_ids:
        return
    attempts = col(Delivery.attempts)
    values: dict[str, Any] = {
        "due_at": at,
        "lease_until": None,
        "attempts": case((attempts > 0, attempts - 1), else_=0),
    }
    if error:
        values["last_error"] = error[:300]
    await _update(session, col(Delivery.id).in_(list(delivery_ids)), **values)


async def retarget(session: AsyncSession, *, old_chat_id: int, new_chat_id: int) -> int:
    """A group became a supergroup: pending rows follow it. Returns rows moved.

    Leases are kept: a sender holding one of these rows learns the new id from Telegram itself.
    """
    return await _update(
        session,
        (col(Delivery.chat_id) == old_chat_id) & (col(Delivery.status) == Status.pending),
        chat_id=new_chat_id,
    )


async def abandon_chat(
    session: AsyncSession,
    *,
    chat_id: int,
    now: datetime,
    reason: str,
    due_until: datetime | None = None,
) -> int:
    """The chat cannot be reached: its other pending rows end as gone too (no retry storm).

    With `due_until`, only rows due by then: a person who has not opened a private chat yet may
    still do so before a later reminder. Returns rows ended.
    """
    where = (col(Delivery.chat_id) == chat_id) & (col(Delivery.status) == Status.pending)
    if due_until is not None:
        where = where & (col(Delivery.due_at) <= due_until)
    return await _update(
        session, where, status=Status.gone, lease_until=None, last_error=reason[:300]
    )


def after_quiet_hours(
    due_at: datetime, *, zone: str, quiet_from: time, quiet_until: time
) -> datetime:
    """The first moment at or after `due_at` outside the community's quiet hours."""
    local = due_at.astimezone(ZoneInfo(zone))
    clock = local.time()
    if quiet_from > quiet_until:  # spans midnight, e.g. 22:00–08:00
        quiet = clock >= quiet_from or clock < quiet_until
        wake_day = local.date() + timedelta(days=1) if clock >= quiet_from else local.date()
    else:
        quiet = quiet_from <= clock < quiet_until
        wake_day = local.date()
    if not quiet:
        return due_at
    wake = datetime.combine(wake_day, quiet_until, tzinfo=ZoneInfo(zone))
    return wake.astimezone(due_at.tzinfo)


async def delivery_report(session: AsyncSession, *, key_prefix: str) -> dict[str, list[Delivery]]:
    """Rows of one broadcast grouped by status, for the lead who sent it."""
    rows = (
        await session.exec(
            select(Delivery)
            .where(col(Delivery.key).startswith(key_prefix))
            .order_by(col(Delivery.id))
        )
    ).all()
    report: dict[str, list[Delivery]] = {status.value: [] for status in Status}
    for row in rows:
        report[row.status].append(row)
    return report


async def link_rows(session: AsyncSession, ids: Sequence[int]) -> dict[int, ChatLink]:
    if not ids:
        return {}
    rows = await session.exec(select(ChatLink).where(col(ChatLink.id).in_(set(ids))))
    return {link.id: link for link in rows.all() if link.id is not None}
