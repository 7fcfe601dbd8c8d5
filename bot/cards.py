"""Live cards: messages the bot posts (a task card in a group, a join request in a lead's chat)
that show the current state of something and are edited in place as it changes.

A feature registers one builder per card kind in its `register(app)`:

    cards.register(app, "task", task_card)

    async def task_card(req: cards.CardRequest) -> cards.Card | None:
        task = await tasks.get(req.session, req.subject_id)   # the database as it is now
        if task is None:
            return None                                       # gone: nothing is sent
        markup = keyboard([[button(req.label("tasks", "sign_up"), f"tk:{task.id}")]])
        return cards.Card("tasks/card", {"task": task}, markup)

and, in the transaction that creates or changes the subject, posts or marks it (models.outbox):

    await outbox.post_card_to_unit(session, kind="task", subject_id=task.id, unit=unit, now=now)
    await outbox.mark_changed(session, kind="task", subject_id=task.id, now=now)

The sender builds the card when it sends the post and each edit, in the chat's language (a
group's is its community's, whoever tapped), so an edit always shows the latest state; edits of
one copy are at most one per `outbox.CARD_GAP`, within the group's pace.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlmodel.ext.asyncio.session import AsyncSession
from telegram import InlineKeyboardMarkup

from bot.render import Renderer

if TYPE_CHECKING:
    from bot.context import LinliApp


@dataclass(frozen=True)
class Card:
    """What a card shows: a template with its parameters, and its buttons."""

    template: str
    params: dict[str, Any] = field(default_factory=dict)
    markup: InlineKeyboardMarkup | None = None


@dataclass(frozen=True)
class CardRequest:
    """What a builder is given: a read-only session, the subject, and the reader's language."""

    session: AsyncSession
    subject_id: int
    lang: str
    chat_id: int
    now: datetime
    renderer: Renderer
    bot_username: str = ""

    def deep_link(self, payload: str) -> str:
        """A link that opens the reader's private chat with the bot at `/start <payload>`."""
        return f"https://t.me/{self.bot_username}?start={payload}"

    def label(self, feature: str, key: str, **params: Any) -> str:
        return self.renderer.label(self.lang, feature, key, **params)

    @property
    def private(self) -> bool:
        return self.chat_id > 0


CardBuilder = Callable[[CardRequest], Awaitable[Card | None]]

# A picture drawn when its outbox row is sent (a row's `photo` "drawn:<name>"), from the row's
# context: a poll's result chart.
Drawing = Callable[[dict[str, Any]], bytes]
DRAWN = "drawn:"


def register_drawing(app: LinliApp, name: str, drawing: Drawing) -> None:
    """Name a drawing (in the feature's `register(app)`); rows ask for it as `drawn:<name>`."""
    app.bot_data.services.drawings[name] = drawing


def register(app: LinliApp, kind: str, builder: CardBuilder) -> None:
    """Name the builder of one card kind (in the feature's `register(app)`)."""
    if ":" in kind:
        raise ValueError(f"card kind {kind!r} may not contain ':'")
    builders = app.bot_data.services.cards
    if builders.get(kind, builder) is not builder:
        raise ValueError(f"card kind {kind!r} is registered twice")
    builders[kind] = builder
