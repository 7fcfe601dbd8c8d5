"""`linli sandbox`: a console where you are several neighbours at once, offline."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from pathlib import Path
from typing import Any, TextIO, TypeVar
from zoneinfo import ZoneInfo

from sqlalchemy.engine import make_url
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from bot import delivery
from bot.app import build_application, on_startup
from bot.config import Settings
from bot.context import LinliApp
from bot.db import Database
from bot.standin import BOT_USER, JSON, Call, FakeTelegram, Scene, visible
from models import agenda, ledger, people, points, polls, reports, rewards, tasks
from models.base import utcnow
from models.importer import import_file
from models.people import Authority, Household, RoleKind, Unit
from models.tally import Method, Rule

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./data/sandbox.db"
DATABASE_ENV = "LINLI_SANDBOX_DATABASE_URL"
COMMUNITY_FILE = Path(__file__).parent / "demo" / "community.yaml"

T = TypeVar("T")


# --- the cast and the chats -----------------------------------------------------------------


@dataclass(frozen=True)
class Character:
    """Someone you can be in the sandbox: a Telegram account, and their place in the demo."""

    id: int
    name: str
    language_code: str  # what their Telegram app reports
    aliases: tuple[str, ...]  # Latin names, so the console works without a Chinese keyboard
    about: str
    started: bool = True  # has opened a private chat with the bot
    lead_of: str | None = None  # a building of the demo community
    household_code: str | None = None  # verified member of this household


ADMIN_ID = 10001
CAST = (
    Character(ADMIN_ID, "周主任", "zh-hans", ("zhou", "admin"), "居委会 staff"),
    Character(
        10002, "王阿姨", "zh-hans", ("wang", "lead"), "楼长, building lead",
        lead_of="3号楼", household_code="R4TQ9WNC",
    ),
    Character(10003, "李叔叔", "zh-hans", ("li",), "neighbour", household_code="HX7K2MPA"),
    Character(10004, "Sam", "en", ("sam",), "new neighbour"),
    # Never opened a private chat: shows what Linli does when it cannot reach someone.
    Character(10005, "张师傅", "zh-hans", ("zhang", "merchant"), "runs the repair shop",
              started=False),
)  # fmt: skip

FIRST_PERSON = 10004  # Sam: everything still to discover, so /start shows the most

GROUP_ID = -4000000301  # a basic group, as a building group usually starts out
GROUP_TITLE = "3号楼邻里群"
FORUM_ID = -1002000000501
FORUM_TITLE = "幸福里社区"
TOPIC_THREAD = 100
TOPIC_NAME = "5号楼"


@dataclass(frozen=True)
class Place:
    """A chat you can be in; chat_id None is the current person's private chat."""

    name: str
    aliases: tuple[str, ...]
    chat_id: int | None
    thread: int | None = None
    about: str = ""


PRIVATE = Place("private", ("私聊", "pm", "dm"), None, about="your private chat with Linli")
PLACES = (
    Place(GROUP_TITLE, ("group", "群"), GROUP_ID, about="building group"),
    Place(f"{FORUM_TITLE} › {TOPIC_NAME}", ("topic", TOPIC_NAME), FORUM_ID, TOPIC_THREAD,
          about="forum topic"),
    Place(FORUM_TITLE, ("forum", "general"), FORUM_ID, about="forum, General topic"),
    PRIVATE,
)  # fmt: skip

# Reads and housekeeping nobody would notice in a chat.
QUIET = {
    "getMe", "getChat", "getChatMember", "getChatAdministrators", "setMyCommands",
    "deleteMyCommands", "getMyCommands", "setWebhook", "deleteWebhook", "getUpdates",
}  # fmt: skip
SENDS = {"sendMessage", "sendPhoto", "sendDocument"}
INDENT = "    "

HELP = """\
Type what a person would type: it is said as the current person in the current chat.
直接输入文字，就是以当前身份在当前聊天里发言（/start、/join 等命令也一样）。
  text            say it here (/commands included)
  :as NAME|N      become someone else (see :people)
  :in CHAT|N      go to another chat: group, topic, forum, private (see :chats)
  :tap N          tap button N of the last message with buttons here
  :tap N M        tap button N of message #M here
  :tap TEXT       tap the button whose label contains TEXT
  :last [N]       show the last N messages here (default 5)
  :people         who is who        :chats    the chats
  :who            who and where you are now
  :codes          the demo households and their codes (join by code)
  :help           this list         :quit     leave (Ctrl-D too)
Lines starting with # are comments."""


# --- start-up ---------------------------------------------------------------------------------


class SandboxError(Exception):
    """The sandbox cannot start; the message is one line for the person at the console."""


def sqlite_file(url: str) -> Path:
    """The sandbox keeps its own SQLite file, so --fresh can simply delete it."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        raise SandboxError(
            f"{DATABASE_ENV} must be a SQLite file (sqlite+aiosqlite:///path/sandbox.db)"
        )
    return Path(str(parsed.database))


def forget(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


async def seed(db: Database, *, now: datetime) -> bool:
    """Load the demo community and cast into an empty database; False if it has a community."""
    async with db.transaction() as session:
        if await people.communities(session):
            return False
        await import_file(session, path=COMMUNITY_FILE, now=now)
        (community,) = await people.communities(session)
        assert community.id is not None
        units = {u.name: u for u in await people.buildings(session, community_id=community.id)}
        superadmin = Authority(person_id=ADMIN_ID, superadmin=True)
        for who in CAST:
            await people.touch_person(
                session,
                person_id=who.id,
                name=who.name,
                username=None,
                language_code=who.language_code,
                now=now,
            )
            if who.lead_of is not None:
                await people.grant_role(
                    session,
                    auth=superadmin,
                    unit_id=_id(units[who.lead_of]),
                    person_id=who.id,
                    kind=RoleKind.lead,
                    now=now,
                )
            if who.household_code is not None:
                household = await people.household_by_code(session, who.household_code)
                assert household.id is not None
                await people.request_join(
                    session,
                    person_id=who.id,
                    household_id=household.id,
                    now=now,
                    verified_by_code=True,
                )
                await points.welcome(session, community_id=community.id, person_id=who.id, now=now)
        await _stock_the_bank(session, community_id=community.id, now=now)
        for chat_id, kind, title, forum in (
            (GROUP_ID, "group", GROUP_TITLE, False),
            (FORUM_ID, "supergroup", FORUM_TITLE, True),
        ):
            await people.record_chat(
                session,
                chat_id=chat_id,
                type=kind,
                title=title,
                is_forum=forum,
                bot_status="administrator",
                now=now,
            )
        # The forum's General topic stays unlinked: something left to try with /setup.
        for chat_id, thread, unit, title in (
            (GROUP_ID, 0, "3号楼", GROUP_TITLE),
            (FORUM_ID, TOPIC_THREAD, "5号楼", TOPIC_NAME),
        ):
            await people.link_chat(
                session,
                chat_id=chat_id,
                thread_id=thread,
                unit_id=_id(units[unit]),
                title=title,
                by=ADMIN_ID,
                now=now,
            )
        await _demo_reports(session, community_id=community.id, now=now)
        await _demo_tasks(session, community_id=community.id, now=now)
        await _open_the_agenda(session, building=units["3号楼"], now=now)
    return True


async def _open_the_agenda(session: AsyncSession, *, building: Unit, now: datetime) -> None:
    """Two proposals with support, a 5-3-1 poll open now and an owners' poll (Art. 278,
    ordinary matter) in 3号楼, so a newcomer can vote as 李叔叔 and see the card's turnout move.
    王阿姨 and 李叔叔 are marked owners; 王阿姨 has already ranked the issues."""
    superadmin = Authority(person_id=ADMIN_ID, superadmin=True)
    wang = Authority(person_id=10002)
    for who in (10002, 10003):
        (member,) = await people.memberships(session, person_id=who)
        assert member.resident.id is not None
        await polls.mark_owner(
            session, auth=superadmin, resident_id=member.resident.id, owner=True, now=now
        )
    rail = await agenda.propose(
        session, auth=wang, unit_id=_id(building), title="楼道加装扶手",
        body="老人上下楼不方便，3号楼一到六层都需要。", now=now,
    )  # fmt: skip
    await agenda.propose(
        session, auth=Authority(person_id=10003), unit_id=_id(building), title="自行车棚修顶棚",
        body="下雨天车棚漏水，电动车充电不安全。", now=now,
    )  # fmt: skip
    assert rail.id is not None
    await agenda.support(session, auth=superadmin, proposal_id=rail.id, now=now)
    await agenda.support(session, auth=wang, proposal_id=rail.id, now=now)
    talk = await polls.create_poll(
        session,
        auth=superadmin,
        spec=polls.PollSpec(
            unit_id=_id(building), question=f"月月谈（{now.month}月）：本月先办哪件事？",
            options=["楼道加装扶手", "自行车棚修顶棚", "清理楼道杂物", "装快递柜"],
            opens_at=now, closes_at=now + timedelta(days=7), method=Method.ranking,
        ),
        now=now,
    )  # fmt: skip
    assert talk.id is not None
    await polls.cast(
        session, poll_id=talk.id, person_id=10002, choices=[1, 3, 2], now=now,
        ballot_key=b"",  # a named poll: ballots are not keyed
    )  # fmt: skip
    await polls.create_poll(
        session,
        auth=superadmin,
        spec=polls.PollSpec(
            unit_id=_id(building), question="是否续聘现物业公司（一般事项）",
            description="按《民法典》第二百七十八条表决：专有面积和业主人数都过三分之二参与，"
            "参与面积和人数都过半数同意即通过。",
            options=[], opens_at=now, closes_at=now + timedelta(days=10),
            method=Method.yesno, rule=Rule.art278_ordinary,
        ),
        now=now,
    )  # fmt: skip


async def _stock_the_bank(session: AsyncSession, *, community_id: int, now: datetime) -> None:
    """Points to spend and rewards to spend them on, so redemption can be tried at once."""
    await ledger.post(
        session,
        community_id=community_id,
        person_id=10003,
        amount=40,
        key="sandbox:award:10003",
        reason="楼道清理志愿服务",
        kind=ledger.Kind.award,
        by=10002,
        now=now,
    )
    superadmin = Authority(person_id=ADMIN_ID, superadmin=True)
    for name_zh, name_en, cost, stock in (
        ("社区食堂午餐券", "Canteen lunch voucher", 30, 20),
        ("理发一次", "A haircut", 50, None),
    ):
        await rewards.add_reward(
            session,
            auth=superadmin,
            community_id=community_id,
            name_zh=name_zh,
            name_en=name_en,
            cost=cost,
            stock=stock,
            merchant_id=10005,
            now=now,
        )


async def _demo_reports(session: AsyncSession, *, community_id: int, now: datetime) -> None:
    """Reports in different states, so a newcomer sees the whole loop at once: one overdue
    (never acknowledged, passed up to the grid), one resolved and waiting for the neighbours'
    verdict, one being worked on."""
    units = {u.name: u for u in await people.buildings(session, community_id=community_id)}
    lead = await people.authority(session, person_id=10002, superadmin=False)
    admin = Authority(person_id=ADMIN_ID, superadmin=True)
    await reports.file(
        session, reporter_id=10003, unit_id=_id(units["3号楼"]), category="lights",
        text="3楼楼道灯不亮，晚上看不见台阶", place=reports.Place.stairwell, floor=3,
        chat_id=GROUP_ID, now=now - timedelta(hours=30),
    )  # fmt: skip
    waiting, _ = await reports.file(
        session, reporter_id=10003, unit_id=_id(units["3号楼"]), category="lift",
        text="电梯按钮失灵", place=reports.Place.lift, chat_id=GROUP_ID,
        now=now - timedelta(days=2),
    )  # fmt: skip
    await reports.act(
        session, auth=lead, report_id=waiting.id or 0, action=reports.Action.resolve,
        note="已请物业更换按钮", now=now - timedelta(days=1),
    )  # fmt: skip
    working, _ = await reports.file(
        session, reporter_id=10003, unit_id=_id(units["5号楼"]), category="water",
        text="地下室墙角渗水", place=reports.Place.basement, chat_id=FORUM_ID,
        thread_id=TOPIC_THREAD, now=now - timedelta(hours=5),
    )  # fmt: skip
    await reports.act(
        session, auth=admin, report_id=working.id or 0, action=reports.Action.in_progress,
        now=now - timedelta(hours=4),
    )  # fmt: skip
    await reports.escalate_due(session, now)


async def _demo_tasks(session: AsyncSession, *, community_id: int, now: datetime) -> None:
    """A lead's task for the coming Saturday with some places taken, and the service day on the
    9th, 19th and 29th, so a newcomer can sign up, withdraw and check in at once."""
    community = await people.get_community(session, community_id)
    zone = ZoneInfo(community.timezone)
    today = now.astimezone(zone).date()
    saturday = today + timedelta(days=(5 - today.weekday()) % 7 or 7)
    units = {u.name: u for u in await people.buildings(session, community_id=community_id)}
    lead = await people.authority(session, person_id=10002, superadmin=False)
    start = datetime.combine(saturday, time(9, 0), tzinfo=zone)
    task = await tasks.create_task(
        session, auth=lead, unit_id=_id(units["3号楼"]), now=now,
        fields=tasks.Fields(title="清理楼道杂物", starts_at=start,
                            ends_at=start + timedelta(hours=2, minutes=30), place="3号楼门口",
                            slots=5, description="带上手套，工具由物业提供。",
                            skill="cleaning"),
    )  # fmt: skip
    for volunteer in (10003, 10002):
        await tasks.sign_up(session, task_id=task.id or 0, person_id=volunteer, now=now)
    days = tasks.occurrence_dates("monthly", [9, 19, 29], today + timedelta(days=1),
                                  today + timedelta(days=40))  # fmt: skip
    first = datetime.combine(days[0], time(8, 30), tzinfo=zone)
    grid = await people.get_unit(session, units["3号楼"].parent_id or 0)
    await tasks.create_series(
        session, auth=Authority(person_id=ADMIN_ID, superadmin=True), unit_id=_id(grid),
        repeat="monthly", days=[9, 19, 29], now=now,
        fields=tasks.Fields(title="社区服务日", starts_at=first, ends_at=first + timedelta(hours=3),
                            place="社区广场", slots=20, skill="elderly_care"),
    )  # fmt: skip


def _id(unit: Unit) -> int:
    assert unit.id is not None
    return unit.id


def stage(scene: Scene) -> dict[int, JSON]:
    """Tell the stand-in about the cast and the chats; it forgets everything between runs."""
    scene.group(GROUP_ID, GROUP_TITLE)
    scene.group(FORUM_ID, FORUM_TITLE, forum=True)
    scene.tg.topics.setdefault(FORUM_ID, {})[TOPIC_THREAD] = TOPIC_NAME
    users: dict[int, JSON] = {}
    for who in CAST:
        users[who.id] = scene.person(who.id, who.name, lang=who.language_code)
        scene.private(users[who.id])
        if who.started:
            scene.tg.started.add(who.id)
    return users


# --- what people see ----------------------------------------------------------------------------


def flat_buttons(message: JSON) -> list[JSON]:
    """A message's inline buttons, numbered across rows as the console shows them."""
    rows = (message.get("reply_markup") or {}).get("inline_keyboard", [])
    return [b for row in rows for b in row]


def button_lines(markup: Any) -> list[str]:
    if not isinstance(markup, dict):
        return []
    if markup.get("force_reply"):
        return [f"{INDENT}(asks for a typed reply)"]
    lines, number = [], 0
    for row in markup.get("inline_keyboard", []):
        shown = []
        for b in row:
            number += 1
            text = str(b.get("text", ""))
            if "url" in b:
                text += f" (link: {b['url']})"
            shown.append(f"[{number}] {text}")
        lines.append(INDENT + "  ".join(shown))
    return lines


def indented(head: str, text: str) -> list[str]:
    """`head text` with every further line of text indented under it."""
    first, *rest = text.split("\n") if text else [""]
    lines = [f"{head} {first}".rstrip()]
    lines += [(INDENT + line).rstrip() for line in rest]
    return lines


class Console:
    """The sandbox's state: who you are, where you are, and what the bot has done so far."""

    def __init__(
        self, app: LinliApp, scene: Scene, users: dict[int, JSON], out: Callable[[str], None]
    ) -> None:
        self.app = app
        self.scene = scene
        self.tg = scene.tg
        self.users = users
        self.out = out
        self.places = list(PLACES)
        self.person = next(c for c in CAST if c.id == FIRST_PERSON)
        self.place = PRIVATE
        self.seen = len(self.tg.calls)

    # where and who

    @property
    def user(self) -> JSON:
        return self.users[self.person.id]

    def chat(self) -> JSON:
        if self.place.chat_id is None:
            return self.scene.private(self.user)
        return self.tg.chats[self.place.chat_id]

    @property
    def chat_id(self) -> int:
        return self.person.id if self.place.chat_id is None else self.place.chat_id

    def prompt(self) -> str:
        return f"{self.person.name} @ {self.place.name}> "

    def chat_label(self, chat_id: int | None, thread: int | None = None) -> str:
        if chat_id is None:
            return "?"
        if chat_id > 0:
            names = {c.id: c.name for c in CAST}
            name = names.get(chat_id) or self.tg.chats.get(chat_id, {}).get("first_name")
            return f"{name or chat_id} (private)"
        label = str(self.tg.chats.get(chat_id, {}).get("title") or chat_id)
        if thread:
            label += f" › {self.tg.topics.get(chat_id, {}).get(thread, thread)}"
        return label

    # the transcript

    def flush(self) -> None:
        """Print every Bot API call since the last flush, as the people concerned see it."""
        calls, self.seen = self.tg.calls[self.seen :], len(self.tg.calls)
        for call in calls:
            for line in self.describe(call):
                self.out(line)
        self._learn_topics()

    def describe(self, call: Call) -> list[str]:
        method = call.method
        if method in QUIET:
            return []
        result = call.result if isinstance(call.result, dict) else {}
        thread = call.params.get("message_thread_id") or result.get("message_thread_id")
        where = f"[{self.chat_label(call.chat_id, int(thread) if thread else None)}]"
        if method == "answerCallbackQuery":
            if not call.ok:
                return [f"(Telegram refused the pop-up: {call.error})"]
            text = str(call.params.get("text") or "")
            if not text:
                return []
            return indented("(pop-up)" if call.params.get("show_alert") else "(toast)", text)
        if not call.ok:
            return [f"{where} (Telegram refused: {call.error})"]
        message_id = result.get("message_id") or call.params.get("message_id")
        markup = call.params.get("reply_markup")
        if method in SENDS:
            text = call.text
            if method == "sendPhoto":
                text = f"(photo) {text}".rstrip()
            elif method == "sendDocument":
                text = f"(document) {text}".rstrip()
            return indented(f"{where} Linli #{message_id}:", text) + button_lines(markup)
        if method == "editMessageText":
            head = f"{where} Linli (edited #{message_id}):"
            return indented(head, call.text) + button_lines(markup)
        if method == "editMessageReplyMarkup":
            lines = button_lines(markup) or [f"{INDENT}(no buttons any more)"]
            return [f"{where} Linli (new buttons on #{message_id}):", *lines]
        if method == "deleteMessage":
            return [f"{where} (Linli deleted #{message_id})"]
        if method == "pinChatMessage":
            return [f"{where} (Linli pinned #{message_id})"]
        if method == "unpinChatMessage":
            return [f"{where} (Linli unpinned a message)"]
        if method == "createForumTopic":
            return [f"{where} (Linli opened the topic “{call.params.get('name')}”)"]
        return [f"{where} (Linli called {method})"]

    def _learn_topics(self) -> None:
        """Topics the bot opened become places you can go."""
        known = {(p.chat_id, p.thread) for p in self.places}
        for chat_id, topics in self.tg.topics.items():
            for thread, name in topics.items():
                if (chat_id, thread) not in known:
                    title = self.chat_label(chat_id)
                    self.places.insert(-1, Place(f"{title} › {name}", (name,), chat_id, thread))

    # one line of input

    async def handle(self, line: str) -> bool:
        """Act on one line; False when the person wants to leave."""
        # A script replays its lines faster than fingers could; the flood guard is for people.
        self.app.bot_data.guard.activity.clear()
        if not line.startswith(":"):
            await self.scene.say(self.user, self.chat(), line, thread=self.place.thread)
            return True
        words = line[1:].split()
        if not words:  # a bare ":" (or ": ") is no command at all
            self.out("(a sandbox command follows the colon, e.g. :who; :help lists them all)")
            return True
        command, *args = words
        action = {
            "as": self.cmd_as,
            "in": self.cmd_in,
            "tap": self.cmd_tap,
            "last": self.cmd_last,
            "people": self.cmd_people,
            "chats": self.cmd_chats,
            "who": self.cmd_who,
            "codes": self.cmd_codes,
            "help": self.cmd_help,
        }.get(command.lower())
        if command.lower() in ("quit", "exit", "q"):
            return False
        if action is None:
            self.out(f"(unknown command :{command}; :help lists what you can do)")
            return True
        await action(args)
        return True

    async def cmd_help(self, args: list[str]) -> None:
        for line in HELP.splitlines():
            self.out(line)

    async def cmd_as(self, args: list[str]) -> None:
        found = pick(CAST, " ".join(args), lambda c: (c.name, *c.aliases))
        if found is None:
            self.out("(who? :as takes a number or a name from :people)")
            return
        self.person = found
        await self.cmd_who([])

    async def cmd_in(self, args: list[str]) -> None:
        found = pick(self.places, " ".join(args), lambda p: (p.name, *p.aliases))
        if found is None:
            self.out("(where? :in takes a number or a name from :chats)")
            return
        self.place = found
        await self.cmd_who([])

    async def cmd_who(self, args: list[str]) -> None:
        where = (
            "your private chat with Linli"
            if self.place.chat_id is None
            else self.chat_label(self.place.chat_id, self.place.thread)
        )
        self.out(f"(you are {self.person.name}, id {self.person.id}, in {where})")

    async def cmd_people(self, args: list[str]) -> None:
        superadmins = self.app.bot_data.services.settings.admins
        self.out("People (:as N or name):")
        async with self.app.bot_data.services.db.transaction(write=False) as session:
            for number, who in enumerate(CAST, 1):
                facts = [who.about, f"Telegram in {who.language_code}"]
                if who.id in superadmins:
                    facts.append("super-admin")
                for _role, unit in await people.roles_of(session, person_id=who.id):
                    facts.append(f"{_role.kind} of {unit.name}")
                for m in await people.memberships(session, person_id=who.id):
                    facts.append(f"{m.resident.status} in {m.building.name} {m.household.flat}")
                if who.id not in self.tg.started:
                    facts.append("has not opened a private chat with Linli")
                mark = "*" if who == self.person else " "
                aliases = "/".join(who.aliases)
                self.out(f"{mark} {number}. {who.name} ({aliases}): {'; '.join(facts)}")

    async def cmd_chats(self, args: list[str]) -> None:
        self.out("Chats (:in N or name):")
        async with self.app.bot_data.services.db.transaction(write=False) as session:
            for number, place in enumerate(self.places, 1):
                facts = [place.about] if place.about else []
                if place.chat_id is not None:
                    link = await people.link_for(
                        session, chat_id=place.chat_id, thread_id=place.thread
                    )
                    unit = await session.get(Unit, link.unit_id) if link else None
                    facts.append(f"linked to {unit.name}" if unit else "not linked")
                mark = "*" if place == self.place else " "
                self.out(f"{mark} {number}. {place.name}: {', '.join(facts)}")

    async def cmd_codes(self, args: list[str]) -> None:
        async with self.app.bot_data.services.db.transaction(write=False) as session:
            rows = (
                await session.exec(
                    select(Household, Unit)
                    .join(Unit, col(Unit.id) == col(Household.building_id))
                    .order_by(col(Unit.name), col(Household.flat))
                )
            ).all()
        if not rows:
            self.out("(no households yet)")
            return
        self.out("Households and their codes (a code joins at once: /join, then the code):")
        for household, building in rows:
            self.out(f"  {building.name}  {household.flat}  {household.code}")

    async def cmd_last(self, args: list[str]) -> None:
        count = int(args[0]) if args and args[0].isdigit() else 5
        shown = self.here()[-count:]
        if not shown:
            self.out("(nothing here yet)")
        for message in shown:
            sender = message.get("from", {})
            name = "Linli" if sender.get("id") == BOT_USER["id"] else sender.get("first_name")
            text = visible(str(message.get("text") or message.get("caption") or ""))
            self.out_lines(indented(f"#{message['message_id']} {name}:", text))
            if sender.get("id") == BOT_USER["id"]:
                self.out_lines(button_lines(message.get("reply_markup")))

    async def cmd_tap(self, args: list[str]) -> None:
        if not args:
            self.out("(tap what? :tap N, :tap N M or :tap TEXT)")
            return
        if len(args) == 2 and all(a.isdigit() for a in args):
            message = self.tg.messages.get(self.chat_id, {}).get(int(args[1]))
            if message is None:
                self.out(f"(there is no message #{args[1]} in this chat)")
                return
        else:
            with_buttons = [m for m in self.here() if flat_buttons(m)]
            if not with_buttons:
                self.out("(no message with buttons here; :last shows what is here)")
                return
            message = with_buttons[-1]
        buttons = flat_buttons(message)
        wanted = args[0] if len(args) == 2 else " ".join(args)
        button = choose(buttons, wanted)
        if button is None:
            listed = "  ".join(f"[{n}] {b.get('text')}" for n, b in enumerate(buttons, 1))
            self.out(f"(no button {wanted!r} on #{message['message_id']}: {listed or 'none'})")
            return
        label = button.get("text")
        if "callback_data" in button:
            self.out(f"({self.person.name} taps “{label}” on #{message['message_id']})")
            await self.scene.press(self.user, message, str(button["callback_data"]))
            return
        url = str(button.get("url", ""))
        start = f"https://t.me/{BOT_USER['username']}?start="
        if url.startswith(start):
            # Telegram opens the private chat and sends /start with the link's payload.
            self.out(f"({self.person.name} opens the link: the private chat with Linli)")
            self.place = PRIVATE
            await self.scene.say(self.user, self.chat(), f"/start {url.removeprefix(start)}")
            return
        self.out(f"(a link to {url}: the sandbox opens no web pages)")

    def here(self) -> list[JSON]:
        """The messages of the current chat (of its current topic, in a forum), oldest first."""
        stored = self.tg.messages.get(self.chat_id, {})
        thread = self.place.thread
        return [
            stored[i]
            for i in sorted(stored)
            if (stored[i].get("message_thread_id") if stored[i].get("is_topic_message") else None)
            == thread
        ]

    def out_lines(self, lines: Sequence[str]) -> None:
        for line in lines:
            self.out(line)


def pick(items: Sequence[T], wanted: str, names: Callable[[T], Sequence[str]]) -> T | None:
    """By number (1-based), by a name or alias, or by a part of exactly one name."""
    wanted = wanted.strip().casefold()
    if not wanted:
        return None
    if wanted.isdigit():
        index = int(wanted) - 1
        return items[index] if 0 <= index < len(items) else None
    for item in items:
        if wanted in (n.casefold() for n in names(item)):
            return item
    partial = [i for i in items if any(wanted in n.casefold() for n in names(i))]
    return partial[0] if len(partial) == 1 else None


def choose(buttons: list[JSON], wanted: str) -> JSON | None:
    """A button by its number, its label, or a part of its label."""
    return pick(buttons, wanted, lambda b: (str(b.get("text", "")),))


# --- reading lines ----------------------------------------------------------------------------


async def read_line(read: Callable[[], str]) -> str | None:
    """One line from a blocking reader, None at the end of input.

    The read runs in a daemon thread, so the event loop keeps running scheduled work
    meanwhile and Ctrl-C at the prompt does not wait for the read to finish.
    """
    loop = asyncio.get_running_loop()
    done: asyncio.Future[str | None] = loop.create_future()

    def settle(line: str | None, error: BaseException | None) -> None:
        if done.done():
            return
        if error is not None:
            done.set_exception(error)
        else:
            done.set_result(line)

    def work() -> None:
        try:
            line: str | None = read()
        except EOFError:
            line = None
        except Exception as exc:  # handed to the awaiting coroutine
            loop.call_soon_threadsafe(settle, None, exc)
            return
        loop.call_soon_threadsafe(settle, line, None)

    threading.Thread(target=work, name="sandbox-input", daemon=True).start()
    return await done


async def converse(console: Console, stdin: TextIO, out: Callable[[str], None]) -> None:
    """Read lines until :quit or the end of input; a TTY gets a prompt, a script an echo."""
    interactive = stdin.isatty()
    at_terminal = interactive and stdin is sys.stdin and sys.stdout.isatty()
    if at_terminal:
        with contextlib.suppress(ImportError):
            import readline  # noqa: F401  (line editing and history for input())
    while True:
        if at_terminal:
            prompt = console.prompt()
            try:
                line = await read_line(functools.partial(input, prompt))
            except asyncio.CancelledError:
                # Ctrl-C at the prompt: leave like :quit.
                task = asyncio.current_task()
                if task is not None:
                    task.uncancel()
                out("")
                return
        else:
            if interactive:
                out(console.prompt().rstrip())
            raw = await read_line(stdin.readline)
            line = raw if raw else None  # readline gives "" only at the end
        if line is None:
            if at_terminal:
                out("")
            return
        line = line.strip()
        if not line:
            continue
        if line.startswith("#"):
            if not interactive:
                out(line)
            continue
        if not interactive:
            out(f"> {line}")
        try:
            carry_on = await console.handle(line)
            # What the bot says on its own (approvals, notices) goes out before the next line.
            await delivery.drain(console.app)
        except Exception as exc:
            out(f"(sandbox error: {type(exc).__name__}: {exc})")
            carry_on = True
        console.flush()
        if not carry_on:
            return


@contextlib.contextmanager
def quiet_logs() -> Iterator[None]:
    """Start-up chatter (migrations, the scheduler) is for operators; warnings still show."""
    names = ("alembic", "apscheduler", "telegram.ext", "linli")
    levels = {name: logging.getLogger(name).level for name in names}
    for name in names:
        logging.getLogger(name).setLevel(max(logging.WARNING, levels[name]))
    try:
        yield
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


# --- the command ------------------------------------------------------------------------------


async def run(
    settings: Settings, *, fresh: bool, stdin: TextIO = sys.stdin, stdout: TextIO = sys.stdout
) -> int:
    """The offline sandbox: the real bot, a stand-in Telegram, and you as the whole cast."""

    def out(line: str) -> None:
        stdout.write(line + "\n")
        stdout.flush()

    if settings.bot_token is None:
        out("Linli offline sandbox: nothing is sent to Telegram (LINLI_BOT_TOKEN is not set).")
        out("邻里离线沙盒：什么都不会发到 Telegram（没有设置 LINLI_BOT_TOKEN）。")
    else:
        out(
            "Linli offline sandbox: nothing is sent to Telegram (the sandbox never uses the token)."
        )
        out("邻里离线沙盒：什么都不会发到 Telegram（沙盒不使用 LINLI_BOT_TOKEN）。")
    url = os.environ.get(DATABASE_ENV) or DEFAULT_DATABASE_URL
    try:
        path = sqlite_file(url)
    except SandboxError as exc:
        out(f"linli sandbox: {exc}")
        return 2
    if fresh:
        forget(path)
    settings = settings.model_copy(
        update={
            "admins": settings.admins | {ADMIN_ID},
            "database_url": url,
            # No real token anywhere near the stand-in, not even in a log line.
            "bot_token": None,
        }
    )
    with quiet_logs():
        # Imported here: alembic announces its plugins as it is first imported.
        from bot.migrate import upgrade

        db = Database(url)
        try:
            await upgrade(db)
            seeded = False if fresh else await seed(db, now=utcnow())
            if fresh:
                state = "empty (--fresh): no community yet"
            elif seeded:
                state = "demo community 幸福里社区 loaded"
            else:
                state = "kept from last time; --fresh starts empty"
            out(f"Database {path}: {state}.")
            await play(settings, db, stdin, out)
        finally:
            await db.dispose()
    return 0


async def play(settings: Settings, db: Database, stdin: TextIO, out: Callable[[str], None]) -> None:
    """The application on the stand-in, from start-up to the last line of input."""
    telegram = FakeTelegram()
    app = build_application(settings, request=telegram, db=db)
    async with app:
        await on_startup(app)  # initialising does not run post_init: publish the menu here
        await app.start()  # the job queue, so scheduled work happens here too
        try:
            # after the updates of earlier runs (the repeat guard remembers those)
            scene = Scene(app, telegram, first_update_id=app.bot_data.guard.newest() + 1)
            console = Console(app, scene, stage(scene), out)
            await console.cmd_who([])
            out("Type :help for what you can do, :people and :chats for who and where.")
            await converse(console, stdin, out)
        finally:
            await delivery.stop_sender(app)
            await app.stop()
