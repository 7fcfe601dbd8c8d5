"""The offline sandbox, driven by a script on stdin, as a tester at the console would see it.

The sandbox is SQLite-only by design (--fresh deletes its file), so these tests always use a
SQLite file under tmp_path, also when LINLI_TEST_DATABASE_URL points at PostgreSQL.
"""

from __future__ import annotations

import io
import textwrap
from pathlib import Path

import pytest
from sqlmodel import select

from bot import sandbox
from bot.config import load_settings
from bot.db import Database
from models.people import Community


async def play(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, script: str, *, fresh: bool = False
) -> tuple[int, str]:
    monkeypatch.setenv(sandbox.DATABASE_ENV, f"sqlite+aiosqlite:///{tmp_path}/sandbox.db")
    settings = load_settings(bot_token="", _env_file=None)
    stdout = io.StringIO()
    code = await sandbox.run(
        settings, fresh=fresh, stdin=io.StringIO(textwrap.dedent(script)), stdout=stdout
    )
    return code, stdout.getvalue()


def turns(transcript: str) -> list[tuple[str, str]]:
    """(line typed, what the console printed after it), in order."""
    out: list[tuple[str, str]] = []
    for line in transcript.splitlines():
        if line.startswith("> "):
            out.append((line[2:], ""))
        elif out:
            typed, shown = out[-1]
            out[-1] = (typed, shown + line + "\n")
    return out


def after(transcript: str, typed: str, nth: int = 0) -> str:
    """What the console printed after the nth line typed exactly as `typed`."""
    return [shown for line, shown in turns(transcript) if line == typed][nth]


async def communities(tmp_path: Path) -> list[str]:
    db = Database(f"sqlite+aiosqlite:///{tmp_path}/sandbox.db")
    try:
        async with db.transaction(write=False) as session:
            return [c.name for c in (await session.exec(select(Community))).all()]
    finally:
        await db.dispose()


# --- what works with /start, /help, /lang and /me alone ------------------------------------


async def test_first_start_says_it_is_offline_and_loads_the_demo_cast(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, transcript = await play(tmp_path, monkeypatch, ":people\n:chats\n:codes\n")
    assert code == 0
    first, second, *_ = transcript.splitlines()
    assert "offline sandbox" in first and "nothing is sent to Telegram" in first
    assert "LINLI_BOT_TOKEN" in first and "离线沙盒" in second
    assert "demo community 幸福里社区 loaded" in transcript
    cast = after(transcript, ":people")
    assert "super-admin" in cast.splitlines()[1] and "周主任" in cast.splitlines()[1]
    assert "王阿姨" in cast and "lead of 3号楼" in cast
    assert "李叔叔 (li): neighbour; Telegram in zh-hans; verified in 3号楼 3-1-101" in cast
    assert "* 4. Sam (sam): new neighbour; Telegram in en\n" in cast  # not joined yet
    assert "张师傅" in cast and "has not opened a private chat" in cast
    chats = after(transcript, ":chats")
    assert "3号楼邻里群: building group, linked to 3号楼" in chats
    assert "幸福里社区 › 5号楼: forum topic, linked to 5号楼" in chats
    assert "* 4. private" in chats
    assert "3号楼  3-1-101  HX7K2MPA" in after(transcript, ":codes")
    assert await communities(tmp_path) == ["幸福里社区"]


async def test_me_in_the_group_goes_privately_and_lang_switches_to_english(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = """
        # 李叔叔 asks in his building group: the flat goes to his private chat only
        :as li
        :in group
        /me
        :in private
        /lang
        :tap English
        /help
    """
    code, transcript = await play(tmp_path, monkeypatch, script)
    assert code == 0
    assert "# 李叔叔 asks in his building group" in transcript  # comments are kept, not said
    me = after(transcript, "/me")
    private, group = me.split("[3号楼邻里群]")
    assert private.startswith("[李叔叔 (private)] Linli #") and "3-1-101" in private
    assert "私聊" in group and "3-1-101" not in group
    assert "[1] 中文  [2] English" in after(transcript, "/lang")
    tapped = after(transcript, ":tap English")
    assert "(李叔叔 taps “English”" in tapped
    assert "[李叔叔 (private)] Linli (edited #" in tapped and "English" in tapped
    assert "What you can do" in after(transcript, "/help")


async def test_someone_who_never_opened_a_private_chat_is_refused_until_he_follows_the_link(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, transcript = await play(tmp_path, monkeypatch, ":as zhang\n:in group\n/me\n:tap 1\n")
    assert code == 0
    me = after(transcript, "/me")
    assert "[张师傅 (private)] (Telegram refused: Forbidden: bot can't initiate" in me
    assert "(link: https://t.me/LinliBot?start=me)" in me
    opened = after(transcript, ":tap 1")
    assert "opens the link" in opened
    assert "[张师傅 (private)] Linli #" in opened and "(Telegram refused" not in opened


async def test_a_forum_topic_is_its_own_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = ":in topic\n/help\n:in forum\n:last\n:tap 1\n"
    code, transcript = await play(tmp_path, monkeypatch, script)
    assert code == 0
    assert "[幸福里社区 › 5号楼] Linli #" in after(transcript, "/help")
    # The General topic has none of the topic's messages, so nothing there to tap.
    assert "(nothing here yet)" in after(transcript, ":last")
    assert "no message with buttons here" in after(transcript, ":tap 1")


async def test_mistakes_get_a_hint_and_the_script_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(self: sandbox.Console, args: list[str]) -> None:
        raise RuntimeError("the printer jammed")

    monkeypatch.setattr(sandbox.Console, "cmd_codes", broken)
    script = ":frobnicate\n:\n:as nobody\n:codes\n/lang\n:tap 7\n:tap 2 99\n/start\n:quit\n/help\n"
    code, transcript = await play(tmp_path, monkeypatch, script)
    assert code == 0
    assert "unknown command :frobnicate; :help lists" in after(transcript, ":frobnicate")
    bare = after(transcript, ":")  # a bare colon: the help line, not a Python error
    assert ":help lists them all" in bare and "error" not in bare
    assert "who?" in after(transcript, ":as nobody")
    assert "(sandbox error: RuntimeError: the printer jammed)" in after(transcript, ":codes")
    assert "no button '7'" in after(transcript, ":tap 7") and "[2] English" in transcript
    assert "no message #99" in after(transcript, ":tap 2 99")
    assert "Hello, I'm Linli" in after(transcript, "/start")
    assert "/help" not in [typed for typed, _ in turns(transcript)]  # after :quit


async def test_a_second_start_keeps_what_happened_and_does_not_import_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await play(tmp_path, monkeypatch, "/lang\n:tap English\n")
    code, transcript = await play(tmp_path, monkeypatch, "/start\n:as li\n/me\n")
    assert code == 0
    assert "kept from last time" in transcript
    assert "Hello, I'm Linli" in after(transcript, "/start")
    assert "3-1-101" in after(transcript, "/me")
    assert await communities(tmp_path) == ["幸福里社区"]


async def test_fresh_starts_empty_and_start_still_works(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await play(tmp_path, monkeypatch, ":who\n")
    code, transcript = await play(tmp_path, monkeypatch, "/start\n:people\n:codes\n", fresh=True)
    assert code == 0
    assert "offline sandbox" in transcript.splitlines()[0]
    assert "empty (--fresh)" in transcript
    welcome = after(transcript, "/start")
    assert "[Sam (private)] Linli #" in welcome and "[1] 🏠 Join my household" in welcome
    cast = after(transcript, ":people")
    assert "lead of" not in cast and "verified" not in cast
    assert "super-admin" in cast  # 周主任 can still set up a community from scratch
    assert "(no households yet)" in after(transcript, ":codes")
    assert await communities(tmp_path) == []


async def test_the_sandbox_refuses_a_database_it_cannot_start_afresh(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(sandbox.DATABASE_ENV, "postgresql+asyncpg://postgres@127.0.0.1/linli")
    stdout = io.StringIO()
    settings = load_settings(bot_token="", _env_file=None)
    code = await sandbox.run(settings, fresh=True, stdin=io.StringIO(""), stdout=stdout)
    assert code == 2
    assert "must be a SQLite file" in stdout.getvalue()


# --- needs the join feature (handlers/join.py: picker, lead approval) ---------------------


async def test_a_new_neighbour_joins_by_buttons_and_the_lead_approves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = """
        :as sam
        :in private
        /start
        :tap 1
        :tap 3号楼
        :tap 3-1-201
        :tap 1
        :as wang
        :last 1
        :tap 1
    """
    code, transcript = await play(tmp_path, monkeypatch, script)
    assert code == 0
    assert "[1] 3号楼" in after(transcript, ":tap 1")
    assert "3-1-201" in after(transcript, ":tap 3号楼")
    sent = after(transcript, ":tap 1", 1)
    request = sent.split("[王阿姨 (private)] Linli #")[1].split("\n[")[0]
    assert "Sam" in request and "3-1-201" in request and "✅" in request
    assert "[Sam (private)] Linli (edited #" in sent
    assert "Sam" in after(transcript, ":last 1") and "3-1-201" in after(transcript, ":last 1")
    approved = after(transcript, ":tap 1", 2)
    assert "(王阿姨 taps" in approved
    assert "[Sam (private)] Linli #" in approved and "approved" in approved
