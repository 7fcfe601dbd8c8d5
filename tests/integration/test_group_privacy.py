"""The group-privacy check every integration test runs after itself (see conftest.privacy)."""

from __future__ import annotations

from bot.context import LinliApp
from bot.db import Database
from bot.standin import FakeTelegram, Scene
from tests.integration.conftest import GroupPrivacy, group_leaks
from tests.integration.test_points_flow import _world
from tests.world import GROUP_B3

PRIVATE_OF_WANG = 31


async def test_a_name_or_flat_in_a_group_is_caught_and_a_private_one_is_not(
    db: Database, app: LinliApp, scene: Scene, telegram: FakeTelegram, privacy: GroupPrivacy
) -> None:
    await _world(db)
    scene.group(GROUP_B3, "3号楼邻里群")
    scene.private(scene.person(PRIVATE_OF_WANG, "王阿姨"))
    telegram.started.add(PRIVATE_OF_WANG)
    await app.bot.send_message(PRIVATE_OF_WANG, "王阿姨，您住 3-2-501")  # privately: fine
    await app.bot.send_message(GROUP_B3, "今天 1101 室和 13-2-5010 的快递到了")  # no one's flat
    assert await group_leaks(db, [telegram], GroupPrivacy(set())) == []
    sent = await app.bot.send_message(GROUP_B3, "王阿姨")
    await app.bot.edit_message_text("住在 3-2-501 的邻居", GROUP_B3, sent.message_id)
    leaks = await group_leaks(db, [telegram], GroupPrivacy(set()))
    assert len(leaks) == 2 and "'王阿姨'" in leaks[0] and "'3-2-501'" in leaks[1]
    assert await group_leaks(db, [telegram], GroupPrivacy({"王阿姨", "3-2-501"})) == []
    privacy.allow("王阿姨", "3-2-501")  # this test leaked on purpose
