"""Updates the bot has handled: the repeat guard's memory across a restart.

Telegram redelivers the updates a bot had not confirmed when it stopped (the last batch of
polling, a webhook request left unanswered). Update ids grow by one per update, so keeping the
newest few thousand handled ids covers that window at a bounded size.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Column, delete
from sqlmodel import Field, SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from models.base import TelegramId, dialect_insert

KEEP = 20_000  # ids kept below the newest: minutes of a city's traffic, far beyond one batch


class HandledUpdate(SQLModel, table=True):
    update_id: int = Field(sa_column=Column(TelegramId, primary_key=True, autoincrement=False))


async def note_handled(
    session: AsyncSession, update_ids: Sequence[int], *, keep: int = KEEP
) -> None:
    """Record these ids (repeats are fine) and forget those far below the newest."""
    if not update_ids:
        return
    rows = [{"update_id": i} for i in set(update_ids)]
    statement = dialect_insert(session)(HandledUpdate).on_conflict_do_nothing()
    await session.exec(statement.values(rows))
    oldest = max(update_ids) - keep
    await session.exec(delete(HandledUpdate).where(col(HandledUpdate.update_id) <= oldest))


async def recently_handled(session: AsyncSession, *, keep: int = KEEP) -> list[int]:
    """The newest handled ids, oldest first."""
    query = select(HandledUpdate.update_id).order_by(col(HandledUpdate.update_id).desc())
    return sorted((await session.exec(query.limit(keep))).all())
