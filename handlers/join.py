"""(being written)"""

from __future__ import annotations

from bot.context import LinliApp


def register(app: LinliApp) -> None:
    return None
