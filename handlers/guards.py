"""First handler group: drop repeats and floods, ignore what we do not serve, know the person."""

from __future__ import annotations

import time
from collections import OrderedDict, deque

from telegram import Update
from telegram.constants import ChatType
from telegram.ext import ApplicationHandlerStop

from bot.context import LinliContext
from models import people

RECENT_UPDATES = 20_000
FLOOD_WINDOW = 10.0  # seconds
FLOOD_LIMIT = (
    20  # updates per person per window; a person tapping faster is a script or a stuck key
)


class Guard:
    """State the guards keep in memory; one per application."""

    def __init__(self) -> None:
        self.recent: OrderedDict[int, None] = OrderedDict()
        self.activity: dict[int, deque[float]] = {}

    def seen_before(self, update_id: int) -> bool:
        if update_id in self.recent:
            return True
        self.recent[update_id] = None
        if len(self.recent) > RECENT_UPDATES:
            self.recent.popitem(last=False)
        return False

    def flooding(self, user_id: int, now: float) -> bool:
        times = self.activity.setdefault(user_id, deque())
        while times and now - times[0] > FLOOD_WINDOW:
            times.popleft()
        times.append(now)
        return len(times) > FLOOD_LIMIT


async def check(update: Update, ctx: LinliContext) -> None:
    guard: Guard = ctx.bot_data.guard
    if guard.seen_before(update.update_id):
        raise ApplicationHandlerStop
    chat, user = update.effective_chat, update.effective_user
    if update.edited_message is not None or update.channel_post is not None:
        raise ApplicationHandlerStop
    if chat is not None and chat.type == ChatType.CHANNEL:
        raise ApplicationHandlerStop
    if user is None or user.is_bot:
        return
    if update.my_chat_member is None and guard.flooding(user.id, time.monotonic()):
        raise ApplicationHandlerStop
    await _know_person(update, ctx)


async def _know_person(update: Update, ctx: LinliContext) -> None:
    """Load (and only when Telegram's view changed, write) the person, and pick their language."""
    user = update.effective_user
    assert user is not None
    name = user.full_name
    db = ctx.svc.db
    async with db.transaction(write=False) as session:
        person = await people.get_person(session, user.id)
        current = people.person_is_current(
            person,
            name=name.strip()[:255],
            username=user.username,
            language_code=user.language_code,
        )
    if not current:
        async with db.transaction() as session:
            person = await people.touch_person(
                session,
                person_id=user.id,
                name=name,
                username=user.username,
                language_code=user.language_code,
                now=ctx.now(),
            )
    community = None
    if person is not None and person.lang is None and person.language_code is None:
        async with db.transaction(write=False) as session:
            found = await people.memberships(session, person_id=user.id)
            community = found[0].community if found else None
    ctx.person = person
    ctx.lang = people.language_for(person, community)
