"""/award and /deduct: a lead gives or takes points, by reply or by picking residents;
/correct: a community admin's correction, the one deduction that may leave a balance below
zero (an over-award already spent)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlmodel.ext.asyncio.session import AsyncSession
from telegram import InlineKeyboardButton, Update, User
from telegram.ext import CallbackQueryHandler, CommandHandler, filters

from bot.context import LinliApp, LinliContext
from handlers.common import (
    PAGE,
    View,
    answer,
    answer_privately,
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
    page_count,
    private_only,
    replace,
    replied_to,
    reply,
    rows_of,
    show,
    state,
    typed,
    url_button,
)
from handlers.prompts import answers, ask
from models import people, points, standings
from models.errors import InvalidInput, NotAllowed, NotFound
from models.ledger import Kind
from models.people import Authority, Can, Unit
from models.points import AwardDraft

AMOUNTS = (1, 2, 5, 10, 20)
KINDS = {"a": Kind.award, "d": Kind.deduct, "c": Kind.correct}
CODES = {kind: code for code, kind in KINDS.items()}
PAYLOADS = {Kind.award: "award", Kind.deduct: "deduct", Kind.correct: "correct"}


def _nav(ctx: LinliContext, page: int, pages: int, data: str) -> list[InlineKeyboardButton]:
    """◀ ▶ buttons; `data` has a {} where the page number goes."""
    return page_buttons(ctx, page, pages, data.format)


# --- /award and /deduct ------------------------------------------------------------------


async def cmd_award(update: Update, ctx: LinliContext) -> None:
    await _begin(update, ctx, Kind.award)


async def cmd_deduct(update: Update, ctx: LinliContext) -> None:
    await _begin(update, ctx, Kind.deduct)


async def cmd_correct(update: Update, ctx: LinliContext) -> None:
    await _begin(update, ctx, Kind.correct)


async def _begin(update: Update, ctx: LinliContext, kind: Kind) -> None:
    async with ctx.svc.db.transaction(write=False) as session:
        auth = await load_auth(session, ctx, update)
    if not auth.is_lead:
        raise NotAllowed("leads_only")
    if kind == Kind.correct and not auth.is_admin:
        raise NotAllowed("points_corrections_admins_only")
    target = replied_to(update.effective_message) if not is_private(update) else None
    if target is not None:
        await _begin_for(update, ctx, auth, kind, target)
        return
    if not is_private(update):
        link = keyboard(
            [[url_button(label(ctx, "points", "open_private"), deep_link(ctx, PAYLOADS[kind]))]]
        )
        await reply(update, ctx, "points/award_how", markup=link, kind=kind)
        return
    async with ctx.svc.db.transaction(write=False) as session:
        tops = await _top_units(session, auth, kind)
    if len(tops) == 1 and tops[0].id is not None:
        await _draft_for_unit(update, ctx, auth, kind, tops[0].id)
        return
    await show(update, ctx, _units_screen(ctx, kind, tops, 0))


async def _top_units(session: AsyncSession, auth: Authority, kind: Kind) -> list[Unit]:
    """The units to pick residents under; a correction only in the admin's own communities."""
    if auth.superadmin:
        return list(await people.root_units(session))
    tops = auth.top_units()
    if kind == Kind.correct:
        return [u for u in tops if auth.may(Can.admin_community, community_id=u.community_id)]
    return tops


def _units_screen(ctx: LinliContext, kind: Kind, tops: Sequence[Unit], page: int) -> View:
    pages = page_count(len(tops))
    page = min(max(page, 0), pages - 1)
    k = CODES[kind]
    rows = [[button(u.name, f"pu:{k}:{u.id}")] for u in tops[page * PAGE : (page + 1) * PAGE]]
    rows.append(_nav(ctx, page, pages, f"pq:{k}:{{}}"))
    return View("points/pick_unit", {"kind": kind, "empty": not tops}, keyboard(rows))


def _kind(code: str) -> Kind:
    if code not in KINDS:
        raise InvalidInput("stale_button")
    return KINDS[code]


async def btn_units_page(update: Update, ctx: LinliContext) -> None:
    """pq:<a|d>:<page>"""
    private_only(update)
    code, page = callback_args(update, "pq", 2)
    async with ctx.svc.db.transaction(write=False) as session:
        auth = await load_auth(session, ctx, update)
        if not auth.is_lead:
            raise NotAllowed("leads_only")
        tops = await _top_units(session, auth, _kind(code))
    await show(update, ctx, _units_screen(ctx, _kind(code), tops, as_int(page)))


async def btn_unit(update: Update, ctx: LinliContext) -> None:
    """pu:<a|d>:<unit>: award residents of this unit."""
    private_only(update)
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
        found = await standings.verified_memberships(session, person_id=target.id)
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
    await answer_privately(
        update, ctx, screen, PAYLOADS[kind], feature="points", offer="award_open_private"
    )


async def _people_screen(
    session: AsyncSession, ctx: LinliContext, draft: AwardDraft, page: int
) -> View:
    """Residents of the draft's unit, with a tick on each one picked."""
    unit = await people.get_unit(session, draft.unit_id)
    _, total = await people.residents_under(session, unit, offset=0, limit=0)
    pages = page_count(total)
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
    private_only(update)  # the list shows flat numbers
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
    private_only(update)  # the list shows flat numbers
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


@answers("points_amount")
async def on_amount(update: Update, ctx: LinliContext, prompt: people.Prompt) -> None:
    async with ctx.svc.db.transaction() as session:
        auth = await load_auth(session, ctx, update)
        draft = await points.set_amount(
            session,
            auth=auth,
            draft_id=as_int(prompt.payload),
            amount=typed(update),
            now=ctx.now(),
        )
        screen = await _after_amount(session, ctx, draft)
    await reply(update, ctx, screen.name, markup=screen.markup, **screen.params)


@answers("points_reason")
async def on_reason(update: Update, ctx: LinliContext, prompt: people.Prompt) -> None:
    async with ctx.svc.db.transaction() as session:
        auth = await load_auth(session, ctx, update)
        draft = await points.set_reason(
            session, auth=auth, draft_id=as_int(prompt.payload), text=typed(update), now=ctx.now()
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


async def cmd_start_award(update: Update, ctx: LinliContext) -> None:
    """/start award|deduct|correct: the deep links groups hand out."""
    payload = ctx.args[0] if ctx.args else ""
    commands = {"award": cmd_award, "deduct": cmd_deduct, "correct": cmd_correct}
    if payload not in commands:
        raise NotFound("stale_button")
    await commands[payload](update, ctx)


def register(app: LinliApp) -> None:
    # Before basics: these /start payloads are ours, plain /start is basics'.
    app.add_handler(
        CommandHandler(
            "start", cmd_start_award, filters=filters.Regex(r"^/start (award|deduct|correct)$")
        )
    )
    app.add_handler(CommandHandler("award", cmd_award))
    app.add_handler(CommandHandler("deduct", cmd_deduct))
    app.add_handler(CommandHandler("correct", cmd_correct))
    for prefix, callback in (
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
    ):
        app.add_handler(CallbackQueryHandler(callback, pattern=rf"^{prefix}:"))
