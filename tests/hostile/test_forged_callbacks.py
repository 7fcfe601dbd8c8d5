"""Forged callbacks, thousands of them, for every button the application registers.

The prefixes are read from the application's own CallbackQueryHandlers, so a feature added
later is attacked without anyone listing it here. Each prefix gets the real buttons that leads
and the super-admin were shown (replayed by someone else), those buttons with each field swapped
for an id of another unit, another community, another person's draft, or a bogus, huge,
negative or non-numeric value, and made-up data of every length. Three people send them: a
resident, a stranger the bot has only said hello to, and a resident of another community.

After all of it, no row of any table has changed, no one was shown a name, flat, draft or file
that is not theirs, and nothing crashed.
"""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Iterable

import pytest
from sqlalchemy import select
from sqlmodel import SQLModel
from telegram.ext import CallbackQueryHandler

from bot.context import LinliApp
from bot.db import Database
from bot.standin import JSON, Call, Scene
from handlers import pickers
from models import ledger, people, standings
from tests.conftest import NOW
from tests.integration.conftest import ADMIN_ID

BOSS = people.Authority(person_id=ADMIN_ID, superadmin=True)

# Community A (幸福里): a grid with two buildings, another grid; a lead of the first grid.
LEAD, WANG, LI, ZHOU = 30, 31, 32, 34
# Community B (阳光苑): one building, its lead and one resident.
B_LEAD, B_RES = 50, 51
STRANGER = 77
GROUP_A = -800
NAMES = {
    ADMIN_ID: "Admin", LEAD: "张网格长", WANG: "王阿姨", LI: "李叔", ZHOU: "周伯",
    B_LEAD: "阳光苑主任", B_RES: "孙大爷", STRANGER: "Stranger",
}  # fmt: skip
FLATS = {WANG: "3-2-501", LI: "5-1-101", ZHOU: "9-1-1", B_RES: "1-1-1101"}
RESIDENTS = set(FLATS)
PER_PREFIX = 6
# What anyone may do to their own rows with a button: ask to type their household code (a
# prompt), leave their own community, keep off (or back on) their own community's board. For
# these prefixes a forged button may change only the tapper's own rows, in the tables named,
# and in no community but their own.
SELF_SERVICE = {
    "join": {"prompt"},
    "lvy": {"resident"},
    "pth": {"pointaccount"},
}  # made-up data per prefix and attacker, beside the replays and their mutations


async def _world(db: Database) -> None:
    async with db.transaction() as s:
        for pid, name in NAMES.items():
            if pid != STRANGER:
                await people.touch_person(
                    s, person_id=pid, name=name, username=None, language_code="zh-hans", now=NOW
                )

        async def community(name: str) -> int:
            c = await people.create_community(
                s, name=name, timezone="Asia/Shanghai", language="zh", now=NOW
            )
            assert c.id is not None
            return c.id

        async def unit(cid: int, parent: int | None, kind: str, name: str) -> int:
            u = await people.create_unit(
                s, community_id=cid, parent_id=parent, kind=kind, name=name, now=NOW
            )
            assert u.id is not None
            return u.id

        a = await community("幸福里")
        grid1 = await unit(a, None, "grid", "一网格")
        b3 = await unit(a, grid1, "building", "3号楼")
        b5 = await unit(a, grid1, "building", "5号楼")
        b9 = await unit(a, await unit(a, None, "grid", "二网格"), "building", "9号楼")
        b = await community("阳光苑")
        b1 = await unit(b, await unit(b, None, "estate", "阳光苑小区"), "building", "1栋")
        for pid, building in ((WANG, b3), (LI, b5), (ZHOU, b9), (B_RES, b1)):
            h = await people.add_household(
                s, unit_id=building, flat=FLATS[pid], area_centi_m2=None, now=NOW
            )
            assert h.id is not None
            await people.request_join(
                s, person_id=pid, household_id=h.id, now=NOW, verified_by_code=True
            )
        await people.grant_role(s, auth=BOSS, unit_id=grid1, person_id=LEAD, kind="lead", now=NOW)
        roots = {u.community_id: u for u in await people.root_units(s) if u.kind == "estate"}
        await people.grant_role(
            s, auth=BOSS, unit_id=roots[b].id or 0, person_id=B_LEAD, kind="admin", now=NOW
        )
        await people.link_chat(
            s, chat_id=GROUP_A, thread_id=0, unit_id=b3, title="3号楼", by=ADMIN_ID, now=NOW
        )
        # LI has points (so there are balances to steal or spend) and keeps off the board.
        await ledger.post(
            s, community_id=a, person_id=LI, amount=80, key="seed:li", reason="seed",
            kind="award", by=LEAD, now=NOW,
        )  # fmt: skip
        await standings.set_hidden(s, community_id=a, person_id=LI, hidden=True, now=NOW)


def _callback_prefixes(app: LinliApp) -> list[str]:
    """Every prefix a CallbackQueryHandler of the application answers, from its pattern."""
    found = set()
    for handlers in app.handlers.values():
        for handler in handlers:
            if not isinstance(handler, CallbackQueryHandler):
                continue
            pattern = getattr(handler.pattern, "pattern", handler.pattern)
            match = re.match(r"\^([A-Za-z0-9_-]+)(:|\\b|$)", str(pattern))
            assert match, f"cannot tell the prefix of the button pattern {pattern!r}"
            found.add(match.group(1))
    return sorted(found)


def _data(calls: Iterable[Call]) -> set[str]:
    return {
        str(b["callback_data"])
        for call in calls
        for row in call.buttons
        for b in row
        if "callback_data" in b
    }


async def _harvest(scene: Scene, users: dict[int, JSON]) -> set[str]:
    """The buttons leads and the super-admin are shown as they go about their work (and one
    level deeper): real ids of drafts, units, rules, rewards and people, none of them an
    attacker's."""
    seen: set[str] = set()
    group = scene.group(GROUP_A, "3号楼邻里群")
    starts = {
        LEAD: ["/award", "/deduct", "/announce", "/announcements", "/leads", "/appoint", "/me"],
        B_LEAD: [
            "/award",
            "/correct",
            "/announce",
            "/rules",
            "/reward",
            "/export",
            "/setup",
            "/appoint",
        ],
        ADMIN_ID: ["/setup", "/rules", "/export", "/reward", "/leads", "/rewards"],
    }
    for pid, commands in starts.items():
        chat = scene.private(users[pid])
        for command in commands:
            calls = await scene.say(users[pid], chat, command)
            first = _data(calls)
            seen |= first
            for message in [c for c in calls if c.buttons][:1]:
                for data in sorted(first)[:12]:
                    scene.app.bot_data.guard.activity.clear()
                    seen |= _data(await scene.press(users[pid], message, data))
    chat = scene.private(users[LEAD])
    said = await scene.say(users[LEAD], chat, "/announce")
    seen |= _data(said)
    seen |= await _walk_pickers(scene, users[LEAD])
    seen |= _data(await scene.say(users[LEAD], group, "/top"))
    seen |= _data(await scene.say(users[ADMIN_ID], group, "/setup"))
    return seen


async def _walk_pickers(scene: Scene, lead: JSON) -> set[str]:
    """The date and recurrence pickers are reached by typing: a lead walks /announce to them,
    so their real buttons (with a real flow id) are replayed and mutated too."""
    chat = scene.private(lead)
    seen: set[str] = set()

    async def step(calls: list[Call]) -> JSON:
        seen.update(_data(calls))
        shown = [c for c in calls if c.buttons]
        return scene.message_of(shown[-1])

    tree = await step(await scene.say(lead, chat, "/announce"))
    scope = await step(await scene.tap(lead, tree, "3号楼"))
    await step(await scene.tap(lead, scope, "只发"))
    days = await step(await scene.say(lead, chat, "停水通知"))
    times = await step(await scene.tap(lead, days, "今天"))
    repeat = await step(await scene.tap(lead, times, "12:00"))
    await step(await scene.tap(lead, repeat, "每周"))
    return seen


def _secrets(attacker: int) -> list[str]:
    """What this person must never be shown: other residents' names and flats."""
    out = [NAMES[pid] for pid in RESIDENTS if pid != attacker]
    out += [flat for pid, flat in FLATS.items() if pid != attacker]
    return out


def _values(ids: list[str]) -> list[str]:
    bogus = ["0", "1", "-1", "2", str(2**31), str(2**31 - 1), str(2**63), str(-(2**63) - 1),
             "9" * 30, "abc", "", "1e3", "٣", "0x1f", " 5", "+3", "1_0", "m", "a", "d", "h", "s",
             "l", "o", "w", "p", "u", "n", "c", "now", "patrol", "garbage", "1" * 70]  # fmt: skip
    return sorted(set(ids) | set(bogus))


Row = tuple[tuple[str, object], ...]


async def _dump(db: Database) -> dict[str, set[Row]]:
    """Every row of every table, as (column, value) pairs."""
    out: dict[str, set[Row]] = {}
    async with db.transaction(write=False) as s:
        conn = await s.connection()
        for table in SQLModel.metadata.sorted_tables:
            rows = (await conn.execute(select(table))).mappings().all()
            out[table.name] = {
                tuple((str(k), _frozen(v)) for k, v in sorted(row.items(), key=str)) for row in rows
            }
    return out


def _frozen(value: object) -> object:
    """JSON columns hold lists and dicts: compared by their text."""
    return repr(value) if isinstance(value, (list, dict)) else value


def _changed(before: dict[str, set[Row]], after: dict[str, set[Row]]) -> list[tuple[str, Row]]:
    return [
        (name, row)
        for name in before.keys() | after.keys()
        for row in before.get(name, set()) ^ after.get(name, set())
    ]


async def test_thousands_of_forged_callbacks_change_nothing_and_show_nothing(
    db: Database, app: LinliApp, scene: Scene, caplog: pytest.LogCaptureFixture
) -> None:
    await _world(db)
    users = {pid: scene.person(pid, name) for pid, name in NAMES.items()}
    for pid in users:
        scene.private(users[pid])
    harvested = await _harvest(scene, users)
    # The check below can fail: what a lead is shown is exactly what it looks for.
    lead_view = await scene.say(users[LEAD], scene.private(users[LEAD]), "/award")
    assert _leaks(lead_view, STRANGER, "the check itself", "/award")
    prefixes = _callback_prefixes(app)
    # The flow UI's and pickers' buttons are attacked like every feature's, with real ones.
    ours = {"fx"} | {prefix for prefix, _ in pickers.HANDLERS}
    assert ours <= set(prefixes)
    # Not shown in this small world: fp (a second page of residents), fa (after a typed search);
    # they are attacked with made-up ids like every other prefix.
    assert ours - {"fu", "fe", "fp", "fa"} <= {d.split(":")[0] for d in harvested}
    ids = sorted({field for data in harvested for field in data.split(":")[1:] if field})
    values = _values(ids)

    attackers = {WANG: "a resident", STRANGER: "a stranger", B_RES: "another community's resident"}
    anchors: dict[int, list[JSON]] = {}
    group = scene.group(GROUP_A, "3号楼邻里群")
    for pid in attackers:
        chat = scene.private(users[pid])
        (own,) = [
            c for c in await scene.say(users[pid], chat, "/start") if c.method == "sendMessage"
        ]
        anchors[pid] = [scene.message_of(own)]
    posted = [c for c in await scene.say(users[WANG], group, "/help") if c.method == "sendMessage"]
    anchors[WANG].append(scene.message_of(posted[0]))
    before = await _dump(db)

    # The community each attacker lives in (the stranger: none), for their own-row changes.
    home = {
        dict(row)["person_id"]: dict(row)["community_id"]
        for row in before["resident"]
        if dict(row)["person_id"] in attackers and dict(row)["status"] == "verified"
    }
    approved: set[tuple[str, Row]] = set()
    rng = random.Random(20261201)
    tried = 0
    problems: list[str] = []
    by_prefix = {p: sorted(d for d in harvested if d.split(":")[0] == p) for p in prefixes}
    for prefix in prefixes:
        forged: list[str] = list(by_prefix[prefix])  # replays of real, privileged buttons
        for data in by_prefix[prefix][:3]:  # each field of a real button swapped
            fields = data.split(":")
            for i in range(1, len(fields)):
                for value in rng.sample(values, 3):
                    forged.append(":".join([*fields[:i], value, *fields[i + 1 :]]))
        for _ in range(PER_PREFIX):  # made up, of any length
            forged.append(":".join([prefix, *rng.choices(values, k=rng.randint(0, 5))]))
        tables_ok = SELF_SERVICE.get(prefix)
        for pid, who in attackers.items():
            for data in forged:
                if len(data.encode()) > 64:
                    continue  # Telegram refuses such a button; no update would carry it
                app.bot_data.guard.activity.clear()  # this is a test, not a flood
                mark = await _dump(db) if tables_ok else None
                calls = await scene.press(users[pid], rng.choice(anchors[pid]), data)
                tried += 1
                problems += _leaks(calls, pid, who, data)
                if mark is not None:  # only the person's own rows, in the tables named
                    for table, row in _changed(mark, await _dump(db)):
                        cols = dict(row)
                        if (
                            table in (tables_ok or set())
                            and cols.get("person_id") == pid
                            and cols.get("community_id", home.get(pid)) == home.get(pid)
                        ):
                            approved.add((table, row))
                        else:
                            problems.append(f"{who} changed {table} {row} with {data!r}")
    print(f"hostile: {tried} forged callbacks tried over {len(prefixes)} prefixes")
    assert tried >= 1000
    changed = [change for change in _changed(before, await _dump(db)) if change not in approved]
    assert not changed, f"forged callbacks changed rows: {changed[:5]}"
    assert not problems, "\n".join(problems[:20])
    crashes = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert not crashes, crashes[:5]


def _leaks(calls: list[Call], pid: int, who: str, data: str) -> list[str]:
    out = []
    for call in calls:
        if not call.ok:
            continue
        if call.method == "sendDocument":
            out.append(f"{who} got a file for {data!r}")
        if call.method not in ("sendMessage", "sendPhoto", "editMessageText", "editMessageCaption"):
            continue
        labels = " ".join(str(b.get("text", "")) for row in call.buttons for b in row)
        seen = f"{call.text} {labels}"
        for secret in _secrets(pid):
            if secret in seen:
                out.append(f"{who} was shown {secret!r} for {data!r}: {seen[:120]!r}")
    return out
