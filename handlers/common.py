"""What every feature handler shares: replies in the reader's language, buttons, callbacks."""

from __future__ import annotations

import asyncio
import functools
import html
import logging
import re
import secrets
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlmodel.ext.asyncio.session import AsyncSession
from telegram import (
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    Message,
    Update,
    User,
)
from telegram.constants import ChatType
from telegram.error import BadRequest, Forbidden, TelegramError
from telegram.ext import CallbackQueryHandler

from bot.context import LinliApp, LinliContext
from bot.ordering import hand_over
from models import people
from models.errors import DomainError, InvalidInput, NotAllowed
from models.people import Authority, Community

log = logging.getLogger("linli")
T = TypeVar("T")

Markup = InlineKeyboardMarkup
Tap = Callable[[Update, LinliContext], Coroutine[Any, Any, None]]  # a button's handler
Screen = Callable[..., Awaitable["View"]]  # (session, ctx, update, *the button's fields) -> View
CALLBACK_LIMIT = 64  # bytes, Telegram's limit on callback_data
PAGE = 8  # buttons per page in pickers: big enough to scan, small enough for old eyes
DRAFT_GONE = frozenset({"flow_expired"})  # a tapped draft's message turns into this refusal


def button(label: str, data: str) -> InlineKeyboardButton:
    if len(data.encode()) > CALLBACK_LIMIT:
        raise ValueError(f"callback data over {CALLBACK_LIMIT} bytes: {data!r}")
    return InlineKeyboardButton(label, callback_data=data)


def url_button(label: str, url: str) -> InlineKeyboardButton:
    return InlineKeyboardButton(label, url=url)


def keyboard(rows: Sequence[Sequence[InlineKeyboardButton]]) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup([list(row) for row in rows if row])


def rows_of(
    buttons: Sequence[InlineKeyboardButton], width: int
) -> list[list[InlineKeyboardButton]]:
    return [list(buttons[i : i + width]) for i in range(0, len(buttons), width)]


def page_count(total: int, size: int = PAGE) -> int:
    return max(1, -(-total // size))


def page_buttons(
    ctx: LinliContext, page: int, pages: int, data: Callable[[int], str] | str
) -> list[InlineKeyboardButton]:
    """◀ ▶ for a paged picker; `data(n)` is the callback data that shows page n (or `data` is
    that text with a {} where the page number goes)."""
    if isinstance(data, str):
        data = data.format
    row = []
    if page > 0:
        row.append(button(label(ctx, "common", "prev"), data(page - 1)))
    if page < pages - 1:
        row.append(button(label(ctx, "common", "next"), data(page + 1)))
    return row


def clamp_page(page: int, total: int, size: int = PAGE) -> int:
    """A page number that exists for `total` items (a list may have shrunk since it was drawn)."""
    return min(max(page, 0), page_count(total, size) - 1)


def paged(items: Sequence[T], page: int, size: int = PAGE) -> tuple[Sequence[T], int, int]:
    """The items on `page` (clamped, so a stale page number still shows something), the page
    actually shown and the number of pages."""
    page = clamp_page(page, len(items), size)
    return items[page * size : (page + 1) * size], page, page_count(len(items), size)


def label(ctx: LinliContext, feature: str, key: str, **params: object) -> str:
    return ctx.svc.renderer.label(ctx.lang, feature, key, **params)


def render(ctx: LinliContext, name: str, **params: object) -> str:
    return ctx.svc.renderer.render(ctx.lang, name, **params)


def plain(text: str) -> str:
    """Telegram HTML to the plain text a callback alert shows."""
    return html.unescape(re.sub(r"<[^>]+>", "", text))


def callback_args(update: Update, prefix: str, count: int) -> list[str]:
    """The fields after `prefix:` in the tapped button's data; anything else is stale or forged."""
    query = update.callback_query
    parts = (query.data or "").split(":") if query else []
    if len(parts) != count + 1 or parts[0] != prefix:
        raise InvalidInput("stale_button")
    return parts[1:]


ROW_ID_MAX = 2**31 - 1  # PostgreSQL's `integer`: row ids, pages, amounts in callback data
TELEGRAM_ID_MAX = 2**63 - 1  # `bigint`: people and chats as Telegram numbers them
_DECIMAL = re.compile(r"-?[0-9]{1,19}")


def as_int(text: str, *, telegram_id: bool = False) -> int:
    """A number from callback data, within its column's range; anything else is stale or forged.

    Row ids and pages are 0 … 2^31-1 (PostgreSQL's 32-bit integer columns); Telegram ids
    (`telegram_id=True`, people and chats) are signed 64-bit. Python's int() would also take
    "+5", " 5", "1_000" and non-ASCII digits: none of those is a button Linli made.
    """
    if not _DECIMAL.fullmatch(text):
        raise InvalidInput("stale_button")
    value = int(text)
    low, high = (-TELEGRAM_ID_MAX - 1, TELEGRAM_ID_MAX) if telegram_id else (0, ROW_ID_MAX)
    if not low <= value <= high:
        raise InvalidInput("stale_button")
    return value


def as_state(text: str) -> bool:
    """A button's target state ("1" on, "0" off). Buttons set a state, never toggle one, so a
    double tap or a redelivered update leaves things as the person wanted."""
    if text not in ("0", "1"):
        raise InvalidInput("stale_button")
    return text == "1"


def state(on: bool) -> str:
    return "1" if on else "0"


def user_id(update: Update) -> int:
    user = update.effective_user
    if user is None:
        raise InvalidInput("stale_button")
    return user.id


def typed(update: Update) -> str:
    """The text of the message a prompt's answer came in (prompts only pass on text)."""
    message = update.effective_message
    assert message is not None and message.text is not None
    return message.text


def is_private(update: Update) -> bool:
    chat = update.effective_chat
    return chat is not None and chat.type == ChatType.PRIVATE


def thread_of(message: Message | None) -> int:
    """The forum topic a message is in, 0 for the group itself."""
    if message is not None and message.is_topic_message and message.message_thread_id:
        return message.message_thread_id
    return 0


def replied_to(message: Message | None) -> User | None:
    """The author of the message a command answers, if it really is a reply to someone.

    In a forum topic every message "replies" to the topic's opening message; that is not a
    choice of person.
    """
    if message is None or message.reply_to_message is None:
        return None
    replied = message.reply_to_message
    if replied.forum_topic_created is not None:
        return None
    if message.is_topic_message and replied.message_id == message.message_thread_id:
        return None
    return replied.from_user


async def note_replied(ctx: LinliContext, who: User) -> None:
    """With privacy mode on, the bot may never have seen this person speak: Telegram vouches
    for them in the reply, so they can be appointed or named without having started the bot."""
    async with ctx.svc.db.transaction() as session:
        await people.note_person(
            session,
            person_id=who.id,
            name=who.full_name,
            username=who.username,
            language_code=who.language_code,
            now=ctx.now(),
        )


async def load_auth(session: AsyncSession, ctx: LinliContext, update: Update) -> Authority:
    uid = user_id(update)
    return await people.authority(session, person_id=uid, superadmin=ctx.is_superadmin(uid))


async def reply(
    update: Update, ctx: LinliContext, name: str, *, markup: Markup | None = None, **params: object
) -> Message:
    """Answer the person's message in the same chat and topic, quoting it in groups."""
    message = update.effective_message
    assert message is not None
    text = render(ctx, name, **params)
    return await message.reply_text(text, reply_markup=markup, do_quote=not is_private(update))


async def edit(
    update: Update, ctx: LinliContext, name: str, *, markup: Markup | None = None, **params: object
) -> None:
    """Replace the tapped message (a picker's next step); a repeated tap changes nothing."""
    assert update.callback_query is not None
    await show(update, ctx, View(name, params, markup))


@dataclass
class View:
    """One step of a picker or flow: the template, its parameters and its buttons."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)
    markup: Markup | None = None


async def show(
    update: Update,
    ctx: LinliContext,
    view: View,
    *,
    note: str | None = None,
    alert: bool = False,
    **params: object,
) -> None:
    """A tapped button turns its message into the next step, and the tap is answered (with the
    short `note` rendered with `params`, as an alert with `alert`: "already saved, by …"); a
    message gets the step as a new message."""
    if update.callback_query is not None:
        # The spinner stops while the message changes: one round trip, not two. The change is
        # made in the update's own task, where it waits for its chat's turn (bot/ordering.py);
        # the answer goes to no chat, so it need not.
        answering = asyncio.create_task(answer(update, ctx, note, alert=alert, **params))
        try:
            await replace(update, ctx, view)
        finally:
            await answering
    else:
        await reply(update, ctx, view.name, markup=view.markup, **view.params)


def screen(
    prefix: str, count: int, *, private: bool = False, write: bool = False
) -> Callable[[Screen], Tap]:
    """A button that only shows a screen:

        @screen("jf", 2, private=True)
        async def btn_flats(session, ctx, update, building_id: str, page: str) -> View: ...

    the private chat checked first when asked (a button forged in a group learns nothing), the
    `count` fields after `prefix:` handed over as strings, the view built in a read-only
    transaction (`write=True`: the button's change and the view in one write transaction),
    then the tapped message turned into it. Registered like `on_button`."""

    def wrap(build: Screen) -> Tap:
        @functools.wraps(build)
        async def tap(update: Update, ctx: LinliContext) -> None:
            if private:
                private_only(update)
            fields = callback_args(update, prefix, count)
            async with ctx.svc.db.transaction(write=write) as session:
                view = await build(session, ctx, update, *fields)
            hand_over()
            await show(update, ctx, view)

        return on_button(prefix)(tap)

    return wrap


BUTTONS: dict[str, list[tuple[str, Tap]]] = {}  # module -> (prefix, handler) of its buttons


def on_button(prefix: str) -> Callable[[Tap], Tap]:
    """Mark a button's handler: callback data `prefix:…` reaches it once its module's register()
    calls `add_buttons(app, buttons_of(__name__))` (the prefix stands next to its handler)."""

    def mark(tap: Tap) -> Tap:
        BUTTONS.setdefault(tap.__module__, []).append((prefix, tap))
        return tap

    return mark


def buttons_of(module: str) -> list[tuple[str, Tap]]:
    """The buttons a module marked with `on_button` (or `screen`)."""
    return BUTTONS.get(module, [])


def add_buttons(app: LinliApp, routes: Sequence[tuple[str, Tap]]) -> None:
    """Register buttons: each one's callback data is its prefix, a colon, its fields."""
    for prefix, tap in routes:
        app.add_handler(CallbackQueryHandler(tap, pattern=rf"^{prefix}:"))


@contextmanager
def speaking_for(ctx: LinliContext, update: Update, community: Community) -> Iterator[None]:
    """In a group, a message everyone reads (a board, a card) is rendered in the community's
    language, whoever asked or tapped; privately, in the reader's. Notes to the tapper (an
    alert) are rendered after the block, in their own language again."""
    reader = ctx.lang
    if not is_private(update) and community.language in people.LANGUAGES:
        ctx.lang = community.language
    try:
        yield
    finally:
        ctx.lang = reader


async def replace(update: Update, ctx: LinliContext, view: View) -> None:
    """Edit the tapped message without answering the tap (the caller answers with a note)."""
    query = update.callback_query
    assert query is not None
    try:
        await query.edit_message_text(
            render(ctx, view.name, **view.params), reply_markup=view.markup
        )
    except BadRequest as exc:
        if "not modified" not in str(exc).lower():
            raise


async def answer(
    update: Update,
    ctx: LinliContext,
    name: str | None = None,
    *,
    alert: bool = False,
    **params: object,
) -> None:
    """Stop the tapped button's spinner, optionally with a short note."""
    query = update.callback_query
    if query is None:
        return
    text = plain(render(ctx, name, **params))[:200] if name else None
    try:
        await query.answer(text, show_alert=alert)
    except BadRequest:
        # A query older than ~15 minutes can no longer be answered; the edit already happened.
        log.debug("callback query %s too old to answer", query.id)


async def send_private(
    ctx: LinliContext,
    person_id: int,
    lang: str,
    name: str,
    *,
    markup: Markup | None = None,
    **params: object,
) -> bool:
    """Message someone privately; False when they never opened a chat with the bot."""
    text = ctx.svc.renderer.render(lang, name, **params)
    try:
        await ctx.bot.send_message(person_id, text, reply_markup=markup)
    except Forbidden:
        return False
    except BadRequest as exc:
        if "chat not found" in str(exc).lower():
            return False
        raise
    return True


def deep_link(ctx: LinliContext, payload: str) -> str:
    return f"https://t.me/{ctx.bot.username}?start={payload}"


def private_only(update: Update) -> None:
    """Personal screens (flats, balances, codes, a lead's or admin's controls) stay in the
    private chat, even when a button is forged in a group."""
    if not is_private(update):
        raise NotAllowed("private_only")


async def answer_privately(
    update: Update,
    ctx: LinliContext,
    view: View,
    payload: str,
    *,
    feature: str,
    sent: str = "sent_privately",
    offer: str = "open_private",
) -> None:
    """Answer something personal: here in a private chat; from a group, in the person's private
    chat with only a one-line note in the group, or, if they never opened a chat with the bot, a
    one-tap deep link (`/start <payload>`) to it. Nothing personal is said in the group.

    `feature` names the template folder holding `sent`, `offer` and the link's label.
    """
    if is_private(update):
        await reply(update, ctx, view.name, markup=view.markup, **view.params)
        return
    uid = user_id(update)
    if await send_private(ctx, uid, ctx.lang, view.name, markup=view.markup, **view.params):
        await reply(update, ctx, f"{feature}/{sent}")
        return
    await offer_private(update, ctx, payload, feature=feature, offer=offer)


def private_link(
    ctx: LinliContext, payload: str, *, feature: str, key: str = "open_private"
) -> Markup:
    """One button that opens the person's private chat with the bot on `/start <payload>`."""
    return keyboard([[url_button(label(ctx, feature, key), deep_link(ctx, payload))]])


async def offer_private(
    update: Update,
    ctx: LinliContext,
    payload: str,
    *,
    feature: str,
    offer: str = "open_private",
    key: str = "open_private",
    **params: object,
) -> None:
    """Point from a group to the private chat, where this is done: the note `feature/offer`
    with the one-tap link (`private_link`), and nothing personal."""
    link = private_link(ctx, payload, feature=feature, key=key)
    await reply(update, ctx, f"{feature}/{offer}", markup=link, **params)


async def _reader_language(update: Update, ctx: LinliContext) -> None:
    """PTB hands the error handler a fresh context, without the language the guard chose."""
    from handlers.guards import know_person  # the guards import this module

    user = update.effective_user
    if user is None:
        return
    try:
        await know_person(update, ctx)
    except Exception:  # the database may be what failed; Telegram's language will do
        code = user.language_code or ""
        ctx.lang = "zh" if code.lower().startswith("zh") else "en"


async def on_error(update: object, ctx: LinliContext) -> None:
    """The one error handler: refusals are explained, anything else is logged with a reference."""
    error = ctx.error
    if not isinstance(update, Update):
        log.error("error outside an update", exc_info=error)
        return
    await _reader_language(update, ctx)
    if isinstance(error, DomainError):
        name, params = f"errors/{error.key}", error.params
    else:
        ref = secrets.token_hex(3).upper()
        log.error("update %s failed (ref %s)", update.update_id, ref, exc_info=error)
        name, params = "errors/unexpected", {"ref": ref}
    try:
        if update.callback_query is not None:
            if isinstance(error, DomainError) and error.key in DRAFT_GONE:
                # The owner's own draft is over: its message says so and stops offering buttons.
                await replace(update, ctx, View(name, params))
            await answer(update, ctx, name, alert=True, **params)
        elif update.effective_message is not None and update.effective_user is not None:
            await reply(update, ctx, name, **params)
    except TelegramError as exc:
        log.warning("could not tell update %s about its error: %s", update.update_id, exc)
