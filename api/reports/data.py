"""The one data-gathering step behind every report format.

``gather`` reads, for one layout, scope and window: coverage at the chosen level and at every
coarser one (grid → village → township → county), the shapes of the chosen level for the
colour map, the blind spots, the vehicle ranking with its weighted parts, daily km per vehicle
(``device_day``), the coverage distribution and — when dispatch provides them — response
times. Renderers only format what is here; they never query.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
from psycopg import AsyncConnection, sql
from psycopg.rows import dict_row

from api.coverage import metrics, vehicles
from api.coverage.metrics import Window
from api.coverage.update import CoverageUpdater
from api.errors import Unprocessable
from api.progress import NullProgress, Progress
from api.reports import geometry, labels, response_times
from api.reports.geometry import BlindSpots
from api.scope import Scope
from gis import palette
from gis.units import CHINA_OFFSET

HISTOGRAM_EDGES = tuple(range(0, 101, 10))


@dataclass
class ReportData:
    """Everything a report shows, in plain frames; see ``gather``."""

    layout: dict[str, Any]
    level: str
    window: Window
    generated_at: datetime  # China local time, naive
    scope: list[tuple[str, str]]  # (code, name) of the scope's areas; [('*', …)] = all
    note: str | None
    vehicle_days: int
    pending_device_days: int
    levels: dict[str, pd.DataFrame]  # chosen level first, then coarser
    units_map: gpd.GeoDataFrame  # chosen level with shapes and coverage class
    blind: BlindSpots
    ranking: pd.DataFrame
    weights: dict[str, float]
    award_share: float
    flag_share: float
    daily_km: pd.DataFrame  # long: identifier, plate, day, km
    distribution: pd.DataFrame
    response_times: pd.DataFrame = field(default_factory=pd.DataFrame)
    extra_notes: list[str] = field(default_factory=list)
    # the ranking rule (zh, en) from the live settings, the vehicles not in service with their
    # reasons, and the counts (in service, per verdict, not ranked per reason)
    ranking_rule: dict[str, str] = field(default_factory=dict)
    not_ranked: pd.DataFrame = field(default_factory=pd.DataFrame)
    ranking_counts: dict[str, Any] = field(default_factory=dict)

    @property
    def units(self) -> pd.DataFrame:
        """The chosen level's table."""
        return self.levels[self.level]

    @property
    def empty(self) -> bool:
        """No vehicle patrolled in the window."""
        return self.vehicle_days == 0

    @property
    def synthetic(self) -> bool:
        """Some boundary shown is synthetic (demo) rather than surveyed."""
        return bool(self.layout.get("synthetic")) or any(
            bool(frame["synthetic"].any()) for frame in self.levels.values() if len(frame)
        )

    @property
    def title(self) -> str:
        return (
            f"网格巡防覆盖报表 Coverage report · {self.window.first.isoformat()} – "
            f"{self.window.last.isoformat()}"
        )


async def gather(
    conn: AsyncConnection[Any],
    updater: CoverageUpdater,
    scope: Scope,
    layout_id: int,
    window: Window,
    *,
    level: str = "village",
    progress: Progress | None = None,
) -> ReportData:
    """Collect a report's data for a layout, a scope and a window.

    Parameters
    ----------
    scope
        The reader's data scope: rows outside it are not read at all.
    window
        Inclusive China-local days (already checked against the longest window).
    level
        ``grid``, ``village``, ``township`` or ``county``: the level of the map and the CSV.
    progress
        Step-wise progress (the CLI's bar); silent by default.

    Raises
    ------
    NotFound
        For a layout that does not exist or lies outside the scope.
    Unprocessable
        For an unknown level.
    """
    chain = _levels(level)
    task = (progress or NullProgress()).task("报表 report", len(chain) + 5)
    levels: dict[str, pd.DataFrame] = {}
    body: dict[str, Any] = {}
    for at in chain:
        body = await metrics.unit_metrics(conn, updater, scope, layout_id, window, level=at)
        levels[at] = _units(body["units"])
        task.advance()
    layout = await _layout(conn, layout_id)
    shapes = await geometry.unit_shapes(
        conn, layout_id, level, list(levels[level]["code"]), layout_synthetic=layout["synthetic"]
    )
    for at in chain:
        levels[at] = await _with_names(conn, layout_id, at, levels[at], layout["synthetic"])
    task.advance()
    blind_from = max(window.first, window.last - timedelta(days=body["blind_spot_days"] - 1))
    blind = await geometry.blind_spots(
        conn, updater, scope, layout_id, first=blind_from, last=window.last
    )
    task.advance()
    ranked = await vehicles.ranking(conn, updater, scope, window)
    ranking, not_ranked = await _ranking_frames(conn, ranked)
    task.advance()
    daily = await _daily_km(conn, scope, window)
    task.advance()
    times = await response_times.gather(conn, scope, window.first, window.last, level)
    task.advance()
    return ReportData(
        layout=layout,
        level=level,
        window=window,
        generated_at=(datetime.now(UTC) + CHINA_OFFSET).replace(tzinfo=None, microsecond=0),
        scope=await _scope_names(conn, scope),
        note=body["note"],
        vehicle_days=int(body["vehicle_days"]),
        pending_device_days=int(body["pending_device_days"]),
        levels=levels,
        units_map=_map_frame(shapes, levels[level]),
        blind=blind,
        ranking=ranking,
        weights=dict(ranked["weights"]),
        award_share=float(ranked["award_share"]),
        flag_share=float(ranked["flag_share"]),
        daily_km=daily,
        distribution=distribution(levels[level]),
        response_times=times,
        ranking_rule=dict(ranked["rule"]),
        not_ranked=not_ranked,
        ranking_counts=dict(ranked["counts"]),
    )


def _levels(level: str) -> tuple[str, ...]:
    try:
        return labels.levels_from(level)
    except ValueError as exc:
        raise Unprocessable(str(exc), field="level") from exc


_RAW_COLUMNS = (
    "code",
    "name_zh",
    "grids",
    "cells",
    "seen_cells",
    "coverage_pct",
    "vehicle_coverage_pct",
    "foot_coverage_pct",
    "dwell_h",
    "patrol_km",
    "fixes",
    "visits",
    "revisit_mean_s",
    "last_patrol",
    "last_patrol_age_h",
    "blind_cells",
    "vehicles",
)


def _units(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Metrics rows as a frame with the report's derived columns, China-local times."""
    frame = pd.DataFrame(rows, columns=list(_RAW_COLUMNS))
    shares = ("coverage_pct", "vehicle_coverage_pct", "foot_coverage_pct")
    for key in (*shares, "dwell_h", "patrol_km", "last_patrol_age_h", "revisit_mean_s"):
        frame[key] = pd.to_numeric(frame[key], errors="coerce").astype(float)
    for key in shares:
        frame[key] = frame[key].fillna(0.0)
    frame["revisit_mean_h"] = frame.pop("revisit_mean_s") / 3600
    cells = frame["cells"].astype(float)
    frame["blind_pct"] = (100.0 * frame["blind_cells"] / cells.where(cells > 0)).fillna(0.0)
    last = pd.to_datetime(frame["last_patrol"], utc=True)
    frame["last_patrol"] = (last + CHINA_OFFSET).dt.tz_localize(None)
    return frame


async def _with_names(
    conn: AsyncConnection[Any], layout_id: int, level: str, frame: pd.DataFrame, syn: bool
) -> pd.DataFrame:
    """Add ``name_en`` and ``synthetic`` per unit; columns in the report's order."""
    query = (
        "SELECT g.code, a.name_en, (%(syn)s OR coalesce(a.synthetic, false)) FROM grid g "
        "LEFT JOIN admin_area a ON a.code = g.village_code "
        "WHERE g.layout_id = %(layout)s AND g.code = ANY(%(codes)s)"
        if level == "grid"
        else "SELECT nbs_prefix(code), name_en, synthetic FROM admin_area "
        "WHERE level = %(level)s AND nbs_prefix(code) = ANY(%(codes)s)"
    )
    params = {"syn": syn, "layout": layout_id, "level": level, "codes": list(frame["code"])}
    rows = await (await conn.execute(query, params)).fetchall()
    facts = {r[0]: (r[1], bool(r[2])) for r in rows}
    frame = frame.copy()
    frame["name_en"] = [facts.get(c, (None, syn))[0] for c in frame["code"]]
    frame["synthetic"] = [facts.get(c, (None, syn))[1] for c in frame["code"]]
    return frame[[c.key for c in labels.UNIT_COLUMNS]]


def _map_frame(shapes: gpd.GeoDataFrame, units: pd.DataFrame) -> gpd.GeoDataFrame:
    keep = ["code", "name_zh", "coverage_pct", "patrol_km", "visits", "blind_cells", "cells"]
    merged = shapes.merge(units[keep], on="code", how="inner")
    merged["klass"] = palette.coverage_classes(merged["coverage_pct"].to_numpy(dtype=float))
    return gpd.GeoDataFrame(merged, geometry="geometry", crs="EPSG:4326")


async def _layout(conn: AsyncConnection[Any], layout_id: int) -> dict[str, Any]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT id, name, purpose, status, area_code, synthetic, resolution "
            "FROM grid_layout WHERE id = %s",
            (layout_id,),
        )
        row = await cur.fetchone()
    assert row is not None  # noqa: S101 - unit_metrics has checked it exists in the scope
    return dict(row)


async def _ranking_frames(
    conn: AsyncConnection[Any], ranked: dict[str, Any]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The vehicles in service, ranked, with each weighted part of the score (the parts add up
    to the score), and the vehicles not ranked with their reasons; both with village names."""
    specs = (labels.RANKING_COLUMNS, labels.NOT_RANKED_COLUMNS)
    frames = [
        pd.DataFrame(ranked[key]) if ranked[key] else pd.DataFrame(columns=[c.key for c in spec])
        for key, spec in zip(("vehicles", "not_ranked"), specs, strict=True)
    ]
    villages = sorted({v for f in frames for v in f["home_village"].dropna()})
    rows_db = await (
        await conn.execute("SELECT code, name_zh FROM admin_area WHERE code = ANY(%s)", (villages,))
    ).fetchall()
    names = dict(rows_db)
    out = []
    for frame, spec in zip(frames, specs, strict=True):
        frame["village_name"] = [names.get(v) for v in frame["home_village"]]
        out.append(frame[[c.key for c in spec]])
    return out[0], out[1]


async def _daily_km(conn: AsyncConnection[Any], scope: Scope, window: Window) -> pd.DataFrame:
    """km per vehicle and China-local day from ``device_day`` (vehicles in the scope)."""
    query = sql.SQL(
        """
        SELECT d.identifier, d.plate, dd.day, (dd.metres / 1000.0)::float8 AS km,
               (dd.dwell_s / 3600.0)::float8 AS hours
          FROM device_day dd JOIN device d ON d.id = dd.device_id
         WHERE d.kind = 'vehicle' AND dd.day BETWEEN %(d0)s AND %(d1)s AND {scope}
         ORDER BY d.identifier, dd.day
        """
    ).format(scope=scope.where(sql.SQL("coalesce(d.home_village, '')")))
    params = {**scope.params(), "d0": window.first, "d1": window.last}
    rows = await (await conn.execute(query, params)).fetchall()
    return pd.DataFrame(rows, columns=["identifier", "plate", "day", "km", "hours"])


def distribution(units: pd.DataFrame) -> pd.DataFrame:
    """How many units fall in each 10 % coverage band (0 % counted on its own)."""
    values = units["coverage_pct"].to_numpy(dtype=float) if len(units) else np.array([])
    zero = int((values <= 0).sum())
    counts, _ = np.histogram(values[values > 0], bins=HISTOGRAM_EDGES)
    bins = ["0%"] + [f"{lo}–{hi}%" for lo, hi in itertools.pairwise(HISTOGRAM_EDGES)]
    units_per_bin = [zero, *(int(c) for c in counts)]
    total = max(len(values), 1)
    return pd.DataFrame(
        {
            "bin": bins,
            "lower": [0.0, *HISTOGRAM_EDGES[:-1]],
            "units": units_per_bin,
            "share_pct": [100.0 * n / total for n in units_per_bin],
        }
    )


async def _scope_names(conn: AsyncConnection[Any], scope: Scope) -> list[tuple[str, str]]:
    if scope.unrestricted:
        return [("*", "全部 everything")]
    rows = await (
        await conn.execute(
            "SELECT nbs_prefix(code), name_zh FROM admin_area WHERE nbs_prefix(code) = ANY(%s)",
            (list(scope.areas),),
        )
    ).fetchall()
    names = dict(rows)
    return [(a, names.get(a, "")) for a in scope.areas] + [(g, "网格 grid") for g in scope.grids]
