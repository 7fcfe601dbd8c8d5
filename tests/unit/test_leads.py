"""The model operations behind /appoint and /leads, against a real database."""

from __future__ import annotations

import pytest

from bot.db import Database
from models import people
from models.errors import NotFound
from tests.conftest import NOW

BOSS = people.Authority(person_id=0, superadmin=True)


async def _tree(db: Database) -> dict[str, int]:
    """Two communities; 幸福里 has 一网格 (3号楼 with 1单元, 5号楼) and 二网格."""
    async with db.transaction() as s:
        ids: dict[str, int] = {}
        for key, name in (("c1", "幸福里"), ("c2", "和平里")):
            c = await people.create_community(
                s, name=name, timezone="Asia/Shanghai", language="zh", now=NOW
            )
            ids[key] = c.id or 0

        async def unit(key: str, community: str, parent: str | None, kind: str, name: str) -> None:
            u = await people.create_unit(
                s,
                community_id=ids[community],
                parent_id=ids[parent] if parent else None,
                kind=kind,
                name=name,
                now=NOW,
            )
            ids[key] = u.id or 0

        await unit("grid1", "c1", None, "grid", "一网格")
        await unit("b3", "c1", "grid1", "building", "3号楼")
        await unit("e1", "c1", "b3", "entrance", "1单元")
        await unit("b5", "c1", "grid1", "building", "5号楼")
        await unit("grid2", "c1", None, "grid", "二网格")
        await unit("estate", "c2", None, "estate", "和平里小区")
        for pid, name in ((1, "甲"), (2, "乙"), (3, "丙")):
            await people.touch_person(
                s, person_id=pid, name=name, username=None, language_code="zh-hans", now=NOW
            )
        return ids


async def test_root_units_are_every_communitys_top_units(db: Database) -> None:
    ids = await _tree(db)
    async with db.transaction(write=False) as s:
        roots = await people.root_units(s)
    assert [u.id for u in roots] == [ids["grid1"], ids["grid2"], ids["estate"]]


async def test_units_with_children_picks_out_the_ones_that_open(db: Database) -> None:
    ids = await _tree(db)
    async with db.transaction(write=False) as s:
        found = await people.units_with_children(
            s, [ids["grid1"], ids["b3"], ids["e1"], ids["b5"], ids["grid2"]]
        )
        assert await people.units_with_children(s, []) == set()
    assert found == {ids["grid1"], ids["b3"]}


async def test_role_with_unit_finds_the_role_until_it_is_revoked(db: Database) -> None:
    ids = await _tree(db)
    async with db.transaction() as s:
        role, _ = await people.grant_role(
            s, auth=BOSS, unit_id=ids["b3"], person_id=2, kind="lead", now=NOW
        )
    assert role.id is not None
    async with db.transaction() as s:
        found = await people.role_with_unit(s, role.id)
        assert found is not None
        got, unit, holder = found
        assert (got.id, unit.name, holder.name) == (role.id, "3号楼", "乙")
        await people.revoke_role(s, auth=BOSS, role_id=role.id)
    async with db.transaction(write=False) as s:
        assert await people.role_with_unit(s, role.id) is None


async def test_led_units_under_lists_units_with_leads_in_tree_order(db: Database) -> None:
    ids = await _tree(db)
    async with db.transaction() as s:
        for unit, pid, kind in (
            ("b5", 1, "lead"),
            ("e1", 2, "lead"),
            ("b3", 2, "admin"),
            ("b3", 3, "lead"),
            ("grid2", 3, "lead"),
        ):
            await people.grant_role(
                s, auth=BOSS, unit_id=ids[unit], person_id=pid, kind=kind, now=NOW
            )
    async with db.transaction(write=False) as s:
        grid1 = await people.get_unit(s, ids["grid1"])
        units, total = await people.led_units_under(s, grid1, limit=10)
        first, total_again = await people.led_units_under(s, grid1, limit=1)
    assert [u.name for u in units] == ["3号楼", "1单元", "5号楼"]  # each once, 二网格 not included
    assert total == total_again == 3
    assert [u.name for u in first] == ["3号楼"]


async def test_note_person_keeps_what_the_person_told_us_themselves(db: Database) -> None:
    await _tree(db)
    async with db.transaction() as s:
        known = await people.note_person(
            s, person_id=1, name="别名", username=None, language_code=None, now=NOW
        )
        new = await people.note_person(
            s, person_id=50, name=" 刘师傅 ", username="liu", language_code="en", now=NOW
        )
    assert (known.name, known.language_code) == ("甲", "zh-hans")
    async with db.transaction(write=False) as s:
        stored = await people.get_person(s, 50)
    assert stored is not None and (stored.name, stored.username, stored.lang) == (
        "刘师傅",
        "liu",
        None,
    )
    assert new.language_code == "en"


async def test_get_community_of_a_missing_id_is_not_found(db: Database) -> None:
    ids = await _tree(db)
    async with db.transaction(write=False) as s:
        assert (await people.get_community(s, ids["c2"])).name == "和平里"
        with pytest.raises(NotFound):
            await people.get_community(s, 9999)
