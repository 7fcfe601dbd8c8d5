"""Bring the schema to a revision with Alembic, from code: no alembic.ini, any working directory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

import migrations
from bot.db import Database

SCRIPT_LOCATION = Path(migrations.__file__).parent
# Any fixed number will do; it only has to be the same in every process ("linli" in ASCII).
_PG_LOCK = 0x6C696E6C69


class ForeignKeyViolation(Exception):
    """A migration left rows pointing at rows that no longer exist; it was rolled back."""


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic's settings; with a connection, env.py runs on it instead of opening its own."""
    config = Config()
    config.set_main_option("script_location", str(SCRIPT_LOCATION))
    config.set_main_option("path_separator", "os")
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head() -> str | None:
    """The newest revision in migrations/versions."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def _sqlite_foreign_keys(connection: Connection, on: bool) -> None:
    # Straight to the driver: through SQLAlchemy the statement would first fire bot.db's
    # BEGIN IMMEDIATE, and SQLite ignores this pragma inside a transaction.
    cursor = connection.connection.cursor()
    try:
        cursor.execute(f"PRAGMA foreign_keys={'ON' if on else 'OFF'}")
    finally:
        cursor.close()


def _sqlite_foreign_key_check(connection: Connection) -> None:
    broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
    if broken:
        raise ForeignKeyViolation(f"{len(broken)} row(s), first: {tuple(broken[0])}")


@asynccontextmanager
async def migration_transaction(db: Database) -> AsyncIterator[AsyncConnection]:
    """One transaction for a whole migration run: committed at the end, or rolled back.

    Runs one at a time, so that a bot starting while another process migrates waits and then
    finds nothing left to do: SQLite's BEGIN IMMEDIATE already queues writers, and on
    PostgreSQL an advisory lock held until the commit does the same.

    On SQLite, foreign keys are off meanwhile and checked before the commit: a batch
    migration copies a table, drops the original and renames the copy, and with them on the
    drop fails (or deletes) whenever other tables' rows refer to it.
    """
    async with db.engine.connect() as conn:
        if db.is_sqlite:
            await conn.run_sync(_sqlite_foreign_keys, False)
        try:
            async with conn.begin():
                if not db.is_sqlite:
                    await conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_PG_LOCK})")
                yield conn
                if db.is_sqlite:
                    await conn.run_sync(_sqlite_foreign_key_check)
        finally:
            if db.is_sqlite:
                # The connection goes back to the pool, where bot code expects them on.
                await conn.run_sync(_sqlite_foreign_keys, True)


async def upgrade(db: Database, revision: str = "head") -> None:
    async with migration_transaction(db) as conn:
        await conn.run_sync(lambda sync: command.upgrade(alembic_config(sync), revision))


async def downgrade(db: Database, revision: str) -> None:
    """Step back, e.g. to "-1" or "base" (which drops every table)."""
    async with migration_transaction(db) as conn:
        await conn.run_sync(lambda sync: command.downgrade(alembic_config(sync), revision))


async def current(db: Database) -> str | None:
    """The revision the database is at; None before the first upgrade."""
    async with db.transaction(write=False) as session:
        conn = await session.connection()
        return await conn.run_sync(
            lambda sync: MigrationContext.configure(sync).get_current_revision()
        )
