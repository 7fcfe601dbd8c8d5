"""The resident picker: verified residents of a unit (and the units below it), one or several,
found by paging or by typing part of a name. Private only: the list shows flat numbers.

Buttons: `fp:<flow>:<page>` shows a page, `fv:<flow>:<person>:<page>:<1|0>` picks (1) or unpicks
(0) a resident (single choice: 1 chooses at once), `fn:<flow>` is done (several), `fh:<flow>`
asks for a name to search, `fa:<flow>` shows everyone again. Every button re-checks on the server
that the person lives under the picker's unit and that the flow's owner may `can` on that unit.
"""

from __future__ import annotations

from typing import Any

from sqlmodel.ext.asyncio.session import AsyncSession
from telegram import InlineKeyboardButton, Update

from bot.context import LinliContext
from handlers import common, flowui
from handlers.pickers import base
from models import people, points
from models.errors import InvalidInput, NotAllowed
from models.flows import Flow
from models.people import Authority, Can, Unit

PICKER = "residents"
PAGE_, PICK, DONE, SEARCH, ALL = "fp", "fv", "fn", "fh", "fa"
ASK_NAME = "_who"  # the typed search (any flow kind)
QUERY_LIMIT = 40


async def _unit(session: AsyncSession, auth: Authority, flow: Flow, st: dict[str, Any]) -> Unit:
    unit = await people.get_unit(session, int(st["unit_id"]))
    if flow.community_id is not None and unit.community_id != flow.community_id:
        raise NotAllowed("not_your_unit", unit=unit.name)
    people.require_can(auth, Can(st["can"]), unit=unit)
    return unit


async def _check_person(
    session: AsyncSession, flow: Flow, st: dict[str, Any], unit: Unit, person_id: int
) -> None:
    """A verified resident under the picker's unit (and not the owner, unless allowed); one
    refusal for every other case, so a forged id learns nothing about who lives where."""
    if person_id == flow.owner_id and not st.get("self_ok"):
        raise NotAllowed("picker_not_self")
    if not await people.lives_under(session, unit, person_id):
        raise NotAllowed("picker_not_resident")


async def view(
    session: AsyncSession,
    ctx: LinliContext,
    auth: Authority,
    flow: Flow,
    st: dict[str, Any],
    page: int,
) -> common.View:
    """One page of the unit's residents (matching the typed name, if any), ticks on the picked."""
    fid = flowui.flow_id(flow)
    unit = await _unit(session, auth, flow, st)
    query = str(st.get("query") or "")
    left_off = () if st.get("self_ok") else (flow.owner_id,)
    _, total = await people.residents_under(
        session, unit, offset=0, limit=0, name=query, exclude=left_off
    )
    page = common.clamp_page(page, total)
    shown, total = await people.residents_under(
        session, unit, offset=page * common.PAGE, limit=common.PAGE, name=query, exclude=left_off
    )
    picked = [int(p) for p in st.get("picked", [])]
    multi = bool(st.get("multi"))
    flats = await points.flats_of(session, [r.household_id for r, _ in shown])
    rows: list[list[InlineKeyboardButton]] = []
    for r, p in shown:
        on = p.id in picked
        text = base.lab(
            ctx, "resident", name=p.name, flat=flats.get(r.household_id, ""), picked=on, multi=multi
        )
        rows.append(
            [common.button(text, f"{PICK}:{fid}:{p.id}:{page}:{common.state(not on or not multi)}")]
        )
    rows.append(
        common.page_buttons(ctx, page, common.page_count(total), lambda n: f"{PAGE_}:{fid}:{n}")
    )
    search = [common.button(base.lab(ctx, "search"), f"{SEARCH}:{fid}")]
    if query:
        search.append(common.button(base.lab(ctx, "show_all"), f"{ALL}:{fid}"))
    rows.append(search)
    if multi:
        rows.append([common.button(base.lab(ctx, "picked_next", n=len(picked)), f"{DONE}:{fid}")])
    rows += base.footer(ctx, flow, st)
    params = {
        "heading": base.heading(ctx, flow, st),
        "names": await people.lineage_names(session, unit),
        "total": total,
        "query": query,
        "multi": multi,
        "picked": len(picked),
        "page": page,
        "pages": common.page_count(total),
    }
    return common.View("pickers/residents", params, common.keyboard(rows))


async def pick_residents(
    update: Update,
    ctx: LinliContext,
    flow: Flow,
    *,
    field: str = "people",
    unit_id: int,
    multi: bool = True,
    can: Can = Can.lead,
    limit: int = 50,
    picked: list[int] | None = None,
    self_ok: bool = False,
    heading: str | None = None,
    back: tuple[str, str, str] | None = None,
) -> None:
    """Let the flow's owner choose residents of `unit_id` (and below) — several with `multi`,
    at most `limit` — by paging or by typing part of a name. The person ids go to
    flow.data[field] (a list; with multi=False a list of one). `picked`: ticked to begin with
    (going back to the list). The owner must be able to `can` on the unit; their own name is
    left off unless `self_ok`."""
    common.private_only(update)
    async with ctx.svc.db.transaction() as session:
        live = await flowui.load(session, ctx, update, flowui.flow_id(flow), kind=flow.kind)
        st = await base.begin(
            session, ctx, live, picker=PICKER, field=field, heading=heading, back=back,
            unit_id=unit_id, multi=multi, can=can.value, limit=limit,
            picked=list(dict.fromkeys(picked or [])), self_ok=self_ok, query="",
        )  # fmt: skip
        auth = await common.load_auth(session, ctx, update)
        screen = await view(session, ctx, auth, live, st, 0)
    await common.show(update, ctx, screen)


async def _open(
    session: AsyncSession, ctx: LinliContext, update: Update, fid: str
) -> tuple[Flow, dict[str, Any], Authority]:
    common.private_only(update)  # the list shows flat numbers
    flow = await flowui.load(session, ctx, update, fid, kind=None)
    st = base.state(flow, PICKER)
    return flow, st, await common.load_auth(session, ctx, update)


async def btn_page(update: Update, ctx: LinliContext) -> None:
    fid, page = common.callback_args(update, PAGE_, 2)
    async with ctx.svc.db.transaction() as session:
        flow, st, auth = await _open(session, ctx, update, fid)
        screen = await view(session, ctx, auth, flow, st, common.as_int(page))
    await common.show(update, ctx, screen)


async def btn_pick(update: Update, ctx: LinliContext) -> None:
    """Pick or unpick one resident: a state, so a double tap leaves the choice as it was."""
    fid, person, page, wanted = common.callback_args(update, PICK, 4)
    person_id, on = common.as_int(person, telegram_id=True), common.as_state(wanted)
    async with ctx.svc.db.transaction() as session:
        flow, st, auth = await _open(session, ctx, update, fid)
        unit = await _unit(session, auth, flow, st)
        picked = [int(p) for p in st.get("picked", [])]
        if on:
            await _check_person(session, flow, st, unit, person_id)
        if not st.get("multi"):
            if not on:
                raise InvalidInput("stale_button")
            field = await base.finish(session, ctx, flow, [person_id])
        elif on == (person_id in picked):
            field = ""
        else:
            if on and len(picked) >= int(st.get("limit", 50)):
                raise InvalidInput("picker_too_many", limit=int(st.get("limit", 50)))
            picked = [*picked, person_id] if on else [p for p in picked if p != person_id]
            await base.keep(session, ctx, flow, {**st, "picked": picked})
            field = ""
        screen = (
            None
            if field
            else await view(session, ctx, auth, flow, base.state(flow, PICKER), common.as_int(page))
        )
    if field:
        await base.after(update, ctx, flow, field)
    elif screen is not None:
        await common.show(update, ctx, screen)


async def btn_done(update: Update, ctx: LinliContext) -> None:
    (fid,) = common.callback_args(update, DONE, 1)
    async with ctx.svc.db.transaction() as session:
        flow, st, auth = await _open(session, ctx, update, fid)
        unit = await _unit(session, auth, flow, st)
        picked = [int(p) for p in st.get("picked", [])]
        if not picked:
            raise InvalidInput("picker_nobody")
        for person_id in picked:  # each checked again: someone may have moved out meanwhile
            await _check_person(session, flow, st, unit, person_id)
        field = await base.finish(session, ctx, flow, picked)
    await base.after(update, ctx, flow, field)


async def btn_search(update: Update, ctx: LinliContext) -> None:
    (fid,) = common.callback_args(update, SEARCH, 1)
    async with ctx.svc.db.transaction(write=False) as session:
        flow, _st, _auth = await _open(session, ctx, update, fid)
    await flowui.ask(update, ctx, flow, step=ASK_NAME, template="pickers/ask_name")


@flowui.answers(flowui.ANY, ASK_NAME)
async def on_name(update: Update, ctx: LinliContext, flow: Flow, text: str) -> None:
    """A typed name: the list shows those whose name contains it (a new message)."""
    query = " ".join(text.split())[:QUERY_LIMIT]
    async with ctx.svc.db.transaction() as session:
        live = await flowui.load(session, ctx, update, flowui.flow_id(flow), kind=flow.kind)
        st = {**base.state(live, PICKER), "query": query}
        await base.keep(session, ctx, live, st)
        auth = await common.load_auth(session, ctx, update)
        screen = await view(session, ctx, auth, live, st, 0)
    await common.show(update, ctx, screen)


async def btn_all(update: Update, ctx: LinliContext) -> None:
    (fid,) = common.callback_args(update, ALL, 1)
    async with ctx.svc.db.transaction() as session:
        flow, st, auth = await _open(session, ctx, update, fid)
        st = {**st, "query": ""}
        await base.keep(session, ctx, flow, st)
        screen = await view(session, ctx, auth, flow, st, 0)
    await common.show(update, ctx, screen)


HANDLERS = (
    (PAGE_, btn_page),
    (PICK, btn_pick),
    (DONE, btn_done),
    (SEARCH, btn_search),
    (ALL, btn_all),
)
