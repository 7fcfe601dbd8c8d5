"""The neighbour bank's earning rules, limits, and awards and deductions made tap by tap.

Points move only through `models.ledger.post`; what a resident sees (balance, boards, the books)
is in `models.standings`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy import (
    UniqueConstraint,
)
from sqlmodel import Field, SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from models import catalog, flows, outbox
from models.base import UTCDateTime, dialect_insert
from models.errors import Conflict, InvalidInput, NotAllowed, NotFound
from models.flows import Flow, FlowStatus
from models.ledger import (
    REASON_LIMIT,
    Kind,
    LedgerEntry,
    balance,
    post,
)
from models.people import (
    Authority,
    Can,
    Community,
    Household,
    Person,
    Resident,
    ResidentStatus,
    Unit,
    clean_name,
    get_community,
    get_unit,
    one_line,
    require,
    require_can,
)

DEFAULT_MAX_AWARD = 100
RULE_NAME_LIMIT = 40
RULE_POINTS_LIMIT = 1_000
MAX_AWARD_LIMIT = 10_000
DRAFT_KINDS = (Kind.award, Kind.deduct, Kind.correct)
MAX_PICKED = 50  # residents in one award: one event's helpers, not a whole building
WELCOME = "welcome"


class Per(StrEnum):
    event = "event"
    hour = "hour"


class DraftStatus(StrEnum):
    open = "open"
    done = "done"
    cancelled = "cancelled"


# --- tables -------------------------------------------------------------------------------


class EarningRule(SQLModel, table=True):
    """What a kind of work earns in one community; admins change the points or turn it off."""

    __table_args__ = (UniqueConstraint("community_id", "code"),)
    id: int | None = Field(default=None, primary_key=True)
    community_id: int = Field(foreign_key="community.id")
    code: str = Field(max_length=32)
    name_zh: str = Field(max_length=RULE_NAME_LIMIT)
    name_en: str = Field(max_length=RULE_NAME_LIMIT)
    points: int
    per: str = Field(default=Per.event, max_length=8)
    active: bool = True
    created_at: datetime = Field(sa_type=UTCDateTime)
    updated_at: datetime = Field(sa_type=UTCDateTime)

    def name(self, lang: str) -> str:
        return self.name_en if lang == "en" else self.name_zh


class PointPolicy(SQLModel, table=True):
    """A community's limits; a community without a row has the defaults."""

    community_id: int = Field(primary_key=True, foreign_key="community.id")
    max_award: int = DEFAULT_MAX_AWARD  # one award above this is a typo (5000 for 50)
    updated_at: datetime = Field(sa_type=UTCDateTime)


# --- earning rules and limits -------------------------------------------------------------


@dataclass(frozen=True)
class DefaultRule:
    code: str
    name_zh: str
    name_en: str
    points: int
    per: Per = Per.event


DEFAULT_RULES = (
    DefaultRule("task", "志愿服务", "Volunteer task", 10),
    DefaultRule("task_hour", "志愿服务（每小时）", "Volunteer hour", 5, Per.hour),
    DefaultRule("report", "问题上报被采纳", "Accepted problem report", 3),
    DefaultRule(WELCOME, "新邻居欢迎积分", "Welcome credit", 5),
    DefaultRule("garbage", "垃圾分类", "Garbage sorting", 2),
    DefaultRule("patrol", "巡逻", "Patrol", 5),
)
# The kind an entry from a rule gets, so the boards and statements can tell work apart.
RULE_KINDS = {
    "task": Kind.task,
    "task_hour": Kind.task,
    "report": Kind.report,
    WELCOME: Kind.welcome,
}


def _default_rows(community_id: int, now: datetime) -> list[EarningRule]:
    return [
        EarningRule(community_id=community_id, created_at=now, updated_at=now, **asdict(d))
        for d in DEFAULT_RULES
    ]


async def rules(
    session: AsyncSession, *, community_id: int, now: datetime, active_only: bool = False
) -> list[EarningRule]:
    """The community's rules in the order they were made; the defaults (unsaved) until an admin
    first changes one, so reading never writes."""
    return await catalog.entries(
        session, EarningRule, _default_rows, community_id=community_id, now=now,
        order=[col(EarningRule.id)], active_only=active_only,
    )  # fmt: skip


async def rule(
    session: AsyncSession, *, community_id: int, code: str, now: datetime
) -> EarningRule:
    for found in await rules(session, community_id=community_id, now=now):
        if found.code == code:
            return found
    raise NotFound("points_rule_not_found")


def require_admin(auth: Authority, community: Community) -> None:
    require_can(auth, Can.admin_community, community=community)


def _whole_number(value: int | str, *, low: int, high: int, error: str) -> int:
    """A typed or tapped number as an int in [low, high], else the named InvalidInput."""
    if isinstance(value, str):
        text = value.strip().translate(_FULL_WIDTH_DIGITS).removeprefix("+")
        if not text.isascii() or not text.isdigit():
            raise InvalidInput(error, low=low, high=high)
        value = int(text)
    if isinstance(value, bool) or value < low or value > high:
        raise InvalidInput(error, low=low, high=high)
    return value


_FULL_WIDTH_DIGITS = str.maketrans("０１２３４５６７８９＋", "0123456789+")


async def edit_rule(
    session: AsyncSession,
    *,
    auth: Authority,
    community_id: int,
    code: str,
    now: datetime,
    points: int | str | None = None,
    active: bool | None = None,
) -> EarningRule:
    """An admin changes what a rule earns, or turns it on or off."""
    require_admin(auth, await get_community(session, community_id))
    if points is not None:
        points = _whole_number(
            points, low=1, high=RULE_POINTS_LIMIT, error="points_bad_rule_points"
        )
    return await catalog.edit(
        session, EarningRule, _default_rows, community_id=community_id, code=code, now=now,
        missing=NotFound("points_rule_not_found"), points=points, active=active,
    )  # fmt: skip


async def add_rule(
    session: AsyncSession, *, auth: Authority, community_id: int, name: str, now: datetime
) -> EarningRule:
    """A custom rule (patrol of the north gate, stairwell clearing…) worth 1 point until set."""
    require_admin(auth, await get_community(session, community_id))
    name = clean_name(name, limit=RULE_NAME_LIMIT)

    def make(code: str, _count: int) -> EarningRule:
        return EarningRule(
            community_id=community_id, code=code, name_zh=name, name_en=name, points=1,
            created_at=now, updated_at=now,
        )  # fmt: skip

    return await catalog.add(
        session, EarningRule, _default_rows, community_id=community_id, name=name, now=now,
        taken="points_rule_exists", make=make,
    )  # fmt: skip


async def max_award(session: AsyncSession, *, community_id: int) -> int:
    policy = await session.get(PointPolicy, community_id)
    return policy.max_award if policy is not None else DEFAULT_MAX_AWARD


async def set_max_award(
    session: AsyncSession, *, auth: Authority, community_id: int, value: int | str, now: datetime
) -> int:
    require_admin(auth, await get_community(session, community_id))
    amount = _whole_number(value, low=1, high=MAX_AWARD_LIMIT, error="points_bad_max")
    values = {"max_award": amount, "updated_at": now}
    statement = (
        dialect_insert(session)(PointPolicy)
        .values(community_id=community_id, **values)
        .on_conflict_do_update(index_elements=["community_id"], set_=values)
    )
    await session.exec(statement)
    return amount


async def earn(
    session: AsyncSession,
    *,
    community_id: int,
    person_id: int,
    rule_code: str,
    key: str,
    by: int | None,
    now: datetime,
    units: int = 1,
) -> LedgerEntry | None:
    """Credit what a rule earns (times `units`, e.g. hours); None if the rule is off or this key
    was credited already. For features that reward work (tasks attended, reports accepted)."""
    found = await rule(session, community_id=community_id, code=rule_code, now=now)
    if not found.active or units < 1:
        return None
    community = await get_community(session, community_id)
    return await post(
        session,
        community_id=community_id,
        person_id=person_id,
        amount=found.points * units,
        key=key,
        reason=found.name(community.language),
        kind=RULE_KINDS.get(rule_code, Kind.award),
        by=by,
        now=now,
        rule_code=rule_code,
    )


async def welcome(
    session: AsyncSession, *, community_id: int, person_id: int, now: datetime
) -> LedgerEntry | None:
    """The welcome credit of a newly verified resident: once per person per community, ever."""
    return await earn(
        session,
        community_id=community_id,
        person_id=person_id,
        rule_code=WELCOME,
        key=f"welcome:{community_id}:{person_id}",
        by=None,
        now=now,
    )


# --- who may be awarded ---------------------------------------------------------------------


async def home_of(
    session: AsyncSession, *, community_id: int, person_id: int
) -> tuple[Household, Unit] | None:
    """A verified resident's household and its unit (None for anyone else)."""
    row = (
        await session.exec(
            select(Household, Unit)
            .join(Resident, col(Resident.household_id) == col(Household.id))
            .join(Unit, col(Unit.id) == col(Household.unit_id))
            .where(
                Resident.community_id == community_id,
                Resident.person_id == person_id,
                Resident.status == ResidentStatus.verified,
            )
        )
    ).first()
    return (row[0], row[1]) if row is not None else None


async def check_awardable(
    session: AsyncSession, *, auth: Authority, community_id: int, person_id: int, within: Unit
) -> Unit:
    """The resident's unit, if they live under `within` and the lead covers it.

    One refusal for every case, so a forged button learns nothing about who lives where. Leads
    do not award themselves: another lead (or a super-admin) vouches for their work.
    """
    if person_id == auth.person_id and not auth.superadmin:
        raise NotAllowed("points_own_award")
    home = await home_of(session, community_id=community_id, person_id=person_id)
    if home is None or not home[1].path.startswith(within.path) or not auth.covers(home[1]):
        raise NotAllowed("points_not_your_resident")
    return home[1]


# --- awards and deductions, tap by tap ------------------------------------------------------

AWARD = "award"  # the flow kind of every award, deduction and correction draft


@dataclass
class AwardDraft:
    """An award (deduction, correction) a lead is putting together, tap by tap: a view of its
    guided flow (models.flows, kind "award"), which keeps it until it is saved once."""

    id: int
    community_id: int
    unit_id: int
    lead_id: int
    kind: str  # award | deduct | correct
    person_ids: list[int]
    amount: int | None
    rule_code: str | None
    reason: str
    status: str  # open | done | cancelled

    @classmethod
    def of(cls, flow: Flow) -> AwardDraft:
        data = flow.data
        status = {FlowStatus.open: DraftStatus.open, FlowStatus.confirmed: DraftStatus.done}
        assert flow.id is not None
        return cls(
            id=flow.id,
            community_id=flow.community_id or 0,
            unit_id=int(data.get("unit_id") or 0),
            lead_id=flow.owner_id,
            kind=str(data.get("kind", Kind.award)),
            person_ids=[int(p) for p in data.get("people", [])],
            amount=data.get("amount"),
            rule_code=data.get("rule_code"),
            reason=str(data.get("reason", "")),
            status=status.get(FlowStatus(flow.status), DraftStatus.cancelled),
        )


async def start_draft(
    session: AsyncSession,
    *,
    auth: Authority,
    kind: str,
    now: datetime,
    unit_id: int | None = None,
    person_ids: Sequence[int] = (),
) -> AwardDraft:
    """Begin an award (or deduction) for residents of a unit the lead covers; a correction
    (a deduction that may take a balance below zero) only as a community admin. Without a unit
    the draft waits for one (`set_unit`). A new draft closes the lead's earlier open one."""
    if kind not in DRAFT_KINDS:
        raise InvalidInput("stale_button")
    flow = await flows.start(
        session, kind=AWARD, owner_id=auth.person_id, now=now, private=True, data={"kind": kind}
    )
    if unit_id is not None:
        await _set_unit(session, auth, flow, unit_id, now)
    for person_id in dict.fromkeys(person_ids):
        unit = await get_unit(session, int(flow.data["unit_id"]))
        await check_awardable(
            session, auth=auth, community_id=unit.community_id, person_id=person_id, within=unit
        )
    if person_ids:
        await flows.update(session, flow, now=now, people=list(dict.fromkeys(person_ids)))
    return AwardDraft.of(flow)


async def _set_unit(
    session: AsyncSession, auth: Authority, flow: Flow, unit_id: int, now: datetime
) -> Unit:
    unit = await get_unit(session, unit_id)
    require(auth, unit)
    _require_corrector(auth, str(flow.data.get("kind")), unit)
    if flow.data.get("unit_id") != unit.id:
        flow.community_id = unit.community_id
        await flows.update(session, flow, now=now, unit_id=unit.id, people=[])
    return unit


async def set_unit(
    session: AsyncSession, *, auth: Authority, draft_id: int, unit_id: int, now: datetime
) -> AwardDraft:
    """The unit whose residents the draft is for (another unit: nobody picked yet)."""
    flow = await _flow(session, auth, draft_id, now, lock=True)
    _require_open(flow)
    await _set_unit(session, auth, flow, unit_id, now)
    return AwardDraft.of(flow)


async def _flow(
    session: AsyncSession, auth: Authority, draft_id: int, now: datetime, *, lock: bool
) -> Flow:
    return await flows.load(
        session, flow_id=draft_id, owner_id=auth.person_id, now=now, kind=AWARD, lock=lock
    )


def _require_open(flow: Flow) -> None:
    if flow.status != FlowStatus.open:
        raise Conflict("points_award_closed")


async def get_draft(
    session: AsyncSession, *, auth: Authority, draft_id: int, now: datetime, lock: bool = False
) -> tuple[AwardDraft, Unit]:
    """The lead's own draft and its unit, with the lead's cover of it checked again."""
    draft = AwardDraft.of(await _flow(session, auth, draft_id, now, lock=lock))
    if not draft.unit_id:
        raise InvalidInput("stale_button")
    unit = await get_unit(session, draft.unit_id)
    require(auth, unit)
    _require_corrector(auth, draft.kind, unit)
    return draft, unit


def _require_corrector(auth: Authority, kind: str, unit: Unit) -> None:
    """Corrections may overdraw a balance: community admins only, at every step."""
    if kind == Kind.correct and not auth.may(Can.admin_community, community_id=unit.community_id):
        raise NotAllowed("points_corrections_admins_only")


async def _open_draft(
    session: AsyncSession, *, auth: Authority, draft_id: int, now: datetime
) -> tuple[Flow, AwardDraft, Unit]:
    flow = await _flow(session, auth, draft_id, now, lock=True)
    _require_open(flow)
    draft, unit = await get_draft(session, auth=auth, draft_id=draft_id, now=now)
    return flow, draft, unit


async def set_people(
    session: AsyncSession,
    *,
    auth: Authority,
    draft_id: int,
    person_ids: Sequence[int],
    now: datetime,
) -> AwardDraft:
    """The residents the resident picker chose: each checked (lives under the unit, the lead
    covers them, not the lead), at most MAX_PICKED."""
    flow, draft, unit = await _open_draft(session, auth=auth, draft_id=draft_id, now=now)
    chosen = list(dict.fromkeys(int(p) for p in person_ids))
    if not chosen:
        raise InvalidInput("points_nobody_picked")
    if len(chosen) > MAX_PICKED:
        raise InvalidInput("points_too_many", limit=MAX_PICKED)
    for person_id in chosen:
        await check_awardable(
            session, auth=auth, community_id=draft.community_id, person_id=person_id, within=unit
        )
    await flows.update(session, flow, now=now, people=chosen)
    return AwardDraft.of(flow)


async def set_amount(
    session: AsyncSession, *, auth: Authority, draft_id: int, amount: int | str, now: datetime
) -> AwardDraft:
    """A tapped or typed amount: a whole number from 1 to the community's maximum."""
    flow, draft, _unit = await _open_draft(session, auth=auth, draft_id=draft_id, now=now)
    limit = await max_award(session, community_id=draft.community_id)
    value = _whole_number(amount, low=1, high=limit, error="points_bad_amount")
    await flows.update(session, flow, now=now, amount=value)
    return AwardDraft.of(flow)


async def choose_rule(
    session: AsyncSession,
    *,
    auth: Authority,
    draft_id: int,
    code: str,
    now: datetime,
    with_amount: bool,
) -> AwardDraft:
    """An award for a rule's work: its name is the reason, and (if asked) its points the amount.

    Deductions take no rule: they need a reason in the lead's own words.
    """
    flow, draft, _unit = await _open_draft(session, auth=auth, draft_id=draft_id, now=now)
    if draft.kind != Kind.award:
        raise InvalidInput("stale_button")
    found = await rule(session, community_id=draft.community_id, code=code, now=now)
    if not found.active:
        raise NotFound("points_rule_not_found")
    fields: dict[str, object] = {}
    if with_amount:
        limit = await max_award(session, community_id=draft.community_id)
        if found.points > limit:
            raise InvalidInput("points_bad_amount", low=1, high=limit)
        fields["amount"] = found.points
    community = await get_community(session, draft.community_id)
    await flows.update(
        session,
        flow,
        now=now,
        rule_code=found.code,
        reason=found.name(community.language),
        **fields,
    )
    return AwardDraft.of(flow)


async def set_reason(
    session: AsyncSession, *, auth: Authority, draft_id: int, text: str, now: datetime
) -> AwardDraft:
    flow, _draft, _unit = await _open_draft(session, auth=auth, draft_id=draft_id, now=now)
    reason = one_line(text, limit=REASON_LIMIT, short="points_reason_required")
    await flows.update(session, flow, now=now, rule_code=None, reason=reason)
    return AwardDraft.of(flow)


async def cancel_draft(
    session: AsyncSession, *, auth: Authority, draft_id: int, now: datetime
) -> AwardDraft:
    flow = await _flow(session, auth, draft_id, now, lock=True)
    await flows.cancel(session, flow, now=now)
    return AwardDraft.of(flow)


@dataclass(frozen=True)
class Posted:
    """One resident's entry from a saved award, with their balance after it."""

    person: Person
    entry: LedgerEntry
    balance: int


async def confirm_draft(
    session: AsyncSession, *, auth: Authority, draft_id: int, now: datetime
) -> tuple[AwardDraft, list[Posted], bool]:
    """Save the award: one posting per resident and a private notice to each, in one go.

    Everything is checked again (the lead's cover, each resident, the amount against today's
    maximum). Returns (draft, postings, changed); a second confirmation changes nothing.
    """
    draft, unit = await get_draft(session, auth=auth, draft_id=draft_id, now=now, lock=True)
    if draft.status == DraftStatus.done:
        return draft, [], False
    if draft.status != DraftStatus.open:
        raise Conflict("points_award_closed")
    if not draft.person_ids:
        raise InvalidInput("points_nobody_picked")
    limit = await max_award(session, community_id=draft.community_id)
    if draft.amount is None or not 1 <= draft.amount <= limit:
        raise InvalidInput("points_bad_amount", low=1, high=limit)
    if not draft.reason:
        raise InvalidInput("points_reason_required")
    posted: list[Posted] = []

    async def make(_flow: Flow) -> int:
        posted.extend(await _post_draft(session, auth, draft, unit, now))
        return len(posted)

    flow, changed = await flows.confirm(
        session, flow_id=draft_id, owner_id=auth.person_id, now=now, make=make, kind=AWARD
    )
    return AwardDraft.of(flow), posted, changed


async def _post_draft(
    session: AsyncSession, auth: Authority, draft: AwardDraft, unit: Unit, now: datetime
) -> list[Posted]:
    assert draft.amount is not None
    community = await get_community(session, draft.community_id)
    found_rule = (
        await rule(session, community_id=draft.community_id, code=draft.rule_code, now=now)
        if draft.rule_code
        else None
    )
    lead = await session.get(Person, auth.person_id)
    sign = 1 if draft.kind == Kind.award else -1
    template = {Kind.award: "awarded", Kind.deduct: "deducted", Kind.correct: "corrected"}
    posted: list[Posted] = []
    # In id order, so two awards to the same people lock their accounts in the same order.
    for person_id in sorted(draft.person_ids):
        await check_awardable(
            session, auth=auth, community_id=draft.community_id, person_id=person_id, within=unit
        )
        key = f"{draft.kind}:{draft.id}:{person_id}"
        entry = await post(
            session,
            community_id=draft.community_id,
            person_id=person_id,
            amount=sign * draft.amount,
            key=key,
            reason=draft.reason,
            kind=draft.kind,
            by=auth.person_id,
            now=now,
            rule_code=draft.rule_code,
            auth=auth,
        )
        if entry is None:
            continue  # saved by an earlier attempt that did not finish marking the draft
        person = await session.get(Person, person_id)
        assert person is not None and entry.id is not None
        after = await balance(session, community_id=draft.community_id, person_id=person_id)
        await outbox.enqueue_private(
            session,
            key=f"{draft.kind}:{entry.id}",
            person_id=person_id,
            community_id=draft.community_id,
            template=f"points/{template[Kind(draft.kind)]}",
            context={
                "amount": draft.amount,
                "reason": draft.reason,
                "rule_zh": found_rule.name_zh if found_rule else None,
                "rule_en": found_rule.name_en if found_rule else None,
                "balance": after,
                "community": community.name,
                "by": lead.name if lead is not None else "",
            },
            now=now,
        )
        posted.append(Posted(person, entry, after))
    return posted


async def draft_people(session: AsyncSession, draft: AwardDraft) -> list[Person]:
    if not draft.person_ids:
        return []
    rows = await session.exec(select(Person).where(col(Person.id).in_(draft.person_ids)))
    found = {p.id: p for p in rows.all()}
    return [found[i] for i in draft.person_ids if i in found]


async def flats_of(session: AsyncSession, household_ids: Sequence[int]) -> dict[int, str]:
    """Flat numbers by household, for telling apart two neighbours of the same name."""
    if not household_ids:
        return {}
    rows = await session.exec(
        select(Household.id, Household.flat).where(col(Household.id).in_(set(household_ids)))
    )
    return {int(i): flat for i, flat in rows.all() if i is not None}
