"""/reward for leads covering a community: the rewards catalogue (add, edit cost, stock, monthly
limit, merchant, retire) and the monthly redemption day."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from sqlmodel.ext.asyncio.session import AsyncSession
from telegram import ChatMember, InlineKeyboardButton, Update
from telegram.error import TelegramError
from telegram.ext import CommandHandler, filters

from bot.context import LinliApp, LinliContext
from handlers import common, flowui
from handlers.prompts import answers, ask
from models import flows, people, rewards
from models.errors import InvalidInput, NotAllowed
from models.flows import Flow
from models.people import Authority, Person
from models.rewards import Reward, RewardStatus

COSTS = (10, 20, 30, 50, 100, 200)  # the prices most neighbourhood rewards have
STOCKS = (5, 10, 20, 50, 100)
LIMITS = (1, 2, 4)
MERCHANT_PAYLOAD = re.compile(r"^reward-m(\d+)$")
UNLIMITED, NO_LIMIT = "u", "n"
CHATS_ASKED = 10  # a community's groups asked whether a new merchant is in one of them
FIELDS = {"c": "cost", "s": "stock", "l": "limit"}
ASK_VALUE = "rw_value"


# --- /reward: the catalogue, for leads covering the community ----------------------------------


async def _manager(session: AsyncSession, ctx: LinliContext, update: Update, cid: int) -> Authority:
    auth = await common.load_auth(session, ctx, update)
    rewards.require_manager(auth, cid)
    return auth


async def _start_view(
    session: AsyncSession, ctx: LinliContext, update: Update, merchant: int
) -> common.View:
    auth = await common.load_auth(session, ctx, update)
    found = await rewards.managed_communities(session, auth=auth)
    if not found:
        raise NotAllowed("rewards_staff_only")
    if len(found) == 1:
        assert found[0].id is not None
        return await _manage_view(session, ctx, update, found[0].id, merchant, 0)
    rows = [[common.button(c.name, f"rmh:{c.id}:{merchant}:0")] for c in found[: common.PAGE]]
    return common.View("rewards/manage_pick", markup=common.keyboard(rows))


async def _manage_view(
    session: AsyncSession,
    ctx: LinliContext,
    update: Update,
    cid: int,
    merchant: int,
    page: int,
    *,
    note: str = "",
) -> common.View:
    await _manager(session, ctx, update, cid)
    community = await people.get_community(session, cid)
    found = list(await rewards.rewards_of(session, community_id=cid))
    shown, page, pages = common.paged(found, page)
    preset = await people.get_person(session, merchant) if merchant else None
    rows = [
        [
            common.button(
                common.label(ctx, "rewards", "add"), f"rmn:{cid}:{merchant if preset else 0}"
            )
        ]
    ]
    rows += [[common.button(_reward_label(ctx, r), f"rme:{r.id}")] for r in shown]
    rows.append(common.page_buttons(ctx, page, pages, lambda p: f"rmh:{cid}:{merchant}:{p}"))
    rows.append([common.button(common.label(ctx, "rewards", "redemption_day"), f"rmd:{cid}")])
    params = {
        "community": community,
        "day": await rewards.redemption_day(session, community_id=cid),
        "note": note,
        "rewards": shown,
        "merchants": await _merchants(session, shown),
        "preset": preset,
        "page": page,
        "pages": pages,
        "empty": not found,
    }
    return common.View("rewards/manage", params, common.keyboard(rows))


def _reward_label(ctx: LinliContext, reward: Reward) -> str:
    if reward.status == RewardStatus.retired:
        return common.label(
            ctx,
            "rewards",
            "reward_retired",
            name=rewards.name_in(reward, ctx.lang),
            cost=reward.cost,
        )
    return common.label(
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
    who = common.replied_to(update.effective_message)
    if who is not None and who.is_bot:
        who = None  # a bot cannot hand over rewards
    merchant = 0
    if who is not None:
        await common.note_replied(ctx, who)
        merchant = who.id
    await _open_manage(update, ctx, merchant)


async def _open_manage(update: Update, ctx: LinliContext, merchant: int) -> None:
    async with ctx.svc.db.transaction(write=False) as session:
        view = await _start_view(session, ctx, update, merchant)
    # Typing names and numbers is done in private, away from the group's chatter.
    payload = f"reward-m{merchant}" if merchant else "reward"
    await common.answer_privately(update, ctx, view, payload, feature="rewards")


@common.screen("rmh", 3, private=True)
async def btn_manage(
    session: AsyncSession, ctx: LinliContext, update: Update, cid: str, merchant: str, page: str
) -> common.View:
    merchant_id = common.as_int(merchant, telegram_id=True)
    return await _manage_view(
        session, ctx, update, common.as_int(cid), merchant_id, common.as_int(page)
    )


@common.on_button("rmd")
async def btn_day(update: Update, ctx: LinliContext) -> None:
    """rmd:<community>: pick the day of the month the groups are reminded of the rewards."""
    common.private_only(update)
    (cid,) = common.callback_args(update, "rmd", 1)
    async with ctx.svc.db.transaction(write=False) as session:
        await _manager(session, ctx, update, common.as_int(cid))
        day = await rewards.redemption_day(session, community_id=common.as_int(cid))
    days = [common.button(str(d), f"rmds:{common.as_int(cid)}:{d}") for d in range(1, 29)]
    rows = common.rows_of(days, 7)
    rows.append(
        [common.button(common.label(ctx, "rewards", "day_off"), f"rmds:{common.as_int(cid)}:0")]
    )
    rows.append(
        [common.button(common.label(ctx, "rewards", "back"), f"rmh:{common.as_int(cid)}:0:0")]
    )
    await common.show(
        update, ctx, common.View("rewards/pick_day", {"day": day}, common.keyboard(rows))
    )


@common.screen("rmds", 2, private=True, write=True)
async def btn_day_set(
    session: AsyncSession, ctx: LinliContext, update: Update, cid: str, day: str
) -> common.View:
    auth = await common.load_auth(session, ctx, update)
    await rewards.set_redemption_day(
        session,
        auth=auth,
        community_id=common.as_int(cid),
        day=common.as_int(day) or None,
        now=ctx.now(),
    )
    return await _manage_view(session, ctx, update, common.as_int(cid), 0, 0, note="day")


# adding: a guided flow (kind "reward"): cost (buttons or typed), stock (buttons or typed),
# names (typed), then it is made once; the merchant is picked after (unless already named)


REWARD = "reward"  # the flow kind of a reward being added: cost, stock, names, then it is made


def _catalogue(ctx: LinliContext, flow: Flow) -> list[InlineKeyboardButton]:
    """Under a cancelled draft: back to the catalogue it was started from."""
    merchant = int(flow.data.get("merchant") or 0)
    return [
        common.button(
            common.label(ctx, "rewards", "all_rewards"), f"rmh:{flow.community_id}:{merchant}:0"
        )
    ]


flowui.on_cancel(REWARD, "rewards/draft_cancelled", then=_catalogue)


def _cost_view(ctx: LinliContext, flow: Flow) -> common.View:
    fid = flowui.flow_id(flow)
    choices = [
        common.button(common.label(ctx, "rewards", "points", n=n), f"rmk:{fid}:{n}") for n in COSTS
    ]
    rows = common.rows_of(choices, 3)
    rows.append([common.button(common.label(ctx, "rewards", "type_number"), f"rmtc:{fid}")])
    rows.append(flowui.cancel_row(ctx, flow))
    return common.View("rewards/new_cost", markup=common.keyboard(rows))


def _stock_view(ctx: LinliContext, flow: Flow) -> common.View:
    fid = flowui.flow_id(flow)
    choices = [common.button(common.label(ctx, "rewards", "unlimited"), f"rmq:{fid}:{UNLIMITED}")]
    choices += [
        common.button(common.label(ctx, "rewards", "pieces", n=n), f"rmq:{fid}:{n}") for n in STOCKS
    ]
    rows = common.rows_of(choices, 3)
    rows.append([common.button(common.label(ctx, "rewards", "type_number"), f"rmts:{fid}")])
    rows.append(flowui.cancel_row(ctx, flow))
    return common.View("rewards/new_stock", {"cost": flow.data["cost"]}, common.keyboard(rows))


def _whole(text: str, low: int, high: int) -> int:
    return rewards.parse_whole(text, low=low, high=high)


async def _draft(session: AsyncSession, ctx: LinliContext, update: Update, fid: str | int) -> Flow:
    """The lead's open reward draft (locked), with their right to run the catalogue re-checked."""
    common.private_only(update)
    flow = await flowui.load(session, ctx, update, fid, kind=REWARD)
    await _manager(session, ctx, update, flow.community_id or 0)
    return flow


@common.on_button("rmn")
async def btn_new(update: Update, ctx: LinliContext) -> None:
    """rmn:<community>:<merchant>: a new reward's draft; first its cost."""
    common.private_only(update)
    cid, merchant = common.callback_args(update, "rmn", 2)
    async with ctx.svc.db.transaction() as session:
        await _manager(session, ctx, update, common.as_int(cid))
        flow = await flows.start(
            session, kind=REWARD, owner_id=common.user_id(update), community_id=common.as_int(cid),
            private=True, now=ctx.now(),
            data={"merchant": common.as_int(merchant, telegram_id=True)},
        )  # fmt: skip
    await common.show(update, ctx, _cost_view(ctx, flow))


@common.on_button("rmk")
async def btn_new_cost(update: Update, ctx: LinliContext) -> None:
    """rmk:<draft>:<cost>"""
    fid, cost = common.callback_args(update, "rmk", 2)
    value = _whole(cost, 1, rewards.MAX_COST)
    async with ctx.svc.db.transaction() as session:
        flow = await _draft(session, ctx, update, fid)
        await flows.update(session, flow, now=ctx.now(), cost=value)
    await common.show(update, ctx, _stock_view(ctx, flow))


@common.on_button("rmq")
async def btn_new_stock(update: Update, ctx: LinliContext) -> None:
    """rmq:<draft>:<stock|u>: the numbers are set; now the names."""
    fid, stock = common.callback_args(update, "rmq", 2)
    amount = None if stock == UNLIMITED else _whole(stock, 0, rewards.MAX_STOCK)
    async with ctx.svc.db.transaction() as session:
        flow = await _draft(session, ctx, update, fid)
        if "cost" not in flow.data:
            raise InvalidInput("stale_button")
        await flows.update(session, flow, now=ctx.now(), stock=amount)
    await flowui.ask(update, ctx, flow, step="name_zh", template="rewards/ask_name_zh")
    await common.answer(update, ctx)


async def _ask_number(update: Update, ctx: LinliContext, prefix: str, step: str) -> None:
    (fid,) = common.callback_args(update, prefix, 1)
    async with ctx.svc.db.transaction() as session:
        flow = await _draft(session, ctx, update, fid)
    await flowui.ask(update, ctx, flow, step=step, template=f"rewards/ask_{step}")
    await common.answer(update, ctx)


@common.on_button("rmtc")
async def btn_type_new_cost(update: Update, ctx: LinliContext) -> None:
    """rmtc:<draft>: the lead types the cost."""
    await _ask_number(update, ctx, "rmtc", "cost")


@common.on_button("rmts")
async def btn_type_new_stock(update: Update, ctx: LinliContext) -> None:
    """rmts:<draft>: the lead types the stock."""
    await _ask_number(update, ctx, "rmts", "stock")


async def _again(
    update: Update, ctx: LinliContext, flow: Flow, step: str, error: InvalidInput
) -> None:
    """A typed answer that does not fit: say why and ask the same question again."""
    await flowui.ask(
        update, ctx, flow, step=step, template="rewards/ask_again", key=error.key, **error.params
    )


async def _store(
    update: Update, ctx: LinliContext, flow: Flow, step: str, value: Callable[[], object]
) -> Flow | None:
    """Keep a typed answer as the draft's field `step`; one that does not fit is asked again
    (None)."""
    try:
        checked = value()
    except InvalidInput as error:
        await _again(update, ctx, flow, step, error)
        return None
    async with ctx.svc.db.transaction() as session:
        live = await _draft(session, ctx, update, flowui.flow_id(flow))
        await flows.update(session, live, now=ctx.now(), **{step: checked})
    return live


@flowui.answers(REWARD, "cost")
async def on_new_cost(update: Update, ctx: LinliContext, flow: Flow, text: str) -> None:
    live = await _store(update, ctx, flow, "cost", lambda: _whole(text, 1, rewards.MAX_COST))
    if live is not None:
        await common.show(update, ctx, _stock_view(ctx, live))


@flowui.answers(REWARD, "stock")
async def on_new_stock(update: Update, ctx: LinliContext, flow: Flow, text: str) -> None:
    live = await _store(update, ctx, flow, "stock", lambda: _whole(text, 0, rewards.MAX_STOCK))
    if live is not None:
        await flowui.ask(update, ctx, live, step="name_zh", template="rewards/ask_name_zh")


@flowui.answers(REWARD, "name_zh")
async def on_name_zh(update: Update, ctx: LinliContext, flow: Flow, text: str) -> None:
    live = await _store(
        update, ctx, flow, "name_zh", lambda: people.clean_name(text, limit=rewards.NAME_LIMIT)
    )
    if live is not None:
        name = live.data["name_zh"]
        await flowui.ask(update, ctx, live, step="name_en", template="rewards/ask_name_en", zh=name)


@flowui.answers(REWARD, "name_en")
async def on_name_en(update: Update, ctx: LinliContext, flow: Flow, text: str) -> None:
    try:
        name_en = people.clean_name(text, limit=rewards.NAME_LIMIT)
    except InvalidInput as error:
        await _again(update, ctx, flow, "name_en", error)
        return
    cid, merchant_id = flow.community_id or 0, int(flow.data.get("merchant") or 0)
    vouched = bool(merchant_id) and await _in_community_chat(ctx, cid, merchant_id)
    async with ctx.svc.db.transaction() as session:
        await _draft(session, ctx, update, flowui.flow_id(flow))
        auth = await common.load_auth(session, ctx, update)

        async def make(draft: Flow) -> int:
            reward = await rewards.add_reward(
                session,
                auth=auth,
                community_id=cid,
                name_zh=str(draft.data["name_zh"]),
                name_en=name_en,
                cost=int(draft.data["cost"]),
                stock=draft.data.get("stock"),
                now=ctx.now(),
            )
            assert reward.id is not None
            if merchant_id:
                await rewards.set_merchant(
                    session,
                    auth=auth,
                    reward_id=reward.id,
                    merchant_id=merchant_id,
                    now=ctx.now(),
                    in_community_chat=vouched,
                )
            return reward.id

        done, _created = await flows.confirm(
            session,
            flow_id=flowui.flow_id(flow),
            owner_id=common.user_id(update),
            now=ctx.now(),
            make=make,
            kind=REWARD,
        )
        reward = await rewards.get_reward(session, done.result_id or 0)
        if reward.merchant_id:
            view = await _edit_view(session, ctx, reward, note="added")
        else:
            view = await _merchant_view(session, ctx, reward, 0, added=True)
    await common.show(update, ctx, view)


# editing one reward


async def _edit_view(
    session: AsyncSession, ctx: LinliContext, reward: Reward, *, note: str = ""
) -> common.View:
    merchant = await people.get_person(session, reward.merchant_id) if reward.merchant_id else None
    rid = reward.id
    retired = reward.status == RewardStatus.retired
    rows = [
        [
            common.button(common.label(ctx, "rewards", "edit_cost"), f"rmo:{rid}:c"),
            common.button(common.label(ctx, "rewards", "edit_stock"), f"rmo:{rid}:s"),
        ],
        [
            common.button(common.label(ctx, "rewards", "edit_limit"), f"rmo:{rid}:l"),
            common.button(common.label(ctx, "rewards", "edit_merchant"), f"rmm:{rid}:0"),
        ],
        [
            common.button(
                common.label(ctx, "rewards", "restore"), f"rmv:{rid}:{RewardStatus.active}"
            )
            if retired
            else common.button(
                common.label(ctx, "rewards", "retire"), f"rmv:{rid}:{RewardStatus.retired}"
            )
        ],
        [
            common.button(
                common.label(ctx, "rewards", "all_rewards"), f"rmh:{reward.community_id}:0:0"
            )
        ],
    ]
    params = {"reward": reward, "merchant": merchant, "note": note}
    return common.View("rewards/edit", params, common.keyboard(rows))


async def _managed_reward(
    session: AsyncSession, ctx: LinliContext, update: Update, reward_id: str
) -> tuple[Authority, Reward]:
    reward = await rewards.get_reward(session, common.as_int(reward_id))
    return await _manager(session, ctx, update, reward.community_id), reward


@common.screen("rme", 1, private=True)
async def btn_edit(
    session: AsyncSession, ctx: LinliContext, update: Update, reward_id: str
) -> common.View:
    _, reward = await _managed_reward(session, ctx, update, reward_id)
    return await _edit_view(session, ctx, reward)


def _field(code: str) -> str:
    if code not in FIELDS:
        raise InvalidInput("stale_button")
    return FIELDS[code]


@common.screen("rmo", 2, private=True)
async def btn_option(
    session: AsyncSession, ctx: LinliContext, update: Update, reward_id: str, code: str
) -> common.View:
    """rmo:<reward>:<c|s|l>: the choices for cost, stock or the monthly limit."""
    name = _field(code)
    _, reward = await _managed_reward(session, ctx, update, reward_id)
    data = f"rms:{reward.id}:{code}"
    if name == "cost":
        choices = [
            common.button(common.label(ctx, "rewards", "points", n=n), f"{data}:{n}") for n in COSTS
        ]
    elif name == "stock":
        choices = [
            common.button(common.label(ctx, "rewards", "unlimited"), f"{data}:{UNLIMITED}"),
            common.button("0", f"{data}:0"),
        ]
        choices += [
            common.button(common.label(ctx, "rewards", "pieces", n=n), f"{data}:{n}")
            for n in STOCKS
        ]
    else:
        choices = [common.button(common.label(ctx, "rewards", "no_limit"), f"{data}:{NO_LIMIT}")]
        choices += [
            common.button(common.label(ctx, "rewards", "per_month", n=n), f"{data}:{n}")
            for n in LIMITS
        ]
    rows = common.rows_of(choices, 3)
    rows.append(
        [common.button(common.label(ctx, "rewards", "type_number"), f"rmt:{reward.id}:{code}")]
    )
    rows.append([common.button(common.label(ctx, "rewards", "back"), f"rme:{reward.id}")])
    return common.View(
        "rewards/pick_value", {"reward": reward, "field": name}, common.keyboard(rows)
    )


async def _set_value(
    session: AsyncSession, ctx: LinliContext, update: Update, reward_id: int, name: str, value: str
) -> common.View:
    auth = await common.load_auth(session, ctx, update)
    term = "monthly_limit" if name == "limit" else name
    amount = None if value in (UNLIMITED, NO_LIMIT) else _whole(value, *rewards.TERMS[term])
    reward = await rewards.set_term(
        session, auth=auth, reward_id=reward_id, term=term, value=amount, now=ctx.now()
    )
    return await _edit_view(session, ctx, reward, note="saved")


@common.screen("rms", 3, private=True, write=True)
async def btn_set(
    session: AsyncSession, ctx: LinliContext, update: Update, reward_id: str, code: str, value: str
) -> common.View:
    return await _set_value(session, ctx, update, common.as_int(reward_id), _field(code), value)


@common.on_button("rmt")
async def btn_type(update: Update, ctx: LinliContext) -> None:
    common.private_only(update)
    reward_id, code = common.callback_args(update, "rmt", 2)
    name = _field(code)
    async with ctx.svc.db.transaction(write=False) as session:
        _, reward = await _managed_reward(session, ctx, update, reward_id)
    await ask(update, ctx, ASK_VALUE, f"{reward.id}:{code}", f"rewards/ask_{name}")
    await common.answer(update, ctx)


def _payload(prompt: people.Prompt, count: int) -> list[str]:
    parts = prompt.payload.split(":", count - 1)
    if len(parts) != count:
        raise InvalidInput("stale_button")
    return parts


@answers(ASK_VALUE)
async def on_value(update: Update, ctx: LinliContext, prompt: people.Prompt) -> None:
    reward_id, code = _payload(prompt, 2)
    name = _field(code)
    try:
        async with ctx.svc.db.transaction() as session:
            view = await _set_value(
                session, ctx, update, common.as_int(reward_id), name, common.typed(update)
            )
    except InvalidInput as error:
        if error.key != "bad_number":
            raise
        await ask(
            update, ctx, prompt.kind, prompt.payload, "rewards/ask_again", key=error.key,
            **error.params,
        )  # fmt: skip
        return
    await common.show(update, ctx, view)


async def _merchant_view(
    session: AsyncSession, ctx: LinliContext, reward: Reward, page: int, *, added: bool = False
) -> common.View:
    found, total = await rewards.merchant_candidates(
        session, community_id=reward.community_id, offset=page * common.PAGE, limit=common.PAGE
    )
    if not found and page != common.clamp_page(page, total):
        page = common.clamp_page(page, total)  # people left since the page was drawn
        found, total = await rewards.merchant_candidates(
            session, community_id=reward.community_id, offset=page * common.PAGE, limit=common.PAGE
        )
    choices = [common.button(p.name[:40] or "?", f"rmp:{reward.id}:{p.id}") for p in found]
    rows = common.rows_of(choices, 2)
    rows.append(
        common.page_buttons(ctx, page, common.page_count(total), lambda p: f"rmm:{reward.id}:{p}")
    )
    rows.append([common.button(common.label(ctx, "rewards", "no_merchant"), f"rmp:{reward.id}:0")])
    rows.append([common.button(common.label(ctx, "rewards", "back"), f"rme:{reward.id}")])
    params = {
        "reward": reward,
        "added": added,
        "total": total,
        "page": page,
        "pages": common.page_count(total),
    }
    return common.View("rewards/pick_merchant", params, common.keyboard(rows))


@common.screen("rmm", 2, private=True)
async def btn_merchants(
    session: AsyncSession, ctx: LinliContext, update: Update, reward_id: str, page: str
) -> common.View:
    _, reward = await _managed_reward(session, ctx, update, reward_id)
    return await _merchant_view(session, ctx, reward, common.as_int(page))


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


@common.on_button("rmp")
async def btn_set_merchant(update: Update, ctx: LinliContext) -> None:
    common.private_only(update)
    reward_id, person_id = common.callback_args(update, "rmp", 2)
    merchant_id = common.as_int(person_id, telegram_id=True) or None
    async with ctx.svc.db.transaction(write=False) as session:
        community_id = (await rewards.get_reward(session, common.as_int(reward_id))).community_id
    vouched = merchant_id is not None and await _in_community_chat(ctx, community_id, merchant_id)
    async with ctx.svc.db.transaction() as session:
        auth = await common.load_auth(session, ctx, update)
        reward, _ = await rewards.set_merchant(
            session,
            auth=auth,
            reward_id=common.as_int(reward_id),
            merchant_id=merchant_id,
            now=ctx.now(),
            in_community_chat=vouched,
        )
        view = await _edit_view(session, ctx, reward, note="saved")
    await common.show(update, ctx, view)


@common.screen("rmv", 2, private=True, write=True)
async def btn_status(
    session: AsyncSession, ctx: LinliContext, update: Update, reward_id: str, status: str
) -> common.View:
    """rmv:<reward>:<active|retired>: retired rewards leave the list; issued codes stay good."""
    auth = await common.load_auth(session, ctx, update)
    reward, _ = await rewards.set_status(
        session, auth=auth, reward_id=common.as_int(reward_id), status=status, now=ctx.now()
    )
    return await _edit_view(session, ctx, reward, note=status)


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
    common.add_buttons(app, common.buttons_of(__name__))
