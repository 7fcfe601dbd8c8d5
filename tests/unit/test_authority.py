"""The one authority API (models.people.Authority.may): every edge of who may do what."""

from __future__ import annotations

import pytest

from bot.db import Database
from models import people, points
from models.errors import NotAllowed
from models.people import Authority, Can, Role
from tests.conftest import NOW
from tests.world import BOSS, LEAD, OTHER_LEAD, WANG, World, world

B3_ADMIN, GRID_ADMIN, B3_LEAD, CO_LEAD = 40, 41, 42, 43


async def _roles(db: Database) -> World:
    cast = {
        pid: (name, "zh-hans")
        for pid, name in (
            (LEAD, "张网格长"),
            (OTHER_LEAD, "刘组长"),
            (WANG, "王阿姨"),
            (B3_ADMIN, "3号楼管理员"),
            (GRID_ADMIN, "网格管理员"),
            (B3_LEAD, "3号楼楼长"),
            (CO_LEAD, "副网格长"),
        )
    }
    w = await world(db, cast=cast, homes={WANG: "3-2-501"}, chats={})
    async with db.transaction() as s:
        for pid, unit, kind in (
            (B3_ADMIN, w.b3, "admin"),
            (GRID_ADMIN, w.grid1, "admin"),
            (B3_LEAD, w.b3, "lead"),
            (CO_LEAD, w.grid1, "lead"),
        ):
            await people.grant_role(s, auth=BOSS, unit_id=unit, person_id=pid, kind=kind, now=NOW)
    return w


async def _auth(db: Database, pid: int) -> Authority:
    async with db.transaction(write=False) as s:
        return await people.authority(s, person_id=pid, superadmin=False)


async def _unit(db: Database, unit_id: int) -> people.Unit:
    async with db.transaction(write=False) as s:
        return await people.get_unit(s, unit_id)


async def test_a_lead_leads_their_unit_and_everything_below_it_only(db: Database) -> None:
    w = await _roles(db)
    lead, b3_lead = await _auth(db, LEAD), await _auth(db, B3_LEAD)
    grid1, b3, b5, b9 = [await _unit(db, u) for u in (w.grid1, w.b3, w.b5, w.b9)]
    assert all(lead.may(Can.lead, unit=u) for u in (grid1, b3, b5))
    assert not lead.may(Can.lead, unit=b9)
    assert b3_lead.may(Can.lead, unit=b3) and not b3_lead.may(Can.lead, unit=grid1)
    assert not b3_lead.may(Can.lead, unit=b5)
    assert not lead.may(Can.admin, unit=b3)  # a lead is not an admin
    resident = await _auth(db, WANG)
    assert not resident.may(Can.lead, unit=b3) and not resident.is_lead


async def test_community_admin_is_an_admin_role_on_a_top_level_unit_or_a_superadmin(
    db: Database,
) -> None:
    w = await _roles(db)
    b3_admin, grid_admin, lead = [await _auth(db, p) for p in (B3_ADMIN, GRID_ADMIN, LEAD)]
    # An admin of one building administers that building, not the community.
    assert b3_admin.may(Can.admin, unit=await _unit(db, w.b3))
    assert not b3_admin.may(Can.admin_community, community_id=w.community)
    assert not b3_admin.is_admin
    assert grid_admin.may(Can.admin_community, community_id=w.community) and grid_admin.is_admin
    assert not grid_admin.may(Can.admin_community, community_id=w.community + 1)
    assert not lead.may(Can.admin_community, community_id=w.community)
    assert BOSS.may(Can.admin_community, community_id=w.community + 99)
    # The same definition guards the earning rules, the books and new top-level units.
    async with db.transaction() as s:
        community = await people.get_community(s, w.community)
        with pytest.raises(NotAllowed):
            points.require_admin(b3_admin, community)
        with pytest.raises(NotAllowed):
            await people.add_unit(
                s, auth=b3_admin, community_id=w.community, parent_id=None, kind="grid",
                name="三网格", now=NOW,
            )  # fmt: skip
        points.require_admin(grid_admin, community)


async def test_running_the_community_needs_a_role_on_a_top_level_unit(db: Database) -> None:
    w = await _roles(db)
    lead, b3_admin = await _auth(db, LEAD), await _auth(db, B3_ADMIN)
    assert lead.may(Can.run_community, community_id=w.community)
    assert not b3_admin.may(Can.run_community, community_id=w.community)
    assert not lead.may(Can.run_community, community_id=w.community + 1)


async def test_a_merchant_hands_over_only_their_own_rewards(db: Database) -> None:
    w = await _roles(db)
    wang, b3_lead, lead = [await _auth(db, p) for p in (WANG, B3_LEAD, LEAD)]
    assert wang.may(Can.hand_over, community_id=w.community, merchant_id=WANG)
    assert not wang.may(Can.hand_over, community_id=w.community, merchant_id=B3_LEAD)
    assert not wang.may(Can.hand_over, community_id=w.community, merchant_id=None)
    assert not b3_lead.may(Can.hand_over, community_id=w.community, merchant_id=WANG)
    assert lead.may(Can.hand_over, community_id=w.community, merchant_id=WANG)


async def test_removing_a_role_needs_a_role_above_it_of_its_kind(db: Database) -> None:
    w = await _roles(db)
    lead, co_lead, b3_lead, grid_admin = [
        await _auth(db, p) for p in (LEAD, CO_LEAD, B3_LEAD, GRID_ADMIN)
    ]
    grid1, b3 = await _unit(db, w.grid1), await _unit(db, w.b3)

    def role(pid: int, unit: people.Unit, kind: str = "lead") -> Role:
        return Role(person_id=pid, unit_id=unit.id or 0, kind=kind, created_at=NOW)

    assert co_lead.may_remove(role(CO_LEAD, grid1), grid1)  # stepping down
    assert not co_lead.may_remove(role(LEAD, grid1), grid1)  # co-leads of one unit
    assert lead.may_remove(role(B3_LEAD, b3), b3)  # from the unit above
    assert not b3_lead.may_remove(role(LEAD, grid1), grid1)  # from below
    assert not lead.may_remove(role(B3_ADMIN, b3, "admin"), b3)  # a lead removes no admin
    assert grid_admin.may_remove(role(B3_ADMIN, b3, "admin"), b3)
    assert BOSS.may_remove(role(LEAD, grid1), grid1)
