"""Ledger postings per second (SQLite, PostgreSQL) and /points' database time on 1M entries."""

from __future__ import annotations

import asyncio
import random
import statistics
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import insert, text
from sqlmodel import SQLModel

from bot.db import Database
from models import ledger, people, standings
from models.base import utcnow
from models.ledger import LedgerEntry, PointAccount
from models.people import Household, Person, Resident

BUILDINGS = 20
RESIDENTS = 5_000  # two to a household
POSTINGS = 500_000  # two ledger rows each: one million rows
CHUNK = 20_000
OPS = 3_000
WARMUP = 200
PG_TASKS = 16  # concurrent postings: the pool's 8 connections plus its 8 overflow
QUERIES = 300
FIRST_ID = 1_000_000

_ENTRY_COLUMNS = (
    "community_id", "person_id", "leg", "amount", "key", "kind", "rule_code", "reason", "by",
    "created_at",
)  # fmt: skip
_EARNING = (("award", None, "帮忙"), ("task", "task", "志愿服务"), ("award", "garbage", "垃圾分类"),
            ("award", "patrol", "巡逻"))  # fmt: skip


async def _fresh(url: str) -> Database:
    db = Database(url)
    if not db.is_sqlite:
        async with db.engine.begin() as conn:
            await conn.run_sync(SQLModel.metadata.drop_all)
    await db.create_all()
    return db


async def _seed(db: Database, now: datetime) -> tuple[int, list[int]]:
    """A community of 20 buildings with 5,000 verified residents (bulk core inserts)."""
    async with db.transaction() as s:
        community = await people.create_community(
            s, name="积分基准社区", timezone="Asia/Shanghai", language="zh", now=now
        )
        assert community.id is not None
        buildings = [
            await people.create_unit(
                s, community_id=community.id, parent_id=None, kind="building",
                name=f"{b + 1}号楼", now=now,
            )
            for b in range(BUILDINGS)
        ]  # fmt: skip
        ids = [FIRST_ID + i for i in range(RESIDENTS)]
        conn = await s.connection()
        await conn.execute(
            insert(Person),
            [
                {"id": pid, "name": f"居民{pid}", "language_code": "zh-hans", "created_at": now,
                 "updated_at": now}
                for pid in ids
            ],
        )  # fmt: skip
        homes = []
        for h in range(RESIDENTS // 2):
            building = buildings[h % BUILDINGS]
            homes.append(
                {"community_id": community.id, "building_id": building.id,
                 "unit_id": building.id, "flat": f"{h // BUILDINGS + 101}",
                 "code": f"B{h:07d}", "created_at": now}
            )  # fmt: skip
        await conn.execute(insert(Household), homes)
        first_home = (await conn.execute(text("SELECT min(id) FROM household"))).scalar_one()
        await conn.execute(
            insert(Resident),
            [
                {"community_id": community.id, "person_id": pid,
                 "household_id": first_home + i // 2, "status": "verified",
                 "requested_at": now, "decided_at": now}
                for i, pid in enumerate(ids)
            ],
        )  # fmt: skip
    return community.id, ids


def _postings(
    community_id: int, residents: list[int], now: datetime, balances: dict[int, list[int]]
) -> Iterator[list[tuple[Any, ...]]]:
    """A year of postings in time order, in chunks of ledger rows (both legs); keeps each
    resident's running balance and earned total in `balances` so no balance goes below zero."""
    rng = random.Random(11)
    start = now - timedelta(days=365)
    step = timedelta(days=365) / POSTINGS
    chunk: list[tuple[Any, ...]] = []
    for i in range(POSTINGS):
        person = rng.choice(residents)
        totals = balances.setdefault(person, [0, 0])
        at = start + step * i
        if rng.random() < 0.15 and totals[0] >= 10:
            kind, rule, reason, amount = "redeem", None, "理发券", -10
        else:
            kind, rule, reason = rng.choice(_EARNING)
            amount = rng.choice((1, 2, 5, 10))
            totals[1] += amount
        totals[0] += amount
        key = f"bench:{i}"
        chunk.append((community_id, person, 0, amount, key, kind, rule, reason, None, at))
        chunk.append((community_id, None, 1, -amount, key, kind, rule, reason, None, at))
        if len(chunk) >= CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


async def _bulk_ledger(
    db: Database, community_id: int, residents: list[int], now: datetime
) -> None:
    """One million ledger rows and the matching accounts: COPY on PostgreSQL, executemany on
    SQLite; then statistics, as a live database would have them."""
    balances: dict[int, list[int]] = {}
    async with db.engine.begin() as conn:
        if db.is_sqlite:
            table = LedgerEntry.__table__  # type: ignore[attr-defined]
            for chunk in _postings(community_id, residents, now, balances):
                await conn.execute(
                    insert(table), [dict(zip(_ENTRY_COLUMNS, row, strict=True)) for row in chunk]
                )
        else:
            raw = (await conn.get_raw_connection()).driver_connection
            assert raw is not None
            for chunk in _postings(community_id, residents, now, balances):
                await raw.copy_records_to_table(
                    "ledgerentry", records=chunk, columns=list(_ENTRY_COLUMNS)
                )
        accounts = [
            {"community_id": community_id, "person_id": pid, "balance": b, "earned": e,
             "hidden": False, "created_at": now}
            for pid, (b, e) in balances.items()
        ]  # fmt: skip
        await conn.execute(insert(PointAccount.__table__), accounts)  # type: ignore[attr-defined]
    if db.is_sqlite:
        async with db.engine.begin() as conn:
            await conn.exec_driver_sql("ANALYZE")
    else:
        async with db.engine.connect() as conn:
            autocommit = await conn.execution_options(isolation_level="AUTOCOMMIT")
            await autocommit.exec_driver_sql("VACUUM ANALYZE")


async def _ops(db: Database, community_id: int, residents: list[int], *, tasks: int) -> float:
    """Postings per second, one transaction each; credits and debits on many residents."""
    rng = random.Random(5)
    now = utcnow()
    plan = [(rng.choice(residents), rng.choice((1, 2, 5, -1, -2))) for _ in range(WARMUP + OPS)]
    queue: asyncio.Queue[tuple[int, int, int]] = asyncio.Queue()
    for i, (person, amount) in enumerate(plan):
        queue.put_nowait((i, person, amount))

    async def worker() -> None:
        while not queue.empty():
            i, person, amount = queue.get_nowait()
            try:
                async with db.transaction() as s:
                    await ledger.post(
                        s, community_id=community_id, person_id=person, amount=amount,
                        key=f"ops:{i}", reason="基准", kind="award", by=None, now=now,
                    )  # fmt: skip
            except ledger.InsufficientPoints:
                pass  # a refusal is a ledger operation too

    for _ in range(WARMUP):  # the first statements of each kind compile once
        i, person, amount = queue.get_nowait()
        async with db.transaction() as s:
            await ledger.post(
                s, community_id=community_id, person_id=person, amount=abs(amount),
                key=f"ops:{i}", reason="基准", kind="award", by=None, now=now,
            )  # fmt: skip
    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(tasks)))
    return OPS / (time.perf_counter() - started)


async def _bare(db: Database, *, tasks: int) -> float:
    """Transactions per second that do nothing but one trivial statement: the floor postings
    are measured against (begin, pool check, commit)."""
    statement = text("SELECT 1")
    remaining = list(range(OPS))

    async def worker() -> None:
        while remaining:
            remaining.pop()
            async with db.transaction() as s:
                await (await s.connection()).execute(statement)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(tasks)))
    return OPS / (time.perf_counter() - started)


async def _query_time(db: Database, residents: list[int], now: datetime) -> tuple[float, float]:
    """Database time of /points (memberships, then the summary) for random residents, in ms:
    the median and the 95th percentile."""
    rng = random.Random(3)
    durations = []
    for _ in range(QUERIES):
        person = rng.choice(residents)
        started = time.perf_counter()
        async with db.transaction(write=False) as s:
            found = await standings.verified_memberships(s, person_id=person)
            summary = await standings.summary(s, membership=found[0], now=now, limit=10)
        durations.append(time.perf_counter() - started)
        assert summary.entries
    ordered = sorted(durations)
    return statistics.median(ordered) * 1000, ordered[int(len(ordered) * 0.95)] * 1000


async def _run(url: str, name: str) -> None:
    now = utcnow()
    db = await _fresh(url)
    try:
        community_id, residents = await _seed(db, now)
        started = time.perf_counter()
        await _bulk_ledger(db, community_id, residents, now)
        loaded = time.perf_counter() - started
        tasks = 1 if db.is_sqlite else PG_TASKS
        ops = await _ops(db, community_id, residents, tasks=tasks)
        bare = await _bare(db, tasks=tasks)
        p50, p95 = await _query_time(db, residents, now)
    finally:
        await db.dispose()
    query = "points.query_1m" if name == "sqlite" else f"points.query_1m.{name}"
    print(f"points.ledger.{name}.ops: {ops:.0f} postings/s")
    print(f"points.ledger.{name}.bare_tx: {bare:.0f} transactions/s")
    print(f"{query}.db_time: {p50:.2f} ms")
    print(f"{query}.db_time.p95: {p95:.2f} ms")
    print(f"points.bulk_1m.{name}.load: {loaded:.1f} s")


async def main(postgres_url: str | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        await _run(f"sqlite+aiosqlite:///{Path(tmp)}/points.db", "sqlite")
    if postgres_url:
        await _run(postgres_url, "postgres")
    else:
        print("points.ledger.postgres: skipped (set LINLI_BENCH_DATABASE_URL)")
