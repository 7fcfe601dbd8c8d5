"""Polls against a real database: who may vote, casting races, owners, Art. 278, anonymity,
results once, reminders, proxies, and an independent re-tally of the export."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import hashlib
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from fractions import Fraction
from pathlib import Path

import pytest
from sqlalchemy import inspect
from sqlmodel import col, select

from bot.db import Database
from models import people, polls
from models.errors import Conflict, DomainError, InvalidInput, NotAllowed
from models.outbox import Delivery
from models.polls import Ballot, PollSpec, PollVoter
from models.tally import ABSTAIN, NO, YES, Method, Rule
from tests.conftest import NOW, database_url

KEY = b"test-ballot-key"
LEAD = 1
BOSS = people.Authority(person_id=LEAD, superadmin=True)
LATER = NOW + timedelta(days=3)


@dataclass
class World:
    community: int
    estate: int
    building: int
    other_building: int
    chat: int = -1001
    households: list[int] = field(default_factory=list)
    residents: dict[int, int] = field(default_factory=dict)  # person -> resident id
    household_of: dict[int, int] = field(default_factory=dict)  # person -> household


async def make_world(
    db: Database,
    areas: Sequence[int | None],
    *,
    owner_keys: dict[int, str] | None = None,
    members: int = 1,
) -> World:
    """An estate with 3号楼 (flats with these areas, `members` verified residents each, all
    marked owners) and 5号楼 (one flat, one resident, person 900). Persons are 100 + 10*i + m."""
    async with db.transaction() as s:
        c = await people.create_community(
            s, name="幸福里", timezone="Asia/Shanghai", language="zh", now=NOW
        )
        assert c.id is not None
        estate = await people.create_unit(
            s, community_id=c.id, parent_id=None, kind="estate", name="幸福里小区", now=NOW
        )
        assert estate.id is not None
        b3 = await people.create_unit(
            s, community_id=c.id, parent_id=estate.id, kind="building", name="3号楼", now=NOW
        )
        b5 = await people.create_unit(
            s, community_id=c.id, parent_id=estate.id, kind="building", name="5号楼", now=NOW
        )
        assert b3.id is not None and b5.id is not None
        w = World(c.id, estate.id, b3.id, b5.id)
        await people.touch_person(
            s, person_id=LEAD, name="王主任", username=None, language_code="zh", now=NOW
        )
        await people.record_chat(
            s,
            chat_id=w.chat,
            type="supergroup",
            title="3号楼",
            is_forum=False,
            bot_status="administrator",
            now=NOW,
        )
        await people.link_chat(
            s, chat_id=w.chat, thread_id=0, unit_id=b3.id, title="3号楼", by=LEAD, now=NOW
        )
        flats = [(b3.id, f"3-{i + 1}01", area) for i, area in enumerate(areas)]
        flats.append((b5.id, "5-101", 9000))
        for i, (unit_id, flat, area) in enumerate(flats):
            h = await people.add_household(
                s, unit_id=unit_id, flat=flat, area_centi_m2=area, now=NOW
            )
            assert h.id is not None
            if unit_id == b3.id:
                w.households.append(h.id)
                if owner_keys and i in owner_keys:
                    await polls.set_owner_key(
                        s, household_id=h.id, owner_key=owner_keys[i], now=NOW
                    )
            for m in range(members if unit_id == b3.id else 1):
                pid = 100 + 10 * i + m if unit_id == b3.id else 900
                await people.touch_person(
                    s,
                    person_id=pid,
                    name=f"居民{pid}",
                    username=None,
                    language_code="zh",
                    now=NOW,
                )
                resident, _ = await people.request_join(
                    s, person_id=pid, household_id=h.id, now=NOW, verified_by_code=True
                )
                assert resident.id is not None
                w.residents[pid] = resident.id
                w.household_of[pid] = h.id
                await polls.mark_owner(s, auth=BOSS, resident_id=resident.id, owner=True, now=NOW)
        return w


def person(i: int, m: int = 0) -> int:
    return 100 + 10 * i + m


async def new_poll(db: Database, w: World, **options: object) -> int:
    spec = PollSpec(
        unit_id=int(options.pop("unit_id", w.building)),  # type: ignore[call-overload]
        question="加装电梯？",
        options=list(options.pop("options", ["甲", "乙", "丙", "丁"])),  # type: ignore[call-overload]
        opens_at=NOW,
        closes_at=LATER,
        **options,  # type: ignore[arg-type]
    )
    async with db.transaction() as s:
        poll = await polls.create_poll(s, auth=BOSS, spec=spec, now=NOW)
        assert poll.id is not None
        return poll.id


async def vote(
    db: Database, poll_id: int, pid: int, *choices: int, at: object = None, **kw: object
) -> polls.Cast:
    async with db.transaction() as s:
        return await polls.cast(
            s,
            poll_id=poll_id,
            person_id=pid,
            choices=choices,
            now=at or NOW + timedelta(hours=1),  # type: ignore[arg-type]
            ballot_key=KEY,
            **kw,  # type: ignore[arg-type]
        )


async def close(db: Database, poll_id: int) -> polls.Tallied | None:
    async with db.transaction() as s:
        return await polls.close(s, poll_id=poll_id, now=LATER)


# --- creating --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"options": ["只有一个"]}, "poll_too_few_options"),
        ({"options": ["a", "A"]}, "poll_duplicate_option"),
        ({"closes_at": NOW - timedelta(hours=1)}, "poll_closes_before_opens"),
        ({"opens_at": LATER + timedelta(days=1)}, "poll_closes_before_opens"),
        ({"rule": Rule.custom, "threshold": Fraction(101, 100)}, "poll_threshold_range"),
        ({"rule": Rule.custom, "threshold": Fraction(-1, 100)}, "poll_threshold_range"),
        (
            {
                "rule": Rule.custom,
                "threshold": Fraction(1, 2),
                "quorum": Fraction(3, 2),
            },
            "poll_threshold_range",
        ),
        ({"area_weighted": True}, "poll_area_needs_household"),
        ({"rule": Rule.art278_ordinary, "anonymous": True}, "poll_anonymous_area"),
        ({"method": Method.multiple, "max_choices": 5}, "poll_bad_max_choices"),
        ({"method": Method.ranking, "weights": (5, 0, 1)}, "poll_bad_weights"),
        ({"question": "?"}, "poll_question_length"),
    ],
)
def test_bad_polls_are_refused(options: dict[str, object], key: str) -> None:
    values: dict[str, object] = {
        "unit_id": 1,
        "question": "加装电梯？",
        "options": ["甲", "乙"],
        "opens_at": NOW,
        "closes_at": LATER,
    }
    values.update(options)
    with pytest.raises(InvalidInput) as refused:
        polls.check_spec(PollSpec(**values), now=NOW)  # type: ignore[arg-type]
    assert refused.value.key == key


async def test_only_a_lead_of_the_unit_creates_a_poll(db: Database) -> None:
    w = await make_world(db, [100])
    async with db.transaction() as s:
        stranger = await people.authority(s, person_id=person(0), superadmin=False)
        with pytest.raises(NotAllowed):
            await polls.create_poll(
                s,
                auth=stranger,
                spec=PollSpec(w.building, "问题？", ["a", "b"], NOW, LATER),
                now=NOW,
            )
    async with db.transaction(write=False) as s:
        assert (await s.exec(select(polls.Poll))).all() == []


# --- who may vote ----------------------------------------------------------------------


async def test_voting_refusals_change_nothing(db: Database) -> None:
    w = await make_world(db, [100, 100])
    later = await new_poll(db, w, method=Method.ranking)
    async with db.transaction() as s:
        # a pending (unverified) resident of 3号楼
        await people.touch_person(
            s, person_id=555, name="新人", username=None, language_code="zh", now=NOW
        )
        await people.request_join(s, person_id=555, household_id=w.households[0], now=NOW)
    cases: list[tuple[int, tuple[int, ...], str]] = [
        (900, (1, 2, 3), "poll_not_your_unit"),  # 5号楼
        (555, (1, 2, 3), "poll_not_verified"),
        (777, (1, 2, 3), "poll_not_your_unit"),  # a stranger
        (person(0), (1, 1, 2), "poll_repeated_pick"),
        (person(0), (1, 2, 9), "poll_bad_choice"),
        (person(0), (1, 2), "poll_pick_places"),
    ]
    for pid, choices, key in cases:
        with pytest.raises(DomainError) as refused:
            await vote(db, later, pid, *choices)
        assert refused.value.key == key, pid
    with pytest.raises(Conflict) as early:
        await vote(db, later, person(0), 1, 2, 3, at=NOW - timedelta(minutes=1))
    assert early.value.key == "poll_not_open_yet"
    with pytest.raises(Conflict) as late:
        await vote(db, later, person(0), 1, 2, 3, at=LATER)
    assert late.value.key == "poll_closed"
    owners = await new_poll(db, w, options=["x", "y"], owners_only=True)
    async with db.transaction() as s:
        await polls.mark_owner(
            s, auth=BOSS, resident_id=w.residents[person(1)], owner=False, now=NOW
        )
    with pytest.raises(NotAllowed) as not_owner:
        await vote(db, owners, person(1), 1)
    assert not_owner.value.key == "poll_owners_only"
    async with db.transaction(write=False) as s:
        assert (await s.exec(select(Ballot))).all() == []
        assert (await s.exec(select(PollVoter))).all() == []


async def test_household_ballot_last_cast_counts(db: Database) -> None:
    w = await make_world(db, [100, 100], members=2)
    pid = await new_poll(db, w, counting=polls.Counting.household, options=["a", "b"])
    first = await vote(db, pid, person(0, 0), 1)
    second = await vote(db, pid, person(0, 1), 2, at=NOW + timedelta(hours=2))
    assert not first.replaced and second.replaced and first.slot == second.slot
    async with db.transaction(write=False) as s:
        poll = await polls.get_poll(s, pid)
        seen = await polls.turnout(s, poll)
        assert (seen.voted, seen.eligible) == (1, 2)
        voter = (await s.exec(select(PollVoter))).one()
        assert voter.person_id == person(0, 1) and voter.casts == 2
    done = await close(db, pid)
    assert done is not None
    assert [(o.number, o.heads) for o in done.result.options] == [(1, 0), (2, 1)]


async def test_concurrent_casts_one_row_per_slot(db: Database) -> None:
    w = await make_world(db, [100] * 6, members=3)
    pid = await new_poll(db, w, counting=polls.Counting.household, options=["a", "b", "c"])

    async def try_vote(p: int, choice: int) -> None:
        with contextlib.suppress(DomainError):
            await vote(db, pid, p, choice)

    await asyncio.gather(
        *(try_vote(person(i, m), 1 + (i + m) % 3) for i in range(6) for m in range(3))
    )
    async with db.transaction(write=False) as s:
        voters = (await s.exec(select(PollVoter))).all()
        ballots = (await s.exec(select(Ballot))).all()
    assert len(voters) == 6 and len(ballots) == 6
    assert sum(v.casts for v in voters) == 18


async def test_a_confirm_counts_once_for_the_screen_it_was_drawn_on(db: Database) -> None:
    """Two taps on the same confirm at once: one ballot, the other told it is stale; a confirm
    from the screen before a later ballot is refused and changes nothing."""
    w = await make_world(db, [100] * 2)
    pid = await new_poll(db, w, options=["a", "b"])
    voter = person(0)

    async def confirm(choice: int, seen: int) -> str:
        try:
            await vote(db, pid, voter, choice, expect_casts=seen)
        except Conflict as refused:
            return refused.key
        return "ok"

    outcomes = await asyncio.gather(confirm(1, 0), confirm(2, 0))
    assert sorted(outcomes) == ["ok", "poll_ballot_stale"]
    assert await confirm(2, 1) == "ok"
    assert await confirm(1, 1) == "poll_ballot_stale"  # replayed after the second ballot
    assert await confirm(1, 0) == "poll_ballot_stale"
    async with db.transaction(write=False) as s:
        voters = (await s.exec(select(PollVoter))).all()
        ballots = (await s.exec(select(Ballot))).all()
    assert [v.casts for v in voters] == [2] and [b.choices for b in ballots] == ["2"]


async def test_anonymous_ballot_key_changed_refuses_a_second_row(db: Database) -> None:
    w = await make_world(db, [100] * 2)
    pid = await new_poll(db, w, anonymous=True, options=["a", "b"])
    await vote(db, pid, person(0), 1)
    with pytest.raises(Conflict, match="ballot_key_changed"):
        async with db.transaction() as s:
            await polls.cast(s, poll_id=pid, person_id=person(0), choices=[2],
                             now=NOW + timedelta(hours=1), ballot_key=b"another key")  # fmt: skip
    async with db.transaction(write=False) as s:
        voters = (await s.exec(select(PollVoter))).all()
        ballots = (await s.exec(select(Ballot))).all()
    assert [v.casts for v in voters] == [1] and [b.choices for b in ballots] == ["1"]


async def test_close_and_casts_race_loses_nothing(db: Database) -> None:
    w = await make_world(db, [100] * 8)
    pid = await new_poll(db, w, options=["a", "b"])
    outcomes: list[str] = []

    async def try_vote(p: int) -> None:
        try:
            await vote(db, pid, p, 1, at=LATER - timedelta(seconds=1))
            outcomes.append("ok")
        except Conflict as exc:
            outcomes.append(exc.key)

    async def closer() -> None:
        async with db.transaction() as s:
            await polls.close(
                s, poll_id=pid, now=LATER - timedelta(seconds=1), by=LEAD, reason="提前结束"
            )

    await asyncio.gather(*(try_vote(person(i)) for i in range(8)), closer())
    async with db.transaction(write=False) as s:
        poll = await polls.get_poll(s, pid)
        assert poll.result is not None
    counted = poll.result["heads"]
    assert outcomes.count("ok") == counted  # every accepted ballot is in the result
    assert outcomes.count("poll_closed") == 8 - counted


# --- anonymity -------------------------------------------------------------------------


async def test_anonymous_ballots_have_no_link_to_voters(db: Database) -> None:
    w = await make_world(db, [100, 100, 100], members=2)
    pid = await new_poll(db, w, anonymous=True, options=["a", "b"])
    await vote(db, pid, person(0), 1)
    await vote(db, pid, person(1), 2)
    await vote(db, pid, person(0), 2)  # replaced, still one ballot
    async with db.transaction(write=False) as s:
        ballots = (await s.exec(select(Ballot))).all()
        voters = (await s.exec(select(PollVoter))).all()
        columns = await s.run_sync(
            lambda sync: {c["name"] for c in inspect(sync.connection()).get_columns("ballot")}
        )
        voter_columns = await s.run_sync(
            lambda sync: {c["name"] for c in inspect(sync.connection()).get_columns("pollvoter")}
        )
    # The ballot table has no person, household, time or sequence column.
    assert columns == {"poll_id", "ref", "choices"}
    assert "choices" not in voter_columns and "ref" not in voter_columns
    assert sorted(b.choices for b in ballots) == ["2", "2"]
    identities = {str(v.person_id) for v in voters} | {v.slot for v in voters}
    identities |= {str(v.household_id) for v in voters} | {str(v.id) for v in voters}
    for ballot in ballots:
        assert ballot.ref not in identities
        assert len(ballot.ref) == 64 and int(ballot.ref, 16) >= 0  # an HMAC, nothing readable
    # Without the key outside the database, a slot does not lead to its ballot.
    async with db.transaction(write=False) as s:
        poll = await polls.get_poll(s, pid)
    assert {polls.ballot_ref(poll, v.slot, b"another key") for v in voters}.isdisjoint(
        {b.ref for b in ballots}
    )
    # A changed key cannot add a second ballot for a slot that already voted.
    async with db.transaction() as s:
        with pytest.raises(Conflict):
            await polls.cast(
                s,
                poll_id=pid,
                person_id=person(0),
                choices=[1],
                now=NOW + timedelta(hours=1),
                ballot_key=b"another key",
            )


# --- owners and Art. 278 ---------------------------------------------------------------


async def test_owner_headcount_groups_flats(db: Database) -> None:
    # flats 0,1 one owner; 2,3 the developer's unsold flats; 4 and 5 each their own owner.
    w = await make_world(
        db,
        [100_00, 80_00, 90_00, 90_00, 70_00, None],
        owner_keys={0: "王某 110101", 1: "王某 110101", 2: "开发商", 3: "developer"},
    )
    pid = await new_poll(db, w, options=["x", "y"], rule=Rule.art278_ordinary, method="yesno")
    async with db.transaction(write=False) as s:
        poll = await polls.get_poll(s, pid)
        the_roll = await polls.roll(s, poll)
    assert the_roll.electorate.heads == 4
    assert the_roll.electorate.area == 100_00 + 80_00 + 90_00 + 90_00 + 70_00
    assert the_roll.electorate.missing_area == 1
    assert the_roll.area["o:王某 110101"] == 180_00
    assert the_roll.area["o:developer"] == 180_00
    # The owner of two flats casts once for both: the second flat's resident replaces it.
    await vote(db, pid, person(0), YES)
    again = await vote(db, pid, person(1), NO)
    assert again.replaced


async def _art278(
    db: Database, rule: Rule, yes: int, no: int, abstain: int = 0
) -> dict[object, bool]:
    """Nine owners of 100 m² each; `yes + no + abstain` of them vote."""
    w = await make_world(db, [100_00] * 9)
    pid = await new_poll(db, w, method="yesno", rule=rule)
    choices = [YES] * yes + [NO] * no + [ABSTAIN] * abstain
    for i, choice in enumerate(choices):
        await vote(db, pid, person(i), choice)
    done = await close(db, pid)
    assert done is not None and done.result.verdict is not None
    verdict = done.result.verdict
    return {
        "passed": verdict.passed,
        **{(c.stage, c.measure): c.passed for c in verdict.checks},
    }


async def test_art278_ordinary_two_thirds_participation_exactly(db: Database) -> None:
    v = await _art278(db, Rule.art278_ordinary, yes=4, no=2)  # 6 of 9 take part, 4/6 yes
    assert v["passed"] and v[("participation", "heads")] and v[("participation", "area")]


async def test_art278_one_owner_fewer_fails(db: Database) -> None:
    v = await _art278(db, Rule.art278_ordinary, yes=4, no=1)  # 5 of 9 < 2/3
    assert not v["passed"]
    assert not v[("participation", "heads")] and not v[("participation", "area")]
    assert v[("approval", "heads")]


async def test_art278_exactly_half_is_not_more_than_half(db: Database) -> None:
    v = await _art278(db, Rule.art278_ordinary, yes=3, no=3)
    assert v[("participation", "heads")]
    assert not v[("approval", "heads")] and not v[("approval", "area")] and not v["passed"]


async def test_art278_major_exactly_three_quarters_passes(db: Database) -> None:
    v = await _art278(db, Rule.art278_major, yes=6, no=2)  # 8 of 9 take part; 6/8 = 3/4
    assert v["passed"]


async def test_art278_major_below_three_quarters_fails(db: Database) -> None:
    v = await _art278(db, Rule.art278_major, yes=5, no=1, abstain=1)  # 5/7 < 3/4
    assert not v["passed"] and not v[("approval", "heads")]


async def test_art278_area_and_headcount_disagree(db: Database) -> None:
    # Areas 500, 100×5 (total 1000). The big flat and two small: 3 of 6 heads, 700/1000 area.
    w = await make_world(db, [500_00] + [100_00] * 5)
    pid = await new_poll(db, w, method="yesno", rule=Rule.art278_ordinary)
    for i in (0, 1, 2):
        await vote(db, pid, person(i), YES)
    done = await close(db, pid)
    assert done is not None and done.result.verdict is not None
    checks = {(c.stage, c.measure): c for c in done.result.verdict.checks}
    assert checks[("participation", "area")].passed
    assert not checks[("participation", "heads")].passed
    assert not done.result.verdict.passed
    # The five small flats: 5/6 of heads, 500/1000 of area.
    w2_db = db
    pid2 = await new_poll(w2_db, w, method="yesno", rule=Rule.art278_ordinary)
    for i in (1, 2, 3, 4, 5):
        await vote(db, pid2, person(i), YES)
    done2 = await close(db, pid2)
    assert done2 is not None and done2.result.verdict is not None
    checks = {(c.stage, c.measure): c for c in done2.result.verdict.checks}
    assert checks[("participation", "heads")].passed
    assert not checks[("participation", "area")].passed
    assert (checks[("participation", "area")].num, checks[("participation", "area")].den) == (
        500_00,
        1000_00,
    )


# --- results, reminders, proxies -------------------------------------------------------


async def _result_rows(db: Database, pid: int) -> list[Delivery]:
    async with db.transaction(write=False) as s:
        rows = await s.exec(
            select(Delivery).where(col(Delivery.key).startswith(f"poll-result:{pid}:"))
        )
        return list(rows.all())


async def test_results_posted_once_across_a_restart(db: Database, tmp_path: Path) -> None:
    w = await make_world(db, [100, 100])
    pid = await new_poll(db, w, options=["a", "b"])
    await vote(db, pid, person(0), 1)
    async with db.transaction() as s:
        assert await polls.due_to_close(s, now=LATER) == [pid]
        assert await polls.close(s, poll_id=pid, now=LATER) is not None
    # A second process (after a restart) finds nothing to close and posts nothing again.
    again = Database(database_url(tmp_path))
    try:
        async with again.transaction() as s:
            assert await polls.due_to_close(s, now=LATER) == []
            assert await polls.close(s, poll_id=pid, now=LATER) is None
    finally:
        await again.dispose()
    rows = await _result_rows(db, pid)
    assert len(rows) == 1 and rows[0].chat_id == w.chat
    assert (
        rows[0].context["result"]["digest"]
        == hashlib.sha256((await _record(db, pid)).encode()).hexdigest()
    )


async def _record(db: Database, pid: int) -> str:
    async with db.transaction(write=False) as s:
        return await polls.record_text(s, await polls.get_poll(s, pid))


async def test_reminders_go_only_to_non_voters(db: Database) -> None:
    w = await make_world(db, [100, 100, 100], members=2)
    pid = await new_poll(
        db, w, counting=polls.Counting.household, anonymous=True, options=["a", "b"]
    )
    await vote(db, pid, person(0, 1), 1)  # household 0 has voted (for both its members)
    remind_at = LATER - timedelta(hours=24)
    async with db.transaction() as s:
        assert await polls.remind_due(s, now=remind_at - timedelta(minutes=1)) == 0
        sent = await polls.remind_due(s, now=remind_at)
        assert await polls.remind_due(s, now=remind_at + timedelta(minutes=5)) == 0
        rows = (
            await s.exec(select(Delivery).where(col(Delivery.key).startswith("poll-remind:")))
        ).all()
    assert sent == 4
    assert sorted(r.person_id or 0 for r in rows) == sorted(
        [person(1, 0), person(1, 1), person(2, 0), person(2, 1)]
    )
    # Extending re-arms the reminder for the new closing time.
    async with db.transaction() as s:
        await polls.extend(
            s,
            auth=BOSS,
            poll_id=pid,
            closes_at=LATER + timedelta(days=2),
            reason="人太少，延长两天",
            now=remind_at,
        )
        assert await polls.remind_due(s, now=LATER + timedelta(days=1)) == 4


async def test_proxy_ballot_is_marked_told_and_replaceable(db: Database) -> None:
    w = await make_world(db, [100, 100])
    pid = await new_poll(db, w, options=["a", "b"])
    async with db.transaction() as s:
        await polls.cast(
            s,
            proxy=BOSS,
            poll_id=pid,
            person_id=person(0),
            choices=[2],
            now=NOW + timedelta(hours=1),
            ballot_key=KEY,
        )
        voter = (await s.exec(select(PollVoter))).one()
        assert voter.proxy_by == LEAD
        notice = (
            await s.exec(select(Delivery).where(col(Delivery.key).startswith("poll-proxy:")))
        ).one()
        assert notice.person_id == person(0)
    async with db.transaction() as s:
        stranger = await people.authority(s, person_id=person(1), superadmin=False)
        with pytest.raises(NotAllowed):
            await polls.cast(
                s,
                proxy=stranger,
                poll_id=pid,
                person_id=person(0),
                choices=[1],
                now=NOW + timedelta(hours=1),
                ballot_key=KEY,
            )
    await vote(db, pid, person(0), 1, at=NOW + timedelta(hours=2))
    async with db.transaction(write=False) as s:
        voter = (await s.exec(select(PollVoter))).one()
        assert voter.proxy_by is None and voter.casts == 2
        assert (await s.exec(select(Ballot.choices))).one() == "1"


async def test_close_early_and_extend_need_a_reason_and_a_lead(db: Database) -> None:
    w = await make_world(db, [100, 100])
    pid = await new_poll(db, w, options=["a", "b"])
    async with db.transaction() as s:
        with pytest.raises(InvalidInput):
            await polls.close_early(s, auth=BOSS, poll_id=pid, reason=" ", now=NOW)
        with pytest.raises(InvalidInput):
            await polls.extend(
                s,
                auth=BOSS,
                poll_id=pid,
                closes_at=NOW + timedelta(hours=1),
                reason="缩短",
                now=NOW,
            )
        done = await polls.close_early(s, auth=BOSS, poll_id=pid, reason="议题已解决", now=NOW)
        assert done.poll.changed_reason == "议题已解决"
    async with db.transaction() as s:
        with pytest.raises(Conflict):
            await polls.close_early(s, auth=BOSS, poll_id=pid, reason="再来一次", now=NOW)
    assert len(await _result_rows(db, pid)) == 1


# --- the export and an independent re-tally --------------------------------------------


def retally_csv(text: str, weights: list[int], by_area: bool) -> dict[int, tuple[int, int]]:
    """Count an exported CSV with nothing from the app: option -> (points by area or heads,
    firsts)."""
    points: dict[int, list[int]] = {}
    for row in csv.DictReader(io.StringIO(text)):
        area = int(row["area"])
        for place, option in enumerate(row["choices"].split(">")):
            entry = points.setdefault(int(option), [0, 0])
            entry[0] += weights[place] * (area if by_area else 1)
            entry[1] += 1 if place == 0 else 0
    return {k: (v[0], v[1]) for k, v in points.items()}


async def test_export_retally_matches_result_and_digest(db: Database) -> None:
    areas = [89_50, 120_00, 75_25, 60_00, 101_10]
    w = await make_world(db, areas, members=2)
    pid = await new_poll(
        db,
        w,
        method=Method.ranking,
        counting=polls.Counting.household,
        area_weighted=True,
        options=["修车棚", "装电梯", "清楼道", "种花"],
    )
    picks = [(2, 1, 3), (1, 2, 4), (2, 3, 1), (4, 2, 1), (2, 1, 4)]
    for i, choice in enumerate(picks):
        await vote(db, pid, person(i, 0), 3, 4, 1)
        await vote(db, pid, person(i, 1), *choice)  # the last cast counts
    done = await close(db, pid)
    assert done is not None
    async with db.transaction(write=False) as s:
        poll = await polls.get_poll(s, pid)
        rows = await polls.export_rows(s, poll)
        record = await polls.record_text(s, poll)
    exported = io.StringIO()
    writer = csv.writer(exported, lineterminator="\n")
    writer.writerow(polls.EXPORT_HEADER)
    writer.writerows(rows)
    counted = retally_csv(exported.getvalue(), [5, 3, 1], by_area=True)
    assert poll.result is not None
    for option in poll.result["options"]:
        assert counted.get(option["number"], (0, 0)) == (option["area"], option["places"][0])
    # Rebuild the canonical text from the export and the header the README documents.
    header = f"linli-ballots/1 poll={pid} method=ranking weights=5-3-1 options=4 area=yes"
    lines = sorted((f"{a},{c}" for a, c in rows), key=str.encode)
    canonical = "\n".join([header, *lines]) + "\n"
    assert canonical == record
    assert hashlib.sha256(canonical.encode()).hexdigest() == poll.digest == poll.result["digest"]
    leader = max(counted, key=lambda k: counted[k])
    assert poll.result["leader"] == leader == 2


async def test_export_refused_while_open(db: Database) -> None:
    w = await make_world(db, [100])
    pid = await new_poll(db, w, options=["a", "b"])
    async with db.transaction(write=False) as s:
        with pytest.raises(Conflict):
            await polls.export_rows(s, await polls.get_poll(s, pid))


async def test_result_message_shows_fractions_and_tie_break(db: Database) -> None:
    from bot.render import Renderer

    v = await make_world(db, [100_00] * 9)
    pid = await new_poll(db, v, method="yesno", rule=Rule.art278_ordinary)
    for i, choice in enumerate([YES, YES, YES, NO, NO, NO]):
        await vote(db, pid, person(i), choice)
    await close(db, pid)
    rank = await new_poll(db, v, method=Method.ranking, options=["甲", "乙", "丙"])
    for i, picks in enumerate([(1, 3, 2), (3, 2, 1), (1, 3, 2)]):
        await vote(db, rank, person(i), *picks)
    await close(db, rank)
    rows = await _result_rows(db, pid) + await _result_rows(db, rank)
    renderer = Renderer()
    zh = renderer.render("zh", "polls/result", **rows[0].context)
    en = renderer.render("en", "polls/result", **rows[0].context)
    assert "参与人数：6 / 9，需 ≥ 2/3" in zh and "赞成人数：3 / 6，需 ＞ 1/2" in zh
    assert "未通过" in zh and "Verdict: <b>not passed</b>" in en
    assert "Approval by area: 300.00 m² of 600.00 m², needs &gt; 1/2" in en
    ranked_zh = renderer.render("zh", "polls/result", **rows[1].context)
    ranked_en = renderer.render("en", "polls/result", **rows[1].context)
    assert "1. 甲：<b>11</b> 分（第1名 2 次，第2名 0 次，第3名 1 次）" in ranked_zh
    assert "第一名次数更多" in ranked_zh and "more first places" in ranked_en
    assert rows[1].context["result"]["digest"] in ranked_en
