"""The bot's commands: who may use each and where, for /help and Telegram's command menu."""

from __future__ import annotations

from dataclasses import dataclass

from telegram import BotCommand, BotCommandScopeAllGroupChats, BotCommandScopeAllPrivateChats

from bot.context import LinliApp
from models.people import LANGUAGES, Authority


@dataclass(frozen=True)
class Command:
    name: str
    audience: str  # resident | lead | admin
    where: str  # private | group | any


COMMANDS = (
    Command("start", "resident", "private"),
    Command("join", "resident", "any"),
    Command("me", "resident", "any"),
    Command("leads", "resident", "any"),
    Command("lang", "resident", "any"),
    Command("help", "resident", "any"),
    Command("pending", "lead", "any"),
    Command("appoint", "lead", "any"),
    Command("codes", "lead", "private"),
    Command("setup", "lead", "group"),
    Command("unlink", "lead", "group"),
    Command("announce", "lead", "any"),
    Command("announcements", "lead", "any"),
    Command("rewards", "resident", "any"),
    Command("verify", "resident", "any"),
    Command("reward", "lead", "any"),
    Command("points", "resident", "any"),
    Command("top", "resident", "any"),
    Command("award", "lead", "any"),
    Command("deduct", "lead", "any"),
    Command("correct", "admin", "any"),
    Command("export", "resident", "private"),
    Command("rules", "admin", "any"),
    Command("report", "resident", "any"),
    Command("myreports", "resident", "any"),
    Command("reports", "lead", "any"),
    Command("stats", "lead", "any"),
    Command("tasks", "resident", "any"),
    Command("newtask", "lead", "any"),
    Command("mytasks", "resident", "any"),
    Command("checkin", "resident", "private"),
    Command("polls", "resident", "any"),
    Command("propose", "resident", "any"),
    Command("agenda", "resident", "any"),
    Command("newpoll", "lead", "any"),
    Command("proxy", "lead", "group"),
    Command("owner", "lead", "group"),
    Command("talkday", "lead", "any"),
)


def allowed(auth: Authority, *, private: bool) -> list[Command]:
    """The commands this person may use in this kind of chat."""
    ok_audience = (
        {"resident"}
        | ({"lead"} if auth.is_lead else set())
        | ({"admin"} if auth.is_admin else set())
    )
    where = {"any", "private" if private else "group"}
    return [c for c in COMMANDS if c.audience in ok_audience and c.where in where]


async def publish_commands(app: LinliApp) -> None:
    """Telegram's menu shows residents' commands, per language and chat type; /help shows more."""
    renderer = app.bot_data.services.renderer
    resident = Authority(person_id=0)
    for lang in LANGUAGES:
        for private, scope in (
            (True, BotCommandScopeAllPrivateChats()),
            (False, BotCommandScopeAllGroupChats()),
        ):
            commands = [
                BotCommand(c.name, renderer.label(lang, "help", f"cmd_{c.name}"))
                for c in allowed(resident, private=private)
            ]
            # English is also the default for every language we do not speak.
            for code in (lang, "") if lang == "en" else (lang,):
                await app.bot.set_my_commands(commands, scope=scope, language_code=code or None)
