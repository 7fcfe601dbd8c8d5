"""The guided flow: owned, one status, expiring with notice, typed answers bound to their step,
cancellable, private-only when it must be, and a confirm that makes one thing."""

from __future__ import annotations

from datetime import timedelta

import pytest

from bot.db import Database
from models import flows
from models.errors import Conflict, InvalidInput, NotAllowed
from models.flows import FlowStatus
from tests.conftest import NOW

OWNER, OTHER = 31, 32


async def _start(db: Database, **kw: object) -> int:
    async with db.transaction() as s:
        flow = await flows.start(s, kind="report", owner_id=OWNER, now=NOW, **kw)  # type: ignore[arg-type]
        assert flow.id is not None
        return flow.id


async def test_only_the_owner_may_touch_a_flow(db: Database) -> None:
    fid = await _start(db)
    async with db.transaction() as s:
        with pytest.raises(NotAllowed):
            await flows.open_flow(s, flow_id=fid, owner_id=OTHER, now=NOW)
        with pytest.raises(InvalidInput):
            await flows.open_flow(s, flow_id=fid + 1000, owner_id=OWNER, now=NOW)
        with pytest.raises(InvalidInput):  # a button of another feature's flow
            await flows.open_flow(s, flow_id=fid, owner_id=OWNER, now=NOW, kind="poll")
        flow = await flows.open_flow(s, flow_id=fid, owner_id=OWNER, now=NOW)
        await flows.update(s, flow, now=NOW, title="路灯坏了")
    async with db.transaction(write=False) as s:
        flow = await flows.load(s, flow_id=fid, owner_id=OWNER, now=NOW)
        assert flow.data == {"title": "路灯坏了"} and flow.status == FlowStatus.open


async def test_a_flow_untouched_for_an_hour_expires_and_says_so(db: Database) -> None:
    fid = await _start(db)
    async with db.transaction() as s:  # activity keeps it alive
        flow = await flows.open_flow(
            s, flow_id=fid, owner_id=OWNER, now=NOW + timedelta(minutes=50)
        )
        await flows.update(s, flow, now=NOW + timedelta(minutes=50), title="x")
    later = NOW + timedelta(minutes=50 + 59)
    async with db.transaction() as s:
        await flows.open_flow(s, flow_id=fid, owner_id=OWNER, now=later)
    gone = later + timedelta(hours=1)
    async with db.transaction() as s:
        with pytest.raises(Conflict) as told:
            await flows.open_flow(s, flow_id=fid, owner_id=OWNER, now=gone)
    assert told.value.key == "flow_expired" and told.value.params == {"minutes": 60}
    async with db.transaction() as s:  # expired for good, and nothing can be made from it
        with pytest.raises(Conflict):
            await flows.confirm(s, flow_id=fid, owner_id=OWNER, now=gone, make=_never)
        rows = await flows.open_flows(s, owner_id=OWNER, kind="report")
    assert rows == []


async def _never(flow: flows.Flow) -> int:
    raise AssertionError("nothing may be made")


async def test_confirm_makes_one_thing_however_often_it_is_tapped(db: Database) -> None:
    fid = await _start(db)
    made: list[int] = []

    async def make(flow: flows.Flow) -> int:
        made.append(flow.id or 0)
        return 700 + len(made)

    for tap in range(3):
        async with db.transaction() as s:
            flow, created = await flows.confirm(s, flow_id=fid, owner_id=OWNER, now=NOW, make=make)
            assert created == (tap == 0)
            assert flow.result_id == 701 and flow.status == FlowStatus.confirmed
    assert made == [fid]
    async with db.transaction() as s:  # locked once confirmed
        with pytest.raises(Conflict):
            flow = await flows.open_flow(s, flow_id=fid, owner_id=OWNER, now=NOW)


async def test_a_typed_answer_belongs_to_the_step_that_asked(db: Database) -> None:
    fid = await _start(db)
    async with db.transaction() as s:
        flow = await flows.open_flow(s, flow_id=fid, owner_id=OWNER, now=NOW)
        await flows.expect(s, flow, step="title", now=NOW)
    async with db.transaction() as s:
        with pytest.raises(InvalidInput) as stale:
            await flows.answer(s, flow_id=fid, owner_id=OWNER, step="place", now=NOW)
        assert stale.value.key == "stale_answer"
    async with db.transaction() as s:
        flow = await flows.answer(s, flow_id=fid, owner_id=OWNER, step="title", now=NOW)
        await flows.update(s, flow, now=NOW, title="电梯不动")
    async with db.transaction() as s:  # answered already: a repeat is stale
        with pytest.raises(InvalidInput):
            await flows.answer(s, flow_id=fid, owner_id=OWNER, step="title", now=NOW)


async def test_cancel_once_and_a_new_flow_replaces_an_open_one(db: Database) -> None:
    first = await _start(db)
    second = await _start(db)
    async with db.transaction() as s:
        with pytest.raises(Conflict):  # the older draft was closed by the new one
            await flows.open_flow(s, flow_id=first, owner_id=OWNER, now=NOW)
        flow = await flows.open_flow(s, flow_id=second, owner_id=OWNER, now=NOW)
        assert await flows.cancel(s, flow, now=NOW)
        assert not await flows.cancel(s, flow, now=NOW)
        assert flow.status == FlowStatus.cancelled


async def test_a_private_flow_is_not_driven_from_a_group(db: Database) -> None:
    fid = await _start(db, private=True)
    async with db.transaction() as s:
        with pytest.raises(NotAllowed) as refused:
            await flows.open_flow(s, flow_id=fid, owner_id=OWNER, now=NOW, in_private=False)
        assert refused.value.key == "private_only"


async def test_photos_and_options_are_lists_with_a_limit(db: Database) -> None:
    fid = await _start(db)
    async with db.transaction() as s:
        flow = await flows.open_flow(s, flow_id=fid, owner_id=OWNER, now=NOW)
        for n in range(5):
            await flows.append(s, flow, key="photos", value=f"file{n}", limit=5, now=NOW)
        assert await flows.append(s, flow, key="photos", value="file0", limit=5, now=NOW)
        with pytest.raises(InvalidInput) as full:
            await flows.append(s, flow, key="photos", value="file5", limit=5, now=NOW)
        assert full.value.params == {"limit": 5}
        await flows.remove(s, flow, key="photos", value="file2", now=NOW)
        await flows.update(s, flow, now=NOW, options=["周六上午", "周日下午"])
    async with db.transaction(write=False) as s:
        flow = await flows.load(s, flow_id=fid, owner_id=OWNER, now=NOW)
        assert flow.data["photos"] == ["file0", "file1", "file3", "file4"]
        assert flow.data["options"] == ["周六上午", "周日下午"]


async def test_purge_expires_the_forgotten_and_deletes_the_long_finished(db: Database) -> None:
    fid = await _start(db)
    async with db.transaction() as s:
        assert await flows.purge(s, NOW + timedelta(hours=2)) == 1
    async with db.transaction() as s:
        assert await flows.purge(s, NOW + timedelta(days=8)) == 1
    async with db.transaction() as s:
        with pytest.raises(InvalidInput):
            await flows.load(s, flow_id=fid, owner_id=OWNER, now=NOW)
