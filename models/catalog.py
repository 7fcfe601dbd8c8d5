"""A community's own coded list: its earning rules (models/points.py) and its report
categories (models/reports.py).

Until an admin first changes an entry the defaults apply unsaved, so reading never writes; the
first change saves them all (`edit`), and an admin's own entries are coded c1, c2, … (`add`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Protocol, TypeVar

from sqlmodel import SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from models.base import dialect_insert
from models.errors import Conflict, DomainError
from models.people import Community


class Entry(Protocol):
    id: int | None
    community_id: int
    code: str
    name_zh: str
    name_en: str
    active: bool


E = TypeVar("E", bound=Entry)
Defaults = Callable[[int, datetime], Sequence[E]]  # (community id, now) -> unsaved rows


async def entries(
    session: AsyncSession,
    model: type[E],
    defaults: Defaults[E],
    *,
    community_id: int,
    now: datetime,
    order: Sequence[Any],
    active_only: bool,
) -> list[E]:
    """The community's entries in `order`; the defaults (unsaved) while it has none stored."""
    query = select(model).where(col(model.community_id) == community_id).order_by(*order)
    found = list((await session.exec(query)).all()) or list(defaults(community_id, now))
    return [e for e in found if e.active or not active_only]


async def _ensure(
    session: AsyncSession,
    model: type[E],
    defaults: Defaults[E],
    *,
    community_id: int,
    now: datetime,
) -> None:
    """Save the defaults for a community that has none (repeats and races add nothing)."""
    exists = select(col(model.id)).where(col(model.community_id) == community_id)
    if (await session.exec(exists)).first() is not None:
        return
    rows = [_dumped(e) for e in defaults(community_id, now)]
    await session.exec(
        dialect_insert(session)(model)
        .values(rows)
        .on_conflict_do_nothing(index_elements=["community_id", "code"])
    )


def _dumped(entry: Entry) -> dict[str, Any]:
    assert isinstance(entry, SQLModel)
    return entry.model_dump(exclude={"id"})


async def edit(
    session: AsyncSession,
    model: type[E],
    defaults: Defaults[E],
    *,
    community_id: int,
    code: str,
    now: datetime,
    missing: DomainError,
    **changes: Any,
) -> E:
    """Change the entry with this code (the defaults are saved first): each change that is not
    None is set, with `updated_at`. An unknown code raises `missing`."""
    await _ensure(session, model, defaults, community_id=community_id, now=now)
    query = select(model).where(col(model.community_id) == community_id, col(model.code) == code)
    found = (await session.exec(query)).first()
    if found is None:
        raise missing
    for name, value in {**changes, "updated_at": now}.items():
        if value is not None:
            setattr(found, name, value)
    await session.flush()
    return found


async def add(
    session: AsyncSession,
    model: type[E],
    defaults: Defaults[E],
    *,
    community_id: int,
    name: str,
    now: datetime,
    taken: str,
    make: Callable[[str, int], E],
) -> E:
    """An admin's own entry named `name` (a name in use is refused: Conflict `taken`), made by
    `make(code, entries so far)` with the next free code c<N>. Two admins adding at once take
    turns on the community row: each sees the other's entry and takes the next code."""
    await session.get(Community, community_id, with_for_update=True)
    await _ensure(session, model, defaults, community_id=community_id, now=now)
    query = select(model).where(col(model.community_id) == community_id)
    existing = list((await session.exec(query)).all())
    if any(name in (e.name_zh, e.name_en) for e in existing):
        raise Conflict(taken, name=name)
    numbers = [int(e.code[1:]) for e in existing if e.code[:1] == "c" and e.code[1:].isdigit()]
    found = make(f"c{max(numbers, default=0) + 1}", len(existing))
    session.add(found)
    await session.flush()
    return found
