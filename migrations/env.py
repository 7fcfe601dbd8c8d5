"""Alembic environment: runs on bot.migrate's connection, or opens the bot's database (CLI)."""

from __future__ import annotations

import asyncio
from logging.config import fileConfig
from typing import Any, Literal

from alembic import context
from alembic.autogenerate.api import AutogenContext
from sqlalchemy.engine import Connection, make_url
from sqlmodel import SQLModel

import models  # noqa: F401  (registers every table on SQLModel.metadata)
from models.base import UTCDateTime

config = context.config
target_metadata = SQLModel.metadata


def render_item(type_: str, obj: Any, autogen_context: AutogenContext) -> str | Literal[False]:
    """Spell our own column types as importable expressions in generated revisions."""
    if type_ == "type" and isinstance(obj, UTCDateTime):
        autogen_context.imports.add("import models.base")
        return "models.base.UTCDateTime()"
    return False


def configure(dialect: str, **options: Any) -> None:
    context.configure(
        target_metadata=target_metadata,
        # SQLite can ALTER almost nothing in place, so its changes copy the table instead.
        render_as_batch=dialect == "sqlite",
        compare_type=True,
        render_item=render_item,
        **options,
    )


def run_on(connection: Connection) -> None:
    configure(connection.dialect.name, connection=connection)
    with context.begin_transaction():
        context.run_migrations()


def database_url() -> str:
    """alembic.ini's sqlalchemy.url if it sets one, else the database the bot itself uses."""
    url = config.get_main_option("sqlalchemy.url")
    if url:
        return url
    # Imported late: only the CLI reads LINLI_DATABASE_URL and .env, never bot.migrate's path.
    from bot.config import load_settings

    return load_settings().database_url


async def run_cli() -> None:
    """Through bot.db so the CLI gets the bot's SQLite pragmas and transaction handling."""
    from bot.db import Database
    from bot.migrate import migration_transaction

    db = Database(database_url())
    try:
        async with migration_transaction(db) as connection:
            await connection.run_sync(run_on)
    finally:
        await db.dispose()


if context.is_offline_mode():
    # `alembic upgrade --sql`: print the SQL for review instead of running it.
    url = database_url()
    configure(make_url(url).get_backend_name(), url=url, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
elif (connection := config.attributes.get("connection")) is not None:
    # bot.migrate owns this connection and its transaction, and commits it.
    run_on(connection)
else:
    if config.config_file_name is not None:
        fileConfig(config.config_file_name, disable_existing_loggers=False)
    asyncio.run(run_cli())
