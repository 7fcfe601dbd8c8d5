"""/newtask: a lead posts a volunteer task step by step, and edits an upcoming one.

The draft is a guided flow (models.flows, kind "task") driven from the lead's private chat:
title → the unit whose chats get the card (the unit-tree picker, only units the lead leads) →
description (or skip) → date and start/end (the date-and-time picker, in the unit's community's
zone) → place (typed, or a Telegram location or venue) → slots → points per attendance (the
"task" earning rule's by default) → skill tag (or none) → recurrence (the recurrence picker) →
a preview of the card exactly as residents will see it → Post. Posting runs through
`flows.confirm`, so a double tap posts one task. The unit comes second, not after the points as
the issue lists it: the zone the times are read in and the default points are the unit's
community's.

/newtask typed in a group or a topic starts the same draft; its steps go to the lead's private
chat, and the card also goes to that group or topic (if it is one of the community's chats).

Editing (kind "taskedit", from the lead panel's ✏️): time (the date-and-time picker), place,
slots, description; each change is saved at once by models.tasks.edit_task (volunteers told
privately, the card edited in place, fewer slots than are in moves the latest to the waitlist).

Prefixes: tn (the new task's buttons), te (the edit menu's).
"""

from __future__ import annotations

from functools import partial
from typing import Any

from markupsafe import Markup
from sqlmodel.ext.asyncio.session import AsyncSession
from telegram import InlineKeyboardButton, Update
from telegram.ext import CommandHandler, filters

from bot.context import LinliApp, LinliContext
from handlers import common, flowui, pickers
from models import flows, people, tasks
from models.errors import InvalidInput, NotAllowed
from models.flows import Flow
from models.people import Can

KIND, EDIT = "task", "taskedit"
NEW, MENU = "tn", "te"
POINT_CHOICES = (0, 5, 10, 20, 50)


def _l(ctx: LinliContext, key: str, **params: object) -> str:
    return common.label(ctx, "tasks", key, **params)


def _fid(flow: Flow) -> int:
    return flowui.flow_id(flow)


def _button_args(update: Update, prefix: str, count: int) -> list[str]:
    """`<prefix>:<flow>:<action>[:<value>]`: the flow id first, then what the button asks."""
    return common.callback_args(update, prefix, count)


async def _open(
    session: AsyncSession, ctx: LinliContext, update: Update, fid: str, kind: str
) -> Flow:
    return await flowui.load(session, ctx, update, fid, kind=kind)


# --- starting ----------------------------------------------------------------------------------


async def cmd_newtask(update: Update, ctx: LinliContext) -> None:
    """/newtask anywhere: a lead's draft, whose steps run in their private chat."""
    uid = common.user_id(update)
    chat = update.effective_chat
    assert chat is not None
    async with ctx.svc.db.transaction() as session:
        auth = await common.load_auth(session, ctx, update)
        if not auth.is_lead:
            raise NotAllowed("task_leads_only")
        data: dict[str, Any] = {}
        community_id = None
        if not common.is_private(update):
            thread = common.thread_of(update.effective_message)
            data["here"] = [chat.id, thread]
            link = await people.link_for(session, chat_id=chat.id, thread_id=thread)
            if link is not None:
                community_id = (await people.get_unit(session, link.unit_id)).community_id
                data["near"] = link.unit_id  # the unit picker opens here if the lead leads it
        flow = await flows.start(
            session,
            kind=KIND,
            owner_id=uid,
            community_id=community_id,
            private=True,
            data=data,
            now=ctx.now(),
        )
    if common.is_private(update):
        await _ask_title(update, ctx, flow)
        return
    begin = common.keyboard([[common.button(_l(ctx, "begin"), f"{NEW}:{_fid(flow)}:go")]])
    if await common.send_private(ctx, uid, ctx.lang, "tasks/new_begin", markup=begin):
        await common.reply(update, ctx, "tasks/sent_privately")
        return
    payload = f"newtask-{_fid(flow)}"
    await common.offer_private(update, ctx, payload, feature="tasks", offer="new_open_private")


async def cmd_start(update: Update, ctx: LinliContext) -> None:
    """/start newtask-<flow>: the lead opened their private chat from the group's link."""
    common.private_only(update)
    message = update.effective_message
    assert message is not None and message.text is not None
    fid = message.text.split(maxsplit=1)[1].removeprefix("newtask-")
    async with ctx.svc.db.transaction(write=False) as session:
        flow = await _open(session, ctx, update, fid, KIND)
    await _ask_title(update, ctx, flow)


def _description(text: str) -> str:
    return tasks.clean_text(text, limit=tasks.DESCRIPTION_LIMIT, error="task_description_long")


async def _ask_title(
    update: Update, ctx: LinliContext, flow: Flow, problem: str | None = None, **params: Any
) -> None:
    await flowui.ask(
        update, ctx, flow, step="title", template="tasks/ask_title", problem=problem, **params
    )


# --- the steps ---------------------------------------------------------------------------------


@flowui.answers(KIND, "title")
async def on_title(update: Update, ctx: LinliContext, flow: Flow, text: str) -> None:
    title = await flowui.check(
        lambda: tasks.clean_title(text), partial(_ask_title, update, ctx, flow)
    )
    async with ctx.svc.db.transaction() as session:
        live = await _open(session, ctx, update, str(_fid(flow)), KIND)
        await flows.update(session, live, now=ctx.now(), title=title)
        auth = await common.load_auth(session, ctx, update)
        near = live.data.get("near")
        start = 0
        if isinstance(near, int) and auth.may(Can.lead, unit=await people.get_unit(session, near)):
            start = near
    await pickers.units(
        update, ctx, live, field="unit_id", can=Can.lead, heading="tasks/ask_unit", start=start
    )


async def _ask_description(
    update: Update, ctx: LinliContext, flow: Flow, problem: str | None = None, **params: Any
) -> None:
    rows = [[common.button(_l(ctx, "skip"), f"{NEW}:{_fid(flow)}:d")]]
    given = str(flow.data.get("description") or "")  # a topic's lines, from the agenda
    if given:
        rows.insert(0, [common.button(_l(ctx, "keep_description"), f"{NEW}:{_fid(flow)}:dk")])
    await flowui.ask(
        update, ctx, flow, step="description", template="tasks/ask_description",
        rows=rows, problem=problem, given=given, **params,
    )  # fmt: skip


@flowui.answers(KIND, "description")
async def on_description(update: Update, ctx: LinliContext, flow: Flow, text: str) -> None:
    value = await flowui.check(
        lambda: _description(text), partial(_ask_description, update, ctx, flow)
    )
    await _after_description(update, ctx, flow, value)


async def _after_description(update: Update, ctx: LinliContext, flow: Flow, value: str) -> None:
    async with ctx.svc.db.transaction() as session:
        live = await _open(session, ctx, update, str(_fid(flow)), KIND)
        await flows.update(session, live, now=ctx.now(), description=value)
    await pickers.when(update, ctx, live, field="when", end=True, heading="tasks/ask_when")


def place_of(update: Update, text: str, *, named: str = "") -> dict[str, Any]:
    """A place from a typed answer, or from a shared location or venue (its name and address,
    and where it is). A bare pin keeps the place's name (`named`) if it has one, else is shown
    by its coordinates."""
    message = update.effective_message
    venue = message.venue if message is not None else None
    spot = venue.location if venue is not None else (message.location if message else None)
    if venue is not None:
        text = f"{venue.title} {venue.address}".strip()
    place = tasks.clean_text(text, limit=tasks.PLACE_LIMIT, error="task_place_long")
    if spot is not None and not place:
        place = named or f"{spot.latitude:.5f}, {spot.longitude:.5f}"
    if not place:
        raise InvalidInput("task_place_empty")
    return {
        "place": place,
        "latitude": spot.latitude if spot is not None else None,
        "longitude": spot.longitude if spot is not None else None,
    }


async def _ask_place(
    update: Update, ctx: LinliContext, flow: Flow, problem: str | None = None, **params: Any
) -> None:
    await flowui.ask(
        update, ctx, flow, step="place", template="tasks/ask_place", problem=problem, **params
    )


@flowui.answers(KIND, "place", places=True)
async def on_place(update: Update, ctx: LinliContext, flow: Flow, text: str) -> None:
    found = await flowui.check(
        lambda: place_of(update, text), partial(_ask_place, update, ctx, flow)
    )
    async with ctx.svc.db.transaction() as session:
        live = await _open(session, ctx, update, str(_fid(flow)), KIND)
        await flows.update(session, live, now=ctx.now(), **found)
    await _ask_slots(update, ctx, live)


def slot_rows(ctx: LinliContext, prefix: str, fid: int) -> list[list[InlineKeyboardButton]]:
    """3 / 5 / 10 / 20 / unlimited (a number can be typed too)."""
    choices = [common.button(str(n), f"{prefix}:{fid}:s:{n}") for n in tasks.SLOT_CHOICES]
    choices.append(common.button(_l(ctx, "unlimited"), f"{prefix}:{fid}:s:u"))
    return common.rows_of(choices, 5)


def slots_from(value: str) -> int | str:
    """A slots button's value: one of the offered numbers, or u (unlimited)."""
    if value == "u":
        return tasks.UNLIMITED
    number = common.as_int(value)
    if number not in tasks.SLOT_CHOICES:
        raise InvalidInput("stale_button")
    return number


async def _ask_slots(
    update: Update, ctx: LinliContext, flow: Flow, problem: str | None = None, **params: Any
) -> None:
    await flowui.ask(
        update, ctx, flow, step="slots", template="tasks/ask_slots",
        rows=slot_rows(ctx, NEW, _fid(flow)), problem=problem, **params,
    )  # fmt: skip


@flowui.answers(KIND, "slots")
async def on_slots(update: Update, ctx: LinliContext, flow: Flow, text: str) -> None:
    slots = await flowui.check(
        lambda: tasks.parse_slots(text), partial(_ask_slots, update, ctx, flow)
    )
    await _set_slots(update, ctx, str(_fid(flow)), tasks.UNLIMITED if slots is None else slots)


async def _set_slots(update: Update, ctx: LinliContext, fid: str, slots: int | str) -> None:
    async with ctx.svc.db.transaction() as session:
        live = await _open(session, ctx, update, fid, KIND)
        await flows.update(session, live, now=ctx.now(), slots=slots)
        default = await _default_points(session, live, ctx)
    await _ask_points(update, ctx, live, default)


async def _default_points(session: AsyncSession, flow: Flow, ctx: LinliContext) -> int:
    unit = await people.get_unit(session, common.as_int(str(flow.data.get("unit_id", ""))))
    return await tasks.default_points(session, community_id=unit.community_id, now=ctx.now())


async def _ask_points(
    update: Update,
    ctx: LinliContext,
    flow: Flow,
    default: int,
    problem: str | None = None,
    **params: object,
) -> None:
    fid = _fid(flow)
    offered = [default, *(n for n in POINT_CHOICES if n != default)]
    rows = common.rows_of(
        [
            common.button(
                _l(ctx, "points_default", n=n) if n == default else str(n), f"{NEW}:{fid}:p:{n}"
            )
            for n in offered
        ],
        3,
    )
    await flowui.ask(
        update, ctx, flow, step="points", template="tasks/ask_points", rows=rows,
        default=default, problem=problem, **params,
    )  # fmt: skip


@flowui.answers(KIND, "points")
async def on_points(update: Update, ctx: LinliContext, flow: Flow, text: str) -> None:
    cleaned = text.strip()
    try:
        if not cleaned.isdecimal() or len(cleaned) > 5:
            raise InvalidInput("task_points_range", limit=tasks.POINTS_LIMIT)
        value = tasks.check_points(int(cleaned))
    except InvalidInput as exc:
        async with ctx.svc.db.transaction(write=False) as session:
            default = await _default_points(session, flow, ctx)
        await _ask_points(update, ctx, flow, default, exc.key, **exc.params)
        return
    await _set_points(update, ctx, str(_fid(flow)), value)


async def _set_points(update: Update, ctx: LinliContext, fid: str, value: int) -> None:
    async with ctx.svc.db.transaction() as session:
        live = await _open(session, ctx, update, fid, KIND)
        await flows.update(session, live, now=ctx.now(), points=value)
    await common.show(update, ctx, _skill_view(ctx, live))


def _skill_view(ctx: LinliContext, flow: Flow) -> common.View:
    fid = _fid(flow)
    rows = common.rows_of(
        [common.button(_l(ctx, f"skill_{code}"), f"{NEW}:{fid}:k:{code}") for code in tasks.SKILLS],
        2,
    )
    rows.append([common.button(_l(ctx, "no_skill"), f"{NEW}:{fid}:k:-")])
    rows.append(flowui.cancel_row(ctx, flow))
    return common.View("tasks/ask_skill", {}, common.keyboard(rows))


async def _set_skill(update: Update, ctx: LinliContext, fid: str, code: str) -> None:
    skill = None if code == "-" else code
    if skill is not None and skill not in tasks.SKILLS:
        raise InvalidInput("stale_button")
    async with ctx.svc.db.transaction() as session:
        live = await _open(session, ctx, update, fid, KIND)
        await flows.update(session, live, now=ctx.now(), skill=skill)
        found = pickers.slot(live.data.get("when"))
        zone = await _zone_of(session, live)
    await pickers.repeat(
        update, ctx, live, field="repeat", start=found.start if found else None, zone=zone,
        heading="tasks/ask_repeat",
    )  # fmt: skip


async def _zone_of(session: AsyncSession, flow: Flow) -> str:
    unit = await people.get_unit(session, common.as_int(str(flow.data.get("unit_id", ""))))
    return (await people.get_community(session, unit.community_id)).timezone


# --- after a picker ----------------------------------------------------------------------------


@pickers.chosen(KIND)
async def after_pick(update: Update, ctx: LinliContext, flow: Flow, field: str) -> None:
    if field == "unit_id":
        async with ctx.svc.db.transaction() as session:
            live = await _open(session, ctx, update, str(_fid(flow)), KIND)
            unit = await people.get_unit(session, common.as_int(str(live.data.get("unit_id", ""))))
            live.community_id = unit.community_id  # the zone the date picker reads times in
            flows.touch(live, ctx.now())
            await session.flush()
        await _ask_description(update, ctx, live)
    elif field == "when":
        await _ask_place(update, ctx, flow)
    elif field == "repeat":
        await common.show(update, ctx, await _preview(update, ctx, flow))
    else:
        raise InvalidInput("stale_button")


async def _preview(update: Update, ctx: LinliContext, flow: Flow) -> common.View:
    """The card as residents will see it (in the community's language, as a group shows it),
    what the lead should know around it, and Post."""
    async with ctx.svc.db.transaction(write=False) as session:
        auth = await common.load_auth(session, ctx, update)
        seen = await tasks.preview(session, auth=auth, data=flow.data, now=ctx.now())
        community = await people.get_community(session, seen.task.community_id)
        chats = await people.links_of_units(session, [seen.unit.id or 0])
    language = community.language if community.language in people.LANGUAGES else ctx.lang
    card = ctx.svc.renderer.render(  # rendered (and escaped) by our own template
        language,
        "tasks/card",
        task=seen.task,
        when=tasks.when(seen.task, community.timezone),
        filled=0,
        waitlist=0,
        names=[],
        hidden=0,
        ended=False,
        attended=None,
    )
    rows = [
        [common.button(_l(ctx, "post"), f"{NEW}:{_fid(flow)}:post")],
        flowui.cancel_row(ctx, flow),
    ]
    params = {
        "card": Markup(card),
        "unit": seen.unit.name,
        "chats": len(chats),
        "repeat": seen.repeat,
        "days": list(seen.days),
        "dates": seen.dates,
        "short": seen.short,
    }
    return common.View("tasks/preview", params, common.keyboard(rows))


async def _post(update: Update, ctx: LinliContext, fid: str) -> None:
    common.private_only(update)
    async with ctx.svc.db.transaction() as session:
        auth = await common.load_auth(session, ctx, update)
        here = None

        async def make(flow: Flow) -> int:
            nonlocal here
            found = flow.data.get("here")
            if isinstance(found, list) and len(found) == 2:
                here = (int(found[0]), int(found[1]))
            task = await tasks.post_draft(
                session, auth=auth, data=flow.data, now=ctx.now(), here=here
            )
            assert task.id is not None
            return task.id

        flow, created = await flows.confirm(
            session, flow_id=common.as_int(fid), owner_id=common.user_id(update), now=ctx.now(),
            make=make, kind=KIND, in_private=True,
        )  # fmt: skip
        task = await tasks.get_task(session, flow.result_id or 0)
        zone = (await people.get_community(session, task.community_id)).timezone
    markup = common.keyboard(
        [[common.button(_l(ctx, "manage", title=task.title[:30]), f"tl:v:{task.id}")]]
    )
    view = common.View(
        "tasks/posted",
        {"task": task, "when": tasks.when(task, zone), "series": task.series_id is not None},
        markup,
    )
    note = None if created else "tasks/already_posted"  # a double tap: the same task, said once
    await common.show(update, ctx, view, note=note, alert=True)


async def btn_new(update: Update, ctx: LinliContext) -> None:
    """tn:<flow>:go | d (skip the description) | dk (keep the one the draft came with) |
    s:<n|u> | p:<n> | k:<skill|-> | post."""
    query = update.callback_query
    parts = (query.data or "").split(":") if query else []
    if len(parts) not in (3, 4) or parts[0] != NEW:
        raise InvalidInput("stale_button")
    fid, action, value = parts[1], parts[2], parts[3] if len(parts) == 4 else ""
    if (action in ("s", "p", "k")) != bool(value):
        raise InvalidInput("stale_button")
    if action == "go":
        async with ctx.svc.db.transaction(write=False) as session:
            flow = await _open(session, ctx, update, fid, KIND)
        await common.answer(update, ctx)
        await _ask_title(update, ctx, flow)
    elif action in ("d", "dk"):  # skip / keep the description the draft came with
        async with ctx.svc.db.transaction(write=False) as session:
            flow = await _open(session, ctx, update, fid, KIND)
        await common.answer(update, ctx)
        kept = str(flow.data.get("description") or "") if action == "dk" else ""
        await _after_description(update, ctx, flow, kept)
    elif action == "s":
        await _set_slots(update, ctx, fid, slots_from(value))
    elif action == "p":
        await _set_points(update, ctx, fid, tasks.check_points(common.as_int(value)))
    elif action == "k":
        await _set_skill(update, ctx, fid, value)
    elif action == "post":
        await _post(update, ctx, fid)
    else:
        raise InvalidInput("stale_button")


# --- editing an upcoming task --------------------------------------------------------------------


async def edit_menu(session: AsyncSession, ctx: LinliContext, flow: Flow) -> common.View:
    task = await tasks.get_task(session, common.as_int(str(flow.data.get("task", ""))))
    zone = (await people.get_community(session, task.community_id)).timezone
    fid = _fid(flow)
    rows = [
        [
            common.button(_l(ctx, "edit_time"), f"{MENU}:{fid}:t"),
            common.button(_l(ctx, "edit_place"), f"{MENU}:{fid}:p"),
        ],
        [
            common.button(_l(ctx, "edit_slots"), f"{MENU}:{fid}:s"),
            common.button(_l(ctx, "edit_description"), f"{MENU}:{fid}:d"),
        ],
        [common.button(_l(ctx, "back"), f"tl:v:{task.id}")],
    ]
    filled = await tasks.count_in(session, task.id or 0)
    params = {"task": task, "when": tasks.when(task, zone), "filled": filled}
    return common.View("tasks/edit_menu", params, common.keyboard(rows))


async def btn_edit(update: Update, ctx: LinliContext) -> None:
    """tl:e:<task>: what to change (a lead of the task's unit only; before the start)."""
    common.private_only(update)
    (task_id,) = common.callback_args(update, "tl", 2)[1:]
    async with ctx.svc.db.transaction() as session:
        auth = await common.load_auth(session, ctx, update)
        task = await tasks.editable(
            session, auth=auth, task_id=common.as_int(task_id), now=ctx.now()
        )
        flow = await flows.start(
            session, kind=EDIT, owner_id=common.user_id(update), community_id=task.community_id,
            private=True, data={"task": task.id}, now=ctx.now(),
        )  # fmt: skip
        view = await edit_menu(session, ctx, flow)
    await common.show(update, ctx, view)


async def _apply(update: Update, ctx: LinliContext, fid: str | int, **change: Any) -> None:
    """Save one change now and say what it did; then the menu again for the next one."""
    async with ctx.svc.db.transaction() as session:
        flow = await flowui.load(session, ctx, update, fid, kind=EDIT)
        auth = await common.load_auth(session, ctx, update)
        done = await tasks.edit_task(
            session, auth=auth, task_id=common.as_int(str(flow.data.get("task", ""))),
            now=ctx.now(), **change,
        )  # fmt: skip
        flows.touch(flow, ctx.now())
        moved = [
            found.name
            for pid in done.moved_to_waitlist
            if (found := await people.get_person(session, pid)) is not None
        ]
        view = await edit_menu(session, ctx, flow)
    view.params |= {
        "changed": done.changed,
        "moved": moved,
        "promoted": len(done.promoted),
        "told": done.told,
    }
    await common.show(update, ctx, view)


async def btn_menu(update: Update, ctx: LinliContext) -> None:
    """te:<flow>:t | p | s | d, and te:<flow>:s:<n|u> (slots chosen), te:<flow>:d:- (clear)."""
    query = update.callback_query
    parts = (query.data or "").split(":") if query else []
    if len(parts) not in (3, 4) or parts[0] != MENU:
        raise InvalidInput("stale_button")
    fid, action = parts[1], parts[2]
    value = parts[3] if len(parts) == 4 else None
    async with ctx.svc.db.transaction(write=False) as session:
        flow = await _open(session, ctx, update, fid, EDIT)
    if action == "t" and value is None:
        await pickers.when(update, ctx, flow, field="when", end=True, heading="tasks/edit_when",
                           back=("tasks", "back", f"{MENU}:{fid}:m"))  # fmt: skip
    elif action == "p" and value is None:
        await common.answer(update, ctx)
        await _ask_edit(update, ctx, flow, "place")
    elif action == "d" and value is None:
        await common.answer(update, ctx)
        await _ask_edit(update, ctx, flow, "description")
    elif action == "d" and value == "-":
        await _apply(update, ctx, fid, description="")
    elif action == "s" and value is None:
        await common.answer(update, ctx)
        await _ask_edit(update, ctx, flow, "slots")
    elif action == "s" and value is not None:
        await _apply(update, ctx, fid, slots=slots_from(value))
    elif action == "m" and value is None:
        async with ctx.svc.db.transaction(write=False) as session:
            view = await edit_menu(session, ctx, flow)
        await common.show(update, ctx, view)
    else:
        raise InvalidInput("stale_button")


async def _ask_edit(
    update: Update, ctx: LinliContext, flow: Flow, step: str, problem: str | None = None,
    **params: object,
) -> None:  # fmt: skip
    fid = _fid(flow)
    rows: list[list[InlineKeyboardButton]] = []
    if step == "slots":
        rows = slot_rows(ctx, MENU, fid)
    elif step == "description":
        rows = [[common.button(_l(ctx, "clear_description"), f"{MENU}:{fid}:d:-")]]
    rows.append([common.button(_l(ctx, "back"), f"{MENU}:{fid}:m")])
    await flowui.ask(
        update, ctx, flow, step=step, template=f"tasks/edit_{step}", rows=rows,
        problem=problem, **params,
    )  # fmt: skip


@flowui.answers(EDIT, "place", places=True)
async def on_edit_place(update: Update, ctx: LinliContext, flow: Flow, text: str) -> None:
    async with ctx.svc.db.transaction(write=False) as session:
        task = await tasks.get_task(session, common.as_int(str(flow.data.get("task", ""))))
    again = partial(_ask_edit, update, ctx, flow, "place")
    found = await flowui.check(lambda: place_of(update, text, named=task.place), again)
    spot = found["latitude"], found["longitude"]
    where = None if spot[0] is None or spot[1] is None else (spot[0], spot[1])
    await _apply(update, ctx, _fid(flow), place=found["place"], where=where)


@flowui.answers(EDIT, "description")
async def on_edit_description(update: Update, ctx: LinliContext, flow: Flow, text: str) -> None:
    again = partial(_ask_edit, update, ctx, flow, "description")
    value = await flowui.check(lambda: _description(text), again)
    await _apply(update, ctx, _fid(flow), description=value)


@flowui.answers(EDIT, "slots")
async def on_edit_slots(update: Update, ctx: LinliContext, flow: Flow, text: str) -> None:
    again = partial(_ask_edit, update, ctx, flow, "slots")
    slots = await flowui.check(lambda: tasks.parse_slots(text), again)
    await _apply(update, ctx, _fid(flow), slots=tasks.UNLIMITED if slots is None else slots)


@pickers.chosen(EDIT)
async def after_edit_pick(update: Update, ctx: LinliContext, flow: Flow, field: str) -> None:
    if field != "when":
        raise InvalidInput("stale_button")
    found = pickers.slot(flow.data.get("when"))
    if found is None:
        raise InvalidInput("stale_button")
    async with ctx.svc.db.transaction(write=False) as session:
        task = await tasks.get_task(session, common.as_int(str(flow.data.get("task", ""))))
    end = found.end or found.start + (task.ends_at - task.starts_at)
    await _apply(update, ctx, _fid(flow), starts_at=found.start, ends_at=end)


def register(app: LinliApp) -> None:
    app.add_handler(CommandHandler("newtask", cmd_newtask))
    app.add_handler(
        CommandHandler("start", cmd_start, filters=filters.Regex(r"^/start newtask-[0-9]{1,10}$"))
    )
    common.add_buttons(app, ((NEW, btn_new), (MENU, btn_menu), ("tl:e", btn_edit)))
