"""Shared column types and helpers for every table: aware UTC datetimes, whole-number ids."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import BigInteger, DateTime
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator
from sqlmodel import SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession

from models.errors import NotFound

# Every constraint gets a predictable name (set before any table is declared: every models
# module imports this one first), so a migration can name what it changes on both databases.
# Check constraints are named by hand, in full: CheckConstraint(..., name="ck_<table>_<what>").
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
SQLModel.metadata.naming_convention = NAMING_CONVENTION


class UTCDateTime(TypeDecorator[datetime]):
    """Stores aware datetimes as UTC; SQLite hands back naive values, which are UTC by contract."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: pass an aware UTC value")
        return value.astimezone(UTC)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# Telegram ids do not fit in 32 bits.
TelegramId = BigInteger


def utcnow() -> datetime:
    """The real clock; operations take `now` as an argument and only the app calls this."""
    return datetime.now(UTC)


def dialect_insert(session: AsyncSession) -> Any:
    """`insert` with ON CONFLICT for the session's database (SQLite and PostgreSQL spell it
    alike): the way to write a row two people may create at once without a check that races."""
    return pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert


Row = TypeVar("Row", bound=SQLModel)


async def upserted(session: AsyncSession, statement: Any, model: type[Row]) -> Row:
    """Run an INSERT … ON CONFLICT … RETURNING <model>; the row it wrote or found, as the
    session's (refreshed) object."""
    result = await session.exec(statement, execution_options={"populate_existing": True})
    row = result.scalar_one()
    assert isinstance(row, model)
    return row


async def must_get(
    session: AsyncSession,
    model: type[Row],
    key: Any,
    missing: str,
    *,
    lock: bool = False,
    **params: Any,
) -> Row:
    """The row with this primary key, or NotFound(missing, **params). With `lock` it is read
    FOR UPDATE (held to the end of the transaction) and the session's copy is refreshed."""
    row = await session.get(model, key, with_for_update=lock or None, populate_existing=lock)
    if row is None:
        raise NotFound(missing, **params)
    return row


def spreadsheet_safe(text: str) -> str:
    """Text a spreadsheet will not run: names and notes are typed by people, and a leading
    = + - @ (or a tab or carriage return) would make a formula of them."""
    return f"'{text}" if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text
