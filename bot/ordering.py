"""Updates of different chats and people run at once; one chat's, or one person's, in order.

PTB hands every update to the application's update processor. `OrderedUpdateProcessor`
gives each update the keys it must be ordered by (its chat and its sender: a private chat's
id is its person's id, groups are negative, so one set of ints holds both) and lets it start
only when every earlier update sharing a key has finished. Different keys never wait for
each other. At most `max_running` updates run at once; the ones waiting for their turn are
bounded too (`max_waiting`), so a burst holds back the update queue instead of growing memory.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from telegram import Update
from telegram.ext import BaseUpdateProcessor

DEFAULT_RUNNING = 256
WAITING_PER_RUNNING = 16


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


class OrderedUpdateProcessor(BaseUpdateProcessor):
    """Per-key arrival order, bounded concurrency. The same in polling and webhook mode
    (both feed the application's update queue) and in tests (`Scene.feed` uses it too)."""

    __slots__ = ("_running", "_tails", "max_running", "on_finished")

    def __init__(self, max_running: int = DEFAULT_RUNNING) -> None:
        # PTB's own semaphore (taken before `do_process_update`) bounds the admitted updates,
        # running or waiting for their key; ours bounds the ones running.
        super().__init__(max_running * WAITING_PER_RUNNING)
        self.max_running = max_running
        self._running = asyncio.BoundedSemaphore(max_running)
        # key -> the future the latest admitted update of that key resolves when it ends.
        self._tails: dict[int, asyncio.Future[None]] = {}
        # Told of every update whose handling ran to its end (the repeat guard saves these).
        self.on_finished: Callable[[object], None] | None = None

    @property
    def keys_waited_on(self) -> int:
        """Keys with an update admitted and unfinished (tests check this drains to 0)."""
        return len(self._tails)

    async def do_process_update(self, update: object, coroutine: Awaitable[Any]) -> None:
        # No await before the tails are swapped: admission order is arrival order (PTB's
        # semaphore is FIFO), and every update waits only on earlier ones, so no cycle.
        keys = order_keys(update)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        before = [self._tails[k] for k in keys if k in self._tails]
        for key in keys:
            self._tails[key] = done
        try:
            for earlier in before:
                # shield: an update cancelled while waiting must not cancel the one it waits for
                await asyncio.shield(earlier)
            async with self._running:
                await coroutine
            if self.on_finished is not None:
                self.on_finished(update)
        finally:
            if asyncio.iscoroutine(coroutine):
                coroutine.close()  # no-op once run; cancelled while waiting: it never started
            # Cancelled early, this update still ends only after the ones before it.
            pending = [f for f in before if not f.done()]
            if pending:
                asyncio.gather(*pending).add_done_callback(lambda _: self._finish(keys, done))
            else:
                self._finish(keys, done)

    def _finish(self, keys: frozenset[int], done: asyncio.Future[None]) -> None:
        done.set_result(None)
        for key in keys:
            if self._tails.get(key) is done:
                del self._tails[key]

    async def initialize(self) -> None:
        return None

    async def shutdown(self) -> None:
        return None
