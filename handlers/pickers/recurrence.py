"""The recurrence picker: just once, weekly on chosen weekdays, or monthly on chosen days (such as
9, 19 and 29; a day a short month lacks falls on its last day, once — models.when.month_days).

Buttons: `fr:<flow>:o|w|m` once / weekly / monthly (`c`: show the three again), `fw:<flow>:<day>:
<1|0>` add or remove a day (a state, never a toggle), `fy:<flow>` done. Stored: None (once),
{"weekly": [0, 2]} (0 = Monday) or {"monthly": [9, 19, 29]}.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from telegram import Update

from bot.context import LinliContext
from handlers import common, flowui
from handlers.pickers import base
from models import when
from models.errors import InvalidInput
from models.flows import Flow

PICKER = "repeat"
MODE, DAY, DONE = "fr", "fw", "fy"
MODES = {"o": None, "w": "weekly", "m": "monthly"}
SHORT_MONTH_DAYS = (29, 30, 31)


def days_of(mode: str) -> range:
    return range(7) if mode == "weekly" else range(1, 32)


def mode_view(ctx: LinliContext, flow: Flow, st: dict[str, Any]) -> common.View:
    fid = flowui.flow_id(flow)
    rows = [
        [common.button(base.lab(ctx, "once"), f"{MODE}:{fid}:o")],
        [
            common.button(base.lab(ctx, "weekly"), f"{MODE}:{fid}:w"),
            common.button(base.lab(ctx, "monthly"), f"{MODE}:{fid}:m"),
        ],
        *base.footer(ctx, flow, st),
    ]
    return common.View(
        "pickers/repeat", {"heading": _heading(ctx, flow, st)}, common.keyboard(rows)
    )


def _heading(ctx: LinliContext, flow: Flow, st: dict[str, Any]) -> Any:
    """The feature's heading, given the start the recurrence begins with (if any)."""
    start = datetime.fromisoformat(st["start"]) if st.get("start") else None
    return base.heading(ctx, flow, st, start=start, zone=st["zone"])


def days_view(ctx: LinliContext, flow: Flow, st: dict[str, Any]) -> common.View:
    fid, mode, chosen = flowui.flow_id(flow), st["mode"], set(st["days"])
    key = "weekday" if mode == "weekly" else "monthday"
    buttons = [
        common.button(
            base.lab(ctx, key, day=d, on=d in chosen),
            f"{DAY}:{fid}:{d}:{common.state(d not in chosen)}",
        )
        for d in days_of(mode)
    ]
    rows = common.rows_of(buttons, 4 if mode == "weekly" else 7)
    rows.append([common.button(base.lab(ctx, "done"), f"{DONE}:{fid}")])
    rows.append([common.button(base.lab(ctx, "change_repeat"), f"{MODE}:{fid}:c")])
    rows += base.footer(ctx, flow, st)
    params = {
        "heading": _heading(ctx, flow, st),
        "rule": {mode: sorted(chosen)} if chosen else None,
        "at": _at(st),
        "mode": mode,
        "short": sorted(d for d in chosen if d in SHORT_MONTH_DAYS) if mode == "monthly" else [],
    }
    return common.View("pickers/repeat_days", params, common.keyboard(rows))


async def pick_repeat(
    update: Update,
    ctx: LinliContext,
    flow: Flow,
    *,
    field: str = "repeat",
    start: datetime | None = None,
    heading: str | None = None,
    back: tuple[str, str, str] | None = None,
    zone: str = "",
) -> None:
    """Let the owner choose how a thing repeats; stored in flow.data[field]. With `start` (and
    its `zone`), weekly starts on its weekday and monthly on its day of the month, and the rule
    is shown with its time of day; the feature's `heading` gets `start` and `zone` too."""
    async with ctx.svc.db.transaction() as session:
        live = await flowui.load(session, ctx, update, flowui.flow_id(flow), kind=flow.kind)
        st = await base.begin(
            session, ctx, live, picker=PICKER, field=field, heading=heading, back=back,
            mode=None, days=[], start=start.isoformat() if start else None,
            zone=zone or ctx.svc.renderer.timezone,
        )  # fmt: skip
    await common.show(update, ctx, mode_view(ctx, live, st))


def _at(st: dict[str, Any]) -> str:
    """The local time of day the recurrence keeps ("" without a start)."""
    if not st.get("start"):
        return ""
    return f"{datetime.fromisoformat(st['start']).astimezone(when.zone_of(st['zone'])):%H:%M}"


def _first_days(mode: str, st: dict[str, Any]) -> list[int]:
    """Weekly starts on the start's weekday, monthly on its day of the month."""
    if not st.get("start"):
        return []
    first = when.local_date(datetime.fromisoformat(st["start"]), st["zone"])
    return [first.weekday()] if mode == "weekly" else [first.day]


async def btn_mode(update: Update, ctx: LinliContext) -> None:
    fid, code = common.callback_args(update, MODE, 2)
    if code not in MODES and code != "c":
        raise InvalidInput("stale_button")
    async with ctx.svc.db.transaction() as session:
        flow = await flowui.load(session, ctx, update, fid, kind=None)
        st = base.state(flow, PICKER)
        field = ""
        if code == "c":
            view: common.View | None = mode_view(ctx, flow, st)
        elif MODES[code] is None:
            view, field = None, await base.finish(session, ctx, flow, None)
        else:
            mode = str(MODES[code])
            if st["mode"] != mode:  # choosing the same again keeps the days already chosen
                st = {**st, "mode": mode, "days": _first_days(mode, st)}
                await base.keep(session, ctx, flow, st)
            view = days_view(ctx, flow, st)
    if view is not None:
        await common.show(update, ctx, view)
    else:
        await base.after(update, ctx, flow, field)


async def btn_day(update: Update, ctx: LinliContext) -> None:
    fid, day, wanted = common.callback_args(update, DAY, 3)
    number, on = common.as_int(day), common.as_state(wanted)
    async with ctx.svc.db.transaction() as session:
        flow = await flowui.load(session, ctx, update, fid, kind=None)
        st = base.state(flow, PICKER)
        if st["mode"] is None or number not in days_of(st["mode"]):
            raise InvalidInput("stale_button")
        days = set(st["days"]) | {number} if on else set(st["days"]) - {number}
        st = {**st, "days": sorted(days)}
        await base.keep(session, ctx, flow, st)
    await common.show(update, ctx, days_view(ctx, flow, st))


async def btn_done(update: Update, ctx: LinliContext) -> None:
    (fid,) = common.callback_args(update, DONE, 1)
    async with ctx.svc.db.transaction() as session:
        flow = await flowui.load(session, ctx, update, fid, kind=None)
        st = base.state(flow, PICKER)
        if st["mode"] is None:
            raise InvalidInput("stale_button")
        if not st["days"]:
            raise InvalidInput("repeat_no_days")
        field = await base.finish(session, ctx, flow, {st["mode"]: sorted(st["days"])})
    await base.after(update, ctx, flow, field)


HANDLERS = ((MODE, btn_mode), (DAY, btn_day), (DONE, btn_done))
