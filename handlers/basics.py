"""/start, /help, /lang and /me: what every person can do from the first tap."""

from __future__ import annotations

from telegram import Update
from telegram.ext import CallbackQueryHandler, CommandHandler

from bot.context import LinliApp, LinliContext
from handlers.common import (
    View,
    answer,
    answer_privately,
    button,
    callback_args,
    edit,
    is_private,
    keyboard,
    label,
    reply,
    user_id,
)
from handlers.guards import standing
from handlers.menu import allowed
from models import people
from models.errors import InvalidInput


async def cmd_start(update: Update, ctx: LinliContext) -> None:
    if ctx.args == ["me"]:
        await cmd_me(update, ctx)
        return
    found = (await standing(ctx, user_id(update))).memberships
    rows = [] if found else [[button(label(ctx, "people", "join_now"), "join:go")]]
    rows.append([button(label(ctx, "reports", "report_problem"), "rh:go")])
    await reply(update, ctx, "people/welcome", member=bool(found), markup=keyboard(rows))


async def cmd_help(update: Update, ctx: LinliContext) -> None:
    auth = (await standing(ctx, user_id(update))).auth  # no database for a known person
    commands = [
        (c, label(ctx, "help", f"cmd_{c.name}")) for c in allowed(auth, private=is_private(update))
    ]
    markup = keyboard([[button(label(ctx, "reports", "report_problem"), "rh:go")]])
    await reply(
        update, ctx, "people/help", commands=commands, private=is_private(update), markup=markup
    )


async def cmd_lang(update: Update, ctx: LinliContext) -> None:
    markup = keyboard([[button("中文", "lang:zh"), button("English", "lang:en")]])
    await reply(update, ctx, "people/lang_pick", markup=markup)


async def btn_lang(update: Update, ctx: LinliContext) -> None:
    (lang,) = callback_args(update, "lang", 1)
    if lang not in people.LANGUAGES:
        raise InvalidInput("stale_button")
    async with ctx.svc.db.transaction() as session:
        ctx.person = await people.set_language(
            session, person_id=user_id(update), lang=lang, now=ctx.now()
        )
    ctx.lang = lang
    ctx.bot_data.guard.forget(user_id(update))
    if is_private(update):
        await edit(update, ctx, "people/lang_set")
    else:
        # In a group the picker belongs to everyone; only the tapper's language changes.
        await answer(update, ctx, "people/lang_set", alert=True)


async def cmd_me(update: Update, ctx: LinliContext) -> None:
    uid = user_id(update)
    known = await standing(ctx, uid)
    found, roles = known.memberships, known.roles
    leave = [
        [
            button(
                label(ctx, "people", "leave_household", community=m.community.name),
                f"lv:{m.community.id}",
            )
        ]
        for m in found
        if m.resident.status == people.ResidentStatus.verified
    ]
    markup = keyboard(
        [
            [button(label(ctx, "people", "step_down", unit=u.name, kind=r.kind), f"sd:{r.id}")]
            for r, u, _ in roles
        ]
        + leave
    )
    params = {
        "memberships": found,
        "roles": roles,
        "superadmin": ctx.is_superadmin(uid),
        "person": ctx.person,
    }
    # Never show a flat number in a group: send it privately, or offer the private chat.
    view = View("people/me", params, markup or None)
    await answer_privately(
        update, ctx, view, "me", feature="people", sent="me_sent_privately", offer="me_open_private"
    )


def register(app: LinliApp) -> None:
    app.add_handler(CommandHandler("start", cmd_start))
    app.add_handler(CommandHandler("help", cmd_help))
    app.add_handler(CommandHandler("lang", cmd_lang))
    app.add_handler(CallbackQueryHandler(btn_lang, pattern=r"^lang:"))
    app.add_handler(CommandHandler("me", cmd_me))
