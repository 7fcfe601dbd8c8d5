"""Every text the bot shows comes from a Jinja2 template, one per message per language.

A message that grows with a list fits Telegram's 4,096 characters by itself: a template loops
over `items | fit` and says `{{ items | more }}` after the loop; when the whole text is too long,
`render` draws it again with every such list cut to the most entries that fit, and `more` says
how many were left out ("…and 12 more", in the reader's language).
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from jinja2 import Environment, FileSystemLoader, StrictUndefined, pass_context
from jinja2.runtime import Context
from markupsafe import Markup, escape

from models.people import LANGUAGES

TEMPLATES = Path(__file__).parent / "templates"
TEXT_LIMIT = 4096  # what Telegram takes in one message, in UTF-16 code units
CAPTION_LIMIT = 1024

# --- length as Telegram counts it -----------------------------------------------------------

_TOKEN = re.compile(r"<[^<>]*>|&#?\w+;|[^<&]+|[<&]")


def utf16_length(text: str) -> int:
    """Length as Telegram counts it (UTF-16 code units): never less than Python's len()."""
    return len(text.encode("utf-16-le")) // 2


def token_length(token: str) -> int:
    """The visible length of one token of Telegram HTML (a tag: none; an entity: its character)."""
    if token.startswith("<") and token.endswith(">") and len(token) > 1:
        return 0
    return utf16_length(html.unescape(token)) if token.startswith("&") else utf16_length(token)


def html_tokens(text: str) -> list[str]:
    return _TOKEN.findall(text)


def visible_length(text: str) -> int:
    """The length of Telegram HTML once its tags are parsed away and its entities resolved."""
    return sum(token_length(t) for t in html_tokens(text))


# --- lists cut to fit -----------------------------------------------------------------------


class _Fit:
    """One rendering's cap on every `| fit` list (None: all of it) and the longest list seen."""

    def __init__(self) -> None:
        self.cap: int | None = None
        self.longest = 0


def _state(context: Context) -> _Fit | None:
    found = context.get("_fit")
    return found if isinstance(found, _Fit) else None


@pass_context
def _fit(context: Context, items: Iterable[Any]) -> list[Any]:
    entries = list(items)
    state = _state(context)
    if state is None:
        return entries
    state.longest = max(state.longest, len(entries))
    return entries if state.cap is None else entries[: state.cap]


@pass_context
def _left(context: Context, items: Iterable[Any]) -> int:
    """How many entries of a `| fit` list this rendering leaves out."""
    state = _state(context)
    if state is None or state.cap is None:
        return 0
    return max(0, len(list(items)) - state.cap)


def _mention(person_id: int, name: str) -> Markup:
    return Markup('<a href="tg://user?id={}">{}</a>').format(int(person_id), name or "?")


def _area(centi_m2: int | None) -> str:
    if centi_m2 is None:
        return "—"
    return f"{centi_m2 // 100}.{centi_m2 % 100:02d} m²"


def _plural(count: object, one: str, many: str = "") -> str:
    """The English noun for a count, after it: `{{ n }} {{ n | plural("point") }}` is "1 point",
    "2 points", "-1 point" (`many` for a plural that is not `one` + "s")."""
    try:
        single = abs(int(str(count))) == 1
    except ValueError:
        single = False
    return one if single else (many or f"{one}s")


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
        self.env.filters["fit"] = _fit
        self.env.filters["more"] = self._more
        self.env.filters["left"] = _left
        self.env.filters["plural"] = _plural

    @pass_context
    def _more(self, context: Context, items: Iterable[Any], what: str = "") -> str:
        """ "…and N more" after a `| fit` list that was cut, else nothing; what="people" says
        "人" in Chinese."""
        count = _left(context, items)
        if not count:
            return ""
        return self.label(str(context.get("lang", "zh")), "common", "more", n=count, what=what)

    def _datetime(
        self, value: datetime, zone: str | None = None, fmt: str = "%Y-%m-%d %H:%M"
    ) -> str:
        return value.astimezone(_zone(zone or self.timezone)).strftime(fmt)

    def render(self, lang: str, name: str, **context: Any) -> str:
        """The message `name` (e.g. "people/me") in `lang`, trimmed of surrounding blank lines.

        If it is longer than one message, its `| fit` lists are cut to the most entries that
        fit (found by halving), each followed by its "and N more".
        """
        template = self.env.get_template(f"{_lang(lang)}/{name}.html.j2")
        state = _Fit()

        def draw() -> str:
            return template.render(lang=lang, _fit=state, **context).strip()

        text = draw()
        if state.longest == 0 or visible_length(text) <= TEXT_LIMIT:
            return text
        low, high, best = 0, state.longest - 1, ""
        while low <= high:
            state.cap = (low + high) // 2
            candidate = draw()
            if visible_length(candidate) <= TEXT_LIMIT:
                best, low = candidate, state.cap + 1
            else:
                high = state.cap - 1
        if not best:
            state.cap = 0
            best = draw()
        return best

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
