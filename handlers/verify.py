"""/verify for merchants: confirm a resident's code (typed, or a scanned QR) at the handover."""

from __future__ import annotations

import re

from telegram import Update
from telegram.ext import CommandHandler, filters

from bot.context import LinliApp, LinliContext
from handlers import common
from handlers.prompts import answers, ask
from models import people, rewards
from models.errors import NotFound

VERIFY_PAYLOAD = re.compile(r"^v-([A-Za-z0-9]{1,16})$")
ASK_VERIFY = "rw_verify"


# --- /verify: the merchant confirms the handover -------------------------------------------


async def _verify(update: Update, ctx: LinliContext, code: str) -> None:
    async with ctx.svc.db.transaction(write=False) as session:
        auth = await common.load_auth(session, ctx, update)
        check = await rewards.inspect_code(session, auth=auth, code=code, now=ctx.now())
    markup = common.keyboard(
        [[common.button(common.label(ctx, "rewards", "hand_over"), f"rvy:{check.redemption.id}")]]
    )
    await common.reply(
        update, ctx, "rewards/verify", markup=markup, c=check, zone=check.community.timezone
    )


async def cmd_verify(update: Update, ctx: LinliContext) -> None:
    if not common.is_private(update):
        # A code and the name it belongs to are checked privately: the group gets only a link
        # to the private chat (which asks for the code there), never the code back.
        await common.offer_private(update, ctx, "verify", feature="rewards")
        return
    if ctx.args:
        await _verify(update, ctx, "".join(ctx.args))
        return
    await ask(update, ctx, ASK_VERIFY, "", "rewards/ask_code")


@answers(ASK_VERIFY)
async def on_verify_code(update: Update, ctx: LinliContext, prompt: people.Prompt) -> None:
    message = update.effective_message
    assert message is not None and message.text is not None
    await _verify(update, ctx, message.text)


@common.on_button("rvy")
async def btn_hand_over(update: Update, ctx: LinliContext) -> None:
    """rvy:<redemption>: mark it used, once; a second confirmation says when and by whom."""
    (redemption_id,) = common.callback_args(update, "rvy", 1)
    async with ctx.svc.db.transaction() as session:
        auth = await common.load_auth(session, ctx, update)
        check, changed = await rewards.hand_over(
            session, auth=auth, redemption_id=common.as_int(redemption_id), now=ctx.now()
        )
        by = await rewards.closer_of(session, check.redemption)
    params = {"c": check, "by": by, "zone": check.community.timezone}
    view = common.View("rewards/handed_over", params)
    await common.show(
        update, ctx, view, note=None if changed else "rewards/already_used", alert=True,
        at=check.redemption.closed_at, by=by.name if by else "", zone=check.community.timezone,
    )  # fmt: skip


async def cmd_start_verify(update: Update, ctx: LinliContext) -> None:
    """/start v-<CODE>: a merchant scanned a resident's QR; /start verify: asks for the code."""
    payload = ctx.args[0] if ctx.args else ""
    verify = VERIFY_PAYLOAD.match(payload)
    if verify is not None:
        await _verify(update, ctx, verify.group(1))
    elif payload == "verify":
        await ask(update, ctx, ASK_VERIFY, "", "rewards/ask_code")
    else:
        raise NotFound("stale_button")


def register(app: LinliApp) -> None:
    # Before basics: these /start payloads are ours, plain /start is basics'.
    app.add_handler(
        CommandHandler("start", cmd_start_verify, filters=filters.Regex(r"^/start (v-|verify$)"))
    )
    app.add_handler(CommandHandler("verify", cmd_verify))
    common.add_buttons(app, common.buttons_of(__name__))
