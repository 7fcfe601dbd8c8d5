"""The flow UI and the pickers as people tap and type them, through the PTB application.

A small feature of the tests' own (flow kind "pdemo", commands /demo_*) drives them the way a
real feature does: it starts a flow, opens a picker, and its continuation says what was chosen.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlmodel import col, select
from telegram import Update
from telegram.ext import CommandHandler

from bot.context import LinliApp, LinliContext
from bot.db import Database
from bot.standin import JSON, Call, Scene, alerts, messages
from handlers import flowui, pickers
from handlers.common import is_private, user_id
from models import flows, people
from models.flows import Flow, FlowStatus
from models.people import Can
from tests.conftest import NOW
from tests.integration.conftest import ADMIN_ID, Clock
from tests.world import GROUP_B3, LEAD, OTHER_LEAD, SAM, world

KIND = "pdemo"


@pickers.chosen(KIND)
async def _after(update: Update, ctx: LinliContext, flow: Flow, field: str) -> None:
    text = f"chosen {field}={json.dumps(flow.data[field], sort_keys=True)}"
    if update.callback_query is not None:
        await update.callback_query.edit_message_text(text)
    else:
        assert update.effective_message is not None
        await update.effective_message.reply_text(text)


@flowui.answers(KIND, "name")
async def _on_name(update: Update, ctx: LinliContext, flow: Flow, text: str) -> None:
    if not text.strip():
        await flowui.ask(update, ctx, flow, step="name", template="pickers/ask_when",
                         problem="bad_time", example="x", end=False)  # fmt: skip
        return
    async with ctx.svc.db.transaction() as s:
        live = await flowui.load(s, ctx, update, flowui.flow_id(flow), kind=KIND)
        await flows.update(s, live, now=ctx.now(), name=text)
    assert update.effective_message is not None
    await update.effective_message.reply_text(f"named {text}")


async def _start(update: Update, ctx: LinliContext) -> Flow:
    async with ctx.svc.db.transaction() as s:
        community = (await people.communities(s))[0]
        return await flows.start(
            s, kind=KIND, owner_id=user_id(update), community_id=community.id,
            private=False, now=ctx.now(),
        )  # fmt: skip


async def _demo(update: Update, ctx: LinliContext) -> None:
    message = update.effective_message
    assert message is not None and message.text is not None
    what = message.text.split()[0].removeprefix("/demo_")
    flow = await _start(update, ctx)
    if what == "units":
        await pickers.units(update, ctx, flow, field="unit_id", can=Can.lead)
    elif what == "admin":
        await pickers.units(update, ctx, flow, field="unit_id", can=Can.admin)
    elif what == "when":
        await pickers.when(update, ctx, flow, field="at", end=True, now=is_private(update))
    elif what == "once":
        await pickers.when(update, ctx, flow, field="at")
    elif what == "repeat":
        start = NOW.replace(day=9)  # a 9th: monthly starts on day 9, weekly on its weekday
        await pickers.repeat(update, ctx, flow, field="rep", start=start, zone="Asia/Shanghai")
    elif what == "ask":
        await flowui.ask(update, ctx, flow, step="name", template="pickers/ask_when",
                         problem=None, example="x", end=False)  # fmt: skip


@pytest.fixture
async def demo(app: LinliApp) -> LinliApp:
    app.add_handler(CommandHandler(["demo_units", "demo_admin", "demo_when", "demo_once",
                                    "demo_repeat", "demo_ask"], _demo), group=-1)  # fmt: skip
    return app


def _labels(call: Call) -> list[str]:
    return [str(b["text"]) for row in call.buttons for b in row]


def _edits(calls: list[Call]) -> list[Call]:
    return [c for c in calls if c.method == "editMessageText" and c.ok]


async def _flow(db: Database) -> Flow:
    async with db.transaction(write=False) as s:
        return (await s.exec(select(Flow).order_by(col(Flow.id).desc()))).first()  # type: ignore[return-value]


def _lead(scene: Scene) -> JSON:
    return scene.person(LEAD, "张网格长")


# --- the unit-tree picker ---------------------------------------------------------------------


async def test_a_lead_drills_down_to_a_building_and_the_feature_carries_on(
    scene: Scene, db: Database, demo: LinliApp
) -> None:
    w = await world(db)
    lead = _lead(scene)
    chat = scene.private(lead)
    (tree,) = messages(await scene.say(lead, chat, "/demo_units"))
    # One unit led (一网格): straight to it, with its buildings (leaves choose at once).
    assert "一网格" in tree.text
    assert _labels(tree) == ["✅ 就选「一网格」", "3号楼", "5号楼", "✖ 取消"]
    (done,) = _edits(await scene.tap(lead, tree, "5号楼"))
    assert done.text == f"chosen unit_id={w.b5}"
    flow = await _flow(db)
    assert flow.data["unit_id"] == w.b5 and flow.data[pickers.STATE] is None
    # The picker is closed: its buttons are stale now, and nothing changes.
    calls = await scene.press(lead, tree, f"fc:{flow.id}:{w.b3}")
    assert alerts(calls) == ["这个按钮已失效，请重新打开菜单。"]
    assert (await _flow(db)).data["unit_id"] == w.b5


async def test_forged_unit_buttons_are_refused_on_the_server(
    scene: Scene, db: Database, demo: LinliApp
) -> None:
    w = await world(db)
    lead, other = _lead(scene), scene.person(OTHER_LEAD, "刘组长")
    chat = scene.private(lead)
    (tree,) = messages(await scene.say(lead, chat, "/demo_units"))
    fid = (await _flow(db)).id
    # Another grid's building, its level, a unit that does not exist: refused.
    for data in (f"fc:{fid}:{w.b9}", f"fu:{fid}:{w.grid2}:0", f"fc:{fid}:999999", f"fc:{fid}:x"):
        calls = await scene.press(lead, tree, data)
        assert alerts(calls) and not _edits(calls), data
    assert alerts(await scene.press(lead, tree, f"fc:{fid}:{w.b9}")) == [
        "您不是「9号楼」的负责人，不能做这件事。"
    ]
    # Someone else tapping the lead's flow, even on a unit they lead: not theirs.
    scene.private(other)
    calls = await scene.press(other, tree, f"fc:{fid}:{w.b9}")
    assert alerts(calls) == ["这是别人打开的，只有本人可以继续。"]
    flow = await _flow(db)
    assert "unit_id" not in flow.data and flow.status == FlowStatus.open


async def test_a_super_admin_pages_through_top_units_and_goes_up_and_down(
    scene: Scene, db: Database, demo: LinliApp
) -> None:
    w = await world(db)
    async with db.transaction() as s:
        for i in range(10):  # 二网格 gets 10 more buildings: two pages of them
            await people.create_unit(s, community_id=w.community, parent_id=w.grid2,
                                     kind="building", name=f"{20 + i}号楼", now=NOW)  # fmt: skip
    boss = scene.person(ADMIN_ID, "Admin")
    chat = scene.private(boss)
    (tops,) = messages(await scene.say(boss, chat, "/demo_units"))
    assert _labels(tops) == ["一网格 ›", "二网格 ›", "✖ 取消"]
    (grid2,) = _edits(await scene.tap(boss, tops, "二网格"))
    assert "（第 1/2 页）" in grid2.text
    assert "下一页 ▶" in _labels(grid2) and "⬆ 返回上一级" in _labels(grid2)
    assert len([b for b in _labels(grid2) if b.endswith("号楼")]) == 8
    (page2,) = _edits(await scene.tap(boss, grid2, "下一页"))
    assert "（第 2/2 页）" in page2.text and "◀ 上一页" in _labels(page2)
    assert len([b for b in _labels(page2) if b.endswith("号楼")]) == 3
    (up,) = _edits(await scene.tap(boss, page2, "返回上一级"))
    assert _labels(up) == ["一网格 ›", "二网格 ›", "✖ 取消"]
    (done,) = _edits(await scene.tap(boss, up, "一网格"))
    (chosen,) = _edits(await scene.tap(boss, done, "就选"))
    assert chosen.text == f"chosen unit_id={w.grid1}"


async def test_a_lead_without_admin_role_has_no_unit_for_admin_work(
    scene: Scene, db: Database, demo: LinliApp
) -> None:
    await world(db)
    lead = _lead(scene)
    (none,) = messages(await scene.say(lead, scene.private(lead), "/demo_admin"))
    assert "没有可以选的单元" in none.text and _labels(none) == ["✖ 取消"]


# --- the date-and-time picker -----------------------------------------------------------------


async def test_a_day_a_time_and_an_end_by_buttons(
    scene: Scene, db: Database, demo: LinliApp
) -> None:
    await world(db)
    lead = _lead(scene)
    (days,) = messages(await scene.say(lead, scene.private(lead), "/demo_when"))
    labels = _labels(days)
    assert labels[0] == "🚀 现在"  # offered in a private chat by this feature
    assert labels[1] == "今天 11月20日 周五" and labels[2] == "明天 11月21日 周六"
    assert len([b for b in labels if "月" in b]) == 14
    (today,) = _edits(await scene.tap(lead, days, "今天"))
    # 10:00 now in Shanghai: only the common times still ahead today.
    assert _labels(today)[:3] == ["14:00", "16:00", "19:00"]
    (end,) = _edits(await scene.tap(lead, today, "14:00"))
    assert "11-20 14:00" in end.text and "到 16:00（2 小时）" in _labels(end)
    assert "到 18:00（4 小时）" in _labels(end)
    (done,) = _edits(await scene.tap(lead, end, "到 16:00"))
    assert done.text == (
        'chosen at={"end": "2026-11-20T08:00:00+00:00", "start": "2026-11-20T06:00:00+00:00"}'
    )


async def test_a_tapped_time_that_has_passed_is_refused_in_words(
    scene: Scene, db: Database, demo: LinliApp, clock: Clock
) -> None:
    await world(db)
    lead = _lead(scene)
    clock.advance(hours=3, minutes=50)  # 13:50 in Shanghai
    (days,) = messages(await scene.say(lead, scene.private(lead), "/demo_once"))
    (today,) = _edits(await scene.tap(lead, days, "今天"))
    clock.advance(minutes=20)  # 14:10: the 14:00 button is now in the past
    calls = await scene.tap(lead, today, "14:00")
    assert alerts(calls) == ["这个时间已经过去了，请选一个以后的时间。"]
    fid = (await _flow(db)).id
    # Yesterday's date from an old message: the past too; a day beyond the 14: stale.
    assert alerts(await scene.press(lead, today, f"fd:{fid}:20261119")) == [
        "这个时间已经过去了，请选一个以后的时间。"
    ]
    assert alerts(await scene.press(lead, today, f"fd:{fid}:20270101")) == [
        "这个按钮已失效，请重新打开菜单。"
    ]
    assert "at" not in (await _flow(db)).data
    # Tapped before its time, with no end wanted: stored at once.
    (done,) = _edits(await scene.tap(lead, today, "16:00"))
    assert done.text == 'chosen at={"end": null, "start": "2026-11-20T08:00:00+00:00"}'


async def test_typed_times_in_the_community_zone_with_clear_refusals_in_english(
    scene: Scene, db: Database, demo: LinliApp
) -> None:
    await world(db)
    sam = scene.person(SAM, "Sam", lang="en")
    chat = scene.private(sam)
    (days,) = messages(await scene.say(sam, chat, "/demo_when"))
    assert _labels(days)[1] == "Today, Fri 20 Nov"
    calls = await scene.tap(sam, days, "Type a date")
    (ask,) = messages(calls)
    assert "11-21 9:00" in ask.text and _labels(ask) == ["✖ Cancel"]
    (again,) = messages(await scene.say(sam, chat, "yesterday-ish"))
    assert "could not read" in again.text
    (again,) = messages(await scene.say(sam, chat, "2026-11-19 09:00"))
    assert "already passed" in again.text
    # A start without an end: the end is asked with buttons; then typed.
    (end,) = messages(await scene.say(sam, chat, "１２-０９ ９:００"))  # full-width digits
    assert "09/12 09:00" in end.text and "Until 11:00 (2 h)" in _labels(end)
    (ask_end,) = messages(await scene.tap(sam, end, "Type the end"))
    assert "Send the end time" in ask_end.text
    (bad,) = messages(await scene.say(sam, chat, "8:00"))
    assert "not after the start (09:00)" in bad.text
    (done,) = messages(await scene.say(sam, chat, "11:30"))
    assert done.text == (
        'chosen at={"end": "2026-12-09T03:30:00+00:00", "start": "2026-12-09T01:00:00+00:00"}'
    )


async def test_a_typed_range_fills_start_and_end_at_once(
    scene: Scene, db: Database, demo: LinliApp
) -> None:
    await world(db)
    lead = _lead(scene)
    chat = scene.private(lead)
    (days,) = messages(await scene.say(lead, chat, "/demo_when"))
    await scene.tap(lead, days, "自己输入")
    (done,) = messages(await scene.say(lead, chat, "2026-12-09 09:00-11:30"))
    assert done.text == (
        'chosen at={"end": "2026-12-09T03:30:00+00:00", "start": "2026-12-09T01:00:00+00:00"}'
    )
    (now,) = messages(await scene.say(lead, chat, "/demo_when"))
    (chosen,) = _edits(await scene.tap(lead, now, "现在"))
    assert chosen.text == 'chosen at={"end": null, "start": null}'


# --- the recurrence picker --------------------------------------------------------------------


async def test_monthly_on_the_9th_19th_and_29th_with_the_short_month_rule_stated(
    scene: Scene, db: Database, demo: LinliApp
) -> None:
    await world(db)
    lead = _lead(scene)
    (modes,) = messages(await scene.say(lead, scene.private(lead), "/demo_repeat"))
    assert _labels(modes) == ["1️⃣ 不重复", "🔁 每周…", "📅 每月…", "✖ 取消"]
    (month,) = _edits(await scene.tap(lead, modes, "每月"))
    assert "现在：每月 9 日" in month.text and "✅9" in _labels(month)
    add19 = Scene.button_data(scene.message_of(month), "19")
    assert add19.endswith(":19:1")  # the button says "add 19": a state, not a toggle
    await scene.press(lead, month, add19)
    await scene.press(lead, month, add19)  # the same tap again (a double tap) changes nothing
    (more,) = _edits(await scene.tap(lead, month, "29"))
    assert "现在：每月 9、19、29 日" in more.text
    assert "有的月份没有 29 号" in more.text and "最后一天" in more.text
    (done,) = _edits(await scene.tap(lead, more, "选好了"))
    assert done.text == 'chosen rep={"monthly": [9, 19, 29]}'


async def test_weekly_days_are_added_and_removed_and_none_is_refused(
    scene: Scene, db: Database, demo: LinliApp
) -> None:
    await world(db)
    sam = scene.person(SAM, "Sam", lang="en")
    (modes,) = messages(await scene.say(sam, scene.private(sam), "/demo_repeat"))
    (week,) = _edits(await scene.tap(sam, modes, "Every week"))
    # 9 November 2026 is a Monday: the week starts with it.
    assert "✅ Mon" in _labels(week) and "Now: every Mon" in week.text
    (none,) = _edits(await scene.tap(sam, week, "✅ Mon"))
    assert "No day chosen yet" in none.text
    assert alerts(await scene.tap(sam, none, "Done")) == [
        "No day is chosen yet: tap at least one day, then “Done”."
    ]
    await scene.tap(sam, none, "Wed")
    (two,) = _edits(await scene.tap(sam, none, "Fri"))
    assert "Now: every Wed, Fri" in two.text
    fid = (await _flow(db)).id
    for forged in (f"fw:{fid}:7:1", f"fw:{fid}:1:2", f"fr:{fid}:x"):
        assert alerts(await scene.press(sam, two, forged)) == [
            "This button is no longer valid. Please open the menu again."
        ]
    (once,) = _edits(await scene.tap(sam, two, "Repeat differently"))
    (done,) = _edits(await scene.tap(sam, once, "Does not repeat"))
    assert done.text == "chosen rep=null"


# --- typed answers, cancel, expiry --------------------------------------------------------------


async def test_a_typed_answer_reaches_the_step_that_asked_once(
    scene: Scene, db: Database, demo: LinliApp
) -> None:
    await world(db)
    lead = _lead(scene)
    group = scene.group(GROUP_B3, "3号楼邻里群")
    (ask,) = messages(await scene.say(lead, group, "/demo_ask"))
    assert ask.params["reply_markup"]["force_reply"]  # in a group: a forced reply
    (named,) = messages(await scene.say(lead, group, "路灯", reply_to=scene.message_of(ask)))
    assert named.text == "named 路灯"
    assert (await _flow(db)).data["name"] == "路灯"
    # The question was answered: the next line in the group is ordinary chatter.
    assert messages(await scene.say(lead, group, "大家好")) == []


async def test_cancel_keeps_nothing_and_frees_the_chat(
    scene: Scene, db: Database, demo: LinliApp
) -> None:
    await world(db)
    lead = _lead(scene)
    chat = scene.private(lead)
    (ask,) = messages(await scene.say(lead, chat, "/demo_ask"))
    (gone,) = _edits(await scene.tap(lead, ask, "取消"))
    assert gone.text == "已取消，这份草稿什么都没有保存。" and not gone.buttons
    flow = await _flow(db)
    assert flow.status == FlowStatus.cancelled and "name" not in flow.data
    assert messages(await scene.say(lead, chat, "路灯")) == []  # no longer taken as an answer
    calls = await scene.press(lead, ask, f"fx:{flow.id}")
    assert alerts(calls) == ["这份草稿已经完成或取消了。"]


async def test_an_expired_draft_tells_its_owner_in_their_language(
    scene: Scene, db: Database, demo: LinliApp, clock: Clock
) -> None:
    await world(db)
    sam = scene.person(SAM, "Sam", lang="en")
    chat = scene.private(sam)
    (days,) = messages(await scene.say(sam, chat, "/demo_when"))
    clock.advance(minutes=61)
    calls = await scene.tap(sam, days, "Tomorrow")
    expired = "This draft was left for more than 60 minutes, so it has expired and nothing was saved. Please start again."  # noqa: E501
    assert alerts(calls) == [expired]
    (note,) = _edits(calls)
    assert note.text == expired and not note.buttons  # the old message stops inviting taps
    # A typed answer to an expired draft's question is told the same.
    (ask,) = messages(await scene.say(sam, chat, "/demo_ask"))
    assert _labels(ask) == ["✖ Cancel"]
    clock.advance(minutes=61)
    (told,) = messages(await scene.say(sam, chat, "Lamp"))
    assert told.text == expired


async def test_picker_buttons_work_only_for_the_picker_that_is_open(
    scene: Scene, db: Database, demo: LinliApp
) -> None:
    w = await world(db)
    lead = _lead(scene)
    chat = scene.private(lead)
    (tree,) = messages(await scene.say(lead, chat, "/demo_units"))
    fid = (await _flow(db)).id
    stale: dict[str, Any] = {
        f"fd:{fid}:20261121": "day", f"ft:{fid}:20261121:0900": "time", f"fe:{fid}:60": "end",
        f"fo:{fid}": "now", f"fk:{fid}:s": "type", f"fr:{fid}:w": "repeat", f"fy:{fid}": "done",
        f"fw:{fid}:9:1": "day of month",
    }  # fmt: skip
    for data in stale:
        assert alerts(await scene.press(lead, tree, data)) == ["这个按钮已失效，请重新打开菜单。"]
    flow = await _flow(db)
    assert flow.data[pickers.STATE]["picker"] == "units" and flow.step == ""
    # A newer flow of the same kind replaces this one: its buttons are closed.
    await scene.say(lead, chat, "/demo_units")
    assert alerts(await scene.press(lead, tree, f"fc:{fid}:{w.b3}")) == [
        "这份草稿已经完成或取消了。"
    ]
