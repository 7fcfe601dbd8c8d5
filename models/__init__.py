"""The neighbourhood itself: tables and the rules on them. Never imports telegram."""

from models import outbox, people

__all__ = ["outbox", "people"]
