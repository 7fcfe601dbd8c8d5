"""Updates of different chats run at once; each chat's and each person's keep their order."""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any

from telegram import Update
from telegram.ext import TypeHandler
from telegram.request import BaseRequest, RequestData
from telegram.request._requestparameter import RequestParameter

from bot import ordering
from bot.app import build_application
from bot.config import load_settings
from bot.context import LinliContext
from bot.db import Database
from bot.ordering import OrderedUpdateProcessor, SpeakingInTurn, order_keys
from bot.standin import BOT_USER, FakeTelegram, Scene

CHATS = 50
PEOPLE = 40
UPDATES = 200
TAPS = ["lang:en", "lang:zh"]

_answering: ContextVar[int] = ContextVar("answering", default=0)  # the update being handled


class _Answering(FakeTelegram):
    """The stand-in noting, for each message it showed, the update that showed it."""

    def __init__(self, latency: Callable[[], float]) -> None:
        super().__init__(latency=latency)
        self.shown: list[tuple[int, int]] = []  # (chat, update id) in delivery order

    async def do_request(
        self, url: str, method: str, request_data: RequestData | None = None, *_: Any, **__: Any
    ) -> tuple[int, bytes]:
        result = await super().do_request(url, method, request_data)
        if request_data is not None and url.endswith(("/sendMessage", "/editMessageText")):
            self.shown.append((int(str(request_data.parameters["chat_id"])), _answering.get()))
        return result


async def test_many_chats_at_once_keep_each_chats_and_each_persons_order(db: Database) -> None:
    rng = random.Random(9)
    telegram = _Answering(latency=lambda: rng.uniform(0, 0.02))
    settings = load_settings(bot_token="", _env_file=None)
    app = build_application(settings, request=telegram, db=db)
    scene = Scene(app, telegram)
    groups = [scene.group(-500_000 - c, f"楼{c}") for c in range(CHATS)]
    people = [
        scene.person(70_000 + p, f"居民{p}", lang=rng.choice(["zh-hans", "en"]))
        for p in range(PEOPLE)
    ]
    # Each person speaks in several groups: their updates must not overlap across chats either.
    sent: dict[int, list[int]] = defaultdict(list)  # chat -> update ids in arrival order
    updates: list[Update] = []
    for i in range(UPDATES):
        person = rng.choice(people)
        if i % 4 == 3:  # a tap on a language button in the person's private chat: an edit
            chat = scene.private(person)
            shown = {
                "message_id": telegram.next_message_id(int(chat["id"])),
                "date": 0,
                "chat": chat,
                "from": BOT_USER,
                "text": "language?",
            }
            telegram.store_message(shown)
            query = {"id": str(i), "from": person, "chat_instance": "1", "message": shown}
            raw: dict[str, Any] = {"callback_query": {**query, "data": rng.choice(TAPS)}}
            sent[int(chat["id"])].append(i + 1)
        else:
            chat = groups[i % CHATS] if i % 2 == 0 else scene.private(person)
            message = scene.message_json(person, chat, rng.choice(["/help", "/lang"]))
            raw = {"message": message}
            sent[int(chat["id"])].append(i + 1)
        updates.append(Update.de_json({"update_id": i + 1, **raw}, app.bot))

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
        _answering.set(update.update_id)
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

    # What each chat was shown (sent or edited), in the order Telegram delivered it.
    replied: dict[int, list[int]] = defaultdict(list)
    for chat_id, update_id in telegram.shown:
        replied[chat_id].append(update_id)
    assert replied == sent  # every update answered, each chat's in the order it arrived
    assert overlaps == []
    assert most_at_once > 5  # and they really did run at once
    processor = app.update_processor
    assert isinstance(processor, OrderedUpdateProcessor)
    assert processor.keys_waited_on == 0


def _update(chat: int, user: int) -> Update:
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


async def test_a_tap_right_after_a_message_changes_its_screen_after_the_reply(
    db: Database,
) -> None:
    telegram = FakeTelegram()
    app = build_application(load_settings(bot_token="", _env_file=None), request=telegram, db=db)
    scene = Scene(app, telegram)
    person = scene.person(70_001, "居民", lang="en")
    chat = scene.private(person)
    async with app:
        (picker,) = [c for c in await scene.say(person, chat, "/lang") if c.method == "sendMessage"]
        slow_first = iter([0.05])
        telegram.latency = lambda: next(slow_first, 0.0)  # the reply is slow, the edit is not
        before = len(telegram.calls)
        await asyncio.gather(
            scene.say(person, chat, "/help"), scene.press(person, picker, "lang:zh")
        )
    shown = [c.method for c in telegram.calls[before:] if c.method != "answerCallbackQuery"]
    assert shown == ["sendMessage", "editMessageText"]  # the tap came second: so does its edit


async def test_an_update_waits_only_for_earlier_ones_sharing_its_chat_or_person() -> None:
    processor = OrderedUpdateProcessor(max_running=4)
    log: list[str] = []
    gates = {name: asyncio.Event() for name in "abcd"}

    async def work(name: str) -> None:
        log.append(f"{name}+")
        await gates[name].wait()
        log.append(f"{name}-")

    a, b, c, d = _update(-1, 10), _update(-2, 10), _update(-2, 20), _update(-3, 30)
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

    u = _update(5, 5)
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


class _GatedTelegram(BaseRequest):
    """Answers each call when its chat's gate opens; logs when calls begin and end. `request`
    is it as the bot uses it, each call waiting for its turn in its chat."""

    def __init__(self) -> None:
        self.log: list[str] = []
        self.gates: dict[int, asyncio.Event] = defaultdict(asyncio.Event)
        self.request = SpeakingInTurn(self)

    @property
    def read_timeout(self) -> float | None:
        return None

    async def initialize(self) -> None:
        return None

    async def shutdown(self) -> None:
        return None

    async def do_request(
        self, url: str, method: str, request_data: Any = None, *_: Any, **__: Any
    ) -> tuple[int, bytes]:
        chat = request_data.parameters["chat_id"]
        text = request_data.parameters["text"]
        self.log.append(f"{text} calls")
        await self.gates[chat].wait()
        self.log.append(f"{text} answered")
        return 200, b'{"ok": true, "result": true}'


async def _call(request: BaseRequest, chat: int, text: str) -> None:
    data = RequestData([RequestParameter("chat_id", chat, []), RequestParameter("text", text, [])])
    await request.do_request("https://x/sendMessage", "POST", data)


def _two_in_one_group(
    first: Awaitable[None], second: Awaitable[None]
) -> tuple[OrderedUpdateProcessor, list[asyncio.Task[None]]]:
    """Two people's updates in group -1, the first arriving first."""
    processor = OrderedUpdateProcessor(max_running=4)
    tasks = [
        asyncio.create_task(processor.process_update(_update(-1, 10), first)),
        asyncio.create_task(processor.process_update(_update(-1, 20), second)),
    ]
    return processor, tasks


async def test_after_the_hand_over_the_next_update_works_while_the_reply_keeps_its_place() -> None:
    telegram = _GatedTelegram()
    log, request = telegram.log, telegram.request

    async def first() -> None:
        log.append("a works")
        ordering.hand_over()
        await _call(request, -1, "a to group")

    async def second() -> None:
        log.append("b works")  # before a's reply is answered: a handed over
        ordering.hand_over()
        await _call(request, 7, "b to its person")  # another chat: need not wait
        await _call(request, -1, "b to group")  # the shared chat: only after a's reply

    processor, tasks = _two_in_one_group(first(), second())
    await asyncio.sleep(0.01)
    assert log == ["a works", "a to group calls", "b works", "b to its person calls"]
    telegram.gates[7].set()
    await asyncio.sleep(0.01)
    assert log[4:] == ["b to its person answered"]  # b's group reply still waits for a's
    telegram.gates[-1].set()
    await asyncio.gather(*tasks)
    assert log[5:] == ["a to group answered", "b to group calls", "b to group answered"]
    assert processor.keys_waited_on == 0


async def test_without_a_hand_over_the_next_update_waits_for_the_whole_of_the_first() -> None:
    telegram = _GatedTelegram()
    log = telegram.log

    async def first() -> None:
        await _call(telegram.request, -1, "a")

    async def second() -> None:
        log.append("b works")

    processor, tasks = _two_in_one_group(first(), second())
    await asyncio.sleep(0.01)
    assert log == ["a calls"]
    telegram.gates[-1].set()
    await asyncio.gather(*tasks)
    assert log == ["a calls", "a answered", "b works"]
    assert processor.keys_waited_on == 0


async def test_an_update_that_handed_over_may_read_but_not_write(db: Database) -> None:
    processor = OrderedUpdateProcessor()
    outcome: list[str] = []

    async def work() -> None:
        async with db.transaction(write=True):
            outcome.append("wrote before")
        ordering.hand_over()
        async with db.transaction(write=False):
            outcome.append("read after")
        try:
            async with db.transaction(write=True):
                outcome.append("wrote after")
        except RuntimeError:
            outcome.append("refused")

    await processor.process_update(_update(-1, 10), work())
    assert outcome == ["wrote before", "read after", "refused"]
    async with db.transaction(write=True):  # outside an update: jobs still write
        outcome.append("job wrote")
    assert outcome[-1] == "job wrote"


async def test_a_free_slot_goes_to_one_back_from_the_network_then_to_the_earliest_arrival() -> None:
    slots = ordering._Slots(1)
    await slots.take(1)
    order: list[str] = []

    async def wait(name: str, arrival: int | None) -> None:
        await slots.take(arrival)
        order.append(name)

    waiting = [
        asyncio.create_task(wait("arrived 9", 9)),
        asyncio.create_task(wait("arrived 3", 3)),
        asyncio.create_task(wait("back", None)),
    ]
    await asyncio.sleep(0)
    for _ in waiting:
        slots.give()
        await asyncio.sleep(0)
    await asyncio.gather(*waiting)
    assert order == ["back", "arrived 3", "arrived 9"]
    slots.give()
    assert slots.free == 1
