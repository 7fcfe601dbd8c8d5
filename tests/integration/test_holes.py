"""Holes a review found (issue 8): each test here failed on the code before its fix."""

from __future__ import annotations

import logging

import pytest
from sqlmodel import col, select

from bot.db import Database
from bot.standin import Scene, alerts
from models import people, points
from models.points import PointAccount
from tests.conftest import NOW
from tests.integration.test_points_flow import (
    GROUP_GRID,
    LEAD,
    LI,
    SAM,
    WANG,
    ZHOU,
    _edited,
    _give,
    _only,
    _people,
    _world,
)

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
        assert await points.is_hidden(s, community_id=w.community, person_id=SAM)
    for _ in range(2):
        await scene.press(u[SAM], board, show)
    async with db.transaction(write=False) as s:
        assert not await points.is_hidden(s, community_id=w.community, person_id=SAM)


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
    async with db.transaction(write=False) as s:
        auth = await people.authority(s, person_id=LEAD, superadmin=False)
        draft, _unit = await points.get_draft(s, auth=auth, draft_id=draft_id)
    assert draft.person_ids == [WANG]


# --- 6. paging the leads' unit list checks that the person is a lead ----------------------


async def test_a_resident_paging_the_award_unit_list_is_refused(
    db: Database, scene: Scene, caplog: pytest.LogCaptureFixture
) -> None:
    await _world(db)
    u = _people(scene)
    chat = scene.private(u[WANG])
    anchor = _only(await scene.say(u[WANG], chat, "/points"))
    with caplog.at_level(logging.ERROR, logger="linli"):
        calls = await scene.press(u[WANG], anchor, "pq:a:1")
    assert any("只有负责人" in a for a in alerts(calls))
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
            f"pu:a:{number}",
            f"ptb:{number}:a",
            f"pv:{number}",
            f"pm:{w.community}:{number}",
        ):
            calls = await scene.press(u[LEAD], anchor, data)
            assert any("按钮已失效" in a for a in alerts(calls)), data
    assert "failed" not in caplog.text  # no traceback, no "something went wrong"
