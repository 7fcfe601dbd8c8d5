"""Rewards against a real database: redeeming, limits, cancelling, expiry, verification, races."""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta

import pytest
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.db import Database
from models import ledger, people, rewards
from models.errors import Conflict, DomainError, InvalidInput, NotAllowed, NotFound
from models.ledger import LedgerEntry
from models.outbox import Delivery
from models.rewards import Redemption, RedemptionStatus, Reward
from tests.conftest import NOW

BOSS = people.Authority(person_id=1, superadmin=True)
LEAD = 30  # lead of the estate (the community's top unit)
B_LEAD = 31  # lead of one building only
MERCHANT = 40  # 茶餐厅 owner
OTHER_MERCHANT = 41


@dataclass
class World:
    community: int
    estate: int
    building: int
    residents: list[int]


async def _world(db: Database, *, residents: int = 3, balance: int = 100) -> World:
    async with db.transaction() as s:
        c = await people.create_community(
            s, name="幸福里", timezone="Asia/Shanghai", language="zh", now=NOW
        )
        assert c.id is not None
        estate = await people.create_unit(
            s, community_id=c.id, parent_id=None, kind="estate", name="幸福里小区", now=NOW
        )
        b = await people.create_unit(
            s, community_id=c.id, parent_id=estate.id, kind="building", name="3号楼", now=NOW
        )
        assert estate.id is not None and b.id is not None
        for pid, name in (
            (LEAD, "李主任"),
            (B_LEAD, "王阿姨"),
            (MERCHANT, "陈老板"),
            (OTHER_MERCHANT, "赵师傅"),
        ):
            await people.touch_person(
                s, person_id=pid, name=name, username=None, language_code="zh", now=NOW
            )
        await people.grant_role(
            s, auth=BOSS, unit_id=estate.id, person_id=LEAD, kind="lead", now=NOW
        )
        await people.grant_role(s, auth=BOSS, unit_id=b.id, person_id=B_LEAD, kind="lead", now=NOW)
        ids = []
        for i in range(residents):
            pid = 1000 + i
            await people.touch_person(
                s, person_id=pid, name=f"居民{i}", username=None, language_code="zh", now=NOW
            )
            h = await people.add_household(
                s, unit_id=b.id, flat=f"3-{i + 1:03d}", area_centi_m2=None, now=NOW
            )
            assert h.id is not None
            await people.request_join(
                s, person_id=pid, household_id=h.id, now=NOW, verified_by_code=True
            )
            if balance:
                await ledger.post(
                    s, community_id=c.id, person_id=pid, amount=balance, key=f"seed:{pid}",
                    reason="seed", kind="welcome", by=None, now=NOW,
                )  # fmt: skip
            ids.append(pid)
    return World(c.id, estate.id, b.id, ids)


async def _reward(
    db: Database,
    w: World,
    *,
    cost: int = 30,
    stock: int | None = None,
    limit: int | None = None,
    merchant: int | None = MERCHANT,
) -> int:
    async with db.transaction() as s:
        auth = await people.authority(s, person_id=LEAD, superadmin=False)
        r = await rewards.add_reward(
            s, auth=auth, community_id=w.community, name_zh="茶餐厅午餐券", name_en="Lunch voucher",
            cost=cost, stock=stock, monthly_limit=limit, merchant_id=merchant, now=NOW,
        )  # fmt: skip
        assert r.id is not None
        return r.id


async def _redeem(
    db: Database, pid: int, rid: int, nonce: str = "n1", *, now: datetime = NOW
) -> Redemption:
    async with db.transaction() as s:
        key = rewards.redemption_key(person_id=pid, reward_id=rid, nonce=nonce)
        redemption, _ = await rewards.redeem(s, person_id=pid, reward_id=rid, key=key, now=now)
        return redemption


async def _balance(db: Database, w: World, pid: int) -> int:
    async with db.transaction(write=False) as s:
        return await ledger.balance(s, community_id=w.community, person_id=pid)


async def _stock(db: Database, rid: int) -> int | None:
    async with db.transaction(write=False) as s:
        return (await rewards.get_reward(s, rid)).stock


async def _auth(db: Database, pid: int) -> people.Authority:
    async with db.transaction(write=False) as s:
        return await people.authority(s, person_id=pid, superadmin=False)


# --- the catalogue --------------------------------------------------------------------------


async def test_only_leads_covering_the_community_manage_the_catalogue(db: Database) -> None:
    w = await _world(db)
    async with db.transaction() as s:
        auth = await people.authority(s, person_id=B_LEAD, superadmin=False)
        with pytest.raises(NotAllowed) as refused:
            await rewards.add_reward(
                s, auth=auth, community_id=w.community, name_zh="x", name_en="x", cost=1,
                stock=None, now=NOW,
            )  # fmt: skip
        assert refused.value.key == "rewards_staff_only"
    rid = await _reward(db, w)
    async with db.transaction() as s:
        auth = await people.authority(s, person_id=B_LEAD, superadmin=False)
        with pytest.raises(NotAllowed):
            await rewards.set_term(s, auth=auth, reward_id=rid, term="cost", value=5, now=NOW)
        assert await rewards.managed_communities(s, auth=auth) == []


@pytest.mark.parametrize(
    ("cost", "stock", "limit"), [(0, None, None), (30, -1, None), (30, None, 0), (10**6, 1, 1)]
)
async def test_out_of_range_numbers_are_refused(
    db: Database, cost: int, stock: int | None, limit: int | None
) -> None:
    w = await _world(db, residents=0)
    with pytest.raises(InvalidInput) as refused:
        await _reward(db, w, cost=cost, stock=stock, limit=limit)
    assert refused.value.key == "bad_number"


def test_typed_numbers() -> None:
    assert rewards.parse_whole(" 30 分", low=1, high=100) == 30
    for text in ("abc", "0", "101", "1.5"):
        with pytest.raises(InvalidInput):
            rewards.parse_whole(text, low=1, high=100)


async def test_catalogue_puts_what_i_can_afford_first(db: Database) -> None:
    w = await _world(db, residents=1, balance=45)
    dear = await _reward(db, w, cost=60)
    cheap = await _reward(db, w, cost=30)
    gone = await _reward(db, w, cost=10, stock=0)
    async with db.transaction() as s:
        retired = await _reward_in(s, w, cost=5)
        await rewards.set_status(s, auth=BOSS, reward_id=retired, status="retired", now=NOW)
        offers, have = await rewards.catalogue(
            s, community_id=w.community, person_id=w.residents[0]
        )
    assert have == 45
    assert [(o.reward.id, o.missing, o.sold_out) for o in offers] == [
        (cheap, 0, False),
        (dear, 15, False),
        (gone, 0, True),
    ]


async def _reward_in(s: AsyncSession, w: World, *, cost: int) -> int:
    r = await rewards.add_reward(
        s, auth=BOSS, community_id=w.community, name_zh="旧", name_en="old", cost=cost,
        stock=None, now=NOW,
    )  # fmt: skip
    assert r.id is not None
    return r.id


async def test_merchant_candidates_are_residents_and_merchants(db: Database) -> None:
    w = await _world(db, residents=2)
    await _reward(db, w, merchant=OTHER_MERCHANT)
    async with db.transaction(write=False) as s:
        found, total = await rewards.merchant_candidates(s, community_id=w.community)
    assert total == 3 and {p.id for p in found} == {OTHER_MERCHANT, *w.residents}


async def test_a_merchant_from_outside_the_community_is_refused(db: Database) -> None:
    w = await _world(db, residents=0)
    rid = await _reward(db, w, merchant=None)
    async with db.transaction() as s:
        with pytest.raises(NotAllowed):
            await rewards.set_merchant(s, auth=BOSS, reward_id=rid, merchant_id=MERCHANT, now=NOW)


async def test_a_new_merchant_is_told_once(db: Database) -> None:
    w = await _world(db, residents=0)
    rid = await _reward(db, w, merchant=None)
    for _ in range(2):
        async with db.transaction() as s:
            await rewards.set_merchant(
                s, auth=BOSS, reward_id=rid, merchant_id=MERCHANT, now=NOW, in_community_chat=True
            )
    async with db.transaction(write=False) as s:
        rows = (await s.exec(select(Delivery))).all()
    assert [(r.key, r.chat_id) for r in rows] == [(f"merchant:{rid}:{MERCHANT}", MERCHANT)]


# --- redeeming ------------------------------------------------------------------------------


async def test_redeem_debits_decrements_stock_and_issues_a_code(db: Database) -> None:
    w = await _world(db)
    rid = await _reward(db, w, stock=5)
    pid = w.residents[0]
    r = await _redeem(db, pid, rid)
    assert r.status == RedemptionStatus.issued and len(r.code) == 8
    assert set(r.code) <= set(people.CODE_ALPHABET)
    assert r.expires_at == NOW + timedelta(days=30)
    assert await _balance(db, w, pid) == 70 and await _stock(db, rid) == 4
    async with db.transaction(write=False) as s:
        entry = await ledger.entry_by_key(s, f"redeem:{r.id}")
    assert entry is not None and entry.amount == -30 and entry.kind == "redeem"


async def test_the_same_key_is_one_redemption(db: Database) -> None:
    w = await _world(db)
    rid = await _reward(db, w, stock=5)
    pid = w.residents[0]
    first = await _redeem(db, pid, rid, "abc")
    again = await _redeem(db, pid, rid, "abc")
    other = await _redeem(db, pid, rid, "xyz")
    assert first.id == again.id != other.id
    assert await _balance(db, w, pid) == 40 and await _stock(db, rid) == 3


@pytest.mark.parametrize("case", ["poor", "sold_out", "retired", "stranger", "limit"])
async def test_refusals_change_nothing(db: Database, case: str) -> None:
    w = await _world(db, balance=100)
    pid = w.residents[0]
    rid = await _reward(
        db, w, cost=150 if case == "poor" else 30, stock=0 if case == "sold_out" else 3,
        limit=1 if case == "limit" else None,
    )  # fmt: skip
    expected = {
        "poor": "not_enough_for_reward",
        "sold_out": "reward_sold_out",
        "retired": "reward_retired",
        "stranger": "not_a_member",
        "limit": "monthly_limit_reached",
    }[case]
    if case == "retired":
        async with db.transaction() as s:
            await rewards.set_status(s, auth=BOSS, reward_id=rid, status="retired", now=NOW)
    if case == "stranger":
        async with db.transaction() as s:
            await people.leave(s, person_id=pid, community_id=w.community, now=NOW)
    if case == "limit":
        await _redeem(db, pid, rid, "first")
    before = (await _balance(db, w, pid), await _stock(db, rid))
    with pytest.raises(DomainError) as refused:
        await _redeem(db, pid, rid, "second")
    assert refused.value.key == expected
    assert (await _balance(db, w, pid), await _stock(db, rid)) == before
    async with db.transaction(write=False) as s:
        key = rewards.redemption_key(person_id=pid, reward_id=rid, nonce="second")
        assert await rewards.by_key(s, key) is None


async def test_monthly_limit_counts_the_communitys_calendar_month(db: Database) -> None:
    w = await _world(db, balance=200)
    rid = await _reward(db, w, cost=10, limit=2)
    pid = w.residents[0]
    # 2026-11-30 23:30 in Shanghai is still November there.
    late_november = NOW.replace(day=30, hour=15, minute=30)
    await _redeem(db, pid, rid, "a", now=NOW)
    cancelled = await _redeem(db, pid, rid, "b", now=NOW)
    async with db.transaction() as s:
        await rewards.cancel(s, person_id=pid, redemption_id=cancelled.id or 0, now=NOW)
    await _redeem(db, pid, rid, "c", now=late_november)  # a cancelled code does not count
    with pytest.raises(Conflict):
        await _redeem(db, pid, rid, "d", now=late_november)
    await _redeem(db, pid, rid, "e", now=NOW.replace(day=30, hour=16, minute=30))  # December


# --- cancelling and expiry --------------------------------------------------------------------


async def test_cancel_refunds_once_and_restores_stock(db: Database) -> None:
    w = await _world(db)
    rid = await _reward(db, w, stock=2)
    pid = w.residents[0]
    r = await _redeem(db, pid, rid)
    results = []
    for _ in range(2):
        async with db.transaction() as s:
            _, _, changed = await rewards.cancel(s, person_id=pid, redemption_id=r.id or 0, now=NOW)
            results.append(changed)
    assert results == [True, False]
    assert await _balance(db, w, pid) == 100 and await _stock(db, rid) == 2
    async with db.transaction() as s:
        with pytest.raises(NotAllowed):
            await rewards.cancel(s, person_id=w.residents[1], redemption_id=r.id or 0, now=NOW)


async def test_a_used_code_cannot_be_cancelled(db: Database) -> None:
    w = await _world(db)
    rid = await _reward(db, w)
    pid = w.residents[0]
    r = await _redeem(db, pid, rid)
    async with db.transaction() as s:
        await rewards.hand_over(s, auth=await _auth(db, MERCHANT), redemption_id=r.id or 0, now=NOW)
    async with db.transaction() as s:
        with pytest.raises(Conflict) as refused:
            await rewards.cancel(s, person_id=pid, redemption_id=r.id or 0, now=NOW)
    assert refused.value.key == "code_used_cancel"
    assert await _balance(db, w, pid) == 70


async def test_expiry_refunds_restores_stock_and_tells_the_resident_once(db: Database) -> None:
    w = await _world(db)
    rid = await _reward(db, w, stock=3)
    early = await _redeem(db, w.residents[0], rid, "a")
    late = await _redeem(db, w.residents[1], rid, "b", now=NOW + timedelta(days=5))
    used = await _redeem(db, w.residents[2], rid, "c")
    async with db.transaction() as s:
        await rewards.hand_over(s, auth=await _auth(db, LEAD), redemption_id=used.id or 0, now=NOW)
    day31 = NOW + timedelta(days=31)
    for expected in (1, 0):
        async with db.transaction() as s:
            assert await rewards.expire_due(s, day31) == expected
    assert await _balance(db, w, w.residents[0]) == 100
    assert await _balance(db, w, w.residents[1]) == 70
    assert await _stock(db, rid) == 1
    async with db.transaction(write=False) as s:
        statuses = {r.id: r.status for r in (await s.exec(select(Redemption))).all()}
        notices = [d.key for d in (await s.exec(select(Delivery))).all()]
    assert statuses == {early.id: "expired", late.id: "issued", used.id: "used"}
    assert notices.count(f"expired:{early.id}") == 1


# --- verifying --------------------------------------------------------------------------------


async def test_only_the_merchant_or_community_leads_confirm(db: Database) -> None:
    w = await _world(db)
    rid = await _reward(db, w)
    r = await _redeem(db, w.residents[0], rid)
    for pid, ok in ((MERCHANT, True), (LEAD, True), (OTHER_MERCHANT, False), (B_LEAD, False)):
        async with db.transaction(write=False) as s:
            if ok:
                check = await rewards.inspect_code(
                    s, auth=await _auth(db, pid), code=r.code.lower(), now=NOW
                )
                assert check.resident.id == w.residents[0] and check.reward.id == rid
            else:
                with pytest.raises(NotAllowed) as refused:
                    await rewards.inspect_code(s, auth=await _auth(db, pid), code=r.code, now=NOW)
                assert refused.value.key == "code_not_yours"
    async with db.transaction(write=False) as s:
        with pytest.raises(NotFound):
            await rewards.inspect_code(s, auth=BOSS, code="ZZZZZZZZ", now=NOW)


async def test_hand_over_once_then_used_at_by(db: Database) -> None:
    w = await _world(db)
    rid = await _reward(db, w)
    r = await _redeem(db, w.residents[0], rid)
    merchant = await _auth(db, MERCHANT)
    changes = []
    for _ in range(2):
        async with db.transaction() as s:
            _, changed = await rewards.hand_over(s, auth=merchant, redemption_id=r.id or 0, now=NOW)
            changes.append(changed)
    assert changes == [True, False]
    async with db.transaction(write=False) as s:
        with pytest.raises(Conflict) as refused:
            await rewards.inspect_code(s, auth=merchant, code=r.code, now=NOW)
        notices = (await s.exec(select(Delivery))).all()
    assert refused.value.key == "code_used" and refused.value.params["by"] == "陈老板"
    assert [n.key for n in notices] == [f"redeemed:{r.id}"]


async def test_an_expired_code_is_refused_before_the_rhythm_runs(db: Database) -> None:
    w = await _world(db)
    rid = await _reward(db, w)
    r = await _redeem(db, w.residents[0], rid)
    async with db.transaction() as s:
        with pytest.raises(Conflict) as refused:
            await rewards.hand_over(
                s, auth=BOSS, redemption_id=r.id or 0, now=NOW + timedelta(days=30)
            )
    assert refused.value.key == "code_expired"


# --- the race ---------------------------------------------------------------------------------


async def test_concurrent_double_tapped_redemptions_never_overspend(db: Database) -> None:
    """200 redemptions, each submitted two or three times at once with the same key: 20 people
    can afford 3 each, 20 only 1 (80 in all), and there are 70 in stock."""
    w = await _world(db, residents=40, balance=0)
    rich, poor = w.residents[:20], w.residents[20:]
    async with db.transaction() as s:
        for pid in w.residents:
            await ledger.post(
                s, community_id=w.community, person_id=pid, amount=100 if pid in rich else 40,
                key=f"seed:{pid}", reason="seed", kind="welcome", by=None, now=NOW,
            )  # fmt: skip
    rid = await _reward(db, w, cost=30, stock=70)

    refusals: list[str] = []

    async def attempt(pid: int, nonce: str) -> int | None:
        key = rewards.redemption_key(person_id=pid, reward_id=rid, nonce=nonce)
        try:
            async with db.transaction() as s:
                redemption, _ = await rewards.redeem(
                    s, person_id=pid, reward_id=rid, key=key, now=NOW
                )
                return redemption.id
        except DomainError as refused:
            refusals.append(refused.key)
            return None

    jobs = [
        (pid, f"k{n}") for pid in w.residents for n in range(5) for _ in range(2 + (pid + n) % 2)
    ]
    assert len(set(jobs)) == 200
    results = await asyncio.gather(*(attempt(pid, nonce) for pid, nonce in jobs))

    assert set(refusals) <= {"not_enough_for_reward", "reward_sold_out"}
    by_key: dict[tuple[int, str], set[int | None]] = {}
    for job, result in zip(jobs, results, strict=True):
        by_key.setdefault(job, set()).add(result)
    # One effect per key: every submission of a key that succeeded got the same redemption.
    assert all(len(ids - {None}) <= 1 for ids in by_key.values())
    async with db.transaction(write=False) as s:
        made = (await s.exec(select(Redemption))).all()
        debits = (
            await s.exec(
                select(LedgerEntry).where(
                    LedgerEntry.kind == "redeem", col(LedgerEntry.person_id).is_not(None)
                )
            )
        ).all()
        stock = (await rewards.get_reward(s, rid)).stock
        per_person = Counter(r.person_id for r in made)
        for pid in w.residents:
            have = await ledger.balance(s, community_id=w.community, person_id=pid)
            assert have >= 0
            assert have == await ledger.ledger_sum(s, community_id=w.community, person_id=pid)
            start = 100 if pid in rich else 40
            assert have == start - 30 * per_person[pid]
        assert await ledger.ledger_sum(s, community_id=w.community, person_id=None) == -sum(
            100 if pid in rich else 40 for pid in w.residents
        ) + 30 * len(made)
    assert len(made) == 70 and len(debits) == 70 and stock == 0
    assert len({r.key for r in made}) == 70 and len({r.code for r in made}) == 70
    assert {d.key for d in debits} == {f"redeem:{r.id}" for r in made}
    assert all(per_person[pid] <= 3 for pid in rich) and all(per_person[pid] <= 1 for pid in poor)
    assert {r.id for r in made} == {i for ids in by_key.values() for i in ids if i is not None}


async def test_redeem_keys_are_per_reward(db: Database) -> None:
    w = await _world(db)
    a = await _reward(db, w)
    b = await _reward(db, w)
    pid = w.residents[0]
    assert (await _redeem(db, pid, a, "same")).reward_id == a
    assert (await _redeem(db, pid, b, "same")).reward_id == b
    async with db.transaction(write=False) as s:
        assert len((await s.exec(select(Reward))).all()) == 2


# --- the redemption day -----------------------------------------------------------------------


async def test_redemption_day_reminds_each_linked_chat_once_a_month(db: Database) -> None:
    w = await _world(db, residents=0)
    await _reward(db, w)
    async with db.transaction() as s:
        for chat, unit in ((-1, w.estate), (-2, w.building)):
            await people.link_chat(
                s, chat_id=chat, thread_id=0, unit_id=unit, title="x", by=1, now=NOW
            )
        auth = await people.authority(s, person_id=B_LEAD, superadmin=False)
        with pytest.raises(NotAllowed):
            await rewards.set_redemption_day(
                s, auth=auth, community_id=w.community, day=20, now=NOW
            )
        with pytest.raises(InvalidInput):
            await rewards.set_redemption_day(
                s, auth=BOSS, community_id=w.community, day=31, now=NOW
            )
    async with db.transaction() as s:
        await rewards.set_redemption_day(s, auth=BOSS, community_id=w.community, day=20, now=NOW)
    # NOW is 10:00 on the 20th in Shanghai; the 19th sends nothing, the 20th once.
    for at, expected in ((NOW - timedelta(days=1), 0), (NOW, 2), (NOW + timedelta(hours=1), 0)):
        async with db.transaction() as s:
            assert await rewards.remind_redemption_day(s, at) == expected
    async with db.transaction(write=False) as s:
        rows = (await s.exec(select(Delivery).order_by(col(Delivery.chat_id)))).all()
    assert [r.key for r in rows] == [
        f"redemption-day:{w.community}:2026-11:-2:0",
        f"redemption-day:{w.community}:2026-11:-1:0",
    ]
    assert rows[0].context["rewards"] == [
        {"name_zh": "茶餐厅午餐券", "name_en": "Lunch voucher", "cost": 30}
    ]
    async with db.transaction() as s:
        assert await rewards.remind_redemption_day(s, NOW + timedelta(days=30)) == 2  # December
