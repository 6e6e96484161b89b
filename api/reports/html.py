"""The HTML report: one self-contained page (opens from a file, no network needed).

The colour grid map (网格彩图) is a folium map whose scripts and styles are inlined from our
vendored copies; only basemap tiles come from outside, and without them the coloured units,
blind spots and legend still draw on a plain background. Charts are inline PNGs.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import folium
import pandas as pd
from branca.element import MacroElement
from jinja2 import Template

from api.coverage import vehicles
from api.reports import charts, labels, response_times
from api.reports.data import ReportData
from api.reports.fonts import cjk_style
from gis import maps, palette

STATIC = Path(__file__).resolve().parents[1] / "static"
XILINGOL_CENTER = (44.2, 115.5)
_LOCAL_SCRIPT = re.compile(r'<script src="/static/(vendor/[^"]+\.js)"></script>')
_LOCAL_STYLE = re.compile(r'<link rel="stylesheet" href="/static/(vendor/[^"]+\.css)"\s*/?>')

CSS = """
html, body { height: auto; }
body { font: 14px/1.45 "WenQuanYi Micro Hei", "Noto Sans CJK SC", sans-serif; margin: 0;
       color: #222; background: #fff; }
.gp-page { max-width: 1200px; margin: 0 auto; padding: 16px 20px 40px; }
.gp-page h1 { font-size: 22px; margin: 0 0 6px; }
.gp-page h2 { font-size: 18px; margin: 28px 0 8px; border-bottom: 2px solid #ddd; }
.gp-meta td { padding: 1px 12px 1px 0; vertical-align: top; }
.gp-note { background: #fff3cd; border: 1px solid #f0b429; padding: 8px 12px; margin: 10px 0;
           border-radius: 4px; }
.gp-synthetic { background: #fff8e1; border: 1px dashed #c77c02; padding: 6px 12px;
                margin: 10px 0; border-radius: 4px; }
.gp-map .folium-map { height: 640px !important; position: relative !important; }
.gp-map { border: 1px solid #ccc; margin: 12px auto; max-width: 1200px; }
table.gp { border-collapse: collapse; font-size: 12px; }
.gp-scroll table.gp { width: 100%; }
table.gp th { background: #f0f3f5; position: sticky; top: 0; text-align: left;
              border-bottom: 1px solid #999; padding: 3px 6px; }
table.gp td { border-bottom: 1px solid #eee; padding: 2px 6px; white-space: nowrap; }
table.gp td.num { text-align: right; font-variant-numeric: tabular-nums; }
table.gp tr.award td:nth-child(2) { color: #1a9850; font-weight: bold; }
table.gp tr.flagged td:nth-child(2) { color: #d73027; font-weight: bold; }
table.gp tr.no_patrol td { color: #999999; }
.gp-rule { max-width: 1100px; font-size: 13px; line-height: 1.5; }
.gp-scroll { max-height: 520px; overflow: auto; border: 1px solid #ddd; }
.gp-legend { background: rgba(255,255,255,.92); padding: 8px 10px; border-radius: 4px;
             font: 12px/1.5 sans-serif; box-shadow: 0 0 6px rgba(0,0,0,.3); }
.gp-legend i { display: inline-block; width: 14px; height: 12px; margin-right: 6px;
               vertical-align: -2px; border: 1px solid #555; }
.gp-chart { max-width: 100%; }
@media print { .gp-scroll { max-height: none; overflow: visible; } .gp-map { display: none; } }
"""
NUMERIC = {"int", "float1", "float3", "pct"}
TOOLTIP_FIELDS = ["name_zh", "code", "coverage_pct", "patrol_km", "visits", "blind_cells", "source"]
TOOLTIP_ALIASES = [
    "名称 Name",
    "代码 Code",
    "覆盖率% Coverage %",
    "里程km Patrol km",
    "巡查次数 Visits",
    "盲区单元 Blind cells",
    "边界来源 Boundary",
]


class Legend(MacroElement):
    """A Leaflet control in the map's corner holding ready HTML (a legend)."""

    _template = Template(
        """
        {% macro script(this, kwargs) %}
        (function () {
            var legend = L.control({position: "bottomright"});
            legend.onAdd = function () {
                var div = L.DomUtil.create("div", "gp-legend");
                div.innerHTML = {{ this.literal }};
                return div;
            };
            legend.addTo({{ this._parent.get_name() }});
        })();
        {% endmacro %}
        """
    )

    def __init__(self, body: str) -> None:
        super().__init__()
        self._name = "Legend"
        # a JS string literal that keeps the Chinese readable in the page source
        self.literal = json.dumps(body, ensure_ascii=False).replace("</", "<\\/")


def legend_html(data: ReportData) -> str:
    """The map legend in Chinese and English: coverage classes, blind spots, synthetic."""
    rows = [f"<b>{labels.LEGEND_TITLE}</b><br>"]
    rows += [
        f'<i style="background:{k.colour}"></i>{html.escape(k.label)}<br>'
        for k in palette.COVERAGE_CLASSES
    ]
    days = data.blind.days
    rows.append(
        f'<i style="background:{palette.BLIND_SWATCH_CSS}"></i>{palette.blind_label(days)}<br>'
    )
    if data.synthetic:
        rows.append(
            '<i style="background:#fff;border:1px dashed #333"></i>'
            f"{labels.SYNTHETIC_ZH}<br>{labels.SYNTHETIC_EN}"
        )
    return "".join(rows)


def coverage_map(data: ReportData) -> folium.Map:
    """The colour grid map: units coloured by coverage class, blind spots on top."""
    units = data.units_map
    if len(units):
        x0, y0, x1, y1 = units.total_bounds
        center = ((y0 + y1) / 2, (x0 + x1) / 2)
    else:
        center = XILINGOL_CENTER
    fmap = maps.base_map(center, zoom=7)
    weight = 0.5 if data.level == "grid" else 1.0
    if len(units):
        shown = units[
            ["code", "name_zh", "coverage_pct", "patrol_km", "visits", "blind_cells", "klass"]
        ].copy()
        shown["source"] = units["synthetic"].map({True: "合成 synthetic", False: "实测 real"})
        shown["dashed"] = units["synthetic"]
        shown = shown.set_geometry(units.geometry)
        folium.GeoJson(
            shown,
            name=f"覆盖率 Coverage · {labels.level_label(data.level)}",
            style_function=_unit_style(weight),
            tooltip=folium.GeoJsonTooltip(
                fields=TOOLTIP_FIELDS,
                aliases=TOOLTIP_ALIASES,
            ),
            zoom_on_click=False,
        ).add_to(fmap)
        fmap.fit_bounds([[y0, x0], [y1, x1]])
    blind = data.blind.frame()
    if len(blind):
        folium.GeoJson(
            blind,
            name=f"盲区 Blind spots ({data.blind.days} d)",
            style_function=lambda _f: {
                "fillColor": palette.BLIND_COLOUR,
                "fillOpacity": palette.BLIND_FILL_OPACITY,
                "color": palette.BLIND_COLOUR,
                "weight": 0.5,
            },
        ).add_to(fmap)
    fmap.add_child(Legend(legend_html(data)))
    folium.LayerControl(collapsed=False).add_to(fmap)
    return fmap


def _unit_style(weight: float) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def style(feature: dict[str, Any]) -> dict[str, Any]:
        props = feature["properties"]
        return {
            "fillColor": palette.COVERAGE_CLASSES[int(props["klass"])].colour,
            "fillOpacity": 0.75,
            "color": "#333333",
            "weight": weight,
            "dashArray": "4 3" if props["dashed"] else None,
        }

    return style


def table(
    frame: pd.DataFrame,
    columns: Sequence[labels.Column],
    *,
    row_class: str | None = None,
) -> str:
    """An HTML table with bilingual headers; numbers right-aligned and formatted."""
    head = "".join(f"<th>{html.escape(c.zh)}<br>{html.escape(c.en)}</th>" for c in columns)
    body = []
    for record in frame.to_dict("records"):
        cls = f' class="{html.escape(str(record[row_class]))}"' if row_class else ""
        cells = "".join(
            f'<td class="num">{labels.cell_text(record[c.key], c.kind)}</td>'
            if c.kind in NUMERIC
            else f"<td>{html.escape(labels.cell_text(record[c.key], c.kind))}</td>"
            for c in columns
        )
        body.append(f"<tr{cls}>{cells}</tr>")
    return f'<table class="gp"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def render_html(data: ReportData) -> str:
    """The whole report page as one HTML string (UTF-8)."""
    with cjk_style():
        histogram = charts.png_data_uri(
            charts.coverage_histogram(data.distribution, level=data.level)
        )
        km = charts.png_data_uri(charts.daily_km(data.daily_km))
    page = maps.render(coverage_map(data), title=data.title)
    page = inline_assets(page)
    page = page.replace("</head>", f"<style>{CSS}</style></head>", 1)
    page = page.replace(
        '<div class="folium-map"', f'{_header(data)}<div class="gp-map"><div class="folium-map"', 1
    )
    page = re.sub(r'(<div class="folium-map" id="[^"]+" ></div>)', r"\1</div>", page, count=1)
    sections = _sections(data, histogram, km)
    return page.replace("</body>", f'<div class="gp-page">{sections}</div></body>', 1)


def inline_assets(page: str) -> str:
    """Replace ``/static/vendor`` script and stylesheet links with their content, so the page
    needs neither our server nor the internet."""

    def script(match: re.Match[str]) -> str:
        code = (STATIC / match.group(1)).read_text(encoding="utf-8")
        return "<script>" + code.replace("</script", "<\\/script") + "</script>"

    def style(match: re.Match[str]) -> str:
        return "<style>" + (STATIC / match.group(1)).read_text(encoding="utf-8") + "</style>"

    return _LOCAL_STYLE.sub(style, _LOCAL_SCRIPT.sub(script, page))


def _header(data: ReportData) -> str:
    layout = data.layout
    coarsest = data.levels[labels.LEVELS[-1]]
    cells = int(coarsest["cells"].sum())
    seen = int(coarsest["seen_cells"].sum())
    overall = 100.0 * seen / cells if cells else 0.0
    scope = ", ".join(f"{code} {name}" for code, name in data.scope)
    meta = [
        ("网格方案 Layout", f"{layout['name']} (#{layout['id']}, {layout['purpose']})"),
        ("时间窗口 Window", f"{data.window.first} – {data.window.last} ({data.window.days} d)"),
        ("层级 Level", labels.level_label(data.level)),
        ("数据范围 Scope", scope),
        ("总体覆盖率 Overall coverage", f"{overall:.1f} % ({seen:,} / {cells:,})"),
        ("巡逻里程 Patrol km", f"{float(coarsest['patrol_km'].sum()):,.1f}"),
        ("盲区单元 Blind cells", f"{data.blind.cells:,} ({data.blind.first} – {data.blind.last})"),
        ("出车天次 Vehicle-days", f"{data.vehicle_days:,}"),
        ("生成时间 Generated", f"{data.generated_at:%Y-%m-%d %H:%M} (UTC+8)"),
    ]
    rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>" for k, v in meta)
    notes = ""
    if data.empty:
        notes += (
            '<div class="gp-note" id="empty-note"><b>窗口内无巡逻数据</b>：各单位覆盖率均为 0 %。'
            f"<br><b>No patrol data in this window</b>: {html.escape(data.note or '')}</div>"
        )
    elif data.note:
        notes += f'<div class="gp-note">{html.escape(data.note)}</div>'
    if data.synthetic:
        notes += (
            '<div class="gp-synthetic" id="synthetic-note">本报表中的苏木乡镇、嘎查村与网格边界为'
            "<b>合成演示数据</b>（地图上以虚线显示）。<br>Township, village and grid boundaries "
            "in this report are <b>synthetic demo data</b> (dashed on the map).</div>"
        )
    return (
        f'<div class="gp-page"><h1>{html.escape(data.title)}</h1>'
        f'<table class="gp-meta">{rows}</table>{notes}'
        "<h2>网格彩图 Colour grid map</h2></div>"
    )


def _sections(data: ReportData, histogram: str, km: str) -> str:
    ranking = table(data.ranking, labels.RANKING_COLUMNS, row_class="verdict")
    parts = [
        "<h2>覆盖率分布 Coverage distribution</h2>",
        f'<img class="gp-chart" alt="coverage distribution" src="{histogram}">',
        table(data.distribution, labels.DISTRIBUTION_COLUMNS),
    ]
    for level, frame in data.levels.items():
        parts.append(f"<h2>各{labels.LEVEL_ZH[level]}覆盖 Coverage per {level}</h2>")
        parts.append(f"<p>{len(frame):,} {labels.level_label(level)}</p>")
        parts.append(f'<div class="gp-scroll">{table(frame, labels.UNIT_COLUMNS)}</div>')
    parts += [
        "<h2>车辆日里程 Daily km per vehicle</h2>",
        f'<img class="gp-chart" alt="daily km per vehicle" src="{km}">',
        '<h2 id="ranking">车辆排名 Vehicle ranking</h2>',
        _ranking_rule(data),
        f'<div class="gp-scroll">{ranking}</div>',
        '<h3 id="not-ranked">未排名车辆 Vehicles not ranked (not in service)</h3>',
        f'<div class="gp-scroll">{table(data.not_ranked, labels.NOT_RANKED_COLUMNS)}</div>',
        "<h2>响应时间 Response times</h2>",
    ]
    times = data.response_times
    if times.empty:
        parts.append("<p>窗口内无出警记录。No dispatches in this window.</p>")
    else:
        parts.append(f'<div class="gp-scroll">{table(times, response_times.columns(times))}</div>')
    parts.append(
        f"<p style='color:#777'>GridPatrol · {html.escape(data.title)} · "
        f"{data.generated_at:%Y-%m-%d %H:%M}</p>"
    )
    return "".join(parts)


def _ranking_rule(data: ReportData) -> str:
    """The rule (中文, English) from the live settings, and the counts behind it."""
    rule = data.ranking_rule
    counts = data.ranking_counts
    summary = vehicles.summary(counts)
    return (
        f'<div class="gp-rule" id="ranking-rule"><p lang="zh">{html.escape(rule.get("zh", ""))}'
        f'</p><p lang="en">{html.escape(rule.get("en", ""))}</p>'
        f"<p><b>{html.escape(summary)}</b></p></div>"
    )
