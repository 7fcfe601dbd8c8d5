"""Live cards through the sender and the stand-in: posted once per chat, edited in place with the
latest state, coalesced, in the community's language; and claim tokens with two senders."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from jinja2 import ChoiceLoader, DictLoader
from sqlmodel import col, select

from bot import cards, delivery
from bot.context import LinliApp
from bot.db import Database
from bot.standin import ApiError, Call, FakeTelegram
from models import outbox, people
from models.outbox import Delivery, Status
from tests.integration import test_delivery as base
from tests.integration.conftest import Clock
from tests.integration.test_delivery import GROUP, OTHER_GROUP, World, make_app, put, rows

app, telegram, world = base.app, base.telegram, base.world  # the delivery tests' fixtures

CARD_TEMPLATES = {
    "zh/test/card.html.j2": "【卡片】{{ title }}",
    "en/test/card.html.j2": "[Card] {{ title }}",
}


async def community_card(req: cards.CardRequest) -> cards.Card | None:
    """A card showing a community's name: the state a test changes is the name."""
    community = await req.session.get(people.Community, req.subject_id)
    if community is None:
        return None
    from telegram import InlineKeyboardButton, InlineKeyboardMarkup

    markup = InlineKeyboardMarkup([[InlineKeyboardButton("OK", callback_data=f"tc:{req.lang}")]])
    return cards.Card("test/card", {"title": community.name}, markup)


@pytest.fixture
def card_app(app: LinliApp) -> LinliApp:
    cards.register(app, "tc", community_card)
    renderer = app.bot_data.services.renderer
    assert renderer.env.loader is not None
    renderer.env.loader = ChoiceLoader([DictLoader(CARD_TEMPLATES), renderer.env.loader])
    return app


async def rename(db: Database, world: World, name: str, clock: Clock) -> int:
    async with db.transaction() as s:
        community = await s.get(people.Community, world.community_id)
        assert community is not None
        community.name = name
        return await outbox.mark_changed(s, kind="tc", subject_id=world.community_id, now=clock())


async def post(db: Database, world: World, clock: Clock) -> None:
    async with db.transaction() as s:
        building = await people.get_unit(s, world.building_id)
        assert await outbox.post_card_to_unit(
            s, kind="tc", subject_id=world.community_id, unit=building, now=clock()
        ) == 1  # fmt: skip


def edits(telegram: FakeTelegram, chat_id: int = GROUP) -> list[Call]:
    return [c for c in telegram.calls if c.method == "editMessageText" and c.chat_id == chat_id]


async def test_a_card_is_posted_with_buttons_and_edited_in_place(
    card_app: LinliApp, db: Database, world: World, telegram: FakeTelegram, clock: Clock
) -> None:
    await post(db, world, clock)
    await delivery.drain(card_app)
    (posted,) = telegram.sent(GROUP)
    assert posted.text == "【卡片】幸福里" and posted.buttons[0][0]["callback_data"] == "tc:zh"
    clock.advance(seconds=1)
    assert await rename(db, world, "幸福里社区", clock) == 1
    await delivery.drain(card_app)
    (edit,) = edits(telegram)
    assert edit.params["message_id"] == posted.result["message_id"]
    assert edit.text == "【卡片】幸福里社区" and edit.buttons == posted.buttons
    assert len(telegram.sent(GROUP)) == 1  # no second message


async def test_a_change_before_the_post_goes_needs_no_edit(
    card_app: LinliApp, db: Database, world: World, telegram: FakeTelegram, clock: Clock
) -> None:
    await post(db, world, clock)
    assert await rename(db, world, "新名字", clock) == 0
    await delivery.drain(card_app)
    assert [c.text for c in telegram.sent(GROUP)] == ["【卡片】新名字"] and not edits(telegram)


async def test_thirty_taps_in_ten_seconds_become_a_few_edits_with_the_latest_state(
    card_app: LinliApp, db: Database, world: World, telegram: FakeTelegram, clock: Clock
) -> None:
    await post(db, world, clock)
    await delivery.drain(card_app)
    for tap in range(30):
        clock.advance(seconds=1 / 3)
        await rename(db, world, f"第{tap + 1}次", clock)
        await delivery.drain(card_app)
    clock.advance(seconds=outbox.CARD_GAP.total_seconds())
    await delivery.drain(card_app)
    made = edits(telegram)
    assert 2 <= len(made) <= 4, [c.text for c in made]  # 10 s at one edit per 5 s, plus the last
    assert made[-1].text == "【卡片】第30次"
    async with db.transaction(write=False) as s:
        edit_rows = (await s.exec(select(Delivery).where(col(Delivery.edits).is_not(None)))).all()
    assert len(edit_rows) == 1  # one edit row, re-armed, never thirty


async def test_a_card_in_several_chats_is_edited_in_each_in_the_communitys_language(
    card_app: LinliApp, db: Database, world: World, telegram: FakeTelegram, clock: Clock
) -> None:
    async with db.transaction() as s:
        community = await s.get(people.Community, world.community_id)
        assert community is not None
        community.language = "en"  # everyone in its groups reads English now
        for chat in (GROUP, OTHER_GROUP):
            await outbox.post_card(
                s, kind="tc", subject_id=world.community_id, chat_id=chat, now=clock(),
                community_id=world.community_id,
            )  # fmt: skip
    await delivery.drain(card_app)
    clock.advance(seconds=1)
    assert await rename(db, world, "Happy Lane", clock) == 2
    await delivery.drain(card_app)
    for chat in (GROUP, OTHER_GROUP):
        assert [c.text for c in edits(telegram, chat)] == ["[Card] Happy Lane"]
        assert edits(telegram, chat)[0].buttons[0][0]["callback_data"] == "tc:en"


async def test_an_edit_in_flight_when_the_card_changes_goes_again_with_the_new_state(
    card_app: LinliApp, db: Database, world: World, telegram: FakeTelegram, clock: Clock
) -> None:
    await post(db, world, clock)
    await delivery.drain(card_app)
    clock.advance(seconds=1)
    await rename(db, world, "甲", clock)
    async with db.transaction() as s:  # a sender holds the edit, rendered with "甲"
        (held,) = await outbox.claim_due(s, now=clock(), limit=5)
    await rename(db, world, "乙", clock)  # ... when this change commits
    async with db.transaction() as s:
        assert held.id is not None
        assert not await outbox.finish(
            s, delivery_id=held.id, claim=held.claim, status=Status.sent, now=clock()
        )  # its outcome no longer counts
    clock.advance(seconds=outbox.CARD_GAP.total_seconds())
    await delivery.drain(card_app)
    assert [c.text for c in edits(telegram)] == ["【卡片】乙"]


async def test_a_deleted_card_message_ends_its_edit_and_not_the_chat(
    card_app: LinliApp, db: Database, world: World, telegram: FakeTelegram, clock: Clock
) -> None:
    await post(db, world, clock)
    await delivery.drain(card_app)
    (posted,) = telegram.sent(GROUP)
    del telegram.messages[GROUP][posted.result["message_id"]]  # an admin deleted it
    clock.advance(seconds=1)
    await rename(db, world, "乙", clock)
    await put(db, clock, "after", GROUP, body="还能收到")
    await delivery.drain(card_app)
    found = await rows(db)
    edit_row = next(r for k, r in found.items() if k.endswith(":edit"))
    assert edit_row.status == Status.gone and found["after"].status == Status.sent


async def test_withdrawing_a_card_stops_its_unsent_copies(
    card_app: LinliApp, db: Database, world: World, telegram: FakeTelegram, clock: Clock
) -> None:
    await post(db, world, clock)
    async with db.transaction() as s:
        key = outbox.card_key("tc", world.community_id)
        assert await outbox.withdraw(s, key_prefix=key, now=clock()) == 1
    await delivery.drain(card_app)
    assert telegram.sent(GROUP) == []


# --- two senders on one database (claim tokens) -------------------------------------------------


class Stalling(FakeTelegram):
    """A stand-in whose sends wait for a go-ahead, then answer as told."""

    def __init__(self, clock: Clock, *, answer: ApiError | None = None) -> None:
        super().__init__(clock=lambda: clock().timestamp())
        self.entered = asyncio.Event()
        self.go = asyncio.Event()
        self.answer = answer

    async def do_request(self, url: str, method: str, *args: Any, **kwargs: Any) -> Any:
        if url.endswith("/sendMessage"):
            self.entered.set()
            await self.go.wait()
            if self.answer is not None:
                return self._error(Call("sendMessage", {}), self.answer)
        return await super().do_request(url, method, *args, **kwargs)


@pytest.fixture
async def stalled(db: Database, clock: Clock) -> AsyncIterator[tuple[LinliApp, Stalling]]:
    tg = Stalling(clock, answer=ApiError(400, "Bad Request: message is too long"))
    tg.add_chat({"id": GROUP, "type": "supergroup", "title": "3号楼"})
    other = make_app(db, tg, clock)
    async with other:
        yield other, tg


async def test_a_sender_stalled_past_its_lease_cannot_overwrite_the_other_senders_outcome(
    app: LinliApp,
    stalled: tuple[LinliApp, Stalling],
    db: Database,
    world: World,
    telegram: FakeTelegram,
    clock: Clock,
) -> None:
    slow, slow_tg = stalled
    await put(db, clock, "n:1", GROUP, body="一次")
    first = asyncio.create_task(delivery.drain(slow))  # claims the row, then stalls in the send
    await asyncio.wait_for(slow_tg.entered.wait(), 10)
    clock.advance(seconds=outbox.LEASE.total_seconds() + 1)  # its lease runs out
    await delivery.drain(app)  # the other sender takes the row over and sends it
    (sent,) = telegram.sent(GROUP)
    slow_tg.go.set()  # the stalled send comes back refused, and would record `failed`
    await asyncio.wait_for(first, 10)
    row = (await rows(db))["n:1"]
    assert row.status == Status.sent and row.message_id == sent.result["message_id"]
    assert row.claim is None and row.last_error is None


async def test_withdrawing_a_row_in_flight_reports_it_sent_whatever_the_sender_says(
    stalled: tuple[LinliApp, Stalling], db: Database, world: World, clock: Clock
) -> None:
    slow, slow_tg = stalled
    await put(db, clock, "ann:7:x", GROUP, body="撤回")
    first = asyncio.create_task(delivery.drain(slow))
    await asyncio.wait_for(slow_tg.entered.wait(), 10)
    async with db.transaction() as s:
        assert await outbox.withdraw(s, key_prefix="ann:7:", now=clock()) == 0
    slow_tg.go.set()
    await asyncio.wait_for(first, 10)
    row = (await rows(db))["ann:7:x"]
    assert row.status == Status.sent and row.last_error == outbox.WITHDRAWN_IN_FLIGHT
    async with db.transaction(write=False) as s:
        report = await outbox.delivery_report(s, key_prefix="ann:7:")
    assert len(report[Status.sent]) == 1 and not report[Status.failed]


async def test_a_plain_notice_is_edited_by_its_key(
    app: LinliApp, db: Database, world: World, telegram: FakeTelegram, clock: Clock
) -> None:
    await put(db, clock, "ann:9:g", GROUP, body="周六 9:00 打扫楼道")
    async with db.transaction() as s:  # not sent yet: it simply goes with the new text
        assert await outbox.edit_by_key(
            s, key="ann:9:g", context={"body": "周六 10:00 打扫楼道"}, now=clock()
        )
    await delivery.drain(app)
    (posted,) = telegram.sent(GROUP)
    assert posted.text == "【通知】周六 10:00 打扫楼道"
    clock.advance(seconds=1)
    for hour in (11, 12):  # two changes at once: one edit, with the last text
        async with db.transaction() as s:
            assert await outbox.edit_by_key(
                s, key="ann:9:g", context={"body": f"周六 {hour}:00 打扫楼道"}, now=clock()
            )
    await delivery.drain(app)
    (edit,) = edits(telegram)
    assert edit.params["message_id"] == posted.result["message_id"]
    assert edit.text == "【通知】周六 12:00 打扫楼道" and len(telegram.sent(GROUP)) == 1
    async with db.transaction() as s:
        assert not await outbox.edit_by_key(s, key="nope", context={}, now=clock())
