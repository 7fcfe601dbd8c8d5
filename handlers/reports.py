"""Problem reports: filing (/report, a photo captioned /report), the group card with +1, the
lead's /reports sheet, the private "is it fixed?" card, /myreports and /stats.

Every button is re-checked on the server: the report is read again, the tapper's authority
checked through `people.authority`, and a lead's action carries the revision they saw, so a
forged, stale or doubled tap changes nothing it should not.
"""

from __future__ import annotations

import asyncio
import csv
import io
import re
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlmodel.ext.asyncio.session import AsyncSession
from telegram import InlineKeyboardButton, Message, Update
from telegram.ext import CommandHandler, MessageHandler, filters

from bot import cards, charts, delivery
from bot.context import LinliApp, LinliContext
from bot.ordering import hand_over
from handlers import common, report_flow
from handlers.prompts import answers, ask
from models import digest, people, reports, standings, tasks
from models.errors import Conflict, InvalidInput, NotAllowed
from models.people import Authority, Can, Community, Unit
from models.reports import Action, Report, Status

EXPORT_FILE = "linli-reports-{start}-{end}.csv"
VOLUNTEERS_SINCE = timedelta(days=180)  # the assign screen offers volunteers of the last months
ACTION_CODES = {
    "ack": Action.acknowledge,
    "ip": Action.in_progress,
    "res": Action.resolve,
    "dec": Action.decline,
}
# Photos answering a prompt are looked at in a handler group of their own, so a feature's
# photo handler in group 0 (a flow's photo step) and this one both see every photo.
PHOTO_GROUP = 1
_COMMAND = re.compile(r"^/report(?:@\w+)?\s*", re.IGNORECASE)


def _parts(update: Update, prefix: str, *counts: int, private: bool = True) -> list[str]:
    """The fields of a button whose data has several shapes (`prefix:a`, `prefix:a:b`, …)."""
    if private and not common.is_private(update):
        raise InvalidInput("private_only")
    query = update.callback_query
    parts = (query.data or "").split(":") if query else []
    if not parts or parts[0] != prefix or len(parts) - 1 not in counts:
        raise InvalidInput("stale_button")
    return parts[1:]


def _l(ctx: LinliContext, key: str, **params: object) -> str:
    return common.label(ctx, "reports", key, **params)


async def _category_names(
    session: AsyncSession, community_id: int, now: datetime
) -> dict[str, reports.ReportCategory]:
    found = await reports.categories(session, community_id=community_id, now=now, active_only=False)
    return {c.code: c for c in found}


def _age_hours(report: Report, now: datetime) -> int:
    return max(0, int((now - report.created_at).total_seconds() // 3600))


# --- cards --------------------------------------------------------------------------------


async def report_card(req: cards.CardRequest) -> cards.Card | None:
    """The card in the group the report was filed in: never a flat, never a hidden name."""
    report = await req.session.get(Report, req.subject_id)
    if report is None or report.visibility != reports.Visibility.group:
        return None
    unit = await people.get_unit(req.session, report.unit_id)
    cats = await _category_names(req.session, report.community_id, req.now)
    reporter = None
    if report.show_name:
        person = await req.session.get(people.Person, report.reporter_id)
        reporter = person.name if person else None
    params = {
        "number": report.label,
        "category": cats[report.category].name(req.lang) if report.category in cats else "",
        "unit": unit.name,
        "place": reports.shown_place(report),
        "status": report.status,
        "supporters": report.supporters,
        "hours": _age_hours(report, req.now),
        "overdue": report.overdue,
        "reporter": reporter,
        "text": report.text[:200],
        "photos": len(report.photos),
    }
    markup = None
    if report.status in reports.OPEN or report.status == Status.resolved:
        markup = common.keyboard(
            [
                [
                    common.button(
                        req.label("reports", "plus_one", n=report.supporters), f"rp:{report.id}"
                    )
                ]
            ]
        )
    return cards.Card("reports/card", params, markup)


async def lead_card(req: cards.CardRequest) -> cards.Card | None:
    report = await req.session.get(Report, req.subject_id)
    if report is None:
        return None
    unit = await people.get_unit(req.session, report.unit_id)
    cats = await _category_names(req.session, report.community_id, req.now)
    params = {
        "number": report.label,
        "category": cats[report.category].name(req.lang) if report.category in cats else "",
        "unit": unit.name,
        "status": report.status,
        "overdue": report.overdue,
        "supporters": report.supporters,
        "hours": _age_hours(report, req.now),
    }
    markup = common.keyboard(
        [[common.button(req.label("reports", "open_sheet"), f"rs:{report.id}")]]
    )
    return cards.Card("reports/lead_card", params, markup)


async def ask_card(req: cards.CardRequest) -> cards.Card | None:
    """Is it fixed? Then 1–5 stars. Shows this person's own answer as it stands."""
    report = await req.session.get(Report, req.subject_id)
    if report is None:
        return None
    cats = await _category_names(req.session, report.community_id, req.now)
    mine = await reports.my_verdict(req.session, report=report, person_id=req.chat_id)
    params: dict[str, Any] = {
        "number": report.label,
        "category": cats[report.category].name(req.lang) if report.category in cats else "",
        "status": report.status,
        "fixed": None if mine is None else mine.fixed,
        "rating": None if mine is None else mine.rating,
    }
    rows: list[list[InlineKeyboardButton]] = []
    if report.status == Status.resolved and (mine is None or mine.round == report.round):
        rows.append(
            [
                common.button(req.label("reports", "fixed"), f"rv:{report.id}:{report.round}:1"),
                common.button(
                    req.label("reports", "not_fixed"), f"rv:{report.id}:{report.round}:0"
                ),
            ]
        )
    if mine is not None:
        rows.append([common.button(f"{n}⭐", f"rr:{report.id}:{n}") for n in range(1, 6)])
    return cards.Card("reports/ask_card", params, common.keyboard(rows) if rows else None)


# --- filing: /report <text> or a photo captioned /report ----------------------------------


def _description(message: Message) -> str:
    raw = message.caption if message.photo else message.text
    return _COMMAND.sub("", raw or "", count=1).strip()


def _photo(message: Message) -> list[str]:
    return [message.photo[-1].file_id] if message.photo else []


async def _unit_for(session: AsyncSession, update: Update) -> Unit:
    """The chat's unit in a group; the person's home privately."""
    chat = update.effective_chat
    assert chat is not None
    if not common.is_private(update):
        link = await people.link_for(
            session, chat_id=chat.id, thread_id=common.thread_of(update.effective_message)
        )
        if link is None:
            raise InvalidInput("chat_not_linked")
        return await people.get_unit(session, link.unit_id)
    return await report_flow.home_unit(session, common.user_id(update))


async def _categories_view(
    session: AsyncSession, ctx: LinliContext, unit: Unit, text: str, photos: int
) -> common.View:
    found = await reports.categories(session, community_id=unit.community_id, now=ctx.now())
    buttons = [common.button(c.name(ctx.lang), f"rn:{c.code}") for c in found]
    rows = [buttons[i : i + 3] for i in range(0, len(buttons), 3)]
    return common.View(
        "reports/pick_category",
        {"unit": unit.name, "text": text[:200], "photos": photos},
        common.keyboard(rows),
    )


def _guess(text: str, found: list[reports.ReportCategory]) -> str | None:
    """A category named in the description ("电梯又坏了" → lift), if exactly one is."""
    lowered = text.lower()
    hits = [
        c.code
        for c in found
        if c.code != "other" and (c.name_zh in text or c.name_en.lower() in lowered)
    ]
    return hits[0] if len(hits) == 1 else None


async def cmd_report(update: Update, ctx: LinliContext) -> None:
    """/report <what is wrong>, or a photo with that caption: one step, the category asked."""
    message = update.effective_message
    assert message is not None
    if message.video or message.document or message.animation:
        raise InvalidInput("report_photo_only")
    text, photos = _description(message), _photo(message)
    if not text and not photos:
        await report_flow.start(update, ctx)  # step by step, by buttons
        return
    reports.clean_text(text)
    async with ctx.svc.db.transaction(write=False) as session:
        unit = await _unit_for(session, update)
        found = await reports.categories(session, community_id=unit.community_id, now=ctx.now())
        guessed = _guess(text, found)
        view = await _categories_view(session, ctx, unit, text, len(photos))
    if guessed is not None:
        await _file_or_suggest(update, ctx, message, guessed, new=False)
        return
    # Quoted even privately: the buttons' answer reads the report from the quoted message.
    await message.reply_text(
        common.render(ctx, view.name, **view.params), reply_markup=view.markup, do_quote=True
    )


def _origin(message: Message) -> Message:
    """The person's /report message a category button answers (the draft is that message)."""
    origin = message.reply_to_message
    if origin is None:
        raise InvalidInput("stale_button")
    return origin


@common.on_button("rn")
async def btn_category(update: Update, ctx: LinliContext) -> None:
    """rn:<category> (or rn:<category>:new after "No, it's new")."""
    query = update.callback_query
    if query is None or not isinstance(query.message, Message):
        raise InvalidInput("stale_button")
    parts = (query.data or "").split(":")
    if len(parts) not in (2, 3) or parts[0] != "rn" or (len(parts) == 3 and parts[2] != "new"):
        raise InvalidInput("stale_button")
    origin = _origin(query.message)
    if origin.from_user is None or origin.from_user.id != common.user_id(update):
        raise NotAllowed("not_your_picker")
    await _file_or_suggest(update, ctx, origin, parts[1], new=len(parts) == 3)


async def _file_or_suggest(
    update: Update, ctx: LinliContext, origin: Message, code: str, *, new: bool
) -> None:
    text, photos = _description(origin), _photo(origin)
    private = origin.chat.type == "private"
    async with ctx.svc.db.transaction() as session:
        unit = await _unit_for(session, update)
        await reports.get_category(
            session, community_id=unit.community_id, code=code, now=ctx.now()
        )
        same = (
            []
            if new
            else await reports.duplicates(session, unit_id=unit.id or 0, category=code, place=None)
        )
        same = [r for r in same if r.visibility == reports.Visibility.group or private]
        if same:
            rows = [
                [common.button(_l(ctx, "same_plus_one", number=r.label), f"rp:{r.id}")]
                for r in same
            ]
            rows.append([common.button(_l(ctx, "its_new"), f"rn:{code}:new")])
            view = common.View(
                "reports/same_problem",
                {"reports": [{"number": r.label, "supporters": r.supporters} for r in same]},
                common.keyboard(rows),
            )
        else:
            report, created = await reports.file(
                session,
                reporter_id=common.user_id(update),
                unit_id=unit.id or 0,
                category=code,
                text=text,
                photos=photos,
                now=ctx.now(),
                chat_id=None if private else origin.chat.id,
                thread_id=common.thread_of(origin),
                origin_key=f"msg:{origin.chat.id}:{origin.message_id}",
            )
            markup = None
            if not private:
                markup = common.keyboard(
                    [[common.button(_l(ctx, "show_my_name"), f"rk:{report.id}:1")]]
                )
            view = common.View(
                "reports/filed",
                {"number": report.label, "private": private, "again": not created},
                markup,
            )
    if update.callback_query is not None:
        await common.show(update, ctx, view)
    else:
        await common.reply(update, ctx, view.name, markup=view.markup, **view.params)


@common.on_button("rp")
async def btn_support(update: Update, ctx: LinliContext) -> None:
    """rp:<report>: +1 (sets "I support this"; a second tap adds nothing)."""
    (report_id,) = common.callback_args(update, "rp", 1)
    async with ctx.svc.db.transaction() as session:
        report = await reports.get(session, common.as_int(report_id))
        auth = await common.load_auth(session, ctx, update)
        unit = await people.get_unit(session, report.unit_id)
        if report.visibility != reports.Visibility.group and not reports.may_see(
            auth, report, unit, person_id=common.user_id(update)
        ):
            raise InvalidInput("stale_button")
        report, added = await reports.support(
            session, report_id=report.id or 0, person_id=common.user_id(update), now=ctx.now()
        )
    hand_over()  # the next +1 in the group need not wait for this one's answer
    await common.answer(
        update,
        ctx,
        "reports/supported" if added else "reports/already_supported",
        number=report.label,
    )


@common.on_button("rh")
async def btn_how(update: Update, ctx: LinliContext) -> None:
    """rh:go: the Report a problem button of /start and /help."""
    (go,) = common.callback_args(update, "rh", 1)
    if go != "go":
        raise InvalidInput("stale_button")
    await report_flow.start(update, ctx)
    await common.answer(update, ctx)


@common.on_button("rk")
async def btn_show_name(update: Update, ctx: LinliContext) -> None:
    """rk:<report>:<1 show|0 hide>: the reporter's name on the group card (sets the state)."""
    report_id, shown = common.callback_args(update, "rk", 2)
    on = common.as_state(shown)
    async with ctx.svc.db.transaction() as session:
        report = await reports.show_name(
            session, report_id=common.as_int(report_id), person_id=common.user_id(update), shown=on,
            now=ctx.now(),
        )  # fmt: skip
    markup = common.keyboard(
        [
            [
                common.button(
                    _l(ctx, "hide_my_name" if on else "show_my_name"),
                    f"rk:{report.id}:{common.state(not on)}",
                )
            ]
        ]
    )
    query = update.callback_query
    assert query is not None
    await query.edit_message_reply_markup(markup)
    await common.answer(update, ctx, "reports/name_shown" if on else "reports/name_hidden")


# --- leads: /reports, the sheet and its buttons ----------------------------------------------


async def _lead_scope(session: AsyncSession, auth: Authority) -> tuple[int, list[int] | None]:
    """The community and the units whose reports this lead sees (None: all of it)."""
    tops = auth.top_units()
    if not tops:
        if auth.superadmin:
            found = await people.communities(session)
            if found:
                return found[0].id or 0, None
        raise NotAllowed("leads_only")
    community_id = tops[0].community_id
    ids: list[int] = []
    for top in tops:
        if top.community_id == community_id:
            ids += [u.id for u in await people.subtree(session, top) if u.id is not None]
    return community_id, ids


async def cmd_reports(update: Update, ctx: LinliContext) -> None:
    async with ctx.svc.db.transaction(write=False) as session:
        auth = await common.load_auth(session, ctx, update)
        await _lead_scope(session, auth)
    if not common.is_private(update):
        await common.offer_private(update, ctx, "reports", feature="reports")
        return
    await _show_list(update, ctx, 0, "", "")


async def _show_list(update: Update, ctx: LinliContext, page: int, status: str, code: str) -> None:
    async with ctx.svc.db.transaction(write=False) as session:
        auth = await common.load_auth(session, ctx, update)
        community_id, units = await _lead_scope(session, auth)
        found = await reports.open_list(
            session,
            community_id=community_id,
            unit_ids=units,
            offset=page * common.PAGE,
            limit=common.PAGE,
            status=status or None,
            category=code or None,
        )
        cats = await _category_names(session, community_id, ctx.now())
        names = await people.units_by_id(session, [r.unit_id for r in found.reports])
    rows = [
        [
            common.button(
                _l(
                    ctx,
                    "list_line",
                    number=r.label,
                    category=cats[r.category].name(ctx.lang) if r.category in cats else "",
                    unit=names[r.unit_id].name if r.unit_id in names else "",
                    overdue=r.overdue,
                    supporters=r.supporters,
                ),
                f"ro:{r.id}",
            )
        ]
        for r in found.reports
    ]
    pages = common.page_count(found.total)
    rows.append(common.page_buttons(ctx, page, pages, lambda n: f"rl:{n}:{status}:{code}"))
    rows.append(
        [
            common.button(_l(ctx, "filter_open", on=not status), f"rl:0::{code}"),
            common.button(
                _l(ctx, "filter_resolved", on=status == "resolved"), f"rl:0:resolved:{code}"
            ),
        ]
    )
    cat_buttons = [
        common.button(("● " if c == code else "") + cats[c].name(ctx.lang), f"rl:0:{status}:{c}")
        for c in list(cats)[:9]
    ]
    rows += [cat_buttons[i : i + 3] for i in range(0, len(cat_buttons), 3)]
    if code:
        rows.append([common.button(_l(ctx, "all_categories"), f"rl:0:{status}:")])
    rows.append([common.button(_l(ctx, "reply_templates"), f"rm:{community_id}")])
    if auth.may(Can.admin_community, community_id=community_id):
        rows.append([common.button(_l(ctx, "escalation_times"), f"rc:{community_id}")])
    view = common.View(
        "reports/list",
        {"total": found.total, "page": page + 1, "pages": pages, "status": status},
        common.keyboard(rows),
    )
    await common.show(update, ctx, view)


@common.on_button("rl")
async def btn_list(update: Update, ctx: LinliContext) -> None:
    """rl:<page>:<status or empty>:<category or empty>"""
    page, status, code = common.callback_args(update, "rl", 3)
    if status and status not in Status.__members__:
        raise InvalidInput("stale_button")
    if code and not re.fullmatch(r"\w{1,20}", code):
        raise InvalidInput("stale_button")
    await _show_list(update, ctx, common.as_int(page), status, code)


async def _sheet(
    session: AsyncSession, ctx: LinliContext, auth: Authority, report_id: int
) -> common.View:
    report = await reports.get(session, report_id)
    unit = await reports.require_lead(session, auth, report)
    cats = await _category_names(session, report.community_id, ctx.now())
    history = await reports.events(session, report_id)
    who = await reports.names_of(
        session, [report.reporter_id, report.assignee_id or 0, *[e.by or 0 for e in history]]
    )
    params = {
        "number": report.label,
        "status": report.status,
        "category": cats[report.category].name(ctx.lang) if report.category in cats else "",
        "where": " › ".join(await people.lineage_names(session, unit)),
        "place": report.place,
        "floor": report.floor,
        "venue": report.venue,
        "location": (report.latitude, report.longitude) if report.latitude is not None else None,
        "text": report.text,
        "photos": len(report.photos),
        "reporter": who.get(report.reporter_id, ""),
        "supporters": report.supporters,
        "assignee": who.get(report.assignee_id or 0),
        "hours": _age_hours(report, ctx.now()),
        "overdue": report.overdue,
        "private": report.visibility == reports.Visibility.private,
        "history": [
            {
                "at": e.at,
                "kind": e.kind,
                "by": who.get(e.by or 0, ""),
                "to": e.to_status,
                "note": e.note,
            }
            for e in reversed(history)  # newest first: what fits one message
        ],
        "zone": (await people.get_community(session, report.community_id)).timezone,
    }
    rid, rev = report.id, report.rev
    rows: list[list[InlineKeyboardButton]] = []
    if report.status in reports.ACTIONS[Action.acknowledge]:
        rows.append([common.button(_l(ctx, "acknowledge"), f"ra:{rid}:{rev}:ack")])
    if report.status in reports.ACTIONS[Action.in_progress]:
        rows.append([common.button(_l(ctx, "in_progress"), f"ra:{rid}:{rev}:ip")])
    if report.status in reports.OPEN:
        rows.append(
            [
                common.button(_l(ctx, "resolve"), f"ra:{rid}:{rev}:res"),
                common.button(_l(ctx, "resolve_note"), f"rw:{rid}:{rev}:res"),
            ]
        )
        rows.append(
            [
                common.button(_l(ctx, "decline"), f"rw:{rid}:{rev}:dec"),
                common.button(_l(ctx, "duplicate"), f"rw:{rid}:{rev}:dup"),
            ]
        )
        rows.append([common.button(_l(ctx, "assign"), f"rg:{rid}:{rev}")])
        templates = await reports.reply_templates(session, community_id=report.community_id)
        rows += [[common.button(_l(ctx, "use_template", title=t.title), f"rt:{rid}:{rev}:{t.id}")]
                 for t in templates[:5]]  # fmt: skip
    redact = []
    if report.text and report.text != reports.REDACTED:
        redact.append(common.button(_l(ctx, "redact_text"), f"rx:{rid}:text"))
    redact += [
        common.button(_l(ctx, "redact_photo", n=i + 1), f"rx:{rid}:photo:{i}")
        for i in range(len(report.photos))
    ]
    if redact:
        rows.append(redact)
    if await reports.photos_of(session, report):
        rows.append([common.button(_l(ctx, "show_photos"), f"rf:{rid}")])
    if report.status not in reports.FINISHED and await reports.on_agenda(session, rid or 0) is None:
        rows.append([common.button(_l(ctx, "put_on_agenda"), f"rj:{rid}")])
    rows.append([common.button(_l(ctx, "back_to_list"), "rl:0::")])
    return common.View("reports/sheet", params, common.keyboard(rows))


@common.on_button("ro")
@common.on_button("rs")
async def btn_sheet(update: Update, ctx: LinliContext) -> None:
    """rs:<report> (from a notice card: a new message, the card stays live) or ro:<report>
    (from the list or a step of the sheet: in place). Privately only."""
    query = update.callback_query
    assert query is not None
    prefix = (query.data or "")[:2]
    (report_id,) = common.callback_args(update, prefix, 1)
    if not common.is_private(update):
        raise InvalidInput("private_only")
    async with ctx.svc.db.transaction(write=False) as session:
        auth = await common.load_auth(session, ctx, update)
        view = await _sheet(session, ctx, auth, common.as_int(report_id))
    if prefix == "ro":
        await common.show(update, ctx, view)
        return
    chat = update.effective_chat
    assert chat is not None
    await ctx.bot.send_message(
        chat.id, common.render(ctx, view.name, **view.params), reply_markup=view.markup
    )
    await common.answer(update, ctx)


async def _act(
    update: Update,
    ctx: LinliContext,
    report_id: int,
    rev: int,
    action: Action,
    **options: Any,
) -> None:
    """A lead's action from the sheet; when another lead got there first, the sheet shows the
    report as it is now and says so."""
    try:
        async with ctx.svc.db.transaction() as session:
            auth = await common.load_auth(session, ctx, update)
            changed = await reports.act(
                session, auth=auth, report_id=report_id, action=action, rev=rev, now=ctx.now(),
                **options,
            )  # fmt: skip
    except Conflict as exc:
        await _refresh_after_conflict(update, ctx, report_id, exc)
        return
    async with ctx.svc.db.transaction(write=False) as session:
        view = await _sheet(session, ctx, auth, report_id)
    await common.show(update, ctx, view, note="reports/done", number=changed.report.label,
                      status=changed.report.status, credited=changed.credited)  # fmt: skip


@common.on_button("ra")
async def btn_action(update: Update, ctx: LinliContext) -> None:
    """ra:<report>:<rev>:<ack|ip|res|dec>"""
    if not common.is_private(update):
        raise InvalidInput("private_only")
    report_id, rev, code = common.callback_args(update, "ra", 3)
    if code not in ACTION_CODES or code == "dec":
        raise InvalidInput("stale_button")
    await _act(update, ctx, common.as_int(report_id), common.as_int(rev), ACTION_CODES[code])


async def _refresh_after_conflict(
    update: Update, ctx: LinliContext, report_id: int, exc: Conflict
) -> None:
    """The other lead won: show the sheet as it is now, and say what happened."""
    async with ctx.svc.db.transaction(write=False) as session:
        auth = await common.load_auth(session, ctx, update)
        view = await _sheet(session, ctx, auth, report_id)
    if update.callback_query is not None:
        await common.replace(update, ctx, view)
    await common.answer(update, ctx, f"errors/{exc.key}", alert=True, **exc.params)
    if update.callback_query is None:
        await common.reply(update, ctx, f"errors/{exc.key}", **exc.params)


WRITES = {"res": "report_resolve", "dec": "report_decline", "dup": "report_duplicate"}


@common.on_button("rw")
async def btn_write(update: Update, ctx: LinliContext) -> None:
    """rw:<report>:<rev>:<res|dec|dup>: the lead types a note, a reason or R-n next."""
    if not common.is_private(update):
        raise InvalidInput("private_only")
    report_id, rev, code = common.callback_args(update, "rw", 3)
    if code not in WRITES:
        raise InvalidInput("stale_button")
    async with ctx.svc.db.transaction(write=False) as session:
        auth = await common.load_auth(session, ctx, update)
        report = await reports.get(session, common.as_int(report_id))
        await reports.require_lead(session, auth, report)
    await ask(update, ctx, WRITES[code], f"{report.id}:{common.as_int(rev)}", f"reports/ask_{code}",
              number=report.label)  # fmt: skip
    await common.answer(update, ctx)


def _payload(prompt: people.Prompt) -> tuple[int, int]:
    report_id, rev = prompt.payload.split(":")
    return common.as_int(report_id), common.as_int(rev)


def _typed(update: Update) -> str:
    """The text of an answer: typed, or the caption of a photo sent as the answer."""
    message = update.effective_message
    return (message.text or message.caption or "") if message else ""


def _answer_photo(update: Update) -> str | None:
    message = update.effective_message
    return _photo(message)[0] if message is not None and message.photo else None


@answers("report_resolve")
async def on_resolve_note(update: Update, ctx: LinliContext, prompt: people.Prompt) -> None:
    report_id, rev = _payload(prompt)
    await _act(update, ctx, report_id, rev, Action.resolve, note=_typed(update),
               photo=_answer_photo(update))  # fmt: skip


@answers("report_decline")
async def on_decline_reason(update: Update, ctx: LinliContext, prompt: people.Prompt) -> None:
    report_id, rev = _payload(prompt)
    await _act(update, ctx, report_id, rev, Action.decline, note=_typed(update))


@answers("report_duplicate")
async def on_duplicate_of(update: Update, ctx: LinliContext, prompt: people.Prompt) -> None:
    report_id, rev = _payload(prompt)
    number = reports.parse_number(_typed(update))
    await _act(update, ctx, report_id, rev, Action.duplicate, target_number=number)


# Prompts a photo answers too (its caption is the text). Other prompts take text only.
PHOTO_ANSWERS = {"report_resolve": on_resolve_note}


async def on_photo_answer(update: Update, ctx: LinliContext) -> None:
    """A photo sent privately while the bot waits for a resolution note or a "not fixed" photo
    (handler group PHOTO_GROUP, beside the photo handlers of group 0: a flow's photo step is
    flowui's, in group 0)."""
    chat = update.effective_chat
    if chat is None or not common.is_private(update) or _answer_photo(update) is None:
        return
    async with ctx.svc.db.transaction(write=False) as session:
        waiting = await people.waiting_prompt(
            session, person_id=common.user_id(update), chat_id=chat.id
        )
    if waiting is None or waiting.kind not in PHOTO_ANSWERS:
        return
    async with ctx.svc.db.transaction() as session:
        prompt = await people.take_prompt(
            session, person_id=common.user_id(update), chat_id=chat.id, now=ctx.now()
        )
    if prompt is not None and prompt.kind in PHOTO_ANSWERS:
        await PHOTO_ANSWERS[prompt.kind](update, ctx, prompt)


@common.on_button("rt")
async def btn_template(update: Update, ctx: LinliContext) -> None:
    """rt:<report>:<rev>:<template>: resolve with a saved reply."""
    if not common.is_private(update):
        raise InvalidInput("private_only")
    report_id, rev, template_id = common.callback_args(update, "rt", 3)
    async with ctx.svc.db.transaction(write=False) as session:
        auth = await common.load_auth(session, ctx, update)
        found = await reports.reply_template(
            session, auth=auth, template_id=common.as_int(template_id)
        )
    await _act(
        update, ctx, common.as_int(report_id), common.as_int(rev), Action.resolve, note=found.text
    )


@common.on_button("rg")
async def btn_assign(update: Update, ctx: LinliContext) -> None:
    """rg:<report>:<rev>: pick one of the leads covering the unit, or a volunteer who attended a
    task here lately (rg:<report>:<rev>:<person>); the domain checks the person either way."""
    parts = _parts(update, "rg", 2, 3)
    report_id, rev = common.as_int(parts[0]), common.as_int(parts[1])
    if len(parts) == 3:
        assignee = common.as_int(parts[2], telegram_id=True)
        await _act(update, ctx, report_id, rev, Action.assign, assignee_id=assignee)
        return
    async with ctx.svc.db.transaction(write=False) as session:
        auth = await common.load_auth(session, ctx, update)
        report = await reports.get(session, report_id)
        unit = await reports.require_lead(session, auth, report)
        leads = list(await people.leads_covering(session, unit))[: common.PAGE]
        helpers = await tasks.volunteers(
            session, unit=unit, since=ctx.now() - VOLUNTEERS_SINCE, limit=common.PAGE
        )
    rows = [[common.button(p.name, f"rg:{report_id}:{rev}:{p.id}")] for p in leads]
    rows += [[common.button(_l(ctx, "volunteer", name=p.name), f"rg:{report_id}:{rev}:{p.id}")]
             for p in helpers if p.id not in {lead.id for lead in leads}]  # fmt: skip
    rows.append([common.button(_l(ctx, "back"), f"ro:{report_id}")])
    await common.show(
        update,
        ctx,
        common.View("reports/pick_assignee", {"number": report.label}, common.keyboard(rows)),
    )


@common.on_button("rj")
async def btn_agenda(update: Update, ctx: LinliContext) -> None:
    """rj:<report>: put it on the unit's agenda (once; a second tap is told it is there)."""
    if not common.is_private(update):
        raise InvalidInput("private_only")
    (report_id,) = common.callback_args(update, "rj", 1)
    async with ctx.svc.db.transaction() as session:
        auth = await common.load_auth(session, ctx, update)
        proposal = await reports.put_on_agenda(
            session, auth=auth, report_id=common.as_int(report_id), now=ctx.now()
        )
        view = await _sheet(session, ctx, auth, common.as_int(report_id))
    await common.show(update, ctx, view, note="reports/on_agenda", title=proposal.title)


@common.on_button("rx")
async def btn_redact(update: Update, ctx: LinliContext) -> None:
    """rx:<report>:text | rx:<report>:photo:<n>"""
    parts = _parts(update, "rx", 2, 3)
    what = parts[1] if len(parts) == 2 else f"{parts[1]}:{common.as_int(parts[2])}"
    report_id = common.as_int(parts[0])
    async with ctx.svc.db.transaction() as session:
        auth = await common.load_auth(session, ctx, update)
        await reports.redact(session, auth=auth, report_id=report_id, what=what, now=ctx.now())
        view = await _sheet(session, ctx, auth, report_id)
    await common.show(update, ctx, view, note="reports/redacted")


@common.on_button("rf")
async def btn_photos(update: Update, ctx: LinliContext) -> None:
    """rf:<report>: the photos, by Telegram file id (never downloaded), to the lead privately."""
    if not common.is_private(update):
        raise InvalidInput("private_only")
    (report_id,) = common.callback_args(update, "rf", 1)
    async with ctx.svc.db.transaction(write=False) as session:
        auth = await common.load_auth(session, ctx, update)
        report = await reports.get(session, common.as_int(report_id))
        await reports.require_lead(session, auth, report)
        found = await reports.photos_of(session, report)
    chat = update.effective_chat
    assert chat is not None
    for file_id, kind in found:
        caption = common.render(ctx, "reports/photo_caption", number=report.label, kind=kind)
        await ctx.bot.send_photo(chat.id, photo=file_id, caption=caption)
    await common.answer(update, ctx)


# --- a community's settings: escalation times (admins), saved replies (leads) -------------

HOUR_CHOICES = (1, 2, 4, 8, 12, 24, 48, 72)


async def _times_view(session: AsyncSession, ctx: LinliContext, community_id: int) -> common.View:
    found = await reports.categories(session, community_id=community_id, now=ctx.now())
    rows = [
        [
            common.button(
                _l(ctx, "category_hours", name=c.name(ctx.lang), hours=c.hours),
                f"rc:{community_id}:{c.code}",
            )
        ]
        for c in found
    ]
    rows.append([common.button(_l(ctx, "back_to_list"), "rl:0::")])
    return common.View("reports/times", {}, common.keyboard(rows))


@common.on_button("rc")
async def btn_times(update: Update, ctx: LinliContext) -> None:
    """rc:<community> (the list) | rc:<community>:<category> (its choices) |
    rc:<community>:<category>:<hours> (set it)."""
    parts = ["rc", *_parts(update, "rc", 1, 2, 3)]
    community_id = common.as_int(parts[1])
    async with ctx.svc.db.transaction() as session:
        auth = await common.load_auth(session, ctx, update)
        community = await people.get_community(session, community_id)
        reports.require_admin(auth, community)
        if len(parts) == 4:
            await reports.set_hours(
                session, auth=auth, community_id=community_id, code=parts[2],
                hours=common.as_int(parts[3]), now=ctx.now(),
            )  # fmt: skip
        if len(parts) == 3:
            found = await reports.get_category(
                session, community_id=community_id, code=parts[2], now=ctx.now()
            )
            choices = [
                common.button(("● " if h == found.hours else "") + _l(ctx, "hours", n=h),
                       f"rc:{community_id}:{found.code}:{h}")
                for h in HOUR_CHOICES
            ]  # fmt: skip
            rows = [choices[i : i + 4] for i in range(0, len(choices), 4)]
            rows.append([common.button(_l(ctx, "back"), f"rc:{community_id}")])
            view = common.View(
                "reports/pick_hours", {"category": found.name(ctx.lang)}, common.keyboard(rows)
            )
        else:
            view = await _times_view(session, ctx, community_id)
    await common.show(update, ctx, view)


async def _templates_view(
    session: AsyncSession, ctx: LinliContext, auth: Authority, community_id: int
) -> common.View:
    if not reports.leads_of(auth, community_id):
        raise NotAllowed("leads_only")
    found = await reports.reply_templates(session, community_id=community_id)
    rows = [[common.button(_l(ctx, "delete_template", title=t.title), f"rm:{community_id}:{t.id}")]
            for t in found]  # fmt: skip
    rows.append([common.button(_l(ctx, "new_template"), f"rm:{community_id}:new")])
    rows.append([common.button(_l(ctx, "back_to_list"), "rl:0::")])
    return common.View("reports/templates", {"templates": found}, common.keyboard(rows))


@common.on_button("rm")
async def btn_templates(update: Update, ctx: LinliContext) -> None:
    """rm:<community> (the list) | rm:<community>:<id> (delete it) | rm:<community>:new."""
    parts = ["rm", *_parts(update, "rm", 1, 2)]
    community_id = common.as_int(parts[1])
    if len(parts) == 3 and parts[2] == "new":
        async with ctx.svc.db.transaction(write=False) as session:
            auth = await common.load_auth(session, ctx, update)
            await _templates_view(session, ctx, auth, community_id)
        await ask(update, ctx, "report_template", str(community_id), "reports/ask_template")
        await common.answer(update, ctx)
        return
    async with ctx.svc.db.transaction() as session:
        auth = await common.load_auth(session, ctx, update)
        if len(parts) == 3:
            await reports.delete_reply_template(
                session, auth=auth, template_id=common.as_int(parts[2])
            )
        view = await _templates_view(session, ctx, auth, community_id)
    await common.show(update, ctx, view)


@answers("report_template")
async def on_template(update: Update, ctx: LinliContext, prompt: people.Prompt) -> None:
    """Typed as "title: the reply" (a full-width colon too)."""
    title, _, text = _typed(update).replace("：", ":").partition(":")
    if not text.strip():
        raise InvalidInput("report_template_format")
    community_id = common.as_int(prompt.payload)
    async with ctx.svc.db.transaction() as session:
        auth = await common.load_auth(session, ctx, update)
        await reports.save_reply_template(
            session, auth=auth, community_id=community_id, title=title, text=text, now=ctx.now()
        )
        view = await _templates_view(session, ctx, auth, community_id)
    await common.reply(update, ctx, view.name, markup=view.markup, **view.params)


# --- the neighbours' verdict ----------------------------------------------------------------


@common.on_button("rv")
async def btn_verdict(update: Update, ctx: LinliContext) -> None:
    """rv:<report>:<round>:<1 fixed|0 not fixed> (sets the answer; a repeat changes nothing)."""
    report_id, round_, fixed = common.callback_args(update, "rv", 3)
    if fixed not in ("0", "1"):
        raise InvalidInput("stale_button")
    async with ctx.svc.db.transaction() as session:
        report = await reports.get(session, common.as_int(report_id))
        if report.round != common.as_int(round_):
            raise Conflict("report_followup_over", number=report.label, status=report.status)
        result = await reports.verdict(
            session,
            report_id=report.id or 0,
            person_id=common.user_id(update),
            fixed=fixed == "1",
            now=ctx.now(),
        )
    await common.answer(
        update,
        ctx,
        "reports/verdict_thanks",
        fixed=fixed == "1",
        reopened=result.reopened,
        number=result.report.label,
    )
    if fixed == "0" and common.is_private(update):
        await ask(update, ctx, "report_notfixed", f"{report_id}:{common.as_int(round_)}",
                  "reports/ask_notfixed", number=result.report.label)  # fmt: skip


@answers("report_notfixed")
async def on_notfixed(update: Update, ctx: LinliContext, prompt: people.Prompt) -> None:
    """The photo (or words) a neighbour adds to their "not fixed"."""
    report_id, round_ = _payload(prompt)
    async with ctx.svc.db.transaction() as session:
        report = await reports.verdict_photo(
            session, report_id=report_id, person_id=common.user_id(update), round=round_,
            photo=_answer_photo(update), note=_typed(update), now=ctx.now(),
        )  # fmt: skip
    await common.reply(update, ctx, "reports/notfixed_kept", number=report.label)


PHOTO_ANSWERS["report_notfixed"] = on_notfixed


@common.on_button("rr")
async def btn_rate(update: Update, ctx: LinliContext) -> None:
    """rr:<report>:<1–5>"""
    report_id, stars = common.callback_args(update, "rr", 2)
    async with ctx.svc.db.transaction() as session:
        await reports.rate(
            session,
            report_id=common.as_int(report_id),
            person_id=common.user_id(update),
            rating=common.as_int(stars),
            now=ctx.now(),
        )
    await common.answer(update, ctx, "reports/rated", stars=common.as_int(stars))


# --- /myreports ---------------------------------------------------------------------------


async def cmd_myreports(update: Update, ctx: LinliContext) -> None:
    if not common.is_private(update):
        await common.offer_private(update, ctx, "myreports", feature="reports")
        return
    async with ctx.svc.db.transaction(write=False) as session:
        found = await reports.mine(session, person_id=common.user_id(update))
        last = await reports.last_events(session, [r.id for r, _ in found if r.id is not None])
        lines = []
        for report, own in found:
            cats = await _category_names(session, report.community_id, ctx.now())
            event = last.get(report.id or 0)
            lines.append(
                {
                    "number": report.label,
                    "category": cats[report.category].name(ctx.lang)
                    if report.category in cats
                    else "",
                    "status": report.status,
                    "own": own,
                    "supporters": report.supporters,
                    "changed": event.at if event else report.updated_at,
                    "event": event.kind if event else "",
                }
            )
    await common.reply(update, ctx, "reports/mine", lines=lines)


async def cmd_start_reports(update: Update, ctx: LinliContext) -> None:
    """/start reports | myreports | report: the deep links groups hand out."""
    message = update.effective_message
    assert message is not None
    payload = (message.text or "").split(maxsplit=1)[1]
    if payload == "myreports":
        await cmd_myreports(update, ctx)
    elif payload == "reports":
        await cmd_reports(update, ctx)
    elif payload == "stats":
        await cmd_stats(update, ctx)
    elif payload.startswith(report_flow.START):
        await report_flow.resume(
            update, ctx, common.as_int(payload.removeprefix(report_flow.START))
        )
    else:
        await report_flow.start(update, ctx)


# --- /stats and the export ----------------------------------------------------------------


def _period(code: str, now: datetime, zone: str) -> tuple[datetime, datetime]:
    if code not in ("m", "l", "y"):
        raise InvalidInput("stale_button")
    start, end = standings.period(code, now, zone)
    assert start is not None and end is not None
    return start, end


async def _stats_units(session: AsyncSession, auth: Authority) -> list[Unit]:
    """The lead's top units and the units right below them (the choices on /stats)."""
    tops = auth.top_units()
    if not tops and auth.superadmin:
        tops = list(await people.root_units(session))
    if not tops:
        raise NotAllowed("leads_only")
    found: list[Unit] = []
    for top in tops:
        found.append(top)
        found += list(
            await people.children(session, community_id=top.community_id, parent_id=top.id)
        )
    return found[: common.PAGE]


async def cmd_stats(update: Update, ctx: LinliContext) -> None:
    async with ctx.svc.db.transaction(write=False) as session:
        auth = await common.load_auth(session, ctx, update)
        units = await _stats_units(session, auth)
    if not common.is_private(update):
        await common.offer_private(update, ctx, "stats", feature="reports")
        return
    await _send_stats(update, ctx, units[0].id or 0, "m")


@common.on_button("rq")
async def btn_stats(update: Update, ctx: LinliContext) -> None:
    """rq:<unit>:<m|l|y>"""
    if not common.is_private(update):
        raise InvalidInput("private_only")
    unit_id, code = common.callback_args(update, "rq", 2)
    await _send_stats(update, ctx, common.as_int(unit_id), code)
    await common.answer(update, ctx)


async def _send_stats(update: Update, ctx: LinliContext, unit_id: int, code: str) -> None:
    async with ctx.svc.db.transaction(write=False) as session:
        auth = await common.load_auth(session, ctx, update)
        unit = await people.get_unit(session, unit_id)
        people.require(auth, unit)
        choices = await _stats_units(session, auth)
        community = await people.get_community(session, unit.community_id)
        start, end = _period(code, ctx.now(), community.timezone)
        figures = await reports.stats(
            session, unit=unit, start=start, end=end, now=ctx.now(), zone=community.timezone
        )
        cats = await _category_names(session, unit.community_id, ctx.now())
    by_category = [
        (cats[c].name(ctx.lang) if c in cats else c, n) for c, n in figures.by_category.items()
    ]
    text = charts.ChartText(
        title=f"{_l(ctx, 'chart_title')} · {unit.name} · {_l(ctx, 'period', code=code, on=False)}",
        by_category=_l(ctx, "chart_by_category"),
        weekly=_l(ctx, "chart_weekly"),
        opened=_l(ctx, "chart_opened"),
        resolved=_l(ctx, "chart_resolved"),
    )
    image = await asyncio.to_thread(charts.report_chart, by_category, figures.weeks, text)
    rows = [
        [common.button(_l(ctx, "period", code=c, on=c == code), f"rq:{unit_id}:{c}")
         for c in "mly"],
        *[[common.button(("● " if u.id == unit_id else "") + u.name, f"rq:{u.id}:{code}")]
          for u in choices if u.id is not None],
    ]  # fmt: skip
    if auth.may(Can.admin_community, community_id=unit.community_id):
        rows.append([common.button(_l(ctx, "export_reports"), f"re:{unit.community_id}:{code}")])
    caption = common.render(
        ctx,
        "reports/stats",
        unit=unit.name,
        first=start.astimezone(ZoneInfo(community.timezone)).date().isoformat(),
        last=(end - timedelta(seconds=1))
        .astimezone(ZoneInfo(community.timezone))
        .date()
        .isoformat(),
        s=figures,
        categories=by_category,
    )
    chat = update.effective_chat
    assert chat is not None
    await ctx.bot.send_photo(
        chat.id, photo=image, caption=caption, reply_markup=common.keyboard(rows)
    )


@common.on_button("re")
async def btn_export(update: Update, ctx: LinliContext) -> None:
    """re:<community>:<m|l|y>: the reports as CSV (community admins, privately)."""
    if not common.is_private(update):
        raise InvalidInput("private_only")
    community_id, code = common.callback_args(update, "re", 2)
    async with ctx.svc.db.transaction(write=False) as session:
        auth = await common.load_auth(session, ctx, update)
        community = await people.get_community(session, common.as_int(community_id))
        reports.require_admin(auth, community)
    start, end = _period(code, ctx.now(), community.timezone)
    await export_reports(update, ctx, community, start, end, say_if_none=True)
    await common.answer(update, ctx)


async def export_reports(
    update: Update,
    ctx: LinliContext,
    community: Community,
    start: datetime | None,
    end: datetime | None,
    *,
    say_if_none: bool = False,
) -> None:
    """The reports filed in [start, end) as CSV, privately (/export sends it after the ledger,
    and only when there are some; the caller has checked the person is a community admin)."""
    async with ctx.svc.db.transaction(write=False) as session:
        rows = await reports.export_rows(
            session,
            community_id=community.id or 0,
            start=start,
            end=end,
            lang=ctx.lang,
            zone=community.timezone,
        )
    zone = ZoneInfo(community.timezone)
    first = start.astimezone(zone).date().isoformat() if start else None
    last = (end - timedelta(seconds=1)).astimezone(zone).date().isoformat() if end else None
    if not rows:
        if say_if_none:
            await common.reply(update, ctx, "reports/export_empty", first=first, last=last)
        return
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow([_l(ctx, f"csv_{c}") for c in reports.EXPORT_COLUMNS])
    writer.writerows(rows)
    chat = update.effective_chat
    assert chat is not None
    await ctx.bot.send_document(
        chat.id,
        document=out.getvalue().encode("utf-8-sig"),
        filename=EXPORT_FILE.format(start=first or "all", end=last or "all"),
        caption=common.render(
            ctx, "reports/export_caption", count=len(rows), first=first, last=last
        ),
    )


def register(app: LinliApp) -> None:
    report_flow.register(app, group=PHOTO_GROUP)
    delivery.add_rhythm(app, reports.due_work)
    delivery.add_rhythm(app, digest.weekly)
    cards.register(app, reports.CARD, report_card)
    cards.register(app, reports.LEAD_CARD, lead_card)
    cards.register(app, reports.ASK_CARD, ask_card)
    app.add_handler(
        CommandHandler(
            "start",
            cmd_start_reports,
            filters=filters.Regex(
                rf"^/start (reports|myreports|report|stats|{report_flow.START}\d+)$"
            ),
        )
    )
    app.add_handler(CommandHandler("report", cmd_report))
    app.add_handler(
        MessageHandler(
            (filters.PHOTO | filters.VIDEO | filters.Document.ALL)
            & filters.CaptionRegex(r"^/report(@\w+)?(\s|$)"),
            cmd_report,
        )
    )
    app.add_handler(CommandHandler("reports", cmd_reports))
    app.add_handler(CommandHandler("myreports", cmd_myreports))
    app.add_handler(CommandHandler("stats", cmd_stats))
    app.add_handler(
        MessageHandler(filters.PHOTO & filters.ChatType.PRIVATE, on_photo_answer), group=PHOTO_GROUP
    )
    common.add_buttons(app, common.buttons_of(__name__))
