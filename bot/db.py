"""The database engine and the one unit of work every handler uses: `transaction()`."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from contextvars import ContextVar
from functools import partial
from pathlib import Path
from typing import Any

import aiosqlite
from sqlalchemy import event
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.orm import ORMExecuteState, UOWTransaction
from sqlmodel import Session, SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession

import models  # noqa: F401  (registers every table on SQLModel.metadata)
from bot.ordering import handed_over
from models.outbox import QUEUED

_WRITE = "linli_write"
_writing: ContextVar[bool] = ContextVar("linli_writing", default=False)
# Who a person is (their roles, households, and the units and communities those sit in).
STANDING_TABLES = frozenset({"role", "resident", "household", "unit", "community"})
_CHANGED = "linli_standing_changed"


def _prepare_sqlite(engine: AsyncEngine) -> None:
    """WAL, a busy timeout, foreign keys, and BEGIN IMMEDIATE for writes.

    pysqlite's own transaction handling is switched off so that a write transaction takes the
    write lock when it starts; otherwise two deferred transactions can both read a balance
    and both write (measured: double spending under concurrent taps).
    """

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA busy_timeout=10000")
        # WAL is a property of the file, set once. Switching needs an exclusive lock that SQLite
        # does not wait for: when another process holds it (two starting at once on a new
        # file), that one makes the switch and this connection goes on.
        cursor.execute("PRAGMA journal_mode")
        if str(cursor.fetchone()[0]).lower() != "wal":
            try:
                cursor.execute("PRAGMA journal_mode=WAL")
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc):
                    raise
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        write = conn.get_execution_options().get(_WRITE, True)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


class _Inline:
    """aiosqlite's queue to its worker thread, replaced by running each call at once.

    SQLite answers from the local file in microseconds. Handing every call (cursor, execute,
    fetch, close, commit: about ten per statement) to a thread and back cost more than the
    statements themselves, and with many updates in flight the pool's threads fought the event
    loop for the GIL (bench/updates.py: SQLite hid only 0.56 of the network wait). Run inline,
    a transaction that only talks to the database never yields to the loop.
    """

    def put_nowait(self, item: tuple[asyncio.Future[Any] | None, Callable[[], Any]]) -> None:
        future, function = item
        try:
            result = function()
        except BaseException as exc:  # handed to the caller awaiting the future
            if future is not None:
                future.set_exception(exc)
            return
        if future is not None:
            future.set_result(result)


class _InlineConnection(aiosqlite.Connection):
    """An aiosqlite connection whose calls run on the event loop's thread (see _Inline)."""

    def __init__(self, database: str) -> None:
        super().__init__(partial(sqlite3.connect, database, check_same_thread=False), 64)
        self._tx = _Inline()  # type: ignore[assignment]  # its worker thread never starts


async def _connect_inline(database: str) -> _InlineConnection:
    connection = _InlineConnection(database)
    await connection._connect()
    return connection


class _WatchedSession(Session):
    """Marks a unit of work that writes who a person is (see Database.generation)."""


@event.listens_for(_WatchedSession, "do_orm_execute")
def _on_statement(state: ORMExecuteState) -> None:
    table = getattr(state.statement, "table", None)
    if (state.is_insert or state.is_update or state.is_delete) and (
        getattr(table, "name", None) in STANDING_TABLES
    ):
        state.session.info[_CHANGED] = True


@event.listens_for(_WatchedSession, "before_flush")
def _on_flush(session: Session, _flush: UOWTransaction, _instances: Any) -> None:
    for obj in (*session.new, *session.dirty, *session.deleted):
        if getattr(obj, "__tablename__", None) in STANDING_TABLES:
            session.info[_CHANGED] = True
            return


class Database:
    def __init__(self, url: str, *, echo: bool = False, pool_size: int = 8) -> None:
        self.url = url
        parsed = make_url(url)
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        kwargs: dict[str, Any] = {"echo": echo}
        # A fixed pool, no overflow: under a burst of concurrent updates, connections opened
        # beyond the pool and closed again at once cost more than waiting a moment for one.
        if self.is_sqlite:
            database = parsed.database or ":memory:"
            if database != ":memory:":
                Path(database).parent.mkdir(parents=True, exist_ok=True)
                kwargs.update(pool_size=pool_size, max_overflow=0)
            kwargs.update(async_creator=partial(_connect_inline, database))
        else:
            kwargs.update(pool_size=2 * pool_size, max_overflow=0, pool_pre_ping=True)
        self.engine = create_async_engine(url, **kwargs)
        if self.is_sqlite:
            _prepare_sqlite(self.engine)
        # Bumped after every commit that wrote a STANDING_TABLES row through a session (ORM
        # objects and statements alike): what was read before it may be stale. Caches of a
        # person's roles and memberships keep the generation they read at and check it.
        self.generation = 0
        self._sessions = async_sessionmaker(
            self.engine,
            class_=AsyncSession,
            expire_on_commit=False,
            sync_session_class=_WatchedSession,
        )
        # SQLite runs on the loop's thread (_Inline): a second writer of this process must wait
        # here, not in SQLite's busy handler, which would block the loop the first one needs.
        self._write_lock = asyncio.Lock()
        # Called after a commit that queued outbox rows (the sender's wake-up).
        self.on_queued: list[Callable[[], None]] = []

    @asynccontextmanager
    async def transaction(self, *, write: bool = True) -> AsyncIterator[AsyncSession]:
        """One unit of work: commit on success, roll back on any exception.

        Read-only work passes write=False so SQLite readers do not queue behind the writer.
        Close it before calling Telegram. Once the update has handed over (bot/ordering.py) it
        may not write. When the work queued outbox rows, whoever listens in `on_queued` (the
        sender) is told once it is committed: no handler has to remember.
        """
        if write and handed_over():
            raise RuntimeError("a write after the update handed over (bot/ordering.py)")
        if write and self.is_sqlite:
            if _writing.get():
                raise RuntimeError("a write transaction inside a write transaction")
            token = _writing.set(True)
            try:
                async with self._write_lock, self._unit(write=True) as session:
                    yield session
            finally:
                _writing.reset(token)
        else:
            async with self._unit(write=write) as session:
                yield session

    @asynccontextmanager
    async def _unit(self, *, write: bool) -> AsyncIterator[AsyncSession]:
        async with self._sessions() as session:
            await session.connection(execution_options={_WRITE: write})
            try:
                yield session
                await session.commit()
            except BaseException:
                await session.rollback()
                raise
            if session.info.pop(_CHANGED, False):
                self.generation += 1
            if session.info.pop(QUEUED, False):
                for listener in list(self.on_queued):
                    listener()

    async def create_all(self) -> None:
        """Create the schema directly (tests); production uses migrations."""
        async with self.engine.begin() as conn:
            await conn.run_sync(SQLModel.metadata.create_all)

    async def dispose(self) -> None:
        await self.engine.dispose()
