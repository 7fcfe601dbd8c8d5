"""Join requests as leads and residents are told about them, through the outbox.

A person has at most one request per community (one `Resident` row). The leads covering the
flat each get it as a live card in their private chat (kind `REQUEST_CARD`, subject the
resident id): asking for another flat edits those cards instead of sending new ones, a decision
turns every lead's card into "approved/rejected by …", and the resident's answer is a card of
its own (`ANSWER_CARD`) built when it goes. Asking again for the same flat, or within
`COOLDOWN` of a refusal, changes nothing: the person is told they already asked.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from models import outbox, people
from models.outbox import Delivery, Priority, Status
from models.people import Resident, ResidentStatus

REQUEST_CARD = "join"
ANSWER_CARD = "join_answer"
COOLDOWN = timedelta(minutes=10)  # after a refusal, before the same person may ask again


class Asked(StrEnum):
    new = "new"  # the leads are asked
    replaced = "replaced"  # another flat: the leads' cards now show it
    repeated = "repeated"  # the same flat again: nothing sent
    refused_recently = "refused_recently"  # within the cool-down after a refusal
    member = "member"  # already a verified resident of this flat


@dataclass(frozen=True)
class Ask:
    outcome: Asked
    resident: Resident
    leads: int  # leads who have (or are being sent) the request
    asked_at: datetime | None = None  # when the leads were first asked, for "already asked"


async def ask(session: AsyncSession, *, person_id: int, household_id: int, now: datetime) -> Ask:
    """Ask to join a household; the leads covering it get (or see updated) a request card."""
    household = await people.get_household(session, household_id)
    query = select(Resident).where(
        Resident.community_id == household.community_id, Resident.person_id == person_id
    )
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update()  # two taps at once: one asks, the other sees it
    before = (await session.exec(query)).first()
    if (
        before is not None
        and before.status == ResidentStatus.rejected
        and before.decided_at is not None
        and now - before.decided_at < COOLDOWN
    ):
        return Ask(Asked.refused_recently, before, 0, before.decided_at)
    was_pending = before is not None and before.status == ResidentStatus.pending
    asked_at = before.requested_at if was_pending and before is not None else None
    resident, changed = await people.request_join(
        session, person_id=person_id, household_id=household_id, now=now
    )
    assert resident.id is not None
    if resident.status == ResidentStatus.verified:
        return Ask(Asked.member, resident, 0)
    membership = await people.get_membership(session, resident.id)
    leads = await people.leads_covering(session, membership.unit)
    if not changed:
        return Ask(Asked.repeated, resident, await _asked_leads(session, resident.id), asked_at)
    if not was_pending:  # a new round: earlier cards keep what they showed
        await outbox.retire_card(session, kind=REQUEST_CARD, subject_id=resident.id, now=now)
    await outbox.mark_changed(session, kind=REQUEST_CARD, subject_id=resident.id, now=now)
    have = await _card_chats(session, resident.id)
    for lead in leads:
        if lead.id in have or lead.id == person_id:
            continue
        await _post(session, REQUEST_CARD, resident, to=lead.id, now=now, round=now)
    outcome = Asked.replaced if was_pending else Asked.new
    return Ask(outcome, resident, await _asked_leads(session, resident.id))


async def decided(
    session: AsyncSession, *, resident: Resident, now: datetime, answer: bool = True
) -> None:
    """The request was decided by a lead (`answer`: the resident is told), or ended otherwise
    (joined with a code, left): every lead's card shows how it ended."""
    assert resident.id is not None
    await outbox.mark_changed(session, kind=REQUEST_CARD, subject_id=resident.id, now=now)
    if not answer or resident.decided_at is None:
        return
    await _post(
        session, ANSWER_CARD, resident, to=resident.person_id, now=now, round=resident.decided_at
    )


async def _post(
    session: AsyncSession, kind: str, resident: Resident, *, to: int, now: datetime, round: datetime
) -> None:
    """A card about this request in someone's private chat, ahead of routine notices (a
    resident is waiting on it); quiet hours still hold."""
    assert resident.id is not None
    await outbox.post_card(
        session,
        kind=kind,
        subject_id=resident.id,
        chat_id=to,
        person_id=to,
        community_id=resident.community_id,
        now=now,
        round=str(int(round.timestamp())),
        priority=Priority.urgent,
    )


def _live(resident_id: int) -> Any:
    return (
        (col(Delivery.card) == outbox.card_of(REQUEST_CARD, resident_id))
        & col(Delivery.edits).is_(None)
        & col(Delivery.status).in_([Status.pending, Status.sent])
    )


async def _card_chats(session: AsyncSession, resident_id: int) -> set[int]:
    rows = await session.exec(select(Delivery.chat_id).where(_live(resident_id)))
    return set(rows.all())


async def _asked_leads(session: AsyncSession, resident_id: int) -> int:
    return len(await _card_chats(session, resident_id))
