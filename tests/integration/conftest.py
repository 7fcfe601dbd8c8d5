"""Whole updates through the PTB Application with the offline Telegram stand-in."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta

import pytest

from bot.app import build_application
from bot.config import load_settings
from bot.context import LinliApp
from bot.db import Database
from bot.standin import FakeTelegram, Scene
from tests.conftest import NOW

ADMIN_ID = 1


class Clock:
    def __init__(self, now: datetime = NOW) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def telegram() -> FakeTelegram:
    return FakeTelegram()


@pytest.fixture
async def app(db: Database, telegram: FakeTelegram, clock: Clock) -> AsyncIterator[LinliApp]:
    settings = load_settings(bot_token="", admins=str(ADMIN_ID), _env_file=None)
    application = build_application(settings, request=telegram, db=db, clock=clock)
    async with application:
        yield application


@pytest.fixture
def scene(app: LinliApp, telegram: FakeTelegram) -> Scene:
    return Scene(app, telegram)
