"""What leads do with a poll: close early or extend with a reason voters see, record a proxy
ballot for a resident (who is told and can replace it), the named ballot list."""

from __future__ import annotations

from sqlmodel import col, select

from bot import delivery
from bot.context import LinliApp
from bot.db import Database
from bot.standin import Scene, alerts, messages
from models import polls
from models.outbox import Delivery
from models.polls import PollVoter
from models.tally import Method
from tests.integration.conftest import Clock
from tests.integration.test_polls_flow import (
    GROUP,
    LEAD,
    LI,
    WANG,
    _last,
    _people,
    _poll,
    _world,
)


async def test_close_early_with_a_reason(
    db: Database, scene: Scene, app: LinliApp, clock: Clock
) -> None:
    w = await _world(db)
    scene.group(GROUP, "3号楼")
    pid = await _poll(db, w, method=Method.single, options=["同意", "不同意"])
    users = _people(scene)
    lead = users[LEAD]
    listed = _last(await scene.say(lead, scene.private(lead), "/polls"))
    manage = _last(await scene.tap(lead, listed, "管理"))
    assert "提前结束" in str(manage.buttons)
    asked = _last(await scene.tap(lead, manage, "提前结束"))
    assert "请写下原因" in asked.text
    done = _last(await scene.say(lead, scene.private(lead), "业委会已决定，不再需要表决"))
    assert "已提前结束" in done.text
    await delivery.drain(app)
    posted = messages(scene.tg.calls, GROUP)
    assert any("负责人提前结束：业委会已决定" in c.text for c in posted)
    # A resident cannot use the lead's buttons, even forged.
    forged = await scene.press(users[WANG], listed, f"vmc:{pid}")
    assert alerts(forged)


async def test_extend_with_a_reason_shows_on_the_card(
    db: Database, scene: Scene, app: LinliApp, clock: Clock
) -> None:
    w = await _world(db)
    scene.group(GROUP, "3号楼")
    await _poll(db, w)
    users = _people(scene)
    lead = users[LEAD]
    await delivery.drain(app)
    listed = _last(await scene.say(lead, scene.private(lead), "/polls"))
    manage = _last(await scene.tap(lead, listed, "管理"))
    _last(await scene.tap(lead, manage, "延长 3 天"))
    done = _last(await scene.say(lead, scene.private(lead), "参与的人还不够多"))
    assert "已延长到 2026-11-26 10:00" in done.text
    clock.advance(seconds=10)
    before = len(scene.tg.calls)
    await delivery.drain(app)
    edits = [c for c in scene.tg.calls[before:] if c.method == "editMessageText"]
    assert edits and "负责人说明：参与的人还不够多" in edits[-1].text
    assert "2026-11-26 10:00 结束" in edits[-1].text


async def test_proxy_ballot_by_reply(db: Database, scene: Scene, app: LinliApp) -> None:
    w = await _world(db)
    group = scene.group(GROUP, "3号楼")
    pid = await _poll(db, w, method=Method.single, options=["同意", "不同意"])
    users = _people(scene)
    message = scene.message_json(users[LI], group, "我电话里跟组长说了，我同意")
    await scene.feed({"message": message})
    calls = await scene.say(users[LEAD], group, "/proxy", reply_to=message)
    assert "已私信给您" in _last(calls).text
    (offer,) = messages(calls, LEAD)
    assert "代 李叔 登记选票" in offer.text
    screen = _last(await scene.tap(users[LEAD], offer, "本月先办哪件事"))
    screen = _last(await scene.tap(users[LEAD], screen, "同意"))
    done = _last(await scene.tap(users[LEAD], screen, "确认"))
    assert "已代为登记" in done.text
    async with db.transaction(write=False) as s:
        voter = (await s.exec(select(PollVoter))).one()
        notice = (
            await s.exec(select(Delivery).where(col(Delivery.key).startswith("poll-proxy:")))
        ).one()
    assert (voter.person_id, voter.proxy_by) == (LI, LEAD)
    assert notice.person_id == LI
    # 王阿姨 (not a lead) cannot record for anyone.
    refused = await scene.say(users[WANG], group, "/proxy", reply_to=message)
    assert "只有负责人" in _last(refused).text
    async with db.transaction(write=False) as s:
        assert (await polls.get_poll(s, pid)).id == pid


async def test_lead_marks_an_owner_by_reply(db: Database, scene: Scene) -> None:
    w = await _world(db)
    group = scene.group(GROUP, "3号楼")
    pid = await _poll(db, w, method=Method.yesno, options=[], owners_only=True)
    users = _people(scene)
    li = users[LI]
    screen = _last(await scene.say(li, scene.private(li), f"/vote_{pid}"))
    assert "只限业主" in screen.text  # not an owner yet
    message = scene.message_json(li, group, "我是3-102的业主")
    await scene.feed({"message": message})
    calls = await scene.say(users[LEAD], group, "/owner", reply_to=message)
    (offer,) = messages(calls, LEAD)
    assert "李叔 是不是业主" in offer.text
    marked = _last(await scene.tap(users[LEAD], offer, "3-102 的业主"))
    assert "✅ 3-102 的业主" in str(marked.buttons)
    screen = _last(await scene.say(li, scene.private(li), f"/vote_{pid}"))
    assert "请选择" in screen.text
    forged = await scene.press(users[WANG], offer, "vo:1:1")  # a resident, not a lead
    assert alerts(forged)
