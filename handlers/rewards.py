"""/rewards, /reward and /verify: residents spend points, leads keep the catalogue, merchants
confirm the handover of what was redeemed."""

from __future__ import annotations

import io
import re
import secrets
from collections.abc import Callable, Sequence

import segno
from sqlmodel.ext.asyncio.session import AsyncSession
from telegram import ChatMember, InlineKeyboardButton, Update
from telegram.error import TelegramError
from telegram.ext import CallbackQueryHandler, CommandHandler, filters

from bot import delivery
from bot.context import LinliApp, LinliContext
from handlers.common import (
    PAGE,
    View,
    answer,
    as_int,
    button,
    callback_args,
    deep_link,
    edit,
    is_private,
    keyboard,
    label,
    load_auth,
    note_replied,
    page_buttons,
    page_count,
    render,
    replace,
    replied_to,
    reply,
    rows_of,
    send_private,
    show,
    url_button,
    user_id,
)
from handlers.prompts import answers, ask
from models import people, points, rewards
from models.errors import InvalidInput, NotAllowed
from models.people import Authority, Community, Person
from models.rewards import Redemption, RedemptionStatus, Reward, RewardStatus

COSTS = (10, 20, 30, 50, 100, 200)  # the prices most neighbourhood rewards have
STOCKS = (5, 10, 20, 50, 100)
LIMITS = (1, 2, 4)
QR_SCALE = 10  # pixels per module: the code stays sharp when a phone shows it full screen
NONCE = re.compile(r"^[A-Za-z0-9_-]{4,16}$")
VERIFY_PAYLOAD = re.compile(r"^v-([A-Za-z0-9]{1,16})$")
MERCHANT_PAYLOAD = re.compile(r"^reward-m(\d+)$")
UNLIMITED, NO_LIMIT = "u", "n"
CHATS_ASKED = 10  # a community's groups asked whether a new merchant is in one of them
FIELDS = {"c": "cost", "s": "stock", "l": "limit"}
ASK_VERIFY = "rw_verify"
ASK_NEW_COST = "rw_new_cost"
ASK_NEW_STOCK = "rw_new_stock"
ASK_NAME_ZH = "rw_name_zh"
ASK_NAME_EN = "rw_name_en"
ASK_VALUE = "rw_value"


def _l(ctx: LinliContext, key: str, **params: object) -> str:
    return label(ctx, "rewards", key, **params)


def _name(ctx: LinliContext, reward: Reward) -> str:
    return rewards.name_in(reward, ctx.lang)


def _private_only(update: Update) -> None:
    """Balances, codes and the catalogue's controls stay in the private chat, even if a button
    is forged in a group."""
    if not is_private(update):
        raise NotAllowed("private_only")


def _pages(total: int) -> int:
    return max(1, -(-total // PAGE))


def _clamp(page: int, total: int) -> int:
    return min(max(page, 0), _pages(total) - 1)


def _nav(
    ctx: LinliContext, page: int, total: int, data: Callable[[int], str]
) -> list[InlineKeyboardButton]:
    return page_buttons(ctx, page, page_count(total), data)


def qr_png(text: str) -> bytes:
    out = io.BytesIO()
    segno.make(text, error="m").save(out, kind="png", scale=QR_SCALE, border=4)
    return out.getvalue()


async def _community(session: AsyncSession, community_id: int) -> Community:
    return await people.get_community(session, community_id)


async def _member_communities(session: AsyncSession, person_id: int) -> list[Community]:
    found = await people.memberships(session, person_id=person_id)
    return [m.community for m in found if m.resident.status == people.ResidentStatus.verified]


async def _require_member(session: AsyncSession, person_id: int, community_id: int) -> Community:
    for community in await _member_communities(session, person_id):
        if community.id == community_id:
            return community
    raise NotAllowed("not_a_member")


# --- /rewards: what I can have ----------------------------------------------------------------


async def _home_view(session: AsyncSession, ctx: LinliContext, uid: int) -> View:
    found = await _member_communities(session, uid)
    if not found:
        return View(
            "rewards/not_member", markup=keyboard([[button(_l(ctx, "join_now"), "join:go")]])
        )
    if len(found) == 1:
        assert found[0].id is not None
        return await _list_view(session, ctx, uid, found[0].id, 0)
    rows = [[button(c.name, f"rwl:{c.id}:0")] for c in found[:PAGE]]
    return View("rewards/pick_community", markup=keyboard(rows))


def _offer_label(ctx: LinliContext, offer: rewards.Offer) -> str:
    name = _name(ctx, offer.reward)
    if offer.sold_out:
        return _l(ctx, "offer_sold_out", name=name)
    if offer.missing:
        return _l(ctx, "offer_short", name=name, missing=offer.missing)
    return _l(ctx, "offer", name=name, cost=offer.reward.cost)


async def _list_view(
    session: AsyncSession, ctx: LinliContext, uid: int, community_id: int, page: int
) -> View:
    community = await _require_member(session, uid, community_id)
    offers, have = await rewards.catalogue(session, community_id=community_id, person_id=uid)
    page = _clamp(page, len(offers))
    shown = offers[page * PAGE : (page + 1) * PAGE]
    rows = [[button(_offer_label(ctx, o), f"rwr:{o.reward.id}:{page}")] for o in shown]
    rows.append(_nav(ctx, page, len(offers), lambda p: f"rwl:{community_id}:{p}"))
    rows.append([button(_l(ctx, "my_codes"), f"rwm:{community_id}:0")])
    params = {
        "community": community,
        "offers": shown,
        "have": have,
        "page": page,
        "pages": _pages(len(offers)),
        "first": page * PAGE + 1,
    }
    return View("rewards/list", params, keyboard(rows))


async def cmd_rewards(update: Update, ctx: LinliContext) -> None:
    uid = user_id(update)
    async with ctx.svc.db.transaction(write=False) as session:
        view = await _home_view(session, ctx, uid)
    if is_private(update):
        await reply(update, ctx, view.name, markup=view.markup, **view.params)
        return
    # A balance is personal: the catalogue goes to the private chat.
    if await send_private(ctx, uid, ctx.lang, view.name, markup=view.markup, **view.params):
        await reply(update, ctx, "rewards/sent_privately")
    else:
        link = keyboard([[url_button(_l(ctx, "open_private"), deep_link(ctx, "rewards"))]])
        await reply(update, ctx, "rewards/open_private", markup=link)


async def btn_list(update: Update, ctx: LinliContext) -> None:
    _private_only(update)
    community_id, page = callback_args(update, "rwl", 2)
    async with ctx.svc.db.transaction(write=False) as session:
        view = await _list_view(session, ctx, user_id(update), as_int(community_id), as_int(page))
    await show(update, ctx, view)


async def btn_pick(update: Update, ctx: LinliContext) -> None:
    """rwr:<reward>:<page>: ask before spending, with a fresh confirm key in the button."""
    _private_only(update)
    reward_id, page = callback_args(update, "rwr", 2)
    uid = user_id(update)
    async with ctx.svc.db.transaction(write=False) as session:
        reward = await rewards.get_reward(session, as_int(reward_id))
        have = await rewards.check_redeemable(session, reward=reward, person_id=uid, now=ctx.now())
    nonce = secrets.token_urlsafe(6)
    markup = keyboard(
        [
            [button(_l(ctx, "confirm_redeem"), f"rwy:{reward.id}:{nonce}")],
            [button(_l(ctx, "back"), f"rwl:{reward.community_id}:{as_int(page)}")],
        ]
    )
    await edit(
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
) -> View:
    rows = []
    if redemption.status == RedemptionStatus.issued:
        rows.append([button(_l(ctx, "show_qr"), f"rwq:{redemption.id}")])
        rows.append([button(_l(ctx, "cancel_code"), f"rwx:{redemption.id}")])
    rows.append([button(_l(ctx, "my_codes"), f"rwm:{redemption.community_id}:0")])
    params = {"r": redemption, "reward": reward, "zone": zone, "fresh": fresh, "balance": balance}
    return View("rewards/code", params, keyboard(rows))


async def _send_qr(
    ctx: LinliContext, chat_id: int, redemption: Redemption, reward: Reward, zone: str
) -> None:
    """The code as a QR image: it opens the merchant's confirmation when they scan it."""
    png = qr_png(deep_link(ctx, f"v-{redemption.code}"))
    caption = render(ctx, "rewards/qr_caption", r=redemption, reward=reward, zone=zone)
    await ctx.bot.send_photo(chat_id, photo=png, caption=caption)


async def btn_redeem(update: Update, ctx: LinliContext) -> None:
    """rwy:<reward>:<nonce>: one redemption per confirm button, however often it is tapped."""
    _private_only(update)
    reward_id, nonce = callback_args(update, "rwy", 2)
    if not NONCE.match(nonce):
        raise InvalidInput("stale_button")
    uid = user_id(update)
    key = rewards.redemption_key(person_id=uid, reward_id=as_int(reward_id), nonce=nonce)
    async with ctx.svc.db.transaction() as session:
        redemption, created = await rewards.redeem(
            session, person_id=uid, reward_id=as_int(reward_id), key=key, now=ctx.now()
        )
        reward = await rewards.get_reward(session, redemption.reward_id)
        zone = (await _community(session, redemption.community_id)).timezone
        balance = await points.balance(session, community_id=reward.community_id, person_id=uid)
    # A repeated tap shows the same message again while the code is still good.
    fresh = created or redemption.status == RedemptionStatus.issued
    view = _code_view(ctx, redemption, reward, zone, fresh=fresh, balance=balance)
    if not created:
        await replace(update, ctx, view)
        await answer(update, ctx, "rewards/already_redeemed")
        return
    await edit(update, ctx, view.name, markup=view.markup, **view.params)
    chat = update.effective_chat
    assert chat is not None
    await _send_qr(ctx, chat.id, redemption, reward, zone)


async def _own(update: Update, ctx: LinliContext, prefix: str) -> tuple[Redemption, Reward, str]:
    _private_only(update)
    (redemption_id,) = callback_args(update, prefix, 1)
    async with ctx.svc.db.transaction(write=False) as session:
        redemption, reward = await rewards.redemption_with_reward(
            session, redemption_id=as_int(redemption_id), person_id=user_id(update)
        )
        zone = (await _community(session, redemption.community_id)).timezone
    return redemption, reward, zone


def _usable(redemption: Redemption, ctx: LinliContext) -> bool:
    return redemption.status == RedemptionStatus.issued and redemption.expires_at > ctx.now()


async def btn_code(update: Update, ctx: LinliContext) -> None:
    redemption, reward, zone = await _own(update, ctx, "rwc")
    await show(update, ctx, _code_view(ctx, redemption, reward, zone))


async def btn_qr(update: Update, ctx: LinliContext) -> None:
    """rwq:<redemption>: the QR image again (a resident who lost it, or a new phone)."""
    redemption, reward, zone = await _own(update, ctx, "rwq")
    if not _usable(redemption, ctx):
        await answer(update, ctx, "rewards/not_open", alert=True, r=redemption, zone=zone)
        return
    chat = update.effective_chat
    assert chat is not None
    await _send_qr(ctx, chat.id, redemption, reward, zone)
    await answer(update, ctx)


async def btn_my_codes(update: Update, ctx: LinliContext) -> None:
    _private_only(update)
    community_id, page = callback_args(update, "rwm", 2)
    cid = as_int(community_id)
    async with ctx.svc.db.transaction(write=False) as session:
        community = await _community(session, cid)
        found = await rewards.open_codes(
            session, person_id=user_id(update), community_id=cid, now=ctx.now()
        )
    shown_page = _clamp(as_int(page), len(found))
    shown = found[shown_page * PAGE : (shown_page + 1) * PAGE]
    rows = [
        [
            button(_l(ctx, "qr_of", code=r.code), f"rwq:{r.id}"),
            button(_l(ctx, "cancel_of", code=r.code), f"rwx:{r.id}"),
        ]
        for r, _ in shown
    ]
    rows.append(_nav(ctx, shown_page, len(found), lambda p: f"rwm:{cid}:{p}"))
    rows.append([button(_l(ctx, "to_rewards"), f"rwl:{cid}:0")])
    params = {
        "entries": shown,
        "zone": community.timezone,
        "page": shown_page,
        "pages": _pages(len(found)),
    }
    await show(update, ctx, View("rewards/my_codes", params, keyboard(rows)))


async def btn_cancel_ask(update: Update, ctx: LinliContext) -> None:
    redemption, reward, zone = await _own(update, ctx, "rwx")
    if redemption.status != RedemptionStatus.issued:
        await show(update, ctx, _code_view(ctx, redemption, reward, zone))
        return
    markup = keyboard(
        [
            [button(_l(ctx, "cancel_yes"), f"rwxy:{redemption.id}")],
            [button(_l(ctx, "cancel_no"), f"rwc:{redemption.id}")],
        ]
    )
    await edit(update, ctx, "rewards/cancel_confirm", markup=markup, r=redemption, reward=reward)


async def btn_cancel(update: Update, ctx: LinliContext) -> None:
    """rwxy:<redemption>: give the code back; a second tap finds it cancelled already."""
    _private_only(update)
    (redemption_id,) = callback_args(update, "rwxy", 1)
    uid = user_id(update)
    async with ctx.svc.db.transaction() as session:
        redemption, reward, changed = await rewards.cancel(
            session, person_id=uid, redemption_id=as_int(redemption_id), now=ctx.now()
        )
        balance = await points.balance(session, community_id=redemption.community_id, person_id=uid)
    markup = keyboard([[button(_l(ctx, "to_rewards"), f"rwl:{redemption.community_id}:0")]])
    view = View(
        "rewards/cancelled", {"r": redemption, "reward": reward, "balance": balance}, markup
    )
    if changed:
        await show(update, ctx, view)
    else:
        await replace(update, ctx, view)
        await answer(update, ctx, "rewards/already_cancelled")


# --- /verify: the merchant confirms the handover -------------------------------------------


async def _verify(update: Update, ctx: LinliContext, code: str) -> None:
    async with ctx.svc.db.transaction(write=False) as session:
        auth = await load_auth(session, ctx, update)
        check = await rewards.inspect_code(session, auth=auth, code=code, now=ctx.now())
    markup = keyboard([[button(_l(ctx, "hand_over"), f"rvy:{check.redemption.id}")]])
    await reply(
        update, ctx, "rewards/verify", markup=markup, c=check, zone=check.community.timezone
    )


async def cmd_verify(update: Update, ctx: LinliContext) -> None:
    if not is_private(update):
        # A code and the name it belongs to are checked privately: the group gets only a link
        # to the private chat (which asks for the code there), never the code back.
        link = keyboard([[url_button(_l(ctx, "open_private"), deep_link(ctx, "verify"))]])
        await reply(update, ctx, "rewards/open_private", markup=link)
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


async def btn_hand_over(update: Update, ctx: LinliContext) -> None:
    """rvy:<redemption>: mark it used, once; a second confirmation says when and by whom."""
    (redemption_id,) = callback_args(update, "rvy", 1)
    async with ctx.svc.db.transaction() as session:
        auth = await load_auth(session, ctx, update)
        check, changed = await rewards.hand_over(
            session, auth=auth, redemption_id=as_int(redemption_id), now=ctx.now()
        )
        by = await rewards.closer_of(session, check.redemption)
    params = {"c": check, "by": by, "zone": check.community.timezone}
    view = View("rewards/handed_over", params)
    if changed:
        await show(update, ctx, view)
        return
    await replace(update, ctx, view)
    await answer(
        update,
        ctx,
        "rewards/already_used",
        alert=True,
        at=check.redemption.closed_at,
        by=by.name if by else "",
        zone=check.community.timezone,
    )


# --- /reward: the catalogue, for leads covering the community ----------------------------------


async def _manager(session: AsyncSession, ctx: LinliContext, update: Update, cid: int) -> Authority:
    auth = await load_auth(session, ctx, update)
    rewards.require_manager(auth, cid)
    return auth


async def _start_view(
    session: AsyncSession, ctx: LinliContext, update: Update, merchant: int
) -> View:
    auth = await load_auth(session, ctx, update)
    found = await rewards.managed_communities(session, auth=auth)
    if not found:
        raise NotAllowed("rewards_staff_only")
    if len(found) == 1:
        assert found[0].id is not None
        return await _manage_view(session, ctx, update, found[0].id, merchant, 0)
    rows = [[button(c.name, f"rmh:{c.id}:{merchant}:0")] for c in found[:PAGE]]
    return View("rewards/manage_pick", markup=keyboard(rows))


async def _manage_view(
    session: AsyncSession,
    ctx: LinliContext,
    update: Update,
    cid: int,
    merchant: int,
    page: int,
    *,
    note: str = "",
) -> View:
    await _manager(session, ctx, update, cid)
    community = await _community(session, cid)
    found = list(await rewards.rewards_of(session, community_id=cid))
    page = _clamp(page, len(found))
    shown = found[page * PAGE : (page + 1) * PAGE]
    preset = await people.get_person(session, merchant) if merchant else None
    rows = [[button(_l(ctx, "add"), f"rmn:{cid}:{merchant if preset else 0}")]]
    rows += [[button(_reward_label(ctx, r), f"rme:{r.id}")] for r in shown]
    rows.append(_nav(ctx, page, len(found), lambda p: f"rmh:{cid}:{merchant}:{p}"))
    rows.append([button(_l(ctx, "redemption_day"), f"rmd:{cid}")])
    params = {
        "community": community,
        "day": await rewards.redemption_day(session, community_id=cid),
        "note": note,
        "rewards": shown,
        "merchants": await _merchants(session, shown),
        "preset": preset,
        "page": page,
        "pages": _pages(len(found)),
        "empty": not found,
    }
    return View("rewards/manage", params, keyboard(rows))


def _reward_label(ctx: LinliContext, reward: Reward) -> str:
    if reward.status == RewardStatus.retired:
        return _l(ctx, "reward_retired", name=_name(ctx, reward), cost=reward.cost)
    return _l(ctx, "reward_item", name=_name(ctx, reward), cost=reward.cost)


async def _merchants(session: AsyncSession, found: Sequence[Reward]) -> dict[int, Person]:
    out: dict[int, Person] = {}
    for r in found:
        if r.merchant_id is not None and r.merchant_id not in out:
            person = await people.get_person(session, r.merchant_id)
            if person is not None:
                out[person.id] = person
    return out


async def cmd_reward(update: Update, ctx: LinliContext) -> None:
    uid = user_id(update)
    who = replied_to(update.effective_message)
    if who is not None and who.is_bot:
        who = None  # a bot cannot hand over rewards
    merchant = 0
    if who is not None:
        await note_replied(ctx, who)
        merchant = who.id
    await _open_manage(update, ctx, uid, merchant)


async def _open_manage(update: Update, ctx: LinliContext, uid: int, merchant: int) -> None:
    async with ctx.svc.db.transaction(write=False) as session:
        view = await _start_view(session, ctx, update, merchant)
    if is_private(update):
        await reply(update, ctx, view.name, markup=view.markup, **view.params)
        return
    # Typing names and numbers is done in private, away from the group's chatter.
    if await send_private(ctx, uid, ctx.lang, view.name, markup=view.markup, **view.params):
        await reply(update, ctx, "rewards/sent_privately")
    else:
        payload = f"reward-m{merchant}" if merchant else "reward"
        link = keyboard([[url_button(_l(ctx, "open_private"), deep_link(ctx, payload))]])
        await reply(update, ctx, "rewards/open_private", markup=link)


async def btn_manage(update: Update, ctx: LinliContext) -> None:
    _private_only(update)
    cid, merchant, page = callback_args(update, "rmh", 3)
    async with ctx.svc.db.transaction(write=False) as session:
        view = await _manage_view(
            session, ctx, update, as_int(cid), as_int(merchant, telegram_id=True), as_int(page)
        )
    await show(update, ctx, view)


async def btn_day(update: Update, ctx: LinliContext) -> None:
    """rmd:<community>: pick the day of the month the groups are reminded of the rewards."""
    _private_only(update)
    (cid,) = callback_args(update, "rmd", 1)
    async with ctx.svc.db.transaction(write=False) as session:
        await _manager(session, ctx, update, as_int(cid))
        day = await rewards.redemption_day(session, community_id=as_int(cid))
    days = [button(str(d), f"rmds:{as_int(cid)}:{d}") for d in range(1, 29)]
    rows = rows_of(days, 7)
    rows.append([button(_l(ctx, "day_off"), f"rmds:{as_int(cid)}:0")])
    rows.append([button(_l(ctx, "back"), f"rmh:{as_int(cid)}:0:0")])
    await show(update, ctx, View("rewards/pick_day", {"day": day}, keyboard(rows)))


async def btn_day_set(update: Update, ctx: LinliContext) -> None:
    _private_only(update)
    cid, day = callback_args(update, "rmds", 2)
    async with ctx.svc.db.transaction() as session:
        auth = await load_auth(session, ctx, update)
        await rewards.set_redemption_day(
            session, auth=auth, community_id=as_int(cid), day=as_int(day) or None, now=ctx.now()
        )
        view = await _manage_view(session, ctx, update, as_int(cid), 0, 0, note="day")
    await show(update, ctx, view)


# adding: cost (buttons or typed), stock (buttons or typed), names (typed), merchant (picked)


def _cost_view(ctx: LinliContext, cid: int, merchant: int) -> View:
    choices = [button(_l(ctx, "points", n=n), f"rmk:{cid}:{merchant}:{n}") for n in COSTS]
    rows = rows_of(choices, 3)
    rows.append([button(_l(ctx, "type_number"), f"rmtc:{cid}:{merchant}")])
    rows.append([button(_l(ctx, "cancel"), f"rmh:{cid}:{merchant}:0")])
    return View("rewards/new_cost", markup=keyboard(rows))


def _stock_view(ctx: LinliContext, cid: int, merchant: int, cost: int) -> View:
    data = f"rmq:{cid}:{merchant}:{cost}"
    choices = [button(_l(ctx, "unlimited"), f"{data}:{UNLIMITED}")]
    choices += [button(_l(ctx, "pieces", n=n), f"{data}:{n}") for n in STOCKS]
    rows = rows_of(choices, 3)
    rows.append([button(_l(ctx, "type_number"), f"rmts:{cid}:{merchant}:{cost}")])
    rows.append([button(_l(ctx, "cancel"), f"rmh:{cid}:{merchant}:0")])
    return View("rewards/new_stock", {"cost": cost}, keyboard(rows))


def _whole(text: str, low: int, high: int) -> int:
    return rewards.parse_whole(text, low=low, high=high)


async def btn_new(update: Update, ctx: LinliContext) -> None:
    _private_only(update)
    cid, merchant = callback_args(update, "rmn", 2)
    async with ctx.svc.db.transaction(write=False) as session:
        await _manager(session, ctx, update, as_int(cid))
    await show(update, ctx, _cost_view(ctx, as_int(cid), as_int(merchant, telegram_id=True)))


async def btn_new_cost(update: Update, ctx: LinliContext) -> None:
    _private_only(update)
    cid, merchant, cost = callback_args(update, "rmk", 3)
    async with ctx.svc.db.transaction(write=False) as session:
        await _manager(session, ctx, update, as_int(cid))
    value = _whole(cost, 1, rewards.MAX_COST)
    await show(
        update, ctx, _stock_view(ctx, as_int(cid), as_int(merchant, telegram_id=True), value)
    )


async def btn_new_stock(update: Update, ctx: LinliContext) -> None:
    """rmq:<community>:<merchant>:<cost>:<stock|u>: the numbers are set; now the names."""
    _private_only(update)
    cid, merchant, cost, stock = callback_args(update, "rmq", 4)
    async with ctx.svc.db.transaction(write=False) as session:
        await _manager(session, ctx, update, as_int(cid))
    value = _whole(cost, 1, rewards.MAX_COST)
    amount = None if stock == UNLIMITED else _whole(stock, 0, rewards.MAX_STOCK)
    merchant_id = as_int(merchant, telegram_id=True)
    payload = f"{as_int(cid)}:{merchant_id}:{value}:{UNLIMITED if amount is None else amount}"
    await ask(update, ctx, ASK_NAME_ZH, payload, "rewards/ask_name_zh")
    await answer(update, ctx)


async def btn_type_new_cost(update: Update, ctx: LinliContext) -> None:
    _private_only(update)
    cid, merchant = callback_args(update, "rmtc", 2)
    async with ctx.svc.db.transaction(write=False) as session:
        await _manager(session, ctx, update, as_int(cid))
    await ask(
        update,
        ctx,
        ASK_NEW_COST,
        f"{as_int(cid)}:{as_int(merchant, telegram_id=True)}",
        "rewards/ask_cost",
    )
    await answer(update, ctx)


async def btn_type_new_stock(update: Update, ctx: LinliContext) -> None:
    _private_only(update)
    cid, merchant, cost = callback_args(update, "rmts", 3)
    async with ctx.svc.db.transaction(write=False) as session:
        await _manager(session, ctx, update, as_int(cid))
    payload = (
        f"{as_int(cid)}:{as_int(merchant, telegram_id=True)}:{_whole(cost, 1, rewards.MAX_COST)}"
    )
    await ask(update, ctx, ASK_NEW_STOCK, payload, "rewards/ask_stock")
    await answer(update, ctx)


def _typed(update: Update) -> str:
    message = update.effective_message
    assert message is not None and message.text is not None
    return message.text


def _payload(prompt: people.Prompt, count: int) -> list[str]:
    parts = prompt.payload.split(":", count - 1)
    if len(parts) != count:
        raise InvalidInput("stale_button")
    return parts


async def _again(
    update: Update, ctx: LinliContext, prompt: people.Prompt, error: InvalidInput
) -> None:
    """A typed answer that does not fit: say why and ask the same question again."""
    await ask(
        update, ctx, prompt.kind, prompt.payload, "rewards/ask_again", key=error.key, **error.params
    )


@answers(ASK_NEW_COST)
async def on_new_cost(update: Update, ctx: LinliContext, prompt: people.Prompt) -> None:
    cid, merchant = _payload(prompt, 2)
    try:
        cost = _whole(_typed(update), 1, rewards.MAX_COST)
    except InvalidInput as error:
        await _again(update, ctx, prompt, error)
        return
    await show(update, ctx, _stock_view(ctx, as_int(cid), as_int(merchant, telegram_id=True), cost))


@answers(ASK_NEW_STOCK)
async def on_new_stock(update: Update, ctx: LinliContext, prompt: people.Prompt) -> None:
    cid, merchant, cost = _payload(prompt, 3)
    try:
        stock = _whole(_typed(update), 0, rewards.MAX_STOCK)
    except InvalidInput as error:
        await _again(update, ctx, prompt, error)
        return
    await ask(update, ctx, ASK_NAME_ZH, f"{cid}:{merchant}:{cost}:{stock}", "rewards/ask_name_zh")


@answers(ASK_NAME_ZH)
async def on_name_zh(update: Update, ctx: LinliContext, prompt: people.Prompt) -> None:
    _payload(prompt, 4)
    try:
        name = rewards.clean_name(_typed(update))
    except InvalidInput as error:
        await _again(update, ctx, prompt, error)
        return
    await ask(update, ctx, ASK_NAME_EN, f"{prompt.payload}:{name}", "rewards/ask_name_en", zh=name)


@answers(ASK_NAME_EN)
async def on_name_en(update: Update, ctx: LinliContext, prompt: people.Prompt) -> None:
    cid, merchant, cost, stock, name_zh = _payload(prompt, 5)
    try:
        name_en = rewards.clean_name(_typed(update))
    except InvalidInput as error:
        await _again(update, ctx, prompt, error)
        return
    merchant_id = as_int(merchant, telegram_id=True)
    vouched = bool(merchant_id) and await _in_community_chat(ctx, as_int(cid), merchant_id)
    async with ctx.svc.db.transaction() as session:
        auth = await load_auth(session, ctx, update)
        reward = await rewards.add_reward(
            session,
            auth=auth,
            community_id=as_int(cid),
            name_zh=name_zh,
            name_en=name_en,
            cost=as_int(cost),
            stock=None if stock == UNLIMITED else as_int(stock),
            now=ctx.now(),
        )
        assert reward.id is not None
        if merchant_id:
            reward, _ = await rewards.set_merchant(
                session,
                auth=auth,
                reward_id=reward.id,
                merchant_id=merchant_id,
                now=ctx.now(),
                in_community_chat=vouched,
            )
            view = await _edit_view(session, ctx, reward, note="added")
        else:
            view = await _merchant_view(session, ctx, reward, 0, added=True)
    await show(update, ctx, view)


# editing one reward


async def _edit_view(
    session: AsyncSession, ctx: LinliContext, reward: Reward, *, note: str = ""
) -> View:
    merchant = await people.get_person(session, reward.merchant_id) if reward.merchant_id else None
    rid = reward.id
    retired = reward.status == RewardStatus.retired
    rows = [
        [
            button(_l(ctx, "edit_cost"), f"rmo:{rid}:c"),
            button(_l(ctx, "edit_stock"), f"rmo:{rid}:s"),
        ],
        [
            button(_l(ctx, "edit_limit"), f"rmo:{rid}:l"),
            button(_l(ctx, "edit_merchant"), f"rmm:{rid}:0"),
        ],
        [
            button(_l(ctx, "restore"), f"rmv:{rid}:{RewardStatus.active}")
            if retired
            else button(_l(ctx, "retire"), f"rmv:{rid}:{RewardStatus.retired}")
        ],
        [button(_l(ctx, "all_rewards"), f"rmh:{reward.community_id}:0:0")],
    ]
    params = {"reward": reward, "merchant": merchant, "note": note}
    return View("rewards/edit", params, keyboard(rows))


async def _managed_reward(
    session: AsyncSession, ctx: LinliContext, update: Update, reward_id: str
) -> tuple[Authority, Reward]:
    reward = await rewards.get_reward(session, as_int(reward_id))
    return await _manager(session, ctx, update, reward.community_id), reward


async def btn_edit(update: Update, ctx: LinliContext) -> None:
    _private_only(update)
    (reward_id,) = callback_args(update, "rme", 1)
    async with ctx.svc.db.transaction(write=False) as session:
        _, reward = await _managed_reward(session, ctx, update, reward_id)
        view = await _edit_view(session, ctx, reward)
    await show(update, ctx, view)


def _field(code: str) -> str:
    if code not in FIELDS:
        raise InvalidInput("stale_button")
    return FIELDS[code]


async def btn_option(update: Update, ctx: LinliContext) -> None:
    """rmo:<reward>:<c|s|l>: the choices for cost, stock or the monthly limit."""
    _private_only(update)
    reward_id, code = callback_args(update, "rmo", 2)
    name = _field(code)
    async with ctx.svc.db.transaction(write=False) as session:
        _, reward = await _managed_reward(session, ctx, update, reward_id)
    data = f"rms:{reward.id}:{code}"
    if name == "cost":
        choices = [button(_l(ctx, "points", n=n), f"{data}:{n}") for n in COSTS]
    elif name == "stock":
        choices = [button(_l(ctx, "unlimited"), f"{data}:{UNLIMITED}"), button("0", f"{data}:0")]
        choices += [button(_l(ctx, "pieces", n=n), f"{data}:{n}") for n in STOCKS]
    else:
        choices = [button(_l(ctx, "no_limit"), f"{data}:{NO_LIMIT}")]
        choices += [button(_l(ctx, "per_month", n=n), f"{data}:{n}") for n in LIMITS]
    rows = rows_of(choices, 3)
    rows.append([button(_l(ctx, "type_number"), f"rmt:{reward.id}:{code}")])
    rows.append([button(_l(ctx, "back"), f"rme:{reward.id}")])
    await show(
        update, ctx, View("rewards/pick_value", {"reward": reward, "field": name}, keyboard(rows))
    )


async def _set_value(
    session: AsyncSession, ctx: LinliContext, update: Update, reward_id: int, name: str, value: str
) -> View:
    auth = await load_auth(session, ctx, update)
    now = ctx.now()
    if name == "cost":
        reward = await rewards.set_cost(
            session,
            auth=auth,
            reward_id=reward_id,
            cost=_whole(value, 1, rewards.MAX_COST),
            now=now,
        )
    elif name == "stock":
        amount = None if value == UNLIMITED else _whole(value, 0, rewards.MAX_STOCK)
        reward = await rewards.set_stock(
            session, auth=auth, reward_id=reward_id, stock=amount, now=now
        )
    else:
        limit = None if value == NO_LIMIT else _whole(value, 1, rewards.MAX_MONTHLY)
        reward = await rewards.set_monthly_limit(
            session, auth=auth, reward_id=reward_id, limit=limit, now=now
        )
    return await _edit_view(session, ctx, reward, note="saved")


async def btn_set(update: Update, ctx: LinliContext) -> None:
    _private_only(update)
    reward_id, code, value = callback_args(update, "rms", 3)
    name = _field(code)
    async with ctx.svc.db.transaction() as session:
        view = await _set_value(session, ctx, update, as_int(reward_id), name, value)
    await show(update, ctx, view)


async def btn_type(update: Update, ctx: LinliContext) -> None:
    _private_only(update)
    reward_id, code = callback_args(update, "rmt", 2)
    name = _field(code)
    async with ctx.svc.db.transaction(write=False) as session:
        _, reward = await _managed_reward(session, ctx, update, reward_id)
    await ask(update, ctx, ASK_VALUE, f"{reward.id}:{code}", f"rewards/ask_{name}")
    await answer(update, ctx)


@answers(ASK_VALUE)
async def on_value(update: Update, ctx: LinliContext, prompt: people.Prompt) -> None:
    reward_id, code = _payload(prompt, 2)
    name = _field(code)
    try:
        async with ctx.svc.db.transaction() as session:
            view = await _set_value(session, ctx, update, as_int(reward_id), name, _typed(update))
    except InvalidInput as error:
        if error.key != "bad_number":
            raise
        await _again(update, ctx, prompt, error)
        return
    await show(update, ctx, view)


async def _merchant_view(
    session: AsyncSession, ctx: LinliContext, reward: Reward, page: int, *, added: bool = False
) -> View:
    found, total = await rewards.merchant_candidates(
        session, community_id=reward.community_id, offset=page * PAGE, limit=PAGE
    )
    if not found and page != _clamp(page, total):
        page = _clamp(page, total)  # people left since the page was drawn
        found, total = await rewards.merchant_candidates(
            session, community_id=reward.community_id, offset=page * PAGE, limit=PAGE
        )
    choices = [button(p.name[:40] or "?", f"rmp:{reward.id}:{p.id}") for p in found]
    rows = rows_of(choices, 2)
    rows.append(_nav(ctx, page, total, lambda p: f"rmm:{reward.id}:{p}"))
    rows.append([button(_l(ctx, "no_merchant"), f"rmp:{reward.id}:0")])
    rows.append([button(_l(ctx, "back"), f"rme:{reward.id}")])
    params = {
        "reward": reward,
        "added": added,
        "total": total,
        "page": page,
        "pages": _pages(total),
    }
    return View("rewards/pick_merchant", params, keyboard(rows))


async def btn_merchants(update: Update, ctx: LinliContext) -> None:
    _private_only(update)
    reward_id, page = callback_args(update, "rmm", 2)
    async with ctx.svc.db.transaction(write=False) as session:
        _, reward = await _managed_reward(session, ctx, update, reward_id)
        view = await _merchant_view(session, ctx, reward, as_int(page))
    await show(update, ctx, view)


async def _in_community_chat(ctx: LinliContext, community_id: int, person_id: int) -> bool:
    """Whether Telegram says this person is in one of the community's groups."""
    async with ctx.svc.db.transaction(write=False) as session:
        if await rewards.may_be_merchant(session, community_id=community_id, person_id=person_id):
            return True
        chats = await people.chats_of_community(session, community_id)
    for chat_id in chats[:CHATS_ASKED]:
        try:
            member = await ctx.bot.get_chat_member(chat_id, person_id)
        except TelegramError:
            continue
        if member.status not in (ChatMember.LEFT, ChatMember.BANNED):
            return True
    return False


async def btn_set_merchant(update: Update, ctx: LinliContext) -> None:
    _private_only(update)
    reward_id, person_id = callback_args(update, "rmp", 2)
    merchant_id = as_int(person_id, telegram_id=True) or None
    async with ctx.svc.db.transaction(write=False) as session:
        community_id = (await rewards.get_reward(session, as_int(reward_id))).community_id
    vouched = merchant_id is not None and await _in_community_chat(ctx, community_id, merchant_id)
    async with ctx.svc.db.transaction() as session:
        auth = await load_auth(session, ctx, update)
        reward, _ = await rewards.set_merchant(
            session,
            auth=auth,
            reward_id=as_int(reward_id),
            merchant_id=merchant_id,
            now=ctx.now(),
            in_community_chat=vouched,
        )
        view = await _edit_view(session, ctx, reward, note="saved")
    await show(update, ctx, view)


async def btn_status(update: Update, ctx: LinliContext) -> None:
    """rmv:<reward>:<active|retired>: retired rewards leave the list; issued codes stay good."""
    _private_only(update)
    reward_id, status = callback_args(update, "rmv", 2)
    async with ctx.svc.db.transaction() as session:
        auth = await load_auth(session, ctx, update)
        reward, _ = await rewards.set_status(
            session, auth=auth, reward_id=as_int(reward_id), status=status, now=ctx.now()
        )
        view = await _edit_view(session, ctx, reward, note=status)
    await show(update, ctx, view)


# --- deep links --------------------------------------------------------------------------------


async def cmd_start(update: Update, ctx: LinliContext) -> None:
    """/start v-<CODE> (a scanned QR), /start verify, /start rewards, /start reward[-m<id>]."""
    payload = ctx.args[0] if ctx.args else ""
    verify = VERIFY_PAYLOAD.match(payload)
    if verify is not None:
        await _verify(update, ctx, verify.group(1))
    elif payload == "verify":
        await ask(update, ctx, ASK_VERIFY, "", "rewards/ask_code")
    elif payload == "rewards":
        await cmd_rewards(update, ctx)
    else:
        merchant = MERCHANT_PAYLOAD.match(payload)
        await _open_manage(update, ctx, user_id(update), int(merchant.group(1)) if merchant else 0)


def register(app: LinliApp) -> None:
    # Unused codes expire (points and stock go back); the monthly redemption day's reminder.
    delivery.add_rhythm(app, rewards.expire_due)
    delivery.add_rhythm(app, rewards.remind_redemption_day)
    # Before basics: these /start payloads are ours, plain /start is basics'.
    app.add_handler(
        CommandHandler(
            "start", cmd_start, filters=filters.Regex(r"^/start (v-|verify$|rewards\b|reward\b)")
        )
    )
    app.add_handler(CommandHandler("rewards", cmd_rewards))
    app.add_handler(CommandHandler("reward", cmd_reward))
    app.add_handler(CommandHandler("verify", cmd_verify))
    for prefix, callback in (
        ("rwl", btn_list),
        ("rwr", btn_pick),
        ("rwy", btn_redeem),
        ("rwc", btn_code),
        ("rwq", btn_qr),
        ("rwm", btn_my_codes),
        ("rwx", btn_cancel_ask),
        ("rwxy", btn_cancel),
        ("rvy", btn_hand_over),
        ("rmh", btn_manage),
        ("rmn", btn_new),
        ("rmk", btn_new_cost),
        ("rmq", btn_new_stock),
        ("rmtc", btn_type_new_cost),
        ("rmts", btn_type_new_stock),
        ("rme", btn_edit),
        ("rmo", btn_option),
        ("rms", btn_set),
        ("rmt", btn_type),
        ("rmm", btn_merchants),
        ("rmp", btn_set_merchant),
        ("rmv", btn_status),
        ("rmd", btn_day),
        ("rmds", btn_day_set),
    ):
        app.add_handler(CallbackQueryHandler(callback, pattern=rf"^{prefix}:"))
