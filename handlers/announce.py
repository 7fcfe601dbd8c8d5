"""/announce and /announcements: leads post notices to their units' chats, now or on a rhythm."""

from __future__ import annotations

from datetime import datetime, time, timedelta

from sqlmodel.ext.asyncio.session import AsyncSession
from telegram import InlineKeyboardButton, Update
from telegram.ext import CallbackQueryHandler, CommandHandler, MessageHandler, filters

from bot import delivery
from bot.context import LinliApp, LinliContext
from handlers import prompts
from handlers.common import (
    PAGE,
    View,
    answer,
    as_int,
    as_state,
    button,
    callback_args,
    edit,
    is_private,
    keyboard,
    label,
    load_auth,
    page_buttons,
    page_count,
    reply,
    rows_of,
    state,
    thread_of,
    user_id,
)
from models import announcements as ann
from models import people, when
from models.announcements import AnnouncementDraft, ScheduleKind
from models.errors import InvalidInput, NotAllowed
from models.people import Authority, Community, Unit

ASK_TEXT = "announce_text"
ASK_TIME = "announce_time"
TIMES = (time(8, 0), time(12, 0), time(18, 0), time(20, 0))  # when notices are usually read
OPTIONS = {"p": "pin", "s": "silent"}
KINDS = {"o": ScheduleKind.once, "w": ScheduleKind.weekly, "m": ScheduleKind.monthly}


async def _show(update: Update, ctx: LinliContext, view: View) -> None:
    await edit(update, ctx, view.name, markup=view.markup, **view.params)


async def _send(update: Update, ctx: LinliContext, view: View) -> None:
    await reply(update, ctx, view.name, markup=view.markup, **view.params)


def _l(ctx: LinliContext, key: str, **params: object) -> str:
    return label(ctx, "announce", key, **params)


def _cancel_row(ctx: LinliContext, draft_id: int) -> list[InlineKeyboardButton]:
    return [button(_l(ctx, "cancel"), f"anx:{draft_id}")]


def _draft_id(draft: AnnouncementDraft) -> int:
    assert draft.id is not None
    return draft.id


async def _lead(session: AsyncSession, ctx: LinliContext, update: Update) -> Authority:
    auth = await load_auth(session, ctx, update)
    if not auth.is_lead:
        raise NotAllowed("leads_only")
    return auth


async def _draft(
    session: AsyncSession, update: Update, draft_id: str, *, lock: bool = False
) -> AnnouncementDraft:
    return await ann.get_draft(
        session, draft_id=as_int(draft_id), person_id=user_id(update), lock=lock
    )


async def _aimed(
    session: AsyncSession, ctx: LinliContext, update: Update, draft_id: str
) -> tuple[AnnouncementDraft, Authority, Community]:
    """The tapper's own draft, once its unit is chosen, and a unit they still lead."""
    draft = await _draft(session, update, draft_id)
    auth = await _lead(session, ctx, update)
    await ann.draft_unit(session, auth=auth, draft=draft)
    return draft, auth, await ann.community_zone(session, draft)


# --- step 1: the audience ---------------------------------------------------------------------


async def _scope_view(
    session: AsyncSession, ctx: LinliContext, draft: AnnouncementDraft, unit: Unit
) -> View:
    d = _draft_id(draft)
    own = len(await ann.audience_links(session, unit, subtree_too=False))
    below = await people.units_with_children(session, [unit.id or 0])
    rows = [[button(_l(ctx, "only_here", unit=unit.name, n=own), f"ans:{d}:{unit.id}:0")]]
    every = None
    if below:
        every = len(await ann.audience_links(session, unit, subtree_too=True))
        rows.append(
            [button(_l(ctx, "whole_tree", unit=unit.name, n=every), f"ans:{d}:{unit.id}:1")]
        )
    rows.append([button(_l(ctx, "other_unit"), f"anp:{d}:0:0")])
    rows.append(_cancel_row(ctx, d))
    params = {"names": await people.lineage_names(session, unit), "own": own, "every": every}
    return View("announce/scope", params, keyboard(rows))


async def _tops(session: AsyncSession, auth: Authority) -> list[Unit]:
    if auth.superadmin:
        return list(await people.root_units(session))
    return auth.top_units()


def _pages(total: int) -> int:
    return max(1, -(-total // PAGE))


def _nav(ctx: LinliContext, page: int, total: int, data: str) -> list[InlineKeyboardButton]:
    return page_buttons(ctx, page, page_count(total), lambda p: f"{data}:{p}")


async def _unit_buttons(
    session: AsyncSession, ctx: LinliContext, units: list[Unit], d: int
) -> list[InlineKeyboardButton]:
    """A unit with units below opens; any other is chosen at once (one tap fewer)."""
    parents = await people.units_with_children(session, [u.id for u in units if u.id is not None])
    return [
        button(_l(ctx, "open", unit=u.name), f"anp:{d}:{u.id}:0")
        if u.id in parents
        else button(u.name, f"anu:{d}:{u.id}")
        for u in units
    ]


async def _picker_view(
    session: AsyncSession,
    ctx: LinliContext,
    auth: Authority,
    draft: AnnouncementDraft,
    unit_id: int,
    page: int,
) -> View:
    """The units this lead covers: their top units (unit_id 0), or one unit and those below."""
    d = _draft_id(draft)
    tops = await _tops(session, auth)
    if not unit_id:
        if not tops:
            return View("announce/no_units")
        if len(tops) > 1:
            page = min(max(page, 0), _pages(len(tops)) - 1)
            shown = tops[page * PAGE : (page + 1) * PAGE]
            rows = rows_of(await _unit_buttons(session, ctx, shown, d), 1)
            rows.append(_nav(ctx, page, len(tops), f"anp:{d}:0"))
            rows.append(_cancel_row(ctx, d))
            params = {"names": [], "page": page, "pages": _pages(len(tops))}
            return View("announce/pick_unit", params, keyboard(rows))
        unit_id = tops[0].id or 0
    unit = await people.get_unit(session, unit_id)
    people.require(auth, unit)
    below = list(await people.children(session, community_id=unit.community_id, parent_id=unit.id))
    page = min(max(page, 0), _pages(len(below)) - 1)
    shown = below[page * PAGE : (page + 1) * PAGE]
    rows = [[button(_l(ctx, "choose", unit=unit.name), f"anu:{d}:{unit.id}")]]
    rows += rows_of(await _unit_buttons(session, ctx, shown, d), 2)
    rows.append(_nav(ctx, page, len(below), f"anp:{d}:{unit.id}"))
    parent = await people.get_unit(session, unit.parent_id) if unit.parent_id else None
    if parent is not None and auth.covers(parent):
        rows.append([button(_l(ctx, "up"), f"anp:{d}:{parent.id}:0")])
    elif len(tops) > 1:
        rows.append([button(_l(ctx, "up"), f"anp:{d}:0:0")])
    rows.append(_cancel_row(ctx, d))
    params = {
        "names": await people.lineage_names(session, unit),
        "page": page,
        "pages": _pages(len(below)),
    }
    return View("announce/pick_unit", params, keyboard(rows))


async def cmd_announce(update: Update, ctx: LinliContext) -> None:
    chat, message = update.effective_chat, update.effective_message
    assert chat is not None
    async with ctx.svc.db.transaction() as session:
        auth = await _lead(session, ctx, update)
        start: Unit | None = None
        if not is_private(update):
            link = await people.link_for(session, chat_id=chat.id, thread_id=thread_of(message))
            if link is not None:
                linked = await people.get_unit(session, link.unit_id)
                start = linked if auth.covers(linked) else None
        draft = await ann.start_draft(
            session, person_id=auth.person_id, chat_id=chat.id, now=ctx.now()
        )
        if start is not None:
            view = await _scope_view(session, ctx, draft, start)
        else:
            view = await _picker_view(session, ctx, auth, draft, 0, 0)
    await _send(update, ctx, view)


async def btn_pick(update: Update, ctx: LinliContext) -> None:
    draft_id, unit_id, page = callback_args(update, "anp", 3)
    async with ctx.svc.db.transaction(write=False) as session:
        draft = await _draft(session, update, draft_id)
        auth = await _lead(session, ctx, update)
        view = await _picker_view(session, ctx, auth, draft, as_int(unit_id), as_int(page))
    await _show(update, ctx, view)


async def btn_unit(update: Update, ctx: LinliContext) -> None:
    draft_id, unit_id = callback_args(update, "anu", 2)
    async with ctx.svc.db.transaction(write=False) as session:
        draft = await _draft(session, update, draft_id)
        auth = await _lead(session, ctx, update)
        unit = await people.get_unit(session, as_int(unit_id))
        people.require(auth, unit)
        view = await _scope_view(session, ctx, draft, unit)
    await _show(update, ctx, view)


async def btn_scope(update: Update, ctx: LinliContext) -> None:
    draft_id, unit_id, whole = callback_args(update, "ans", 3)
    if whole not in ("0", "1"):
        raise InvalidInput("stale_button")
    async with ctx.svc.db.transaction() as session:
        draft = await _draft(session, update, draft_id)
        auth = await _lead(session, ctx, update)
        unit = await ann.set_audience(
            session, auth=auth, draft=draft, unit_id=as_int(unit_id), subtree_too=whole == "1"
        )
        chats = len(await ann.audience_links(session, unit, subtree_too=draft.subtree))
        names = await people.lineage_names(session, unit)
    await edit(update, ctx, "announce/audience", names=names, subtree=draft.subtree, chats=chats)
    await prompts.ask(
        update, ctx, ASK_TEXT, str(_draft_id(draft)), "announce/ask_text", problem=None
    )


# --- step 2: the text -------------------------------------------------------------------------


def _photo_of(update: Update) -> str | None:
    message = update.effective_message
    if message is None or not message.photo:
        return None
    return max(message.photo, key=lambda p: (p.width * p.height, p.file_size or 0)).file_id


@prompts.answers(ASK_TEXT)
async def on_text(update: Update, ctx: LinliContext, prompt: people.Prompt) -> None:
    message = update.effective_message
    assert message is not None
    photo = _photo_of(update)
    try:
        async with ctx.svc.db.transaction() as session:
            draft, _auth, community = await _aimed(session, ctx, update, prompt.payload)
            await ann.set_text(
                session,
                draft=draft,
                text=message.caption if photo else message.text,
                photo=photo,
            )
    except InvalidInput as exc:
        if exc.key not in ("announce_empty", "announce_too_long"):
            raise
        # A refused text may simply be sent again: ask once more, saying why.
        await prompts.ask(
            update,
            ctx,
            ASK_TEXT,
            prompt.payload,
            "announce/ask_text",
            problem=exc.key,
            **exc.params,
        )
        return
    await _send(update, ctx, _when_view(ctx, draft, community))


async def on_photo(update: Update, ctx: LinliContext) -> None:
    """A photo sent in private while we wait for the text: its caption is the text."""
    chat = update.effective_chat
    assert chat is not None
    uid = user_id(update)
    async with ctx.svc.db.transaction(write=False) as session:
        waiting = await ann.waiting_prompt(session, person_id=uid, chat_id=chat.id)
    if waiting != ASK_TEXT:
        return
    async with ctx.svc.db.transaction() as session:
        prompt = await people.take_prompt(session, person_id=uid, chat_id=chat.id, now=ctx.now())
    if prompt is not None and prompt.kind == ASK_TEXT:
        await on_text(update, ctx, prompt)


# --- step 3: when, and how often --------------------------------------------------------------


def _when_view(ctx: LinliContext, draft: AnnouncementDraft, community: Community) -> View:
    d = _draft_id(draft)
    zone = community.timezone
    today = when.local_date(ctx.now(), zone)
    later_today = [t for t in TIMES if when.local_moment(today, t, zone) > ctx.now()]
    rows = [[button(_l(ctx, "now"), f"anw:{d}:now")]]
    rows += rows_of(
        [button(_l(ctx, "today", at=f"{t:%H:%M}"), f"anw:{d}:0{t:%H%M}") for t in later_today], 2
    )
    rows += rows_of(
        [button(_l(ctx, "tomorrow", at=f"{t:%H:%M}"), f"anw:{d}:1{t:%H%M}") for t in TIMES], 2
    )
    rows.append([button(_l(ctx, "type_time"), f"ant:{d}")])
    rows.append(_cancel_row(ctx, d))
    params = {"text": ann.preview(draft.text, 200), "photo": draft.photo is not None}
    return View("announce/when", params, keyboard(rows))


def _repeat_view(ctx: LinliContext, draft: AnnouncementDraft, community: Community) -> View:
    d = _draft_id(draft)
    rows = [
        [button(_l(ctx, "once"), f"anr:{d}:o")],
        [button(_l(ctx, "weekly"), f"anr:{d}:w"), button(_l(ctx, "monthly"), f"anr:{d}:m")],
        [button(_l(ctx, "change_time"), f"anb:{d}")],
        _cancel_row(ctx, d),
    ]
    return View(
        "announce/repeat", {"start": draft.start, "zone": community.timezone}, keyboard(rows)
    )


def _days_view(ctx: LinliContext, draft: AnnouncementDraft, community: Community) -> View:
    d = _draft_id(draft)
    chosen = set(draft.days)
    if draft.kind == ScheduleKind.weekly:
        days = [
            button(
                _l(ctx, "weekday", day=i, on=i in chosen), f"and:{d}:{i}:{state(i not in chosen)}"
            )
            for i in range(7)
        ]
        rows = rows_of(days, 4)
    else:
        days = [
            button(
                _l(ctx, "monthday", day=i, on=i in chosen), f"and:{d}:{i}:{state(i not in chosen)}"
            )
            for i in range(1, 32)
        ]
        rows = rows_of(days, 7)
    rows.append([button(_l(ctx, "done"), f"anc:{d}")])
    rows.append([button(_l(ctx, "change_time"), f"anb:{d}")])
    rows.append(_cancel_row(ctx, d))
    rule = ann.draft_schedule(draft, community)
    params = {
        "kind": draft.kind,
        "days": sorted(chosen),
        "at": rule.at,
        "clamped": ann.clamped_days(rule),
    }
    return View("announce/days", params, keyboard(rows))


async def _confirm_view(
    session: AsyncSession, ctx: LinliContext, auth: Authority, draft: AnnouncementDraft
) -> View:
    d = _draft_id(draft)
    plan = await ann.plan(session, auth=auth, draft=draft, now=ctx.now())
    rows = [
        [
            button(_l(ctx, "pin", on=draft.pin), f"ano:{d}:p:{state(not draft.pin)}"),
            button(_l(ctx, "silent", on=draft.silent), f"ano:{d}:s:{state(not draft.silent)}"),
        ],
        [button(_l(ctx, "send_now" if draft.send_now else "schedule"), f"any:{d}")],
        [button(_l(ctx, "change_time"), f"anb:{d}")],
        _cancel_row(ctx, d),
    ]
    params = {
        "names": await people.lineage_names(session, plan.unit),
        "subtree": draft.subtree,
        "chats": plan.chats,
        "text": draft.text,
        "photo": draft.photo is not None,
        "now": draft.send_now,
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
    return View("announce/confirm", params, keyboard(rows))


async def btn_when(update: Update, ctx: LinliContext) -> None:
    draft_id, code = callback_args(update, "anw", 2)
    async with ctx.svc.db.transaction() as session:
        draft, auth, community = await _aimed(session, ctx, update, draft_id)
        if code == "now":
            await ann.set_when(session, draft=draft, start=None, now=ctx.now())
            view = await _confirm_view(session, ctx, auth, draft)
        else:
            await ann.set_when(
                session, draft=draft, start=_button_time(code, community, ctx.now()), now=ctx.now()
            )
            view = _repeat_view(ctx, draft, community)
    await _show(update, ctx, view)


def _button_time(code: str, community: Community, now: datetime) -> datetime:
    """`0HHMM` (today) or `1HHMM` (tomorrow) at one of the offered times."""
    if len(code) != 5 or code[0] not in "01" or not code.isdigit():
        raise InvalidInput("stale_button")
    try:
        at = time(int(code[1:3]), int(code[3:5]))
    except ValueError:
        raise InvalidInput("stale_button") from None
    day = when.local_date(now, community.timezone) + timedelta(days=int(code[0]))
    return when.local_moment(day, at, community.timezone)


async def btn_type_time(update: Update, ctx: LinliContext) -> None:
    (draft_id,) = callback_args(update, "ant", 1)
    async with ctx.svc.db.transaction(write=False) as session:
        draft, _auth, community = await _aimed(session, ctx, update, draft_id)
    await prompts.ask(
        update,
        ctx,
        ASK_TIME,
        str(_draft_id(draft)),
        "announce/ask_time",
        problem=None,
        example=_example(ctx, community),
    )
    await answer(update, ctx)


def _example(ctx: LinliContext, community: Community) -> str:
    tomorrow = when.local_date(ctx.now(), community.timezone) + timedelta(days=1)
    return f"{tomorrow:%Y-%m-%d} 18:30"


@prompts.answers(ASK_TIME)
async def on_time(update: Update, ctx: LinliContext, prompt: people.Prompt) -> None:
    message = update.effective_message
    assert message is not None
    async with ctx.svc.db.transaction(write=False) as session:
        draft, _auth, community = await _aimed(session, ctx, update, prompt.payload)
    try:
        start = ann.parse_when(message.text or "", now=ctx.now(), zone=community.timezone)
        async with ctx.svc.db.transaction() as session:
            draft = await ann.get_draft(
                session, draft_id=as_int(prompt.payload), person_id=user_id(update)
            )
            await ann.set_when(session, draft=draft, start=start, now=ctx.now())
    except InvalidInput as exc:
        if exc.key not in ("announce_bad_time", "announce_past"):
            raise
        await prompts.ask(
            update,
            ctx,
            ASK_TIME,
            prompt.payload,
            "announce/ask_time",
            problem=exc.key,
            example=_example(ctx, community),
        )
        return
    await _send(update, ctx, _repeat_view(ctx, draft, community))


async def btn_back_to_time(update: Update, ctx: LinliContext) -> None:
    (draft_id,) = callback_args(update, "anb", 1)
    async with ctx.svc.db.transaction(write=False) as session:
        draft, _auth, community = await _aimed(session, ctx, update, draft_id)
    await _show(update, ctx, _when_view(ctx, draft, community))


async def btn_repeat(update: Update, ctx: LinliContext) -> None:
    draft_id, code = callback_args(update, "anr", 2)
    if code not in KINDS:
        raise InvalidInput("stale_button")
    async with ctx.svc.db.transaction() as session:
        draft, auth, community = await _aimed(session, ctx, update, draft_id)
        await ann.set_recurrence(session, draft=draft, kind=KINDS[code], community=community)
        if draft.kind == ScheduleKind.once:
            view = await _confirm_view(session, ctx, auth, draft)
        else:
            view = _days_view(ctx, draft, community)
    await _show(update, ctx, view)


async def btn_day(update: Update, ctx: LinliContext) -> None:
    draft_id, day, wanted = callback_args(update, "and", 3)
    async with ctx.svc.db.transaction() as session:
        draft, _auth, community = await _aimed(session, ctx, update, draft_id)
        await ann.set_day(session, draft=draft, day=as_int(day), chosen=as_state(wanted))
        view = _days_view(ctx, draft, community)
    await _show(update, ctx, view)


# --- steps 4 and 5: options, confirmation ---------------------------------------------------


async def btn_confirm(update: Update, ctx: LinliContext) -> None:
    (draft_id,) = callback_args(update, "anc", 1)
    async with ctx.svc.db.transaction(write=False) as session:
        draft = await _draft(session, update, draft_id)
        auth = await _lead(session, ctx, update)
        view = await _confirm_view(session, ctx, auth, draft)
    await _show(update, ctx, view)


async def btn_option(update: Update, ctx: LinliContext) -> None:
    draft_id, code, wanted = callback_args(update, "ano", 3)
    if code not in OPTIONS:
        raise InvalidInput("stale_button")
    on = as_state(wanted)
    async with ctx.svc.db.transaction() as session:
        draft = await _draft(session, update, draft_id)
        auth = await _lead(session, ctx, update)
        await ann.set_option(session, draft=draft, option=OPTIONS[code], on=on)
        view = await _confirm_view(session, ctx, auth, draft)
    await _show(update, ctx, view)


async def btn_schedule(update: Update, ctx: LinliContext) -> None:
    (draft_id,) = callback_args(update, "any", 1)
    async with ctx.svc.db.transaction() as session:
        auth = await _lead(session, ctx, update)
        announcement, added = await ann.schedule_announcement(
            session, auth=auth, draft_id=as_int(draft_id), now=ctx.now()
        )
        unit = await people.get_unit(session, announcement.unit_id)
        names = await people.lineage_names(session, unit)
        community = await people.get_community(session, announcement.community_id)
    aid = announcement.id
    rows = [[button(_l(ctx, "report"), f"alr:{aid}")]]
    if announcement.next_occurrence is not None:
        rows.append([button(_l(ctx, "cancel_this"), f"alc:{aid}")])
    await edit(
        update,
        ctx,
        "announce/scheduled",
        markup=keyboard(rows),
        a=announcement,
        names=names,
        chats=added,
        zone=community.timezone,
    )


async def btn_drop(update: Update, ctx: LinliContext) -> None:
    (draft_id,) = callback_args(update, "anx", 1)
    async with ctx.svc.db.transaction() as session:
        dropped = await ann.drop_draft(
            session, draft_id=as_int(draft_id), person_id=user_id(update)
        )
    if not dropped:
        await answer(update, ctx, "announce/draft_closed")
        return
    await edit(update, ctx, "announce/dropped")


# --- /announcements: what is scheduled, cancelling, delivery reports ------------------------


async def _list_view(session: AsyncSession, ctx: LinliContext, auth: Authority, page: int) -> View:
    found, total = await ann.announcements_for(
        session, auth=auth, now=ctx.now(), offset=page * PAGE, limit=PAGE
    )
    if not found and page:
        page = _pages(total) - 1
        found, total = await ann.announcements_for(
            session, auth=auth, now=ctx.now(), offset=page * PAGE, limit=PAGE
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
        row = [button(_l(ctx, "report_one", id=a.id), f"alr:{a.id}")]
        if upcoming is not None:
            row.insert(0, button(_l(ctx, "cancel_one", id=a.id), f"alc:{a.id}"))
        rows.append(row)
    rows.append(_nav(ctx, page, total, "al"))
    params = {"entries": entries, "page": page, "pages": _pages(total)}
    return View("announce/list", params, keyboard(rows) if found else None)


async def cmd_announcements(update: Update, ctx: LinliContext) -> None:
    async with ctx.svc.db.transaction(write=False) as session:
        auth = await _lead(session, ctx, update)
        view = await _list_view(session, ctx, auth, 0)
    await _send(update, ctx, view)


async def btn_list(update: Update, ctx: LinliContext) -> None:
    (page,) = callback_args(update, "al", 1)
    async with ctx.svc.db.transaction(write=False) as session:
        auth = await _lead(session, ctx, update)
        view = await _list_view(session, ctx, auth, max(0, as_int(page)))
    await _show(update, ctx, view)


async def btn_cancel_ask(update: Update, ctx: LinliContext) -> None:
    (aid,) = callback_args(update, "alc", 1)
    async with ctx.svc.db.transaction(write=False) as session:
        auth = await _lead(session, ctx, update)
        a, unit, community = await ann.get_announcement(
            session, auth=auth, announcement_id=as_int(aid)
        )
    if a.status == ann.AnnouncementStatus.cancelled:
        await answer(update, ctx, "errors/announce_already_cancelled", alert=True)
        return
    markup = keyboard(
        [[button(_l(ctx, "cancel_yes"), f"aly:{a.id}"), button(_l(ctx, "cancel_no"), "al:0")]]
    )
    await edit(
        update,
        ctx,
        "announce/cancel_confirm",
        markup=markup,
        a=a,
        unit=unit.name,
        zone=community.timezone,
        text=ann.preview(a.text),
    )


async def btn_cancel(update: Update, ctx: LinliContext) -> None:
    (aid,) = callback_args(update, "aly", 1)
    async with ctx.svc.db.transaction() as session:
        auth = await _lead(session, ctx, update)
        a, withdrawn = await ann.cancel(
            session, auth=auth, announcement_id=as_int(aid), now=ctx.now()
        )
    markup = keyboard([[button(_l(ctx, "all"), "al:0")]])
    await edit(
        update,
        ctx,
        "announce/cancelled",
        markup=markup,
        a=a,
        text=ann.preview(a.text),
        withdrawn=withdrawn,
    )


async def btn_report(update: Update, ctx: LinliContext) -> None:
    (aid,) = callback_args(update, "alr", 1)
    async with ctx.svc.db.transaction(write=False) as session:
        auth = await _lead(session, ctx, update)
        a, unit, community, report = await ann.delivery_report(
            session, auth=auth, announcement_id=as_int(aid)
        )
    markup = keyboard([[button(_l(ctx, "refresh"), f"alr:{a.id}"), button(_l(ctx, "all"), "al:0")]])
    await edit(
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
    app.add_handler(MessageHandler(filters.PHOTO & filters.ChatType.PRIVATE, on_photo))
    for prefix, handler in (
        ("anp", btn_pick),
        ("anu", btn_unit),
        ("ans", btn_scope),
        ("anw", btn_when),
        ("ant", btn_type_time),
        ("anb", btn_back_to_time),
        ("anr", btn_repeat),
        ("and", btn_day),
        ("anc", btn_confirm),
        ("ano", btn_option),
        ("any", btn_schedule),
        ("anx", btn_drop),
        ("al", btn_list),
        ("alc", btn_cancel_ask),
        ("aly", btn_cancel),
        ("alr", btn_report),
    ):
        app.add_handler(CallbackQueryHandler(handler, pattern=rf"^{prefix}:"))
