"""The paced sender: one task drains the outbox within Telegram's limits, timed by the database.

Everything the bot says on its own is a row in `models.outbox`. One `Sender` per application
claims due rows in batches, most urgent first, renders each in its reader's language and sends
it no faster than Telegram allows: a global pace, one message per second per chat, twenty per
minute per group. It is one asyncio task whatever the number of chats (one task per chat froze
the bot at 30,000 chats, see docs/architecture.md), and it sleeps until the next row is due or
a unit of work that queued rows commits (`Database.on_queued` wakes it).

Live cards (bot/cards.py) are built here when they go: a post sends the card with its buttons,
an edit row edits the message its post left, with the latest state.

What became of each send (sent with its message id, gone, failed, try again at, a long
text's parts) is committed by a recorder beside the sender, several sends in one transaction
(group commit): an outcome waits at most `Limits.gather` (50 ms of real time) for others, and at
most `Limits.unrecorded` wait. Delivery is at least once, with a small window: a crash between
Telegram's answer and that commit sends those rows again after a restart (when their lease runs
out). A chat's previous outcome is always committed before its next message goes, so a crash
repeats at most the last message of each chat. A timeout is the same case seen from the other
side (Telegram may have delivered the message it did not confirm). Everything else ends exactly
once in `sent`, `gone` or `failed`.

Periodic work ("rhythms": recurring announcements materialising their next occurrence, codes
expiring) runs as one repeating job; features add theirs with `add_rhythm(app, fn)` in their
`register(app)`.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import math
import re
import time
import warnings
import weakref
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession
from telegram import Bot, InlineKeyboardMarkup, Message
from telegram.error import BadRequest, ChatMigrated, Forbidden, RetryAfter, TelegramError

from bot.cards import DRAWN, Card, CardBuilder, CardRequest, Drawing
from bot.context import LinliApp, LinliContext, Rhythm
from bot.db import Database
from bot.render import (
    CAPTION_LIMIT,
    TEXT_LIMIT,
    Renderer,
    html_tokens,
    token_length,
    utf16_length,
    visible_length,
)
from models import outbox, people
from models.outbox import Claimed, Delivery, Status, Step
from models.people import LANGUAGES, Chat, ChatLink, Community, Person, Unit

log = logging.getLogger("linli.delivery")

FALLBACK_TEMPLATE = "delivery/fallback_mention"

Sleep = Callable[[float], Awaitable[None]]
# An edit Telegram will not make: the message was deleted, or is too old or not the bot's.
_UNEDITABLE = ("message to edit not found", "message can't be edited", "message_id_invalid")


@dataclass(frozen=True)
class Limits:
    """How fast the sender may talk, and how it waits. Telegram's own limits are a little higher
    (about 30 messages/s overall): the margin keeps the bot clear of flood waits."""

    per_second: float = 25.0
    chat_interval: float = 1.0  # seconds between two messages to one chat
    group_per_minute: int = 20
    batch: int = 100  # rows claimed per transaction
    horizon: float = 5.0  # a row whose chat is free later than this goes back to the database
    idle_cap: float = 30.0  # look at the database at least this often (other processes write)
    backoff: tuple[float, ...] = (5.0, 30.0, 120.0, 600.0)  # then `failed`
    # Outcomes of sends are committed together: each waits at most `gather` seconds of real
    # time for others to join it, and at most `unrecorded` wait. What waits is what a crash can
    # make the sender repeat; one chat's previous outcome is always committed before its next
    # message goes, so nobody gets more than one message twice.
    gather: float = 0.05
    unrecorded: int = 25
    error_pause: float = 5.0  # after an unexpected error in the loop itself


# --- pacing -------------------------------------------------------------------------------------


class Pacer:
    """When each chat may be written to next: a global pace (a token bucket of depth one),
    a next-allowed time per chat, and a sliding one-minute window per group.

    Plain data, no tasks and no clock of its own: the sender passes the time in. Entries for
    chats that are free again are pruned, so memory follows the chats written to in the last
    minute, not all chats ever written to.
    """

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.gap = 1.0 / limits.per_second
        self.next_any = -math.inf
        self.paused_until = -math.inf
        self._next_in_chat: dict[int, float] = {}
        self._group_sends: dict[int, deque[float]] = {}

    def chat_ready(self, chat_id: int) -> float:
        """The earliest time this chat may receive a message (ignoring the global pace)."""
        at = self._next_in_chat.get(chat_id, -math.inf)
        window = self._group_sends.get(chat_id)
        if window is not None and len(window) >= self.limits.group_per_minute:
            at = max(at, window[0] + 60.0)
        return at

    def ready(self, chat_id: int) -> float:
        return max(self.chat_ready(chat_id), self.next_any, self.paused_until)

    def record(self, chat_id: int, at: float) -> None:
        self.next_any = max(self.next_any + self.gap, at + self.gap)
        self._next_in_chat[chat_id] = at + self.limits.chat_interval
        if chat_id < 0:  # groups and channels; private chats have positive ids
            window = self._group_sends.get(chat_id)
            if window is None:
                window = self._group_sends[chat_id] = deque(maxlen=self.limits.group_per_minute)
            window.append(at)

    def pause(self, until: float) -> None:
        """Telegram's flood wait applies to the whole bot, not to one chat."""
        self.paused_until = max(self.paused_until, until)

    def spacing(self, chat_id: int) -> float:
        """The steady gap between messages to one chat (for spreading rows handed back)."""
        if chat_id < 0:
            return max(self.limits.chat_interval, 60.0 / self.limits.group_per_minute)
        return self.limits.chat_interval

    def prune(self, now: float) -> None:
        for chat_id in [c for c, t in self._next_in_chat.items() if t <= now]:
            del self._next_in_chat[chat_id]
        for chat_id in [c for c, w in self._group_sends.items() if w[-1] <= now - 60.0]:
            del self._group_sends[chat_id]

    def tracked(self) -> int:
        return len(self._next_in_chat) + len(self._group_sends)


# --- long texts ---------------------------------------------------------------------------------

_TAG = re.compile(r"<\s*(/?)\s*([a-zA-Z][\w-]*)")


class _Splitter:
    """Cuts Telegram HTML into parts of at most `limit` visible characters, on line boundaries
    where it can, keeping every part well-formed (tags open at a cut are closed and reopened)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.parts: list[str] = []
        self.stack: list[tuple[str, str]] = []  # (name, opening tag) open where we are
        self.opened: list[tuple[str, str]] = []  # open where the current part starts
        self.current: list[str] = []
        self.size = 0

    def flush(self) -> None:
        body = "".join(self.current)
        if self.current and any(not t.startswith("<") and t.strip() for t in html_tokens(body)):
            reopen = "".join(tag for _, tag in self.opened)
            close = "".join(f"</{name}>" for name, _ in reversed(self.stack))
            self.parts.append(reopen + body + close)
        self.current, self.size, self.opened = [], 0, list(self.stack)

    def add(self, token: str, length: int) -> None:
        self.current.append(token)
        self.size += length
        match = _TAG.match(token) if length == 0 else None
        if match is None:
            return
        closing, name = match.group(1) == "/", match.group(2).lower()
        if not closing:
            self.stack.append((name, token))
        elif self.stack and self.stack[-1][0] == name:
            self.stack.pop()

    def add_line(self, line: str) -> None:
        tokens = html_tokens(line)
        length = sum(token_length(t) for t in tokens)
        separator = 1 if self.current else 0
        if self.size + separator + length <= self.limit:
            if separator:
                self.add("\n", 1)
            for token in tokens:
                self.add(token, token_length(token))
            return
        self.flush()
        if length <= self.limit:
            for token in tokens:
                self.add(token, token_length(token))
            return
        for token in tokens:  # a single line longer than a message: cut it hard
            size = token_length(token)
            if self.size + size <= self.limit:
                self.add(token, size)
                continue
            if token.startswith("&") or size == 0:
                self.flush()
                self.add(token, size)
                continue
            rest = token
            while rest:
                room = self.limit - self.size
                taken = _prefix_within(rest, room)
                if not taken:
                    self.flush()
                    continue
                self.add(taken, utf16_length(taken))
                rest = rest[len(taken) :]
                if rest:
                    self.flush()


def _prefix_within(text: str, units: int) -> str:
    """The longest prefix of `text` of at most `units` UTF-16 code units."""
    count = 0
    for index, char in enumerate(text):
        count += 2 if ord(char) > 0xFFFF else 1
        if count > units:
            return text[:index]
    return text


def split_html(text: str, limit: int = TEXT_LIMIT) -> list[str]:
    """One message, or its parts in order when it is longer than Telegram accepts."""
    if visible_length(text) <= limit:
        return [text]
    splitter = _Splitter(limit)
    for line in text.split("\n"):
        splitter.add_line(line)
    splitter.flush()
    return splitter.parts or [text]


# --- the sender ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Part:
    """One Bot API message of a row: a text, a photo with an optional caption."""

    text: str | None
    photo: str | None = None


@dataclass
class _Job:
    row: Claimed
    lang: str
    rank: int
    parts: list[Part] = field(default_factory=list)
    first_message_id: int | None = None
    markup: InlineKeyboardMarkup | None = None  # a card's buttons, on its last part
    target: Delivery | None = None  # an edit: the post whose message it edits

    @property
    def claim(self) -> str | None:
        return self.row.claim

    @property
    def chat_id(self) -> int:
        return self.row.chat_id

    @property
    def id(self) -> int:
        assert self.row.id is not None
        return self.row.id


def plan(text: str, photo: str | None) -> list[Part]:
    """The messages one row becomes: a long text is split, a long caption follows its photo."""
    if photo:
        if visible_length(text) <= CAPTION_LIMIT:
            return [Part(text or None, photo)]
        return [Part(None, photo), *(Part(p) for p in split_html(text))]
    return [Part(p) for p in split_html(text)]


def _retry_seconds(exc: RetryAfter) -> float:
    value: Any = getattr(exc, "_retry_after", None)
    if not isinstance(value, timedelta):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the int form is deprecated; either is fine here
            value = exc.retry_after
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def _is_private(row: Claimed) -> bool:
    return row.chat_id > 0


class Sender:
    """Drains the outbox within the limits. `clock` says what is due; with the default `sleep`
    the pace is kept in real (monotonic) time, and with a given `sleep` the pace is kept in
    the clock's time, so a simulated clock whose sleep advances it runs hours in seconds."""

    def __init__(
        self,
        *,
        db: Database,
        bot: Bot,
        renderer: Renderer,
        clock: Callable[[], datetime],
        sleep: Sleep | None = None,
        limits: Limits | None = None,
        cards: Mapping[str, CardBuilder] | None = None,
        drawings: Mapping[str, Drawing] | None = None,
    ) -> None:
        self.db = db
        self.bot = bot
        self.renderer = renderer
        self.clock = clock
        self.cards: Mapping[str, CardBuilder] = cards if cards is not None else {}
        self.drawings: Mapping[str, Drawing] = drawings if drawings is not None else {}
        self.limits = limits or Limits()
        self.pacer = Pacer(self.limits)
        if sleep is None:
            self.sleep: Sleep = asyncio.sleep
            self.monotonic: Callable[[], float] = time.monotonic
        else:
            self.sleep = sleep
            self.monotonic = lambda: self.clock().timestamp()
        self.ready = asyncio.Event()  # set once the running loop has first claimed
        self.sent = 0  # rows sent since start (for logs and the benchmark)
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()  # the loop and drain() never send side by side
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._outcomes: list[tuple[int, outbox.Outcome]] = []  # (chat, outcome) to be committed
        self._unrecorded: dict[int, int] = {}  # chat → its outcomes not committed yet
        self._recorder: asyncio.Task[None] | None = None
        self._gathering_since = 0.0  # real time the oldest waiting outcome was queued
        self._hurry = asyncio.Event()  # someone waits for the outcomes: commit now

    # --- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        if self._task is not None and not self._task.done():
            return
        self._stopping = False
        self.ready.clear()
        self._task = asyncio.create_task(self._run(), name="linli-delivery")

    async def stop(self, *, grace: float = 10.0) -> None:
        """Finish the send in flight, hand the rest of the batch back, and end the loop."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping = True
        self._wake.set()
        done, _ = await asyncio.wait({task}, timeout=grace)
        if not done:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        self._stopping = False  # drain() may still be used, and start() again

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def wake(self) -> None:
        self._wake.set()

    @property
    def woken(self) -> bool:
        """A wake-up is waiting to be noticed (the loop clears it when it next looks)."""
        return self._wake.is_set()

    async def drain(self, *, until_idle: bool = True) -> int:
        """Send what is due now (one batch, or until nothing is due); returns rows handled."""
        handled = 0
        while not self._stopping:
            async with self._lock:
                batch = await self._batch()
            handled += batch
            if not batch or not until_idle:
                break
            await asyncio.sleep(0)
        return handled

    async def _run(self) -> None:
        while not self._stopping:
            try:
                paused = self.pacer.paused_until - self.monotonic()
                if paused > 0:
                    await self._idle(paused)
                    continue
                async with self._lock:
                    handled = await self._batch()
                self.ready.set()
                if handled:
                    await asyncio.sleep(0)  # let updates in between batches
                    continue
                self._wake.clear()
                await self._idle(await self._until_next_due())
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("delivery loop error; carrying on in %.0f s", self.limits.error_pause)
                self.ready.set()
                await self._idle(self.limits.error_pause)

    async def _until_next_due(self) -> float:
        now = self.clock()
        async with self.db.transaction(write=False) as session:
            due = await outbox.next_due_at(session, now=now)
        if due is None:
            return self.limits.idle_cap
        # A floor, so that a row due but not claimable (a clock edge) cannot make the loop spin.
        return min(self.limits.idle_cap, max(0.05, (due - now).total_seconds()))

    async def _idle(self, seconds: float) -> None:
        """Sleep until `seconds` pass, a feature wakes us, or we are stopped."""
        if self._stopping:
            return
        woken = asyncio.ensure_future(self._wake.wait())
        slept = asyncio.ensure_future(self.sleep(seconds))
        try:
            await asyncio.wait({woken, slept}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in (woken, slept):
                waiter.cancel()
            await asyncio.gather(woken, slept, return_exceptions=True)

    def _at(self, moment: float) -> datetime:
        """A pacing time as a wall-clock datetime (for rows handed back to the database)."""
        if math.isinf(moment):
            return self.clock()
        return self.clock() + timedelta(seconds=max(0.0, moment - self.monotonic()))

    # --- one batch --------------------------------------------------------------------------

    async def _batch(self) -> int:
        """Claim due rows, send them in pace, hand back what cannot go soon. Rows handled."""
        jobs, handled = await self._claim()
        if jobs:
            await self._send_all(await self._render(jobs))
        self.pacer.prune(self.monotonic())
        return handled

    async def _claim(self) -> tuple[list[_Job], int]:
        """Claim due rows and decide what each becomes. The claim commits at once (its lease
        keeps the rows ours); what the rows need from other tables is read after it, so neither
        holds the loop long (SQLite runs on the loop's thread)."""
        now = self.clock()
        async with self.db.transaction() as session:
            rows = await outbox.claim_due(session, now=now, limit=self.limits.batch)
        if not rows:
            return [], 0
        await asyncio.sleep(0)
        async with self.db.transaction(write=False) as session:
            communities = await _by_id(session, Community, {r.community_id for r in rows})
            persons = await _by_id(
                session, Person, {r.person_id or r.chat_id for r in rows if _is_private(r)}
            )
            chats = await _by_id(session, Chat, {r.chat_id for r in rows if not _is_private(r)})
            targets = await outbox.card_targets(session, rows)
        await asyncio.sleep(0)
        jobs: list[_Job] = []
        ended: list[outbox.Outcome] = []  # the chat is gone, or the card was never posted
        later: dict[datetime, list[int]] = {}  # not now, and not an attempt
        moved: dict[int, int] = {}  # chats that became supergroups
        for row in rows:
            community = communities.get(row.community_id) if row.community_id else None
            chat = chats.get(row.chat_id)
            if row.edits is not None:
                target = targets.get(row.edits)
                wait = self._edit_waits(row, target, now)
                if wait is not None:
                    later.setdefault(wait, []).append(row.id)
                    continue
                if target is None or target.status != Status.sent or target.message_id is None:
                    error = "the card was never posted"
                    ended.append(outbox.Outcome(row.id, row.claim, Step.end, Status.gone,
                                                error=error))  # fmt: skip
                    continue
            else:
                target = None
            if chat is not None and chat.migrated_to:
                moved[row.chat_id] = row.chat_id = chat.migrated_to
            elif chat is not None and not people.chat_is_reachable(chat):
                error = f"the bot is {chat.bot_status} in this chat"
                ended.append(outbox.Outcome(row.id, row.claim, Step.end, Status.gone,
                                            error=error))  # fmt: skip
                continue
            # Quiet hours are a community's; a row without one (rare) goes when due.
            if not row.urgent and community is not None:
                morning = outbox.after_quiet_hours(
                    now,
                    zone=community.timezone,
                    quiet_from=community.quiet_from,
                    quiet_until=community.quiet_until,
                )
                if morning > now:
                    later.setdefault(morning, []).append(row.id)
                    continue
            language = self._language(row, community, persons)
            jobs.append(_Job(row, language, len(jobs), target=target))
        if ended or later or moved:
            async with self.db.transaction() as session:
                await outbox.record(session, ended, now=now)
                for at, ids in later.items():
                    await outbox.defer(session, delivery_ids=ids, claim=rows[0].claim, at=at)
                for old, new in moved.items():  # the rows follow the chat in the database too
                    await outbox.retarget(session, old_chat_id=old, new_chat_id=new)
        return jobs, len(rows)

    @staticmethod
    def _edit_waits(row: Claimed, target: Delivery | None, now: datetime) -> datetime | None:
        """When an edit row whose post is not out yet may go: it waits for the post (which
        renders the latest state itself, but may be in flight with an older one)."""
        if target is not None and target.status == Status.pending:
            return max(target.due_at, now) + outbox.CARD_GAP
        return None

    @staticmethod
    def _language(row: Claimed, community: Community | None, persons: dict[Any, Person]) -> str:
        if row.lang in LANGUAGES:
            return row.lang
        if _is_private(row):
            return people.language_for(persons.get(row.person_id or row.chat_id), community)
        if community is not None and community.language in LANGUAGES:
            return community.language
        return "zh"

    async def _render(self, jobs: list[_Job]) -> list[_Job]:
        ready: list[_Job] = []
        ended: list[tuple[_Job, Status, str]] = []
        built = await self._build_cards([job for job in jobs if job.row.card is not None])
        for index, job in enumerate(jobs):
            if index % 10 == 9:
                await asyncio.sleep(0)  # a batch renders in slices: updates get their turn
            try:
                if job.row.card is not None:
                    card = built[job.id]
                    if isinstance(card, Exception):
                        raise card
                    if card is None:
                        ended.append((job, Status.gone, "the card's subject is gone"))
                        continue
                    text = self.renderer.render(job.lang, card.template, **card.params)
                    # A card is one message: its buttons and its edits need that.
                    job.parts, job.markup = [Part(split_html(text)[0])], card.markup
                else:
                    text = self.renderer.render(job.lang, job.row.template, **job.row.context)
                    job.parts = plan(text, job.row.photo)
            except Exception as exc:  # a missing template or context value: a bug, not a retry
                log.exception("cannot render delivery %s (%s)", job.id, job.row.template)
                ended.append((job, Status.failed, f"render: {exc!r}"))
                continue
            ready.append(job)
        for job, status, error in ended:
            await self._end(job, status, error)
        return ready

    async def _build_cards(self, jobs: list[_Job]) -> dict[int, Card | Exception | None]:
        """Each card as the database shows it now (one read transaction for the batch)."""
        built: dict[int, Any] = {}
        if not jobs:
            return built
        now = self.clock()
        async with self.db.transaction(write=False) as session:
            for job in jobs:
                assert job.row.card is not None
                kind, _, subject = job.row.card.partition(":")
                try:
                    builder = self.cards[kind]
                    request = CardRequest(
                        session=session,
                        subject_id=int(subject),
                        lang=job.lang,
                        chat_id=job.chat_id,
                        now=now,
                        renderer=self.renderer,
                        bot_username=self.bot.username,
                    )
                    built[job.id] = await builder(request)
                except Exception as exc:  # no builder for the kind, or the builder failed
                    built[job.id] = exc
        return built

    async def _send_all(self, jobs: list[_Job]) -> None:
        """Send in pace: the job whose chat is free soonest first, ties in claim order."""
        heap = [(self.pacer.chat_ready(job.chat_id), job.rank, job) for job in jobs]
        heapq.heapify(heap)
        handed_back: list[tuple[_Job, float]] = []
        dead: set[int] = set()
        try:
            while heap and not self._stopping:
                key, rank, job = heap[0]
                if job.chat_id in dead:  # its rows ended as gone with the chat
                    heapq.heappop(heap)
                    continue
                free = self.pacer.chat_ready(job.chat_id)
                if free > key:  # the chat was written to since this entry was queued
                    heapq.heapreplace(heap, (free, rank, job))
                    continue
                heapq.heappop(heap)
                if job.chat_id in self._unrecorded:  # its previous message is on record first
                    await self._settle(job.chat_id)
                now = self.monotonic()
                at = self.pacer.ready(job.chat_id)
                if at - now > self.limits.horizon:
                    handed_back.append((job, at))
                    continue
                if at > now:
                    await self.sleep(at - now)
                    now = self.monotonic()
                self.pacer.record(job.chat_id, max(now, at))
                outcome = await self._attempt(job)
                if outcome == "again":
                    heapq.heappush(heap, (self.pacer.chat_ready(job.chat_id), rank, job))
                elif outcome == "dead":
                    dead.add(job.chat_id)
        finally:
            # Stopping (or an error): what was not tried goes back due at once, uncounted.
            handed_back += [(job, -math.inf) for _, _, job in heap if job.chat_id not in dead]
            try:
                await self._settle()
            finally:
                await self._hand_back(handed_back)

    # --- recording outcomes -----------------------------------------------------------------

    async def _record(self, job: _Job, outcome: outbox.Outcome) -> None:
        """Queue a send's outcome for the recorder, which commits the outcomes gathered in the
        last `limits.gather` seconds (real time) in one transaction: at 25 messages/s in real
        time one or two sends; when sends come back to back (a backlog, or a simulated clock),
        more. At most `limits.unrecorded` wait: past that, the sender waits for the commit."""
        if not self._outcomes:
            self._gathering_since = time.monotonic()
        self._outcomes.append((job.chat_id, outcome))
        self._unrecorded[job.chat_id] = self._unrecorded.get(job.chat_id, 0) + 1
        self._recording()
        if len(self._outcomes) >= self.limits.unrecorded:
            await self._settle()

    def _recording(self) -> asyncio.Task[None] | None:
        """The recorder at work, started when outcomes wait and none runs."""
        task = self._recorder
        if (task is None or task.done()) and self._outcomes:
            task = self._recorder = asyncio.create_task(self._write_outcomes())
            task.add_done_callback(_log_failure)
        return task

    async def _write_outcomes(self) -> None:
        while self._outcomes:
            wait = self._gathering_since + self.limits.gather - time.monotonic()
            if wait > 0 and not self._hurry.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._hurry.wait(), wait)
            self._hurry.clear()
            batch, self._outcomes = self._outcomes, []
            self._gathering_since = time.monotonic()  # for outcomes queued while this commits
            try:
                async with self.db.transaction() as session:
                    outcomes = [outcome for _, outcome in batch]
                    changed = await outbox.record(session, outcomes, now=self.clock())
            except BaseException:
                self._outcomes[:0] = batch  # tried again with the next outcome, or by _settle
                raise
            for chat_id, _ in batch:
                left = self._unrecorded.pop(chat_id) - 1
                if left:
                    self._unrecorded[chat_id] = left
            if 0 <= changed < len(batch):
                # Another sender took rows over after our lease ran out, or they were withdrawn
                # (or their card changed) while we sent them: their outcome stands.
                log.info(
                    "%d outcomes dropped, their claims are no longer ours", len(batch) - changed
                )

    async def _settle(self, chat_id: int | None = None) -> None:
        """Wait until the outcomes of this chat (or of every chat) are committed. Raises what
        the recorder raised (the outcomes stay queued)."""
        while chat_id in self._unrecorded if chat_id is not None else self._unrecorded:
            self._hurry.set()
            task = self._recording()
            assert task is not None  # an outcome not yet committed is queued or being written
            await asyncio.shield(task)  # a stop cancelling us does not cancel the commit

    async def _hand_back(self, jobs: Sequence[tuple[_Job, float]]) -> None:
        """Rows that cannot go soon return to the database, spread by their chat's pace."""
        if not jobs:
            return
        seen: dict[int, int] = {}
        by_time: dict[tuple[datetime, str | None], list[int]] = {}
        for job, at in jobs:
            nth = seen.get(job.chat_id, 0)
            seen[job.chat_id] = nth + 1
            when = at if math.isinf(at) else at + nth * self.pacer.spacing(job.chat_id)
            by_time.setdefault((self._at(when), job.claim), []).append(job.id)
        async with self.db.transaction() as session:
            for (due, claim), ids in by_time.items():
                await outbox.defer(session, delivery_ids=ids, claim=claim, at=due)

    # --- one message ------------------------------------------------------------------------

    async def _send_part(self, job: _Job, part: Part) -> Message | bool:
        row = job.row
        if job.target is not None:
            return await self._edit(job, part)
        options: dict[str, Any] = {
            "message_thread_id": row.thread_id or None,
            "disable_notification": row.silent,
        }
        if job.markup is not None and row.parts_sent == len(job.parts) - 1:
            options["reply_markup"] = job.markup
        if part.photo:
            photo: str | bytes = part.photo
            if part.photo.startswith(DRAWN):
                photo = self.drawings[part.photo.removeprefix(DRAWN)](row.context)
            return await self.bot.send_photo(row.chat_id, photo=photo, caption=part.text, **options)
        assert part.text is not None
        return await self.bot.send_message(row.chat_id, part.text, **options)

    async def _edit(self, job: _Job, part: Part) -> Message | bool:
        """A card's edit: its post's message shows the card as it is now."""
        target = job.target
        assert target is not None and target.message_id is not None and part.text is not None
        try:
            if target.photo:
                return await self.bot.edit_message_caption(
                    target.chat_id, target.message_id, caption=part.text, reply_markup=job.markup
                )
            return await self.bot.edit_message_text(
                part.text, target.chat_id, target.message_id, reply_markup=job.markup
            )
        except BadRequest as exc:
            if "not modified" in str(exc).lower():
                return True  # it shows this already
            raise

    async def _attempt(self, job: _Job) -> str:
        """Send the job's next part and record what happened: "again" (more to send, or retry
        now), "dead" (the chat cannot be reached), or "done"."""
        row = job.row
        part = job.parts[row.parts_sent]
        try:
            sent = await self._send_part(job, part)
        except RetryAfter as exc:
            wait = _retry_seconds(exc)
            log.warning("Telegram flood wait: pausing every send for %.0f s", wait)
            self.pacer.pause(self.monotonic() + wait)
            return "again"
        except ChatMigrated as exc:
            await self._migrated(job, exc.new_chat_id)
            return "again"
        except Forbidden as exc:
            await self._unreachable(job, str(exc), kicked=True)
            return "dead"
        except BadRequest as exc:
            reason = str(exc).lower()
            if "chat not found" in reason:
                await self._unreachable(job, str(exc), kicked=False)
                return "dead"
            if job.target is not None and any(words in reason for words in _UNEDITABLE):
                await self._end(job, Status.gone, f"the card's message is gone: {exc}")
                return "done"
            await self._end(job, Status.failed, f"Telegram refused: {exc}")
            return "done"
        except TelegramError as exc:  # timeouts and network trouble: back off and retry
            await self._back_off(job, exc)
            return "done"
        if job.first_message_id is None and isinstance(sent, Message) and job.target is None:
            job.first_message_id = row.message_id or sent.message_id
        row.parts_sent += 1
        if row.parts_sent < len(job.parts):
            progress = outbox.Outcome(
                job.id,
                job.claim,
                Step.progress,
                parts_sent=row.parts_sent,
                message_id=job.first_message_id,
            )
            await self._record(job, progress)
            return "again"
        await self._end(job, Status.sent, None, message_id=job.first_message_id)
        self.sent += 1
        if row.pin and job.first_message_id is not None:
            await self._pin(job, job.first_message_id)
        return "done"

    async def _end(
        self, job: _Job, status: Status, error: str | None, *, message_id: int | None = None
    ) -> None:
        ended = outbox.Outcome(
            job.id, job.claim, Step.end, status, message_id, job.row.parts_sent, error,
            at=self.clock(),
        )  # fmt: skip
        await self._record(job, ended)

    async def _pin(self, job: _Job, message_id: int) -> None:
        """Pinning is a courtesy: without the right to pin, the message still went out."""
        try:
            await self.bot.pin_chat_message(
                job.chat_id, message_id, disable_notification=job.row.silent
            )
        except RetryAfter as exc:
            self.pacer.pause(self.monotonic() + _retry_seconds(exc))
            await self._note(job, "pin: Telegram flood wait")
        except TelegramError as exc:
            await self._note(job, f"pin: {exc}")

    async def _note(self, job: _Job, error: str) -> None:
        await self._record(job, outbox.Outcome(job.id, job.claim, Step.note, error=error))

    async def _back_off(self, job: _Job, exc: TelegramError) -> None:
        """Retry after 5 s, 30 s, 2 min, 10 min; then the row fails with the last reason."""
        attempts = job.row.attempts
        reason = f"{type(exc).__name__}: {exc}"
        if attempts > len(self.limits.backoff):
            await self._end(job, Status.failed, f"gave up after {attempts} attempts: {reason}")
            return
        at = self.clock() + timedelta(seconds=self.limits.backoff[attempts - 1])
        await self._record(
            job, outbox.Outcome(job.id, job.claim, Step.end, error=reason, retry_at=at)
        )

    async def _migrated(self, job: _Job, new_chat_id: int) -> None:
        """The group became a supergroup: its links and pending rows follow, and we resend."""
        old = job.chat_id
        await self._settle()  # its rows' outcomes first: they move with the chat
        async with self.db.transaction() as session:
            await people.migrate_chat(
                session, old_chat_id=old, new_chat_id=new_chat_id, now=self.clock()
            )
            await outbox.retarget(session, old_chat_id=old, new_chat_id=new_chat_id)
        log.info("chat %s became %s; its deliveries follow", old, new_chat_id)
        job.row.chat_id = new_chat_id

    async def _unreachable(self, job: _Job, reason: str, *, kicked: bool) -> None:
        """The row is gone, and so are the chat's other due rows: no retry storm. A person who
        never opened a private chat is mentioned in their group instead, if the row says where."""
        await self._settle()
        row, now = job.row, self.clock()
        private = _is_private(row)
        async with self.db.transaction() as session:
            await outbox.finish(
                session,
                delivery_id=job.id,
                claim=job.claim,
                status=Status.gone,
                now=now,
                error=reason,
            )
            await outbox.abandon_chat(
                session,
                chat_id=row.chat_id,
                now=now,
                reason=reason,
                due_until=now if private else None,
                claim=job.claim,
            )
            if kicked and not private:
                chat = await session.get(Chat, row.chat_id)
                await people.record_chat(
                    session,
                    chat_id=row.chat_id,
                    type=chat.type if chat else _group_type(row.chat_id),
                    title=chat.title if chat else "",
                    is_forum=chat.is_forum if chat else False,
                    bot_status=people.BotStatus.kicked,
                    now=now,
                )
            # Someone who blocked the bot said no: they are not called out in their group.
            refused = any(word in reason.lower() for word in ("blocked", "deactivated"))
            if private and not refused:
                await self._fallback(session, row, now)

    async def _fallback(self, session: AsyncSession, row: Claimed, now: datetime) -> bool:
        if row.fallback_link_id is None:
            return False
        link = await session.get(ChatLink, row.fallback_link_id)
        if link is None:
            return False
        person_id = row.person_id or row.chat_id
        person = await session.get(Person, person_id)
        community_id = row.community_id
        if community_id is None:
            unit = await session.get(Unit, link.unit_id)
            community_id = unit.community_id if unit else None
        return await outbox.enqueue(
            session,
            key=f"{row.key}:fallback",
            chat_id=link.chat_id,
            thread_id=link.thread_id,
            community_id=community_id,
            link_id=link.id,
            template=FALLBACK_TEMPLATE,
            context={
                "person_id": person_id,
                "person_name": person.name if person and person.name else str(person_id),
                "bot": self.bot.username,
            },
            due_at=now,
            now=now,
            urgent=row.urgent,
            priority=row.priority,
        )


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.error("recording outcomes failed; they stay queued", exc_info=exc)


def _group_type(chat_id: int) -> str:
    return "supergroup" if chat_id < -(10**12) else "group"


async def _by_id(session: AsyncSession, table: Any, ids: set[Any]) -> dict[Any, Any]:
    ids.discard(None)
    if not ids:
        return {}
    rows = await session.exec(select(table).where(col(table.id).in_(ids)))
    return {row.id: row for row in rows.all()}


# --- the application's sender, and the rhythms job ------------------------------------------------

_SENDERS: weakref.WeakKeyDictionary[Any, Sender] = weakref.WeakKeyDictionary()


def install(app: LinliApp, *, sleep: Sleep | None = None, limits: Limits | None = None) -> Sender:
    """Give the application its sender (build_application does this)."""
    services = app.bot_data.services
    sender = Sender(
        db=services.db,
        bot=app.bot,
        renderer=services.renderer,
        clock=services.clock,
        sleep=sleep,
        limits=limits,
        cards=services.cards,
        drawings=services.drawings,
    )
    services.db.on_queued.append(sender.wake)
    _SENDERS[app] = sender
    return sender


def sender_of(app: LinliApp) -> Sender:
    return _SENDERS.get(app) or install(app)


async def drain(app: LinliApp, *, until_idle: bool = True) -> int:
    """Send everything due now, in pace (tests and the sandbox); returns rows handled."""
    return await sender_of(app).drain(until_idle=until_idle)


def start_sender(app: LinliApp) -> Sender:
    sender = sender_of(app)
    sender.start()
    return sender


async def stop_sender(app: LinliApp) -> None:
    sender = _SENDERS.get(app)
    if sender is not None:
        await sender.stop()


def add_rhythm(app: LinliApp, rhythm: Rhythm) -> None:
    """Run `rhythm(session, now)` every minute (a feature's `register(app)` calls this)."""
    rhythms = app.bot_data.services.rhythms
    if rhythm not in rhythms:
        rhythms.append(rhythm)


async def run_rhythms(app: LinliApp) -> int:
    """Every rhythm in one write transaction (each in its own savepoint, so one failing does
    not undo the others); what they enqueue wakes the sender when it commits."""
    services = app.bot_data.services
    now = services.clock()
    done = 0
    async with services.db.transaction() as session:
        for rhythm in list(services.rhythms):
            try:
                async with session.begin_nested():
                    done += await rhythm(session, now)
            except Exception:
                log.exception("rhythm %s failed", getattr(rhythm, "__qualname__", rhythm))
    return done


async def _rhythms_job(ctx: LinliContext) -> None:
    await run_rhythms(cast(LinliApp, ctx.application))


RHYTHMS_JOB = "rhythms"


def schedule_rhythms(app: LinliApp, *, every: float = 60.0) -> None:
    """The one repeating job: APScheduler never holds one job per reminder."""
    queue = app.job_queue
    if queue is None:
        log.warning("no job queue: rhythms will not run")
        return
    for job in queue.get_jobs_by_name(RHYTHMS_JOB):
        job.schedule_removal()
    queue.run_repeating(_rhythms_job, interval=every, first=every, name=RHYTHMS_JOB)
