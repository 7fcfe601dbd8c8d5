"""The points ledger against a real database: idempotency, zero-sum books, no overdraft, races."""

from __future__ import annotations

import asyncio
import contextlib
import random
from dataclasses import dataclass
from datetime import timedelta

import pytest
from sqlmodel import col, func, select

from bot.db import Database
from bot.render import Renderer
from models import ledger, people, points, standings
from models.errors import Conflict, InvalidInput, NotAllowed
from models.ledger import InsufficientPoints, LedgerEntry, PointAccount
from models.outbox import Delivery
from tests.conftest import NOW


@dataclass
class World:
    community: int
    lead: int
    buildings: list[int]
    households: list[int]
    residents: list[int]


@pytest.fixture
async def world(db: Database) -> World:
    """A community with two buildings; residents 21–26 verified, three households each."""
    async with db.transaction() as s:
        c = await people.create_community(
            s, name="幸福里", timezone="Asia/Shanghai", language="zh", now=NOW
        )
        assert c.id is not None
        buildings, households, residents = [], [], []
        for b in (3, 5):
            unit = await people.create_unit(
                s, community_id=c.id, parent_id=None, kind="building", name=f"{b}号楼", now=NOW
            )
            assert unit.id is not None
            buildings.append(unit.id)
            for f in (1, 2, 3):
                h = await people.add_household(
                    s, unit_id=unit.id, flat=f"{b}-{f}01", area_centi_m2=None, now=NOW
                )
                assert h.id is not None
                households.append(h.id)
        for pid in (1, 21, 22, 23, 24, 25, 26):
            await people.touch_person(
                s, person_id=pid, name=f"P{pid}", username=None, language_code="zh", now=NOW
            )
        for i, pid in enumerate((21, 22, 23, 24, 25, 26)):
            await people.request_join(
                s, person_id=pid, household_id=households[i], now=NOW, verified_by_code=True
            )
            residents.append(pid)
        return World(c.id, 1, buildings, households, residents)


async def _post(
    db: Database, w: World, person: int, amount: int, key: str, *, kind: str = "award"
) -> LedgerEntry | None:
    async with db.transaction() as s:
        return await ledger.post(
            s,
            community_id=w.community,
            person_id=person,
            amount=amount,
            key=key,
            reason="测试",
            kind=kind,
            by=w.lead,
            now=NOW,
        )


async def _books(db: Database, w: World) -> tuple[dict[int, int], dict[int, int], int]:
    """Cached balances, balances summed from entries, and the community's whole-book sum."""
    async with db.transaction(write=False) as s:
        accounts = (
            await s.exec(select(PointAccount).where(PointAccount.community_id == w.community))
        ).all()
        cached = {a.person_id: a.balance for a in accounts}
        summed = {
            a.person_id: await ledger.ledger_sum(s, community_id=w.community, person_id=a.person_id)
            for a in accounts
        }
        total = (
            await s.exec(
                select(func.coalesce(func.sum(LedgerEntry.amount), 0)).where(
                    LedgerEntry.community_id == w.community
                )
            )
        ).one()
    return cached, summed, int(total)


async def test_a_credit_has_a_counter_entry_and_the_books_sum_to_zero(
    db: Database, world: World
) -> None:
    entry = await _post(db, world, world.residents[0], 7, "award:a:1")
    assert entry is not None and entry.id is not None and entry.amount == 7
    await _post(db, world, world.residents[1], 3, "award:a:2")
    await _post(db, world, world.residents[0], -2, "redeem:x:1", kind="redeem")
    cached, summed, total = await _books(db, world)
    assert cached == summed == {world.residents[0]: 5, world.residents[1]: 3}
    assert total == 0
    async with db.transaction(write=False) as s:
        community = await ledger.ledger_sum(s, community_id=world.community, person_id=None)
        legs = (await s.exec(select(LedgerEntry).where(LedgerEntry.key == "award:a:1"))).all()
    assert community == -8
    assert sorted((e.leg, e.person_id, e.amount) for e in legs) == [
        (0, world.residents[0], 7),
        (1, None, -7),
    ]


async def test_the_same_key_counts_once(db: Database, world: World) -> None:
    first = await _post(db, world, world.residents[0], 5, "task:41:attended:resident:7")
    again = await _post(db, world, world.residents[0], 5, "task:41:attended:resident:7")
    other_amount = await _post(db, world, world.residents[0], 50, "task:41:attended:resident:7")
    assert first is not None and again is None and other_amount is None
    async with db.transaction(write=False) as s:
        assert (
            await ledger.balance(s, community_id=world.community, person_id=world.residents[0]) == 5
        )
        found = await ledger.entry_by_key(s, "task:41:attended:resident:7")
    assert found is not None and found.id == first.id


async def test_a_debit_below_zero_is_refused_and_writes_nothing(db: Database, world: World) -> None:
    await _post(db, world, world.residents[0], 4, "award:b:1")
    with pytest.raises(InsufficientPoints) as refused:
        await _post(db, world, world.residents[0], -5, "redeem:b:1", kind="redeem")
    assert refused.value.key == "not_enough_points"
    assert refused.value.params == {"needed": 5, "balance": 4}
    assert await _post(db, world, world.residents[0], -4, "redeem:b:2", kind="redeem") is not None
    cached, summed, total = await _books(db, world)
    assert cached == summed == {world.residents[0]: 0} and total == 0


async def test_a_repeated_debit_says_nothing_even_when_the_balance_is_spent(
    db: Database, world: World
) -> None:
    await _post(db, world, world.residents[0], 10, "award:c:1")
    assert await _post(db, world, world.residents[0], -10, "redeem:c:1", kind="redeem")
    # The double tap of a redemption that went through is a repeat, not "not enough points".
    assert await _post(db, world, world.residents[0], -10, "redeem:c:1", kind="redeem") is None


@pytest.mark.parametrize("amount", [0, True])
async def test_zero_and_non_integers_are_not_amounts(
    db: Database, world: World, amount: int
) -> None:
    with pytest.raises(InvalidInput):
        await _post(db, world, world.residents[0], amount, "award:d:1")
    with pytest.raises(InvalidInput):
        await _post(db, world, world.residents[0], 2.5, "award:d:2")  # type: ignore[arg-type]


async def test_history_pages_back_newest_first(db: Database, world: World) -> None:
    for i in range(12):
        async with db.transaction() as s:
            await ledger.post(
                s, community_id=world.community, person_id=world.residents[0], amount=i + 1,
                key=f"award:h:{i}", reason=f"第{i}次", kind="award", by=None,
                now=NOW + timedelta(minutes=i // 2),  # pairs share a time: ids break the tie
            )  # fmt: skip
    async with db.transaction(write=False) as s:
        page = await ledger.history(
            s, community_id=world.community, person_id=world.residents[0], limit=5
        )
        rest = await ledger.history(
            s, community_id=world.community, person_id=world.residents[0],
            before_id=page[-1].id, limit=10,
        )  # fmt: skip
    assert [e.amount for e in page] == [12, 11, 10, 9, 8]
    assert [e.amount for e in rest] == [7, 6, 5, 4, 3, 2, 1]


async def test_cached_balance_always_equals_the_sum_of_entries(db: Database, world: World) -> None:
    rng = random.Random(4)
    for i in range(120):
        person = rng.choice(world.residents)
        amount = rng.choice([1, 2, 5, 10, -1, -3, -8])
        with contextlib.suppress(InsufficientPoints):
            await _post(db, world, person, amount, f"mix:{i % 90}", kind="award")
        cached, summed, total = await _books(db, world)
        assert cached == summed and total == 0
        assert all(value >= 0 for value in cached.values())
    async with db.transaction(write=False) as s:
        earned = {a.person_id: a.earned for a in (await s.exec(select(PointAccount))).all()}
        contributions = (
            await s.exec(
                select(LedgerEntry.person_id, func.sum(LedgerEntry.amount))
                .where(col(LedgerEntry.kind).in_(sorted(ledger.CONTRIBUTIONS)))
                .group_by(col(LedgerEntry.person_id))
            )
        ).all()
    assert earned == {p: int(n) for p, n in contributions if p is not None}


async def test_concurrent_double_submitted_debits_spend_exactly_the_balance(
    db: Database, world: World
) -> None:
    """200 debits, each sent two or three times at once, against balances covering only some."""
    start = {person: 30 + 10 * i for i, person in enumerate(world.residents)}
    for person, amount in start.items():
        await _post(db, world, person, amount, f"seed:{person}")
    rng = random.Random(7)
    debits = [(f"race:{i}", rng.choice(world.residents), rng.choice([3, 5, 7])) for i in range(200)]
    attempts = [d for d in debits for _ in range(rng.choice([2, 3]))]
    rng.shuffle(attempts)

    async def attempt(key: str, person: int, amount: int) -> str:
        try:
            entry = await _post(db, world, person, -amount, key, kind="redeem")
        except InsufficientPoints:
            return "refused"
        return "posted" if entry is not None else "repeat"

    outcomes = await asyncio.gather(*(attempt(*a) for a in attempts))
    posted = outcomes.count("posted")
    async with db.transaction(write=False) as s:
        rows = (
            await s.exec(
                select(LedgerEntry.key, func.count())
                .where(col(LedgerEntry.key).startswith("race:"), LedgerEntry.leg == 0)
                .group_by(col(LedgerEntry.key))
            )
        ).all()
    assert all(n == 1 for _, n in rows), "a key had a second effect"
    assert len(rows) == posted
    cached, summed, total = await _books(db, world)
    assert cached == summed and total == 0
    assert all(value >= 0 for value in cached.values())
    spent = {p: start[p] - cached[p] for p in start}
    by_person: dict[int, int] = {}
    for key, person, amount in debits:
        if key in {k for k, _ in rows}:
            by_person[person] = by_person.get(person, 0) + amount
    assert spent == {p: by_person.get(p, 0) for p in start}
    # Balances only fall, so a refused debit means the final balance is below its amount.
    done = {k for k, _ in rows}
    refused = [(p, a) for k, p, a in debits if k not in done]
    assert refused, "the balances should not have covered every debit"
    assert all(cached[p] < a for p, a in refused)


# --- rules, welcome credits, awards -------------------------------------------------------

BOSS = people.Authority(person_id=1, superadmin=True)


async def test_rules_start_as_defaults_and_admins_change_them(db: Database, world: World) -> None:
    async with db.transaction(write=False) as s:
        defaults = await points.rules(s, community_id=world.community, now=NOW)
    assert {r.code: r.points for r in defaults}["welcome"] == 5
    assert {"garbage", "patrol", "task", "task_hour", "report"} <= {r.code for r in defaults}
    lead = people.Authority(person_id=22)
    async with db.transaction() as s:
        with pytest.raises(NotAllowed):
            await points.edit_rule(
                s, auth=lead, community_id=world.community, code="garbage", now=NOW, points=9
            )
        with pytest.raises(InvalidInput):
            await points.edit_rule(
                s, auth=BOSS, community_id=world.community, code="garbage", now=NOW, points="0"
            )
    async with db.transaction() as s:
        await points.edit_rule(
            s, auth=BOSS, community_id=world.community, code="garbage", now=NOW, points="７"
        )
        await points.edit_rule(
            s, auth=BOSS, community_id=world.community, code="welcome", now=NOW, active=False
        )
        custom = await points.add_rule(
            s, auth=BOSS, community_id=world.community, name=" 清理 楼道 ", now=NOW
        )
        with pytest.raises(Conflict):
            await points.add_rule(
                s, auth=BOSS, community_id=world.community, name="清理 楼道", now=NOW
            )
    async with db.transaction(write=False) as s:
        found = {r.code: r for r in await points.rules(s, community_id=world.community, now=NOW)}
    assert found["garbage"].points == 7 and not found["welcome"].active
    assert found[custom.code].name_zh == "清理 楼道" and found[custom.code].points == 1
    async with db.transaction() as s:
        assert await points.welcome(s, community_id=world.community, person_id=21, now=NOW) is None


async def test_welcome_credit_is_given_once(db: Database, world: World) -> None:
    for _ in range(2):
        async with db.transaction() as s:
            await points.welcome(s, community_id=world.community, person_id=21, now=NOW)
    async with db.transaction(write=False) as s:
        assert await ledger.balance(s, community_id=world.community, person_id=21) == 5
        (entry,) = await ledger.history(s, community_id=world.community, person_id=21)
    assert (entry.kind, entry.rule_code, entry.key) == (
        "welcome",
        "welcome",
        f"welcome:{world.community}:21",
    )


async def test_earn_multiplies_a_rule_by_hours(db: Database, world: World) -> None:
    async with db.transaction() as s:
        entry = await points.earn(
            s, community_id=world.community, person_id=21, rule_code="task_hour",
            key="task:41:attended:resident:21", by=None, now=NOW, units=3,
        )  # fmt: skip
    assert entry is not None and entry.amount == 15 and entry.kind == "task"


async def _award(
    db: Database, world: World, who: list[int], amount: int | str, *, kind: str = "award"
) -> int:
    lead = people.Authority(person_id=1, superadmin=True)
    async with db.transaction() as s:
        draft = await points.start_draft(
            s, auth=lead, unit_id=world.buildings[0], kind=kind, now=NOW, person_ids=who
        )
        assert draft.id is not None
        await points.set_amount(s, auth=lead, draft_id=draft.id, amount=amount, now=NOW)
        await points.set_reason(s, auth=lead, draft_id=draft.id, text="帮忙 搬 桌子", now=NOW)
        return draft.id


async def test_a_confirmed_award_posts_once_and_notifies_each_person(
    db: Database, world: World
) -> None:
    draft_id = await _award(db, world, [21, 22], 4)
    for expected in (True, False):
        async with db.transaction() as s:
            _draft, posted, changed = await points.confirm_draft(
                s, auth=BOSS, draft_id=draft_id, now=NOW
            )
        assert changed is expected and len(posted) == (2 if expected else 0)
    async with db.transaction(write=False) as s:
        notices = (await s.exec(select(Delivery).order_by(col(Delivery.id)))).all()
        entries = (await s.exec(select(LedgerEntry).where(LedgerEntry.leg == 0))).all()
    assert sorted(e.key for e in entries) == [f"award:{draft_id}:21", f"award:{draft_id}:22"]
    assert [n.key for n in notices] == [f"award:{e.id}" for e in entries]
    assert notices[0].context["reason"] == "帮忙 搬 桌子" and notices[0].context["balance"] == 4


async def test_an_award_over_the_communitys_maximum_is_refused(db: Database, world: World) -> None:
    with pytest.raises(InvalidInput) as refused:
        await _award(db, world, [21], 101)
    assert refused.value.params == {"low": 1, "high": 100}
    async with db.transaction() as s:
        await points.set_max_award(s, auth=BOSS, community_id=world.community, value=200, now=NOW)
    assert await _award(db, world, [21], "150")


async def test_residents_outside_the_unit_cannot_be_picked(db: Database, world: World) -> None:
    # 24 lives in 5号楼; the draft is for 3号楼.
    with pytest.raises(NotAllowed):
        await _award(db, world, [24], 3)


async def test_a_lead_cannot_award_themselves(db: Database, world: World) -> None:
    async with db.transaction() as s:
        await people.grant_role(
            s, auth=BOSS, unit_id=world.buildings[0], person_id=21, kind="lead", now=NOW
        )
    async with db.transaction() as s:
        lead = await people.authority(s, person_id=21, superadmin=False)
        with pytest.raises(NotAllowed) as refused:
            await points.start_draft(
                s, auth=lead, unit_id=world.buildings[0], kind="award", now=NOW, person_ids=[21]
            )
    assert refused.value.key == "points_own_award"


# --- corrections (issue 8 item 14) ---------------------------------------------------------


async def _role(db: Database, person: int, unit: int, kind: str) -> people.Authority:
    async with db.transaction() as s:
        await people.grant_role(s, auth=BOSS, unit_id=unit, person_id=person, kind=kind, now=NOW)
        return await people.authority(s, person_id=person, superadmin=False)


async def _correct(
    db: Database, w: World, auth: people.Authority, person: int, amount: int, key: str
) -> LedgerEntry | None:
    async with db.transaction() as s:
        return await ledger.post(
            s, auth=auth, community_id=w.community, person_id=person, amount=amount, key=key,
            reason="多发了", kind=ledger.Kind.correct, by=auth.person_id, now=NOW,
        )  # fmt: skip


async def test_an_admins_correction_may_take_a_balance_below_zero(
    db: Database, world: World
) -> None:
    resident = world.residents[0]
    admin = await _role(db, 1, world.buildings[0], "admin")  # a top-level unit: community admin
    await _post(db, world, resident, 10, "award:c:1")
    await _post(db, world, resident, -8, "redeem:c:1", kind="redeem")  # the over-award spent
    entry = await _correct(db, world, admin, resident, -6, "fix:1")
    assert entry is not None and entry.kind == ledger.Kind.correct and entry.by == 1
    assert await _correct(db, world, admin, resident, -6, "fix:1") is None  # once per key
    cached, summed, total = await _books(db, world)
    assert cached == summed == {resident: -4} and total == 0
    # Ordinary debits still may not go below zero (nor further below it); credits may come in.
    with pytest.raises(InsufficientPoints):
        await _post(db, world, resident, -1, "deduct:c:1", kind="deduct")
    with pytest.raises(InsufficientPoints):
        await _post(db, world, resident, -1, "redeem:c:2", kind="redeem")
    assert await _post(db, world, resident, 3, "award:c:2") is not None
    async with db.transaction(write=False) as s:
        assert await ledger.balance(s, community_id=world.community, person_id=resident) == -1
        account = (
            await s.exec(select(PointAccount).where(PointAccount.person_id == resident))
        ).one()
    assert account.earned == 10 - 6 + 3  # a correction undoes honour, too


async def test_a_correction_needs_a_reason(db: Database, world: World) -> None:
    admin = await _role(db, 1, world.buildings[0], "admin")
    with pytest.raises(InvalidInput) as refused:
        async with db.transaction() as s:
            await ledger.post(
                s, auth=admin, community_id=world.community, person_id=world.residents[0],
                amount=-1, key="fix:r:1", reason=" ", kind=ledger.Kind.correct, by=1, now=NOW,
            )  # fmt: skip
    assert refused.value.key == "points_reason_required"
    assert await _books(db, world) == ({}, {}, 0)


async def test_only_a_community_admin_may_correct(db: Database, world: World) -> None:
    resident = world.residents[0]
    await _post(db, world, resident, 2, "award:n:1")
    lead = await _role(db, 21, world.buildings[0], "lead")
    with pytest.raises(NotAllowed) as refused:
        await _correct(db, world, lead, resident, -5, "fix:n:1")
    assert refused.value.key == "points_corrections_admins_only"
    with pytest.raises(NotAllowed) as refused:  # no way round it without an admin's auth
        async with db.transaction() as s:
            await ledger.post(
                s, community_id=world.community, person_id=resident, amount=-5, key="fix:n:2",
                reason="x", kind=ledger.Kind.correct, by=21, now=NOW,
            )  # fmt: skip
    assert refused.value.key == "points_corrections_admins_only"
    async with db.transaction() as s:
        with pytest.raises(NotAllowed) as refused:
            await points.start_draft(
                s, auth=lead, unit_id=world.buildings[0], kind="correct", now=NOW,
                person_ids=[22],
            )  # fmt: skip
    assert refused.value.key == "points_corrections_admins_only"
    cached, _summed, _total = await _books(db, world)
    assert cached == {resident: 2}


async def test_a_correction_draft_overdraws_and_tells_the_resident(
    db: Database, world: World
) -> None:
    admin = await _role(db, 1, world.buildings[0], "admin")
    await _post(db, world, 22, 3, "award:d:1")
    async with db.transaction() as s:
        draft = await points.start_draft(
            s, auth=admin, unit_id=world.buildings[0], kind="correct", now=NOW, person_ids=[22]
        )
        assert draft.id is not None
        await points.set_amount(s, auth=admin, draft_id=draft.id, amount=5, now=NOW)
        await points.set_reason(s, auth=admin, draft_id=draft.id, text="重复发放", now=NOW)
    # The admin loses the role before confirming: the correction is refused, nothing written.
    async with db.transaction() as s:
        lead = people.Authority(
            person_id=1, roles=((await people.get_unit(s, world.buildings[0]), "lead"),)
        )
        with pytest.raises(NotAllowed):
            await points.confirm_draft(s, auth=lead, draft_id=draft.id, now=NOW)
    async with db.transaction() as s:
        _draft, posted, changed = await points.confirm_draft(
            s, auth=admin, draft_id=draft.id, now=NOW
        )
    assert changed and [(p.entry.amount, p.balance) for p in posted] == [(-5, -2)]
    async with db.transaction(write=False) as s:
        (notice,) = (await s.exec(select(Delivery))).all()
    assert notice.template == "points/corrected" and notice.person_id == 22
    assert notice.context["balance"] == -2 and notice.context["amount"] == 5


# --- what residents see ---------------------------------------------------------------------


async def test_summary_has_household_total_and_monthly_rank(db: Database, world: World) -> None:
    async with db.transaction() as s:
        # 21 and 22 share no household; make 27 join 21's household to test the total.
        await people.touch_person(
            s, person_id=27, name="P27", username=None, language_code="zh", now=NOW
        )
        await people.request_join(
            s, person_id=27, household_id=world.households[0], now=NOW, verified_by_code=True
        )
    await _post(db, world, 21, 6, "s:1")
    await _post(db, world, 27, 4, "s:2", kind="welcome")
    await _post(db, world, 22, 9, "s:3")
    await _post(db, world, 23, 2, "s:4")
    async with db.transaction(write=False) as s:
        (membership,) = await standings.verified_memberships(s, person_id=21)
        summary = await standings.summary(s, membership=membership, now=NOW)
    assert (summary.balance, summary.household_balance, summary.household_people) == (6, 10, 2)
    assert (summary.rank, summary.ranked, summary.month_points) == (2, 3, 6)


async def test_board_hides_who_asked_and_counts_only_contributions(
    db: Database, world: World
) -> None:
    await _post(db, world, 21, 6, "b:1")
    await _post(db, world, 22, 9, "b:2")
    await _post(db, world, 23, 50, "b:3", kind="welcome")
    async with db.transaction() as s:
        await standings.set_hidden(
            s, community_id=world.community, person_id=22, hidden=True, now=NOW
        )
        unit = await people.get_unit(s, world.buildings[0])
        monthly = await standings.board(s, unit=unit, now=NOW, monthly=True)
        ever = await standings.board(s, unit=unit, now=NOW, monthly=False)
        later = await standings.board(s, unit=unit, now=NOW + timedelta(days=15), monthly=True)
    assert [(line.person.id, line.points) for line in monthly] == [(21, 6)]
    assert [(line.person.id, line.points) for line in ever] == [(21, 6)]
    assert later == []


def test_periods_follow_the_communitys_calendar() -> None:
    # NOW is 2026-11-20 10:00 in Shanghai; 2026-12-31 20:00 UTC is already 2027 there.
    start, end = standings.month_bounds(NOW, "Asia/Shanghai", back=11)
    assert (start.isoformat(), end.isoformat()) == (
        "2025-12-01T00:00:00+08:00",
        "2026-01-01T00:00:00+08:00",
    )
    new_year = NOW.replace(month=12, day=31, hour=20)
    year_start, _ = standings.period("y", new_year, "Asia/Shanghai")
    assert year_start is not None and year_start.year == 2027
    assert standings.period("a", NOW, "UTC") == (None, None)
    first, last = standings.parse_range("2026-10-01 ~ 2026-10-31", "Asia/Shanghai")
    assert (last - first).days == 31
    for bad in ("2026-10-31 2026-10-01", "yesterday", "2026-10-01"):
        with pytest.raises(InvalidInput):
            standings.parse_range(bad, "Asia/Shanghai")


async def test_monthly_statement_goes_to_each_lead_once_on_the_first(
    db: Database, world: World
) -> None:
    async with db.transaction() as s:
        await people.grant_role(
            s, auth=BOSS, unit_id=world.buildings[0], person_id=25, kind="lead", now=NOW
        )
        await people.grant_role(
            s, auth=BOSS, unit_id=world.buildings[0], person_id=26, kind="lead", now=NOW
        )
    await _post(db, world, 21, 6, "m:1")
    await _post(db, world, 22, 9, "m:2")
    await _post(db, world, 22, -4, "m:3", kind="redeem")
    await _post(db, world, 24, 8, "m:4")  # 5号楼: not in 3号楼's figures
    first = NOW.replace(month=12, day=1)  # 10:00 on 1 December in Shanghai
    async with db.transaction() as s:
        assert await standings.monthly_statements(s, NOW) == 0  # not the 1st
        assert await standings.monthly_statements(s, first) == 2
        assert await standings.monthly_statements(s, first + timedelta(hours=1)) == 0
        rows = (await s.exec(select(Delivery).order_by(col(Delivery.id)))).all()
    b3 = world.buildings[0]
    assert [r.key for r in rows] == [f"statement:2026-11:{b3}:25", f"statement:2026-11:{b3}:26"]
    assert rows[0].context["issued"] == 15 and rows[0].context["redeemed"] == 4
    assert [t["name"] for t in rows[0].context["top"]] == ["P22", "P21"]


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_the_notices_render_in_both_languages(lang: str) -> None:
    renderer = Renderer()
    award = {"amount": 5, "reason": "垃圾分类", "rule_zh": "垃圾分类", "rule_en": "Garbage sorting",
             "balance": 12, "community": "幸福里", "by": "张网格长"}  # fmt: skip
    assert "12" in renderer.render(lang, "points/awarded", **award)
    assert "12" in renderer.render(lang, "points/deducted", **award)
    corrected = renderer.render(lang, "points/corrected", **{**award, "balance": -3})
    assert "<b>-3</b>" in corrected and (
        "更正" in corrected if lang == "zh" else "correct" in corrected
    )
    assert ("低于零" in corrected) if lang == "zh" else ("below zero" in corrected)
    statement = {"month": "2026-11", "unit": "3号楼", "community": "幸福里", "issued": 15,
                 "redeemed": 4, "top": [{"name": "王阿姨", "points": 9}]}  # fmt: skip
    assert "王阿姨" in renderer.render(lang, "points/statement", **statement)
