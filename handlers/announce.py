"""/announce and /announcements: leads post notices to their units' chats, now or on a rhythm.

/announce is a guided flow (models.flows, kind "ann") on the shared pickers: the unit (unless the
group it is sent in is linked to a unit the lead leads), which chats, the text (or a photo with
its caption), when (now, or a day and time), how often, then pin/silent and confirm. The flow's
data: unit, subtree, text, photo, at (the date picker's), repeat (the recurrence picker's), pin,
silent. Nothing is written but the flow until the lead confirms; a double tap makes one notice.
"""

from __future__ import annotations

from datetime import time

from sqlmodel.ext.asyncio.session import AsyncSession
from telegram import Update
from telegram.ext import CommandHandler

from bot import delivery
from bot.context import LinliApp, LinliContext
from handlers import common, flowui, pickers
from models import announcements as ann
from models import flows, people
from models.announcements import ScheduleKind
from models.errors import InvalidInput, NotAllowed
from models.flows import Flow
from models.people import Authority, Can, Unit

KIND = "ann"
TIMES = (time(8, 0), time(12, 0), time(18, 0), time(20, 0))  # when notices are usually read
OPTIONS = {"p": "pin", "s": "silent"}

flowui.on_cancel(KIND, "announce/dropped")


def _l(ctx: LinliContext, key: str, **params: object) -> str:
    return common.label(ctx, "announce", key, **params)


async def _lead(session: AsyncSession, ctx: LinliContext, update: Update) -> Authority:
    auth = await common.load_auth(session, ctx, update)
    if not auth.is_lead:
        raise NotAllowed("leads_only")
    return auth


def _draft(flow: Flow) -> ann.Draft:
    """The lead's choices so far; a step whose earlier choices are missing is a stale button."""
    data = flow.data
    if not isinstance(data.get("unit"), int):
        raise InvalidInput("stale_button")
    moment = pickers.slot(data["at"]) if data.get("at") else None
    repeat = data.get("repeat") or {}
    kind, days = next(iter(repeat.items())) if repeat else (ScheduleKind.once, [])
    return ann.Draft(
        unit_id=data["unit"],
        subtree=bool(data.get("subtree")),
        text=str(data.get("text", "")),
        photo=data.get("photo"),
        start=moment.start if moment is not None else None,
        kind=kind if moment is not None else ScheduleKind.once,
        days=tuple(days) if moment is not None else (),
        pin=bool(data.get("pin")),
        silent=bool(data.get("silent")),
    )


# --- step 1: the audience ---------------------------------------------------------------------


async def _scope_view(
    session: AsyncSession, ctx: LinliContext, flow: Flow, unit: Unit
) -> common.View:
    f = flowui.flow_id(flow)
    own = len(await ann.audience_links(session, unit, subtree_too=False))
    below = await people.units_with_children(session, [unit.id or 0])
    rows = [[common.button(_l(ctx, "only_here", unit=unit.name, n=own), f"ans:{f}:{unit.id}:0")]]
    every = None
    if below:
        every = len(await ann.audience_links(session, unit, subtree_too=True))
        rows.append(
            [common.button(_l(ctx, "whole_tree", unit=unit.name, n=every), f"ans:{f}:{unit.id}:1")]
        )
    rows.append([common.button(_l(ctx, "other_unit"), f"anp:{f}")])
    rows.append(flowui.cancel_row(ctx, flow))
    params = {"names": await people.lineage_names(session, unit), "own": own, "every": every}
    return common.View("announce/scope", params, common.keyboard(rows))


async def cmd_announce(update: Update, ctx: LinliContext) -> None:
    chat, message = update.effective_chat, update.effective_message
    assert chat is not None
    async with ctx.svc.db.transaction() as session:
        auth = await _lead(session, ctx, update)
        start: Unit | None = None
        if not common.is_private(update):
            link = await people.link_for(
                session, chat_id=chat.id, thread_id=common.thread_of(message)
            )
            if link is not None:
                linked = await people.get_unit(session, link.unit_id)
                start = linked if auth.may(Can.lead, unit=linked) else None
        flow = await flows.start(session, kind=KIND, owner_id=auth.person_id, now=ctx.now())
        view = await _scope_view(session, ctx, flow, start) if start is not None else None
    if view is not None:
        await common.reply(update, ctx, view.name, markup=view.markup, **view.params)
    else:
        await pickers.units(update, ctx, flow, field="unit", heading="announce/pick_unit")


@common.on_button("anp")
async def btn_other_unit(update: Update, ctx: LinliContext) -> None:
    (fid,) = common.callback_args(update, "anp", 1)
    async with ctx.svc.db.transaction() as session:
        flow = await flowui.load(session, ctx, update, fid, kind=KIND)
    await pickers.units(update, ctx, flow, field="unit", heading="announce/pick_unit")


@common.on_button("ans")
async def btn_scope(update: Update, ctx: LinliContext) -> None:
    fid, unit_id, whole = common.callback_args(update, "ans", 3)
    async with ctx.svc.db.transaction() as session:
        flow = await flowui.load(session, ctx, update, fid, kind=KIND)
        auth = await _lead(session, ctx, update)
        unit = await ann.aim(session, auth=auth, unit_id=common.as_int(unit_id))
        subtree = common.as_state(whole)
        await flows.update(session, flow, now=ctx.now(), unit=unit.id, subtree=subtree)
        chats = len(await ann.audience_links(session, unit, subtree_too=subtree))
        names = await people.lineage_names(session, unit)
    await common.edit(update, ctx, "announce/audience", names=names, subtree=subtree, chats=chats)
    await flowui.ask(update, ctx, flow, step="text", template="announce/ask_text", problem=None)


# --- step 2: the text -------------------------------------------------------------------------


@flowui.answers(KIND, "text", photos=True)
async def on_text(update: Update, ctx: LinliContext, flow: Flow, text: str) -> None:
    photo = flowui.photo_of(update)
    try:
        cleaned = ann.clean_text(text, photo=photo is not None)
    except InvalidInput as exc:
        # A refused text may simply be sent again: ask once more, saying why.
        await flowui.ask(update, ctx, flow, step="text", template="announce/ask_text",
                         problem=exc.key, **exc.params)  # fmt: skip
        return
    async with ctx.svc.db.transaction() as session:
        live = await flowui.load(session, ctx, update, flowui.flow_id(flow), kind=KIND)
        await flows.update(session, live, now=ctx.now(), text=cleaned, photo=photo)
    await _ask_when(update, ctx, live)


async def _ask_when(update: Update, ctx: LinliContext, flow: Flow) -> None:
    await pickers.when(update, ctx, flow, field="at", now=("announce", "now"), times=TIMES,
                       heading="announce/when")  # fmt: skip


@common.on_button("anb")
async def btn_change_time(update: Update, ctx: LinliContext) -> None:
    (fid,) = common.callback_args(update, "anb", 1)
    async with ctx.svc.db.transaction() as session:
        flow = await flowui.load(session, ctx, update, fid, kind=KIND)
        _draft(flow)  # the audience is chosen
    await _ask_when(update, ctx, flow)


# --- step 3: when, and how often (the pickers), then options and confirmation ---------------


@pickers.chosen(KIND)
async def after_pick(update: Update, ctx: LinliContext, flow: Flow, field: str) -> None:
    if field == "unit":
        async with ctx.svc.db.transaction(write=False) as session:
            unit = await people.get_unit(session, int(flow.data["unit"]))
            view = await _scope_view(session, ctx, flow, unit)
        await common.show(update, ctx, view)
        return
    draft = _draft(flow)
    if field == "at" and draft.start is not None:
        async with ctx.svc.db.transaction(write=False) as session:
            unit = await people.get_unit(session, draft.unit_id)
            zone = (await people.get_community(session, unit.community_id)).timezone
        back = ("announce", "change_time", f"anb:{flowui.flow_id(flow)}")
        await pickers.repeat(update, ctx, flow, field="repeat", start=draft.start, zone=zone,
                             heading="announce/repeat", back=back)  # fmt: skip
        return
    await _confirm(update, ctx, flow)


async def _confirm_view(
    session: AsyncSession, ctx: LinliContext, auth: Authority, flow: Flow
) -> common.View:
    f, draft = flowui.flow_id(flow), _draft(flow)
    plan = await ann.plan(session, auth=auth, draft=draft, now=ctx.now())
    rows = [
        [
            common.button(_l(ctx, "pin", on=draft.pin), f"ano:{f}:p:{common.state(not draft.pin)}"),
            common.button(
                _l(ctx, "silent", on=draft.silent), f"ano:{f}:s:{common.state(not draft.silent)}"
            ),
        ],
        [common.button(_l(ctx, "send_now" if draft.start is None else "schedule"), f"any:{f}")],
        [common.button(_l(ctx, "change_time"), f"anb:{f}")],
        flowui.cancel_row(ctx, flow),
    ]
    params = {
        "names": await people.lineage_names(session, plan.unit),
        "subtree": draft.subtree,
        "chats": plan.chats,
        "text": draft.text,
        "photo": draft.photo is not None,
        "now": draft.start is None,
        "times": plan.times,
        "zone": plan.community.timezone,
        "kind": draft.kind,
        "days": list(plan.schedule.days) if plan.schedule else [],
        "at": plan.schedule.at if plan.schedule else None,
        "clamped": plan.clamped,
        "quiet_until": plan.quiet_until,
        "pin": draft.pin,
        "silent": draft.silent,
    }
    return common.View("announce/confirm", params, common.keyboard(rows))


async def _confirm(update: Update, ctx: LinliContext, flow: Flow) -> None:
    async with ctx.svc.db.transaction(write=False) as session:
        auth = await _lead(session, ctx, update)
        view = await _confirm_view(session, ctx, auth, flow)
    await common.show(update, ctx, view)


@common.on_button("ano")
async def btn_option(update: Update, ctx: LinliContext) -> None:
    fid, code, wanted = common.callback_args(update, "ano", 3)
    if code not in OPTIONS:
        raise InvalidInput("stale_button")
    async with ctx.svc.db.transaction() as session:
        flow = await flowui.load(session, ctx, update, fid, kind=KIND)
        auth = await _lead(session, ctx, update)
        if "at" not in flow.data:  # options come with the confirmation
            raise InvalidInput("stale_button")
        await flows.update(session, flow, now=ctx.now(), **{OPTIONS[code]: common.as_state(wanted)})
        view = await _confirm_view(session, ctx, auth, flow)
    await common.show(update, ctx, view)


@common.on_button("any")
async def btn_schedule(update: Update, ctx: LinliContext) -> None:
    (fid,) = common.callback_args(update, "any", 1)
    async with ctx.svc.db.transaction() as session:
        auth = await _lead(session, ctx, update)
        added = 0

        async def make(flow: Flow) -> int:
            nonlocal added
            if "at" not in flow.data:  # not confirmed yet: a forged or stale button
                raise InvalidInput("stale_button")
            announcement, added = await ann.schedule_announcement(
                session, auth=auth, draft=_draft(flow), now=ctx.now()
            )
            assert announcement.id is not None
            return announcement.id

        flow, created = await flows.confirm(
            session, flow_id=common.as_int(fid), owner_id=common.user_id(update), now=ctx.now(),
            kind=KIND, in_private=common.is_private(update), make=make,
        )  # fmt: skip
        if created:
            announcement, unit, community = await ann.get_announcement(
                session, auth=auth, announcement_id=flow.result_id or 0
            )
            names = await people.lineage_names(session, unit)
    if not created:  # a double tap: the first one made it, and its message says so
        await common.answer(update, ctx, "announce/draft_closed")
        return
    aid = announcement.id
    rows = [[common.button(_l(ctx, "report"), f"alr:{aid}")]]
    if announcement.next_occurrence is not None:
        rows.append([common.button(_l(ctx, "cancel_this"), f"alc:{aid}")])
    await common.edit(
        update,
        ctx,
        "announce/scheduled",
        markup=common.keyboard(rows),
        a=announcement,
        names=names,
        chats=added,
        zone=community.timezone,
    )


# --- /announcements: what is scheduled, cancelling, delivery reports ------------------------


async def _list_view(
    session: AsyncSession, ctx: LinliContext, auth: Authority, page: int
) -> common.View:
    found, total = await ann.announcements_for(
        session, auth=auth, now=ctx.now(), offset=page * common.PAGE, limit=common.PAGE
    )
    if not found and page:
        page = common.page_count(total) - 1
        found, total = await ann.announcements_for(
            session, auth=auth, now=ctx.now(), offset=page * common.PAGE, limit=common.PAGE
        )
    rows = []
    entries = []
    for a, unit, community in found:
        # An occurrence already handed to the outbox but not yet due is still "next".
        handed = a.last_occurrence if a.last_occurrence and a.last_occurrence > ctx.now() else None
        upcoming = handed or a.next_occurrence
        entries.append(
            {
                "a": a,
                "unit": unit.name,
                "zone": community.timezone,
                "text": ann.preview(a.text),
                "next": upcoming,
            }
        )
        row = [common.button(_l(ctx, "report_one", id=a.id), f"alr:{a.id}")]
        if upcoming is not None:
            row.insert(0, common.button(_l(ctx, "cancel_one", id=a.id), f"alc:{a.id}"))
        rows.append(row)
    rows.append(common.page_buttons(ctx, page, common.page_count(total), lambda p: f"al:{p}"))
    params = {"entries": entries, "page": page, "pages": common.page_count(total)}
    return common.View("announce/list", params, common.keyboard(rows) if found else None)


async def cmd_announcements(update: Update, ctx: LinliContext) -> None:
    async with ctx.svc.db.transaction(write=False) as session:
        auth = await _lead(session, ctx, update)
        view = await _list_view(session, ctx, auth, 0)
    await common.show(update, ctx, view)


@common.screen("al", 1)
async def btn_list(
    session: AsyncSession, ctx: LinliContext, update: Update, page: str
) -> common.View:
    auth = await _lead(session, ctx, update)
    return await _list_view(session, ctx, auth, max(0, common.as_int(page)))


@common.on_button("alc")
async def btn_cancel_ask(update: Update, ctx: LinliContext) -> None:
    (aid,) = common.callback_args(update, "alc", 1)
    async with ctx.svc.db.transaction(write=False) as session:
        auth = await _lead(session, ctx, update)
        a, unit, community = await ann.get_announcement(
            session, auth=auth, announcement_id=common.as_int(aid)
        )
    if a.status == ann.AnnouncementStatus.cancelled:
        await common.answer(update, ctx, "errors/announce_already_cancelled", alert=True)
        return
    markup = common.keyboard(
        [
            [
                common.button(_l(ctx, "cancel_yes"), f"aly:{a.id}"),
                common.button(_l(ctx, "cancel_no"), "al:0"),
            ]
        ]
    )
    await common.edit(
        update,
        ctx,
        "announce/cancel_confirm",
        markup=markup,
        a=a,
        unit=unit.name,
        zone=community.timezone,
        text=ann.preview(a.text),
    )


@common.on_button("aly")
async def btn_cancel(update: Update, ctx: LinliContext) -> None:
    (aid,) = common.callback_args(update, "aly", 1)
    async with ctx.svc.db.transaction() as session:
        auth = await _lead(session, ctx, update)
        a, withdrawn = await ann.cancel(
            session, auth=auth, announcement_id=common.as_int(aid), now=ctx.now()
        )
    markup = common.keyboard([[common.button(_l(ctx, "all"), "al:0")]])
    await common.edit(
        update,
        ctx,
        "announce/cancelled",
        markup=markup,
        a=a,
        text=ann.preview(a.text),
        withdrawn=withdrawn,
    )


@common.on_button("alr")
async def btn_report(update: Update, ctx: LinliContext) -> None:
    (aid,) = common.callback_args(update, "alr", 1)
    async with ctx.svc.db.transaction(write=False) as session:
        auth = await _lead(session, ctx, update)
        a, unit, community, report = await ann.delivery_report(
            session, auth=auth, announcement_id=common.as_int(aid)
        )
    markup = common.keyboard(
        [[common.button(_l(ctx, "refresh"), f"alr:{a.id}"), common.button(_l(ctx, "all"), "al:0")]]
    )
    await common.edit(
        update,
        ctx,
        "announce/report",
        markup=markup,
        a=a,
        unit=unit.name,
        zone=community.timezone,
        text=ann.preview(a.text),
        r=report,
    )


def register(app: LinliApp) -> None:
    # The rhythm that turns schedules into outbox rows.
    delivery.add_rhythm(app, ann.materialise_due)
    app.add_handler(CommandHandler("announce", cmd_announce))
    app.add_handler(CommandHandler("announcements", cmd_announcements))
    common.add_buttons(app, common.buttons_of(__name__))
