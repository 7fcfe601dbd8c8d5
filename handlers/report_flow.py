"""The guided /report: a resident builds a report by buttons in their private chat, one step at a
time, with one free-text answer — what kind of problem, where (a place in the building and a
floor, a Telegram location, typed words, or another building from the unit picker), what is
wrong (words and up to 5 photos), who may see it, a preview with "same problem? +1", then Send.

The draft is a `models.flows` Flow of kind "report": every button carries its id and the
server loads it (the owner's, open, not expired) before anything else; confirming files the
report once (a double tap or a repeated update gets the same R-number). Which step comes next
is decided from what the draft holds (`_next`), so a step can be changed without losing the
rest. Started in a group, the draft remembers that group (its card goes there if the resident
chooses) and the questions go to the private chat; nothing of the draft is said in the group.
"""

from __future__ import annotations

import re
from typing import Any

from sqlmodel.ext.asyncio.session import AsyncSession
from telegram import InlineKeyboardButton, Update
from telegram.ext import CallbackQueryHandler, MessageHandler, filters

from bot.context import LinliApp, LinliContext
from handlers import common, flowui, pickers
from models import flows, people, reports
from models.errors import InvalidInput
from models.flows import Flow

KIND = "report"
PREFIX = "rd"
START = "rd"  # /start rd<flow id>: the private link a group hands out
ASK_WHAT = "reports/flow_ask_what"  # a question: the typed answer (or a photo) is the step
SO_FAR = "reports/flow_what_so_far"
FLOORS = [-2, -1, *range(1, 31)]
# "5", "5楼", "12F", "-1", "B1" (one below ground), full-width digits too (translated first).
_FLOOR = re.compile(
    r"^\s*(?:(?P<b>[Bb])\s*(?P<below>\d{1,2})|(?P<n>-?\d{1,3}))\s*(?:楼|层|F|f)?\s*$"
)


def _l(ctx: LinliContext, key: str, **params: object) -> str:
    return common.label(ctx, "reports", key, **params)


def _fid(flow: Flow) -> int:
    return flowui.flow_id(flow)


# --- starting -------------------------------------------------------------------------------


async def home_unit(session: AsyncSession, person_id: int) -> people.Unit:
    """Where a resident's report is about unless they say otherwise: their verified home."""
    for membership in await people.memberships(session, person_id=person_id):
        if membership.resident.status == people.ResidentStatus.verified:
            return membership.unit
    raise InvalidInput("report_no_unit")


async def start(update: Update, ctx: LinliContext) -> None:
    """/report alone, the Report a problem button, /start report: a new draft. From a group
    the draft keeps the group (for the card) and its unit; privately, the person's home."""
    chat = update.effective_chat
    assert chat is not None
    uid = common.user_id(update)
    async with ctx.svc.db.transaction() as session:
        data: dict[str, Any] = {"chat_id": None, "thread_id": 0}
        if common.is_private(update):
            unit = await home_unit(session, uid)
        else:
            link = await people.link_for(
                session, chat_id=chat.id, thread_id=common.thread_of(update.effective_message)
            )
            if link is None:
                raise InvalidInput("chat_not_linked")
            unit = await people.get_unit(session, link.unit_id)
            data |= {"chat_id": link.chat_id, "thread_id": link.thread_id}
        data["unit_id"] = unit.id
        flow = await flows.start(
            session, kind=KIND, owner_id=uid, community_id=unit.community_id, private=True,
            data=data, now=ctx.now(),
        )  # fmt: skip
        view = await _screen(session, ctx, flow)
    await common.answer_privately(update, ctx, view, f"{START}{_fid(flow)}", feature="reports",
                           offer="flow_open_private")  # fmt: skip


async def resume(update: Update, ctx: LinliContext, fid: int) -> None:
    """/start rd<flow id>: the draft begun in a group, opened in the private chat."""
    async with ctx.svc.db.transaction() as session:
        flow = await flowui.load(session, ctx, update, fid, kind=KIND)
        view = await _screen(session, ctx, flow)
    await _present(update, ctx, flow, view)


# --- what comes next ----------------------------------------------------------------------


def _placed(data: dict[str, Any]) -> bool:
    return bool(data.get("place") or data.get("venue") or data.get("latitude") is not None)


async def _group_for(session: AsyncSession, data: dict[str, Any]) -> int | None:
    """The group a public report's card goes to: the one it was begun in, else the chat of its
    unit or of the nearest unit above with one (a building's group for a report about one of
    its entrances); none: it can only be private."""
    if data.get("chat_id") is not None:
        return int(data["chat_id"])
    unit = await people.get_unit(session, int(data["unit_id"]))
    links = await people.links_of_units(session, unit.lineage)
    nearest = sorted(links, key=lambda link: -unit.lineage.index(link.unit_id))
    return nearest[0].chat_id if nearest else None


async def _screen(session: AsyncSession, ctx: LinliContext, flow: Flow) -> common.View:
    """The next step the draft needs, from what it holds."""
    data = flow.data
    unit = await people.get_unit(session, int(data["unit_id"]))
    cats = {
        c.code: c
        for c in await reports.categories(session, community_id=unit.community_id, now=ctx.now())
    }
    fid = _fid(flow)
    cancel = flowui.cancel_row(ctx, flow)
    base: dict[str, Any] = {"unit": unit.name}
    code = data.get("category")
    if code not in cats:
        buttons = [
            common.button(c.name(ctx.lang), f"{PREFIX}:{fid}:c:{c.code}") for c in cats.values()
        ]
        return common.View(
            "reports/flow_category", base, common.keyboard([*common.rows_of(buttons, 3), cancel])
        )
    base["category"] = cats[code].name(ctx.lang)
    if not _placed(data):
        places = [
            common.button(_l(ctx, "place", place=p.value), f"{PREFIX}:{fid}:p:{p.value}")
            for p in reports.Place
            if p != reports.Place.outdoors
        ]
        rows = common.rows_of(places, 3)
        rows.append([common.button(_l(ctx, "flow_outdoors"), f"{PREFIX}:{fid}:loc")])
        rows.append([common.button(_l(ctx, "flow_type_where"), f"{PREFIX}:{fid}:v")])
        rows.append([common.button(_l(ctx, "flow_other_unit"), f"{PREFIX}:{fid}:u")])
        return common.View("reports/flow_where", base, common.keyboard([*rows, cancel]))
    if data.get("place") in reports.FLOORED and "floor" not in data:
        floors = [common.button(_l(ctx, "floor", n=n), f"{PREFIX}:{fid}:f:{n}") for n in FLOORS]
        rows = common.rows_of(floors, 8)
        rows.append(
            [
                common.button(_l(ctx, "flow_type_floor"), f"{PREFIX}:{fid}:tf"),
                common.button(_l(ctx, "flow_skip"), f"{PREFIX}:{fid}:f:-"),
            ]
        )
        return common.View("reports/flow_floor", base, common.keyboard([*rows, cancel]))
    if not data.get("text") and not data.get("photos"):
        return common.View(
            ASK_WHAT, base | {"limit": reports.TEXT_LIMIT, "photos": reports.PHOTO_LIMIT}
        )
    if not data.get("described"):
        return common.View(
            SO_FAR, base | _what(data), common.keyboard([_what_row(ctx, flow), cancel])
        )
    group = await _group_for(session, data)
    if "public" not in data and group is not None:
        rows = [
            [common.button(_l(ctx, "flow_only_leads"), f"{PREFIX}:{fid}:s:0")],
            [common.button(_l(ctx, "flow_also_group"), f"{PREFIX}:{fid}:s:1")],
        ]
        return common.View("reports/flow_visibility", base, common.keyboard([*rows, cancel]))
    return await _preview(session, ctx, flow, unit, base, public=bool(data.get("public")))


def _what(data: dict[str, Any]) -> dict[str, Any]:
    return {"text": data.get("text", ""), "photos": len(data.get("photos", []))}


def _what_row(ctx: LinliContext, flow: Flow) -> list[InlineKeyboardButton]:
    return [common.button(_l(ctx, "flow_next"), f"{PREFIX}:{_fid(flow)}:n")]


async def _present(update: Update, ctx: LinliContext, flow: Flow, view: common.View) -> None:
    """Show the next step: a screen of buttons (the tapped message becomes it), or, for what is
    wrong, the question whose typed answer or photo is the step."""
    if view.name == ASK_WHAT:
        await _ask_what(update, ctx, flow)
        if update.callback_query is not None:
            await update.callback_query.answer()
    else:
        await common.show(update, ctx, view)


async def _preview(
    session: AsyncSession,
    ctx: LinliContext,
    flow: Flow,
    unit: people.Unit,
    base: dict[str, Any],
    *,
    public: bool,
) -> common.View:
    """Everything the report will say, the open reports of the same kind and place ("Same
    problem? +1"; Send then says "No, it's new"), and Send."""
    data, fid = flow.data, _fid(flow)
    found = await reports.duplicates(
        session, unit_id=unit.id or 0, category=data["category"], place=data.get("place")
    )
    same = [r for r in found if r.visibility == reports.Visibility.group]  # others: leads' only
    rows = [[common.button(_l(ctx, "same_plus_one", number=r.label), f"{PREFIX}:{fid}:+:{r.id}")]
            for r in same]  # fmt: skip
    rows.append(
        [common.button(_l(ctx, "flow_send_new" if same else "flow_send"), f"{PREFIX}:{fid}:ok")]
    )
    rows.append([common.button(_l(ctx, "flow_start_over"), f"{PREFIX}:{fid}:r")])
    params = (
        base
        | _what(data)
        | {
            "place": data.get("place"),
            "floor": data.get("floor"),
            "venue": data.get("venue"),
            "located": data.get("latitude") is not None,
            "public": public,
            "same": [{"number": r.label, "supporters": r.supporters} for r in same],
        }
    )
    return common.View(
        "reports/flow_preview", params, common.keyboard([*rows, flowui.cancel_row(ctx, flow)])
    )


async def _show_next(update: Update, ctx: LinliContext, fid: int) -> None:
    async with ctx.svc.db.transaction() as session:
        flow = await flowui.load(session, ctx, update, fid, kind=KIND)
        view = await _screen(session, ctx, flow)
    await _present(update, ctx, flow, view)


# --- the buttons --------------------------------------------------------------------------


async def btn_step(update: Update, ctx: LinliContext) -> None:
    """rd:<flow>:<what>[:<value>] — c category, p place, f floor, s public (0/1), + support,
    loc / v / tf / w ask for typed input or a location, u another unit, n next, r start over,
    ok send. Each sets a value (never toggles); the flow is loaded and checked first."""
    query = update.callback_query
    assert query is not None
    parts = (query.data or "").split(":")
    if len(parts) not in (3, 4) or parts[0] != PREFIX:
        raise InvalidInput("stale_button")
    fid, what, value = common.as_int(parts[1]), parts[2], parts[3] if len(parts) == 4 else None
    if what == "ok" and value is None:
        await _send(update, ctx, fid)
        return
    if what == "+" and value is not None:
        await _support(update, ctx, fid, common.as_int(value))
        return
    asks = {"loc": "location", "v": "venue", "tf": "floor"}
    async with ctx.svc.db.transaction() as session:
        flow = await flowui.load(session, ctx, update, fid, kind=KIND)
        if not (what in asks or what == "u") or value is not None:
            await _set(session, ctx, flow, what, value)
    if what in asks and value is None:
        await flowui.ask(update, ctx, flow, step=asks[what], template=ASKS[asks[what]])
        await query.answer()
        return
    if what == "u":
        await pickers.units(update, ctx, flow, field="unit_id", can=None,
                            heading="reports/flow_which_unit")  # fmt: skip
        return
    await _show_next(update, ctx, fid)


async def _set(session: AsyncSession, ctx: LinliContext, flow: Flow, what: str, value: Any) -> None:
    """One button's value into the draft, checked as the report will be."""
    now = ctx.now()
    if what == "c" and isinstance(value, str):
        unit = await people.get_unit(session, int(flow.data["unit_id"]))
        cat = await reports.get_category(
            session, community_id=unit.community_id, code=value, now=now
        )
        if not cat.active:
            raise InvalidInput("report_bad_category")
        await flows.update(session, flow, now=now, category=cat.code)
    elif what == "p" and value is not None:
        place = reports.check_place(value)
        flow.data = {k: v for k, v in flow.data.items() if k != "floor"}
        await flows.update(session, flow, now=now, place=place, latitude=None, longitude=None)
    elif what == "f" and value is not None:
        floor = None if value == "-" else _floor(value)
        await flows.update(session, flow, now=now, floor=floor)
    elif what == "s" and value in ("0", "1"):
        await flows.update(session, flow, now=now, public=value == "1")
    elif what == "n" and value is None:
        if not flow.data.get("text") and not flow.data.get("photos"):
            raise InvalidInput("report_empty")
        await flows.update(session, flow, now=now, described=True)
    elif what == "r" and value is None:
        keep = {k: flow.data.get(k) for k in ("unit_id", "chat_id", "thread_id")}
        flow.data = {}
        await flows.update(session, flow, now=now, **keep)
    else:
        raise InvalidInput("stale_button")


async def _support(update: Update, ctx: LinliContext, fid: int, report_id: int) -> None:
    """ "Same problem? +1" from the preview: the person supports that report and the draft is
    done (confirmed with that report: nothing is filed, and a second tap finds it closed)."""
    async with ctx.svc.db.transaction() as session:
        flow = await flowui.load(session, ctx, update, fid, kind=KIND)
        same = await reports.duplicates(
            session, unit_id=int(flow.data["unit_id"]), category=flow.data.get("category", ""),
            place=flow.data.get("place"),
        )  # fmt: skip
        if report_id not in {r.id for r in same if r.visibility == reports.Visibility.group}:
            raise InvalidInput("stale_button")

        async def plus_one(_: Flow) -> int:
            await reports.support(session, report_id=report_id, person_id=common.user_id(update),
                                  now=ctx.now())  # fmt: skip
            return report_id

        done, _ = await flows.confirm(
            session, flow_id=fid, owner_id=common.user_id(update), now=ctx.now(), make=plus_one,
            kind=KIND,
        )  # fmt: skip
        report = await reports.get(session, done.result_id or 0)
    await common.show(update, ctx, common.View("reports/flow_supported", {"number": report.label}))


async def _send(update: Update, ctx: LinliContext, fid: int) -> None:
    """Send: the report is filed once (a double tap shows the same number)."""
    async with ctx.svc.db.transaction() as session:

        async def make(flow: Flow) -> int:
            data = flow.data
            public = bool(data.get("public"))
            group = await _group_for(session, data) if public else None
            report, _ = await reports.file(
                session,
                reporter_id=flow.owner_id,
                unit_id=int(data["unit_id"]),
                category=str(data.get("category", "")),
                text=data.get("text"),
                photos=list(data.get("photos", [])),
                place=data.get("place"),
                floor=data.get("floor"),
                latitude=data.get("latitude"),
                longitude=data.get("longitude"),
                venue=data.get("venue"),
                chat_id=group,
                thread_id=int(data.get("thread_id") or 0) if group == data.get("chat_id") else 0,
                now=ctx.now(),
                origin_key=f"flow:{flow.id}",
            )
            return report.id or 0

        flow, created = await flows.confirm(
            session,
            flow_id=fid,
            owner_id=common.user_id(update),
            now=ctx.now(),
            make=make,
            kind=KIND,
        )
        report = await reports.get(session, flow.result_id or 0)
    public = report.visibility == reports.Visibility.group
    markup = None
    if public:
        markup = common.keyboard([[common.button(_l(ctx, "show_my_name"), f"rk:{report.id}:1")]])
    view = common.View(
        "reports/filed", {"number": report.label, "private": not public, "again": not created},
        markup,
    )  # fmt: skip
    await common.show(update, ctx, view)


# --- typed answers, photos and locations ----------------------------------------------------


ASKS = {
    "location": "reports/flow_ask_location",
    "venue": "reports/flow_ask_venue",
    "floor": "reports/flow_ask_floor",
}


async def _ask_again(
    update: Update, ctx: LinliContext, flow: Flow, step: str, problem: InvalidInput
) -> None:
    """A typed answer refused: say why, and ask the same question again (the draft is kept)."""
    await common.reply(update, ctx, f"errors/{problem.key}", **problem.params)
    if step == "what":
        await _ask_what(update, ctx, flow)
    else:
        await flowui.ask(update, ctx, flow, step=step, template=ASKS[step])


async def _ask_what(update: Update, ctx: LinliContext, flow: Flow) -> None:
    """What is wrong: the first question, or what the draft holds so far with Next."""
    if not flow.data.get("text") and not flow.data.get("photos"):
        await flowui.ask(update, ctx, flow, step="what", template=ASK_WHAT,
                         limit=reports.TEXT_LIMIT, photos=reports.PHOTO_LIMIT)  # fmt: skip
        return
    what = _what(flow.data)
    await flowui.ask(
        update, ctx, flow, step="what", template=SO_FAR, rows=[_what_row(ctx, flow)],
        limit=reports.PHOTO_LIMIT, text=what["text"], photos=what["photos"],
    )  # fmt: skip


@flowui.answers(KIND, "what", photos=True)
async def on_what(update: Update, ctx: LinliContext, flow: Flow, text: str) -> None:
    """Words (they replace earlier words) or a photo (added, up to 5; its caption is words).
    Asked again after each, with Next, so several photos can follow one another."""
    photo = flowui.photo_of(update)
    try:
        async with ctx.svc.db.transaction() as session:
            live = await flowui.load(session, ctx, update, _fid(flow), kind=KIND)
            words = reports.clean_text(text)
            if photo is not None:
                await flows.append(session, live, key="photos", value=photo,
                                   limit=reports.PHOTO_LIMIT, now=ctx.now())  # fmt: skip
            elif not words:
                raise InvalidInput("report_empty")
            if words:
                await flows.update(session, live, now=ctx.now(), text=words)
    except InvalidInput as exc:
        await _ask_again(update, ctx, flow, "what", exc)
        return
    await _ask_what(update, ctx, live)


@flowui.answers(KIND, "venue")
async def on_venue(update: Update, ctx: LinliContext, flow: Flow, text: str) -> None:
    words = " ".join(text.split())[: reports.VENUE_LIMIT]
    if not words:
        await _ask_again(
            update, ctx, flow, flow.step or "venue", InvalidInput("report_empty_place")
        )
        return
    async with ctx.svc.db.transaction() as session:
        live = await flowui.load(session, ctx, update, _fid(flow), kind=KIND)
        await flows.update(session, live, now=ctx.now(), venue=words, place=None)
        view = await _screen(session, ctx, live)
    await _present(update, ctx, live, view)


@flowui.answers(KIND, "location", places=True)
async def on_place(update: Update, ctx: LinliContext, flow: Flow, text: str) -> None:
    """A shared location or venue (outdoors), or words typed instead: they say where."""
    message = update.effective_message
    if message is None or message.location is None:
        words = " ".join(text.split())[: reports.VENUE_LIMIT]
        if not words:
            await _ask_again(update, ctx, flow, "location", InvalidInput("report_empty_place"))
            return
        await on_venue(update, ctx, flow, words)
        return
    venue = message.venue
    async with ctx.svc.db.transaction() as session:
        live = await flowui.load(session, ctx, update, _fid(flow), kind=KIND)
        await flows.update(
            session, live, now=ctx.now(), place=reports.Place.outdoors,
            latitude=message.location.latitude, longitude=message.location.longitude,
            venue=venue.title[: reports.VENUE_LIMIT] if venue else None,
        )  # fmt: skip
        view = await _screen(session, ctx, live)
    await _present(update, ctx, live, view)


@flowui.answers(KIND, "floor")
async def on_floor(update: Update, ctx: LinliContext, flow: Flow, text: str) -> None:
    found = _FLOOR.match(text.translate(_FULL_WIDTH))
    try:
        if found is None:
            raise InvalidInput("report_bad_floor", low=reports.FLOOR_RANGE[0],
                               high=reports.FLOOR_RANGE[1])  # fmt: skip
        floor = reports.check_floor(-int(found["below"]) if found["b"] else int(found["n"]))
    except InvalidInput as exc:
        await _ask_again(update, ctx, flow, "floor", exc)
        return
    async with ctx.svc.db.transaction() as session:
        live = await flowui.load(session, ctx, update, _fid(flow), kind=KIND)
        await flows.update(session, live, now=ctx.now(), floor=floor)
        view = await _screen(session, ctx, live)
    await _present(update, ctx, live, view)


def _floor(value: str) -> int:
    """A floor button's value (a negative one is below ground), checked."""
    number = common.as_int(value.removeprefix("-"))
    floor = reports.check_floor(-number if value.startswith("-") else number)
    assert floor is not None
    return floor


_FULL_WIDTH = str.maketrans("０１２３４５６７８９－Ｂｂ", "0123456789-Bb")


async def on_not_a_photo(update: Update, ctx: LinliContext) -> None:
    """A video or a file while the draft asks what is wrong: say what is accepted."""
    chat = update.effective_chat
    assert chat is not None
    async with ctx.svc.db.transaction(write=False) as session:
        waiting = await people.waiting_prompt(
            session, person_id=common.user_id(update), chat_id=chat.id
        )
    if waiting is not None and waiting.kind == flowui.PROMPT and waiting.payload.endswith(":what"):
        raise InvalidInput("report_photo_only")


@pickers.chosen(KIND)
async def after_unit(update: Update, ctx: LinliContext, flow: Flow, field: str) -> None:
    """Another building chosen: its places are asked next (a place in the old one is dropped)."""
    async with ctx.svc.db.transaction() as session:
        live = await flowui.load(session, ctx, update, _fid(flow), kind=KIND)
        where = ("place", "floor", "venue", "latitude", "longitude")
        live.data = {k: v for k, v in live.data.items() if k not in where}
        await flows.update(session, live, now=ctx.now())
        view = await _screen(session, ctx, live)
    await _present(update, ctx, live, view)


def register(app: LinliApp, *, group: int) -> None:
    """The draft's buttons; a video or file instead of a photo in `group`, a handler group
    that only looks (every other feature still sees those messages)."""
    app.add_handler(CallbackQueryHandler(btn_step, pattern=rf"^{PREFIX}:"))
    private = filters.ChatType.PRIVATE
    not_photo = filters.VIDEO | filters.Document.ALL | filters.ANIMATION
    app.add_handler(MessageHandler(private & not_photo, on_not_a_photo), group=group)
