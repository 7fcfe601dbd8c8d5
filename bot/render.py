"""Every text the bot shows comes from a Jinja2 template, one per message per language."""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup, escape

from models.people import LANGUAGES

TEMPLATES = Path(__file__).parent / "templates"


def _mention(person_id: int, name: str) -> Markup:
    return Markup('<a href="tg://user?id={}">{}</a>').format(int(person_id), name or "?")


def _area(centi_m2: int | None) -> str:
    if centi_m2 is None:
        return "—"
    return f"{centi_m2 // 100}.{centi_m2 % 100:02d} m²"


@lru_cache(maxsize=64)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


class Renderer:
    """Renders `<lang>/<name>.html.j2` to Telegram HTML, and button labels to plain text."""

    def __init__(self, *, timezone: str = "Asia/Shanghai") -> None:
        self.timezone = timezone
        self.env = Environment(
            loader=FileSystemLoader(TEMPLATES),
            autoescape=True,
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            auto_reload=False,
        )
        self.env.filters["mention"] = lambda p: _mention(p.id, p.name)
        self.env.filters["area"] = _area
        self.env.filters["dt"] = self._datetime

    def _datetime(
        self, value: datetime, zone: str | None = None, fmt: str = "%Y-%m-%d %H:%M"
    ) -> str:
        return value.astimezone(_zone(zone or self.timezone)).strftime(fmt)

    def render(self, lang: str, name: str, **context: Any) -> str:
        """The message `name` (e.g. "people/me") in `lang`, trimmed of surrounding blank lines."""
        template = self.env.get_template(f"{_lang(lang)}/{name}.html.j2")
        return template.render(lang=lang, **context).strip()

    def label(self, lang: str, feature: str, key: str, **context: Any) -> str:
        """A button label from `<lang>/<feature>/labels.j2` (a `set` value or a macro), unescaped:
        button texts are plain text, not HTML."""
        module = self.env.get_template(f"{_lang(lang)}/{feature}/labels.j2").module
        value = getattr(module, key)
        text = value(**context) if callable(value) else value
        return (
            Markup(str(text)).unescape().strip() if isinstance(text, Markup) else str(text).strip()
        )

    def label_names(self, lang: str, feature: str) -> set[str]:
        module = self.env.get_template(f"{_lang(lang)}/{feature}/labels.j2").module
        return {name for name in dir(module) if not name.startswith("_")}


def _lang(lang: str) -> str:
    return lang if lang in LANGUAGES else "zh"


__all__ = ["Renderer", "escape"]
