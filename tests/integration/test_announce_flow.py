"""Announcements as leads write them and neighbours receive them: now, later, on a rhythm."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlmodel import select

from bot import delivery
from bot.app import build_application
from bot.config import load_settings
from bot.context import LinliApp
from bot.db import Database
from bot.standin import JSON, Call, FakeTelegram, Scene, alerts, messages
from models import announcements as ann
from models import people
from models.announcements import Announcement
from models.flows import Flow
from models.outbox import Delivery
from tests.conftest import NOW
from tests.integration.conftest import ADMIN_ID, Clock
from tests.world import World, world

GROUP_B3, GROUP_GRID, GROUP_B5, GROUP_B9 = -700, -701, -702, -703
LEAD, SAM, WANG, ZHAO = 30, 31, 32, 33  # 张网格长 and Sam lead 一网格; 赵姐 leads 二网格
BOSS = people.Authority(person_id=ADMIN_ID, superadmin=True)


async def _world(db: Database) -> World:
    """张网格长 and Sam lead 一网格, 赵姐 二网格; 王阿姨 lives in 3号楼; every building a group."""
    cast = {
        LEAD: ("张网格长", "zh-hans"),
        SAM: ("Sam", "en"),
        WANG: ("王阿姨", "zh-hans"),
        ZHAO: ("赵姐", "zh-hans"),
    }
    chats = {
        GROUP_B3: ("b3", "3号楼邻里群"),
        GROUP_GRID: ("grid1", "一网格大群"),
        GROUP_B5: ("b5", "5号楼邻里群"),
        GROUP_B9: ("b9", "9号楼邻里群"),
    }
    leads = {LEAD: "grid1", SAM: "grid1", ZHAO: "grid2"}
    return await world(
        db, cast=cast, homes={WANG: "3-2-501"}, leads=leads, chats=chats, linked_by=LEAD
    )


def _groups(scene: Scene, *, kicked: int | None = None) -> dict[int, JSON]:
    titles = {GROUP_B3: "3号楼邻里群", GROUP_GRID: "一网格大群", GROUP_B5: "5号楼邻里群"}
    titles[GROUP_B9] = "9号楼邻里群"
    return {
        chat_id: scene.group(
            chat_id, title, bot_status="kicked" if chat_id == kicked else "administrator"
        )
        for chat_id, title in titles.items()
    }


def _lead(scene: Scene) -> JSON:
    return scene.person(LEAD, "张网格长", lang="zh-hans")


def _sam(scene: Scene) -> JSON:
    return scene.person(SAM, "Sam", lang="en")


def _edits(calls: list[Call]) -> list[Call]:
    return [c for c in calls if c.method == "editMessageText" and c.ok]


def _labels(call: Call) -> list[str]:
    return [b["text"] for row in call.buttons for b in row]


def _data(call: Call, wanted: str) -> str:
    return str(next(b["callback_data"] for row in call.buttons for b in row if wanted in b["text"]))


async def _send_due(app: LinliApp) -> None:
    """What the bot's minute does: run the rhythms, then send whatever is due."""
    assert ann.materialise_due in app.bot_data.services.rhythms
    await delivery.run_rhythms(app)
    await delivery.drain(app)


async def _rows(db: Database) -> list[Delivery]:
    async with db.transaction(write=False) as s:
        return list((await s.exec(select(Delivery).order_by(Delivery.id))).all())  # type: ignore[arg-type]


async def _announcements(db: Database) -> list[Announcement]:
    async with db.transaction(write=False) as s:
        return list((await s.exec(select(Announcement))).all())


async def _write(scene: Scene, user: JSON, chat: JSON, ask: Call, text: str) -> list[Call]:
    """Answer the bot's question (in a group, as a reply to it)."""
    reply_to = None if chat["type"] == "private" else scene.message_of(ask)
    return await scene.say(user, chat, text, reply_to=reply_to)


# --- the whole flow ---------------------------------------------------------------------------


async def test_lead_sends_a_notice_now_in_a_building_group(
    scene: Scene, db: Database, app: LinliApp
) -> None:
    await _world(db)
    groups, lead = _groups(scene), _lead(scene)
    (scope,) = messages(await scene.say(lead, groups[GROUP_B3], "/announce"))
    assert "一网格 › 3号楼" in scope.text
    assert _labels(scope) == ["📍 只发「3号楼」的群（1 个）", "🔁 换一个单元", "✖ 取消"]
    calls = await scene.tap(lead, scope, "只发")
    (chosen,) = _edits(calls)
    assert "共 1 个群" in chosen.text and not chosen.buttons
    (ask,) = messages(calls)
    assert "请发来通知的内容" in ask.text and ask.params["reply_markup"]["force_reply"]
    (when,) = messages(await _write(scene, lead, groups[GROUP_B3], ask, "明早 8 点到 12 点停水"))
    assert "明早 8 点到 12 点停水" in when.text
    assert "🚀 现在就发" in _labels(when) and "今天 11月20日 周五" in _labels(when)
    (today,) = _edits(await scene.tap(lead, when, "今天"))
    assert "12:00" in _labels(today)
    assert "08:00" not in _labels(today)  # 10:00 now: the morning has passed
    await scene.tap(lead, when, "换一天")
    (confirm,) = _edits(await scene.tap(lead, when, "现在就发"))
    assert "共 1 个群" in confirm.text and "现在就发" in confirm.text
    assert await _announcements(db) == []  # nothing is written before the lead confirms
    (done,) = _edits(await scene.tap(lead, when, "确认发送"))
    assert "正在发往" in done.text and "1 个群" in done.text
    assert _labels(done) == ["📊 送达情况"]
    (row,) = await _rows(db)
    assert row.chat_id == GROUP_B3 and row.key.startswith("ann:")
    await delivery.drain(app)
    (posted,) = scene.tg.sent(GROUP_B3)[-1:]
    assert posted.text.startswith("📢 通知｜3号楼") and "明早 8 点到 12 点停水" in posted.text
    assert "—— 张网格长" in posted.text
    (report,) = _edits(await scene.tap(lead, done, "送达情况"))
    assert "已送达：1 个群" in report.text and "等待发送：0" in report.text


async def test_lead_schedules_a_photo_notice_privately_for_the_whole_grid_in_english(
    scene: Scene, db: Database, app: LinliApp, clock: Clock
) -> None:
    await _world(db)
    groups, sam = _groups(scene), _sam(scene)
    chat = scene.private(sam)
    (picker,) = messages(await scene.say(sam, chat, "/announce"))
    assert "Choose the unit" in picker.text
    assert _labels(picker)[:3] == ["✅ Choose “一网格”", "3号楼", "5号楼"]
    (scope,) = _edits(await scene.tap(sam, picker, "Choose “一网格”"))
    assert "🌳 Every chat under “一网格” (3)" in _labels(scope)
    calls = await scene.tap(sam, picker, "Every chat under")
    (ask,) = messages(calls)
    assert "send the text" in ask.text and "photo" in ask.text
    photo = [
        {"file_id": "small", "file_unique_id": "s", "width": 90, "height": 90},
        {"file_id": "large", "file_unique_id": "l", "width": 1280, "height": 1280},
    ]
    message = scene.message_json(sam, chat, "", photo=photo, caption="Garden day on Saturday")
    (when,) = messages(await scene.feed({"message": message}))
    assert "With a photo" in when.text and "Garden day on Saturday" in when.text
    await scene.tap(sam, when, "Tomorrow")
    (repeat,) = _edits(await scene.tap(sam, when, "08:00"))
    assert "First send: Sat 21 Nov 08:00" in repeat.text
    (confirm,) = _edits(await scene.tap(sam, repeat, "Does not repeat"))
    assert "3 chat(s)" in confirm.text and "Pinned: no" in confirm.text
    (confirm,) = _edits(await scene.tap(sam, confirm, "Pin: off"))
    assert "Pinned: yes" in confirm.text and "📌 Pin: on" in _labels(confirm)
    (done,) = _edits(await scene.tap(sam, confirm, "Schedule"))
    assert "is scheduled: once, next on Sat 21 Nov 08:00" in done.text
    assert await _rows(db) == []  # the rhythm hands it to the outbox shortly before
    clock.now = NOW + timedelta(hours=21, minutes=58)  # 07:58 on Saturday
    await _send_due(app)
    assert [c.chat_id for c in scene.tg.sent() if c.method == "sendPhoto"] == []
    clock.now = NOW + timedelta(hours=22)
    await _send_due(app)
    photos = [c for c in scene.tg.sent() if c.method == "sendPhoto"]
    assert sorted(c.chat_id or 0 for c in photos) == sorted([GROUP_B3, GROUP_GRID, GROUP_B5])
    assert all(c.params["photo"] == "large" for c in photos)
    assert "📢 通知" in photos[0].text  # in the community's language
    pins = [c for c in scene.tg.calls if c.method == "pinChatMessage" and c.ok]
    assert len(pins) == 3
    assert groups[GROUP_B9]["id"] not in [c.chat_id for c in scene.tg.sent()]


async def test_a_resident_cannot_announce(scene: Scene, db: Database) -> None:
    await _world(db)
    groups = _groups(scene)
    wang = scene.person(WANG, "王阿姨")
    (refused,) = messages(await scene.say(wang, groups[GROUP_B3], "/announce"))
    assert "只有负责人" in refused.text
    (refused,) = messages(await scene.say(wang, groups[GROUP_B3], "/announcements"))
    assert "只有负责人" in refused.text
    async with db.transaction(write=False) as s:
        assert (await s.exec(select(Flow))).all() == []


async def test_forged_buttons_reach_no_other_unit_and_no_other_leads_draft(
    scene: Scene, db: Database
) -> None:
    w = await _world(db)
    groups, lead = _groups(scene), _lead(scene)
    (scope,) = messages(await scene.say(lead, groups[GROUP_B3], "/announce"))
    draft = _data(scope, "只发").split(":")[1]
    (alert,) = alerts(await scene.press(lead, scope, f"ans:{draft}:{w.b9}:1"))
    assert "您不是「9号楼」的负责人" in alert
    (alert,) = alerts(await scene.press(lead, scope, f"any:{draft}"))
    assert "失效" in alert
    # 赵姐 leads elsewhere: she cannot tap 张网格长's draft, even for her own unit.
    zhao = scene.person(ZHAO, "赵姐")
    (alert,) = alerts(await scene.tap(zhao, scope, "只发"))
    assert "别人打开的" in alert
    (alert,) = alerts(await scene.press(zhao, scope, f"ans:{draft}:{w.b9}:0"))
    assert "别人打开的" in alert
    (alert,) = alerts(await scene.press(zhao, scope, f"fc:{draft}:{w.b9}"))
    assert "别人打开的" in alert
    # In the unit picker, another grid's building is refused too.
    await scene.tap(lead, scope, "换一个单元")
    (alert,) = alerts(await scene.press(lead, scope, f"fc:{draft}:{w.b9}"))
    assert "您不是「9号楼」的负责人" in alert
    assert await _announcements(db) == [] and await _rows(db) == []
    async with db.transaction(write=False) as s:
        (kept,) = (await s.exec(select(Flow))).all()
        assert "unit" not in kept.data


async def test_empty_text_is_asked_for_again(scene: Scene, db: Database) -> None:
    await _world(db)
    groups, lead = _groups(scene), _lead(scene)
    (scope,) = messages(await scene.say(lead, groups[GROUP_B3], "/announce"))
    (ask,) = messages(await scene.tap(lead, scope, "只发"))
    (again,) = messages(await _write(scene, lead, groups[GROUP_B3], ask, "   "))
    assert "通知内容是空的" in again.text and "请重新发来" in again.text
    assert again.params["reply_markup"]["force_reply"]
    (when,) = messages(await _write(scene, lead, groups[GROUP_B3], again, "周六大扫除"))
    assert "什么时候发" in when.text


async def test_a_typed_time_in_the_past_is_refused_and_asked_again(
    scene: Scene, db: Database
) -> None:
    await _world(db)
    sam = _sam(scene)
    _groups(scene)
    chat = scene.private(sam)
    (picker,) = messages(await scene.say(sam, chat, "/announce"))
    await scene.tap(sam, picker, "Choose “一网格”")
    (ask,) = messages(await scene.tap(sam, picker, "Only"))
    assert "send the text" in ask.text and "force_reply" not in ask.params.get("reply_markup", {})
    (when,) = messages(await scene.say(sam, chat, "Water off tomorrow"))
    (ask_time,) = messages(await scene.tap(sam, when, "Type a date"))
    assert "11-21 9:00" in ask_time.text  # the example is tomorrow
    (again,) = messages(await scene.say(sam, chat, "09:30"))  # it is 10:00
    assert "already passed" in again.text and "Send the date and time" in again.text
    (again,) = messages(await scene.say(sam, chat, "half past six"))
    assert "could not read" in again.text
    # A time button that has gone stale meanwhile is refused the same way.
    fid = _data(when, "Cancel").split(":")[1]
    (alert,) = alerts(await scene.press(sam, when, f"ft:{fid}:20261120:0900"))
    assert "already passed" in alert
    (repeat,) = messages(await scene.say(sam, chat, "2026-11-21 18:30"))
    assert "First send: Sat 21 Nov 18:30" in repeat.text


async def test_day_31_in_a_30_day_month_goes_out_on_the_30th(
    scene: Scene, db: Database, app: LinliApp, clock: Clock
) -> None:
    await _world(db)
    groups, lead = _groups(scene), _lead(scene)
    (scope,) = messages(await scene.say(lead, groups[GROUP_B3], "/announce"))
    (ask,) = messages(await scene.tap(lead, scope, "只发"))
    (when,) = messages(await _write(scene, lead, groups[GROUP_B3], ask, "月底交物业费"))
    await scene.tap(lead, when, "明天")
    await scene.tap(lead, when, "08:00")
    (days,) = _edits(await scene.tap(lead, when, "每月"))
    assert "✅21" in _labels(days) and "每月 21 日 08:00" in days.text
    await scene.tap(lead, when, "✅21")
    (days,) = _edits(await scene.tap(lead, when, "31"))
    assert "每月 31 日 08:00" in days.text and "没有 31 号" in days.text
    (confirm,) = _edits(await scene.tap(lead, when, "选好了"))
    assert "11月30日（周一）08:00" in confirm.text and "12月31日（周四）08:00" in confirm.text
    assert "在最后一天发" in confirm.text
    (done,) = _edits(await scene.tap(lead, when, "确认安排"))
    assert "每月 31 日 08:00，下一次 11月30日（周一）08:00" in done.text
    before = len(scene.tg.sent(GROUP_B3))
    clock.now = datetime.fromisoformat("2026-11-30T00:00:00+00:00")  # 08:00 in Shanghai
    await _send_due(app)
    posted = scene.tg.sent(GROUP_B3)[before:]
    assert [c.text.splitlines()[-3] for c in posted] == ["月底交物业费"]
    (row,) = await _rows(db)
    assert row.key.split(":")[2] == "20261130"
    (a,) = await _announcements(db)
    assert a.next_occurrence == datetime.fromisoformat("2026-12-31T00:00:00+00:00")


async def test_markup_in_the_text_is_shown_literally(
    scene: Scene, db: Database, app: LinliApp
) -> None:
    await _world(db)
    groups, lead = _groups(scene), _lead(scene)
    typed = "<b>停水</b> & <i>明早 a<b"
    (scope,) = messages(await scene.say(lead, groups[GROUP_B3], "/announce"))
    (ask,) = messages(await scene.tap(lead, scope, "只发"))
    (when,) = messages(await _write(scene, lead, groups[GROUP_B3], ask, typed))
    assert typed in when.text
    (confirm,) = _edits(await scene.tap(lead, when, "现在就发"))
    assert typed in confirm.text
    await scene.tap(lead, when, "确认发送")
    await delivery.drain(app)
    (posted,) = scene.tg.sent(GROUP_B3)[-1:]
    assert posted.ok and typed in posted.text
    assert "&lt;b&gt;停水&lt;/b&gt; &amp; &lt;i&gt;" in posted.params["text"]


async def test_a_scheduled_notice_survives_a_restart_and_goes_out_once(
    scene: Scene, db: Database, app: LinliApp, clock: Clock, telegram: FakeTelegram
) -> None:
    await _world(db)
    groups, lead = _groups(scene), _lead(scene)
    (scope,) = messages(await scene.say(lead, groups[GROUP_B3], "/announce"))
    (ask,) = messages(await scene.tap(lead, scope, "只发"))
    (when,) = messages(await _write(scene, lead, groups[GROUP_B3], ask, "今晚 8 点开楼栋会"))
    await scene.tap(lead, when, "今天")
    await scene.tap(lead, when, "20:00")
    await scene.tap(lead, when, "不重复")
    await scene.tap(lead, when, "确认安排")
    before = len(telegram.sent(GROUP_B3))
    # The bot restarts: a new application over the same database.
    settings = load_settings(bot_token="", admins=str(ADMIN_ID), _env_file=None)
    clock.now = NOW + timedelta(hours=10)  # 20:00
    async with build_application(settings, request=telegram, db=db, clock=clock) as again:
        for _ in range(2):
            await _send_due(again)
        clock.now += timedelta(minutes=3)
        await _send_due(again)
    posted = telegram.sent(GROUP_B3)[before:]
    assert len(posted) == 1 and "今晚 8 点开楼栋会" in posted[0].text


async def test_lead_cancels_a_weekly_notice_and_unsent_messages_are_withdrawn(
    scene: Scene, db: Database, app: LinliApp, clock: Clock
) -> None:
    await _world(db)
    groups, lead = _groups(scene), _lead(scene)
    (scope,) = messages(await scene.say(lead, groups[GROUP_GRID], "/announce"))
    (ask,) = messages(await scene.tap(lead, scope, "下的所有群"))
    (when,) = messages(await _write(scene, lead, groups[GROUP_GRID], ask, "每周六垃圾分类督导"))
    await scene.tap(lead, when, "明天")
    await scene.tap(lead, when, "08:00")
    (days,) = _edits(await scene.tap(lead, when, "每周"))
    assert "✅ 周六" in _labels(days) and "每周六 08:00" in days.text
    await scene.tap(lead, when, "选好了")
    await scene.tap(lead, when, "确认安排")
    # The rhythm has handed Saturday's messages to the outbox, none sent yet.
    async with db.transaction() as s:
        assert await ann.materialise_due(s, NOW + timedelta(hours=21, minutes=57)) == 3
    (listing,) = messages(await scene.say(lead, groups[GROUP_GRID], "/announcements"))
    (a,) = await _announcements(db)
    assert f"#{a.id}" in listing.text and "每周六 08:00" in listing.text
    assert "下一次：11月21日（周六）08:00" in listing.text  # in the outbox, not yet sent
    (confirm,) = _edits(await scene.tap(lead, listing, f"取消 #{a.id}"))
    assert "确定要取消" in confirm.text
    (cancelled,) = _edits(await scene.tap(lead, listing, "是的，取消它"))
    assert "已取消" in cancelled.text and "3 条消息已撤回" in cancelled.text
    (alert,) = alerts(await scene.press(lead, listing, f"aly:{a.id}"))
    assert "已经取消过了" in alert
    clock.now = NOW + timedelta(days=8)
    sent_before = len(scene.tg.sent())
    await _send_due(app)
    assert scene.tg.sent()[sent_before:] == []
    assert {r.status for r in await _rows(db)} == {"failed"}
    (empty,) = messages(await scene.say(lead, groups[GROUP_GRID], "/announcements"))
    assert "没有待发或定期的通知" in empty.text


async def test_delivery_report_names_the_chats_that_could_not_be_reached(
    scene: Scene, db: Database, app: LinliApp
) -> None:
    await _world(db)
    groups, sam = _groups(scene, kicked=GROUP_B5), _sam(scene)
    (scope,) = messages(await scene.say(sam, groups[GROUP_GRID], "/announce"))
    (ask,) = messages(await scene.tap(sam, scope, "Every chat under"))
    (when,) = messages(await _write(scene, sam, groups[GROUP_GRID], ask, "Lift repair today"))
    await scene.tap(sam, when, "Send now")
    (done,) = _edits(await scene.tap(sam, when, "Send"))
    assert "going out to 3 chat(s)" in done.text
    (report,) = _edits(await scene.tap(sam, done, "Delivery report"))
    assert "Waiting: 3" in report.text
    await delivery.drain(app)
    (report,) = _edits(await scene.tap(sam, done, "Refresh"))
    assert "Delivered: 2 chat(s)" in report.text and "Waiting: 0" in report.text
    assert "Unreachable (the bot was removed): 1 chat(s)" in report.text
    assert "· 5号楼邻里群" in report.text
    # Another lead of the grid sees it in /announcements, with the same report.
    lead = _lead(scene)
    (listing,) = messages(await scene.say(lead, scene.private(lead), "/announcements"))
    assert "Lift repair today" in listing.text and "已发出" in listing.text
    (report,) = _edits(await scene.tap(lead, listing, "📊"))
    assert "已送达：2 个群" in report.text and "5号楼邻里群" in report.text


async def test_lead_picks_another_unit_privately(scene: Scene, db: Database, app: LinliApp) -> None:
    await _world(db)
    groups, lead = _groups(scene), _lead(scene)
    chat = scene.private(lead)
    (picker,) = messages(await scene.say(lead, chat, "/announce"))
    assert "请选择要通知的单元" in picker.text
    assert _labels(picker) == ["✅ 就选「一网格」", "3号楼", "5号楼", "✖ 取消"]
    (scope,) = _edits(await scene.tap(lead, picker, "5号楼"))
    assert "一网格 › 5号楼" in scope.text and "📍 只发「5号楼」的群（1 个）" in _labels(scope)
    (ask,) = messages(await scene.tap(lead, picker, "只发"))
    assert "force_reply" not in ask.params.get("reply_markup", {})
    (when,) = messages(await scene.say(lead, chat, "5号楼电梯明天检修"))
    await scene.tap(lead, when, "现在就发")
    (confirm,) = _edits(await scene.tap(lead, when, "静音：关"))
    assert "静音：是" in confirm.text
    await scene.tap(lead, when, "确认发送")
    await delivery.drain(app)
    posted = [c for c in scene.tg.sent() if c.chat_id and c.chat_id < 0]
    assert [c.chat_id for c in posted] == [GROUP_B5]
    assert posted[0].params["disable_notification"] is True
    assert groups[GROUP_B5]["title"] == "5号楼邻里群"


async def test_a_new_draft_retires_the_old_one_and_a_draft_can_be_dropped(
    scene: Scene, db: Database
) -> None:
    await _world(db)
    groups, lead = _groups(scene), _lead(scene)
    (old,) = messages(await scene.say(lead, groups[GROUP_B3], "/announce"))
    (new,) = messages(await scene.say(lead, groups[GROUP_B3], "/announce"))
    (alert,) = alerts(await scene.tap(lead, old, "只发"))
    assert "草稿已经完成或取消了" in alert
    (dropped,) = _edits(await scene.tap(lead, new, "取消"))
    assert "不发了" in dropped.text and not dropped.buttons
    (note,) = alerts(await scene.press(lead, new, _data(new, "取消")))
    assert "草稿已经完成或取消了" in note
    assert await _announcements(db) == []
