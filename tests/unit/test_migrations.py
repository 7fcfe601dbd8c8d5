"""The migrations build exactly the schema the models describe, and run up, again, and down."""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.operations import Operations
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection
from sqlmodel import SQLModel, select

from bot import migrate
from bot.db import Database
from models.people import Community, Household, Unit
from tests.conftest import NOW, database_url

WRITES = ("CREATE", "ALTER", "DROP", "INSERT", "UPDATE", "DELETE")


def _drop_everything(conn: Connection) -> None:
    # Reflected rather than SQLModel.metadata: alembic_version and any table another
    # branch of the models left behind must go too, or the comparison sees them.
    existing = sa.MetaData()
    existing.reflect(conn)
    existing.drop_all(conn)


@pytest.fixture
async def empty_db(tmp_path: Path) -> AsyncIterator[Database]:
    """A database with no tables at all: a new SQLite file, or an emptied PostgreSQL one."""
    database = Database(database_url(tmp_path))
    if not database.is_sqlite:
        async with database.engine.begin() as conn:
            await conn.run_sync(_drop_everything)
    try:
        yield database
    finally:
        await database.dispose()


def _differences(conn: Connection) -> list[Any]:
    context = MigrationContext.configure(conn, opts={"compare_type": True})
    return list(compare_metadata(context, SQLModel.metadata))


async def differences(db: Database) -> list[Any]:
    """What autogenerate would put in a new revision: nothing, when models and migrations agree."""
    async with db.transaction(write=False) as session:
        conn = await session.connection()
        return await conn.run_sync(_differences)


async def table_names(db: Database) -> set[str]:
    async with db.transaction(write=False) as session:
        conn = await session.connection()
        return set(await conn.run_sync(lambda sync: sa.inspect(sync).get_table_names()))


async def add_household(db: Database) -> Household:
    async with db.transaction() as session:
        community = Community(name="Lotus Garden", created_at=NOW)
        session.add(community)
        await session.flush()
        assert community.id is not None
        building = Unit(community_id=community.id, kind="building", name="1", created_at=NOW)
        session.add(building)
        await session.flush()
        assert building.id is not None
        household = Household(
            community_id=community.id,
            building_id=building.id,
            unit_id=building.id,
            flat="101",
            code="ABCDEFGH",
            created_at=NOW,
        )
        session.add(household)
    return household


def test_one_head() -> None:
    # Two revisions written in parallel on the same parent need a merge before they ship.
    script = ScriptDirectory.from_config(migrate.alembic_config())
    assert len(script.get_heads()) == 1


async def test_upgrade_builds_the_models_schema(
    empty_db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # nothing may depend on running from the project root
    assert await migrate.current(empty_db) is None

    await migrate.upgrade(empty_db)

    assert await migrate.current(empty_db) == migrate.head()
    assert await differences(empty_db) == []


async def test_upgrading_again_changes_nothing(empty_db: Database) -> None:
    await migrate.upgrade(empty_db)
    household = await add_household(empty_db)
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    sa.event.listen(empty_db.engine.sync_engine, "before_cursor_execute", record)
    try:
        await migrate.upgrade(empty_db)
    finally:
        sa.event.remove(empty_db.engine.sync_engine, "before_cursor_execute", record)

    assert statements  # it did look at the database
    assert [s for s in statements if s.lstrip().upper().startswith(WRITES)] == []
    assert await migrate.current(empty_db) == migrate.head()
    async with empty_db.transaction(write=False) as session:
        kept = (await session.exec(select(Household))).one()
    assert kept.code == household.code


async def test_downgrade_to_base_and_up_again(empty_db: Database) -> None:
    await migrate.upgrade(empty_db)
    await add_household(empty_db)

    await migrate.downgrade(empty_db, "base")

    assert await migrate.current(empty_db) is None
    assert await table_names(empty_db) == {"alembic_version"}

    await migrate.upgrade(empty_db)

    assert await migrate.current(empty_db) == migrate.head()
    assert await differences(empty_db) == []


async def test_two_processes_upgrading_at_once(empty_db: Database, tmp_path: Path) -> None:
    # A second engine on the same database; without the lock the two deadlock, hence the
    # timeout (which also lets go of PostgreSQL locks that other test runs would wait on).
    other = Database(database_url(tmp_path))
    try:
        async with asyncio.timeout(20):
            await asyncio.gather(migrate.upgrade(empty_db), migrate.upgrade(other))
    finally:
        await other.dispose()

    assert await migrate.current(empty_db) == migrate.head()
    assert await differences(empty_db) == []


async def foreign_keys_on(db: Database) -> bool:
    async with db.transaction(write=False) as session:
        conn = await session.connection()
        return bool((await conn.exec_driver_sql("PRAGMA foreign_keys")).scalar())


async def test_sqlite_batch_copy_of_a_referenced_table(empty_db: Database) -> None:
    # What a future SQLite batch migration does to `unit` while households point at it.
    if not empty_db.is_sqlite:
        pytest.skip("SQLite only")
    await migrate.upgrade(empty_db)
    household = await add_household(empty_db)

    def copy_unit_table(conn: Connection) -> None:
        operations = Operations(MigrationContext.configure(conn))
        with operations.batch_alter_table("unit", recreate="always") as batch:
            batch.add_column(sa.Column("note", sa.String(20), nullable=True))

    async with migrate.migration_transaction(empty_db) as conn:
        await conn.run_sync(copy_unit_table)

    assert await foreign_keys_on(empty_db)
    async with empty_db.transaction(write=False) as session:
        assert (await session.exec(select(Household))).one().unit_id == household.unit_id


async def test_sqlite_broken_references_roll_the_migration_back(empty_db: Database) -> None:
    if not empty_db.is_sqlite:
        pytest.skip("SQLite only")
    await migrate.upgrade(empty_db)
    await add_household(empty_db)

    with pytest.raises(migrate.ForeignKeyViolation):
        async with migrate.migration_transaction(empty_db) as conn:
            await conn.exec_driver_sql("DELETE FROM unit")

    assert await foreign_keys_on(empty_db)
    async with empty_db.transaction(write=False) as session:
        assert len((await session.exec(select(Unit))).all()) == 1


async def test_constraints_named_before_the_convention_are_renamed(empty_db: Database) -> None:
    if empty_db.is_sqlite:
        pytest.skip("SQLite keeps its constraints unnamed")
    convention = importlib.import_module(
        "migrations.versions.20261201_5c0e1d2a9b7f_constraint_names_unit_names_handled_updates"
    )
    before = convention.down_revision  # the last revision without the convention
    await migrate.upgrade(empty_db, before)
    async with empty_db.transaction() as session:
        conn = await session.connection()
        rows = (await conn.execute(convention._CONSTRAINTS)).mappings().all()
        # Back to the names PostgreSQL gave them by itself: community_name_key, unit_pkey, …
        for row in rows:
            default = convention.postgres_default(row["table_name"], row["kind"], row["columns"])
            await conn.execute(
                sa.text(
                    f'ALTER TABLE "{row["table_name"]}" RENAME CONSTRAINT "{row["name"]}"'
                    f' TO "{default}"'
                )
            )
    assert await differences(empty_db) != []

    await migrate.upgrade(empty_db)

    assert await differences(empty_db) == []
