"""Chart images (matplotlib, no pyplot state): /stats draws counts by category and a weekly
opened/resolved line.

matplotlib's own fonts have no Chinese glyphs (every character comes out as a box), so the
charts use Noto Sans CJK SC, which the `mplfonts` package ships as a file inside it (installed
by `make` with the project's other dependencies). The font is registered with matplotlib once,
by path: no system fonts, nothing downloaded at run time.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

from matplotlib import font_manager
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

CJK_FONT = "fonts/NotoSansCJKsc-Regular.otf"


@cache
def cjk_font_path() -> Path:
    """The CJK font file, registered with matplotlib (once)."""
    path = Path(str(resources.files("mplfonts").joinpath(CJK_FONT)))
    font_manager.fontManager.addfont(str(path))
    return path


@cache
def cjk_family() -> str:
    return font_manager.FontProperties(fname=str(cjk_font_path())).get_name()


@dataclass(frozen=True)
class ChartText:
    """Every word on the chart, in the reader's language."""

    title: str
    by_category: str
    weekly: str
    opened: str
    resolved: str


def report_chart(
    categories: list[tuple[str, int]],
    weeks: list[tuple[str, int, int]],
    text: ChartText,
) -> bytes:
    """A PNG: counts by category (bars) above opened/resolved per week (lines)."""
    family = cjk_family()
    figure = Figure(figsize=(8, 8), dpi=100)
    FigureCanvasAgg(figure)
    top, bottom = figure.subplots(2, 1)
    figure.suptitle(text.title, fontfamily=family, fontsize=15)
    names = [name for name, _ in categories] or ["—"]
    counts = [count for _, count in categories] or [0]
    top.barh(names[::-1], counts[::-1], color="#4C78A8")
    top.set_title(text.by_category, fontfamily=family)
    for tick in top.get_yticklabels():
        tick.set_fontfamily(family)
    top.xaxis.get_major_locator().set_params(integer=True)
    labels = [w[5:] for w, _, _ in weeks]  # MM-DD of each week's Monday
    bottom.plot(labels, [o for _, o, _ in weeks], marker="o", label=text.opened, color="#E45756")
    bottom.plot(labels, [r for _, _, r in weeks], marker="o", label=text.resolved, color="#54A24B")
    bottom.set_title(text.weekly, fontfamily=family)
    bottom.legend(prop={"family": family})
    bottom.yaxis.get_major_locator().set_params(integer=True)
    for tick in bottom.get_xticklabels():
        tick.set_rotation(45)
    figure.tight_layout()
    out = io.BytesIO()
    figure.savefig(out, format="png")
    return out.getvalue()
