"""Updates per second through the whole stack, beside a bare echo bot in the same harness.

`updates.<db>.*`: one update after another, the stand-in answering at once: the CPU cost.
`updates.<db>.wan.*`: the same mix all at once with every Bot API call taking 100 ms (a real
`asyncio.sleep`), as over a real network: what the concurrent update processor makes of it.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import tempfile
import time
from collections import defaultdict
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from telegram import Update
from telegram._utils.defaultvalue import DEFAULT_NONE
from telegram._utils.types import ODVInput
from telegram.ext import (
    Application,
    ApplicationBuilder,
    CallbackQueryHandler,
    MessageHandler,
    filters,
)
from telegram.request import RequestData

from bot.app import build_application, settle_heap
from bot.config import load_settings
from bot.context import LinliApp
from bot.db import Database
from bot.ordering import handed_over, in_turn, order_keys
from bot.standin import BOT_USER as BOT
from bot.standin import SANDBOX_TOKEN, FakeTelegram, Scene
from models import people
from models.base import utcnow

RESIDENTS = 1_000
GROUPS = 50
UPDATES = 3_000
WARMUP = 200
LATENCY = 0.1  # seconds per Bot API call over a real network
PEAK = 100  # updates/s: a city's peak (30,000 building groups), offered for the p99
PACED = 1_000

_handling: ContextVar[int] = ContextVar("handling", default=0)  # the update being handled


class _Network(FakeTelegram):
    """The stand-in with latency, noting which update each message it delivered answered."""

    def __init__(self) -> None:
        super().__init__()
        self.answered: list[tuple[int, int]] = []  # (chat, update id) in delivery order
        # update id -> the Bot API calls its own task made, in order: (chat, whether it had
        # handed over by then). Calls of tasks it spawned (answering a tap) run beside them.
        self.per_update: defaultdict[int, list[tuple[int | None, bool]]] = defaultdict(list)

    async def do_request(
        self,
        url: str,
        method: str,
        request_data: RequestData | None = None,
        read_timeout: ODVInput[float] = DEFAULT_NONE,
        write_timeout: ODVInput[float] = DEFAULT_NONE,
        connect_timeout: ODVInput[float] = DEFAULT_NONE,
        pool_timeout: ODVInput[float] = DEFAULT_NONE,
    ) -> tuple[int, bytes]:
        result = await super().do_request(url, method, request_data)
        chat = request_data.parameters.get("chat_id") if request_data else None
        chat_id = int(str(chat)) if chat is not None else None
        if in_turn():
            self.per_update[_handling.get()].append((chat_id, handed_over()))
        if chat_id is not None and url.rsplit("/", 1)[-1] in ("sendMessage", "editMessageText"):
            self.answered.append((chat_id, _handling.get()))
        return result


def _ordering_bound(
    updates: list[Update], calls: dict[int, list[tuple[int | None, bool]]]
) -> float:
    """The fastest these updates can be handled in order when each Bot API call takes
    LATENCY and the CPU costs nothing: `wan.rate` cannot beat it, whatever the CPU.

    The rules of bot/ordering.py, played out: an update starts when the one before it in each
    of its keys (chat, person) has handed over (or ended, if it never did); it makes its calls
    one after another, and a call to one of its keys' chats goes out only once every earlier
    update of that key has finished speaking."""
    ready: dict[int, float] = {}  # key -> when its latest update handed over
    spoken: dict[int, float] = {}  # key -> when its latest update (and those before) ended
    longest = 0.0
    for update in updates:
        keys = order_keys(update)
        now = max((ready.get(k, 0.0) for k in keys), default=0.0)
        handed: float | None = None
        for chat, after_hand_over in calls.get(update.update_id, []):
            if after_hand_over and handed is None:
                handed = now
            if chat in keys:
                now = max(now, spoken.get(chat, 0.0))
            now += LATENCY
        ready.update(dict.fromkeys(keys, now if handed is None else handed))
        for key in keys:
            spoken[key] = max(spoken.get(key, 0.0), now)
        longest = max(longest, now)
    return len(updates) / longest


def _reordered(answered: list[tuple[int, int]]) -> int:
    """Messages delivered to a chat after one answering a later update of that chat."""
    latest: dict[int, int] = defaultdict(int)
    out_of_order = 0
    for chat, update_id in answered:
        if update_id < latest[chat]:
            out_of_order += 1
        latest[chat] = max(latest[chat], update_id)
    return out_of_order


async def _seed(db: Database, scene: Scene) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A community with 50 buildings, each with its group, and 1,000 verified residents."""
    now = utcnow()
    users: list[dict[str, Any]] = []
    groups: list[dict[str, Any]] = []
    async with db.transaction() as s:
        community = await people.create_community(
            s, name="基准社区", timezone="Asia/Shanghai", language="zh", now=now
        )
        assert community.id is not None
        for b in range(GROUPS):
            building = await people.create_unit(
                s,
                community_id=community.id,
                parent_id=None,
                kind="building",
                name=f"{b + 1}号楼",
                now=now,
            )
            assert building.id is not None
            group = scene.group(-100_000 - b, f"{b + 1}号楼邻里群")
            groups.append(group)
            await people.link_chat(
                s,
                chat_id=group["id"],
                thread_id=0,
                unit_id=building.id,
                title=group["title"],
                by=1,
                now=now,
            )
            for f in range(RESIDENTS // GROUPS):
                household = await people.add_household(
                    s, unit_id=building.id, flat=f"{b + 1}-{f + 101}", area_centi_m2=8_950, now=now
                )
                uid = 10_000 + len(users)
                user = scene.person(uid, f"居民{uid}", lang="zh-hans" if uid % 3 else "en")
                scene.private(user)
                scene.tg.started.add(uid)
                users.append(user)
                await people.touch_person(
                    s, person_id=uid, name=user["first_name"], username=None,
                    language_code=user["language_code"], now=now,
                )  # fmt: skip
                assert household.id is not None
                await people.request_join(
                    s, person_id=uid, household_id=household.id, now=now, verified_by_code=True
                )
    return users, groups


def _mix(
    scene: Scene, users: list[dict[str, Any]], groups: list[dict[str, Any]], n: int
) -> list[dict[str, Any]]:
    """/me and /help in groups and privately, and taps on the join button of a welcome."""
    rng = random.Random(7)
    updates: list[dict[str, Any]] = []
    for i in range(n):
        user = rng.choice(users)
        group = groups[(int(user["id"]) - 10_000) // (RESIDENTS // GROUPS)]
        roll = rng.random()
        if roll < 0.4:
            chat = group if rng.random() < 0.5 else scene.private(user)
            updates.append({"message": scene.message_json(user, chat, "/me")})
        elif roll < 0.8:
            chat = group if rng.random() < 0.5 else scene.private(user)
            updates.append({"message": scene.message_json(user, chat, "/help")})
        else:
            keyboard = {"inline_keyboard": [[{"text": "join", "callback_data": "join:go"}]]}
            welcome = {
                "message_id": scene.tg.next_message_id(int(user["id"])),
                "date": 0,
                "chat": scene.private(user),
                "from": BOT,
                "text": "welcome",
                "reply_markup": keyboard,
            }
            scene.tg.store_message(welcome)
            query = {"id": str(i), "from": user, "chat_instance": "1", "message": welcome}
            updates.append({"callback_query": {**query, "data": "join:go"}})
    for i, update in enumerate(updates):
        update["update_id"] = i + 1
    return updates


async def _drive(
    app: Application[Any, Any, Any, Any, Any, Any], updates: list[dict[str, Any]]
) -> list[float]:
    durations: list[float] = []
    for raw in updates:
        update = Update.de_json(raw, app.bot)
        started = time.perf_counter()
        await app.update_processor.process_update(update, app.process_update(update))
        durations.append(time.perf_counter() - started)
    return durations


async def _drive_at_once(app: LinliApp, updates: list[dict[str, Any]]) -> tuple[float, list[float]]:
    """Every update arrives at once, in order; returns the wall time and each one's handling."""
    durations: list[float] = []

    async def handle(update: Update) -> None:
        _handling.set(update.update_id)
        started = time.perf_counter()
        await app.process_update(update)
        durations.append(time.perf_counter() - started)

    parsed = [Update.de_json(raw, app.bot) for raw in updates]
    started = time.perf_counter()
    await asyncio.gather(*(app.update_processor.process_update(u, handle(u)) for u in parsed))
    return time.perf_counter() - started, durations


def _echo_app(telegram: FakeTelegram) -> Application[Any, Any, Any, Any, Any, Any]:
    async def echo(update: Update, _ctx: Any) -> None:
        if update.callback_query is not None:
            await update.callback_query.answer()
        elif update.effective_message is not None:
            await update.effective_message.reply_text(update.effective_message.text or "")

    app = ApplicationBuilder().token(SANDBOX_TOKEN).request(telegram).updater(None).build()
    app.add_handler(MessageHandler(filters.ALL, echo))
    app.add_handler(CallbackQueryHandler(echo))
    return app


def _p99(values: list[float]) -> float:
    return sorted(values)[int(len(values) * 0.99) - 1]


def _report(prefix: str, durations: list[float]) -> float:
    rate = len(durations) / sum(durations)
    print(f"{prefix}.rate: {rate:.0f} updates/s")
    print(f"{prefix}.p50: {statistics.median(durations) * 1000:.2f} ms")
    print(f"{prefix}.p99: {_p99(durations) * 1000:.2f} ms")
    return rate


async def _drive_paced(app: LinliApp, updates: list[dict[str, Any]]) -> list[float]:
    """Updates arriving at PEAK per second; each one's time from arrival to handled (waiting
    for earlier updates of its chat or person included): what a resident waits, network aside."""
    waits: list[float] = []

    async def arrive(update: Update, at: float) -> None:
        await asyncio.sleep(max(0.0, at - time.perf_counter()))
        arrived = time.perf_counter()
        _handling.set(update.update_id)
        await app.update_processor.process_update(update, app.process_update(update))
        waits.append(time.perf_counter() - arrived)

    start = time.perf_counter()
    parsed = [Update.de_json(raw, app.bot) for raw in updates]
    await asyncio.gather(*(arrive(u, start + i / PEAK) for i, u in enumerate(parsed)))
    return waits


@dataclass
class _Run:
    durations: list[float]  # each update's handling (one after another: the CPU cost)
    rate: float = 0.0  # updates/s
    waits: list[float] = field(default_factory=list)  # arrival to handled, at PEAK per second
    reordered: int = 0  # messages that came out of their chat's order
    bound: float = 0.0  # updates/s the order and the network allow, CPU aside


async def _linli(url: str, *, wan: bool = False) -> _Run:
    db = Database(url)
    await db.create_all()
    telegram = _Network()
    app: LinliApp = build_application(
        load_settings(bot_token="", _env_file=None), request=telegram, db=db
    )
    scene = Scene(app, telegram)
    users, groups = await _seed(db, scene)
    updates = _mix(scene, users, groups, WARMUP + UPDATES + PACED)
    async with app:
        await _drive(app, updates[:WARMUP])
        settle_heap()  # as on_startup does once the bot is up
        if not wan:
            durations = await _drive(app, updates[WARMUP : WARMUP + UPDATES])
            run = _Run(durations, rate=len(durations) / sum(durations))
        else:
            telegram.latency = lambda: LATENCY
            telegram.answered.clear()
            at_once = updates[WARMUP : WARMUP + UPDATES]
            wall, durations = await _drive_at_once(app, at_once)
            parsed = [Update.de_json(u, app.bot) for u in at_once]
            bound = _ordering_bound(parsed, telegram.per_update)
            waits = await _drive_paced(app, updates[WARMUP + UPDATES :])
            rate = len(durations) / wall
            run = _Run(durations, rate, waits, _reordered(telegram.answered), bound)
    await db.dispose()
    return run


async def _fresh(url: str) -> None:
    if url.startswith("postgresql"):
        from sqlmodel import SQLModel

        db = Database(url)
        async with db.engine.begin() as conn:
            await conn.run_sync(SQLModel.metadata.drop_all)
        await db.dispose()


async def _figures(name: str, urls: tuple[str, str], echo_rate: float) -> None:
    """updates.sqlite.* (CPU), updates.ratio_to_echo and updates.wan.*; on PostgreSQL
    updates.postgres.* and updates.postgres.{ratio_to_echo,wan.*}."""
    base = "updates" if name == "sqlite" else f"updates.{name}"
    await _fresh(urls[0])
    rate = _report(f"updates.{name}", (await _linli(urls[0])).durations)
    print(f"{base}.ratio_to_echo: {rate / echo_rate:.2f}")
    await _fresh(urls[1])
    wan = await _linli(urls[1], wan=True)
    print(f"{base}.wan.rate: {wan.rate:.0f} updates/s")
    print(f"{base}.wan.p99: {_p99(wan.waits) * 1000:.0f} ms")
    print(f"{base}.wan.hidden: {wan.rate / rate:.2f}")
    print(f"{base}.wan.reordered: {wan.reordered}")
    print(f"{base}.wan.ordering_bound: {wan.bound:.0f} updates/s")


async def main(postgres_url: str | None) -> None:
    telegram = FakeTelegram()
    echo = _echo_app(telegram)
    scene = Scene(echo, telegram)
    users = [scene.person(10_000 + i, f"居民{i}") for i in range(RESIDENTS)]
    for u in users:
        scene.private(u)
        telegram.started.add(int(u["id"]))
    groups = [scene.group(-100_000 - b, f"{b}") for b in range(GROUPS)]
    async with echo:
        echo_rate = _report(
            "updates.echo",
            (await _drive(echo, _mix(scene, users, groups, WARMUP + UPDATES)))[WARMUP:],
        )
    with tempfile.TemporaryDirectory() as tmp:
        files = tuple(f"sqlite+aiosqlite:///{Path(tmp)}/{n}.db" for n in ("cpu", "wan"))
        await _figures("sqlite", (files[0], files[1]), echo_rate)
    if postgres_url:
        await _figures("postgres", (postgres_url, postgres_url), echo_rate)
    else:
        print("updates.postgres: skipped (set LINLI_BENCH_DATABASE_URL)")
