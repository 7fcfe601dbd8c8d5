"""Updates per second through the whole stack, beside a bare echo bot in the same harness."""

from __future__ import annotations

import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from telegram import Update
from telegram.ext import (
    Application,
    ApplicationBuilder,
    CallbackQueryHandler,
    MessageHandler,
    filters,
)

from bot.app import build_application
from bot.config import load_settings
from bot.context import LinliApp
from bot.db import Database
from bot.standin import BOT_USER as BOT
from bot.standin import SANDBOX_TOKEN, FakeTelegram, Scene
from models import people
from models.base import utcnow

RESIDENTS = 1_000
GROUPS = 50
UPDATES = 3_000
WARMUP = 200


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
        await app.process_update(update)
        durations.append(time.perf_counter() - started)
    return durations


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


def _report(prefix: str, durations: list[float]) -> float:
    rate = len(durations) / sum(durations)
    ordered = sorted(durations)
    print(f"{prefix}.rate: {rate:.0f} updates/s")
    print(f"{prefix}.p50: {statistics.median(ordered) * 1000:.2f} ms")
    print(f"{prefix}.p99: {ordered[int(len(ordered) * 0.99) - 1] * 1000:.2f} ms")
    return rate


async def _linli(url: str) -> list[float]:
    db = Database(url)
    await db.create_all()
    telegram = FakeTelegram()
    app: LinliApp = build_application(
        load_settings(bot_token="", _env_file=None), request=telegram, db=db
    )
    scene = Scene(app, telegram)
    users, groups = await _seed(db, scene)
    updates = _mix(scene, users, groups, WARMUP + UPDATES)
    async with app:
        durations = await _drive(app, updates)
    await db.dispose()
    return durations[WARMUP:]


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
        sqlite_rate = _report(
            "updates.sqlite", await _linli(f"sqlite+aiosqlite:///{Path(tmp)}/bench.db")
        )
    print(f"updates.ratio_to_echo: {sqlite_rate / echo_rate:.2f}")
    if postgres_url:
        from sqlmodel import SQLModel

        db = Database(postgres_url)
        async with db.engine.begin() as conn:
            await conn.run_sync(SQLModel.metadata.drop_all)
        await db.dispose()
        pg_rate = _report("updates.postgres", await _linli(postgres_url))
        print(f"updates.postgres.ratio_to_echo: {pg_rate / echo_rate:.2f}")
    else:
        print("updates.postgres: skipped (set LINLI_BENCH_DATABASE_URL)")
