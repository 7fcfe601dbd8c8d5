"""The guided /report, as a resident goes through it by buttons: privately and from a group, in
Chinese and English; a place, a floor, a location, another building; words and photos; who may
see it; the preview with "same problem? +1"; Send once; bad input, forged buttons, expiry."""

from __future__ import annotations

from sqlmodel import select

from bot.context import LinliApp
from bot.db import Database
from bot.standin import JSON, Call, Scene, alerts, messages
from models.flows import Flow
from models.reports import Report
from tests.integration.conftest import Clock
from tests.integration.test_reports_flow import (
    GROUP,
    LI,
    SAM,
    WANG,
    ZHAO,
    _edits,
    _labels,
    _send,
    _user,
    _world,
)


def _photo(file_id: str) -> list[JSON]:
    return [{"file_id": file_id, "file_unique_id": file_id, "width": 900, "height": 900}]


async def _all_reports(db: Database) -> list[Report]:
    async with db.transaction(write=False) as s:
        return list((await s.exec(select(Report).order_by(Report.id))).all())  # type: ignore[arg-type]


def _last(scene: Scene, uid: int) -> JSON:
    """The message the person's private chat shows last (edited in place or new)."""
    (last,) = scene.tg.sent(uid)[-1:]
    return scene.message_of(last)


async def test_a_private_report_step_by_step_in_chinese(
    app: LinliApp, scene: Scene, db: Database, clock: Clock
) -> None:
    await _world(db)
    wang = _user(scene, WANG, "王阿姨")
    chat = scene.private(wang)
    (cats,) = messages(await scene.say(wang, chat, "/report"))
    assert "是哪一类问题" in cats.text and "3号楼" in cats.text
    assert "照明用电" in _labels(cats) and "✖ 取消" in _labels(cats)

    (where,) = _edits(await scene.tap(wang, cats, "照明用电"))
    assert "在哪里" in where.text and "楼梯间" in _labels(where)
    (floor,) = _edits(await scene.tap(wang, cats, "楼梯间"))
    assert "几楼" in floor.text and "B1" in _labels(floor)
    calls = await scene.tap(wang, cats, "3")
    (ask,) = messages(calls, WANG)
    assert "出了什么问题" in ask.text and "1000" in ask.text

    # Too long: said so, the draft keeps asking; then the words, then two photos.
    too_long, again = messages(await scene.say(wang, chat, "长" * 1001), WANG)
    assert "最多 1000 个字" in too_long.text and "出了什么问题" in again.text
    (so_far,) = messages(await scene.say(wang, chat, "楼道灯不亮，晚上看不见"), WANG)
    assert "楼道灯不亮" in so_far.text and "➡ 下一步" in _labels(so_far)
    for file_id in ("AgADa", "AgADb"):
        photo = scene.message_json(wang, chat, "", photo=_photo(file_id))
        (so_far,) = messages(await scene.feed({"message": photo}), WANG)
    assert "已有 2 张照片" in so_far.text
    video = scene.message_json(
        wang, chat, "",
        video={"file_id": "v", "file_unique_id": "v", "width": 1, "height": 1, "duration": 1},
    )  # fmt: skip
    (refused,) = messages(await scene.feed({"message": video}), WANG)
    assert "视频和文件不能作为报事附件" in refused.text  # and the question still waits

    (who,) = _edits(await scene.tap(wang, so_far, "下一步"))
    assert "谁可以看到" in who.text
    (preview,) = _edits(await scene.tap(wang, so_far, "只给负责人看"))
    assert "请核对后发送" in preview.text and "楼梯间" in preview.text and "3楼" in preview.text
    assert "2 张照片" in preview.text and "只有负责人能看到" in preview.text
    fid = await _flow_id(db)
    (filed,) = _edits(await scene.tap(wang, so_far, "✅ 发送"))
    assert "R-1" in filed.text and "只有负责人能看到" in filed.text
    # Send again (a double tap, a repeated update): the same report, nothing more filed.
    (again,) = _edits(await scene.press(wang, so_far, f"rd:{fid}:ok"))
    assert "R-1" in again.text and "刚才已经报过了" in again.text
    (report,) = await _all_reports(db)
    assert (report.place, report.floor, report.text) == ("stairwell", 3, "楼道灯不亮，晚上看不见")
    assert report.photos == ["AgADa", "AgADb"] and report.visibility == "private"
    assert messages(await _send(app, scene, clock), GROUP) == []


async def _flow_id(db: Database) -> int:
    async with db.transaction(write=False) as s:
        flow = (await s.exec(select(Flow).order_by(Flow.id.desc()))).first()  # type: ignore[union-attr]
        assert flow is not None and flow.id is not None
        return flow.id


async def test_from_a_group_outdoors_with_a_location_in_english(
    app: LinliApp, scene: Scene, db: Database, clock: Clock
) -> None:
    await _world(db)
    sam = _user(scene, SAM, "Sam", "en")
    group = scene.group(GROUP, "3号楼邻里群")
    calls = await scene.say(sam, group, "/report")
    (in_group,) = messages(calls, GROUP)
    assert "privately" in in_group.text and "Sam" not in in_group.text
    (cats,) = messages(calls, SAM)
    (where,) = _edits(await scene.tap(sam, cats, "Lights"))
    asked = messages(await scene.tap(sam, where, "Outdoors"), SAM)
    assert "Location" in asked[-1].text
    location = scene.message_json(
        sam, scene.private(sam), "", location={"latitude": 31.2304, "longitude": 121.4737}
    )
    (ask,) = messages(await scene.feed({"message": location}), SAM)
    assert "What is wrong" in ask.text
    (so_far,) = messages(await scene.say(sam, scene.private(sam), "The lamp by the gate is out"))
    (who,) = _edits(await scene.tap(sam, so_far, "Next"))
    (preview,) = _edits(await scene.tap(sam, so_far, "Also the group"))
    assert "A card in the group" in preview.text and "📍" in preview.text
    (filed,) = _edits(await scene.tap(sam, so_far, "Send"))
    assert "R-1" in filed.text
    (card,) = messages(await _send(app, scene, clock), GROUP)
    assert "R-1" in card.text and "Sam" not in card.text
    (report,) = await _all_reports(db)
    assert report.place == "outdoors" and report.latitude == 31.2304
    assert report.visibility == "group" and report.chat_id == GROUP
    assert who is not None


async def test_same_problem_plus_one_from_the_preview_files_nothing_new(
    app: LinliApp, scene: Scene, db: Database, clock: Clock
) -> None:
    await _world(db)
    wang, zhao = _user(scene, WANG, "王阿姨"), _user(scene, ZHAO, "赵姐")

    async def through(person: JSON, public: str) -> Call:
        (cats,) = messages(await scene.say(person, scene.private(person), "/report"))
        await scene.tap(person, cats, "电梯")
        await scene.tap(person, cats, "电梯")  # the place: the lift
        await scene.tap(person, cats, "5")
        (so_far,) = messages(await scene.say(person, scene.private(person), "电梯门关不上"))
        await scene.tap(person, so_far, "下一步")
        await scene.tap(person, so_far, public)
        return so_far

    first = await through(wang, "也发到群里")
    await scene.tap(wang, first, "✅ 发送")
    second = await through(zhao, "也发到群里")
    preview = scene.message_of(second)
    assert "这里已经有人报了同类问题" in preview["text"] and "R-1" in preview["text"]
    (done,) = _edits(await scene.tap(zhao, second, "R-1"))
    assert "已 +1 R-1" in done.text
    (report,) = await _all_reports(db)
    assert report.supporters == 1


async def test_bad_taps_forged_ids_and_an_expired_draft(
    app: LinliApp, scene: Scene, db: Database, clock: Clock
) -> None:
    await _world(db)
    wang, li = _user(scene, WANG, "王阿姨"), _user(scene, LI, "李叔")
    (cats,) = messages(await scene.say(wang, scene.private(wang), "/report"))
    fid = await _flow_id(db)
    li_chat = scene.message_json(li, scene.private(li), "hello")
    for data, expected in (
        (f"rd:{fid}:c:lift", "只有本人可以继续"),  # not his draft
        (f"rd:{fid}:ok", "只有本人可以继续"),
        ("rd:99999:c:lift", "失效"),
        ("rd:abc:c:lift", "失效"),
    ):
        (alert,) = alerts(await scene.press(li, li_chat, data))
        assert expected in alert, (data, alert)
    for data, expected in ((f"rd:{fid}:c:nonsense", "类别"), (f"rd:{fid}:zz", "失效"),
                           (f"rd:{fid}:p:attic", "失效"), (f"rd:{fid}:f:999", "楼层")):  # fmt: skip
        (alert,) = alerts(await scene.press(wang, cats, data))
        assert expected in alert, (data, alert)
    # Send before anything is chosen: refused, nothing filed.
    (alert,) = alerts(await scene.press(wang, cats, f"rd:{fid}:ok"))
    assert alert
    assert await _all_reports(db) == []

    # Left alone for over an hour: the draft expired; a tap says so, nothing is filed, and a
    # new /report starts clean.
    await scene.tap(wang, cats, "电梯")
    clock.advance(minutes=61)
    (alert,) = alerts(await scene.press(wang, cats, f"rd:{fid}:p:lift"))
    assert "60 分钟" in alert
    assert await _all_reports(db) == []
    (fresh,) = messages(await scene.say(wang, scene.private(wang), "/report"))
    assert "是哪一类问题" in fresh.text


async def test_another_building_from_the_unit_picker(
    app: LinliApp, scene: Scene, db: Database, clock: Clock
) -> None:
    await _world(db)
    wang = _user(scene, WANG, "王阿姨")
    (cats,) = messages(await scene.say(wang, scene.private(wang), "/report"))
    await scene.tap(wang, cats, "环境卫生")
    (tree,) = _edits(await scene.tap(wang, cats, "别的楼或区域"))
    assert "是哪栋楼" in tree.text
    (grid,) = _edits(await scene.tap(wang, cats, "一网格"))
    (where,) = _edits(await scene.tap(wang, cats, "一网格"))  # "this unit"
    assert "一网格" in where.text and "在哪里" in where.text
    assert grid is not None


async def test_from_a_group_before_ever_opening_the_bot_a_link_opens_the_same_draft(
    app: LinliApp, scene: Scene, db: Database, clock: Clock
) -> None:
    await _world(db)
    zhao = scene.person(ZHAO, "赵姐")  # never opened a private chat with the bot
    li = _user(scene, LI, "李叔")
    group = scene.group(GROUP, "3号楼邻里群")
    calls = await scene.say(zhao, group, "/report")
    (offer,) = messages(calls, GROUP)
    assert "私聊里一步一步报事" in offer.text and messages(calls, ZHAO) == []
    (link,) = [b["url"] for row in offer.buttons for b in row]
    fid = await _flow_id(db)
    assert link.endswith(f"start=rd{fid}")
    # Someone else opening that link is refused; the owner gets the first step.
    (refused,) = messages(await scene.say(li, scene.private(li), f"/start rd{fid}"), LI)
    assert "只有本人可以继续" in refused.text
    (cats,) = messages(await scene.say(zhao, scene.private(zhao), f"/start rd{fid}"), ZHAO)
    assert "是哪一类问题" in cats.text and "3号楼" in cats.text
