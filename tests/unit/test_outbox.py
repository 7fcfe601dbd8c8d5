"""The outbox against a real database: idempotent rows, claiming order, quiet hours."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

from sqlmodel import select

from bot.db import Database
from models import outbox, people
from models.outbox import Delivery, Status
from tests.conftest import NOW


async def _add(db: Database, key: str, *, due: datetime = NOW, priority: int = 5) -> bool:
    async with db.transaction() as s:
        return await outbox.enqueue(
            s, key=key, chat_id=-100, template="t", context={"n": 1}, due_at=due, now=NOW,
            priority=priority,
        )  # fmt: skip


async def test_the_same_key_is_one_row(db: Database) -> None:
    assert await _add(db, "ann:1:-100:0")
    assert not await _add(db, "ann:1:-100:0")
    async with db.transaction(write=False) as s:
        rows = (await s.exec(select(Delivery))).all()
        assert [r.key for r in rows] == ["ann:1:-100:0"] and rows[0].context == {"n": 1}


async def test_claim_takes_due_rows_most_urgent_first_and_leases_them(db: Database) -> None:
    await _add(db, "late", due=NOW + timedelta(hours=1))
    await _add(db, "normal", priority=5)
    await _add(db, "urgent", priority=0, due=NOW + timedelta(seconds=1))
    async with db.transaction() as s:
        claimed = await outbox.claim_due(s, now=NOW + timedelta(seconds=2), limit=10)
        assert [r.key for r in claimed] == ["urgent", "normal"]
    async with db.transaction() as s:
        assert await outbox.claim_due(s, now=NOW + timedelta(seconds=3), limit=10) == []
        # a crashed sender's lease runs out and the rows are taken again
        again = await outbox.claim_due(s, now=NOW + outbox.LEASE + timedelta(seconds=3), limit=10)
        assert {r.key for r in again} == {"urgent", "normal"} and again[0].attempts == 2


async def test_finish_and_next_due(db: Database) -> None:
    await _add(db, "a")
    await _add(db, "b", due=NOW + timedelta(minutes=5))
    async with db.transaction() as s:
        (row,) = await outbox.claim_due(s, now=NOW, limit=1)
        assert row.id is not None
        await outbox.finish(s, delivery_id=row.id, status=Status.sent, now=NOW, message_id=7)
    async with db.transaction(write=False) as s:
        assert await outbox.next_due_at(s) == NOW + timedelta(minutes=5)


async def test_enqueue_to_a_unit_and_its_subtree(db: Database) -> None:
    async with db.transaction() as s:
        c = await people.create_community(
            s, name="c", timezone="Asia/Shanghai", language="zh", now=NOW
        )
        assert c.id is not None
        grid = await people.create_unit(
            s, community_id=c.id, parent_id=None, kind="grid", name="g", now=NOW
        )
        b = await people.create_unit(
            s, community_id=c.id, parent_id=grid.id, kind="building", name="b", now=NOW
        )
        for chat, unit in ((-1, grid), (-2, b)):
            assert unit.id is not None
            await people.link_chat(
                s, chat_id=chat, thread_id=0, unit_id=unit.id, title="x", by=1, now=NOW
            )
        added = await outbox.enqueue_to_unit(
            s,
            key="ann:9",
            unit=grid,
            subtree_too=True,
            template="t",
            context={},
            due_at=NOW,
            now=NOW,
        )
        again = await outbox.enqueue_to_unit(
            s,
            key="ann:9",
            unit=grid,
            subtree_too=True,
            template="t",
            context={},
            due_at=NOW,
            now=NOW,
        )
        only = await outbox.enqueue_to_unit(
            s,
            key="ann:10",
            unit=grid,
            subtree_too=False,
            template="t",
            context={},
            due_at=NOW,
            now=NOW,
        )
    assert (added, again, only) == (2, 0, 1)


def test_quiet_hours_wait_for_morning_in_the_communitys_zone() -> None:
    night = datetime(2026, 11, 20, 15, 0, tzinfo=UTC)  # 23:00 in Shanghai
    wake = outbox.after_quiet_hours(
        night, zone="Asia/Shanghai", quiet_from=time(22), quiet_until=time(8)
    )
    assert wake == datetime(2026, 11, 21, 0, 0, tzinfo=UTC)  # 08:00 next morning
    small_hours = datetime(2026, 11, 20, 19, 30, tzinfo=UTC)  # 03:30
    assert outbox.after_quiet_hours(
        small_hours, zone="Asia/Shanghai", quiet_from=time(22), quiet_until=time(8)
    ) == datetime(2026, 11, 21, 0, 0, tzinfo=UTC)
    assert (
        outbox.after_quiet_hours(
            NOW, zone="Asia/Shanghai", quiet_from=time(22), quiet_until=time(8)
        )
        == NOW
    )
