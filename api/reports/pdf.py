"""The PDF report, A4 portrait pages (210 × 297 mm) that print as they are.

Page 1: the colour grid map (geopandas choropleth of the chosen level, blind spots on top,
legend in Chinese and English) with the report's facts. Page 2: the charts. Then the tables
per level and the ranking, paginated with repeated bilingual headers, and response times when
dispatch provides them. Very long tables stop after ``MAX_TABLE_ROWS`` with a note (the XLSX
and CSV hold every row).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from datetime import datetime

from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.figure import Figure
from matplotlib.layout_engine import ConstrainedLayoutEngine
from matplotlib.patches import Patch
from pypdf import PdfReader, PdfWriter

from api.coverage import vehicles
from api.reports import charts, labels, response_times
from api.reports.data import ReportData
from api.reports.fonts import cjk_style
from api.reports.pdftables import LEFT, RIGHT, Table, render_tables
from gis import palette

A4_INCHES = (210 / 25.4, 297 / 25.4)
MAX_TABLE_ROWS = 2500  # 50 pages; beyond that a table belongs in a spreadsheet

PDF_UNIT_COLUMNS = (
    ("code", 1.5),
    ("name_zh", 1.9),
    ("coverage_pct", 0.8),
    ("patrol_km", 0.9),
    ("dwell_h", 0.8),
    ("visits", 0.7),
    ("revisit_mean_h", 0.9),
    ("last_patrol_age_h", 0.8),
    ("blind_pct", 0.8),
    ("vehicles", 0.7),
)
PDF_RANKING_COLUMNS = (
    ("rank", 0.5),
    ("verdict", 1.0),
    ("identifier", 2.0),
    ("km", 0.8),
    ("hours", 0.7),
    ("own_visits", 0.7),
    ("own_coverage_pct", 0.9),
    ("part_own_coverage", 0.75),
    ("part_km", 0.75),
    ("part_hours", 0.75),
    ("part_visits", 0.75),
    ("score", 0.7),
)
PDF_NOT_RANKED_COLUMNS = (
    ("identifier", 2.2),
    ("plate", 1.0),
    ("village_name", 1.4),
    ("days_active", 0.8),
    ("km", 0.7),
    ("reason_text", 3.4),
)
PDF_NOT_RANKED_ROWS = 200  # four pages; the HTML and XLSX list them all

PDF_RESPONSE_COLUMNS = (
    ("code", 1.5),
    ("name_zh", 1.9),
    ("incidents", 0.8),
    ("arrived", 0.8),
    ("to_dispatch_median_min", 1.0),
    ("to_arrive_median_min", 1.0),
    ("to_arrive_p90_min", 1.0),
    ("travel_median_min", 1.0),
)


class Pages:
    """A PdfPages with a page counter and a common footer."""

    def __init__(self, pdf: PdfPages, footer: str) -> None:
        self.pdf, self.footer, self.count = pdf, footer, 0

    def new(self) -> Figure:
        return Figure(figsize=A4_INCHES)

    def save(self, fig: Figure) -> None:
        self.count += 1
        fig.text(LEFT, 0.02, self.footer, fontsize=6.5, color="#666666")
        fig.text(RIGHT, 0.02, f"第 {self.count} 页 page {self.count}", fontsize=6.5, ha="right")
        self.pdf.savefig(fig)


def render_pdf(data: ReportData) -> bytes:
    """The report as PDF bytes (A4 portrait): the map and chart pages from matplotlib, the
    tables from reportlab (``api.reports.pdftables``), one document."""
    figures = io.BytesIO()
    footer = f"GridPatrol · {data.title}"
    with cjk_style(), PdfPages(figures) as pdf:
        pages = Pages(pdf, footer)
        _map_page(pages, data)
        _chart_page(pages, data)
    tables = render_tables(_tables(data), footer, first_page=pages.count + 1)
    writer = PdfWriter()
    for part in (figures, io.BytesIO(tables)):
        writer.append(PdfReader(part))
    writer.add_metadata(
        {
            "/Title": data.title,
            "/Author": "GridPatrol",
            "/Subject": f"{data.layout['name']} · {labels.level_label(data.level)}",
            "/CreationDate": datetime.now().astimezone().strftime("D:%Y%m%d%H%M%S"),
        }
    )
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def _tables(data: ReportData) -> list[Table]:
    """Per level, the ranking (its rule above), the vehicles not ranked, response times."""
    tables = [
        Table(
            f"各{labels.LEVEL_ZH[level]}覆盖 Coverage per {level}",
            frame,
            _columns(labels.UNIT_COLUMNS, PDF_UNIT_COLUMNS),
            max_rows=MAX_TABLE_ROWS,
        )
        for level, frame in data.levels.items()
    ]
    rule = "\n".join(
        line
        for text in (
            data.ranking_rule.get("zh", ""),
            data.ranking_rule.get("en", ""),
            vehicles.summary(data.ranking_counts),
        )
        for line in wrap(text, RIGHT - LEFT)
    )
    tables.append(
        Table(
            "车辆排名 Vehicle ranking",
            data.ranking,
            _columns(labels.RANKING_COLUMNS, PDF_RANKING_COLUMNS),
            subtitle=rule,
            max_rows=MAX_TABLE_ROWS,
        )
    )
    tables.append(
        Table(
            "未排名车辆 Vehicles not ranked (not in service)",
            data.not_ranked,
            _columns(labels.NOT_RANKED_COLUMNS, PDF_NOT_RANKED_COLUMNS),
            max_rows=PDF_NOT_RANKED_ROWS,
        )
    )
    times = data.response_times
    by_key = {c.key: c for c in response_times.columns(times)}
    columns = [(by_key[k], w) for k, w in PDF_RESPONSE_COLUMNS if k in by_key]
    tables.append(Table("响应时间 Response times", times, columns, max_rows=MAX_TABLE_ROWS))
    return tables


def _columns(
    spec: Sequence[labels.Column], chosen: Sequence[tuple[str, float]]
) -> list[tuple[labels.Column, float]]:
    by_key = {c.key: c for c in spec}
    return [(by_key[key], width) for key, width in chosen]


def _map_page(pages: Pages, data: ReportData) -> None:
    fig = pages.new()
    fig.text(LEFT, 0.965, data.title, fontsize=13)
    lines = [
        f"网格方案 Layout: {data.layout['name']} (#{data.layout['id']})",
        f"层级 Level: {labels.level_label(data.level)} · 单位 units: {len(data.units):,}",
        "数据范围 Scope: " + ", ".join(f"{c} {n}" for c, n in data.scope),
        (
            f"盲区 Blind spots: {data.blind.cells:,} / {data.blind.total_cells:,} 单元 cells "
            f"({data.blind.first} – {data.blind.last})"
        ),
        f"生成 Generated: {data.generated_at:%Y-%m-%d %H:%M} (UTC+8)",
    ]
    for i, line in enumerate(lines):
        fig.text(LEFT, 0.94 - i * 0.017, line, fontsize=8)
    y = 0.94 - len(lines) * 0.017 - 0.01
    if data.empty:
        fig.text(
            LEFT,
            y,
            "窗口内无巡逻数据，各单位覆盖率均为 0 %。 No patrol data in this window: "
            "every unit shows 0 % coverage.",
            fontsize=9,
            color="#9c5700",
        )
    ax = fig.add_axes((LEFT, 0.17, RIGHT - LEFT, 0.66))
    ax.set_axis_off()
    ax.set_title("网格彩图 Colour grid map", fontsize=11)
    units = data.units_map
    if len(units):
        width = 0.1 if data.level == "grid" else 0.3
        colours = [palette.COVERAGE_CLASSES[k].colour for k in units["klass"]]
        units.plot(ax=ax, color=colours, edgecolor="#333333", linewidth=width)
        synthetic = units[units["synthetic"]]
        if len(synthetic):
            synthetic.boundary.plot(ax=ax, color="#333333", linewidth=width, linestyle="--")
        blind = data.blind.frame()
        if len(blind):
            # hatched, so the coverage colours stay readable (and it prints in grey)
            blind.plot(
                ax=ax,
                facecolor="none",
                edgecolor=palette.BLIND_COLOUR,
                hatch=palette.BLIND_HATCH,
                linewidth=0,
            )
    else:
        ax.text(0.5, 0.5, "范围内无单位 No units in scope", ha="center", transform=ax.transAxes)
    handles = [
        Patch(facecolor=k.colour, edgecolor="#333333", label=k.label)
        for k in palette.COVERAGE_CLASSES
    ]
    days = data.blind.days
    handles.append(
        Patch(
            facecolor="white",
            edgecolor=palette.BLIND_COLOUR,
            hatch=palette.BLIND_HATCH,
            label=palette.blind_label(days),
        )
    )
    if data.synthetic:
        handles.append(
            Patch(
                facecolor="white",
                edgecolor="#333333",
                linestyle="--",
                label=f"{labels.SYNTHETIC_ZH} · {labels.SYNTHETIC_EN}",
            )
        )
    fig.legend(
        handles=handles,
        title=labels.LEGEND_TITLE,
        loc="lower center",
        bbox_to_anchor=(0.5, 0.045),
        ncol=2,
        fontsize=7,
        title_fontsize=8,
        frameon=False,
    )
    pages.save(fig)


def _chart_page(pages: Pages, data: ReportData) -> None:
    fig = Figure(figsize=A4_INCHES, layout=ConstrainedLayoutEngine(rect=(0, 0.04, 1, 0.95)))
    grid = fig.add_gridspec(2, 1, height_ratios=[1, 2.2])
    top, bottom = fig.add_subfigure(grid[0]), fig.add_subfigure(grid[1])
    charts.coverage_histogram(data.distribution, level=data.level, into=top)
    charts.daily_km(data.daily_km, into=bottom)
    pages.save(fig)


def wrap(text: str, width: float) -> list[str]:
    """Lines of text that fit a width (share of the page) at 6.5 pt, CJK counted double;
    breaks at spaces where it can, anywhere in CJK runs."""
    room = int(width * 145)
    lines: list[str] = []
    line, used, cut = "", 0, -1  # cut: index in line after the last space
    for ch in text:
        line += ch
        used += 2 if ord(ch) > 0x2E80 else 1
        if ch == " ":
            cut = len(line)
        if used > room:
            at = cut if cut > 0 else len(line) - 1
            lines.append(line[:at].rstrip())
            line = line[at:]
            used = sum(2 if ord(c) > 0x2E80 else 1 for c in line)
            cut = -1
    if line.strip():
        lines.append(line.rstrip())
    return lines
