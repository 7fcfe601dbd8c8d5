"""Fixtures shared by every test: a real database (SQLite file, or PostgreSQL when
LINLI_TEST_DATABASE_URL is set) with a fresh schema per test."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlmodel import SQLModel

from bot.db import Database

NOW = datetime(2026, 11, 20, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai


def database_url(tmp_path: Path) -> str:
    return os.environ.get("LINLI_TEST_DATABASE_URL") or f"sqlite+aiosqlite:///{tmp_path}/test.db"


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database(database_url(tmp_path))
    if not database.is_sqlite:
        async with database.engine.begin() as conn:
            await conn.run_sync(SQLModel.metadata.drop_all)
    await database.create_all()
    try:
        yield database
    finally:
        await database.dispose()
