"""First handler group: drop repeats and floods, ignore what we do not serve, know the person."""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import cast

from sqlmodel.ext.asyncio.session import AsyncSession
from telegram import Update
from telegram.constants import ChatType
from telegram.ext import ApplicationHandlerStop

from bot.context import LinliApp, LinliContext
from models import people, updates

RECENT_UPDATES = 20_000
FLOOD_WINDOW = 10.0  # seconds
# Updates per person per window; a person tapping faster is a script or a stuck key.
FLOOD_LIMIT = 20
# Seconds a known person is trusted from memory; bounds staleness across processes.
PERSON_TTL = 300.0
PEOPLE_CACHED = 50_000
# Seconds a person's standing is trusted from memory. In this process a change to roles or
# memberships invalidates it at once (Database.generation); this bounds what another process
# (several behind a load balancer) changed.
STANDING_TTL = 60.0


@dataclass(frozen=True)
class Standing:
    """Who a person is in the neighbourhood: what they may do, their households, their roles
    with where each unit sits. Read-only snapshots, shared between updates."""

    auth: people.Authority
    memberships: list[people.Membership]
    roles: list[tuple[people.Role, people.Unit, list[str]]]


class Guard:
    """State the guards keep in memory; one per application."""

    def __init__(self) -> None:
        self.recent: OrderedDict[int, None] = OrderedDict()
        # Handled since the last save (see save_handled): what a restart must still recognise.
        self.handled: list[int] = []
        # Per person, their updates in the flood window; least recently active first, so the
        # ones idle for a whole window are dropped from the front and the map stays small.
        self.activity: OrderedDict[int, deque[float]] = OrderedDict()
        # Knowing the person is needed on every update; reading them each time cost a third of
        # the handling time (bench/updates.py), so a snapshot is kept for a few minutes.
        self.people: OrderedDict[int, tuple[float, people.Person, str]] = OrderedDict()
        # person -> (database generation read at, monotonic time, standing)
        self.standings: OrderedDict[int, tuple[int, float, Standing]] = OrderedDict()

    def seen_before(self, update_id: int) -> bool:
        if update_id in self.recent:
            return True
        self.recent[update_id] = None
        if len(self.recent) > RECENT_UPDATES:
            self.recent.popitem(last=False)
        return False

    def known(self, person_id: int, now: float) -> tuple[people.Person, str] | None:
        entry = self.people.get(person_id)
        if entry is None or now - entry[0] > PERSON_TTL:
            return None
        return entry[1], entry[2]

    def remember(self, person: people.Person, lang: str, now: float) -> None:
        self.people[person.id] = (now, person, lang)
        self.people.move_to_end(person.id)
        if len(self.people) > PEOPLE_CACHED:
            self.people.popitem(last=False)

    def forget(self, person_id: int) -> None:
        """The person changed something the snapshot holds (their language)."""
        self.people.pop(person_id, None)

    def flooding(self, user_id: int, now: float) -> bool:
        times = self.activity.pop(user_id, None) or deque()
        while times and now - times[0] > FLOOD_WINDOW:
            times.popleft()
        times.append(now)
        self.activity[user_id] = times
        while True:
            first = next(iter(self.activity.values()))
            if now - first[-1] <= FLOOD_WINDOW:
                break
            self.activity.popitem(last=False)
        return len(times) > FLOOD_LIMIT

    def finished(self, update: object) -> None:
        """The update processor's report that an update was handled (to be saved)."""
        if isinstance(update, Update):
            self.handled.append(update.update_id)
            if len(self.handled) > RECENT_UPDATES:  # saving keeps failing: keep the newest
                del self.handled[:-RECENT_UPDATES]

    def restore(self, update_ids: list[int]) -> None:
        for update_id in update_ids:
            self.recent[update_id] = None
        while len(self.recent) > RECENT_UPDATES:
            self.recent.popitem(last=False)

    def newest(self) -> int:
        """The highest update id remembered (0 when none)."""
        return max(self.recent, default=0)


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
    await know_person(update, ctx)


async def standing(ctx: LinliContext, person_id: int) -> Standing:
    """The person's standing: from memory unless roles or memberships changed since (no
    database at all for /help, /me, /start of a known person), else read in one transaction."""
    cached = _cached_standing(ctx, person_id)
    if cached is not None:
        return cached
    generation = ctx.svc.db.generation  # before reading: a change committed meanwhile voids it
    async with ctx.svc.db.transaction(write=False) as session:
        return await _read_standing(session, ctx, person_id, generation)


def _cached_standing(ctx: LinliContext, person_id: int) -> Standing | None:
    guard: Guard = ctx.bot_data.guard
    cached = guard.standings.get(person_id)
    if cached is None or cached[0] != ctx.svc.db.generation:
        return None
    if time.monotonic() - cached[1] > STANDING_TTL:
        return None
    guard.standings.move_to_end(person_id)
    return cached[2]


async def _read_standing(
    session: AsyncSession, ctx: LinliContext, person_id: int, generation: int
) -> Standing:
    found = await people.memberships(session, person_id=person_id)
    mine = await people.roles_of(session, person_id=person_id)
    roles = [(role, unit, await people.lineage_names(session, unit)) for role, unit in mine]
    auth = people.authority_of(person_id, ctx.is_superadmin(person_id), mine)
    result = Standing(auth=auth, memberships=found, roles=roles)
    guard: Guard = ctx.bot_data.guard
    guard.standings[person_id] = (generation, time.monotonic(), result)
    guard.standings.move_to_end(person_id)
    if len(guard.standings) > PEOPLE_CACHED:
        guard.standings.popitem(last=False)
    return result


async def know_person(update: Update, ctx: LinliContext) -> None:
    """Know the person and their language: from memory when Telegram's view of them is
    unchanged, else from the database (written only when something changed)."""
    user = update.effective_user
    assert user is not None
    guard: Guard = ctx.bot_data.guard
    name = user.full_name.strip()[:255]
    clock = time.monotonic()
    known = guard.known(user.id, clock)
    if known is not None and people.person_is_current(
        known[0], name=name, username=user.username, language_code=user.language_code
    ):
        ctx.person, ctx.lang = known
        return
    db = ctx.svc.db
    generation = db.generation
    async with db.transaction(write=False) as session:
        person = await people.get_person(session, user.id)
        if _cached_standing(ctx, user.id) is None:  # nearly every handler needs it: same trip
            await _read_standing(session, ctx, user.id, generation)
    if not people.person_is_current(
        person, name=name, username=user.username, language_code=user.language_code
    ):
        async with db.transaction() as session:
            person = await people.touch_person(
                session,
                person_id=user.id,
                name=name,
                username=user.username,
                language_code=user.language_code,
                now=ctx.now(),
            )
    assert person is not None
    community = None
    if person.lang is None and person.language_code is None:
        found = (await standing(ctx, user.id)).memberships
        community = found[0].community if found else None
    ctx.person = person
    ctx.lang = people.language_for(person, community)
    guard.remember(person, ctx.lang, clock)


# --- across restarts ----------------------------------------------------------------------
# Telegram redelivers what a stopped bot had not confirmed. The ids of handled updates are
# saved every few seconds and on shutdown, and read back before the first update is taken.

SAVE_EVERY = 5.0  # seconds
SAVE_JOB = "linli-save-handled"


async def restore(app: LinliApp) -> None:
    """Remember the updates handled before the last stop (call before updates flow)."""
    async with app.bot_data.services.db.transaction(write=False) as session:
        app.bot_data.guard.restore(await updates.recently_handled(session))


async def save_handled(app: LinliApp) -> None:
    guard: Guard = app.bot_data.guard
    batch, guard.handled = guard.handled, []
    if not batch:
        return
    try:
        async with app.bot_data.services.db.transaction() as session:
            await updates.note_handled(session, batch)
    except Exception:
        guard.handled[:0] = batch  # kept for the next try
        raise


async def _save_job(ctx: LinliContext) -> None:
    await save_handled(cast(LinliApp, ctx.application))


def schedule_saving(app: LinliApp) -> None:
    if app.job_queue is not None:
        app.job_queue.run_repeating(_save_job, interval=SAVE_EVERY, first=SAVE_EVERY, name=SAVE_JOB)
