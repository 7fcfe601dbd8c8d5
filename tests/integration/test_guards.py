"""The guards' memory: bounded, and the repeat guard's part of it kept across a restart."""

from __future__ import annotations

from bot.app import build_application
from bot.config import load_settings
from bot.db import Database
from bot.standin import FakeTelegram, Scene, messages
from handlers import guards
from handlers.guards import FLOOD_LIMIT, FLOOD_WINDOW, Guard


def test_the_flood_guard_forgets_people_idle_for_a_whole_window() -> None:
    guard = Guard()
    for person in range(10_000):
        assert not guard.flooding(person, 0.0)
    assert len(guard.activity) == 10_000
    assert not guard.flooding(1, FLOOD_WINDOW / 2)
    assert len(guard.activity) == 10_000  # everyone is still within the window
    assert not guard.flooding(2, FLOOD_WINDOW + 1)
    assert list(guard.activity) == [1, 2]  # a year of a city's traffic stays this small
    # and the guard still does its job
    flood = [guard.flooding(3, FLOOD_WINDOW + 1 + i / 100) for i in range(FLOOD_LIMIT + 1)]
    assert flood[-1] and not any(flood[:-1])


async def test_an_update_redelivered_after_a_restart_is_handled_once(db: Database) -> None:
    settings = load_settings(bot_token="", _env_file=None)
    first_telegram = FakeTelegram()
    first = build_application(settings, request=first_telegram, db=db)
    scene = Scene(first, first_telegram)
    user = scene.person(15, "Liu")
    message = scene.message_json(user, scene.private(user), "/lang")
    async with first:
        await guards.restore(first)
        assert len(messages(await scene.feed({"update_id": 500, "message": message}))) == 1
        assert first.bot_data.guard.handled == [500]
        await guards.save_handled(first)  # every few seconds, and on shutdown
        assert first.bot_data.guard.handled == []

    telegram = FakeTelegram()
    again = build_application(settings, request=telegram, db=db)
    scene = Scene(again, telegram, first_update_id=501)
    scene.private(user)
    telegram.started.add(15)
    async with again:
        await guards.restore(again)  # on start-up, before updates flow
        assert await scene.feed({"update_id": 500, "message": message}) == []
        assert len(messages(await scene.feed({"message": message}))) == 1  # a new one is answered


async def test_saved_update_ids_stay_a_bounded_few(db: Database) -> None:
    from models import updates

    async with db.transaction() as session:
        await updates.note_handled(session, list(range(1, 101)), keep=30)
        await updates.note_handled(session, [100, 101, 102], keep=30)
    async with db.transaction(write=False) as session:
        kept = await updates.recently_handled(session, keep=30)
    assert kept == list(range(73, 103))


async def test_help_of_a_known_person_reads_nothing_and_a_new_role_shows_at_once(
    scene: Scene, db: Database
) -> None:
    from sqlalchemy import event

    from models import people
    from tests.conftest import NOW

    user = scene.person(21, "Gao")
    chat = scene.private(user)
    (helped,) = messages(await scene.say(user, chat, "/help"))
    assert "/pending" not in helped.text
    statements: list[str] = []

    def record(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        statements.append(statement)

    event.listen(db.engine.sync_engine, "before_cursor_execute", record)
    try:
        (helped,) = messages(await scene.say(user, chat, "/help"))
        assert statements == []  # the person and their standing come from memory
        async with db.transaction() as s:
            community = await people.create_community(
                s, name="Lotus", timezone="Asia/Shanghai", language="zh", now=NOW
            )
            assert community.id is not None
            unit = await people.create_unit(
                s, community_id=community.id, parent_id=None, kind="building", name="1", now=NOW
            )
            assert unit.id is not None
            await people.grant_role(
                s,
                auth=people.Authority(person_id=0, superadmin=True),
                unit_id=unit.id,
                person_id=21,
                kind="lead",
                now=NOW,
            )
        statements.clear()
        (helped,) = messages(await scene.say(user, chat, "/help"))
        assert "/pending" in helped.text  # the new role shows at once
        assert statements  # read again, once
    finally:
        event.remove(db.engine.sync_engine, "before_cursor_execute", record)


async def test_me_of_a_known_person_shows_a_household_verified_since_at_once(
    scene: Scene, db: Database
) -> None:
    from models import people
    from tests.conftest import NOW

    user = scene.person(22, "Hu", lang="en")
    chat = scene.private(user)
    (before,) = messages(await scene.say(user, chat, "/me"))
    assert "7-101" not in before.text  # their standing (no household) is now in memory
    async with db.transaction() as s:
        community = await people.create_community(
            s, name="Lotus", timezone="Asia/Shanghai", language="en", now=NOW
        )
        assert community.id is not None
        building = await people.create_unit(
            s, community_id=community.id, parent_id=None, kind="building", name="7", now=NOW
        )
        assert building.id is not None
        home = await people.add_household(
            s, unit_id=building.id, flat="7-101", area_centi_m2=8_000, now=NOW
        )
        assert home.id is not None
        await people.request_join(
            s, person_id=22, household_id=home.id, now=NOW, verified_by_code=True
        )
    (after,) = messages(await scene.say(user, chat, "/me"))
    assert "7-101" in after.text and "Lotus" in after.text  # the new membership shows at once
