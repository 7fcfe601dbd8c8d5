"""Voting as residents and leads see it: the private ballot, changing it, forged and replayed
buttons, results posted once, the ballot list."""

from __future__ import annotations

import csv
import hashlib
import io
from dataclasses import dataclass
from datetime import timedelta

from sqlmodel import select

from bot import delivery
from bot.context import LinliApp
from bot.db import Database
from bot.standin import JSON, Call, Scene, alerts, messages
from handlers.polls import close_due_polls
from models import people, polls
from models.polls import Ballot, PollSpec, PollVoter
from models.tally import Method
from tests.conftest import NOW
from tests.integration.conftest import ADMIN_ID, Clock

GROUP = -800
LEAD, WANG, LI, SAM, ZHOU = 40, 41, 42, 43, 44
BOSS = people.Authority(person_id=ADMIN_ID, superadmin=True)


@dataclass
class World:
    community: int
    b3: int
    b9: int


async def _world(db: Database) -> World:
    """幸福里: 3号楼 (王阿姨 in 3-101; 李叔 and Sam share 3-102), 9号楼 (周伯); 3号楼's group."""
    async with db.transaction() as s:
        c = await people.create_community(
            s, name="幸福里", timezone="Asia/Shanghai", language="zh", now=NOW
        )
        assert c.id is not None
        b3 = await people.create_unit(
            s, community_id=c.id, parent_id=None, kind="building", name="3号楼", now=NOW
        )
        b9 = await people.create_unit(
            s, community_id=c.id, parent_id=None, kind="building", name="9号楼", now=NOW
        )
        assert b3.id is not None and b9.id is not None
        homes = {}
        for flat, unit in (("3-101", b3.id), ("3-102", b3.id), ("9-101", b9.id)):
            h = await people.add_household(s, unit_id=unit, flat=flat, area_centi_m2=90_00, now=NOW)
            homes[flat] = h.id or 0
        for pid, name, lang in (
            (ADMIN_ID, "Admin", "zh-hans"),
            (LEAD, "张组长", "zh-hans"),
            (WANG, "王阿姨", "zh-hans"),
            (LI, "李叔", "zh-hans"),
            (SAM, "Sam", "en"),
            (ZHOU, "周伯", "zh-hans"),
        ):
            await people.touch_person(
                s, person_id=pid, name=name, username=None, language_code=lang, now=NOW
            )
        for pid, flat in ((WANG, "3-101"), (LI, "3-102"), (SAM, "3-102"), (ZHOU, "9-101")):
            await people.request_join(
                s, person_id=pid, household_id=homes[flat], now=NOW, verified_by_code=True
            )
        await people.grant_role(s, auth=BOSS, unit_id=b3.id, person_id=LEAD, kind="lead", now=NOW)
        await people.link_chat(
            s, chat_id=GROUP, thread_id=0, unit_id=b3.id, title="3号楼", by=ADMIN_ID, now=NOW
        )
        return World(c.id, b3.id, b9.id)


def _people(scene: Scene) -> dict[int, JSON]:
    users = {
        LEAD: scene.person(LEAD, "张组长"),
        WANG: scene.person(WANG, "王阿姨"),
        LI: scene.person(LI, "李叔"),
        SAM: scene.person(SAM, "Sam", lang="en"),
        ZHOU: scene.person(ZHOU, "周伯"),
    }
    for uid, user in users.items():
        scene.private(user)
        scene.tg.started.add(uid)
    return users


async def _poll(db: Database, w: World, **options: object) -> int:
    spec = PollSpec(
        unit_id=w.b3,
        question="本月先办哪件事？",
        options=["修车棚", "装电梯", "清楼道", "种花"],
        opens_at=NOW,
        closes_at=NOW + timedelta(days=3),
        method=Method.ranking,
    )
    for key, value in options.items():
        setattr(spec, key, value)
    async with db.transaction() as s:
        poll = await polls.create_poll(s, auth=BOSS, spec=spec, now=NOW)
        return poll.id or 0


def _last(calls: list[Call]) -> Call:
    shown = [c for c in calls if c.method in ("sendMessage", "editMessageText") and c.ok]
    return shown[-1]


def _labels(call: Call) -> list[str]:
    return [str(b["text"]) for row in call.buttons for b in row]


async def _ballots(db: Database) -> list[tuple[str, str]]:
    async with db.transaction(write=False) as s:
        return [(b.ref, b.choices) for b in (await s.exec(select(Ballot))).all()]


async def test_531_ballot_fills_as_you_pick_then_counts_once_confirmed(
    db: Database, scene: Scene
) -> None:
    w = await _world(db)
    pid = await _poll(db, w)
    users = _people(scene)
    wang = users[WANG]
    screen = _last(await scene.say(wang, scene.private(wang), f"/vote_{pid}"))
    assert "第1名（5分）：—" in screen.text and "请选出第1名" in screen.text
    assert _labels(screen) == ["修车棚", "装电梯", "清楼道", "种花"]
    screen = _last(await scene.tap(wang, screen, "装电梯"))
    assert "第1名（5分）：装电梯" in screen.text and "第2名（3分）：—" in screen.text
    assert "装电梯" not in _labels(screen)  # picks are distinct
    screen = _last(await scene.tap(wang, screen, "修车棚"))
    screen = _last(await scene.tap(wang, screen, "种花"))
    assert "第3名（1分）：种花" in screen.text
    assert _labels(screen) == ["✅ 确认投票", "↩ 重新选"]
    assert await _ballots(db) == []  # nothing counts before the confirm
    done = _last(await scene.tap(wang, screen, "确认投票"))
    assert "已投票" in done.text and "第1名：装电梯" in done.text
    assert await _ballots(db) == [(f"p:{WANG}", "2>1>4")]


async def test_change_ballot_and_replayed_confirm_is_refused(db: Database, scene: Scene) -> None:
    w = await _world(db)
    pid = await _poll(db, w, method=Method.single, options=["同意", "不同意"])
    users = _people(scene)
    sam = users[SAM]
    screen = _last(await scene.say(sam, scene.private(sam), f"/vote {pid}"))
    assert "Please choose" in screen.text
    first = _last(await scene.tap(sam, screen, "同意"))
    assert "Your choice: 同意" in first.text
    old_confirm = scene.button_data(scene.message_of(first), "Confirm")
    done = _last(await scene.press(sam, first, old_confirm))
    assert "Voted" in done.text
    again = _last(await scene.tap(sam, done, "Change my ballot"))
    assert "You have voted" in again.text
    again = _last(await scene.tap(sam, again, "不同意"))
    changed = _last(await scene.tap(sam, again, "Confirm"))
    assert "Changed: this one counts" in changed.text
    assert await _ballots(db) == [(f"p:{SAM}", "2")]
    # The first confirm, replayed, would bring back the old ballot: refused.
    replay = await scene.press(sam, first, old_confirm)
    assert any("out of date" in a for a in alerts(replay))
    assert await _ballots(db) == [(f"p:{SAM}", "2")]


async def test_forged_buttons_change_nothing(db: Database, scene: Scene) -> None:
    w = await _world(db)
    pid = await _poll(db, w, method=Method.single, options=["同意", "不同意"])
    async with db.transaction() as s:
        other = await polls.create_poll(
            s,
            auth=BOSS,
            spec=PollSpec(w.b9, "9号楼的事", ["a", "b"], NOW, NOW + timedelta(days=1)),
            now=NOW,
        )
    users = _people(scene)
    wang = users[WANG]
    screen = _last(await scene.say(wang, scene.private(wang), f"/vote_{pid}"))
    forged = [
        f"vc:{other.id}:0:0:1",  # another unit's poll
        f"vc:{pid}:0:0:3",  # an option that does not exist
        f"vc:{pid}:0:0:1.1",  # two picks in a single-choice poll
        f"vc:{pid}:0:5:1",  # a ballot count that never was
        f"vc:{pid}:999:0:1",  # someone else's household
        f"vb:{pid}:0:0:x",
        f"vxc:{pid}:{LI}:0:0:1",  # a proxy ballot by a resident
        "pc:1",
        f"vc:{pid + 1000}:0:0:1",
    ]
    for data in forged:
        calls = await scene.press(wang, screen, data)
        assert alerts(calls), data
    assert await _ballots(db) == []


async def test_group_gets_a_link_never_the_ballot(db: Database, scene: Scene) -> None:
    w = await _world(db)
    pid = await _poll(db, w)
    users = _people(scene)
    group = scene.group(GROUP, "3号楼")
    calls = await scene.say(users[WANG], group, f"/vote_{pid}")
    (note,) = messages(calls, GROUP)
    assert "私聊" in note.text
    assert note.buttons[0][0]["url"].endswith(f"?start=poll-{pid}")
    (start,) = [
        c
        for c in await scene.say(users[WANG], scene.private(users[WANG]), f"/start poll-{pid}")
        if c.method == "sendMessage"
    ]
    assert "第1名（5分）" in start.text


async def test_household_poll_last_member_counts(db: Database, scene: Scene) -> None:
    w = await _world(db)
    pid = await _poll(db, w, method=Method.yesno, options=[], counting=polls.Counting.household)
    users = _people(scene)
    for uid, choice in ((LI, "赞成"), (SAM, "No")):
        user = users[uid]
        screen = _last(await scene.say(user, scene.private(user), f"/vote_{pid}"))
        screen = _last(await scene.tap(user, screen, choice))
        await scene.tap(user, screen, "✅")
    async with db.transaction(write=False) as s:
        voters = (await s.exec(select(PollVoter))).all()
    assert [(v.person_id, v.casts) for v in voters] == [(SAM, 2)]
    assert [c for _, c in await _ballots(db)] == ["2"]


async def test_results_posted_once_and_ballot_list_matches_digest(
    db: Database, scene: Scene, app: LinliApp, clock: Clock
) -> None:
    w = await _world(db)
    pid = await _poll(db, w)
    users = _people(scene)
    scene.group(GROUP, "3号楼")
    for uid, picks in (
        (WANG, ("修车棚", "清楼道", "装电梯")),
        (LI, ("清楼道", "装电梯", "修车棚")),
        (SAM, ("修车棚", "清楼道", "装电梯")),
    ):
        user = users[uid]
        screen = _last(await scene.say(user, scene.private(user), f"/vote_{pid}"))
        for pick in picks:
            screen = _last(await scene.tap(user, screen, pick))
        await scene.tap(user, screen, "✅")
    await delivery.drain(app)  # the card
    clock.advance(days=3)
    assert await close_due_polls(db, clock.now) == 1
    assert await close_due_polls(db, clock.now) == 0
    before = len(scene.tg.calls)
    await delivery.drain(app)
    posted = messages(scene.tg.calls[before:], GROUP)
    assert len(posted) == 1  # the result; the card is edited to say it closed
    text = posted[0].text
    assert "表决结果：本月先办哪件事？" in text
    # 修车棚 and 清楼道 both have 11 points; 修车棚 has two first places to one.
    assert "1. 修车棚：11 分（第1名 2 次" in text and "2. 清楼道：11 分" in text
    assert "领先：修车棚（与同分选项比较，第一名次数更多）" in text
    assert not any(name in text for name in ("王阿姨", "李叔", "Sam", "3-101", "3-102"))
    async with db.transaction(write=False) as s:
        poll = await polls.get_poll(s, pid)
    assert poll.digest and poll.digest in text
    calls = await scene.say(users[ZHOU], scene.private(users[ZHOU]), f"/ballots_{pid}")
    assert "不属于" in _last(calls).text  # 9号楼 may not see 3号楼's ballots
    calls = await scene.say(users[WANG], scene.private(users[WANG]), f"/ballots_{pid}")
    (document,) = [c for c in calls if c.method == "sendDocument"]
    rows = list(csv.reader(io.StringIO(document.files["document"].decode())))
    assert rows[0] == ["area", "choices"] and sorted(r[1] for r in rows[1:]) == [
        "1>3>2",
        "1>3>2",
        "3>2>1",
    ]
    header = f"linli-ballots/1 poll={pid} method=ranking weights=5-3-1 options=4 area=no"
    canonical = "\n".join([header, *sorted(",".join(r) for r in rows[1:])]) + "\n"
    assert hashlib.sha256(canonical.encode()).hexdigest() == poll.digest


async def test_group_card_shows_turnout_never_who(
    db: Database, scene: Scene, app: LinliApp, clock: Clock
) -> None:
    w = await _world(db)
    scene.group(GROUP, "3号楼")
    pid = await _poll(db, w, counting=polls.Counting.household)
    users = _people(scene)
    await delivery.drain(app)
    (card,) = messages(scene.tg.calls, GROUP)
    assert "本月先办哪件事？" in card.text and "已有 0 / 2 户投票" in card.text
    assert card.buttons[0][0]["url"].endswith(f"?start=poll-{pid}")
    for uid in (WANG, LI, SAM):  # Sam's ballot replaces 李叔's: same household
        user = users[uid]
        screen = _last(await scene.say(user, scene.private(user), f"/vote_{pid}"))
        for pick in ("清楼道", "种花", "修车棚"):
            screen = _last(await scene.tap(user, screen, pick))
        await scene.tap(user, screen, "✅")
    clock.advance(seconds=10)
    before = len(scene.tg.calls)
    await delivery.drain(app)
    edits = [
        c for c in scene.tg.calls[before:] if c.method == "editMessageText" and c.chat_id == GROUP
    ]
    assert edits and "已有 2 / 2 户投票" in edits[-1].text
    for call in scene.tg.calls:
        if call.chat_id == GROUP:
            assert not any(n in call.text for n in ("王阿姨", "李叔", "Sam", "3-101", "3-102"))
            assert "清楼道 " not in call.text  # no totals while the poll runs


async def test_export_offers_each_closed_poll_one_may_see_and_the_ledger_to_admins(
    db: Database, scene: Scene, app: LinliApp, clock: Clock
) -> None:
    w = await _world(db)
    pid = await _poll(db, w, anonymous=True)
    users = _people(scene)
    admin = scene.person(ADMIN_ID, "Admin")
    scene.private(admin)
    for uid, picks in ((WANG, ("修车棚", "清楼道", "装电梯")), (LI, ("种花", "装电梯", "修车棚"))):
        user = users[uid]
        screen = _last(await scene.say(user, scene.private(user), f"/vote_{pid}"))
        for pick in picks:
            screen = _last(await scene.tap(user, screen, pick))
        await scene.tap(user, screen, "✅")
    # Open: nothing to export yet, for a voter.
    assert (
        "没有可导出"
        in _last(await scene.say(users[WANG], scene.private(users[WANG]), "/export")).text
    )
    clock.advance(days=3)
    assert await close_due_polls(db, clock.now) == 1
    # A voter: the closed poll's ballot list, by a button; no ledger (not an admin).
    menu = _last(await scene.say(users[WANG], scene.private(users[WANG]), "/export"))
    assert "积分账本" not in str(menu.buttons)
    calls = await scene.tap(users[WANG], menu, "选票清单")
    (document,) = [c for c in calls if c.method == "sendDocument"]
    body = document.files["document"].decode()
    rows = list(csv.reader(io.StringIO(body)))
    assert rows[0] == ["area", "choices"]
    assert sorted(r[1] for r in rows[1:]) == ["1>3>2", "4>2>1"]
    # Anonymous: nothing in it names a voter, a slot or a flat.
    assert not any(s in body for s in (str(WANG), str(LI), "p:", "3-101", "3-102", "王阿姨"))
    async with db.transaction(write=False) as s:
        poll = await polls.get_poll(s, pid)
    assert poll.digest and poll.digest in document.text
    # Someone of another building: nothing offered, and a forged button sends nothing.
    other = _last(await scene.say(users[ZHOU], scene.private(users[ZHOU]), "/export"))
    assert "没有可导出" in other.text and "管理员" in other.text and not other.buttons
    forged = await scene.press(users[ZHOU], other, f"vx:{pid}")
    assert alerts(forged) and not [c for c in forged if c.method == "sendDocument"]
    # The building's lead sees it too; an admin sees the ledger as well.
    lead = _last(await scene.say(users[LEAD], scene.private(users[LEAD]), "/export"))
    assert "选票清单" in str(lead.buttons)
    menu = _last(await scene.say(admin, scene.private(admin), "/export"))
    assert "积分账本" in str(menu.buttons) and "选票清单" in str(menu.buttons)
    periods = _last(await scene.tap(admin, menu, "积分账本"))
    assert "本月" in str(periods.buttons)
    # In a group: only a link to the private chat, no file in the group.
    note = _last(await scene.say(users[WANG], scene.group(GROUP, "3号楼"), "/export"))
    assert "私聊" in note.text and note.buttons[0][0]["url"].endswith("?start=export")
    assert not [c for c in scene.tg.calls if c.method == "sendDocument" and c.chat_id == GROUP]
    start = _last(await scene.say(users[WANG], scene.private(users[WANG]), "/start export"))
    assert "选票清单" in str(start.buttons)
