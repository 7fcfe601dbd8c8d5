"""Problem reports: /reports and the duplicate lookup on 100,000 reports, 10,000 escalations
coming due in one minute, and the weekly digest for 1,000 units (SQLite, and PostgreSQL when
a URL is given)."""

from __future__ import annotations

import random
import statistics
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import insert
from sqlmodel import SQLModel, col, select

from bot.db import Database
from models import agenda, digest, outbox, people, reports
from models.base import utcnow
from models.people import ChatLink, Person, Role, Unit
from models.reports import Report, ReportSequence

BUILDINGS = 100
REPORTS = 100_000
OPEN = 5_000
ESCALATIONS = 10_000
DIGEST_UNITS = 1_000
QUERIES = 200
CHUNK = 10_000
LEAD = 9_000_000
CATEGORIES = [c.code for c in reports.DEFAULT_CATEGORIES]
PLACES = [p.value for p in reports.Place if p != reports.Place.my_flat]


def _remove(path: str) -> None:
    for tail in ("", "-wal", "-shm"):
        Path(path + tail).unlink(missing_ok=True)


async def _fresh(url: str) -> Database:
    """An empty schema (each measurement starts from its own data). A SQLite file is removed
    rather than emptied: with foreign keys on, dropping a table of 100,000 reports checks each
    row against every unindexed reference to it (minutes, and nothing a bot ever does)."""
    if url.startswith("sqlite"):
        _remove(url.split(":///", 1)[1])
    db = Database(url)
    async with db.engine.begin() as conn:
        await conn.run_sync(SQLModel.metadata.drop_all)
    await db.create_all()
    return db


async def _tree(
    db: Database, now: datetime, buildings: int, name: str
) -> tuple[int, Unit, list[Unit]]:
    """A community: an estate with `buildings` buildings, each with its group; a lead on the
    estate (the community's lead) and one on each building."""
    async with db.transaction() as s:
        community = await people.create_community(
            s, name=name, timezone="Asia/Shanghai", language="zh", now=now
        )
        assert community.id is not None
        estate = await people.create_unit(
            s, community_id=community.id, parent_id=None, kind="estate", name="小区", now=now
        )
        units = [
            await people.create_unit(
                s, community_id=community.id, parent_id=estate.id, kind="building",
                name=f"{b + 1}号楼", now=now,
            )
            for b in range(buildings)
        ]  # fmt: skip
        conn = await s.connection()
        leads = [LEAD + i for i in range(buildings + 1)]
        await conn.execute(
            insert(Person),
            [{"id": p, "name": f"负责人{p}", "created_at": now, "updated_at": now} for p in leads],
        )
        await conn.execute(
            insert(Role),
            [
                {"unit_id": u.id, "person_id": p, "kind": "lead", "created_at": now}
                for u, p in zip([estate, *units], leads, strict=True)
            ],
        )
        await conn.execute(
            insert(ChatLink),
            [
                {"chat_id": -(10**12) - (u.id or 0), "thread_id": 0, "unit_id": u.id,
                 "title": u.name, "linked_by": LEAD, "created_at": now}
                for u in units
            ],
        )  # fmt: skip
        return community.id, estate, units


def _rows(community_id: int, units: list[Unit], count: int, open_: int, now: datetime,
          *, start: int, due: datetime | None) -> list[dict[str, Any]]:  # fmt: skip
    rng = random.Random(start)
    rows = []
    for i in range(count):
        created = now - timedelta(minutes=rng.randrange(1, 60 * 24 * 365))
        is_open = i < open_
        status = "open" if is_open else rng.choice(["closed", "declined", "duplicate"])
        rows.append(
            {
                "community_id": community_id,
                "number": start + i + 1,
                "reporter_id": LEAD,
                "show_name": False,
                "category": rng.choice(CATEGORIES),
                "unit_id": units[i % len(units)].id,
                "place": rng.choice(PLACES),
                "text": "楼道灯不亮",
                "photos": [],
                "visibility": "group",
                "thread_id": 0,
                "status": status,
                "is_open": is_open,
                "rev": 0,
                "overdue": is_open and rng.random() < 0.1,
                "supporters": rng.randrange(0, 8),
                "escalation_level": 0,
                "escalate_at": due if is_open else None,
                "round": 0,
                "reopened": 0,
                "created_at": created,
                "updated_at": created,
                "resolved_at": None
                if is_open
                else created + timedelta(hours=rng.randrange(1, 100)),
            }
        )
    return rows


async def _load(db: Database, rows: list[dict[str, Any]], community_id: int) -> None:
    for i in range(0, len(rows), CHUNK):
        async with db.transaction() as s:
            await (await s.connection()).execute(insert(Report), rows[i : i + CHUNK])
    async with db.transaction() as s:
        await (await s.connection()).execute(
            insert(ReportSequence), [{"community_id": community_id, "last": len(rows)}]
        )


async def _timed(db: Database, work: Any, times: int) -> float:
    """Median milliseconds of `work(session)` in a read transaction."""
    spent = []
    for _ in range(times):
        async with db.transaction(write=False) as s:
            started = time.perf_counter()
            await work(s)
            spent.append((time.perf_counter() - started) * 1000)
    return statistics.median(spent)


async def lists(url: str, now: datetime) -> tuple[float, float]:
    db = await _fresh(url)
    try:
        community_id, estate, units = await _tree(db, now, BUILDINGS, "报事基准社区")
        await _load(db, _rows(community_id, units, REPORTS, OPEN, now, start=0, due=None),
                    community_id)  # fmt: skip
        async with db.transaction(write=False) as s:
            auth = await people.authority(s, person_id=LEAD, superadmin=False)
            scope = [u.id for u in await people.subtree(s, estate) if u.id is not None]
        assert auth.covers(estate)
        rng = random.Random(7)

        async def open_list(s: Any) -> None:
            page = await reports.open_list(
                s, community_id=community_id, unit_ids=scope, offset=0, limit=8
            )
            assert page.total == OPEN

        async def same(s: Any) -> None:
            await reports.duplicates(
                s, unit_id=rng.choice(units).id or 0, category=rng.choice(CATEGORIES),
                place=rng.choice(PLACES),
            )  # fmt: skip

        return await _timed(db, open_list, QUERIES), await _timed(db, same, QUERIES)
    finally:
        await db.dispose()


async def escalation(url: str, now: datetime) -> tuple[int, float]:
    """10,000 reports come due within one minute; the rhythm runs as it does, once a minute
    (at 30 s and 60 s). Missed: reports not escalated, or whose parent unit's leads got no
    card, after the run that follows that minute. `wall` is the longer run."""
    db = await _fresh(url)
    try:
        community_id, _estate, units = await _tree(db, now, BUILDINGS, "升级基准社区")
        rows = _rows(community_id, units, ESCALATIONS, ESCALATIONS, now, start=0, due=None)
        rng = random.Random(3)
        for row in rows:
            row["escalate_at"] = now + timedelta(seconds=rng.uniform(0, 60))
            row["overdue"] = False
        await _load(db, rows, community_id)
        ticks = []
        for tick in (30, 60):
            started = time.perf_counter()
            async with db.transaction() as s:
                await reports.due_work(s, now + timedelta(seconds=tick))
            ticks.append(time.perf_counter() - started)
        wall = max(ticks)
        async with db.transaction(write=False) as s:
            escalated = set(
                (await s.exec(select(Report.id).where(col(Report.escalation_level) >= 1))).all()
            )
            # The card telling the first level up (the estate's lead): card:<kind>:<id>:…
            told = {
                int(key.split(":")[2])
                for key in (
                    await s.exec(
                        select(outbox.Delivery.key).where(
                            col(outbox.Delivery.key).startswith(
                                outbox.card_key(reports.LEAD_CARD, 0).removesuffix("0:")
                            ),
                            col(outbox.Delivery.key).endswith(":overdue1r0"),
                        )
                    )
                ).all()
            }
        # Missed: not escalated, or escalated without a card to the leads above; and a tick
        # that takes over a minute would fall behind the rhythm, so it counts as missing all.
        missed = ESCALATIONS - len(escalated & told) if wall < 60 else ESCALATIONS
        return int(missed), wall
    finally:
        await db.dispose()


async def weekly_digest(url: str, now: datetime) -> float:
    """The digest for 1,000 units (10 reports each, half of them open), built and queued with
    every feature's section (reports, agenda and polls)."""
    assert "agenda" in digest.SECTIONS, agenda.__name__
    db = await _fresh(url)
    try:
        community_id, _estate, units = await _tree(db, now, DIGEST_UNITS, "周报基准社区")
        await _load(
            db, _rows(community_id, units, DIGEST_UNITS * 10, DIGEST_UNITS * 5, now, start=0,
                      due=None), community_id,
        )  # fmt: skip
        # Monday 09:00 in Shanghai after `now`.
        local = now.astimezone(ZoneInfo("Asia/Shanghai"))
        monday = local.date() + timedelta(days=(7 - local.weekday()) % 7 or 7)
        due = datetime.combine(monday, digest.DEFAULT_AT, local.tzinfo)
        started = time.perf_counter()
        async with db.transaction() as s:
            queued = await digest.weekly(s, due)
        wall = time.perf_counter() - started
        assert queued >= DIGEST_UNITS * 0.9, queued
        return wall
    finally:
        await db.dispose()


async def main(postgres: str | None) -> None:
    now = utcnow()
    with tempfile.TemporaryDirectory() as tmp:
        targets = [("sqlite", f"sqlite+aiosqlite:///{Path(tmp) / 'reports.db'}")]
        if postgres:
            targets.append(("postgresql", postgres))
        for name, url in targets:
            suffix = "" if name == "sqlite" else ".postgresql"
            open_ms, same_ms = await lists(url, now)
            print(f"reports.open_list.db_time{suffix}: {open_ms:.2f} ms", flush=True)
            print(f"reports.duplicates.db_time{suffix}: {same_ms:.2f} ms", flush=True)
            missed, wall = await escalation(url, now)
            print(f"reports.escalation.missed{suffix}: {missed}", flush=True)
            print(f"reports.escalation.wall{suffix}: {wall:.2f} s", flush=True)
            print(f"reports.digest.wall{suffix}: {await weekly_digest(url, now):.2f} s", flush=True)
