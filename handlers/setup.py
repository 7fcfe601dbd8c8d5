"""/setup and /unlink: which unit a group or forum topic serves, and the bot's own membership."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

from sqlmodel.ext.asyncio.session import AsyncSession
from telegram import ChatMember, ChatMemberAdministrator, InlineKeyboardButton, Update
from telegram.constants import ChatType
from telegram.error import TelegramError
from telegram.ext import (
    ChatMemberHandler,
    CommandHandler,
    MessageHandler,
    filters,
)

from bot.context import LinliApp, LinliContext
from handlers import common, prompts
from models import outbox, people
from models.errors import Conflict, InvalidInput, NotAllowed, NotFound
from models.people import Authority, BotStatus, Can, ChatLink, Community, Unit, UnitKind

log = logging.getLogger("linli")

ASK_COMMUNITY = "setup_community"
ASK_UNIT = "setup_unit"
# The order leads think in: a grid holds buildings, a building holds small neighbourhoods.
KINDS = ("grid", "building", "neighbourhood", "entrance", "estate")
T = TypeVar("T")


@dataclass(frozen=True)
class Place:
    """The group, or the forum topic of it, that a /setup message or picker belongs to."""

    chat_id: int
    thread: int
    title: str
    type: str
    forum: bool

    @property
    def topic(self) -> bool:
        return self.thread != 0


def place_of(update: Update) -> Place:
    chat, message = update.effective_chat, update.effective_message
    if chat is None or message is None:
        raise InvalidInput("stale_button")
    return Place(
        chat.id, common.thread_of(message), chat.title or "", chat.type, bool(chat.is_forum)
    )


# --- the bot's own rights ------------------------------------------------------------------


@dataclass(frozen=True)
class Rights:
    """What the bot may do in a group; `missing` names what a lead should still grant."""

    checked: bool
    status: str = BotStatus.member
    forum: bool = False
    missing: tuple[str, ...] = ()


def status_of(member: ChatMember) -> str:
    if member.status in (ChatMember.ADMINISTRATOR, ChatMember.OWNER):
        return BotStatus.administrator
    if member.status == ChatMember.MEMBER:
        return BotStatus.member
    if member.status == ChatMember.RESTRICTED:
        return BotStatus.member if getattr(member, "is_member", False) else BotStatus.left
    if member.status == ChatMember.BANNED:
        return BotStatus.kicked
    return BotStatus.left


def rights_of(member: ChatMember, *, forum: bool) -> Rights:
    if member.status == ChatMember.OWNER:
        return Rights(True, BotStatus.administrator, forum)
    if isinstance(member, ChatMemberAdministrator):
        missing: tuple[str, ...] = ("pin",) if not member.can_pin_messages else ()
        if forum and not member.can_manage_topics:
            missing += ("topics",)
        return Rights(True, BotStatus.administrator, forum, missing)
    return Rights(True, status_of(member), forum, ("admin",))


async def check_rights(ctx: LinliContext, place: Place) -> Rights:
    try:
        member = await ctx.bot.get_chat_member(place.chat_id, ctx.bot.id)
    except TelegramError as exc:
        log.warning("could not check the bot's rights in %s: %s", place.chat_id, exc)
        return Rights(False, forum=place.forum)
    return rights_of(member, forum=place.forum)


async def is_chat_admin(ctx: LinliContext, place: Place, person_id: int) -> bool:
    """Whether Telegram says this person administers the group (its owner included)."""
    if place.type == ChatType.PRIVATE:
        return False
    try:
        member = await ctx.bot.get_chat_member(place.chat_id, person_id)
    except TelegramError as exc:
        log.warning("could not ask who administers %s: %s", place.chat_id, exc)
        return False
    return member.status in (ChatMember.ADMINISTRATOR, ChatMember.OWNER)


async def remember_chat(
    session: AsyncSession, ctx: LinliContext, place: Place, rights: Rights
) -> None:
    if rights.checked:
        await people.record_chat(
            session,
            chat_id=place.chat_id,
            type=place.type,
            title=place.title,
            is_forum=place.forum,
            bot_status=rights.status,
            now=ctx.now(),
        )


# --- views: what a picker message shows ------------------------------------------------------


def view(
    name: str, place: Place, rows: list[list[InlineKeyboardButton]], **params: object
) -> common.View:
    """A step of the picker: whether it is about a forum topic, and its buttons (if any)."""
    return common.View(
        name, {"topic": place.topic, **params}, common.keyboard(rows) if any(rows) else None
    )


def kind_label(ctx: LinliContext, kind: str) -> str:
    return common.label(ctx, "people", f"kind_{kind}") if kind in UnitKind.__members__ else kind


def unit_buttons(ctx: LinliContext, units: Sequence[Unit]) -> list[list[InlineKeyboardButton]]:
    return common.rows_of(
        [
            common.button(common.label(ctx, "setup", "open_unit", name=u.name), f"suv:{u.id}:0")
            for u in units
        ],
        2,
    )


async def home_view(
    session: AsyncSession,
    ctx: LinliContext,
    auth: Authority,
    place: Place,
    page: int,
    *,
    rights: Rights | None = None,
    added: str = "",
) -> common.View:
    """Where the picker starts: a super-admin's communities, or the units a lead covers.

    `added` names a top-level unit this person just added but does not cover (an admin of
    another unit): only a super-admin can link chats to it.
    """
    if auth.superadmin:
        found = await people.communities(session)
        if len(found) == 1:
            return await community_view(session, ctx, auth, place, found[0], page, rights=rights)
        shown, page, pages = common.paged(found, page)
        rows = [
            [
                common.button(
                    common.label(ctx, "setup", "open_community", name=c.name), f"suc:{c.id}:0"
                )
            ]
            for c in shown
        ]
        rows.append(common.page_buttons(ctx, page, pages, "suh:{}"))
        return view(
            "setup/pick_community",
            place,
            rows,
            empty=not found,
            page=page,
            pages=pages,
            rights=rights,
        )
    if not auth.is_lead:
        raise NotAllowed("setup_leads_only")
    tops = sorted(auth.top_units(), key=lambda u: (u.community_id, u.name, u.id or 0))
    shown_units, page, pages = common.paged(tops, page)
    rows = unit_buttons(ctx, shown_units)
    rows.append(common.page_buttons(ctx, page, pages, "suh:{}"))
    for community_id in sorted({u.community_id for u, _ in auth.roles}):
        community = await session.get(Community, community_id)
        if community is not None and auth.may(Can.admin_community, community_id=community_id):
            add = common.label(ctx, "setup", "add_top", community=community.name)
            rows.append([common.button(add, f"sur:{community_id}")])
    return view(
        "setup/pick",
        place,
        rows,
        community="",
        empty=not tops,
        page=page,
        pages=pages,
        rights=rights,
        created="",
        added=added,
    )


async def community_view(
    session: AsyncSession,
    ctx: LinliContext,
    auth: Authority,
    place: Place,
    community: Community,
    page: int,
    *,
    rights: Rights | None = None,
    created: str = "",
) -> common.View:
    """A community's top-level units: only super-admins browse a whole community."""
    if not auth.superadmin:
        raise NotAllowed("admins_only", unit=community.name)
    assert community.id is not None
    roots = await people.children(session, community_id=community.id, parent_id=None)
    shown, page, pages = common.paged(roots, page)
    rows = unit_buttons(ctx, shown)
    rows.append(common.page_buttons(ctx, page, pages, f"suc:{community.id}:{{}}"))
    rows.append([common.button(common.label(ctx, "setup", "add_here"), f"sur:{community.id}")])
    if len(await people.communities(session)) > 1:
        rows.append([common.button(common.label(ctx, "setup", "back"), "suh:0")])
    return view(
        "setup/pick",
        place,
        rows,
        community=community.name,
        empty=not roots,
        page=page,
        pages=pages,
        rights=rights,
        created=created,
        added="",
    )


async def back_of(session: AsyncSession, auth: Authority, unit: Unit) -> str:
    """One level up, as far as this person may go."""
    if unit.parent_id is not None:
        parent = await session.get(Unit, unit.parent_id)
        if parent is not None and auth.covers(parent):
            return f"suv:{parent.id}:0"
    return f"suc:{unit.community_id}:0" if auth.superadmin else "suh:0"


async def unit_view(
    session: AsyncSession,
    ctx: LinliContext,
    auth: Authority,
    place: Place,
    unit: Unit,
    page: int,
    *,
    added: bool = False,
) -> common.View:
    """One unit, like a folder: its children to open, and linking this chat to it."""
    people.require(auth, unit)
    kids = await people.children(session, community_id=unit.community_id, parent_id=unit.id)
    shown, page, pages = common.paged(kids, page)
    own = await people.own_link(session, chat_id=place.chat_id, thread_id=place.thread)
    rows = unit_buttons(ctx, shown)
    rows.append(common.page_buttons(ctx, page, pages, f"suv:{unit.id}:{{}}"))
    rows.append(
        [common.button(common.label(ctx, "setup", "link_here", unit=unit.name), f"sul:{unit.id}")]
    )
    rows.append([common.button(common.label(ctx, "setup", "add_here"), f"sun:{unit.id}")])
    rows.append(
        [common.button(common.label(ctx, "setup", "back"), await back_of(session, auth, unit))]
    )
    return view(
        "setup/unit",
        place,
        rows,
        unit=unit.name,
        kind=kind_label(ctx, unit.kind),
        names=await people.lineage_names(session, unit),
        has_children=bool(kids),
        linked_here=own is not None and own.unit_id == unit.id,
        page=page,
        pages=pages,
        added=added,
    )


async def status_view(
    session: AsyncSession, ctx: LinliContext, place: Place, link: ChatLink, rights: Rights
) -> common.View:
    unit = await people.get_unit(session, link.unit_id)
    rows = [[common.button(common.label(ctx, "setup", "change"), "suh:0")]]
    return view(
        "setup/status",
        place,
        rows,
        unit=unit.name,
        names=await people.lineage_names(session, unit),
        inherited=link.thread_id != place.thread,
        rights=rights,
    )


def kind_view(
    ctx: LinliContext, auth: Authority, place: Place, community: Community, parent: Unit | None
) -> common.View:
    parent_id = parent.id if parent is not None else 0
    kinds = [
        common.button(kind_label(ctx, k), f"suk:{community.id}:{parent_id}:{k}") for k in KINDS
    ]
    if parent is not None:
        back = f"suv:{parent.id}:0"
    else:
        back = f"suc:{community.id}:0" if auth.superadmin else "suh:0"
    rows = [*common.rows_of(kinds, 2), [common.button(common.label(ctx, "setup", "back"), back)]]
    name = parent.name if parent is not None else community.name
    return view("setup/pick_kind", place, rows, parent=name, top=parent is None)


async def where_to_add(
    session: AsyncSession, auth: Authority, community_id: int, parent_id: int | None
) -> tuple[Community, Unit | None]:
    """Where a new unit would go, if this person may add one there (checked again on save)."""
    community = await session.get(Community, community_id)
    if community is None:
        raise NotFound("community_not_found")
    if parent_id is None:
        if not auth.may(Can.admin_community, community_id=community_id):
            raise NotAllowed("admins_only", unit=community.name)
        return community, None
    parent = await people.get_unit(session, parent_id)
    if parent.community_id != community_id:
        raise InvalidInput("stale_button")
    people.require(auth, parent)
    return community, parent


# --- /setup and its buttons ------------------------------------------------------------------


async def cmd_setup(update: Update, ctx: LinliContext) -> None:
    if common.is_private(update):
        await common.reply(update, ctx, "setup/private")
        return
    place = place_of(update)
    async with ctx.svc.db.transaction(write=False) as session:
        auth = await common.load_auth(session, ctx, update)
        fresh = not await people.communities(session)
    if fresh and not auth.superadmin:
        raise NotAllowed("setup_needs_superadmin")
    if not auth.is_lead:
        raise NotAllowed("setup_leads_only")
    rights = await check_rights(ctx, place)
    async with ctx.svc.db.transaction() as session:
        await remember_chat(session, ctx, place, rights)
    if fresh:
        await prompts.ask(update, ctx, ASK_COMMUNITY, "", "setup/ask_community", rights=rights)
        return
    async with ctx.svc.db.transaction(write=False) as session:
        link = await people.link_for(session, chat_id=place.chat_id, thread_id=place.thread)
        if link is None:
            shown = await home_view(session, ctx, auth, place, 0, rights=rights)
        else:
            shown = await status_view(session, ctx, place, link, rights)
    await common.show(update, ctx, shown)


@common.screen("suh", 1)
async def btn_home(
    session: AsyncSession, ctx: LinliContext, update: Update, page: str
) -> common.View:
    auth = await common.load_auth(session, ctx, update)
    return await home_view(session, ctx, auth, place_of(update), common.as_int(page))


@common.screen("suc", 2)
async def btn_community(
    session: AsyncSession, ctx: LinliContext, update: Update, community_id: str, page: str
) -> common.View:
    auth = await common.load_auth(session, ctx, update)
    community = await session.get(Community, common.as_int(community_id))
    if community is None:
        raise NotFound("community_not_found")
    return await community_view(
        session, ctx, auth, place_of(update), community, common.as_int(page)
    )


@common.screen("suv", 2)
async def btn_unit(
    session: AsyncSession, ctx: LinliContext, update: Update, unit_id: str, page: str
) -> common.View:
    auth = await common.load_auth(session, ctx, update)
    unit = await people.get_unit(session, common.as_int(unit_id))
    return await unit_view(session, ctx, auth, place_of(update), unit, common.as_int(page))


@common.on_button("sul")
async def btn_link(update: Update, ctx: LinliContext) -> None:
    (unit_id,) = common.callback_args(update, "sul", 1)
    place = place_of(update)
    rights = await check_rights(ctx, place)
    chat_admin = await is_chat_admin(ctx, place, common.user_id(update))
    async with ctx.svc.db.transaction() as session:
        auth = await common.load_auth(session, ctx, update)
        result = await people.link_chat_as(
            session,
            auth=auth,
            chat_id=place.chat_id,
            thread_id=place.thread,
            unit_id=common.as_int(unit_id),
            title=place.title,
            now=ctx.now(),
            chat_admin=chat_admin,
        )
        await remember_chat(session, ctx, place, rights)
        names = await people.lineage_names(session, result.unit)
    previous = result.previous.name if result.previous is not None else ""
    shown = view(
        "setup/linked",
        place,
        [],
        unit=result.unit.name,
        names=names,
        previous=previous,
        rights=rights,
    )
    note = None if result.changed else "setup/already_linked"
    await common.show(update, ctx, shown, note=note, unit=result.unit.name)  # a repeat says so


@common.screen("sun", 1)
async def btn_add(
    session: AsyncSession, ctx: LinliContext, update: Update, unit_id: str
) -> common.View:
    auth = await common.load_auth(session, ctx, update)
    unit = await people.get_unit(session, common.as_int(unit_id))
    community, parent = await where_to_add(session, auth, unit.community_id, unit.id)
    return kind_view(ctx, auth, place_of(update), community, parent)


@common.screen("sur", 1)
async def btn_add_root(
    session: AsyncSession, ctx: LinliContext, update: Update, community_id: str
) -> common.View:
    auth = await common.load_auth(session, ctx, update)
    community, parent = await where_to_add(session, auth, common.as_int(community_id), None)
    return kind_view(ctx, auth, place_of(update), community, parent)


@common.on_button("suk")
async def btn_kind(update: Update, ctx: LinliContext) -> None:
    community_id, parent_id, kind = common.callback_args(update, "suk", 3)
    if kind not in UnitKind.__members__:
        raise InvalidInput("stale_button")
    parent = common.as_int(parent_id) or None
    async with ctx.svc.db.transaction(write=False) as session:
        auth = await common.load_auth(session, ctx, update)
        community, under = await where_to_add(session, auth, common.as_int(community_id), parent)
    where = under.name if under is not None else community.name
    payload = f"{community.id}:{parent or 0}:{kind}"
    kind_name = kind_label(ctx, kind)
    await prompts.ask(
        update, ctx, ASK_UNIT, payload, "setup/ask_unit_name", what=kind_name, parent=where
    )
    await common.answer(update, ctx)


@prompts.answers(ASK_COMMUNITY)
async def on_community_name(update: Update, ctx: LinliContext, prompt: people.Prompt) -> None:
    if not ctx.is_superadmin(common.user_id(update)):
        raise NotAllowed("setup_needs_superadmin")
    message = update.effective_message
    assert message is not None
    place = place_of(update)
    try:
        async with ctx.svc.db.transaction() as session:
            community = await people.create_community(
                session,
                name=message.text or "",
                timezone=ctx.svc.settings.timezone,
                language="zh",
                now=ctx.now(),
            )
            auth = await common.load_auth(session, ctx, update)
            shown = await community_view(
                session, ctx, auth, place, community, 0, created=community.name
            )
    except (InvalidInput, Conflict):
        await prompts.again(ctx, prompt)  # a refused name may simply be typed again
        raise
    await common.show(update, ctx, shown)


@prompts.answers(ASK_UNIT)
async def on_unit_name(update: Update, ctx: LinliContext, prompt: people.Prompt) -> None:
    parts = prompt.payload.split(":")
    if len(parts) != 3:
        raise InvalidInput("stale_button")
    community_id, parent_id, kind = common.as_int(parts[0]), common.as_int(parts[1]), parts[2]
    message = update.effective_message
    assert message is not None
    place = place_of(update)
    try:
        async with ctx.svc.db.transaction() as session:
            auth = await common.load_auth(session, ctx, update)
            unit = await people.add_unit(
                session,
                auth=auth,
                community_id=community_id,
                parent_id=parent_id or None,
                kind=kind,
                name=message.text or "",
                now=ctx.now(),
            )
            if auth.covers(unit):
                shown = await unit_view(session, ctx, auth, place, unit, 0, added=True)
            else:
                shown = await home_view(session, ctx, auth, place, 0, added=unit.name)
    except (InvalidInput, Conflict) as exc:
        if exc.key != "stale_button":
            await prompts.again(ctx, prompt)
        raise
    await common.show(update, ctx, shown)


# --- /unlink -----------------------------------------------------------------------------------


async def cmd_unlink(update: Update, ctx: LinliContext) -> None:
    if common.is_private(update):
        await common.reply(update, ctx, "setup/private")
        return
    place = place_of(update)
    async with ctx.svc.db.transaction(write=False) as session:
        auth = await common.load_auth(session, ctx, update)
        if not auth.is_lead:
            raise NotAllowed("setup_leads_only")
        link = await people.own_link(session, chat_id=place.chat_id, thread_id=place.thread)
        if link is None:
            raise NotFound("chat_not_linked")
        unit = await people.get_unit(session, link.unit_id)
        people.require(auth, unit)
        names = await people.lineage_names(session, unit)
    rows = [
        [
            common.button(common.label(ctx, "setup", "unlink_yes"), f"suy:{unit.id}"),
            common.button(common.label(ctx, "setup", "unlink_no"), f"suq:{unit.id}"),
        ]
    ]
    await common.show(
        update, ctx, view("setup/unlink_confirm", place, rows, unit=unit.name, names=names)
    )


@common.on_button("suy")
async def btn_unlink(update: Update, ctx: LinliContext) -> None:
    (unit_id,) = common.callback_args(update, "suy", 1)
    place = place_of(update)
    async with ctx.svc.db.transaction() as session:
        auth = await common.load_auth(session, ctx, update)
        unit = await people.get_unit(session, common.as_int(unit_id))
        removed = await people.unlink_chat_as(
            session, auth=auth, chat_id=place.chat_id, thread_id=place.thread, unit_id=unit.id or 0
        )
    note = None if removed is not None else "setup/already_unlinked"
    await common.show(update, ctx, view("setup/unlinked", place, [], unit=unit.name), note=note,
                      unit=unit.name)  # fmt: skip


@common.screen("suq", 1)
async def btn_keep(
    session: AsyncSession, ctx: LinliContext, update: Update, unit_id: str
) -> common.View:
    auth = await common.load_auth(session, ctx, update)
    unit = await people.get_unit(session, common.as_int(unit_id))
    people.require(auth, unit)
    return view("setup/unlink_kept", place_of(update), [], unit=unit.name)


# --- the bot's own membership, and groups becoming supergroups ---------------------------------


def is_in(member: ChatMember) -> bool:
    return status_of(member) in (BotStatus.member, BotStatus.administrator)


async def on_my_chat_member(update: Update, ctx: LinliContext) -> None:
    """Added, promoted, removed: remember it; links are never dropped, so a return resumes."""
    change = update.my_chat_member
    if change is None or change.chat.type == ChatType.PRIVATE:
        return
    chat, old, new = change.chat, change.old_chat_member, change.new_chat_member
    async with ctx.svc.db.transaction() as session:
        await people.record_chat(
            session,
            chat_id=chat.id,
            type=chat.type,
            title=chat.title or "",
            is_forum=bool(chat.is_forum),
            bot_status=status_of(new),
            now=ctx.now(),
        )
        links = await people.links_of_chat(session, chat_id=chat.id)
    if is_in(old) or not is_in(new):
        return
    # ctx.lang is the language of whoever added the bot: the group's own language.
    rights = rights_of(new, forum=bool(chat.is_forum))
    units = list(dict.fromkeys(unit.name for _, unit in links))
    name = "setup/welcome_back" if units else "setup/greeting"
    try:
        await ctx.bot.send_message(chat.id, common.render(ctx, name, units=units, rights=rights))
    except TelegramError as exc:
        log.warning("could not greet chat %s: %s", chat.id, exc)


async def on_migrate(update: Update, ctx: LinliContext) -> None:
    """Telegram reports an upgrade in both the old group and the new supergroup, maybe twice."""
    message = update.effective_message
    if message is None:
        return
    if message.migrate_to_chat_id:
        old, new = message.chat.id, message.migrate_to_chat_id
    elif message.migrate_from_chat_id:
        old, new = message.migrate_from_chat_id, message.chat.id
    else:
        return
    async with ctx.svc.db.transaction() as session:
        moved = await people.migrate_chat(session, old_chat_id=old, new_chat_id=new, now=ctx.now())
        queued = await outbox.retarget(session, old_chat_id=old, new_chat_id=new)
    log.info("chat %s became %s; %d link(s) and %d delivery(ies) moved", old, new, moved, queued)


def register(app: LinliApp) -> None:
    app.add_handler(CommandHandler("setup", cmd_setup))
    app.add_handler(CommandHandler("unlink", cmd_unlink))
    common.add_buttons(app, common.buttons_of(__name__))
    app.add_handler(ChatMemberHandler(on_my_chat_member, ChatMemberHandler.MY_CHAT_MEMBER))
    app.add_handler(MessageHandler(filters.StatusUpdate.MIGRATE, on_migrate))
