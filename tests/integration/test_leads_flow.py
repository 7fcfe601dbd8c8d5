"""Appointing leads, seeing who leads what, and stepping down, as leads and residents see it."""

from __future__ import annotations

import pytest

from bot import delivery
from bot.db import Database
from bot.standin import JSON, Call, Scene, alerts, messages
from models import people
from tests.conftest import NOW
from tests.integration.conftest import ADMIN_ID
from tests.world import World, world

GROUP_B3 = -600  # the 3号楼 group
GROUP_GRID = -601  # the 一网格 group
LEAD, WANG, LI, ZHAO, SAM = 20, 21, 22, 23, 24
BOSS = people.Authority(person_id=ADMIN_ID, superadmin=True)


async def _world(db: Database) -> World:
    """王阿姨 lives in 3号楼, 李叔 and Sam in 5号楼; 赵姐 is known but lives nowhere."""
    cast = {
        ADMIN_ID: ("Admin", "zh-hans"),
        LEAD: ("张网格长", "zh-hans"),
        WANG: ("王阿姨", "zh-hans"),
        LI: ("李叔", "zh-hans"),
        ZHAO: ("赵姐", "zh-hans"),
        SAM: ("Sam", "en"),
    }
    homes = {WANG: "3-2-501", LI: "5-1-101", SAM: "5-1-101"}
    chats = {GROUP_B3: ("b3", ""), GROUP_GRID: ("grid1", "")}
    return await world(db, cast=cast, homes=homes, leads={LEAD: "grid1"}, chats=chats)


async def _roles(db: Database, person_id: int) -> list[tuple[int, str]]:
    async with db.transaction(write=False) as s:
        return [(r.unit_id, r.kind) for r, _ in await people.roles_of(s, person_id=person_id)]


def _edits(calls: list[Call]) -> list[Call]:
    return [c for c in calls if c.method == "editMessageText" and c.ok]


def _labels(call: Call | JSON) -> list[str]:
    rows = call.buttons if isinstance(call, Call) else call["reply_markup"]["inline_keyboard"]
    return [b["text"] for row in rows for b in row]


def _data(call: Call, wanted: str) -> str:
    """The callback data of the button of a message as sent whose label contains `wanted`."""
    return next(str(b["callback_data"]) for row in call.buttons for b in row if wanted in b["text"])


def _user(scene: Scene, uid: int, name: str, lang: str = "zh-hans") -> JSON:
    return scene.person(uid, name, lang=lang)


async def _then(scene: Scene, calls: list[Call]) -> list[Call]:
    """An update's calls, followed by what the outbox sent because of it."""
    before = len(scene.tg.calls)
    await delivery.drain(scene.app)
    return calls + scene.tg.calls[before:]


async def test_superadmin_appoints_a_lead_by_replying_in_a_group(
    scene: Scene, db: Database
) -> None:
    w = await _world(db)
    admin, wang = _user(scene, ADMIN_ID, "Admin"), _user(scene, WANG, "王阿姨")
    scene.private(wang)  # she has opened a private chat with the bot before
    scene.tg.started.add(WANG)
    group = scene.group(GROUP_B3, "3号楼邻里群")
    said = scene.message_json(wang, group, "楼道灯坏了")
    (picker,) = messages(await scene.say(admin, group, "/appoint", reply_to=said))
    assert picker.chat_id == GROUP_B3 and "王阿姨" in picker.text
    assert "3号楼" in picker.text  # starts from the unit this group serves
    assert "3-2-501" not in picker.text
    calls = await scene.tap(admin, picker, "就选「3号楼」")
    (roles,) = _edits(calls)
    assert _labels(roles)[:2] == ["👤 负责人", "🛡 管理员"]  # a super-admin may appoint admins
    calls = await _then(scene, await scene.tap(admin, picker, "负责人"))
    (done,) = _edits(calls)
    assert "王阿姨 现在是「3号楼」的负责人" in done.text and not done.buttons
    (note,) = messages(calls)  # through the outbox
    assert note.chat_id == WANG and "/pending" in note.text and "/appoint" in note.text
    assert "一网格 › 3号楼" in note.text
    assert await _roles(db, WANG) == [(w.b3, "lead")]
    (helped,) = messages(await scene.say(wang, scene.private(wang), "/help"))
    assert "/appoint" in helped.text and "/pending" in helped.text


async def test_appointed_lead_who_never_started_the_bot_is_asked_to(
    scene: Scene, db: Database
) -> None:
    w = await _world(db)
    admin, li = _user(scene, ADMIN_ID, "Admin"), _user(scene, LI, "李叔")
    group = scene.group(GROUP_B3, "3号楼邻里群")
    said = scene.message_json(li, group, "收到")
    (picker,) = messages(await scene.say(admin, group, "/appoint", reply_to=said))
    await scene.tap(admin, picker, "就选「3号楼」")
    calls = await _then(scene, await scene.tap(admin, picker, "负责人"))
    (done,) = _edits(calls)
    assert "李叔 现在是「3号楼」的负责人" in done.text and "/start" in done.text
    # The private note could not be delivered: he is asked to open a chat, in the group.
    (asked,) = messages(calls)
    assert asked.chat_id == GROUP_B3 and "还没有和我私聊过" in asked.text
    assert "负责人" not in asked.text  # what the note said stays private
    assert await _roles(db, LI) == [(w.b3, "lead")]


async def test_reply_target_unknown_to_the_bot_is_remembered_and_appointed(
    scene: Scene, db: Database
) -> None:
    w = await _world(db)
    admin = _user(scene, ADMIN_ID, "Admin")
    newcomer = _user(scene, 77, "刘师傅")
    group = scene.group(GROUP_B3, "3号楼邻里群")
    # Privacy mode: the bot never received 刘师傅's message, only the reply to it.
    said = scene.message_json(newcomer, group, "我来帮忙")
    (picker,) = messages(await scene.say(admin, group, "/appoint", reply_to=said))
    await scene.tap(admin, picker, "就选「3号楼」")
    (done,) = _edits(await scene.tap(admin, picker, "负责人"))
    assert "刘师傅" in done.text
    assert await _roles(db, 77) == [(w.b3, "lead")]


async def test_lead_appoints_a_building_lead_in_their_grid_by_picking(
    scene: Scene, db: Database
) -> None:
    w = await _world(db)
    lead, li = _user(scene, LEAD, "张网格长"), _user(scene, LI, "李叔")
    scene.private(li)
    scene.tg.started.add(LI)
    chat = scene.private(lead)
    (picker,) = messages(await scene.say(lead, chat, "/appoint"))
    assert _labels(picker) == ["✅ 就选「一网格」", "3号楼", "5号楼", "✖ 取消"]
    calls = await scene.tap(lead, picker, "5号楼")
    (people_picker,) = _edits(calls)
    assert "5号楼" in people_picker.text
    listed = " ".join(_labels(people_picker))  # the one resident picker: name (flat)
    assert "👤 李叔（5-1-101）" in listed and "Sam" in listed
    assert "王阿姨" not in listed  # she lives in 3号楼
    (up,) = _edits(await scene.tap(lead, picker, "返回上一级"))  # back to the unit, and again
    assert "5号楼" in _labels(up)[0]
    await scene.tap(lead, picker, _labels(up)[0])
    (roles,) = _edits(await scene.tap(lead, picker, "李叔"))
    assert _labels(roles) == ["👤 负责人", "✖ 取消"]  # a lead cannot make admins
    calls = await _then(scene, await scene.tap(lead, picker, "负责人"))
    assert "李叔 现在是「5号楼」的负责人" in _edits(calls)[0].text
    assert [c.chat_id for c in messages(calls)] == [LI]
    assert await _roles(db, LI) == [(w.b5, "lead")]


async def test_lead_cannot_appoint_outside_their_subtree_nor_an_admin(
    scene: Scene, db: Database
) -> None:
    w = await _world(db)
    lead = _user(scene, LEAD, "张网格长")
    (picker,) = messages(await scene.say(lead, scene.private(lead), "/appoint"))
    fid = _data(picker, "取消").split(":")[1]
    (alert,) = alerts(await scene.press(lead, picker, f"fc:{fid}:{w.b9}"))
    assert "您不是「9号楼」的负责人" in alert
    (alert,) = alerts(await scene.press(lead, picker, f"fu:{fid}:{w.grid2}:0"))
    assert "二网格" in alert
    (alert,) = alerts(await scene.press(lead, picker, f"ap:{fid}:l"))  # no unit, no person yet
    assert "失效" in alert
    await scene.tap(lead, picker, "5号楼")
    (alert,) = alerts(await scene.press(lead, picker, f"fv:{fid}:999:0:1"))
    assert "不在您负责的楼栋或单元里" in alert
    (roles,) = _edits(await scene.tap(lead, picker, "李叔"))
    assert _labels(roles) == ["👤 负责人", "✖ 取消"]
    (alert,) = alerts(await scene.press(lead, picker, f"ap:{fid}:a"))
    assert "只有「5号楼」的管理员" in alert
    (alert,) = alerts(await scene.press(lead, picker, f"ap:{fid}:x"))
    assert "失效" in alert
    assert await _roles(db, LI) == [] and await _roles(db, 999) == []


async def test_resident_cannot_appoint_and_nothing_is_written(scene: Scene, db: Database) -> None:
    await _world(db)
    wang, li = _user(scene, WANG, "王阿姨"), _user(scene, LI, "李叔")
    group = scene.group(GROUP_B3, "3号楼邻里群")
    said = scene.message_json(li, group, "我想当楼长")
    (refusal,) = messages(await scene.say(wang, group, "/appoint", reply_to=said))
    assert refusal.chat_id == GROUP_B3 and "只有负责人才能任命" in refusal.text
    assert not refusal.buttons
    (refusal,) = messages(await scene.say(wang, scene.private(wang), "/appoint"))
    assert "只有负责人才能任命" in refusal.text
    assert await _roles(db, LI) == [] and await _roles(db, WANG) == []


# The picker by reply names the person in the group: issue 8 item 10 moves it to the private
# chat, and then this marker goes.
@pytest.mark.shows_in_group("李叔")
async def test_only_the_appointer_can_tap_their_picker(scene: Scene, db: Database) -> None:
    w = await _world(db)
    admin, lead = _user(scene, ADMIN_ID, "Admin"), _user(scene, LEAD, "张网格长")
    wang, li = _user(scene, WANG, "王阿姨"), _user(scene, LI, "李叔")
    group = scene.group(GROUP_B3, "3号楼邻里群")
    said = scene.message_json(li, group, "好的")
    (picker,) = messages(await scene.say(admin, group, "/appoint", reply_to=said))
    (alert,) = alerts(await scene.tap(wang, picker, "就选「3号楼」"))
    assert "别人打开的" in alert
    fid = _data(picker, "取消").split(":")[1]
    # Even a lead who covers 3号楼 cannot finish someone else's appointment.
    await scene.tap(admin, picker, "就选「3号楼」")
    (alert,) = alerts(await scene.press(lead, picker, f"ap:{fid}:l"))
    assert "别人打开的" in alert
    # Nor can a resident with a forged unit choice of the admin's flow.
    (alert,) = alerts(await scene.press(wang, picker, f"fc:{fid}:{w.b3}"))
    assert "别人打开的" in alert
    assert await _roles(db, LI) == [] and await _roles(db, WANG) == []


async def test_a_bot_cannot_be_appointed(scene: Scene, db: Database) -> None:
    await _world(db)
    admin = _user(scene, ADMIN_ID, "Admin")
    group = scene.group(GROUP_B3, "3号楼邻里群")
    other_bot = {"id": 8000, "is_bot": True, "first_name": "WeatherBot"}
    said = scene.message_json(other_bot, group, "今天晴")
    (refusal,) = messages(await scene.say(admin, group, "/appoint", reply_to=said))
    assert "机器人不能当负责人" in refusal.text and not refusal.buttons


async def test_appointing_twice_makes_no_duplicate(scene: Scene, db: Database) -> None:
    w = await _world(db)
    admin, wang = _user(scene, ADMIN_ID, "Admin"), _user(scene, WANG, "王阿姨")
    scene.private(wang)
    scene.tg.started.add(WANG)
    group = scene.group(GROUP_B3, "3号楼邻里群")
    said = scene.message_json(wang, group, "在的")
    notes = 0
    for expected in ("现在是「3号楼」的负责人", "已经是「3号楼」的负责人了"):
        (picker,) = messages(await scene.say(admin, group, "/appoint", reply_to=said))
        await scene.tap(admin, picker, "就选「3号楼」")
        calls = await _then(scene, await scene.tap(admin, picker, "负责人"))
        assert expected in _edits(calls)[0].text
        notes += len(messages(calls, chat_id=WANG))
    # A double tap on the finished picker's old button changes nothing either.
    await scene.press(admin, picker, f"ap:{_data(picker, '取消').split(':')[1]}:l")
    assert notes == 1
    assert await _roles(db, WANG) == [(w.b3, "lead")]


async def test_cancel_closes_the_picker_without_appointing(scene: Scene, db: Database) -> None:
    await _world(db)
    lead = _user(scene, LEAD, "张网格长")
    (picker,) = messages(await scene.say(lead, scene.private(lead), "/appoint"))
    (closed,) = _edits(await scene.tap(lead, picker, "取消"))
    assert "取消" in closed.text and not closed.buttons
    assert await _roles(db, LI) == []


async def test_picker_pages_through_many_units_and_goes_back_up(scene: Scene, db: Database) -> None:
    w = await _world(db)
    async with db.transaction() as s:
        for n in range(10, 22):
            await people.create_unit(
                s, community_id=w.community, parent_id=w.b9, kind="entrance", name=f"{n}单元",
                now=NOW,
            )  # fmt: skip
    admin = _user(scene, ADMIN_ID, "Admin")
    (picker,) = messages(await scene.say(admin, scene.private(admin), "/appoint"))
    assert _labels(picker) == ["一网格 ›", "二网格 ›", "✖ 取消"]  # every community's top units
    await scene.tap(admin, picker, "二网格")
    (grid,) = _edits(await scene.tap(admin, picker, "9号楼"))
    assert "二网格 › 9号楼" in grid.text and "1/2" in grid.text
    assert "10单元" in _labels(grid) and "21单元" not in _labels(grid)
    (second,) = _edits(await scene.tap(admin, picker, "下一页"))
    assert "21单元" in _labels(second) and "2/2" in second.text
    (up,) = _edits(await scene.tap(admin, picker, "返回上一级"))
    assert "二网格" in up.text and "9号楼 ›" in _labels(up)


async def test_appoint_in_english_for_an_english_lead(scene: Scene, db: Database) -> None:
    w = await _world(db)
    async with db.transaction() as s:
        await people.grant_role(s, auth=BOSS, unit_id=w.b5, person_id=SAM, kind="admin", now=NOW)
    sam = _user(scene, SAM, "Sam", lang="en")
    (picker,) = messages(await scene.say(sam, scene.private(sam), "/appoint"))
    assert "choose the unit first" in picker.text
    (residents,) = _edits(await scene.tap(sam, picker, "Choose “5号楼”"))
    assert "choose the new lead" in residents.text and "一网格 › 5号楼" in residents.text
    (roles,) = _edits(await scene.tap(sam, picker, "李叔"))
    assert _labels(roles) == ["👤 Lead", "🛡 Admin", "✖ Cancel"]  # an admin may appoint admins
    (done,) = _edits(await scene.tap(sam, picker, "Admin"))
    assert "李叔 is now admin of “5号楼”" in done.text
    assert await _roles(db, LI) == [(w.b5, "admin")]


async def test_reply_in_a_forum_topic_is_not_taken_as_a_target(scene: Scene, db: Database) -> None:
    await _world(db)
    admin, wang = _user(scene, ADMIN_ID, "Admin"), _user(scene, WANG, "王阿姨")
    forum = scene.group(-(10**12) - 5, "幸福里大群", forum=True)
    thread = scene.topic(forum, "3号楼")
    opening = {
        "message_id": thread,
        "date": 0,
        "chat": forum,
        "from": wang,
        "forum_topic_created": {"name": "3号楼", "icon_color": 7322096},
        "message_thread_id": thread,
        "is_topic_message": True,
    }
    scene.private(admin)
    scene.tg.started.add(ADMIN_ID)
    calls = await scene.say(admin, forum, "/appoint", thread=thread, reply_to=opening)
    # No one to appoint by reply: picking someone from a list happens privately.
    (picker,) = messages(calls, chat_id=ADMIN_ID)
    assert "王阿姨" not in picker.text and "先选择单元" in picker.text
    (note,) = messages(calls, chat_id=forum["id"])
    assert "私聊" in note.text


async def test_appoint_in_a_group_picks_the_resident_privately(scene: Scene, db: Database) -> None:
    """Issue 8, item 10: the resident list of /appoint is never shown in a group."""
    w = await _world(db)
    lead = _user(scene, LEAD, "张网格长")
    group = scene.group(GROUP_B3, "3号楼邻里群")
    # The private chat was never opened: the group gets a one-tap link, and no names.
    (offer,) = messages(await scene.say(lead, group, "/appoint"))
    assert "appoint" in str(offer.buttons) and "王阿姨" not in offer.text
    scene.private(lead)
    scene.tg.started.add(LEAD)
    calls = await scene.say(lead, group, "/appoint")
    (picker,) = messages(calls, chat_id=LEAD)
    (note,) = messages(calls, chat_id=GROUP_B3)
    assert "私聊" in note.text and "3号楼" in picker.text
    people_picker = _edits(await scene.tap(lead, picker, "就选「3号楼」"))[0]
    assert "👤 王阿姨（3-2-501）" in _labels(people_picker)  # in the private chat only
    # A forged step of the picker pressed in the group is refused, and lists nobody.
    fid = _data(picker, "取消").split(":")[1]
    for forged in (f"fc:{fid}:{w.b3}", f"fp:{fid}:0", f"fv:{fid}:{WANG}:0:1"):
        calls = await scene.press(lead, offer, forged)
        (alert,) = alerts(calls)
        assert "私聊" in alert and not _edits(calls)


async def test_leads_in_a_group_shows_the_chain_and_the_units_below(
    scene: Scene, db: Database
) -> None:
    w = await _world(db)
    async with db.transaction() as s:
        await people.grant_role(s, auth=BOSS, unit_id=w.b5, person_id=LI, kind="lead", now=NOW)
        await people.grant_role(s, auth=BOSS, unit_id=w.b3, person_id=WANG, kind="admin", now=NOW)
    zhao = _user(scene, ZHAO, "赵姐")
    (shown,) = messages(await scene.say(zhao, scene.group(GROUP_B3, "3号楼邻里群"), "/leads"))
    assert "一网格：张网格长" in shown.text and "3号楼：王阿姨（管理员）" in shown.text
    assert "3-2-501" not in shown.text and "5号楼" not in shown.text
    (shown,) = messages(await scene.say(zhao, scene.group(GROUP_GRID, "一网格群"), "/leads"))
    assert "下属单元" in shown.text
    assert "• 3号楼：王阿姨（管理员）" in shown.text and "• 5号楼：李叔" in shown.text
    assert "二网格" not in shown.text
    (refusal,) = messages(await scene.say(zhao, scene.group(-602, "闲聊群"), "/leads"))
    assert "还没有关联" in refusal.text


async def test_leads_in_private_shows_my_leads_and_for_a_lead_their_units(
    scene: Scene, db: Database
) -> None:
    w = await _world(db)
    async with db.transaction() as s:
        await people.grant_role(s, auth=BOSS, unit_id=w.b5, person_id=LI, kind="lead", now=NOW)
        await people.grant_role(s, auth=BOSS, unit_id=w.b9, person_id=ZHAO, kind="lead", now=NOW)
    wang = _user(scene, WANG, "王阿姨")
    (mine,) = messages(await scene.say(wang, scene.private(wang), "/leads"))
    assert "幸福里 · 3号楼" in mine.text and "一网格：张网格长" in mine.text
    assert "李叔" not in mine.text and "您负责的单元" not in mine.text
    lead = _user(scene, LEAD, "张网格长")
    (theirs,) = messages(await scene.say(lead, scene.private(lead), "/leads"))
    assert "您负责的单元" in theirs.text and "📍 一网格" in theirs.text
    assert "• 一网格 › 5号楼：李叔" in theirs.text and "赵姐" not in theirs.text
    sam = _user(scene, SAM, "Sam", lang="en")
    (english,) = messages(await scene.say(sam, scene.private(sam), "/leads"))
    assert "Your leads" in english.text and "5号楼: 李叔" in english.text
    stranger = _user(scene, 90, "路人")
    (empty,) = messages(await scene.say(stranger, scene.private(stranger), "/leads"))
    assert "/join" in empty.text


async def test_leads_list_is_cut_to_one_message(scene: Scene, db: Database) -> None:
    w = await _world(db)
    async with db.transaction() as s:
        for n in range(120):
            b = await people.create_unit(
                s, community_id=w.community, parent_id=w.grid1, kind="building",
                name=f"{n + 100}号楼-很长很长的楼栋名字", now=NOW,
            )  # fmt: skip
            pid = 1000 + n
            await people.touch_person(
                s, person_id=pid, name=f"楼长{n}" + "长" * 40, username=None,
                language_code="zh-hans", now=NOW,
            )  # fmt: skip
            await people.grant_role(
                s, auth=BOSS, unit_id=b.id or 0, person_id=pid, kind="lead", now=NOW
            )
    zhao, lead = _user(scene, ZHAO, "赵姐"), _user(scene, LEAD, "张网格长")
    (shown,) = messages(await scene.say(zhao, scene.group(GROUP_GRID, "一网格群"), "/leads"))
    assert "…还有" in shown.text and len(shown.text) <= 4096
    (private,) = messages(await scene.say(lead, scene.private(lead), "/leads"))
    assert "…还有" in private.text and len(private.text) <= 4096


async def _lead_role_button(scene: Scene, user: JSON) -> Call:
    (me,) = messages(await scene.say(user, scene.private(user), "/me"))
    return me


async def test_step_down_asks_first_and_a_second_tap_is_harmless(
    scene: Scene, db: Database
) -> None:
    w = await _world(db)
    lead = _user(scene, LEAD, "张网格长")
    me = await _lead_role_button(scene, lead)
    (confirm,) = _edits(await scene.tap(lead, me, "卸任「一网格」负责人"))
    assert "确定要卸任「一网格」的负责人吗" in confirm.text
    assert _labels(confirm) == ["是的，卸任", "不了，继续负责"]
    assert await _roles(db, LEAD) == [(w.grid1, "lead")]  # nothing happens before "yes"
    calls = await scene.tap(lead, me, "是的，卸任")
    (done,) = _edits(calls)
    assert "您已卸任「一网格」的负责人" in done.text and not done.buttons
    assert await _roles(db, LEAD) == []
    data = confirm.buttons[0][0]["callback_data"]
    again = await scene.press(lead, me, data)
    assert alerts(again) == ["这件事已经办好了，不用再点。"] and _edits(again) == []
    (again_sd,) = alerts(await scene.press(lead, me, data.replace("sdy", "sd")))
    assert "已经办好了" in again_sd
    (helped,) = messages(await scene.say(lead, scene.private(lead), "/help"))
    assert "/appoint" not in helped.text


async def test_a_co_lead_is_not_even_offered_to_remove_another(scene: Scene, db: Database) -> None:
    """The /me preview applies the removal's own rule: co-leads of one unit cannot remove each
    other, so the preview is refused too (it used to ask "remove 李叔?" and then refuse)."""
    w = await _world(db)
    async with db.transaction() as s:
        role, _ = await people.grant_role(
            s, auth=BOSS, unit_id=w.b5, person_id=LI, kind="lead", now=NOW
        )
        await people.grant_role(s, auth=BOSS, unit_id=w.b5, person_id=ZHAO, kind="lead", now=NOW)
    zhao = _user(scene, ZHAO, "赵姐")
    me = await _lead_role_button(scene, zhao)
    calls = await scene.press(zhao, me, f"sd:{role.id}")
    (alert,) = alerts(calls)
    assert "您不是「5号楼」的负责人" in alert and not _edits(calls)
    assert await _roles(db, LI) == [(w.b5, "lead")]


async def test_step_down_can_be_called_off(scene: Scene, db: Database) -> None:
    w = await _world(db)
    lead = _user(scene, LEAD, "张网格长")
    me = await _lead_role_button(scene, lead)
    await scene.tap(lead, me, "卸任「一网格」负责人")
    (kept,) = _edits(await scene.tap(lead, me, "不了"))
    assert "什么都没有改变" in kept.text
    assert await _roles(db, LEAD) == [(w.grid1, "lead")]


async def test_someone_elses_role_can_only_be_removed_from_above(
    scene: Scene, db: Database
) -> None:
    w = await _world(db)
    async with db.transaction() as s:
        role, _ = await people.grant_role(
            s, auth=BOSS, unit_id=w.b5, person_id=LI, kind="lead", now=NOW
        )
    wang, lead, li = (
        _user(scene, WANG, "王阿姨"),
        _user(scene, LEAD, "张网格长"),
        _user(scene, LI, "李叔"),
    )
    scene.private(li)
    scene.tg.started.add(LI)
    me = await _lead_role_button(scene, wang)
    (alert,) = alerts(await scene.press(wang, me, f"sd:{role.id}"))
    assert "您不是「5号楼」的负责人" in alert
    (alert,) = alerts(await scene.press(wang, me, f"sdy:{role.id}"))
    assert "您不是「5号楼」的负责人" in alert
    assert await _roles(db, LI) == [(w.b5, "lead")]
    mine = await _lead_role_button(scene, lead)
    (confirm,) = _edits(await scene.press(lead, mine, f"sd:{role.id}"))
    assert "确定要撤下 李叔 在「一网格 › 5号楼」的负责人职务吗" in confirm.text
    calls = await _then(scene, await scene.tap(lead, mine, "是的"))
    assert "李叔 已不再担任" in _edits(calls)[0].text
    (told,) = messages(calls, chat_id=LI)
    assert "由 张网格长 撤下" in told.text
    assert await _roles(db, LI) == []
