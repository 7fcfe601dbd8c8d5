"""The outbox against a real database: idempotent rows, claiming order, quiet hours."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

import pytest
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
        await outbox.finish(
            s, delivery_id=row.id, claim=row.claim, status=Status.sent, now=NOW, message_id=7
        )
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


async def test_defer_hands_rows_back_without_counting_an_attempt(db: Database) -> None:
    await _add(db, "a")
    later = NOW + timedelta(minutes=1)
    async with db.transaction() as s:
        (row,) = await outbox.claim_due(s, now=NOW, limit=5)
        assert row.id is not None and row.attempts == 1
        await outbox.defer(s, delivery_ids=[row.id], claim=row.claim, at=later)
    async with db.transaction() as s:
        assert await outbox.claim_due(s, now=NOW, limit=5) == []
        (again,) = await outbox.claim_due(s, now=later, limit=5)
        assert again.attempts == 1 and again.due_at == later  # the deferral did not count


async def test_retry_later_keeps_the_attempt_and_the_reason(db: Database) -> None:
    await _add(db, "a")
    async with db.transaction() as s:
        (row,) = await outbox.claim_due(s, now=NOW, limit=5)
        assert row.id is not None
        await outbox.retry_later(s, delivery_id=row.id, claim=row.claim,
                                 at=NOW + timedelta(seconds=5), error="TimedOut")  # fmt: skip
    async with db.transaction(write=False) as s:
        (stored,) = (await s.exec(select(Delivery))).all()
        assert (stored.attempts, stored.last_error, stored.lease_until) == (1, "TimedOut", None)
        assert stored.due_at == NOW + timedelta(seconds=5)


async def test_next_due_leaves_out_rows_another_sender_holds(db: Database) -> None:
    await _add(db, "held")
    await _add(db, "later", due=NOW + timedelta(minutes=10))
    async with db.transaction() as s:
        await outbox.claim_due(s, now=NOW, limit=1)
    async with db.transaction(write=False) as s:
        assert await outbox.next_due_at(s) == NOW  # any pending row
        assert await outbox.next_due_at(s, now=NOW) == NOW + timedelta(minutes=10)
        # once the lease runs out, the held row is due work again
        assert await outbox.next_due_at(s, now=NOW + outbox.LEASE + timedelta(seconds=1)) == NOW


async def test_progress_and_finish_record_the_parts_of_a_long_text(db: Database) -> None:
    await _add(db, "long")
    async with db.transaction() as s:
        (row,) = await outbox.claim_due(s, now=NOW, limit=1)
        assert row.id is not None
        await outbox.progress(s, delivery_id=row.id, claim=row.claim, parts_sent=1, message_id=41)
        await outbox.finish(
            s, delivery_id=row.id, claim=row.claim, status=Status.sent, now=NOW, parts_sent=3
        )
        await outbox.note_error(
            s, delivery_id=row.id, claim=row.claim, error="pin: not enough rights"
        )
    async with db.transaction(write=False) as s:
        (stored,) = (await s.exec(select(Delivery))).all()
        assert (stored.status, stored.parts_sent, stored.message_id) == (Status.sent, 3, 41)
        assert stored.sent_at == NOW and stored.last_error == "pin: not enough rights"


async def test_abandon_and_retarget_touch_only_that_chats_pending_rows(db: Database) -> None:
    async with db.transaction() as s:
        for key, chat, due in (
            ("a", -1, NOW),
            ("b", -1, NOW + timedelta(days=1)),
            ("c", -2, NOW),
            ("d", 7, NOW),
            ("e", 7, NOW + timedelta(days=1)),
        ):
            await outbox.enqueue(s, key=key, chat_id=chat, template="t", context={},
                                 due_at=due, now=NOW)  # fmt: skip
    async with db.transaction() as s:
        assert await outbox.retarget(s, old_chat_id=-2, new_chat_id=-3) == 1
        assert await outbox.abandon_chat(s, chat_id=-1, now=NOW, reason="kicked") == 2
        # a private chat: only what is due now; a later reminder may still find them
        assert await outbox.abandon_chat(s, chat_id=7, now=NOW, reason="403", due_until=NOW) == 1
    async with db.transaction(write=False) as s:
        found = {r.key: r for r in (await s.exec(select(Delivery))).all()}
    assert {k: found[k].status for k in "abcde"} == {
        "a": Status.gone, "b": Status.gone, "c": Status.pending, "d": Status.gone,
        "e": Status.pending,
    }  # fmt: skip
    assert found["c"].chat_id == -3 and found["a"].last_error == "kicked"


async def test_context_keys_the_renderer_uses_itself_are_refused(db: Database) -> None:
    async with db.transaction() as s:
        with pytest.raises(ValueError, match="reserved"):
            await outbox.enqueue(s, key="x", chat_id=1, template="t", context={"name": "王"},
                                 due_at=NOW, now=NOW)  # fmt: skip


def test_quiet_hours_within_one_day_and_in_another_zone() -> None:
    # quiet 13:00–14:00 (a nap), Berlin time
    nap = datetime(2026, 7, 1, 11, 30, tzinfo=UTC)  # 13:30 in Berlin (summer time)
    assert outbox.after_quiet_hours(
        nap, zone="Europe/Berlin", quiet_from=time(13), quiet_until=time(14)
    ) == datetime(2026, 7, 1, 12, 0, tzinfo=UTC)
    assert outbox.after_quiet_hours(
        nap - timedelta(hours=1), zone="Europe/Berlin", quiet_from=time(13), quiet_until=time(14)
    ) == nap - timedelta(hours=1)


async def test_a_commit_that_queued_rows_tells_the_listeners_once(db: Database) -> None:
    woken: list[str] = []
    db.on_queued.append(lambda: woken.append("sender"))
    async with db.transaction() as s:  # nothing queued
        await s.exec(select(Delivery))
    assert woken == []

    async def queue_then_fail() -> None:
        async with db.transaction() as s:  # queued, then rolled back: nothing to send
            await outbox.enqueue(
                s, key="x", chat_id=1, template="t", context={}, due_at=NOW, now=NOW
            )
            raise RuntimeError

    with pytest.raises(RuntimeError):
        await queue_then_fail()
    assert woken == []
    await _add(db, "y")
    assert woken == ["sender"]
    await _add(db, "y")  # the same key again adds no row: no wake-up
    assert woken == ["sender"]


async def test_a_stale_claim_cannot_record_an_outcome(db: Database) -> None:
    await _add(db, "a")
    async with db.transaction() as s:
        (first,) = await outbox.claim_due(s, now=NOW, limit=1)
    later = NOW + outbox.LEASE + timedelta(seconds=1)
    async with db.transaction() as s:
        (second,) = await outbox.claim_due(s, now=later, limit=1)
        assert second.claim != first.claim and second.claim is not None
    async with db.transaction() as s:
        assert first.id is not None
        for stale in (
            outbox.finish(s, delivery_id=first.id, claim=first.claim, status=Status.failed,
                          now=later),
            outbox.retry_later(s, delivery_id=first.id, claim=first.claim, at=later),
            outbox.progress(s, delivery_id=first.id, claim=first.claim, parts_sent=2,
                            message_id=9),
        ):  # fmt: skip
            assert not await stale
        assert await outbox.defer(s, delivery_ids=[first.id], claim=first.claim, at=later) == 0
        assert await outbox.finish(
            s, delivery_id=first.id, claim=second.claim, status=Status.sent, now=later,
            message_id=5,
        )  # fmt: skip
    async with db.transaction(write=False) as s:
        row = await s.get(Delivery, first.id)
        assert row is not None
        assert (row.status, row.message_id, row.parts_sent, row.claim) == ("sent", 5, 0, None)


async def test_withdraw_and_reschedule_by_key_prefix(db: Database) -> None:
    for key in ("task:1:a", "task:1:b", "task:12:a", "task:1:c"):
        await _add(db, key, due=NOW + timedelta(hours=1))
    async with db.transaction() as s:
        (held,) = await outbox.claim_due(s, now=NOW + timedelta(hours=1), limit=1)
        assert held.key == "task:1:a"
    async with db.transaction() as s:
        moved = await outbox.reschedule(
            s, key_prefix="task:1:", due_at=NOW + timedelta(hours=3), now=NOW
        )
        assert moved == 2  # b and c; a is being sent, 12 is another task
        assert await outbox.withdraw(s, key_prefix="task:1:", now=NOW, reason="cancelled") == 2
    async with db.transaction(write=False) as s:
        found = {r.key: r for r in (await s.exec(select(Delivery))).all()}
    assert found["task:1:a"].status == Status.sent  # in flight: resolved as sent
    assert found["task:1:a"].last_error == outbox.WITHDRAWN_IN_FLIGHT
    assert [found[k].status for k in ("task:1:b", "task:1:c")] == [Status.failed] * 2
    assert found["task:1:b"].due_at == NOW + timedelta(hours=3)
    assert found["task:12:a"].status == Status.pending
    assert found["task:12:a"].due_at == NOW + timedelta(hours=1)
