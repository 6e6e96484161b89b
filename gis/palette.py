"""The one definition of how coverage looks: its colour classes and the blind-spot style.

The colour grid map (网格彩图), its legend, and every report format (HTML map and legend, PDF map
and legend, XLSX/CSV class labels, charts) take their classes and blind-spot style from here, so a
grid is the same colour and a blind spot the same mark wherever a leader reads it.

Classes follow the patrol target of 草原110 (a village's squares ≥ 90 % patrolled in a window):
nothing, under 25 %, 25–50 %, 50–75 %, 75–90 %, 90 % and more. A class holds ``lower ≤ pct <
upper``; the last one includes 100 %. Colours are ColorBrewer RdYlGn (colour-blind safer ends,
distinct in greyscale print by lightness).

Blind spots (盲区: fine cells nobody saw in the last N days) are one purple, hatched: on screens as
a translucent fill with the hatch in the legend swatch, in print (PDF) as the hatch itself, so the
coverage colours underneath stay readable.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray


@dataclass(frozen=True)
class CoverageClass:
    lower: float  # inclusive, %
    upper: float  # exclusive (the last class includes 100 %), %
    colour: str
    zh: str
    en: str

    @property
    def label(self) -> str:
        return self.zh if self.zh == self.en else f"{self.zh} {self.en}"


COVERAGE_CLASSES: tuple[CoverageClass, ...] = (
    CoverageClass(0.0, 0.01, "#a50026", "未巡逻", "not patrolled"),
    CoverageClass(0.01, 25.0, "#f46d43", "< 25 %", "< 25 %"),
    CoverageClass(25.0, 50.0, "#fdae61", "25–50 %", "25–50 %"),
    CoverageClass(50.0, 75.0, "#fee08b", "50–75 %", "50–75 %"),
    CoverageClass(75.0, 90.0, "#a6d96a", "75–90 %", "75–90 %"),
    CoverageClass(90.0, 100.0 + 1e-9, "#1a9850", "≥ 90 %", "≥ 90 %"),
)
LOWER_BOUNDS = np.array([c.lower for c in COVERAGE_CLASSES])

BLIND_COLOUR = "#2d004b"
BLIND_FILL_OPACITY = 0.45  # on screens, over the coverage colours
BLIND_HATCH = "//////"  # matplotlib hatch (print)
BLIND_SWATCH_CSS = f"repeating-linear-gradient(45deg,{BLIND_COLOUR} 0 2px,#fff 2px 5px)"
BLIND_LABEL_ZH = "盲区（近{days}天未巡）"
BLIND_LABEL_EN = "Blind spots (unseen in the last {days} d)"


def blind_label(days: int) -> str:
    """The blind-spot legend entry for a ``days`` window, 中文 + English."""
    return f"{BLIND_LABEL_ZH.format(days=days)} {BLIND_LABEL_EN.format(days=days)}"


def coverage_classes(pct: ArrayLike) -> NDArray[np.intp]:
    """Index into ``COVERAGE_CLASSES`` of each coverage percentage (missing counts as 0 %)."""
    values = np.nan_to_num(np.asarray(pct, dtype=np.float64), nan=0.0)
    return np.clip(np.searchsorted(LOWER_BOUNDS, values, side="right") - 1, 0, None)


def coverage_class(pct: float | None) -> int:
    """Index into ``COVERAGE_CLASSES`` of one coverage percentage (missing counts as 0 %)."""
    return int(coverage_classes([np.nan if pct is None else pct])[0])
