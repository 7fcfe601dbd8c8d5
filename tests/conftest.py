"""Fixtures shared by every test: a real database (SQLite file, or PostgreSQL when
LINLI_TEST_DATABASE_URL is set) with a fresh, empty schema per test."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError
from sqlmodel import SQLModel

from bot.db import Database

NOW = datetime(2026, 11, 20, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai

# Building the schema costs more than most tests: SQLite tests copy a file made once per run,
# PostgreSQL tests empty the tables made once per run (rebuilt when a test dropped them).
_postgres_built = False


def database_url(tmp_path: Path) -> str:
    return os.environ.get("LINLI_TEST_DATABASE_URL") or f"sqlite+aiosqlite:///{tmp_path}/test.db"


@pytest.fixture(scope="session")
def sqlite_schema(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("schema") / "schema.db"
    engine = create_engine(f"sqlite:///{path}")
    SQLModel.metadata.create_all(engine)
    engine.dispose()
    return path


async def _rebuild_postgres(database: Database) -> None:
    # The whole schema, not only the models' tables: a table a change removed from the models
    # may still be in a long-lived test database, holding foreign keys to the rest.
    async with database.engine.begin() as conn:
        await conn.execute(text("DROP SCHEMA public CASCADE"))
        await conn.execute(text("CREATE SCHEMA public"))
    await database.create_all()


async def _empty_postgres(database: Database) -> None:
    global _postgres_built
    if not _postgres_built:
        await _rebuild_postgres(database)
        _postgres_built = True
        return
    tables = ", ".join(f'"{table.name}"' for table in SQLModel.metadata.sorted_tables)
    try:
        async with database.engine.begin() as conn:
            await conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    except DBAPIError:  # a migration test dropped the schema
        await _rebuild_postgres(database)


@pytest.fixture
async def db(tmp_path: Path, sqlite_schema: Path) -> AsyncIterator[Database]:
    url = database_url(tmp_path)
    if url.startswith("sqlite"):
        shutil.copyfile(sqlite_schema, tmp_path / "test.db")
    database = Database(url)
    if not database.is_sqlite:
        await _empty_postgres(database)
    try:
        yield database
    finally:
        await database.dispose()
