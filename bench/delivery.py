"""The delivery engine against a stand-in that enforces Telegram's flood limits.

Three figures sets: a broadcast to 30,000 groups, start-up with 100,000 (and 10,000) pending
reminders, and 30,000 reminders due in the same minute. At 25 messages/s a 30,000-message run
takes 20 minutes of Telegram time, so the sender and the stand-in share a simulated clock whose
sleep advances it: the pace and the 429s are exact, the wall time is only the CPU work. The
event-loop stall is measured in real time by a task that sleeps 5 ms and records its lateness.
"""

from __future__ import annotations

import asyncio
import gc
import math
import os
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from jinja2 import ChoiceLoader, DictLoader
from sqlalchemy import func, insert
from sqlmodel import SQLModel, select

from bot import delivery
from bot.app import build_application, on_startup
from bot.config import load_settings
from bot.context import LinliApp
from bot.db import Database
from bot.standin import FakeTelegram, TelegramLimits
from models import people
from models.outbox import Delivery, Priority, Status

GROUPS = 30_000
POSTGRES_GROUPS = 5_000
SAME_MINUTE = 30_000
STARTUP_COUNTS = (10_000, 100_000)
START = datetime(2026, 11, 20, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai: no quiet hours for hours
WALL_LIMIT = 240.0  # seconds of real time one run may take before it is called unfinished
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

TEMPLATES = {
    "zh/bench/notice.html.j2": "<b>{{ title }}</b>\n{{ body }}",
    "en/bench/notice.html.j2": "<b>{{ title }}</b>\n{{ body }}",
}


class SimClock:
    """Simulated time in whole microseconds, so that the sender's datetimes and the stand-in's
    float seconds are the same instant to the bit."""

    def __init__(self, start: datetime) -> None:
        self.us = int((start - EPOCH) / timedelta(microseconds=1))

    def time(self) -> float:
        return self.us / 1_000_000

    def now(self) -> datetime:
        return EPOCH + timedelta(microseconds=self.us)

    async def sleep(self, seconds: float) -> None:
        if seconds > 0:
            self.us += math.ceil(seconds * 1_000_000)
        await asyncio.sleep(0)


class StallMonitor:
    """How late a 5 ms real-time sleep wakes up: the longest the event loop was blocked."""

    def __init__(self) -> None:
        self.worst = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _watch(self) -> None:
        while True:
            started = time.perf_counter()
            await asyncio.sleep(0.005)
            self.worst = max(self.worst, time.perf_counter() - started - 0.005)

    def __enter__(self) -> StallMonitor:
        self._task = asyncio.create_task(self._watch())
        return self

    def __exit__(self, *_: object) -> None:
        if self._task is not None:
            self._task.cancel()


@contextmanager
def traced() -> Iterator[Callable[[], float]]:
    """Peak memory allocated inside the block, in MB (tracemalloc)."""
    tracemalloc.start()
    tracemalloc.reset_peak()
    try:
        yield lambda: tracemalloc.get_traced_memory()[1] / 1_000_000
    finally:
        tracemalloc.stop()


def out(name: str, value: float | int | str, unit: str = "") -> None:
    shown = f"{value:.3f}".rstrip("0").rstrip(".") if isinstance(value, float) else str(value)
    print(f"{name}: {shown}{' ' + unit if unit else ''}", flush=True)


async def fresh_db(url: str) -> Database:
    db = Database(url)
    if not db.is_sqlite:
        async with db.engine.begin() as conn:
            await conn.run_sync(SQLModel.metadata.drop_all)
    await db.create_all()
    return db


async def seed_community(db: Database) -> int:
    async with db.transaction() as s:
        community = await people.create_community(
            s, name="基准社区", timezone="Asia/Shanghai", language="zh", now=START
        )
    assert community.id is not None
    return community.id


async def insert_rows(db: Database, rows: list[dict[str, Any]]) -> None:
    """Many outbox rows at once (what thousands of enqueue() calls would leave behind)."""
    table = SQLModel.metadata.tables["delivery"]
    for i in range(0, len(rows), 5_000):
        async with db.engine.begin() as conn:
            await conn.execute(insert(table), rows[i : i + 5_000])


def row(key: str, chat_id: int, due: datetime, **extra: Any) -> dict[str, Any]:
    return {
        "key": key, "chat_id": chat_id, "thread_id": 0, "person_id": None, "community_id": None,
        "link_id": None, "fallback_link_id": None, "template": "bench/notice",
        "context": {"title": "停水通知", "body": "明天 9:00–12:00 停水，请提前储水。"},
        "lang": None, "photo": None, "pin": False, "silent": False, "urgent": False,
        "priority": Priority.normal, "due_at": due, "status": Status.pending, "attempts": 0,
        "parts_sent": 0, "created_at": START, **extra,
    }  # fmt: skip


def make_app(
    db: Database, telegram: FakeTelegram, clock: SimClock | None
) -> tuple[LinliApp, delivery.Sender]:
    settings = load_settings(bot_token="", _env_file=None)
    if clock is None:
        app = build_application(settings, request=telegram, db=db)
    else:
        app = build_application(
            settings, request=telegram, db=db, clock=clock.now, sleep=clock.sleep
        )
    renderer = app.bot_data.services.renderer
    assert renderer.env.loader is not None
    renderer.env.loader = ChoiceLoader([DictLoader(TEMPLATES), renderer.env.loader])
    return app, delivery.sender_of(app)


async def pending(db: Database) -> int:
    async with db.transaction(write=False) as s:
        query = select(func.count()).select_from(Delivery).where(Delivery.status == Status.pending)
        return int((await s.exec(query)).one())


async def count_status(db: Database, status: Status) -> int:
    async with db.transaction(write=False) as s:
        query = select(func.count()).select_from(Delivery).where(Delivery.status == status)
        return int((await s.exec(query)).one())


async def run_until_sent(db: Database, sender: delivery.Sender, total: int) -> float:
    """Let the running sender work until nothing is pending (or the wall limit); wall seconds."""
    started = time.perf_counter()
    while time.perf_counter() - started < WALL_LIMIT:
        await asyncio.sleep(0.5)
        if sender.sent >= total and await pending(db) == 0:
            break
    return time.perf_counter() - started


@dataclass
class Telegram:
    fake: FakeTelegram
    clock: SimClock

    @property
    def duplicates(self) -> int:
        return sum(n - 1 for n in self.fake.delivered.values() if n > 1)

    def rate(self) -> float:
        first, last = self.fake.first_delivery, self.fake.last_delivery
        sent = sum(self.fake.delivered.values())
        if first is None or last is None or last <= first:
            return 0.0
        return (sent - 1) / (last - first)


@contextmanager
def harness_set_aside(fake: FakeTelegram, chat_ids: list[int]) -> Iterator[None]:
    """The stand-in is the harness, not the bot: its per-chat counters exist before the run
    (so tracemalloc counts the bot's memory), and its 30,000 chats are frozen out of the
    garbage collector (so a full collection walking them is not counted as the bot's stall)."""
    fake.reserve(chat_ids)
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def enforcing(clock: SimClock) -> Telegram:
    fake = FakeTelegram(clock=clock.time, limits=TelegramLimits(), transcript=False)
    return Telegram(fake, clock)


async def broadcast(url: str, prefix: str, groups: int) -> None:
    db = await fresh_db(url)
    community_id = await seed_community(db)
    clock = SimClock(START)
    telegram = enforcing(clock)
    chat_ids = [-1_001_000_000_000 - i for i in range(groups)]
    for chat_id in chat_ids:
        telegram.fake.add_chat({"id": chat_id, "type": "supergroup", "title": "邻里群"})
    await insert_rows(
        db,
        [
            row(f"bench:1:{chat_id}:0", chat_id, START, community_id=community_id,
                priority=Priority.broadcast)
            for chat_id in chat_ids
        ],
    )  # fmt: skip
    app, sender = make_app(db, telegram.fake, clock)
    limit = sender.limits.per_second
    async with app:
        with harness_set_aside(telegram.fake, chat_ids), traced() as peak, StallMonitor() as stalls:
            delivery.start_sender(app)
            wall = await run_until_sent(db, sender, groups)
            await delivery.stop_sender(app)
            memory = peak()
    not_terminal = await pending(db)
    out(f"{prefix}.rows", groups, "groups")
    out(f"{prefix}.rate", telegram.rate(), "msg/s")
    out(f"{prefix}.rate_ratio", telegram.rate() / limit)
    out(f"{prefix}.http_429", telegram.fake.too_many)
    out(f"{prefix}.not_terminal", not_terminal)
    out(f"{prefix}.duplicates", telegram.duplicates)
    out(f"{prefix}.max_stall", stalls.worst * 1000, "ms")
    out(f"{prefix}.peak_memory", memory, "MB")
    out(f"{prefix}.duration", (telegram.fake.last_delivery or 0) - START.timestamp(), "s")
    out(f"{prefix}.wall", wall, "s")
    await db.dispose()


async def startup(url: str, count: int) -> tuple[float, float]:
    """Seconds from building the application to a sender that has looked at the outbox, and
    the memory that took, with `count` reminders pending over the next 30 days."""
    db = await fresh_db(url)
    spread = timedelta(days=30) / count
    now = datetime.now(UTC)
    await insert_rows(
        db,
        [
            row(f"remind:{i}", 10_000_000 + i % 5_000, now + timedelta(minutes=5) + i * spread,
                priority=Priority.reminder)
            for i in range(count)
        ],
    )  # fmt: skip
    telegram = FakeTelegram(transcript=False)
    with traced() as peak:
        started = time.perf_counter()
        app, sender = make_app(db, telegram, None)
        async with app:
            await on_startup(app)
            await sender.ready.wait()
            ready = time.perf_counter() - started
            memory = peak()
            await delivery.stop_sender(app)
    await db.dispose()
    return ready, memory


async def same_minute(url: str, prefix: str, count: int) -> None:
    db = await fresh_db(url)
    community_id = await seed_community(db)
    clock = SimClock(START)
    telegram = enforcing(clock)
    people_rows = [
        {"id": 20_000_000 + i, "name": f"居民{i}", "username": None,
         "language_code": "en" if i % 3 == 0 else "zh-hans", "lang": None,
         "created_at": START, "updated_at": START}
        for i in range(count)
    ]  # fmt: skip
    table = SQLModel.metadata.tables["person"]
    for i in range(0, count, 5_000):
        async with db.engine.begin() as conn:
            await conn.execute(insert(table), people_rows[i : i + 5_000])
    telegram.fake.started.update(20_000_000 + i for i in range(count))
    await insert_rows(
        db,
        [
            row(f"remind:{i}", 20_000_000 + i, START + timedelta(seconds=60 * i / count),
                person_id=20_000_000 + i, community_id=community_id,
                priority=Priority.reminder)
            for i in range(count)
        ],
    )  # fmt: skip
    app, sender = make_app(db, telegram.fake, clock)
    async with app:
        delivery.start_sender(app)
        wall = await run_until_sent(db, sender, count)
        await delivery.stop_sender(app)
    sent = await count_status(db, Status.sent)
    out(f"{prefix}.sent", sent)
    out(f"{prefix}.missed", count - sent)
    out(f"{prefix}.duplicates", telegram.duplicates)
    out(f"{prefix}.http_429", telegram.fake.too_many)
    out(f"{prefix}.last_sent_after", (telegram.fake.last_delivery or 0) - START.timestamp(), "s")
    out(f"{prefix}.wall", wall, "s")
    await db.dispose()


async def main(postgres_url: str | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        sqlite = f"sqlite+aiosqlite:///{Path(tmp)}/delivery.db"
        out("delivery.clock", "simulated (sender and stand-in share it; 429s enforced)")
        groups = int(os.environ.get("LINLI_BENCH_GROUPS", GROUPS))
        await broadcast(sqlite, "delivery.broadcast", groups)
        for count in STARTUP_COUNTS:
            ready, memory = await startup(f"sqlite+aiosqlite:///{Path(tmp)}/s{count}.db", count)
            suffix = "" if count == max(STARTUP_COUNTS) else f".{count // 1000}k"
            out(f"delivery.startup.ready{suffix}", ready, "s")
            out(f"delivery.startup.memory{suffix}", memory, "MB")
        await same_minute(
            f"sqlite+aiosqlite:///{Path(tmp)}/m.db",
            "delivery.same_minute",
            int(os.environ.get("LINLI_BENCH_SAME_MINUTE", SAME_MINUTE)),
        )
    if postgres_url:  # a smaller broadcast: the wall time of the whole bench stays in bounds
        await broadcast(postgres_url, "delivery.postgres.broadcast", min(groups, POSTGRES_GROUPS))
    else:
        print("delivery.postgres: skipped (set LINLI_BENCH_DATABASE_URL)")
