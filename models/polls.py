"""Polls: who may vote, casting (race-safe, the last ballot counts), closing once, owners.

Three facts are kept apart:
- `PollVoter`, the "has voted" fact per voting slot (a person, a household, or an owner), with
  who cast last and whether a lead recorded it by proxy: turnout and reminders read it;
- `Ballot`, the choices. In a named poll its `ref` is the slot. In an anonymous poll the ref is
  an HMAC of the slot under a key kept outside the database (settings), the row has no time and
  no sequence (SQLite stores it WITHOUT ROWID, in ref order), so nothing in the database links a
  ballot to its voter, and the voter can still replace it;
- `Ownership` and `OwnerResident`: a household's recorded owner (register column or a lead) and
  which residents are owners. Headcount per Civil Code: one per flat, except that one owner of
  several flats counts once and the developer's unsold flats count once together (owner key
  `developer`).

Slots: `p:<person>` (per person), `h:<household>` (per household), `o:<owner key>` (owners'
polls counted per household: the owner key, or `#<household>` when none is recorded).
"""

from __future__ import annotations

import gc
import hashlib
import hmac
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from fractions import Fraction
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

from sqlalchemy import (
    JSON,
    Column,
    ColumnElement,
    PrimaryKeyConstraint,
    Text,
    UniqueConstraint,
    bindparam,
    false,
    update,
)
from sqlalchemy import select as sql_select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import aliased
from sqlmodel import Field, SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from models import flows, outbox
from models.base import TelegramId, UTCDateTime, must_get
from models.errors import Conflict, DomainError, InvalidInput, NotAllowed, NotFound
from models.flows import Flow
from models.people import (
    Authority,
    Community,
    Household,
    Resident,
    ResidentStatus,
    Unit,
    get_unit,
    homes_and_above,
    one_line,
    paragraphs,
    require,
)
from models.tally import (
    DEFAULT_WEIGHTS,
    DecisionRule,
    Electorate,
    Method,
    Result,
    Rule,
    canonical_text,
    count,
    decode,
    digest,
    encode,
    parse_fraction,
)
from models.tally import Ballot as CountedBallot

DEVELOPER = "developer"  # the owner key of the developer's unsold flats
MAX_OPTIONS = 10
MAX_PLACES = 5
REMIND_BEFORE = timedelta(hours=24)
CARD = "poll"  # the live card's kind (handlers/polls.py builds it)
CHART = "drawn:poll_result"  # the result's bar chart, drawn when it is sent (bot/chart.py)


class Counting:
    person = "person"
    household = "household"


class PollStatus:
    open = "open"  # scheduled when opens_at is still ahead
    closed = "closed"


class Poll(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    community_id: int = Field(foreign_key="community.id", index=True)
    unit_id: int = Field(foreign_key="unit.id", index=True)
    question: str = Field(max_length=200)
    description: str = Field(default="", max_length=1000)
    method: str = Field(max_length=10)
    max_choices: int = 1  # multiple: up to k
    weights: str = Field(default="", max_length=40)  # ranking: "5-3-1"
    counting: str = Field(default=Counting.person, max_length=10)
    area_weighted: bool = False
    owners_only: bool = False
    rule: str = Field(default=Rule.none, max_length=20)
    quorum: str = Field(default="", max_length=20)  # custom rule: "2/3"
    threshold: str = Field(default="", max_length=20)  # custom rule: "1/2"
    threshold_strict: bool = False  # custom rule: "more than" instead of "at least"
    anonymous: bool = False
    live_results: bool = False
    opens_at: datetime = Field(sa_type=UTCDateTime)
    closes_at: datetime = Field(sa_type=UTCDateTime, index=True)
    remind_minutes: int = 24 * 60  # 0: no reminder
    # The closing time the reminder went out for (an extension re-arms it).
    reminded_for: datetime | None = Field(default=None, sa_type=UTCDateTime)
    status: str = Field(default=PollStatus.open, max_length=10, index=True)
    created_by: int = Field(sa_type=TelegramId)
    created_at: datetime = Field(sa_type=UTCDateTime)
    changed_reason: str = Field(default="", max_length=200)  # why a lead extended or closed early
    closed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    closed_by: int | None = Field(default=None, sa_type=TelegramId)
    digest: str | None = Field(default=None, max_length=64)
    result: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    origin: str | None = Field(default=None, max_length=60, unique=True)  # "talk:<unit>:<month>"

    @property
    def weight_list(self) -> tuple[int, ...]:
        return tuple(int(w) for w in self.weights.split("-")) if self.weights else ()

    @property
    def decision_rule(self) -> DecisionRule:
        return DecisionRule.of(
            self.rule,
            quorum=Fraction(self.quorum) if self.quorum else None,
            threshold=Fraction(self.threshold) if self.threshold else None,
            strict=self.threshold_strict,
            area=self.area_weighted,
        )

    def state(self, now: datetime) -> str:
        if self.status == PollStatus.closed:
            return "closed"
        if now < self.opens_at:
            return "scheduled"
        return "open" if now < self.closes_at else "due"

    @property
    def counts_owners(self) -> bool:
        return self.owners_only and self.counting == Counting.household


class PollOption(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("poll_id", "number"),)
    id: int | None = Field(default=None, primary_key=True)
    poll_id: int = Field(foreign_key="poll.id", index=True)
    number: int
    text: str = Field(max_length=100)
    proposal_id: int | None = Field(default=None, foreign_key="proposal.id")


class PollVoter(SQLModel, table=True):
    """The "has voted" fact of one slot; never holds the choices."""

    __table_args__ = (UniqueConstraint("poll_id", "slot"),)
    id: int | None = Field(default=None, primary_key=True)
    poll_id: int = Field(foreign_key="poll.id", index=True)
    slot: str = Field(max_length=90)
    person_id: int = Field(sa_type=TelegramId, index=True)  # who cast (or for whom, by proxy)
    household_id: int | None = Field(default=None, foreign_key="household.id")
    proxy_by: int | None = Field(default=None, sa_type=TelegramId)
    casts: int = 1
    cast_at: datetime = Field(sa_type=UTCDateTime)


class Ballot(SQLModel, table=True):
    """The choices of one slot: no person, no time, no sequence."""

    __table_args__ = (PrimaryKeyConstraint("poll_id", "ref"), {"sqlite_with_rowid": False})
    poll_id: int = Field(foreign_key="poll.id")
    ref: str = Field(max_length=90)
    choices: str = Field(max_length=60)


class PollRecord(SQLModel, table=True):
    """The canonical ballot list frozen at closing: the digest covers exactly this text."""

    poll_id: int = Field(foreign_key="poll.id", primary_key=True)
    text: str = Field(sa_column=Column(Text, nullable=False))


class Ownership(SQLModel, table=True):
    """A household's recorded owner: the key groups flats of one owner (`developer` for unsold)."""

    household_id: int = Field(foreign_key="household.id", primary_key=True)
    owner_key: str = Field(max_length=80, index=True)
    set_by: int | None = Field(default=None, sa_type=TelegramId)  # None: the register
    updated_at: datetime = Field(sa_type=UTCDateTime)


class OwnerResident(SQLModel, table=True):
    """A resident a lead marked as an owner of their household (today residents are occupants)."""

    resident_id: int = Field(foreign_key="resident.id", primary_key=True)
    marked_by: int = Field(sa_type=TelegramId)
    marked_at: datetime = Field(sa_type=UTCDateTime)


# --- creating ----------------------------------------------------------------------------


@dataclass
class PollSpec:
    """What a lead chose in /newpoll (or the monthly talk): validated by `check_spec`."""

    unit_id: int
    question: str
    options: list[str]
    opens_at: datetime
    closes_at: datetime
    method: str = Method.single
    description: str = ""
    max_choices: int = 1
    weights: tuple[int, ...] = DEFAULT_WEIGHTS
    counting: str = Counting.person
    area_weighted: bool = False
    owners_only: bool = False
    rule: str = Rule.none
    quorum: Fraction | None = None
    threshold: Fraction | None = None
    threshold_strict: bool = False
    anonymous: bool = False
    live_results: bool = False
    remind_before: timedelta = REMIND_BEFORE
    proposal_ids: list[int | None] = field(default_factory=list)  # per option, when from the agenda


def check_fraction(value: Fraction | None) -> None:
    if value is not None and not 0 <= value <= 1:
        raise InvalidInput("poll_threshold_range")


def check_weights(weights: Sequence[int]) -> tuple[int, ...]:
    found = tuple(weights)
    if not 1 <= len(found) <= MAX_PLACES or any(w <= 0 or w > 100 for w in found):
        raise InvalidInput("poll_bad_weights", places=MAX_PLACES)
    return found


def parse_weights(text: str) -> tuple[int, ...]:
    parts = [p for p in text.replace("，", "-").replace(",", "-").replace(" ", "-").split("-") if p]
    try:
        return check_weights([int(p) for p in parts])
    except ValueError:
        raise InvalidInput("poll_bad_weights", places=MAX_PLACES) from None


def check_spec(spec: PollSpec, *, now: datetime) -> PollSpec:
    """Normalise and validate a poll; raises a DomainError naming the first problem."""
    spec.question = clean_question(spec.question)
    spec.description = spec.description.strip()
    if len(spec.description) > DESCRIPTION_LIMIT:
        raise InvalidInput("poll_description_length", limit=1000)
    method = Method(spec.method)
    if method is Method.yesno:
        spec.options = ["yes", "no", "abstain"]  # rendered in the reader's language
        spec.proposal_ids = []
    else:
        spec.options = [" ".join(o.split()) for o in spec.options if o.strip()]
        if len(spec.options) < 2:
            raise InvalidInput("poll_too_few_options")
        if len(spec.options) > MAX_OPTIONS:
            raise InvalidInput("poll_too_many_options", limit=MAX_OPTIONS)
        if any(len(o) > 100 for o in spec.options):
            raise InvalidInput("poll_option_length", limit=100)
        if len({o.casefold() for o in spec.options}) != len(spec.options):
            raise InvalidInput("poll_duplicate_option")
    if spec.proposal_ids and len(spec.proposal_ids) != len(spec.options):
        raise InvalidInput("poll_too_few_options")
    if method is Method.multiple and not 1 <= spec.max_choices <= len(spec.options):
        raise InvalidInput("poll_bad_max_choices", options=len(spec.options))
    if method is Method.ranking:
        spec.weights = check_weights(spec.weights)
    if spec.closes_at <= spec.opens_at:
        raise InvalidInput("poll_closes_before_opens")
    if spec.closes_at <= now:
        raise InvalidInput("poll_closes_in_past")
    if spec.rule in (Rule.art278_ordinary, Rule.art278_major):
        # Owners' decisions: counted per owner, by area and by headcount.
        spec.owners_only, spec.counting, spec.area_weighted = True, Counting.household, True
    Rule(spec.rule)
    if spec.counting not in (Counting.person, Counting.household):
        raise InvalidInput("poll_bad_counting")
    if spec.area_weighted and spec.counting != Counting.household:
        raise InvalidInput("poll_area_needs_household")
    if spec.anonymous and spec.area_weighted:
        # A flat's area would single out its ballot in the export.
        raise InvalidInput("poll_anonymous_area")
    if spec.rule == Rule.custom:
        check_fraction(spec.quorum)
        check_fraction(spec.threshold)
        if spec.threshold is None:
            raise InvalidInput("poll_threshold_range")
    if spec.remind_before < timedelta(0):
        raise InvalidInput("poll_bad_reminder")
    return spec


async def create_poll(
    session: AsyncSession, *, auth: Authority, spec: PollSpec, now: datetime
) -> Poll:
    unit = await get_unit(session, spec.unit_id)
    require(auth, unit)
    check_spec(spec, now=now)
    return await insert_poll(session, unit=unit, spec=spec, by=auth.person_id, now=now)


async def insert_poll(
    session: AsyncSession,
    *,
    unit: Unit,
    spec: PollSpec,
    by: int,
    now: datetime,
    origin: str | None = None,
) -> Poll:
    assert unit.id is not None
    poll = Poll(
        community_id=unit.community_id,
        unit_id=unit.id,
        question=spec.question,
        description=spec.description,
        method=spec.method,
        max_choices=spec.max_choices if spec.method == Method.multiple else 1,
        weights="-".join(map(str, spec.weights)) if spec.method == Method.ranking else "",
        counting=spec.counting,
        area_weighted=spec.area_weighted,
        owners_only=spec.owners_only,
        rule=spec.rule,
        quorum=str(spec.quorum) if spec.rule == Rule.custom and spec.quorum else "",
        threshold=str(spec.threshold) if spec.rule == Rule.custom and spec.threshold else "",
        threshold_strict=spec.threshold_strict if spec.rule == Rule.custom else False,
        anonymous=spec.anonymous,
        live_results=spec.live_results,
        opens_at=spec.opens_at,
        closes_at=spec.closes_at,
        remind_minutes=int(spec.remind_before.total_seconds() // 60),
        created_by=by,
        created_at=now,
        origin=origin,
    )
    session.add(poll)
    await session.flush()
    assert poll.id is not None
    proposals = spec.proposal_ids or [None] * len(spec.options)
    for number, (text, proposal_id) in enumerate(zip(spec.options, proposals, strict=True), 1):
        session.add(PollOption(poll_id=poll.id, number=number, text=text, proposal_id=proposal_id))
    await session.flush()
    # The card goes to the chats of the unit and below: its voters are there.
    await outbox.post_card_to_unit(
        session, kind=CARD, subject_id=poll.id, unit=unit, now=now, subtree_too=True
    )
    return poll


async def get_poll(session: AsyncSession, poll_id: int, *, lock: bool = False) -> Poll:
    query = select(Poll).where(Poll.id == poll_id)
    if lock:
        query = query.with_for_update()
    poll = (await session.exec(query)).first()
    if poll is None:
        raise NotFound("poll_not_found")
    return poll


async def options_of(session: AsyncSession, poll_id: int) -> list[PollOption]:
    query = select(PollOption).where(PollOption.poll_id == poll_id)
    return list((await session.exec(query.order_by(col(PollOption.number)))).all())


# --- owners ----------------------------------------------------------------------------


def clean_owner_key(text: str) -> str:
    key = " ".join(text.split())[:80]
    if not key:
        raise InvalidInput("owner_key_empty")
    return DEVELOPER if key.casefold() in (DEVELOPER, "开发商", "建设单位") else key


async def set_owner_key(
    session: AsyncSession,
    *,
    household_id: int,
    owner_key: str | None,
    now: datetime,
    auth: Authority | None = None,
) -> bool:
    """Record who owns a flat (None: forget); whether it changed. `auth` None: the register."""
    household = await must_get(session, Household, household_id, "household_not_found")
    if auth is not None:
        require(auth, await get_unit(session, household.unit_id))
    found = await session.get(Ownership, household_id)
    if owner_key is None:
        if found is not None:
            await session.delete(found)
        return found is not None
    key = clean_owner_key(owner_key)
    if found is not None and found.owner_key == key:
        return False
    if found is None:
        found = Ownership(household_id=household_id, owner_key=key, updated_at=now)
        session.add(found)
    found.owner_key, found.updated_at = key, now
    found.set_by = auth.person_id if auth else None
    await session.flush()
    return True


async def mark_owner(
    session: AsyncSession, *, auth: Authority, resident_id: int, owner: bool, now: datetime
) -> Resident:
    resident = await must_get(session, Resident, resident_id, "request_not_found")
    household = await session.get(Household, resident.household_id)
    assert household is not None
    require(auth, await get_unit(session, household.unit_id))
    found = await session.get(OwnerResident, resident_id)
    if owner and found is None:
        session.add(OwnerResident(resident_id=resident_id, marked_by=auth.person_id, marked_at=now))
    elif not owner and found is not None:
        await session.delete(found)
    await session.flush()
    return resident


async def ownerships_of(
    session: AsyncSession, *, auth: Authority, person_id: int
) -> list[tuple[int, str, bool]]:
    """This person's verified residencies in units the lead covers: (resident, flat, owner)."""
    rows = (
        await session.exec(
            select(Resident, Household, Unit, OwnerResident.resident_id)
            .join(Household, col(Household.id) == col(Resident.household_id))
            .join(Unit, col(Unit.id) == col(Household.unit_id))
            .outerjoin(OwnerResident, col(OwnerResident.resident_id) == col(Resident.id))
            .where(Resident.person_id == person_id, Resident.status == ResidentStatus.verified)
            .order_by(col(Household.flat))
        )
    ).all()
    return [
        (resident.id or 0, household.flat, marked is not None)
        for resident, household, unit, marked in rows
        if auth.covers(unit)
    ]


# --- who may vote ----------------------------------------------------------------------


def _slot(poll: Poll, *, person_id: int, household_id: int, owner_key: str | None) -> str:
    if poll.counting == Counting.person:
        return f"p:{person_id}"
    if poll.owners_only:
        return f"o:{owner_key or f'#{household_id}'}"
    return f"h:{household_id}"


@dataclass(frozen=True)
class VoterSlot:
    slot: str
    household_id: int
    flat: str


def _mine() -> Any:
    """The person's residencies with the path of their household's unit (bound: person_id)."""
    home = aliased(Unit)
    return (
        sql_select(
            col(Resident.status).label("status"),
            col(Household.id).label("household_id"),
            col(Household.flat).label("flat"),
            col(OwnerResident.resident_id).label("owner"),
            col(Ownership.owner_key).label("owner_key"),
            col(home.path).label("path"),
        )
        .join(Household, col(Household.id) == col(Resident.household_id))
        .join(home, col(home.id) == col(Household.unit_id))
        .outerjoin(OwnerResident, col(OwnerResident.resident_id) == col(Resident.id))
        .outerjoin(Ownership, col(Ownership.household_id) == col(Household.id))
        .where(col(Resident.person_id) == bindparam("person_id"))
    )


_MINE = _mine()
_MY_SLOTS = _MINE.where(_MINE.selected_columns.path.startswith(bindparam("path"))).order_by(
    col(Household.flat), col(Household.id)
)


def _slots_of(poll: Poll, person_id: int, rows: Sequence[Any]) -> list[VoterSlot]:
    """The slots from the person's residencies under the poll's unit (status, household,
    flat, owner mark, owner key), in flat order; refuses, saying why."""
    if not rows:
        raise NotAllowed("poll_not_your_unit")
    verified = [r for r in rows if r[0] == ResidentStatus.verified]
    if not verified:
        raise NotAllowed("poll_not_verified")
    if poll.owners_only:
        verified = [r for r in verified if r[3] is not None]
        if not verified:
            raise NotAllowed("poll_owners_only")
    found: dict[str, VoterSlot] = {}
    for _status, household_id, flat, _owner, owner_key in verified:
        slot = _slot(poll, person_id=person_id, household_id=household_id, owner_key=owner_key)
        found.setdefault(slot, VoterSlot(slot, household_id, flat))
    return list(found.values())


async def slots_for(
    session: AsyncSession,
    poll: Poll,
    *,
    person_id: int,
    unit: Unit | None = None,
    path: str | None = None,
) -> list[VoterSlot]:
    """The slots this person may cast (one per eligible household); refuses, saying why.
    `path` (the poll's unit path) or `unit` saves reading the unit again."""
    if path is None:
        path = (unit or await get_unit(session, poll.unit_id)).path
    conn = await session.connection()
    rows = (await conn.execute(_MY_SLOTS, {"person_id": person_id, "path": path})).all()
    return _slots_of(poll, person_id, [tuple(r[:5]) for r in rows])


@dataclass(frozen=True)
class Roll:
    """The electorate in detail: area per slot (0 when not weighted), and who is in each slot."""

    electorate: Electorate
    area: dict[str, int]
    people: dict[int, set[str]]  # person -> the slots they may cast


async def roll(
    session: AsyncSession, poll: Poll, unit: Unit | None = None, *, with_people: bool = True
) -> Roll:
    """Who could take part now: every household (or person, or owner) in the poll's unit tree."""
    unit = unit or await get_unit(session, poll.unit_id)
    conn = await session.connection()
    households = (
        await conn.execute(
            select(Household.id, Household.area_centi_m2, Ownership.owner_key)
            .join(Unit, col(Unit.id) == col(Household.unit_id))
            .outerjoin(Ownership, col(Ownership.household_id) == col(Household.id))
            .where(col(Unit.path).startswith(unit.path))
        )
    ).all()
    key_of = {hid: key for hid, _area, key in households}
    residents = select(Resident.person_id, Resident.household_id).where(
        col(Resident.household_id).in_(
            select(Household.id)
            .join(Unit, col(Unit.id) == col(Household.unit_id))
            .where(col(Unit.path).startswith(unit.path))
        ),
        Resident.status == ResidentStatus.verified,
    )
    if poll.owners_only:
        residents = residents.join(
            OwnerResident, col(OwnerResident.resident_id) == col(Resident.id)
        )
    people: dict[int, set[str]] = {}
    needed = with_people or poll.counting == Counting.person
    for person_id, household_id in (await conn.execute(residents)).all() if needed else ():
        slot = _slot(
            poll, person_id=person_id, household_id=household_id, owner_key=key_of[household_id]
        )
        people.setdefault(person_id, set()).add(slot)
    area: dict[str, int] = {}
    missing = 0
    if poll.counting == Counting.person:
        for slots in people.values():
            for slot in slots:
                area[slot] = 0
    else:
        # 100,000 flats are tallied in well under a second: no per-row attribute lookups.
        weighted, owners = poll.area_weighted, poll.owners_only
        for hid, centi, key in households:
            slot = f"o:{key or f'#{hid}'}" if owners else f"h:{hid}"
            if not weighted:
                area[slot] = 0
            elif centi is None:
                missing += 1
                area.setdefault(slot, 0)
            else:
                area[slot] = area.get(slot, 0) + centi
    return Roll(Electorate(len(area), sum(area.values()), missing), area, people)


@dataclass(frozen=True)
class Turnout:
    voted: int
    eligible: int
    area_voted: int
    area_total: int
    missing_area: int


async def turnout(session: AsyncSession, poll: Poll, the_roll: Roll | None = None) -> Turnout:
    the_roll = the_roll or await roll(session, poll)
    slots = (await session.exec(select(PollVoter.slot).where(PollVoter.poll_id == poll.id))).all()
    return Turnout(
        voted=len(slots),
        eligible=the_roll.electorate.heads,
        area_voted=sum(the_roll.area.get(s, 0) for s in slots),
        area_total=the_roll.electorate.area,
        missing_area=the_roll.electorate.missing_area,
    )


# --- casting ---------------------------------------------------------------------------


def check_choices(poll: Poll, choices: Sequence[int], options: int) -> tuple[int, ...]:
    picked = tuple(choices)
    if any(not 1 <= c <= options for c in picked):
        raise InvalidInput("poll_bad_choice")
    if len(set(picked)) != len(picked):
        raise InvalidInput("poll_repeated_pick")
    method = Method(poll.method)
    if method in (Method.single, Method.yesno) and len(picked) != 1:
        raise InvalidInput("poll_pick_one")
    if method is Method.multiple and not 1 <= len(picked) <= poll.max_choices:
        raise InvalidInput("poll_pick_up_to", limit=poll.max_choices)
    if method is Method.ranking:
        needed = min(len(poll.weight_list), options)
        if len(picked) != needed:
            raise InvalidInput("poll_pick_places", places=needed)
    return picked


def ballot_ref(poll: Poll, slot: str, key: bytes) -> str:
    if not poll.anonymous:
        return slot
    return hmac.new(key, f"{poll.id}:{slot}".encode(), hashlib.sha256).hexdigest()


class Option(NamedTuple):
    number: int
    text: str


def _ballot_read(*, lock: bool) -> Any:
    """A poll, its unit's path, its options and the person's residencies under that unit, in
    one statement (bound: poll_id, person_id): a row per option and residency."""
    mine = _MINE.subquery("mine")
    query = (
        sql_select(Poll, col(Unit.path), col(PollOption.number), col(PollOption.text),
                   mine.c.status, mine.c.household_id, mine.c.flat, mine.c.owner,
                   mine.c.owner_key)
        .join(Unit, col(Unit.id) == col(Poll.unit_id))
        .join(PollOption, col(PollOption.poll_id) == col(Poll.id))
        .outerjoin(mine, mine.c.path.startswith(col(Unit.path)))
        .where(col(Poll.id) == bindparam("poll_id"))
        .order_by(col(PollOption.number), mine.c.flat, mine.c.household_id)
    )  # fmt: skip
    # Read with a share lock on PostgreSQL: closing waits for casts in flight, and a cast
    # after closing sees the poll closed.
    return query.with_for_update(read=True, of=Poll) if lock else query


_BALLOT_READ = {False: _ballot_read(lock=False), True: _ballot_read(lock=True)}


@dataclass(frozen=True)
class BallotRead:
    poll: Poll
    path: str  # the poll's unit's
    options: list[Option]
    residencies: list[tuple[Any, ...]]  # under the poll's unit: see `_slots_of`

    def slots(self, person_id: int) -> list[VoterSlot]:
        return _slots_of(self.poll, person_id, self.residencies)


async def read_for_ballot(
    session: AsyncSession, *, poll_id: int, person_id: int, lock: bool = False
) -> BallotRead:
    """The poll with everything a ballot needs, in one statement (`lock`: the share lock a
    cast takes on PostgreSQL)."""
    postgres = lock and session.get_bind().dialect.name == "postgresql"
    rows = (
        await session.exec(
            _BALLOT_READ[postgres], params={"poll_id": poll_id, "person_id": person_id}
        )
    ).all()
    if not rows:
        raise NotFound("poll_not_found")
    options: dict[int, Option] = {}
    residencies: dict[int, tuple[Any, ...]] = {}
    for _poll, _path, number, text, status, household_id, flat, owner, key in rows:
        if number not in options:
            options[number] = Option(number, text)
        if household_id is not None and household_id not in residencies:
            residencies[household_id] = (status, household_id, flat, owner, key)
    return BallotRead(rows[0][0], rows[0][1], list(options.values()), list(residencies.values()))


def _voter_statements(dialect: str) -> dict[str, Any]:
    """The "has voted" row's and the ballot's writes, built once per dialect. Bound by the
    column's name with "b_" before it (SQLAlchemy keeps the bare names for itself)."""
    table: Any = PollVoter.__table__  # type: ignore[attr-defined]
    insert = sqlite_insert if dialect == "sqlite" else pg_insert
    moved: dict[str, Any] = {
        k: bindparam(f"b_{k}") for k in ("person_id", "household_id", "proxy_by", "cast_at")
    }
    voter = insert(PollVoter).values(
        poll_id=bindparam("b_poll_id"), slot=bindparam("b_slot"), casts=1, **moved
    )
    slot = ["poll_id", "slot"]
    ballot = insert(Ballot).values(
        poll_id=bindparam("b_poll_id"), ref=bindparam("b_ref"), choices=bindparam("b_choices")
    )
    return {
        # expect_casts k > 0: only the slot's (k+1)th ballot (the screen is still current)
        "next": update(PollVoter)
        .where(
            col(PollVoter.poll_id) == bindparam("b_poll_id"),
            col(PollVoter.slot) == bindparam("b_slot"),
            col(PollVoter.casts) == bindparam("b_expect"),
        )
        .values(**moved, casts=table.c.casts + 1)
        .returning(table.c.casts),
        # expect_casts 0: only a first ballot (a slot voted meanwhile refuses)
        "first": voter.on_conflict_do_nothing(index_elements=slot).returning(table.c.casts),
        # None: either
        "any": voter.on_conflict_do_update(
            index_elements=slot, set_={**moved, "casts": table.c.casts + 1}
        ).returning(table.c.casts),
        "replace": update(Ballot)
        .where(col(Ballot.poll_id) == bindparam("b_poll_id"), col(Ballot.ref) == bindparam("b_ref"))
        .values(choices=bindparam("b_choices")),
        "ballot": ballot.on_conflict_do_update(
            index_elements=["poll_id", "ref"], set_={"choices": ballot.excluded.choices}
        ),
    }


_WRITES = {name: _voter_statements(name) for name in ("sqlite", "postgresql")}


@dataclass(frozen=True)
class Cast:
    poll: Poll
    slot: str
    replaced: bool  # an earlier ballot of this slot was replaced
    proxy: bool
    options: list[Option]


def _open_for_casting(poll: Poll, now: datetime) -> None:
    state = poll.state(now)
    if state == "scheduled":
        raise Conflict("poll_not_open_yet")
    if state != "open":
        raise Conflict("poll_closed")


async def cast(
    session: AsyncSession,
    *,
    poll_id: int,
    person_id: int,
    choices: Sequence[int],
    now: datetime,
    ballot_key: bytes,
    household_id: int | None = None,
    proxy: Authority | None = None,
    expect_casts: int | None = None,
) -> Cast:
    """Record (or replace) this person's ballot. Race-safe: one row per slot on both databases.

    With `proxy`, a lead of the poll's unit records a ballot the person phoned or handed in:
    it is marked with who recorded it, and the person is told and may replace it.

    `expect_casts` is how many ballots the slot had when the voter's screen was drawn: a
    confirm button replayed after a later ballot (or tapped twice) no longer matches; None
    takes any. A refused write changes nothing and raises Conflict "poll_ballot_stale".

    Three statements for a voter's ballot (the poll with its options and the voter's
    eligibility, the "has voted" row, the ballot), plus the card's coalesced edit on a slot's
    first ballot: nothing recounts. Each is built once and bound here.
    """
    read = await read_for_ballot(session, poll_id=poll_id, person_id=person_id, lock=True)
    poll = read.poll
    if proxy is not None:
        require(proxy, await get_unit(session, poll.unit_id))
    proxy_by = proxy.person_id if proxy is not None else None
    _open_for_casting(poll, now)
    picked = check_choices(poll, choices, len(read.options))
    slots = read.slots(person_id)
    if household_id is not None:
        slots = [s for s in slots if s.household_id == household_id]
        if not slots:
            raise NotAllowed("poll_not_your_unit")
    if len(slots) > 1:
        raise InvalidInput("poll_choose_household")
    chosen = slots[0]
    writes = _WRITES[session.get_bind().dialect.name]
    conn = await session.connection()
    mode = "any" if expect_casts is None else "first" if expect_casts == 0 else "next"
    voter = {
        "b_poll_id": poll_id,
        "b_slot": chosen.slot,
        "b_person_id": person_id,
        "b_household_id": chosen.household_id,
        "b_proxy_by": proxy_by,
        "b_cast_at": now,
    }
    if mode == "next":
        voter["b_expect"] = expect_casts
    casts = (await conn.execute(writes[mode], voter)).scalar_one_or_none()
    if casts is None:
        raise Conflict("poll_ballot_stale")
    ballot = {
        "b_poll_id": poll_id,
        "b_ref": ballot_ref(poll, chosen.slot, ballot_key),
        "b_choices": encode(poll.method, picked),
    }
    stored = 0
    if casts > 1:
        stored = (await conn.execute(writes["replace"], ballot)).rowcount
        if not stored and poll.anonymous:
            # The ballot key changed since the first ballot: a new row would count twice.
            raise Conflict("ballot_key_changed")
    if not stored:
        await conn.execute(writes["ballot"], ballot)
    if casts == 1 or poll.live_results:
        await outbox.mark_changed(session, kind=CARD, subject_id=poll_id, now=now)
    if proxy_by is not None:
        await outbox.enqueue_private(
            session,
            key=f"poll-proxy:{poll_id}:{chosen.slot}:{casts}",
            person_id=person_id,
            community_id=poll.community_id,
            template="polls/proxy_notice",
            context={"poll_id": poll_id, "question": poll.question},
            now=now,
            priority=outbox.Priority.reminder,
        )
    return Cast(
        poll, chosen.slot, replaced=casts > 1, proxy=proxy_by is not None, options=read.options
    )


async def casts_of(session: AsyncSession, *, poll_id: int, slot: str) -> int:
    """How many ballots this slot has cast (0: none yet)."""
    query = select(PollVoter.casts).where(PollVoter.poll_id == poll_id, PollVoter.slot == slot)
    return (await session.exec(query)).first() or 0


async def has_voted(session: AsyncSession, poll: Poll, *, person_id: int) -> PollVoter | None:
    """The slot record this person would cast into, when it already has a ballot."""
    try:
        slots = await slots_for(session, poll, person_id=person_id)
    except NotAllowed:
        return None
    names = [s.slot for s in slots]
    query = select(PollVoter).where(PollVoter.poll_id == poll.id, col(PollVoter.slot).in_(names))
    return (await session.exec(query)).first()


async def my_ballot(
    session: AsyncSession, poll: Poll, *, slot: str, ballot_key: bytes
) -> tuple[int, ...] | None:
    """The choices stored for a slot (shown only to that slot's own voters)."""
    ref = ballot_ref(poll, slot, ballot_key)
    query = select(Ballot.choices).where(Ballot.poll_id == poll.id, Ballot.ref == ref)
    found = (await session.exec(query)).first()
    return decode(found) if found is not None else None


# --- open polls for a person -----------------------------------------------------------


async def polls_for(
    session: AsyncSession, *, person_id: int, now: datetime, limit: int = 20
) -> list[Poll]:
    """Open (and scheduled) polls in the units where this person is a verified resident."""
    unit_ids = await homes_and_above(session, person_id)
    if not unit_ids:
        return []
    query = (
        select(Poll)
        .where(
            col(Poll.unit_id).in_(unit_ids),
            Poll.status == PollStatus.open,
            col(Poll.closes_at) > now,
        )
        .order_by(col(Poll.closes_at), col(Poll.id))
        .limit(limit)
    )
    found = []
    for poll in (await session.exec(query)).all():
        try:
            await slots_for(session, poll, person_id=person_id)
        except NotAllowed:
            continue
        found.append(poll)
    return found


async def exportable(session: AsyncSession, *, auth: Authority, limit: int = 10) -> list[Poll]:
    """Closed polls whose ballot list this person may take, most recently closed first: those
    in units they cover, and those they could vote in (what `/ballots_<id>` allows)."""
    homes = await homes_and_above(session, auth.person_id)
    within = auth.covering()
    if within is None and not homes:
        return []
    mine: ColumnElement[bool] = col(Poll.unit_id).in_(homes) if homes else false()
    if within is not None:
        mine = mine | within
    query = (
        select(Poll, Unit)
        .join(Unit, col(Unit.id) == col(Poll.unit_id))
        .where(Poll.status == PollStatus.closed, mine)
        .order_by(col(Poll.closed_at).desc(), col(Poll.id).desc())
        .limit(limit * 3)  # some in the units above a home may be for others (owners only)
    )
    found: list[Poll] = []
    for poll, unit in (await session.exec(query)).all():
        if len(found) == limit:
            break
        if not auth.covers(unit):
            try:
                await slots_for(session, poll, person_id=auth.person_id, unit=unit)
            except NotAllowed:
                continue
        found.append(poll)
    return found


async def may_export(session: AsyncSession, poll: Poll, *, auth: Authority) -> None:
    """Refuses (NotAllowed) unless this person leads the poll's unit or could vote in it."""
    unit = await get_unit(session, poll.unit_id)
    if not auth.covers(unit):
        await slots_for(session, poll, person_id=auth.person_id, unit=unit)


async def led_polls(
    session: AsyncSession, *, auth: Authority, now: datetime, limit: int = 10
) -> list[Poll]:
    """Polls in the units this lead covers: open ones, and those closed in the last 30 days."""
    within = auth.covering()
    if within is None:
        return []
    query = select(Poll).join(Unit, col(Unit.id) == col(Poll.unit_id)).where(within)
    query = query.where(col(Poll.closes_at) > now - timedelta(days=30))
    found = await session.exec(query.order_by(col(Poll.closes_at).desc()).limit(limit))
    return list(found.all())


# --- lead actions ----------------------------------------------------------------------


def _reason(text: str) -> str:
    return one_line(text, limit=200, low=2, error="poll_reason_length")


async def extend(
    session: AsyncSession,
    *,
    auth: Authority,
    poll_id: int,
    closes_at: datetime,
    reason: str,
    now: datetime,
) -> Poll:
    poll = await get_poll(session, poll_id, lock=True)
    require(auth, await get_unit(session, poll.unit_id))
    if poll.status == PollStatus.closed:
        raise Conflict("poll_closed")
    if closes_at <= now or closes_at <= poll.opens_at:
        raise InvalidInput("poll_closes_in_past")
    if closes_at <= poll.closes_at:
        raise InvalidInput("poll_extend_later")
    poll.changed_reason = _reason(reason)
    poll.closes_at = closes_at
    await session.flush()
    await outbox.mark_changed(session, kind=CARD, subject_id=poll_id, now=now)
    return poll


# --- closing and results ---------------------------------------------------------------


async def ballot_lines(
    session: AsyncSession, poll: Poll, the_roll: Roll
) -> tuple[list[str], list[CountedBallot]]:
    """The canonical lines `area,choices` (area from the roll for named area-weighted polls,
    else 0), and the same ballots grouped by choices for counting."""
    conn = await session.connection()
    rows = (
        await conn.execute(select(Ballot.ref, Ballot.choices).where(Ballot.poll_id == poll.id))
    ).all()
    weighted = poll.area_weighted and not poll.anonymous
    area_of = the_roll.area
    lines: list[str] = []
    grouped: dict[str, list[int]] = {}
    for ref, choices in rows:
        area = area_of.get(ref, 0) if weighted else 0
        lines.append(f"{area},{choices}")
        entry = grouped.get(choices)
        if entry is None:
            grouped[choices] = [1, area]
        else:
            entry[0] += 1
            entry[1] += area
    ballots = [CountedBallot(a, decode(c), heads=n) for c, (n, a) in grouped.items()]
    return lines, ballots


@dataclass(frozen=True)
class Tallied:
    poll: Poll
    options: list[PollOption]
    result: Result
    text: str  # the canonical ballot list
    digest: str


@contextmanager
def _collector_paused() -> Iterator[None]:
    """CPython's cyclic garbage collector paused while a tally reads and counts its rows. The
    200,000 row tuples of a 100,000-flat tally, alive at once, made its full collections cost
    as much as the tally itself (measured on PostgreSQL: 1.05-1.20 s with, 0.40-0.67 s
    without). Rows form no cycles; collection resumes right after (also on an error)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


async def tally(session: AsyncSession, poll: Poll) -> Tallied:
    assert poll.id is not None
    options = await options_of(session, poll.id)
    with _collector_paused():
        return await _tally(session, poll, options)


async def _tally(session: AsyncSession, poll: Poll, options: list[PollOption]) -> Tallied:
    assert poll.id is not None
    the_roll = await roll(session, poll, with_people=False)
    lines, ballots = await ballot_lines(session, poll, the_roll)
    result = count(
        method=poll.method,
        options=len(options),
        ballots=ballots,
        electorate=the_roll.electorate,
        rule=poll.decision_rule,
        weights=poll.weight_list or DEFAULT_WEIGHTS,
        by_area=poll.area_weighted,
    )
    text = canonical_text(
        poll_id=poll.id,
        method=poll.method,
        weights=poll.weight_list,
        options=len(options),
        area=poll.area_weighted,
        lines=lines,
    )
    return Tallied(poll, options, result, text, digest(text))


async def local_time(session: AsyncSession, community_id: int, moment: datetime) -> str:
    """A moment as the community reads it (outbox contexts hold plain values)."""
    community = await session.get(Community, community_id)
    zone = ZoneInfo(community.timezone if community else "Asia/Shanghai")
    return moment.astimezone(zone).strftime("%Y-%m-%d %H:%M")


def _fraction(value: Fraction) -> str:
    return f"{value.numerator}/{value.denominator}"


def summary(tallied: Tallied) -> dict[str, Any]:
    """The result as plain values (stored on the poll, and the context of the result message)."""
    poll, result = tallied.poll, tallied.result
    labels = {o.number: o.text for o in tallied.options}
    verdict = result.verdict
    return {
        "poll_id": poll.id,
        "question": poll.question,
        "method": poll.method,
        "weights": list(poll.weight_list),
        "counting": poll.counting,
        "owners": poll.counts_owners,
        "by_area": result.by_area,
        "anonymous": poll.anonymous,
        "options": [
            {
                "number": o.number,
                "text": labels[o.number],
                "heads": o.heads,
                "area": o.area,
                "places": o.places,
            }
            for o in result.options
        ],
        "ranked": list(result.ranked),
        "leader": result.leader,
        "tied": list(result.tied),
        "tie_break": result.tie_break,
        "heads": result.heads,
        "area": result.area,
        "eligible": result.electorate.heads,
        "eligible_area": result.electorate.area,
        "missing_area": result.electorate.missing_area,
        "verdict": None
        if verdict is None
        else {
            "rule": verdict.rule.value,
            "passed": verdict.passed,
            "tied": verdict.tied,
            "checks": [
                {
                    "stage": c.stage,
                    "measure": c.measure,
                    "num": c.num,
                    "den": c.den,
                    "threshold": _fraction(c.threshold.fraction),
                    "strict": c.threshold.strict,
                    "passed": c.passed,
                }
                for c in verdict.checks
            ],
        },
        "digest": tallied.digest,
        "reason": poll.changed_reason,
        "closed_early": poll.closed_by is not None,
    }


async def close(
    session: AsyncSession,
    *,
    poll_id: int,
    now: datetime,
    by: int | None = None,
    reason: str = "",
) -> Tallied | None:
    """Close a poll and post its results once (None when it was already closed)."""
    poll = await get_poll(session, poll_id, lock=True)
    if poll.status == PollStatus.closed:
        return None
    if by is None and now < poll.closes_at:
        return None  # extended since it was picked
    poll.status = PollStatus.closed
    poll.closed_at = now
    if by is not None:
        poll.closed_by = by
        poll.changed_reason = reason
    tallied = await tally(session, poll)
    poll.digest = tallied.digest
    poll.result = summary(tallied)
    session.add(PollRecord(poll_id=poll_id, text=tallied.text))
    await session.flush()
    unit = await get_unit(session, poll.unit_id)
    await outbox.enqueue_to_unit(
        session,
        key=f"poll-result:{poll_id}",
        unit=unit,
        subtree_too=True,
        template="polls/result",
        context={"result": poll.result},
        due_at=now,
        now=now,
        photo=CHART,
    )
    await outbox.mark_changed(session, kind=CARD, subject_id=poll_id, now=now)
    return tallied


async def close_early(
    session: AsyncSession, *, auth: Authority, poll_id: int, reason: str, now: datetime
) -> Tallied:
    poll = await get_poll(session, poll_id)
    require(auth, await get_unit(session, poll.unit_id))
    done = await close(session, poll_id=poll_id, now=now, by=auth.person_id, reason=_reason(reason))
    if done is None:
        raise Conflict("poll_closed")
    return done


async def due_to_close(session: AsyncSession, *, now: datetime, limit: int = 100) -> list[int]:
    query = (
        select(Poll.id)
        .where(Poll.status == PollStatus.open, col(Poll.closes_at) <= now)
        .order_by(col(Poll.closes_at), col(Poll.id))
        .limit(limit)
    )
    if session.get_bind().dialect.name == "postgresql":
        # Two processes closing at once share the work instead of queueing on the same rows.
        query = query.with_for_update(skip_locked=True)
    return [int(pid) for pid in (await session.exec(query)).all() if pid is not None]


async def card_view(session: AsyncSession, poll: Poll, *, now: datetime) -> dict[str, Any]:
    """What a poll's card shows, as plain values: never who voted what; totals only when the
    poll shows live results or has closed."""
    assert poll.id is not None
    the_roll = await roll(session, poll, with_people=False)
    seen = await turnout(session, poll, the_roll)
    options = await options_of(session, poll.id)
    result = poll.result
    if result is None and poll.live_results and seen.voted:
        result = summary(await tally(session, poll))
    return {
        "poll_id": poll.id,
        "question": poll.question,
        "description": poll.description,
        "method": poll.method,
        "weights": list(poll.weight_list),
        "max_choices": poll.max_choices,
        "counting": poll.counting,
        "owners": poll.counts_owners,
        "by_area": poll.area_weighted,
        "rule": poll.rule,
        "quorum": poll.quorum,
        "threshold": poll.threshold,
        "strict": poll.threshold_strict,
        "anonymous": poll.anonymous,
        "state": poll.state(now),
        "opens": await local_time(session, poll.community_id, poll.opens_at),
        "closes": await local_time(session, poll.community_id, poll.closes_at),
        "options": [o.text for o in options],
        "voted": seen.voted,
        "eligible": seen.eligible,
        "area_voted": seen.area_voted,
        "area_total": seen.area_total,
        "missing_area": seen.missing_area,
        "reason": poll.changed_reason,
        "result": result,
    }


async def close_due(session: AsyncSession, *, now: datetime, limit: int = 1000) -> int:
    """Close the polls whose time is up (results posted once each); how many closed."""
    closed = 0
    for poll_id in await due_to_close(session, now=now, limit=limit):
        if await close(session, poll_id=poll_id, now=now) is not None:
            closed += 1
    return closed


# --- reminders -------------------------------------------------------------------------


async def remind_due(session: AsyncSession, *, now: datetime, limit: int = 50) -> int:
    """Remind eligible non-voters privately before closing, once per closing time."""
    query = (
        select(Poll)
        .where(
            Poll.status == PollStatus.open,
            col(Poll.remind_minutes) > 0,
            col(Poll.closes_at) > now,
            col(Poll.opens_at) <= now,
        )
        .order_by(col(Poll.closes_at))
    )
    sent = 0
    polls = [
        p
        for p in (await session.exec(query)).all()
        if p.reminded_for != p.closes_at
        and p.closes_at - timedelta(minutes=p.remind_minutes) <= now
    ][:limit]
    for poll in polls:
        sent += await remind(session, poll, now=now)
        poll.reminded_for = poll.closes_at
    await session.flush()
    return sent


async def remind(session: AsyncSession, poll: Poll, *, now: datetime) -> int:
    the_roll = await roll(session, poll)
    voted = set(
        (await session.exec(select(PollVoter.slot).where(PollVoter.poll_id == poll.id))).all()
    )
    added = 0
    stamp = int(poll.closes_at.timestamp())
    closes = await local_time(session, poll.community_id, poll.closes_at)
    for person_id, slots in sorted(the_roll.people.items()):
        if slots <= voted:
            continue
        added += await outbox.enqueue_private(
            session,
            key=f"poll-remind:{poll.id}:{stamp}:{person_id}",
            person_id=person_id,
            community_id=poll.community_id,
            template="polls/reminder",
            context={
                "poll_id": poll.id,
                "question": poll.question,
                "closes": closes,
            },
            now=now,
            priority=outbox.Priority.reminder,
        )
    return added


# --- export ----------------------------------------------------------------------------

EXPORT_HEADER = ["area", "choices"]


async def export_rows(session: AsyncSession, poll: Poll) -> list[list[str]]:
    """The closed poll's canonical ballot list as CSV rows `area, choices` (no identities)."""
    if poll.status != PollStatus.closed:
        raise Conflict("poll_export_open")
    record = await session.get(PollRecord, poll.id)
    assert record is not None
    return [text.split(",", 1) for text in record.text.splitlines()[1:]]


async def record_text(session: AsyncSession, poll: Poll) -> str:
    record = await session.get(PollRecord, poll.id)
    if record is None:
        raise Conflict("poll_export_open")
    return record.text


async def roll_call(session: AsyncSession, poll: Poll) -> list[list[str]]:
    """A named poll's ballots with who cast them (leads only; never for anonymous polls)."""
    if poll.anonymous:
        raise NotAllowed("poll_anonymous_export")
    rows = await session.exec(
        select(PollVoter, Ballot.choices)
        .join(
            Ballot,
            (col(Ballot.poll_id) == col(PollVoter.poll_id))
            & (col(Ballot.ref) == col(PollVoter.slot)),
        )
        .where(PollVoter.poll_id == poll.id)
        .order_by(col(PollVoter.slot))
    )
    return [[v.slot, str(v.person_id), str(v.proxy_by or ""), choices] for v, choices in rows.all()]


# --- a lead's draft (/newpoll, a guided flow of kind "poll") -------------------------------

QUESTION_LIMIT = 200
DESCRIPTION_LIMIT = 1000
OPTION_LIMIT = 100
REMIND_HOURS = (24, 48, 0)  # the reminder choices on the draft screen; 0: none
QUORUMS = ("", "1/2", "2/3", "3/4")


def draft_defaults() -> dict[str, Any]:
    """A new draft: what a lead who taps straight through gets (a consultation, one ballot per
    person, named, results after closing, a reminder a day before)."""
    return {
        "method": None,
        "weights": "5-3-1",
        "max_choices": 1,
        "counting": Counting.person,  # or "household", or "area" (household by floor area)
        "owners": False,
        "rule": Rule.none,
        "quorum": "",
        "threshold": "",
        "strict": False,
        "anonymous": False,
        "live": False,
        "remind": 24,
        "options": [],  # [{"t": text, "p": proposal id or None}]
    }


def clean_question(text: str) -> str:
    return one_line(text, limit=QUESTION_LIMIT, low=2, error="poll_question_length")


def clean_description(text: str) -> str:
    return paragraphs(text, limit=DESCRIPTION_LIMIT, error="poll_description_length")


def clean_option(text: str) -> str:
    return one_line(text, limit=OPTION_LIMIT, low=0, error="poll_option_length")


async def add_draft_options(
    session: AsyncSession, flow: Flow, lines: Sequence[str], *, now: datetime
) -> list[Any]:
    """Options typed one per line, added after those in the draft: all of them or none (a line
    too long, one already there, more than MAX_OPTIONS in all: refused, nothing added)."""
    have = list(flow.data.get("options", []))
    seen = {str(o["t"]).casefold() for o in have}
    new: list[str] = []
    for line in lines:
        option = clean_option(line)
        if not option:
            continue
        if option.casefold() in seen:
            raise InvalidInput("poll_duplicate_option")
        seen.add(option.casefold())
        new.append(option)
    if not new:
        raise InvalidInput("poll_too_few_options")
    if len(have) + len(new) > MAX_OPTIONS:
        raise InvalidInput("poll_too_many_options", limit=MAX_OPTIONS)
    for option in new:
        have = await flows.append(
            session, flow, key="options", value={"t": option, "p": None}, limit=MAX_OPTIONS,
            now=now,
        )  # fmt: skip
    return have


async def remove_draft_option(
    session: AsyncSession, flow: Flow, number: int, *, now: datetime
) -> None:
    options = list(flow.data.get("options", []))
    if not 1 <= number <= len(options):
        raise InvalidInput("stale_button")
    await flows.remove(session, flow, key="options", value=options[number - 1], now=now)


def draft_setting(what: str, value: str, *more: str) -> dict[str, Any]:
    """A draft screen button's value as draft fields; anything else is a stale or forged button."""
    if what == "c" and value in (Counting.person, Counting.household, "area"):
        return {"counting": value}
    if what in ("o", "a", "l") and value in ("0", "1"):
        return {{"o": "owners", "a": "anonymous", "l": "live"}[what]: value == "1"}
    if what == "r" and value in tuple(Rule):
        return {"rule": value}
    if what == "rh" and value.isdigit() and int(value) in REMIND_HOURS:
        return {"remind": int(value)}
    if what == "q" and value.replace("_", "/") in QUORUMS:
        return {"rule": Rule.custom, "quorum": value.replace("_", "/")}
    if what == "t" and more and more[0] in ("0", "1"):
        try:
            threshold = Fraction(value.replace("_", "/"))
        except (ValueError, ZeroDivisionError):
            raise InvalidInput("stale_button") from None
        check_fraction(threshold)
        return {"rule": Rule.custom, "threshold": str(threshold), "strict": more[0] == "1"}
    raise InvalidInput("stale_button")


def parse_rule(text: str) -> tuple[str, str, bool]:
    """A custom rule typed as 'quorum approval' ("60% 55%", "2/3 >1/2", "0 50%"): the quorum
    (empty for none), the approval threshold, and whether it is "more than" (a leading >)."""
    parts = text.replace("，", " ").replace(",", " ").split()
    if len(parts) != 2:
        raise InvalidInput("poll_rule_format")
    strict = parts[1].startswith(">")
    try:
        quorum = parse_fraction(parts[0])
        threshold = parse_fraction(parts[1].lstrip(">≥="))
    except (ValueError, ZeroDivisionError):
        raise InvalidInput("poll_rule_format") from None
    check_fraction(quorum)
    check_fraction(threshold)
    return ("" if quorum == 0 else str(quorum)), str(threshold), strict


def _moment(value: Any) -> datetime | None:
    if isinstance(value, dict) and value.get("start"):
        return datetime.fromisoformat(str(value["start"]))
    return None


def draft_spec(data: dict[str, Any], *, now: datetime) -> PollSpec:
    """The draft as a checked PollSpec; raises the first problem (a DomainError)."""
    if not data.get("question"):
        raise InvalidInput("poll_question_length", limit=QUESTION_LIMIT)
    if data.get("unit_id") is None:
        raise InvalidInput("poll_no_unit")
    if data.get("method") is None:
        raise InvalidInput("poll_no_method")
    closes = _moment(data.get("closes"))
    if closes is None:
        raise InvalidInput("poll_no_closing")
    if data.get("rule") == Rule.custom and not data.get("threshold"):
        raise InvalidInput("poll_no_threshold")
    counting = data.get("counting", Counting.person)
    options = list(data.get("options", []))
    spec = PollSpec(
        unit_id=int(data["unit_id"]),
        question=str(data["question"]),
        description=str(data.get("description", "")),
        options=[str(o["t"]) for o in options],
        proposal_ids=[o.get("p") for o in options] if any(o.get("p") for o in options) else [],
        opens_at=max(_moment(data.get("opens")) or now, now),
        closes_at=closes,
        method=str(data["method"]),
        max_choices=int(data.get("max_choices", 1)),
        weights=parse_weights(str(data.get("weights", "5-3-1"))),
        counting=Counting.person if counting == Counting.person else Counting.household,
        area_weighted=counting == "area",
        owners_only=bool(data.get("owners")),
        rule=str(data.get("rule", Rule.none)),
        quorum=Fraction(data["quorum"]) if data.get("quorum") else None,
        threshold=Fraction(data["threshold"]) if data.get("threshold") else None,
        threshold_strict=bool(data.get("strict")),
        anonymous=bool(data.get("anonymous")),
        live_results=bool(data.get("live")),
        remind_before=timedelta(hours=int(data.get("remind", 24))),
    )
    return check_spec(spec, now=now)


async def draft_unit(session: AsyncSession, flow: Flow) -> Unit:
    unit_id = flow.data.get("unit_id")
    if unit_id is None:
        raise InvalidInput("stale_button")
    return await get_unit(session, int(unit_id))


async def draft_preview(session: AsyncSession, flow: Flow, *, now: datetime) -> dict[str, Any]:
    """The draft as its card will look (same values as `card_view`), who could vote today, the
    households with no recorded area, and the first problem that keeps it from being posted."""
    data = flow.data
    problem: str | None = None
    params: dict[str, Any] = {}
    try:
        spec = draft_spec(dict(data), now=now)
    except DomainError as refused:
        problem, params = refused.key, dict(refused.params)
        spec = None
    unit = await get_unit(session, int(data["unit_id"])) if data.get("unit_id") else None
    method = str(data.get("method") or Method.single)
    counting = data.get("counting", Counting.person)
    shown = Poll(
        community_id=unit.community_id if unit else 0,
        unit_id=(unit.id or 0) if unit else 0,
        question=str(data.get("question", "")),
        method=method,
        counting=spec.counting if spec else (Counting.person if counting == Counting.person
                                             else Counting.household),
        area_weighted=spec.area_weighted if spec else counting == "area",
        owners_only=spec.owners_only if spec else bool(data.get("owners")),
        opens_at=now,
        closes_at=now,
        created_by=flow.owner_id,
        created_at=now,
    )  # fmt: skip
    eligible = area_total = missing = 0
    if unit is not None:
        the_roll = await roll(session, shown, unit, with_people=False)
        eligible, area_total = the_roll.electorate.heads, the_roll.electorate.area
        missing = the_roll.electorate.missing_area
    opens = spec.opens_at if spec else _moment(data.get("opens"))
    closes = spec.closes_at if spec else _moment(data.get("closes"))
    community_id = unit.community_id if unit else flow.community_id
    return {
        "card": {
            "poll_id": None,
            "question": shown.question,
            "description": str(data.get("description", "")),
            "method": method,
            "weights": list(spec.weights)
            if spec
            else [int(w) for w in str(data.get("weights", "5-3-1")).split("-")],
            "max_choices": int(data.get("max_choices", 1)),
            "counting": shown.counting,
            "owners": shown.counts_owners,
            "by_area": shown.area_weighted,
            "rule": spec.rule if spec else str(data.get("rule", Rule.none)),
            "quorum": _fraction(spec.quorum) if spec and spec.quorum else "",
            "threshold": _fraction(spec.threshold) if spec and spec.threshold else "",
            "strict": bool(spec.threshold_strict) if spec else False,
            "anonymous": bool(data.get("anonymous")),
            "state": "scheduled" if opens and opens > now else "open",
            "opens": await local_time(session, community_id, opens)
            if opens and community_id
            else "",
            "closes": await local_time(session, community_id, closes)
            if closes and community_id
            else "",
            "options": [str(o["t"]) for o in data.get("options", [])]
            if method != Method.yesno
            else ["yes", "no", "abstain"],
            "voted": 0,
            "eligible": eligible,
            "area_voted": 0,
            "area_total": area_total,
            "missing_area": missing if shown.area_weighted else 0,
            "reason": "",
            "result": None,
        },
        "unit": unit.name if unit else None,
        "live": bool(data.get("live")),
        "remind": int(data.get("remind", 24)),
        "problem": problem,
        "params": params,
    }


async def create_from_draft(
    session: AsyncSession, *, auth: Authority, flow: Flow, now: datetime
) -> Poll:
    """Post the draft (the flow's confirm calls this once)."""
    return await create_poll(session, auth=auth, spec=draft_spec(dict(flow.data), now=now), now=now)


async def card_chats(session: AsyncSession, poll: Poll) -> int:
    """How many chats the poll's card goes to."""
    rows = await session.exec(
        select(outbox.Delivery.id).where(
            outbox.Delivery.card == outbox.card_of(CARD, poll.id or 0),
            col(outbox.Delivery.edits).is_(None),
        )
    )
    return len(rows.all())
