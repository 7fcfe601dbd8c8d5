"""The neighbourhood itself: tables and the rules on them. Never imports telegram."""

from models import people

__all__ = ["people"]
