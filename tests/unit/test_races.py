"""Writes two people make at the same moment: one row each, and no error but a domain one.

Each racer runs its own transaction on its own connection, all started at once (on PostgreSQL
they truly interleave; on SQLite they take turns on the write lock).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest
from sqlmodel import func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.db import Database
from models import people, points, reports
from models.errors import Conflict, DomainError
from tests.conftest import NOW

T = TypeVar("T")
BOSS = people.Authority(person_id=0, superadmin=True)


async def race(
    db: Database, n: int, work: Callable[[AsyncSession, int], Awaitable[T]]
) -> list[T | DomainError]:
    """Run `work` n times at once, each in its own unit of work; domain errors are results,
    anything else fails the test (a person would have seen "something went wrong")."""
    start = asyncio.Event()

    async def one(i: int) -> T | DomainError:
        await start.wait()
        try:
            async with db.transaction() as session:
                return await work(session, i)
        except DomainError as refusal:
            return refusal

    tasks = [asyncio.create_task(one(i)) for i in range(n)]
    await asyncio.sleep(0)
    start.set()
    return await asyncio.gather(*tasks)


async def count(db: Database, query: object) -> int:
    async with db.transaction(write=False) as session:
        return int((await session.exec(query)).one())  # type: ignore[call-overload]


async def community_with_building(db: Database) -> tuple[people.Community, people.Unit]:
    async with db.transaction() as s:
        community = await people.create_community(
            s, name="Lotus Garden", timezone="Asia/Shanghai", language="zh", now=NOW
        )
        assert community.id is not None
        building = await people.create_unit(
            s, community_id=community.id, parent_id=None, kind="building", name="1", now=NOW
        )
    return community, building


async def test_fifty_first_contacts_of_one_person_make_one_row(db: Database) -> None:
    async def touch(s: AsyncSession, i: int) -> people.Person:
        return await people.touch_person(
            s, person_id=4242, name=f"Ann {i % 2}", username=None, language_code="en", now=NOW
        )

    results = await race(db, 50, touch)

    assert all(isinstance(r, people.Person) and r.id == 4242 for r in results)
    assert await count(db, select(func.count()).select_from(people.Person)) == 1
    async with db.transaction(write=False) as s:
        person = await people.get_person(s, 4242)
    assert person is not None and person.name in ("Ann 0", "Ann 1")
    assert person.created_at == NOW


async def test_fifty_join_requests_for_one_household_by_one_person_make_one(db: Database) -> None:
    _, building = await community_with_building(db)
    assert building.id is not None
    async with db.transaction() as s:
        household = await people.add_household(
            s, unit_id=building.id, flat="101", area_centi_m2=None, now=NOW
        )
        await people.touch_person(
            s, person_id=7, name="Bo", username=None, language_code=None, now=NOW
        )
    assert household.id is not None
    household_id = household.id

    async def ask(s: AsyncSession, _i: int) -> tuple[people.Resident, bool]:
        return await people.request_join(s, person_id=7, household_id=household_id, now=NOW)

    results = await race(db, 50, ask)

    changed = [r for r in results if isinstance(r, tuple) and r[1]]
    assert len(changed) == 1  # the first asked; the others found that request
    assert all(isinstance(r, tuple) for r in results)
    assert await count(db, select(func.count()).select_from(people.Resident)) == 1


async def test_twenty_leads_adding_one_unit_name_make_one_unit(db: Database) -> None:
    community, building = await community_with_building(db)
    assert community.id is not None and building.id is not None
    community_id, building_id = community.id, building.id

    async def add(s: AsyncSession, _i: int) -> people.Unit:
        return await people.add_unit(
            s, auth=BOSS, community_id=community_id, parent_id=building_id, kind="neighbourhood",
            name="East wing", now=NOW,
        )  # fmt: skip

    async def add_top(s: AsyncSession, _i: int) -> people.Unit:
        return await people.add_unit(
            s, auth=BOSS, community_id=community_id, parent_id=None, kind="grid", name="Grid 1",
            now=NOW,
        )  # fmt: skip

    for work in (add, add_top):
        results = await race(db, 20, work)
        made = [r for r in results if isinstance(r, people.Unit)]
        refused = [r for r in results if isinstance(r, Conflict)]
        assert len(made) == 1
        assert len(refused) == 19 and {r.key for r in refused} == {"unit_exists"}
    units = select(func.count()).select_from(people.Unit)
    assert await count(db, units) == 3  # the building, the wing, the grid


async def test_two_leads_appointing_one_person_at_once_make_one_role(db: Database) -> None:
    _, building = await community_with_building(db)
    assert building.id is not None
    building_id = building.id
    appointees = range(10, 20)  # ten rounds at once: each person appointed by both leads
    async with db.transaction() as s:
        for uid in (1, 2, *appointees):
            await people.touch_person(
                s, person_id=uid, name=f"P{uid}", username=None, language_code=None, now=NOW
            )
        for lead in (1, 2):
            await people.grant_role(
                s, auth=BOSS, unit_id=building_id, person_id=lead, kind="lead", now=NOW
            )
        leads = [await people.authority(s, person_id=lead, superadmin=False) for lead in (1, 2)]

    async def appoint(s: AsyncSession, i: int) -> tuple[people.Role, bool]:
        return await people.grant_role(
            s, auth=leads[i % 2], unit_id=building_id, person_id=10 + i // 2, kind="lead", now=NOW
        )

    results = await race(db, 20, appoint)

    assert all(isinstance(r, tuple) for r in results)
    for person in appointees:
        created = [r[1] for r in results if isinstance(r, tuple) and r[0].person_id == person]
        assert sorted(created) == [False, True]
        roles = select(func.count()).select_from(people.Role).where(people.Role.person_id == person)
        assert await count(db, roles) == 1


@pytest.mark.parametrize("catalog", ["rules", "categories"])
async def test_admins_adding_to_a_catalog_at_once_get_distinct_codes_and_no_duplicate(
    db: Database, catalog: str
) -> None:
    community, _ = await community_with_building(db)
    assert community.id is not None
    community_id = community.id
    adder = points.add_rule if catalog == "rules" else reports.add_category

    async def add(s: AsyncSession, i: int) -> object:
        name = "Gate patrol" if i < 5 else f"Stairwell {i}"
        return await adder(s, auth=BOSS, community_id=community_id, name=name, now=NOW)

    results = await race(db, 10, add)

    made = [r for r in results if not isinstance(r, BaseException)]
    assert len(made) == 6  # one gate patrol, five stairwells
    assert all(isinstance(r, Conflict) for r in results if r not in made)
    async with db.transaction(write=False) as s:
        if catalog == "rules":
            entries: list[Any] = await points.rules(s, community_id=community_id, now=NOW)
        else:
            entries = await reports.categories(
                s, community_id=community_id, now=NOW, active_only=False
            )
    codes = [e.code for e in entries]
    assert len(codes) == len(set(codes))
    assert [e.name_en for e in entries].count("Gate patrol") == 1


async def test_one_group_linked_twice_at_once_has_one_link(db: Database) -> None:
    _, building = await community_with_building(db)
    assert building.id is not None
    building_id = building.id

    async def link(s: AsyncSession, i: int) -> tuple[people.ChatLink, int | None]:
        return await people.link_chat(
            s, chat_id=-100, thread_id=0, unit_id=building_id, title="1", by=i, now=NOW
        )

    results = await race(db, 10, link)

    assert all(isinstance(r, tuple) and r[1] is None for r in results)
    assert await count(db, select(func.count()).select_from(people.ChatLink)) == 1
