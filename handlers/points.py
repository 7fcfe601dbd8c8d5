"""Points: /points (balance and history), /award and /deduct (leads), /top, /export, /rules."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from sqlmodel.ext.asyncio.session import AsyncSession
from telegram import InlineKeyboardButton, Update, User
from telegram.ext import CallbackQueryHandler, CommandHandler, filters

from bot import delivery
from bot.context import LinliApp, LinliContext
from handlers.common import (
    PAGE,
    View,
    answer,
    as_int,
    as_state,
    button,
    callback_args,
    deep_link,
    is_private,
    keyboard,
    label,
    load_auth,
    page_buttons,
    render,
    replace,
    replied_to,
    reply,
    rows_of,
    send_private,
    show,
    speaking_for,
    state,
    thread_of,
    url_button,
    user_id,
)
from handlers.prompts import answers, ask
from handlers.reports import export_reports
from models import people, points
from models.base import spreadsheet_safe
from models.errors import InvalidInput, NotAllowed, NotFound
from models.people import Authority, Community, Unit
from models.points import AwardDraft, Kind

AMOUNTS = (1, 2, 5, 10, 20)
HISTORY = 10  # entries per screen: enough to recognise, short enough to read on a phone
EXPORT_FILE = "linli-points-{start}-{end}.csv"
CSV_COLUMNS = ("time", "entry", "person_id", "person", "amount", "kind", "rule", "reason", "by_id",
               "by", "key")  # fmt: skip
KINDS = {"a": Kind.award, "d": Kind.deduct}


def _nav(ctx: LinliContext, page: int, pages: int, data: str) -> list[InlineKeyboardButton]:
    """◀ ▶ buttons; `data` has a {} where the page number goes."""
    return page_buttons(ctx, page, pages, data.format)


def _pages(total: int, size: int = PAGE) -> int:
    return max(1, -(-total // size))


async def _private_elsewhere(
    update: Update,
    ctx: LinliContext,
    screen: View,
    payload: str,
    closed: str = "points/open_private",
) -> None:
    """From a group: send the screen privately, or offer the private chat if it is not open
    (`closed` says why). The group sees neither the screen nor anything about anyone."""
    uid = user_id(update)
    if await send_private(ctx, uid, ctx.lang, screen.name, markup=screen.markup, **screen.params):
        await reply(update, ctx, "points/sent_privately")
        return
    link = keyboard([[url_button(label(ctx, "points", "open_private"), deep_link(ctx, payload))]])
    await reply(update, ctx, closed, markup=link)


def _private_only(update: Update) -> None:
    if not is_private(update):
        raise NotAllowed("private_only")


# --- /points: my balance, my household's, my rank, my history ------------------------------


async def _summary_screen(
    session: AsyncSession, ctx: LinliContext, uid: int, community_id: int | None
) -> View:
    found = await points.verified_memberships(session, person_id=uid)
    if not found:
        join = keyboard([[button(label(ctx, "points", "join_now"), "join:go")]])
        return View("points/not_member", {}, join)
    chosen = [m for m in found if community_id in (None, m.community.id)]
    if not chosen:
        raise InvalidInput("stale_button")
    membership = chosen[0]
    summary = await points.summary(session, membership=membership, now=ctx.now(), limit=HISTORY)
    auth = await people.authority(session, person_id=uid, superadmin=ctx.is_superadmin(uid))
    cid = membership.community.id
    rows: list[list[InlineKeyboardButton]] = []
    if summary.more and summary.entries:
        rows.append([button(label(ctx, "points", "more"), f"pm:{cid}:{summary.entries[-1].id}")])
    if len(found) > 1:
        rows.append(
            [
                button(
                    label(ctx, "points", "community", name=m.community.name), f"pv:{m.community.id}"
                )
                for m in found
                if m.community.id != cid
            ]
        )
    if people.can_add_root(auth, community_id=cid or 0):
        rows.append(
            [
                button(label(ctx, "points", "rules"), f"pl:{cid}"),
                button(label(ctx, "points", "export"), f"pe:{cid}"),
            ]
        )
    return View("points/summary", {"s": summary}, keyboard(rows) if rows else None)


async def cmd_points(update: Update, ctx: LinliContext) -> None:
    uid = user_id(update)
    async with ctx.svc.db.transaction(write=False) as session:
        screen = await _summary_screen(session, ctx, uid, None)
    if is_private(update):
        await reply(update, ctx, screen.name, markup=screen.markup, **screen.params)
    else:
        # A balance and its history are nobody else's business: they go privately.
        await _private_elsewhere(update, ctx, screen, "points")


async def btn_view(update: Update, ctx: LinliContext) -> None:
    """pv:<community>: the summary for one of the person's communities."""
    _private_only(update)
    (community_id,) = callback_args(update, "pv", 1)
    async with ctx.svc.db.transaction(write=False) as session:
        screen = await _summary_screen(session, ctx, user_id(update), as_int(community_id))
    await show(update, ctx, screen)


async def btn_more(update: Update, ctx: LinliContext) -> None:
    """pm:<community>:<entry>: the entries before one already shown."""
    _private_only(update)
    community_id, before = callback_args(update, "pm", 2)
    cid = as_int(community_id)
    async with ctx.svc.db.transaction(write=False) as session:
        community = await people.get_community(session, cid)
        entries = await points.history(
            session,
            community_id=cid,
            person_id=user_id(update),
            before_id=as_int(before),
            limit=HISTORY + 1,
        )
        names = {r.code: r for r in await points.rules(session, community_id=cid, now=ctx.now())}
    shown = entries[:HISTORY]
    rows = []
    if len(entries) > HISTORY:
        rows.append([button(label(ctx, "points", "more"), f"pm:{cid}:{shown[-1].id}")])
    rows.append([button(label(ctx, "points", "back_summary"), f"pv:{cid}")])
    params = {"community": community, "entries": shown, "names": names}
    await show(update, ctx, View("points/history", params, keyboard(rows)))


# --- /award and /deduct ------------------------------------------------------------------


async def cmd_award(update: Update, ctx: LinliContext) -> None:
    await _begin(update, ctx, Kind.award)


async def cmd_deduct(update: Update, ctx: LinliContext) -> None:
    await _begin(update, ctx, Kind.deduct)


async def _begin(update: Update, ctx: LinliContext, kind: Kind) -> None:
    async with ctx.svc.db.transaction(write=False) as session:
        auth = await load_auth(session, ctx, update)
    if not auth.is_lead:
        raise NotAllowed("leads_only")
    target = replied_to(update.effective_message) if not is_private(update) else None
    if target is not None:
        await _begin_for(update, ctx, auth, kind, target)
        return
    if not is_private(update):
        payload = "award" if kind == Kind.award else "deduct"
        link = keyboard(
            [[url_button(label(ctx, "points", "open_private"), deep_link(ctx, payload))]]
        )
        await reply(update, ctx, "points/award_how", markup=link, kind=kind)
        return
    async with ctx.svc.db.transaction(write=False) as session:
        tops = await _top_units(session, auth)
    if len(tops) == 1 and tops[0].id is not None:
        await _draft_for_unit(update, ctx, auth, kind, tops[0].id)
        return
    await show(update, ctx, _units_screen(ctx, kind, tops, 0))


async def _top_units(session: AsyncSession, auth: Authority) -> list[Unit]:
    if auth.superadmin:
        return list(await people.root_units(session))
    return auth.top_units()


def _units_screen(ctx: LinliContext, kind: Kind, tops: Sequence[Unit], page: int) -> View:
    pages = _pages(len(tops))
    page = min(max(page, 0), pages - 1)
    k = "a" if kind == Kind.award else "d"
    rows = [[button(u.name, f"pu:{k}:{u.id}")] for u in tops[page * PAGE : (page + 1) * PAGE]]
    rows.append(_nav(ctx, page, pages, f"pq:{k}:{{}}"))
    return View("points/pick_unit", {"kind": kind, "empty": not tops}, keyboard(rows))


def _kind(code: str) -> Kind:
    if code not in KINDS:
        raise InvalidInput("stale_button")
    return KINDS[code]


async def btn_units_page(update: Update, ctx: LinliContext) -> None:
    """pq:<a|d>:<page>"""
    _private_only(update)
    code, page = callback_args(update, "pq", 2)
    async with ctx.svc.db.transaction(write=False) as session:
        auth = await load_auth(session, ctx, update)
        if not auth.is_lead:
            raise NotAllowed("leads_only")
        tops = await _top_units(session, auth)
    await show(update, ctx, _units_screen(ctx, _kind(code), tops, as_int(page)))


async def btn_unit(update: Update, ctx: LinliContext) -> None:
    """pu:<a|d>:<unit>: award residents of this unit."""
    _private_only(update)
    code, unit_id = callback_args(update, "pu", 2)
    async with ctx.svc.db.transaction(write=False) as session:
        auth = await load_auth(session, ctx, update)
    await _draft_for_unit(update, ctx, auth, _kind(code), as_int(unit_id))


async def _draft_for_unit(
    update: Update, ctx: LinliContext, auth: Authority, kind: Kind, unit_id: int
) -> None:
    async with ctx.svc.db.transaction() as session:
        draft = await points.start_draft(
            session, auth=auth, unit_id=unit_id, kind=kind, now=ctx.now()
        )
        screen = await _people_screen(session, ctx, draft, 0)
    await show(update, ctx, screen)


async def _begin_for(
    update: Update, ctx: LinliContext, auth: Authority, kind: Kind, target: User
) -> None:
    """/award or /deduct as a reply in a group: that person, in the first of their communities
    the lead covers (a group's residents almost always share one). The steps go to the lead
    privately: an amount, a reason and a confirmation are nobody else's business."""
    async with ctx.svc.db.transaction() as session:
        found = await points.verified_memberships(session, person_id=target.id)
        covered = [m for m in found if auth.covers(m.unit)]
        if target.is_bot or not covered or covered[0].unit.id is None:
            raise NotAllowed("points_not_your_resident")
        draft = await points.start_draft(
            session,
            auth=auth,
            unit_id=covered[0].unit.id,
            kind=kind,
            now=ctx.now(),
            person_ids=[target.id],
        )
        screen = await _amount_screen(session, ctx, draft)
    payload = "award" if kind == Kind.award else "deduct"
    await _private_elsewhere(update, ctx, screen, payload, "points/award_open_private")


async def _people_screen(
    session: AsyncSession, ctx: LinliContext, draft: AwardDraft, page: int
) -> View:
    """Residents of the draft's unit, with a tick on each one picked."""
    unit = await people.get_unit(session, draft.unit_id)
    _, total = await people.residents_under(session, unit, offset=0, limit=0)
    pages = _pages(total)
    page = min(max(page, 0), pages - 1)
    shown, total = await people.residents_under(session, unit, offset=page * PAGE, limit=PAGE)
    flats = await points.flats_of(session, [r.household_id for r, _ in shown])
    rows = [
        [
            button(
                label(
                    ctx,
                    "points",
                    "person",
                    name=p.name,
                    flat=flats.get(r.household_id, ""),
                    picked=p.id in draft.person_ids,
                ),
                f"pt:{draft.id}:{p.id}:{page}:{state(p.id not in draft.person_ids)}",
            )
        ]
        for r, p in shown
    ]
    rows.append(_nav(ctx, page, pages, f"pp:{draft.id}:{{}}"))
    rows.append(
        [
            button(label(ctx, "points", "next_step", n=len(draft.person_ids)), f"pn:{draft.id}"),
            button(label(ctx, "points", "cancel"), f"px:{draft.id}"),
        ]
    )
    params = {"draft": draft, "unit": unit, "total": total, "page": page, "pages": pages}
    return View("points/pick_people", params, keyboard(rows))


async def _amount_screen(session: AsyncSession, ctx: LinliContext, draft: AwardDraft) -> View:
    limit = await points.max_award(session, community_id=draft.community_id)
    amounts = [button(f"{n}", f"pa:{draft.id}:{n}") for n in AMOUNTS if n <= limit]
    rows = rows_of(amounts, len(AMOUNTS))
    if draft.kind == Kind.award:
        found = await points.rules(session, community_id=draft.community_id, now=ctx.now())
        shortcuts = [
            button(
                label(ctx, "points", "rule_amount", name=r.name(ctx.lang), points=r.points),
                f"pr:{draft.id}:{r.code}",
            )
            for r in found
            if r.active and r.code != points.WELCOME and r.points <= limit
        ]
        rows += rows_of(shortcuts, 2)
    rows.append([button(label(ctx, "points", "type_amount"), f"pk:{draft.id}")])
    rows.append([button(label(ctx, "points", "cancel"), f"px:{draft.id}")])
    who = await points.draft_people(session, draft)
    return View("points/pick_amount", {"draft": draft, "who": who, "max": limit}, keyboard(rows))


async def _reason_screen(session: AsyncSession, ctx: LinliContext, draft: AwardDraft) -> View:
    rows: list[list[InlineKeyboardButton]] = []
    if draft.kind == Kind.award:
        found = await points.rules(session, community_id=draft.community_id, now=ctx.now())
        reasons = [
            button(r.name(ctx.lang), f"ps:{draft.id}:{r.code}")
            for r in found
            if r.active and r.code != points.WELCOME
        ]
        rows += rows_of(reasons, 2)
    rows.append([button(label(ctx, "points", "type_reason"), f"pw:{draft.id}")])
    rows.append(
        [
            button(label(ctx, "points", "back"), f"pb:{draft.id}"),
            button(label(ctx, "points", "cancel"), f"px:{draft.id}"),
        ]
    )
    who = await points.draft_people(session, draft)
    return View("points/pick_reason", {"draft": draft, "who": who}, keyboard(rows))


async def _confirm_screen(session: AsyncSession, ctx: LinliContext, draft: AwardDraft) -> View:
    rows = [
        [button(label(ctx, "points", "confirm"), f"pc:{draft.id}")],
        [
            button(label(ctx, "points", "back"), f"pb:{draft.id}"),
            button(label(ctx, "points", "cancel"), f"px:{draft.id}"),
        ],
    ]
    params = await _draft_params(session, ctx, draft)
    return View("points/confirm", params, keyboard(rows))


async def _draft_params(
    session: AsyncSession, ctx: LinliContext, draft: AwardDraft
) -> dict[str, object]:
    reason = draft.reason
    if draft.rule_code:
        found = await points.rule(
            session, community_id=draft.community_id, code=draft.rule_code, now=ctx.now()
        )
        reason = found.name(ctx.lang)
    return {"draft": draft, "who": await points.draft_people(session, draft), "reason": reason}


def _draft_id(update: Update, prefix: str, count: int = 1) -> tuple[int, list[str]]:
    args = callback_args(update, prefix, count)
    return as_int(args[0]), args[1:]


async def btn_pick(update: Update, ctx: LinliContext) -> None:
    """pt:<draft>:<person>:<page>:<1|0>: pick (1) or unpick (0) one resident."""
    _private_only(update)  # the list shows flat numbers
    draft_id, (person_id, page, wanted) = _draft_id(update, "pt", 4)
    async with ctx.svc.db.transaction() as session:
        auth = await load_auth(session, ctx, update)
        draft = await points.pick_person(
            session,
            auth=auth,
            draft_id=draft_id,
            person_id=as_int(person_id, telegram_id=True),
            picked=as_state(wanted),
            now=ctx.now(),
        )
        screen = await _people_screen(session, ctx, draft, as_int(page))
    await show(update, ctx, screen)


async def btn_people_page(update: Update, ctx: LinliContext) -> None:
    """pp:<draft>:<page>"""
    _private_only(update)  # the list shows flat numbers
    draft_id, (page,) = _draft_id(update, "pp", 2)
    async with ctx.svc.db.transaction(write=False) as session:
        auth = await load_auth(session, ctx, update)
        draft, _unit = await points.get_draft(session, auth=auth, draft_id=draft_id)
        screen = await _people_screen(session, ctx, draft, as_int(page))
    await show(update, ctx, screen)


async def btn_next(update: Update, ctx: LinliContext) -> None:
    """pn:<draft>: the residents are picked; now the amount."""
    draft_id, _ = _draft_id(update, "pn")
    async with ctx.svc.db.transaction(write=False) as session:
        auth = await load_auth(session, ctx, update)
        draft, _unit = await points.get_draft(session, auth=auth, draft_id=draft_id)
        if not draft.person_ids:
            raise InvalidInput("points_nobody_picked")
        screen = await _amount_screen(session, ctx, draft)
    await show(update, ctx, screen)


async def btn_amount(update: Update, ctx: LinliContext) -> None:
    """pa:<draft>:<amount>"""
    draft_id, (amount,) = _draft_id(update, "pa", 2)
    async with ctx.svc.db.transaction() as session:
        auth = await load_auth(session, ctx, update)
        draft = await points.set_amount(
            session, auth=auth, draft_id=draft_id, amount=amount, now=ctx.now()
        )
        screen = await _after_amount(session, ctx, draft)
    await show(update, ctx, screen)


async def _after_amount(session: AsyncSession, ctx: LinliContext, draft: AwardDraft) -> View:
    if draft.reason and draft.kind == Kind.award:
        return await _confirm_screen(session, ctx, draft)
    return await _reason_screen(session, ctx, draft)


async def btn_rule_amount(update: Update, ctx: LinliContext) -> None:
    """pr:<draft>:<rule>: the rule's points for the rule's work."""
    draft_id, (code,) = _draft_id(update, "pr", 2)
    async with ctx.svc.db.transaction() as session:
        auth = await load_auth(session, ctx, update)
        draft = await points.choose_rule(
            session, auth=auth, draft_id=draft_id, code=code, now=ctx.now(), with_amount=True
        )
        screen = await _confirm_screen(session, ctx, draft)
    await show(update, ctx, screen)


async def btn_rule_reason(update: Update, ctx: LinliContext) -> None:
    """ps:<draft>:<rule>: the amount already chosen, for the rule's work."""
    draft_id, (code,) = _draft_id(update, "ps", 2)
    async with ctx.svc.db.transaction() as session:
        auth = await load_auth(session, ctx, update)
        draft = await points.choose_rule(
            session, auth=auth, draft_id=draft_id, code=code, now=ctx.now(), with_amount=False
        )
        screen = await _confirm_screen(session, ctx, draft)
    await show(update, ctx, screen)


async def btn_back(update: Update, ctx: LinliContext) -> None:
    """pb:<draft>: back to the amount."""
    draft_id, _ = _draft_id(update, "pb")
    async with ctx.svc.db.transaction(write=False) as session:
        auth = await load_auth(session, ctx, update)
        draft, _unit = await points.get_draft(session, auth=auth, draft_id=draft_id)
        screen = await _amount_screen(session, ctx, draft)
    await show(update, ctx, screen)


async def _ask_about_draft(update: Update, ctx: LinliContext, prefix: str, kind: str) -> None:
    draft_id, _ = _draft_id(update, prefix)
    async with ctx.svc.db.transaction(write=False) as session:
        auth = await load_auth(session, ctx, update)
        draft, _unit = await points.get_draft(session, auth=auth, draft_id=draft_id)
        limit = await points.max_award(session, community_id=draft.community_id)
    await ask(
        update, ctx, kind, str(draft_id), f"points/ask_{kind.removeprefix('points_')}", max=limit
    )
    await answer(update, ctx)


async def btn_type_amount(update: Update, ctx: LinliContext) -> None:
    """pk:<draft>: the lead types a number."""
    await _ask_about_draft(update, ctx, "pk", "points_amount")


async def btn_type_reason(update: Update, ctx: LinliContext) -> None:
    """pw:<draft>: the lead types the reason."""
    await _ask_about_draft(update, ctx, "pw", "points_reason")


def _typed(update: Update) -> str:
    message = update.effective_message
    assert message is not None and message.text is not None
    return message.text


@answers("points_amount")
async def on_amount(update: Update, ctx: LinliContext, prompt: people.Prompt) -> None:
    async with ctx.svc.db.transaction() as session:
        auth = await load_auth(session, ctx, update)
        draft = await points.set_amount(
            session,
            auth=auth,
            draft_id=as_int(prompt.payload),
            amount=_typed(update),
            now=ctx.now(),
        )
        screen = await _after_amount(session, ctx, draft)
    await reply(update, ctx, screen.name, markup=screen.markup, **screen.params)


@answers("points_reason")
async def on_reason(update: Update, ctx: LinliContext, prompt: people.Prompt) -> None:
    async with ctx.svc.db.transaction() as session:
        auth = await load_auth(session, ctx, update)
        draft = await points.set_reason(
            session, auth=auth, draft_id=as_int(prompt.payload), text=_typed(update), now=ctx.now()
        )
        if draft.amount is None:
            screen = await _amount_screen(session, ctx, draft)
        else:
            screen = await _confirm_screen(session, ctx, draft)
    await reply(update, ctx, screen.name, markup=screen.markup, **screen.params)


async def btn_confirm(update: Update, ctx: LinliContext) -> None:
    """pc:<draft>: save it. A second tap finds it saved and changes nothing."""
    draft_id, _ = _draft_id(update, "pc")
    async with ctx.svc.db.transaction() as session:
        auth = await load_auth(session, ctx, update)
        draft, _posted, changed = await points.confirm_draft(
            session, auth=auth, draft_id=draft_id, now=ctx.now()
        )
        params = await _draft_params(session, ctx, draft)
    screen = View("points/done", params)
    if changed:
        await show(update, ctx, screen)
        return
    await replace(update, ctx, screen)
    await answer(update, ctx, "points/already_saved", alert=True)


async def btn_cancel(update: Update, ctx: LinliContext) -> None:
    """px:<draft>"""
    draft_id, _ = _draft_id(update, "px")
    async with ctx.svc.db.transaction() as session:
        auth = await load_auth(session, ctx, update)
        draft = await points.cancel_draft(session, auth=auth, draft_id=draft_id, now=ctx.now())
        params = await _draft_params(session, ctx, draft)
    await show(
        update, ctx, View("points/done" if draft.status == "done" else "points/cancelled", params)
    )


# --- /top: the honour board ----------------------------------------------------------------


async def _board_screen(
    session: AsyncSession, ctx: LinliContext, unit: Unit, monthly: bool, uid: int, private: bool
) -> View:
    lines = await points.board(session, unit=unit, now=ctx.now(), monthly=monthly)
    hidden = await points.is_hidden(session, community_id=unit.community_id, person_id=uid)
    m = "m" if monthly else "a"
    # Each button sets a state ("hide me", "show me"): a double tap or a repeat leaves it set.
    # In a group the board is everyone's, so both are offered; privately, the one that applies.
    states = ("h", "s") if not private else (("s",) if hidden else ("h",))
    rows = [
        [
            button(label(ctx, "points", "this_month", on=monthly), f"ptb:{unit.id}:m"),
            button(label(ctx, "points", "all_time", on=not monthly), f"ptb:{unit.id}:a"),
        ],
        [
            button(
                label(ctx, "points", "hide_me" if state == "h" else "show_me"),
                f"pth:{unit.id}:{m}:{state}",
            )
            for state in states
        ],
    ]
    params = {"unit": unit, "lines": lines, "monthly": monthly, "hidden": hidden and private}
    return View("points/top", params, keyboard(rows))


async def _board_unit(session: AsyncSession, update: Update, uid: int) -> Unit | None:
    """In a group the unit it serves; privately the person's own building."""
    chat = update.effective_chat
    assert chat is not None
    if not is_private(update):
        link = await people.link_for(
            session, chat_id=chat.id, thread_id=thread_of(update.effective_message)
        )
        return await people.get_unit(session, link.unit_id) if link is not None else None
    found = await points.verified_memberships(session, person_id=uid)
    return found[0].building if found else None


async def cmd_top(update: Update, ctx: LinliContext) -> None:
    uid = user_id(update)
    async with ctx.svc.db.transaction(write=False) as session:
        unit = await _board_unit(session, update, uid)
        if unit is None:
            screen = None
        else:
            community = await people.get_community(session, unit.community_id)
            with speaking_for(ctx, update, community):
                screen = await _board_screen(session, ctx, unit, True, uid, is_private(update))
    if screen is None:
        await reply(update, ctx, "points/top_no_unit", private=is_private(update))
        return
    with speaking_for(ctx, update, community):  # a board in a group is everyone's
        await reply(update, ctx, screen.name, markup=screen.markup, **screen.params)


async def _readable_board(
    session: AsyncSession, update: Update, ctx: LinliContext, unit_id: str
) -> Unit:
    """The unit of a tapped board, if the tapper may see it (see points.require_board_reader)."""
    unit = await people.get_unit(session, as_int(unit_id))
    chat_unit = None
    chat = update.effective_chat
    if chat is not None and not is_private(update):
        link = await people.link_for(
            session, chat_id=chat.id, thread_id=thread_of(update.effective_message)
        )
        chat_unit = link.unit_id if link is not None else None
    auth = await load_auth(session, ctx, update)
    await points.require_board_reader(session, auth=auth, unit=unit, chat_unit_id=chat_unit)
    return unit


async def btn_board(update: Update, ctx: LinliContext) -> None:
    """ptb:<unit>:<m|a>: this month's board or the all-time one."""
    unit_id, which = callback_args(update, "ptb", 2)
    if which not in ("m", "a"):
        raise InvalidInput("stale_button")
    async with ctx.svc.db.transaction(write=False) as session:
        unit = await _readable_board(session, update, ctx, unit_id)
        community = await people.get_community(session, unit.community_id)
        with speaking_for(ctx, update, community):
            screen = await _board_screen(
                session, ctx, unit, which == "m", user_id(update), is_private(update)
            )
    with speaking_for(ctx, update, community):  # not in the tapper's language
        await show(update, ctx, screen)


async def btn_hide(update: Update, ctx: LinliContext) -> None:
    """pth:<unit>:<m|a>:<h|s>: the tapper leaves the board (h), or comes back to it (s)."""
    unit_id, which, state = callback_args(update, "pth", 3)
    if which not in ("m", "a") or state not in ("h", "s"):
        raise InvalidInput("stale_button")
    uid = user_id(update)
    hidden = state == "h"
    async with ctx.svc.db.transaction() as session:
        unit = await _readable_board(session, update, ctx, unit_id)
        await points.set_hidden(
            session, community_id=unit.community_id, person_id=uid, hidden=hidden, now=ctx.now()
        )
        community = await people.get_community(session, unit.community_id)
        with speaking_for(ctx, update, community):
            screen = await _board_screen(session, ctx, unit, which == "m", uid, is_private(update))
    with speaking_for(ctx, update, community):
        await replace(update, ctx, screen)
    # The note is the tapper's own, in their language.
    await answer(update, ctx, "points/hidden_now" if hidden else "points/shown_now", alert=True)


# --- /export: the books as CSV (admins, privately) -----------------------------------------


async def _admin_communities(session: AsyncSession, auth: Authority) -> list[Community]:
    found = await people.communities(session)
    return [c for c in found if people.can_add_root(auth, community_id=c.id or 0)]


async def cmd_export(update: Update, ctx: LinliContext) -> None:
    async with ctx.svc.db.transaction(write=False) as session:
        auth = await load_auth(session, ctx, update)
        mine = await _admin_communities(session, auth)
    if not mine:
        raise NotAllowed("points_admins_only")
    if not is_private(update):
        await reply(update, ctx, "points/export_private")
        return
    if len(mine) == 1:
        await show(update, ctx, _periods_screen(ctx, mine[0]))
        return
    rows = [[button(c.name, f"pe:{c.id}")] for c in mine]
    await reply(update, ctx, "points/export_pick_community", markup=keyboard(rows))


def _periods_screen(ctx: LinliContext, community: Community) -> View:
    cid = community.id
    rows = [
        [
            button(label(ctx, "points", "this_month", on=False), f"pd:{cid}:m"),
            button(label(ctx, "points", "last_month"), f"pd:{cid}:l"),
        ],
        [
            button(label(ctx, "points", "this_year"), f"pd:{cid}:y"),
            button(label(ctx, "points", "everything"), f"pd:{cid}:a"),
        ],
        [button(label(ctx, "points", "type_range"), f"pg:{cid}")],
    ]
    return View("points/export_pick_period", {"community": community}, keyboard(rows))


async def _admin_of(
    session: AsyncSession, ctx: LinliContext, update: Update, cid: int
) -> Community:
    auth = await load_auth(session, ctx, update)
    community = await people.get_community(session, cid)
    points.require_admin(auth, community)
    return community


async def btn_export_community(update: Update, ctx: LinliContext) -> None:
    """pe:<community>"""
    _private_only(update)
    (community_id,) = callback_args(update, "pe", 1)
    async with ctx.svc.db.transaction(write=False) as session:
        community = await _admin_of(session, ctx, update, as_int(community_id))
    await show(update, ctx, _periods_screen(ctx, community))


async def btn_export_period(update: Update, ctx: LinliContext) -> None:
    """pd:<community>:<m|l|y|a>"""
    _private_only(update)
    community_id, code = callback_args(update, "pd", 2)
    async with ctx.svc.db.transaction(write=False) as session:
        community = await _admin_of(session, ctx, update, as_int(community_id))
    start, end = points.period(code, ctx.now(), community.timezone)
    await _send_export(update, ctx, community, start, end)
    await export_reports(update, ctx, community, start, end)  # one period, both books
    await answer(update, ctx)


async def _admin_types(
    update: Update, ctx: LinliContext, prefix: str, kind: str, name: str
) -> None:
    """An admin's button that asks them to type something about their community."""
    _private_only(update)
    (community_id,) = callback_args(update, prefix, 1)
    async with ctx.svc.db.transaction(write=False) as session:
        community = await _admin_of(session, ctx, update, as_int(community_id))
    await ask(update, ctx, kind, str(community.id), name)
    await answer(update, ctx)


async def btn_export_range(update: Update, ctx: LinliContext) -> None:
    """pg:<community>: the admin types two dates."""
    await _admin_types(update, ctx, "pg", "points_range", "points/ask_range")


@answers("points_range")
async def on_range(update: Update, ctx: LinliContext, prompt: people.Prompt) -> None:
    async with ctx.svc.db.transaction(write=False) as session:
        community = await _admin_of(session, ctx, update, as_int(prompt.payload))
    start, end = points.parse_range(_typed(update), community.timezone)
    await _send_export(update, ctx, community, start, end)
    await export_reports(update, ctx, community, start, end)  # one period, both books


async def _send_export(
    update: Update,
    ctx: LinliContext,
    community: Community,
    start: datetime | None,
    end: datetime | None,
) -> None:
    assert community.id is not None
    async with ctx.svc.db.transaction(write=False) as session:
        rows = await points.export_rows(session, community_id=community.id, start=start, end=end)
        names = {
            r.code: r for r in await points.rules(session, community_id=community.id, now=ctx.now())
        }
    chat = update.effective_chat
    assert chat is not None
    zone = ZoneInfo(community.timezone)
    first = start.astimezone(zone).date().isoformat() if start else None
    last = (end - timedelta(microseconds=1)).astimezone(zone).date().isoformat() if end else None
    if not rows:
        await reply(update, ctx, "points/export_empty", first=first, last=last)
        return
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow([label(ctx, "points", f"csv_{h}") for h in CSV_COLUMNS])
    for row in rows:
        e = row.entry
        rule = names[e.rule_code].name(ctx.lang) if e.rule_code in names else (e.rule_code or "")
        writer.writerow(
            [
                e.created_at.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S"),
                e.id,
                e.person_id,
                spreadsheet_safe(row.person),
                e.amount,
                e.kind,
                spreadsheet_safe(rule),
                spreadsheet_safe(e.reason),
                e.by if e.by is not None else "",
                spreadsheet_safe(row.by),
                e.key,
            ]
        )
    # The byte-order mark makes spreadsheet programs read the Chinese names as UTF-8.
    data = out.getvalue().encode("utf-8-sig")
    caption = render(
        ctx,
        "points/export_caption",
        community=community,
        count=len(rows),
        total=sum(r.entry.amount for r in rows),
        first=first,
        last=last,
    )
    filename = EXPORT_FILE.format(start=first or "all", end=last or "all")
    await ctx.bot.send_document(chat.id, document=data, filename=filename, caption=caption)


# --- /rules: what each kind of work earns (admins) -----------------------------------------


async def _rules_screen(
    session: AsyncSession, ctx: LinliContext, community: Community, saved: bool = False
) -> View:
    assert community.id is not None
    found = await points.rules(session, community_id=community.id, now=ctx.now())
    limit = await points.max_award(session, community_id=community.id)
    cid = community.id
    rows = [
        [
            button(
                label(
                    ctx,
                    "points",
                    "rule_item",
                    name=r.name(ctx.lang),
                    points=r.points,
                    active=r.active,
                ),
                f"pi:{cid}:{r.code}",
            )
        ]
        for r in found
    ]
    rows.append([button(label(ctx, "points", "new_rule"), f"pj:{cid}")])
    rows.append([button(label(ctx, "points", "set_max", max=limit), f"py:{cid}")])
    params = {"community": community, "rules": found, "max": limit, "saved": saved}
    return View("points/rules", params, keyboard(rows))


async def _rule_screen(
    session: AsyncSession, ctx: LinliContext, community: Community, code: str
) -> View:
    assert community.id is not None
    found = await points.rule(session, community_id=community.id, code=code, now=ctx.now())
    cid = community.id
    rows = [
        [button(label(ctx, "points", "rule_points"), f"pz:{cid}:{code}")],
        [
            button(
                label(ctx, "points", "turn_off" if found.active else "turn_on"),
                f"po:{cid}:{code}:{state(not found.active)}",
            )
        ],
        [button(label(ctx, "points", "back"), f"pl:{cid}")],
    ]
    return View("points/rule", {"community": community, "rule": found}, keyboard(rows))


async def cmd_rules(update: Update, ctx: LinliContext) -> None:
    async with ctx.svc.db.transaction(write=False) as session:
        auth = await load_auth(session, ctx, update)
        mine = await _admin_communities(session, auth)
        if not mine:
            raise NotAllowed("points_admins_only")
        screens = [await _rules_screen(session, ctx, c) for c in mine[:1]]
        others = mine[1:]
    screen = screens[0]
    if others and screen.markup is not None:
        extra = [[button(c.name, f"pl:{c.id}")] for c in others]
        screen.markup = keyboard([*screen.markup.inline_keyboard, *extra])
    if is_private(update):
        await reply(update, ctx, screen.name, markup=screen.markup, **screen.params)
    else:
        await _private_elsewhere(update, ctx, screen, "rules")


async def btn_rules(update: Update, ctx: LinliContext) -> None:
    """pl:<community>"""
    _private_only(update)
    (community_id,) = callback_args(update, "pl", 1)
    async with ctx.svc.db.transaction(write=False) as session:
        community = await _admin_of(session, ctx, update, as_int(community_id))
        screen = await _rules_screen(session, ctx, community)
    await show(update, ctx, screen)


async def btn_rule(update: Update, ctx: LinliContext) -> None:
    """pi:<community>:<rule>"""
    _private_only(update)
    community_id, code = callback_args(update, "pi", 2)
    async with ctx.svc.db.transaction(write=False) as session:
        community = await _admin_of(session, ctx, update, as_int(community_id))
        screen = await _rule_screen(session, ctx, community, code)
    await show(update, ctx, screen)


async def btn_rule_active(update: Update, ctx: LinliContext) -> None:
    """po:<community>:<rule>:<1|0>: turn the rule on (1) or off (0)."""
    _private_only(update)
    community_id, code, wanted = callback_args(update, "po", 3)
    active = as_state(wanted)
    cid = as_int(community_id)
    async with ctx.svc.db.transaction() as session:
        auth = await load_auth(session, ctx, update)
        await points.edit_rule(
            session, auth=auth, community_id=cid, code=code, now=ctx.now(), active=active
        )
        community = await people.get_community(session, cid)
        screen = await _rule_screen(session, ctx, community, code)
    await show(update, ctx, screen)


async def btn_rule_points(update: Update, ctx: LinliContext) -> None:
    """pz:<community>:<rule>: the admin types the rule's points."""
    _private_only(update)
    community_id, code = callback_args(update, "pz", 2)
    async with ctx.svc.db.transaction(write=False) as session:
        community = await _admin_of(session, ctx, update, as_int(community_id))
        found = await points.rule(
            session, community_id=as_int(community_id), code=code, now=ctx.now()
        )
    await ask(
        update, ctx, "points_rule", f"{community.id}:{code}", "points/ask_rule_points", rule=found
    )
    await answer(update, ctx)


async def btn_new_rule(update: Update, ctx: LinliContext) -> None:
    """pj:<community>: the admin types a new rule's name."""
    await _admin_types(update, ctx, "pj", "points_new_rule", "points/ask_rule_name")


async def btn_max(update: Update, ctx: LinliContext) -> None:
    """py:<community>: the admin types the largest single award."""
    await _admin_types(update, ctx, "py", "points_max", "points/ask_max")


@answers("points_rule")
async def on_rule_points(update: Update, ctx: LinliContext, prompt: people.Prompt) -> None:
    community_id, _, code = prompt.payload.partition(":")
    cid = as_int(community_id)
    async with ctx.svc.db.transaction() as session:
        auth = await load_auth(session, ctx, update)
        await points.edit_rule(
            session, auth=auth, community_id=cid, code=code, now=ctx.now(), points=_typed(update)
        )
        community = await people.get_community(session, cid)
        screen = await _rules_screen(session, ctx, community, saved=True)
    await reply(update, ctx, screen.name, markup=screen.markup, **screen.params)


@answers("points_new_rule")
async def on_new_rule(update: Update, ctx: LinliContext, prompt: people.Prompt) -> None:
    cid = as_int(prompt.payload)
    async with ctx.svc.db.transaction() as session:
        auth = await load_auth(session, ctx, update)
        found = await points.add_rule(
            session, auth=auth, community_id=cid, name=_typed(update), now=ctx.now()
        )
        community = await people.get_community(session, cid)
        screen = await _rule_screen(session, ctx, community, found.code)
    await reply(update, ctx, screen.name, markup=screen.markup, **screen.params)


@answers("points_max")
async def on_max(update: Update, ctx: LinliContext, prompt: people.Prompt) -> None:
    cid = as_int(prompt.payload)
    async with ctx.svc.db.transaction() as session:
        auth = await load_auth(session, ctx, update)
        await points.set_max_award(
            session, auth=auth, community_id=cid, value=_typed(update), now=ctx.now()
        )
        community = await people.get_community(session, cid)
        screen = await _rules_screen(session, ctx, community, saved=True)
    await reply(update, ctx, screen.name, markup=screen.markup, **screen.params)


async def cmd_start_points(update: Update, ctx: LinliContext) -> None:
    """/start points|award|deduct|rules: the deep links groups hand out."""
    payload = ctx.args[0] if ctx.args else ""
    commands = {"points": cmd_points, "award": cmd_award, "deduct": cmd_deduct, "rules": cmd_rules}
    if payload not in commands:
        raise NotFound("stale_button")
    await commands[payload](update, ctx)


def register(app: LinliApp) -> None:
    # Each unit's leads get last month's figures on the 1st (keyed: running every minute adds once).
    delivery.add_rhythm(app, points.monthly_statements)
    # Before basics: these /start payloads are ours, plain /start is basics'.
    app.add_handler(
        CommandHandler(
            "start",
            cmd_start_points,
            filters=filters.Regex(r"^/start (points|award|deduct|rules)$"),
        )
    )
    app.add_handler(CommandHandler("points", cmd_points))
    app.add_handler(CommandHandler("award", cmd_award))
    app.add_handler(CommandHandler("deduct", cmd_deduct))
    app.add_handler(CommandHandler("top", cmd_top))
    app.add_handler(CommandHandler("export", cmd_export))
    app.add_handler(CommandHandler("rules", cmd_rules))
    for prefix, callback in (
        ("pv", btn_view),
        ("pm", btn_more),
        ("pq", btn_units_page),
        ("pu", btn_unit),
        ("pt", btn_pick),
        ("pp", btn_people_page),
        ("pn", btn_next),
        ("pa", btn_amount),
        ("pr", btn_rule_amount),
        ("ps", btn_rule_reason),
        ("pb", btn_back),
        ("pk", btn_type_amount),
        ("pw", btn_type_reason),
        ("pc", btn_confirm),
        ("px", btn_cancel),
        ("ptb", btn_board),
        ("pth", btn_hide),
        ("pe", btn_export_community),
        ("pd", btn_export_period),
        ("pg", btn_export_range),
        ("pl", btn_rules),
        ("pi", btn_rule),
        ("po", btn_rule_active),
        ("pz", btn_rule_points),
        ("pj", btn_new_rule),
        ("py", btn_max),
    ):
        app.add_handler(CallbackQueryHandler(callback, pattern=rf"^{prefix}:"))
