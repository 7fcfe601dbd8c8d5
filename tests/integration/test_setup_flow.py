"""Linking groups and topics to units with /setup and /unlink, and the bot joining and leaving."""

from __future__ import annotations

from typing import Any

from sqlmodel import select

from bot.db import Database
from bot.standin import BOT_USER, Call, Scene, alerts, messages, visible
from models import people
from tests.conftest import NOW
from tests.integration.conftest import ADMIN_ID

LEAD = 20
RESIDENT = 30
BOSS = people.Authority(person_id=ADMIN_ID, superadmin=True)


async def _tree(db: Database, *, extra_buildings: int = 0) -> dict[str, int]:
    """幸福里社区: 第一网格 (3号楼, 5号楼) led by LEAD; 第二网格 (7号楼) is not theirs."""
    async with db.transaction() as s:
        c = await people.create_community(
            s, name="幸福里社区", timezone="Asia/Shanghai", language="zh", now=NOW
        )
        assert c.id is not None

        async def unit(parent: int | None, kind: str, name: str) -> int:
            assert c.id is not None
            made = await people.create_unit(
                s, community_id=c.id, parent_id=parent, kind=kind, name=name, now=NOW
            )
            assert made.id is not None
            return made.id

        grid1 = await unit(None, "grid", "第一网格")
        ids = {
            "community": c.id,
            "grid1": grid1,
            "b3": await unit(grid1, "building", "3号楼"),
            "b5": await unit(grid1, "building", "5号楼"),
        }
        ids["grid2"] = await unit(None, "grid", "第二网格")
        ids["b7"] = await unit(ids["grid2"], "building", "7号楼")
        for n in range(extra_buildings):
            await unit(grid1, "building", f"{n + 10}号楼")
        await people.touch_person(
            s, person_id=LEAD, name="刘网格长", username=None, language_code="zh-hans", now=NOW
        )
        await people.grant_role(s, auth=BOSS, unit_id=grid1, person_id=LEAD, kind="lead", now=NOW)
    return ids


async def _unit_of(db: Database, chat_id: int, thread: int | None = None) -> str | None:
    """The name of the unit this chat or topic serves, as the rest of Linli will see it."""
    async with db.transaction(write=False) as s:
        link = await people.link_for(s, chat_id=chat_id, thread_id=thread)
        return (await people.get_unit(s, link.unit_id)).name if link else None


def _labels(scene: Scene, message: Call) -> list[str]:
    stored = scene.message_of(message)
    rows = (stored.get("reply_markup") or {}).get("inline_keyboard", [])
    return [b["text"] for row in rows for b in row]


def _shown(scene: Scene, message: Call) -> str:
    """The text the tapped picker shows now (after any edits)."""
    return visible(str(scene.message_of(message).get("text", "")))


def _edits(calls: list[Call]) -> list[Call]:
    return [c for c in calls if c.method == "editMessageText" and c.ok]


async def _link_via_picker(
    scene: Scene, user: dict[str, Any], chat: dict[str, Any], path: list[str], thread: int = 0
) -> list[Call]:
    """/setup, open each unit of `path` in turn, then tap the link button."""
    (picker,) = messages(await scene.say(user, chat, "/setup", thread=thread or None))
    for name in path:
        await scene.tap(user, picker, f"📂 {name}")
    return await scene.tap(user, picker, "🔗")


async def test_superadmin_fresh_install_creates_community_and_building_and_links(
    scene: Scene, db: Database
) -> None:
    admin = scene.person(ADMIN_ID, "超管", lang="zh-hans")
    group = scene.group(-1001, "3号楼邻里群")
    (asked,) = messages(await scene.say(admin, group, "/setup"))
    assert "社区的名称" in asked.text and "权限齐全" in asked.text
    assert asked.params["reply_markup"]["force_reply"] is True

    (picker,) = messages(await scene.say(admin, group, "幸福里社区", reply_to=asked.result))
    assert "社区「幸福里社区」建好了" in picker.text and "还没有单元" in picker.text
    await scene.tap(admin, picker, "➕ 在这里添加单元")
    assert "要在「幸福里社区」里添加哪种单元" in _shown(scene, picker)
    assert {"网格", "楼栋", "小邻里", "单元", "小区"} <= set(_labels(scene, picker))
    (asked,) = messages(await scene.tap(admin, picker, "楼栋"))
    assert "新楼栋的名称" in asked.text

    (unit,) = messages(await scene.say(admin, group, "3号楼", reply_to=asked.result))
    assert "已添加楼栋「3号楼」" in unit.text
    (linked,) = _edits(await scene.tap(admin, unit, "🔗 把这里关联到「3号楼」"))
    assert "本群现在为「3号楼」（3号楼）服务" in linked.text and "权限齐全" in linked.text

    async with db.transaction(write=False) as s:
        (community,) = await people.communities(s)
        link = await people.link_for(s, chat_id=-1001, thread_id=None)
        chat = await s.get(people.Chat, -1001)
    assert (community.name, community.timezone, community.language) == (
        "幸福里社区",
        "Asia/Shanghai",
        "zh",
    )
    assert link is not None and link.linked_by == ADMIN_ID
    assert chat is not None and chat.bot_status == "administrator"
    assert await _unit_of(db, -1001) == "3号楼"


async def test_only_a_superadmin_may_set_up_a_fresh_install(scene: Scene, db: Database) -> None:
    someone = scene.person(RESIDENT, "王阿姨")
    group = scene.group(-1002, "楼栋群")
    (told,) = messages(await scene.say(someone, group, "/setup"))
    assert "超级管理员" in told.text and not told.buttons
    async with db.transaction(write=False) as s:
        assert await people.communities(s) == []
        assert not await people.has_prompt(s, person_id=RESIDENT, chat_id=-1002)


async def test_lead_of_a_grid_links_a_buildings_group(scene: Scene, db: Database) -> None:
    await _tree(db)
    lead = scene.person(LEAD, "刘网格长")
    group = scene.group(-2002, "3号楼群")
    (picker,) = messages(await scene.say(lead, group, "/setup"))
    assert "本群为哪个单元服务" in picker.text and "权限齐全" in picker.text
    assert _labels(scene, picker) == ["📂 第一网格"]  # not 第二网格: not theirs

    await scene.tap(lead, picker, "📂 第一网格")
    assert "📍 第一网格（网格）" in _shown(scene, picker)
    assert _labels(scene, picker) == [
        "📂 3号楼",
        "📂 5号楼",
        "🔗 把这里关联到「第一网格」",
        "➕ 在这里添加单元",
        "⬆ 返回",
    ]
    await scene.tap(lead, picker, "📂 3号楼")
    (linked,) = _edits(await scene.tap(lead, picker, "🔗 把这里关联到「3号楼」"))
    assert "本群现在为「3号楼」（第一网格 › 3号楼）服务" in linked.text
    assert await _unit_of(db, -2002) == "3号楼"

    (status,) = messages(await scene.say(lead, group, "/setup"))
    assert "本群为「3号楼」（第一网格 › 3号楼）服务" in status.text
    assert _labels(scene, status) == ["🔄 改为其他单元"]


async def test_lead_works_in_english_and_back_goes_up_a_level(scene: Scene, db: Database) -> None:
    await _tree(db)
    lead = scene.person(LEAD, "Liu", lang="en")
    group = scene.group(-2003, "Block 5")
    (picker,) = messages(await scene.say(lead, group, "/setup"))
    assert "Which unit does this group serve?" in picker.text
    await scene.tap(lead, picker, "📂 第一网格")
    await scene.tap(lead, picker, "📂 5号楼")
    assert "📍 第一网格 › 5号楼 (building)" in _shown(scene, picker)
    await scene.tap(lead, picker, "⬆ Back")
    assert "📂 3号楼" in _labels(scene, picker)
    (linked,) = _edits(await scene.tap(lead, picker, "🔗 Link this chat to «第一网格»"))
    assert "This group now serves «第一网格» (第一网格)." in linked.text
    assert await _unit_of(db, -2003) == "第一网格"


async def test_resident_without_a_role_is_refused_and_nothing_is_written(
    scene: Scene, db: Database
) -> None:
    await _tree(db)
    resident = scene.person(RESIDENT, "王阿姨")
    group = scene.group(-2004, "3号楼群")
    (told,) = messages(await scene.say(resident, group, "/setup"))
    assert "只有网格、楼栋等单元的负责人才能设置群" in told.text and not told.buttons
    (told,) = messages(await scene.say(resident, group, "/unlink"))
    assert "负责人" in told.text
    async with db.transaction(write=False) as s:
        assert await people.link_for(s, chat_id=-2004, thread_id=None) is None
        assert await s.get(people.Chat, -2004) is None


async def test_resident_cannot_link_with_a_button_from_a_leads_picker(
    scene: Scene, db: Database
) -> None:
    ids = await _tree(db)
    lead, resident = scene.person(LEAD, "刘网格长"), scene.person(RESIDENT, "王阿姨")
    group = scene.group(-2005, "3号楼群")
    (picker,) = messages(await scene.say(lead, group, "/setup"))
    await scene.tap(lead, picker, "📂 第一网格")
    await scene.tap(lead, picker, "📂 3号楼")
    calls = await scene.tap(resident, picker, "🔗")
    (alert,) = alerts(calls)
    assert "您不是「3号楼」的负责人" in alert and not _edits(calls)
    assert await _unit_of(db, -2005) is None
    calls = await scene.press(resident, picker, f"suv:{ids['grid1']}:0")
    assert "负责人" in alerts(calls)[0] and not _edits(calls)


async def test_forged_callbacks_outside_the_leads_subtree_are_refused(
    scene: Scene, db: Database
) -> None:
    ids = await _tree(db)
    lead = scene.person(LEAD, "刘网格长")
    group = scene.group(-2006, "3号楼群")
    await _link_via_picker(scene, lead, group, ["第一网格", "3号楼"])
    (picker,) = messages(await scene.say(lead, group, "/unlink"))  # any message of the bot will do

    forged = {
        f"sul:{ids['b7']}": "您不是「7号楼」的负责人",
        f"suv:{ids['grid2']}:0": "您不是「第二网格」的负责人",
        f"sun:{ids['grid2']}": "您不是「第二网格」的负责人",
        f"suk:{ids['community']}:{ids['grid2']}:building": "您不是「第二网格」的负责人",
        f"sur:{ids['community']}": "只有「幸福里社区」的管理员",
        f"suk:{ids['community']}:0:grid": "只有「幸福里社区」的管理员",
        f"suc:{ids['community']}:0": "只有「幸福里社区」的管理员",
        f"suy:{ids['b7']}": "您不是「7号楼」的负责人",
        "sul:999999": "找不到这个单元",
        "sul:abc": "按钮已失效",
        "suk:1:0:castle": "按钮已失效",
    }
    for data, refusal in forged.items():
        calls = await scene.press(lead, picker, data)
        (alert,) = alerts(calls)
        assert refusal in alert, data
        assert not _edits(calls) and not messages(calls), data
    assert await _unit_of(db, -2006) == "3号楼"
    async with db.transaction(write=False) as s:
        assert not await people.has_prompt(s, person_id=LEAD, chat_id=-2006)
        kids = await people.children(s, community_id=ids["community"], parent_id=ids["grid2"])
    assert [k.name for k in kids] == ["7号楼"]


async def test_double_tap_on_link_links_once_and_says_already_linked(
    scene: Scene, db: Database
) -> None:
    ids = await _tree(db)
    lead = scene.person(LEAD, "刘网格长")
    group = scene.group(-2007, "3号楼群")
    (picker,) = messages(await scene.say(lead, group, "/setup"))
    first = await scene.press(lead, picker, f"sul:{ids['b3']}")
    second = await scene.press(lead, picker, f"sul:{ids['b3']}")
    assert "本群现在为「3号楼」" in _edits(first)[0].text and alerts(first) == [""]
    (note,) = alerts(second)
    assert "已经关联到「3号楼」了" in note
    async with db.transaction(write=False) as s:
        links = await people.links_of_chat(s, chat_id=-2007)
    assert [unit.name for _, unit in links] == ["3号楼"]


async def test_relinking_moves_the_group_and_says_from_where(scene: Scene, db: Database) -> None:
    await _tree(db)
    lead = scene.person(LEAD, "刘网格长")
    group = scene.group(-2008, "楼栋群")
    await _link_via_picker(scene, lead, group, ["第一网格", "3号楼"])
    (status,) = messages(await scene.say(lead, group, "/setup"))
    await scene.tap(lead, status, "🔄 改为其他单元")
    await scene.tap(lead, status, "📂 第一网格")
    await scene.tap(lead, status, "📂 5号楼")
    (moved,) = _edits(await scene.tap(lead, status, "🔗"))
    assert "本群现在为「5号楼」" in moved.text and "原来关联的是「3号楼」" in moved.text
    assert await _unit_of(db, -2008) == "5号楼"


async def test_missing_pin_right_is_reported(scene: Scene, db: Database) -> None:
    await _tree(db)
    lead = scene.person(LEAD, "刘网格长")
    no_pin = scene.group(-2009, "3号楼群", can_pin=False)
    (picker,) = messages(await scene.say(lead, no_pin, "/setup"))
    assert "请在管理员权限里给我勾选「置顶消息」" in picker.text and "权限齐全" not in picker.text
    (linked,) = _edits(await scene.press(lead, picker, "sul:" + str(await _grid1(db))))
    assert "「置顶消息」" in linked.text

    english = scene.person(LEAD, "Liu", lang="en")
    plain_member = scene.group(-2010, "Block 3", bot_status="member")
    (picker,) = messages(await scene.say(english, plain_member, "/setup"))
    assert "Make me an admin with 'Pin messages' so announcements can be pinned." in picker.text
    async with db.transaction(write=False) as s:
        chat = await s.get(people.Chat, -2010)
    assert chat is not None and chat.bot_status == "member"

    forum = scene.group(-1000000002011, "幸福里", forum=True, can_pin=False)
    (picker,) = messages(await scene.say(english, forum, "/setup"))
    assert "'Pin messages' admin right" in picker.text
    assert "'Manage topics' admin right" in picker.text


async def _grid1(db: Database) -> int:
    async with db.transaction(write=False) as s:
        unit = (await s.exec(select(people.Unit).where(people.Unit.name == "第一网格"))).one()
    assert unit.id is not None
    return unit.id


async def _bot_becomes(
    scene: Scene, chat: dict[str, Any], by: dict[str, Any], status: str
) -> list[Call]:
    """A my_chat_member update with complete member objects.

    Scene.bot_removed/bot_added send the old member as bare {"status", "user"}, which PTB
    cannot parse for an administrator or a kicked bot (required fields missing).
    """
    chat_id = int(chat["id"])

    def complete(member: dict[str, Any]) -> dict[str, Any]:
        return {**member, "until_date": 0} if member["status"] == "kicked" else member

    old = scene.tg.members.get((chat_id, BOT_USER["id"]), {"status": "left", "user": BOT_USER})
    new = scene.tg.set_bot_member(chat_id, status)
    change = {
        "chat": chat,
        "from": by,
        "date": int(scene.tg.clock()),
        "old_chat_member": complete(old),
        "new_chat_member": complete(new),
    }
    return await scene.feed({"my_chat_member": change})


async def test_bot_removed_and_added_back_keeps_the_link_and_says_welcome_back(
    scene: Scene, db: Database
) -> None:
    await _tree(db)
    lead = scene.person(LEAD, "刘网格长")
    group = scene.group(-2012, "3号楼群")
    await _link_via_picker(scene, lead, group, ["第一网格", "3号楼"])

    assert messages(await _bot_becomes(scene, group, lead, "kicked")) == []
    async with db.transaction(write=False) as s:
        chat = await s.get(people.Chat, -2012)
    assert chat is not None and chat.bot_status == "kicked"
    assert await _unit_of(db, -2012) == "3号楼"

    (back,) = messages(await _bot_becomes(scene, group, lead, "administrator"), chat_id=-2012)
    assert "我回来啦" in back.text and "我仍在为「3号楼」服务" in back.text
    async with db.transaction(write=False) as s:
        chat = await s.get(people.Chat, -2012)
    assert chat is not None and chat.bot_status == "administrator"
    (status,) = messages(await scene.say(lead, group, "/setup"))
    assert "本群为「3号楼」（第一网格 › 3号楼）服务" in status.text


async def test_bot_added_to_a_new_group_greets_in_the_adders_language(
    scene: Scene, db: Database
) -> None:
    sam = scene.person(40, "Sam", lang="en")
    group = scene.group(-2013, "Block 9", bot_status="left")
    (hello,) = messages(await scene.bot_added(group, sam, status="member"))
    assert hello.chat_id == -2013 and "Hello everyone, I'm Linli" in hello.text
    assert "/setup" in hello.text and "Make me an admin with 'Pin messages'" in hello.text

    # Promoted afterwards: recorded, and no second greeting.
    assert messages(await scene.bot_added(group, sam, status="administrator")) == []
    async with db.transaction(write=False) as s:
        chat = await s.get(people.Chat, -2013)
    assert chat is not None and chat.bot_status == "administrator" and chat.title == "Block 9"

    wang = scene.person(41, "王阿姨")
    other = scene.group(-2014, "5号楼群", bot_status="left")
    (hello,) = messages(await scene.bot_added(other, wang))
    assert "大家好，我是邻里" in hello.text and "权限齐全" in hello.text


async def test_migrated_group_keeps_its_link_and_repeats_are_harmless(
    scene: Scene, db: Database
) -> None:
    await _tree(db)
    lead = scene.person(LEAD, "刘网格长")
    group = scene.group(-2015, "3号楼群")
    await _link_via_picker(scene, lead, group, ["第一网格", "3号楼"])

    new_id = -1000000002015
    supergroup, calls = await scene.migrate(group, new_id, lead)
    assert messages(calls) == [] and alerts(calls) == []
    # Telegram may deliver both service messages again.
    await scene.feed({"message": scene.message_json(lead, group, "", migrate_to_chat_id=new_id)})
    await scene.feed(
        {"message": scene.message_json(lead, supergroup, "", migrate_from_chat_id=-2015)}
    )

    assert await _unit_of(db, -2015) is None
    assert await _unit_of(db, new_id) == "3号楼"
    async with db.transaction(write=False) as s:
        assert len(await people.links_of_chat(s, chat_id=new_id)) == 1
        old = await s.get(people.Chat, -2015)
    assert old is not None and old.migrated_to == new_id
    (status,) = messages(await scene.say(lead, supergroup, "/setup"))
    assert "本群为「3号楼」（第一网格 › 3号楼）服务" in status.text


async def test_forum_topics_and_the_general_chat_each_serve_their_own_unit(
    scene: Scene, db: Database
) -> None:
    await _tree(db)
    lead = scene.person(LEAD, "刘网格长")
    forum = scene.group(-1000000002016, "幸福里一网格", forum=True)
    t3, t5, t_chat = (
        scene.topic(forum, "3号楼"),
        scene.topic(forum, "5号楼"),
        scene.topic(forum, "闲聊"),
    )

    calls = await _link_via_picker(scene, lead, forum, ["第一网格", "3号楼"], thread=t3)
    assert "本话题现在为「3号楼」" in _edits(calls)[0].text
    await _link_via_picker(scene, lead, forum, ["第一网格", "5号楼"], thread=t5)
    calls = await _link_via_picker(scene, lead, forum, ["第一网格"])
    assert "本群现在为「第一网格」" in _edits(calls)[0].text

    for thread, expected in (
        (t3, "本话题为「3号楼」（第一网格 › 3号楼）服务"),
        (t5, "本话题为「5号楼」（第一网格 › 5号楼）服务"),
        (None, "本群为「第一网格」（第一网格）服务"),
        (t_chat, "本话题没有单独关联，跟着本群为「第一网格」（第一网格）服务"),
    ):
        (status,) = messages(await scene.say(lead, forum, "/setup", thread=thread))
        assert expected in status.text, thread
        assert status.params.get("message_thread_id") == thread
        assert "管理话题" in status.text  # a forum: topics right is part of the check

    async with db.transaction(write=False) as s:
        links = await people.links_of_chat(s, chat_id=forum["id"])
    assert [(link.thread_id, unit.name) for link, unit in links] == [
        (0, "第一网格"),
        (t3, "3号楼"),
        (t5, "5号楼"),
    ]


async def test_topic_status_in_english(scene: Scene, db: Database) -> None:
    await _tree(db)
    lead = scene.person(LEAD, "Liu", lang="en")
    forum = scene.group(-1000000002017, "Grid 1", forum=True)
    topic = scene.topic(forum, "Block 3")
    await _link_via_picker(scene, lead, forum, ["第一网格", "3号楼"], thread=topic)
    (status,) = messages(await scene.say(lead, forum, "/setup", thread=topic))
    assert "This topic serves «3号楼» (第一网格 › 3号楼)." in status.text
    assert "I can pin announcements and manage topics" in status.text


async def test_unlink_asks_first_and_a_second_tap_is_harmless(scene: Scene, db: Database) -> None:
    ids = await _tree(db)
    lead = scene.person(LEAD, "刘网格长")
    group = scene.group(-2018, "3号楼群")
    await _link_via_picker(scene, lead, group, ["第一网格", "3号楼"])

    (confirm,) = messages(await scene.say(lead, group, "/unlink"))
    assert "确定要解除本群与「3号楼」（第一网格 › 3号楼）的关联吗" in confirm.text
    await scene.tap(lead, confirm, "✖ 不解除")
    assert "继续为「3号楼」服务" in _shown(scene, confirm)
    assert await _unit_of(db, -2018) == "3号楼"

    (confirm,) = messages(await scene.say(lead, group, "/unlink"))
    (done,) = _edits(await scene.tap(lead, confirm, "✔ 确定解除"))
    assert "已解除本群与「3号楼」的关联" in done.text
    assert await _unit_of(db, -2018) is None
    (note,) = alerts(await scene.press(lead, confirm, f"suy:{ids['b3']}"))
    assert "已经解除过了" in note

    (told,) = messages(await scene.say(lead, group, "/unlink"))
    assert "还没有关联任何单元" in told.text


async def test_unlink_confirmation_goes_stale_when_the_link_moved(
    scene: Scene, db: Database
) -> None:
    ids = await _tree(db)
    lead = scene.person(LEAD, "刘网格长")
    group = scene.group(-2019, "楼栋群")
    await _link_via_picker(scene, lead, group, ["第一网格", "3号楼"])
    (confirm,) = messages(await scene.say(lead, group, "/unlink"))
    (picker,) = messages(await scene.say(lead, group, "/setup"))
    await scene.press(lead, picker, f"sul:{ids['b5']}")
    (alert,) = alerts(await scene.tap(lead, confirm, "✔ 确定解除"))
    assert "关联已经变过了" in alert
    assert await _unit_of(db, -2019) == "5号楼"


async def test_setup_in_private_explains_it_belongs_in_a_group(scene: Scene) -> None:
    lead = scene.person(LEAD, "刘网格长")
    (told,) = messages(await scene.say(lead, scene.private(lead), "/setup"))
    assert "/setup 要在群里用" in told.text
    sam = scene.person(40, "Sam", lang="en")
    (told,) = messages(await scene.say(sam, scene.private(sam), "/unlink"))
    assert "works inside a group" in told.text


async def test_lead_adds_a_building_under_their_grid_and_links_it(
    scene: Scene, db: Database
) -> None:
    ids = await _tree(db)
    lead = scene.person(LEAD, "刘网格长")
    group = scene.group(-2020, "9号楼群")
    (picker,) = messages(await scene.say(lead, group, "/setup"))
    assert "➕" not in " ".join(_labels(scene, picker))  # a lead adds no top-level units
    await scene.tap(lead, picker, "📂 第一网格")
    await scene.tap(lead, picker, "➕ 在这里添加单元")
    assert "要在「第一网格」下面添加哪种单元" in _shown(scene, picker)
    (asked,) = messages(await scene.tap(lead, picker, "楼栋"))

    (empty,) = messages(await scene.say(lead, group, "   ", reply_to=asked.result))
    assert "名称不能为空" in empty.text  # and the question is still open:
    (unit,) = messages(await scene.say(lead, group, "9号楼", reply_to=asked.result))
    assert "已添加楼栋「9号楼」" in unit.text and "📍 第一网格 › 9号楼" in unit.text
    await scene.tap(lead, unit, "🔗")
    assert await _unit_of(db, -2020) == "9号楼"
    async with db.transaction(write=False) as s:
        kids = await people.children(s, community_id=ids["community"], parent_id=ids["grid1"])
    assert [k.name for k in kids] == ["3号楼", "5号楼", "9号楼"]


async def test_admin_may_add_a_top_level_unit(scene: Scene, db: Database) -> None:
    ids = await _tree(db)
    async with db.transaction() as s:
        await people.touch_person(
            s, person_id=50, name="社区书记", username=None, language_code="zh-hans", now=NOW
        )
        await people.grant_role(
            s, auth=BOSS, unit_id=ids["grid1"], person_id=50, kind="admin", now=NOW
        )
    admin = scene.person(50, "社区书记")
    group = scene.group(-2021, "三网格群")
    (picker,) = messages(await scene.say(admin, group, "/setup"))
    await scene.tap(admin, picker, "➕ 在「幸福里社区」添加单元")
    (asked,) = messages(await scene.tap(admin, picker, "网格"))
    (added,) = messages(await scene.say(admin, group, "第三网格", reply_to=asked.result))
    # A new top-level unit is outside the admin's own unit: a super-admin takes it from here.
    assert "已添加「第三网格」" in added.text and "超级管理员" in added.text
    assert "📂 第三网格" not in _labels(scene, added)
    async with db.transaction(write=False) as s:
        roots = await people.children(s, community_id=ids["community"], parent_id=None)
    assert {r.name for r in roots} == {"第一网格", "第二网格", "第三网格"}

    boss = scene.person(ADMIN_ID, "超管")
    await _link_via_picker(scene, boss, group, ["第三网格"])
    assert await _unit_of(db, -2021) == "第三网格"


async def test_picker_pages_through_many_units(scene: Scene, db: Database) -> None:
    await _tree(db, extra_buildings=10)
    lead = scene.person(LEAD, "刘网格长")
    group = scene.group(-2022, "楼栋群")
    (picker,) = messages(await scene.say(lead, group, "/setup"))
    await scene.tap(lead, picker, "📂 第一网格")
    first = [t for t in _labels(scene, picker) if t.startswith("📂")]
    assert len(first) == 8 and "下一页 ▶" in _labels(scene, picker)
    assert "第 1/2 页" in _shown(scene, picker)
    await scene.tap(lead, picker, "下一页 ▶")
    second = [t for t in _labels(scene, picker) if t.startswith("📂")]
    assert len(second) == 4 and not set(first) & set(second)
    assert "◀ 上一页" in _labels(scene, picker) and "下一页 ▶" not in _labels(scene, picker)
    await scene.tap(lead, picker, "◀ 上一页")
    assert [t for t in _labels(scene, picker) if t.startswith("📂")] == first


async def test_superadmin_with_several_communities_picks_the_community_first(
    scene: Scene, db: Database
) -> None:
    await _tree(db)
    async with db.transaction() as s:
        other = await people.create_community(
            s, name="阳光花园", timezone="Asia/Shanghai", language="zh", now=NOW
        )
        await people.create_unit(
            s, community_id=other.id or 0, parent_id=None, kind="building", name="A座", now=NOW
        )
    admin = scene.person(ADMIN_ID, "超管")
    group = scene.group(-2023, "A座群")
    (picker,) = messages(await scene.say(admin, group, "/setup"))
    assert "本群属于哪个社区" in picker.text
    assert _labels(scene, picker) == ["🏘 幸福里社区", "🏘 阳光花园"]
    await scene.tap(admin, picker, "🏘 阳光花园")
    assert _labels(scene, picker) == ["📂 A座", "➕ 在这里添加单元", "⬆ 返回"]
    await scene.tap(admin, picker, "📂 A座")
    await scene.tap(admin, picker, "🔗")
    assert await _unit_of(db, -2023) == "A座"
