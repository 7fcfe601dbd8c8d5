"""The test world: the 幸福里 community every feature's tests start from, in one line.

    w = await world(db)                       # the standard cast below
    w = await world(db, leads={SAM: "grid1"}) # or change who is who

幸福里 (zh, Asia/Shanghai) has two grids: 一网格 with 3号楼 and 5号楼, 二网格 with 9号楼. Each
building has one flat (3-2-501, 5-1-101, 9-1-1). The standard cast: 张网格长 leads 一网格 and
刘组长 leads 二网格; 王阿姨 lives in 3号楼, 李叔 and Sam (English) share 5-1-101, 周伯 lives in
9号楼; the 3号楼 group and the 一网格 group are linked. A test that needs other people, homes,
roles or chats passes its own; every other id comes back on the `World`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from bot.db import Database
from models import people
from tests.conftest import NOW
from tests.integration.conftest import ADMIN_ID

LEAD, WANG, LI, SAM, ZHOU, OTHER_LEAD = 30, 31, 32, 33, 34, 35
GROUP_B3, GROUP_GRID = -700, -701
BOSS = people.Authority(person_id=ADMIN_ID, superadmin=True)
UNITS = ("grid1", "b3", "b5", "grid2", "b9")  # the names a test uses for the units
FLATS = {"3-2-501": "b3", "5-1-101": "b5", "9-1-1": "b9"}

CAST: dict[int, tuple[str, str]] = {
    ADMIN_ID: ("Admin", "zh-hans"),
    LEAD: ("张网格长", "zh-hans"),
    WANG: ("王阿姨", "zh-hans"),
    LI: ("李叔", "zh-hans"),
    SAM: ("Sam", "en"),
    ZHOU: ("周伯", "zh-hans"),
    OTHER_LEAD: ("刘组长", "zh-hans"),
}
HOMES = {WANG: "3-2-501", LI: "5-1-101", SAM: "5-1-101", ZHOU: "9-1-1"}
LEADS = {LEAD: "grid1", OTHER_LEAD: "grid2"}
CHATS = {GROUP_B3: ("b3", ""), GROUP_GRID: ("grid1", "")}


@dataclass
class World:
    community: int
    grid1: int
    b3: int
    b5: int
    grid2: int
    b9: int
    homes: dict[str, int] = field(default_factory=dict)  # flat -> household id

    def unit(self, name: str) -> int:
        return int(getattr(self, name))


async def world(
    db: Database,
    *,
    cast: Mapping[int, tuple[str, str]] = CAST,
    homes: Mapping[int, str] = HOMES,
    leads: Mapping[int, str] = LEADS,
    chats: Mapping[int, tuple[str, str]] = CHATS,
    linked_by: int = ADMIN_ID,
) -> World:
    """Build 幸福里 with these people (id -> name, Telegram language), homes (id -> flat, verified),
    leads (id -> unit name of UNITS) and linked group chats (chat id -> (unit name, title))."""
    async with db.transaction() as s:
        c = await people.create_community(
            s, name="幸福里", timezone="Asia/Shanghai", language="zh", now=NOW
        )
        assert c.id is not None

        async def unit(parent: int | None, kind: str, name: str) -> int:
            u = await people.create_unit(
                s, community_id=c.id or 0, parent_id=parent, kind=kind, name=name, now=NOW
            )
            return u.id or 0

        grid1 = await unit(None, "grid", "一网格")
        b3 = await unit(grid1, "building", "3号楼")
        b5 = await unit(grid1, "building", "5号楼")
        grid2 = await unit(None, "grid", "二网格")
        b9 = await unit(grid2, "building", "9号楼")
        w = World(c.id, grid1, b3, b5, grid2, b9)
        for flat, building in FLATS.items():
            h = await people.add_household(
                s, unit_id=w.unit(building), flat=flat, area_centi_m2=None, now=NOW
            )
            w.homes[flat] = h.id or 0
        for pid, (name, lang) in cast.items():
            await people.touch_person(
                s, person_id=pid, name=name, username=None, language_code=lang, now=NOW
            )
        for pid, flat in homes.items():
            await people.request_join(
                s, person_id=pid, household_id=w.homes[flat], now=NOW, verified_by_code=True
            )
        for pid, unit_name in leads.items():
            await people.grant_role(
                s, auth=BOSS, unit_id=w.unit(unit_name), person_id=pid, kind="lead", now=NOW
            )
        for chat_id, (unit_name, title) in chats.items():
            await people.link_chat(
                s,
                chat_id=chat_id,
                thread_id=0,
                unit_id=w.unit(unit_name),
                title=title,
                by=linked_by,
                now=NOW,
            )
        return w
