"""/newpoll as a lead taps and types it, through the PTB application and the stand-in: the
question, the unit (the unit-tree picker), the method, the options (typed, or from the agenda),
the closing time (the date-and-time picker), the draft screen with the card as voters will see
it, and Post once. Bad input is told in words and keeps the draft; forged buttons are refused."""

from __future__ import annotations

from sqlmodel import col, select

from bot import delivery
from bot.context import LinliApp
from bot.db import Database
from bot.standin import Call, Scene, alerts, messages
from models import agenda, flows, polls
from models.agenda import Proposal, ProposalStatus
from models.flows import Flow, FlowStatus
from models.outbox import Delivery
from models.polls import Poll, PollOption
from models.tally import Method, Rule
from tests.conftest import NOW
from tests.integration.conftest import Clock
from tests.world import BOSS, GROUP_B3, LEAD, OTHER_LEAD, SAM, WANG, world


def _last(calls: list[Call]) -> Call:
    found = [c for c in calls if c.method in ("sendMessage", "editMessageText") and c.ok]
    assert found, calls
    return found[-1]


def _labels(call: Call) -> list[str]:
    return [str(b["text"]) for row in call.buttons for b in row]


async def _flow(db: Database) -> Flow:
    async with db.transaction(write=False) as s:
        found = (await s.exec(select(Flow).order_by(col(Flow.id).desc()))).first()
    assert found is not None
    return found


async def _polls(db: Database) -> list[Poll]:
    async with db.transaction(write=False) as s:
        return list((await s.exec(select(Poll))).all())


async def _to_options(scene: Scene, lead: dict[str, object], question: str) -> Call:
    """/newpoll up to the options screen: question, no description, 3号楼, single choice."""
    chat = scene.private(lead)
    asked = _last(await scene.say(lead, chat, "/newpoll"))
    assert "发起表决" in asked.text
    skip = _last(await scene.say(lead, chat, question))
    tree = _last(await scene.tap(lead, skip, "不写说明"))
    assert "谁来投票" in tree.text
    method = _last(await scene.tap(lead, tree, "3号楼"))
    assert "怎么投" in method.text
    return _last(await scene.tap(lead, method, "单选"))


async def test_a_lead_builds_previews_and_posts_a_poll_once(
    db: Database, scene: Scene, app: LinliApp, clock: Clock
) -> None:
    w = await world(db)
    lead = scene.person(LEAD, "张网格长")
    chat = scene.private(lead)
    # In a group: only a link to the private chat; no draft.
    group = scene.group(GROUP_B3, "3号楼")
    in_group = _last(await scene.say(lead, group, "/newpoll"))
    assert "私聊" in in_group.text
    # Too short a question: told, asked again, nothing kept.
    _last(await scene.say(lead, chat, "/newpoll"))
    again = _last(await scene.say(lead, chat, "电"))
    assert "⚠️ 问题要有 2 到 200 个字。" in again.text
    assert "question" not in (await _flow(db)).data
    options = await _to_options_after_question(scene, lead, "3号楼是否加装电梯？")
    typed = _last(await scene.tap(lead, options, "输入选项"))
    assert "每行一个" in typed.text
    # A repeated option: the whole message is refused, nothing added.
    refused = _last(await scene.say(lead, chat, "同意\n不同意\n同意"))
    assert "⚠️" in refused.text and (await _flow(db)).data["options"] == []
    listed = _last(await scene.say(lead, chat, "同意"))
    assert "1. 同意" in listed.text and "选项好了" not in str(listed.buttons)
    # The next message adds more, without tapping anything in between.
    listed = _last(await scene.say(lead, chat, " 不同意 \n弃权"))
    assert "2. 不同意" in listed.text and "3. 弃权" in listed.text
    listed = _last(await scene.tap(lead, listed, "✖ 3"))
    assert "弃权" not in listed.text
    days = _last(await scene.tap(lead, listed, "选项好了"))
    assert "什么时候截止" in days.text
    times = _last(await scene.tap(lead, days, "明天"))
    draft = _last(await scene.tap(lead, times, "10:00"))
    # The card as voters will see it: question, options, closing time, turnout, no votes.
    assert "预览" in draft.text and "3号楼是否加装电梯？" in draft.text
    assert "1. 同意" in draft.text and "已有 0 / 1 人投票" in draft.text
    assert "📣 发布表决" in _labels(draft)
    # Art. 278 with an anonymous ballot cannot be posted: said why, no Post button.
    draft = _last(await scene.tap(lead, draft, "第278条 一般事项"))
    assert "第278条·一般事项" in draft.text and "业主表决" in draft.text
    draft = _last(await scene.tap(lead, draft, "匿名"))
    assert "还不能发布" in draft.text and "📣 发布表决" not in _labels(draft)
    draft = _last(await scene.tap(lead, draft, "记名"))
    # The unit can be changed from the draft: 5号楼, then back to 3号楼.
    tree = _last(await scene.tap(lead, draft, "✏️ 单元"))
    draft = _last(await scene.tap(lead, tree, "5号楼"))
    assert "5号楼" in draft.text
    app.bot_data.guard.activity.clear()  # a person taps this fast only in a test: no flood
    draft = _last(await scene.tap(lead, _last(await scene.tap(lead, draft, "✏️ 单元")), "3号楼"))
    # The households with no recorded area are counted for the lead before posting.
    assert "没有登记专有面积" in draft.text
    posted = _last(await scene.tap(lead, draft, "发布表决"))
    assert "已发布" in posted.text
    (poll,) = await _polls(db)
    assert poll.question == "3号楼是否加装电梯？" and poll.unit_id == w.b3
    assert poll.rule == Rule.art278_ordinary and poll.owners_only and poll.area_weighted
    assert poll.closes_at > NOW and poll.method == Method.single
    async with db.transaction(write=False) as s:
        texts = [o.text for o in await polls.options_of(s, poll.id or 0)]
        cards = (await s.exec(select(Delivery).where(Delivery.card == f"poll:{poll.id}"))).all()
    assert texts == ["同意", "不同意"] and {c.chat_id for c in cards} == {GROUP_B3}
    # Post again from the same screen (a double tap, a repeated update): the same poll.
    again = _last(await scene.press(lead, draft, f"vn:{(await _flow(db)).id}:post:"))
    assert "已经发布过了" in again.text
    assert len(await _polls(db)) == 1
    await delivery.drain(app)
    card = messages(scene.tg.calls, GROUP_B3)[-1]
    assert "3号楼是否加装电梯？" in card.text


async def _to_options_after_question(scene: Scene, lead: dict[str, object], question: str) -> Call:
    chat = scene.private(lead)
    skip = _last(await scene.say(lead, chat, question))
    tree = _last(await scene.tap(lead, skip, "不写说明"))
    method = _last(await scene.tap(lead, tree, "3号楼"))
    return _last(await scene.tap(lead, method, "单选"))


async def test_options_from_the_agenda_and_the_proposals_go_on_the_ballot(
    db: Database, scene: Scene, app: LinliApp, clock: Clock
) -> None:
    w = await world(db)
    async with db.transaction() as s:
        rail = await agenda.propose(s, auth=BOSS, unit_id=w.b3, title="楼道扶手", body="", now=NOW)
        bench = await agenda.propose(s, auth=BOSS, unit_id=w.b3, title="门口长椅", body="",
                                     now=NOW)  # fmt: skip
        elsewhere = await agenda.propose(s, auth=BOSS, unit_id=w.b9, title="9号楼的事", body="",
                                         now=NOW)  # fmt: skip
    lead = scene.person(LEAD, "张网格长")
    options = await _to_options(scene, lead, "本月先办哪件事？")
    picks = _last(await scene.tap(lead, options, "从议题清单选"))
    assert "楼道扶手" in picks.text and "9号楼的事" not in picks.text
    picks = _last(await scene.tap(lead, picks, "楼道扶手"))
    picks = _last(await scene.tap(lead, picks, "门口长椅"))
    fid = (await _flow(db)).id
    # Another unit's proposal, forged: refused, nothing added.
    assert alerts(await scene.press(lead, picks, f"vn:{fid}:ap:{elsewhere.id}"))
    # The same proposal twice: once.
    assert not alerts(await scene.press(lead, picks, f"vn:{fid}:ap:{rail.id}"))[0]
    assert [o["p"] for o in (await _flow(db)).data["options"]] == [rail.id, bench.id]
    back = _last(await scene.tap(lead, picks, "回到选项"))
    days = _last(await scene.tap(lead, back, "选项好了"))
    draft = _last(await scene.tap(lead, _last(await scene.tap(lead, days, "明天")), "10:00"))
    _last(await scene.tap(lead, draft, "发布表决"))
    (poll,) = await _polls(db)
    async with db.transaction(write=False) as s:
        opts = (await s.exec(select(PollOption).order_by(col(PollOption.number)))).all()
        found = {p.id: p for p in (await s.exec(select(Proposal))).all()}
    assert [(o.text, o.proposal_id) for o in opts] == [
        ("楼道扶手", rail.id),
        ("门口长椅", bench.id),
    ]
    assert found[rail.id].status == ProposalStatus.polled and found[rail.id].poll_id == poll.id
    assert found[elsewhere.id].status == ProposalStatus.open


async def test_yes_no_skips_options_and_a_custom_rule_is_checked(
    db: Database, scene: Scene, app: LinliApp, clock: Clock
) -> None:
    await world(db)
    lead = scene.person(LEAD, "张网格长")
    chat = scene.private(lead)
    _last(await scene.say(lead, chat, "/newpoll"))
    skip = _last(await scene.say(lead, chat, "是否同意更换物业？"))
    method = _last(await scene.tap(lead, _last(await scene.tap(lead, skip, "不写说明")), "3号楼"))
    days = _last(await scene.tap(lead, method, "赞成 / 反对 / 弃权"))
    draft = _last(await scene.tap(lead, _last(await scene.tap(lead, days, "明天")), "10:00"))
    assert "赞成 / 反对 / 弃权" in draft.text
    draft = _last(await scene.tap(lead, draft, "参与+通过门槛"))
    assert "还不能发布" in draft.text  # no threshold yet
    asked = _last(await scene.tap(lead, draft, "输入…"))
    refused = _last(await scene.say(lead, chat, "150% 50%"))
    assert "⚠️ 比例要在 0% 到 100% 之间。" in refused.text
    assert not (await _flow(db)).data.get("threshold")
    draft = _last(await scene.say(lead, chat, "2/3 >1/2"))
    assert "≥ 2/3" in draft.text and "＞ 1/2" in draft.text
    _last(await scene.tap(lead, draft, "发布表决"))
    (poll,) = await _polls(db)
    assert (poll.rule, poll.quorum, poll.threshold, poll.threshold_strict) == (
        Rule.custom, "2/3", "1/2", True,
    )  # fmt: skip
    assert asked is not None


async def test_residents_and_other_leads_cannot_drive_a_lead_s_draft(
    db: Database, scene: Scene, app: LinliApp, clock: Clock
) -> None:
    await world(db)
    lead = scene.person(LEAD, "张网格长")
    options = await _to_options(scene, lead, "加装电梯？")
    fid = (await _flow(db)).id
    for who in (scene.person(OTHER_LEAD, "刘组长"), scene.person(WANG, "王阿姨")):
        for data in (f"vn:{fid}:post:", f"vn:{fid}:r:none", f"vn:{fid}:ag:"):
            assert alerts(await scene.press(who, options, data))
    # A resident cannot start one at all; in English for Sam.
    wang = scene.person(WANG, "王阿姨")
    refused = _last(await scene.say(wang, scene.private(wang), "/newpoll"))
    assert "只有负责人" in refused.text
    sam = scene.person(SAM, "Sam", lang="en")
    refused = _last(await scene.say(sam, scene.private(sam), "/newpoll"))
    assert "Only leads" in refused.text
    # A forged setting value is a stale button and changes nothing.
    assert alerts(await scene.press(lead, options, f"vn:{fid}:c:everyone"))
    flow = await _flow(db)
    assert flow.data["counting"] == "person" and flow.status == FlowStatus.open
    async with db.transaction() as s:
        assert (await flows.open_flows(s, owner_id=LEAD, kind="poll"))[0].id == fid
    assert await _polls(db) == []
