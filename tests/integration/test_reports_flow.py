"""Problem reports as residents and leads see them: in a group, a forum topic and privately, in
Chinese and English; the card, +1, the lead's sheet, the verdict, the credit, escalation."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlmodel import select

from bot import charts, delivery
from bot.context import LinliApp
from bot.db import Database
from bot.standin import JSON, Call, Scene, alerts, messages
from models import ledger, people
from models.reports import Report, ReportEvent
from models.tasks import Task, TaskSignup
from tests.conftest import NOW
from tests.integration.conftest import ADMIN_ID, Clock

ZONE = ZoneInfo("Asia/Shanghai")
GROUP = -700  # 3号楼's group
FORUM = -(10**12) - 701  # the estate's forum, one topic per building
GRID_LEAD, B3_LEAD, WANG, LI, ZHAO, SAM = 30, 31, 41, 42, 43, 44


@dataclass
class World:
    community: int
    estate: int
    grid: int
    b3: int


async def _world(db: Database) -> World:
    """幸福里小区 (admin 1) › 一网格 (张网格长) › 3号楼 (陈楼长); 王阿姨, 李叔, 赵姐 and Sam live in
    3号楼 (Sam reads English). 3号楼 has its own group."""
    async with db.transaction() as s:
        c = await people.create_community(
            s, name="幸福里", timezone="Asia/Shanghai", language="zh", now=NOW
        )
        assert c.id is not None
        estate = await people.create_unit(
            s, community_id=c.id, parent_id=None, kind="estate", name="幸福里小区", now=NOW
        )
        grid = await people.create_unit(
            s, community_id=c.id, parent_id=estate.id, kind="grid", name="一网格", now=NOW
        )
        b3 = await people.create_unit(
            s, community_id=c.id, parent_id=grid.id, kind="building", name="3号楼", now=NOW
        )
        assert estate.id and grid.id and b3.id
        for pid, name, lang in (
            (ADMIN_ID, "Admin", "zh-hans"),
            (GRID_LEAD, "张网格长", "zh-hans"),
            (B3_LEAD, "陈楼长", "zh-hans"),
            (WANG, "王阿姨", "zh-hans"),
            (LI, "李叔", "zh-hans"),
            (ZHAO, "赵姐", "zh-hans"),
            (SAM, "Sam", "en"),
        ):
            await people.touch_person(
                s, person_id=pid, name=name, username=None, language_code=lang, now=NOW
            )
        for i, pid in enumerate((WANG, LI, ZHAO, SAM)):
            h = await people.add_household(
                s, unit_id=b3.id, flat=f"3-1-{i + 5}02", area_centi_m2=None, now=NOW
            )
            await people.request_join(
                s, person_id=pid, household_id=h.id or 0, now=NOW, verified_by_code=True
            )
        for unit, pid, kind in (
            (estate, ADMIN_ID, "admin"),
            (grid, GRID_LEAD, "lead"),
            (b3, B3_LEAD, "lead"),
        ):
            s.add(people.Role(unit_id=unit.id or 0, person_id=pid, kind=kind, created_at=NOW))
        await people.link_chat(
            s, chat_id=GROUP, thread_id=0, unit_id=b3.id, title="", by=ADMIN_ID, now=NOW
        )
        return World(c.id, estate.id, grid.id, b3.id)


def _user(scene: Scene, uid: int, name: str, lang: str = "zh-hans") -> JSON:
    user = scene.person(uid, name, lang=lang)
    scene.private(user)
    scene.tg.started.add(uid)
    return user


def _edits(calls: list[Call], chat_id: int | None = None) -> list[Call]:
    return [
        c for c in calls if c.method == "editMessageText" and c.ok and chat_id in (None, c.chat_id)
    ]


def _labels(call: Call) -> list[str]:
    return [b["text"] for row in call.buttons for b in row]


async def _send(app: LinliApp, scene: Scene, clock: Clock) -> list[Call]:
    """Let the outbox send what is due (cards, their coalesced edits, notices)."""
    before = len(scene.tg.calls)
    clock.advance(seconds=6)
    await delivery.drain(app)
    return scene.tg.calls[before:]


async def _report(db: Database, number: int = 1) -> Report:
    async with db.transaction(write=False) as s:
        found = (await s.exec(select(Report).where(Report.number == number))).first()
        assert found is not None
        return found


async def test_group_report_to_fixed_and_rated_in_chinese(
    app: LinliApp, scene: Scene, db: Database, clock: Clock
) -> None:
    w = await _world(db)
    wang, li = _user(scene, WANG, "王阿姨"), _user(scene, LI, "李叔")
    lead = _user(scene, B3_LEAD, "陈楼长")
    group = scene.group(GROUP, "3号楼邻里群")

    # 王阿姨 reports in the group; the category is asked with buttons.
    (picker,) = messages(await scene.say(wang, group, "/report 3楼楼道灯不亮，晚上看不见"))
    assert picker.chat_id == GROUP and "这是哪一类问题" in picker.text
    (filed,) = _edits(await scene.tap(wang, picker, "照明用电"))
    assert "R-1" in filed.text
    sent = await _send(app, scene, clock)
    (card,) = messages(sent, GROUP)
    assert "R-1" in card.text and "照明用电" in card.text and "3号楼" in card.text
    assert "王阿姨" not in card.text and "3-1-" not in card.text
    (notice,) = messages(sent, B3_LEAD)
    assert "R-1" in notice.text and _labels(notice) == ["📋 查看并处理"]

    # 李叔 taps +1 on the card: counted, and the card is edited in place.
    assert alerts(await scene.tap(li, card, "+1")) == ["👍 已 +1 R-1，进展会通知您。"]
    assert alerts(await scene.tap(li, card, "+1")) == ["您已经 +1 过 R-1 了。"]
    (edited,) = _edits(await _send(app, scene, clock), GROUP)
    assert "👍 1" in edited.text

    # The lead opens the sheet from the notice and acknowledges: the reporter is credited.
    (sheet,) = messages(await scene.tap(lead, notice, "查看并处理"), B3_LEAD)
    assert "王阿姨" in sheet.text and "3-1-" not in sheet.text  # leads see who, not the flat
    calls = await scene.tap(lead, sheet, "受理")
    assert alerts(calls) == ["R-1：已受理，报事人获得积分。"]
    async with db.transaction(write=False) as s:
        assert await ledger.balance(s, community_id=w.community, person_id=WANG) == 3
    sent = await _send(app, scene, clock)
    assert any("已受理" in m.text for m in messages(sent, WANG))
    assert any("已受理" in e.text for e in _edits(sent, GROUP))

    # Resolved: the reporter and the supporter are asked privately.
    await scene.tap(lead, sheet, "✅ 已解决")
    sent = await _send(app, scene, clock)
    (ask_wang,) = [m for m in messages(sent, WANG) if "真的修好了吗" in m.text]
    (ask_li,) = [m for m in messages(sent, LI) if "真的修好了吗" in m.text]
    assert _labels(ask_wang) == ["✅ 修好了", "❌ 没修好"]
    assert alerts(await scene.tap(wang, ask_wang, "修好了")) == ["谢谢确认！"]
    (asked_rating,) = _edits(await _send(app, scene, clock), WANG)
    assert "打个分" in asked_rating.text
    assert alerts(await scene.tap(wang, ask_wang, "5⭐")) == ["谢谢您的评分：⭐⭐⭐⭐⭐"]
    report = await _report(db)
    assert report.status == "closed" and report.fixed is True
    # The follow-up is over for 李叔 too: his card lost its buttons, an old tap is refused.
    assert scene.message_of(ask_li).get("reply_markup") in (None, {"inline_keyboard": []})
    (alert,) = alerts(await scene.press(li, ask_li, f"rv:{report.id}:0:0"))
    assert "回访已经结束" in alert
    await _send(app, scene, clock)
    final = scene.message_of(card)  # the same message, edited in place all along
    assert "已办结" in final["text"] and not (final.get("reply_markup") or {}).get(
        "inline_keyboard"
    )


async def test_a_report_in_a_forum_topic_gets_its_card_there_in_english(
    app: LinliApp, scene: Scene, db: Database, clock: Clock
) -> None:
    w = await _world(db)
    forum = scene.group(FORUM, "幸福里 forum", forum=True)
    topic = scene.topic(forum, "3号楼")
    async with db.transaction() as s:
        community = await people.get_community(s, w.community)
        community.language = "en"
        await people.link_chat(
            s, chat_id=FORUM, thread_id=topic, unit_id=w.b3, title="", by=ADMIN_ID, now=NOW
        )
    sam = _user(scene, SAM, "Sam", "en")
    (filed,) = messages(
        await scene.say(sam, forum, "/report The lift is stuck on floor 5", thread=topic)
    )
    assert "R-1" in filed.text  # "lift" names a category: no question
    (card,) = messages(await _send(app, scene, clock), FORUM)
    assert card.params.get("message_thread_id") == topic
    assert "Lift" in card.text and "Sam" not in card.text


async def test_a_private_report_stays_with_the_leads(
    app: LinliApp, scene: Scene, db: Database, clock: Clock
) -> None:
    await _world(db)
    sam = _user(scene, SAM, "Sam", "en")
    _user(scene, B3_LEAD, "陈楼长")
    (picker,) = messages(await scene.say(sam, scene.private(sam), "/report Someone dumps rubbish"))
    (filed,) = _edits(await scene.tap(sam, picker, "Sanitation"))
    assert "Only the leads can see it" in filed.text
    sent = await _send(app, scene, clock)
    assert messages(sent, GROUP) == []
    assert [m.chat_id for m in messages(sent)] == [B3_LEAD]
    report = await _report(db)
    assert report.visibility == "private" and report.chat_id is None


async def test_the_same_problem_is_offered_for_plus_one(
    app: LinliApp, scene: Scene, db: Database, clock: Clock
) -> None:
    await _world(db)
    wang, zhao = _user(scene, WANG, "王阿姨"), _user(scene, ZHAO, "赵姐")
    group = scene.group(GROUP, "3号楼邻里群")
    await scene.say(wang, group, "/report 电梯坏了")
    (same,) = messages(await scene.say(zhao, group, "/report 电梯又坏了"))
    assert "已经有人报了同类问题" in same.text and "R-1" in same.text
    assert alerts(await scene.tap(zhao, same, "R-1")) == ["👍 已 +1 R-1，进展会通知您。"]
    assert (await _report(db)).supporters == 1
    (filed,) = _edits(await scene.tap(zhao, same, "不是，这是新问题"))
    assert "R-2" in filed.text


async def test_two_supporters_not_fixed_reopen_and_pass_it_up(
    app: LinliApp, scene: Scene, db: Database, clock: Clock
) -> None:
    await _world(db)
    wang, li, zhao = (
        _user(scene, WANG, "王阿姨"),
        _user(scene, LI, "李叔"),
        _user(scene, ZHAO, "赵姐"),
    )
    lead, grid = _user(scene, B3_LEAD, "陈楼长"), _user(scene, GRID_LEAD, "张网格长")
    group = scene.group(GROUP, "3号楼邻里群")
    (picker,) = messages(await scene.say(wang, group, "/report 地下室漏水"))
    await scene.tap(wang, picker, "水管漏水")
    (card,) = messages(await _send(app, scene, clock), GROUP)
    await scene.tap(li, card, "+1")
    await scene.tap(zhao, card, "+1")
    (notice,) = [m for m in scene.tg.sent(B3_LEAD) if "R-1" in m.text]
    (sheet,) = messages(await scene.tap(lead, notice, "查看并处理"), B3_LEAD)
    await scene.tap(lead, sheet, "✅ 已解决")
    await _send(app, scene, clock)
    for person in (li, zhao):
        (ask,) = [m for m in scene.tg.sent(int(person["id"])) if "真的修好了吗" in m.text]
        await scene.tap(person, ask, "没修好")
    report = await _report(db)
    assert report.status == "reopened" and report.escalation_level == 1
    sent = await _send(app, scene, clock)
    assert any("R-1" in m.text for m in messages(sent, GRID_LEAD))
    assert grid is not None


async def test_escalation_by_the_clock_reaches_the_grid_then_the_admins(
    app: LinliApp, scene: Scene, db: Database, clock: Clock
) -> None:
    await _world(db)
    wang = _user(scene, WANG, "王阿姨")
    _user(scene, GRID_LEAD, "张网格长")
    _user(scene, ADMIN_ID, "Admin")
    group = scene.group(GROUP, "3号楼邻里群")
    (picker,) = messages(await scene.say(wang, group, "/report 3楼楼道灯不亮"))
    await scene.tap(wang, picker, "照明用电")
    await _send(app, scene, clock)
    clock.advance(hours=23)
    await delivery.run_rhythms(app)
    assert messages(await _send(app, scene, clock), GRID_LEAD) == []
    clock.advance(hours=1)
    await delivery.run_rhythms(app)
    sent = await _send(app, scene, clock)
    (up,) = messages(sent, GRID_LEAD)
    assert "超时" in up.text and "R-1" in up.text
    assert any("超时" in e.text for e in _edits(sent, GROUP))  # flagged on the card too
    clock.advance(hours=24)
    await delivery.run_rhythms(app)
    (top,) = messages(await _send(app, scene, clock), ADMIN_ID)
    assert "R-1" in top.text


async def test_forged_and_stale_buttons_change_nothing(
    app: LinliApp, scene: Scene, db: Database, clock: Clock
) -> None:
    await _world(db)
    wang, li = _user(scene, WANG, "王阿姨"), _user(scene, LI, "李叔")
    lead = _user(scene, B3_LEAD, "陈楼长")
    group = scene.group(GROUP, "3号楼邻里群")
    (picker,) = messages(await scene.say(wang, group, "/report 电梯坏了"))
    report = await _report(db)
    chat = scene.message_json(li, scene.private(li), "hello")
    for data, expected in (
        (f"ra:{report.id}:0:ack", "不是「3号楼」的负责人"),
        (f"ra:{report.id}:0:zzz", "失效"),
        ("ra:99999:0:ack", "找不到"),
        (f"rv:{report.id}:0:1", "只有 R-1 的报事人和附议的邻居"),
        (f"rr:{report.id}:9", "1 到 5"),
        (f"rr:{report.id}:3", "请先回答"),
        ("rp:abc", "失效"),
        ("rn:nonsense", "失效"),
    ):
        (alert,) = alerts(await scene.press(li, chat, data))
        assert expected in alert, (data, alert)
    # A stale sheet: the report moved on after it was shown.
    lead_chat = scene.message_json(lead, scene.private(lead), "hello")
    (alert,) = alerts(await scene.press(lead, lead_chat, f"ra:{report.id}:0:ack"))
    assert "已受理" in alert or alert == ""
    (alert,) = alerts(await scene.press(lead, lead_chat, f"ra:{report.id}:0:ip"))
    assert "刚刚被其他负责人处理了" in alert
    assert picker is not None


async def test_a_photo_captioned_report_and_what_is_not_accepted(
    app: LinliApp, scene: Scene, db: Database, clock: Clock
) -> None:
    await _world(db)
    wang = _user(scene, WANG, "王阿姨")
    group = scene.group(GROUP, "3号楼邻里群")
    photo = [
        {"file_id": "AgADsmall", "file_unique_id": "s", "width": 90, "height": 90},
        {"file_id": "AgADbig", "file_unique_id": "b", "width": 900, "height": 900},
    ]
    message = scene.message_json(
        wang, group, "", photo=photo, caption="/report 楼顶有垃圾",
        caption_entities=[{"type": "bot_command", "offset": 0, "length": 7}],
    )  # fmt: skip
    (picker,) = messages(await scene.feed({"message": message}))
    await scene.tap(wang, picker, "环境卫生")
    report = await _report(db)
    assert report.photos == ["AgADbig"] and report.text == "楼顶有垃圾"
    video = scene.message_json(
        wang, group, "", caption="/report 看视频",
        video={"file_id": "v", "file_unique_id": "v", "width": 1, "height": 1, "duration": 1},
    )  # fmt: skip
    (refused,) = messages(await scene.feed({"message": video}))
    assert "视频和文件不能作为报事附件" in refused.text
    (too_long,) = messages(await scene.say(wang, group, "/report " + "长" * 1001))
    assert "最多 1000 个字" in too_long.text
    async with db.transaction(write=False) as s:
        assert len((await s.exec(select(Report))).all()) == 1


async def test_myreports_and_the_lead_list(
    app: LinliApp, scene: Scene, db: Database, clock: Clock
) -> None:
    await _world(db)
    wang, lead = _user(scene, WANG, "王阿姨"), _user(scene, B3_LEAD, "陈楼长")
    group = scene.group(GROUP, "3号楼邻里群")
    await scene.say(wang, group, "/report 电梯坏了")
    (mine,) = messages(await scene.say(wang, scene.private(wang), "/myreports"))
    assert "R-1" in mine.text and "待受理" in mine.text
    (in_group,) = messages(await scene.say(lead, group, "/reports"))
    assert "R-1" not in in_group.text and "私聊" in _labels(in_group)[0]
    (listing,) = messages(await scene.say(lead, scene.private(lead), "/reports"))
    assert "1 件" in listing.text and any("R-1" in t for t in _labels(listing))


async def test_stats_sends_a_chart_in_chinese(
    app: LinliApp, scene: Scene, db: Database, clock: Clock
) -> None:
    await _world(db)
    wang, lead = _user(scene, WANG, "王阿姨"), _user(scene, ADMIN_ID, "Admin")
    group = scene.group(GROUP, "3号楼邻里群")
    await scene.say(wang, group, "/report 电梯坏了")
    (stats,) = messages(await scene.say(lead, scene.private(lead), "/stats"))
    assert stats.method == "sendPhoto" and "共 1 件" in stats.text and "电梯 1" in stats.text
    calls = await scene.tap(lead, stats, "导出报事")
    (csv_file,) = [c for c in calls if c.method == "sendDocument"]
    assert "R-1" in next(iter(csv_file.files.values())).decode("utf-8-sig")
    # /export sends the reports with the ledger, for the same period.
    (periods,) = messages(await scene.say(lead, scene.private(lead), "/export"))
    calls = await scene.tap(lead, periods, "本月")
    (csv_file,) = [c for c in calls if c.method == "sendDocument"]
    assert "报事记录 1 件" in csv_file.text and b"R-1" in csv_file.files["document"]


def test_the_chinese_chart_font_has_the_glyphs() -> None:
    from matplotlib.ft2font import FT2Font

    path = charts.cjk_font_path()
    font = FT2Font(str(path))
    for ch in "报事统计电梯照明用电新报解决":
        assert font.get_char_index(ord(ch)) != 0, ch
    image = charts.report_chart(
        [("电梯", 3), ("照明用电", 1)],
        [("2026-11-09", 2, 1), ("2026-11-16", 2, 2)],
        charts.ChartText("报事统计", "各类别数量", "每周新报与解决", "新报", "解决"),
    )
    assert image[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def _no_flats_in_groups(scene: Scene) -> Iterator[None]:
    """Whatever else a test checks: no group message shows a flat number."""
    yield
    for call in scene.tg.calls:
        if call.chat_id is not None and call.chat_id < 0 and call.ok:
            assert "3-1-" not in call.text, call.text


@pytest.mark.shows_in_group("王阿姨")
async def test_the_reporter_may_choose_to_be_named_on_the_card(
    app: LinliApp, scene: Scene, db: Database, clock: Clock
) -> None:
    await _world(db)
    wang, li = _user(scene, WANG, "王阿姨"), _user(scene, LI, "李叔")
    group = scene.group(GROUP, "3号楼邻里群")
    (picker,) = messages(await scene.say(wang, group, "/report 花园的长椅坏了"))
    (filed,) = _edits(await scene.tap(wang, picker, "绿化"))
    (card,) = messages(await _send(app, scene, clock), GROUP)
    assert "王阿姨" not in card.text
    (alert,) = alerts(await scene.tap(li, filed, "显示我的名字"))
    assert "只有报事人本人" in alert
    assert alerts(await scene.tap(wang, filed, "显示我的名字")) == [
        "群里的卡片上现在显示您的名字。"
    ]
    await _send(app, scene, clock)
    assert "王阿姨" in scene.message_of(card)["text"]
    await scene.tap(wang, filed, "不显示我的名字")
    await _send(app, scene, clock)
    assert "王阿姨" not in scene.message_of(card)["text"]


async def test_admins_edit_escalation_times_and_leads_keep_reply_templates(
    app: LinliApp, scene: Scene, db: Database, clock: Clock
) -> None:
    w = await _world(db)
    admin, lead, wang = (
        _user(scene, ADMIN_ID, "Admin"),
        _user(scene, B3_LEAD, "陈楼长"),
        _user(scene, WANG, "王阿姨"),
    )
    (listing,) = messages(await scene.say(lead, scene.private(lead), "/reports"))
    assert "⏱ 各类别的上报时限" not in _labels(listing)  # admins only
    (alert,) = alerts(await scene.press(lead, listing, f"rc:{w.community}:noise:1"))
    assert "管理员" in alert
    (listing,) = messages(await scene.say(admin, scene.private(admin), "/reports"))
    (times,) = _edits(await scene.tap(admin, listing, "上报时限"))
    assert "噪音：24 小时" in _labels(times)
    (hours,) = _edits(await scene.tap(admin, times, "噪音"))
    (times,) = _edits(await scene.tap(admin, hours, "8 小时"))
    assert "噪音：8 小时" in _labels(times)
    # A lead saves a reply and resolves a report with it in one tap.
    (listing,) = messages(await scene.say(lead, scene.private(lead), "/reports"))
    (templates,) = _edits(await scene.tap(lead, listing, "回复模板"))
    await scene.tap(lead, templates, "新模板")
    (saved,) = messages(
        await scene.say(lead, scene.private(lead), "已通知物业：已通知物业，三天内处理")
    )
    assert "已通知物业" in saved.text
    group = scene.group(GROUP, "3号楼邻里群")
    await scene.say(wang, group, "/report 噪音太大")
    (listing,) = messages(await scene.say(lead, scene.private(lead), "/reports"))
    (sheet,) = _edits(await scene.tap(lead, listing, "R-1"))
    await scene.tap(lead, sheet, "💬 已通知物业")
    report = await _report(db)
    assert report.status == "resolved" and report.escalate_at is None
    async with db.transaction(write=False) as s:
        (last,) = (await reports_events(s, report))[-1:]
    assert last.note == "已通知物业，三天内处理"


async def reports_events(session: Any, report: Report) -> list[Any]:
    from models import reports

    return await reports.events(session, report.id or 0)


def _photo(file_id: str) -> list[JSON]:
    return [{"file_id": file_id, "file_unique_id": file_id, "width": 900, "height": 900}]


async def test_resolve_with_a_photo_not_fixed_with_a_photo_and_the_agenda(
    app: LinliApp, scene: Scene, db: Database, clock: Clock
) -> None:
    await _world(db)
    wang, lead = _user(scene, WANG, "王阿姨"), _user(scene, B3_LEAD, "陈楼长")
    group = scene.group(GROUP, "3号楼邻里群")
    (picker,) = messages(await scene.say(wang, group, "/report 3楼楼道灯不亮"))
    await scene.tap(wang, picker, "照明用电")
    await _send(app, scene, clock)
    (notice,) = [m for m in scene.tg.sent(B3_LEAD) if "R-1" in m.text]
    (sheet,) = messages(await scene.tap(lead, notice, "查看并处理"), B3_LEAD)

    # Put on the agenda: one proposal, its card in the unit's group; a second tap is refused.
    assert "列入议事" in " ".join(_labels(sheet))
    calls = await scene.tap(lead, sheet, "列入议事")
    assert alerts(calls) == ["已列入议事：R-1 照明用电 · 3号楼"]
    now_shown = scene.message_of(sheet)["reply_markup"]["inline_keyboard"]
    assert "列入议事" not in " ".join(b["text"] for row in now_shown for b in row)
    report = await _report(db)
    (alert,) = alerts(await scene.press(lead, sheet, f"rj:{report.id}"))
    assert "已经列入议事" in alert
    proposal_cards = [m for m in messages(await _send(app, scene, clock), GROUP) if "R-1" in m.text]
    assert proposal_cards and all("3-1-" not in m.text for m in proposal_cards)

    # Resolve with a note: a photo with the note as its caption.
    await scene.tap(lead, sheet, "已解决（写说明）")
    message = scene.message_json(lead, scene.private(lead), "", photo=_photo("AgADfixed"),
                                 caption="换了新灯泡")  # fmt: skip
    await scene.feed({"message": message})
    report = await _report(db)
    assert report.status == "resolved"
    sent = await _send(app, scene, clock)
    (told,) = [c for c in sent if c.method == "sendPhoto" and c.chat_id == WANG]
    assert told.params["photo"] == "AgADfixed" and "换了新灯泡" in str(told.params["caption"])

    # 王阿姨: not fixed, then a photo of it (kept with her answer, in the lead's photos).
    (ask,) = [m for m in scene.tg.sent(WANG) if "真的修好了吗" in m.text]
    calls = await scene.tap(wang, ask, "没修好")
    (asked,) = [m for m in messages(calls, WANG) if "照片" in m.text]
    assert "R-1" in asked.text
    still = scene.message_json(wang, scene.private(wang), "", photo=_photo("AgADstill"))
    (kept,) = messages(await scene.feed({"message": still}), WANG)
    assert "负责人会在 R-1 里看到" in kept.text
    report = await _report(db)
    assert report.status == "reopened"
    lead_chat = scene.message_json(lead, scene.private(lead), "hello")
    calls = await scene.press(lead, lead_chat, f"rf:{report.id}")
    shown = [c.params["photo"] for c in calls if c.method == "sendPhoto"]
    assert shown == ["AgADfixed", "AgADstill"]


async def test_a_lead_assigns_a_report_to_a_volunteer_who_is_told(
    app: LinliApp, scene: Scene, db: Database, clock: Clock
) -> None:
    w = await _world(db)
    wang, li = _user(scene, WANG, "王阿姨"), _user(scene, LI, "李叔")
    lead = _user(scene, B3_LEAD, "陈楼长")
    # 李叔 helped at a task in 3号楼 last month; 赵姐 signed up but did not come.
    async with db.transaction() as s:
        start = NOW - timedelta(days=30)
        task = Task(community_id=w.community, unit_id=w.b3, lead_id=B3_LEAD, title="清理楼道",
                    starts_at=start, ends_at=start + timedelta(hours=2), code="123456",
                    created_at=start, updated_at=start)  # fmt: skip
        s.add(task)
        await s.flush()
        for seq, (pid, status) in enumerate(((LI, "attended"), (ZHAO, "no_show"))):
            s.add(TaskSignup(task_id=task.id or 0, person_id=pid, by=pid, status=status,
                             seq=seq, signed_at=start, updated_at=start))  # fmt: skip
    group = scene.group(GROUP, "3号楼邻里群")
    (picker,) = messages(await scene.say(wang, group, "/report 地下室漏水"))
    await scene.tap(wang, picker, "水管漏水")
    await _send(app, scene, clock)
    (notice,) = [m for m in scene.tg.sent(B3_LEAD) if "R-1" in m.text]
    (sheet,) = messages(await scene.tap(lead, notice, "查看并处理"), B3_LEAD)
    (choices,) = _edits(await scene.tap(lead, sheet, "指派"))
    assert "志愿者" in choices.text
    labels = _labels(choices)
    assert "🙋 李叔（志愿者）" in labels and not any("赵姐" in t for t in labels)
    calls = await scene.tap(lead, sheet, "李叔")
    assert alerts(calls) == ["R-1：已受理，报事人获得积分。"]
    report = await _report(db)
    assert report.assignee_id == LI
    told = [m for m in messages(await _send(app, scene, clock), LI) if "R-1" in m.text]
    assert told and "指派" in told[0].text
    assert li is not None


async def test_the_sheet_shows_the_whole_history_newest_first(
    app: LinliApp, scene: Scene, db: Database, clock: Clock
) -> None:
    await _world(db)
    wang, lead = _user(scene, WANG, "王阿姨"), _user(scene, B3_LEAD, "陈楼长")
    group = scene.group(GROUP, "3号楼邻里群")
    (picker,) = messages(await scene.say(wang, group, "/report 地下室漏水"))
    await scene.tap(wang, picker, "水管漏水")
    report = await _report(db)
    async with db.transaction() as s:  # a long story: twelve escalations after the filing
        for hour in range(1, 13):
            s.add(ReportEvent(report_id=report.id or 0, kind="escalated", note=str(hour),
                              at=NOW + timedelta(hours=hour)))  # fmt: skip
    await _send(app, scene, clock)
    (notice,) = [m for m in scene.tg.sent(B3_LEAD) if "R-1" in m.text]
    (sheet,) = messages(await scene.tap(lead, notice, "查看并处理"), B3_LEAD)
    lines = [line for line in sheet.text.splitlines() if "超时上报" in line or "报事 ·" in line]
    assert len(lines) == 13 and "报事 · 王阿姨" in lines[-1]  # the filing too, last
    assert lines[0].startswith((NOW + timedelta(hours=12)).astimezone(ZONE).strftime("%m-%d %H"))
