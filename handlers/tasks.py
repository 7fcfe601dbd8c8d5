"""Volunteer tasks in Telegram: the live card in groups (Sign up / Withdraw), the private
confirmation (Withdraw, Add to calendar, name on the card), /tasks, /mytasks, check-in by
code or QR, and the lead's panel (code and QR, attendance sheet, claims, cancel).

Callback data carries ids and target states only; every tap is re-checked on the server by
models.tasks (who may, which task, its state): a forged or stale button changes nothing.

Prefixes: tk (a volunteer's buttons), tl (a lead's buttons).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from sqlmodel.ext.asyncio.session import AsyncSession
from telegram import InlineKeyboardButton, InputFile, Update
from telegram.ext import CallbackQueryHandler, CommandHandler, filters

from bot import cards, delivery
from bot.context import LinliApp, LinliContext
from bot.ordering import hand_over
from handlers import common, flowui, pickers
from handlers.rewards import qr_png
from models import flows, people, tasks
from models.errors import InvalidInput, NotAllowed, NotFound
from models.flows import Flow
from models.people import Can
from models.tasks import Task, TaskStatus

LIST_LIMIT = 10


def _l(ctx: LinliContext, key: str, **params: object) -> str:
    return common.label(ctx, "tasks", key, **params)


def _args(update: Update, prefix: str, action: str, count: int) -> list[str]:
    """The fields after `<prefix>:<action>:`; anything else is stale or forged."""
    parts = common.callback_args(update, prefix, count + 1)
    if parts[0] != action:
        raise InvalidInput("stale_button")
    return parts[1:]


def _private_only(update: Update) -> None:
    if not common.is_private(update):
        raise NotAllowed("private_only")


async def _zone(session: AsyncSession, task: Task) -> str:
    return (await people.get_community(session, task.community_id)).timezone


# --- the card in groups ------------------------------------------------------------------------


async def task_card(req: cards.CardRequest) -> cards.Card | None:
    """The card as it is now, in the chat's language; buttons only while sign-up is open."""
    try:
        found = await tasks.card(req.session, req.subject_id, now=req.now)
    except NotFound:
        return None
    task = found.task
    markup = None
    if task.status == TaskStatus.open and req.now < task.starts_at:
        markup = common.keyboard(
            [
                [
                    common.button(req.label("tasks", "sign_up"), f"tk:s:{task.id}"),
                    common.button(req.label("tasks", "withdraw"), f"tk:w:{task.id}"),
                ]
            ]
        )
    params = {
        "task": task,
        "when": tasks.when(task, await _zone(req.session, task)),
        "filled": found.filled,
        "waitlist": found.waitlist,
        "names": found.names,
        "hidden": found.hidden,
        "ended": found.ended,
        "attended": found.attended,
    }
    return cards.Card("tasks/card", params, markup)


async def confirmation_card(req: cards.CardRequest) -> cards.Card | None:
    """The private confirmation of a sign-up: sent through the outbox when someone signs up
    (or is signed up by a lead); nothing when they left before it went."""
    try:
        signup = await tasks.get_signup(req.session, req.subject_id)
        task = await tasks.get_task(req.session, signup.task_id)
    except NotFound:
        return None
    if signup.status not in tasks.ACTIVE or task.status != TaskStatus.open:
        return None
    overlaps = await tasks.overlapping(req.session, person_id=signup.person_id, task=task)
    position = await tasks.waitlist_position(req.session, task.id or 0, signup.person_id)
    view = _confirmation(
        req.label,
        task,
        signup,
        await _zone(req.session, task),
        position=position,
        overlaps=[t.title for t in overlaps],
    )
    return cards.Card(view.name, view.params, view.markup)


# --- signing up and withdrawing ------------------------------------------------------------------


Label = Callable[..., str]  # (feature, key, **params) -> text in the reader's language


def _confirmation(
    label_of: Label, task: Task, signup: tasks.TaskSignup, zone: str, **extra: object
) -> common.View:
    rows = [
        [common.button(label_of("tasks", "withdraw"), f"tk:w:{task.id}")],
        [common.button(label_of("tasks", "calendar"), f"tk:i:{task.id}")],
        [
            common.button(
                label_of("tasks", "show_name" if signup.hidden else "hide_name"),
                f"tk:h:{task.id}:{common.state(not signup.hidden)}",
            )
        ],
    ]
    params = {
        "task": task,
        "when": tasks.when(task, zone),
        "status": signup.status,
        "position": None,
        "overlaps": [],
        "by_lead": signup.by != signup.person_id,
        **extra,
    }
    return common.View("tasks/confirmation", params, common.keyboard(rows))


async def btn_sign_up(update: Update, ctx: LinliContext) -> None:
    """tk:s:<task>: one tap, from the card or a list. The answer is a pop-up; the details and
    the Withdraw button go privately."""
    (task_id,) = _args(update, "tk", "s", 1)
    uid = common.user_id(update)
    try:
        async with ctx.svc.db.transaction() as session:
            result = await tasks.sign_up(
                session, task_id=common.as_int(task_id), person_id=uid, now=ctx.now()
            )
            zone = await _zone(session, result.task)
    except NotAllowed as refused:
        if refused.key != "task_not_resident" or update.callback_query is None:
            raise
        # Anyone else gets one tap to the private chat's /join.
        await update.callback_query.answer(url=common.deep_link(ctx, "join"))
        return
    hand_over()  # the next tap on the card need not wait for this one's answer
    overlaps = [t.title for t in result.overlaps]
    when = tasks.when(result.task, zone)
    await common.answer(
        update,
        ctx,
        f"tasks/popup_{result.outcome}",
        alert=True,
        task=result.task,
        when=when,
        position=result.position,
        overlaps=overlaps,
    )


async def btn_withdraw(update: Update, ctx: LinliContext) -> None:
    """tk:w:<task>: leave the task (or its waitlist). After the cut-off the answer says to ask
    the lead, and nothing changes."""
    (task_id,) = _args(update, "tk", "w", 1)
    async with ctx.svc.db.transaction() as session:
        done = await tasks.withdraw(
            session, task_id=common.as_int(task_id), person_id=common.user_id(update), now=ctx.now()
        )
        when = tasks.when(done.task, await _zone(session, done.task))
    hand_over()
    if common.is_private(update):
        await common.edit(update, ctx, "tasks/withdrawn", task=done.task, when=when)
    else:
        await common.answer(update, ctx, "tasks/withdrawn", alert=True, task=done.task, when=when)


async def btn_hide(update: Update, ctx: LinliContext) -> None:
    """tk:h:<task>:<0|1>: the volunteer's name on the card, or only a count (a state)."""
    _private_only(update)
    task_id, hidden = _args(update, "tk", "h", 2)
    uid = common.user_id(update)
    async with ctx.svc.db.transaction() as session:
        signup = await tasks.set_hidden(
            session,
            task_id=common.as_int(task_id),
            person_id=uid,
            hidden=common.as_state(hidden),
            now=ctx.now(),
        )
        task = await tasks.get_task(session, signup.task_id)
        view = _confirmation(
            lambda f, k, **p: common.label(ctx, f, k, **p), task, signup, await _zone(session, task)
        )
    await common.show(update, ctx, view)


async def btn_calendar(update: Update, ctx: LinliContext) -> None:
    """tk:i:<task>: the task as an .ics file."""
    _private_only(update)
    (task_id,) = _args(update, "tk", "i", 1)
    async with ctx.svc.db.transaction(write=False) as session:
        task = await tasks.get_task(session, common.as_int(task_id))
    text = tasks.ics(task, now=ctx.now(), host=ctx.bot.username or "linli")
    await common.answer(update, ctx)
    await ctx.bot.send_document(
        common.user_id(update), document=InputFile(text.encode(), filename=f"task-{task.id}.ics")
    )


# --- lists ---------------------------------------------------------------------------------------


async def _in_private(update: Update, ctx: LinliContext, payload: str, view: common.View) -> None:
    """A personal answer: here in a private chat; from a group, privately (or a link to)."""
    if common.is_private(update):
        await common.show(update, ctx, view)
        return
    uid = common.user_id(update)
    if await common.send_private(ctx, uid, ctx.lang, view.name, markup=view.markup, **view.params):
        await common.reply(update, ctx, "tasks/sent_privately")
    else:
        await common.offer_private(update, ctx, payload, feature="tasks")


async def _tasks_view(session: AsyncSession, ctx: LinliContext, update: Update) -> common.View:
    uid = common.user_id(update)
    now = ctx.now()
    auth = await common.load_auth(session, ctx, update)
    upcoming = await tasks.upcoming_for(session, person_id=uid, now=now, limit=LIST_LIMIT * 3)
    counts = await tasks.fill_counts(session, [t.id for t in upcoming if t.id is not None])
    open_ = [t for t in upcoming if t.slots is None or counts.get(t.id or 0, 0) < t.slots]
    open_ = open_[:LIST_LIMIT]
    led = await tasks.led_by(session, auth=auth, now=now, limit=LIST_LIMIT) if auth.is_lead else []
    zones = {t.community_id: await _zone(session, t) for t in [*open_, *(x.task for x in led)]}
    rows = [
        [common.button(_l(ctx, "sign_up_for", title=t.title[:30]), f"tk:s:{t.id}")] for t in open_
    ]
    rows += [
        [common.button(_l(ctx, "manage", title=x.task.title[:30]), f"tl:v:{x.task.id}")]
        for x in led
    ]
    params = {
        "open": [
            {
                "task": t,
                "when": tasks.when(t, zones[t.community_id]),
                "filled": counts.get(t.id or 0, 0),
            }
            for t in open_
        ],
        "led": [
            {
                "task": x.task,
                "when": tasks.when(x.task, zones[x.task.community_id]),
                "filled": x.filled,
                "waitlist": x.waitlist,
            }
            for x in led
        ],
        "is_lead": auth.is_lead,
    }
    return common.View("tasks/list", params, common.keyboard(rows))


async def cmd_tasks(update: Update, ctx: LinliContext) -> None:
    """/tasks: upcoming tasks in my units with free slots; a lead's own tasks with buttons."""
    async with ctx.svc.db.transaction(write=False) as session:
        view = await _tasks_view(session, ctx, update)
    await _in_private(update, ctx, "tasks", view)


async def _mine_view(session: AsyncSession, ctx: LinliContext, uid: int) -> common.View:
    now = ctx.now()
    found = await tasks.mine(session, person_id=uid, now=now, limit=LIST_LIMIT)
    claimable = await tasks.claimable(session, person_id=uid, now=now)
    rows: list[list[InlineKeyboardButton]] = []
    items = []
    for task, signup in found:
        zone = await _zone(session, task)
        items.append(
            {
                "task": task,
                "when": tasks.when(task, zone),
                "status": signup.status,
                "checked_in": signup.checked_in_at is not None,
            }
        )
        if signup.status in tasks.ACTIVE and now < task.starts_at:
            key = "withdraw_from" if now < task.cutoff or signup.status != "signed_up" else None
            if key:
                rows.append([common.button(_l(ctx, key, title=task.title[:30]), f"tk:w:{task.id}")])
    for task in claimable:
        rows.append([common.button(_l(ctx, "claim_for", title=task.title[:30]), f"tk:c:{task.id}")])
    return common.View(
        "tasks/mine", {"items": items, "claimable": len(claimable)}, common.keyboard(rows)
    )


async def cmd_mytasks(update: Update, ctx: LinliContext) -> None:
    """/mytasks: mine (signed up, waitlisted, attended), with Withdraw and claims."""
    async with ctx.svc.db.transaction(write=False) as session:
        view = await _mine_view(session, ctx, common.user_id(update))
    await _in_private(update, ctx, "mytasks", view)


async def cmd_start(update: Update, ctx: LinliContext) -> None:
    """/start tasks | mytasks | tc-<task>-<code> (a scanned check-in QR)."""
    message = update.effective_message
    assert message is not None and message.text is not None
    payload = message.text.split(maxsplit=1)[1]
    if payload == "tasks":
        await cmd_tasks(update, ctx)
    elif payload == "mytasks":
        await cmd_mytasks(update, ctx)
    else:
        found = re.fullmatch(r"tc-([0-9]{1,10})-([0-9]{6})", payload)
        if found is None:
            raise InvalidInput("task_code_wrong")
        await _check_in(update, ctx, found.group(2), common.as_int(found.group(1)))


# --- check-in and claims -------------------------------------------------------------------------


async def _check_in(update: Update, ctx: LinliContext, code: str, task_id: int | None) -> None:
    async with ctx.svc.db.transaction() as session:
        done = await tasks.check_in(
            session, person_id=common.user_id(update), code=code, now=ctx.now(), task_id=task_id
        )
    await common.reply(update, ctx, "tasks/checked_in", task=done.task, already=done.already)


async def cmd_checkin(update: Update, ctx: LinliContext) -> None:
    """/checkin 123456: the code the lead shows at the place."""
    _private_only(update)
    code = " ".join(ctx.args or [])
    if not code:
        await common.reply(update, ctx, "tasks/checkin_usage")
        return
    await _check_in(update, ctx, code, None)


async def btn_claim(update: Update, ctx: LinliContext) -> None:
    """tk:c:<task>: I was there but did not check in: the lead is asked."""
    _private_only(update)
    (task_id,) = _args(update, "tk", "c", 1)
    async with ctx.svc.db.transaction() as session:
        signup = await tasks.claim(
            session, task_id=common.as_int(task_id), person_id=common.user_id(update), now=ctx.now()
        )
        task = await tasks.get_task(session, signup.task_id)
    await common.answer(update, ctx, "tasks/claim_sent", alert=True, task=task)


# --- the lead's panel ----------------------------------------------------------------------------


async def _lead_view(
    session: AsyncSession, ctx: LinliContext, update: Update, task_id: int
) -> common.View:
    auth = await common.load_auth(session, ctx, update)
    task, lines = await tasks.sheet(session, auth=auth, task_id=task_id, now=ctx.now())
    now = ctx.now()
    found = await tasks.card(session, task_id, now=now)
    rows = []
    if task.status == TaskStatus.open:
        rows.append([common.button(_l(ctx, "code"), f"tl:q:{task.id}")])
        if now >= task.starts_at:
            rows.append([common.button(_l(ctx, "sheet"), f"tl:a:{task.id}")])
        else:
            rows.append([common.button(_l(ctx, "edit"), f"tl:e:{task.id}")])
            rows.append([common.button(_l(ctx, "proxy"), f"tl:p:{task.id}")])
            rows.append([common.button(_l(ctx, "cancel"), f"tl:x:{task.id}")])
    params = {
        "task": task,
        "when": tasks.when(task, await _zone(session, task)),
        "filled": found.filled,
        "waitlist": found.waitlist,
        "people": [line.person.name for line in lines],
    }
    return common.View("tasks/lead_task", params, common.keyboard(rows))


async def btn_lead(update: Update, ctx: LinliContext) -> None:
    """tl:v:<task>: one of my tasks, with what I can do with it now."""
    _private_only(update)
    (task_id,) = _args(update, "tl", "v", 1)
    async with ctx.svc.db.transaction(write=False) as session:
        view = await _lead_view(session, ctx, update, common.as_int(task_id))
    await common.show(update, ctx, view)


async def btn_code(update: Update, ctx: LinliContext) -> None:
    """tl:q:<task>: the 6-digit check-in code and its QR (a deep link), to show at the place."""
    _private_only(update)
    (task_id,) = _args(update, "tl", "q", 1)
    async with ctx.svc.db.transaction(write=False) as session:
        auth = await common.load_auth(session, ctx, update)
        task, _ = await tasks.sheet(
            session, auth=auth, task_id=common.as_int(task_id), now=ctx.now()
        )
    png = qr_png(common.deep_link(ctx, f"tc-{task.id}-{task.code}"))
    await common.answer(update, ctx)
    caption = ctx.svc.renderer.render(ctx.lang, "tasks/code", task=task)
    await ctx.bot.send_photo(common.user_id(update), photo=png, caption=caption)


def _sheet_view(
    ctx: LinliContext,
    task: Task,
    lines: list[tasks.SheetLine],
    claims: list[tuple[tasks.TaskSignup, people.Person]],
) -> common.View:
    done = task.confirmed_at is not None
    rows = []
    if not done:
        rows = [
            [
                common.button(
                    _l(ctx, "present", name=line.person.name[:24], on=line.present),
                    f"tl:m:{task.id}:{line.person.id}:{common.state(not line.present)}",
                )
            ]
            for line in lines
        ]
        rows.append([common.button(_l(ctx, "confirm"), f"tl:y:{task.id}")])
    for _, person in claims:
        rows.append(
            [
                common.button(
                    _l(ctx, "approve_for", name=person.name[:20]), f"tl:k:{task.id}:{person.id}:1"
                ),
                common.button(
                    _l(ctx, "reject_for", name=person.name[:20]), f"tl:k:{task.id}:{person.id}:0"
                ),
            ]
        )
    rows.append([common.button(_l(ctx, "back"), f"tl:v:{task.id}")])
    params = {
        "task": task,
        "done": done,
        "present": sum(1 for x in lines if x.present),
        "total": len(lines),
        "claims": [p.name for _, p in claims],
    }
    return common.View("tasks/sheet", params, common.keyboard(rows))


async def _show_sheet(
    update: Update, ctx: LinliContext, session: AsyncSession, task_id: int
) -> common.View:
    auth = await common.load_auth(session, ctx, update)
    task, lines = await tasks.sheet(session, auth=auth, task_id=task_id, now=ctx.now())
    claims = await tasks.pending_claims(session, task_id=task_id)
    return _sheet_view(ctx, task, lines, claims)


async def btn_sheet(update: Update, ctx: LinliContext) -> None:
    """tl:a:<task>: the attendance sheet, one line per volunteer (pre-set from check-ins)."""
    _private_only(update)
    (task_id,) = _args(update, "tl", "a", 1)
    async with ctx.svc.db.transaction(write=False) as session:
        view = await _show_sheet(update, ctx, session, common.as_int(task_id))
    await common.show(update, ctx, view)


async def _person_on_sheet(update: Update, ctx: LinliContext, action: str) -> None:
    """tl:m:<task>:<person>:<0|1> (present or not) and tl:k:<task>:<person>:<1|0> (approve or
    reject a claim): the state the button carries, then the sheet as it now is."""
    _private_only(update)
    task_id, person_id, value = _args(update, "tl", action, 3)
    person, on = common.as_int(person_id, telegram_id=True), common.as_state(value)
    async with ctx.svc.db.transaction() as session:
        auth = await common.load_auth(session, ctx, update)
        if action == "m":
            await tasks.mark(session, auth=auth, task_id=common.as_int(task_id), person_id=person,
                             present=on, now=ctx.now())  # fmt: skip
        else:
            await tasks.decide_claim(session, auth=auth, task_id=common.as_int(task_id),
                                     person_id=person, approve=on, now=ctx.now())  # fmt: skip
        view = await _show_sheet(update, ctx, session, common.as_int(task_id))
    await common.show(update, ctx, view)


async def btn_mark(update: Update, ctx: LinliContext) -> None:
    await _person_on_sheet(update, ctx, "m")


async def btn_decide(update: Update, ctx: LinliContext) -> None:
    await _person_on_sheet(update, ctx, "k")


async def btn_confirm(update: Update, ctx: LinliContext) -> None:
    """tl:y:<task>: confirm once: attendees credited and thanked privately."""
    _private_only(update)
    (task_id,) = _args(update, "tl", "y", 1)
    async with ctx.svc.db.transaction() as session:
        auth = await common.load_auth(session, ctx, update)
        done = await tasks.confirm_attendance(
            session, auth=auth, task_id=common.as_int(task_id), now=ctx.now()
        )
        view = await _show_sheet(update, ctx, session, common.as_int(task_id))
    await common.show(update, ctx, view)
    await common.reply(update, ctx, "tasks/confirmed", task=done.task, attended=len(done.attended),
                no_show=len(done.no_show))  # fmt: skip


async def btn_cancel_ask(update: Update, ctx: LinliContext) -> None:
    """tl:x:<task>: are you sure?"""
    _private_only(update)
    (task_id,) = _args(update, "tl", "x", 1)
    async with ctx.svc.db.transaction(write=False) as session:
        auth = await common.load_auth(session, ctx, update)
        task, lines = await tasks.sheet(
            session, auth=auth, task_id=common.as_int(task_id), now=ctx.now()
        )
    markup = common.keyboard(
        [
            [common.button(_l(ctx, "cancel_yes"), f"tl:X:{task.id}")],
            [common.button(_l(ctx, "back"), f"tl:v:{task.id}")],
        ]
    )
    await common.edit(update, ctx, "tasks/cancel_ask", markup=markup, task=task, people=len(lines))


async def btn_cancel(update: Update, ctx: LinliContext) -> None:
    """tl:X:<task>: cancel: volunteers told privately, reminders withdrawn, the card says so."""
    _private_only(update)
    (task_id,) = _args(update, "tl", "X", 1)
    async with ctx.svc.db.transaction() as session:
        auth = await common.load_auth(session, ctx, update)
        task = await tasks.cancel_task(
            session, auth=auth, task_id=common.as_int(task_id), now=ctx.now()
        )
    await common.edit(update, ctx, "tasks/cancel_done", task=task)


# --- proxy sign-up: a lead signs up a neighbour who cannot tap themselves -----------------------


PROXY = "proxy"  # the flow of a lead signing up a neighbour, on the one resident picker


async def _pick_neighbour(update: Update, ctx: LinliContext, task_id: int) -> None:
    """A new proxy flow for the task and the resident picker on its unit (one at a time; the
    way back is the task's panel)."""
    _private_only(update)  # the picker lists flat numbers
    async with ctx.svc.db.transaction() as session:
        auth = await common.load_auth(session, ctx, update)
        task = await tasks.proxy_task(session, auth=auth, task_id=task_id, now=ctx.now())
        flow = await flows.start(
            session,
            kind=PROXY,
            owner_id=auth.person_id,
            community_id=task.community_id,
            private=True,
            now=ctx.now(),
            data={"task": task.id, "title": task.title},
        )
    await pickers.residents(
        update,
        ctx,
        flow,
        field="person",
        unit_id=task.unit_id,
        multi=False,
        can=Can.lead,
        heading="tasks/proxy",
        back=("tasks", "back", f"tl:v:{task.id}"),
    )


async def btn_proxy(update: Update, ctx: LinliContext) -> None:
    """tl:p:<task>: whom to sign up (the resident picker)."""
    (task_id,) = _args(update, "tl", "p", 1)
    await _pick_neighbour(update, ctx, common.as_int(task_id))


@pickers.chosen(PROXY)
async def after_proxy(update: Update, ctx: LinliContext, flow: Flow, field: str) -> None:
    """The neighbour picked: signed up (recorded as done by the lead; they get the private
    confirmation with Withdraw, like anyone who tapped), once, under the flow's lock. The
    result, with another neighbour or back to the panel."""
    task_id, person_id = int(flow.data["task"]), int(flow.data[field][0])
    done: list[tasks.SignedUp] = []

    async def sign_up(live: Flow) -> int:
        result = await tasks.sign_up(
            session, task_id=task_id, person_id=person_id, now=ctx.now(), auth=auth
        )
        done.append(result)
        return result.signup.id or 0

    async with ctx.svc.db.transaction() as session:
        auth = await common.load_auth(session, ctx, update)
        await flows.confirm(
            session,
            flow_id=flowui.flow_id(flow),
            owner_id=auth.person_id,
            now=ctx.now(),
            make=sign_up,
            kind=PROXY,
        )
        if not done:  # a second tap on the same choice
            raise InvalidInput("stale_button")
        person = await people.get_person(session, person_id)
    (result,) = done
    rows = [
        [common.button(_l(ctx, "proxy_another"), f"tl:p:{task_id}")],
        [common.button(_l(ctx, "back"), f"tl:v:{task_id}")],
    ]
    params = {
        "who": person.name if person else "",
        "task": result.task,
        "position": result.position,
    }
    await common.show(
        update, ctx, common.View(f"tasks/proxy_{result.outcome}", params, common.keyboard(rows))
    )


def register(app: LinliApp) -> None:
    cards.register(app, tasks.CARD, task_card)
    cards.register(app, tasks.CONFIRMATION, confirmation_card)
    delivery.add_rhythm(app, tasks.rhythm)
    # Before basics: these /start payloads are ours.
    app.add_handler(
        CommandHandler("start", cmd_start, filters=filters.Regex(r"^/start (tasks|mytasks|tc-)"))
    )
    app.add_handler(CommandHandler("tasks", cmd_tasks))
    app.add_handler(CommandHandler("mytasks", cmd_mytasks))
    app.add_handler(CommandHandler("checkin", cmd_checkin))
    for pattern, handler in (
        (r"^tk:s:", btn_sign_up),
        (r"^tk:w:", btn_withdraw),
        (r"^tk:h:", btn_hide),
        (r"^tk:i:", btn_calendar),
        (r"^tk:c:", btn_claim),
        (r"^tl:v:", btn_lead),
        (r"^tl:q:", btn_code),
        (r"^tl:a:", btn_sheet),
        (r"^tl:m:", btn_mark),
        (r"^tl:y:", btn_confirm),
        (r"^tl:k:", btn_decide),
        (r"^tl:x:", btn_cancel_ask),
        (r"^tl:X:", btn_cancel),
        (r"^tl:p:", btn_proxy),
    ):
        app.add_handler(CallbackQueryHandler(handler, pattern=pattern))
