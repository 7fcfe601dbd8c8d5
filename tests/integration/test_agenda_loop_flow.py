"""After a poll, through the application: a lead's screen of the closed poll offers each topic
that was on its ballot as a report (one tap) or a task; the topic's card in the group says where
it went; nobody else can press those buttons."""

from __future__ import annotations

from datetime import timedelta

from sqlmodel import col, select

from bot import delivery
from bot.context import LinliApp
from bot.db import Database
from bot.standin import Call, Scene, alerts, messages
from handlers.polls import close_due_polls
from models import agenda, loop, polls, reports, tasks
from models.agenda import Proposal
from models.flows import Flow, FlowStatus
from models.tally import Method
from tests.conftest import NOW
from tests.integration.conftest import Clock
from tests.world import BOSS, GROUP_B3, LEAD, WANG, world


async def _last_flow(db: Database) -> Flow:
    async with db.transaction(write=False) as s:
        found = (await s.exec(select(Flow).order_by(col(Flow.id).desc()))).first()
    assert found is not None
    return found


def _last(calls: list[Call]) -> Call:
    shown = [c for c in calls if c.method in ("sendMessage", "editMessageText") and c.ok]
    assert shown, calls
    return shown[-1]


async def test_a_lead_turns_the_winning_topic_into_a_report_and_the_card_says_so(
    db: Database, scene: Scene, app: LinliApp, clock: Clock
) -> None:
    w = await world(db)
    async with db.transaction() as s:
        rail = await agenda.propose(s, auth=BOSS, unit_id=w.b3, title="楼道扶手", body="老人上楼难",
                                    now=NOW)  # fmt: skip
        bench = await agenda.propose(s, auth=BOSS, unit_id=w.b3, title="门口长椅", body="",
                                     now=NOW)  # fmt: skip
        poll = await polls.create_poll(
            s, auth=BOSS, now=NOW,
            spec=polls.PollSpec(w.b3, "本月议题", ["楼道扶手", "门口长椅"], NOW,
                                NOW + timedelta(days=1), method=Method.ranking,
                                proposal_ids=[rail.id, bench.id]),
        )  # fmt: skip
        await agenda.put_on_poll(s, poll, now=NOW)
    scene.group(GROUP_B3, "3号楼")
    lead = scene.person(LEAD, "张网格长")
    wang = scene.person(WANG, "王阿姨")
    chat = scene.private(lead)
    await close_due_polls(db, NOW + timedelta(days=1, minutes=1))
    clock.advance(days=1, minutes=2)
    listed = _last(await scene.say(lead, chat, "/polls"))
    manage = _last(await scene.tap(lead, listed, "本月议题"))
    assert "楼道扶手（还没有落实）" in manage.text
    # A resident pressing the lead's button: refused, nothing filed.
    assert alerts(await scene.press(wang, manage, f"vfr:{rail.id}"))
    manage = _last(await scene.tap(lead, manage, "1 → 问题报告"))
    async with db.transaction(write=False) as s:
        (report,) = (await s.exec(select(reports.Report))).all()
        found = await s.get(Proposal, rail.id)
    assert found is not None and found.outcome == f"report:{report.id}"
    assert report.text == "楼道扶手\n老人上楼难"  # the topic's title and lines
    assert f"楼道扶手 → 问题报告 {report.label}" in manage.text
    assert "1 → 问题报告" not in str(manage.buttons)
    # The second topic: no upcoming task in the unit yet, so the lead is told to post one.
    pick = _last(await scene.tap(lead, manage, "2 → 志愿任务"))
    assert "为它发布新任务" in pick.text
    # A new task for it: the /newtask draft starts with its title, at its unit; posted, the
    # topic shows the task.
    tree = _last(await scene.tap(lead, pick, "为它发布新任务"))
    assert "3号楼" in tree.text
    flow = await _last_flow(db)
    assert flow.kind == "task" and flow.data["title"] == "门口长椅"
    ask = _last(await scene.tap(lead, tree, "就选"))
    later = NOW + timedelta(days=1, minutes=3)
    async with db.transaction() as s:
        # Posted as /newtask's Post leaves it: the task made, the draft confirmed with its id.
        task = await tasks.create_task(
            s, auth=BOSS, unit_id=w.b3, now=later,
            fields=tasks.Fields("门口长椅", later + timedelta(days=2),
                                later + timedelta(days=2, hours=2)),
        )  # fmt: skip
        live = await s.get(Flow, flow.id)
        assert live is not None
        live.status, live.result_id = FlowStatus.confirmed, task.id
        assert await loop.link_posted_tasks(s, later) == 1
        assert await loop.link_posted_tasks(s, later) == 0
    async with db.transaction(write=False) as s:
        found = await s.get(Proposal, bench.id)
    assert found is not None and found.outcome == f"task:{task.id}" and "任务说明" in ask.text
    await delivery.drain(app)
    cards = [c for c in messages(scene.tg.calls, GROUP_B3) if "议题：楼道扶手" in c.text]
    assert f"转为问题报告 {report.label}" in cards[-1].text


async def test_a_task_made_from_a_topic_starts_with_its_text_to_keep_change_or_drop(
    db: Database, scene: Scene, app: LinliApp, clock: Clock
) -> None:
    w = await world(db)
    async with db.transaction() as s:
        rail = await agenda.propose(s, auth=BOSS, unit_id=w.b3, title="楼道扶手",
                                    body="老人上楼难\n三楼到五楼最缺", now=NOW)  # fmt: skip
        bench = await agenda.propose(s, auth=BOSS, unit_id=w.b3, title="门口长椅", body="",
                                     now=NOW)  # fmt: skip
        poll = await polls.create_poll(
            s, auth=BOSS, now=NOW,
            spec=polls.PollSpec(w.b3, "本月议题", ["楼道扶手", "门口长椅"], NOW,
                                NOW + timedelta(days=1), method=Method.ranking,
                                proposal_ids=[rail.id, bench.id]),
        )  # fmt: skip
        await agenda.put_on_poll(s, poll, now=NOW)
    lead = scene.person(LEAD, "张网格长")
    chat = scene.private(lead)
    await close_due_polls(db, NOW + timedelta(days=1, minutes=1))
    clock.advance(days=1, minutes=2)
    listed = _last(await scene.say(lead, chat, "/polls"))
    manage = _last(await scene.tap(lead, listed, "本月议题"))
    pick = _last(await scene.tap(lead, manage, "1 → 志愿任务"))
    tree = _last(await scene.tap(lead, pick, "为它发布新任务"))
    ask = _last(await scene.tap(lead, tree, "就选"))
    # The description step shows the topic's lines and offers to keep them.
    assert "老人上楼难\n三楼到五楼最缺" in ask.text and "沿用这段说明" in str(ask.buttons)
    when = _last(await scene.tap(lead, ask, "沿用这段说明"))
    flow = await _last_flow(db)
    assert flow.data["title"] == "楼道扶手"
    assert flow.data["description"] == "老人上楼难\n三楼到五楼最缺"
    assert "哪天、几点开始" in when.text  # on to the date
    # Skip instead: the same draft's text is dropped (a new draft for the same topic).
    manage = _last(await scene.say(lead, chat, "/polls"))
    manage = _last(await scene.tap(lead, manage, "本月议题"))
    pick = _last(await scene.tap(lead, manage, "1 → 志愿任务"))
    tree = _last(await scene.tap(lead, pick, "为它发布新任务"))
    ask = _last(await scene.tap(lead, tree, "就选"))
    _last(await scene.tap(lead, ask, "跳过"))
    flow = await _last_flow(db)
    assert flow.data["description"] == ""
    # A topic with no lines: the plain question, no Keep button.
    manage = _last(await scene.say(lead, chat, "/polls"))
    manage = _last(await scene.tap(lead, manage, "本月议题"))
    pick = _last(await scene.tap(lead, manage, "2 → 志愿任务"))
    tree = _last(await scene.tap(lead, pick, "为它发布新任务"))
    ask = _last(await scene.tap(lead, tree, "就选"))
    assert "沿用这段说明" not in str(ask.buttons) and "请输入任务说明" in ask.text
