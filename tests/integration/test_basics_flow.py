"""First contact: /start, /help, /lang, /me as residents see them, in both languages."""

from __future__ import annotations

from bot.app import on_startup
from bot.context import LinliApp
from bot.standin import FakeTelegram, Scene, alerts, messages


async def test_start_in_private_greets_in_the_persons_language(scene: Scene) -> None:
    zh = scene.person(10, "王阿姨", lang="zh-hans")
    en = scene.person(11, "Sam", lang="en")
    (greeting,) = messages(await scene.say(zh, scene.private(zh), "/start"))
    assert "您好，我是邻里" in greeting.text
    assert greeting.buttons[0][0]["text"] == "🏠 加入我的住户"
    (greeting,) = messages(await scene.say(en, scene.private(en), "/start"))
    assert "Hello, I'm Linli" in greeting.text


async def test_lang_choice_overrides_telegram_language(scene: Scene) -> None:
    user = scene.person(12, "Li", lang="zh-hans")
    chat = scene.private(user)
    (picker,) = messages(await scene.say(user, chat, "/lang"))
    calls = await scene.tap(user, picker, "English")
    assert any(c.method == "editMessageText" and "English" in c.text for c in calls)
    (helped,) = messages(await scene.say(user, chat, "/help"))
    assert "What you can do here" in helped.text


async def test_help_for_a_resident_lists_no_lead_commands(scene: Scene) -> None:
    user = scene.person(13, "Zhang")
    (helped,) = messages(await scene.say(user, scene.private(user), "/help"))
    assert "/join" in helped.text and "/pending" not in helped.text


async def test_me_in_a_group_goes_private_and_shows_no_flat_in_the_group(scene: Scene) -> None:
    user = scene.person(14, "Chen")
    group = scene.group(-500, "3号楼邻里群")
    calls = await scene.say(user, group, "/me")
    (told,) = messages(calls)
    assert told.chat_id == -500 and "私聊" in told.text and told.buttons  # never started the bot
    scene.private(user)
    scene.tg.started.add(14)
    calls = await scene.say(user, group, "/me")
    assert [c.chat_id for c in messages(calls)] == [14, -500]


async def test_a_repeated_update_is_handled_once(scene: Scene) -> None:
    user = scene.person(15, "Liu")
    message = scene.message_json(user, scene.private(user), "/help")
    first = await scene.feed({"update_id": 999, "message": message})
    again = await scene.feed({"update_id": 999, "message": message})
    assert len(messages(first)) == 1 and again == []


async def test_forged_callback_is_refused_politely(scene: Scene) -> None:
    user = scene.person(16, "Zhou")
    (picker,) = messages(await scene.say(user, scene.private(user), "/lang"))
    calls = await scene.press(user, picker, "lang:xx")
    (alert,) = alerts(calls)
    assert "失效" in alert


async def test_command_menu_is_published_per_language(
    app: LinliApp, telegram: FakeTelegram
) -> None:
    await on_startup(app)
    zh = [c["command"] for c in telegram.commands[("all_private_chats", "zh")]]
    en = telegram.commands[("all_group_chats", "en")]
    assert "join" in zh and "pending" not in zh
    assert any(c["command"] == "me" and "household" in c["description"] for c in en)


async def test_refusals_speak_the_readers_language(scene: Scene) -> None:
    user = scene.person(17, "Sam", lang="en")
    (picker,) = messages(await scene.say(user, scene.private(user), "/lang"))
    (alert,) = alerts(await scene.press(user, picker, "lang:zz"))
    assert "no longer valid" in alert
