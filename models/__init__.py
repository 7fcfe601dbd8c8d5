"""The neighbourhood itself: tables and the rules on them. Never imports telegram.

Importing the package registers every table on SQLModel.metadata (for the app and Alembic).
"""

from models import announcements, outbox, people, points, rewards

__all__ = ["announcements", "outbox", "people", "points", "rewards"]
