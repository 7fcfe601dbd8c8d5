"""Bar charts of poll results, drawn as PNG when the result message is sent.

Bars are labelled with option numbers and their totals only: the options' names (often
Chinese) are in the caption, so no CJK font has to be installed for the image.
"""

from __future__ import annotations

import io
from typing import Any


def result_chart(context: dict[str, Any]) -> bytes:
    """A horizontal bar per option, best first: points (ranking) or votes, by area when the
    poll is weighted by area. `context` is the result message's (models.polls.close)."""
    result = context["result"]
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    by_area = bool(result["by_area"])
    options = {o["number"]: o for o in result["options"]}
    ranked = [options[n] for n in result["ranked"]]
    values = [(o["area"] / 100 if by_area else o["heads"]) for o in ranked]
    names = [f"#{o['number']}" for o in ranked]
    figure, axes = pyplot.subplots(figsize=(6, 0.6 * len(ranked) + 1.2), dpi=100)
    try:
        bars = axes.barh(names[::-1], values[::-1], color="#3b82c4")
        leader = result.get("leader")
        if leader is not None and ranked and ranked[0]["number"] == leader:
            bars[-1].set_color("#e07b00")
        axes.bar_label(bars, labels=[_figure(v) for v in values[::-1]], padding=4)
        axes.set_xlim(0, max([*values, 1]) * 1.2)
        axes.spines[["top", "right"]].set_visible(False)
        unit = "points" if result["method"] == "ranking" else "votes"
        axes.set_xlabel(f"{unit} × m²" if by_area else unit)
        figure.tight_layout()
        out = io.BytesIO()
        figure.savefig(out, format="png")
        return out.getvalue()
    finally:
        pyplot.close(figure)


def _figure(value: float) -> str:
    return f"{value:,.2f}" if value != int(value) else f"{int(value):,}"
