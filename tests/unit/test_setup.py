"""Adding units and linking chats on someone's authority (models behind /setup and /unlink)."""

from __future__ import annotations

import pytest

from bot.db import Database
from models import people
from models.errors import Conflict, NotAllowed
from models.people import Can
from tests.conftest import NOW

BOSS = people.Authority(person_id=1, superadmin=True)
LEAD, ADMIN, OTHER = 20, 21, 22


async def _tree(db: Database) -> dict[str, int]:
    async with db.transaction() as s:
        c = await people.create_community(
            s, name="幸福里", timezone="Asia/Shanghai", language="zh", now=NOW
        )
        assert c.id is not None
        ids = {"community": c.id}
        for key, parent, kind, name in (
            ("grid1", None, "grid", "一网格"),
            ("b3", "grid1", "building", "3号楼"),
            ("b5", "grid1", "building", "5号楼"),
            ("grid2", None, "grid", "二网格"),
        ):
            unit = await people.create_unit(
                s,
                community_id=c.id,
                parent_id=ids[parent] if parent else None,
                kind=kind,
                name=name,
                now=NOW,
            )
            assert unit.id is not None
            ids[key] = unit.id
        for pid in (LEAD, ADMIN, OTHER):
            await people.touch_person(
                s, person_id=pid, name=str(pid), username=None, language_code="zh", now=NOW
            )
        await people.grant_role(
            s, auth=BOSS, unit_id=ids["grid1"], person_id=LEAD, kind="lead", now=NOW
        )
        await people.grant_role(
            s, auth=BOSS, unit_id=ids["b5"], person_id=ADMIN, kind="admin", now=NOW
        )
    return ids


async def _auth(db: Database, person_id: int) -> people.Authority:
    async with db.transaction(write=False) as s:
        return await people.authority(s, person_id=person_id, superadmin=False)


async def test_only_superadmins_and_community_admins_add_top_level_units(db: Database) -> None:
    ids = await _tree(db)
    # ADMIN is an admin of one building (5号楼): not a community admin (issue 8, item 3).
    async with db.transaction() as s:
        await people.grant_role(
            s, auth=BOSS, unit_id=ids["grid2"], person_id=OTHER, kind="admin", now=NOW
        )
    lead, building_admin = await _auth(db, LEAD), await _auth(db, ADMIN)
    admin = await _auth(db, OTHER)  # an admin of a top-level unit
    assert BOSS.may(Can.admin_community, community_id=ids["community"])
    assert admin.may(Can.admin_community, community_id=ids["community"])
    assert not admin.may(Can.admin_community, community_id=ids["community"] + 1)
    assert not lead.may(Can.admin_community, community_id=ids["community"])
    assert not building_admin.may(Can.admin_community, community_id=ids["community"])
    async with db.transaction() as s:
        for refused_auth in (lead, building_admin):
            with pytest.raises(NotAllowed) as refused:
                await people.add_unit(
                    s,
                    auth=refused_auth,
                    community_id=ids["community"],
                    parent_id=None,
                    kind="grid",
                    name="三网格",
                    now=NOW,
                )
            assert refused.value.key == "admins_only"
        made = await people.add_unit(
            s,
            auth=admin,
            community_id=ids["community"],
            parent_id=None,
            kind="grid",
            name="三网格",
            now=NOW,
        )
        assert made.parent_id is None and made.path == f"/{made.id}/"


async def test_a_lead_adds_units_only_below_what_they_cover(db: Database) -> None:
    ids = await _tree(db)
    lead = await _auth(db, LEAD)
    async with db.transaction() as s:
        made = await people.add_unit(
            s,
            auth=lead,
            community_id=ids["community"],
            parent_id=ids["b3"],
            kind="neighbourhood",
            name="一邻",
            now=NOW,
        )
        assert made.lineage == [ids["grid1"], ids["b3"], made.id]
        with pytest.raises(NotAllowed):
            await people.add_unit(
                s,
                auth=lead,
                community_id=ids["community"],
                parent_id=ids["grid2"],
                kind="building",
                name="9号楼",
                now=NOW,
            )


async def test_linking_is_idempotent_and_a_move_names_the_old_unit(db: Database) -> None:
    ids = await _tree(db)
    lead = await _auth(db, LEAD)
    async with db.transaction() as s:
        first = await people.link_chat_as(
            s, auth=lead, chat_id=-5, thread_id=0, unit_id=ids["b3"], title="群", now=NOW
        )
        again = await people.link_chat_as(
            s, auth=lead, chat_id=-5, thread_id=0, unit_id=ids["b3"], title="群", now=NOW
        )
        moved = await people.link_chat_as(
            s, auth=lead, chat_id=-5, thread_id=0, unit_id=ids["b5"], title="群", now=NOW
        )
        topic = await people.link_chat_as(
            s, auth=lead, chat_id=-5, thread_id=7, unit_id=ids["b3"], title="群", now=NOW
        )
    assert (first.changed, first.previous) == (True, None) and first.link.linked_by == LEAD
    assert (again.changed, again.previous) == (False, None)
    assert moved.changed and moved.previous is not None and moved.previous.name == "3号楼"
    assert topic.changed and topic.previous is None
    async with db.transaction(write=False) as s:
        links = await people.links_of_chat(s, chat_id=-5)
        group = await people.own_link(s, chat_id=-5, thread_id=0)
        other_topic = await people.own_link(s, chat_id=-5, thread_id=8)
    assert [(link.thread_id, unit.name) for link, unit in links] == [(0, "5号楼"), (7, "3号楼")]
    assert group is not None and group.unit_id == ids["b5"]
    assert other_topic is None  # own_link does not fall back to the group


async def test_linking_a_unit_outside_ones_roles_is_refused(db: Database) -> None:
    ids = await _tree(db)
    lead, outsider = await _auth(db, LEAD), await _auth(db, OTHER)
    async with db.transaction() as s:
        await people.link_chat_as(
            s, auth=lead, chat_id=-6, thread_id=0, unit_id=ids["b3"], title="群", now=NOW
        )
    for auth, unit in ((lead, ids["grid2"]), (outsider, ids["b3"])):
        async with db.transaction() as s:
            with pytest.raises(NotAllowed):
                await people.link_chat_as(
                    s, auth=auth, chat_id=-6, thread_id=0, unit_id=unit, title="群", now=NOW
                )
    async with db.transaction(write=False) as s:
        link = await people.own_link(s, chat_id=-6, thread_id=0)
    assert link is not None and link.unit_id == ids["b3"]


async def test_unlinking_checks_the_unit_and_is_harmless_twice(db: Database) -> None:
    ids = await _tree(db)
    lead, outsider = await _auth(db, LEAD), await _auth(db, OTHER)
    async with db.transaction() as s:
        await people.link_chat_as(
            s, auth=lead, chat_id=-7, thread_id=0, unit_id=ids["b3"], title="群", now=NOW
        )
    async with db.transaction() as s:
        with pytest.raises(NotAllowed):
            await people.unlink_chat_as(
                s, auth=outsider, chat_id=-7, thread_id=0, unit_id=ids["b3"]
            )
        with pytest.raises(Conflict) as changed:
            await people.unlink_chat_as(s, auth=lead, chat_id=-7, thread_id=0, unit_id=ids["b5"])
        assert changed.value.key == "link_changed"
    async with db.transaction() as s:
        gone = await people.unlink_chat_as(s, auth=lead, chat_id=-7, thread_id=0, unit_id=ids["b3"])
        again = await people.unlink_chat_as(
            s, auth=lead, chat_id=-7, thread_id=0, unit_id=ids["b3"]
        )
    assert gone is not None and gone.unit_id == ids["b3"] and again is None
    async with db.transaction(write=False) as s:
        assert await people.links_of_chat(s, chat_id=-7) == []
