"""Residents, units, roles and chat links against a real database."""

from __future__ import annotations

import pytest

from bot.db import Database
from models import people
from models.errors import Conflict, InvalidInput, NotAllowed
from tests.conftest import NOW


async def _tree(db: Database) -> dict[str, int]:
    async with db.transaction() as s:
        c = await people.create_community(
            s, name="幸福里", timezone="Asia/Shanghai", language="zh", now=NOW
        )
        assert c.id is not None
        grid = await people.create_unit(
            s, community_id=c.id, parent_id=None, kind="grid", name="一网格", now=NOW
        )
        b3 = await people.create_unit(
            s, community_id=c.id, parent_id=grid.id, kind="building", name="3号楼", now=NOW
        )
        b5 = await people.create_unit(
            s, community_id=c.id, parent_id=grid.id, kind="building", name="5号楼", now=NOW
        )
        h = await people.add_household(
            s, unit_id=b3.id or 0, flat="3-2-501", area_centi_m2=8950, now=NOW
        )
        for pid, name in ((1, "Lead"), (2, "Resident"), (3, "Other")):
            await people.touch_person(
                s, person_id=pid, name=name, username=None, language_code="zh-hans", now=NOW
            )
        return {
            "community": c.id,
            "grid": grid.id or 0,
            "b3": b3.id or 0,
            "b5": b5.id or 0,
            "household": h.id or 0,
        }


async def test_subtree_paths_follow_the_tree(db: Database) -> None:
    ids = await _tree(db)
    async with db.transaction(write=False) as s:
        grid = await people.get_unit(s, ids["grid"])
        names = [u.name for u in await people.subtree(s, grid)]
        b3 = await people.get_unit(s, ids["b3"])
        assert names == ["一网格", "3号楼", "5号楼"]
        assert b3.lineage == [ids["grid"], ids["b3"]]


async def test_lead_of_grid_covers_its_buildings_but_not_others(db: Database) -> None:
    ids = await _tree(db)
    boss = people.Authority(person_id=0, superadmin=True)
    async with db.transaction() as s:
        await people.grant_role(s, auth=boss, unit_id=ids["b5"], person_id=1, kind="lead", now=NOW)
    async with db.transaction() as s:
        auth = await people.authority(s, person_id=1, superadmin=False)
        assert auth.covers(await people.get_unit(s, ids["b5"]))
        assert not auth.covers(await people.get_unit(s, ids["b3"]))
        with pytest.raises(NotAllowed):
            await people.grant_role(
                s, auth=auth, unit_id=ids["b3"], person_id=2, kind="lead", now=NOW
            )
        with pytest.raises(NotAllowed):
            await people.grant_role(
                s, auth=auth, unit_id=ids["b5"], person_id=2, kind="admin", now=NOW
            )


async def test_join_request_is_decided_once(db: Database) -> None:
    ids = await _tree(db)
    async with db.transaction() as s:
        resident, changed = await people.request_join(
            s, person_id=2, household_id=ids["household"], now=NOW
        )
        again, changed_again = await people.request_join(
            s, person_id=2, household_id=ids["household"], now=NOW
        )
        assert changed and not changed_again and again.id == resident.id
    boss = people.Authority(person_id=1, superadmin=True)
    async with db.transaction() as s:
        await people.decide_join(s, auth=boss, resident_id=resident.id or 0, approve=True, now=NOW)
    async with db.transaction() as s:
        with pytest.raises(Conflict):
            await people.decide_join(
                s, auth=boss, resident_id=resident.id or 0, approve=False, now=NOW
            )
    async with db.transaction(write=False) as s:
        (m,) = await people.memberships(s, person_id=2)
        assert m.resident.status == "verified" and m.household.flat == "3-2-501"


async def test_migrated_group_keeps_its_links(db: Database) -> None:
    ids = await _tree(db)
    async with db.transaction() as s:
        await people.record_chat(
            s,
            chat_id=-100,
            type="group",
            title="3号楼",
            is_forum=False,
            bot_status="member",
            now=NOW,
        )
        await people.link_chat(
            s, chat_id=-100, thread_id=0, unit_id=ids["b3"], title="3号楼", by=1, now=NOW
        )
    for _ in range(2):  # Telegram reports it from both sides
        async with db.transaction() as s:
            await people.migrate_chat(s, old_chat_id=-100, new_chat_id=-1001, now=NOW)
    async with db.transaction(write=False) as s:
        assert await people.link_for(s, chat_id=-100, thread_id=None) is None
        link = await people.link_for(s, chat_id=-1001, thread_id=7)
        assert link is not None and link.unit_id == ids["b3"]


def test_area_is_exact_hundredths() -> None:
    assert people.parse_area("89.5") == 8950
    assert people.parse_area(" 120 ") == 12000
    assert people.parse_area("") is None
    for bad in ("-3", "0", "12.345", "abc", "NaN"):
        with pytest.raises(InvalidInput):
            people.parse_area(bad)


async def test_a_lead_cannot_approve_their_own_request(db: Database) -> None:
    ids = await _tree(db)
    boss = people.Authority(person_id=0, superadmin=True)
    async with db.transaction() as s:
        await people.grant_role(s, auth=boss, unit_id=ids["b3"], person_id=1, kind="lead", now=NOW)
        resident, _ = await people.request_join(
            s, person_id=1, household_id=ids["household"], now=NOW
        )
    async with db.transaction() as s:
        auth = await people.authority(s, person_id=1, superadmin=False)
        with pytest.raises(NotAllowed):
            await people.decide_join(
                s, auth=auth, resident_id=resident.id or 0, approve=True, now=NOW
            )
    async with db.transaction(write=False) as s:
        (m,) = await people.memberships(s, person_id=1)
        assert m.resident.status == "pending"
