"""Guided flows: one way to keep a person's draft of something while they build it tap by tap.

A flow is a row: its kind ("task", "report", "poll", …), its owner, one status, the step that
waits for a typed answer, and what was chosen so far in `data` (a JSON object: fields, a list
of up to 5 photo ids, a poll's options …). Every feature keeps its drafts here, so they all
behave alike:

- owned: only the owner may touch it (`load` refuses anyone else, whatever the button says);
- one status: open → confirmed | cancelled | expired, and only an open flow changes;
- expiring: untouched for `ttl` (1 hour by default) it expires; the owner who comes back to it
  is told so (Conflict "flow_expired") and starts again — nothing half-made is ever saved;
- private-only when it must be: `private=True` flows refuse to be driven from a group;
- typed answers are bound to the step that asked (`expect` / `answer`): an answer that
  arrives after the flow moved on is refused as stale, never applied to another step;
- an idempotent confirm: `confirm(…, make)` runs `make` once under the row's lock and stores
  what it made; a double tap or a repeated update gets the same result back.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Column, delete
from sqlalchemy import update as sql_update
from sqlmodel import Field, SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from models.base import TelegramId, UTCDateTime
from models.errors import Conflict, InvalidInput, NotAllowed

DEFAULT_TTL = timedelta(hours=1)
KEEP_FINISHED = timedelta(days=7)
KIND_LIMIT = 16
STEP_LIMIT = 24


class FlowStatus(StrEnum):
    open = "open"
    confirmed = "confirmed"
    cancelled = "cancelled"
    expired = "expired"


class Flow(SQLModel, table=True):
    """One person's draft of one thing, from the first tap to its confirmation."""

    # Buttons carry the flow id: SQLite must not hand a finished flow's id to the next one.
    __table_args__ = {"sqlite_autoincrement": True}
    id: int | None = Field(default=None, primary_key=True)
    kind: str = Field(max_length=KIND_LIMIT)
    owner_id: int = Field(sa_type=TelegramId, index=True)
    community_id: int | None = Field(default=None, foreign_key="community.id")
    private: bool = False  # driven from the owner's private chat only
    status: str = Field(default=FlowStatus.open, max_length=10)
    step: str = Field(default="", max_length=STEP_LIMIT)  # the step waiting for a typed answer
    data: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    result_id: int | None = None  # what confirming made (the task, the report, the poll …)
    ttl_seconds: int = int(DEFAULT_TTL.total_seconds())
    created_at: datetime = Field(sa_type=UTCDateTime)
    updated_at: datetime = Field(sa_type=UTCDateTime)
    expires_at: datetime = Field(sa_type=UTCDateTime)


async def start(
    session: AsyncSession,
    *,
    kind: str,
    owner_id: int,
    now: datetime,
    data: dict[str, Any] | None = None,
    community_id: int | None = None,
    private: bool = False,
    ttl: timedelta = DEFAULT_TTL,
) -> Flow:
    """Begin a flow. The owner's earlier open flows of the same kind are cancelled: one draft
    of a kind per person, so an old picker cannot make a second thing."""
    if not kind or len(kind) > KIND_LIMIT:
        raise ValueError(f"flow kind must be 1..{KIND_LIMIT} characters: {kind!r}")
    earlier = await session.exec(
        select(Flow).where(
            Flow.owner_id == owner_id, Flow.kind == kind, Flow.status == FlowStatus.open
        )
    )
    for old in earlier.all():
        old.status, old.updated_at = FlowStatus.cancelled, now
    flow = Flow(
        kind=kind,
        owner_id=owner_id,
        community_id=community_id,
        private=private,
        data=dict(data or {}),
        ttl_seconds=int(ttl.total_seconds()),
        created_at=now,
        updated_at=now,
        expires_at=now + ttl,
    )
    session.add(flow)
    await session.flush()
    return flow


async def load(
    session: AsyncSession,
    *,
    flow_id: int,
    owner_id: int,
    now: datetime,
    kind: str | None = None,
    in_private: bool = True,
    lock: bool = False,
) -> Flow:
    """The owner's flow, whatever its status (the caller decides what a closed one shows).

    Refuses: an unknown id or another kind (a stale or forged button), another person's flow,
    a private flow driven from a group. An open flow past its time becomes expired here and
    the owner is told (Conflict "flow_expired"), so they know to start again.
    """
    query = select(Flow).where(Flow.id == flow_id)
    if lock:
        query = query.with_for_update().execution_options(populate_existing=True)
    flow = (await session.exec(query)).first()
    if flow is None or (kind is not None and flow.kind != kind):
        raise InvalidInput("stale_button")
    if flow.owner_id != owner_id:
        raise NotAllowed("flow_not_yours")
    if flow.private and not in_private:
        raise NotAllowed("private_only")
    if flow.status == FlowStatus.open and flow.expires_at <= now:
        flow.status, flow.updated_at = FlowStatus.expired, now
        await session.flush()
    if flow.status == FlowStatus.expired:
        raise Conflict("flow_expired", minutes=flow.ttl_seconds // 60)
    return flow


async def open_flow(
    session: AsyncSession,
    *,
    flow_id: int,
    owner_id: int,
    now: datetime,
    kind: str | None = None,
    in_private: bool = True,
) -> Flow:
    """The owner's flow, locked and still open (a confirmed or cancelled one is closed)."""
    flow = await load(
        session,
        flow_id=flow_id,
        owner_id=owner_id,
        now=now,
        kind=kind,
        in_private=in_private,
        lock=True,
    )
    if flow.status != FlowStatus.open:
        raise Conflict("flow_closed")
    return flow


def touch(flow: Flow, now: datetime) -> None:
    """Activity: the flow lives another `ttl` from now."""
    flow.updated_at = now
    flow.expires_at = now + timedelta(seconds=flow.ttl_seconds)


async def update(session: AsyncSession, flow: Flow, *, now: datetime, **fields: Any) -> Flow:
    """Set fields of an open flow's data (a new dict, so the JSON column is seen as changed)."""
    if flow.status != FlowStatus.open:
        raise Conflict("flow_closed")
    flow.data = {**flow.data, **fields}
    touch(flow, now)
    await session.flush()
    return flow


async def append(
    session: AsyncSession, flow: Flow, *, key: str, value: Any, limit: int, now: datetime
) -> list[Any]:
    """Add to a list in the data (a report's photos, a poll's options), at most `limit` items;
    an item already there is not added twice (a repeated update)."""
    items = list(flow.data.get(key, []))
    if value in items:
        return items
    if len(items) >= limit:
        raise InvalidInput("flow_list_full", limit=limit)
    items.append(value)
    await update(session, flow, now=now, **{key: items})
    return items


async def remove(
    session: AsyncSession, flow: Flow, *, key: str, value: Any, now: datetime
) -> list[Any]:
    items = [v for v in flow.data.get(key, []) if v != value]
    await update(session, flow, now=now, **{key: items})
    return items


async def expect(session: AsyncSession, flow: Flow, *, step: str, now: datetime) -> None:
    """The flow now waits for a typed answer to `step` (a prompt carries the flow id and step)."""
    if not step or len(step) > STEP_LIMIT:
        raise ValueError(f"step must be 1..{STEP_LIMIT} characters: {step!r}")
    if flow.status != FlowStatus.open:
        raise Conflict("flow_closed")
    flow.step = step
    touch(flow, now)
    await session.flush()


async def answer(
    session: AsyncSession,
    *,
    flow_id: int,
    owner_id: int,
    step: str,
    now: datetime,
    in_private: bool = True,
) -> Flow:
    """The open flow a typed answer to `step` belongs to, locked. An answer to a question the
    flow no longer asks (it moved on, or was answered already) is refused as stale."""
    flow = await open_flow(
        session, flow_id=flow_id, owner_id=owner_id, now=now, in_private=in_private
    )
    if flow.step != step:
        raise InvalidInput("stale_answer")
    flow.step = ""
    touch(flow, now)
    await session.flush()
    return flow


async def cancel(session: AsyncSession, flow: Flow, *, now: datetime) -> bool:
    """Cancel an open flow; False if it was not open (a second tap changes nothing)."""
    if flow.status != FlowStatus.open:
        return False
    flow.status, flow.step, flow.updated_at = FlowStatus.cancelled, "", now
    await session.flush()
    return True


async def confirm(
    session: AsyncSession,
    *,
    flow_id: int,
    owner_id: int,
    now: datetime,
    make: Callable[[Flow], Awaitable[int]],
    kind: str | None = None,
    in_private: bool = True,
) -> tuple[Flow, bool]:
    """Make the thing once: under the row's lock, `make(flow)` runs for an open flow and its
    result id is kept; (flow, True). A flow confirmed already returns (flow, False) with the same
    `result_id`, so a double tap makes one thing. A cancelled or expired flow makes nothing."""
    flow = await load(
        session,
        flow_id=flow_id,
        owner_id=owner_id,
        now=now,
        kind=kind,
        in_private=in_private,
        lock=True,
    )
    if flow.status == FlowStatus.confirmed:
        return flow, False
    if flow.status != FlowStatus.open:
        raise Conflict("flow_closed")
    flow.result_id = await make(flow)
    flow.status, flow.step, flow.updated_at = FlowStatus.confirmed, "", now
    await session.flush()
    return flow, True


async def open_flows(session: AsyncSession, *, owner_id: int, kind: str) -> list[Flow]:
    query = select(Flow).where(
        Flow.owner_id == owner_id, Flow.kind == kind, Flow.status == FlowStatus.open
    )
    return list((await session.exec(query.order_by(col(Flow.id)))).all())


async def purge(session: AsyncSession, now: datetime, *, keep: timedelta = KEEP_FINISHED) -> int:
    """A rhythm: mark open flows past their time expired, and delete flows finished longer
    than `keep` ago (a button that old is stale). Returns the rows changed."""
    expired = await session.exec(
        sql_update(Flow)
        .where(col(Flow.status) == FlowStatus.open, col(Flow.expires_at) <= now)
        .values(status=FlowStatus.expired, step="", updated_at=now)
        .execution_options(synchronize_session=False)
    )
    old = await session.exec(
        delete(Flow)
        .where(col(Flow.status) != FlowStatus.open, col(Flow.updated_at) < now - keep)
        .execution_options(synchronize_session=False)
    )
    return int(expired.rowcount or 0) + int(old.rowcount or 0)
