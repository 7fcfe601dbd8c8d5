"""Holes a review found (issue 8): each test here failed on the code before its fix."""

from __future__ import annotations

import logging
import re

import pytest
from sqlmodel import col, select

from bot.db import Database
from bot.standin import Scene, alerts, messages
from models import ledger, people, points, standings
from models.ledger import PointAccount
from models.rewards import Reward
from tests.conftest import NOW
from tests.integration.test_points_flow import _edited, _give, _only, _people, _world
from tests.world import GROUP_GRID, LEAD, LI, SAM, WANG, ZHOU

STRANGER = 90  # in no community at all


async def _accounts(db: Database) -> list[tuple[int, int, bool]]:
    async with db.transaction(write=False) as s:
        rows = await s.exec(select(PointAccount).order_by(col(PointAccount.id)))
        return [(a.community_id, a.person_id, a.hidden) for a in rows.all()]


# --- 1. the honour board's buttons check who taps them -------------------------------------


async def test_a_stranger_cannot_read_or_join_another_communitys_board(
    db: Database, scene: Scene
) -> None:
    w = await _world(db)
    u = _people(scene)
    await _give(db, w, WANG, 9, "b:1")
    stranger = scene.person(STRANGER, "路人")
    own = scene.private(stranger)
    anchor = _only(await scene.say(stranger, own, "/top"))  # "you are in no building"
    before = await _accounts(db)
    for data in (f"ptb:{w.grid1}:a", f"ptb:{w.b3}:m"):
        calls = await scene.press(stranger, anchor, data)
        assert not [c for c in calls if c.method == "editMessageText"]
        assert any("不是这个社区的居民" in a for a in alerts(calls))
    for data in (f"pth:{w.grid1}:a:h", f"pth:{w.grid1}:a:s"):
        calls = await scene.press(stranger, anchor, data)
        assert any("不是这个社区的居民" in a for a in alerts(calls))
    assert await _accounts(db) == before  # no account opened in a community not his own
    # A resident of the community may look at another of its buildings' boards privately.
    mine = _only(await scene.say(u[ZHOU], scene.private(u[ZHOU]), "/top"))
    board = _edited(await scene.press(u[ZHOU], mine, f"ptb:{w.b3}:a"))
    assert "王阿姨 — 9" in board.text


@pytest.mark.shows_in_group("王阿姨", "Sam")  # the board, by their choice
async def test_in_the_group_the_boards_own_buttons_work_for_everyone_there(
    db: Database, scene: Scene
) -> None:
    """Anyone in the group sees the board /top posted there; only that board, though."""
    w = await _world(db)
    u = _people(scene)
    await _give(db, w, WANG, 9, "b:2")
    group = scene.group(GROUP_GRID, "一网格群")
    stranger = scene.person(STRANGER, "路人")
    board = _only(await scene.say(u[LI], group, "/top"))
    all_time = _edited(await scene.tap(stranger, board, "总榜"))
    assert "王阿姨 — 9" in all_time.text
    calls = await scene.press(stranger, all_time, f"ptb:{w.b9}:a")  # not this group's unit
    assert any("不是这个社区的居民" in a for a in alerts(calls))
    calls = await scene.tap(stranger, all_time, "我不想上榜")  # he has no account to hide
    assert any("不是这个社区的居民" in a for a in alerts(calls))
    assert all(pid != STRANGER for _, pid, _ in await _accounts(db))


# --- 4 and 16. buttons set a state, never toggle ---------------------------------------------


@pytest.mark.shows_in_group("王阿姨", "Sam")  # the board, by their choice
async def test_hide_twice_stays_hidden_and_show_twice_stays_shown(
    db: Database, scene: Scene
) -> None:
    w = await _world(db)
    u = _people(scene)
    await _give(db, w, SAM, 6, "b:3")
    group = scene.group(GROUP_GRID, "一网格群")
    board = _only(await scene.say(u[LI], group, "/top"))
    hide = scene.button_data(scene.message_of(board), "我不想上榜")
    show = scene.button_data(scene.message_of(board), "让我重新上榜")
    for _ in range(2):  # a double tap, or Telegram redelivering the update after a restart
        await scene.press(u[SAM], board, hide)
    async with db.transaction(write=False) as s:
        assert await standings.is_hidden(s, community_id=w.community, person_id=SAM)
    for _ in range(2):
        await scene.press(u[SAM], board, show)
    async with db.transaction(write=False) as s:
        assert not await standings.is_hidden(s, community_id=w.community, person_id=SAM)


async def test_an_earning_rule_turned_off_twice_stays_off(db: Database, scene: Scene) -> None:
    w = await _world(db)
    u = _people(scene)
    admin = u[1]
    chat = scene.private(admin)
    rules = _only(await scene.say(admin, chat, "/rules"))
    rule = _edited(await scene.tap(admin, rules, 0))
    off = scene.button_data(scene.message_of(rule), "停用")
    code = off.split(":")[2]
    for _ in range(2):
        await scene.press(admin, rule, off)
    async with db.transaction(write=False) as s:
        found = await points.rule(s, community_id=w.community, code=code, now=NOW)
    assert not found.active


async def test_picking_a_resident_twice_keeps_them_picked(db: Database, scene: Scene) -> None:
    await _world(db)
    u = _people(scene)
    picker = _only(await scene.say(u[LEAD], scene.private(u[LEAD]), "/award"))
    pick = scene.button_data(scene.message_of(picker), "王阿姨")
    draft_id = int(pick.split(":")[1])
    for _ in range(2):
        await scene.press(u[LEAD], picker, pick)
    await scene.tap(u[LEAD], picker, "下一步")  # the picker hands its choice to the draft
    async with db.transaction(write=False) as s:
        auth = await people.authority(s, person_id=LEAD, superadmin=False)
        draft, _unit = await points.get_draft(s, auth=auth, draft_id=draft_id, now=NOW)
    assert draft.person_ids == [WANG]


# --- 6. paging the leads' unit list checks that the person is a lead ----------------------


async def test_a_resident_paging_the_award_unit_list_is_refused(
    db: Database, scene: Scene, caplog: pytest.LogCaptureFixture
) -> None:
    await _world(db)
    u = _people(scene)
    chat = scene.private(u[WANG])
    anchor = _only(await scene.say(u[WANG], chat, "/points"))
    picker = _only(await scene.say(u[LEAD], scene.private(u[LEAD]), "/award"))
    draft = scene.button_data(scene.message_of(picker), 0).split(":")[1]
    with caplog.at_level(logging.ERROR, logger="linli"):  # the award's unit and resident lists
        calls = await scene.press(u[WANG], anchor, f"fu:{draft}:0:1")
        calls += await scene.press(u[WANG], anchor, f"fp:{draft}:1")
    assert len([a for a in alerts(calls) if "别人打开" in a]) == 2
    assert not [c for c in calls if c.method == "editMessageText"]
    assert "failed" not in caplog.text


# --- 7. ids out of range are a stale button, not a crash ----------------------------------


@pytest.mark.parametrize(
    "number",
    [str(2**63), str(2**64 + 5), str(2**31), "-1", "+5", "1_0", "٣", " 7", "9" * 40],
)
async def test_ids_out_of_the_columns_range_are_a_stale_button(
    db: Database, scene: Scene, caplog: pytest.LogCaptureFixture, number: str
) -> None:
    w = await _world(db)
    u = _people(scene)
    chat = scene.private(u[LEAD])
    anchor = _only(await scene.say(u[LEAD], chat, "/award"))
    with caplog.at_level(logging.ERROR, logger="linli"):
        for data in (
            f"fp:{number}:0",
            f"fv:{number}:{WANG}:0:1",
            f"ptb:{number}:a",
            f"pv:{number}",
            f"pm:{w.community}:{number}",
        ):
            calls = await scene.press(u[LEAD], anchor, data)
            assert any("按钮已失效" in a for a in alerts(calls)), data
    assert "failed" not in caplog.text  # no traceback, no "something went wrong"


# --- 9. /verify CODE in a group: a private-chat link, never the code or the name ---------


async def test_verify_in_a_group_only_links_to_the_private_chat(db: Database, scene: Scene) -> None:
    from tests.integration import test_rewards_flow as rw

    await rw._world(db)
    auntie = rw._user(scene, rw.AUNTIE)
    redemption, _photo = await rw._redeem_lunch(scene, auntie)
    merchant = rw._user(scene, rw.MERCHANT)
    group = scene.group(rw.GROUP, "3号楼邻里群")
    for typed in (f"/verify {redemption.code}", "/verify"):
        calls = await scene.say(merchant, group, typed)
        (said,) = [c for c in calls if c.method == "sendMessage"]
        assert said.chat_id == rw.GROUP and "私聊" in said.text
        shown = said.text + str(said.buttons)
        assert redemption.code not in shown and "王阿姨" not in shown
        (link,) = [b["url"] for row in said.buttons for b in row]
        assert link.endswith("?start=verify")
    # The link asks for the code privately, where the merchant confirms as before.
    chat = scene.private(merchant)
    asked = _only(await scene.say(merchant, chat, "/start verify"))
    assert "兑换码" in asked.text
    checked = _only(await scene.say(merchant, chat, redemption.code))
    assert "王阿姨" in checked.text


# --- 2. taking over a group's link needs the group's admin or the unit it serves now --------


async def test_a_group_already_linked_moves_only_for_its_admin_or_the_lead_it_serves(
    db: Database, scene: Scene
) -> None:
    from tests.integration import test_setup_flow as su

    ids = await su._tree(db)
    async with db.transaction() as s:  # 马组长 leads only 第二网格; 林主任 another community
        other = await people.create_community(
            s, name="阳光苑", timezone="Asia/Shanghai", language="zh", now=NOW
        )
        estate = await people.create_unit(
            s, community_id=other.id or 0, parent_id=None, kind="estate", name="阳光苑小区", now=NOW
        )
        for pid, name, unit in ((60, "马组长", ids["grid2"]), (61, "林主任", estate.id or 0)):
            await people.touch_person(
                s, person_id=pid, name=name, username=None, language_code="zh-hans", now=NOW
            )
            await people.grant_role(
                s, auth=su.BOSS, unit_id=unit, person_id=pid, kind="lead", now=NOW
            )
    lead, ma, lin = (
        scene.person(su.LEAD, "刘网格长"),
        scene.person(60, "马组长"),
        scene.person(61, "林主任"),
    )
    gid = -1000000002020
    group = scene.group(gid, "3号楼群", forum=True)
    topic = scene.topic(group, "公告")
    await su._link_via_picker(scene, lead, group, ["第一网格", "3号楼"])
    assert await su._unit_of(db, gid) == "3号楼"
    # Members of the group who lead elsewhere cannot take it: the refusal says why.
    for taker, unit in ((ma, ids["b7"]), (lin, estate.id or 0)):
        (picker,) = messages(await scene.say(taker, group, "/setup"))
        (alert,) = alerts(await scene.press(taker, picker, f"sul:{unit}"))
        assert "已经关联到「3号楼」" in alert and "管理员" in alert
    # Nor a topic of it, which serves the group's unit until linked itself.
    (picker,) = messages(await scene.say(lin, group, "/setup", thread=topic))
    (alert,) = alerts(await scene.press(lin, picker, f"sul:{estate.id}"))
    assert "已经关联到「3号楼」" in alert
    assert await su._unit_of(db, gid) == await su._unit_of(db, gid, topic) == "3号楼"
    # An administrator of the group who leads the new unit may move it …
    scene.tg.set_member(gid, ma, "administrator")
    (picker,) = messages(await scene.say(ma, group, "/setup"))
    (moved,) = su._edits(await scene.press(ma, picker, f"sul:{ids['b7']}"))
    assert "7号楼" in moved.text and await su._unit_of(db, gid) == "7号楼"
    # … and then 刘网格长, who neither leads 7号楼 nor administers the group, cannot move it
    # back; the lead of 7号楼 (the unit it serves now) can, admin or not.
    scene.tg.set_member(gid, ma, "member")
    (picker,) = messages(await scene.say(lead, group, "/setup"))
    (alert,) = alerts(await scene.press(lead, picker, f"sul:{ids['b3']}"))
    assert "已经关联到「7号楼」" in alert
    async with db.transaction() as s:
        await people.grant_role(
            s, auth=su.BOSS, unit_id=ids["b3"], person_id=60, kind="lead", now=NOW
        )
    (picker,) = messages(await scene.say(ma, group, "/setup"))
    su._edits(await scene.press(ma, picker, f"sul:{ids['b3']}"))
    assert await su._unit_of(db, gid) == "3号楼"


async def test_a_private_chat_cannot_be_linked_to_a_unit(db: Database, scene: Scene) -> None:
    from tests.integration import test_setup_flow as su

    ids = await su._tree(db)
    lead = scene.person(su.LEAD, "刘网格长")
    chat = scene.private(lead)
    anchor = _only(await scene.say(lead, chat, "/start"))
    (alert,) = alerts(await scene.press(lead, anchor, f"sul:{ids['b3']}"))
    assert "只有群或群里的话题" in alert
    assert await su._unit_of(db, su.LEAD) is None


def test_the_stand_in_answers_get_chat_member_as_telegram_does() -> None:
    from bot.standin import ApiError, FakeTelegram

    tg = FakeTelegram()
    tg.add_chat({"id": -5, "type": "group", "title": "g"})
    tg.chats[8] = {"id": 8, "type": "private", "first_name": "x"}
    ask = tg._api_getChatMember
    assert ask({"chat_id": -5, "user_id": 8})["status"] == "left"
    tg.set_member(-5, {"id": 8, "is_bot": False, "first_name": "x"}, "administrator")
    assert ask({"chat_id": -5, "user_id": 8})["status"] == "administrator"
    assert ask({"chat_id": 8, "user_id": 8})["status"] == "member"
    with pytest.raises(ApiError):
        ask({"chat_id": 8, "user_id": 9})
    with pytest.raises(ApiError):
        ask({"chat_id": -6, "user_id": 8})


# --- 18. a list in a message fits Telegram's 4,096 characters --------------------------------


@pytest.mark.parametrize("lang", ["zh-hans", "en"])
async def test_an_award_to_fifty_residents_with_long_names_goes_through(
    db: Database, scene: Scene, lang: str
) -> None:
    w = await _world(db)
    u = _people(scene)
    lead = scene.person(LEAD, "张网格长", lang=lang)
    first, last = "长" * 64, "名" * 64
    crowd = list(range(5000, 5050))
    async with db.transaction() as s:
        for n, pid in enumerate(crowd):
            await people.touch_person(
                s, person_id=pid, name=f"{first} {last}{n}", username=None, language_code=None,
                now=NOW,
            )  # fmt: skip
            h = await people.add_household(
                s, unit_id=w.b3, flat=f"8-{n}", area_centi_m2=None, now=NOW
            )
            await people.request_join(
                s, person_id=pid, household_id=h.id or 0, now=NOW, verified_by_code=True
            )
        auth = await people.authority(s, person_id=LEAD, superadmin=False)
        draft = await points.start_draft(
            s, auth=auth, unit_id=w.b3, kind="award", now=NOW, person_ids=crowd
        )
    chat = scene.private(lead)
    anchor = _only(await scene.say(lead, chat, "/points"))
    amounts = _edited(await scene.press(lead, anchor, f"pb:{draft.id}"))
    reasons = _edited(await scene.tap(lead, amounts, "10"))
    confirm = _edited(await scene.tap(lead, reasons, 0))
    done = _edited(await scene.tap(lead, confirm, 0))
    for shown in (amounts, reasons, confirm, done):
        assert len(shown.text) <= 4096
        assert "等 50 人" in shown.text or "and 40 more" in shown.text
    assert f"{last}49" not in done.text
    async with db.transaction(write=False) as s:
        assert await ledger.balance(s, community_id=w.community, person_id=crowd[-1]) == 10
    if lang == "en":  # the name list and "Reason:" each on their own line
        assert re.search(r"\(each\)\nReason: ", confirm.text)
    assert u[WANG]["id"] == WANG


# --- 6. a reward's merchant comes from its own community --------------------------------------


async def test_a_lead_cannot_name_another_communitys_resident_as_merchant(
    db: Database, scene: Scene
) -> None:
    from models.outbox import Delivery
    from tests.integration import test_rewards_flow as rw

    w = await rw._world(db)
    async with db.transaction() as s:  # 周伯 lives in another community, 阳光苑
        other = await people.create_community(
            s, name="阳光苑", timezone="Asia/Shanghai", language="zh", now=NOW
        )
        b1 = await people.create_unit(
            s, community_id=other.id or 0, parent_id=None, kind="building", name="1栋", now=NOW
        )
        home = await people.add_household(
            s, unit_id=b1.id or 0, flat="1-101", area_centi_m2=None, now=NOW
        )
        await people.touch_person(
            s, person_id=ZHOU, name="周伯", username=None, language_code="zh-hans", now=NOW
        )
        await people.request_join(
            s, person_id=ZHOU, household_id=home.id or 0, now=NOW, verified_by_code=True
        )
    lead = rw._user(scene, rw.LEAD)
    chat = scene.private(lead)
    anchor = _only(await scene.say(lead, chat, "/start"))
    for outsider in (ZHOU, 424242):  # another community's resident; nobody known
        (alert,) = alerts(await scene.press(lead, anchor, f"rmp:{w.lunch}:{outsider}"))
        assert "本社区的居民或已有的商家" in alert or "找不到" in alert
    async with db.transaction(write=False) as s:
        reward = await s.get(Reward, w.lunch)
        notices = (await s.exec(select(Delivery))).all()
    assert reward is not None and reward.merchant_id == rw.MERCHANT
    assert not [n for n in notices if n.person_id == ZHOU]
    # Its own resident, or a merchant it already works with, is fine.
    (shown,) = [c for c in await scene.press(lead, anchor, f"rmp:{w.lunch}:{rw.AUNTIE}") if c.text][
        :1
    ]
    async with db.transaction(write=False) as s:
        reward = await s.get(Reward, w.lunch)
    assert reward is not None and reward.merchant_id == rw.AUNTIE and shown.ok


# --- 6. a forged person in the appoint picker: no name shown, no role given ---------------


async def test_a_forged_person_in_the_appoint_picker_is_refused(db: Database, scene: Scene) -> None:
    w = await _world(db)
    u = _people(scene)
    chat = scene.private(u[LEAD])
    picker = _only(await scene.say(u[LEAD], chat, "/appoint"))
    fid = next(b["callback_data"] for row in picker.buttons for b in row).split(":")[1]
    await scene.tap(u[LEAD], picker, "3号楼")  # the residents of 3号楼 are listed next
    # 周伯 lives in 9号楼, under 二网格, which 张网格长 does not lead.
    for data in (
        f"fu:{fid}:{w.grid2}:0",
        f"fc:{fid}:{w.b9}",
        f"fv:{fid}:{ZHOU}:0:1",
        f"ap:{fid}:l",
    ):
        calls = await scene.press(u[LEAD], picker, data)
        assert not [c for c in calls if "周伯" in c.text], data
        assert alerts(calls), data
    async with db.transaction(write=False) as s:
        assert await people.roles_of(s, person_id=ZHOU) == []
    # A resident of his own units is still named and appointed as before.
    named = _edited(await scene.press(u[LEAD], picker, f"fv:{fid}:{WANG}:0:1"))
    assert "王阿姨" in named.text
