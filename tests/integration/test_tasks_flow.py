"""Volunteer tasks as neighbours and leads see them: the card in a group and in a topic, signing
up by one tap in zh and en, the waitlist, reminders once across a restart, check-in by QR,
attendance credited once, and nothing private in any group message."""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlmodel import col, select

from bot import delivery
from bot.app import build_application
from bot.config import load_settings
from bot.context import LinliApp
from bot.db import Database
from bot.render import visible_length
from bot.standin import Call, FakeTelegram, Scene, alerts, messages
from models import ledger, people, tasks
from models.outbox import Delivery, Status
from tests.conftest import NOW
from tests.integration.conftest import Clock, GroupPrivacy

ZONE = ZoneInfo("Asia/Shanghai")
GROUP, FORUM = -900, -901
LEAD, WANG, SAM, STRANGER = 40, 41, 42, 43
NEIGHBOURS = list(range(500, 506))  # more verified residents of 3号楼
SAT = datetime(2026, 11, 28, 9, 0, tzinfo=ZONE)
BOSS = people.Authority(person_id=0, superadmin=True)


@dataclass
class World:
    community: int
    b3: int
    b5: int
    topic: int


async def _world(db: Database, scene: Scene) -> World:
    """幸福里 (zh): 3号楼 with its group, 5号楼 with a topic of a forum; 王阿姨 (zh) and Sam
    (en) live in 3号楼, 张网格长 leads both buildings' grid."""
    group = scene.group(GROUP, "3号楼邻里群")
    forum = scene.group(FORUM, "幸福里论坛", forum=True)
    topic = scene.topic(forum, "5号楼")
    async with db.transaction() as s:
        c = await people.create_community(
            s, name="幸福里", timezone="Asia/Shanghai", language="zh", now=NOW
        )
        assert c.id is not None
        grid = await people.create_unit(
            s, community_id=c.id, parent_id=None, kind="grid", name="一网格", now=NOW
        )
        b3 = await people.create_unit(
            s, community_id=c.id, parent_id=grid.id, kind="building", name="3号楼", now=NOW
        )
        b5 = await people.create_unit(
            s, community_id=c.id, parent_id=grid.id, kind="building", name="5号楼", now=NOW
        )
        assert grid.id and b3.id and b5.id
        for pid, name, lang in ((LEAD, "张网格长", "zh-hans"), (WANG, "王 阿姨", "zh-hans"),
                                (SAM, "Sam Lee", "en"), (STRANGER, "路人", "zh-hans"),
                                *((p, f"邻居{p}", "zh-hans") for p in NEIGHBOURS)):  # fmt: skip
            await people.touch_person(
                s, person_id=pid, name=name, username=None, language_code=lang, now=NOW
            )
        for i, pid in enumerate((WANG, SAM, *NEIGHBOURS)):
            h = await people.add_household(
                s, unit_id=b3.id, flat=f"3-1-{i + 1:02d}01", area_centi_m2=None, now=NOW
            )
            await people.request_join(
                s, person_id=pid, household_id=h.id or 0, now=NOW, verified_by_code=True
            )
        await people.grant_role(s, auth=BOSS, unit_id=grid.id, person_id=LEAD, kind="lead",
                                now=NOW)  # fmt: skip
        await people.link_chat(s, chat_id=GROUP, thread_id=0, unit_id=b3.id, title="3号楼",
                               by=LEAD, now=NOW)  # fmt: skip
        await people.link_chat(s, chat_id=FORUM, thread_id=topic, unit_id=b5.id, title="5号楼",
                               by=LEAD, now=NOW)  # fmt: skip
    del group
    return World(c.id, b3.id, b5.id, topic)


async def _post(db: Database, w: World, clock: Clock, *, slots: int = 3, unit: int = 0,
                title: str = "清扫楼道", start: datetime = SAT) -> int:  # fmt: skip
    async with db.transaction() as s:
        auth = await people.authority(s, person_id=LEAD, superadmin=False)
        task = await tasks.create_task(
            s, auth=auth, unit_id=unit or w.b3, now=clock(),
            fields=tasks.Fields(title=title, starts_at=start, ends_at=start + timedelta(hours=2),
                                place="3号楼门口", slots=slots, points=10),
        )  # fmt: skip
        assert task.id is not None
        return task.id


def _card(telegram: FakeTelegram, chat_id: int = GROUP) -> Call:
    (card,) = [c for c in messages(telegram.calls, chat_id) if "🤝" in c.text]
    return card


def _latest_card_text(telegram: FakeTelegram, chat_id: int = GROUP) -> str:
    card = _card(telegram, chat_id)
    edits = [
        c for c in telegram.calls
        if c.method == "editMessageText" and c.ok and c.chat_id == chat_id
        and c.params["message_id"] == card.result["message_id"]
    ]  # fmt: skip
    return edits[-1].text if edits else card.text


async def _settle(app: LinliApp, clock: Clock) -> None:
    """Let the card's coalesced edit go (one per 5 s) and send what is due."""
    clock.advance(seconds=6)
    await delivery.drain(app)


def _group_texts(telegram: FakeTelegram) -> list[str]:
    return [
        c.text for c in telegram.calls
        if c.method in ("sendMessage", "editMessageText", "sendPhoto") and c.ok
        and (c.chat_id or 0) < 0
    ]  # fmt: skip


@pytest.mark.shows_in_group(f"邻居{NEIGHBOURS[0]}")  # signed up on the card: first names shown
async def test_sign_up_from_the_card_in_zh_and_en_waitlist_and_promotion(
    app: LinliApp, scene: Scene, db: Database, telegram: FakeTelegram, clock: Clock
) -> None:
    w = await _world(db, scene)
    task_id = await _post(db, w, clock, slots=2)
    await delivery.drain(app)
    card = _card(telegram)
    assert "清扫楼道" in card.text and "0/2" in card.text
    assert [b["text"] for b in card.buttons[0]] == ["🙋 报名", "↩️ 退出"]
    wang, sam = scene.person(WANG, "王 阿姨"), scene.person(SAM, "Sam Lee", lang="en")
    scene.private(wang)
    scene.private(sam)
    telegram.started.update({WANG, SAM})
    calls = await scene.tap(wang, card, "报名")
    assert alerts(calls) == ["报名成功 ✅ 11月28日（周六）09:00–11:00，3号楼门口"]
    assert not messages(calls, WANG)  # the confirmation goes through the paced outbox
    await delivery.drain(app)
    (private,) = messages(telegram.calls, WANG)
    assert "您已报名" in private.text and "清扫楼道" in private.text
    assert [b[0]["text"] for b in private.buttons] == [
        "↩️ 退出",
        "📅 加入日历",
        "🙈 卡片上不显示我的名字",
    ]
    again = await scene.tap(wang, card, "报名")
    await delivery.drain(app)
    assert alerts(again) == ["您已经报名了「清扫楼道」。"]
    assert len(messages(telegram.calls, WANG)) == 1  # a second tap sends nothing more
    calls = await scene.tap(sam, card, "报名")
    assert alerts(calls)[0].startswith("You're in ✅ Sat 28 Nov 09:00–11:00")
    await _settle(app, clock)
    text = _latest_card_text(telegram)  # the community's language, whoever tapped
    assert "已报名 2/2" in text and "王、Sam" in text
    neighbour = scene.person(NEIGHBOURS[0], f"邻居{NEIGHBOURS[0]}")
    telegram.started.add(NEIGHBOURS[0])
    calls = await scene.tap(neighbour, card, "报名")
    assert alerts(calls) == ["名额已满，您是候补第 1 位。有人退出时会自动补上并私信通知您。"]
    # 王阿姨 withdraws from her private message: 邻居 moves up and is told privately
    calls = await scene.tap(wang, private, "退出")
    assert any("已退出「清扫楼道」" in c.text for c in calls if c.method == "editMessageText")
    await _settle(app, clock)
    (promoted,) = [c for c in messages(telegram.calls, NEIGHBOURS[0]) if "转为正式报名" in c.text]
    assert "清扫楼道" in promoted.text
    assert "已报名 2/2" in _latest_card_text(telegram)
    assert "Sam、邻居" in _latest_card_text(telegram) and "候补" not in _latest_card_text(telegram)
    # the calendar file
    calls = await scene.tap(sam, messages(telegram.calls, SAM)[0], "calendar")
    (doc,) = [c for c in calls if c.method == "sendDocument"]
    assert doc.ok and doc.chat_id == SAM
    # no flat, no household code in any group message
    for text in _group_texts(telegram):
        assert "3-1-" not in text
    async with db.transaction(write=False) as s:
        assert await tasks.count_in(s, task_id) == 2


async def test_a_burst_of_taps_on_one_card_is_written_while_the_answers_are_on_their_way(
    app: LinliApp, scene: Scene, db: Database, telegram: FakeTelegram, clock: Clock
) -> None:
    """Everyone taps one group card at once over a slow network: each sign-up is saved as soon
    as the tap before it is (its answer still travelling), not after that answer arrived."""
    w = await _world(db, scene)
    task_id = await _post(db, w, clock, slots=len(NEIGHBOURS))
    await delivery.drain(app)
    card = _card(telegram)
    neighbours = [scene.person(p, f"邻居{p}") for p in NEIGHBOURS]
    telegram.latency = lambda: 0.5  # every call: each tap's answer takes half a second
    taps = asyncio.gather(*(scene.tap(n, card, "报名") for n in neighbours))
    await asyncio.sleep(0.25)  # no answer has arrived yet
    async with db.transaction(write=False) as s:
        assert await tasks.count_in(s, task_id) == len(NEIGHBOURS)
    answered = await taps
    telegram.latency = None
    assert [alerts(calls)[0].startswith("报名成功") for calls in answered] == [True] * len(
        NEIGHBOURS
    )


async def test_a_stranger_gets_a_one_tap_path_to_join_and_forged_buttons_change_nothing(
    app: LinliApp, scene: Scene, db: Database, telegram: FakeTelegram, clock: Clock
) -> None:
    w = await _world(db, scene)
    task_id = await _post(db, w, clock)
    await delivery.drain(app)
    card = _card(telegram)
    stranger = scene.person(STRANGER, "路人")
    calls = await scene.tap(stranger, card, "报名")
    (answered,) = [c for c in calls if c.method == "answerCallbackQuery"]
    assert answered.params["url"].endswith("?start=join")
    wang = scene.person(WANG, "王 阿姨")
    for forged, expected in (
        (f"tk:s:{task_id + 99}", "没有找到这个任务"),
        ("tk:s:abc", ""),
        (f"tk:w:{task_id}", "您没有报名这个任务"),
        (f"tl:y:{task_id}", "私聊"),
        (f"tk:h:{task_id}:1", "私聊"),
    ):
        calls = await scene.press(wang, card, forged)
        assert alerts(calls) and expected in alerts(calls)[0], (forged, alerts(calls))
    # in her private chat, a lead's buttons are still not hers
    home = scene.message_json(wang, scene.private(wang), "hi")
    for forged in (f"tl:y:{task_id}", f"tl:X:{task_id}", f"tl:m:{task_id}:{WANG}:1",
                   f"tl:q:{task_id}", f"tl:k:{task_id}:{WANG}:1"):  # fmt: skip
        calls = await scene.press(wang, home, forged)
        assert "不是" in alerts(calls)[0] and not messages(calls), (forged, alerts(calls))
    async with db.transaction(write=False) as s:
        assert await tasks.signups(s, task_id) == []
        assert (await tasks.get_task(s, task_id)).status == "open"


async def test_a_card_in_a_topic(
    app: LinliApp, scene: Scene, db: Database, telegram: FakeTelegram, clock: Clock
) -> None:
    w = await _world(db, scene)
    await _post(db, w, clock, unit=w.b5, title="修自行车")
    await delivery.drain(app)
    card = _card(telegram, FORUM)
    assert card.params["message_thread_id"] == w.topic and "修自行车" in card.text
    # 王阿姨 lives in 3号楼, not 5号楼: she is pointed to /join, nothing recorded
    calls = await scene.tap(scene.person(WANG, "王 阿姨"), card, "报名")
    (answered,) = [c for c in calls if c.method == "answerCallbackQuery"]
    assert answered.params["url"].endswith("?start=join")


async def test_reminders_go_once_across_a_restart_and_not_after_cancel(
    app: LinliApp, scene: Scene, db: Database, telegram: FakeTelegram, clock: Clock
) -> None:
    w = await _world(db, scene)
    kept = await _post(db, w, clock)
    dropped = await _post(db, w, clock, title="搬花盆", start=SAT + timedelta(hours=3))
    await delivery.drain(app)
    telegram.started.update({WANG, SAM})
    for task_id in (kept, dropped):
        async with db.transaction() as s:
            await tasks.sign_up(s, task_id=task_id, person_id=WANG, now=clock())
            await tasks.sign_up(s, task_id=task_id, person_id=SAM, now=clock())
    async with db.transaction() as s:
        auth = await people.authority(s, person_id=LEAD, superadmin=False)
        await tasks.cancel_task(s, auth=auth, task_id=dropped, now=clock())
    clock.now = (SAT - timedelta(hours=24)).astimezone(clock.now.tzinfo)
    await delivery.drain(app)
    # a restart: a second application on the same database sends nothing twice
    settings = load_settings(bot_token="", admins="1", _env_file=None)
    again = build_application(settings, request=telegram, db=db, clock=clock)
    async with again:
        await delivery.drain(again)
        clock.now = (SAT - timedelta(hours=1)).astimezone(clock.now.tzinfo)
        await delivery.drain(again)
        await delivery.drain(again)
    reminders = [c for c in messages(telegram.calls) if "⏰" in c.text]
    assert sorted((c.chat_id, c.text.split("：")[0].split(":")[0]) for c in reminders) == sorted(
        [(WANG, "⏰ 明天开始"), (WANG, "⏰ 1 小时后开始"), (SAM, "⏰ Tomorrow"),
         (SAM, "⏰ Starting in 1 hour")]
    )  # fmt: skip
    assert not any("搬花盆" in c.text for c in reminders)
    async with db.transaction(write=False) as s:
        rows = (
            await s.exec(select(Delivery).where(col(Delivery.key).startswith("taskrem:")))
        ).all()
    assert {r.status for r in rows if f"taskrem:{dropped}:" in r.key} == {Status.failed}


async def test_check_in_by_qr_attendance_confirmed_once_and_thanks_with_balance(
    app: LinliApp, scene: Scene, db: Database, telegram: FakeTelegram, clock: Clock
) -> None:
    w = await _world(db, scene)
    task_id = await _post(db, w, clock)
    await delivery.drain(app)
    lead, sam = scene.person(LEAD, "张网格长"), scene.person(SAM, "Sam Lee", lang="en")
    lead_chat, sam_chat = scene.private(lead), scene.private(sam)
    telegram.started.update({LEAD, SAM, WANG})
    for pid in (SAM, WANG):
        async with db.transaction() as s:
            await tasks.sign_up(s, task_id=task_id, person_id=pid, now=clock())
    # the lead's /tasks, then the task, then the code and QR
    clock.now = (SAT + timedelta(minutes=10)).astimezone(clock.now.tzinfo)
    calls = await scene.say(lead, lead_chat, "/tasks")
    (listing,) = messages(calls, LEAD)
    assert "我发布的任务" in listing.text and "2/3" in listing.text
    calls = await scene.tap(lead, listing, "🛠 清扫楼道")
    panel = next(c for c in calls if c.method == "editMessageText")
    calls = await scene.tap(lead, panel, "签到码")
    (qr,) = [c for c in calls if c.method == "sendPhoto"]
    async with db.transaction(write=False) as s:
        code = (await tasks.get_task(s, task_id)).code
    assert code[:3] in qr.text
    # Sam scans it: the QR opens /start tc-<task>-<code>
    calls = await scene.say(sam, sam_chat, f"/start tc-{task_id}-{code}")
    assert "Checked in" in messages(calls, SAM)[0].text
    calls = await scene.say(sam, sam_chat, f"/start tc-{task_id}-000000")
    assert "not right" in messages(calls, SAM)[0].text or code == "000000"
    # after the end: the sheet, pre-set from check-ins; confirm once
    clock.now = (SAT + timedelta(hours=3)).astimezone(clock.now.tzinfo)
    lead_task = await scene.say(lead, lead_chat, "/tasks")
    calls = await scene.tap(lead, messages(lead_task, LEAD)[0], "🛠 清扫楼道")
    panel = next(c for c in calls if c.method == "editMessageText")
    assert "签到表" in str(panel.buttons)
    calls = await scene.tap(lead, panel, "签到表")
    sheet = next(c for c in calls if c.method == "editMessageText")
    assert [b[0]["text"] for b in sheet.buttons[:2]] == ["✅ Sam Lee", "⬜ 王 阿姨"]
    first = await scene.tap(lead, sheet, "确认签到表")
    assert any("1 人参加" in c.text for c in messages(first, LEAD))
    second = await scene.press(lead, sheet, f"tl:y:{task_id}")
    assert "已经确认过了" in alerts(second)[0]
    await delivery.drain(app)
    (thanks,) = [c for c in messages(telegram.calls, SAM) if "Thank you for helping" in c.text]
    assert "balance is now 10" in thanks.text
    async with db.transaction(write=False) as s:
        assert await ledger.balance(s, community_id=w.community, person_id=SAM) == 10
        assert await ledger.balance(s, community_id=w.community, person_id=WANG) == 0
    # 王阿姨's no-show is never in a group; she can claim from /mytasks
    for text in _group_texts(telegram):
        assert "缺席" not in text and "no-show" not in text
    wang = scene.person(WANG, "王 阿姨")
    calls = await scene.say(wang, scene.private(wang), "/mytasks")
    mine = messages(calls, WANG)[0]
    calls = await scene.tap(wang, mine, "补签")
    assert "已把补签申请发给" in alerts(calls)[0]


async def test_mytasks_in_a_group_answers_privately(
    app: LinliApp, scene: Scene, db: Database, telegram: FakeTelegram, clock: Clock
) -> None:
    w = await _world(db, scene)
    task_id = await _post(db, w, clock)
    async with db.transaction() as s:
        await tasks.sign_up(s, task_id=task_id, person_id=SAM, now=clock())
    sam = scene.person(SAM, "Sam Lee", lang="en")
    group = {"id": GROUP, "type": "group", "title": "3号楼邻里群"}
    calls = await scene.say(sam, group, "/mytasks")
    assert [c.text for c in messages(calls, GROUP)] == [
        "This is personal, so it is shown in a private chat. Tap the button below to open one "
        "with me."
    ]
    telegram.started.add(SAM)
    calls = await scene.say(sam, group, "/mytasks")
    assert [c.text for c in messages(calls, GROUP)] == ["Sent to you privately 📬"]
    (private,) = messages(calls, SAM)
    assert "清扫楼道" in private.text and "signed up" in private.text
    assert "3-1-" not in " ".join(_group_texts(telegram))


# --- a card with many long-named volunteers fits one message (issue 8 item 18) ---------------


@pytest.mark.parametrize("lang", ["zh", "en"])
async def test_a_card_with_eighty_long_named_volunteers_fits_one_message(
    app: LinliApp, scene: Scene, db: Database, telegram: FakeTelegram, clock: Clock,
    privacy: GroupPrivacy, lang: str,
) -> None:  # fmt: skip
    w = await _world(db, scene)
    crowd = list(range(6000, 6080))
    firsts = [f"{'长' * 62}{n:02d}" for n in range(len(crowd))]  # 64 + 64 characters each
    async with db.transaction() as s:
        if lang == "en":
            community = await people.get_community(s, w.community)
            community.language = "en"
        for n, pid in enumerate(crowd):
            await people.touch_person(
                s, person_id=pid, name=f"{firsts[n]} {'名' * 64}", username=None,
                language_code="zh-hans", now=NOW,
            )  # fmt: skip
            h = await people.add_household(
                s, unit_id=w.b3, flat=f"8-{n}", area_centi_m2=None, now=NOW
            )
            await people.request_join(
                s, person_id=pid, household_id=h.id or 0, now=NOW, verified_by_code=True
            )
    task_id = await _post(db, w, clock, slots=100)
    await delivery.drain(app)
    async with db.transaction() as s:
        for pid in crowd:
            await tasks.sign_up(s, task_id=task_id, person_id=pid, now=clock())
    privacy.allow(*firsts)  # volunteers' first names are on the card unless they hide them
    await _settle(app, clock)
    text = _latest_card_text(telegram)
    assert visible_length(text) <= 4096 < len("、".join(firsts))
    assert firsts[0] in text and firsts[-1] not in text
    assert ("等 80 人" in text) if lang == "zh" else re.search(r"and \d+ more", text)
    if lang == "en":
        shown = sum(1 for f in firsts if f in text)
        assert f"and {80 - shown} more" in text
