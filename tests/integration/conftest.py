"""Whole updates through the PTB Application with the offline Telegram stand-in."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlmodel import col, select

from bot.app import build_application
from bot.config import load_settings
from bot.context import LinliApp
from bot.db import Database
from bot.standin import FakeTelegram, Scene
from models import reports
from models.people import Household, Person, Resident, Role
from models.reports import Report
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


# --- privacy in groups, checked after every test ----------------------------------------------

_GROUP_METHODS = frozenset({"sendMessage", "sendPhoto", "sendDocument", "editMessageText",
                            "editMessageCaption"})  # fmt: skip


class GroupPrivacy:
    """What a test means to show in groups: the names (or flats) a flow shows because the
    person chose it (the honour board, for instance). Everything else about a resident — their
    name, their flat — must never reach a group or a topic.

    Use `privacy.allow("王阿姨")` in a test, or `@pytest.mark.shows_in_group("王阿姨")`.
    """

    def __init__(self, allowed: set[str]) -> None:
        self.allowed = set(allowed)

    def allow(self, *shown: str) -> None:
        self.allowed.update(shown)


def _group_texts(telegram: FakeTelegram) -> list[tuple[int, str]]:
    """(chat, what its members see) for every message delivered or edited in a group or topic:
    the text or caption, and the labels of its buttons."""
    seen = []
    for call in telegram.calls:
        if call.method not in _GROUP_METHODS or not call.ok:
            continue
        chat_id = call.chat_id
        if chat_id is None or chat_id > 0:
            continue
        labels = " ".join(str(b.get("text", "")) for row in call.buttons for b in row)
        seen.append((chat_id, f"{call.text}\n{labels}"))
    return seen


def _appears(needle: str, text: str) -> bool:
    """`needle` as a whole word or flat number (so flat "101" is not found in "1101")."""
    edge = r"[0-9A-Za-z-]"
    return re.search(rf"(?<!{edge}){re.escape(needle)}(?!{edge})", text) is not None


async def _residents(db: Database) -> tuple[set[str], set[str]]:
    """The names of everyone who asked to live somewhere (leads excepted: a lead's name is
    public by their role), the number and words of every private report, and the flats of
    every household someone asked to live in."""
    async with db.transaction(write=False) as s:
        rows = await s.exec(
            select(Person.name, Household.flat, Person.id)
            .join(Resident, col(Resident.person_id) == col(Person.id))
            .join(Household, col(Household.id) == col(Resident.household_id))
        )
        found = rows.all()
        leads = set((await s.exec(select(Role.person_id))).all())
        hidden = (
            await s.exec(
                select(Report.number, Report.text).where(
                    Report.visibility == reports.Visibility.private
                )
            )
        ).all()
    names = {name for name, _, pid in found if pid not in leads and len(name.strip()) >= 2}
    flats = {flat for _, flat, _ in found if flat.strip()}
    # A report filed privately: neither its number nor its words reach a group.
    names |= {f"R-{number}" for number, _ in hidden}
    names |= {text.strip() for _, text in hidden if len(text.strip()) >= 4}
    return names, flats


async def group_leaks(
    db: Database, stand_ins: list[FakeTelegram], guard: GroupPrivacy
) -> list[str]:
    """Each resident's name or flat a group or topic was shown without the test meaning it."""
    shown = [seen for telegram in stand_ins for seen in _group_texts(telegram)]
    if not shown:
        return []
    names, flats = await _residents(db)
    return [
        f"chat {chat_id}: {what!r} in {text!r}"
        for chat_id, text in shown
        for what in sorted((names | flats) - guard.allowed)
        if _appears(what, text)
    ]


@pytest.fixture(autouse=True)
async def privacy(
    request: pytest.FixtureRequest, db: Database, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[GroupPrivacy]:
    """After each test, no group saw a resident's name or flat that the test did not state it
    means to show. Every stand-in the test made is checked, the `telegram` fixture's and any
    the test built itself."""
    marker = request.node.get_closest_marker("shows_in_group")
    guard = GroupPrivacy(set(marker.args) if marker else set())
    stand_ins: list[FakeTelegram] = []
    build = FakeTelegram.__init__

    def recorded(self: FakeTelegram, *args: Any, **kwargs: Any) -> None:
        build(self, *args, **kwargs)
        stand_ins.append(self)

    monkeypatch.setattr(FakeTelegram, "__init__", recorded)
    yield guard
    leaks = await group_leaks(db, stand_ins, guard)
    assert not leaks, "a group was shown what is nobody else's business:\n" + "\n".join(leaks)
