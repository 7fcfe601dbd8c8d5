"""/export: what a person may take away as CSV, by buttons, in their private chat: the points
ledger of each community they administer (then its period: handlers/points_admin.py), and the
ballot list of each closed poll they may see (handlers/polls.py; also `/ballots_<id>`). Each
button checks again when tapped."""

from __future__ import annotations

from telegram import Update
from telegram.ext import CommandHandler, filters

from bot.context import LinliApp, LinliContext
from handlers import common, points_admin
from models import polls

POLLS_SHOWN = 10  # the most recently closed


async def cmd_export(update: Update, ctx: LinliContext) -> None:
    if not common.is_private(update):
        link = common.private_link(ctx, "export", feature="export")
        await common.reply(update, ctx, "export/private", markup=link)
        return
    async with ctx.svc.db.transaction(write=False) as session:
        auth = await common.load_auth(session, ctx, update)
        ledgers = await points_admin.admin_communities(session, auth)
        closed = await polls.exportable(session, auth=auth, limit=POLLS_SHOWN)
    if len(ledgers) == 1 and not closed:  # only the ledger: straight to its periods
        await common.show(update, ctx, points_admin.periods_screen(ctx, ledgers[0]))
        return
    rows = [
        [common.button(common.label(ctx, "export", "ledger", community=c.name), f"pe:{c.id}")]
        for c in ledgers
    ] + [
        [common.button(common.label(ctx, "export", "ballots", question=p.question[:40]),
                       f"vx:{p.id}")]
        for p in closed
    ]  # fmt: skip
    await common.reply(
        update, ctx, "export/menu", ledgers=len(ledgers), polls=len(closed),
        markup=common.keyboard(rows),
    )  # fmt: skip


def register(app: LinliApp) -> None:
    app.add_handler(CommandHandler("export", cmd_export))
    app.add_handler(CommandHandler("start", cmd_export, filters=filters.Regex(r"^/start export$")))
