"""Telegram glue, one module per feature. `register` wires them all, in order, in one place."""

from __future__ import annotations

from telegram import Update
from telegram.ext import TypeHandler

from bot.context import LinliApp
from handlers import (
    agenda,
    announce,
    awards,
    basics,
    catalogue,
    export,
    flowui,
    guards,
    join,
    leads,
    newpoll,
    newtask,
    pickers,
    points,
    points_admin,
    polls,
    prompts,
    reports,
    rewards,
    setup,
    tasks,
    verify,
)
from handlers.common import on_error
from handlers.menu import publish_commands

GUARDS = -10


def register(app: LinliApp) -> None:
    # Group -10: guards run first and may stop an update (repeat, flood, channel).
    app.add_handler(TypeHandler(Update, guards.check), group=GUARDS)
    # Group 0: features. Specific handlers (deep links, prompts) before general ones.
    join.register(app)  # before basics: it claims /start join-… deep links
    setup.register(app)
    leads.register(app)
    announce.register(app)
    # Before basics: each claims its own /start deep links (plain /start is basics').
    rewards.register(app)  # /start rewards
    verify.register(app)  # /start v-… (a scanned QR)
    catalogue.register(app)  # /start reward[-m…]
    points.register(app)  # /start points
    awards.register(app)  # /start award|deduct
    points_admin.register(app)  # /start rules
    export.register(app)  # /start export
    reports.register(app)  # before basics: it claims /start reports|myreports|stats
    tasks.register(app)  # before basics: it claims /start tasks|mytasks|tc-… (a check-in QR)
    newtask.register(app)  # before basics: it claims /start newtask-…
    polls.register(app)  # before basics: it claims /start poll-…, ballots-…, polls
    newpoll.register(app)  # /start newpoll
    agenda.register(app)  # before basics: it claims /start propose
    basics.register(app)
    flowui.register(app)  # the one cancel button; a photo answering a flow's step
    pickers.register(app)
    prompts.register(app)
    app.add_error_handler(on_error)


__all__ = ["publish_commands", "register"]
