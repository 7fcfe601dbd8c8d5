"""/appoint, /leads and stepping down: who leads which unit, and how that changes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlmodel.ext.asyncio.session import AsyncSession
from telegram import Update
from telegram.ext import CommandHandler, filters

from bot.context import LinliApp, LinliContext
from handlers import common, flowui, pickers
from models import flows, outbox, people
from models.errors import InvalidInput, NotAllowed, NotFound
from models.flows import Flow
from models.people import Authority, Can, Person, RoleKind, Unit

KINDS = {"l": RoleKind.lead, "a": RoleKind.admin}
LEADS_PER_UNIT = 6  # more names on one line stop being readable; the rest are counted
LED_UNITS_LIMIT = 300  # units with leads listed per top unit before "…and N more"


@dataclass
class Level:
    """One unit and who leads it, as /leads shows it."""

    unit: Unit
    leads: list[tuple[Person, str]]
    extra: int = 0
    names: list[str] = field(default_factory=list)


@dataclass
class Home:
    community: people.Community
    building: Unit
    pending: bool
    levels: list[Level]


@dataclass
class Section:
    names: list[str]
    levels: list[Level]


# --- /appoint: a guided flow (kind "appoint") on the unit picker ------------------------------
# data: target (the person, 0 until chosen), target_name, unit (the picker's). By reply in a
# group the person is known and the flow runs there; else it runs privately (the resident
# picker, field "person").

KIND = "appoint"
flowui.on_cancel(KIND, "leads/cancelled")


async def cmd_appoint(update: Update, ctx: LinliContext) -> None:
    message = update.effective_message
    chat = update.effective_chat
    assert message is not None and chat is not None
    uid = common.user_id(update)
    async with ctx.svc.db.transaction(write=False) as session:
        auth = await common.load_auth(session, ctx, update)
        if not auth.is_lead:
            raise NotAllowed("appoint_not_lead")
    who = common.replied_to(message)
    if who is not None and who.is_bot:
        raise InvalidInput("cant_appoint_bot")
    target = 0
    if who is not None:
        await common.note_replied(ctx, who)
        target = who.id
    async with ctx.svc.db.transaction() as session:
        start = 0
        if not common.is_private(update):
            link = await people.link_for(
                session, chat_id=chat.id, thread_id=common.thread_of(message)
            )
            if link is not None and auth.covers(await people.get_unit(session, link.unit_id)):
                start = link.unit_id
        person = await people.get_person(session, target) if target else None
        flow = await flows.start(
            session, kind=KIND, owner_id=uid, now=ctx.now(),
            data={"target": target, "target_name": person.name if person else ""},
        )  # fmt: skip
        view = await pickers.unit_view(session, ctx, update, flow, field="unit", can=Can.lead,
                                       heading="leads/pick_unit", start=start)  # fmt: skip
        if not target:  # the rest (a list of residents) happens privately, never in a group
            flow.private = True
            await session.flush()
    if target:
        # By reply the person is known: picking the unit and role may happen right here.
        await common.reply(update, ctx, view.name, markup=view.markup, **view.params)
        return
    # Picking from a list of residents happens privately: the group sees no list of names.
    await common.answer_privately(update, ctx, view, "appoint", feature="leads")


async def cmd_start_appoint(update: Update, ctx: LinliContext) -> None:
    """/start appoint: the link a group hands out (the picker, privately)."""
    await cmd_appoint(update, ctx)


async def _chosen_unit(session: AsyncSession, auth: Authority, flow: Flow) -> Unit:
    if not isinstance(flow.data.get("unit"), int):
        raise InvalidInput("stale_button")
    unit = await people.get_unit(session, flow.data["unit"])
    people.require(auth, unit)
    return unit


async def _role_view(
    session: AsyncSession, ctx: LinliContext, auth: Authority, flow: Flow
) -> common.View:
    f, unit = flowui.flow_id(flow), await _chosen_unit(session, auth, flow)
    person = await people.get_person(session, int(flow.data.get("target") or 0))
    if person is None:
        raise InvalidInput("stale_button")
    choices = [common.button(common.label(ctx, "leads", "role_lead"), f"ap:{f}:l")]
    if auth.covers(unit, kind=RoleKind.admin):
        choices.append(common.button(common.label(ctx, "leads", "role_admin"), f"ap:{f}:a"))
    rows = [choices, flowui.cancel_row(ctx, flow)]
    params = {"target": person, "names": await people.lineage_names(session, unit)}
    return common.View("leads/pick_role", params, common.keyboard(rows))


@pickers.chosen(KIND)
async def after_pick(update: Update, ctx: LinliContext, flow: Flow, field: str) -> None:
    """The unit is chosen: the role for the person replied to, or first the person (the one
    resident picker, privately); the person is chosen: the role."""
    if field == "unit" and not flow.data.get("target"):
        await pickers.residents(
            update, ctx, flow, field="person", unit_id=int(flow.data["unit"]), multi=False,
            can=Can.lead, self_ok=True, heading="leads/pick_person",
            back=("leads", "up", f"apu:{flowui.flow_id(flow)}"),
        )  # fmt: skip
        return
    async with ctx.svc.db.transaction() as session:
        auth = await common.load_auth(session, ctx, update)
        if field == "person":  # the picker checked: a verified resident under the unit
            flow = await flowui.load(session, ctx, update, flowui.flow_id(flow), kind=KIND)
            person = await people.get_person(session, int(flow.data[field][0]))
            if person is None:
                raise NotFound("unknown_person")
            await flows.update(
                session, flow, now=ctx.now(), target=person.id, target_name=person.name
            )
        view = await _role_view(session, ctx, auth, flow)
    await common.show(update, ctx, view)


@common.on_button("apu")
async def btn_up(update: Update, ctx: LinliContext) -> None:
    """From the resident picker back to the unit picker, at the unit chosen."""
    (fid,) = common.callback_args(update, "apu", 1)
    async with ctx.svc.db.transaction() as session:
        flow = await flowui.load(session, ctx, update, fid, kind=KIND)
    await pickers.units(update, ctx, flow, field="unit", can=Can.lead, heading="leads/pick_unit",
                        start=int(flow.data.get("unit") or 0))  # fmt: skip


@common.on_button("ap")
async def btn_appoint(update: Update, ctx: LinliContext) -> None:
    fid, code = common.callback_args(update, "ap", 2)
    if code not in KINDS:
        raise InvalidInput("stale_button")
    kind = KINDS[code]
    async with ctx.svc.db.transaction() as session:
        auth = await common.load_auth(session, ctx, update)
        granted = False

        async def make(flow: Flow) -> int:
            nonlocal granted
            unit = await _chosen_unit(session, auth, flow)
            person_id = int(flow.data.get("target") or 0)
            if not person_id:
                raise InvalidInput("stale_button")
            role, granted = await people.grant_role(
                session, auth=auth, unit_id=unit.id or 0, person_id=person_id, kind=kind,
                now=ctx.now(),
            )  # fmt: skip
            if granted:
                await _tell_appointed(session, update, role, unit, person_id, kind, ctx)
            return role.id or 0

        flow, made = await flows.confirm(
            session, flow_id=common.as_int(fid), owner_id=common.user_id(update), now=ctx.now(),
            kind=KIND, in_private=common.is_private(update), make=make,
        )  # fmt: skip
        if made:
            unit = await people.get_unit(session, int(flow.data["unit"]))
            person = await people.get_person(session, int(flow.data["target"]))
    if not made:  # a double tap: the first one appointed
        await common.answer(update, ctx)
        return
    name = "leads/appointed" if granted else "leads/already"
    await common.edit(update, ctx, name, target=person, unit=unit, kind=kind)


async def _tell_appointed(
    session: AsyncSession,
    update: Update,
    role: people.Role,
    unit: Unit,
    person_id: int,
    kind: str,
    ctx: LinliContext,
) -> None:
    """Through the outbox: quiet hours hold, a failure is recorded, and someone who never opened
    a private chat is asked to, in the group where they were appointed."""
    chat = update.effective_chat
    here = (
        await people.link_for(
            session, chat_id=chat.id, thread_id=common.thread_of(update.effective_message)
        )
        if chat is not None and not common.is_private(update)
        else None
    )
    community = await people.get_community(session, unit.community_id)
    await outbox.enqueue_private(
        session,
        key=f"lead:{role.id}:appointed",
        person_id=person_id,
        community_id=unit.community_id,
        fallback_link_id=here.id if here is not None else None,
        template="leads/you_are_lead",
        context={
            "names": await people.lineage_names(session, unit),
            "kind": kind,
            "community": {"name": community.name},
        },
        now=ctx.now(),
    )


# --- /leads ---------------------------------------------------------------------------------


def _levels(
    units: Sequence[Unit], roles: Sequence[tuple[people.Role, Person]], *, keep_empty: bool
) -> list[Level]:
    by_unit: dict[int, list[tuple[Person, str]]] = {}
    for role, person in roles:
        by_unit.setdefault(role.unit_id, []).append((person, role.kind))
    out = []
    for unit in units:
        leads = by_unit.get(unit.id or 0, [])
        if leads or keep_empty:
            out.append(
                Level(unit, leads[:LEADS_PER_UNIT], extra=max(0, len(leads) - LEADS_PER_UNIT))
            )
    return out


async def _send(update: Update, text: str) -> None:
    """Like common.reply, for a text already rendered (and cut to fit)."""
    message = update.effective_message
    assert message is not None
    await message.reply_text(text, do_quote=not common.is_private(update))


async def _lineage(session: AsyncSession, unit: Unit) -> list[Unit]:
    found = await people.units_by_id(session, unit.lineage)
    return [found[i] for i in unit.lineage if i in found]


async def _group_leads(update: Update, ctx: LinliContext) -> None:
    chat, message = update.effective_chat, update.effective_message
    assert chat is not None
    async with ctx.svc.db.transaction(write=False) as session:
        link = await people.link_for(session, chat_id=chat.id, thread_id=common.thread_of(message))
        if link is None:
            raise NotFound("chat_not_linked")
        unit = await people.get_unit(session, link.unit_id)
        lineage = await _lineage(session, unit)
        levels = _levels(lineage, await people.roles_in(session, unit.lineage), keep_empty=True)
        below = await people.children(session, community_id=unit.community_id, parent_id=unit.id)
        roles_below = await people.roles_in(session, [u.id for u in below if u.id is not None])
        below_levels = _levels(below, roles_below, keep_empty=True)

    text = common.render(
        ctx, "leads/leads_group", above=levels[:-1], here=levels[-1], below=below_levels
    )
    await _send(update, text)


async def _private_leads(update: Update, ctx: LinliContext) -> None:
    uid = common.user_id(update)
    homes: list[Home] = []
    sections: list[Section] = []
    hidden = 0
    async with ctx.svc.db.transaction(write=False) as session:
        for m in await people.memberships(session, person_id=uid):
            if m.resident.status not in (
                people.ResidentStatus.verified,
                people.ResidentStatus.pending,
            ):
                continue
            lineage = await _lineage(session, m.unit)
            roles = await people.roles_in(session, m.unit.lineage)
            pending = m.resident.status == people.ResidentStatus.pending
            homes.append(
                Home(m.community, m.building, pending, _levels(lineage, roles, keep_empty=False))
            )
        auth = await common.load_auth(session, ctx, update)
        for top in await pickers.tops(session, auth, can=Can.lead, community_id=None):
            led, total = await people.led_units_under(session, top, limit=LED_UNITS_LIMIT)
            hidden += total - len(led)
            roles = await people.roles_in(session, [u.id for u in led if u.id is not None])
            levels = _levels(led, roles, keep_empty=False)
            top_names = await people.lineage_names(session, top)
            above = len(top.lineage) - 1  # entries are named from the top unit down
            known = await people.units_by_id(session, [i for u in led for i in u.lineage])
            for level in levels:
                level.names = [known[i].name for i in level.unit.lineage[above:] if i in known]
            sections.append(Section(top_names, levels))
    text = common.render(ctx, "leads/leads_private", homes=homes, sections=sections, more=hidden)
    await _send(update, text)


async def cmd_leads(update: Update, ctx: LinliContext) -> None:
    if common.is_private(update):
        await _private_leads(update, ctx)
    else:
        await _group_leads(update, ctx)


# --- stepping down ---------------------------------------------------------------------------


@common.on_button("sd")
async def btn_step_down(update: Update, ctx: LinliContext) -> None:
    (role_id,) = common.callback_args(update, "sd", 1)
    rid = common.as_int(role_id)
    async with ctx.svc.db.transaction(write=False) as session:
        auth = await common.load_auth(session, ctx, update)
        found = await people.role_with_unit(session, rid)
        if found is not None:
            role, unit, holder = found
            own = role.person_id == auth.person_id
            # The same rule as the removal itself (people.revoke_role).
            if not auth.may_remove(role, unit):
                raise NotAllowed("not_your_unit", unit=unit.name)
            names = await people.lineage_names(session, unit)
    if found is None:
        await common.answer(update, ctx, "leads/already_done")
        return
    markup = common.keyboard(
        [
            [
                common.button(common.label(ctx, "leads", "step_down_yes"), f"sdy:{rid}"),
                common.button(common.label(ctx, "leads", "step_down_no"), f"sdn:{rid}"),
            ]
        ]
    )
    await common.edit(
        update,
        ctx,
        "leads/step_down_confirm",
        markup=markup,
        names=names,
        kind=role.kind,
        own=own,
        holder=holder,
    )


@common.on_button("sdy")
async def btn_step_down_yes(update: Update, ctx: LinliContext) -> None:
    (role_id,) = common.callback_args(update, "sdy", 1)
    rid = common.as_int(role_id)
    async with ctx.svc.db.transaction() as session:
        auth = await common.load_auth(session, ctx, update)
        found = await people.role_with_unit(session, rid)
        if found is not None:
            role, unit, holder = found
            names = await people.lineage_names(session, unit)
            await people.revoke_role(session, auth=auth, role_id=rid)
            if holder.id != auth.person_id:
                await outbox.enqueue_private(
                    session,
                    key=f"lead:{rid}:removed",
                    person_id=holder.id,
                    community_id=unit.community_id,
                    template="leads/removed",
                    context={
                        "names": names,
                        "kind": role.kind,
                        "by": ctx.person.name if ctx.person else "",
                    },
                    now=ctx.now(),
                )
    if found is None:
        await common.answer(update, ctx, "leads/already_done")
        return
    own = holder.id == auth.person_id
    params: dict[str, Any] = {"names": names, "kind": role.kind, "holder": holder}
    await common.edit(update, ctx, "leads/stepped_down", own=own, **params)


@common.on_button("sdn")
async def btn_step_down_no(update: Update, ctx: LinliContext) -> None:
    common.callback_args(update, "sdn", 1)
    await common.edit(update, ctx, "leads/step_down_kept")


def register(app: LinliApp) -> None:
    # Before basics: /start appoint is ours, plain /start is basics'.
    app.add_handler(
        CommandHandler("start", cmd_start_appoint, filters=filters.Regex(r"^/start appoint$"))
    )
    app.add_handler(CommandHandler("appoint", cmd_appoint))
    common.add_buttons(app, common.buttons_of(__name__))
    app.add_handler(CommandHandler("leads", cmd_leads))
