"""The hostile suite drives the same application and stand-in as the integration tests, with the
same group-privacy check after each test."""

from tests.integration.conftest import app, clock, privacy, scene, telegram

__all__ = ["app", "clock", "privacy", "scene", "telegram"]
