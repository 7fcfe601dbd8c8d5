"""The neighbourhood itself: tables and the rules on them. Never imports telegram.

Importing the package registers every table on SQLModel.metadata (for the app and Alembic).
"""

from models import (
    agenda,
    announcements,
    digest,
    flows,
    ledger,
    outbox,
    people,
    points,
    polls,
    reports,
    rewards,
    standings,
    tally,
    tasks,
    updates,
)

__all__ = [
    "agenda",
    "announcements",
    "digest",
    "flows",
    "ledger",
    "outbox",
    "people",
    "points",
    "polls",
    "reports",
    "rewards",
    "standings",
    "tally",
    "tasks",
    "updates",
]
