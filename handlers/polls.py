"""Voting: /polls, the private ballot (deep link `start=poll-<id>` or /vote_<id>), proxies,
closing early, results and the ballot list (/ballots_<id>).

A ballot is built by buttons in the voter's private chat. Each button carries the whole state
of the ballot being built (the picks so far) and the number of ballots the voter's slot had
when the screen was drawn, so a button sets a state, never toggles, and a confirm replayed
after a later ballot is refused. Every tap is checked again on the server (models/polls.py).
"""

from __future__ import annotations

import csv
import io
import re
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from sqlmodel.ext.asyncio.session import AsyncSession
from telegram import InlineKeyboardButton, Update
from telegram.ext import CommandHandler, MessageHandler, filters

from bot import cards, chart, delivery
from bot.context import LinliApp, LinliContext
from bot.db import Database
from bot.ordering import hand_over
from handlers import common, newtask, pickers, prompts
from models import agenda, flows, loop, people, polls
from models.errors import Conflict, InvalidInput, NotAllowed
from models.people import Can, get_unit, require
from models.polls import Poll
from models.tally import Method

LIST_LIMIT = 10
CLOSE_BATCH = 1000  # polls closed per run at most
CLOSE_EVERY = 30.0  # seconds
CLOSE_JOB = "linli-close-polls"


def _picks(text: str) -> tuple[int, ...]:
    if not text:
        return ()
    try:
        return tuple(int(p) for p in text.split("."))
    except ValueError:
        raise InvalidInput("stale_button") from None


def _joined(picks: tuple[int, ...]) -> str:
    return ".".join(map(str, picks))


def _needed(poll: Poll, options: int) -> int:
    """How many picks complete a ballot (multiple: at most this many)."""
    if poll.method == Method.ranking:
        return min(len(poll.weight_list), options)
    if poll.method == Method.multiple:
        return poll.max_choices
    return 1


def _check_partial(poll: Poll, picks: tuple[int, ...], options: int) -> None:
    """A ballot being built: options that exist, no repeats, not more than allowed."""
    if any(not 1 <= p <= options for p in picks) or len(set(picks)) != len(picks):
        raise InvalidInput("stale_button")
    if len(picks) > _needed(poll, options):
        raise InvalidInput("stale_button")


def _complete(poll: Poll, picks: tuple[int, ...], options: int) -> bool:
    if poll.method == Method.multiple:
        return len(picks) >= 1
    return len(picks) == _needed(poll, options)


def _option_label(ctx: LinliContext, poll: Poll, option: polls.Option) -> str:
    if poll.method == Method.yesno:
        return common.label(ctx, "polls", option.text)
    return option.text


async def ballot_view(
    ctx: LinliContext,
    *,
    poll_id: int,
    voter: int,
    household: int,
    picks: tuple[int, ...],
    prefix: str = "vb",
    confirm: str = "vc",
) -> common.View:
    """The ballot screen: what is picked so far, the buttons for the next pick, and Confirm.

    `prefix`/`confirm` are the callback prefixes: the voter's own (vb/vc) or a lead's proxy
    ballot for `voter` (vxb/vxc)."""
    now = ctx.now()
    async with ctx.svc.db.transaction(write=False) as session:
        read = await polls.read_for_ballot(session, poll_id=poll_id, person_id=voter)
        poll, options = read.poll, read.options
        state = poll.state(now)
        if state == "scheduled":
            raise Conflict("poll_not_open_yet")
        if state != "open":
            raise Conflict("poll_closed")
        slots = read.slots(voter)
        casts = 0
        if household:
            slots = [s for s in slots if s.household_id == household]
            if not slots:
                raise NotAllowed("poll_not_your_unit")
        if len(slots) == 1:
            casts = await polls.casts_of(session, poll_id=poll_id, slot=slots[0].slot)
        closes = await polls.local_time(session, poll.community_id, poll.closes_at)
    who = f"{voter}:" if prefix == "vxb" else ""
    if len(slots) > 1:
        buttons = [
            common.button(
                common.label(ctx, "polls", "for_flat", flat=s.flat),
                f"{prefix}:{poll_id}:{who}{s.household_id}:0:",
            )
            for s in slots
        ]
        return common.View(
            "polls/choose_household",
            {"question": poll.question},
            common.keyboard(common.rows_of(buttons, 2)),
        )
    _check_partial(poll, picks, len(options))
    here = f"{prefix}:{poll_id}:{who}{household}:{casts}"
    rows: list[list[InlineKeyboardButton]] = []
    complete = _complete(poll, picks, len(options))
    for option in options:
        text = _option_label(ctx, poll, option)
        if poll.method == Method.multiple:
            on = option.number in picks
            state_after = (
                tuple(p for p in picks if p != option.number)
                if on
                else ((*picks, option.number) if len(picks) < poll.max_choices else None)
            )
            if state_after is None:
                continue
            mark = "✅ " if on else "▫️ "
            rows.append(
                [common.button(mark + text, f"{here}:{_joined(tuple(sorted(state_after)))}")]
            )
        elif option.number not in picks and not complete:
            rows.append([common.button(text, f"{here}:{_joined((*picks, option.number))}")])
    if complete:
        rows.append(
            [
                common.button(
                    common.label(ctx, "polls", "confirm"),
                    f"{confirm}:{poll_id}:{who}{household}:{casts}:{_joined(picks)}",
                )
            ]
        )
    if picks:
        rows.append([common.button(common.label(ctx, "polls", "start_over"), f"{here}:")])
    by_number = {o.number: _option_label(ctx, poll, o) for o in options}
    return common.View(
        "polls/ballot",
        {
            "poll": poll,
            "closes": closes,
            "picked": [by_number[p] for p in picks],
            "places": list(poll.weight_list[: len(options)])
            if poll.method == Method.ranking
            else [],
            "voted": casts > 0,
            "complete": complete,
            "proxy": prefix == "vxb",
        },
        common.keyboard(rows),
    )


async def open_ballot(update: Update, ctx: LinliContext, poll_id: int) -> None:
    if not common.is_private(update):
        payload = f"poll-{poll_id}"
        await common.offer_private(
            update, ctx, payload, feature="polls", offer="vote_privately", key="vote"
        )
        return
    view = await ballot_view(
        ctx, poll_id=poll_id, voter=common.user_id(update), household=0, picks=()
    )
    await common.show(update, ctx, view)


async def cmd_start(update: Update, ctx: LinliContext) -> None:
    payload = ctx.args[0] if ctx.args else ""
    if payload == "polls":
        await cmd_polls(update, ctx)
        return
    if payload.startswith("ballots-"):
        await send_ballots(update, ctx, common.as_int(payload.removeprefix("ballots-")))
        return
    await open_ballot(update, ctx, common.as_int(payload.removeprefix("poll-")))


async def cmd_vote(update: Update, ctx: LinliContext) -> None:
    """/vote_12 (tappable in reminders and announcements) or /vote 12."""
    message = update.effective_message
    text = message.text if message and message.text else ""
    found = re.match(r"^/vote(?:@\w+)?(?:_|\s+)(\d+)", text)
    if found is None:
        await cmd_polls(update, ctx)
        return
    await open_ballot(update, ctx, int(found.group(1)))


async def btn_build(update: Update, ctx: LinliContext) -> None:
    poll_id, household, _casts, picks = common.callback_args(update, "vb", 4)
    view = await ballot_view(
        ctx,
        poll_id=common.as_int(poll_id),
        voter=common.user_id(update),
        household=common.as_int(household),
        picks=_picks(picks),
    )
    await common.show(update, ctx, view)


async def btn_confirm(update: Update, ctx: LinliContext) -> None:
    poll_id, household, casts, picks = common.callback_args(update, "vc", 4)
    await _cast(update, ctx, poll_id, household, casts, picks, voter=common.user_id(update))


async def _cast(
    update: Update,
    ctx: LinliContext,
    poll_id: str,
    household: str,
    casts: str,
    picks: str,
    *,
    voter: int,
    proxy: bool = False,
) -> None:
    now = ctx.now()
    key = ctx.svc.settings.ballot_key
    async with ctx.svc.db.transaction() as session:
        done = await polls.cast(
            session,
            poll_id=common.as_int(poll_id),
            person_id=voter,
            choices=_picks(picks),
            now=now,
            ballot_key=key,
            household_id=common.as_int(household) or None,
            proxy=await common.load_auth(session, ctx, update) if proxy else None,
            expect_casts=common.as_int(casts),
        )
    hand_over()
    by_number = {o.number: _option_label(ctx, done.poll, o) for o in done.options}
    view = common.View(
        "polls/cast_done",
        {
            "poll": done.poll,
            "picked": [by_number[p] for p in _picks(picks)],
            "replaced": done.replaced,
            "proxy": proxy,
        },
        common.keyboard(
            [
                [
                    common.button(
                        common.label(ctx, "polls", "change"), f"vb:{done.poll.id}:{household}:0:"
                    )
                ]
            ]
        )
        if not proxy
        else None,
    )
    await common.show(update, ctx, view)


async def btn_proxy_build(update: Update, ctx: LinliContext) -> None:
    """vxb:<poll>:<voter>:<household>:<casts>:<picks>: a lead builds a ballot for a resident."""
    poll_id, voter, household, _casts, picks = common.callback_args(update, "vxb", 5)
    async with ctx.svc.db.transaction(write=False) as session:
        poll = await polls.get_poll(session, common.as_int(poll_id))
        require(await common.load_auth(session, ctx, update), await get_unit(session, poll.unit_id))
    view = await ballot_view(
        ctx,
        poll_id=common.as_int(poll_id),
        voter=common.as_int(voter),
        household=common.as_int(household),
        picks=_picks(picks),
        prefix="vxb",
        confirm="vxc",
    )
    await common.show(update, ctx, view)


async def btn_proxy_confirm(update: Update, ctx: LinliContext) -> None:
    poll_id, voter, household, casts, picks = common.callback_args(update, "vxc", 5)
    await _cast(
        update, ctx, poll_id, household, casts, picks, voter=common.as_int(voter), proxy=True
    )


# --- /polls ------------------------------------------------------------------------------


async def cmd_polls(update: Update, ctx: LinliContext) -> None:
    if not common.is_private(update):
        await common.offer_private(update, ctx, "polls", feature="polls", offer="vote_privately")
        return
    now = ctx.now()
    async with ctx.svc.db.transaction(write=False) as session:
        found = await polls.polls_for(
            session, person_id=common.user_id(update), now=now, limit=LIST_LIMIT
        )
        rows = []
        for poll in found:
            voted = await polls.has_voted(session, poll, person_id=common.user_id(update))
            rows.append((poll, voted is not None, poll.state(now)))
        auth = await common.load_auth(session, ctx, update)
        led = await polls.led_polls(session, auth=auth, now=now) if auth.is_lead else []
    buttons = [
        [
            common.button(
                common.label(ctx, "polls", "open_poll", question=p.question[:40], voted=v),
                f"vb:{p.id}:0:0:",
            )
        ]
        for p, v, state in rows
        if state == "open"
    ] + [
        [
            common.button(
                common.label(ctx, "polls", "manage", question=p.question[:40]), f"vm:{p.id}"
            )
        ]
        for p in led
    ]
    await common.reply(
        update, ctx, "polls/list", polls=rows, led=led, markup=common.keyboard(buttons)
    )


# --- what leads do with a poll --------------------------------------------------------

EXTEND_DAYS = (1, 3, 7)
ASK_CLOSE, ASK_EXTEND = "poll_close", "poll_extend"


async def _led_poll(update: Update, ctx: LinliContext, poll_id: int) -> Poll:
    """The poll, when the person leads its unit (every lead button checks again)."""
    async with ctx.svc.db.transaction(write=False) as session:
        poll = await polls.get_poll(session, poll_id)
        require(await common.load_auth(session, ctx, update), await get_unit(session, poll.unit_id))
    return poll


async def manage_view(ctx: LinliContext, poll: Poll) -> common.View:
    now = ctx.now()
    async with ctx.svc.db.transaction(write=False) as session:
        card = await polls.card_view(session, poll, now=now)
        follow = await loop.follow_ups(session, poll) if card["state"] == "closed" else []
    rows = []
    for n, (proposal, went) in enumerate(follow, 1):
        if went is None:
            rows.append(
                [common.button(common.label(ctx, "polls", "to_report", n=n), f"vfr:{proposal.id}"),
                 common.button(common.label(ctx, "polls", "to_task", n=n), f"vft:{proposal.id}")]
            )  # fmt: skip
    if card["state"] in ("open", "scheduled"):
        rows.append([common.button(common.label(ctx, "polls", "close_early"), f"vmc:{poll.id}")])
        rows.append(
            [common.button(common.label(ctx, "polls", "extend", days=d), f"vme:{poll.id}:{d}")
             for d in EXTEND_DAYS]
        )  # fmt: skip
    elif not poll.anonymous:
        rows.append([common.button(common.label(ctx, "polls", "roll_call"), f"vmr:{poll.id}")])
    topics = [
        {"title": p.title, "went": None if w is None else {"kind": w.kind, "label": w.label,
                                                          "done": w.done}}
        for p, w in follow
    ]  # fmt: skip
    return common.View("polls/manage", {"card": card, "topics": topics}, common.keyboard(rows))


async def _followed(update: Update, ctx: LinliContext, proposal: agenda.Proposal) -> None:
    """Back to the poll's screen, which now shows where the topic went."""
    assert proposal.poll_id is not None
    poll = await _led_poll(update, ctx, proposal.poll_id)
    await common.show(update, ctx, await manage_view(ctx, poll))


async def btn_to_report(update: Update, ctx: LinliContext) -> None:
    """vfr:<proposal>: the topic becomes a tracked problem report, in one tap."""
    (proposal_id,) = common.callback_args(update, "vfr", 1)
    common.private_only(update)
    async with ctx.svc.db.transaction() as session:
        proposal, _report = await loop.to_report(
            session, auth=await common.load_auth(session, ctx, update),
            proposal_id=common.as_int(proposal_id), now=ctx.now(),
        )  # fmt: skip
    await _followed(update, ctx, proposal)


async def btn_to_task(update: Update, ctx: LinliContext) -> None:
    """vft:<proposal>[:<task>]: the lead's upcoming tasks in the topic's unit; one links it."""
    args = (update.callback_query.data or "").split(":") if update.callback_query else []
    proposal_id, task_id = common.callback_args(update, "vft", 2) if len(args) == 3 else (
        *common.callback_args(update, "vft", 1), "")  # fmt: skip
    common.private_only(update)
    now = ctx.now()
    if task_id:
        async with ctx.svc.db.transaction() as session:
            proposal, _task = await loop.to_task(
                session, auth=await common.load_auth(session, ctx, update),
                proposal_id=common.as_int(proposal_id), task_id=common.as_int(task_id), now=now,
            )  # fmt: skip
        await _followed(update, ctx, proposal)
        return
    async with ctx.svc.db.transaction(write=False) as session:
        auth = await common.load_auth(session, ctx, update)
        proposal = await agenda.get_proposal(session, common.as_int(proposal_id))
        require(auth, await get_unit(session, proposal.unit_id))
        found = await loop.tasks_for(session, auth=auth, proposal=proposal, now=now)
        zone = (await people.get_community(session, proposal.community_id)).timezone
    rows = [
        [common.button(f"{t.starts_at.astimezone(ZoneInfo(zone)):%m-%d %H:%M} {t.title}"[:60],
                f"vft:{proposal.id}:{t.id}")]
        for t in found
    ]  # fmt: skip
    rows.append([common.button(common.label(ctx, "polls", "new_task"), f"vfn:{proposal.id}")])
    rows.append([common.button(common.label(ctx, "polls", "back"), f"vm:{proposal.poll_id}")])
    view = common.View(
        "polls/to_task", {"title": proposal.title, "found": bool(found)}, common.keyboard(rows)
    )
    await common.show(update, ctx, view)


async def btn_manage(update: Update, ctx: LinliContext) -> None:
    (poll_id,) = common.callback_args(update, "vm", 1)
    poll = await _led_poll(update, ctx, common.as_int(poll_id))
    await common.show(update, ctx, await manage_view(ctx, poll))


async def btn_close_early(update: Update, ctx: LinliContext) -> None:
    (poll_id,) = common.callback_args(update, "vmc", 1)
    poll = await _led_poll(update, ctx, common.as_int(poll_id))
    await common.answer(update, ctx)
    await prompts.ask(update, ctx, ASK_CLOSE, str(poll.id), "polls/ask_reason_close",
                      question=poll.question)  # fmt: skip


async def btn_extend(update: Update, ctx: LinliContext) -> None:
    poll_id, days = common.callback_args(update, "vme", 2)
    if common.as_int(days) not in EXTEND_DAYS:
        raise InvalidInput("stale_button")
    poll = await _led_poll(update, ctx, common.as_int(poll_id))
    await common.answer(update, ctx)
    await prompts.ask(update, ctx, ASK_EXTEND, f"{poll.id}:{days}", "polls/ask_reason_extend",
                      question=poll.question, days=common.as_int(days))  # fmt: skip


@prompts.answers(ASK_CLOSE)
async def on_close_reason(update: Update, ctx: LinliContext, prompt: people.Prompt) -> None:
    message = update.effective_message
    assert message is not None and message.text
    now = ctx.now()
    try:
        async with ctx.svc.db.transaction() as session:
            done = await polls.close_early(
                session, auth=await common.load_auth(session, ctx, update),
                poll_id=common.as_int(prompt.payload), reason=message.text, now=now,
            )  # fmt: skip
    except InvalidInput as refused:
        await prompts.ask(update, ctx, ASK_CLOSE, prompt.payload, f"errors/{refused.key}",
                          **refused.params)  # fmt: skip
        return
    await common.reply(update, ctx, "polls/closed_early", poll=done.poll)


@prompts.answers(ASK_EXTEND)
async def on_extend_reason(update: Update, ctx: LinliContext, prompt: people.Prompt) -> None:
    message = update.effective_message
    assert message is not None and message.text
    poll_id, _, days = prompt.payload.partition(":")
    now = ctx.now()
    try:
        async with ctx.svc.db.transaction() as session:
            poll = await polls.get_poll(session, common.as_int(poll_id))
            poll = await polls.extend(
                session,
                auth=await common.load_auth(session, ctx, update),
                poll_id=common.as_int(poll_id),
                closes_at=poll.closes_at + timedelta(days=common.as_int(days)),
                reason=message.text,
                now=now,
            )
            closes = await polls.local_time(session, poll.community_id, poll.closes_at)
    except InvalidInput as refused:
        await prompts.ask(update, ctx, ASK_EXTEND, prompt.payload, f"errors/{refused.key}",
                          **refused.params)  # fmt: skip
        return
    await common.reply(update, ctx, "polls/extended", poll=poll, closes=closes)


async def btn_roll_call(update: Update, ctx: LinliContext) -> None:
    """vmr:<poll>: a named, closed poll's ballots with who cast them, for its leads only."""
    (poll_id,) = common.callback_args(update, "vmr", 1)
    poll = await _led_poll(update, ctx, common.as_int(poll_id))
    if not common.is_private(update):
        raise InvalidInput("stale_button")
    async with ctx.svc.db.transaction(write=False) as session:
        rows = await polls.roll_call(session, poll)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["slot", "cast_by", "proxy_by", "choices"])
    writer.writerows(rows)
    message = update.effective_message
    assert message is not None
    await common.answer(update, ctx)
    await message.reply_document(out.getvalue().encode(), filename=f"poll-{poll.id}-roll.csv")


async def btn_new_task(update: Update, ctx: LinliContext) -> None:
    """vfn:<proposal>: a /newtask draft with the topic's title, opening at its unit; the task
    it posts carries the topic out (loop.link_posted_tasks)."""
    (proposal_id,) = common.callback_args(update, "vfn", 1)
    common.private_only(update)
    async with ctx.svc.db.transaction() as session:
        auth = await common.load_auth(session, ctx, update)
        proposal = await loop.may_follow_up(
            session, auth=auth, proposal_id=common.as_int(proposal_id)
        )
        flow = await flows.start(
            session, kind=newtask.KIND, owner_id=auth.person_id, now=ctx.now(),
            community_id=proposal.community_id, private=True, data=loop.task_draft(proposal),
        )  # fmt: skip
    await common.answer(update, ctx)
    await pickers.units(update, ctx, flow, field="unit_id", can=Can.lead,
                        heading="tasks/ask_unit", start=proposal.unit_id)  # fmt: skip


# --- proxy ballots: a lead replies to a resident's message with /proxy ------------------


async def cmd_proxy(update: Update, ctx: LinliContext) -> None:
    """Reply to a resident's message with /proxy: the lead is sent, privately, the open polls
    that resident may vote in, to record the ballot they phoned or handed in."""
    message = update.effective_message
    assert message is not None
    who = common.replied_to(message)
    if who is None or who.is_bot:
        raise InvalidInput("proxy_reply_to_resident")
    await common.note_replied(ctx, who)
    now = ctx.now()
    async with ctx.svc.db.transaction(write=False) as session:
        auth = await common.load_auth(session, ctx, update)
        if not auth.is_lead:
            raise NotAllowed("proxy_leads_only")
        found = [
            p for p in await polls.polls_for(session, person_id=who.id, now=now, limit=LIST_LIMIT)
            if p.state(now) == "open" and auth.covers(await get_unit(session, p.unit_id))
        ]  # fmt: skip
    buttons = [[common.button(p.question[:60], f"vxb:{p.id}:{who.id}:0:0:")] for p in found]
    view = common.View("polls/proxy_pick", {"person": who.full_name, "found": bool(found)},
                common.keyboard(buttons))  # fmt: skip
    await common.answer_privately(
        update, ctx, view, "polls", feature="polls", sent="proxy_sent", offer="vote_privately"
    )


# --- owners: a lead marks which residents own their flat -------------------------------


async def cmd_owner(update: Update, ctx: LinliContext) -> None:
    """Reply to a resident's message with /owner: the lead is sent, privately, that resident's
    households in their units, each with "owner" and "not an owner" buttons."""
    message = update.effective_message
    assert message is not None
    who = common.replied_to(message)
    if who is None or who.is_bot:
        raise InvalidInput("owner_reply_to_resident")
    await common.note_replied(ctx, who)
    view = await owner_view(update, ctx, who.id)
    await common.answer_privately(
        update, ctx, view, "polls", feature="polls", sent="proxy_sent", offer="vote_privately"
    )


async def owner_view(update: Update, ctx: LinliContext, person_id: int) -> common.View:
    async with ctx.svc.db.transaction(write=False) as session:
        auth = await common.load_auth(session, ctx, update)
        if not auth.is_lead:
            raise NotAllowed("proxy_leads_only")
        found = await polls.ownerships_of(session, auth=auth, person_id=person_id)
        person = await people.get_person(session, person_id)
    rows = [
        [common.button(common.label(ctx, "polls", "is_owner", flat=flat, on=owner), f"vo:{rid}:1"),
         common.button(common.label(ctx, "polls", "not_owner", on=not owner), f"vo:{rid}:0")]
        for rid, flat, owner in found
    ]  # fmt: skip
    name = person.name if person else str(person_id)
    return common.View("polls/owner", {"person": name, "found": found}, common.keyboard(rows))


async def btn_owner(update: Update, ctx: LinliContext) -> None:
    resident_id, owner = common.callback_args(update, "vo", 2)
    if owner not in ("0", "1"):
        raise InvalidInput("stale_button")
    async with ctx.svc.db.transaction() as session:
        resident = await polls.mark_owner(
            session, auth=await common.load_auth(session, ctx, update),
            resident_id=common.as_int(resident_id), owner=owner == "1", now=ctx.now(),
        )  # fmt: skip
    await common.show(update, ctx, await owner_view(update, ctx, resident.person_id))


# --- the ballot list ---------------------------------------------------------------------


async def cmd_ballots(update: Update, ctx: LinliContext) -> None:
    """/ballots_12: the closed poll's canonical ballot list as CSV, privately."""
    message = update.effective_message
    text = message.text if message and message.text else ""
    found = re.match(r"^/ballots(?:@\w+)?(?:_|\s+)(\d+)", text)
    if found is None:
        raise InvalidInput("poll_not_found")
    poll_id = int(found.group(1))
    if not common.is_private(update):
        payload = f"ballots-{poll_id}"
        await common.offer_private(update, ctx, payload, feature="polls", offer="vote_privately")
        return
    await send_ballots(update, ctx, poll_id)


async def btn_ballots(update: Update, ctx: LinliContext) -> None:
    """vx:<poll>: a closed poll's ballot list from /export's buttons."""
    (poll_id,) = common.callback_args(update, "vx", 1)
    common.private_only(update)
    await send_ballots(update, ctx, common.as_int(poll_id))
    await common.answer(update, ctx)


async def send_ballots(update: Update, ctx: LinliContext, poll_id: int) -> None:
    async with ctx.svc.db.transaction(write=False) as session:
        poll = await polls.get_poll(session, poll_id)
        # Anyone who could vote in it may check the count; others may not see it.
        await polls.may_export(session, poll, auth=await common.load_auth(session, ctx, update))
        rows = await polls.export_rows(session, poll)
        digest = poll.digest
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(polls.EXPORT_HEADER)
    writer.writerows(rows)
    message = update.effective_message
    assert message is not None
    await message.reply_document(
        out.getvalue().encode(),
        filename=f"poll-{poll_id}-ballots.csv",
        caption=ctx.svc.renderer.render(ctx.lang, "polls/ballots_caption", poll=poll,
                                        digest=digest, count=len(rows)),
    )  # fmt: skip


# --- the group card --------------------------------------------------------------------


async def poll_card(req: cards.CardRequest) -> cards.Card | None:
    """The poll as the unit's chats see it: question, method, deadline, turnout; never who
    voted what; totals only when the poll shows live results."""
    poll = await req.session.get(Poll, req.subject_id)
    if poll is None:
        return None
    view = await polls.card_view(req.session, poll, now=req.now)
    markup = None
    if view["state"] in ("open", "scheduled"):
        vote = req.label("polls", "vote")
        markup = common.keyboard([[common.url_button(vote, req.deep_link(f"poll-{poll.id}"))]])
    return cards.Card("polls/card", {"card": view}, markup)


# --- rhythms -----------------------------------------------------------------------------


async def close_due_polls(db: Database, now: datetime) -> int:
    """Close every poll whose time is up and post its results, each once and each in its own
    short transaction: a thousand closing in the same minute never hold SQLite's writer for
    long, and two processes doing this at once close each poll once (its row is locked and
    re-checked)."""
    async with db.transaction(write=False) as session:
        due = await polls.due_to_close(session, now=now, limit=CLOSE_BATCH)
    closed = 0
    for poll_id in due:
        async with db.transaction() as session:
            if await polls.close(session, poll_id=poll_id, now=now) is not None:
                closed += 1
    return closed


async def _close_job(ctx: LinliContext) -> None:
    services = ctx.bot_data.services
    await close_due_polls(services.db, services.clock())  # committing rows wakes the sender


def schedule_closing(app: LinliApp) -> None:
    """Results follow the closing time within CLOSE_EVERY (called at start-up)."""
    if app.job_queue is not None:
        app.job_queue.run_repeating(
            _close_job, interval=CLOSE_EVERY, first=CLOSE_EVERY, name=CLOSE_JOB
        )


async def _remind(session: AsyncSession, now: datetime) -> int:
    return await polls.remind_due(session, now=now)


async def _talk_days(session: AsyncSession, now: datetime) -> int:
    return len(await agenda.run_talk_days(session, now=now))


def register(app: LinliApp) -> None:
    cards.register(app, polls.CARD, poll_card)
    cards.register_drawing(app, polls.CHART.removeprefix(cards.DRAWN), chart.result_chart)
    for rhythm in (_remind, _talk_days, loop.link_posted_tasks, loop.follow_outcomes):
        delivery.add_rhythm(app, rhythm)
    app.add_handler(
        CommandHandler(
            "start", cmd_start, filters=filters.Regex(r"^/start (poll-\d+|ballots-\d+|polls)\b")
        )
    )
    app.add_handler(CommandHandler("polls", cmd_polls))
    app.add_handler(CommandHandler("vote", cmd_vote))
    app.add_handler(MessageHandler(filters.Regex(r"^/vote_\d+"), cmd_vote))
    app.add_handler(MessageHandler(filters.Regex(r"^/ballots_\d+"), cmd_ballots))
    app.add_handler(CommandHandler("proxy", cmd_proxy))
    app.add_handler(CommandHandler("owner", cmd_owner))
    common.add_buttons(
        app,
        (
            ("vo", btn_owner),
            ("vm", btn_manage),
            ("vmc", btn_close_early),
            ("vme", btn_extend),
            ("vmr", btn_roll_call),
            ("vx", btn_ballots),
            ("vfr", btn_to_report),
            ("vft", btn_to_task),
            ("vfn", btn_new_task),
            ("vb", btn_build),
            ("vc", btn_confirm),
            ("vxb", btn_proxy_build),
            ("vxc", btn_proxy_confirm),
        ),
    )
