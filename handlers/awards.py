"""/award and /deduct: a lead gives or takes points, by reply or by picking residents;
/correct: a community admin's correction, the one deduction that may leave a balance below
zero (an over-award already spent)."""

from __future__ import annotations

from sqlmodel.ext.asyncio.session import AsyncSession
from telegram import InlineKeyboardButton, Update, User
from telegram.ext import CommandHandler, filters

from bot.context import LinliApp, LinliContext
from handlers import common, flowui, pickers
from models import points, standings
from models.errors import NotAllowed, NotFound
from models.flows import Flow
from models.ledger import Kind
from models.people import Authority, Can
from models.points import AwardDraft

AMOUNTS = (1, 2, 5, 10, 20)
PAYLOADS = {Kind.award: "award", Kind.deduct: "deduct", Kind.correct: "correct"}


# --- /award and /deduct ------------------------------------------------------------------


async def cmd_award(update: Update, ctx: LinliContext) -> None:
    await _begin(update, ctx, Kind.award)


async def cmd_deduct(update: Update, ctx: LinliContext) -> None:
    await _begin(update, ctx, Kind.deduct)


async def cmd_correct(update: Update, ctx: LinliContext) -> None:
    await _begin(update, ctx, Kind.correct)


async def _begin(update: Update, ctx: LinliContext, kind: Kind) -> None:
    async with ctx.svc.db.transaction(write=False) as session:
        auth = await common.load_auth(session, ctx, update)
    if not auth.is_lead:
        raise NotAllowed("leads_only")
    if kind == Kind.correct and not auth.is_admin:
        raise NotAllowed("points_corrections_admins_only")
    target = common.replied_to(update.effective_message) if not common.is_private(update) else None
    if target is not None:
        await _begin_for(update, ctx, auth, kind, target)
        return
    if not common.is_private(update):
        await common.offer_private(
            update, ctx, PAYLOADS[kind], feature="points", offer="award_how", kind=kind
        )
        return
    can = Can.admin if kind == Kind.correct else Can.lead
    async with ctx.svc.db.transaction() as session:
        tops = await pickers.tops(session, auth, can=can, community_id=None)
        if kind == Kind.correct:
            tops = [u for u in tops if auth.may(Can.admin_community, community_id=u.community_id)]
        one = tops[0].id if len(tops) == 1 else None
        draft = await points.start_draft(session, auth=auth, kind=kind, now=ctx.now(), unit_id=one)
        flow = await _flow_of(session, draft)
    if one is None:  # several units (or none): the unit picker first
        await pickers.units(update, ctx, flow, field="unit_id", can=can, heading=_heading(kind))
        return
    await _pick_people(update, ctx, flow, draft)


def _heading(kind: str) -> str:
    return f"points/heading_{kind}"


async def _flow_of(session: AsyncSession, draft: AwardDraft) -> Flow:
    flow = await session.get(Flow, draft.id)
    assert flow is not None
    return flow


async def _pick_people(update: Update, ctx: LinliContext, flow: Flow, draft: AwardDraft) -> None:
    """The resident picker (several at once, search by name), the draft's picks ticked."""
    await pickers.residents(
        update,
        ctx,
        flow,
        field="people",
        unit_id=draft.unit_id,
        multi=True,
        limit=points.MAX_PICKED,
        picked=draft.person_ids,
        heading=_heading(draft.kind),
    )


@pickers.chosen(points.AWARD)
async def after_pick(update: Update, ctx: LinliContext, flow: Flow, field: str) -> None:
    """The unit chosen: its residents; the residents chosen: the amount."""
    fid = flowui.flow_id(flow)
    async with ctx.svc.db.transaction() as session:
        auth = await common.load_auth(session, ctx, update)
        if field == "unit_id":
            draft = await points.set_unit(
                session, auth=auth, draft_id=fid, unit_id=int(flow.data["unit_id"]), now=ctx.now()
            )
            live = await _flow_of(session, draft)
        else:
            draft = await points.set_people(
                session, auth=auth, draft_id=fid, person_ids=flow.data["people"], now=ctx.now()
            )
            screen = await _amount_screen(session, ctx, draft)
    if field == "unit_id":
        await _pick_people(update, ctx, live, draft)
        return
    await common.show(update, ctx, screen)


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
    await common.answer_privately(
        update, ctx, screen, PAYLOADS[kind], feature="points", offer="award_open_private"
    )


async def _amount_screen(
    session: AsyncSession, ctx: LinliContext, draft: AwardDraft
) -> common.View:
    limit = await points.max_award(session, community_id=draft.community_id)
    amounts = [common.button(f"{n}", f"pa:{draft.id}:{n}") for n in AMOUNTS if n <= limit]
    rows = common.rows_of(amounts, len(AMOUNTS))
    if draft.kind == Kind.award:
        found = await points.rules(session, community_id=draft.community_id, now=ctx.now())
        shortcuts = [
            common.button(
                common.label(ctx, "points", "rule_amount", name=r.name(ctx.lang), points=r.points),
                f"pr:{draft.id}:{r.code}",
            )
            for r in found
            if r.active and r.code != points.WELCOME and r.points <= limit
        ]
        rows += common.rows_of(shortcuts, 2)
    rows.append([common.button(common.label(ctx, "points", "type_amount"), f"pk:{draft.id}")])
    rows.append(_cancel(ctx, draft))
    who = await points.draft_people(session, draft)
    return common.View(
        "points/pick_amount", {"draft": draft, "who": who, "max": limit}, common.keyboard(rows)
    )


def _cancel(ctx: LinliContext, draft: AwardDraft) -> list[InlineKeyboardButton]:
    """The one cancel button of every flow (fx:<draft>)."""
    return [common.button(common.label(ctx, "flows", "cancel"), f"{flowui.CANCEL}:{draft.id}")]


async def _reason_screen(
    session: AsyncSession, ctx: LinliContext, draft: AwardDraft
) -> common.View:
    rows: list[list[InlineKeyboardButton]] = []
    if draft.kind == Kind.award:
        found = await points.rules(session, community_id=draft.community_id, now=ctx.now())
        reasons = [
            common.button(r.name(ctx.lang), f"ps:{draft.id}:{r.code}")
            for r in found
            if r.active and r.code != points.WELCOME
        ]
        rows += common.rows_of(reasons, 2)
    rows.append([common.button(common.label(ctx, "points", "type_reason"), f"pw:{draft.id}")])
    rows.append([common.button(common.label(ctx, "points", "back"), f"pb:{draft.id}")])
    rows.append(_cancel(ctx, draft))
    who = await points.draft_people(session, draft)
    return common.View("points/pick_reason", {"draft": draft, "who": who}, common.keyboard(rows))


async def _confirm_screen(
    session: AsyncSession, ctx: LinliContext, draft: AwardDraft
) -> common.View:
    rows = [
        [common.button(common.label(ctx, "points", "confirm"), f"pc:{draft.id}")],
        [common.button(common.label(ctx, "points", "back"), f"pb:{draft.id}")],
        _cancel(ctx, draft),
    ]
    params = await _draft_params(session, ctx, draft)
    return common.View("points/confirm", params, common.keyboard(rows))


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
    common.private_only(update)  # every step of a draft is in the lead's private chat
    args = common.callback_args(update, prefix, count)
    return common.as_int(args[0]), args[1:]


async def _set_amount(update: Update, ctx: LinliContext, draft_id: int, amount: str) -> None:
    """The amount, tapped or typed; then the reason (or the confirmation, if a rule gave it)."""
    async with ctx.svc.db.transaction() as session:
        auth = await common.load_auth(session, ctx, update)
        draft = await points.set_amount(
            session, auth=auth, draft_id=draft_id, amount=amount, now=ctx.now()
        )
        if draft.reason and draft.kind == Kind.award:
            screen = await _confirm_screen(session, ctx, draft)
        else:
            screen = await _reason_screen(session, ctx, draft)
    await common.show(update, ctx, screen)


@common.on_button("pa")
async def btn_amount(update: Update, ctx: LinliContext) -> None:
    """pa:<draft>:<amount>"""
    draft_id, (amount,) = _draft_id(update, "pa", 2)
    await _set_amount(update, ctx, draft_id, amount)


async def _choose_rule(update: Update, ctx: LinliContext, prefix: str, *, amount: bool) -> None:
    draft_id, (code,) = _draft_id(update, prefix, 2)
    async with ctx.svc.db.transaction() as session:
        auth = await common.load_auth(session, ctx, update)
        draft = await points.choose_rule(
            session, auth=auth, draft_id=draft_id, code=code, now=ctx.now(), with_amount=amount
        )
        screen = await _confirm_screen(session, ctx, draft)
    await common.show(update, ctx, screen)


@common.on_button("pr")
async def btn_rule_amount(update: Update, ctx: LinliContext) -> None:
    """pr:<draft>:<rule>: the rule's points for the rule's work."""
    await _choose_rule(update, ctx, "pr", amount=True)


@common.on_button("ps")
async def btn_rule_reason(update: Update, ctx: LinliContext) -> None:
    """ps:<draft>:<rule>: the amount already chosen, for the rule's work."""
    await _choose_rule(update, ctx, "ps", amount=False)


@common.on_button("pb")
async def btn_back(update: Update, ctx: LinliContext) -> None:
    """pb:<draft>: back to the amount."""
    draft_id, _ = _draft_id(update, "pb")
    async with ctx.svc.db.transaction() as session:
        auth = await common.load_auth(session, ctx, update)
        draft, _unit = await points.get_draft(session, auth=auth, draft_id=draft_id, now=ctx.now())
        screen = await _amount_screen(session, ctx, draft)
    await common.show(update, ctx, screen)


async def _ask_about_draft(update: Update, ctx: LinliContext, prefix: str, step: str) -> None:
    draft_id, _ = _draft_id(update, prefix)
    async with ctx.svc.db.transaction() as session:
        auth = await common.load_auth(session, ctx, update)
        draft, _unit = await points.get_draft(session, auth=auth, draft_id=draft_id, now=ctx.now())
        limit = await points.max_award(session, community_id=draft.community_id)
        flow = await _flow_of(session, draft)
    await flowui.ask(update, ctx, flow, step=step, template=f"points/ask_{step}", max=limit)
    await common.answer(update, ctx)


@common.on_button("pk")
async def btn_type_amount(update: Update, ctx: LinliContext) -> None:
    """pk:<draft>: the lead types a number."""
    await _ask_about_draft(update, ctx, "pk", "amount")


@common.on_button("pw")
async def btn_type_reason(update: Update, ctx: LinliContext) -> None:
    """pw:<draft>: the lead types the reason."""
    await _ask_about_draft(update, ctx, "pw", "reason")


@flowui.answers(points.AWARD, "amount")
async def on_amount(update: Update, ctx: LinliContext, flow: Flow, text: str) -> None:
    await _set_amount(update, ctx, flowui.flow_id(flow), text)


@flowui.answers(points.AWARD, "reason")
async def on_reason(update: Update, ctx: LinliContext, flow: Flow, text: str) -> None:
    async with ctx.svc.db.transaction() as session:
        auth = await common.load_auth(session, ctx, update)
        draft = await points.set_reason(
            session, auth=auth, draft_id=flowui.flow_id(flow), text=text, now=ctx.now()
        )
        if draft.amount is None:
            screen = await _amount_screen(session, ctx, draft)
        else:
            screen = await _confirm_screen(session, ctx, draft)
    await common.show(update, ctx, screen)


@common.on_button("pc")
async def btn_confirm(update: Update, ctx: LinliContext) -> None:
    """pc:<draft>: save it. A second tap finds it saved and changes nothing."""
    draft_id, _ = _draft_id(update, "pc")
    async with ctx.svc.db.transaction() as session:
        auth = await common.load_auth(session, ctx, update)
        draft, _posted, changed = await points.confirm_draft(
            session, auth=auth, draft_id=draft_id, now=ctx.now()
        )
        params = await _draft_params(session, ctx, draft)
    screen = common.View("points/done", params)
    note = None if changed else "points/already_saved"  # a second tap finds it saved
    await common.show(update, ctx, screen, note=note, alert=True)


async def cmd_start_award(update: Update, ctx: LinliContext) -> None:
    """/start award|deduct|correct: the deep links groups hand out."""
    payload = ctx.args[0] if ctx.args else ""
    commands = {"award": cmd_award, "deduct": cmd_deduct, "correct": cmd_correct}
    if payload not in commands:
        raise NotFound("stale_button")
    await commands[payload](update, ctx)


def register(app: LinliApp) -> None:
    flowui.on_cancel(points.AWARD, "points/cancelled")
    # Before basics: these /start payloads are ours, plain /start is basics'.
    app.add_handler(
        CommandHandler(
            "start", cmd_start_award, filters=filters.Regex(r"^/start (award|deduct|correct)$")
        )
    )
    app.add_handler(CommandHandler("award", cmd_award))
    app.add_handler(CommandHandler("deduct", cmd_deduct))
    app.add_handler(CommandHandler("correct", cmd_correct))
    common.add_buttons(app, common.buttons_of(__name__))
