"""A lead's side of volunteer tasks through the application: /newtask step by step, editing an
upcoming task from the lead panel, and signing up a neighbour who cannot tap (proxy sign-up)."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from sqlmodel import col, select

from bot import delivery
from bot.context import LinliApp
from bot.db import Database
from bot.standin import JSON, Call, FakeTelegram, Scene, alerts, messages
from models import ledger, people, tasks
from models.outbox import Delivery, Status
from models.tasks import TaskSignup
from tests.integration.conftest import Clock
from tests.integration.test_tasks_flow import (
    FORUM,
    GROUP,
    LEAD,
    NEIGHBOURS,
    SAM,
    SAT,
    STRANGER,
    WANG,
    ZONE,
    _card,
    _group_texts,
    _latest_card_text,
    _post,
    _settle,
    _world,
)


def _edited(calls: list[Call]) -> Call:
    return next(c for c in calls if c.method == "editMessageText")


async def test_a_lead_signs_up_a_neighbour_who_withdraws_herself_and_is_credited_like_anyone(
    app: LinliApp, scene: Scene, db: Database, telegram: FakeTelegram, clock: Clock
) -> None:
    w = await _world(db, scene)
    task_id = await _post(db, w, clock, slots=1)
    lead, wang = scene.person(LEAD, "张网格长"), scene.person(WANG, "王 阿姨")
    lead_chat, wang_chat = scene.private(lead), scene.private(wang)
    telegram.started.update({LEAD, WANG, SAM})
    listing = messages(await scene.say(lead, lead_chat, "/tasks"), LEAD)[0]
    panel = next(
        c for c in await scene.tap(lead, listing, "🛠 清扫楼道") if c.method == "editMessageText"
    )
    calls = await scene.tap(lead, panel, "替邻居报名")
    choices = next(c for c in calls if c.method == "editMessageText")
    assert "替邻居报名：清扫楼道" in choices.text  # the one resident picker, the task's heading
    labels = [row[0]["text"] for row in choices.buttons]
    assert "👤 王 阿姨（3-1-0101）" in labels and "👤 Sam Lee（3-1-0201）" in labels
    assert not any("张网格长" in text for text in labels)  # not the lead themself
    fid = next(b["callback_data"] for row in choices.buttons for b in row
               if b["text"].startswith("👤 王 阿姨")).split(":")[1]  # fmt: skip
    calls = await scene.tap(lead, choices, "王 阿姨")
    done = next(c for c in calls if c.method == "editMessageText")
    assert "✅ 已替 王 阿姨 报名：清扫楼道。" in done.text
    stale = await scene.press(lead, done, f"fv:{fid}:{SAM}:0:1")  # that flow made its sign-up
    assert alerts(stale) and "王 阿姨" not in alerts(stale)[0]
    choices = _edited(await scene.tap(lead, done, "再替一位"))
    again = _edited(await scene.tap(lead, choices, "王 阿姨"))
    assert "王 阿姨 已经报名了：清扫楼道。" in again.text
    choices = _edited(await scene.tap(lead, again, "再替一位"))
    full = _edited(await scene.tap(lead, choices, "Sam Lee"))
    assert "⏳ 名额已满，Sam Lee 排在候补第 1 位：清扫楼道。" in full.text  # one slot: Sam waits
    # Someone who is no resident of the unit, and buttons that are not the lead's
    await delivery.drain(app)
    card = _card(telegram)
    choices = _edited(await scene.tap(lead, full, "再替一位"))
    fid = next(b["callback_data"] for row in choices.buttons for b in row
               if b["text"].startswith("👤 王 阿姨")).split(":")[1]  # fmt: skip
    hi = scene.message_json(wang, wang_chat, "hi")
    for who, where, data, expected in (
        (lead, choices, f"fv:{fid}:{STRANGER}:0:1", "不在您负责的楼栋或单元里"),
        (lead, choices, f"tl:p:{task_id + 99}", "没有找到这个任务"),
        (lead, card, f"fv:{fid}:{SAM}:0:1", "私聊"),
        (lead, card, f"tl:p:{task_id}", "私聊"),
        (wang, hi, f"fv:{fid}:{SAM}:0:1", "只有本人可以继续"),
        (wang, hi, f"tl:p:{task_id}", "不是"),
    ):
        calls = await scene.press(who, where, data)
        assert expected in alerts(calls)[0], (data, alerts(calls))
    async with db.transaction(write=False) as s:
        rows = (await s.exec(select(TaskSignup).where(TaskSignup.task_id == task_id))).all()
    assert {(r.person_id, r.by, r.status) for r in rows} == {
        (WANG, LEAD, "signed_up"),
        (SAM, LEAD, "waitlisted"),
    }
    # 王阿姨 is told privately that the lead signed her up, and withdraws herself
    await delivery.drain(app)
    (confirmation,) = [c for c in messages(telegram.calls, WANG) if "清扫楼道" in c.text]
    assert "由负责人代为报名" in confirmation.text
    calls = await scene.tap(wang, confirmation, "退出")
    assert any("已退出「清扫楼道」" in c.text for c in calls if c.method == "editMessageText")
    # Sam moved up; the lead signs 王阿姨 up again; both come and are credited
    calls = await scene.tap(lead, choices, "王 阿姨")
    after = next(c for c in calls if c.method == "editMessageText")
    assert "⏳ 名额已满，王 阿姨 排在候补第 1 位：清扫楼道。" in after.text
    async with db.transaction() as s:
        auth = await people.authority(s, person_id=LEAD, superadmin=False)
        await tasks.edit_task(s, auth=auth, task_id=task_id, slots=2, now=clock())
    clock.now = (SAT + timedelta(hours=3)).astimezone(clock.now.tzinfo)
    async with db.transaction() as s:
        auth = await people.authority(s, person_id=LEAD, superadmin=False)
        for pid in (WANG, SAM):
            await tasks.mark(s, auth=auth, task_id=task_id, person_id=pid, present=True,
                             now=clock())  # fmt: skip
        await tasks.confirm_attendance(s, auth=auth, task_id=task_id, now=clock())
    async with db.transaction(write=False) as s:
        assert await ledger.balance(s, community_id=w.community, person_id=WANG) == 10
        assert await ledger.balance(s, community_id=w.community, person_id=SAM) == 10
    for text in _group_texts(telegram):
        assert "3-1-" not in text


# --- /newtask --------------------------------------------------------------------------------


def _last(calls: list[Call], chat_id: int) -> Call:
    """The bot's latest message (sent or edited) in a chat."""
    shown = [
        c for c in calls
        if c.method in ("sendMessage", "editMessageText") and c.ok and c.chat_id == chat_id
    ]  # fmt: skip
    assert shown, [c.method for c in calls]
    return shown[-1]


async def _type(scene: Scene, user: JSON, chat: JSON, text: str) -> Call:
    return _last(await scene.say(user, chat, text), int(chat["id"]))


async def _tap(scene: Scene, user: JSON, message: Call, label: str) -> list[Call]:
    return await scene.tap(user, message, label)


async def test_newtask_from_a_group_step_by_step_with_a_venue_posted_once(
    app: LinliApp, scene: Scene, db: Database, telegram: FakeTelegram, clock: Clock
) -> None:
    w = await _world(db, scene)
    lead = scene.person(LEAD, "张网格长")
    lead_chat = scene.private(lead)
    telegram.started.add(LEAD)
    group = {"id": GROUP, "type": "group", "title": "3号楼邻里群"}
    calls = await scene.say(lead, group, "/newtask")
    assert [c.text for c in messages(calls, GROUP)] == ["已私信发给您了 📬"]
    (begin,) = messages(calls, LEAD)
    assert "发布志愿任务" in begin.text
    asked = _last(await scene.tap(lead, begin, "开始"), LEAD)
    assert "请输入任务标题" in asked.text
    # A title too long is refused, and asked again
    asked = await _type(scene, lead, lead_chat, "长" * 101)
    assert "标题太长" in asked.text or "100" in asked.text, asked.text
    picker = await _type(scene, lead, lead_chat, "清扫楼道 <b>")
    assert "发到哪个单元" in picker.text
    # /newtask came from 3号楼's group: the unit picker opens there
    calls = await scene.tap(lead, picker, "就选「3号楼」")
    asked = _last(calls, LEAD)
    assert "任务说明" in asked.text
    calls = await scene.tap(lead, asked, "跳过")
    days = _last(calls, LEAD)
    assert "哪天" in days.text
    times = _last(await scene.tap(lead, days, "11月28日"), LEAD)
    ends = _last(await scene.tap(lead, times, "09:00"), LEAD)
    asked = _last(await scene.tap(lead, ends, "到 11:00"), LEAD)
    assert "在哪里" in asked.text
    venue = scene.message_json(
        lead, lead_chat, "",
        venue={"location": {"latitude": 31.2, "longitude": 121.5}, "title": "3号楼",
               "address": "门口"},
        location={"latitude": 31.2, "longitude": 121.5},
    )  # fmt: skip
    asked = _last(await scene.feed({"message": venue}), LEAD)
    assert "需要几个人" in asked.text
    for typed, problem in (("abc", "名额数字"), ("0", ""), ("1001", "1000")):
        asked = await _type(scene, lead, lead_chat, typed)
        assert "⚠️" in asked.text and problem in asked.text, asked.text
    asked = _last(await scene.tap(lead, asked, "5"), LEAD)
    assert "积分" in asked.text and "10 分" in asked.text
    skills = _last(await scene.tap(lead, asked, "10（规则默认）"), LEAD)
    repeat = _last(await scene.tap(lead, skills, "清洁"), LEAD)
    preview = _last(await scene.tap(lead, repeat, "不重复"), LEAD)
    assert "预览" in preview.text and "发到：3号楼" in preview.text
    assert "清扫楼道 &lt;b&gt;" in preview.text or "清扫楼道 <b>" in preview.text
    posted = await scene.tap(lead, preview, "发布")
    assert "已发布" in _last(posted, LEAD).text
    again = await scene.press(lead, preview, preview.buttons[0][0]["callback_data"])
    assert alerts(again) == ["这个任务已经发布过了，不会重复发布。"]
    async with db.transaction(write=False) as s:
        (task,) = (await s.exec(select(tasks.Task))).all()
    assert (task.title, task.slots, task.points, task.skill, task.unit_id) == (
        "清扫楼道 <b>",
        5,
        10,
        "cleaning",
        w.b3,
    )
    assert task.place == "3号楼 门口" and task.latitude == 31.2
    assert task.starts_at == SAT and task.ends_at == SAT + timedelta(hours=2)
    await delivery.drain(app)
    card = _card(telegram)  # once in 3号楼's group, though asked from there as well
    assert "清扫楼道" in card.text and "0/5" in card.text
    # the preview showed the card exactly as the group sees it
    assert card.text in preview.text


async def test_a_monthly_series_in_english_previews_short_months_and_posts_its_first_dates(
    app: LinliApp, scene: Scene, db: Database, telegram: FakeTelegram, clock: Clock
) -> None:
    await _world(db, scene)
    lead = scene.person(LEAD, "Zhang", lang="en")
    chat = scene.private(lead)
    asked = await _type(scene, lead, chat, "/newtask")
    assert "New task" in asked.text
    picker = await _type(scene, lead, chat, "Service day")
    asked = _last(await scene.tap(lead, picker, "Choose “一网格”"), LEAD)
    asked = await _type(scene, lead, chat, "Bring gloves")
    days = asked
    asked = _last(await scene.tap(lead, days, "Type a date and time"), LEAD)
    asked = await _type(scene, lead, chat, "2026-12-09 09:00-11:30")
    assert "Where?" in asked.text
    asked = await _type(scene, lead, chat, "Community square")
    asked = await _type(scene, lead, chat, "20")
    asked = await _type(scene, lead, chat, "5000")  # points: out of range, asked again
    assert "⚠️" in asked.text and "1000" in asked.text
    skills = await _type(scene, lead, chat, "15")
    repeat = _last(await scene.tap(lead, skills, "Elderly care"), LEAD)
    chosen = _last(await scene.tap(lead, repeat, "Every month"), LEAD)
    for day in ("19", "29"):
        chosen = _last(await scene.tap(lead, chosen, day), LEAD)
    preview = _last(await scene.tap(lead, chosen, "Done"), LEAD)
    assert "Monthly on the 9, 19, 29" in preview.text
    assert "first dates: 9 Dec, 19 Dec, 29 Dec, 9 Jan, 19 Jan, 29 Jan" in preview.text
    assert "Some months have no day 29" in preview.text and "last day" in preview.text
    assert "👥 已报名 0/20" in preview.text  # the card in the community's language
    posted = _last(await scene.tap(lead, preview, "Post"), LEAD)
    assert "repeating; this is the first" in posted.text
    async with db.transaction(write=False) as s:
        made = (await s.exec(select(tasks.Task).order_by(col(tasks.Task.starts_at)))).all()
        (series,) = (await s.exec(select(tasks.TaskSeries))).all()
    assert [t.occurs_on.day for t in made if t.occurs_on] == [9, 19, 29]
    assert {(t.points, t.slots, t.skill, t.description) for t in made} == {
        (15, 20, "elderly_care", "Bring gloves")
    }
    assert series.days == [9, 19, 29] and series.repeat == "monthly"
    assert made[0].latitude is None and made[0].place == "Community square"


async def test_newtask_refuses_forged_buttons_half_drafts_and_non_leads(
    app: LinliApp, scene: Scene, db: Database, telegram: FakeTelegram, clock: Clock
) -> None:
    await _world(db, scene)
    lead, wang = scene.person(LEAD, "张网格长"), scene.person(WANG, "王 阿姨")
    lead_chat, wang_chat = scene.private(lead), scene.private(wang)
    refused = await _type(scene, wang, wang_chat, "/newtask")
    assert "只有负责人" in refused.text
    asked = await _type(scene, lead, lead_chat, "/newtask")
    fid = int(asked.buttons[0][0]["callback_data"].split(":")[1])  # the cancel button's flow
    for who, data, expected in (
        (lead, f"tn:{fid}:post", "还没填完"),  # Post before the draft is complete
        (lead, f"tn:{fid}:s:7", "按钮已失效"),  # not an offered number
        (lead, f"tn:{fid}:p:5000", "0 到 1000"),
        (lead, f"tn:{fid}:k:juggling", "按钮已失效"),
        (lead, f"tn:{fid + 99}:post", "按钮已失效"),
        (wang, f"tn:{fid}:post", "只有本人"),
        (wang, f"tn:{fid}:s:5", "只有本人"),
    ):
        home = scene.message_json(who, lead_chat if who is lead else wang_chat, "hi")
        calls = await scene.press(who, home, data)
        assert alerts(calls) and expected in alerts(calls)[0], (data, alerts(calls))
    # in a group, the private draft's buttons are refused
    group = {"id": GROUP, "type": "group", "title": "3号楼邻里群"}
    calls = await scene.press(lead, scene.message_json(lead, group, "x"), f"tn:{fid}:s:5")
    assert "私聊" in alerts(calls)[0]
    # the one cancel button: nothing kept, a late answer is not taken for a title
    cancel = next(b["text"] for row in asked.buttons for b in row)
    await scene.tap(lead, asked, cancel)
    calls = await scene.say(lead, lead_chat, "清扫楼道")
    assert not any("发到哪个单元" in c.text for c in messages(calls, LEAD))
    async with db.transaction(write=False) as s:
        assert (await s.exec(select(tasks.Task))).all() == []


async def test_newtask_from_a_group_of_a_lead_who_never_opened_the_bot(
    app: LinliApp, scene: Scene, db: Database, telegram: FakeTelegram, clock: Clock
) -> None:
    await _world(db, scene)
    lead = scene.person(LEAD, "张网格长")
    group = {"id": GROUP, "type": "group", "title": "3号楼邻里群"}
    calls = await scene.say(lead, group, "/newtask")
    (offer,) = messages(calls, GROUP)
    link = offer.buttons[0][0]["url"]
    assert "?start=newtask-" in link and "私聊里进行" in offer.text
    payload = link.split("?start=")[1]
    asked = await _type(scene, lead, scene.private(lead), f"/start {payload}")
    assert "请输入任务标题" in asked.text


@pytest.mark.shows_in_group(f"邻居{NEIGHBOURS[0]}")  # signed up on the card: first names shown
async def test_editing_an_upcoming_task_tells_volunteers_and_the_card_follows(
    app: LinliApp, scene: Scene, db: Database, telegram: FakeTelegram, clock: Clock
) -> None:
    w = await _world(db, scene)
    task_id = await _post(db, w, clock, slots=3)
    telegram.started.update({LEAD, WANG, SAM, NEIGHBOURS[0]})
    for pid in (WANG, SAM, NEIGHBOURS[0]):
        async with db.transaction() as s:
            await tasks.sign_up(s, task_id=task_id, person_id=pid, now=clock())
    await delivery.drain(app)
    lead = scene.person(LEAD, "张网格长")
    chat = scene.private(lead)
    listing = messages(await scene.say(lead, chat, "/tasks"), LEAD)[0]
    panel = _last(await scene.tap(lead, listing, "🛠 清扫楼道"), LEAD)
    menu = _last(await scene.tap(lead, panel, "✏️ 修改"), LEAD)
    assert "修改：清扫楼道" in menu.text and "3/3" in menu.text
    _last(await scene.tap(lead, menu, "📍 地点"), LEAD)
    menu = await _type(scene, lead, chat, "5号楼门口")
    assert "已保存：地点" in menu.text and "已私信通知 3 位志愿者" in menu.text
    _last(await scene.tap(lead, menu, "📍 地点"), LEAD)
    shared = scene.message_json(lead, chat, "", location={"latitude": 31.2, "longitude": 121.5})
    menu = _last(await scene.feed({"message": shared}), LEAD)  # a pin: the name stays
    assert "已保存：位置" in menu.text and "📍 5号楼门口" in menu.text
    asked = _last(await scene.tap(lead, menu, "👥 名额"), LEAD)
    asked = await _type(scene, lead, chat, "0")
    assert "⚠️" in asked.text
    menu = await _type(scene, lead, chat, "2")
    assert f"邻居{NEIGHBOURS[0]}" in menu.text and "候补最前面" in menu.text
    days = _last(await scene.tap(lead, menu, "🕘 时间"), LEAD)
    times = _last(await scene.tap(lead, days, "11月29日"), LEAD)
    ends = _last(await scene.tap(lead, times, "10:00"), LEAD)
    menu = _last(await scene.tap(lead, ends, "到 12:00"), LEAD)
    assert "已保存：时间" in menu.text and "11月29日" in menu.text
    _last(await scene.tap(lead, menu, "📄 说明"), LEAD)
    menu = await _type(scene, lead, chat, "请带手套")
    assert "已保存：说明" in menu.text and "请带手套" in menu.text
    await _settle(app, clock)
    card = _latest_card_text(telegram)
    assert "5号楼门口" in card and "11月29日" in card and "2/2" in card and "候补 1" in card
    told = [c.text for c in messages(telegram.calls, WANG) if "有变化" in c.text]
    assert len(told) == 3 and "11月29日" in told[-1]
    (moved,) = [c.text for c in messages(telegram.calls, NEIGHBOURS[0]) if "候补第 1 位" in c.text]
    assert "减少" in moved
    async with db.transaction(write=False) as s:
        rows = (
            await s.exec(select(Delivery).where(col(Delivery.key).startswith("taskrem:")))
        ).all()
    pending = {r.due_at for r in rows if r.status == Status.pending}
    new_start = datetime(2026, 11, 29, 10, 0, tzinfo=ZONE)
    assert pending == {new_start - timedelta(hours=24), new_start - timedelta(hours=1)}
    # a forged edit: another person, a stale flow, a task already started
    wang = scene.person(WANG, "王 阿姨")
    home = scene.message_json(wang, scene.private(wang), "hi")
    assert "不是" in alerts(await scene.press(wang, home, f"tl:e:{task_id}"))[0]
    fid = int(menu.buttons[0][0]["callback_data"].split(":")[1])
    assert "只有本人" in alerts(await scene.press(wang, home, f"te:{fid}:s:3"))[0]
    # cancelling tells those signed up and those waiting; the card says so
    panel = _last(await scene.tap(lead, menu, "◀ 返回"), LEAD)
    ask = _last(await scene.tap(lead, panel, "❌ 取消任务"), LEAD)
    await scene.tap(lead, ask, "❌ 确定取消")
    await _settle(app, clock)
    for pid, cancelled in ((WANG, "任务已取消"), (SAM, "Cancelled"), (NEIGHBOURS[0], "任务已取消")):
        assert any(cancelled in c.text for c in messages(telegram.calls, pid)), pid
    assert "已取消" in _latest_card_text(telegram)
    calls = await scene.press(lead, scene.message_json(lead, chat, "hi"), f"tl:e:{task_id}")
    assert "已经取消了" in alerts(calls)[0]


async def test_newtask_from_a_forum_topic_also_posts_the_card_there_in_english(
    app: LinliApp, scene: Scene, db: Database, telegram: FakeTelegram, clock: Clock
) -> None:
    w = await _world(db, scene)
    lead = scene.person(LEAD, "Zhang", lang="en")
    chat = scene.private(lead)
    telegram.started.add(LEAD)
    forum = {"id": FORUM, "type": "supergroup", "title": "幸福里论坛", "is_forum": True}
    calls = await scene.say(lead, forum, "/newtask", thread=w.topic)
    (note,) = messages(calls, FORUM)
    assert note.params["message_thread_id"] == w.topic and "privately" in note.text
    (begin,) = messages(calls, LEAD)
    _last(await scene.tap(lead, begin, "Begin"), LEAD)
    picker = await _type(scene, lead, chat, "Fix bikes")
    # the topic serves 5号楼: the picker opens there; the lead chooses 3号楼 (one level up)
    assert "5号楼" in picker.text
    level = _last(await scene.tap(lead, picker, "Up one level"), LEAD)
    asked = _last(await scene.tap(lead, level, "3号楼"), LEAD)
    days = _last(await scene.tap(lead, asked, "Skip"), LEAD)
    times = _last(await scene.tap(lead, days, "Sat 28 Nov"), LEAD)
    ends = _last(await scene.tap(lead, times, "09:00"), LEAD)
    _last(await scene.tap(lead, ends, "No end time"), LEAD)
    asked = await _type(scene, lead, chat, "Bike shed")
    asked = _last(await scene.tap(lead, asked, "Unlimited"), LEAD)
    skills = _last(await scene.tap(lead, asked, "0"), LEAD)
    repeat = _last(await scene.tap(lead, skills, "No particular skill"), LEAD)
    preview = _last(await scene.tap(lead, repeat, "Does not repeat"), LEAD)
    assert "09:00–11:00" in preview.text and "0/不限" in preview.text  # 2 hours when no end
    assert "Goes to: 3号楼" in preview.text
    await scene.tap(lead, preview, "Post")
    await delivery.drain(app)
    group_card, topic_card = _card(telegram, GROUP), _card(telegram, FORUM)
    assert topic_card.params["message_thread_id"] == w.topic
    assert group_card.text == topic_card.text and "Fix bikes" in topic_card.text
    assert "积分" not in topic_card.text  # no points: the line is left out
