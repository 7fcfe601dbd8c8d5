"""Volunteer tasks under load, on a simulated clock with the stand-in enforcing Telegram's limits.

- A burst: 300 neighbours tap Sign up on one 50-slot card within 10 seconds. Every tap must
  end with a recorded outcome (in or waitlisted), the card must be edited in place within the
  group's pace (edits coalesced), and the last version of the card must match the database.
- Reminders: 2,000 tasks with 20 volunteers each, all starting in the same hour: 80,000
  private reminders (24 h and 1 h before), the sender restarted half-way through. None may
  be missed (sent after the start, or not at all) and none sent twice.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import func, insert
from sqlmodel import SQLModel, col, select

from bench.delivery import SimClock, enforcing, fresh_db, make_app, out, pending
from bot import cards, delivery
from bot.db import Database
from bot.standin import Scene, visible
from handlers.tasks import task_card
from models import people, tasks
from models.outbox import Delivery, Status
from models.tasks import TaskSignup

START = datetime(2026, 11, 20, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai
GROUP = -1_001_500_000_000
TAPPERS, SLOTS, BURST_SECONDS = 300, 50, 10.0
TASKS, VOLUNTEERS = 2_000, 20
BATCH = 5_000


async def _community(db: Database, residents: int, *, base: int) -> tuple[int, int]:
    """One community, one building linked to a group, `residents` verified neighbours with
    ids base…base+residents-1 (inserted in bulk: the setup is not what is measured)."""
    async with db.transaction() as s:
        c = await people.create_community(
            s, name="基准社区", timezone="Asia/Shanghai", language="zh", now=START
        )
        b = await people.create_unit(
            s, community_id=c.id or 0, parent_id=None, kind="building", name="1号楼", now=START
        )
        lead = await people.touch_person(
            s, person_id=1, name="组长", username=None, language_code="zh", now=START
        )
        s.add(people.Role(unit_id=b.id or 0, person_id=lead.id, kind="lead", created_at=START))
        await people.link_chat(
            s, chat_id=GROUP, thread_id=0, unit_id=b.id or 0, title="1号楼", by=1, now=START
        )
    assert c.id is not None and b.id is not None
    tables = SQLModel.metadata.tables
    ids = list(range(base, base + residents))
    persons = [
        {
            "id": i,
            "name": f"居民{i}",
            "username": None,
            "language_code": "zh-hans",
            "lang": None,
            "created_at": START,
            "updated_at": START,
        }
        for i in ids
    ]
    homes = [
        {
            "id": n + 10,
            "community_id": c.id,
            "building_id": b.id,
            "unit_id": b.id,
            "flat": f"1-{n}",
            "area_centi_m2": None,
            "code": f"B{n:09d}",
            "created_at": START,
        }
        for n, _ in enumerate(ids)
    ]
    members = [
        {
            "community_id": c.id,
            "person_id": i,
            "household_id": n + 10,
            "status": "verified",
            "requested_at": START,
            "decided_at": START,
            "decided_by": None,
        }
        for n, i in enumerate(ids)
    ]
    for table, rows in (("person", persons), ("household", homes), ("resident", members)):
        for i in range(0, len(rows), BATCH):
            async with db.engine.begin() as conn:
                await conn.execute(insert(tables[table]), rows[i : i + BATCH])
    return c.id, b.id


async def _task(db: Database, unit: int, *, starts: datetime, slots: int, now: datetime) -> int:
    async with db.transaction() as s:
        auth = await people.authority(s, person_id=1, superadmin=False)
        task = await tasks.create_task(
            s,
            auth=auth,
            unit_id=unit,
            now=now,
            fields=tasks.Fields(
                title="清扫楼道",
                starts_at=starts,
                ends_at=starts + timedelta(hours=2),
                place="1号楼门口",
                slots=slots,
            ),
        )
    assert task.id is not None
    return task.id


async def burst(url: str, suffix: str = "") -> None:
    db = await fresh_db(url)
    clock = SimClock(START)
    telegram = enforcing(clock)
    telegram.fake.transcript = True
    _, unit = await _community(db, TAPPERS, base=3_000_000)
    group = {"id": GROUP, "type": "supergroup", "title": "1号楼邻里群"}
    telegram.fake.add_chat(group, bot_status="administrator")
    task_id = await _task(db, unit, starts=START + timedelta(days=2), slots=SLOTS, now=START)
    app, _ = make_app(db, telegram.fake, clock)
    scene = Scene(app, telegram.fake)
    edit_times: list[float] = []

    async def drain() -> None:
        """Send what is due, noting when each edit of the card went out."""
        before = len(telegram.fake.calls)
        await delivery.drain(app)
        for call in telegram.fake.calls[before:]:
            if call.method == "editMessageText" and call.ok:
                edit_times.append(clock.time())

    async with app:
        await drain()
        (card,) = [c for c in telegram.fake.calls if c.method == "sendMessage" and c.ok]
        first_tap = clock.now()
        started = time.perf_counter()
        running = []
        for i in range(TAPPERS):
            clock.us = max(
                clock.us, int((first_tap.timestamp() + i * BURST_SECONDS / TAPPERS) * 1e6)
            )
            person = scene.person(3_000_000 + i, f"居民{i}")
            running.append(asyncio.create_task(scene.press(person, card, f"tk:s:{task_id}")))
            if i % 10 == 9:
                await asyncio.gather(*running)
                running.clear()
                await drain()
        await asyncio.gather(*running)
        for _ in range(60):  # the minute after: coalesced edits catch up
            clock.us += 1_000_000
            await drain()
        wall = time.perf_counter() - started
        async with db.transaction(write=False) as s:
            recorded = (
                await s.exec(
                    select(func.count())
                    .select_from(TaskSignup)
                    .where(
                        TaskSignup.task_id == task_id,
                        col(TaskSignup.status).in_(list(tasks.ACTIVE)),
                    )
                )
            ).one()
            inside = await tasks.count_in(s, task_id)
            built = await task_card(
                cards.CardRequest(
                    s, task_id, "zh", GROUP, clock.now(), app.bot_data.services.renderer
                )
            )
        assert built is not None
        expected = visible(
            app.bot_data.services.renderer.render("zh", built.template, **built.params)
        )
    message_id = card.result["message_id"]
    edits = [
        c
        for c in telegram.fake.calls
        if c.method == "editMessageText" and c.ok and c.params.get("message_id") == message_id
    ]
    final = edits[-1].text if edits else card.text
    out(f"tasks.burst.signups{suffix}", TAPPERS, "taps")
    out(f"tasks.burst.in{suffix}", inside)
    out(f"tasks.burst.lost{suffix}", TAPPERS - int(recorded))
    out(f"tasks.burst.card_edits{suffix}", len(edits))
    out(f"tasks.burst.card_edits_per_min{suffix}", busiest_minute(edit_times))
    out(f"tasks.burst.card_correct{suffix}", int(final == expected and inside == SLOTS))
    out(f"tasks.burst.http_429{suffix}", telegram.fake.too_many)
    out(f"tasks.burst.wall{suffix}", wall, "s")
    await db.dispose()


def busiest_minute(moments: list[float]) -> int:
    """The most edits in any 60 seconds."""
    moments = sorted(moments)
    return max(
        (sum(1 for u in moments[i:] if u < t + 60) for i, t in enumerate(moments)), default=0
    )


async def reminders(url: str, count: int, suffix: str = "") -> None:
    """`count` tasks of 20 volunteers, all starting within the same hour; the sender restarts
    half-way. Each volunteer must get both reminders before the start, once."""
    db = await fresh_db(url)
    volunteers = count * VOLUNTEERS
    base = 4_000_000
    _, unit = await _community(db, volunteers, base=base)
    starts = START + timedelta(days=2, hours=5)  # 15:00 local: no quiet hours in the way
    created = time.perf_counter()
    task_ids = []
    for n in range(count):
        task_ids.append(
            await _task(
                db,
                unit,
                starts=starts + timedelta(seconds=3600 * n / count),
                slots=VOLUNTEERS,
                now=START,
            )
        )
    # The sign-ups in bulk (the burst measures taps); their reminders by the domain's own call.
    signups = [
        {
            "task_id": task_id,
            "person_id": base + n * VOLUNTEERS + v,
            "by": base + n * VOLUNTEERS + v,
            "status": "signed_up",
            "seq": v + 1,
            "hidden": False,
            "signed_at": START,
            "updated_at": START,
        }
        for n, task_id in enumerate(task_ids)
        for v in range(VOLUNTEERS)
    ]
    for i in range(0, len(signups), BATCH):
        async with db.engine.begin() as conn:
            await conn.execute(
                insert(SQLModel.metadata.tables["task_signup"]), signups[i : i + BATCH]
            )
    for i in range(0, count, 100):
        async with db.transaction() as s:
            for n, task_id in enumerate(task_ids[i : i + 100], start=i):
                task = await tasks.get_task(s, task_id)
                persons = [base + n * VOLUNTEERS + v for v in range(VOLUNTEERS)]
                await tasks.remind(s, task, persons, now=START)
    setup = time.perf_counter() - created
    async with db.transaction() as s:  # the cards are not what this measures
        await s.exec(
            Delivery.__table__.delete().where(col(Delivery.key).startswith("card:"))  # type: ignore[attr-defined]
        )
    clock = SimClock(START)
    telegram = enforcing(clock)
    telegram.fake.started.update(range(base, base + volunteers))
    expected = 2 * volunteers
    started = time.perf_counter()
    # A restart in the middle of the 24-hour round: a new application on the same database.
    for half in (0, 1):
        app, _ = make_app(db, telegram.fake, clock)
        async with app:
            delivery.start_sender(app)
            goal = expected // 4 if half == 0 else expected
            while time.perf_counter() - started < 1800:
                await asyncio.sleep(0.5)
                if sum(telegram.fake.delivered.values()) >= goal or await pending(db) == 0:
                    break
            await delivery.stop_sender(app)
    wall = time.perf_counter() - started
    async with db.transaction(write=False) as s:
        starts_at = dict((await s.exec(select(tasks.Task.id, tasks.Task.starts_at))).all())
        rows = (
            await s.exec(
                select(Delivery.key, Delivery.status, Delivery.sent_at).where(
                    col(Delivery.key).startswith("taskrem:")
                )
            )
        ).all()
    on_time = sum(
        1
        for key, status, sent in rows
        if status == Status.sent and sent is not None and sent <= starts_at[int(key.split(":")[1])]
    )
    duplicates = sum(max(0, n - 2) for n in telegram.fake.delivered.values())
    out(f"tasks.reminders.tasks{suffix}", count)
    out(f"tasks.reminders.expected{suffix}", expected)
    out(f"tasks.reminders.missed{suffix}", expected - on_time)
    out(f"tasks.reminders.duplicates{suffix}", duplicates)
    out(f"tasks.reminders.http_429{suffix}", telegram.fake.too_many)
    out(f"tasks.reminders.setup{suffix}", setup, "s")
    out(f"tasks.reminders.wall{suffix}", wall, "s")
    await db.dispose()


async def main(postgres_url: str | None) -> None:
    """SQLite (the embedded default, the harder case for one writer), then PostgreSQL when a
    database is given: the same figures, each name followed by `.postgres`."""
    count = int(os.environ.get("LINLI_BENCH_TASKS", TASKS))
    out("tasks.clock", "simulated (sender and stand-in share it; 429s enforced)")
    with tempfile.TemporaryDirectory() as tmp:
        await burst(f"sqlite+aiosqlite:///{Path(tmp)}/burst.db")
        await reminders(f"sqlite+aiosqlite:///{Path(tmp)}/reminders.db", count)
    if postgres_url:
        await burst(postgres_url, ".postgres")
        await reminders(postgres_url, count, ".postgres")
    else:
        print("tasks.postgres: skipped (set LINLI_BENCH_DATABASE_URL)", flush=True)
