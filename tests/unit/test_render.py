"""Messages that grow with a list fit in one Telegram message (issue 8 item 18).

Every list a template loops over is marked `| fit`; when the whole text is longer than Telegram
takes (4,096 UTF-16 code units of visible text), the renderer draws it again with the lists cut
to the most entries that fit, each followed by "…and N more" in the reader's language.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from jinja2 import nodes

from bot.render import TEMPLATES, TEXT_LIMIT, Renderer, visible_length

LONG = "长" * 64 + " " + "名" * 64  # a Telegram first name and last name, 64 characters each
EMOJI = "👨‍👩‍👧" * 20  # characters of two UTF-16 units each: Telegram counts those

# Lists that cannot grow, so a template may loop over them unmarked: (template, list) -> why.
BOUNDED = {
    ("announce/confirm.html.j2", "times"): "the next few occurrences only",
    ("announce/macros.j2", "days"): "days of a week",
    ("digest/weekly.html.j2", "sections"): "one per feature",
    ("leads/leads_group.html.j2", "above"): "the units above: the tree's depth",
    ("leads/parts.j2", "level.leads"): "LEADS_PER_UNIT names, the rest counted",
    ("people/help.html.j2", "commands"): "the bot's commands",
    ("points/parts.j2", "slice"): "names_of: the first ten",
    ("points/statement.html.j2", "top"): "the top three",
    ("polls/ballot.html.j2", "places"): "MAX_PLACES",
    ("polls/card.html.j2", "c.options"): "MAX_OPTIONS",
    ("polls/card.html.j2", "c.result.ranked"): "MAX_OPTIONS",
    ("polls/cast_done.html.j2", "picked"): "MAX_PLACES",
    ("polls/result.html.j2", "r.ranked"): "MAX_OPTIONS",
    ("polls/result.html.j2", "o.places"): "MAX_PLACES",
    ("polls/result.html.j2", "r.tied"): "MAX_OPTIONS",
    ("polls/result.html.j2", "r.verdict.checks"): "the Civil Code's two thresholds",
    ("reports/stats.html.j2", "call"): "by_status.items(): the statuses",
    ("pickers/macros.j2", "value.weekly"): "days of a week",
    ("tasks/changed.html.j2", "changes"): "the fields of a task",
    ("reports/flow_preview.html.j2", "same"): "reports.duplicates: at most 5",
    ("polls/manage.html.j2", "topics"): "the poll's own topics: MAX_OPTIONS",
    ("polls/new_agenda.html.j2", "proposals"): "newpoll.AGENDA_LIMIT",
    ("polls/new_options.html.j2", "options"): "MAX_OPTIONS",
    ("tasks/edit_menu.html.j2", "changed"): "the fields of a task",
    ("tasks/preview.html.j2", "days"): "days of a week or a month",
    ("tasks/preview.html.j2", "dates"): "the first few dates of a series",
}
# Lists joined into one line that cannot grow, wherever they are joined: list -> why.
BOUNDED_JOINS = {
    "names": "a unit's lineage (the tree's depth)",
    "section.names": "a unit's lineage",
    "level.names": "a unit's lineage",
    "picked": "a ballot's picks: MAX_PLACES",
    "weights": "MAX_PLACES",
    "days": "days of a week or a month",
    "value.monthly": "days of a month",
    "clamped": "days of a month",
    "short": "days of a month",
}
POPUPS = {"tasks/popup_signed_up.html.j2"}  # pop-ups: common.answer cuts them to Telegram's 200


def _name(node: nodes.Node) -> str:
    if isinstance(node, nodes.Name):
        return node.name
    if isinstance(node, nodes.Getattr):
        return f"{_name(node.node)}.{node.attr}"
    if isinstance(node, nodes.Getitem):
        return "slice"
    return type(node).__name__.lower()


def _is_fit(node: nodes.Node) -> bool:
    return isinstance(node, nodes.Filter) and node.name == "fit"


def test_every_list_a_message_loops_over_or_joins_is_cut_to_fit() -> None:
    renderer = Renderer()
    unmarked, stale = [], set(BOUNDED)
    for path in sorted(TEMPLATES.rglob("*.j2")):
        lang, rel = (
            path.relative_to(TEMPLATES).parts[0],
            "/".join(path.relative_to(TEMPLATES).parts[1:]),
        )
        tree = renderer.env.parse(path.read_text())
        for loop in tree.find_all(nodes.For):
            key = (rel, _name(loop.iter))
            stale.discard(key)
            if not _is_fit(loop.iter) and key not in BOUNDED:
                unmarked.append(f"{lang}/{rel}: {{% for … in {key[1]} %}}")
        for join in tree.find_all(nodes.Filter):
            if join.name != "join" or join.node is None or _is_fit(join.node):
                continue
            if _name(join.node) not in BOUNDED_JOINS and rel not in POPUPS:
                unmarked.append(f"{lang}/{rel}: {_name(join.node)} | join")
    assert not unmarked, "lists not marked `| fit`:\n" + "\n".join(unmarked)
    assert not stale, f"no longer in any template: {stale}"


@dataclass
class P:
    id: int
    name: str


WHEN = {"weekday": 5, "day": 5, "month": 12, "start": "09:00", "end": "11:00", "end_date": None}


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_a_long_list_is_cut_with_how_many_more_and_a_short_one_is_whole(lang: str) -> None:
    renderer = Renderer()
    coming = [P(1000 + i, f"{LONG}{i}") for i in range(80)]
    waiting = [P(2000 + i, f"{EMOJI}{i}") for i in range(30)]
    params = {"title": "扫雪", "when": WHEN, "place": "", "slots": 80, "waiting": waiting}
    text = renderer.render(lang, "tasks/evening", coming=coming, **params)
    assert visible_length(text) <= TEXT_LIMIT
    shown = len(re.findall(r"tg://user\?id=1\d{3}\"", text))
    assert 0 < shown < 80
    more = f"…还有 {80 - shown} 人" if lang == "zh" else f"…and {80 - shown} more"
    assert more in text
    short = renderer.render(lang, "tasks/evening", coming=coming[:3], **{**params, "waiting": []})
    assert "…" not in short and short.count("tg://user") == 3


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_every_list_is_cut_the_same_way_and_entities_count_as_one(lang: str) -> None:
    renderer = Renderer()
    rules = [
        {"name_zh": f"{'&<>' * 13}{i}", "name_en": f"{'&<>' * 13}{i}", "points": i,
         "active": True, "per": "event"}
        for i in range(400)
    ]  # fmt: skip
    text = renderer.render(
        lang, "points/rules", community={"name": LONG}, rules=rules, max=100, saved=True
    )
    assert visible_length(text) <= TEXT_LIMIT < len(text)  # escaped, the raw text is longer
    shown = text.count("&amp;&lt;&gt;" * 13)
    assert 0 < shown < 400 and visible_length(text) > TEXT_LIMIT - 2 * 60  # nearly full
    assert (f"…还有 {400 - shown} 项" if lang == "zh" else f"…and {400 - shown} more") in text


def test_templates_dir_is_what_the_renderer_reads() -> None:
    assert Path(TEMPLATES).is_dir()


def test_a_count_of_points_is_singular_for_one_in_english_and_unchanged_in_chinese() -> None:
    renderer = Renderer()
    draft = {"amount": 1, "kind": "award"}
    who = [{"name": "李叔叔"}]
    one = renderer.render("en", "points/pick_reason", draft=draft, who=who)
    assert "1 point for" in one and "1 points" not in one
    many = renderer.render("en", "points/pick_reason", draft={**draft, "amount": 5}, who=who)
    assert "5 points for" in many
    zh = renderer.render("zh", "points/pick_reason", draft=draft, who=who)
    assert "李叔叔</b> 1 分。" in zh
    assert renderer.label("en", "rewards", "points", n=1) == "1 pt"
    assert renderer.label("en", "rewards", "points", n=20) == "20 pts"
    assert renderer.label("en", "rewards", "reward_item", name="Tea", cost=-1) == "Tea · -1 pt"
