"""The XLSX report: an about sheet, one sheet per level, the ranking, daily km, the
distribution (and response times when dispatch provides them).

Every table has two header rows (中文, English) frozen together with its key columns, an
autofilter, number formats per column and widths fitted to the content (CJK characters
count double).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from openpyxl import Workbook
from openpyxl.cell.cell import Cell
from openpyxl.formatting.rule import ColorScaleRule
from openpyxl.styles import Alignment, Font, PatternFill
from openpyxl.utils import get_column_letter
from openpyxl.worksheet.worksheet import Worksheet

from api.coverage import vehicles
from api.reports import labels, response_times
from api.reports.csvfile import FORMULA_START
from api.reports.data import ReportData

HEADER_FILL = PatternFill("solid", fgColor="DDE6EE")
HEADER_FONT = Font(bold=True)
NOTE_FONT = Font(bold=True, color="9C5700")
MAX_WIDTH = 40


def render_xlsx(data: ReportData) -> bytes:
    """The workbook as bytes."""
    book = Workbook()
    about = book.active
    assert about is not None  # noqa: S101 - a new workbook has one sheet
    about.title = "说明 About"
    _about(about, data)
    for level, frame in data.levels.items():
        sheet = book.create_sheet(labels.level_label(level))
        _table(sheet, frame, labels.UNIT_COLUMNS, freeze="C3")
        _colour_scale(sheet, frame, labels.UNIT_COLUMNS, "coverage_pct")
    ranking = book.create_sheet("车辆排名 Ranking")
    _table(ranking, data.ranking, labels.RANKING_COLUMNS, freeze="D3")
    _rule_below(ranking, data)
    not_ranked = book.create_sheet("未排名 Not ranked")
    _table(not_ranked, data.not_ranked, labels.NOT_RANKED_COLUMNS, freeze="B3")
    _rule_below(not_ranked, data)
    daily, columns = daily_km_wide(data.daily_km)
    _table(book.create_sheet("日里程 Daily km"), daily, columns, freeze="C3")
    _table(
        book.create_sheet("覆盖分布 Distribution"), data.distribution, labels.DISTRIBUTION_COLUMNS
    )
    times = data.response_times
    _table(book.create_sheet("响应时间 Response times"), times, response_times.columns(times))
    book.properties.title = data.title
    book.properties.creator = "GridPatrol"
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def daily_km_wide(daily: pd.DataFrame) -> tuple[pd.DataFrame, list[labels.Column]]:
    """km per vehicle (rows) and day (columns) with a total, and the matching columns."""
    base = [
        labels.Column("identifier", "终端", "Device", width=24),
        labels.Column("plate", "车牌", "Plate", width=12),
        labels.Column("total_km", "合计km", "Total km", "float1"),
        labels.Column("total_h", "合计h", "Total h", "float1"),
    ]
    if daily.empty:
        return pd.DataFrame(columns=[c.key for c in base]), base
    daily = daily.assign(plate=daily["plate"].fillna(""))  # a missing plate is no reason to drop
    wide = daily.pivot_table(index=["identifier", "plate"], columns="day", values="km")
    wide = wide.fillna(0.0)
    days = [pd.Timestamp(d) for d in sorted(wide.columns)]
    wide.columns = days
    hours = daily.groupby(["identifier", "plate"])["hours"].sum()
    frame = wide[days].copy()
    frame.columns = [f"{d:%Y-%m-%d}" for d in days]
    frame.insert(0, "total_km", wide.sum(axis=1))
    frame.insert(1, "total_h", hours.reindex(frame.index).to_numpy())
    frame = frame.reset_index().sort_values("total_km", ascending=False)
    day_columns = [labels.Column(f"{d:%Y-%m-%d}", f"{d:%m-%d}", "km", "float1") for d in days]
    return frame, base + day_columns


def _about(sheet: Worksheet, data: ReportData) -> None:
    layout = data.layout
    rows: list[tuple[str, str, Any]] = [
        ("报表", "Report", data.title),
        ("网格方案", "Layout", f"{layout['name']} (#{layout['id']}, {layout['purpose']})"),
        ("开始日期", "From", data.window.first),
        ("结束日期", "To", data.window.last),
        ("层级", "Level", labels.level_label(data.level)),
        ("数据范围", "Scope", ", ".join(f"{c} {n}" for c, n in data.scope)),
        ("出车天次", "Vehicle-days", data.vehicle_days),
        ("盲区天数", "Blind-spot days", data.blind.days),
        ("盲区单元", "Blind cells", data.blind.cells),
        ("生成时间 (UTC+8)", "Generated (UTC+8)", data.generated_at),
        ("评分权重", "Score weights", ", ".join(f"{k} {v:g}" for k, v in data.weights.items())),
        ("排名规则", "Ranking rule (中文)", data.ranking_rule.get("zh", "")),
        ("排名规则", "Ranking rule", data.ranking_rule.get("en", "")),
        ("排名统计", "Ranking counts", vehicles.summary(data.ranking_counts)),
    ]
    if data.empty:
        rows.append(("说明", "Note", "窗口内无巡逻数据 No patrol data in this window"))
    elif data.note:
        rows.append(("说明", "Note", data.note))
    if data.synthetic:
        rows.append(("合成数据", "Synthetic", f"{labels.SYNTHETIC_ZH}; {labels.SYNTHETIC_EN}"))
    sheet.append(["项目", "Item", "值 Value"])
    for cell in sheet[1]:
        cell.font, cell.fill = HEADER_FONT, HEADER_FILL
    for row_number, (zh, en, value) in enumerate(rows, start=2):
        _put(sheet, row_number, [zh, en, value])
        if zh in ("说明", "合成数据"):
            sheet.cell(row_number, 3).font = NOTE_FONT
    for row in sheet.iter_rows(min_row=2, min_col=3, max_col=3):
        for cell in row:
            if hasattr(cell.value, "year"):
                cell.number_format = (
                    "yyyy-mm-dd hh:mm" if hasattr(cell.value, "hour") else ("yyyy-mm-dd")
                )
    sheet.column_dimensions["A"].width = 18
    sheet.column_dimensions["B"].width = 20
    sheet.column_dimensions["C"].width = 70
    sheet.freeze_panes = "A2"


def _table(
    sheet: Worksheet,
    frame: pd.DataFrame,
    columns: Sequence[labels.Column],
    *,
    freeze: str = "A3",
) -> None:
    """Two header rows, the data with formats, frozen panes, autofilter, widths."""
    sheet.append([c.zh for c in columns])
    sheet.append([c.en for c in columns])
    for row in sheet.iter_rows(min_row=1, max_row=2):
        for cell in row:
            cell.font, cell.fill = HEADER_FONT, HEADER_FILL
            cell.alignment = Alignment(wrap_text=True, vertical="top")
    keys = [c.key for c in columns]
    first = sheet.max_row + 1  # after the header rows (asked once: it walks every cell)
    for row_number, record in enumerate(frame[keys].itertuples(index=False, name=None), first):
        values = [_excel(v, c.kind) for v, c in zip(record, columns, strict=True)]
        _put(sheet, row_number, values)
    for i, column in enumerate(columns, start=1):
        letter = get_column_letter(i)
        fmt = labels.NUMBER_FORMAT.get(column.kind)
        if fmt:
            for (cell,) in sheet.iter_rows(min_row=3, min_col=i, max_col=i):
                cell.number_format = fmt
        sheet.column_dimensions[letter].width = column.width or _fit(frame, column)
    sheet.freeze_panes = freeze
    if columns:
        sheet.auto_filter.ref = f"A2:{get_column_letter(len(columns))}{max(sheet.max_row, 2)}"


def _rule_below(sheet: Worksheet, data: ReportData) -> None:
    """The ranking rule (中文, English) and its counts under a ranking table."""
    start = sheet.max_row + 2  # one blank row after the table
    texts = (
        data.ranking_rule.get("zh", ""),
        data.ranking_rule.get("en", ""),
        vehicles.summary(data.ranking_counts),
    )
    for row, text in enumerate(texts, start=start):
        cell = sheet.cell(row, 1, text)
        text_cell(cell)
        cell.font = NOTE_FONT


def _put(sheet: Worksheet, row: int, values: list[Any]) -> None:
    """Write row ``row`` in which every text is a text cell, never a formula: openpyxl stores a
    string starting with ``=`` as a live formula (a plate ``=1+1`` or a layout named
    ``=HYPERLINK(…)`` would run in the reader's Excel). The caller counts the rows: asking the
    sheet for its ``max_row`` walks every cell, which made a league's 8,704 grids quadratic."""
    for col, value in enumerate(values, start=1):
        cell = sheet.cell(row, col)
        cell.value = value
        if isinstance(value, str):
            text_cell(cell)


def text_cell(cell: Cell) -> None:
    """Make ``cell`` (holding a str) a plain string cell; one Excel would read as a formula
    when edited also gets the quote prefix (Excel's own ``'=1+1``)."""
    cell.data_type = "s"
    if isinstance(cell.value, str) and cell.value.startswith(FORMULA_START):
        cell.quotePrefix = True


def _excel(value: Any, kind: str) -> Any:
    """A cell value openpyxl writes natively (no NaN, no numpy scalars, readable verdicts)."""
    if value is None or value is pd.NaT or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if kind == "bool":
        return "是 yes" if value else "否 no"
    if kind == "verdict":
        return labels.cell_text(value, kind)
    if isinstance(value, pd.Timestamp):
        return value.to_pydatetime()
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    return value


def _fit(frame: pd.DataFrame, column: labels.Column) -> float:
    """Width in characters for the header and the first rows' text, CJK counted double."""
    texts = [column.zh, column.en]
    if column.key in frame:
        texts += [labels.cell_text(v, column.kind) for v in frame[column.key].head(200)]
    width = max(sum(2 if ord(ch) > 0x2E80 else 1 for ch in t) for t in texts)
    return float(min(max(width + 2, 8), MAX_WIDTH))


def _colour_scale(
    sheet: Worksheet, frame: pd.DataFrame, columns: Sequence[labels.Column], key: str
) -> None:
    """Red-yellow-green background on a percentage column, like the map."""
    if frame.empty:
        return
    letter = get_column_letter([c.key for c in columns].index(key) + 1)
    rule = ColorScaleRule(
        start_type="num",
        start_value=0,
        start_color="F8696B",
        mid_type="num",
        mid_value=50,
        mid_color="FFEB84",
        end_type="num",
        end_value=100,
        end_color="63BE7B",
    )
    sheet.conditional_formatting.add(f"{letter}3:{letter}{sheet.max_row}", rule)
