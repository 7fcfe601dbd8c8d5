"""After a poll, the loop (民议、民决、民解、民评): a winning topic becomes a tracked problem report
in one tap, or is carried out by a volunteer task a lead posted; when the report is resolved or
the task held, the topic is done, its card says where it went and the weekly digest counts it.

Its own module: it reads proposals (models/agenda), reports and tasks, and reports already
import the agenda (a report put on it).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from models import flows, outbox, reports, tasks
from models.agenda import CARD, Proposal, ProposalStatus
from models.base import must_get
from models.errors import Conflict, InvalidInput
from models.people import Authority, Unit, get_unit, links_of_units, require
from models.polls import Poll, options_of

# --- after the poll: a task or a report, and done when that is --------------------------

TASK, REPORT = "task", "report"


async def _to_follow_up(session: AsyncSession, *, auth: Authority, proposal_id: int) -> Proposal:
    """A proposal whose poll has closed, locked, for a lead of its unit; not sent on yet (or
    sent on the same way: a repeat finds what it made)."""
    proposal = await must_get(session, Proposal, proposal_id, "proposal_not_found", lock=True)
    require(auth, await get_unit(session, proposal.unit_id))
    if proposal.status == ProposalStatus.done:
        raise Conflict("proposal_done")
    if proposal.status != ProposalStatus.polled or proposal.poll_id is None:
        raise Conflict("proposal_not_polled")
    poll = await session.get(Poll, proposal.poll_id)
    if poll is None or poll.status != "closed":
        raise Conflict("proposal_poll_open")
    return proposal


async def to_report(
    session: AsyncSession, *, auth: Authority, proposal_id: int, now: datetime
) -> tuple[Proposal, reports.Report]:
    """One tap: the proposal becomes a tracked problem report filed by the lead, its title and
    lines as the text (a topic the unit discussed in the open, so the report is public: its
    card goes to the unit's first linked chat; with no chat, it is private to the leads), and
    the proposal shows where it went. A repeated tap finds the same report; a proposal already
    carried out by a task is refused."""
    proposal = await _to_follow_up(session, auth=auth, proposal_id=proposal_id)
    if proposal.outcome and not proposal.outcome.startswith(f"{REPORT}:"):
        raise Conflict("proposal_followed_up")
    links = await links_of_units(session, [proposal.unit_id])
    report, _ = await reports.file(
        session,
        reporter_id=auth.person_id,
        unit_id=proposal.unit_id,
        category="other",
        text=f"{proposal.title}\n{proposal.body}".strip(),
        now=now,
        chat_id=links[0].chat_id if links else None,
        thread_id=links[0].thread_id if links else 0,
        origin_key=f"proposal:{proposal_id}",
    )
    await _went(session, proposal, f"{REPORT}:{report.id}", now=now)
    return proposal, report


async def to_task(
    session: AsyncSession, *, auth: Authority, proposal_id: int, task_id: int, now: datetime
) -> tuple[Proposal, tasks.Task]:
    """The proposal is carried out by a volunteer task the lead posted in its unit (or below):
    the proposal shows it, and is done once the task has been held."""
    proposal = await _to_follow_up(session, auth=auth, proposal_id=proposal_id)
    if proposal.outcome and proposal.outcome != f"{TASK}:{task_id}":
        raise Conflict("proposal_followed_up")
    task = await tasks.get_task(session, task_id)
    unit = await get_unit(session, proposal.unit_id)
    if task.status == tasks.TaskStatus.cancelled or task.community_id != unit.community_id:
        raise InvalidInput("stale_button")
    if not (await get_unit(session, task.unit_id)).path.startswith(unit.path):
        raise InvalidInput("stale_button")
    require(auth, await get_unit(session, task.unit_id))
    await _went(session, proposal, f"{TASK}:{task_id}", now=now)
    return proposal, task


async def may_follow_up(session: AsyncSession, *, auth: Authority, proposal_id: int) -> Proposal:
    """The proposal, when this lead may send it on now (refuses, saying why, otherwise)."""
    proposal = await _to_follow_up(session, auth=auth, proposal_id=proposal_id)
    if proposal.outcome:
        raise Conflict("proposal_followed_up")
    return proposal


def task_draft(proposal: Proposal) -> dict[str, object]:
    """What a /newtask draft for this proposal starts with: its title, and its lines as the
    description (offered to keep, change or drop at the description step)."""
    return {"title": proposal.title[: tasks.TITLE_LIMIT], "near": proposal.unit_id,
            "proposal": proposal.id,
            "description": proposal.body.strip()[: tasks.DESCRIPTION_LIMIT]}  # fmt: skip


async def link_posted_tasks(session: AsyncSession, now: datetime) -> int:
    """A rhythm: a task posted from a proposal's prefilled /newtask draft carries the proposal
    out (the draft remembers the proposal; posting it makes the task)."""
    posted = await session.exec(
        select(flows.Flow).where(
            flows.Flow.kind == TASK,
            flows.Flow.status == flows.FlowStatus.confirmed,
            col(flows.Flow.result_id).is_not(None),
            col(flows.Flow.updated_at) >= now - timedelta(days=1),
        )
    )
    linked = 0
    for flow in posted.all():
        proposal_id = flow.data.get("proposal")
        if not isinstance(proposal_id, int):
            continue
        proposal = await session.get(Proposal, proposal_id)
        if proposal is None or proposal.outcome or proposal.status != ProposalStatus.polled:
            continue
        await _went(session, proposal, f"{TASK}:{flow.result_id}", now=now)
        linked += 1
    return linked


async def tasks_for(
    session: AsyncSession, *, auth: Authority, proposal: Proposal, now: datetime
) -> list[tasks.Task]:
    """The tasks a lead could link a proposal to: not cancelled, not yet over, in its unit's
    tree, on units they lead."""
    unit = await get_unit(session, proposal.unit_id)
    found = await session.exec(
        select(tasks.Task, Unit)
        .join(Unit, col(Unit.id) == col(tasks.Task.unit_id))
        .where(
            col(tasks.Task.status) != tasks.TaskStatus.cancelled,
            col(tasks.Task.ends_at) > now,
            col(Unit.path).startswith(unit.path),
        )
        .order_by(col(tasks.Task.starts_at), col(tasks.Task.id))
        .limit(10)
    )
    return [task for task, task_unit in found.all() if auth.covers(task_unit)]


async def _went(session: AsyncSession, proposal: Proposal, outcome: str, *, now: datetime) -> None:
    if proposal.outcome == outcome:
        return
    proposal.outcome, proposal.updated_at = outcome, now
    await session.flush()
    await outbox.mark_changed(session, kind=CARD, subject_id=proposal.id or 0, now=now)


@dataclass(frozen=True)
class Outcome:
    kind: str  # "task" or "report"
    label: str  # the task's title, or a public report's number (R-12; "" for a private one)
    done: bool


async def outcome_of(session: AsyncSession, proposal: Proposal) -> Outcome | None:
    """Where a proposal went (nothing personal: a task's title, a report's number)."""
    kind, _, ref = (proposal.outcome or "").partition(":")
    if not ref.isdigit():
        return None
    if kind == TASK:
        task = await session.get(tasks.Task, int(ref))
        return Outcome(TASK, task.title, _held(task)) if task else None
    if kind == REPORT:
        report = await session.get(reports.Report, int(ref))
        if report is None:
            return None
        # A private report's number is for its leads, never for the unit's chats.
        public = report.visibility == reports.Visibility.group
        return Outcome(REPORT, report.label if public else "", _resolved(report))
    return None


def _held(task: tasks.Task, now: datetime | None = None) -> bool:
    if task.status == tasks.TaskStatus.cancelled:
        return False
    return task.confirmed_at is not None or (now is not None and task.ends_at <= now)


def _resolved(report: reports.Report) -> bool:
    return report.status == reports.Status.resolved or (
        report.status == reports.Status.closed and report.fixed is not False
    )


async def follow_outcomes(session: AsyncSession, now: datetime) -> int:
    """A rhythm: a proposal whose task has been held (its time is over, or its attendance
    confirmed) or whose report was resolved is done; its card and the weekly digest say so."""
    waiting = (
        await session.exec(
            select(Proposal).where(
                col(Proposal.status) != ProposalStatus.done,
                col(Proposal.status) != ProposalStatus.withdrawn,
                col(Proposal.outcome).is_not(None),
            )
        )
    ).all()
    done = 0
    for proposal in waiting:
        kind, _, ref = (proposal.outcome or "").partition(":")
        finished = False
        if kind == TASK and ref.isdigit():
            task = await session.get(tasks.Task, int(ref))
            finished = task is not None and _held(task, now)
        elif kind == REPORT and ref.isdigit():
            report = await session.get(reports.Report, int(ref))
            finished = report is not None and _resolved(report)
        if finished:
            proposal.status, proposal.updated_at = ProposalStatus.done, now
            await outbox.mark_changed(session, kind=CARD, subject_id=proposal.id or 0, now=now)
            done += 1
    await session.flush()
    return done


async def follow_ups(session: AsyncSession, poll: Poll) -> list[tuple[Proposal, Outcome | None]]:
    """The proposals on a poll's ballot, best placed first, with where each went."""
    assert poll.id is not None
    options = await options_of(session, poll.id)
    ranked = list((poll.result or {}).get("ranked", [])) or [o.number for o in options]
    by_number = {o.number: o.proposal_id for o in options if o.proposal_id}
    found = []
    for number in ranked:
        proposal_id = by_number.get(number)
        proposal = await session.get(Proposal, proposal_id) if proposal_id else None
        if proposal is not None:
            found.append((proposal, await outcome_of(session, proposal)))
    return found
