"""Points as residents and leads see them: /points, /award, /deduct, /top, /export, /rules."""

from __future__ import annotations

import csv
import io
from datetime import timedelta

import pytest
from sqlmodel import col, select

from bot import delivery
from bot.db import Database
from bot.standin import JSON, Call, Scene, alerts, messages
from models import ledger, people
from models.ledger import LedgerEntry
from models.outbox import Delivery
from tests.conftest import NOW
from tests.integration.conftest import ADMIN_ID, Clock
from tests.world import (
    BOSS,
    GROUP_B3,
    GROUP_GRID,
    LEAD,
    LI,
    OTHER_LEAD,
    SAM,
    WANG,
    ZHOU,
    World,
    world,
)


async def _world(db: Database) -> World:
    return await world(db)


async def _give(
    db: Database,
    w: World,
    person: int,
    amount: int,
    key: str,
    *,
    reason: str = "帮忙搬东西",
    kind: str = "award",
    minutes: int = 0,
    rule_code: str | None = None,
) -> None:
    async with db.transaction() as s:
        await ledger.post(
            s,
            community_id=w.community,
            person_id=person,
            amount=amount,
            key=key,
            reason=reason,
            kind=kind,
            by=LEAD,
            now=NOW + timedelta(minutes=minutes),
            rule_code=rule_code,
        )


def _labels(call: Call) -> list[str]:
    return [str(b["text"]) for row in call.buttons for b in row]


async def _balance(db: Database, w: World, person: int) -> int:
    async with db.transaction(write=False) as s:
        return await ledger.balance(s, community_id=w.community, person_id=person)


async def _entries(db: Database) -> list[LedgerEntry]:
    async with db.transaction(write=False) as s:
        query = select(LedgerEntry).where(LedgerEntry.leg == 0).order_by(col(LedgerEntry.id))
        return list((await s.exec(query)).all())


async def _notices(db: Database, template: str) -> list[Delivery]:
    async with db.transaction(write=False) as s:
        query = select(Delivery).where(Delivery.template == template).order_by(col(Delivery.id))
        return list((await s.exec(query)).all())


def _only(calls: list[Call], chat_id: int | None = None) -> Call:
    (found,) = messages(calls, chat_id)
    return found


def _edited(calls: list[Call]) -> Call:
    (found,) = [c for c in calls if c.method == "editMessageText" and c.ok]
    return found


def _people(scene: Scene) -> dict[int, JSON]:
    users = {
        LEAD: scene.person(LEAD, "张网格长"),
        WANG: scene.person(WANG, "王阿姨"),
        LI: scene.person(LI, "李叔"),
        SAM: scene.person(SAM, "Sam", lang="en"),
        ZHOU: scene.person(ZHOU, "周伯"),
        OTHER_LEAD: scene.person(OTHER_LEAD, "刘组长"),
        ADMIN_ID: scene.person(ADMIN_ID, "Admin"),
    }
    for uid, user in users.items():
        scene.private(user)
        scene.tg.started.add(uid)
    return users


# --- /points -------------------------------------------------------------------------------


async def test_points_in_private_shows_balance_household_rank_and_history(
    db: Database, scene: Scene
) -> None:
    w = await _world(db)
    u = _people(scene)
    await _give(db, w, LI, 12, "t:1", rule_code="patrol", reason="巡逻")
    await _give(db, w, SAM, 5, "t:2", minutes=1)
    await _give(db, w, LI, -4, "t:3", kind="redeem", reason="理发券", minutes=2)
    shown = _only(await scene.say(u[LI], scene.private(u[LI]), "/points"))
    assert "我的积分：8 分" in shown.text
    assert "全家合计：13 分（2 位家人）" in shown.text
    assert "本月在5号楼：第 1 名（2 人上榜，您本月 12 分）" in shown.text
    assert "11-20　-4　理发券" in shown.text and "11-20　+12　巡逻" in shown.text
    assert shown.text.index("理发券") < shown.text.index("巡逻")  # newest first
    english = _only(await scene.say(u[SAM], scene.private(u[SAM]), "/points"))
    assert "My points: 5" in english.text
    assert "rank 2 of 2" in english.text


async def test_more_pages_back_through_history(db: Database, scene: Scene) -> None:
    w = await _world(db)
    u = _people(scene)
    for i in range(14):
        await _give(db, w, WANG, i + 1, f"h:{i}", reason=f"第{i + 1}次", minutes=i)
    shown = _only(await scene.say(u[WANG], scene.private(u[WANG]), "/points"))
    assert "第14次" in shown.text and "第5次" in shown.text and "第4次" not in shown.text
    older = _edited(await scene.tap(u[WANG], shown, "更早的记录"))
    assert "第4次" in older.text and "第1次" in older.text and "第5次" not in older.text
    assert not any("更早" in x for x in _labels(older))
    back = _edited(await scene.tap(u[WANG], older, "返回我的积分"))
    assert "第14次" in back.text
    # Someone else's entry as the anchor is a forged button.
    entries = await _entries(db)
    (alert,) = alerts(await scene.press(u[LI], shown, f"pm:{w.community}:{entries[-1].id}"))
    assert "失效" in alert


async def test_points_in_a_group_is_sent_privately(db: Database, scene: Scene) -> None:
    w = await _world(db)
    u = _people(scene)
    await _give(db, w, WANG, 7, "g:1")
    group = scene.group(GROUP_B3, "3号楼邻里群")
    calls = await scene.say(u[WANG], group, "/points")
    told = _only(calls, GROUP_B3)
    private = _only(calls, WANG)
    assert "私聊" in told.text and "7" not in told.text and "3-2-501" not in told.text
    assert "我的积分：7 分" in private.text
    stranger = scene.person(99, "路人")
    calls = await scene.say(stranger, group, "/points")
    told = _only(calls)
    assert told.chat_id == GROUP_B3 and told.buttons[0][0]["url"].endswith("start=points")


async def test_welcome_credit_when_joining_by_code(db: Database, scene: Scene) -> None:
    w = await _world(db)
    newcomer = scene.person(40, "新邻居")
    async with db.transaction(write=False) as s:
        household = (await people.households_in(s, building_id=w.b3))[0]
    chat = scene.private(newcomer)
    await scene.say(newcomer, chat, f"/join {household.code}")
    await scene.say(newcomer, chat, f"/join {household.code}")  # again: no second credit
    shown = _only(await scene.say(newcomer, chat, "/points"))
    assert "我的积分：5 分" in shown.text and "新邻居欢迎积分" in shown.text
    assert await _balance(db, w, 40) == 5


# --- /award ---------------------------------------------------------------------------------


async def test_award_by_reply_in_a_group_and_a_double_tap_counts_once(
    db: Database, scene: Scene
) -> None:
    w = await _world(db)
    u = _people(scene)
    group = scene.group(GROUP_B3, "3号楼邻里群")
    said = scene.message_json(u[WANG], group, "今天的垃圾我分好类了")
    calls = await scene.say(u[LEAD], group, "/award", reply_to=said)
    # The steps go to the lead privately; the group is told only that.
    assert "私聊" in _only(calls, GROUP_B3).text
    amounts = _only(calls, LEAD)
    assert "给 王阿姨 加多少分" in amounts.text.replace("<b>", "").replace("</b>", "")
    labels = _labels(amounts)
    assert {"1", "2", "5", "10", "20", "垃圾分类 +2", "巡逻 +5"} <= set(labels)
    # Someone else cannot drive the lead's picker.
    (alert,) = alerts(await scene.tap(u[WANG], amounts, "10"))
    assert "别人打开" in alert
    reasons = _edited(await scene.tap(u[LEAD], amounts, "10"))
    confirm = _edited(await scene.tap(u[LEAD], reasons, "垃圾分类"))
    assert "+10" in confirm.text and "原因：垃圾分类" in confirm.text
    yes = scene.button_data(scene.message_of(confirm), "确认")
    sender = delivery.sender_of(scene.app)
    sender._wake.clear()
    done = _edited(await scene.tap(u[LEAD], confirm, "确认"))
    assert "已记入账本" in done.text and "王阿姨" in done.text
    assert sender.woken  # the notice goes now, not at the sender's next 30 s look
    again = await scene.press(u[LEAD], confirm, yes)
    assert any("已经记过" in a for a in alerts(again))
    assert await _balance(db, w, WANG) == 10
    (entry,) = await _entries(db)
    assert (entry.by, entry.reason, entry.rule_code, entry.kind) == (
        LEAD,
        "垃圾分类",
        "garbage",
        "award",
    )
    (notice,) = await _notices(db, "points/awarded")
    assert notice.key == f"award:{entry.id}" and notice.chat_id == WANG
    assert notice.person_id == WANG and notice.context["balance"] == 10


async def test_award_from_the_list_to_several_people_at_once(db: Database, scene: Scene) -> None:
    w = await _world(db)
    u = _people(scene)
    chat = scene.private(u[LEAD])
    picker = _only(await scene.say(u[LEAD], chat, "/award"))
    names = _labels(picker)
    assert "▫️ 王阿姨（3-2-501）" in names and "▫️ Sam（5-1-101）" in names
    assert not any("周伯" in n for n in names)  # 9号楼 is not this lead's
    picked = _edited(await scene.tap(u[LEAD], picker, "王阿姨"))
    picked = _edited(await scene.tap(u[LEAD], picked, "Sam"))
    picked = _edited(await scene.tap(u[LEAD], picked, "李叔"))
    picked = _edited(await scene.tap(u[LEAD], picked, "李叔"))  # changed their mind
    assert "✅ 王阿姨（3-2-501）" in _labels(picked)
    amounts = _edited(await scene.tap(u[LEAD], picked, "已选 2 人"))
    confirm = _edited(await scene.tap(u[LEAD], amounts, "巡逻 +5"))
    assert "每人" in confirm.text and "+5" in confirm.text
    _edited(await scene.tap(u[LEAD], confirm, "确认"))
    assert [await _balance(db, w, p) for p in (WANG, SAM, LI)] == [5, 5, 0]
    notices = await _notices(db, "points/awarded")
    assert sorted(n.person_id or 0 for n in notices) == [WANG, SAM]


async def test_typed_amount_and_reason(db: Database, scene: Scene) -> None:
    w = await _world(db)
    u = _people(scene)
    chat = scene.private(u[LEAD])
    picker = _only(await scene.say(u[LEAD], chat, "/award"))
    amounts = _edited(
        await scene.tap(u[LEAD], _edited(await scene.tap(u[LEAD], picker, "王阿姨")), "下一步")
    )
    asked = _only(await scene.tap(u[LEAD], amounts, "输入其他分数"))
    assert "1 到 100" in asked.text
    reasons = _only(
        await scene.say(u[LEAD], chat, "３")
    )  # a full-width digit from a Chinese keyboard
    _only(await scene.tap(u[LEAD], reasons, "输入原因"))
    confirm = _only(await scene.say(u[LEAD], chat, "帮邻居修好了路灯"))
    assert "原因：帮邻居修好了路灯" in confirm.text and "+3" in confirm.text
    await scene.tap(u[LEAD], confirm, "确认")
    assert await _balance(db, w, WANG) == 3


async def test_over_max_negative_and_non_numeric_amounts_are_refused(
    db: Database, scene: Scene
) -> None:
    w = await _world(db)
    u = _people(scene)
    chat = scene.private(u[LEAD])
    picker = _only(await scene.say(u[LEAD], chat, "/award"))
    amounts = _edited(
        await scene.tap(u[LEAD], _edited(await scene.tap(u[LEAD], picker, "王阿姨")), "下一步")
    )
    draft = scene.button_data(scene.message_of(amounts), 0).split(":")[1]
    for forged in ("5000", "-5", "0", "abc"):
        (alert,) = alerts(await scene.press(u[LEAD], amounts, f"pa:{draft}:{forged}"))
        assert "1 到 100" in alert
    for typed in ("5000", "-5", "十"):
        await scene.tap(u[LEAD], amounts, "输入其他分数")
        refused = _only(await scene.say(u[LEAD], chat, typed))
        assert "1 到 100" in refused.text
    (alert,) = alerts(await scene.press(u[LEAD], amounts, f"pc:{draft}"))
    assert "1 到 100" in alert  # no amount was ever accepted
    assert await _entries(db) == [] and await _balance(db, w, WANG) == 0


async def test_forged_award_callbacks_outside_the_leads_units_are_refused(
    db: Database, scene: Scene
) -> None:
    await _world(db)
    u = _people(scene)
    chat = scene.private(u[LEAD])
    picker = _only(await scene.say(u[LEAD], chat, "/award"))
    draft = scene.button_data(scene.message_of(picker), 0).split(":")[1]
    (alert,) = alerts(await scene.press(u[LEAD], picker, f"fv:{draft}:{ZHOU}:0:1"))
    assert "不在您负责" in alert
    # Another lead cannot use this lead's draft, nor can a resident start one.
    (alert,) = alerts(await scene.press(u[OTHER_LEAD], picker, f"pc:{draft}"))
    assert "别人打开" in alert
    refused = _only(await scene.say(u[WANG], scene.private(u[WANG]), "/award"))
    assert "只有负责人" in refused.text
    # By reply, a resident outside the lead's units is refused too.
    group = scene.group(GROUP_GRID, "一网格群")
    said = scene.message_json(u[ZHOU], group, "我也来帮忙")
    refused = _only(await scene.say(u[LEAD], group, "/award", reply_to=said))
    assert "不在您负责" in refused.text
    # A lead whose cover was removed after the draft started is stopped at confirm.
    amounts = _edited(
        await scene.tap(u[LEAD], _edited(await scene.tap(u[LEAD], picker, "王阿姨")), "下一步")
    )
    confirm = _edited(await scene.tap(u[LEAD], amounts, "巡逻 +5"))
    async with db.transaction() as s:
        ((role, _unit),) = await people.roles_of(s, person_id=LEAD)
        await people.revoke_role(s, auth=BOSS, role_id=role.id or 0)
    (alert,) = alerts(await scene.tap(u[LEAD], confirm, "确认"))
    assert "一网格" in alert
    assert await _entries(db) == [] and await _notices(db, "points/awarded") == []


# --- /deduct --------------------------------------------------------------------------------


async def test_deduct_needs_a_reason_and_notifies_the_person(db: Database, scene: Scene) -> None:
    w = await _world(db)
    u = _people(scene)
    await _give(db, w, WANG, 10, "d:1")
    group = scene.group(GROUP_B3, "3号楼邻里群")
    said = scene.message_json(u[WANG], group, "谢谢")
    calls = await scene.say(u[LEAD], group, "/deduct", reply_to=said)
    assert "私聊" in _only(calls, GROUP_B3).text
    amounts = _only(calls, LEAD)
    assert not any("巡逻" in x for x in _labels(amounts))  # no rule shortcut
    draft = scene.button_data(scene.message_of(amounts), 0).split(":")[1]
    reasons = _edited(await scene.tap(u[LEAD], amounts, "2"))
    assert _labels(reasons)[0] == "✏️ 输入原因"
    (alert,) = alerts(await scene.press(u[LEAD], reasons, f"pc:{draft}"))
    assert "写上原因" in alert
    (alert,) = alerts(await scene.press(u[LEAD], reasons, f"ps:{draft}:garbage"))
    assert "失效" in alert
    assert await _balance(db, w, WANG) == 10
    await scene.tap(u[LEAD], reasons, "输入原因")
    confirm = _only(await scene.say(u[LEAD], scene.private(u[LEAD]), "重复领取，更正"))
    assert "−2" in confirm.text and "重复领取，更正" in confirm.text
    await scene.tap(u[LEAD], confirm, "确认")
    assert await _balance(db, w, WANG) == 8
    (notice,) = await _notices(db, "points/deducted")
    assert notice.person_id == WANG and notice.context["reason"] == "重复领取，更正"


async def test_deduct_more_than_the_balance_is_refused(db: Database, scene: Scene) -> None:
    w = await _world(db)
    u = _people(scene)
    await _give(db, w, WANG, 3, "d:2")
    group = scene.group(GROUP_B3, "3号楼邻里群")
    said = scene.message_json(u[WANG], group, "嗯")
    amounts = _only(await scene.say(u[LEAD], group, "/deduct", reply_to=said), LEAD)
    reasons = _edited(await scene.tap(u[LEAD], amounts, "5"))
    await scene.tap(u[LEAD], reasons, "输入原因")
    confirm = _only(await scene.say(u[LEAD], scene.private(u[LEAD]), "多记了"))
    (alert,) = alerts(await scene.tap(u[LEAD], confirm, "确认"))
    assert "积分不够" in alert and "现有 3 分" in alert
    assert await _balance(db, w, WANG) == 3 and await _notices(db, "points/deducted") == []


# --- /correct: an admin's correction may go below zero (issue 8 item 14) ----------------------

CHEN = 36  # 陈主任: admin of 一网格, a top-level unit, so a community admin


async def _admin(db: Database, scene: Scene, w: World) -> JSON:
    async with db.transaction() as s:
        await people.touch_person(
            s, person_id=CHEN, name="陈主任", username=None, language_code="zh-hans", now=NOW
        )
        await people.grant_role(
            s, auth=BOSS, unit_id=w.grid1, person_id=CHEN, kind="admin", now=NOW
        )
    chen = scene.person(CHEN, "陈主任")
    scene.private(chen)
    scene.tg.started.add(CHEN)
    return chen


async def test_an_admin_corrects_an_over_award_already_spent(db: Database, scene: Scene) -> None:
    w = await _world(db)
    u = _people(scene)
    chen = await _admin(db, scene, w)
    await _give(db, w, WANG, 10, "over:1")
    await _give(db, w, WANG, -8, "spent:1", kind="redeem", reason="理发券")
    await _give(db, w, SAM, 1, "over:2")
    chat = scene.private(chen)
    picker = _only(await scene.say(chen, chat, "/correct"))
    assert "更正积分" in picker.text and "范围：一网格" in picker.text
    picked = _edited(await scene.tap(chen, picker, "王阿姨"))
    picked = _edited(await scene.tap(chen, picked, "Sam"))
    amounts = _edited(await scene.tap(chen, picked, "已选 2 人"))
    assert "低于零" in amounts.text and not any("巡逻" in x for x in _labels(amounts))
    reasons = _edited(await scene.tap(chen, amounts, "5"))
    await scene.tap(chen, reasons, "输入原因")
    confirm = _only(await scene.say(chen, chat, "重复发放，已用掉"))
    assert "更正" in confirm.text and "−5" in confirm.text
    done = _edited(await scene.tap(chen, confirm, "确认"))
    assert "已记入账本" in done.text and "更正" in done.text
    assert await _balance(db, w, WANG) == -3 and await _balance(db, w, SAM) == -4
    assert {(e.person_id, e.amount, e.kind, e.by) for e in await _entries(db) if e.by == CHEN} == {
        (WANG, -5, "correct", CHEN),
        (SAM, -5, "correct", CHEN),
    }
    scene.tg.calls.clear()
    await delivery.drain(scene.app)
    (wang,) = messages(scene.tg.calls, WANG)
    assert (
        "\n如有疑问" in wang.text
        and "积分更正" in wang.text
        and "共有 -3 分。" in wang.text
        and "低于零" in wang.text
    )
    (sam,) = messages(scene.tg.calls, SAM)
    assert (
        "Points correction" in sam.text
        and "You now have -4 points" in sam.text
        and "below zero" in sam.text
    )
    # The resident's own view shows the correction and the balance below zero.
    mine = _only(await scene.say(u[WANG], scene.private(u[WANG]), "/points"))
    assert "我的积分：-3 分" in mine.text and "-5" in mine.text and "重复发放" in mine.text
    # An ordinary deduction still may not take anyone (further) below zero.
    group = scene.group(GROUP_B3, "3号楼邻里群")
    said = scene.message_json(u[WANG], group, "嗯")
    amounts = _only(await scene.say(u[LEAD], group, "/deduct", reply_to=said), LEAD)
    reasons = _edited(await scene.tap(u[LEAD], amounts, "1"))
    await scene.tap(u[LEAD], reasons, "输入原因")
    confirm = _only(await scene.say(u[LEAD], scene.private(u[LEAD]), "再扣"))
    (alert,) = alerts(await scene.tap(u[LEAD], confirm, "确认"))
    assert "积分不够" in alert
    assert await _balance(db, w, WANG) == -3


async def test_a_lead_who_is_no_community_admin_cannot_correct(db: Database, scene: Scene) -> None:
    w = await _world(db)
    u = _people(scene)
    chen = await _admin(db, scene, w)
    await _give(db, w, WANG, 2, "c:1")
    chat = scene.private(u[LEAD])
    (refused,) = messages(await scene.say(u[LEAD], chat, "/correct"))
    assert "只有社区管理员才能更正积分" in refused.text
    # Nor by reply in a group, nor by forging the admin's buttons or the unit picker's.
    group = scene.group(GROUP_B3, "3号楼邻里群")
    said = scene.message_json(u[WANG], group, "嗯")
    calls = await scene.say(u[LEAD], group, "/correct", reply_to=said)
    assert not messages(calls, LEAD)
    assert "只有社区管理员" in _only(calls, GROUP_B3).text
    picker = _only(await scene.say(chen, scene.private(chen), "/correct"))
    draft = scene.button_data(scene.message_of(picker), 0).split(":")[1]
    forged = (f"fc:{draft}:{w.grid1}", f"fv:{draft}:{WANG}:0:1", f"fn:{draft}", f"pa:{draft}:5",
              f"pk:{draft}", f"pc:{draft}")  # fmt: skip
    for data in forged:
        (alert,) = alerts(await scene.press(u[LEAD], picker, data))
        assert "别人打开" in alert or "只有社区管理员" in alert
    assert await _balance(db, w, WANG) == 2
    assert [e for e in await _entries(db) if e.kind == "correct"] == []
    assert await _notices(db, "points/corrected") == []


# --- /top -----------------------------------------------------------------------------------


@pytest.mark.shows_in_group("王阿姨", "李叔", "Sam")  # on the board unless they hide
async def test_top_lists_names_only_and_a_hidden_person_is_left_off(
    db: Database, scene: Scene, clock: Clock
) -> None:
    w = await _world(db)
    u = _people(scene)
    await _give(db, w, WANG, 9, "top:1")
    await _give(db, w, LI, 4, "top:2")
    await _give(db, w, SAM, 6, "top:3")
    await _give(db, w, SAM, 50, "top:4", kind="welcome")  # welcome credits earn no honour
    group = scene.group(GROUP_GRID, "一网格群")
    board = _only(await scene.say(u[LI], group, "/top"))
    assert "一网格 · 本月红榜" in board.text
    order = [board.text.index(n) for n in ("王阿姨 — 9", "Sam — 6", "李叔 — 4")]
    assert order == sorted(order) and "5-1-101" not in board.text
    calls = await scene.tap(u[SAM], board, "我不想上榜")
    assert any("off the honour board" in a for a in alerts(calls))  # his note, his language
    hidden = _edited(calls)
    assert "Sam" not in hidden.text and "王阿姨 — 9" in hidden.text
    # The board is the group's: an English reader's tap redraws it in the community's Chinese.
    assert "本月红榜" in hidden.text and "总榜" in [b["text"] for r in hidden.buttons for b in r]
    all_time = _edited(await scene.tap(u[SAM], hidden, "总榜"))
    assert "总红榜" in all_time.text and "Sam" not in all_time.text
    assert "🙈 我不想上榜" in [b["text"] for r in all_time.buttons for b in r]
    # Privately Sam sees the board of his own building, and that he is hidden.
    mine = _only(await scene.say(u[SAM], scene.private(u[SAM]), "/top"))
    assert "5号楼" in mine.text and "stay off the board" in mine.text
    shown = _edited(await scene.tap(u[SAM], mine, "Show me"))
    assert "Sam — 6" in shown.text
    # Next month the monthly board starts empty; the all-time board remembers.
    clock.advance(days=15)
    fresh = _only(await scene.say(u[LI], group, "/top"))
    assert "还没有人上榜" in fresh.text


# --- /export and /rules ---------------------------------------------------------------------


async def test_export_sends_the_ledger_as_csv(db: Database, scene: Scene) -> None:
    w = await _world(db)
    u = _people(scene)
    await _give(db, w, WANG, 9, "x:1", reason="巡逻", rule_code="patrol")
    await _give(db, w, LI, 4, "x:2", reason='帮忙, "搬家"')
    chat = scene.private(u[ADMIN_ID])
    periods = _only(await scene.say(u[ADMIN_ID], chat, "/export"))
    calls = await scene.tap(u[ADMIN_ID], periods, "本月")
    (doc,) = [c for c in calls if c.method == "sendDocument"]
    rows = list(csv.reader(io.StringIO(doc.files["document"].decode("utf-8-sig"))))
    assert rows[0][:5] == ["时间", "记录编号", "居民ID", "居民", "积分"]
    assert [(r[3], r[4], r[6], r[7], r[9]) for r in rows[1:]] == [
        ("王阿姨", "9", "巡逻", "巡逻", "张网格长"),
        ("李叔", "4", "", '帮忙, "搬家"', "张网格长"),
    ]
    assert rows[1][0] == "2026-11-20 10:00:00" and rows[1][-1] == "x:1"
    assert "2 条记录" in doc.text and "+13" in doc.text
    empty = _only(await scene.tap(u[ADMIN_ID], periods, "上个月"))
    assert "没有积分记录" in empty.text
    await _give(db, w, WANG, 1, "x:3", reason="=HYPERLINK(1)")
    calls = await scene.tap(u[ADMIN_ID], periods, "全部")
    (doc,) = [c for c in calls if c.method == "sendDocument"]
    rows = list(csv.reader(io.StringIO(doc.files["document"].decode("utf-8-sig"))))
    assert rows[-1][7] == "'=HYPERLINK(1)" and "全部" in doc.text and "3 条记录" in doc.text
    await scene.tap(u[ADMIN_ID], periods, "输入日期范围")
    calls = await scene.say(u[ADMIN_ID], chat, "2026-11-20 2026-11-20")
    assert [c for c in calls if c.method == "sendDocument"]
    refused = _only(await scene.say(u[LEAD], scene.private(u[LEAD]), "/export"))
    assert "管理员" in refused.text
    in_group = _only(await scene.say(u[ADMIN_ID], scene.group(GROUP_B3, "3号楼"), "/export"))
    assert "私聊" in in_group.text and not [
        c for c in scene.tg.calls if c.method == "sendDocument" and c.chat_id == GROUP_B3
    ]


async def test_an_admin_of_one_building_is_no_community_admin(db: Database, scene: Scene) -> None:
    """Community admin = an admin role on a top-level unit: a building's admin exports nothing
    and changes no rule, by command or by a forged button."""
    w = await _world(db)
    async with db.transaction() as s:
        await people.grant_role(s, auth=BOSS, unit_id=w.b3, person_id=WANG, kind="admin", now=NOW)
    await _give(db, w, LI, 4, "x:1", reason="巡逻")
    u = _people(scene)
    chat = scene.private(u[WANG])
    for command in ("/export", "/rules"):
        refused = _only(await scene.say(u[WANG], chat, command))
        assert "管理员" in refused.text
    points_view = _only(await scene.say(u[WANG], chat, "/points"))
    assert "导出" not in str(_labels(points_view))
    for forged in (f"pe:{w.community}", f"pd:{w.community}:a", f"pl:{w.community}"):
        (alert,) = alerts(await scene.press(u[WANG], points_view, forged))
        assert "管理员" in alert
    assert not [c for c in scene.tg.calls if c.method == "sendDocument"]


async def test_admin_changes_a_rule_and_the_largest_award(db: Database, scene: Scene) -> None:
    await _world(db)
    u = _people(scene)
    chat = scene.private(u[ADMIN_ID])
    shown = _only(await scene.say(u[ADMIN_ID], chat, "/rules"))
    assert "垃圾分类：2 分" in shown.text and "单次奖励上限：100 分" in shown.text
    rule = _edited(await scene.tap(u[ADMIN_ID], shown, "垃圾分类"))
    await scene.tap(u[ADMIN_ID], rule, "修改分数")
    saved = _only(await scene.say(u[ADMIN_ID], chat, "3"))
    assert "已保存" in saved.text and "垃圾分类：3 分" in saved.text
    rule = _edited(await scene.tap(u[ADMIN_ID], saved, "巡逻"))
    off = _edited(await scene.tap(u[ADMIN_ID], rule, "停用"))
    assert "已停用" in off.text
    listed = _edited(await scene.tap(u[ADMIN_ID], off, "返回"))
    assert "⏸ 巡逻：5 分" in listed.text
    await scene.tap(u[ADMIN_ID], listed, "单次奖励上限")
    _only(await scene.say(u[ADMIN_ID], chat, "8"))
    # The lead's amount buttons follow: no 10 or 20, no patrol, garbage at 3.
    picker = _only(await scene.say(u[LEAD], scene.private(u[LEAD]), "/award"))
    amounts = _edited(
        await scene.tap(u[LEAD], _edited(await scene.tap(u[LEAD], picker, "王阿姨")), "下一步")
    )
    labels = _labels(amounts)
    assert "10" not in labels and "垃圾分类 +3" in labels and not any("巡逻" in x for x in labels)
    refused = _only(await scene.say(u[LEAD], scene.private(u[LEAD]), "/rules"))
    assert "管理员" in refused.text
