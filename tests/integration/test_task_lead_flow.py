"""A lead's side of volunteer tasks through the application: /newtask step by step, editing an
upcoming task from the lead panel, and signing up a neighbour who cannot tap (proxy sign-up)."""

from __future__ import annotations

from datetime import timedelta

from sqlmodel import select

from bot import delivery
from bot.context import LinliApp
from bot.db import Database
from bot.standin import FakeTelegram, Scene, alerts, messages
from models import ledger, people, tasks
from models.tasks import TaskSignup
from tests.integration.conftest import Clock
from tests.integration.test_tasks_flow import (
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
