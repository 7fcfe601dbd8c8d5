"""A lead's side of volunteer tasks through the application: /newtask step by step, editing an
upcoming task from the lead panel, and signing up a neighbour who cannot tap (proxy sign-up)."""

from __future__ import annotations

from datetime import timedelta

from sqlmodel import select

from bot import delivery
from bot.context import LinliApp
from bot.db import Database
from bot.standin import JSON, Call, FakeTelegram, Scene, alerts, messages
from models import ledger, people, tasks
from models.tasks import TaskSignup
from tests.integration.conftest import Clock
from tests.integration.test_tasks_flow import (
    GROUP,
    LEAD,
    SAM,
    SAT,
    STRANGER,
    WANG,
    _card,
    _group_texts,
    _post,
    _world,
)


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
    assert "替邻居报名：清扫楼道" in choices.text
    labels = [row[0]["text"] for row in choices.buttons[:-1]]
    assert "➕ 王 阿姨 · 3-1-0101" in labels and "➕ Sam Lee · 3-1-0201" in labels
    calls = await scene.tap(lead, choices, "王 阿姨")
    assert alerts(calls) == ["✅ 已替 王 阿姨 报名：清扫楼道。"]
    redrawn = next(c for c in calls if c.method == "editMessageText")
    assert "✅ 王 阿姨 · 3-1-0101" in [row[0]["text"] for row in redrawn.buttons]
    again = await scene.tap(lead, redrawn, "王 阿姨")
    assert alerts(again) == ["王 阿姨 已经报名了：清扫楼道。"]
    full = await scene.tap(lead, redrawn, "Sam Lee")  # one slot: Sam waits
    assert alerts(full) == ["⏳ 名额已满，Sam Lee 排在候补第 1 位：清扫楼道。"]
    # Someone who is no resident of the unit, and buttons that are not the lead's
    await delivery.drain(app)
    card = _card(telegram)
    for who, where, data, expected in (
        (lead, redrawn, f"tl:P:{task_id}:{STRANGER}:0", "不是本单元已认证的居民"),
        (lead, redrawn, f"tl:P:{task_id + 99}:{SAM}:0", "没有找到这个任务"),
        (lead, card, f"tl:P:{task_id}:{SAM}:0", "私聊"),
        (wang, scene.message_json(wang, wang_chat, "hi"), f"tl:P:{task_id}:{SAM}:0", "不是"),
        (wang, scene.message_json(wang, wang_chat, "hi"), f"tl:p:{task_id}:0", "不是"),
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
    calls = await scene.tap(lead, redrawn, "王 阿姨")
    assert alerts(calls) == ["⏳ 名额已满，王 阿姨 排在候补第 1 位：清扫楼道。"]
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
