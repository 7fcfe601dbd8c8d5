"""Rewards bought with points: the catalogue, one-time redemption codes, merchants, verification.

A redemption is one write transaction: the reward row is locked first (so stock and the monthly
limit are counted exactly), then the person's points account (models.points), and the code, the
stock change and the debit are written together. Every effect has an idempotency key: the
redemption's own `key` (from the confirm button), `redeem:<id>` for the debit and
`refund:<id>` for the credit when a code is cancelled or expires.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import CheckConstraint, Index, func, or_
from sqlmodel import Field, SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from models import ledger, outbox
from models.base import TelegramId, UTCDateTime, must_get
from models.errors import Conflict, InvalidInput, NotAllowed, NotFound
from models.people import (
    CODE_ALPHABET,
    CODE_LENGTH,
    Authority,
    Can,
    Community,
    Person,
    Resident,
    ResidentStatus,
    Unit,
    clean_name,
    normalise_code,
)

NAME_LIMIT = 40  # fits a button next to the cost, and a prompt's payload with room to spare
KEY_LIMIT = 120
REDEMPTION_TTL = timedelta(days=30)
MAX_COST = 100_000
MAX_STOCK = 100_000
MAX_MONTHLY = 100
EXPIRY_BATCH = 200  # codes expired per rhythm tick; the next tick takes the rest


class RewardStatus(StrEnum):
    active = "active"
    retired = "retired"


class RedemptionStatus(StrEnum):
    issued = "issued"
    used = "used"
    expired = "expired"
    cancelled = "cancelled"


# --- tables -------------------------------------------------------------------------------


class Reward(SQLModel, table=True):
    """Something a community offers for points, optionally handed over by a merchant."""

    __table_args__ = (
        CheckConstraint("cost > 0", name="ck_reward_cost_positive"),
        CheckConstraint("stock IS NULL OR stock >= 0", name="ck_reward_stock_not_negative"),
    )
    id: int | None = Field(default=None, primary_key=True)
    community_id: int = Field(foreign_key="community.id", index=True)
    name_zh: str = Field(max_length=NAME_LIMIT)
    name_en: str = Field(max_length=NAME_LIMIT)
    merchant_id: int | None = Field(
        default=None, sa_type=TelegramId, foreign_key="person.id", index=True
    )
    cost: int
    stock: int | None = None  # None: unlimited
    monthly_limit: int | None = None  # per person per calendar month (community's time zone)
    status: str = Field(default=RewardStatus.active, max_length=12)
    created_by: int = Field(sa_type=TelegramId)
    created_at: datetime = Field(sa_type=UTCDateTime)
    updated_at: datetime = Field(sa_type=UTCDateTime)


class Redemption(SQLModel, table=True):
    """One redeemed reward: a one-time code the resident shows to whoever hands it over."""

    __table_args__ = (Index("ix_redemption_due", "status", "expires_at"),)
    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(max_length=KEY_LIMIT, unique=True)
    community_id: int = Field(foreign_key="community.id", index=True)
    reward_id: int = Field(foreign_key="reward.id", index=True)
    person_id: int = Field(sa_type=TelegramId, foreign_key="person.id", index=True)
    code: str = Field(max_length=16, unique=True)
    cost: int  # what was debited: a later price change does not alter a refund
    status: str = Field(default=RedemptionStatus.issued, max_length=12)
    created_at: datetime = Field(sa_type=UTCDateTime)
    expires_at: datetime = Field(sa_type=UTCDateTime)
    closed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    closed_by: int | None = Field(default=None, sa_type=TelegramId)  # who handed it over


# --- small rules --------------------------------------------------------------------------


def name_in(reward: Reward, lang: str) -> str:
    return reward.name_en if lang == "en" else reward.name_zh


def parse_whole(text: str, *, low: int, high: int) -> int:
    """A typed whole number in [low, high] ("３０" and " 30 分" both count as 30)."""
    digits = "".join(ch for ch in text if not ch.isspace() and ch not in "分个份点")
    try:
        value = int(digits)
    except ValueError:
        raise InvalidInput("bad_number", low=low, high=high) from None
    if not low <= value <= high:
        raise InvalidInput("bad_number", low=low, high=high)
    return value


# The numbers a manager sets on a reward: (lowest, highest). None means no limit, except for cost.
TERMS = {"cost": (1, MAX_COST), "stock": (0, MAX_STOCK), "monthly_limit": (1, MAX_MONTHLY)}


def _checked(term: str, value: int | None) -> int | None:
    return None if value is None and term != "cost" else _number(term, value)


def _number(term: str, value: int | None) -> int:
    low, high = TERMS[term]
    if value is None or isinstance(value, bool) or not low <= value <= high:
        raise InvalidInput("bad_number", low=low, high=high)
    return value


def require_manager(auth: Authority, community_id: int) -> None:
    if not auth.may(Can.run_community, community_id=community_id):
        raise NotAllowed("rewards_staff_only")


def month_bounds(now: datetime, zone: str) -> tuple[datetime, datetime]:
    """The calendar month around `now` in the community's zone, as UTC instants [start, end)."""
    local = now.astimezone(ZoneInfo(zone))
    start = local.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    following = (start + timedelta(days=32)).replace(day=1)
    return start.astimezone(now.tzinfo), following.astimezone(now.tzinfo)


def _is_postgres(session: AsyncSession) -> bool:
    return session.get_bind().dialect.name == "postgresql"


# --- the catalogue ------------------------------------------------------------------------


async def get_reward(session: AsyncSession, reward_id: int, *, lock: bool = False) -> Reward:
    return await must_get(session, Reward, reward_id, "reward_not_found", lock=lock)


async def managed_communities(session: AsyncSession, *, auth: Authority) -> list[Community]:
    """The communities whose catalogue this person may manage."""
    found = (await session.exec(select(Community).order_by(col(Community.id)))).all()
    return [c for c in found if c.id is not None and auth.may(Can.run_community, community_id=c.id)]


async def add_reward(
    session: AsyncSession,
    *,
    auth: Authority,
    community_id: int,
    name_zh: str,
    name_en: str,
    cost: int,
    stock: int | None,
    monthly_limit: int | None = None,
    merchant_id: int | None = None,
    now: datetime,
) -> Reward:
    require_manager(auth, community_id)
    if await session.get(Community, community_id) is None:
        raise NotFound("community_not_found")
    if merchant_id is not None and await session.get(Person, merchant_id) is None:
        raise NotFound("unknown_person")
    reward = Reward(
        community_id=community_id,
        name_zh=clean_name(name_zh, limit=NAME_LIMIT),
        name_en=clean_name(name_en, limit=NAME_LIMIT),
        merchant_id=merchant_id,
        cost=_number("cost", cost),
        stock=_checked("stock", stock),
        monthly_limit=_checked("monthly_limit", monthly_limit),
        created_by=auth.person_id,
        created_at=now,
        updated_at=now,
    )
    session.add(reward)
    await session.flush()
    return reward


async def _managed(session: AsyncSession, auth: Authority, reward_id: int, now: datetime) -> Reward:
    reward = await get_reward(session, reward_id, lock=True)
    require_manager(auth, reward.community_id)
    reward.updated_at = now
    return reward


async def set_term(
    session: AsyncSession,
    *,
    auth: Authority,
    reward_id: int,
    term: str,
    value: int | None,
    now: datetime,
) -> Reward:
    """A manager sets one of `TERMS`: the cost (a new price applies to later redemptions; issued
    codes keep, and refund, what they cost), the stock or the monthly limit (None: no limit)."""
    if term not in TERMS:
        raise ValueError(f"not a reward term: {term!r}")
    reward = await _managed(session, auth, reward_id, now)
    setattr(reward, term, _checked(term, value))
    await session.flush()
    return reward


async def set_merchant(
    session: AsyncSession,
    *,
    auth: Authority,
    reward_id: int,
    merchant_id: int | None,
    now: datetime,
    in_community_chat: bool = False,
) -> tuple[Reward, bool]:
    """Name who hands the reward over (None: the community itself); returns (reward, changed).

    The merchant is one of the community's residents or merchants, or someone Telegram says is
    in one of its groups (`in_community_chat`: a shop owner a lead replied to there).

    A new merchant is told privately (through the outbox) how codes are confirmed.
    """
    reward = await _managed(session, auth, reward_id, now)
    if merchant_id is not None and await session.get(Person, merchant_id) is None:
        raise NotFound("unknown_person")
    if reward.merchant_id == merchant_id:
        return reward, False
    if (
        merchant_id is not None
        and not in_community_chat
        and not await may_be_merchant(
            session, community_id=reward.community_id, person_id=merchant_id
        )
    ):
        raise NotAllowed("merchant_not_here")
    reward.merchant_id = merchant_id
    await session.flush()
    if merchant_id is not None:
        await outbox.enqueue_private(
            session,
            key=f"merchant:{reward.id}:{merchant_id}",
            person_id=merchant_id,
            community_id=reward.community_id,
            template="rewards/merchant_notice",
            context={"name_zh": reward.name_zh, "name_en": reward.name_en},
            now=now,
        )
    return reward, True


async def set_status(
    session: AsyncSession, *, auth: Authority, reward_id: int, status: str, now: datetime
) -> tuple[Reward, bool]:
    """Retire a reward (no new redemptions; issued codes stay valid) or offer it again."""
    if status not in RewardStatus.__members__:
        raise InvalidInput("stale_button")
    reward = await _managed(session, auth, reward_id, now)
    if reward.status == status:
        return reward, False
    reward.status = status
    await session.flush()
    return reward, True


async def rewards_of(
    session: AsyncSession, *, community_id: int, active_only: bool = False
) -> Sequence[Reward]:
    """The community's rewards, active first, cheapest first."""
    query = select(Reward).where(Reward.community_id == community_id)
    if active_only:
        query = query.where(Reward.status == RewardStatus.active)
    retired_last = col(Reward.status) == RewardStatus.retired
    return (
        await session.exec(query.order_by(retired_last, col(Reward.cost), col(Reward.id)))
    ).all()


@dataclass(frozen=True)
class Offer:
    """A reward as one resident sees it: can they have it now, and if not, why."""

    reward: Reward
    missing: int  # points short (0: affordable)

    @property
    def sold_out(self) -> bool:
        return self.reward.stock is not None and self.reward.stock <= 0

    @property
    def available(self) -> bool:
        return self.missing == 0 and not self.sold_out


async def catalogue(
    session: AsyncSession, *, community_id: int, person_id: int
) -> tuple[list[Offer], int]:
    """Active rewards with what the person can have first (cheapest first), then what they are
    short of (nearest first), then the sold out; and the person's balance."""
    have = await ledger.balance(session, community_id=community_id, person_id=person_id)
    offers = [
        Offer(r, max(0, r.cost - have))
        for r in await rewards_of(session, community_id=community_id, active_only=True)
    ]
    offers.sort(key=lambda o: (o.sold_out, o.missing > 0, o.missing, o.reward.cost, o.reward.id))
    return offers, have


def _candidates(community_id: int) -> Any:
    """The ids a reward's merchant may be chosen from: the community's merchants already named
    and its verified residents."""
    merchants = select(Reward.merchant_id).where(Reward.community_id == community_id)
    residents = select(Resident.person_id).where(
        Resident.community_id == community_id, Resident.status == ResidentStatus.verified
    )
    return or_(col(Person.id).in_(merchants), col(Person.id).in_(residents))


async def may_be_merchant(session: AsyncSession, *, community_id: int, person_id: int) -> bool:
    """The same people the merchant picker lists: nobody from outside the community."""
    query = select(Person.id).where(Person.id == person_id, _candidates(community_id))
    return (await session.exec(query)).first() is not None


async def merchant_candidates(
    session: AsyncSession, *, community_id: int, offset: int = 0, limit: int = 8
) -> tuple[Sequence[Person], int]:
    """People a reward's merchant may be chosen from: the community's merchants already named
    and its verified residents, by name, with their count."""
    base = select(Person).where(_candidates(community_id))
    total = (await session.exec(select(func.count()).select_from(base.subquery()))).one()
    rows = await session.exec(
        base.order_by(col(Person.name), col(Person.id)).offset(offset).limit(limit)
    )
    return rows.all(), int(total)


# --- redeeming ------------------------------------------------------------------------------


def redemption_key(*, person_id: int, reward_id: int, nonce: str) -> str:
    """The idempotency key of one confirm button: tapping it twice is one redemption."""
    return f"redeem:{person_id}:{reward_id}:{nonce}"[:KEY_LIMIT]


async def by_key(session: AsyncSession, key: str) -> Redemption | None:
    return (await session.exec(select(Redemption).where(Redemption.key == key))).first()


async def _is_member(session: AsyncSession, *, community_id: int, person_id: int) -> bool:
    query = select(Resident.id).where(
        Resident.community_id == community_id,
        Resident.person_id == person_id,
        Resident.status == ResidentStatus.verified,
    )
    return (await session.exec(query)).first() is not None


async def _unused_code(session: AsyncSession) -> str:
    while True:
        code = "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))
        taken = select(Redemption.id).where(Redemption.code == code)
        if (await session.exec(taken)).first() is None:
            return code


async def _redeemed_this_month(
    session: AsyncSession, *, reward_id: int, person_id: int, zone: str, now: datetime
) -> int:
    start, end = month_bounds(now, zone)
    query = select(func.count()).where(
        Redemption.reward_id == reward_id,
        Redemption.person_id == person_id,
        col(Redemption.status).in_([RedemptionStatus.issued, RedemptionStatus.used]),
        col(Redemption.created_at) >= start,
        col(Redemption.created_at) < end,
    )
    return int((await session.exec(query)).one())


async def check_redeemable(
    session: AsyncSession, *, reward: Reward, person_id: int, now: datetime, lock: bool = False
) -> int:
    """Raise the refusal redeeming this reward would meet now; returns the person's balance.

    With lock (inside `redeem`, which holds the reward's lock) the points account is locked
    before its balance is read, so the answer stays true until the transaction ends.
    """
    names = {"name_zh": reward.name_zh, "name_en": reward.name_en}
    if reward.status != RewardStatus.active:
        raise Conflict("reward_retired", **names)
    if not await _is_member(session, community_id=reward.community_id, person_id=person_id):
        raise NotAllowed("not_a_member")
    if reward.stock is not None and reward.stock <= 0:
        raise Conflict("reward_sold_out", **names)
    if reward.monthly_limit is not None:
        community = await session.get(Community, reward.community_id)
        assert community is not None and reward.id is not None
        used = await _redeemed_this_month(
            session, reward_id=reward.id, person_id=person_id, zone=community.timezone, now=now
        )
        if used >= reward.monthly_limit:
            raise Conflict("monthly_limit_reached", limit=reward.monthly_limit, **names)
    if lock:
        _, have = await ledger.lock_account(
            session, community_id=reward.community_id, person_id=person_id, now=now
        )
    else:
        have = await ledger.balance(session, community_id=reward.community_id, person_id=person_id)
    if have < reward.cost:
        raise Conflict(
            "not_enough_for_reward",
            have=have,
            cost=reward.cost,
            missing=reward.cost - have,
            **names,
        )
    return have


async def redeem(
    session: AsyncSession,
    *,
    person_id: int,
    reward_id: int,
    key: str,
    now: datetime,
    ttl: timedelta = REDEMPTION_TTL,
) -> tuple[Redemption, bool]:
    """Exchange points for a one-time code; returns (redemption, created).

    The same key returns the redemption it made before, whatever happened since, and changes
    nothing. Refusals (retired, sold out, monthly limit, too few points, not a resident) raise
    and write nothing. Locks: the reward row, then the points account (models.points.post).
    """
    if not key or len(key) > KEY_LIMIT:
        raise ValueError(f"redemption key must be 1..{KEY_LIMIT} characters: {key!r}")
    reward = await get_reward(session, reward_id, lock=True)
    # After the lock: on PostgreSQL this read sees what the lock's previous holder committed.
    existing = await by_key(session, key)
    if existing is not None:
        if existing.person_id != person_id:
            raise InvalidInput("stale_button")
        return existing, False
    await check_redeemable(session, reward=reward, person_id=person_id, now=now, lock=True)
    redemption = Redemption(
        key=key,
        community_id=reward.community_id,
        reward_id=reward_id,
        person_id=person_id,
        code=await _unused_code(session),
        cost=reward.cost,
        created_at=now,
        expires_at=now + ttl,
    )
    session.add(redemption)
    if reward.stock is not None:
        reward.stock -= 1
    await session.flush()
    await ledger.post(
        session,
        community_id=reward.community_id,
        person_id=person_id,
        amount=-reward.cost,
        key=f"redeem:{redemption.id}",
        reason=f"{reward.name_zh} / {reward.name_en}",
        kind=ledger.Kind.redeem,
        by=person_id,
        now=now,
    )
    return redemption, True


async def _give_back(
    session: AsyncSession, redemption: Redemption, reward: Reward, *, status: str, now: datetime
) -> None:
    """Close an unused code: the item goes back into stock and the points back to the person.

    The caller holds the redemption's and the reward's locks.
    """
    redemption.status = status
    redemption.closed_at = now
    if reward.stock is not None:
        reward.stock += 1
    await session.flush()
    await ledger.post(
        session,
        community_id=redemption.community_id,
        person_id=redemption.person_id,
        amount=redemption.cost,
        key=f"refund:{redemption.id}",
        reason=f"{reward.name_zh} / {reward.name_en}",
        kind=ledger.Kind.refund,
        by=None,
        now=now,
    )


async def _locked_redemption(session: AsyncSession, redemption_id: int) -> Redemption:
    query = (
        select(Redemption)
        .where(Redemption.id == redemption_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    redemption = (await session.exec(query)).first()
    if redemption is None:
        raise NotFound("code_unknown")
    return redemption


async def cancel(
    session: AsyncSession, *, person_id: int, redemption_id: int, now: datetime
) -> tuple[Redemption, Reward, bool]:
    """The resident gives an unused code back and gets the points; returns (…, changed).

    Cancelling again changes nothing. Locks: the redemption, the reward, the points account.
    """
    redemption = await _locked_redemption(session, redemption_id)
    if redemption.person_id != person_id:
        raise NotAllowed("not_your_code")
    reward = await get_reward(session, redemption.reward_id, lock=True)
    if redemption.status == RedemptionStatus.cancelled:
        return redemption, reward, False
    if redemption.status in (RedemptionStatus.used, RedemptionStatus.expired):
        community = await session.get(Community, redemption.community_id)
        zone = community.timezone if community is not None else "UTC"
        if redemption.status == RedemptionStatus.used:
            raise Conflict("code_used_cancel", at=redemption.closed_at, zone=zone)
        raise Conflict("code_expired", at=redemption.expires_at, zone=zone, code=redemption.code)
    await _give_back(session, redemption, reward, status=RedemptionStatus.cancelled, now=now)
    return redemption, reward, True


async def open_codes(
    session: AsyncSession, *, person_id: int, community_id: int, now: datetime
) -> list[tuple[Redemption, Reward]]:
    """The person's codes that can still be used, soonest to expire first."""
    rows = await session.exec(
        select(Redemption, Reward)
        .join(Reward, col(Reward.id) == col(Redemption.reward_id))
        .where(
            Redemption.person_id == person_id,
            Redemption.community_id == community_id,
            Redemption.status == RedemptionStatus.issued,
            col(Redemption.expires_at) > now,
        )
        .order_by(col(Redemption.expires_at), col(Redemption.id))
    )
    return [(r, w) for r, w in rows.all()]


async def redemption_with_reward(
    session: AsyncSession, *, redemption_id: int, person_id: int
) -> tuple[Redemption, Reward]:
    """One of the person's own redemptions (anyone else's is refused)."""
    redemption = await must_get(session, Redemption, redemption_id, "code_unknown")
    if redemption.person_id != person_id:
        raise NotAllowed("not_your_code")
    return redemption, await get_reward(session, redemption.reward_id)


# --- verifying at the merchant -----------------------------------------------------------


@dataclass(frozen=True)
class CodeCheck:
    """A code as the person confirming the handover sees it."""

    redemption: Redemption
    reward: Reward
    resident: Person
    community: Community


def may_confirm(auth: Authority, reward: Reward) -> bool:
    """The reward's merchant, or a lead or admin covering the community."""
    return auth.may(Can.hand_over, community_id=reward.community_id, merchant_id=reward.merchant_id)


async def _check(session: AsyncSession, auth: Authority, redemption: Redemption) -> CodeCheck:
    reward = await get_reward(session, redemption.reward_id)
    if not may_confirm(auth, reward):
        raise NotAllowed("code_not_yours")
    resident = await session.get(Person, redemption.person_id)
    community = await session.get(Community, redemption.community_id)
    assert resident is not None and community is not None
    return CodeCheck(redemption, reward, resident, community)


async def _refuse_closed(session: AsyncSession, check: CodeCheck, now: datetime) -> None:
    """A code that cannot be handed over (any more) is refused, saying why."""
    r, zone = check.redemption, check.community.timezone
    if r.status == RedemptionStatus.used:
        by = await session.get(Person, r.closed_by) if r.closed_by is not None else None
        raise Conflict("code_used", at=r.closed_at, by=by.name if by else "", zone=zone)
    if r.status == RedemptionStatus.cancelled:
        raise Conflict("code_cancelled", code=r.code)
    if r.status == RedemptionStatus.expired or r.expires_at <= now:
        raise Conflict("code_expired", at=r.expires_at, zone=zone, code=r.code)


async def inspect_code(
    session: AsyncSession, *, auth: Authority, code: str, now: datetime
) -> CodeCheck:
    """What a code is for and whose it is, if this person may confirm it and it is still good."""
    cleaned = normalise_code(code)
    query = select(Redemption).where(Redemption.code == cleaned)
    redemption = (await session.exec(query)).first() if cleaned else None
    if redemption is None:
        raise NotFound("code_unknown")
    check = await _check(session, auth, redemption)
    await _refuse_closed(session, check, now)
    return check


async def hand_over(
    session: AsyncSession, *, auth: Authority, redemption_id: int, now: datetime
) -> tuple[CodeCheck, bool]:
    """Mark the code used, once; returns (check, changed).

    A second confirmation by the same person changes nothing (changed False, the caller says it
    was already done); any other closed state is refused. The resident is told via the outbox.
    """
    redemption = await _locked_redemption(session, redemption_id)
    check = await _check(session, auth, redemption)
    if redemption.status == RedemptionStatus.used:
        return check, False
    await _refuse_closed(session, check, now)
    redemption.status = RedemptionStatus.used
    redemption.closed_at = now
    redemption.closed_by = auth.person_id
    await session.flush()
    await outbox.enqueue_private(
        session,
        key=f"redeemed:{redemption.id}",
        person_id=redemption.person_id,
        community_id=redemption.community_id,
        template="rewards/used_notice",
        context={
            "name_zh": check.reward.name_zh,
            "name_en": check.reward.name_en,
            "code": redemption.code,
            "at": _local(now, check.community.timezone),
        },
        now=now,
    )
    return check, True


async def closer_of(session: AsyncSession, redemption: Redemption) -> Person | None:
    return await session.get(Person, redemption.closed_by) if redemption.closed_by else None


def _local(at: datetime, zone: str) -> str:
    """A time as plain text in the community's zone (outbox context holds plain values)."""
    return at.astimezone(ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M")


# --- expiry (a rhythm of the delivery engine) --------------------------------------------


async def expire_due(session: AsyncSession, now: datetime, *, limit: int = EXPIRY_BATCH) -> int:
    """Expire unused codes past their date: stock and points go back, the resident is told.

    Idempotent (an expired code is no longer `issued`). Lock order, to never deadlock with a
    redemption (reward → account) or a cancellation (redemption → reward → account): the due
    redemptions (skipping rows a cancellation holds), then their rewards by id, then accounts in
    person order.
    """
    query = (
        select(Redemption)
        .where(Redemption.status == RedemptionStatus.issued, col(Redemption.expires_at) <= now)
        .order_by(col(Redemption.expires_at), col(Redemption.id))
        .limit(limit)
        .execution_options(populate_existing=True)
    )
    if _is_postgres(session):
        query = query.with_for_update(skip_locked=True)
    due = list((await session.exec(query)).all())
    if not due:
        return 0
    locked = await session.exec(
        select(Reward)
        .where(col(Reward.id).in_({r.reward_id for r in due}))
        .order_by(col(Reward.id))
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    rewards = {w.id: w for w in locked.all()}
    zones = {
        c.id: c.timezone
        for c in (
            await session.exec(
                select(Community).where(col(Community.id).in_({r.community_id for r in due}))
            )
        ).all()
    }
    for redemption in sorted(due, key=lambda r: (r.person_id, r.id)):
        reward = rewards[redemption.reward_id]
        await _give_back(session, redemption, reward, status=RedemptionStatus.expired, now=now)
        await outbox.enqueue_private(
            session,
            key=f"expired:{redemption.id}",
            person_id=redemption.person_id,
            community_id=redemption.community_id,
            template="rewards/expired_notice",
            context={
                "name_zh": reward.name_zh,
                "name_en": reward.name_en,
                "code": redemption.code,
                "points": redemption.cost,
                "at": _local(redemption.expires_at, zones.get(redemption.community_id, "UTC")),
            },
            now=now,
        )
    return len(due)


# --- the monthly redemption day (optional) ------------------------------------------------


REMINDER_AT = time(9, 30)  # after the morning market, before lunch
REMINDER_REWARDS = 6  # rewards named in the reminder; the rest are a /rewards away


class RewardSettings(SQLModel, table=True):
    """A community's rewards settings: the day of the month its groups hear about rewards."""

    __table_args__ = (
        CheckConstraint(
            "redemption_day IS NULL OR (redemption_day BETWEEN 1 AND 28)",
            name="ck_rewardsettings_day",
        ),
    )
    community_id: int = Field(foreign_key="community.id", primary_key=True)
    redemption_day: int | None = None  # 1–28, so every month has it; None: no reminder
    reminded_month: str = Field(default="", max_length=7)  # "2026-11": that month's is enqueued
    updated_at: datetime = Field(sa_type=UTCDateTime)


async def redemption_day(session: AsyncSession, *, community_id: int) -> int | None:
    settings = await session.get(RewardSettings, community_id)
    return settings.redemption_day if settings is not None else None


async def set_redemption_day(
    session: AsyncSession, *, auth: Authority, community_id: int, day: int | None, now: datetime
) -> int | None:
    require_manager(auth, community_id)
    if day is not None and not 1 <= day <= 28:
        raise InvalidInput("bad_number", low=1, high=28)
    settings = await session.get(RewardSettings, community_id)
    if settings is None:
        settings = RewardSettings(community_id=community_id, updated_at=now)
        session.add(settings)
    settings.redemption_day = day
    settings.updated_at = now
    await session.flush()
    return day


async def remind_redemption_day(session: AsyncSession, now: datetime) -> int:
    """On each community's redemption day, one reminder per linked chat (a rhythm).

    Key `redemption-day:<community>:<yyyy-mm>` (per chat), and the month is remembered on the
    settings row, so the minute-by-minute rhythm writes once a month. Returns rows enqueued.
    """
    rows = await session.exec(
        select(RewardSettings, Community)
        .join(Community, col(Community.id) == col(RewardSettings.community_id))
        .where(col(RewardSettings.redemption_day).is_not(None))
    )
    added = 0
    for settings, community in rows.all():
        zone = ZoneInfo(community.timezone)
        local = now.astimezone(zone)
        month = local.strftime("%Y-%m")
        if local.day != settings.redemption_day or settings.reminded_month == month:
            continue
        settings.reminded_month = month
        assert community.id is not None
        offered = await rewards_of(session, community_id=community.id, active_only=True)
        context = {
            "community": community.name,
            "count": len(offered),
            "rewards": [
                {"name_zh": r.name_zh, "name_en": r.name_en, "cost": r.cost}
                for r in offered[:REMINDER_REWARDS]
            ],
        }
        due = datetime.combine(local.date(), REMINDER_AT, tzinfo=zone).astimezone(now.tzinfo)
        roots = await session.exec(
            select(Unit).where(Unit.community_id == community.id, col(Unit.parent_id).is_(None))
        )
        for root in roots.all():
            added += await outbox.enqueue_to_unit(
                session,
                key=f"redemption-day:{community.id}:{month}",
                unit=root,
                subtree_too=True,
                template="rewards/redemption_day",
                context=context,
                due_at=max(due, now),
                now=now,
            )
    await session.flush()
    return added
