"""When the bot asks someone to type something (a name, a code), their next text answers it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from telegram import ForceReply, Update
from telegram.ext import MessageHandler, filters

from bot import delivery
from bot.context import LinliApp, LinliContext
from handlers.common import is_private, render, user_id
from models import flows, people

PromptAnswer = Callable[[Update, LinliContext, people.Prompt], Awaitable[None]]
ANSWERS: dict[str, PromptAnswer] = {}


def answers(kind: str) -> Callable[[PromptAnswer], PromptAnswer]:
    """Register the function that receives the text typed in answer to prompts of `kind`."""

    def register(fn: PromptAnswer) -> PromptAnswer:
        ANSWERS[kind] = fn
        return fn

    return register


async def ask(
    update: Update, ctx: LinliContext, kind: str, payload: str, name: str, **params: object
) -> None:
    """Ask for typed input. In groups the question is a forced reply, so the answer reaches the
    bot even with privacy mode on."""
    chat = update.effective_chat
    assert chat is not None
    await _wait(ctx, person_id=user_id(update), chat_id=chat.id, kind=kind, payload=payload)
    # A selective forced reply only reaches the person whose message it answers.
    markup = None if is_private(update) else ForceReply(selective=True)
    message = update.effective_message
    assert message is not None
    await message.reply_text(
        render(ctx, name, **params), reply_markup=markup, do_quote=not is_private(update)
    )


async def again(ctx: LinliContext, prompt: people.Prompt) -> None:
    """Wait for the same answer again (one that was refused may simply be typed again)."""
    await _wait(
        ctx, person_id=prompt.person_id, chat_id=prompt.chat_id, kind=prompt.kind,
        payload=prompt.payload,
    )  # fmt: skip


async def _wait(
    ctx: LinliContext, *, person_id: int, chat_id: int, kind: str, payload: str
) -> None:
    async with ctx.svc.db.transaction() as session:
        await people.set_prompt(
            session, person_id=person_id, chat_id=chat_id, kind=kind, payload=payload,
            now=ctx.now(),
        )  # fmt: skip


async def on_text(update: Update, ctx: LinliContext) -> None:
    chat, message = update.effective_chat, update.effective_message
    if chat is None or message is None or not message.text:
        return
    async with ctx.svc.db.transaction(write=False) as session:
        waiting = await people.has_prompt(session, person_id=user_id(update), chat_id=chat.id)
    if not waiting:
        return  # ordinary chatter in a group: not for us
    async with ctx.svc.db.transaction() as session:
        prompt = await people.take_prompt(
            session, person_id=user_id(update), chat_id=chat.id, now=ctx.now()
        )
    if prompt is not None and prompt.kind in ANSWERS:
        await ANSWERS[prompt.kind](update, ctx, prompt)


def register(app: LinliApp) -> None:
    # Drafts left alone expire, and long-finished ones go (models.flows).
    delivery.add_rhythm(app, flows.purge)
    # Last in group 0, so commands and buttons always win over a pending question.
    app.add_handler(MessageHandler(filters.TEXT & ~filters.COMMAND, on_text))
