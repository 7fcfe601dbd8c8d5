"""The agenda (民事民提): /propose a topic, /agenda lists open ones, Support on their cards.

A proposal's card goes to the chats of its unit; its Support button adds the tapper's support
once (a repeat changes nothing) and the card shows the new count. Nothing on the card names
who proposed or who supports.
"""

from __future__ import annotations

from collections.abc import Sequence

from telegram import Update
from telegram.ext import CommandHandler, filters

from bot import cards
from bot.context import LinliApp, LinliContext
from handlers import common, prompts
from models import agenda, loop, people
from models.agenda import Proposal
from models.errors import InvalidInput, NotAllowed

ASK = "propose"
LIMIT = 10


async def _units_to_propose_in(ctx: LinliContext, person_id: int) -> list[people.Unit]:
    """The units above this person's verified households, nearest first (where a topic can be
    raised), without repeats."""
    async with ctx.svc.db.transaction(write=False) as session:
        found = await people.memberships(session, person_id=person_id)
        lineage: list[int] = []
        for member in found:
            if member.resident.status != people.ResidentStatus.verified:
                continue
            for uid in reversed(member.unit.lineage):
                if uid not in lineage:
                    lineage.append(uid)
        units = await people.units_by_id(session, lineage)
    return [units[u] for u in lineage if u in units]


def _units_view(template: str, units: Sequence[people.Unit], data: str) -> common.View:
    """Which unit, when the person may act on several: their names, two a row (`data`: the
    callback data, `{}` the unit's id)."""
    buttons = [common.button(u.name, data.format(u.id)) for u in units]
    return common.View(template, {}, common.keyboard(common.rows_of(buttons, 2)))


async def cmd_propose(update: Update, ctx: LinliContext) -> None:
    if not common.is_private(update):
        await common.offer_private(
            update, ctx, "propose", feature="agenda", offer="propose_privately"
        )
        return
    units = await _units_to_propose_in(ctx, common.user_id(update))
    if not units:
        raise NotAllowed("proposal_not_your_unit")
    if len(units) == 1:
        await _ask_text(update, ctx, units[0])
        return
    await common.show(update, ctx, _units_view("agenda/pick_unit", units, "agu:{}"))


async def btn_pick_unit(update: Update, ctx: LinliContext) -> None:
    (unit_id,) = common.callback_args(update, "agu", 1)
    wanted = common.as_int(unit_id)
    units = {u.id: u for u in await _units_to_propose_in(ctx, common.user_id(update))}
    if wanted not in units:
        raise InvalidInput("stale_button")
    await common.answer(update, ctx)
    await _ask_text(update, ctx, units[wanted])


async def _ask_text(update: Update, ctx: LinliContext, unit: people.Unit) -> None:
    await prompts.ask(update, ctx, ASK, str(unit.id), "agenda/ask_text", unit=unit.name)


@prompts.answers(ASK)
async def on_text(update: Update, ctx: LinliContext, prompt: people.Prompt) -> None:
    message = update.effective_message
    assert message is not None and message.text
    title, _, body = message.text.strip().partition("\n")
    now = ctx.now()
    try:
        async with ctx.svc.db.transaction() as session:
            auth = await common.load_auth(session, ctx, update)
            proposal = await agenda.propose(
                session,
                auth=auth,
                unit_id=common.as_int(prompt.payload),
                title=title,
                body=body,
                now=now,
            )
            unit = await people.get_unit(session, proposal.unit_id)
    except InvalidInput as refused:
        # Ask again: what was typed is not lost to a second typo.
        await prompts.ask(
            update, ctx, ASK, prompt.payload, f"errors/{refused.key}", **refused.params
        )
        return
    await common.reply(update, ctx, "agenda/proposed", proposal=proposal, unit=unit.name)


# --- the card and support ----------------------------------------------------------------


async def proposal_card(req: cards.CardRequest) -> cards.Card | None:
    proposal = await req.session.get(Proposal, req.subject_id)
    if proposal is None:
        return None
    markup = None
    if proposal.status == agenda.ProposalStatus.open:
        support = req.label("agenda", "support", count=proposal.support)
        markup = common.keyboard([[common.button(support, f"ags:{proposal.id}")]])
    went = await loop.outcome_of(req.session, proposal)
    shown = None if went is None else {"kind": went.kind, "label": went.label}
    return cards.Card("agenda/card", {"proposal": proposal, "went": shown}, markup)


async def btn_support(update: Update, ctx: LinliContext) -> None:
    (proposal_id,) = common.callback_args(update, "ags", 1)
    now = ctx.now()
    async with ctx.svc.db.transaction() as session:
        auth = await common.load_auth(session, ctx, update)
        _, added = await agenda.support(
            session, auth=auth, proposal_id=common.as_int(proposal_id), now=now
        )
    await common.answer(update, ctx, "agenda/supported" if added else "agenda/supported_before")


# --- /agenda -----------------------------------------------------------------------------


async def cmd_agenda(update: Update, ctx: LinliContext) -> None:
    """Open proposals, most supported first: of this group's unit, or of the person's units."""
    chat, message = update.effective_chat, update.effective_message
    async with ctx.svc.db.transaction(write=False) as session:
        unit = None
        if chat is not None and not common.is_private(update):
            link = await people.link_for(
                session, chat_id=chat.id, thread_id=common.thread_of(message)
            )
            unit = await people.get_unit(session, link.unit_id) if link else None
    if unit is None:
        mine = await _units_to_propose_in(ctx, common.user_id(update))
        unit = mine[-1] if mine else None  # the widest: everything below it is listed
    if unit is None:
        raise NotAllowed("proposal_not_your_unit")
    async with ctx.svc.db.transaction(write=False) as session:
        found = await agenda.agenda(session, unit=unit, limit=LIMIT)
    buttons = [
        [
            common.button(
                common.label(ctx, "agenda", "support_one", n=i, count=p.support), f"ags:{p.id}"
            )
        ]
        for i, p in enumerate(found, 1)
    ]
    await common.reply(update, ctx, "agenda/list", proposals=found, unit=unit.name,
                markup=common.keyboard(buttons))  # fmt: skip


# --- the monthly talk day (leads) --------------------------------------------------------

TALK_DAYS = (1, 5, 10, 15, 20, 25, 31)  # 31: the month's last day


async def cmd_talkday(update: Update, ctx: LinliContext) -> None:
    """/talkday: pick the unit (this group's, or one of mine), then the day of the month."""
    chat, message = update.effective_chat, update.effective_message
    async with ctx.svc.db.transaction(write=False) as session:
        auth = await common.load_auth(session, ctx, update)
        if not auth.is_lead:
            raise NotAllowed("talk_leads_only")
        units = auth.top_units()
        if chat is not None and not common.is_private(update):
            link = await people.link_for(
                session, chat_id=chat.id, thread_id=common.thread_of(message)
            )
            if link is not None:
                unit = await people.get_unit(session, link.unit_id)
                units = [unit] if auth.covers(unit) else units
    if len(units) == 1:
        await common.show(update, ctx, await _talk_view(ctx, units[0]))
        return
    await common.show(update, ctx, _units_view("agenda/talk_pick_unit", units, "agt:{}:0"))


async def _talk_view(ctx: LinliContext, unit: people.Unit) -> common.View:
    async with ctx.svc.db.transaction(write=False) as session:
        talk = await session.get(agenda.TalkDay, unit.id)
    day = talk.day if talk else 0
    buttons = [
        common.button(
            common.label(ctx, "agenda", "talk_day", day=d, on=d == day), f"agt:{unit.id}:{d}"
        )
        for d in TALK_DAYS
    ]
    off = common.button(common.label(ctx, "agenda", "talk_off", on=not day), f"agt:{unit.id}:-1")
    rows = [*common.rows_of(buttons, 4), [off]]
    return common.View("agenda/talk", {"unit": unit.name, "talk": talk}, common.keyboard(rows))


async def btn_talkday(update: Update, ctx: LinliContext) -> None:
    """agt:<unit>:<day>: 0 shows, -1 stops the talk, 1–31 sets its day (a state, not a toggle)."""
    unit_id, day = common.callback_args(update, "agt", 2)
    wanted = int(day) if day.lstrip("-").isdigit() else -2
    if wanted not in (0, -1, *TALK_DAYS):
        raise InvalidInput("stale_button")
    async with ctx.svc.db.transaction() as session:
        auth = await common.load_auth(session, ctx, update)
        unit = await people.get_unit(session, common.as_int(unit_id))
        people.require(auth, unit)
        if wanted:
            await agenda.set_talk_day(
                session,
                auth=auth,
                unit_id=common.as_int(unit_id),
                day=None if wanted < 0 else wanted,
                now=ctx.now(),
            )
    await common.show(update, ctx, await _talk_view(ctx, unit))


async def cmd_start(update: Update, ctx: LinliContext) -> None:
    await cmd_propose(update, ctx)


def register(app: LinliApp) -> None:
    cards.register(app, agenda.CARD, proposal_card)
    app.add_handler(CommandHandler("start", cmd_start, filters=filters.Regex(r"^/start propose\b")))
    app.add_handler(CommandHandler("propose", cmd_propose))
    app.add_handler(CommandHandler("agenda", cmd_agenda))
    app.add_handler(CommandHandler("talkday", cmd_talkday))
    common.add_buttons(app, (("agu", btn_pick_unit), ("ags", btn_support), ("agt", btn_talkday)))
