"""/rewards for residents: what I can have with my points, redeeming for a one-time code and
QR, my codes. Merchants confirm the handover in handlers.verify; leads keep the catalogue in
handlers.catalogue."""

from __future__ import annotations

import io
import re
import secrets

import segno
from sqlmodel.ext.asyncio.session import AsyncSession
from telegram import Update
from telegram.ext import CommandHandler, filters

from bot import delivery
from bot.context import LinliApp, LinliContext
from handlers import common
from models import ledger, people, rewards
from models.errors import InvalidInput, NotAllowed
from models.people import Community
from models.rewards import Redemption, RedemptionStatus, Reward

QR_SCALE = 10  # pixels per module: the code stays sharp when a phone shows it full screen
NONCE = re.compile(r"^[A-Za-z0-9_-]{4,16}$")


def qr_png(text: str) -> bytes:
    out = io.BytesIO()
    segno.make(text, error="m").save(out, kind="png", scale=QR_SCALE, border=4)
    return out.getvalue()


async def _member_communities(session: AsyncSession, person_id: int) -> list[Community]:
    found = await people.memberships(session, person_id=person_id)
    return [m.community for m in found if m.resident.status == people.ResidentStatus.verified]


async def _require_member(session: AsyncSession, person_id: int, community_id: int) -> Community:
    for community in await _member_communities(session, person_id):
        if community.id == community_id:
            return community
    raise NotAllowed("not_a_member")


# --- /rewards: what I can have ----------------------------------------------------------------


async def _home_view(session: AsyncSession, ctx: LinliContext, uid: int) -> common.View:
    found = await _member_communities(session, uid)
    if not found:
        return common.View(
            "rewards/not_member",
            markup=common.keyboard(
                [[common.button(common.label(ctx, "rewards", "join_now"), "join:go")]]
            ),
        )
    if len(found) == 1:
        assert found[0].id is not None
        return await _list_view(session, ctx, uid, found[0].id, 0)
    rows = [[common.button(c.name, f"rwl:{c.id}:0")] for c in found[: common.PAGE]]
    return common.View("rewards/pick_community", markup=common.keyboard(rows))


def _offer_label(ctx: LinliContext, offer: rewards.Offer) -> str:
    name = rewards.name_in(offer.reward, ctx.lang)
    if offer.sold_out:
        return common.label(ctx, "rewards", "offer_sold_out", name=name)
    if offer.missing:
        return common.label(ctx, "rewards", "offer_short", name=name, missing=offer.missing)
    return common.label(ctx, "rewards", "offer", name=name, cost=offer.reward.cost)


async def _list_view(
    session: AsyncSession, ctx: LinliContext, uid: int, community_id: int, page: int
) -> common.View:
    community = await _require_member(session, uid, community_id)
    offers, have = await rewards.catalogue(session, community_id=community_id, person_id=uid)
    shown, page, pages = common.paged(offers, page)
    rows = [[common.button(_offer_label(ctx, o), f"rwr:{o.reward.id}:{page}")] for o in shown]
    rows.append(common.page_buttons(ctx, page, pages, lambda p: f"rwl:{community_id}:{p}"))
    rows.append([common.button(common.label(ctx, "rewards", "my_codes"), f"rwm:{community_id}:0")])
    params = {
        "community": community,
        "offers": shown,
        "have": have,
        "page": page,
        "pages": pages,
        "first": page * common.PAGE + 1,
    }
    return common.View("rewards/list", params, common.keyboard(rows))


async def cmd_rewards(update: Update, ctx: LinliContext) -> None:
    uid = common.user_id(update)
    async with ctx.svc.db.transaction(write=False) as session:
        view = await _home_view(session, ctx, uid)
    # A balance is personal: the catalogue goes to the private chat.
    await common.answer_privately(update, ctx, view, "rewards", feature="rewards")


@common.screen("rwl", 2, private=True)
async def btn_list(
    session: AsyncSession, ctx: LinliContext, update: Update, community_id: str, page: str
) -> common.View:
    return await _list_view(
        session, ctx, common.user_id(update), common.as_int(community_id), common.as_int(page)
    )


@common.on_button("rwr")
async def btn_pick(update: Update, ctx: LinliContext) -> None:
    """rwr:<reward>:<page>: ask before spending, with a fresh confirm key in the button."""
    common.private_only(update)
    reward_id, page = common.callback_args(update, "rwr", 2)
    uid = common.user_id(update)
    async with ctx.svc.db.transaction(write=False) as session:
        reward = await rewards.get_reward(session, common.as_int(reward_id))
        have = await rewards.check_redeemable(session, reward=reward, person_id=uid, now=ctx.now())
    nonce = secrets.token_urlsafe(6)
    markup = common.keyboard(
        [
            [
                common.button(
                    common.label(ctx, "rewards", "confirm_redeem"), f"rwy:{reward.id}:{nonce}"
                )
            ],
            [
                common.button(
                    common.label(ctx, "rewards", "back"),
                    f"rwl:{reward.community_id}:{common.as_int(page)}",
                )
            ],
        ]
    )
    await common.edit(
        update,
        ctx,
        "rewards/confirm",
        markup=markup,
        reward=reward,
        have=have,
        after=have - reward.cost,
    )


def _code_view(
    ctx: LinliContext,
    redemption: Redemption,
    reward: Reward,
    zone: str,
    *,
    fresh: bool = False,
    balance: int | None = None,
) -> common.View:
    rows = []
    if redemption.status == RedemptionStatus.issued:
        rows.append(
            [common.button(common.label(ctx, "rewards", "show_qr"), f"rwq:{redemption.id}")]
        )
        rows.append(
            [common.button(common.label(ctx, "rewards", "cancel_code"), f"rwx:{redemption.id}")]
        )
    rows.append(
        [
            common.button(
                common.label(ctx, "rewards", "my_codes"), f"rwm:{redemption.community_id}:0"
            )
        ]
    )
    params = {"r": redemption, "reward": reward, "zone": zone, "fresh": fresh, "balance": balance}
    return common.View("rewards/code", params, common.keyboard(rows))


async def _send_qr(
    ctx: LinliContext, chat_id: int, redemption: Redemption, reward: Reward, zone: str
) -> None:
    """The code as a QR image: it opens the merchant's confirmation when they scan it."""
    png = qr_png(common.deep_link(ctx, f"v-{redemption.code}"))
    caption = common.render(ctx, "rewards/qr_caption", r=redemption, reward=reward, zone=zone)
    await ctx.bot.send_photo(chat_id, photo=png, caption=caption)


@common.on_button("rwy")
async def btn_redeem(update: Update, ctx: LinliContext) -> None:
    """rwy:<reward>:<nonce>: one redemption per confirm button, however often it is tapped."""
    common.private_only(update)
    reward_id, nonce = common.callback_args(update, "rwy", 2)
    if not NONCE.match(nonce):
        raise InvalidInput("stale_button")
    uid = common.user_id(update)
    key = rewards.redemption_key(person_id=uid, reward_id=common.as_int(reward_id), nonce=nonce)
    async with ctx.svc.db.transaction() as session:
        redemption, created = await rewards.redeem(
            session, person_id=uid, reward_id=common.as_int(reward_id), key=key, now=ctx.now()
        )
        reward = await rewards.get_reward(session, redemption.reward_id)
        zone = (await people.get_community(session, redemption.community_id)).timezone
        balance = await ledger.balance(session, community_id=reward.community_id, person_id=uid)
    # A repeated tap shows the same message again while the code is still good.
    fresh = created or redemption.status == RedemptionStatus.issued
    view = _code_view(ctx, redemption, reward, zone, fresh=fresh, balance=balance)
    if not created:
        await common.replace(update, ctx, view)
        await common.answer(update, ctx, "rewards/already_redeemed")
        return
    await common.edit(update, ctx, view.name, markup=view.markup, **view.params)
    chat = update.effective_chat
    assert chat is not None
    await _send_qr(ctx, chat.id, redemption, reward, zone)


async def _own(update: Update, ctx: LinliContext, prefix: str) -> tuple[Redemption, Reward, str]:
    common.private_only(update)
    (redemption_id,) = common.callback_args(update, prefix, 1)
    async with ctx.svc.db.transaction(write=False) as session:
        redemption, reward = await rewards.redemption_with_reward(
            session, redemption_id=common.as_int(redemption_id), person_id=common.user_id(update)
        )
        zone = (await people.get_community(session, redemption.community_id)).timezone
    return redemption, reward, zone


def _usable(redemption: Redemption, ctx: LinliContext) -> bool:
    return redemption.status == RedemptionStatus.issued and redemption.expires_at > ctx.now()


@common.on_button("rwc")
async def btn_code(update: Update, ctx: LinliContext) -> None:
    redemption, reward, zone = await _own(update, ctx, "rwc")
    await common.show(update, ctx, _code_view(ctx, redemption, reward, zone))


@common.on_button("rwq")
async def btn_qr(update: Update, ctx: LinliContext) -> None:
    """rwq:<redemption>: the QR image again (a resident who lost it, or a new phone)."""
    redemption, reward, zone = await _own(update, ctx, "rwq")
    if not _usable(redemption, ctx):
        await common.answer(update, ctx, "rewards/not_open", alert=True, r=redemption, zone=zone)
        return
    chat = update.effective_chat
    assert chat is not None
    await _send_qr(ctx, chat.id, redemption, reward, zone)
    await common.answer(update, ctx)


@common.screen("rwm", 2, private=True)
async def btn_my_codes(
    session: AsyncSession, ctx: LinliContext, update: Update, community_id: str, page: str
) -> common.View:
    cid = common.as_int(community_id)
    community = await people.get_community(session, cid)
    found = await rewards.open_codes(
        session, person_id=common.user_id(update), community_id=cid, now=ctx.now()
    )
    shown, shown_page, pages = common.paged(found, common.as_int(page))
    rows = [
        [
            common.button(common.label(ctx, "rewards", "qr_of", code=r.code), f"rwq:{r.id}"),
            common.button(common.label(ctx, "rewards", "cancel_of", code=r.code), f"rwx:{r.id}"),
        ]
        for r, _ in shown
    ]
    rows.append(common.page_buttons(ctx, shown_page, pages, f"rwm:{cid}:{{}}"))
    rows.append([common.button(common.label(ctx, "rewards", "to_rewards"), f"rwl:{cid}:0")])
    params = {"entries": shown, "zone": community.timezone, "page": shown_page, "pages": pages}
    return common.View("rewards/my_codes", params, common.keyboard(rows))


@common.on_button("rwx")
async def btn_cancel_ask(update: Update, ctx: LinliContext) -> None:
    redemption, reward, zone = await _own(update, ctx, "rwx")
    if redemption.status != RedemptionStatus.issued:
        await common.show(update, ctx, _code_view(ctx, redemption, reward, zone))
        return
    markup = common.keyboard(
        [
            [common.button(common.label(ctx, "rewards", "cancel_yes"), f"rwxy:{redemption.id}")],
            [common.button(common.label(ctx, "rewards", "cancel_no"), f"rwc:{redemption.id}")],
        ]
    )
    await common.edit(
        update, ctx, "rewards/cancel_confirm", markup=markup, r=redemption, reward=reward
    )


@common.on_button("rwxy")
async def btn_cancel(update: Update, ctx: LinliContext) -> None:
    """rwxy:<redemption>: give the code back; a second tap finds it cancelled already."""
    common.private_only(update)
    (redemption_id,) = common.callback_args(update, "rwxy", 1)
    uid = common.user_id(update)
    async with ctx.svc.db.transaction() as session:
        redemption, reward, changed = await rewards.cancel(
            session, person_id=uid, redemption_id=common.as_int(redemption_id), now=ctx.now()
        )
        balance = await ledger.balance(session, community_id=redemption.community_id, person_id=uid)
    markup = common.keyboard(
        [
            [
                common.button(
                    common.label(ctx, "rewards", "to_rewards"), f"rwl:{redemption.community_id}:0"
                )
            ]
        ]
    )
    view = common.View(
        "rewards/cancelled", {"r": redemption, "reward": reward, "balance": balance}, markup
    )
    await common.show(update, ctx, view, note=None if changed else "rewards/already_cancelled")


async def cmd_start_rewards(update: Update, ctx: LinliContext) -> None:
    """/start rewards: the deep link a group hands out."""
    await cmd_rewards(update, ctx)


def register(app: LinliApp) -> None:
    # Unused codes expire (points and stock go back); the monthly redemption day's reminder.
    delivery.add_rhythm(app, rewards.expire_due)
    delivery.add_rhythm(app, rewards.remind_redemption_day)
    # Before basics: these /start payloads are ours, plain /start is basics'.
    app.add_handler(
        CommandHandler("start", cmd_start_rewards, filters=filters.Regex(r"^/start rewards\b"))
    )
    app.add_handler(CommandHandler("rewards", cmd_rewards))
    common.add_buttons(app, common.buttons_of(__name__))
