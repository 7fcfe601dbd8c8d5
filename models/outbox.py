"""The outbox: everything the bot says on its own is a row, written with the change that caused it.

A row names its target (a chat and topic, or a person's private chat), what to say (a template
and plain-value context, rendered in the reader's language when it is sent, or a photo), when
(`due_at`), how urgent, and a unique idempotency key `kind:id:target`, so the same effect
enqueued twice is one row. The paced sender (bot/delivery.py) claims due rows, sends them and
records how each ended: sent, gone (the chat or person cannot be reached) or failed.

Every claim carries a token: an outcome is recorded only with the token of the current claim,
so a sender that stalled past its lease cannot overwrite what another sender did with the row.

Live cards: a row with `card` ("kind:subject") is rendered at send time by the card builder
registered for its kind (bot/cards.py), from the database as it is then. `mark_changed` puts
one edit row per posted card (key `<post key>:edit`, `edits` = the post's id): re-armed, never
duplicated, and due no sooner than `CARD_GAP` after the previous edit, so a burst of taps
becomes a few edits showing the latest state.

Queuing a row marks the session (`QUEUED`); the unit of work wakes the sender after commit.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from enum import StrEnum
from typing import Any, NotRequired, TypedDict, Unpack
from zoneinfo import ZoneInfo

from sqlalchemy import JSON, Column, Index, Integer, String, Table, bindparam, case, func, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Field, SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from models.base import TelegramId, UTCDateTime
from models.people import ChatLink, Unit, links_of_units, subtree

RESERVED_CONTEXT = frozenset({"lang", "name"})  # the renderer's own parameters
LEASE = timedelta(minutes=2)  # a claimed row another process may take over after a crash
CARD_GAP = timedelta(seconds=5)  # one card is edited at most this often (12 times a minute)
QUEUED = "linli.outbox.queued"  # session.info flag: rows were queued, wake the sender on commit
WITHDRAWN_IN_FLIGHT = "withdrawn while being sent"


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
    claim: str | None = Field(default=None, max_length=32)  # the current claim's token
    card: str | None = Field(default=None, max_length=80, index=True)  # "kind:subject"
    edits: int | None = None  # this row edits the message the row with this id posted
    message_id: int | None = None  # the first message, when the text went out in parts
    parts_sent: int = 0  # a long text goes out in parts; a resumed row skips those already sent
    last_error: str | None = Field(default=None, max_length=300)
    sent_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    created_at: datetime = Field(sa_type=UTCDateTime)


class Options(TypedDict, total=False):
    """What a row may say besides its target, text and time; the defaults are `_DEFAULTS`."""

    thread_id: int
    person_id: int | None
    community_id: int | None
    link_id: int | None
    fallback_link_id: int | None
    lang: str | None
    photo: str | None
    pin: bool
    silent: bool
    urgent: bool
    priority: int
    card: str | None


class Message(Options):
    """One row as `enqueue` takes it: a target, what to say, when. The context is rendered as
    `renderer.render(lang, template, **context)`, so `lang` and `name` cannot be its keys."""

    key: str
    chat_id: int
    template: str
    context: dict[str, Any]
    due_at: datetime
    now: datetime


_DEFAULTS: dict[str, Any] = {
    "thread_id": 0, "person_id": None, "community_id": None, "link_id": None,
    "fallback_link_id": None, "lang": None, "photo": None, "pin": False, "silent": False,
    "urgent": False, "priority": Priority.normal, "card": None,
}  # fmt: skip
_KEYS = Message.__required_keys__ | Message.__optional_keys__

_TABLE: Table = Delivery.__table__  # type: ignore[attr-defined]


async def enqueue(session: AsyncSession, **message: Unpack[Message]) -> bool:
    """Add a row unless one with this key exists; True when it was added.

    Runs inside the caller's transaction, so the row exists exactly when the change does.
    """
    return await enqueue_many(session, [message]) > 0


def _values(message: Mapping[str, Any]) -> dict[str, Any]:
    """One row's column values (a `Message`, checked, with the defaults filled in)."""
    if unknown := message.keys() - _KEYS:
        raise TypeError(f"unknown outbox fields: {sorted(unknown)}")
    if RESERVED_CONTEXT & message["context"].keys():
        raise ValueError(f"outbox context keys {sorted(RESERVED_CONTEXT)} are reserved")
    values = {**_DEFAULTS, **message, "status": Status.pending, "attempts": 0}
    values["created_at"] = values.pop("now")
    values["key"] = values["key"][:160]
    return values


async def enqueue_many(session: AsyncSession, rows: Sequence[Mapping[str, Any]]) -> int:
    """`enqueue` for many rows in a few statements (a rhythm telling thousands at once): each
    row is a `Message`; rows whose key exists are skipped. Returns rows added."""
    added = await _insert_rows(session, [_values(row) for row in rows])
    if added:
        queued(session)
    return added


async def _insert(session: AsyncSession, values: dict[str, Any]) -> bool:
    return await _insert_rows(session, [values]) > 0


async def _insert_rows(session: AsyncSession, values: Sequence[dict[str, Any]]) -> int:
    """Insert rows, skipping keys that exist; returns how many were added."""
    if not values:
        return 0
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    statement = (
        insert(Delivery).on_conflict_do_nothing(index_elements=["key"]).returning(col(Delivery.id))
    )
    # Core executemany: SQLAlchemy sends the rows in batches of one cached statement each
    # (far cheaper than the ORM's bulk path); what the session holds goes first, as ever.
    await session.flush()
    conn = await session.connection()
    return len((await conn.execute(statement, list(values))).all())


def queued(session: AsyncSession) -> None:
    """Rows were queued or made due: the unit of work wakes the sender when it commits."""
    session.info[QUEUED] = True


async def enqueue_private(
    session: AsyncSession,
    *,
    key: str,
    person_id: int,
    template: str,
    context: dict[str, Any],
    now: datetime,
    **options: Any,
) -> bool:
    """A notice to one person's private chat, due now unless `due_at` says otherwise, in their
    own language. Options are `enqueue`'s."""
    options.setdefault("due_at", now)
    return await enqueue(
        session,
        key=key,
        chat_id=person_id,
        person_id=person_id,
        template=template,
        context=context,
        now=now,
        **options,
    )


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


def in_flight(now: datetime) -> Any:
    """Rows a sender holds right now (claimed, lease not run out)."""
    return col(Delivery.lease_until).is_not(None) & (col(Delivery.lease_until) >= now)


@dataclass(slots=True)
class Claimed:
    """A row as the sender holds it after claiming it: what sending needs, as plain values,
    not an ORM object (the sender writes it only through `record`)."""

    id: int
    key: str
    chat_id: int
    thread_id: int
    person_id: int | None
    community_id: int | None
    fallback_link_id: int | None
    template: str
    context: dict[str, Any]
    lang: str | None
    photo: str | None
    pin: bool
    silent: bool
    urgent: bool
    priority: int
    due_at: datetime
    attempts: int
    claim: str | None
    card: str | None
    edits: int | None
    message_id: int | None
    parts_sent: int


_CLAIMED = [_TABLE.c[name] for name in Claimed.__dataclass_fields__]


async def claim_due(session: AsyncSession, *, now: datetime, limit: int) -> list[Claimed]:
    """Take up to `limit` due rows, most urgent first, and lease them to this process.

    An UPDATE of the due rows' ids that returns them, one per priority that has due rows
    (usually one): within a priority the index gives the rows in due order, so a backlog of
    30,000 due rows is not sorted whole for every batch. On PostgreSQL rows another process
    holds are skipped (FOR UPDATE SKIP LOCKED), so two senders never send the same row; SQLite
    has one writer at a time anyway. The rows carry a fresh `claim` token: pass it back with
    the outcome.
    """
    c = _TABLE.c
    due = (c.status == Status.pending) & (c.due_at <= now)
    conn = await session.connection()
    priorities = (await conn.execute(select(c.priority).where(due).distinct())).scalars()
    postgres = session.get_bind().dialect.name == "postgresql"
    token = secrets.token_hex(16)
    rows: list[Claimed] = []
    for priority in sorted(priorities):
        ids = (
            select(c.id)
            .where(due, c.priority == priority, c.lease_until.is_(None) | (c.lease_until < now))
            .order_by(c.due_at)
            .limit(limit - len(rows))
        )
        if postgres:
            ids = ids.with_for_update(skip_locked=True)
        statement = (
            update(_TABLE)
            .where(c.id.in_(ids.scalar_subquery()))
            .values(lease_until=now + LEASE, claim=token, attempts=c.attempts + 1)
            .returning(*_CLAIMED)
        )
        rows += [Claimed(*row) for row in await conn.execute(statement)]
        if len(rows) >= limit:
            break
    rows.sort(key=lambda row: (row.priority, row.due_at, row.id))
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
    """One UPDATE of outbox rows, without loading them."""
    statement = (
        update(Delivery).where(where).values(**values).execution_options(synchronize_session=False)
    )
    result = await session.exec(statement)
    return int(result.rowcount)


class Step(StrEnum):
    """What an `Outcome` records."""

    end = "end"  # the attempt is over: a final status, or pending again at `retry_at`
    progress = "progress"  # some parts of a long text are out; the claim stays
    note = "note"  # a side problem (a pin refused) on a row that has usually ended


@dataclass(frozen=True)
class Outcome:
    """What became of one claimed row, applied only with the claim that took it."""

    delivery_id: int
    claim: str | None
    step: Step
    status: Status = Status.pending
    message_id: int | None = None
    parts_sent: int | None = None
    error: str | None = None
    retry_at: datetime | None = None  # `end` with status pending: try again then
    at: datetime | None = None  # when it happened (a sent row's `sent_at`), if not `record`'s now


_id, _claim = bindparam("b_id", type_=Integer), bindparam("b_claim", type_=String)
_ours = (_TABLE.c.id == _id) & (_TABLE.c.claim == _claim)


def _kept(name: str, type_: Any) -> Any:
    """The parameter when given, else what the row has (one statement serves every row)."""
    return func.coalesce(bindparam(f"b_{name}", type_=type_), _TABLE.c[name])


# Cached statements, each run once for all outcomes of its step (executemany).
_STATEMENTS: dict[Step, Any] = {
    Step.end: update(_TABLE)
    .where(_ours)
    .values(
        status=bindparam("b_status", type_=String),
        due_at=_kept("due_at", UTCDateTime()),
        lease_until=None,
        claim=None,
        message_id=_kept("message_id", Integer),
        parts_sent=_kept("parts_sent", Integer),
        last_error=_kept("last_error", String),
        sent_at=_kept("sent_at", UTCDateTime()),
    ),
    Step.progress: update(_TABLE)
    .where(_ours)
    .values(parts_sent=_kept("parts_sent", Integer), message_id=_kept("message_id", Integer)),
    Step.note: update(_TABLE)
    .where((_TABLE.c.id == _id) & ((_TABLE.c.claim == _claim) | _TABLE.c.claim.is_(None)))
    .values(last_error=bindparam("b_error", type_=String)),
}


def _params(outcome: Outcome, now: datetime | None) -> dict[str, Any]:
    error = outcome.error[:300] if outcome.error else None
    params: dict[str, Any] = {"b_id": outcome.delivery_id, "b_claim": outcome.claim}
    if outcome.step == Step.note:
        return params | {"b_error": error}
    params |= {"b_parts_sent": outcome.parts_sent, "b_message_id": outcome.message_id}
    if outcome.step == Step.end:
        params |= {
            "b_status": outcome.status.value,
            "b_due_at": outcome.retry_at if outcome.status == Status.pending else None,
            "b_last_error": error,
            "b_sent_at": (outcome.at or now) if outcome.status == Status.sent else None,
        }
        if params["b_sent_at"] is None and outcome.status == Status.sent:
            raise ValueError("a sent row needs the time it was sent")
    return params


async def record(
    session: AsyncSession, outcomes: Sequence[Outcome], *, now: datetime | None
) -> int:
    """Apply outcomes of many sends in one go: one statement per kind of step, in the order
    end, progress, note (a pin's note follows its row's end). An outcome whose claim is no
    longer current (another sender took the row over, or it was withdrawn in flight) changes
    nothing. Returns the rows changed (-1 when the driver cannot count a batch)."""
    changed = 0
    conn = await session.connection()
    for step in Step:
        params = [_params(o, now) for o in outcomes if o.step == step]
        if not params:
            continue
        result = await conn.execute(_STATEMENTS[step], params if len(params) > 1 else params[0])
        count = result.rowcount if len(params) == 1 or result.supports_sane_multi_rowcount() else -1
        changed = -1 if changed < 0 or count < 0 else changed + count
    return changed


async def finish(
    session: AsyncSession,
    *,
    delivery_id: int,
    claim: str | None,
    status: Status,
    now: datetime,
    message_id: int | None = None,
    error: str | None = None,
    parts_sent: int | None = None,
) -> bool:
    """Record how a row ended; False (nothing written) when the claim is no longer current."""
    outcome = Outcome(delivery_id, claim, Step.end, status, message_id, parts_sent, error)
    return await record(session, [outcome], now=now) > 0


async def progress(
    session: AsyncSession,
    *,
    delivery_id: int,
    claim: str | None,
    parts_sent: int,
    message_id: int | None,
) -> bool:
    """Some parts of a long text are out: a resumed row sends only the rest."""
    outcome = Outcome(delivery_id, claim, Step.progress, parts_sent=parts_sent,
                      message_id=message_id)  # fmt: skip
    return await record(session, [outcome], now=None) > 0


async def note_error(
    session: AsyncSession, *, delivery_id: int, claim: str | None, error: str
) -> bool:
    """Keep a side problem (a pin refused) on a row without changing how it ended.

    The row has usually ended already (its claim cleared): the note goes on it if no other
    claim has taken it since.
    """
    outcome = Outcome(delivery_id, claim, Step.note, error=error)
    return await record(session, [outcome], now=None) > 0


async def retry_later(
    session: AsyncSession,
    *,
    delivery_id: int,
    claim: str | None,
    at: datetime,
    error: str | None = None,
) -> bool:
    """Try again at `at`; the attempt that failed stays counted (backoff, then `failed`)."""
    outcome = Outcome(delivery_id, claim, Step.end, error=error, retry_at=at)
    return await record(session, [outcome], now=at) > 0


async def defer(
    session: AsyncSession,
    *,
    delivery_ids: Sequence[int],
    claim: str | None,
    at: datetime,
    error: str | None = None,
) -> int:
    """Hand claimed rows back, due at `at`, without counting an attempt.

    For rows that were not tried at all: the chat's rate limit, quiet hours, the bot pausing
    for Telegram's flood wait, or the sender stopping. Rows claimed since by another sender
    are left alone. Returns rows handed back.
    """
    if not delivery_ids:
        return 0
    attempts = col(Delivery.attempts)
    values: dict[str, Any] = {
        "due_at": at,
        "lease_until": None,
        "claim": None,
        "attempts": case((attempts > 0, attempts - 1), else_=0),
    }
    if error:
        values["last_error"] = error[:300]
    where = col(Delivery.id).in_(list(delivery_ids)) & (col(Delivery.claim) == claim)
    return await _update(session, where, **values)


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
    claim: str | None = None,
) -> int:
    """The chat cannot be reached: its other pending rows end as gone too (no retry storm).

    With `due_until`, only rows due by then: a person who has not opened a private chat yet may
    still do so before a later reminder. Rows another sender holds are its to end; rows of the
    caller's own claim are ended here. Returns rows ended.
    """
    free = ~in_flight(now)
    if claim is not None:
        free = free | (col(Delivery.claim) == claim)
    where = (col(Delivery.chat_id) == chat_id) & (col(Delivery.status) == Status.pending) & free
    if due_until is not None:
        where = where & (col(Delivery.due_at) <= due_until)
    return await _update(
        session, where, status=Status.gone, lease_until=None, claim=None, last_error=reason[:300]
    )


async def withdraw(
    session: AsyncSession, *, key_prefix: str, now: datetime, reason: str = "withdrawn"
) -> int:
    """Stop every unsent row whose key starts with `key_prefix`; returns rows withdrawn.

    A row being sent at this moment (claimed, lease running) cannot be called back: it is
    resolved as sent, now, and the sender's own outcome for it no longer applies (its claim is
    cleared), so a report shows it exactly once, as sent. Withdrawn rows end as `failed` with
    `reason` as their error.
    """
    prefix = col(Delivery.key).startswith(key_prefix)
    pending = prefix & (col(Delivery.status) == Status.pending)
    await _update(
        session,
        pending & in_flight(now),
        status=Status.sent,
        sent_at=now,
        lease_until=None,
        claim=None,
        last_error=WITHDRAWN_IN_FLIGHT,
    )
    return await _update(
        session,
        pending,
        status=Status.failed,
        lease_until=None,
        claim=None,
        last_error=reason[:300],
    )


async def reschedule(
    session: AsyncSession, *, key_prefix: str, due_at: datetime, now: datetime
) -> int:
    """Move the unsent rows whose key starts with `key_prefix` to `due_at` (a reminder whose
    event moved). Rows being sent right now go as they are. Returns rows moved."""
    where = (
        col(Delivery.key).startswith(key_prefix)
        & (col(Delivery.status) == Status.pending)
        & ~in_flight(now)
    )
    moved = await _update(session, where, due_at=due_at, lease_until=None, claim=None)
    if moved:
        queued(session)
    return moved


# --- live cards ---------------------------------------------------------------------------------


def card_of(kind: str, subject_id: int) -> str:
    """A card's identity: which builder renders it, and about what."""
    if ":" in kind:
        raise ValueError(f"card kind {kind!r} may not contain ':'")
    return f"{kind}:{subject_id}"


def card_key(kind: str, subject_id: int) -> str:
    """The key prefix of every row of one card (withdraw or reschedule with it)."""
    return f"card:{card_of(kind, subject_id)}:"


class CardPost(Options):
    """One copy of a card as `post_card` and `card_row` take it (due now unless `due_at`)."""

    kind: str
    subject_id: int
    chat_id: int
    now: datetime
    due_at: NotRequired[datetime | None]
    round: NotRequired[str]


async def post_card(session: AsyncSession, **card: Unpack[CardPost]) -> bool:
    """Post a card in one chat (or topic, or a person's private chat); True when queued.

    The text and buttons are built when it is sent, by the builder registered for `kind`.
    Posting the same card to the same chat again adds nothing; a new `round` (say, a request
    asked again after a refusal) posts a fresh message.
    """
    return await enqueue_many(session, [card_row(**card)]) > 0


def card_row(**card: Unpack[CardPost]) -> dict[str, Any]:
    """`post_card`'s row as `enqueue_many` takes it (many cards queued in one statement)."""
    row: dict[str, Any] = dict(card)
    kind, subject_id, round = row.pop("kind"), row.pop("subject_id"), row.pop("round", "")
    tail = f":{round}" if round else ""
    thread_id = row.setdefault("thread_id", 0)
    return {
        **row,
        "key": f"{card_key(kind, subject_id)}{row['chat_id']}:{thread_id}{tail}",
        "template": kind,
        "context": {},
        "due_at": row.get("due_at") or row["now"],
        "card": card_of(kind, subject_id),
    }


async def post_card_to_unit(
    session: AsyncSession,
    *,
    kind: str,
    subject_id: int,
    unit: Unit,
    now: datetime,
    subtree_too: bool = False,
    **options: Any,
) -> int:
    """The card in every chat linked to the unit (and below it, if asked); returns rows added."""
    return await enqueue_to_unit(
        session,
        key=card_key(kind, subject_id).rstrip(":"),
        unit=unit,
        subtree_too=subtree_too,
        template=kind,
        context={},
        due_at=options.pop("due_at", None) or now,
        now=now,
        card=card_of(kind, subject_id),
        **options,
    )


async def mark_changed(
    session: AsyncSession, *, kind: str, subject_id: int, now: datetime, gap: timedelta = CARD_GAP
) -> int:
    """The card's subject changed: every posted copy is edited to show it, coalesced.

    One edit row per posted copy, re-armed rather than added: due now, or `gap` after the
    copy's previous edit; an edit already waiting stays as it is (it renders the latest state
    when it goes); an edit being sent right now is claimed back and goes again after `gap`,
    since it may show the state from before this change. A copy not posted yet needs no edit.
    Call it in the transaction that changes the subject. Returns edits armed.
    """
    # The copies and their edit rows in one statement of four plain columns (both locked on
    # PostgreSQL): while a burst of changes finds every copy's edit waiting, that is all it
    # costs. Only copies that need an edit are read whole.
    postgres = session.get_bind().dialect.name == "postgresql"
    conn = await session.connection()
    rows = (
        await conn.execute(
            _COPIES_LOCKED if postgres else _COPIES, {"card": card_of(kind, subject_id)}
        )
    ).all()
    waiting = {
        edits
        for _id, edits, status, lease in rows
        if edits is not None and status == Status.pending and not _lease_held(lease, now)
    }
    due = [
        post_id
        for post_id, edits, status, lease in rows
        if edits is None  # a copy, not an edit row
        and post_id not in waiting  # whose edit waits: it will show the latest state
        and not (status == Status.pending and not _lease_held(lease, now))  # unsent: rendered
    ]  # when it goes
    armed = 0
    if due:
        posts = await session.exec(
            select(Delivery).where(col(Delivery.id).in_(due)).order_by(col(Delivery.id))
        )
        for post in posts.all():
            armed += await _arm_edit(session, post, now=now, gap=gap)
    if armed:
        queued(session)
    return armed


_COPIES = (
    select(Delivery.id, Delivery.edits, Delivery.status, Delivery.lease_until)
    .where(
        col(Delivery.card) == bindparam("card"),
        col(Delivery.status).in_([Status.pending, Status.sent]),
    )
    .order_by(col(Delivery.id))
)
_COPIES_LOCKED = _COPIES.with_for_update()


def _lease_held(lease_until: datetime | None, now: datetime) -> bool:
    return lease_until is not None and lease_until >= now


def _held(row: Delivery, now: datetime) -> bool:
    return _lease_held(row.lease_until, now)


async def edit_by_key(
    session: AsyncSession,
    *,
    key: str,
    context: dict[str, Any],
    now: datetime,
    gap: timedelta = CARD_GAP,
) -> bool:
    """Change what the row with this key says: not sent yet, it goes with the new context;
    sent, its message is edited in place (one edit row, coalesced like a card's). A card's
    context is not used (its builder reads the database): use `mark_changed` for cards.
    False when there is no such row, or it never reached anyone."""
    if RESERVED_CONTEXT & context.keys():
        raise ValueError(f"outbox context keys {sorted(RESERVED_CONTEXT)} are reserved")
    query = select(Delivery).where(Delivery.key == key)
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update()
    post = (await session.exec(query)).first()
    if post is None or post.status not in (Status.pending, Status.sent) or post.edits is not None:
        return False
    if post.status == Status.pending and not _held(post, now):
        post.context = context
        await session.flush()
        return True
    await _arm_edit(session, post, now=now, gap=gap, context=context)
    queued(session)
    return True


async def _arm_edit(
    session: AsyncSession,
    post: Delivery,
    *,
    now: datetime,
    gap: timedelta,
    context: dict[str, Any] | None = None,
) -> int:
    key = f"{post.key}:edit"[:160]
    values = {
        "key": key,
        "chat_id": post.chat_id,
        "thread_id": post.thread_id,
        "person_id": post.person_id,
        "community_id": post.community_id,
        "link_id": post.link_id,
        "template": post.template,
        "context": context if context is not None else {},
        "lang": post.lang,
        "silent": True,
        "urgent": True,  # an edit never rings: quiet hours do not apply
        "priority": post.priority,
        "due_at": now,
        "status": Status.pending,
        "attempts": 0,
        "created_at": now,
        "card": post.card,
        "edits": post.id,
    }
    if await _insert(session, values):
        return 1
    query = select(Delivery).where(Delivery.key == key)
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update()
    edit = (await session.exec(query)).one()
    if context is not None:
        edit.context = context
    if edit.status == Status.pending and not _held(edit, now):
        await session.flush()
        return 0  # waiting already: it will show the latest state
    # In flight, perhaps with the state from before this change: again, after it.
    in_flight_now = edit.status == Status.pending
    due = now + gap if in_flight_now else max(now, (edit.sent_at or now) + gap)
    edit.status, edit.due_at, edit.attempts, edit.parts_sent = Status.pending, due, 0, 0
    edit.lease_until = edit.claim = edit.last_error = None
    await session.flush()
    return 1


async def retire_card(session: AsyncSession, *, kind: str, subject_id: int, now: datetime) -> int:
    """The card's copies stop following its subject: a new round of it is about to be posted
    and the old messages keep what they last showed. Unsent copies and edits are withdrawn
    (ones being sent go as they are). Returns rows retired."""
    card = card_of(kind, subject_id)
    mine = col(Delivery.card) == card
    await _update(
        session,
        mine & (col(Delivery.status) == Status.pending) & ~in_flight(now),
        status=Status.failed,
        lease_until=None,
        claim=None,
        last_error="retired",
    )
    return await _update(session, mine & (col(Delivery.status) != Status.pending), card=None)


async def card_targets(session: AsyncSession, edit_rows: Sequence[Claimed]) -> dict[int, Delivery]:
    """The posts the given edit rows edit, by id."""
    ids = {row.edits for row in edit_rows if row.edits is not None}
    if not ids:
        return {}
    rows = await session.exec(select(Delivery).where(col(Delivery.id).in_(ids)))
    return {row.id: row for row in rows.all() if row.id is not None}


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
