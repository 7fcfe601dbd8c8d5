"""Updates of different chats run at once; each chat's and each person's keep their order."""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from typing import Any

from telegram import Update
from telegram.ext import TypeHandler

from bot import ordering
from bot.app import build_application
from bot.config import load_settings
from bot.context import LinliContext
from bot.db import Database
from bot.ordering import OrderedUpdateProcessor, order_keys
from bot.standin import FakeTelegram, Scene

CHATS = 50
PEOPLE = 40
UPDATES = 200


async def test_many_chats_at_once_keep_each_chats_and_each_persons_order(db: Database) -> None:
    rng = random.Random(9)
    telegram = FakeTelegram(latency=lambda: rng.uniform(0, 0.02))
    settings = load_settings(bot_token="", _env_file=None)
    app = build_application(settings, request=telegram, db=db)
    scene = Scene(app, telegram)
    groups = [scene.group(-500_000 - c, f"楼{c}") for c in range(CHATS)]
    people = [
        scene.person(70_000 + p, f"居民{p}", lang=rng.choice(["zh-hans", "en"]))
        for p in range(PEOPLE)
    ]
    # Each person speaks in several groups: their updates must not overlap across chats either.
    sent: dict[int, list[int]] = defaultdict(list)  # chat -> message ids in arrival order
    updates: list[Update] = []
    for i in range(UPDATES):
        chat = groups[i % CHATS]
        message = scene.message_json(rng.choice(people), chat, rng.choice(["/help", "/lang"]))
        sent[int(chat["id"])].append(int(message["message_id"]))
        updates.append(Update.de_json({"update_id": i + 1, "message": message}, app.bot))

    # person -> (update being handled, its turn): the next update of that person may start
    # once it has handed over (done with the database, only speaking left) or ended.
    running: dict[int, tuple[int, Any]] = {}
    overlaps: list[tuple[int, int, int]] = []
    most_at_once = 0

    async def started(update: Update, _ctx: LinliContext) -> None:
        nonlocal most_at_once
        assert update.effective_user is not None
        uid = update.effective_user.id
        if uid in running and not running[uid][1].handled.done():
            overlaps.append((uid, running[uid][0], update.update_id))
        running[uid] = (update.update_id, ordering._current())
        most_at_once = max(most_at_once, len(running))

    async def finished(update: Update, _ctx: LinliContext) -> None:
        assert update.effective_user is not None
        if running.get(update.effective_user.id, (0,))[0] == update.update_id:
            del running[update.effective_user.id]

    app.add_handler(TypeHandler(Update, started), group=-100)
    app.add_handler(TypeHandler(Update, finished), group=100)
    async with app:
        # The real path of polling and webhooks: the update queue, PTB's fetcher, our processor.
        await app.start()
        for update in updates:
            await app.update_queue.put(update)
        await asyncio.wait_for(app.update_queue.join(), timeout=60)
        await app.stop()

    replied: dict[int, list[int]] = defaultdict(list)
    for call in telegram.calls:
        if call.method == "sendMessage":
            quoted = call.params["reply_parameters"]
            replied[int(call.params["chat_id"])].append(int(quoted["message_id"]))
    assert replied == sent  # every update answered, each chat's in the order it arrived
    assert overlaps == []
    assert most_at_once > 5  # and they really did run at once
    processor = app.update_processor
    assert isinstance(processor, OrderedUpdateProcessor)
    assert processor.keys_waited_on == 0


async def test_an_update_waits_only_for_earlier_ones_sharing_its_chat_or_person() -> None:
    processor = OrderedUpdateProcessor(max_running=4)
    log: list[str] = []
    gates = {name: asyncio.Event() for name in "abcd"}

    async def work(name: str) -> None:
        log.append(f"{name}+")
        await gates[name].wait()
        log.append(f"{name}-")

    def update(chat: int, user: int) -> Update:
        raw: dict[str, Any] = {
            "update_id": 1,
            "message": {
                "message_id": 1,
                "date": 0,
                "chat": {"id": chat, "type": "group" if chat < 0 else "private"},
                "from": {"id": user, "is_bot": False, "first_name": "x"},
                "text": "hi",
            },
        }
        return Update.de_json(raw, None)

    a, b, c, d = update(-1, 10), update(-2, 10), update(-2, 20), update(-3, 30)
    assert order_keys(a) == {-1, 10}
    tasks = [
        asyncio.create_task(processor.process_update(u, work(name)))
        for name, u in zip("abcd", [a, b, c, d], strict=True)
    ]
    await asyncio.sleep(0.01)
    # b shares a's person, c shares b's chat: only a and d (unrelated) run.
    assert sorted(log) == ["a+", "d+"]
    gates["a"].set()
    await asyncio.sleep(0.01)
    assert log[2:] == ["a-", "b+"]  # c still waits for b, its chat's earlier update
    gates["b"].set()
    await asyncio.sleep(0.01)
    assert log[4:] == ["b-", "c+"]
    assert "d-" not in log
    gates["c"].set()
    gates["d"].set()
    await asyncio.gather(*tasks)
    assert processor.keys_waited_on == 0


async def test_an_update_cancelled_while_waiting_does_not_let_the_next_one_jump_ahead() -> None:
    processor = OrderedUpdateProcessor(max_running=4)
    log: list[str] = []
    first_gate = asyncio.Event()

    async def work(name: str, gate: asyncio.Event | None = None) -> None:
        log.append(f"{name}+")
        if gate is not None:
            await gate.wait()
        log.append(f"{name}-")

    raw: dict[str, Any] = {
        "update_id": 1,
        "message": {
            "message_id": 1,
            "date": 0,
            "chat": {"id": 5, "type": "private"},
            "from": {"id": 5, "is_bot": False, "first_name": "x"},
            "text": "hi",
        },
    }
    u = Update.de_json(raw, None)
    first = asyncio.create_task(processor.process_update(u, work("1", first_gate)))
    second = asyncio.create_task(processor.process_update(u, work("2")))
    third = asyncio.create_task(processor.process_update(u, work("3")))
    await asyncio.sleep(0.01)
    second.cancel()
    await asyncio.sleep(0.01)
    assert log == ["1+"]  # the third still waits for the first
    first_gate.set()
    await asyncio.gather(first, third, return_exceptions=True)
    assert log == ["1+", "1-", "3+", "3-"]
    assert second.cancelled()
    await asyncio.sleep(0.01)  # the cancelled one's place is given up once the first is done
    assert processor.keys_waited_on == 0
