"""/reward for leads covering a community: the rewards catalogue (add, edit cost, stock, monthly
limit, merchant, retire) and the monthly redemption day."""

from __future__ import annotations

import re
from collections.abc import Sequence

from sqlmodel.ext.asyncio.session import AsyncSession
from telegram import ChatMember, Update
from telegram.error import TelegramError
from telegram.ext import CallbackQueryHandler, CommandHandler, filters

from bot.context import LinliApp, LinliContext
from handlers.common import (
    PAGE,
    View,
    answer,
    answer_privately,
    as_int,
    button,
    callback_args,
    clamp_page,
    keyboard,
    label,
    load_auth,
    note_replied,
    page_buttons,
    page_count,
    private_only,
    replied_to,
    rows_of,
    show,
    typed,
)
from handlers.prompts import answers, ask
from models import people, rewards
from models.errors import InvalidInput, NotAllowed
from models.people import Authority, Person
from models.rewards import Reward, RewardStatus

COSTS = (10, 20, 30, 50, 100, 200)  # the prices most neighbourhood rewards have
STOCKS = (5, 10, 20, 50, 100)
LIMITS = (1, 2, 4)
MERCHANT_PAYLOAD = re.compile(r"^reward-m(\d+)$")
UNLIMITED, NO_LIMIT = "u", "n"
CHATS_ASKED = 10  # a community's groups asked whether a new merchant is in one of them
FIELDS = {"c": "cost", "s": "stock", "l": "limit"}
ASK_NEW_COST = "rw_new_cost"
ASK_NEW_STOCK = "rw_new_stock"
ASK_NAME_ZH = "rw_name_zh"
ASK_NAME_EN = "rw_name_en"
ASK_VALUE = "rw_value"


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
    community = await people.get_community(session, cid)
    found = list(await rewards.rewards_of(session, community_id=cid))
    page = clamp_page(page, len(found))
    shown = found[page * PAGE : (page + 1) * PAGE]
    preset = await people.get_person(session, merchant) if merchant else None
    rows = [[button(label(ctx, "rewards", "add"), f"rmn:{cid}:{merchant if preset else 0}")]]
    rows += [[button(_reward_label(ctx, r), f"rme:{r.id}")] for r in shown]
    rows.append(
        page_buttons(ctx, page, page_count(len(found)), lambda p: f"rmh:{cid}:{merchant}:{p}")
    )
    rows.append([button(label(ctx, "rewards", "redemption_day"), f"rmd:{cid}")])
    params = {
        "community": community,
        "day": await rewards.redemption_day(session, community_id=cid),
        "note": note,
        "rewards": shown,
        "merchants": await _merchants(session, shown),
        "preset": preset,
        "page": page,
        "pages": page_count(len(found)),
        "empty": not found,
    }
    return View("rewards/manage", params, keyboard(rows))


def _reward_label(ctx: LinliContext, reward: Reward) -> str:
    if reward.status == RewardStatus.retired:
        return label(
            ctx,
            "rewards",
            "reward_retired",
            name=rewards.name_in(reward, ctx.lang),
            cost=reward.cost,
        )
    return label(
        ctx, "rewards", "reward_item", name=rewards.name_in(reward, ctx.lang), cost=reward.cost
    )


async def _merchants(session: AsyncSession, found: Sequence[Reward]) -> dict[int, Person]:
    out: dict[int, Person] = {}
    for r in found:
        if r.merchant_id is not None and r.merchant_id not in out:
            person = await people.get_person(session, r.merchant_id)
            if person is not None:
                out[person.id] = person
    return out


async def cmd_reward(update: Update, ctx: LinliContext) -> None:
    who = replied_to(update.effective_message)
    if who is not None and who.is_bot:
        who = None  # a bot cannot hand over rewards
    merchant = 0
    if who is not None:
        await note_replied(ctx, who)
        merchant = who.id
    await _open_manage(update, ctx, merchant)


async def _open_manage(update: Update, ctx: LinliContext, merchant: int) -> None:
    async with ctx.svc.db.transaction(write=False) as session:
        view = await _start_view(session, ctx, update, merchant)
    # Typing names and numbers is done in private, away from the group's chatter.
    payload = f"reward-m{merchant}" if merchant else "reward"
    await answer_privately(update, ctx, view, payload, feature="rewards")


async def btn_manage(update: Update, ctx: LinliContext) -> None:
    private_only(update)
    cid, merchant, page = callback_args(update, "rmh", 3)
    async with ctx.svc.db.transaction(write=False) as session:
        view = await _manage_view(
            session, ctx, update, as_int(cid), as_int(merchant, telegram_id=True), as_int(page)
        )
    await show(update, ctx, view)


async def btn_day(update: Update, ctx: LinliContext) -> None:
    """rmd:<community>: pick the day of the month the groups are reminded of the rewards."""
    private_only(update)
    (cid,) = callback_args(update, "rmd", 1)
    async with ctx.svc.db.transaction(write=False) as session:
        await _manager(session, ctx, update, as_int(cid))
        day = await rewards.redemption_day(session, community_id=as_int(cid))
    days = [button(str(d), f"rmds:{as_int(cid)}:{d}") for d in range(1, 29)]
    rows = rows_of(days, 7)
    rows.append([button(label(ctx, "rewards", "day_off"), f"rmds:{as_int(cid)}:0")])
    rows.append([button(label(ctx, "rewards", "back"), f"rmh:{as_int(cid)}:0:0")])
    await show(update, ctx, View("rewards/pick_day", {"day": day}, keyboard(rows)))


async def btn_day_set(update: Update, ctx: LinliContext) -> None:
    private_only(update)
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
    choices = [
        button(label(ctx, "rewards", "points", n=n), f"rmk:{cid}:{merchant}:{n}") for n in COSTS
    ]
    rows = rows_of(choices, 3)
    rows.append([button(label(ctx, "rewards", "type_number"), f"rmtc:{cid}:{merchant}")])
    rows.append([button(label(ctx, "rewards", "cancel"), f"rmh:{cid}:{merchant}:0")])
    return View("rewards/new_cost", markup=keyboard(rows))


def _stock_view(ctx: LinliContext, cid: int, merchant: int, cost: int) -> View:
    data = f"rmq:{cid}:{merchant}:{cost}"
    choices = [button(label(ctx, "rewards", "unlimited"), f"{data}:{UNLIMITED}")]
    choices += [button(label(ctx, "rewards", "pieces", n=n), f"{data}:{n}") for n in STOCKS]
    rows = rows_of(choices, 3)
    rows.append([button(label(ctx, "rewards", "type_number"), f"rmts:{cid}:{merchant}:{cost}")])
    rows.append([button(label(ctx, "rewards", "cancel"), f"rmh:{cid}:{merchant}:0")])
    return View("rewards/new_stock", {"cost": cost}, keyboard(rows))


def _whole(text: str, low: int, high: int) -> int:
    return rewards.parse_whole(text, low=low, high=high)


async def btn_new(update: Update, ctx: LinliContext) -> None:
    private_only(update)
    cid, merchant = callback_args(update, "rmn", 2)
    async with ctx.svc.db.transaction(write=False) as session:
        await _manager(session, ctx, update, as_int(cid))
    await show(update, ctx, _cost_view(ctx, as_int(cid), as_int(merchant, telegram_id=True)))


async def btn_new_cost(update: Update, ctx: LinliContext) -> None:
    private_only(update)
    cid, merchant, cost = callback_args(update, "rmk", 3)
    async with ctx.svc.db.transaction(write=False) as session:
        await _manager(session, ctx, update, as_int(cid))
    value = _whole(cost, 1, rewards.MAX_COST)
    await show(
        update, ctx, _stock_view(ctx, as_int(cid), as_int(merchant, telegram_id=True), value)
    )


async def btn_new_stock(update: Update, ctx: LinliContext) -> None:
    """rmq:<community>:<merchant>:<cost>:<stock|u>: the numbers are set; now the names."""
    private_only(update)
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
    private_only(update)
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
    private_only(update)
    cid, merchant, cost = callback_args(update, "rmts", 3)
    async with ctx.svc.db.transaction(write=False) as session:
        await _manager(session, ctx, update, as_int(cid))
    payload = (
        f"{as_int(cid)}:{as_int(merchant, telegram_id=True)}:{_whole(cost, 1, rewards.MAX_COST)}"
    )
    await ask(update, ctx, ASK_NEW_STOCK, payload, "rewards/ask_stock")
    await answer(update, ctx)


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
        cost = _whole(typed(update), 1, rewards.MAX_COST)
    except InvalidInput as error:
        await _again(update, ctx, prompt, error)
        return
    await show(update, ctx, _stock_view(ctx, as_int(cid), as_int(merchant, telegram_id=True), cost))


@answers(ASK_NEW_STOCK)
async def on_new_stock(update: Update, ctx: LinliContext, prompt: people.Prompt) -> None:
    cid, merchant, cost = _payload(prompt, 3)
    try:
        stock = _whole(typed(update), 0, rewards.MAX_STOCK)
    except InvalidInput as error:
        await _again(update, ctx, prompt, error)
        return
    await ask(update, ctx, ASK_NAME_ZH, f"{cid}:{merchant}:{cost}:{stock}", "rewards/ask_name_zh")


@answers(ASK_NAME_ZH)
async def on_name_zh(update: Update, ctx: LinliContext, prompt: people.Prompt) -> None:
    _payload(prompt, 4)
    try:
        name = people.clean_name(typed(update), limit=rewards.NAME_LIMIT)
    except InvalidInput as error:
        await _again(update, ctx, prompt, error)
        return
    await ask(update, ctx, ASK_NAME_EN, f"{prompt.payload}:{name}", "rewards/ask_name_en", zh=name)


@answers(ASK_NAME_EN)
async def on_name_en(update: Update, ctx: LinliContext, prompt: people.Prompt) -> None:
    cid, merchant, cost, stock, name_zh = _payload(prompt, 5)
    try:
        name_en = people.clean_name(typed(update), limit=rewards.NAME_LIMIT)
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
            button(label(ctx, "rewards", "edit_cost"), f"rmo:{rid}:c"),
            button(label(ctx, "rewards", "edit_stock"), f"rmo:{rid}:s"),
        ],
        [
            button(label(ctx, "rewards", "edit_limit"), f"rmo:{rid}:l"),
            button(label(ctx, "rewards", "edit_merchant"), f"rmm:{rid}:0"),
        ],
        [
            button(label(ctx, "rewards", "restore"), f"rmv:{rid}:{RewardStatus.active}")
            if retired
            else button(label(ctx, "rewards", "retire"), f"rmv:{rid}:{RewardStatus.retired}")
        ],
        [button(label(ctx, "rewards", "all_rewards"), f"rmh:{reward.community_id}:0:0")],
    ]
    params = {"reward": reward, "merchant": merchant, "note": note}
    return View("rewards/edit", params, keyboard(rows))


async def _managed_reward(
    session: AsyncSession, ctx: LinliContext, update: Update, reward_id: str
) -> tuple[Authority, Reward]:
    reward = await rewards.get_reward(session, as_int(reward_id))
    return await _manager(session, ctx, update, reward.community_id), reward


async def btn_edit(update: Update, ctx: LinliContext) -> None:
    private_only(update)
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
    private_only(update)
    reward_id, code = callback_args(update, "rmo", 2)
    name = _field(code)
    async with ctx.svc.db.transaction(write=False) as session:
        _, reward = await _managed_reward(session, ctx, update, reward_id)
    data = f"rms:{reward.id}:{code}"
    if name == "cost":
        choices = [button(label(ctx, "rewards", "points", n=n), f"{data}:{n}") for n in COSTS]
    elif name == "stock":
        choices = [
            button(label(ctx, "rewards", "unlimited"), f"{data}:{UNLIMITED}"),
            button("0", f"{data}:0"),
        ]
        choices += [button(label(ctx, "rewards", "pieces", n=n), f"{data}:{n}") for n in STOCKS]
    else:
        choices = [button(label(ctx, "rewards", "no_limit"), f"{data}:{NO_LIMIT}")]
        choices += [button(label(ctx, "rewards", "per_month", n=n), f"{data}:{n}") for n in LIMITS]
    rows = rows_of(choices, 3)
    rows.append([button(label(ctx, "rewards", "type_number"), f"rmt:{reward.id}:{code}")])
    rows.append([button(label(ctx, "rewards", "back"), f"rme:{reward.id}")])
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
    private_only(update)
    reward_id, code, value = callback_args(update, "rms", 3)
    name = _field(code)
    async with ctx.svc.db.transaction() as session:
        view = await _set_value(session, ctx, update, as_int(reward_id), name, value)
    await show(update, ctx, view)


async def btn_type(update: Update, ctx: LinliContext) -> None:
    private_only(update)
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
            view = await _set_value(session, ctx, update, as_int(reward_id), name, typed(update))
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
    if not found and page != clamp_page(page, total):
        page = clamp_page(page, total)  # people left since the page was drawn
        found, total = await rewards.merchant_candidates(
            session, community_id=reward.community_id, offset=page * PAGE, limit=PAGE
        )
    choices = [button(p.name[:40] or "?", f"rmp:{reward.id}:{p.id}") for p in found]
    rows = rows_of(choices, 2)
    rows.append(page_buttons(ctx, page, page_count(total), lambda p: f"rmm:{reward.id}:{p}"))
    rows.append([button(label(ctx, "rewards", "no_merchant"), f"rmp:{reward.id}:0")])
    rows.append([button(label(ctx, "rewards", "back"), f"rme:{reward.id}")])
    params = {
        "reward": reward,
        "added": added,
        "total": total,
        "page": page,
        "pages": page_count(total),
    }
    return View("rewards/pick_merchant", params, keyboard(rows))


async def btn_merchants(update: Update, ctx: LinliContext) -> None:
    private_only(update)
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
    private_only(update)
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
    private_only(update)
    reward_id, status = callback_args(update, "rmv", 2)
    async with ctx.svc.db.transaction() as session:
        auth = await load_auth(session, ctx, update)
        reward, _ = await rewards.set_status(
            session, auth=auth, reward_id=as_int(reward_id), status=status, now=ctx.now()
        )
        view = await _edit_view(session, ctx, reward, note=status)
    await show(update, ctx, view)


async def cmd_start_reward(update: Update, ctx: LinliContext) -> None:
    """/start reward[-m<merchant>]: the catalogue, from a group's link."""
    payload = ctx.args[0] if ctx.args else ""
    merchant = MERCHANT_PAYLOAD.match(payload)
    await _open_manage(update, ctx, int(merchant.group(1)) if merchant else 0)


def register(app: LinliApp) -> None:
    # Before basics: these /start payloads are ours, plain /start is basics'.
    app.add_handler(
        CommandHandler("start", cmd_start_reward, filters=filters.Regex(r"^/start reward\b"))
    )
    app.add_handler(CommandHandler("reward", cmd_reward))
    for prefix, callback in (
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
