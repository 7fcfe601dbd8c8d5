"""/start, /help, /lang and /me: what every person can do from the first tap."""

from __future__ import annotations

from telegram import Update
from telegram.ext import CallbackQueryHandler, CommandHandler

from bot.context import LinliApp, LinliContext
from bot.ordering import hand_over
from handlers import common
from handlers.guards import standing
from handlers.menu import allowed
from models import people
from models.errors import InvalidInput


async def cmd_start(update: Update, ctx: LinliContext) -> None:
    if ctx.args == ["me"]:
        await cmd_me(update, ctx)
        return
    found = (await standing(ctx, common.user_id(update))).memberships
    hand_over()
    rows = [] if found else [[common.button(common.label(ctx, "people", "join_now"), "join:go")]]
    rows.append([common.button(common.label(ctx, "reports", "report_problem"), "rh:go")])
    await common.reply(
        update, ctx, "people/welcome", member=bool(found), markup=common.keyboard(rows)
    )


async def cmd_help(update: Update, ctx: LinliContext) -> None:
    auth = (await standing(ctx, common.user_id(update))).auth  # no database for a known person
    hand_over()
    commands = [
        (c, common.label(ctx, "help", f"cmd_{c.name}"))
        for c in allowed(auth, private=common.is_private(update))
    ]
    markup = common.keyboard(
        [[common.button(common.label(ctx, "reports", "report_problem"), "rh:go")]]
    )
    await common.reply(
        update,
        ctx,
        "people/help",
        commands=commands,
        private=common.is_private(update),
        markup=markup,
    )


async def cmd_lang(update: Update, ctx: LinliContext) -> None:
    hand_over()
    markup = common.keyboard(
        [[common.button("中文", "lang:zh"), common.button("English", "lang:en")]]
    )
    await common.reply(update, ctx, "people/lang_pick", markup=markup)


async def btn_lang(update: Update, ctx: LinliContext) -> None:
    (lang,) = common.callback_args(update, "lang", 1)
    if lang not in people.LANGUAGES:
        raise InvalidInput("stale_button")
    async with ctx.svc.db.transaction() as session:
        ctx.person = await people.set_language(
            session, person_id=common.user_id(update), lang=lang, now=ctx.now()
        )
    ctx.lang = lang
    ctx.bot_data.guard.forget(common.user_id(update))
    hand_over()
    if common.is_private(update):
        await common.edit(update, ctx, "people/lang_set")
    else:
        # In a group the picker belongs to everyone; only the tapper's language changes.
        await common.answer(update, ctx, "people/lang_set", alert=True)


async def cmd_me(update: Update, ctx: LinliContext) -> None:
    uid = common.user_id(update)
    known = await standing(ctx, uid)
    found, roles = known.memberships, known.roles
    hand_over()
    leave = [
        [
            common.button(
                common.label(ctx, "people", "leave_household", community=m.community.name),
                f"lv:{m.community.id}",
            )
        ]
        for m in found
        if m.resident.status == people.ResidentStatus.verified
    ]
    markup = common.keyboard(
        [
            [
                common.button(
                    common.label(ctx, "people", "step_down", unit=u.name, kind=r.kind), f"sd:{r.id}"
                )
            ]
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
    view = common.View("people/me", params, markup or None)
    await common.answer_privately(
        update, ctx, view, "me", feature="people", sent="me_sent_privately", offer="me_open_private"
    )


def register(app: LinliApp) -> None:
    app.add_handler(CommandHandler("start", cmd_start))
    app.add_handler(CommandHandler("help", cmd_help))
    app.add_handler(CommandHandler("lang", cmd_lang))
    app.add_handler(CallbackQueryHandler(btn_lang, pattern=r"^lang:"))
    app.add_handler(CommandHandler("me", cmd_me))
