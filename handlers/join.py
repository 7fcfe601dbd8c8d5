"""Joining a household: residents pick their flat by buttons (or type its code); leads approve."""

from __future__ import annotations

import csv
import io
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlmodel.ext.asyncio.session import AsyncSession
from telegram import InlineKeyboardButton, Update
from telegram.ext import CommandHandler, filters

from bot import cards
from bot.context import LinliApp, LinliContext
from bot.ordering import hand_over
from handlers import common
from handlers.prompts import answers, ask
from models import joins, outbox, people, points
from models.errors import InvalidInput, NotAllowed, NotFound
from models.people import Authority, Community, Household, Membership, Person, Unit

log = logging.getLogger("linli")

FLATS_PER_ROW = 3  # flat numbers are short: three to a row keeps PAGE rows on one screen
FLATS_PER_PAGE = common.PAGE * FLATS_PER_ROW
UNIT_PAYLOAD = re.compile(r"^u(\d+)$")  # codes are upper-case, so a lower-case u never clashes
CODES_FILE = "linli-household-codes.csv"

T = TypeVar("T")


def _natural(text: str) -> list[tuple[int, int | str]]:
    """Sort key so that 3号楼 comes before 10号楼 and 2-101 before 10-101."""
    return [(0, int(p)) if p.isdigit() else (1, p) for p in re.split(r"(\d+)", text) if p]


def _decision(action: str) -> bool:
    if action not in ("a", "r"):
        raise InvalidInput("stale_button")
    return action == "a"


def _label_in(ctx: LinliContext, lang: str, key: str, **params: object) -> str:
    return ctx.svc.renderer.label(lang, "join", key, **params)


def _code_row(ctx: LinliContext) -> list[InlineKeyboardButton]:
    return [common.button(common.label(ctx, "join", "have_code"), "join:code")]


async def _first_screen(
    session: AsyncSession, ctx: LinliContext, unit_id: int | None
) -> common.View:
    """Where the picker starts: a deep link's building, else the community (if only one)."""
    if unit_id is not None:
        try:
            unit = await people.get_unit(session, unit_id)
        except NotFound:
            unit = None  # a link printed before the unit was removed: start from the top
        if unit is not None:
            try:
                building = await people.building_of(session, unit)
            except InvalidInput:
                return await _buildings_screen(session, ctx, unit.community_id, 0, under=unit)
            return await _flats_screen(session, ctx, building, 0)
    found = await people.communities(session)
    if not found:
        return common.View("join/no_community")
    if len(found) == 1:
        assert found[0].id is not None
        return await _buildings_screen(session, ctx, found[0].id, 0, every=found)
    return _communities_screen(ctx, found, 0)


def _communities_screen(ctx: LinliContext, found: Sequence[Community], page: int) -> common.View:
    shown, page, pages = common.paged(
        sorted(found, key=lambda c: _natural(c.name)), page, common.PAGE
    )
    rows = [[common.button(c.name, f"jb:{c.id}:0")] for c in shown]
    rows += [common.page_buttons(ctx, page, pages, "jk:{}"), _code_row(ctx)]
    return common.View("join/pick_community", {"page": page, "pages": pages}, common.keyboard(rows))


async def _buildings_screen(
    session: AsyncSession,
    ctx: LinliContext,
    community_id: int,
    page: int,
    *,
    under: Unit | None = None,
    every: Sequence[Community] | None = None,
) -> common.View:
    """`every`: the communities, when the caller has just read them (one read, not two)."""
    if every is None:
        every = await people.communities(session)
    community = next((c for c in every if c.id == community_id), None)
    if community is None:
        raise InvalidInput("stale_button")
    found = list(await people.buildings(session, community_id=community_id))
    if under is not None:
        found = [b for b in found if b.path.startswith(under.path)]
    found.sort(key=lambda b: (_natural(b.name), b.id))
    shown, page, pages = common.paged(found, page, common.PAGE)
    names = await _building_labels(session, found, shown)
    rows = [[common.button(names[b.id or 0], f"jf:{b.id}:0")] for b in shown]
    data = f"ju:{under.id}:{{}}" if under is not None else f"jb:{community_id}:{{}}"
    rows.append(common.page_buttons(ctx, page, pages, data))
    if under is not None:
        rows.append(
            [common.button(common.label(ctx, "join", "all_buildings"), f"jb:{community_id}:0")]
        )
    elif len(every) > 1:
        rows.append([common.button(common.label(ctx, "join", "back"), "jk:0")])
    rows.append(_code_row(ctx))
    params: dict[str, object] = {
        "community": community,
        "under": under,
        "page": page,
        "pages": pages,
        "empty": not found,
    }
    return common.View("join/pick_building", params, common.keyboard(rows))


async def _building_labels(
    session: AsyncSession, everything: Sequence[Unit], shown: Sequence[Unit]
) -> dict[int, str]:
    """Building names, with their parent's name where two buildings share a name."""
    counts: dict[str, int] = {}
    for b in everything:
        counts[b.name] = counts.get(b.name, 0) + 1
    parents = await people.units_by_id(
        session, [b.parent_id for b in shown if b.parent_id is not None and counts[b.name] > 1]
    )
    out = {}
    for b in shown:
        parent = parents.get(b.parent_id or 0)
        out[b.id or 0] = f"{parent.name} · {b.name}" if parent is not None else b.name
    return out


async def _flats_screen(
    session: AsyncSession, ctx: LinliContext, building: Unit, page: int
) -> common.View:
    if building.kind != people.UnitKind.building:
        raise InvalidInput("stale_button")
    assert building.id is not None
    found = sorted(
        await people.households_in(session, building_id=building.id),
        key=lambda h: (_natural(h.flat), h.id),
    )
    shown, page, pages = common.paged(found, page, FLATS_PER_PAGE)
    flats = [common.button(h.flat, f"jh:{h.id}:{page}") for h in shown]
    rows = common.rows_of(flats, FLATS_PER_ROW)
    rows += [
        common.page_buttons(ctx, page, pages, f"jf:{building.id}:{{}}"),
        [
            common.button(
                common.label(ctx, "join", "other_building"), f"jb:{building.community_id}:0"
            )
        ],
        _code_row(ctx),
    ]
    params = {"building": building, "page": page, "pages": pages, "empty": not found}
    return common.View("join/pick_flat", params, common.keyboard(rows))


async def _confirm_screen(
    session: AsyncSession, ctx: LinliContext, household: Household, page: int
) -> common.View:
    building = await people.get_unit(session, household.building_id)
    markup = common.keyboard(
        [
            [common.button(common.label(ctx, "join", "yes_join"), f"jy:{household.id}")],
            [common.button(common.label(ctx, "join", "back"), f"jf:{building.id}:{page}")],
        ]
    )
    return common.View("join/confirm", {"household": household, "building": building}, markup)


# --- /join and its deep links ---------------------------------------------------------------


async def cmd_join(update: Update, ctx: LinliContext) -> None:
    if not common.is_private(update):
        await _offer_private(update, ctx)
        return
    if ctx.args:
        await _join_by_code(update, ctx, "".join(ctx.args))
        return
    await _start_picker(update, ctx, None)


async def cmd_start_join(update: Update, ctx: LinliContext) -> None:
    """/start join, /start join-u<unit>, /start join-<CODE> (a door notice), /start pending."""
    payload = ctx.args[0] if ctx.args else ""
    if payload == "pending":
        await cmd_pending(update, ctx)
        return
    if not common.is_private(update):
        await _offer_private(update, ctx)
        return
    value = payload.removeprefix("join").removeprefix("-")
    unit = UNIT_PAYLOAD.match(value)
    if value and unit is None:
        await _join_by_code(update, ctx, value)
        return
    await _start_picker(update, ctx, int(unit.group(1)) if unit else None)


async def _start_picker(update: Update, ctx: LinliContext, unit_id: int | None) -> None:
    async with ctx.svc.db.transaction(write=False) as session:
        screen = await _first_screen(session, ctx, unit_id)
    hand_over()
    await common.show(update, ctx, screen)


async def _offer_private(update: Update, ctx: LinliContext) -> None:
    """In a group: a button to continue privately, starting at the group's own building."""
    chat, message = update.effective_chat, update.effective_message
    assert chat is not None
    async with ctx.svc.db.transaction(write=False) as session:
        link = await people.link_for(session, chat_id=chat.id, thread_id=common.thread_of(message))
    payload = f"join-u{link.unit_id}" if link is not None else "join"
    hand_over()
    await common.offer_private(
        update, ctx, payload, feature="join", offer="in_group", key="continue_private"
    )


@common.on_button("join")
async def btn_join(update: Update, ctx: LinliContext) -> None:
    """join:go (the button on /start's welcome) and join:code (I have a household code)."""
    (action,) = common.callback_args(update, "join", 1)
    if action == "go":
        if not common.is_private(update):
            await _offer_private(update, ctx)
            await common.answer(update, ctx)
            return
        await _start_picker(update, ctx, None)
    elif action == "code":
        common.private_only(update)
        await ask(update, ctx, "join_code", "", "join/ask_code")
        await common.answer(update, ctx)
    else:
        raise InvalidInput("stale_button")


@common.screen("jk", 1, private=True)
async def btn_communities(
    session: AsyncSession, ctx: LinliContext, update: Update, page: str
) -> common.View:
    return _communities_screen(ctx, await people.communities(session), common.as_int(page))


@common.screen("jb", 2, private=True)
async def btn_buildings(
    session: AsyncSession, ctx: LinliContext, update: Update, community_id: str, page: str
) -> common.View:
    return await _buildings_screen(session, ctx, common.as_int(community_id), common.as_int(page))


@common.screen("ju", 2, private=True)
async def btn_buildings_under(
    session: AsyncSession, ctx: LinliContext, update: Update, unit_id: str, page: str
) -> common.View:
    unit = await people.get_unit(session, common.as_int(unit_id))
    return await _buildings_screen(session, ctx, unit.community_id, common.as_int(page), under=unit)


@common.screen("jf", 2, private=True)
async def btn_flats(
    session: AsyncSession, ctx: LinliContext, update: Update, building_id: str, page: str
) -> common.View:
    building = await people.get_unit(session, common.as_int(building_id))
    return await _flats_screen(session, ctx, building, common.as_int(page))


@common.screen("jh", 2, private=True)
async def btn_flat(
    session: AsyncSession, ctx: LinliContext, update: Update, household_id: str, page: str
) -> common.View:
    household = await people.get_household(session, common.as_int(household_id))
    return await _confirm_screen(session, ctx, household, common.as_int(page))


@common.on_button("jy")
async def btn_confirm(update: Update, ctx: LinliContext) -> None:
    """Yes, join this flat: one pending request, and every lead covering it gets a request card
    (asking for another flat updates their cards; asking again changes nothing)."""
    common.private_only(update)
    (household_id,) = common.callback_args(update, "jy", 1)
    uid = common.user_id(update)
    now = ctx.now()
    async with ctx.svc.db.transaction() as session:
        asked = await joins.ask(
            session, person_id=uid, household_id=common.as_int(household_id), now=now
        )
        assert asked.resident.id is not None
        membership = await people.get_membership(session, asked.resident.id)
    community = membership.community
    zone = community.timezone
    params: dict[str, Any] = {"m": membership, "leads": asked.leads, "zone": zone}
    name = {
        joins.Asked.member: "join/already_in",
        joins.Asked.repeated: "join/still_waiting",
        joins.Asked.refused_recently: "join/refused_recently",
        joins.Asked.replaced: "join/replaced",
        joins.Asked.new: "join/sent",
    }[asked.outcome]
    if asked.outcome == joins.Asked.refused_recently:
        assert asked.asked_at is not None
        params.update(at=asked.asked_at, again=asked.asked_at + joins.COOLDOWN)
    if asked.outcome == joins.Asked.new:
        wake = outbox.after_quiet_hours(
            now, zone=zone, quiet_from=community.quiet_from, quiet_until=community.quiet_until
        )
        params["morning"] = wake if wake > now else None
    await common.show(update, ctx, common.View(name, params))


async def _request_card(req: cards.CardRequest) -> cards.Card | None:
    """A lead's card about one request: Approve/Reject while it waits, then how it ended.
    Only ever in the lead's private chat (it names the flat)."""
    if not req.private:
        return None
    try:
        m = await people.get_membership(req.session, req.subject_id)
    except NotFound:
        return None
    who = await people.get_person(req.session, m.resident.person_id)
    if m.resident.status == people.ResidentStatus.pending:
        data = f"{m.resident.id}:{m.household.id}"
        markup = common.keyboard(
            [
                [
                    common.button(req.label("join", "approve"), f"jr:a:{data}"),
                    common.button(req.label("join", "reject"), f"jr:r:{data}"),
                ]
            ]
        )
        return cards.Card("join/request", {"m": m, "who": who}, markup)
    decider = (
        await people.get_person(req.session, m.resident.decided_by)
        if m.resident.decided_by is not None
        else None
    )
    return cards.Card("join/decided", {"m": m, "who": who, "decider": decider})


async def _answer_card(req: cards.CardRequest) -> cards.Card | None:
    """The resident's answer, as it stands when it goes (nothing if they asked again since)."""
    try:
        m = await people.get_membership(req.session, req.subject_id)
    except NotFound:
        return None
    if req.chat_id != m.resident.person_id:
        return None
    if m.resident.status == people.ResidentStatus.verified:
        return cards.Card("join/approved", {"m": m})
    if m.resident.status == people.ResidentStatus.rejected:
        return cards.Card("join/rejected", {"m": m})
    return None


async def _join_by_code(update: Update, ctx: LinliContext, text: str) -> None:
    """A household code (door notice, typed, or a deep link) joins at once, already verified."""
    uid = common.user_id(update)
    try:
        async with ctx.svc.db.transaction() as session:
            household = await people.household_by_code(session, text)
            assert household.id is not None
            resident, changed = await people.request_join(
                session,
                person_id=uid,
                household_id=household.id,
                now=ctx.now(),
                verified_by_code=True,
            )
            assert resident.id is not None
            membership = await people.get_membership(session, resident.id)
            if changed:
                await joins.decided(session, resident=resident, now=ctx.now(), answer=False)
                await points.welcome(
                    session,
                    community_id=resident.community_id,
                    person_id=resident.person_id,
                    now=ctx.now(),
                )
    except NotFound as exc:
        if exc.key != "bad_household_code":
            raise
        markup = common.keyboard(
            [
                [common.button(common.label(ctx, "join", "code_again"), "join:code")],
                [common.button(common.label(ctx, "join", "pick_flat"), "join:go")],
            ]
        )
        await common.reply(update, ctx, "join/code_wrong", markup=markup)
        return
    await common.reply(update, ctx, "join/joined" if changed else "join/already_in", m=membership)


@answers("join_code")
async def on_code(update: Update, ctx: LinliContext, prompt: people.Prompt) -> None:
    message = update.effective_message
    assert message is not None and message.text is not None
    await _join_by_code(update, ctx, message.text)


# --- leads decide ------------------------------------------------------------------------


@dataclass
class Decision:
    membership: Membership
    changed: bool
    requester: Person
    decider: Person | None
    requester_lang: str


async def _decide(update: Update, ctx: LinliContext, rid: str, hid: str, approve: bool) -> Decision:
    async with ctx.svc.db.transaction() as session:
        auth = await common.load_auth(session, ctx, update)
        membership, changed = await people.decide_pending_join(
            session,
            auth=auth,
            resident_id=common.as_int(rid),
            household_id=common.as_int(hid),
            approve=approve,
            now=ctx.now(),
        )
        resident = membership.resident
        if changed:
            await joins.decided(session, resident=resident, now=ctx.now())
        if changed and resident.status == people.ResidentStatus.verified:
            await points.welcome(
                session,
                community_id=resident.community_id,
                person_id=resident.person_id,
                now=ctx.now(),
            )
        requester = await people.get_person(session, resident.person_id)
        decider = (
            await people.get_person(session, resident.decided_by)
            if resident.decided_by is not None
            else None
        )
    assert requester is not None
    lang = people.language_for(requester, membership.community)
    return Decision(membership, changed, requester, decider, lang)


@common.on_button("jr")
async def btn_decide(update: Update, ctx: LinliContext) -> None:
    """jr:<a|r>:<resident>:<household> on the message a lead received about one request."""
    common.private_only(update)
    action, rid, hid = common.callback_args(update, "jr", 3)
    d = await _decide(update, ctx, rid, hid, _decision(action))
    outcome = common.View(
        "join/decided", {"m": d.membership, "who": d.requester, "decider": d.decider}, None
    )
    # Someone decided first: show this lead the outcome too, and say who it was.
    await _decided(update, ctx, d, outcome)


async def _decided(update: Update, ctx: LinliContext, d: Decision, view: common.View) -> None:
    note = None if d.changed else "join/already_decided"
    await common.show(update, ctx, view, note=note, alert=True, m=d.membership, decider=d.decider)


# --- /pending -----------------------------------------------------------------------------


async def _pending_screen(
    session: AsyncSession,
    ctx: LinliContext,
    auth: Authority,
    page: int,
    done: Decision | None = None,
) -> common.View:
    waiting = await people.pending_requests(session, auth=auth)
    shown, page, pages = common.paged(waiting, page, common.PAGE)
    rows = []
    for number, (m, _person) in enumerate(shown, start=page * common.PAGE + 1):
        data = f"{m.resident.id}:{m.household.id}:{page}"
        rows.append(
            [
                common.button(common.label(ctx, "join", "approve_no", n=number), f"jl:a:{data}"),
                common.button(common.label(ctx, "join", "reject_no", n=number), f"jl:r:{data}"),
            ]
        )
    rows.append(common.page_buttons(ctx, page, pages, "jp:{}"))
    params = {
        "entries": [(n, m, who) for n, (m, who) in enumerate(shown, start=page * common.PAGE + 1)],
        "total": len(waiting),
        "page": page,
        "pages": pages,
        "done": done,
    }
    return common.View("join/pending", params, common.keyboard(rows) if shown else None)


async def cmd_pending(update: Update, ctx: LinliContext) -> None:
    """Join requests waiting in the units this lead covers; privately, since it shows flats."""
    async with ctx.svc.db.transaction(write=False) as session:
        auth = await common.load_auth(session, ctx, update)
        if not auth.is_lead:
            raise NotAllowed("leads_only")
        screen = await _pending_screen(session, ctx, auth, 0)
    await common.answer_privately(
        update, ctx, screen, "pending", feature="join", offer="pending_open_private"
    )


@common.screen("jp", 1, private=True)
async def btn_pending_page(
    session: AsyncSession, ctx: LinliContext, update: Update, page: str
) -> common.View:
    auth = await common.load_auth(session, ctx, update)
    if not auth.is_lead:
        raise NotAllowed("leads_only")
    return await _pending_screen(session, ctx, auth, common.as_int(page))


@common.on_button("jl")
async def btn_pending_decide(update: Update, ctx: LinliContext) -> None:
    """jl:<a|r>:<resident>:<household>:<page>: a decision from the /pending list, which is then
    shown again with what was just done on top."""
    common.private_only(update)
    action, rid, hid, page = common.callback_args(update, "jl", 4)
    d = await _decide(update, ctx, rid, hid, _decision(action))
    async with ctx.svc.db.transaction(write=False) as session:
        auth = await common.load_auth(session, ctx, update)
        screen = await _pending_screen(session, ctx, auth, common.as_int(page), done=d)
    await _decided(update, ctx, d, screen)


# --- /codes -------------------------------------------------------------------------------


async def cmd_codes(update: Update, ctx: LinliContext) -> None:
    """A CSV of the households a lead covers, with codes and join links, for door notices."""
    chat = update.effective_chat
    assert chat is not None
    async with ctx.svc.db.transaction(write=False) as session:
        auth = await common.load_auth(session, ctx, update)
        if not auth.is_lead:
            raise NotAllowed("leads_only")
        private = common.is_private(update)
        found = await people.households_covered(session, auth=auth) if private else []
    if not private:
        await common.reply(update, ctx, "join/codes_private")
        return
    if not found:
        await common.reply(update, ctx, "join/codes_none")
        return
    found.sort(key=lambda hb: (hb[1].community_id, _natural(hb[1].name), _natural(hb[0].flat)))
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(
        [common.label(ctx, "join", f"csv_{c}") for c in ("building", "flat", "code", "link")]
    )
    for household, building in found:
        link = common.deep_link(ctx, f"join-{household.code}")
        writer.writerow([building.name, household.flat, household.code, link])
    # The byte-order mark makes spreadsheet programs read the Chinese names as UTF-8.
    data = out.getvalue().encode("utf-8-sig")
    await ctx.bot.send_document(
        chat.id,
        document=data,
        filename=CODES_FILE,
        caption=common.render(ctx, "join/codes_caption", count=len(found)),
    )


# --- leaving a household ------------------------------------------------------------------


async def _membership_in(ctx: LinliContext, uid: int, community_id: int) -> Membership:
    async with ctx.svc.db.transaction(write=False) as session:
        found = await people.memberships(session, person_id=uid)
    for m in found:
        if m.community.id == community_id:
            return m
    raise NotFound("not_a_member")


@common.on_button("lv")
async def btn_leave(update: Update, ctx: LinliContext) -> None:
    """lv:<community>: ask before leaving (the /me button)."""
    common.private_only(update)
    (community_id,) = common.callback_args(update, "lv", 1)
    m = await _membership_in(ctx, common.user_id(update), common.as_int(community_id))
    if m.resident.status == people.ResidentStatus.left:
        await common.edit(update, ctx, "join/left", m=m)
        return
    if m.resident.status not in (people.ResidentStatus.verified, people.ResidentStatus.pending):
        raise NotFound("not_a_member")
    markup = common.keyboard(
        [
            [common.button(common.label(ctx, "join", "leave_yes"), f"lvy:{community_id}")],
            [common.button(common.label(ctx, "join", "leave_no"), f"lvn:{community_id}")],
        ]
    )
    await common.edit(update, ctx, "join/leave_confirm", markup=markup, m=m)


@common.on_button("lvy")
async def btn_leave_yes(update: Update, ctx: LinliContext) -> None:
    common.private_only(update)
    (community_id,) = common.callback_args(update, "lvy", 1)
    uid = common.user_id(update)
    m = await _membership_in(ctx, uid, common.as_int(community_id))
    if m.resident.status != people.ResidentStatus.left:  # a second tap finds it done already
        async with ctx.svc.db.transaction() as session:
            resident = await people.leave(
                session, person_id=uid, community_id=common.as_int(community_id), now=ctx.now()
            )
            await joins.decided(session, resident=resident, now=ctx.now(), answer=False)
    await common.edit(update, ctx, "join/left", m=m)


@common.on_button("lvn")
async def btn_leave_no(update: Update, ctx: LinliContext) -> None:
    common.private_only(update)
    common.callback_args(update, "lvn", 1)
    await common.edit(update, ctx, "join/leave_kept")


def register(app: LinliApp) -> None:
    cards.register(app, joins.REQUEST_CARD, _request_card)
    cards.register(app, joins.ANSWER_CARD, _answer_card)
    # Before basics: these /start payloads are ours, plain /start is basics'.
    app.add_handler(
        CommandHandler("start", cmd_start_join, filters=filters.Regex(r"^/start (join|pending)\b"))
    )
    app.add_handler(CommandHandler("join", cmd_join))
    app.add_handler(CommandHandler("pending", cmd_pending))
    app.add_handler(CommandHandler("codes", cmd_codes))
    common.add_buttons(app, common.buttons_of(__name__))
