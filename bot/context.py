"""The long-lived services every handler reaches through its typed context."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeAlias

from sqlmodel.ext.asyncio.session import AsyncSession
from telegram.ext import Application, CallbackContext, ExtBot, JobQueue

from bot.cards import CardBuilder, Drawing
from bot.config import Settings
from bot.db import Database
from bot.render import Renderer
from models.people import Person

Rhythm = Callable[[AsyncSession, datetime], Awaitable[int]]
"""Periodic work: takes (session, now), returns how many things it did."""


@dataclass
class Services:
    settings: Settings
    db: Database
    renderer: Renderer
    clock: Callable[[], datetime]
    # Filled by the features' register(app), never by importing a module:
    rhythms: list[Rhythm] = field(default_factory=list)  # bot.delivery.add_rhythm
    cards: dict[str, CardBuilder] = field(default_factory=dict)  # bot.cards.register
    drawings: dict[str, Drawing] = field(default_factory=dict)  # bot.cards.register_drawing


class BotData:
    """The application's bot_data: typed attributes instead of string keys."""

    services: Services

    def __init__(self) -> None:
        from handlers.guards import Guard  # the guard's memory lives with the application

        self.guard = Guard()


class LinliContext(CallbackContext[ExtBot[None], dict[Any, Any], dict[Any, Any], BotData]):
    """Per-update context. The guards fill `person` and `lang` before any feature handler runs."""

    def __init__(self, application: Any, chat_id: int | None = None, user_id: int | None = None):
        super().__init__(application=application, chat_id=chat_id, user_id=user_id)
        self.person: Person | None = None
        self.lang: str = "zh"

    @property
    def svc(self) -> Services:
        return self.bot_data.services

    def now(self) -> datetime:
        return self.svc.clock()

    def is_superadmin(self, user_id: int | None) -> bool:
        return user_id is not None and user_id in self.svc.settings.admins


LinliApp: TypeAlias = Application[
    ExtBot[None], LinliContext, dict[Any, Any], dict[Any, Any], BotData, JobQueue[LinliContext]
]
