"""What every picker shares: its state in the flow's data, the feature's continuation, drawing."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from markupsafe import Markup
from sqlmodel.ext.asyncio.session import AsyncSession
from telegram import InlineKeyboardButton, Update

from bot.context import LinliContext
from handlers import flowui
from handlers.common import button, label, render
from models import flows
from models.errors import InvalidInput
from models.flows import Flow

STATE = "_pick"  # flow.data[STATE]: the open picker's state; None once it has chosen

Continuation = Callable[[Update, LinliContext, Flow, str], Awaitable[None]]
AFTER: dict[str, Continuation] = {}


def chosen(kind: str) -> Callable[[Continuation], Continuation]:
    """Register what happens after a picker of a `kind` flow stored its value: `after(update,
    ctx, flow, field)` shows the flow's next step (flow.data[field] holds the choice)."""

    def register(fn: Continuation) -> Continuation:
        AFTER[kind] = fn
        return fn

    return register


def state(flow: Flow, picker: str) -> dict[str, Any]:
    """The open picker's state; a button of a picker that is not open (any more) is stale."""
    found = flow.data.get(STATE)
    if not isinstance(found, dict) or found.get("picker") != picker:
        raise InvalidInput("stale_button")
    return found


async def begin(
    session: AsyncSession,
    ctx: LinliContext,
    flow: Flow,
    *,
    picker: str,
    field: str,
    heading: str | None,
    back: tuple[str, str, str] | None,
    **options: Any,
) -> dict[str, Any]:
    """Open a picker on the flow (a new one replaces any other still open)."""
    if field == STATE or not field:
        raise ValueError(f"a picker cannot store into {field!r}")
    st = {"picker": picker, "field": field, "heading": heading, "back": back, **options}
    await flows.update(session, flow, now=ctx.now(), **{STATE: st})
    return st


async def keep(session: AsyncSession, ctx: LinliContext, flow: Flow, st: dict[str, Any]) -> None:
    await flows.update(session, flow, now=ctx.now(), **{STATE: st})


async def finish(session: AsyncSession, ctx: LinliContext, flow: Flow, value: Any) -> str:
    """Store the choice in its field and close the picker; returns the field."""
    field = str(flow.data[STATE]["field"])
    await flows.update(session, flow, now=ctx.now(), **{field: value, STATE: None})
    return field


async def after(update: Update, ctx: LinliContext, flow: Flow, field: str) -> None:
    """Hand over to the feature (after the choice was committed)."""
    fn = AFTER.get(flow.kind)
    if fn is None:
        raise RuntimeError(f"no @pickers.chosen({flow.kind!r}) continuation is registered")
    await fn(update, ctx, flow, field)


def heading(ctx: LinliContext, flow: Flow, st: dict[str, Any], **params: object) -> Markup | None:
    """The feature's question above the picker: its own template, rendered with the flow's
    data as `data` (and what the picker adds), already escaped."""
    name = st.get("heading")
    return Markup(render(ctx, name, data=flow.data, **params)) if name else None


def lab(ctx: LinliContext, key: str, **params: object) -> str:
    return label(ctx, "pickers", key, **params)


def footer(ctx: LinliContext, flow: Flow, st: dict[str, Any]) -> list[list[InlineKeyboardButton]]:
    """The feature's way back (if it gave one) and the one cancel button."""
    rows = []
    if st.get("back"):
        feature, key, data = st["back"]
        rows.append([button(label(ctx, feature, key), data)])
    rows.append(flowui.cancel_row(ctx, flow))
    return rows
