"""/appoint, /leads and stepping down: who leads which unit, and how that changes."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlmodel.ext.asyncio.session import AsyncSession
from telegram import ChatMember, InlineKeyboardButton, Update
from telegram.error import TelegramError
from telegram.ext import CallbackQueryHandler, CommandHandler, filters

from bot.context import LinliApp, LinliContext
from handlers import pickers
from handlers.common import (
    PAGE,
    View,
    answer,
    answer_privately,
    as_int,
    button,
    callback_args,
    clamp_page,
    edit,
    is_private,
    keyboard,
    label,
    load_auth,
    note_replied,
    page_buttons,
    page_count,
    paged,
    plain,
    private_only,
    render,
    replied_to,
    reply,
    rows_of,
    thread_of,
    user_id,
)
from models import outbox, people
from models.errors import InvalidInput, NotAllowed, NotFound
from models.people import Authority, Can, Person, RoleKind, Unit

KINDS = {"l": RoleKind.lead, "a": RoleKind.admin}
TEXT_BUDGET = 3900  # UTF-16 units; Telegram refuses more than 4096
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


# --- /appoint -------------------------------------------------------------------------------


def _starter(update: Update, by: str) -> int:
    """The tapper, who must be the person who opened this picker."""
    uid = user_id(update)
    if as_int(by, telegram_id=True) != uid:
        raise NotAllowed("not_your_picker")
    return uid


async def _unit_buttons(
    session: AsyncSession, ctx: LinliContext, units: Sequence[Unit], by: int, target: int
) -> list[InlineKeyboardButton]:
    """A unit with units below opens; any other is chosen at once (one tap fewer)."""
    ids = [u.id for u in units if u.id is not None]
    parents = await people.units_with_children(session, ids)
    out = []
    for u in units:
        if u.id in parents:
            out.append(
                button(label(ctx, "leads", "open", unit=u.name), f"apn:{by}:{target}:{u.id}:0")
            )
        else:
            out.append(button(u.name, f"aps:{by}:{target}:{u.id}"))
    return out


async def _target(session: AsyncSession, target: int) -> Person | None:
    if not target:
        return None
    person = await people.get_person(session, target)
    if person is None:
        raise NotFound("unknown_person")
    return person


async def _unit_view(
    session: AsyncSession,
    ctx: LinliContext,
    auth: Authority,
    *,
    by: int,
    target: int,
    unit_id: int,
    page: int,
) -> View:
    """The tree picker: the appointer's top units (unit_id 0), or one unit and those below it."""
    person = await _target(session, target)
    tops = await pickers.tops(session, auth, can=Can.lead, community_id=None)
    if not unit_id:
        if not tops:
            return View("leads/no_units")
        if len(tops) > 1:
            first, page, pages = paged(tops, page)
            rows = rows_of(await _unit_buttons(session, ctx, first, by, target), 1)
            rows.append(page_buttons(ctx, page, pages, f"apn:{by}:{target}:0:{{}}"))
            rows.append([button(label(ctx, "leads", "cancel"), f"apx:{by}")])
            params: dict[str, Any] = {"target": person, "names": [], "page": page}
            params["pages"] = pages
            return View("leads/pick_unit", params, keyboard(rows))
        unit_id = tops[0].id or 0
    unit = await people.get_unit(session, unit_id)
    people.require(auth, unit)
    below = await people.children(session, community_id=unit.community_id, parent_id=unit.id)
    shown, page, pages = paged(below, page)
    rows = [[button(label(ctx, "leads", "choose", unit=unit.name), f"aps:{by}:{target}:{unit.id}")]]
    rows += rows_of(await _unit_buttons(session, ctx, shown, by, target), 2)
    rows.append(page_buttons(ctx, page, pages, f"apn:{by}:{target}:{unit.id}:{{}}"))
    parent = await people.get_unit(session, unit.parent_id) if unit.parent_id else None
    if parent is not None and auth.covers(parent):
        rows.append([button(label(ctx, "leads", "up"), f"apn:{by}:{target}:{parent.id}:0")])
    elif len(tops) > 1:
        rows.append([button(label(ctx, "leads", "up"), f"apn:{by}:{target}:0:0")])
    rows.append([button(label(ctx, "leads", "cancel"), f"apx:{by}")])
    params = {
        "target": person,
        "names": await people.lineage_names(session, unit),
        "page": page,
        "pages": pages,
    }
    return View("leads/pick_unit", params, keyboard(rows))


async def _person_view(
    session: AsyncSession, ctx: LinliContext, auth: Authority, *, by: int, unit_id: int, page: int
) -> View:
    """Verified residents of the unit's subtree, by name only: this may be shown in a group."""
    unit = await people.get_unit(session, unit_id)
    people.require(auth, unit)
    found, total = await people.residents_under(session, unit, offset=page * PAGE, limit=PAGE)
    if not found and page != clamp_page(page, total, PAGE):
        page = clamp_page(page, total, PAGE)  # residents left since the page was drawn
        found, total = await people.residents_under(session, unit, offset=page * PAGE, limit=PAGE)
    choices = [button(p.name[:40] or "?", f"apr:{by}:{unit_id}:{p.id}") for _, p in found]
    rows = rows_of(choices, 2)
    rows.append(page_buttons(ctx, page, page_count(total), lambda p: f"app:{by}:{unit_id}:{p}"))
    rows.append([button(label(ctx, "leads", "up"), f"apn:{by}:0:{unit_id}:0")])
    rows.append([button(label(ctx, "leads", "cancel"), f"apx:{by}")])
    params = {
        "names": await people.lineage_names(session, unit),
        "total": total,
        "page": page,
        "pages": page_count(total),
    }
    return View("leads/pick_person", params, keyboard(rows))


async def _role_view(
    session: AsyncSession, ctx: LinliContext, auth: Authority, *, by: int, unit_id: int, target: int
) -> View:
    unit = await people.get_unit(session, unit_id)
    people.require(auth, unit)
    person = await _target(session, target)
    assert person is not None
    choices = [button(label(ctx, "leads", "role_lead"), f"ap:{by}:{unit_id}:{target}:l")]
    if auth.covers(unit, kind=RoleKind.admin):
        choices.append(button(label(ctx, "leads", "role_admin"), f"ap:{by}:{unit_id}:{target}:a"))
    rows = [choices, [button(label(ctx, "leads", "cancel"), f"apx:{by}")]]
    params = {"target": person, "names": await people.lineage_names(session, unit)}
    return View("leads/pick_role", params, keyboard(rows))


async def cmd_appoint(update: Update, ctx: LinliContext) -> None:
    message = update.effective_message
    chat = update.effective_chat
    assert message is not None and chat is not None
    uid = user_id(update)
    async with ctx.svc.db.transaction(write=False) as session:
        auth = await load_auth(session, ctx, update)
        if not auth.is_lead:
            raise NotAllowed("appoint_not_lead")
    who = replied_to(message)
    if who is not None and who.is_bot:
        raise InvalidInput("cant_appoint_bot")
    target = 0
    if who is not None:
        await note_replied(ctx, who)
        target = who.id
    async with ctx.svc.db.transaction(write=False) as session:
        start = 0
        if not is_private(update):
            link = await people.link_for(session, chat_id=chat.id, thread_id=thread_of(message))
            if link is not None and auth.covers(await people.get_unit(session, link.unit_id)):
                start = link.unit_id
        view = await _unit_view(session, ctx, auth, by=uid, target=target, unit_id=start, page=0)
    if target:
        # By reply the person is known: picking the unit and role may happen right here.
        await reply(update, ctx, view.name, markup=view.markup, **view.params)
        return
    # Picking from a list of residents happens privately: the group sees no list of names.
    await answer_privately(update, ctx, view, "appoint", feature="leads")


async def cmd_start_appoint(update: Update, ctx: LinliContext) -> None:
    """/start appoint: the link a group hands out (the picker, privately)."""
    await cmd_appoint(update, ctx)


async def _vouched(update: Update, ctx: LinliContext, target: str) -> int:
    """The person a picker's button names: a resident or lead of the appointer's units, or
    someone Telegram says is in the group the picker is in (the one replied to); a forged id
    of anyone else is refused before their name is shown or a role given."""
    person_id = as_int(target, telegram_id=True)
    if not person_id:
        return 0
    async with ctx.svc.db.transaction(write=False) as session:
        auth = await load_auth(session, ctx, update)
        if await people.within_reach(session, auth, person_id):
            return person_id
    chat = update.effective_chat
    if chat is not None and not is_private(update):
        try:
            member = await ctx.bot.get_chat_member(chat.id, person_id)
        except TelegramError:
            member = None
        if member is not None and member.status not in (ChatMember.LEFT, ChatMember.BANNED):
            return person_id
    raise NotFound("unknown_person")


async def btn_navigate(update: Update, ctx: LinliContext) -> None:
    by, target, unit_id, page = callback_args(update, "apn", 4)
    uid = _starter(update, by)
    await _vouched(update, ctx, target)
    async with ctx.svc.db.transaction(write=False) as session:
        auth = await load_auth(session, ctx, update)
        view = await _unit_view(
            session,
            ctx,
            auth,
            by=uid,
            target=as_int(target, telegram_id=True),
            unit_id=as_int(unit_id),
            page=as_int(page),
        )
    await edit(update, ctx, view.name, markup=view.markup, **view.params)


async def btn_select_unit(update: Update, ctx: LinliContext) -> None:
    by, target, unit_id = callback_args(update, "aps", 3)
    uid = _starter(update, by)
    await _vouched(update, ctx, target)
    async with ctx.svc.db.transaction(write=False) as session:
        auth = await load_auth(session, ctx, update)
        if as_int(target, telegram_id=True):
            view = await _role_view(
                session,
                ctx,
                auth,
                by=uid,
                unit_id=as_int(unit_id),
                target=as_int(target, telegram_id=True),
            )
        else:
            private_only(update)  # the next step lists residents
            view = await _person_view(session, ctx, auth, by=uid, unit_id=as_int(unit_id), page=0)
    await edit(update, ctx, view.name, markup=view.markup, **view.params)


async def btn_person_page(update: Update, ctx: LinliContext) -> None:
    private_only(update)  # a list of residents
    by, unit_id, page = callback_args(update, "app", 3)
    uid = _starter(update, by)
    async with ctx.svc.db.transaction(write=False) as session:
        auth = await load_auth(session, ctx, update)
        view = await _person_view(
            session, ctx, auth, by=uid, unit_id=as_int(unit_id), page=as_int(page)
        )
    await edit(update, ctx, view.name, markup=view.markup, **view.params)


async def btn_select_person(update: Update, ctx: LinliContext) -> None:
    private_only(update)  # reached from the list of residents only
    by, unit_id, target = callback_args(update, "apr", 3)
    uid = _starter(update, by)
    await _vouched(update, ctx, target)
    async with ctx.svc.db.transaction(write=False) as session:
        auth = await load_auth(session, ctx, update)
        view = await _role_view(
            session,
            ctx,
            auth,
            by=uid,
            unit_id=as_int(unit_id),
            target=as_int(target, telegram_id=True),
        )
    await edit(update, ctx, view.name, markup=view.markup, **view.params)


async def btn_appoint(update: Update, ctx: LinliContext) -> None:
    by, unit_id, target, code = callback_args(update, "ap", 4)
    _starter(update, by)
    await _vouched(update, ctx, target)
    if code not in KINDS:
        raise InvalidInput("stale_button")
    kind = KINDS[code]
    async with ctx.svc.db.transaction() as session:
        auth = await load_auth(session, ctx, update)
        _role, created = await people.grant_role(
            session,
            auth=auth,
            unit_id=as_int(unit_id),
            person_id=as_int(target, telegram_id=True),
            kind=kind,
            now=ctx.now(),
        )
        unit = await people.get_unit(session, as_int(unit_id))
        person = await people.get_person(session, as_int(target, telegram_id=True))
        assert person is not None
        if created:
            # Through the outbox: quiet hours hold, a failure is recorded, and someone who never
            # opened a private chat is asked to, in the group where they were appointed.
            chat = update.effective_chat
            here = (
                await people.link_for(
                    session, chat_id=chat.id, thread_id=thread_of(update.effective_message)
                )
                if chat is not None and not is_private(update)
                else None
            )
            community = await people.get_community(session, unit.community_id)
            await outbox.enqueue_private(
                session,
                key=f"lead:{_role.id}:appointed",
                person_id=person.id,
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
    if not created:
        await edit(update, ctx, "leads/already", target=person, unit=unit, kind=kind)
        return
    await edit(update, ctx, "leads/appointed", target=person, unit=unit, kind=kind)


async def btn_cancel(update: Update, ctx: LinliContext) -> None:
    (by,) = callback_args(update, "apx", 1)
    _starter(update, by)
    await edit(update, ctx, "leads/cancelled")


# --- /leads ---------------------------------------------------------------------------------


def _text_size(text: str) -> int:
    """Length as Telegram counts it: UTF-16 code units of the visible text."""
    return len(plain(text).encode("utf-16-le")) // 2


def _fit(render_first: Callable[[int], str], count: int) -> str:
    """The text showing as many of `count` entries as fit in one message (the rest counted)."""
    text = render_first(count)
    if _text_size(text) <= TEXT_BUDGET:
        return text
    low, high = 0, count - 1
    while low < high:
        mid = (low + high + 1) // 2
        if _text_size(render_first(mid)) <= TEXT_BUDGET:
            low = mid
        else:
            high = mid - 1
    return render_first(low)


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
    await message.reply_text(text, do_quote=not is_private(update))


async def _lineage(session: AsyncSession, unit: Unit) -> list[Unit]:
    found = await people.units_by_id(session, unit.lineage)
    return [found[i] for i in unit.lineage if i in found]


async def _group_leads(update: Update, ctx: LinliContext) -> None:
    chat, message = update.effective_chat, update.effective_message
    assert chat is not None
    async with ctx.svc.db.transaction(write=False) as session:
        link = await people.link_for(session, chat_id=chat.id, thread_id=thread_of(message))
        if link is None:
            raise NotFound("chat_not_linked")
        unit = await people.get_unit(session, link.unit_id)
        lineage = await _lineage(session, unit)
        levels = _levels(lineage, await people.roles_in(session, unit.lineage), keep_empty=True)
        below = await people.children(session, community_id=unit.community_id, parent_id=unit.id)
        roles_below = await people.roles_in(session, [u.id for u in below if u.id is not None])
        below_levels = _levels(below, roles_below, keep_empty=True)

    def first(n: int) -> str:
        return render(
            ctx,
            "leads/leads_group",
            above=levels[:-1],
            here=levels[-1],
            below=below_levels[:n],
            more=len(below_levels) - n,
        )

    await _send(update, _fit(first, len(below_levels)))


async def _private_leads(update: Update, ctx: LinliContext) -> None:
    uid = user_id(update)
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
        auth = await load_auth(session, ctx, update)
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
    count = sum(len(s.levels) for s in sections)

    def first(n: int) -> str:
        shown: list[Section] = []
        left = n
        for s in sections:
            shown.append(Section(s.names, s.levels[:left]))
            left = max(0, left - len(s.levels))
        return render(
            ctx,
            "leads/leads_private",
            homes=homes,
            sections=[s for s in shown if s.levels],
            more=count - n + hidden,
        )

    await _send(update, _fit(first, count))


async def cmd_leads(update: Update, ctx: LinliContext) -> None:
    if is_private(update):
        await _private_leads(update, ctx)
    else:
        await _group_leads(update, ctx)


# --- stepping down ---------------------------------------------------------------------------


async def btn_step_down(update: Update, ctx: LinliContext) -> None:
    (role_id,) = callback_args(update, "sd", 1)
    rid = as_int(role_id)
    async with ctx.svc.db.transaction(write=False) as session:
        auth = await load_auth(session, ctx, update)
        found = await people.role_with_unit(session, rid)
        if found is not None:
            role, unit, holder = found
            own = role.person_id == auth.person_id
            # The same rule as the removal itself (people.revoke_role).
            if not auth.may_remove(role, unit):
                raise NotAllowed("not_your_unit", unit=unit.name)
            names = await people.lineage_names(session, unit)
    if found is None:
        await answer(update, ctx, "leads/already_done")
        return
    markup = keyboard(
        [
            [
                button(label(ctx, "leads", "step_down_yes"), f"sdy:{rid}"),
                button(label(ctx, "leads", "step_down_no"), f"sdn:{rid}"),
            ]
        ]
    )
    await edit(
        update,
        ctx,
        "leads/step_down_confirm",
        markup=markup,
        names=names,
        kind=role.kind,
        own=own,
        holder=holder,
    )


async def btn_step_down_yes(update: Update, ctx: LinliContext) -> None:
    (role_id,) = callback_args(update, "sdy", 1)
    rid = as_int(role_id)
    async with ctx.svc.db.transaction() as session:
        auth = await load_auth(session, ctx, update)
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
        await answer(update, ctx, "leads/already_done")
        return
    own = holder.id == auth.person_id
    params: dict[str, Any] = {"names": names, "kind": role.kind, "holder": holder}
    await edit(update, ctx, "leads/stepped_down", own=own, **params)


async def btn_step_down_no(update: Update, ctx: LinliContext) -> None:
    callback_args(update, "sdn", 1)
    await edit(update, ctx, "leads/step_down_kept")


def register(app: LinliApp) -> None:
    # Before basics: /start appoint is ours, plain /start is basics'.
    app.add_handler(
        CommandHandler("start", cmd_start_appoint, filters=filters.Regex(r"^/start appoint$"))
    )
    app.add_handler(CommandHandler("appoint", cmd_appoint))
    app.add_handler(CallbackQueryHandler(btn_navigate, pattern=r"^apn:"))
    app.add_handler(CallbackQueryHandler(btn_select_unit, pattern=r"^aps:"))
    app.add_handler(CallbackQueryHandler(btn_person_page, pattern=r"^app:"))
    app.add_handler(CallbackQueryHandler(btn_select_person, pattern=r"^apr:"))
    app.add_handler(CallbackQueryHandler(btn_appoint, pattern=r"^ap:"))
    app.add_handler(CallbackQueryHandler(btn_cancel, pattern=r"^apx:"))
    app.add_handler(CommandHandler("leads", cmd_leads))
    app.add_handler(CallbackQueryHandler(btn_step_down, pattern=r"^sd:"))
    app.add_handler(CallbackQueryHandler(btn_step_down_yes, pattern=r"^sdy:"))
    app.add_handler(CallbackQueryHandler(btn_step_down_no, pattern=r"^sdn:"))
