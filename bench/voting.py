"""Voting: ballots per second through the handler path, tallying 100,000 household ballots, and
1,000 polls closing in the same minute."""

from __future__ import annotations

import asyncio
import random
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import insert, text, update
from sqlmodel import SQLModel, col, select
from telegram import Update

from bot.app import build_application
from bot.config import load_settings
from bot.context import LinliApp
from bot.db import Database
from bot.standin import FakeTelegram, Scene
from handlers.polls import close_due_polls
from models import people, polls
from models.base import utcnow
from models.outbox import Delivery
from models.people import Household, Person, Resident
from models.polls import Ballot, Ownership, PollSpec, PollVoter
from models.tally import Method, Rule

HOUSEHOLDS = 100_000
CHUNK = 20_000
BURST = 1_000
CASTS = 1_000
WARMUP = 100
BOSS = people.Authority(person_id=1, superadmin=True)


async def _fresh(url: str) -> Database:
    db = Database(url)
    async with db.engine.begin() as conn:
        await conn.run_sync(SQLModel.metadata.drop_all)
    await db.create_all()
    return db


async def _estate(db: Database, now: datetime) -> tuple[int, int]:
    async with db.transaction() as s:
        community = await people.create_community(
            s, name="表决基准社区", timezone="Asia/Shanghai", language="zh", now=now
        )
        assert community.id is not None
        estate = await people.create_unit(
            s, community_id=community.id, parent_id=None, kind="building", name="1号楼", now=now
        )
        assert estate.id is not None
        return community.id, estate.id


async def tally_100k(url: str) -> float:
    """Seconds to tally 100,000 5-3-1 owner ballots weighted by area, with the Art. 278
    verdict: reading the electorate and the ballots from the database, counting, the digest."""
    now = utcnow()
    db = await _fresh(url)
    try:
        community_id, unit_id = await _estate(db, now)
        rng = random.Random(7)
        async with db.transaction() as s:
            poll = await polls.create_poll(
                s,
                auth=BOSS,
                spec=PollSpec(
                    unit_id=unit_id,
                    question="本月议题排序",
                    options=[f"议题{i}" for i in range(1, 8)],
                    opens_at=now,
                    closes_at=now + timedelta(days=7),
                    method=Method.ranking,
                    rule=Rule.art278_ordinary,
                ),
                now=now,
            )
            poll_id = poll.id
        assert poll_id is not None
        async with db.engine.begin() as conn:
            for start in range(0, HOUSEHOLDS, CHUNK):
                rows = [
                    {"community_id": community_id, "building_id": unit_id, "unit_id": unit_id,
                     "flat": f"{h}", "area_centi_m2": rng.randint(45_00, 180_00),
                     "code": f"V{h:08d}", "created_at": now}
                    for h in range(start, start + CHUNK)
                ]  # fmt: skip
                await conn.execute(insert(Household), rows)
            first = (await conn.execute(text("SELECT min(id) FROM household"))).scalar_one()
            # Every 50th flat belongs to an owner of two flats; 200 are the developer's.
            owners = [
                {"household_id": first + h, "updated_at": now,
                 "owner_key": "developer" if h < 200 else f"owner-{h // 2}"}
                for h in range(0, HOUSEHOLDS, 50)
            ]  # fmt: skip
            await conn.execute(insert(Ownership), owners)
            keyed = {o["household_id"]: o["owner_key"] for o in owners}
            slots = sorted(
                {f"o:{keyed.get(first + h, f'#{first + h}')}" for h in range(HOUSEHOLDS)}
            )
            for start in range(0, len(slots), CHUNK):
                await conn.execute(
                    insert(Ballot),
                    [
                        {"poll_id": poll_id, "ref": slot,
                         "choices": ">".join(map(str, rng.sample(range(1, 8), 3)))}
                        for slot in slots[start : start + CHUNK]
                    ],
                )  # fmt: skip
        started = time.perf_counter()
        async with db.transaction(write=False) as s:
            found = await polls.tally(s, await polls.get_poll(s, poll_id))
        elapsed = time.perf_counter() - started
        assert found.result.heads == len(slots) and found.result.verdict is not None
        return elapsed
    finally:
        await db.dispose()


async def close_burst(url: str) -> tuple[int, int]:
    """1,000 polls closing in the same minute, closed by two runners at once (as after a
    restart with the old process still finishing): how many got no result, how many two."""
    now = utcnow()
    db = await _fresh(url)
    try:
        _, unit_id = await _estate(db, now)
        async with db.transaction() as s:
            await people.link_chat(
                s, chat_id=-100500, thread_id=0, unit_id=unit_id, title="1号楼", by=1, now=now
            )
            await people.touch_person(
                s, person_id=2, name="居民", username=None, language_code="zh", now=now
            )
            home = await people.add_household(s, unit_id=unit_id, flat="101", area_centi_m2=None,
                                              now=now)  # fmt: skip
            assert home.id is not None
            await people.request_join(
                s, person_id=2, household_id=home.id, now=now, verified_by_code=True
            )
            ids = []
            for i in range(BURST):
                poll = await polls.create_poll(
                    s,
                    auth=BOSS,
                    spec=PollSpec(
                        unit_id=unit_id,
                        question=f"第{i}号表决",
                        options=["甲", "乙"],
                        opens_at=now,
                        closes_at=now + timedelta(minutes=1, seconds=i % 60),
                    ),
                    now=now,
                )
                ids.append(poll.id)
        for pid in ids[:: BURST // 100]:
            async with db.transaction() as s:
                await polls.cast(
                    s, poll_id=pid or 0, person_id=2, choices=[1], now=now, ballot_key=b"bench"
                )
        minute = now + timedelta(minutes=2)
        await asyncio.gather(close_due_polls(db, minute), close_due_polls(db, minute))
        async with db.transaction(write=False) as s:
            rows = (
                (
                    await (await s.connection()).execute(
                        text("SELECT key FROM delivery WHERE key LIKE 'poll-result:%'")
                    )
                )
                .scalars()
                .all()
            )
        per_poll: dict[str, int] = {}
        for key in rows:
            pid = key.split(":")[1]
            per_poll[pid] = per_poll.get(pid, 0) + 1
        missed = sum(1 for pid in ids if per_poll.get(str(pid), 0) == 0)
        twice = sum(1 for n in per_poll.values() if n > 1)
        return missed, twice
    finally:
        await db.dispose()


async def cast_rate(url: str) -> tuple[float, float, float]:
    """Ballots per second through the handler path (the confirm tap on the private ballot of a
    voter who has just opened it, as a whole update through the application and the
    stand-in); the same ballots per second written by `polls.cast` directly, one transaction
    each, for other voters of the same poll (the cast's own bare transaction); and empty write
    transactions per second, all on the same database in the same run."""
    db = await _fresh(url)
    telegram = FakeTelegram()
    app: LinliApp = build_application(
        load_settings(bot_token="", _env_file=None), request=telegram, db=db
    )
    scene = Scene(app, telegram)
    now = utcnow()
    try:
        community_id, unit_id = await _estate(db, now)
        voters = [20_000 + i for i in range(WARMUP + 2 * CASTS)]
        direct = voters[WARMUP + CASTS :]
        async with db.engine.begin() as conn:
            await conn.execute(
                insert(Person),
                [{"id": v, "name": f"居民{v}", "language_code": "zh-hans", "created_at": now,
                  "updated_at": now} for v in voters],
            )  # fmt: skip
            await conn.execute(
                insert(Household),
                [{"community_id": community_id, "building_id": unit_id, "unit_id": unit_id,
                  "flat": f"{v}", "code": f"C{v:08d}", "created_at": now} for v in voters],
            )  # fmt: skip
            first = (await conn.execute(text("SELECT min(id) FROM household"))).scalar_one()
            await conn.execute(
                insert(Resident),
                [{"community_id": community_id, "person_id": v, "household_id": first + i,
                  "status": "verified", "requested_at": now, "decided_at": now}
                 for i, v in enumerate(voters)],
            )  # fmt: skip
        async with db.transaction() as s:
            await people.link_chat(
                s, chat_id=-100700, thread_id=0, unit_id=unit_id, title="1号楼", by=1, now=now
            )
            poll = await polls.create_poll(
                s,
                auth=BOSS,
                spec=PollSpec(
                    unit_id=unit_id,
                    question="本月议题排序",
                    options=[f"议题{i}" for i in range(1, 6)],
                    opens_at=now - timedelta(minutes=1),
                    closes_at=now + timedelta(days=7),
                    method=Method.ranking,
                ),
                now=now,
            )
        # The poll's card is up in the building's group, as in life: each first ballot edits
        # its turnout (the edits coalesce), so casting pays for the card too.
        async with db.engine.begin() as conn:
            await conn.execute(
                update(Delivery)
                .where(Delivery.card == f"{polls.CARD}:{poll.id}")  # type: ignore[arg-type]
                .values(status="sent", sent_at=now, message_id=1)
            )
        rng = random.Random(5)
        updates = []
        for i, v in enumerate(voters[: WARMUP + CASTS]):
            user = scene.person(v, f"居民{v}")
            chat = scene.private(user)
            telegram.started.add(v)
            message = scene.message_json(user, chat, "ballot")
            picks = ".".join(map(str, rng.sample(range(1, 6), 3)))
            updates.append(
                {"update_id": i + 1, "callback_query": {
                    "id": str(i + 1), "from": user, "chat_instance": str(v),
                    "message": message, "data": f"vc:{poll.id}:0:0:{picks}"}}
            )  # fmt: skip
        async with app:
            for raw in updates[:WARMUP]:
                await app.process_update(Update.de_json(raw, app.bot))
            # Each voter opened the ballot before confirming it (the bot knows them by then);
            # only the confirm taps are timed.
            for i, v in enumerate(voters[WARMUP : WARMUP + CASTS]):
                user = scene.person(v, f"居民{v}")
                opened = scene.message_json(user, scene.private(user), f"/vote_{poll.id}")
                await app.process_update(
                    Update.de_json({"update_id": 10**6 + i, "message": opened}, app.bot)
                )
            started = time.perf_counter()
            for raw in updates[WARMUP:]:
                await app.process_update(Update.de_json(raw, app.bot))
            elapsed = time.perf_counter() - started
        # The same ballots cast directly, for the voters who have not voted yet: the model's
        # cast in its own transaction, without the update around it.
        key = app.bot_data.services.settings.ballot_key
        ballots = [rng.sample(range(1, 6), 3) for _ in direct]
        started = time.perf_counter()
        for v, choices in zip(direct, ballots, strict=True):
            async with db.transaction() as s:
                await polls.cast(s, poll_id=poll.id or 0, person_id=v, choices=choices,
                                 now=utcnow(), ballot_key=key, household_id=None,
                                 expect_casts=0)  # fmt: skip
        bare = CASTS / (time.perf_counter() - started)
        async with db.transaction(write=False) as s:
            counted = len((await s.exec(select(PollVoter))).all())
        assert counted == len(voters), counted
        async with db.transaction(write=False) as s:
            edits = (await s.exec(select(Delivery).where(col(Delivery.edits).is_not(None)))).all()
        assert len(edits) == 1, edits  # one edit row for the card, armed and re-armed
        statement = text("SELECT 1")
        started = time.perf_counter()
        for _ in range(CASTS):
            async with db.transaction() as s:
                await (await s.connection()).execute(statement)
        empty = CASTS / (time.perf_counter() - started)
        return CASTS / elapsed, bare, empty
    finally:
        await db.dispose()


async def main(postgres_url: str | None) -> None:
    targets = []
    with tempfile.TemporaryDirectory() as tmp:
        targets.append((f"sqlite+aiosqlite:///{Path(tmp)}/voting.db", ""))
        if postgres_url:
            targets.append((postgres_url, ".postgres"))
        for url, suffix in targets:
            rate, bare, empty = await cast_rate(url)
            print(f"voting.cast.rate{suffix}: {rate:.0f} ballots/s")
            print(f"voting.cast.bare_tx{suffix}: {bare:.0f} ballots/s")
            print(f"voting.cast.empty_tx{suffix}: {empty:.0f} transactions/s")
            print(f"voting.cast.ratio_to_bare_tx{suffix}: {rate / bare:.2f}")
            seconds = await tally_100k(url)
            print(f"voting.tally.100k{suffix}: {seconds:.2f} s")
            missed, twice = await close_burst(url)
            print(f"voting.close.burst_missed{suffix}: {missed}")
            print(f"voting.close.burst_twice{suffix}: {twice}")
