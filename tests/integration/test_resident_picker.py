"""The resident picker as a lead taps and types it, through the PTB application (issue 7).

A small feature of the tests' own (flow kind "rdemo", commands /rdemo_one and /rdemo_many)
opens the picker on 一网格 of the test world; its continuation says who was chosen. The award
screens (/award, /deduct, /correct) use the same picker: tests/integration/test_points_flow.py.
"""

from __future__ import annotations

import json

import pytest
from telegram import Update
from telegram.ext import CommandHandler

from bot.context import LinliApp, LinliContext
from bot.db import Database
from bot.standin import Call, Scene, alerts, messages
from handlers import pickers
from handlers.common import user_id
from models import flows, people
from models.flows import Flow
from tests.conftest import NOW
from tests.world import GROUP_B3, LEAD, LI, OTHER_LEAD, SAM, WANG, ZHOU, World, world

KIND = "rdemo"


@pickers.chosen(KIND)
async def _after(update: Update, ctx: LinliContext, flow: Flow, field: str) -> None:
    text = f"chosen {field}={json.dumps(flow.data[field])}"
    assert update.effective_message is not None
    await update.effective_message.reply_text(text)


async def _demo(update: Update, ctx: LinliContext) -> None:
    message = update.effective_message
    assert message is not None and message.text is not None
    multi = message.text.startswith("/rdemo_many")
    async with ctx.svc.db.transaction() as s:
        community = (await people.communities(s))[0]
        grid1 = next(u for u in await people.root_units(s) if u.name == "一网格")
        flow = await flows.start(
            s, kind=KIND, owner_id=user_id(update), community_id=community.id, private=True,
            now=ctx.now(),
        )  # fmt: skip
    await pickers.residents(update, ctx, flow, field="who", unit_id=grid1.id or 0, multi=multi,
                            limit=2)  # fmt: skip


@pytest.fixture
async def demo(app: LinliApp) -> LinliApp:
    app.add_handler(CommandHandler(["rdemo_one", "rdemo_many"], _demo), group=-1)
    return app


def _labels(call: Call) -> list[str]:
    return [str(b["text"]) for row in call.buttons for b in row]


def _edited(calls: list[Call]) -> Call:
    (found,) = [c for c in calls if c.method == "editMessageText" and c.ok]
    return found


async def _crowd(db: Database, w: World, count: int) -> None:
    """More verified residents of 3号楼: 邻居00 … (so the list has pages)."""
    async with db.transaction() as s:
        for n in range(count):
            pid = 7000 + n
            await people.touch_person(
                s, person_id=pid, name=f"邻居{n:02d}", username=None, language_code=None, now=NOW
            )
            h = await people.add_household(
                s, unit_id=w.b3, flat=f"3-9-{n:02d}", area_centi_m2=None, now=NOW
            )
            await people.request_join(
                s, person_id=pid, household_id=h.id or 0, now=NOW, verified_by_code=True
            )


async def test_one_resident_is_chosen_with_a_tap_and_only_the_leads_units_are_listed(
    scene: Scene, db: Database, demo: LinliApp
) -> None:
    await world(db)
    lead = scene.person(LEAD, "张网格长")
    chat = scene.private(lead)
    (picker,) = messages(await scene.say(lead, chat, "/rdemo_one"))
    names = _labels(picker)
    assert "👤 王阿姨（3-2-501）" in names and "👤 Sam（5-1-101）" in names
    assert not any("周伯" in n for n in names)  # 9号楼 is 二网格's
    assert not any("张网格长" in n for n in names)  # not the lead themselves
    calls = await scene.tap(lead, picker, "王阿姨")
    assert any(f"chosen who=[{WANG}]" in c.text for c in messages(calls, LEAD))


async def test_several_are_picked_paged_and_found_by_a_typed_name(
    scene: Scene, db: Database, demo: LinliApp
) -> None:
    w = await world(db)
    await _crowd(db, w, 13)
    lead = scene.person(LEAD, "张网格长")
    chat = scene.private(lead)
    (picker,) = messages(await scene.say(lead, chat, "/rdemo_many"))
    assert "第 1/2 页" in picker.text
    page2 = _edited(await scene.tap(lead, picker, "下一页"))
    assert "第 2/2 页" in page2.text and set(_labels(page2)) != set(_labels(picker))
    # Typing part of a name narrows the list (a new message), and ticks are kept.
    await scene.tap(lead, page2, "按名字找")
    (found,) = messages(await scene.say(lead, chat, "邻居1"), LEAD)
    assert "名字含「邻居1」：3 位" in found.text
    assert [n for n in _labels(found) if "邻居" in n] == [
        "▫️ 邻居10（3-9-10）",
        "▫️ 邻居11（3-9-11）",
        "▫️ 邻居12（3-9-12）",
    ]
    pick = scene.button_data(scene.message_of(found), "邻居11")
    ticked = _edited(await scene.press(lead, found, pick))
    await scene.press(lead, found, pick)  # a repeated tap sets the same state: still ticked
    assert "✅ 邻居11（3-9-11）" in _labels(ticked) and "已选 1 人" in " ".join(_labels(ticked))
    async with db.transaction(write=False) as s:
        flow = await s.get(Flow, int(pick.split(":")[1]))
    assert flow is not None and flow.data["_pick"]["picked"] == [7011]
    everyone = _edited(await scene.tap(lead, ticked, "显示全部"))
    ticked = _edited(await scene.tap(lead, everyone, "王阿姨"))
    (alert,) = alerts(await scene.tap(lead, ticked, "李叔"))  # limit=2
    assert "最多选 2 位" in alert
    untick = _edited(await scene.tap(lead, ticked, "✅ 王阿姨"))
    assert "已选 1 人" in " ".join(_labels(untick))
    calls = await scene.tap(lead, untick, "下一步")
    assert any("chosen who=[7011]" in c.text for c in messages(calls, LEAD))


async def test_forged_picks_and_group_taps_are_refused(
    scene: Scene, db: Database, demo: LinliApp
) -> None:
    await world(db)
    lead = scene.person(LEAD, "张网格长")
    (picker,) = messages(await scene.say(lead, scene.private(lead), "/rdemo_many"))
    fid = scene.button_data(scene.message_of(picker), 0).split(":")[1]
    # Someone outside the unit, a stranger id, the lead themselves: one refusal, nothing picked.
    for person in (ZHOU, OTHER_LEAD, 999_999, LEAD):
        (alert,) = alerts(await scene.press(lead, picker, f"fv:{fid}:{person}:0:1"))
        assert "不在您负责" in alert or "不能选您自己" in alert
    (alert,) = alerts(await scene.press(lead, picker, f"fn:{fid}"))
    assert "还没有选人" in alert
    # Another lead cannot drive it; the list is never shown in a group.
    other = scene.person(OTHER_LEAD, "刘组长")
    (alert,) = alerts(await scene.press(other, picker, f"fv:{fid}:{LI}:0:1"))
    assert "别人打开" in alert
    group = scene.group(GROUP_B3, "3号楼邻里群")
    said = messages(await scene.say(lead, group, "/help"))[0]
    calls = await scene.press(lead, said, f"fp:{fid}:0")
    assert not [c for c in calls if c.method == "editMessageText" and c.ok]
    assert any("私聊" in a for a in alerts(calls))
    async with db.transaction(write=False) as s:
        flow = await s.get(Flow, int(fid))
    assert flow is not None and flow.data["_pick"]["picked"] == []
    assert SAM  # the world's English resident is in the list, untouched
