"""The handler side of guided flows (models.flows): buttons that carry a flow id, typed answers
bound to the step that asked, one cancel button, and the owner told when a draft expired.

    flow = await flowui.load(session, ctx, update, fid, kind="task")   # a button's flow id
    await flowui.ask(update, ctx, flow, step="title", template="tasks/ask_title")

    @flowui.answers("task", "title")
    async def on_title(update, ctx, flow, text): ...   # the typed answer to that question

    rows.append(flowui.cancel_row(ctx, flow))           # the one cancel button (fx:<flow id>)

A typed answer reaches its function only while the flow is open, is its owner's, and still asks
that step; the step is consumed in a committed transaction before the function runs, so the
function gets a snapshot of the flow and opens its own transaction (`load`) to change it: no
database lock is held while Telegram is called. An answer the function refuses is asked again
with `ask(…, problem=key)`. Refusals the person did not cause (the draft expired, was finished or
replaced) reach them through the one error handler, in their language; a tap on an expired
draft's button also turns that message into the note, so its buttons stop inviting taps.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from sqlmodel.ext.asyncio.session import AsyncSession
from telegram import ForceReply, InlineKeyboardButton, Update
from telegram.ext import CallbackQueryHandler, MessageHandler, filters

from bot.context import LinliApp, LinliContext
from handlers import common, prompts
from models import flows, people
from models.errors import Conflict, InvalidInput
from models.flows import Flow

PROMPT = people.FLOW_PROMPT  # the prompt kind of every flow question: "<flow id>:<step>"
ANY = "*"  # answers registered for every kind of flow (the pickers' typed input)
CANCEL = "fx"

FlowAnswer = Callable[[Update, LinliContext, Flow, str], Awaitable[None]]
T = TypeVar("T")


class Refused(Exception):
    """A typed answer was refused and its question asked again (`check`): nothing more to do."""


@dataclass(frozen=True)
class Step:
    fn: FlowAnswer
    photos: bool  # a photo (its caption the text) answers it too
    places: bool = False  # a shared location or venue answers it too (the text is empty)


@dataclass(frozen=True)
class Cancelled:
    template: str  # what the cancelled draft's message says
    then: Callable[[LinliContext, Flow], list[InlineKeyboardButton]] | None = None  # a way on


STEPS: dict[tuple[str, str], Step] = {}
CANCELLED: dict[str, Cancelled] = {}  # flow kind -> what a cancelled draft's message shows


def answers(
    kind: str, step: str, *, photos: bool = False, places: bool = False
) -> Callable[[FlowAnswer], FlowAnswer]:
    """Register the function receiving the text typed for `step` of flows of `kind` (ANY: every
    kind). With photos=True a photo answers too: the text is its caption (see `photo_of`). With
    places=True a shared location or venue answers too: the text is empty, the function reads
    `update.effective_message.location` / `.venue`."""

    def register(fn: FlowAnswer) -> FlowAnswer:
        STEPS[(kind, step)] = Step(fn, photos, places)
        return fn

    return register


def on_cancel(
    kind: str,
    template: str,
    *,
    then: Callable[[LinliContext, Flow], list[InlineKeyboardButton]] | None = None,
) -> None:
    """What a cancelled draft of `kind` says instead of the generic "cancelled, nothing saved";
    `then(ctx, flow)`: a row of buttons under it (back to where the draft was started)."""
    CANCELLED[kind] = Cancelled(template, then)


def _step(kind: str, step: str) -> Step | None:
    return STEPS.get((kind, step)) or STEPS.get((ANY, step))


def flow_id(flow: Flow) -> int:
    assert flow.id is not None
    return flow.id


async def load(
    session: AsyncSession, ctx: LinliContext, update: Update, fid: str | int, *, kind: str | None
) -> Flow:
    """The tapper's open flow, locked, from a button's flow id (a string from callback data is
    checked like any other id). Refuses another person's flow, a closed or expired one, another
    kind (a forged button) and a private flow tapped in a group."""
    return await flows.open_flow(
        session,
        flow_id=common.as_int(fid) if isinstance(fid, str) else fid,
        owner_id=common.user_id(update),
        now=ctx.now(),
        kind=kind,
        in_private=common.is_private(update),
    )


def cancel_button(ctx: LinliContext, flow: Flow) -> InlineKeyboardButton:
    return common.button(common.label(ctx, "flows", "cancel"), f"{CANCEL}:{flow_id(flow)}")


def cancel_row(ctx: LinliContext, flow: Flow) -> list[InlineKeyboardButton]:
    return [cancel_button(ctx, flow)]


async def ask(
    update: Update,
    ctx: LinliContext,
    flow: Flow,
    *,
    step: str,
    template: str,
    rows: Sequence[Sequence[InlineKeyboardButton]] = (),
    **params: object,
) -> None:
    """Ask the flow's owner to type the answer to `step`: the flow waits for it and a prompt bound
    to this flow and step is set, then `template` is sent (a forced reply in groups; privately,
    with `rows` of the feature's own buttons — Skip, a few common answers — above the cancel
    button)."""
    await wait_for(update, ctx, flow, step=step)
    private = common.is_private(update)
    markup = (
        common.keyboard([*rows, cancel_row(ctx, flow)]) if private else ForceReply(selective=True)
    )
    message = update.effective_message
    assert message is not None
    await message.reply_text(
        common.render(ctx, template, **params), reply_markup=markup, do_quote=not private
    )


async def check(value: Callable[[], T], again: Callable[..., Awaitable[None]]) -> T:
    """A typed answer, checked by `value()`. When it refuses (InvalidInput), `again(problem=key,
    **params)` asks the same question again saying why, and the answer ends there:

        title = await flowui.check(lambda: tasks.clean_title(text),
                                   partial(flowui.ask, update, ctx, flow, step="title",
                                           template="tasks/ask_title"))
    """
    try:
        return value()
    except InvalidInput as refused:
        await again(problem=refused.key, **refused.params)
        raise Refused from refused


async def wait_for(update: Update, ctx: LinliContext, flow: Flow, *, step: str) -> None:
    """Let the flow wait for a typed answer to `step` without asking in a message of its own:
    the screen just shown says what to send (a poll's options, one message after another)."""
    chat = update.effective_chat
    assert chat is not None
    async with ctx.svc.db.transaction() as session:
        live = await load(session, ctx, update, flow_id(flow), kind=flow.kind)
        await flows.expect(session, live, step=step, now=ctx.now())
        await people.set_prompt(
            session,
            person_id=common.user_id(update),
            chat_id=chat.id,
            kind=PROMPT,
            payload=f"{flow_id(flow)}:{step}",
            now=ctx.now(),
        )


def photo_of(update: Update) -> str | None:
    """The largest size of the photo a message carries, if any."""
    message = update.effective_message
    if message is None or not message.photo:
        return None
    return max(message.photo, key=lambda p: (p.width * p.height, p.file_size or 0)).file_id


def _payload(prompt: people.Prompt) -> tuple[int, str]:
    fid, _, step = prompt.payload.partition(":")
    if not step:
        raise InvalidInput("stale_answer")
    return common.as_int(fid), step


@prompts.answers(PROMPT)
async def on_answer(update: Update, ctx: LinliContext, prompt: people.Prompt) -> None:
    """A typed answer: to its flow's open step, or refused (expired, closed, stale) aloud."""
    fid, step = _payload(prompt)
    async with ctx.svc.db.transaction() as session:
        flow = await flows.answer(
            session,
            flow_id=fid,
            owner_id=common.user_id(update),
            step=step,
            now=ctx.now(),
            in_private=common.is_private(update),
        )
    found = _step(flow.kind, step)
    if found is None:
        raise InvalidInput("stale_answer")
    message = update.effective_message
    assert message is not None
    text = message.caption if photo_of(update) else message.text
    with contextlib.suppress(Refused):  # asked again already
        await found.fn(update, ctx, flow, text or "")


async def on_photo(update: Update, ctx: LinliContext) -> None:
    """A photo (its caption is the text), or a location or venue, while a flow waits for a step
    that takes one."""
    chat = update.effective_chat
    assert chat is not None
    uid = common.user_id(update)
    async with ctx.svc.db.transaction(write=False) as session:
        waiting = await people.waiting_prompt(session, person_id=uid, chat_id=chat.id)
    if waiting is None or waiting.kind != PROMPT:
        return
    async with ctx.svc.db.transaction(write=False) as session:
        fid, step = _payload(waiting)
        flow = await session.get(Flow, fid)
    found = _step(flow.kind, step) if flow is not None else None
    if found is None or not (found.photos if photo_of(update) else found.places):
        return
    async with ctx.svc.db.transaction() as session:
        prompt = await people.take_prompt(session, person_id=uid, chat_id=chat.id, now=ctx.now())
    if prompt is not None and prompt.kind == PROMPT:
        await on_answer(update, ctx, prompt)


async def btn_cancel(update: Update, ctx: LinliContext) -> None:
    """The one cancel button of every flow: nothing of the draft is kept."""
    (fid,) = common.callback_args(update, CANCEL, 1)
    async with ctx.svc.db.transaction() as session:
        flow = await flows.load(
            session,
            flow_id=common.as_int(fid),
            owner_id=common.user_id(update),
            now=ctx.now(),
            in_private=common.is_private(update),
            lock=True,
        )
        cancelled = await flows.cancel(session, flow, now=ctx.now())
        if cancelled:
            await people.drop_prompts(
                session, person_id=flow.owner_id, kind=PROMPT, payload_prefix=f"{fid}:"
            )
    if not cancelled:
        raise Conflict("flow_closed")
    told = CANCELLED.get(flow.kind, Cancelled("flows/cancelled"))
    markup = common.keyboard([told.then(ctx, flow)]) if told.then is not None else None
    await common.edit(update, ctx, told.template, markup=markup)


def register(app: LinliApp) -> None:
    # After the features' own handlers (their commands and captions win), before prompts' text.
    app.add_handler(MessageHandler(filters.PHOTO | filters.LOCATION | filters.VENUE, on_photo))
    app.add_handler(CallbackQueryHandler(btn_cancel, pattern=rf"^{CANCEL}:"))
