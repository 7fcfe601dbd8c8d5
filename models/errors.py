"""Domain errors. Each names the message template (errors/<key>) the person is shown."""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """An expected refusal: the person is told why, and nothing was written."""

    def __init__(self, key: str, **params: Any) -> None:
        super().__init__(key)
        self.key = key
        self.params = params


class NotAllowed(DomainError):
    """The person lacks the role this needs."""


class NotFound(DomainError):
    """What the input points at does not exist (or no longer does)."""


class InvalidInput(DomainError):
    """The input is malformed or out of range."""


class Conflict(DomainError):
    """The state has moved on (already decided, already linked, already a member)."""
