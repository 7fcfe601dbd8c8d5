"""Points for residents: /points (balance, household, rank, history) and /top (the honour
board). Leads award in handlers.awards; admins keep the rules and the books in
handlers.points_admin."""

from __future__ import annotations

from sqlmodel.ext.asyncio.session import AsyncSession
from telegram import InlineKeyboardButton, Update
from telegram.ext import CommandHandler, filters

from bot.context import LinliApp, LinliContext
from handlers import common
from models import ledger, people, points, standings
from models.errors import InvalidInput
from models.people import Can, Unit

HISTORY = 10  # entries per screen: enough to recognise, short enough to read on a phone


# --- /points: my balance, my household's, my rank, my history ------------------------------


async def _summary_screen(
    session: AsyncSession, ctx: LinliContext, uid: int, community_id: int | None
) -> common.View:
    found = await standings.verified_memberships(session, person_id=uid)
    if not found:
        join = common.keyboard(
            [[common.button(common.label(ctx, "points", "join_now"), "join:go")]]
        )
        return common.View("points/not_member", {}, join)
    chosen = [m for m in found if community_id in (None, m.community.id)]
    if not chosen:
        raise InvalidInput("stale_button")
    membership = chosen[0]
    summary = await standings.summary(session, membership=membership, now=ctx.now(), limit=HISTORY)
    auth = await people.authority(session, person_id=uid, superadmin=ctx.is_superadmin(uid))
    cid = membership.community.id
    rows: list[list[InlineKeyboardButton]] = []
    if summary.more and summary.entries:
        rows.append(
            [
                common.button(
                    common.label(ctx, "points", "more"), f"pm:{cid}:{summary.entries[-1].id}"
                )
            ]
        )
    if len(found) > 1:
        rows.append(
            [
                common.button(
                    common.label(ctx, "points", "community", name=m.community.name),
                    f"pv:{m.community.id}",
                )
                for m in found
                if m.community.id != cid
            ]
        )
    if auth.may(Can.admin_community, community_id=cid or 0):
        rows.append(
            [
                common.button(common.label(ctx, "points", "rules"), f"pl:{cid}"),
                common.button(common.label(ctx, "points", "export"), f"pe:{cid}"),
            ]
        )
    return common.View("points/summary", {"s": summary}, common.keyboard(rows) if rows else None)


async def cmd_points(update: Update, ctx: LinliContext) -> None:
    uid = common.user_id(update)
    async with ctx.svc.db.transaction(write=False) as session:
        screen = await _summary_screen(session, ctx, uid, None)
    # A balance and its history are nobody else's business: they go privately.
    await common.answer_privately(update, ctx, screen, "points", feature="points")


@common.screen("pv", 1, private=True)
async def btn_view(
    session: AsyncSession, ctx: LinliContext, update: Update, community_id: str
) -> common.View:
    """pv:<community>: the summary for one of the person's communities."""
    return await _summary_screen(session, ctx, common.user_id(update), common.as_int(community_id))


@common.screen("pm", 2, private=True)
async def btn_more(
    session: AsyncSession, ctx: LinliContext, update: Update, community_id: str, before: str
) -> common.View:
    """pm:<community>:<entry>: the entries before one already shown."""
    cid = common.as_int(community_id)
    community = await people.get_community(session, cid)
    entries = await ledger.history(
        session,
        community_id=cid,
        person_id=common.user_id(update),
        before_id=common.as_int(before),
        limit=HISTORY + 1,
    )
    names = {r.code: r for r in await points.rules(session, community_id=cid, now=ctx.now())}
    shown = entries[:HISTORY]
    rows = []
    if len(entries) > HISTORY:
        rows.append(
            [common.button(common.label(ctx, "points", "more"), f"pm:{cid}:{shown[-1].id}")]
        )
    rows.append([common.button(common.label(ctx, "points", "back_summary"), f"pv:{cid}")])
    params = {"community": community, "entries": shown, "names": names}
    return common.View("points/history", params, common.keyboard(rows))


# --- /top: the honour board ----------------------------------------------------------------


async def _board_screen(
    session: AsyncSession, ctx: LinliContext, unit: Unit, monthly: bool, uid: int, private: bool
) -> common.View:
    lines = await standings.board(session, unit=unit, now=ctx.now(), monthly=monthly)
    hidden = await standings.is_hidden(session, community_id=unit.community_id, person_id=uid)
    m = "m" if monthly else "a"
    # Each button sets a state ("hide me", "show me"): a double tap or a repeat leaves it set.
    # In a group the board is everyone's, so both are offered; privately, the one that applies.
    states = ("h", "s") if not private else (("s",) if hidden else ("h",))
    rows = [
        [
            common.button(
                common.label(ctx, "points", "this_month", on=monthly), f"ptb:{unit.id}:m"
            ),
            common.button(
                common.label(ctx, "points", "all_time", on=not monthly), f"ptb:{unit.id}:a"
            ),
        ],
        [
            common.button(
                common.label(ctx, "points", "hide_me" if state == "h" else "show_me"),
                f"pth:{unit.id}:{m}:{state}",
            )
            for state in states
        ],
    ]
    params = {"unit": unit, "lines": lines, "monthly": monthly, "hidden": hidden and private}
    return common.View("points/top", params, common.keyboard(rows))


async def _board_unit(session: AsyncSession, update: Update, uid: int) -> Unit | None:
    """In a group the unit it serves; privately the person's own building."""
    chat = update.effective_chat
    assert chat is not None
    if not common.is_private(update):
        link = await people.link_for(
            session, chat_id=chat.id, thread_id=common.thread_of(update.effective_message)
        )
        return await people.get_unit(session, link.unit_id) if link is not None else None
    found = await standings.verified_memberships(session, person_id=uid)
    return found[0].building if found else None


async def cmd_top(update: Update, ctx: LinliContext) -> None:
    uid = common.user_id(update)
    async with ctx.svc.db.transaction(write=False) as session:
        unit = await _board_unit(session, update, uid)
        if unit is None:
            screen = None
        else:
            community = await people.get_community(session, unit.community_id)
            with common.speaking_for(ctx, update, community):
                screen = await _board_screen(
                    session, ctx, unit, True, uid, common.is_private(update)
                )
    if screen is None:
        await common.reply(update, ctx, "points/top_no_unit", private=common.is_private(update))
        return
    with common.speaking_for(ctx, update, community):  # a board in a group is everyone's
        await common.reply(update, ctx, screen.name, markup=screen.markup, **screen.params)


async def _readable_board(
    session: AsyncSession, update: Update, ctx: LinliContext, unit_id: str
) -> Unit:
    """The unit of a tapped board, if the tapper may see it (see standings.require_board_reader)."""
    unit = await people.get_unit(session, common.as_int(unit_id))
    chat_unit = None
    chat = update.effective_chat
    if chat is not None and not common.is_private(update):
        link = await people.link_for(
            session, chat_id=chat.id, thread_id=common.thread_of(update.effective_message)
        )
        chat_unit = link.unit_id if link is not None else None
    auth = await common.load_auth(session, ctx, update)
    await standings.require_board_reader(session, auth=auth, unit=unit, chat_unit_id=chat_unit)
    return unit


@common.on_button("ptb")
async def btn_board(update: Update, ctx: LinliContext) -> None:
    """ptb:<unit>:<m|a>: this month's board or the all-time one."""
    unit_id, which = common.callback_args(update, "ptb", 2)
    if which not in ("m", "a"):
        raise InvalidInput("stale_button")
    async with ctx.svc.db.transaction(write=False) as session:
        unit = await _readable_board(session, update, ctx, unit_id)
        community = await people.get_community(session, unit.community_id)
        with common.speaking_for(ctx, update, community):
            screen = await _board_screen(
                session, ctx, unit, which == "m", common.user_id(update), common.is_private(update)
            )
    with common.speaking_for(ctx, update, community):  # not in the tapper's language
        await common.show(update, ctx, screen)


@common.on_button("pth")
async def btn_hide(update: Update, ctx: LinliContext) -> None:
    """pth:<unit>:<m|a>:<h|s>: the tapper leaves the board (h), or comes back to it (s)."""
    unit_id, which, state = common.callback_args(update, "pth", 3)
    if which not in ("m", "a") or state not in ("h", "s"):
        raise InvalidInput("stale_button")
    uid = common.user_id(update)
    hidden = state == "h"
    async with ctx.svc.db.transaction() as session:
        unit = await _readable_board(session, update, ctx, unit_id)
        await standings.set_hidden(
            session, community_id=unit.community_id, person_id=uid, hidden=hidden, now=ctx.now()
        )
        community = await people.get_community(session, unit.community_id)
        with common.speaking_for(ctx, update, community):
            screen = await _board_screen(
                session, ctx, unit, which == "m", uid, common.is_private(update)
            )
    with common.speaking_for(ctx, update, community):
        await common.replace(update, ctx, screen)
    # The note is the tapper's own, in their language.
    await common.answer(
        update, ctx, "points/hidden_now" if hidden else "points/shown_now", alert=True
    )


def register(app: LinliApp) -> None:
    # Before basics: these /start payloads are ours, plain /start is basics'.
    app.add_handler(
        CommandHandler("start", cmd_points, filters=filters.Regex(r"^/start (points)$"))
    )
    app.add_handler(CommandHandler("points", cmd_points))
    app.add_handler(CommandHandler("top", cmd_top))
    common.add_buttons(app, common.buttons_of(__name__))
