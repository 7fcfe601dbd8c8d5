"""The unit-tree picker: the units a person may act on, drilled down level by level, paged.

Buttons: `fu:<flow>:<unit>:<page>` shows a level (unit 0: the person's highest units), and
`fc:<flow>:<unit>` chooses a unit. Both are checked on the server against the authority API
(`Can.lead` or `Can.admin` on that unit) and the flow's community, whatever the button says.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypedDict, Unpack

from sqlmodel.ext.asyncio.session import AsyncSession
from telegram import InlineKeyboardButton, Update

from bot.context import LinliContext
from handlers import common, flowui
from handlers.pickers import base
from models import people
from models.errors import NotAllowed
from models.flows import Flow
from models.people import Authority, Can, Unit

PICKER = "units"
LEVEL, CHOOSE = "fu", "fc"


def reachable_tops(
    auth: Authority, roots: list[Unit], *, can: Can | None, community_id: int | None
) -> list[Unit]:
    """The highest units this person may `can` on (a super-admin, or `can` None: every top-level
    unit), in tree order; only the flow's community when it has one."""
    if auth.superadmin or can is None:
        found = roots
    else:
        units = {u.id: u for u, role in auth.roles if can == Can.lead or role == "admin"}
        found = [
            u
            for u in sorted(units.values(), key=lambda u: u.path)
            if not any(o.id != u.id and u.path.startswith(o.path) for o in units.values())
        ]
    return [u for u in found if community_id is None or u.community_id == community_id]


async def tops(
    session: AsyncSession, auth: Authority, *, can: Can | None, community_id: int | None
) -> list[Unit]:
    roots = list(await people.root_units(session)) if auth.superadmin or can is None else []
    return reachable_tops(auth, roots, can=can, community_id=community_id)


def _check(auth: Authority, unit: Unit, can: Can | None, community_id: int | None) -> None:
    if community_id is not None and unit.community_id != community_id:
        raise NotAllowed("not_your_unit", unit=unit.name)
    if can is not None:
        people.require_can(auth, can, unit=unit)


def _can(st: dict[str, Any]) -> Can | None:
    return Can(st["can"]) if st.get("can") else None


async def _buttons(
    session: AsyncSession, fid: int, units: Sequence[Unit]
) -> list[InlineKeyboardButton]:
    """A unit with units below opens (›); any other is chosen at once, one tap fewer."""
    parents = await people.units_with_children(session, [u.id for u in units if u.id is not None])
    return [
        common.button(f"{u.name} ›", f"{LEVEL}:{fid}:{u.id}:0")
        if u.id in parents
        else common.button(u.name, f"{CHOOSE}:{fid}:{u.id}")
        for u in units
    ]


async def level_view(
    session: AsyncSession,
    ctx: LinliContext,
    auth: Authority,
    flow: Flow,
    st: dict[str, Any],
    unit_id: int,
    page: int,
) -> common.View:
    """One level: the person's highest units (unit_id 0; straight to the one if there is only
    one), or a unit with "this unit" and the units below it."""
    fid = flowui.flow_id(flow)
    can, community_id = _can(st), flow.community_id
    highest = await tops(session, auth, can=can, community_id=community_id)
    params: dict[str, Any] = {"heading": base.heading(ctx, flow, st), "names": []}
    if not unit_id:
        if not highest:
            return common.View(
                "pickers/no_units", params, common.keyboard(base.footer(ctx, flow, st))
            )
        if len(highest) > 1:
            shown, page, pages = common.paged(highest, page)
            rows = common.rows_of(await _buttons(session, fid, shown), 1)
            rows.append(common.page_buttons(ctx, page, pages, f"{LEVEL}:{fid}:0:{{}}"))
            rows += base.footer(ctx, flow, st)
            params |= {"page": page, "pages": pages}
            return common.View("pickers/units", params, common.keyboard(rows))
        unit_id = highest[0].id or 0
    unit = await people.get_unit(session, unit_id)
    _check(auth, unit, can, community_id)
    below = list(await people.children(session, community_id=unit.community_id, parent_id=unit.id))
    shown, page, pages = common.paged(below, page)
    rows = [
        [common.button(base.lab(ctx, "this_unit", unit=unit.name), f"{CHOOSE}:{fid}:{unit.id}")]
    ]
    rows += common.rows_of(await _buttons(session, fid, shown), 2)
    rows.append(common.page_buttons(ctx, page, pages, f"{LEVEL}:{fid}:{unit.id}:{{}}"))
    parent = await people.get_unit(session, unit.parent_id) if unit.parent_id else None
    if parent is not None and (can is None or auth.may(can, unit=parent)):
        rows.append([common.button(base.lab(ctx, "up"), f"{LEVEL}:{fid}:{parent.id}:0")])
    elif len(highest) > 1:
        rows.append([common.button(base.lab(ctx, "up"), f"{LEVEL}:{fid}:0:0")])
    rows += base.footer(ctx, flow, st)
    params |= {
        "names": await people.lineage_names(session, unit),
        "page": page,
        "pages": pages,
    }
    return common.View("pickers/units", params, common.keyboard(rows))


async def unit_view(
    session: AsyncSession,
    ctx: LinliContext,
    update: Update,
    flow: Flow,
    *,
    field: str = "unit_id",
    can: Can | None = Can.lead,
    heading: str | None = None,
    back: tuple[str, str, str] | None = None,
    start: int = 0,
) -> common.View:
    """Open the unit picker on the flow in this transaction and return its first view, for a
    feature that sends it its own way (privately, say: `common.answer_privately`); `pick_unit`
    sends it. The flow's owner chooses a unit they may `can` on (Can.lead or Can.admin; None: any
    unit of the flow's community, for a resident saying where something is rather than acting
    on it, e.g. the building a report is about); the unit's id goes to flow.data[field].
    `heading`: the feature's question (a template) above the tree;
    `back`: (label folder, label key, callback data) of a button back to the feature's step;
    `start`: a unit to open at (it must be one they may act on)."""
    if can not in (Can.lead, Can.admin, None):
        raise ValueError(f"the unit picker asks about a unit: {can}")
    if can is None and flow.community_id is None:
        raise ValueError("a unit anywhere needs the flow's community")
    live = await flowui.load(session, ctx, update, flowui.flow_id(flow), kind=flow.kind)
    st = await base.begin(
        session,
        ctx,
        live,
        picker=PICKER,
        field=field,
        heading=heading,
        back=back,
        can=can.value if can is not None else None,
    )
    auth = await common.load_auth(session, ctx, update)
    return await level_view(session, ctx, auth, live, st, start, 0)


class UnitPick(TypedDict, total=False):
    """The unit picker's options, as `unit_view` takes them (with its defaults)."""

    field: str
    can: Can | None
    heading: str | None
    back: tuple[str, str, str] | None
    start: int


async def pick_unit(
    update: Update, ctx: LinliContext, flow: Flow, **options: Unpack[UnitPick]
) -> None:
    """`unit_view` in its own transaction, sent (the tapped message edited, or a new one)."""
    async with ctx.svc.db.transaction() as session:
        view = await unit_view(session, ctx, update, flow, **options)
    await common.show(update, ctx, view)


async def btn_level(update: Update, ctx: LinliContext) -> None:
    fid, unit_id, page = common.callback_args(update, LEVEL, 3)
    async with ctx.svc.db.transaction() as session:  # the flow is locked while it is read
        flow = await flowui.load(session, ctx, update, fid, kind=None)
        st = base.state(flow, PICKER)
        auth = await common.load_auth(session, ctx, update)
        view = await level_view(
            session, ctx, auth, flow, st, common.as_int(unit_id), common.as_int(page)
        )
    await common.show(update, ctx, view)


async def btn_choose(update: Update, ctx: LinliContext) -> None:
    fid, unit_id = common.callback_args(update, CHOOSE, 2)
    async with ctx.svc.db.transaction() as session:
        flow = await flowui.load(session, ctx, update, fid, kind=None)
        st = base.state(flow, PICKER)
        auth = await common.load_auth(session, ctx, update)
        unit = await people.get_unit(session, common.as_int(unit_id))
        _check(auth, unit, _can(st), flow.community_id)
        field = await base.finish(session, ctx, flow, unit.id)
    await base.after(update, ctx, flow, field)


HANDLERS = ((LEVEL, btn_level), (CHOOSE, btn_choose))
