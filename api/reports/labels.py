"""What every report format shares: level names, column labels (中文 + English), number
formats, and the coverage classes of the colour map (网格彩图).

The classes are fixed (not quantiles of the data) so two reports can be compared by colour.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import numpy as np
import pandas as pd

# finest first: a report at one level also carries every coarser one
LEVELS = ("grid", "village", "township", "county")
LEVEL_ZH = {"grid": "网格", "village": "嘎查村", "township": "苏木乡镇", "county": "旗县"}
LEVEL_EN = {"grid": "Grids", "village": "Villages", "township": "Townships", "county": "Counties"}

VERDICT_ZH = {"award": "嘉奖", "keep": "保留", "flagged": "待改进", "no_patrol": "无巡逻"}
VERDICT_COLOUR = {
    "award": "#1a9850",
    "keep": "#666666",
    "flagged": "#d73027",
    "no_patrol": "#999999",
}


def level_label(level: str) -> str:
    """``嘎查村 Villages``."""
    return f"{LEVEL_ZH[level]} {LEVEL_EN[level]}"


def levels_from(level: str) -> tuple[str, ...]:
    """The chosen level and every coarser one, finest first."""
    if level not in LEVELS:
        raise ValueError(f"level must be one of {', '.join(LEVELS)}")
    return LEVELS[LEVELS.index(level) :]


@dataclass(frozen=True)
class Column:
    """One table column: key in the data, labels, Excel number format, display kind."""

    key: str
    zh: str
    en: str
    kind: str = "text"  # text, int, float1, float3, pct, datetime, bool, verdict
    width: int = 0  # Excel width in characters; 0 = from the content

    @property
    def label(self) -> str:
        return f"{self.zh} {self.en}"


NUMBER_FORMAT = {
    "int": "#,##0",
    "float1": "#,##0.0",
    "float3": "0.000",
    "pct": "0.0",
    "datetime": "yyyy-mm-dd hh:mm",
    "date": "yyyy-mm-dd",
}

UNIT_COLUMNS = (
    Column("code", "代码", "Code", width=17),
    Column("name_zh", "名称", "Name", width=18),
    Column("name_en", "英文名", "Name (EN)", width=22),
    Column("synthetic", "合成边界", "Synthetic boundary", "bool"),
    Column("grids", "网格数", "Grids", "int"),
    Column("cells", "单元数", "Fine cells", "int"),
    Column("seen_cells", "已巡单元", "Cells seen", "int"),
    Column("coverage_pct", "覆盖率%", "Coverage %", "pct"),
    Column("vehicle_coverage_pct", "车巡覆盖率%", "Vehicle coverage %", "pct"),
    Column("foot_coverage_pct", "步巡覆盖率%", "Foot coverage %", "pct"),
    Column("patrol_km", "巡逻里程km", "Patrol km", "float1"),
    Column("dwell_h", "停留时长h", "Dwell h", "float1"),
    Column("fixes", "定位点", "Fixes", "int"),
    Column("visits", "巡查次数", "Visits", "int"),
    Column("revisit_mean_h", "平均重访间隔h", "Mean revisit h", "float1"),
    Column("last_patrol", "最近巡逻", "Last patrol", "datetime", width=17),
    Column("last_patrol_age_h", "距今h", "Hours since", "float1"),
    Column("blind_cells", "盲区单元", "Blind cells", "int"),
    Column("blind_pct", "盲区占比%", "Blind %", "pct"),
    Column("vehicles", "车辆数", "Vehicles", "int"),
)

RANKING_COLUMNS = (
    Column("rank", "名次", "Rank", "int"),
    Column("verdict", "评定", "Verdict", "verdict"),
    Column("identifier", "终端", "Device", width=24),
    Column("plate", "车牌", "Plate", width=12),
    Column("home_village", "所属村", "Home village", width=14),
    Column("village_name", "村名", "Village name", width=16),
    Column("km", "里程km", "km", "float1"),
    Column("hours", "巡逻时长h", "Hours", "float1"),
    Column("days_active", "出勤天数", "Days active", "int"),
    Column("own_visits", "责任网格巡查次数", "Visits to own grids", "int"),
    Column("own_coverage_pct", "责任区覆盖率%", "Own-area coverage %", "pct"),
    Column("inside_share_pct", "区内时间占比%", "Time inside own area %", "pct"),
    Column("part_own_coverage", "分项·覆盖", "Part: own coverage", "float3"),
    Column("part_km", "分项·里程", "Part: km", "float3"),
    Column("part_hours", "分项·时长", "Part: hours", "float3"),
    Column("part_visits", "分项·巡查", "Part: visits", "float3"),
    Column("part_inside_share", "分项·区内", "Part: inside share", "float3"),
    Column("score", "得分", "Score", "float3"),
)

# vehicles not in service in the window: not ranked, each with its reasons
NOT_RANKED_COLUMNS = (
    Column("identifier", "终端", "Device", width=24),
    Column("plate", "车牌", "Plate", width=12),
    Column("home_village", "所属村", "Home village", width=14),
    Column("village_name", "村名", "Village name", width=16),
    Column("enabled", "启用", "Enabled", "bool"),
    Column("days_active", "有定位天数", "Days with fixes", "int"),
    Column("km", "里程km", "km", "float1"),
    Column("reason_text", "未排名原因", "Why not ranked", width=40),
)

DISTRIBUTION_COLUMNS = (
    Column("bin", "覆盖率区间", "Coverage range", width=14),
    Column("units", "单位数", "Units", "int"),
    Column("share_pct", "占比%", "Share %", "pct"),
)


LEGEND_TITLE = "覆盖率 Coverage"
SYNTHETIC_ZH = "虚线边界为合成演示数据"
SYNTHETIC_EN = "dashed outlines are synthetic demo boundaries"


_TEXT = {
    "int": lambda v: f"{int(v):,}",
    "float1": lambda v: f"{float(v):,.1f}",
    "pct": lambda v: f"{float(v):,.1f}",
    "float3": lambda v: f"{float(v):.3f}",
    "datetime": lambda v: v.strftime("%Y-%m-%d %H:%M"),
    "date": lambda v: v.isoformat(),
    "bool": lambda v: "是 yes" if v else "否 no",
    "verdict": lambda v: f"{VERDICT_ZH.get(str(v), '')} {str(v).replace('_', ' ')}",
}


def cell_text(value: Any, kind: str) -> str:
    """A value as people read it in HTML/PDF tables (— for missing)."""
    if value is None or value is pd.NaT or (isinstance(value, float) and np.isnan(value)):
        return "—"
    if kind in ("datetime", "date") and not isinstance(value, date | datetime):
        return str(value)
    return str(_TEXT.get(kind, str)(value))
