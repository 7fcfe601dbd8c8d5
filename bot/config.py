"""Settings read once at start-up from the environment and `.env` (prefix LINLI_)."""

from __future__ import annotations

import hashlib
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from bot.ordering import DEFAULT_RUNNING

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./data/linli.db"


class ConfigError(Exception):
    """A setting is wrong or missing; the message is one line meant for the operator."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="LINLI_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    bot_token: SecretStr | None = None
    # Keys anonymous ballots to their voters outside the database (models/polls.py).
    ballot_secret: SecretStr | None = None
    database_url: str = DEFAULT_DATABASE_URL
    bot_api_url: str = "https://api.telegram.org"
    webhook_url: str | None = None
    webhook_secret: SecretStr | None = None
    webhook_listen: str = "127.0.0.1"
    webhook_port: int = 8443
    timezone: str = "Asia/Shanghai"
    admins: Annotated[frozenset[int], NoDecode] = frozenset()
    # Updates working at once (waiting for Telegram does not count; each chat's and each
    # person's still one after another).
    max_concurrent_updates: int = DEFAULT_RUNNING

    @property
    def ballot_key(self) -> bytes:
        """The secret anonymous ballots are keyed with: LINLI_BALLOT_SECRET, else derived from
        the bot token, else (the sandbox, tests) a fixed development key."""
        secret = self.ballot_secret or self.bot_token
        seed = secret.get_secret_value() if secret else "linli-development"
        return hashlib.sha256(f"linli-ballots:{seed}".encode()).digest()

    @field_validator("bot_token", "webhook_secret", "webhook_url", "ballot_secret", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("admins", mode="before")
    @classmethod
    def _parse_admins(cls, value: object) -> object:
        if isinstance(value, str):
            parts = [p for p in value.replace(";", ",").replace(" ", ",").split(",") if p]
            try:
                return frozenset(int(p) for p in parts)
            except ValueError:
                raise ValueError("must be comma-separated Telegram user ids") from None
        return value

    @field_validator("max_concurrent_updates")
    @classmethod
    def _positive(cls, value: int) -> int:
        if value < 1:
            raise ValueError("must be 1 or more")
        return value

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}") from None
        return value

    @field_validator("bot_api_url")
    @classmethod
    def _api_root(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    @field_validator("database_url")
    @classmethod
    def _async_driver(cls, value: str) -> str:
        if not value.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            raise ValueError("use sqlite+aiosqlite:///path or postgresql+asyncpg://user@host/db")
        return value

    @model_validator(mode="after")
    def _webhook_needs_secret(self) -> Settings:
        if self.webhook_url and not self.webhook_secret:
            raise ValueError("LINLI_WEBHOOK_URL needs LINLI_WEBHOOK_SECRET")
        if self.webhook_url and not self.webhook_url.startswith("https://"):
            raise ValueError("LINLI_WEBHOOK_URL must be an https:// address")
        return self

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def token(self) -> str:
        if self.bot_token is None:
            raise ConfigError("LINLI_BOT_TOKEN is not set (get one from @BotFather)")
        return self.bot_token.get_secret_value()


def load_settings(**overrides: object) -> Settings:
    """Read the settings, turning any validation problem into one ConfigError line."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "settings"
        name = f"LINLI_{where.upper()}" if first["loc"] else "settings"
        message = str(first["msg"]).removeprefix("Value error, ")
        raise ConfigError(f"{name}: {message}") from None
