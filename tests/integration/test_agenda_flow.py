"""The agenda as residents see it: /propose in private, the card in the group, Support once,
/agenda most supported first; in Chinese and in English."""

from __future__ import annotations

from sqlmodel import select

from bot import delivery
from bot.context import LinliApp
from bot.db import Database
from bot.standin import Scene, alerts, messages
from models import agenda
from models.people import Unit
from tests.integration.conftest import Clock
from tests.integration.test_polls_flow import GROUP, LI, SAM, WANG, ZHOU, _last, _people, _world


async def test_propose_post_support_once_and_list(
    db: Database, scene: Scene, app: LinliApp, clock: Clock
) -> None:
    await _world(db)
    users = _people(scene)
    group = scene.group(GROUP, "3号楼")
    wang = users[WANG]
    asked = _last(await scene.say(wang, scene.private(wang), "/propose"))
    assert "第一行是标题" in asked.text
    done = _last(await scene.say(wang, scene.private(wang), "车棚漏雨\n下雨天电动车没法停"))
    assert "车棚漏雨" in done.text
    await delivery.drain(app)
    (card,) = messages(scene.tg.calls, GROUP)
    assert "议题：车棚漏雨" in card.text and "0 位邻居支持" in card.text
    assert "王阿姨" not in card.text and "3-101" not in card.text
    first = await scene.tap(users[LI], card, "支持")
    assert any("已支持" in a for a in alerts(first))
    again = await scene.tap(users[LI], card, "支持")
    assert any("已经支持过" in a for a in alerts(again))
    english = await scene.tap(users[SAM], card, "支持")
    assert any("Supported" in a for a in alerts(english))
    outsider = await scene.tap(users[ZHOU], card, "支持")  # lives in 9号楼
    assert any("不属于" in a for a in alerts(outsider))
    clock.advance(seconds=10)
    before = len(scene.tg.calls)
    await delivery.drain(app)
    edited = [c for c in scene.tg.calls[before:] if c.method == "editMessageText"]
    assert edited and "2 位邻居支持" in edited[-1].text
    async with db.transaction(write=False) as s:
        unit = (await s.exec(select(Unit).where(Unit.name == "3号楼"))).one()
        (proposal,) = await agenda.agenda(s, unit=unit)
    assert proposal.support == 2
    listed = _last(await scene.say(users[LI], group, "/agenda"))
    assert "1. 车棚漏雨 · 👍 2" in listed.text
    sam_list = _last(await scene.say(users[SAM], scene.private(users[SAM]), "/agenda"))
    assert "Agenda of “3号楼”" in sam_list.text


async def test_propose_refusals_are_explained(db: Database, scene: Scene) -> None:
    await _world(db)
    users = _people(scene)
    group = scene.group(GROUP, "3号楼")
    in_group = _last(await scene.say(users[WANG], group, "/propose"))
    assert "私聊" in in_group.text and in_group.buttons[0][0]["url"].endswith("?start=propose")
    sam = users[SAM]
    await scene.say(sam, scene.private(sam), "/propose")
    too_long = _last(await scene.say(sam, scene.private(sam), "x" * 81))
    assert "80" in too_long.text
    ok = _last(await scene.say(sam, scene.private(sam), "Bike shed roof"))
    assert "Bike shed roof" in ok.text and "agenda" in ok.text
    stranger = scene.person(999, "路人")
    scene.private(stranger)
    scene.tg.started.add(999)
    refused = _last(await scene.say(stranger, scene.private(stranger), "/propose"))
    assert "不属于" in refused.text
    forged = await scene.press(users[WANG], refused, "ags:99999")
    assert alerts(forged)


async def test_lead_sets_the_monthly_talk_day(db: Database, scene: Scene) -> None:
    await _world(db)
    users = _people(scene)
    group = scene.group(GROUP, "3号楼")
    from tests.integration.test_polls_flow import LEAD

    shown = _last(await scene.say(users[LEAD], group, "/talkday"))
    assert "「3号楼」的月月谈" in shown.text and "还没有设定" in shown.text
    done = _last(await scene.tap(users[LEAD], shown, "25 日"))
    assert "每月 25 日" in done.text and "✅ 25 日" in str(done.buttons)
    forged = await scene.press(users[WANG], done, done.buttons[0][0]["callback_data"])
    assert alerts(forged)
    off = _last(await scene.tap(users[LEAD], done, "不开月月谈"))
    assert "还没有设定" in off.text
    refused = _last(await scene.say(users[WANG], group, "/talkday"))
    assert "只有负责人" in refused.text
