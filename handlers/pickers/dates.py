"""The date-and-time picker: the next 14 days as buttons, then the common times still ahead on
the chosen day, or a typed `12-09 9:00` / `2026-12-09 09:00-11:30`, all in the community's zone
(models.when); optionally an end time on the same day. The past is refused in words.

Buttons: `fd:<flow>:<yyyymmdd>` a day, `ft:<flow>:<yyyymmdd>:<hhmm>` a time, `fe:<flow>:<min>`
an end so many minutes after the start (0: none), `fo:<flow>` now (where offered), `fk:<flow>:s|e`
type the start or the end, `fb:<flow>` back to the days. Stored: {"start": ISO, "end": ISO|None}
in UTC ({"start": None, "end": None} for "now"); `slot(flow.data[field])` reads it back.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime, time, timedelta
from typing import Any

from sqlmodel.ext.asyncio.session import AsyncSession
from telegram import Update

from bot.context import LinliContext
from handlers import common, flowui
from handlers.pickers import base
from models import people, when
from models.errors import InvalidInput
from models.flows import Flow

PICKER = "when"
DAY, TIME, END, NOW, TYPE, BACK = "fd", "ft", "fe", "fo", "fk", "fb"
ASK_START, ASK_END = "_when", "_when_end"
DURATIONS = (30, 60, 90, 120, 180, 240)  # minutes an end may be offered after the start


def slot(value: Any) -> when.Slot | None:
    """A stored choice as UTC datetimes; None when "now" was chosen."""
    if not isinstance(value, dict) or "start" not in value:
        raise InvalidInput("stale_button")
    if value["start"] is None:
        return None
    end = datetime.fromisoformat(value["end"]) if value.get("end") else None
    return when.Slot(datetime.fromisoformat(value["start"]), end)


def _stored(start: datetime | None, end: datetime | None) -> dict[str, str | None]:
    return {
        "start": start.isoformat() if start else None,
        "end": end.isoformat() if end else None,
    }


def _day(text: str, st: dict[str, Any], now: datetime) -> date:
    """A day from a button: one of the 14 offered (an earlier one is the past)."""
    if len(text) != 8 or not text.isdigit():
        raise InvalidInput("stale_button")
    try:
        day = date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        raise InvalidInput("stale_button") from None
    offered = when.next_days(now, st["zone"])
    if day < offered[0]:
        raise InvalidInput("time_past")
    if day > offered[-1]:
        raise InvalidInput("stale_button")
    return day


def _time(text: str) -> time:
    if len(text) != 4 or not text.isdigit():
        raise InvalidInput("stale_button")
    try:
        return time(int(text[:2]), int(text[2:]))
    except ValueError:
        raise InvalidInput("stale_button") from None


def _times(st: dict[str, Any]) -> list[time]:
    return [time.fromisoformat(t) for t in st["times"]]


def _example(ctx: LinliContext, st: dict[str, Any]) -> str:
    tomorrow = when.local_date(ctx.now(), st["zone"]) + timedelta(days=1)
    return f"{tomorrow:%m-%d} 9:00"


def days_view(ctx: LinliContext, flow: Flow, st: dict[str, Any]) -> common.View:
    fid = flowui.flow_id(flow)
    days = when.next_days(ctx.now(), st["zone"])
    offer = st.get("now")
    now_label = common.label(ctx, offer[0], offer[1]) if offer else ""
    rows = [[common.button(now_label, f"{NOW}:{fid}")]] if offer else []
    rows += common.rows_of(
        [
            common.button(base.lab(ctx, "day", d=d, offset=i), f"{DAY}:{fid}:{d:%Y%m%d}")
            for i, d in enumerate(days)
        ],
        2,
    )
    rows.append([common.button(base.lab(ctx, "type_time"), f"{TYPE}:{fid}:s")])
    rows += base.footer(ctx, flow, st)
    params = {
        "heading": base.heading(ctx, flow, st),
        "end": st["end"],
        "example": _example(ctx, st),
    }
    return common.View("pickers/days", params, common.keyboard(rows))


def times_view(ctx: LinliContext, flow: Flow, st: dict[str, Any], day: date) -> common.View:
    fid = flowui.flow_id(flow)
    left = when.times_left(day, ctx.now(), st["zone"], _times(st))
    rows = common.rows_of(
        [common.button(f"{t:%H:%M}", f"{TIME}:{fid}:{day:%Y%m%d}:{t:%H%M}") for t in left], 3
    )
    rows.append([common.button(base.lab(ctx, "type_time"), f"{TYPE}:{fid}:s")])
    rows.append([common.button(base.lab(ctx, "other_day"), f"{BACK}:{fid}")])
    rows += base.footer(ctx, flow, st)
    offset = (day - when.local_date(ctx.now(), st["zone"])).days
    params = {
        "heading": base.heading(ctx, flow, st),
        "day": day,
        "offset": offset,
        "left": len(left),
    }
    return common.View("pickers/times", params, common.keyboard(rows))


def _ends(start: datetime, zone: str) -> list[int]:
    """The offered durations that end on the start's own day."""
    day = when.local_date(start, zone)
    return [m for m in DURATIONS if when.local_date(start + timedelta(minutes=m), zone) == day]


def end_view(ctx: LinliContext, flow: Flow, st: dict[str, Any], start: datetime) -> common.View:
    fid = flowui.flow_id(flow)
    zone = st["zone"]
    local = start.astimezone(when.zone_of(zone))
    ends = [
        common.button(
            base.lab(ctx, "end_at", at=f"{local + timedelta(minutes=m):%H:%M}", minutes=m),
            f"{END}:{fid}:{m}",
        )
        for m in _ends(start, zone)
    ]
    rows = common.rows_of(ends, 2)
    rows.append([common.button(base.lab(ctx, "no_end"), f"{END}:{fid}:0")])
    rows.append([common.button(base.lab(ctx, "type_end"), f"{TYPE}:{fid}:e")])
    rows.append([common.button(base.lab(ctx, "other_day"), f"{BACK}:{fid}")])
    rows += base.footer(ctx, flow, st)
    params = {"heading": base.heading(ctx, flow, st), "start": start, "zone": zone}
    return common.View("pickers/end", params, common.keyboard(rows))


async def _zone(session: AsyncSession, flow: Flow, zone: str | None, default: str) -> str:
    if zone:
        return zone
    if flow.community_id is not None:
        return (await people.get_community(session, flow.community_id)).timezone
    return default


async def pick_when(
    update: Update,
    ctx: LinliContext,
    flow: Flow,
    *,
    field: str = "starts_at",
    end: bool = False,
    now: bool | tuple[str, str] = False,
    times: Sequence[time] = when.COMMON_TIMES,
    heading: str | None = None,
    back: tuple[str, str, str] | None = None,
    zone: str | None = None,
) -> None:
    """Let the owner choose a moment (and with end=True, optionally an end on the same day) in
    `zone` (default: the flow's community's), from `times` on the chosen day or typed. `now`
    offers "now" first (True: labelled "🚀 now"; or the feature's (label folder, key)).
    Stored in flow.data[field] as {"start": ISO, "end": ISO|None} (UTC)."""
    offer = ("pickers", "now") if now is True else now or None
    async with ctx.svc.db.transaction() as session:
        live = await flowui.load(session, ctx, update, flowui.flow_id(flow), kind=flow.kind)
        place = await _zone(session, live, zone, ctx.svc.renderer.timezone)
        st = await base.begin(
            session, ctx, live, picker=PICKER, field=field, heading=heading, back=back,
            end=end, now=offer, zone=place, start=None,
            times=[f"{t:%H:%M}" for t in times],
        )  # fmt: skip
    await common.show(update, ctx, days_view(ctx, live, st))


async def _open(
    session: AsyncSession, ctx: LinliContext, update: Update, fid: str | int
) -> tuple[Flow, dict[str, Any]]:
    flow = await flowui.load(session, ctx, update, fid, kind=None)
    return flow, base.state(flow, PICKER)


async def _settle(
    update: Update, ctx: LinliContext, fid: str | int, start: datetime, end: datetime | None
) -> None:
    """A start (and maybe end) is known: ask for the end if one is wanted, else store."""
    async with ctx.svc.db.transaction() as session:
        flow, st = await _open(session, ctx, update, fid)
        if st["end"] and end is None:
            await base.keep(session, ctx, flow, {**st, "start": start.isoformat()})
            view: common.View | None = end_view(ctx, flow, st, start)
            field = ""
        else:
            view = None
            field = await base.finish(
                session, ctx, flow, _stored(start, end if st["end"] else None)
            )
    if view is not None:
        await common.show(update, ctx, view)
    else:
        await base.after(update, ctx, flow, field)


async def btn_day(update: Update, ctx: LinliContext) -> None:
    fid, day = common.callback_args(update, DAY, 2)
    async with ctx.svc.db.transaction() as session:
        flow, st = await _open(session, ctx, update, fid)
    await common.show(update, ctx, times_view(ctx, flow, st, _day(day, st, ctx.now())))


async def btn_time(update: Update, ctx: LinliContext) -> None:
    fid, day, at = common.callback_args(update, TIME, 3)
    async with ctx.svc.db.transaction() as session:
        _flow, st = await _open(session, ctx, update, fid)
    start = when.at(_day(day, st, ctx.now()), _time(at), now=ctx.now(), zone=st["zone"])
    await _settle(update, ctx, fid, start, None)


async def btn_end(update: Update, ctx: LinliContext) -> None:
    fid, minutes = common.callback_args(update, END, 2)
    wanted = common.as_int(minutes)
    async with ctx.svc.db.transaction() as session:
        flow, st = await _open(session, ctx, update, fid)
        if not st["end"] or not st.get("start") or (wanted and wanted not in DURATIONS):
            raise InvalidInput("stale_button")
        start = datetime.fromisoformat(st["start"])
        if start < ctx.now():
            raise InvalidInput("time_past")
        end = start + timedelta(minutes=wanted) if wanted else None
        if wanted and wanted not in _ends(start, st["zone"]):
            raise InvalidInput("stale_button")
        field = await base.finish(session, ctx, flow, _stored(start, end))
    await base.after(update, ctx, flow, field)


async def btn_now(update: Update, ctx: LinliContext) -> None:
    (fid,) = common.callback_args(update, NOW, 1)
    async with ctx.svc.db.transaction() as session:
        flow, st = await _open(session, ctx, update, fid)
        if not st.get("now"):
            raise InvalidInput("stale_button")
        field = await base.finish(session, ctx, flow, _stored(None, None))
    await base.after(update, ctx, flow, field)


async def btn_back(update: Update, ctx: LinliContext) -> None:
    (fid,) = common.callback_args(update, BACK, 1)
    async with ctx.svc.db.transaction() as session:
        flow, st = await _open(session, ctx, update, fid)
        st = {**st, "start": None}
        await base.keep(session, ctx, flow, st)
    await common.show(update, ctx, days_view(ctx, flow, st))


async def _ask(
    update: Update,
    ctx: LinliContext,
    flow: Flow,
    st: dict[str, Any],
    what: str,
    problem: str | None,
) -> None:
    if what == "e":
        start = datetime.fromisoformat(st["start"])
        await flowui.ask(
            update, ctx, flow, step=ASK_END, template="pickers/ask_end",
            problem=problem, start=start, zone=st["zone"],
        )  # fmt: skip
    else:
        await flowui.ask(
            update, ctx, flow, step=ASK_START, template="pickers/ask_when",
            problem=problem, example=_example(ctx, st), end=st["end"],
        )  # fmt: skip


async def btn_type(update: Update, ctx: LinliContext) -> None:
    fid, what = common.callback_args(update, TYPE, 2)
    async with ctx.svc.db.transaction() as session:
        flow, st = await _open(session, ctx, update, fid)
    if what not in ("s", "e") or (what == "e" and not (st["end"] and st.get("start"))):
        raise InvalidInput("stale_button")
    await _ask(update, ctx, flow, st, what, None)
    await common.answer(update, ctx)


@flowui.answers(flowui.ANY, ASK_START)
async def on_typed_start(update: Update, ctx: LinliContext, flow: Flow, text: str) -> None:
    st = base.state(flow, PICKER)
    try:
        found = when.parse(text, now=ctx.now(), zone=st["zone"])
    except InvalidInput as exc:
        await _ask(update, ctx, flow, st, "s", exc.key)
        return
    await _settle(update, ctx, flowui.flow_id(flow), found.start, found.end)


@flowui.answers(flowui.ANY, ASK_END)
async def on_typed_end(update: Update, ctx: LinliContext, flow: Flow, text: str) -> None:
    st = base.state(flow, PICKER)
    if not st.get("start"):
        raise InvalidInput("stale_answer")
    start = datetime.fromisoformat(st["start"])
    local = start.astimezone(when.zone_of(st["zone"]))
    try:
        found = when.parse(f"{local:%Y-%m-%d %H:%M}-{text.strip()}", now=ctx.now(), zone=st["zone"])
    except InvalidInput as exc:
        await _ask(update, ctx, flow, st, "e", exc.key)
        return
    await _settle(update, ctx, flowui.flow_id(flow), found.start, found.end)


HANDLERS = (
    (DAY, btn_day),
    (TIME, btn_time),
    (END, btn_end),
    (NOW, btn_now),
    (TYPE, btn_type),
    (BACK, btn_back),
)
