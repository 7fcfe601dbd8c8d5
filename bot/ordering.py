"""Updates of different chats and people run at once; one chat's, or one person's, in order.

PTB hands every update to the application's update processor. `OrderedUpdateProcessor`
gives each update the keys it must be ordered by (its chat and its sender: a private chat's
id is its person's id, groups are negative, so one set of ints holds both) and lets it start
only when every earlier update sharing a key is done with the database. Different keys never
wait for each other. At most `max_running` updates work with the database at once; the ones
waiting for their turn or only speaking are bounded too (`ADMITTED`), so a burst holds back
the update queue instead of growing memory.

An update is done with the database when it ends, or earlier when its handler says so with
`hand_over()`: all it has left is to speak (send, edit, answer). The next update of its chat or
person then starts while those Bot API calls are on the network, and `SpeakingInTurn` keeps
the order people see: a call to a chat the update is keyed on waits until every earlier update
of that key has finished speaking. Over a real network this takes the round trips off the
chain of a busy group: its updates' database work overlaps the previous ones' replies. After
the hand-over the update may not write (`Database.transaction` refuses), so nothing it does can
change what a later update already read. A turn belongs to the update's own task: calls to a
chat made from a task it spawns are not kept in order, so handlers make them in their own.
"""

from __future__ import annotations

import asyncio
import functools
import heapq
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from telegram import Update
from telegram._utils.defaultvalue import DEFAULT_NONE
from telegram._utils.types import ODVInput
from telegram.ext import BaseUpdateProcessor
from telegram.request import BaseRequest, RequestData

DEFAULT_RUNNING = 8  # working at once: enough to keep one core and a database busy
ADMITTED = 4096  # admitted at once, most of them waiting for their turn or for Telegram


def order_keys(update: object) -> frozenset[int]:
    """What an update is ordered by: its chat and the person who caused it."""
    if not isinstance(update, Update):
        return frozenset()
    keys: set[int] = set()
    if update.effective_chat is not None:
        keys.add(update.effective_chat.id)
    if update.effective_user is not None:
        keys.add(update.effective_user.id)
    return frozenset(keys)


@dataclass(eq=False)
class _Turn:
    """One update's place in the order of each of its keys."""

    keys: frozenset[int]
    task: asyncio.Task[Any] | None
    handled: asyncio.Future[None]  # done with the database: later updates may start
    slots: _Slots  # the processor's, one held while working
    # key -> done when this update and every earlier one of the key have made all their calls
    spoken: dict[int, asyncio.Future[None]] = field(default_factory=dict)
    speak_after: dict[int, asyncio.Future[None]] = field(default_factory=dict)  # the one before
    working: bool = False  # holds one of `slots`

    def mine(self) -> bool:
        return self.task is asyncio.current_task()

    def done_working(self) -> None:
        _resolve(self.handled)
        self.pause()

    def pause(self) -> bool:
        """Give the slot back (on the network, or done); whether it was held."""
        if not self.working:
            return False
        self.working = False
        self.slots.give()
        return True

    async def resume(self) -> None:
        """Back from the network with work left: a slot again, before updates not yet begun."""
        if not self.handled.done():
            await self.slots.take()
            self.working = True


class _Slots:
    """At most `size` updates working at once (the database, templates: the CPU). An update
    waiting for Telegram holds none. One coming back from the network goes first (it is nearer
    its end, and its chat waits for it), then the one that arrived first: an update whose turn
    came late (its chat was busy) does not queue behind every later arrival."""

    def __init__(self, size: int) -> None:
        self.free = size
        self._back: deque[asyncio.Future[None]] = deque()
        self._new: list[tuple[int, asyncio.Future[None]]] = []  # heap by arrival

    async def take(self, arrival: int | None = None) -> None:
        """A slot for a new update (its `arrival` number) or one back from the network."""
        if self.free > 0 and not self._back and not self._new:
            self.free -= 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if arrival is None:
            self._back.append(waiter)
        else:
            heapq.heappush(self._new, (arrival, waiter))
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.give()  # handed a slot just as it was cancelled: pass it on
            raise

    def give(self) -> None:
        while self._back or self._new:
            waiter = self._back.popleft() if self._back else heapq.heappop(self._new)[1]
            if not waiter.done():
                waiter.set_result(None)
                return
        self.free += 1


_turn: ContextVar[_Turn | None] = ContextVar("linli_turn", default=None)


def _current() -> _Turn | None:
    turn = _turn.get()
    return turn if turn is not None and turn.mine() else None


def hand_over() -> None:
    """The update being handled is done with the database; what is left is to speak. Later
    updates of its chat and person may start now; its calls keep their place before theirs.
    Outside an update (a job, a test calling a handler directly) it does nothing."""
    turn = _current()
    if turn is not None:
        turn.done_working()


def in_turn() -> bool:
    """Whether this code runs in an update's own task (its calls keep their place)."""
    return _current() is not None


def handed_over() -> bool:
    """Whether the update being handled has handed over (it may no longer write)."""
    turn = _current()
    return turn is not None and turn.handled.done()


async def speaking_turn(chat_id: int) -> None:
    """Wait until every earlier update keyed on `chat_id` has finished speaking."""
    turn = _current()
    before = turn.speak_after.get(chat_id) if turn is not None else None
    if before is not None and not before.done():
        await asyncio.shield(before)


def _when_done(futures: Iterable[asyncio.Future[None]], then: Callable[[], None]) -> None:
    """Call `then` once every one of `futures` is done (at once if they all are)."""
    pending = {f for f in futures if not f.done()}
    if not pending:
        then()
        return

    def one_done(future: asyncio.Future[None]) -> None:
        pending.discard(future)
        if not pending:
            then()

    for future in list(pending):
        future.add_done_callback(one_done)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class OrderedUpdateProcessor(BaseUpdateProcessor):
    """Per-key arrival order, bounded concurrency. The same in polling and webhook mode
    (both feed the application's update queue) and in tests (`Scene.feed` uses it too)."""

    __slots__ = ("_arrivals", "_slots", "_tails", "max_running", "on_finished")

    def __init__(self, max_running: int = DEFAULT_RUNNING) -> None:
        # PTB's own semaphore (taken before `do_process_update`) bounds the admitted updates:
        # working, waiting for their turn or for Telegram; ours bounds the ones working.
        super().__init__(max(ADMITTED, max_running))
        self.max_running = max_running
        self._slots = _Slots(max_running)
        self._arrivals = 0  # updates admitted so far: each one's place in the arrival order
        # key -> the turn of the latest admitted update of that key.
        self._tails: dict[int, _Turn] = {}
        # Told of every update whose handling ran to its end (the repeat guard saves these).
        self.on_finished: Callable[[object], None] | None = None

    @property
    def keys_waited_on(self) -> int:
        """Keys with an update admitted and unfinished (tests check this drains to 0)."""
        return len(self._tails)

    async def do_process_update(self, update: object, coroutine: Awaitable[Any]) -> None:
        # No await before the tails are swapped: admission order is arrival order (PTB's
        # semaphore is FIFO), and every update waits only on earlier ones, so no cycle.
        loop = asyncio.get_running_loop()
        turn = _Turn(order_keys(update), asyncio.current_task(), loop.create_future(), self._slots)
        self._arrivals += 1
        arrival = self._arrivals
        before: list[asyncio.Future[None]] = []
        for key in turn.keys:
            turn.spoken[key] = loop.create_future()
            earlier = self._tails.get(key)
            if earlier is not None:
                before.append(earlier.handled)
                turn.speak_after[key] = earlier.spoken[key]
            self._tails[key] = turn
        token = _turn.set(turn)
        try:
            for earlier_handled in before:
                # shield: an update cancelled while waiting must not cancel the one it waits for
                await asyncio.shield(earlier_handled)
            await self._slots.take(arrival)
            turn.working = True
            try:
                await coroutine
            finally:
                turn.done_working()
            if self.on_finished is not None:
                self.on_finished(update)
        finally:
            _turn.reset(token)
            if asyncio.iscoroutine(coroutine):
                coroutine.close()  # no-op once run; cancelled while waiting: it never started
            # Cancelled early, this update still counts as handled only after the ones before
            # it; in each of its keys it has spoken once it ended and the one before had spoken.
            _when_done(before, lambda: _resolve(turn.handled))
            for key in turn.keys:
                needed = [turn.handled]
                if key in turn.speak_after:
                    needed.append(turn.speak_after[key])
                _when_done(needed, functools.partial(self._finish, turn, key))

    def _finish(self, turn: _Turn, key: int) -> None:
        _resolve(turn.spoken[key])
        if self._tails.get(key) is turn:
            del self._tails[key]

    async def initialize(self) -> None:
        return None

    async def shutdown(self) -> None:
        return None


class SpeakingInTurn(BaseRequest):
    """The bot's requests, each call to a chat waiting for `speaking_turn` in that chat."""

    __slots__ = ("_inner",)

    def __init__(self, inner: BaseRequest) -> None:
        self._inner = inner

    @property
    def read_timeout(self) -> float | None:
        return self._inner.read_timeout

    async def initialize(self) -> None:
        await self._inner.initialize()

    async def shutdown(self) -> None:
        await self._inner.shutdown()

    async def do_request(
        self,
        url: str,
        method: str,
        request_data: RequestData | None = None,
        read_timeout: ODVInput[float] = DEFAULT_NONE,
        write_timeout: ODVInput[float] = DEFAULT_NONE,
        connect_timeout: ODVInput[float] = DEFAULT_NONE,
        pool_timeout: ODVInput[float] = DEFAULT_NONE,
    ) -> tuple[int, bytes]:
        turn = _current()
        paused = turn is not None and turn.pause()
        try:
            chat = request_data.parameters.get("chat_id") if request_data is not None else None
            if isinstance(chat, int):
                await speaking_turn(chat)
            return await self._inner.do_request(
                url,
                method,
                request_data,
                read_timeout=read_timeout,
                write_timeout=write_timeout,
                connect_timeout=connect_timeout,
                pool_timeout=pool_timeout,
            )
        finally:
            if paused and turn is not None:
                await turn.resume()
