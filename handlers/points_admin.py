"""The neighbour bank for community admins: /export (the books as CSV) and /rules (what
work earns, the largest single award); each unit's leads get a monthly statement."""

from __future__ import annotations

import csv
import io
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from sqlmodel.ext.asyncio.session import AsyncSession
from telegram import Update
from telegram.ext import CommandHandler, filters

from bot import delivery
from bot.context import LinliApp, LinliContext
from handlers import common
from handlers.prompts import answers, ask
from handlers.reports import export_reports
from models import people, points, standings
from models.base import spreadsheet_safe
from models.errors import NotAllowed
from models.people import Authority, Can, Community

EXPORT_FILE = "linli-points-{start}-{end}.csv"
CSV_COLUMNS = ("time", "entry", "person_id", "person", "amount", "kind", "rule", "reason", "by_id",
               "by", "key")  # fmt: skip


# --- the ledger as CSV (admins, privately; /export offers it: handlers/export.py) ------------


async def admin_communities(session: AsyncSession, auth: Authority) -> list[Community]:
    found = await people.communities(session)
    return [c for c in found if auth.may(Can.admin_community, community_id=c.id or 0)]


def periods_screen(ctx: LinliContext, community: Community) -> common.View:
    cid = community.id
    rows = [
        [
            common.button(common.label(ctx, "points", "this_month", on=False), f"pd:{cid}:m"),
            common.button(common.label(ctx, "points", "last_month"), f"pd:{cid}:l"),
        ],
        [
            common.button(common.label(ctx, "points", "this_year"), f"pd:{cid}:y"),
            common.button(common.label(ctx, "points", "everything"), f"pd:{cid}:a"),
        ],
        [common.button(common.label(ctx, "points", "type_range"), f"pg:{cid}")],
    ]
    return common.View("points/export_pick_period", {"community": community}, common.keyboard(rows))


async def _admin_of(
    session: AsyncSession, ctx: LinliContext, update: Update, cid: int
) -> Community:
    auth = await common.load_auth(session, ctx, update)
    community = await people.get_community(session, cid)
    points.require_admin(auth, community)
    return community


@common.screen("pe", 1, private=True)
async def btn_export_community(
    session: AsyncSession, ctx: LinliContext, update: Update, community_id: str
) -> common.View:
    """pe:<community>"""
    return periods_screen(ctx, await _admin_of(session, ctx, update, common.as_int(community_id)))


@common.on_button("pd")
async def btn_export_period(update: Update, ctx: LinliContext) -> None:
    """pd:<community>:<m|l|y|a>"""
    common.private_only(update)
    community_id, code = common.callback_args(update, "pd", 2)
    async with ctx.svc.db.transaction(write=False) as session:
        community = await _admin_of(session, ctx, update, common.as_int(community_id))
    start, end = standings.period(code, ctx.now(), community.timezone)
    await _send_export(update, ctx, community, start, end)
    await export_reports(update, ctx, community, start, end)  # one period, both books
    await common.answer(update, ctx)


async def _admin_types(
    update: Update, ctx: LinliContext, prefix: str, kind: str, name: str
) -> None:
    """An admin's button that asks them to type something about their community."""
    common.private_only(update)
    (community_id,) = common.callback_args(update, prefix, 1)
    async with ctx.svc.db.transaction(write=False) as session:
        community = await _admin_of(session, ctx, update, common.as_int(community_id))
    await ask(update, ctx, kind, str(community.id), name)
    await common.answer(update, ctx)


@common.on_button("pg")
async def btn_export_range(update: Update, ctx: LinliContext) -> None:
    """pg:<community>: the admin types two dates."""
    await _admin_types(update, ctx, "pg", "points_range", "points/ask_range")


@answers("points_range")
async def on_range(update: Update, ctx: LinliContext, prompt: people.Prompt) -> None:
    async with ctx.svc.db.transaction(write=False) as session:
        community = await _admin_of(session, ctx, update, common.as_int(prompt.payload))
    start, end = standings.parse_range(common.typed(update), community.timezone)
    await _send_export(update, ctx, community, start, end)
    await export_reports(update, ctx, community, start, end)  # one period, both books


async def _send_export(
    update: Update,
    ctx: LinliContext,
    community: Community,
    start: datetime | None,
    end: datetime | None,
) -> None:
    assert community.id is not None
    async with ctx.svc.db.transaction(write=False) as session:
        rows = await standings.export_rows(session, community_id=community.id, start=start, end=end)
        names = {
            r.code: r for r in await points.rules(session, community_id=community.id, now=ctx.now())
        }
    chat = update.effective_chat
    assert chat is not None
    zone = ZoneInfo(community.timezone)
    first = start.astimezone(zone).date().isoformat() if start else None
    last = (end - timedelta(microseconds=1)).astimezone(zone).date().isoformat() if end else None
    if not rows:
        await common.reply(update, ctx, "points/export_empty", first=first, last=last)
        return
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow([common.label(ctx, "points", f"csv_{h}") for h in CSV_COLUMNS])
    for row in rows:
        e = row.entry
        rule = names[e.rule_code].name(ctx.lang) if e.rule_code in names else (e.rule_code or "")
        writer.writerow(
            [
                e.created_at.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S"),
                e.id,
                e.person_id,
                spreadsheet_safe(row.person),
                e.amount,
                e.kind,
                spreadsheet_safe(rule),
                spreadsheet_safe(e.reason),
                e.by if e.by is not None else "",
                spreadsheet_safe(row.by),
                e.key,
            ]
        )
    # The byte-order mark makes spreadsheet programs read the Chinese names as UTF-8.
    data = out.getvalue().encode("utf-8-sig")
    caption = common.render(
        ctx,
        "points/export_caption",
        community=community,
        count=len(rows),
        total=sum(r.entry.amount for r in rows),
        first=first,
        last=last,
    )
    filename = EXPORT_FILE.format(start=first or "all", end=last or "all")
    await ctx.bot.send_document(chat.id, document=data, filename=filename, caption=caption)


# --- /rules: what each kind of work earns (admins) -----------------------------------------


async def _rules_screen(
    session: AsyncSession, ctx: LinliContext, community: Community, saved: bool = False
) -> common.View:
    assert community.id is not None
    found = await points.rules(session, community_id=community.id, now=ctx.now())
    limit = await points.max_award(session, community_id=community.id)
    cid = community.id
    rows = [
        [
            common.button(
                common.label(
                    ctx,
                    "points",
                    "rule_item",
                    name=r.name(ctx.lang),
                    points=r.points,
                    active=r.active,
                ),
                f"pi:{cid}:{r.code}",
            )
        ]
        for r in found
    ]
    rows.append([common.button(common.label(ctx, "points", "new_rule"), f"pj:{cid}")])
    rows.append([common.button(common.label(ctx, "points", "set_max", max=limit), f"py:{cid}")])
    params = {"community": community, "rules": found, "max": limit, "saved": saved}
    return common.View("points/rules", params, common.keyboard(rows))


async def _rule_screen(
    session: AsyncSession, ctx: LinliContext, community: Community, code: str
) -> common.View:
    assert community.id is not None
    found = await points.rule(session, community_id=community.id, code=code, now=ctx.now())
    cid = community.id
    rows = [
        [common.button(common.label(ctx, "points", "rule_points"), f"pz:{cid}:{code}")],
        [
            common.button(
                common.label(ctx, "points", "turn_off" if found.active else "turn_on"),
                f"po:{cid}:{code}:{common.state(not found.active)}",
            )
        ],
        [common.button(common.label(ctx, "points", "back"), f"pl:{cid}")],
    ]
    return common.View(
        "points/rule", {"community": community, "rule": found}, common.keyboard(rows)
    )


async def cmd_rules(update: Update, ctx: LinliContext) -> None:
    async with ctx.svc.db.transaction(write=False) as session:
        auth = await common.load_auth(session, ctx, update)
        mine = await admin_communities(session, auth)
        if not mine:
            raise NotAllowed("points_admins_only")
        screens = [await _rules_screen(session, ctx, c) for c in mine[:1]]
        others = mine[1:]
    screen = screens[0]
    if others and screen.markup is not None:
        extra = [[common.button(c.name, f"pl:{c.id}")] for c in others]
        screen.markup = common.keyboard([*screen.markup.inline_keyboard, *extra])
    await common.answer_privately(update, ctx, screen, "rules", feature="points")


@common.screen("pl", 1, private=True)
async def btn_rules(
    session: AsyncSession, ctx: LinliContext, update: Update, community_id: str
) -> common.View:
    """pl:<community>"""
    community = await _admin_of(session, ctx, update, common.as_int(community_id))
    return await _rules_screen(session, ctx, community)


@common.screen("pi", 2, private=True)
async def btn_rule(
    session: AsyncSession, ctx: LinliContext, update: Update, community_id: str, code: str
) -> common.View:
    """pi:<community>:<rule>"""
    community = await _admin_of(session, ctx, update, common.as_int(community_id))
    return await _rule_screen(session, ctx, community, code)


@common.screen("po", 3, private=True, write=True)
async def btn_rule_active(
    session: AsyncSession, ctx: LinliContext, update: Update, community_id: str, code: str,
    wanted: str,
) -> common.View:  # fmt: skip
    """po:<community>:<rule>:<1|0>: turn the rule on (1) or off (0)."""
    active, cid = common.as_state(wanted), common.as_int(community_id)
    auth = await common.load_auth(session, ctx, update)
    await points.edit_rule(
        session, auth=auth, community_id=cid, code=code, now=ctx.now(), active=active
    )
    return await _rule_screen(session, ctx, await people.get_community(session, cid), code)


@common.on_button("pz")
async def btn_rule_points(update: Update, ctx: LinliContext) -> None:
    """pz:<community>:<rule>: the admin types the rule's points."""
    common.private_only(update)
    community_id, code = common.callback_args(update, "pz", 2)
    async with ctx.svc.db.transaction(write=False) as session:
        community = await _admin_of(session, ctx, update, common.as_int(community_id))
        found = await points.rule(
            session, community_id=common.as_int(community_id), code=code, now=ctx.now()
        )
    await ask(
        update, ctx, "points_rule", f"{community.id}:{code}", "points/ask_rule_points", rule=found
    )
    await common.answer(update, ctx)


@common.on_button("pj")
async def btn_new_rule(update: Update, ctx: LinliContext) -> None:
    """pj:<community>: the admin types a new rule's name."""
    await _admin_types(update, ctx, "pj", "points_new_rule", "points/ask_rule_name")


@common.on_button("py")
async def btn_max(update: Update, ctx: LinliContext) -> None:
    """py:<community>: the admin types the largest single award."""
    await _admin_types(update, ctx, "py", "points_max", "points/ask_max")


@answers("points_rule")
async def on_rule_points(update: Update, ctx: LinliContext, prompt: people.Prompt) -> None:
    community_id, _, code = prompt.payload.partition(":")
    cid = common.as_int(community_id)
    async with ctx.svc.db.transaction() as session:
        auth = await common.load_auth(session, ctx, update)
        await points.edit_rule(
            session,
            auth=auth,
            community_id=cid,
            code=code,
            now=ctx.now(),
            points=common.typed(update),
        )
        community = await people.get_community(session, cid)
        screen = await _rules_screen(session, ctx, community, saved=True)
    await common.show(update, ctx, screen)


@answers("points_new_rule")
async def on_new_rule(update: Update, ctx: LinliContext, prompt: people.Prompt) -> None:
    cid = common.as_int(prompt.payload)
    async with ctx.svc.db.transaction() as session:
        auth = await common.load_auth(session, ctx, update)
        found = await points.add_rule(
            session, auth=auth, community_id=cid, name=common.typed(update), now=ctx.now()
        )
        community = await people.get_community(session, cid)
        screen = await _rule_screen(session, ctx, community, found.code)
    await common.show(update, ctx, screen)


@answers("points_max")
async def on_max(update: Update, ctx: LinliContext, prompt: people.Prompt) -> None:
    cid = common.as_int(prompt.payload)
    async with ctx.svc.db.transaction() as session:
        auth = await common.load_auth(session, ctx, update)
        await points.set_max_award(
            session, auth=auth, community_id=cid, value=common.typed(update), now=ctx.now()
        )
        community = await people.get_community(session, cid)
        screen = await _rules_screen(session, ctx, community, saved=True)
    await common.show(update, ctx, screen)


def register(app: LinliApp) -> None:
    # Each unit's leads get last month's figures on the 1st (keyed: running every minute adds once).
    delivery.add_rhythm(app, standings.monthly_statements)
    # Before basics: these /start payloads are ours, plain /start is basics'.
    app.add_handler(CommandHandler("start", cmd_rules, filters=filters.Regex(r"^/start (rules)$")))
    app.add_handler(CommandHandler("rules", cmd_rules))
    common.add_buttons(app, common.buttons_of(__name__))
