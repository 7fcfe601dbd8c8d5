"""1,000 forged or replayed voting buttons: every one refused with a clear answer, nothing
changed."""

from __future__ import annotations

import random

from sqlmodel import select

from bot.db import Database
from bot.standin import Scene, alerts
from models.agenda import Proposal, Support
from models.polls import Ballot, Poll, PollVoter
from models.tally import Method
from tests.integration.test_polls_flow import LI, SAM, WANG, ZHOU, _last, _people, _poll, _world


async def _state(db: Database) -> tuple[object, ...]:
    async with db.transaction(write=False) as s:
        ballots = sorted((b.ref, b.choices) for b in (await s.exec(select(Ballot))).all())
        voters = sorted(
            (v.slot, v.casts, v.proxy_by) for v in (await s.exec(select(PollVoter))).all()
        )
        polls = sorted((p.id, p.status, p.closes_at) for p in (await s.exec(select(Poll))).all())
        support = len((await s.exec(select(Support))).all())
        proposals = sorted((p.id, p.support) for p in (await s.exec(select(Proposal))).all())
    return ballots, voters, polls, support, proposals


async def test_thousand_forged_or_replayed_callbacks_are_refused(
    db: Database, scene: Scene
) -> None:
    w = await _world(db)
    ranking = await _poll(db, w)
    single = await _poll(db, w, method=Method.single, options=["同意", "不同意"])
    users = _people(scene)
    wang = users[WANG]
    # 王阿姨 votes, then changes her ballot: the first confirm is now a replay.
    screen = _last(await scene.say(wang, scene.private(wang), f"/vote_{single}"))
    screen = _last(await scene.tap(wang, screen, "同意"))
    first_confirm = scene.button_data(scene.message_of(screen), "确认")
    done = _last(await scene.press(wang, screen, first_confirm))
    again = _last(await scene.tap(wang, done, "修改"))
    again = _last(await scene.tap(wang, again, "不同意"))
    await scene.tap(wang, again, "确认")
    before = await _state(db)
    rng = random.Random(12)
    forged: list[tuple[dict[str, object], str]] = []
    for _ in range(200):
        forged.append((wang, first_confirm))  # replayed
    for _ in range(800):
        who = rng.choice([users[WANG], users[LI], users[SAM], users[ZHOU]])
        poll = rng.choice([ranking, single, 999, 0, -1, 10**12])
        kind = rng.randrange(10)
        picks = ".".join(str(rng.choice([0, 1, 1, 2, 3, 5, 9])) for _ in range(rng.randrange(5)))
        data = [
            f"vc:{poll}:0:{rng.choice([3, 7])}:{picks}",  # a ballot count that never was
            f"vc:{poll}:{rng.choice([1, 2, 3, 99])}:1:{picks or 'x'}",  # someone's household
            f"vb:{poll}:0:0:{picks}.{picks}",
            f"vxc:{poll}:{rng.choice([LI, WANG])}:0:0:1",  # a proxy ballot by a resident
            f"vxb:{poll}:{LI}:0:0:",
            f"vmc:{poll}",  # a lead's close-early by a resident
            f"vme:{poll}:{rng.choice([1, 2, 3])}",
            f"vmr:{poll}",
            f"ags:{rng.choice([1, 999, -5])}",
            f"vo:{rng.choice([1, 2, 3])}:{rng.choice([0, 1, 2])}",
        ][kind]
        forged.append((who, data))
    guard = scene.app.bot_data.guard
    for who, data in forged:
        # The flood guard would silently drop most of a burst; each one is answered here.
        guard.activity.clear()
        calls = await scene.press(who, screen, data)
        assert alerts(calls), data
    assert await _state(db) == before
