"""Pickers a guided flow shows to choose a unit, residents, a date and time, or a recurrence.

    await pickers.units(update, ctx, flow, field="unit_id", can=Can.lead)
    await pickers.residents(update, ctx, flow, field="people", unit_id=unit_id, multi=True)
    await pickers.when(update, ctx, flow, field="starts_at", end=True)
    await pickers.repeat(update, ctx, flow, field="repeat", start=starts_at, zone=zone)

    @pickers.chosen("task")
    async def after(update, ctx, flow, field): ...   # flow.data[field] holds the choice

Each picker draws itself (editing the tapped message, or a new message after typed input), keeps
its state in the flow's data (flow.data["_pick"]), checks every button on the server (the flow's
owner, open, the picker still open, the unit within the authority API), and when the person has
chosen stores plain JSON in flow.data[field] and calls the flow kind's continuation.
"""

from __future__ import annotations

from bot.context import LinliApp
from handlers.common import add_buttons
from handlers.pickers import dates, recurrence, tree
from handlers.pickers import residents as resident_picker
from handlers.pickers.base import STATE, chosen
from handlers.pickers.dates import pick_when as when
from handlers.pickers.dates import slot
from handlers.pickers.recurrence import pick_repeat as repeat
from handlers.pickers.residents import pick_residents as residents
from handlers.pickers.tree import pick_unit as units
from handlers.pickers.tree import reachable_tops, tops, unit_view

HANDLERS = (*tree.HANDLERS, *dates.HANDLERS, *recurrence.HANDLERS, *resident_picker.HANDLERS)


def register(app: LinliApp) -> None:
    add_buttons(app, HANDLERS)


__all__ = [
    "STATE",
    "chosen",
    "reachable_tops",
    "register",
    "repeat",
    "residents",
    "slot",
    "tops",
    "unit_view",
    "units",
    "when",
]
