"""Report charts as matplotlib figures (no pyplot: figures are independent objects, safe to
draw in worker threads): the coverage distribution and daily km per vehicle.

Call inside ``fonts.cjk_style()`` so Chinese labels render.
"""

from __future__ import annotations

import base64
import io

import numpy as np
import pandas as pd
from matplotlib.colors import LinearSegmentedColormap
from matplotlib.figure import Figure, FigureBase

from api.reports import labels
from gis import palette

TOP_VEHICLES = 25  # rows of the daily-km heat map: the vehicles with the most km


def coverage_histogram(
    distribution: pd.DataFrame,
    *,
    level: str,
    figsize: tuple[float, float] = (7.0, 3.2),
    into: FigureBase | None = None,
) -> FigureBase:
    """Bars of units per coverage band (the first bar: exactly 0 %), coloured like the map.

    Drawn into ``into`` (a sub-figure of a PDF page) or a new figure of ``figsize`` inches.
    """
    fig = into or Figure(figsize=figsize, layout="constrained")
    ax = fig.add_subplot()
    colours = [
        palette.COVERAGE_CLASSES[palette.coverage_class(0.0 if i == 0 else lo + 5)].colour
        for i, lo in enumerate(distribution["lower"])
    ]
    x = np.arange(len(distribution))
    bars = ax.bar(x, distribution["units"], color=colours, edgecolor="#333333", linewidth=0.4)
    ax.bar_label(bars, labels=[str(n) if n else "" for n in distribution["units"]], fontsize=7)
    ax.set_xticks(x, list(distribution["bin"]), fontsize=7, rotation=30)
    ax.set_xlabel("覆盖率 Coverage")
    ax.set_ylabel(f"{labels.LEVEL_ZH[level]}数 {labels.LEVEL_EN[level]}")
    ax.set_title(f"覆盖率分布 Coverage distribution ({labels.level_label(level)})", fontsize=10)
    ax.spines[["top", "right"]].set_visible(False)
    return fig


def daily_km(
    daily: pd.DataFrame,
    *,
    figsize: tuple[float, float] = (7.0, 6.5),
    into: FigureBase | None = None,
) -> FigureBase:
    """Total km per day (bars) over a heat map of km per vehicle and day (the vehicles with
    the most km; the full table is in the XLSX)."""
    fig = into or Figure(figsize=figsize, layout="constrained")
    if daily.empty:
        ax = fig.add_subplot()
        ax.set_axis_off()
        ax.text(0.5, 0.5, "窗口内无车辆里程 No vehicle km in this window", ha="center")
        return fig
    wide = daily.pivot_table(index="identifier", columns="day", values="km", aggfunc="sum")
    wide = wide.fillna(0.0)
    days = sorted(wide.columns)
    wide = wide[days]
    top = wide.loc[wide.sum(axis=1).sort_values(ascending=False).index[:TOP_VEHICLES]]
    total_ax, heat_ax = fig.subplots(
        2, 1, gridspec_kw={"height_ratios": [1, max(2.5, len(top) / 6)]}
    )
    x = np.arange(len(days))
    total_ax.bar(x, wide.sum(axis=0).to_numpy(), color="#4575b4")
    total_ax.set_xlim(-0.5, len(days) - 0.5)
    total_ax.set_xticks([])
    total_ax.set_ylabel("km")
    total_ax.set_title(f"每日巡逻里程 Daily patrol km · {len(wide)} 辆车 vehicles", fontsize=10)
    total_ax.spines[["top", "right"]].set_visible(False)
    cmap = LinearSegmentedColormap.from_list("km", ["#f7fbff", "#6baed6", "#08306b"])
    image = heat_ax.imshow(top.to_numpy(), aspect="auto", cmap=cmap, interpolation="nearest")
    step = max(1, len(days) // 12)
    heat_ax.set_xticks(x[::step], [f"{pd.Timestamp(d):%m-%d}" for d in days][::step], fontsize=7)
    heat_ax.set_yticks(np.arange(len(top)), list(top.index), fontsize=6)
    heat_ax.set_xlabel("日期 Day")
    heat_ax.set_title(
        f"各车日里程 km per vehicle and day (前 top {len(top)})", fontsize=9, loc="left"
    )
    fig.colorbar(image, ax=heat_ax, label="km", shrink=0.8)
    return fig


def png_data_uri(fig: FigureBase, *, dpi: int = 110) -> str:
    """``data:image/png;base64,…`` of a figure, for a self-contained HTML page."""
    assert isinstance(fig, Figure)  # noqa: S101 - whole figures only, not sub-figures
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
