"""Deciding join requests from a lead's buttons, and which households' codes a lead may print."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from bot.db import Database
from models import people
from models.errors import Conflict, NotAllowed, NotFound
from tests.conftest import NOW

BOSS = people.Authority(person_id=0, superadmin=True)


@dataclass
class Ids:
    grid: int
    b3: int
    b5: int
    h501: int
    h502: int
    h5: int
    elsewhere: int


async def _tree(db: Database) -> Ids:
    """幸福里 › 一网格 › 3号楼 (501, 502) and 5号楼 (101); 绿园 › 1号楼 (101).
    Person 1 leads 3号楼, 2 leads 5号楼, 3 leads the grid, 4 asks to join, 5 has no role."""
    async with db.transaction() as s:
        c = await people.create_community(
            s, name="幸福里", timezone="Asia/Shanghai", language="zh", now=NOW
        )
        other = await people.create_community(
            s, name="绿园", timezone="Asia/Shanghai", language="zh", now=NOW
        )
        assert c.id is not None and other.id is not None
        grid = await people.create_unit(
            s, community_id=c.id, parent_id=None, kind="grid", name="一网格", now=NOW
        )
        b3 = await people.create_unit(
            s, community_id=c.id, parent_id=grid.id, kind="building", name="3号楼", now=NOW
        )
        b5 = await people.create_unit(
            s, community_id=c.id, parent_id=grid.id, kind="building", name="5号楼", now=NOW
        )
        b1 = await people.create_unit(
            s, community_id=other.id, parent_id=None, kind="building", name="1号楼", now=NOW
        )
        assert grid.id and b3.id and b5.id and b1.id
        h501 = await people.add_household(s, unit_id=b3.id, flat="501", area_centi_m2=None, now=NOW)
        h502 = await people.add_household(s, unit_id=b3.id, flat="502", area_centi_m2=None, now=NOW)
        h5 = await people.add_household(s, unit_id=b5.id, flat="101", area_centi_m2=None, now=NOW)
        h1 = await people.add_household(s, unit_id=b1.id, flat="101", area_centi_m2=None, now=NOW)
        for pid in (1, 2, 3, 4, 5):
            await people.touch_person(
                s, person_id=pid, name=f"P{pid}", username=None, language_code="zh", now=NOW
            )
        for pid, unit in ((1, b3.id), (2, b5.id), (3, grid.id)):
            await people.grant_role(s, auth=BOSS, unit_id=unit, person_id=pid, kind="lead", now=NOW)
    return Ids(grid.id, b3.id, b5.id, h501.id or 0, h502.id or 0, h5.id or 0, h1.id or 0)


async def _ask(db: Database, household_id: int) -> int:
    async with db.transaction() as s:
        resident, _ = await people.request_join(s, person_id=4, household_id=household_id, now=NOW)
    assert resident.id is not None
    return resident.id


async def _auth(db: Database, person_id: int) -> people.Authority:
    async with db.transaction(write=False) as s:
        return await people.authority(s, person_id=person_id, superadmin=False)


async def test_a_pending_request_is_decided_once_and_remembers_who(db: Database) -> None:
    ids = await _tree(db)
    rid = await _ask(db, ids.h501)
    lead, grid_lead = await _auth(db, 1), await _auth(db, 3)
    async with db.transaction() as s:
        m, changed = await people.decide_pending_join(
            s, auth=lead, resident_id=rid, household_id=ids.h501, approve=True, now=NOW
        )
    assert changed and m.resident.status == "verified" and m.resident.decided_by == 1
    async with db.transaction() as s:
        again, changed = await people.decide_pending_join(
            s, auth=grid_lead, resident_id=rid, household_id=ids.h501, approve=False, now=NOW
        )
    assert not changed
    assert again.resident.status == "verified" and again.resident.decided_by == 1


async def test_rejection_is_recorded(db: Database) -> None:
    ids = await _tree(db)
    rid = await _ask(db, ids.h501)
    async with db.transaction() as s:
        m, changed = await people.decide_pending_join(
            s, auth=await _auth(db, 3), resident_id=rid, household_id=ids.h501, approve=False,
            now=NOW,
        )  # fmt: skip
    assert changed and m.resident.status == "rejected" and m.resident.decided_by == 3


async def test_only_a_lead_covering_the_flat_may_decide(db: Database) -> None:
    ids = await _tree(db)
    rid = await _ask(db, ids.h501)
    for outsider in (2, 4, 5):  # another building's lead, the requester, someone with no role
        with pytest.raises(NotAllowed):
            async with db.transaction() as s:
                await people.decide_pending_join(
                    s, auth=await _auth(db, outsider), resident_id=rid, household_id=ids.h501,
                    approve=True, now=NOW,
                )  # fmt: skip
    async with db.transaction(write=False) as s:
        m = await people.get_membership(s, rid)
    assert m.resident.status == "pending" and m.resident.decided_by is None


async def test_buttons_for_a_replaced_request_no_longer_apply(db: Database) -> None:
    ids = await _tree(db)
    rid = await _ask(db, ids.h501)
    assert await _ask(db, ids.h502) == rid  # one membership per community: it moved
    with pytest.raises(Conflict) as raised:
        async with db.transaction() as s:
            await people.decide_pending_join(
                s, auth=await _auth(db, 1), resident_id=rid, household_id=ids.h501,
                approve=True, now=NOW,
            )  # fmt: skip
    assert raised.value.key == "join_replaced"
    async with db.transaction(write=False) as s:
        m = await people.get_membership(s, rid)
    assert m.resident.status == "pending" and m.household.id == ids.h502


async def test_an_unknown_request_is_not_found(db: Database) -> None:
    ids = await _tree(db)
    with pytest.raises(NotFound):
        async with db.transaction() as s:
            await people.decide_pending_join(
                s, auth=BOSS, resident_id=9999, household_id=ids.h501, approve=True, now=NOW
            )


async def _covered(db: Database, auth: people.Authority) -> list[tuple[str, str]]:
    async with db.transaction(write=False) as s:
        found = await people.households_covered(s, auth=auth)
    return [(building.name, household.flat) for household, building in found]


async def test_households_covered_follow_the_leads_units(db: Database) -> None:
    await _tree(db)
    assert await _covered(db, await _auth(db, 1)) == [("3号楼", "501"), ("3号楼", "502")]
    assert await _covered(db, await _auth(db, 2)) == [("5号楼", "101")]
    assert await _covered(db, await _auth(db, 3)) == [
        ("3号楼", "501"),
        ("3号楼", "502"),
        ("5号楼", "101"),
    ]
    assert await _covered(db, await _auth(db, 5)) == []
    everything = await _covered(db, BOSS)
    assert len(everything) == 4 and ("1号楼", "101") in everything


async def test_households_covered_by_two_separate_roles(db: Database) -> None:
    ids = await _tree(db)
    async with db.transaction() as s:
        await people.grant_role(s, auth=BOSS, unit_id=ids.b5, person_id=1, kind="lead", now=NOW)
    assert await _covered(db, await _auth(db, 1)) == [
        ("3号楼", "501"),
        ("3号楼", "502"),
        ("5号楼", "101"),
    ]
