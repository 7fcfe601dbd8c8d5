"""Joining a household: residents pick their flat or type its code, leads approve or reject."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import timedelta

from sqlmodel import select

from bot import delivery
from bot.db import Database
from bot.standin import Call, Scene, alerts, messages, visible
from handlers.common import PAGE
from models import people
from models.outbox import Delivery
from tests.conftest import NOW
from tests.integration.conftest import ADMIN_ID, Clock

BOSS = people.Authority(person_id=ADMIN_ID, superadmin=True)
LEAD_B3 = 20  # 王阿姨, building lead of 3号楼
LEAD_GRID = 21  # Li, grid lead above both buildings
LEAD_B5 = 22  # 赵师傅, building lead of 5号楼
CODE_501 = "AB3DEF7K"
CODE_5101 = "ZX9YWV8U"


@dataclass
class World:
    community: int
    grid: int
    b3: int
    b5: int
    flats: dict[str, int]


async def _world(db: Database, *, extra_flats: int = 0) -> World:
    """幸福里 › 一网格 › 3号楼 (three flats) and 5号楼 (one), with a lead for each building
    and one for the grid."""
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
        assert grid.id is not None and b3.id is not None and b5.id is not None
        flats: dict[str, int] = {}
        for flat, code in (("3-2-501", CODE_501), ("3-2-502", None), ("3-1-101", None)):
            h = await people.add_household(
                s, unit_id=b3.id, flat=flat, area_centi_m2=None, now=NOW, code=code
            )
            flats[flat] = h.id or 0
        for i in range(extra_flats):
            h = await people.add_household(
                s, unit_id=b3.id, flat=f"3-9-{i + 1:03d}", area_centi_m2=None, now=NOW
            )
            flats[h.flat] = h.id or 0
        h = await people.add_household(
            s, unit_id=b5.id, flat="5-1-101", area_centi_m2=None, now=NOW, code=CODE_5101
        )
        flats["5-1-101"] = h.id or 0
        for pid, name, lang in (
            (LEAD_B3, "王阿姨", "zh-hans"),
            (LEAD_GRID, "Li", "en"),
            (LEAD_B5, "赵师傅", "zh-hans"),
        ):
            await people.touch_person(
                s, person_id=pid, name=name, username=None, language_code=lang, now=NOW
            )
        for pid, unit in ((LEAD_B3, b3.id), (LEAD_GRID, grid.id), (LEAD_B5, b5.id)):
            await people.grant_role(s, auth=BOSS, unit_id=unit, person_id=pid, kind="lead", now=NOW)
    return World(c.id, grid.id, b3.id, b5.id, flats)


def _lead(scene: Scene, pid: int, *, started: bool = True) -> dict[str, object]:
    names = {
        LEAD_B3: ("王阿姨", "zh-hans"),
        LEAD_GRID: ("Li", "en"),
        LEAD_B5: ("赵师傅", "zh-hans"),
    }
    name, lang = names[pid]
    user = scene.person(pid, name, lang=lang)
    scene.private(user)
    if started:
        scene.tg.started.add(pid)
    return user


def _edits(calls: list[Call]) -> list[Call]:
    return [c for c in calls if c.method == "editMessageText" and c.ok]


def _labels(call: Call) -> list[str]:
    return [b["text"] for row in call.buttons for b in row]


async def _resident(db: Database, pid: int) -> people.Resident | None:
    async with db.transaction(write=False) as s:
        found = await people.memberships(s, person_id=pid)
    return found[0].resident if found else None


async def _then(scene: Scene, calls: list[Call]) -> list[Call]:
    """An update's calls, followed by what the outbox sent because of it."""
    before = len(scene.tg.calls)
    await delivery.drain(scene.app)
    return calls + scene.tg.calls[before:]


async def _request(scene: Scene, user: dict[str, object], building: str, flat: str) -> list[Call]:
    """Walk the picker in private: /join, building, flat, yes. Returns the last tap's calls and
    what the outbox then sent (the leads' request cards)."""
    chat = scene.private(user)
    (picker,) = messages(await scene.say(user, chat, "/join"))
    await scene.tap(user, picker, building)
    await scene.tap(user, picker, flat)
    return await _then(scene, await scene.tap(user, picker, 0))


# --- the picker ---------------------------------------------------------------------------


async def test_resident_picks_flat_in_chinese_and_lead_approves(db: Database, scene: Scene) -> None:
    w = await _world(db)
    lead = _lead(scene, LEAD_B3)
    _lead(scene, LEAD_GRID, started=False)  # never opened a chat: skipped, not an error
    resident = scene.person(30, "张大爷", lang="zh-hans")
    chat = scene.private(resident)

    (picker,) = messages(await scene.say(resident, chat, "/join"))
    assert "请选择您住的楼栋" in picker.text
    assert _labels(picker)[:2] == ["3号楼", "5号楼"] and "🔑 我有入户码" in _labels(picker)
    (shown,) = _edits(await scene.tap(resident, picker, "3号楼"))
    assert _labels(shown)[:3] == ["3-1-101", "3-2-501", "3-2-502"]
    (confirm,) = _edits(await scene.tap(resident, picker, "3-2-501"))
    assert "确认申请加入 3号楼 3-2-501 吗" in confirm.text
    calls = await _then(scene, await scene.tap(resident, picker, "是的"))

    (sent,) = _edits(calls)
    assert "已提交申请：3号楼 3-2-501" in sent.text and "已请 2 位负责人审核" in sent.text
    (ask,) = messages(calls)  # only the reachable lead gets it; the other's card ends gone
    assert ask.chat_id == LEAD_B3
    assert "张大爷 申请加入" in ask.text and "3号楼 · 3-2-501" in ask.text
    assert 'href="tg://user?id=30"' in ask.params["text"]
    assert _labels(ask) == ["✅ 批准", "❌ 拒绝"]
    pending = await _resident(db, 30)
    assert pending is not None and pending.status == "pending"
    assert pending.household_id == w.flats["3-2-501"]

    calls = await _then(scene, await scene.tap(lead, ask, "批准"))
    (outcome,) = _edits(calls)
    assert "已由 王阿姨 批准" in outcome.text and outcome.buttons == []
    (told,) = messages(calls)  # through the outbox, right after the decision
    assert told.chat_id == 30 and "申请已通过" in told.text
    decided = await _resident(db, 30)
    assert decided is not None and decided.status == "verified"
    assert decided.decided_by == LEAD_B3


async def test_english_resident_is_rejected_in_english_and_may_ask_again(
    db: Database, scene: Scene, clock: Clock
) -> None:
    w = await _world(db)
    lead = _lead(scene, LEAD_B3)
    grid_lead = _lead(scene, LEAD_GRID)
    resident = scene.person(31, "Sam", lang="en")
    chat = scene.private(resident)

    (picker,) = messages(await scene.say(resident, chat, "/join"))
    assert "Which building do you live in?" in picker.text
    assert "🔑 I have a household code" in _labels(picker)
    (flats,) = _edits(await scene.tap(resident, picker, "3号楼"))
    assert "Tap your flat" in flats.text
    (confirm,) = _edits(await scene.tap(resident, picker, "3-2-502"))
    assert "Ask to join 3-2-502 in 3号楼?" in confirm.text
    calls = await _then(scene, await scene.tap(resident, picker, "Yes, ask to join"))
    (sent,) = _edits(calls)
    assert "Asked 2 leads to approve it" in sent.text
    asks = {c.chat_id: c for c in messages(calls)}
    # Each lead reads the request in their own language, whatever the resident speaks.
    assert "申请加入" in asks[LEAD_B3].text and "asks to join" in asks[LEAD_GRID].text
    assert _labels(asks[LEAD_GRID]) == ["✅ Approve", "❌ Reject"]

    calls = await _then(scene, await scene.tap(grid_lead, asks[LEAD_GRID], "Reject"))
    outcome, other = _edits(calls)
    assert "Rejected by Li" in outcome.text
    # The other lead's card is edited in place: decided, no buttons left.
    assert other.chat_id == LEAD_B3 and "已由 Li 拒绝" in other.text and other.buttons == []
    assert other.params["message_id"] == asks[LEAD_B3].result["message_id"]
    (told,) = messages(calls)
    assert told.chat_id == 31 and "was not approved" in told.text and "/join" in told.text
    rejected = await _resident(db, 31)
    assert rejected is not None and rejected.status == "rejected"

    # Asking again at once is "already asked"; after the cool-down it is a new request.
    calls = await _request(scene, resident, "3号楼", "3-2-502")
    assert "You already asked" in _edits(calls)[0].text and messages(calls) == []
    clock.advance(minutes=11)
    calls = await _request(scene, resident, "3号楼", "3-2-502")
    assert "Request sent" in _edits(calls)[0].text
    fresh = {c.chat_id: c for c in messages(calls)}
    assert set(fresh) == {LEAD_B3, LEAD_GRID}
    again = await _resident(db, 31)
    assert again is not None and again.status == "pending"
    assert again.household_id == w.flats["3-2-502"]
    calls = await _then(scene, await scene.tap(lead, fresh[LEAD_B3], "批准"))
    assert "已由 王阿姨 批准" in _edits(calls)[0].text
    # The old, rejected round's messages keep what they said.
    assert "已由 Li 拒绝" in visible(scene.message_of(asks[LEAD_B3])["text"])


async def test_several_communities_are_offered_first(db: Database, scene: Scene) -> None:
    await _world(db)
    async with db.transaction() as s:
        await people.create_community(
            s, name="Green Court", timezone="Asia/Shanghai", language="en", now=NOW
        )
    resident = scene.person(32, "Mei", lang="zh-hans")
    (picker,) = messages(await scene.say(resident, scene.private(resident), "/join"))
    assert "请选择您住的社区" in picker.text
    assert set(_labels(picker)) >= {"幸福里", "Green Court"}
    (buildings,) = _edits(await scene.tap(resident, picker, "幸福里"))
    assert "3号楼" in _labels(buildings) and "◀ 返回" in _labels(buildings)


async def test_welcome_button_starts_the_picker(db: Database, scene: Scene) -> None:
    await _world(db)
    resident = scene.person(33, "Gao", lang="zh-hans")
    (welcome,) = messages(await scene.say(resident, scene.private(resident), "/start"))
    (picker,) = _edits(await scene.tap(resident, welcome, "加入我的住户"))
    assert "3号楼" in _labels(picker)


async def test_asking_twice_for_the_same_flat_does_not_ask_the_leads_again(
    db: Database, scene: Scene
) -> None:
    await _world(db)
    _lead(scene, LEAD_B3)
    resident = scene.person(34, "Zhou", lang="zh-hans")
    first = await _request(scene, resident, "3号楼", "3-2-501")
    assert len(messages(first)) == 1
    again = await _request(scene, resident, "3号楼", "3-2-501")
    assert messages(again) == [] and len(_edits(again)) == 1  # nothing reaches a lead
    assert "已经提交过了" in _edits(again)[0].text


async def test_asking_for_another_flat_replaces_the_old_request(db: Database, scene: Scene) -> None:
    w = await _world(db)
    lead = _lead(scene, LEAD_B3)
    resident = scene.person(35, "Wu", lang="zh-hans")
    (old_ask,) = messages(await _request(scene, resident, "3号楼", "3-2-501"))
    stale = old_ask.buttons[0][0]["callback_data"]
    calls = await _request(scene, resident, "3号楼", "3-2-502")
    assert messages(calls) == []  # the lead is not messaged again ...
    mine, card = _edits(calls)
    assert "已把您的申请改为：3号楼 3-2-502" in mine.text
    # ... their request message is updated in place
    assert card.chat_id == LEAD_B3 and card.params["message_id"] == old_ask.result["message_id"]
    assert "3-2-502" in card.text and "3-2-501" not in card.text
    row = await _resident(db, 35)
    assert row is not None and row.household_id == w.flats["3-2-502"]

    # A button from before the change must not approve the new flat.
    calls = await scene.press(lead, old_ask, stale)
    (alert,) = alerts(calls)
    assert "换成了别的门牌" in alert
    row = await _resident(db, 35)
    assert row is not None and row.status == "pending"
    calls = await scene.tap(lead, old_ask, "批准")  # the updated buttons do
    row = await _resident(db, 35)
    assert row is not None and row.status == "verified"


async def test_tapping_between_two_flats_messages_the_lead_once_and_edits_that_message(
    db: Database, scene: Scene, clock: Clock
) -> None:
    w = await _world(db)
    _lead(scene, LEAD_B3)
    resident = scene.person(37, "Hu", lang="zh-hans")
    chat = scene.private(resident)
    (picker,) = messages(await scene.say(resident, chat, "/join"))
    await scene.tap(resident, picker, "3号楼")
    before = len(scene.tg.calls)
    for tap in range(18):  # what one resident did: 18 requests in a few seconds
        flat = ("3-2-501", "3-2-502")[tap % 2]
        await scene.press(resident, picker, f"jy:{w.flats[flat]}")
        await delivery.drain(scene.app)
        clock.advance(seconds=0.3)
    clock.advance(seconds=10)
    await delivery.drain(scene.app)
    to_lead = [c for c in scene.tg.calls[before:] if c.chat_id == LEAD_B3 and c.ok]
    sent = [c for c in to_lead if c.method == "sendMessage"]
    edited = [c for c in to_lead if c.method == "editMessageText"]
    assert len(sent) == 1 and 1 <= len(edited) <= 3  # was 18 private messages
    assert "3-2-502" in visible(scene.message_of(sent[0])["text"])  # the last choice
    row = await _resident(db, 37)
    assert row is not None and row.household_id == w.flats["3-2-502"]


async def test_a_request_at_night_waits_for_the_morning_and_the_resident_is_told(
    db: Database, scene: Scene, clock: Clock
) -> None:
    await _world(db)
    _lead(scene, LEAD_B3)
    _lead(scene, LEAD_GRID, started=False)  # cannot be reached: recorded, not just logged
    clock.now = NOW.replace(hour=15)  # 23:00 in Shanghai: quiet hours
    resident = scene.person(38, "Lu", lang="zh-hans")
    calls = await _request(scene, resident, "3号楼", "3-2-501")
    (sent,) = _edits(calls)
    assert "已请 2 位负责人审核" in sent.text and "08:00 以后会收到" in sent.text
    assert messages(calls) == []  # no lead is woken at night
    clock.now = NOW.replace(hour=0, minute=1) + timedelta(days=1)  # 08:01
    calls = await _then(scene, [])
    assert [c.chat_id for c in messages(calls)] == [LEAD_B3]
    async with db.transaction(write=False) as s:
        found = (await s.exec(select(Delivery).where(Delivery.chat_id == LEAD_GRID))).all()
    assert [r.status for r in found] == ["gone"]


async def test_a_verified_member_cannot_ask_for_another_flat(db: Database, scene: Scene) -> None:
    w = await _world(db)
    async with db.transaction() as s:
        await people.touch_person(
            s, person_id=36, name="Qian", username=None, language_code="zh-hans", now=NOW
        )
        await people.request_join(
            s, person_id=36, household_id=w.flats["3-2-501"], now=NOW, verified_by_code=True
        )
    resident = scene.person(36, "Qian", lang="zh-hans")
    calls = await _request(scene, resident, "3号楼", "3-2-502")
    (alert,) = alerts(calls)
    assert "另一户" in alert and "/me" in alert
    row = await _resident(db, 36)
    assert row is not None and row.household_id == w.flats["3-2-501"]


async def test_forged_household_in_flat_button_is_not_found(db: Database, scene: Scene) -> None:
    await _world(db)
    resident = scene.person(37, "Sun", lang="zh-hans")
    (picker,) = messages(await scene.say(resident, scene.private(resident), "/join"))
    (alert,) = alerts(await scene.press(resident, picker, "jh:999999:0"))
    assert "找不到这一户" in alert
    (alert,) = alerts(await scene.press(resident, picker, "jy:999999"))
    assert "找不到这一户" in alert
    assert await _resident(db, 37) is None


async def test_flats_are_paginated(db: Database, scene: Scene) -> None:
    await _world(db, extra_flats=30)  # 33 flats in 3号楼
    resident = scene.person(38, "Lin", lang="zh-hans")
    (picker,) = messages(await scene.say(resident, scene.private(resident), "/join"))
    (first,) = _edits(await scene.tap(resident, picker, "3号楼"))
    flats = [t for t in _labels(first) if t.startswith("3-")]
    assert len(flats) == PAGE * 3 and "下一页 ▶" in _labels(first)
    assert "第 1/2 页" in first.text
    (second,) = _edits(await scene.tap(resident, picker, "下一页"))
    rest = [t for t in _labels(second) if t.startswith("3-")]
    assert len(rest) == 33 - PAGE * 3 and not set(rest) & set(flats)
    assert "◀ 上一页" in _labels(second)


# --- household codes ------------------------------------------------------------------------


async def test_code_from_a_door_notice_link_joins_at_once(db: Database, scene: Scene) -> None:
    w = await _world(db)
    _lead(scene, LEAD_B3)
    resident = scene.person(40, "Ma", lang="zh-hans")
    calls = await scene.say(resident, scene.private(resident), f"/start join-{CODE_501}")
    (joined,) = messages(calls)
    assert joined.chat_id == 40 and "您已加入 幸福里 · 3号楼 · 3-2-501" in joined.text
    row = await _resident(db, 40)
    assert row is not None and row.status == "verified"
    assert row.household_id == w.flats["3-2-501"]
    # Nobody needs to approve a code: the leads are not asked.
    again = messages(await scene.say(resident, scene.private(resident), f"/start join-{CODE_501}"))
    assert len(again) == 1 and "已经是" in again[0].text


async def test_typed_code_tolerates_lowercase_and_spaces(db: Database, scene: Scene) -> None:
    w = await _world(db)
    resident = scene.person(41, "Kim", lang="en")
    chat = scene.private(resident)
    (picker,) = messages(await scene.say(resident, chat, "/join"))
    (asked,) = messages(await scene.tap(resident, picker, "I have a household code"))
    assert "8-character household code" in asked.text
    (joined,) = messages(await scene.say(resident, chat, "ab3d ef7k"))
    assert "You have joined 3-2-501" in joined.text
    row = await _resident(db, 41)
    assert row is not None and row.status == "verified"
    assert row.household_id == w.flats["3-2-501"]

    other = scene.person(42, "Lee", lang="en")
    (joined,) = messages(await scene.say(other, scene.private(other), "/join zx9y wv8u"))
    assert "You have joined 5-1-101" in joined.text


async def test_wrong_code_explains_and_offers_to_try_again(db: Database, scene: Scene) -> None:
    await _world(db)
    resident = scene.person(43, "Yu", lang="zh-hans")
    chat = scene.private(resident)
    (wrong,) = messages(await scene.say(resident, chat, "/start join-ZZZZZZZZ"))
    assert "入户码不对" in wrong.text
    assert _labels(wrong) == ["🔑 重新输入入户码", "🏠 改为选择楼栋和门牌"]
    (asked,) = messages(await scene.tap(resident, wrong, "重新输入"))
    assert "8 位入户码" in asked.text
    (wrong_again,) = messages(await scene.say(resident, chat, "nope"))
    assert "入户码不对" in wrong_again.text
    assert await _resident(db, 43) is None


# --- in a group ---------------------------------------------------------------------------


async def test_join_in_a_group_shows_no_flat_and_links_to_its_building(
    db: Database, scene: Scene
) -> None:
    w = await _world(db)
    group = scene.group(-500, "3号楼邻里群")
    async with db.transaction() as s:
        await people.link_chat(
            s, chat_id=-500, thread_id=0, unit_id=w.b3, title="3号楼邻里群", by=ADMIN_ID, now=NOW
        )
    resident = scene.person(44, "Tang", lang="zh-hans")
    (told,) = messages(await scene.say(resident, group, "/join"))
    assert told.chat_id == -500 and "私聊" in told.text
    assert "3-2" not in told.text and "3-2" not in str(told.buttons)
    (link,) = [b["url"] for row in told.buttons for b in row]
    assert link == f"https://t.me/LinliBot?start=join-u{w.b3}"

    # Typing a code in the group is not accepted there (and not repeated back).
    (told,) = messages(await scene.say(resident, group, f"/join {CODE_501}"))
    assert told.chat_id == -500 and CODE_501 not in told.text
    assert await _resident(db, 44) is None

    # Following the link opens the flats of the group's building directly.
    (picker,) = messages(await scene.say(resident, scene.private(resident), f"/start join-u{w.b3}"))
    assert picker.chat_id == 44 and "3-2-501" in _labels(picker)


async def test_join_in_an_unlinked_group_links_to_the_plain_picker(scene: Scene) -> None:
    group = scene.group(-501, "闲聊群")
    resident = scene.person(45, "He", lang="en")
    (told,) = messages(await scene.say(resident, group, "/join"))
    (link,) = [b["url"] for row in told.buttons for b in row]
    assert link == "https://t.me/LinliBot?start=join" and "private chat" in told.text


async def test_forged_decision_in_a_group_is_refused(db: Database, scene: Scene) -> None:
    await _world(db)
    group = scene.group(-502, "5号楼群")
    lead = _lead(scene, LEAD_B3)
    (msg,) = messages(await scene.say(lead, group, "/join"))
    (alert,) = alerts(await scene.press(lead, msg, "jf:1:0"))
    assert "私聊" in alert


# --- leads decide -------------------------------------------------------------------------


async def test_double_tap_on_approve_decides_once(db: Database, scene: Scene) -> None:
    await _world(db)
    lead = _lead(scene, LEAD_B3)
    resident = scene.person(50, "Feng", lang="zh-hans")
    (ask,) = messages(await _request(scene, resident, "3号楼", "3-2-501"))
    first = await _then(scene, await scene.press(lead, ask, ask.buttons[0][0]["callback_data"]))
    second = await _then(scene, await scene.press(lead, ask, ask.buttons[0][0]["callback_data"]))
    assert len(messages(first)) == 1 and messages(second) == []
    assert any("王阿姨 已经批准了这个申请" in a for a in alerts(second))


async def test_second_lead_is_told_who_already_decided(db: Database, scene: Scene) -> None:
    await _world(db)
    lead = _lead(scene, LEAD_B3)
    grid_lead = _lead(scene, LEAD_GRID)
    resident = scene.person(51, "Deng", lang="zh-hans")
    asks = {c.chat_id: c for c in messages(await _request(scene, resident, "3号楼", "3-2-501"))}
    reject = scene.button_data(scene.message_of(asks[LEAD_GRID]), "Reject")
    await _then(scene, await scene.tap(lead, asks[LEAD_B3], "批准"))
    # The grid lead's card already says so (edited in place, its buttons gone) ...
    card = scene.message_of(asks[LEAD_GRID])
    assert "Approved by 王阿姨" in visible(card["text"]) and "reply_markup" not in card
    # ... and a tap from before that edit is told who decided.
    calls = await _then(scene, await scene.press(grid_lead, asks[LEAD_GRID], reject))
    assert messages(calls) == []  # the resident hears nothing more
    assert any("王阿姨 already approved" in a for a in alerts(calls))
    row = await _resident(db, 51)
    assert row is not None and row.status == "verified" and row.decided_by == LEAD_B3


async def test_resident_cannot_approve_their_own_request(db: Database, scene: Scene) -> None:
    await _world(db)
    _lead(scene, LEAD_B3)
    resident = scene.person(52, "Xu", lang="zh-hans")
    (ask,) = messages(await _request(scene, resident, "3号楼", "3-2-501"))
    forged = ask.buttons[0][0]["callback_data"]
    (own,) = messages(await scene.say(resident, scene.private(resident), "/me"))
    calls = await scene.press(resident, own, forged)
    (alert,) = alerts(calls)
    assert "不是「3号楼」的负责人" in alert and messages(calls) == []
    row = await _resident(db, 52)
    assert row is not None and row.status == "pending"


async def test_lead_of_another_building_cannot_approve(db: Database, scene: Scene) -> None:
    await _world(db)
    _lead(scene, LEAD_B3)
    other = _lead(scene, LEAD_B5)
    resident = scene.person(53, "Cao", lang="zh-hans")
    (ask,) = messages(await _request(scene, resident, "3号楼", "3-2-501"))
    (mine,) = messages(await scene.say(other, scene.private(other), "/pending"))
    (alert,) = alerts(await scene.press(other, mine, ask.buttons[0][0]["callback_data"]))
    assert "不是「3号楼」的负责人" in alert
    row = await _resident(db, 53)
    assert row is not None and row.status == "pending"


# --- /pending -------------------------------------------------------------------------------


async def test_pending_lists_only_the_leads_units_and_decides_from_the_list(
    db: Database, scene: Scene
) -> None:
    await _world(db)
    lead = _lead(scene, LEAD_B3)
    a = scene.person(60, "甲", lang="zh-hans")
    b = scene.person(61, "乙", lang="en")
    await _request(scene, a, "3号楼", "3-2-501")
    await _request(scene, b, "5号楼", "5-1-101")

    (listed,) = messages(await scene.say(lead, scene.private(lead), "/pending"))
    assert "待审核的入户申请（1）" in listed.text
    assert "1. 甲 — 3号楼 3-2-501" in listed.text and "5-1-101" not in listed.text
    assert _labels(listed) == ["✅ 批准 1", "❌ 拒绝 1"]

    approve = listed.buttons[0][0]["callback_data"]
    calls = await _then(scene, await scene.press(lead, listed, approve))
    shown, card = _edits(calls)
    assert "✅ 已批准：甲（3号楼 3-2-501）" in shown.text and "没有人在等待审核" in shown.text
    assert card.chat_id == LEAD_B3 and "已由 王阿姨 批准" in card.text  # the request card too
    (told,) = messages(calls)
    assert told.chat_id == 60 and "申请已通过" in told.text

    again = await scene.press(lead, listed, approve)  # a double tap on the old list
    assert messages(again) == [] and any("王阿姨 已经批准了" in a for a in alerts(again))


async def test_pending_when_no_one_waits(db: Database, scene: Scene) -> None:
    await _world(db)
    lead = _lead(scene, LEAD_GRID)
    (listed,) = messages(await scene.say(lead, scene.private(lead), "/pending"))
    assert "No one is waiting" in listed.text and listed.buttons == []


async def test_pending_is_paginated(db: Database, scene: Scene) -> None:
    w = await _world(db, extra_flats=PAGE + 2)
    async with db.transaction() as s:
        for i in range(PAGE + 2):
            pid = 100 + i
            await people.touch_person(
                s, person_id=pid, name=f"居民{i}", username=None, language_code="zh", now=NOW
            )
            await people.request_join(
                s, person_id=pid, household_id=w.flats[f"3-9-{i + 1:03d}"], now=NOW
            )
    lead = _lead(scene, LEAD_B3)
    (listed,) = messages(await scene.say(lead, scene.private(lead), "/pending"))
    assert f"（{PAGE + 2}）" in listed.text and "第 1/2 页" in listed.text
    assert "下一页 ▶" in _labels(listed)
    (second,) = _edits(await scene.tap(lead, listed, "下一页"))
    assert f"{PAGE + 1}. " in second.text and f"✅ 批准 {PAGE + 2}" in _labels(second)
    (shown,) = _edits(await scene.tap(lead, listed, f"批准 {PAGE + 2}"))
    assert f"✅ 已批准：居民{PAGE + 1}" in shown.text and f"（{PAGE + 1}）" in shown.text
    row = await _resident(db, 100 + PAGE + 1)
    assert row is not None and row.status == "verified"


async def test_pending_is_refused_to_residents(db: Database, scene: Scene) -> None:
    await _world(db)
    resident = scene.person(62, "丙", lang="zh-hans")
    (refused,) = messages(await scene.say(resident, scene.private(resident), "/pending"))
    assert "只有负责人" in refused.text
    group = scene.group(-503, "群")
    (refused,) = messages(await scene.say(resident, group, "/pending"))
    assert refused.chat_id == -503 and "只有负责人" in refused.text


async def test_pending_in_a_group_goes_privately(db: Database, scene: Scene) -> None:
    await _world(db)
    lead = _lead(scene, LEAD_B3)
    resident = scene.person(63, "丁", lang="zh-hans")
    await _request(scene, resident, "3号楼", "3-2-501")
    group = scene.group(-504, "3号楼群")
    calls = await scene.say(lead, group, "/pending")
    private, public = messages(calls)
    assert private.chat_id == LEAD_B3 and "3-2-501" in private.text
    assert public.chat_id == -504 and "私聊" in public.text and "3-2-501" not in public.text

    shy = _lead(scene, LEAD_B5, started=False)
    (public,) = messages(await scene.say(shy, group, "/pending"))
    (link,) = [b["url"] for row in public.buttons for b in row]
    assert link == "https://t.me/LinliBot?start=pending"
    (listed,) = messages(await scene.say(shy, scene.private(shy), "/start pending"))
    assert "没有人在等待审核" in listed.text


# --- /codes -------------------------------------------------------------------------------


async def test_codes_csv_has_only_the_leads_building(db: Database, scene: Scene) -> None:
    await _world(db)
    lead = _lead(scene, LEAD_B3)
    calls = await scene.say(lead, scene.private(lead), "/codes")
    (doc,) = [c for c in calls if c.method == "sendDocument"]
    assert doc.ok and doc.chat_id == LEAD_B3 and "3 户" in doc.text
    content = doc.files["document"].decode("utf-8-sig")
    rows = list(csv.reader(io.StringIO(content)))
    assert rows[0] == ["楼栋", "门牌", "入户码", "入户链接"]
    assert [r[:2] for r in rows[1:]] == [
        ["3号楼", "3-1-101"],
        ["3号楼", "3-2-501"],
        ["3号楼", "3-2-502"],
    ]
    assert ["3号楼", "3-2-501", CODE_501, f"https://t.me/LinliBot?start=join-{CODE_501}"] in rows
    assert CODE_5101 not in content and "5号楼" not in content


async def test_codes_are_refused_to_residents_and_kept_out_of_groups(
    db: Database, scene: Scene
) -> None:
    await _world(db)
    resident = scene.person(70, "戊", lang="zh-hans")
    calls = await scene.say(resident, scene.private(resident), "/codes")
    assert not [c for c in calls if c.method == "sendDocument"]
    assert "只有负责人" in messages(calls)[0].text
    lead = _lead(scene, LEAD_B3)
    group = scene.group(-505, "3号楼群")
    calls = await scene.say(lead, group, "/codes")
    assert not [c for c in calls if c.method == "sendDocument"]
    (told,) = messages(calls)
    assert told.chat_id == -505 and "私聊" in told.text and CODE_501 not in told.text


# --- leaving ------------------------------------------------------------------------------


async def test_member_leaves_from_me_and_can_join_again(db: Database, scene: Scene) -> None:
    await _world(db)
    resident = scene.person(80, "己", lang="zh-hans")
    chat = scene.private(resident)
    await scene.say(resident, chat, f"/join {CODE_501}")
    (me,) = messages(await scene.say(resident, chat, "/me"))
    assert "🚪 退出我在「幸福里」的住户" in _labels(me)
    (confirm,) = _edits(await scene.tap(resident, me, "退出我在"))
    assert "确定要退出 幸福里 · 3号楼 · 3-2-501 吗" in confirm.text
    (kept,) = _edits(await scene.tap(resident, me, "不退出了"))
    assert "什么都没变" in kept.text
    row = await _resident(db, 80)
    assert row is not None and row.status == "verified"

    (me,) = messages(await scene.say(resident, chat, "/me"))
    await scene.tap(resident, me, "退出我在")
    (left,) = _edits(await scene.tap(resident, me, "确定退出"))
    assert "您已退出 幸福里 的住户" in left.text
    row = await _resident(db, 80)
    assert row is not None and row.status == "left"
    (me,) = messages(await scene.say(resident, chat, "/me"))
    assert not any("退出" in t for t in _labels(me))

    (joined,) = messages(await scene.say(resident, chat, f"/join {CODE_501}"))
    assert "您已加入" in joined.text
