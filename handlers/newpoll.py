"""/newpoll: a lead builds a poll tap by tap in the private chat (a guided flow of kind "poll").

The question, a few lines of description, the unit (the unit-tree picker: only units the lead
may lead), the method, the options (typed one per line, or picked from the unit's agenda), the
closing time (the date-and-time picker); then the draft screen shows the card as voters will see
it, with every setting (who counts, the decision rule, anonymous, when results show, opening
time, the reminder) on buttons that set a value, and Post. Post makes the poll once (a double
tap shows the same poll). Every button carries the flow id; the flow is loaded on the server
(owner, open, not expired) and the poll is checked again in models/polls.py when it is made.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from fractions import Fraction
from functools import partial
from typing import Any

from sqlmodel.ext.asyncio.session import AsyncSession
from telegram import InlineKeyboardButton, Update
from telegram.ext import CallbackQueryHandler, CommandHandler, filters

from bot.context import LinliApp, LinliContext
from handlers import common, flowui, pickers
from models import agenda, flows, polls
from models.errors import InvalidInput, NotAllowed
from models.flows import Flow
from models.people import Can
from models.tally import Method, Rule

KIND = "poll"
PREFIX = "vn"
WEIGHTS = ("5-3-1", "3-2-1")  # other weights are typed
THRESHOLDS = ((Fraction(1, 2), True), (Fraction(2, 3), False), (Fraction(3, 4), False))
AGENDA_LIMIT = 10


def _fid(flow: Flow) -> int:
    return flowui.flow_id(flow)


def _data(flow: Flow, key: str, default: Any = None) -> Any:
    return flow.data.get(key, default)


# --- starting ------------------------------------------------------------------------------


async def cmd_newpoll(update: Update, ctx: LinliContext) -> None:
    """/newpoll (or /start newpoll): leads only; the draft lives in the private chat."""
    if not common.is_private(update):
        await common.offer_private(update, ctx, "newpoll", feature="polls", offer="new_privately")
        return
    now = ctx.now()
    async with ctx.svc.db.transaction() as session:
        auth = await common.load_auth(session, ctx, update)
        if not auth.is_lead:
            raise NotAllowed("newpoll_leads_only")
        flow = await flows.start(session, kind=KIND, owner_id=common.user_id(update), now=now,
                                 private=True, data=polls.draft_defaults())  # fmt: skip
    await flowui.ask(update, ctx, flow, step="question", template="polls/new_ask_question")


@flowui.answers(KIND, "question")
async def on_question(update: Update, ctx: LinliContext, flow: Flow, text: str) -> None:
    again = partial(flowui.ask, update, ctx, flow, step="question",
                    template="polls/new_ask_question")  # fmt: skip
    question = await flowui.check(lambda: polls.clean_question(text), again)
    async with ctx.svc.db.transaction() as session:
        live = await flowui.load(session, ctx, update, _fid(flow), kind=KIND)
        await flows.update(session, live, now=ctx.now(), question=question)
    await _ask_description(update, ctx, flow)


async def _ask_description(update: Update, ctx: LinliContext, flow: Flow, **params: Any) -> None:
    skip = [common.button(common.label(ctx, "polls", "new_skip"), f"{PREFIX}:{_fid(flow)}:nodesc:")]
    await flowui.ask(update, ctx, flow, step="description", template="polls/new_ask_description",
                     rows=[skip], **params)  # fmt: skip


@flowui.answers(KIND, "description")
async def on_description(update: Update, ctx: LinliContext, flow: Flow, text: str) -> None:
    again = partial(_ask_description, update, ctx, flow)
    description = await flowui.check(lambda: polls.clean_description(text), again)
    async with ctx.svc.db.transaction() as session:
        live = await flowui.load(session, ctx, update, _fid(flow), kind=KIND)
        await flows.update(session, live, now=ctx.now(), description=description)
    await _pick_unit(update, ctx, flow)


async def _pick_unit(update: Update, ctx: LinliContext, flow: Flow) -> None:
    await pickers.units(update, ctx, flow, field="unit_id", can=Can.lead,
                        heading="polls/new_pick_unit")  # fmt: skip


@pickers.chosen(KIND)
async def after_picker(update: Update, ctx: LinliContext, flow: Flow, field: str) -> None:
    """The unit or a time was chosen: the next step, or back to the draft screen."""
    if field == "unit_id":
        async with ctx.svc.db.transaction() as session:
            live = await flowui.load(session, ctx, update, _fid(flow), kind=KIND)
            unit = await polls.draft_unit(session, live)
            live.community_id = unit.community_id
            # Agenda picks belong to the unit chosen before: a new unit starts them again.
            kept = [o for o in _data(live, "options", []) if not o.get("p")]
            await flows.update(session, live, now=ctx.now(), options=kept)
        if _data(flow, "method") is None:
            await common.show(update, ctx, method_view(ctx, flow))
            return
    await common.show(update, ctx, await draft_view(update, ctx, flow.id or 0))


# --- method and options ------------------------------------------------------------------


def method_view(ctx: LinliContext, flow: Flow) -> common.View:
    fid = _fid(flow)
    rows = [
        [common.button(common.label(ctx, "polls", "new_single"), f"{PREFIX}:{fid}:m:single")],
        [common.button(common.label(ctx, "polls", "new_multiple"), f"{PREFIX}:{fid}:m:multiple")],
        [common.button(common.label(ctx, "polls", "new_yesno"), f"{PREFIX}:{fid}:m:yesno")],
        [
            common.button(
                common.label(ctx, "polls", "new_ranking", weights=w), f"{PREFIX}:{fid}:w:{w}"
            )
            for w in WEIGHTS
        ],
        [common.button(common.label(ctx, "polls", "new_weights_typed"), f"{PREFIX}:{fid}:wt:")],
        flowui.cancel_row(ctx, flow),
    ]
    return common.View(
        "polls/new_method", {"question": _data(flow, "question")}, common.keyboard(rows)
    )


async def options_view(update: Update, ctx: LinliContext, flow: Flow) -> common.View:
    fid = _fid(flow)
    options = [o["t"] for o in _data(flow, "options", [])]
    rows: list[list[InlineKeyboardButton]] = []
    rows += common.rows_of(
        [common.button(common.label(ctx, "polls", "new_remove", n=n), f"{PREFIX}:{fid}:rm:{n}")
         for n in range(1, len(options) + 1)],
        5,
    )  # fmt: skip
    rows.append(
        [common.button(common.label(ctx, "polls", "new_type_options"), f"{PREFIX}:{fid}:ot:")]
    )
    rows.append(
        [common.button(common.label(ctx, "polls", "new_from_agenda"), f"{PREFIX}:{fid}:ag:")]
    )
    if len(options) >= 2:
        rows.append(
            [common.button(common.label(ctx, "polls", "new_options_done"), f"{PREFIX}:{fid}:od:")]
        )
    rows.append(flowui.cancel_row(ctx, flow))
    return common.View(
        "polls/new_options",
        {"options": options, "limit": polls.MAX_OPTIONS, "question": _data(flow, "question")},
        common.keyboard(rows),
    )


async def _ask_options(update: Update, ctx: LinliContext, flow: Flow, **params: Any) -> None:
    await flowui.ask(update, ctx, flow, step="options", template="polls/new_ask_options",
                     limit=polls.MAX_OPTIONS, **params)  # fmt: skip


@flowui.answers(KIND, "options")
async def on_options(update: Update, ctx: LinliContext, flow: Flow, text: str) -> None:
    """Options typed one per line (added to those already there; all or nothing)."""
    try:
        async with ctx.svc.db.transaction() as session:
            live = await flowui.load(session, ctx, update, _fid(flow), kind=KIND)
            await polls.add_draft_options(session, live, text.splitlines(), now=ctx.now())
    except InvalidInput as refused:
        await _ask_options(update, ctx, flow, problem=refused.key, **refused.params)
        return
    # More lines may follow, one message after another, until Done.
    await flowui.wait_for(update, ctx, live, step="options")
    await common.show(update, ctx, await options_view(update, ctx, live))


async def agenda_view(update: Update, ctx: LinliContext, flow: Flow) -> common.View:
    fid = _fid(flow)
    async with ctx.svc.db.transaction(write=False) as session:
        unit = await polls.draft_unit(session, flow)
        found = await agenda.agenda(session, unit=unit, limit=AGENDA_LIMIT)
    taken = {o.get("p") for o in _data(flow, "options", [])}
    rows = [
        [
            common.button(
                ("✅ " if p.id in taken else "➕ ") + p.title[:40], f"{PREFIX}:{fid}:ap:{p.id}"
            )
        ]
        for p in found
    ]
    rows.append(
        [common.button(common.label(ctx, "polls", "new_back_options"), f"{PREFIX}:{fid}:ob:")]
    )
    return common.View(
        "polls/new_agenda",
        {"proposals": [(p.title, p.support) for p in found], "unit": unit.name},
        common.keyboard(rows),
    )


# --- the draft screen --------------------------------------------------------------------


def _choice(ctx: LinliContext, key: str, on: bool, **params: object) -> str:
    return ("✅ " if on else "") + common.label(ctx, "polls", key, **params)


async def draft_view(update: Update, ctx: LinliContext, fid: int) -> common.View:
    """The card as voters will see it, what the settings mean, and the buttons to change them."""
    now = ctx.now()
    async with ctx.svc.db.transaction(write=False) as session:
        flow = await flows.load(session, flow_id=fid, owner_id=common.user_id(update), now=now,
                                kind=KIND, in_private=common.is_private(update))  # fmt: skip
        draft = await polls.draft_preview(session, flow, now=now)
    d = flow.data
    f = f"{PREFIX}:{fid}"
    counting = d.get("counting")
    rule = d.get("rule")
    rows = [
        [
            common.button(_choice(ctx, "new_per_person", counting == "person"), f"{f}:c:person"),
            common.button(
                _choice(ctx, "new_per_household", counting == "household"), f"{f}:c:household"
            ),
            common.button(_choice(ctx, "new_by_area", counting == "area"), f"{f}:c:area"),
        ],
        [
            common.button(_choice(ctx, "new_everyone", not d.get("owners")), f"{f}:o:0"),
            common.button(_choice(ctx, "new_owners", bool(d.get("owners"))), f"{f}:o:1"),
        ],
        [
            common.button(_choice(ctx, "new_rule_none", rule == Rule.none), f"{f}:r:none"),
            common.button(_choice(ctx, "new_rule_custom", rule == Rule.custom), f"{f}:r:custom"),
        ],
        [
            common.button(
                _choice(ctx, "new_rule_ordinary", rule == Rule.art278_ordinary),
                f"{f}:r:art278_ordinary",
            ),
            common.button(
                _choice(ctx, "new_rule_major", rule == Rule.art278_major), f"{f}:r:art278_major"
            ),
        ],
        [
            common.button(_choice(ctx, "new_named", not d.get("anonymous")), f"{f}:a:0"),
            common.button(_choice(ctx, "new_anonymous", bool(d.get("anonymous"))), f"{f}:a:1"),
        ],
        [
            common.button(_choice(ctx, "new_results_after", not d.get("live")), f"{f}:l:0"),
            common.button(_choice(ctx, "new_results_live", bool(d.get("live"))), f"{f}:l:1"),
        ],
        [
            common.button(_choice(ctx, "new_remind", d.get("remind") == h, hours=h), f"{f}:rh:{h}")
            for h in polls.REMIND_HOURS
        ],
        [
            common.button(common.label(ctx, "polls", "new_opens"), f"{f}:when:opens"),
            common.button(common.label(ctx, "polls", "new_closes"), f"{f}:when:closes"),
        ],
        [
            common.button(common.label(ctx, "polls", "new_edit_options"), f"{f}:ob:"),
            common.button(common.label(ctx, "polls", "new_edit_method"), f"{f}:mv:"),
            common.button(common.label(ctx, "polls", "new_edit_unit"), f"{f}:unit:"),
        ],
    ]
    if rule == Rule.custom:
        rows.insert(4, [common.button(_choice(ctx, "new_quorum", d.get("quorum", "") == q, q=q),
                               f"{f}:q:{q.replace('/', '_')}") for q in polls.QUORUMS])  # fmt: skip
        rows.insert(
            5,
            [
                common.button(
                    _choice(
                        ctx,
                        "new_threshold",
                        d.get("threshold") == str(t) and bool(d.get("strict")) == s,
                        t=str(t),
                        strict=s,
                    ),
                    f"{f}:t:{str(t).replace('/', '_')}:{int(s)}",
                )
                for t, s in THRESHOLDS
            ]
            + [common.button(common.label(ctx, "polls", "new_threshold_typed"), f"{f}:tt:")],
        )
    if draft["problem"] is None:
        rows.append([common.button(common.label(ctx, "polls", "new_post"), f"{f}:post:")])
    rows.append(flowui.cancel_row(ctx, flow))
    return common.View("polls/new_draft", {"draft": draft}, common.keyboard(rows))


async def _set(
    update: Update,
    ctx: LinliContext,
    fid: str,
    change: Callable[[AsyncSession, Flow], Awaitable[object]] | None = None,
    **fields: Any,
) -> Flow:
    """The lead's draft (locked), given these `fields` or changed by `change`; its snapshot."""
    async with ctx.svc.db.transaction() as session:
        flow = await flowui.load(session, ctx, update, fid, kind=KIND)
        if change is not None:
            await change(session, flow)
        else:
            await flows.update(session, flow, now=ctx.now(), **fields)
    return flow


@flowui.answers(KIND, "weights")
async def on_weights(update: Update, ctx: LinliContext, flow: Flow, text: str) -> None:
    again = partial(flowui.ask, update, ctx, flow, step="weights",
                    template="polls/new_ask_weights")  # fmt: skip
    weights = await flowui.check(lambda: polls.parse_weights(text), again)
    flow = await _set(update, ctx, str(_fid(flow)), method=Method.ranking,
                      weights="-".join(map(str, weights)))  # fmt: skip
    await _after_method(update, ctx, flow)


@flowui.answers(KIND, "threshold")
async def on_threshold(update: Update, ctx: LinliContext, flow: Flow, text: str) -> None:
    """A custom rule typed as 'quorum approval', e.g. '60% 55%' or '2/3 >1/2'."""
    again = partial(flowui.ask, update, ctx, flow, step="threshold",
                    template="polls/new_ask_threshold")  # fmt: skip
    quorum, threshold, strict = await flowui.check(lambda: polls.parse_rule(text), again)
    await _set(update, ctx, str(_fid(flow)), rule=Rule.custom, quorum=quorum,
               threshold=threshold, strict=strict)  # fmt: skip
    await common.show(update, ctx, await draft_view(update, ctx, _fid(flow)))


async def _after_method(update: Update, ctx: LinliContext, flow: Flow) -> None:
    if flow.data.get("method") == Method.yesno or flow.data.get("options_done"):
        await _next_after_options(update, ctx, flow)
    else:
        await common.show(update, ctx, await options_view(update, ctx, flow))


async def _next_after_options(update: Update, ctx: LinliContext, flow: Flow) -> None:
    if flow.data.get("method") == Method.multiple:
        fid = _fid(flow)
        n = len(flow.data.get("options", []))
        rows = [
            *common.rows_of(
                [common.button(str(k), f"{PREFIX}:{fid}:k:{k}") for k in range(1, n + 1)], 5
            ),
            flowui.cancel_row(ctx, flow),
        ]
        await common.show(
            update, ctx, common.View("polls/new_max_choices", {"options": n}, common.keyboard(rows))
        )
        return
    await _to_closing_or_draft(update, ctx, flow)


async def _to_closing_or_draft(update: Update, ctx: LinliContext, flow: Flow) -> None:
    if flow.data.get("closes") is None:
        await pickers.when(update, ctx, flow, field="closes", heading="polls/new_ask_closes")
    else:
        await common.show(update, ctx, await draft_view(update, ctx, _fid(flow)))


async def btn_draft(update: Update, ctx: LinliContext) -> None:
    """vn:<flow>:<what>:<value>[:<more>] — every button of the draft sets a value."""
    fid, what, value, *more = [*common.callback_args(update, PREFIX, 3), ""]
    more = [m for m in more if m]
    if what == "nodesc":
        flow = await _set(update, ctx, fid, description="")
        await common.answer(update, ctx)
        await _pick_unit(update, ctx, flow)
    elif what == "m":
        if value not in (Method.single, Method.multiple, Method.yesno):
            raise InvalidInput("stale_button")
        flow = await _set(update, ctx, fid, method=value)
        await _after_method(update, ctx, flow)
    elif what == "w":
        weights = polls.parse_weights(value.replace("_", "-"))
        flow = await _set(update, ctx, fid, method=Method.ranking,
                          weights="-".join(map(str, weights)))  # fmt: skip
        await _after_method(update, ctx, flow)
    elif what == "wt":
        flow = await _set(update, ctx, fid)
        await common.answer(update, ctx)
        await flowui.ask(update, ctx, flow, step="weights", template="polls/new_ask_weights",
                         places=polls.MAX_PLACES)  # fmt: skip
    elif what == "unit":
        flow = await _set(update, ctx, fid)
        await _pick_unit(update, ctx, flow)
    elif what == "mv":
        flow = await _set(update, ctx, fid)
        await common.show(update, ctx, method_view(ctx, flow))
    elif what == "ot":
        flow = await _set(update, ctx, fid)
        await common.answer(update, ctx)
        await _ask_options(update, ctx, flow)
    elif what == "rm":
        flow = await _set(update, ctx, fid, lambda s, f: polls.remove_draft_option(
            s, f, common.as_int(value), now=ctx.now()))  # fmt: skip
        await common.show(update, ctx, await options_view(update, ctx, flow))
    elif what == "ag":
        flow = await _set(update, ctx, fid)
        await common.show(update, ctx, await agenda_view(update, ctx, flow))
    elif what == "ap":
        flow = await _set(update, ctx, fid, lambda s, f: agenda.add_to_draft(
            s, f, common.as_int(value), now=ctx.now()))  # fmt: skip
        await common.show(update, ctx, await agenda_view(update, ctx, flow))
    elif what == "ob":
        flow = await _set(update, ctx, fid)
        await common.show(update, ctx, await options_view(update, ctx, flow))
    elif what == "od":
        async with ctx.svc.db.transaction() as session:
            flow = await flowui.load(session, ctx, update, fid, kind=KIND)
            if len(flow.data.get("options", [])) < 2:
                raise InvalidInput("poll_too_few_options")
            await flows.update(session, flow, now=ctx.now(), options_done=True)
        await _next_after_options(update, ctx, flow)
    elif what == "k":
        async with ctx.svc.db.transaction() as session:
            flow = await flowui.load(session, ctx, update, fid, kind=KIND)
            if not 1 <= common.as_int(value) <= len(flow.data.get("options", [])):
                raise InvalidInput("stale_button")
            await flows.update(session, flow, now=ctx.now(), max_choices=common.as_int(value))
        await _to_closing_or_draft(update, ctx, flow)
    elif what == "when":
        if value not in ("opens", "closes"):
            raise InvalidInput("stale_button")
        flow = await _set(update, ctx, fid)
        await pickers.when(update, ctx, flow, field=value, now=value == "opens",
                           heading=f"polls/new_ask_{value}")  # fmt: skip
    elif what == "tt":
        flow = await _set(update, ctx, fid)
        await common.answer(update, ctx)
        await flowui.ask(update, ctx, flow, step="threshold", template="polls/new_ask_threshold")
    elif what == "post":
        await post(update, ctx, fid)
    else:
        fields = polls.draft_setting(what, value, *more)
        await _set(update, ctx, fid, **fields)
        await common.show(update, ctx, await draft_view(update, ctx, common.as_int(fid)))


async def post(update: Update, ctx: LinliContext, fid: str) -> None:
    """Make the poll once: a second tap (or a repeated update) shows the same poll."""
    now = ctx.now()
    async with ctx.svc.db.transaction() as session:
        auth = await common.load_auth(session, ctx, update)

        async def make(flow: Flow) -> int:
            poll = await polls.create_from_draft(session, auth=auth, flow=flow, now=now)
            await agenda.put_on_poll(session, poll, now=now)
            assert poll.id is not None
            return poll.id

        flow, created = await flows.confirm(
            session,
            flow_id=common.as_int(fid),
            owner_id=auth.person_id,
            now=now,
            make=make,
            kind=KIND,
            in_private=common.is_private(update),
        )
        poll = await polls.get_poll(session, flow.result_id or 0)
        chats = await polls.card_chats(session, poll)
    await common.show(update, ctx, common.View("polls/new_posted",
                                 {"poll": poll, "created": created, "chats": chats}))  # fmt: skip


def register(app: LinliApp) -> None:
    flowui.on_cancel(KIND, "polls/new_cancelled")
    app.add_handler(CommandHandler("newpoll", cmd_newpoll))
    app.add_handler(
        CommandHandler("start", cmd_newpoll, filters=filters.Regex(r"^/start newpoll$"))
    )
    app.add_handler(CallbackQueryHandler(btn_draft, pattern=rf"^{PREFIX}:"))
