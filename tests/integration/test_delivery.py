"""The delivery engine through the application and the stand-in: what reaches which chat, when."""

from __future__ import annotations

import asyncio
import copy
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from jinja2 import ChoiceLoader, DictLoader
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from bot import delivery
from bot.app import build_application
from bot.config import load_settings
from bot.context import LinliApp
from bot.db import Database
from bot.standin import FakeTelegram, Scene, TelegramLimits, visible
from models import outbox, people
from models.outbox import Delivery, Priority, Status
from tests.integration.conftest import ADMIN_ID, Clock

GROUP = -1001000000100
OTHER_GROUP = -1001000000200
ZH_PERSON, EN_PERSON, SHY_PERSON = 501, 502, 503

TEST_TEMPLATES = {
    "zh/test/notice.html.j2": "【通知】{{ body }}",
    "en/test/notice.html.j2": "[Notice] {{ body }}",
    "zh/test/long.html.j2": "<b>{{ title }}</b>\n<i>{{ body }}</i>",
    "en/test/long.html.j2": "<b>{{ title }}</b>\n<i>{{ body }}</i>",
}


def sleeper(clock: Clock) -> Callable[[float], Awaitable[None]]:
    """A sleep that moves the test clock: Telegram's pace costs no real time."""

    async def sleep(seconds: float) -> None:
        clock.advance(seconds=max(0.0, seconds))
        await asyncio.sleep(0)

    return sleep


def make_app(
    db: Database, telegram: FakeTelegram, clock: Clock, *, simulated: bool = True
) -> LinliApp:
    settings = load_settings(bot_token="", admins=str(ADMIN_ID), _env_file=None)
    sleep = sleeper(clock) if simulated else None
    app = build_application(settings, request=telegram, db=db, clock=clock, sleep=sleep)
    renderer = app.bot_data.services.renderer
    assert renderer.env.loader is not None
    renderer.env.loader = ChoiceLoader([DictLoader(TEST_TEMPLATES), renderer.env.loader])
    return app


@pytest.fixture
def telegram(clock: Clock) -> FakeTelegram:
    return FakeTelegram(clock=lambda: clock().timestamp())


@pytest.fixture
async def app(db: Database, telegram: FakeTelegram, clock: Clock) -> AsyncIterator[LinliApp]:
    application = make_app(db, telegram, clock)
    async with application:
        yield application
        await delivery.stop_sender(application)


@dataclass
class World:
    community_id: int
    building_id: int
    link_id: int
    group: dict[str, Any]


@pytest.fixture
async def world(db: Database, scene: Scene) -> World:
    """A community (Chinese) with one building whose group is linked, and three neighbours:
    one reading Chinese, one English, one who never opened a private chat with the bot."""
    now = datetime(2026, 11, 20, 2, 0, tzinfo=UTC)
    async with db.transaction() as s:
        community = await people.create_community(
            s, name="幸福里", timezone="Asia/Shanghai", language="zh", now=now
        )
        assert community.id is not None
        building = await people.create_unit(
            s, community_id=community.id, parent_id=None, kind="building", name="3号楼", now=now
        )
        assert building.id is not None
        link, _ = await people.link_chat(
            s, chat_id=GROUP, thread_id=0, unit_id=building.id, title="3号楼", by=1, now=now
        )
        for uid, name, code in (
            (ZH_PERSON, "王阿姨", "zh-hans"),
            (EN_PERSON, "Sam", "en"),
            (SHY_PERSON, "张师傅", "zh-hans"),
        ):
            await people.touch_person(
                s, person_id=uid, name=name, username=None, language_code=code, now=now
            )
    assert link.id is not None
    group = scene.group(GROUP, "3号楼邻里群")
    scene.group(OTHER_GROUP, "5号楼邻里群")
    for uid in (ZH_PERSON, EN_PERSON):
        scene.private(scene.person(uid, str(uid)))
        scene.tg.started.add(uid)
    return World(community.id, building.id, link.id, group)


async def put(
    db: Database,
    clock: Clock,
    key: str,
    chat_id: int,
    *,
    body: str | None = None,
    template: str = "test/notice",
    context: dict[str, Any] | None = None,
    due: datetime | None = None,
    **options: Any,
) -> None:
    async with db.transaction() as s:
        await outbox.enqueue(
            s,
            key=key,
            chat_id=chat_id,
            template=template,
            context=context if context is not None else {"body": body or key},
            due_at=due or clock(),
            now=clock(),
            **options,
        )


async def rows(db: Database) -> dict[str, Delivery]:
    async with db.transaction(write=False) as s:
        return {r.key: r for r in (await s.exec(select(Delivery))).all()}


def texts(telegram: FakeTelegram, chat_id: int) -> list[str]:
    return [c.text for c in telegram.sent(chat_id)]


async def settle(app: LinliApp, db: Database, *, rounds: int = 10_000) -> None:
    """Let the running sender work until no row is pending (its sleeps move the test clock)."""
    for _ in range(rounds):
        async with db.transaction(write=False) as s:
            left = (
                await s.exec(select(Delivery.id).where(Delivery.status == Status.pending))
            ).first()
        if left is None:
            return
        await asyncio.sleep(0)
    raise AssertionError("rows still pending")


# --- sending ------------------------------------------------------------------------------------


async def test_rows_go_out_in_each_readers_language(
    app: LinliApp, db: Database, telegram: FakeTelegram, clock: Clock, world: World
) -> None:
    await put(db, clock, "n:1:group", GROUP, body="明早停水", community_id=world.community_id)
    await put(db, clock, "n:1:zh", ZH_PERSON, body="明早停水", community_id=world.community_id)
    await put(db, clock, "n:1:en", EN_PERSON, body="water off", community_id=world.community_id)
    await put(db, clock, "n:1:forced", EN_PERSON, body="中文", lang="zh")
    handled = await delivery.drain(app)
    assert handled == 4
    assert texts(telegram, GROUP) == ["【通知】明早停水"]
    assert texts(telegram, ZH_PERSON) == ["【通知】明早停水"]
    assert texts(telegram, EN_PERSON) == ["[Notice] water off", "【通知】中文"]
    assert {r.status for r in (await rows(db)).values()} == {Status.sent}
    assert await delivery.drain(app) == 0  # nothing is sent twice


async def test_photo_silent_and_pinned_rows(
    app: LinliApp, db: Database, telegram: FakeTelegram, clock: Clock, world: World
) -> None:
    await put(db, clock, "p:1", GROUP, body="海报", photo="poster-file-id", pin=True, silent=True)
    await delivery.drain(app)
    (call,) = telegram.sent(GROUP)
    assert call.method == "sendPhoto" and call.params["photo"] == "poster-file-id"
    assert call.text == "【通知】海报" and call.params.get("disable_notification") is True
    assert telegram.chats[GROUP]["pinned_message_id"] == call.result["message_id"]
    row = (await rows(db))["p:1"]
    assert row.status == Status.sent and row.message_id == call.result["message_id"]


async def test_a_pin_refused_for_lack_of_rights_still_sends(
    app: LinliApp, db: Database, telegram: FakeTelegram, clock: Clock, scene: Scene
) -> None:
    scene.group(OTHER_GROUP, "5号楼邻里群", can_pin=False)
    await put(db, clock, "p:2", OTHER_GROUP, body="请置顶", pin=True)
    await delivery.drain(app)
    assert texts(telegram, OTHER_GROUP) == ["【通知】请置顶"]
    assert "pinned_message_id" not in telegram.chats[OTHER_GROUP]
    row = (await rows(db))["p:2"]
    assert row.status == Status.sent and row.last_error and "pin" in row.last_error


async def test_urgent_rows_go_before_broadcasts(
    app: LinliApp, db: Database, telegram: FakeTelegram, clock: Clock, world: World
) -> None:
    for i in range(3):
        await put(db, clock, f"b:{i}", GROUP, body=f"broadcast {i}", priority=Priority.broadcast)
    await put(db, clock, "u:1", GROUP, body="urgent", priority=Priority.urgent, urgent=True)
    await delivery.drain(app)
    assert texts(telegram, GROUP) == [
        "【通知】urgent", "【通知】broadcast 0", "【通知】broadcast 1", "【通知】broadcast 2",
    ]  # fmt: skip


async def test_a_long_text_is_split_on_line_boundaries_in_order(
    app: LinliApp, db: Database, telegram: FakeTelegram, clock: Clock, world: World
) -> None:
    lines = [f"第{i:03d}行：" + "楼道清洁安排与注意事项" * 6 for i in range(150)]  # 9,900 chars
    body = "\n".join(lines)
    await put(db, clock, "long:1", GROUP, template="test/long",
              context={"title": "通知", "body": body}, pin=True)  # fmt: skip
    await delivery.drain(app)
    parts = telegram.sent(GROUP)
    assert len(parts) == 3
    assert all(len(p.text) <= 4096 for p in parts)
    # every part is well-formed HTML, each cut falls between two lines, nothing is lost
    assert "\n".join(p.text for p in parts) == "通知\n" + body
    assert all(p.params["text"].startswith(("<b>", "<i>")) for p in parts)
    row = (await rows(db))["long:1"]
    assert row.status == Status.sent and row.parts_sent == 3
    assert row.message_id == parts[0].result["message_id"]  # the start is what is pinned
    assert telegram.chats[GROUP]["pinned_message_id"] == row.message_id


async def test_a_single_overlong_line_is_cut_hard(
    app: LinliApp, db: Database, telegram: FakeTelegram, clock: Clock, world: World
) -> None:
    await put(db, clock, "long:2", ZH_PERSON, body="啊" * 5000)
    await delivery.drain(app)
    parts = texts(telegram, ZH_PERSON)
    assert [len(p) for p in parts] == [4096, len("【通知】") + 5000 - 4096]
    assert "".join(parts) == "【通知】" + "啊" * 5000


def test_split_keeps_tags_balanced_and_counts_entities_as_one() -> None:
    text = "<b>" + "\n".join(["x &amp; y"] * 3) + "</b>"
    parts = delivery.split_html(text, limit=10)
    assert parts == ["<b>x &amp; y</b>", "<b>x &amp; y</b>", "<b>x &amp; y</b>"]
    assert [visible(p) for p in parts] == ["x & y"] * 3
    assert delivery.split_html("short", limit=10) == ["short"]


# --- restarts -----------------------------------------------------------------------------------


async def test_a_scheduled_row_goes_out_exactly_once_across_a_restart(
    app: LinliApp, db: Database, telegram: FakeTelegram, clock: Clock, world: World
) -> None:
    await put(db, clock, "r:now", GROUP, body="现在")
    await put(db, clock, "r:later", GROUP, body="十分钟后", due=clock() + timedelta(minutes=10))
    await delivery.drain(app)
    assert texts(telegram, GROUP) == ["【通知】现在"]
    # the application stops and a new one starts on the same database and the same Telegram
    second = make_app(db, telegram, clock)
    async with second:
        clock.advance(minutes=10)
        await delivery.drain(second)
        await delivery.drain(app)
    assert texts(telegram, GROUP) == ["【通知】现在", "【通知】十分钟后"]


class Crash(BaseException):
    """The process dies: nothing after this runs (not an error the sender could handle)."""


class Dying(FakeTelegram):
    """A stand-in after whose `last`-th message the bot's process dies: Telegram has the
    message, the process writes nothing more to the database."""

    def __init__(self, clock: Clock, db: Database, *, last: int) -> None:
        super().__init__(clock=lambda: clock().timestamp())
        self.db, self.left = db, last

    async def do_request(self, url: str, method: str, *args: Any, **kwargs: Any) -> Any:
        answer = await super().do_request(url, method, *args, **kwargs)
        if url.endswith("/sendMessage"):
            self.left -= 1
            if self.left == 0:
                self.db.transaction = _dead  # type: ignore[method-assign]
                raise Crash
        return answer


def _dead(*_: Any, **__: Any) -> Any:
    raise Crash


async def test_a_crash_repeats_at_most_the_last_message_of_each_chat(
    db: Database, telegram: FakeTelegram, clock: Clock, world: World
) -> None:
    """Outcomes are committed a few sends at a time, but a chat's previous outcome always
    before its next message: a crash between Telegram's answer and the commit repeats only
    the message in flight, never an earlier one to the same chat."""
    for n in (1, 2, 3):
        await put(db, clock, f"c:{n}", GROUP, body=f"第{n}条")
    await put(db, clock, "c:other", OTHER_GROUP, body="另一个群")
    dying = Dying(clock, copy.copy(db), last=4)  # the process has its own view of the database
    for chat in (world.group, {"id": OTHER_GROUP, "type": "supergroup", "title": "5号楼"}):
        dying.add_chat(chat)
    crashed = make_app(dying.db, dying, clock)
    async with crashed:
        with pytest.raises(Crash):
            await delivery.drain(crashed)
    assert [visible(c.text) for c in dying.sent(GROUP)] == [
        "【通知】第1条",
        "【通知】第2条",
        "【通知】第3条",
    ]
    clock.advance(seconds=outbox.LEASE.total_seconds() + 1)  # the dead process's lease runs out
    restarted = make_app(db, telegram, clock)
    async with restarted:
        await delivery.drain(restarted)
    assert texts(telegram, GROUP) == ["【通知】第3条"]  # only the message in flight, again
    assert texts(telegram, OTHER_GROUP) == []  # recorded before the crash: not repeated
    assert {r.status for r in (await rows(db)).values()} == {Status.sent}


async def test_the_running_sender_sleeps_until_the_next_row_is_due(
    app: LinliApp, db: Database, telegram: FakeTelegram, clock: Clock, world: World
) -> None:
    due = clock() + timedelta(hours=3)
    await put(db, clock, "s:1", GROUP, body="三小时后", due=due)
    delivery.start_sender(app)
    await settle(app, db)
    await delivery.stop_sender(app)
    (call,) = telegram.sent(GROUP)
    assert call.result["date"] >= due.timestamp()


async def test_wake_sends_at_once_instead_of_waiting_for_the_timeout(
    db: Database, world: World, scene: Scene, clock: Clock
) -> None:
    telegram = FakeTelegram()
    app = make_app(db, telegram, clock, simulated=False)  # real sleep, frozen clock
    telegram.add_chat({"id": GROUP, "type": "supergroup", "title": "3号楼"})
    async with app:
        sender = delivery.start_sender(app)
        await asyncio.wait_for(sender.ready.wait(), 10)  # idle: nothing due for 30 s
        await put(db, clock, "w:1", GROUP, body="马上")  # its commit wakes the sender
        for _ in range(500):  # far less than the 30 s the sender would otherwise sleep
            if telegram.sent(GROUP):
                break
            await asyncio.sleep(0.01)
        await delivery.stop_sender(app)
    assert texts(telegram, GROUP) == ["【通知】马上"]


# --- Telegram says no ---------------------------------------------------------------------------


async def test_a_flood_wait_pauses_every_send_and_loses_nothing(
    app: LinliApp, db: Database, telegram: FakeTelegram, clock: Clock, world: World
) -> None:
    await put(db, clock, "f:1", GROUP, body="一")
    await put(db, clock, "f:2", OTHER_GROUP, body="二")
    telegram.fail("429", chat_id=GROUP, retry_after=3)
    started = clock().timestamp()
    await delivery.drain(app)
    assert texts(telegram, GROUP) == ["【通知】一"]
    assert texts(telegram, OTHER_GROUP) == ["【通知】二"]
    refused = [c for c in telegram.calls if c.error and "Too Many" in c.error]
    assert len(refused) == 1
    # the other chat waited out the flood wait too: it applies to the bot, not to one chat
    assert all(c.result["date"] >= started + 3 for c in telegram.sent())
    assert {r.status for r in (await rows(db)).values()} == {Status.sent}


async def test_a_group_that_removed_the_bot_ends_its_rows_without_retries(
    app: LinliApp, db: Database, telegram: FakeTelegram, clock: Clock, world: World
) -> None:
    telegram.set_bot_member(GROUP, "kicked")
    await put(db, clock, "k:1", GROUP)
    await put(db, clock, "k:2", GROUP)
    await put(db, clock, "k:later", GROUP, due=clock() + timedelta(days=1))
    await put(db, clock, "k:other", OTHER_GROUP, body="别的群")
    await delivery.drain(app)
    tries = [c for c in telegram.calls if c.chat_id == GROUP and c.method == "sendMessage"]
    assert len(tries) == 1 and tries[0].error and "Forbidden" in tries[0].error
    found = await rows(db)
    assert {found[k].status for k in ("k:1", "k:2", "k:later")} == {Status.gone}
    assert found["k:other"].status == Status.sent
    async with db.transaction(write=False) as s:
        chat = await s.get(people.Chat, GROUP)
        assert chat is not None and chat.bot_status == "kicked"
    # later rows for that chat end at once, without asking Telegram
    await put(db, clock, "k:after", GROUP)
    await delivery.drain(app)
    assert (await rows(db))["k:after"].status == Status.gone
    assert len([c for c in telegram.calls if c.chat_id == GROUP]) == 1


async def test_a_person_who_never_opened_a_chat_is_mentioned_in_their_group(
    app: LinliApp, db: Database, telegram: FakeTelegram, clock: Clock, world: World
) -> None:
    await put(db, clock, "m:1:503", SHY_PERSON, body="您家 5-301 的快递到了",
              person_id=SHY_PERSON, fallback_link_id=world.link_id)  # fmt: skip
    await delivery.drain(app)
    found = await rows(db)
    assert found["m:1:503"].status == Status.gone
    fallback = found["m:1:503:fallback"]
    assert fallback.status == Status.sent and fallback.chat_id == GROUP
    (mention,) = telegram.sent(GROUP)
    assert "张师傅" in mention.text and "私聊" in mention.text
    assert "5-301" not in mention.text and "快递" not in mention.text  # nothing private
    assert f"tg://user?id={SHY_PERSON}" in mention.params["text"]
    assert "t.me/LinliBot" in mention.params["text"]


async def test_a_person_who_blocked_the_bot_is_not_called_out_in_the_group(
    app: LinliApp, db: Database, telegram: FakeTelegram, clock: Clock, world: World
) -> None:
    telegram.fail("403", chat_id=ZH_PERSON)
    telegram.failures[-1].description = "Forbidden: bot was blocked by the user"
    await put(db, clock, "m:2:501", ZH_PERSON, person_id=ZH_PERSON,
              fallback_link_id=world.link_id)  # fmt: skip
    await delivery.drain(app)
    found = await rows(db)
    assert found["m:2:501"].status == Status.gone and "m:2:501:fallback" not in found
    assert telegram.sent(GROUP) == []


async def test_a_group_upgraded_to_a_supergroup_gets_its_rows_at_the_new_id(
    app: LinliApp, db: Database, telegram: FakeTelegram, clock: Clock, world: World
) -> None:
    old, new = -4000000400, -1001000000400
    async with db.transaction() as s:
        await people.record_chat(
            s, chat_id=old, type="group", title="4号楼", is_forum=False,
            bot_status="administrator", now=clock(),
        )  # fmt: skip
        await people.link_chat(
            s, chat_id=old, thread_id=0, unit_id=world.building_id, title="4号楼", by=1,
            now=clock(),
        )  # fmt: skip
    telegram.add_chat({"id": old, "type": "group", "title": "4号楼"})
    # Telegram upgraded the group while the bot was not looking
    telegram.add_chat({"id": new, "type": "supergroup", "title": "4号楼"})
    telegram.migrated[old] = new
    await put(db, clock, "g:1", old, body="一")
    await put(db, clock, "g:2", old, body="二")
    await delivery.drain(app)
    assert texts(telegram, new) == ["【通知】一", "【通知】二"]
    assert {r.chat_id for r in (await rows(db)).values()} == {new}
    async with db.transaction(write=False) as s:
        links = (await s.exec(select(people.ChatLink))).all()
        assert sorted(link.chat_id for link in links) == sorted([new, GROUP])
        chat = await s.get(people.Chat, old)
        assert chat is not None and chat.migrated_to == new


async def test_the_migration_update_moves_pending_rows_too(
    app: LinliApp, db: Database, telegram: FakeTelegram, clock: Clock, scene: Scene
) -> None:
    old, new = -4000000300, -1001000000300
    group = scene.group(old, "7号楼")
    await put(db, clock, "h:1", old, due=clock() + timedelta(hours=1))
    await scene.migrate(group, new, scene.person(ADMIN_ID, "管理员"))
    assert (await rows(db))["h:1"].chat_id == new


async def test_timeouts_back_off_then_fail_with_the_reason(
    app: LinliApp, db: Database, telegram: FakeTelegram, clock: Clock, world: World
) -> None:
    telegram.fail("timeout", chat_id=GROUP, times=99)
    await put(db, clock, "t:1", GROUP)
    waits = []
    for _ in range(5):
        before = clock()
        await delivery.drain(app)
        row = (await rows(db))["t:1"]
        if row.status != Status.pending:
            break
        waits.append(row.due_at - before)
        clock.now = row.due_at
    assert waits == [timedelta(seconds=s) for s in (5, 30, 120, 600)]
    assert row.status == Status.failed and row.attempts == 5
    assert row.last_error and "gave up after 5 attempts" in row.last_error
    assert "TimedOut" in row.last_error
    assert len([c for c in telegram.calls if c.chat_id == GROUP]) == 5
    assert await delivery.drain(app) == 0


async def test_a_chat_that_does_not_exist_ends_as_gone(
    app: LinliApp, db: Database, telegram: FakeTelegram, clock: Clock, world: World
) -> None:
    await put(db, clock, "x:1", -1009999999999)
    await delivery.drain(app)
    row = (await rows(db))["x:1"]
    assert row.status == Status.gone and row.last_error
    assert "chat not found" in row.last_error.lower()


async def test_a_broken_template_fails_the_row_not_the_sender(
    app: LinliApp, db: Database, telegram: FakeTelegram, clock: Clock, world: World
) -> None:
    await put(db, clock, "bad:1", GROUP, template="test/missing")
    await put(db, clock, "ok:1", GROUP, body="好")
    await delivery.drain(app)
    found = await rows(db)
    assert found["bad:1"].status == Status.failed
    assert found["bad:1"].last_error and "render" in found["bad:1"].last_error
    assert texts(telegram, GROUP) == ["【通知】好"]


# --- quiet hours, pace --------------------------------------------------------------------------


async def test_quiet_hours_hold_a_row_until_morning_but_not_an_urgent_one(
    app: LinliApp, db: Database, telegram: FakeTelegram, clock: Clock, world: World
) -> None:
    clock.now = datetime(2026, 11, 20, 15, 0, tzinfo=UTC)  # 23:00 in Shanghai
    await put(db, clock, "q:normal", GROUP, body="明天的活动", community_id=world.community_id)
    await put(db, clock, "q:urgent", ZH_PERSON, body="燃气泄漏", urgent=True,
              community_id=world.community_id)  # fmt: skip
    await delivery.drain(app)
    assert texts(telegram, ZH_PERSON) == ["【通知】燃气泄漏"]
    assert texts(telegram, GROUP) == []
    row = (await rows(db))["q:normal"]
    morning = datetime(2026, 11, 21, 0, 0, tzinfo=UTC)  # 08:00 in Shanghai
    assert row.status == Status.pending and row.due_at == morning and row.attempts == 0
    clock.now = morning - timedelta(minutes=1)
    await delivery.drain(app)
    assert texts(telegram, GROUP) == []
    clock.now = morning
    await delivery.drain(app)
    assert texts(telegram, GROUP) == ["【通知】明天的活动"]


async def test_the_pace_keeps_within_telegrams_limits(
    db: Database, clock: Clock, world: World
) -> None:
    telegram = FakeTelegram(clock=lambda: clock().timestamp(), limits=TelegramLimits())
    app = make_app(db, telegram, clock)
    telegram.add_chat({"id": GROUP, "type": "supergroup", "title": "3号楼"})
    for i in range(25):  # more than a group may get in a minute
        await put(db, clock, f"pace:{i:02d}", GROUP, body=f"第{i}条")
    for uid in range(600, 640):
        telegram.started.add(uid)
        await put(db, clock, f"pace:p:{uid}", uid, body="私信")
    started = clock().timestamp()
    async with app:
        delivery.start_sender(app)
        await settle(app, db)
        await delivery.stop_sender(app)
    assert telegram.too_many == 0
    group = telegram.sent(GROUP)
    assert [c.text for c in group] == [f"【通知】第{i}条" for i in range(25)]  # in order
    times = [c.result["date"] for c in group]
    assert all(b - a >= 1 for a, b in itertools.pairwise(times))
    assert times[20] >= times[0] + 60  # the 21st waited for the minute to pass
    assert len(telegram.sent()) == 65 and max(telegram.delivered.values()) == 25
    assert times[0] - started < 1  # the first went at once


# --- rhythms ------------------------------------------------------------------------------------


async def test_rhythms_run_in_one_transaction_and_one_failing_spoils_nothing(
    app: LinliApp,
    db: Database,
    telegram: FakeTelegram,
    clock: Clock,
    world: World,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def announce(session: AsyncSession, now: datetime) -> int:
        added = await outbox.enqueue(
            session, key="rh:1", chat_id=GROUP, template="test/notice",
            context={"body": "每周一次"}, due_at=now, now=now,
        )  # fmt: skip
        return int(added)

    async def broken(session: AsyncSession, now: datetime) -> int:
        await outbox.enqueue(
            session, key="rh:broken", chat_id=GROUP, template="test/notice",
            context={"body": "never"}, due_at=now, now=now,
        )  # fmt: skip
        raise RuntimeError("a bug in a rhythm")

    monkeypatch.setattr(app.bot_data.services, "rhythms", [broken, announce])
    assert await delivery.run_rhythms(app) == 1
    assert await delivery.run_rhythms(app) == 0  # idempotent keys: nothing new
    await delivery.drain(app)
    assert texts(telegram, GROUP) == ["【通知】每周一次"]
    assert set(await rows(db)) == {"rh:1"}


async def test_start_up_registers_one_rhythms_job_and_the_sender(
    app: LinliApp, telegram: FakeTelegram
) -> None:
    from bot.app import on_startup
    from handlers import guards, polls

    await on_startup(app)
    assert app.job_queue is not None
    jobs = sorted(str(job.name) for job in app.job_queue.jobs())
    # and the repeat guard's, and the one closing polls
    assert jobs == sorted([delivery.RHYTHMS_JOB, guards.SAVE_JOB, polls.CLOSE_JOB])
    assert delivery.sender_of(app).running
    await delivery.stop_sender(app)
    assert not delivery.sender_of(app).running


async def test_nothing_is_left_pending_by_a_stop_mid_batch(
    app: LinliApp, db: Database, telegram: FakeTelegram, clock: Clock, world: World
) -> None:
    for uid in range(700, 760):
        telegram.started.add(uid)
        await put(db, clock, f"stop:{uid}", uid)
    sender = delivery.start_sender(app)
    for _ in range(100_000):
        if sender.sent >= 10:
            break
        await asyncio.sleep(0)
    assert 10 <= sender.sent < 60
    await delivery.stop_sender(app)
    found = await rows(db)
    leased = [r for r in found.values() if r.status == Status.pending and r.lease_until]
    assert leased == []  # handed back, not stuck behind a lease
    assert all(r.attempts == 0 for r in found.values() if r.status == Status.pending)
    await delivery.drain(app)
    assert sum(telegram.delivered.values()) == 60
    assert max(telegram.delivered.values()) == 1
    async with db.transaction(write=False) as s:
        pending = await s.exec(select(Delivery).where(col(Delivery.status) != Status.sent))
        assert pending.all() == []
