"""The pickers' pure parts and the prompt rules of guided flows, against a real database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bot.db import Database
from handlers.pickers import dates, reachable_tops, slot
from models import people
from models.errors import InvalidInput
from models.people import Authority, Can, Unit
from tests.conftest import NOW


def _unit(uid: int, path: str, *, community: int = 1, parent: int | None = None) -> Unit:
    return Unit(id=uid, community_id=community, parent_id=parent, kind="grid", name=f"u{uid}",
                path=path, created_at=NOW)  # fmt: skip


GRID, B3, B5, OTHER = (
    _unit(1, "/1/"),
    _unit(2, "/1/2/", parent=1),
    _unit(3, "/1/3/", parent=1),
    _unit(9, "/9/", community=2),
)


def test_the_highest_units_a_person_may_act_on() -> None:
    lead = Authority(person_id=5, roles=((GRID, "lead"), (B3, "admin"), (OTHER, "lead")))
    # For lead work the grid covers its building; admin work only where an admin role is.
    assert reachable_tops(lead, [], can=Can.lead, community_id=None) == [GRID, OTHER]
    assert reachable_tops(lead, [], can=Can.admin, community_id=None) == [B3]
    assert reachable_tops(lead, [], can=Can.lead, community_id=2) == [OTHER]
    boss = Authority(person_id=1, superadmin=True)
    assert reachable_tops(boss, [GRID, OTHER], can=Can.admin, community_id=1) == [GRID]
    assert reachable_tops(Authority(person_id=7), [], can=Can.lead, community_id=None) == []
    # can=None: any unit of the community (a resident saying where a problem is), no role.
    anyone = Authority(person_id=7)
    assert reachable_tops(anyone, [GRID, OTHER], can=None, community_id=1) == [GRID]


def test_a_stored_moment_reads_back_and_a_forged_one_is_refused() -> None:
    start, end = datetime(2026, 12, 9, 1, 0, tzinfo=UTC), datetime(2026, 12, 9, 3, 30, tzinfo=UTC)
    found = slot({"start": start.isoformat(), "end": end.isoformat()})
    assert found is not None and (found.start, found.end) == (start, end)
    assert slot({"start": None, "end": None}) is None  # "now"
    for bad in (None, "2026-12-09", {"end": None}):
        with pytest.raises(InvalidInput):
            slot(bad)


def test_end_buttons_stay_on_the_start_day() -> None:
    late = datetime(2026, 12, 9, 13, 0, tzinfo=UTC)  # 21:00 in Shanghai
    assert dates._ends(late, "Asia/Shanghai") == [30, 60, 90, 120]  # 24:00 is tomorrow
    assert dates._ends(late + timedelta(hours=2), "Asia/Shanghai") == [30]  # 23:00


def test_a_day_button_is_one_of_the_fourteen_offered() -> None:
    st = {"zone": "Asia/Shanghai"}
    assert dates._day("20261120", st, NOW).isoformat() == "2026-11-20"
    assert dates._day("20261203", st, NOW).isoformat() == "2026-12-03"  # the 14th day
    for forged, key in (("20261119", "time_past"), ("20261204", "stale_button"),
                        ("20261131", "stale_button"), ("2026112", "stale_button")):  # fmt: skip
        with pytest.raises(InvalidInput) as refused:
            dates._day(forged, st, NOW)
        assert refused.value.key == key


async def test_a_flow_question_outlives_the_prompt_ttl_and_is_dropped_on_cancel(
    db: Database,
) -> None:
    async with db.transaction() as s:
        await people.set_prompt(s, person_id=5, chat_id=5, kind=people.FLOW_PROMPT,
                                payload="12:title", now=NOW)  # fmt: skip
        await people.set_prompt(s, person_id=5, chat_id=-7, kind="reward_name", payload="",
                                now=NOW)  # fmt: skip
    later = NOW + people.PROMPT_TTL + timedelta(minutes=1)
    async with db.transaction() as s:
        # A flow's question lives as long as its flow (which says when it expired) …
        kept = await people.take_prompt(s, person_id=5, chat_id=5, now=later)
        assert kept is not None and kept.payload == "12:title"
        # … any other question expires after PROMPT_TTL.
        assert await people.take_prompt(s, person_id=5, chat_id=-7, now=later) is None
    async with db.transaction() as s:
        for chat, payload in ((5, "12:title"), (-7, "121:title"), (8, "3:place")):
            await people.set_prompt(s, person_id=5, chat_id=chat, kind=people.FLOW_PROMPT,
                                    payload=payload, now=NOW)  # fmt: skip
        await people.drop_prompts(s, person_id=5, kind=people.FLOW_PROMPT, payload_prefix="12:")
    async with db.transaction(write=False) as s:
        assert await people.waiting_prompt(s, person_id=5, chat_id=5) is None
        left = await people.waiting_prompt(s, person_id=5, chat_id=-7)
        assert left is not None and left.payload == "121:title"  # flow 121 is another flow
        assert await people.waiting_prompt(s, person_id=5, chat_id=8) is not None
