"""Staff (网格员/网格长/信息员) and alert points (报警点): imports, listings, siting.

Imports read CSV, XLSX or GeoJSON, check every row first and write nothing when a row is bad
(the error lists row numbers). Alert points get their village by location; their grid is found
by location in whichever layout is asked about, so a redraw needs no re-assignment.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
from psycopg import AsyncConnection, sql
from psycopg.rows import dict_row
from shapely.geometry.base import BaseGeometry

from api import audit, geo, offload
from api.auth import Principal
from api.errors import NotFound, Unprocessable, scrub_paths
from api.geo import fetch_frame
from api.scope import Scope
from api.settings import ApiSettings
from gis.crs import to_wgs84
from gis.gridpieces import local_epsg, to_local
from gis.siting import (
    SitingError,
    candidate_grid,
    coverage_of,
    demand_from_cells,
    site_alert_points,
)

STAFF_ROLES = ("worker", "leader", "informant")
ALERT_KINDS = ("alarm_phone", "informant", "camera", "station")
MAX_ROWS_REPORTED = 20


def read_table(data: bytes, filename: str) -> pd.DataFrame:
    """Rows of a CSV, XLSX or GeoJSON file; GeoJSON points add ``lon``/``lat`` columns."""
    suffix = PurePath(filename).suffix.lower()
    try:
        if suffix in (".xlsx", ".xlsm"):
            return pd.read_excel(io.BytesIO(data), dtype=str)
        if suffix in (".geojson", ".json"):
            frame = gpd.read_file(io.BytesIO(data))
            out = pd.DataFrame(frame.drop(columns="geometry"))
            out["lon"], out["lat"] = frame.geometry.x, frame.geometry.y
            return out.astype({c: str for c in out.columns if c not in ("lon", "lat")})
        if suffix in (".csv", ".txt", ""):
            return pd.read_csv(
                io.BytesIO(data), dtype=str, encoding="utf-8-sig", sep=None, engine="python"
            )
    except Exception as exc:  # any reader failure is the file's problem
        detail = scrub_paths(str(exc), filename)  # pyogrio names its /vsimem/ path
        raise Unprocessable(f"cannot read {filename}: {detail}", field="file") from exc
    raise Unprocessable(f"unsupported file {filename}: use .csv, .xlsx or .geojson", field="file")


def _need(frame: pd.DataFrame, columns: tuple[str, ...]) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise Unprocessable(
            f"missing columns: {', '.join(missing)} (have: {', '.join(map(str, frame.columns))})",
            field="file",
        )


def _fail(problems: list[str]) -> None:
    if problems:
        shown = "; ".join(problems[:MAX_ROWS_REPORTED])
        more = (
            f" (and {len(problems) - MAX_ROWS_REPORTED} more)"
            if len(problems) > MAX_ROWS_REPORTED
            else ""
        )
        raise Unprocessable(shown + more, field="file", errors=problems)


async def _known_villages(conn: AsyncConnection[Any], codes: list[str]) -> set[str]:
    rows = await (
        await conn.execute(
            "SELECT code FROM admin_area WHERE level = 'village' AND code = ANY(%s)", (codes,)
        )
    ).fetchall()
    return {r[0] for r in rows}


@dataclass(frozen=True)
class ImportResult:
    inserted: int
    updated: int
    unassigned: int = 0


async def import_staff(
    conn: AsyncConnection[Any], actor: Principal, frame: pd.DataFrame
) -> ImportResult:
    """Staff rows (name, phone, village_code, role). Phones are the key: a phone already known
    is updated; a phone twice in the file, an unknown village or role refuse the whole file."""
    frame = frame.rename(columns={"village": "village_code"})
    _need(frame, ("name", "phone", "village_code"))
    frame = frame.fillna("")
    frame["role"] = frame["role"].str.strip().replace("", "worker") if "role" in frame else "worker"
    frame["phone"] = frame["phone"].str.replace(r"[\s-]", "", regex=True)
    rows = frame.index.to_numpy() + 2  # header is line 1
    problems = [
        f"row {r}: phone {p} repeats row {first}"
        for r, p, first in _repeats(frame["phone"].tolist(), rows)
    ]
    known = await _known_villages(conn, sorted(set(frame["village_code"])))
    for r, name, phone, village, role in zip(
        rows, frame["name"], frame["phone"], frame["village_code"], frame["role"], strict=True
    ):
        if not name.strip() or not phone:
            problems.append(f"row {r}: name and phone are required")
        if village not in known:
            problems.append(f"row {r}: unknown village code {village!r}")
        elif not actor.scope.covers_area(village):
            problems.append(f"row {r}: village {village} is outside your scope")
        if role not in STAFF_ROLES:
            problems.append(f"row {r}: role {role!r} is not one of {', '.join(STAFF_ROLES)}")
    _fail(problems)
    async with conn.transaction():
        existing = {
            r[0]
            for r in await (
                await conn.execute(
                    "SELECT phone FROM staff WHERE phone = ANY(%s)", (frame["phone"].tolist(),)
                )
            ).fetchall()
        }
        await conn.execute(
            """
            INSERT INTO staff (name, phone, role, village_code, synthetic)
            SELECT n, p, r, v, s FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[],
                                             %s::bool[]) AS u(n, p, r, v, s)
            ON CONFLICT (phone) DO UPDATE SET name = EXCLUDED.name, role = EXCLUDED.role,
                village_code = EXCLUDED.village_code, active = true
            """,
            (
                frame["name"].str.strip().tolist(),
                frame["phone"].tolist(),
                frame["role"].tolist(),
                frame["village_code"].tolist(),
                _flags(frame, "synthetic"),
            ),
        )
        await audit.record(
            conn,
            actor,
            "staff.import",
            object_type="staff",
            detail={"rows": len(frame), "updated": len(existing)},
        )
    return ImportResult(inserted=len(frame) - len(existing), updated=len(existing))


def _repeats(values: list[str], rows: np.ndarray) -> list[tuple[int, str, int]]:
    first: dict[str, int] = {}
    out = []
    for r, v in zip(rows, values, strict=True):
        if v in first:
            out.append((int(r), v, first[v]))
        else:
            first[v] = int(r)
    return out


def _flags(frame: pd.DataFrame, column: str) -> list[bool]:
    if column not in frame:
        return [False] * len(frame)
    return [str(v).strip().lower() in ("1", "true", "yes", "y") for v in frame[column]]


async def import_alert_points(
    conn: AsyncConnection[Any],
    actor: Principal,
    frame: pd.DataFrame,
    *,
    crs: str = "wgs84",
    keep_unassigned: bool = False,
) -> ImportResult:
    """Alert points (kind, name, lat, lon[, phone]); the village comes from the location.
    A point outside every village refuses the file unless ``keep_unassigned``."""
    _need(frame, ("kind", "name", "lat", "lon"))
    frame = frame.reset_index(drop=True)
    rows = frame.index.to_numpy() + 2
    lat = pd.to_numeric(frame["lat"], errors="coerce").to_numpy(float)
    lon = pd.to_numeric(frame["lon"], errors="coerce").to_numpy(float)
    problems = [f"row {r}: lat/lon are not numbers" for r in rows[np.isnan(lat) | np.isnan(lon)]]
    kinds = frame["kind"].fillna("").str.strip()
    problems += [
        f"row {r}: kind {k!r} is not one of {', '.join(ALERT_KINDS)}"
        for r, k in zip(rows, kinds, strict=True)
        if k not in ALERT_KINDS
    ]
    _fail(problems)
    lon, lat = to_wgs84(lon, lat, crs)
    villages = await (
        await conn.execute(
            """
        SELECT (SELECT code FROM admin_area a WHERE a.level = 'village'
                  AND ST_Covers(a.geom, ST_SetSRID(ST_MakePoint(x, y), 4326)) ORDER BY code LIMIT 1)
          FROM unnest(%s::float8[], %s::float8[]) WITH ORDINALITY AS u(x, y, n) ORDER BY n
        """,
            (lon.tolist(), lat.tolist()),
        )
    ).fetchall()
    village = [v[0] for v in villages]
    outside = [int(r) for r, v in zip(rows, village, strict=True) if v is None]
    if outside and not keep_unassigned:
        _fail(
            [
                f"row {r}: the point lies outside every village (keep it with keep_unassigned)"
                for r in outside
            ]
        )
    problems = [
        f"row {r}: village {v} is outside your scope"
        for r, v in zip(rows, village, strict=True)
        if v is not None and not actor.scope.covers_area(v)
    ]
    if outside and not actor.scope.unrestricted:
        problems += [
            f"row {r}: only a league-wide user may keep points outside the villages"
            for r in outside
        ]
    _fail(problems)
    phones = frame["phone"].fillna("").tolist() if "phone" in frame else [""] * len(frame)
    async with conn.transaction():
        await conn.execute(
            """
            INSERT INTO alert_point (kind, name, phone, village_code, synthetic, geom)
            SELECT k, n, nullif(p, ''), v, s, ST_SetSRID(ST_MakePoint(x, y), 4326)
              FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::bool[],
                          %s::float8[], %s::float8[]) AS u(k, n, p, v, s, x, y)
            """,
            (
                kinds.tolist(),
                frame["name"].fillna("").tolist(),
                phones,
                village,
                _flags(frame, "synthetic"),
                lon.tolist(),
                lat.tolist(),
            ),
        )
        await audit.record(
            conn,
            actor,
            "alert_point.import",
            object_type="alert_point",
            detail={"rows": len(frame), "unassigned": len(outside)},
        )
    return ImportResult(inserted=len(frame), updated=0, unassigned=len(outside))


def _staff_scope(scope: Scope) -> sql.Composable:
    return scope.where("s.village_code", with_grid_villages=True)


async def list_staff(
    conn: AsyncConnection[Any], scope: Scope, *, village: str | None = None
) -> list[dict[str, Any]]:
    query = sql.SQL(
        "SELECT s.id, s.name, s.phone, s.role, s.village_code, s.synthetic, s.active FROM staff s "
        "WHERE {} AND (%(v)s::text IS NULL OR s.village_code LIKE %(v)s || '%%') ORDER BY s.id"
    ).format(_staff_scope(scope))
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, {**scope.params(), "v": village})
        return await cur.fetchall()


async def alert_points_geojson(
    conn: AsyncConnection[Any],
    scope: Scope,
    *,
    layout_id: int | None,
    village: str | None = None,
) -> str:
    """Alert points in the scope with the grid (of ``layout_id``) each lies in."""
    inner = sql.SQL(
        """
        SELECT a.id, a.kind, a.name, a.phone, a.village_code, a.synthetic,
               (SELECT g.code FROM grid g WHERE g.layout_id = %(layout)s
                   AND ST_Covers(g.geom, a.geom) ORDER BY g.code LIMIT 1) AS grid_code,
               a.geom
          FROM alert_point a
         WHERE {scope} AND (%(v)s::text IS NULL OR a.village_code LIKE %(v)s || '%%')
        """
    ).format(scope=scope.where(sql.SQL("coalesce(a.village_code, '')"), with_grid_villages=True))
    query = geo.feature_collection(inner, order_by="id")
    return await geo.fetch_text(conn, query, {**scope.params(), "layout": layout_id, "v": village})


class SitingTooLarge(SitingError):
    """The siting problem exceeds a configured limit (the message names it)."""


def _siting_problem(
    area: BaseGeometry,
    demand: gpd.GeoDataFrame | None,
    spacing_m: float,
    max_candidates: int,
    max_pairs: int,
) -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame]:
    """Candidates on the lattice and the demand (the village's fine cells when ``demand`` is
    None), refused with ``SitingTooLarge`` beyond the limits — the lattice is counted from the
    bounding box before it is built, so a tiny spacing on a big village costs nothing."""
    spacing = f"{spacing_m:g} m"
    setting = "GRIDPATROL_API_SITING_MAX_CANDIDATES"
    epsg = local_epsg(area)
    minx, miny, maxx, maxy = to_local(area, epsg)[0].bounds
    columns, rows = math.ceil((maxx - minx) / spacing_m), math.ceil((maxy - miny) / spacing_m)
    lattice = (columns + 2) * (rows + 2)
    if lattice * 0.01 > max_candidates:  # even a thin village keeps > 1 % of its bounding box
        raise SitingTooLarge(
            f"too many candidate points: ≈ {lattice:,} in the village's bounding box at spacing_m "
            f"{spacing} (limit {max_candidates:,}, {setting}); use a larger spacing_m"
        )
    candidates = candidate_grid(area, spacing_m)
    if len(candidates) > max_candidates:
        raise SitingTooLarge(
            f"too many candidate points: {len(candidates):,} at spacing_m {spacing} "
            f"(limit {max_candidates:,}, {setting}); use a larger spacing_m"
        )
    if demand is None:
        from gis.gridcells import cells_in_boundary  # noqa: PLC0415

        demand = demand_from_cells(cells_in_boundary(area))
    if len(candidates) * len(demand) > max_pairs:
        raise SitingTooLarge(
            f"the siting problem is too large: {len(candidates):,} candidates × {len(demand):,} "
            f"demand points (limit {max_pairs:,} pairs, GRIDPATROL_API_SITING_MAX_PAIRS); "
            "use a larger spacing_m"
        )
    return candidates, demand


def solve_siting(
    area: BaseGeometry,
    demand: gpd.GeoDataFrame | None,
    current: gpd.GeoDataFrame,
    *,
    k: int,
    radius_m: float,
    method: str,
    spacing_m: float,
    max_candidates: int,
    max_pairs: int,
) -> dict[str, Any]:
    """The CPU part of ``site`` (run in a worker process): build the problem within the limits,
    solve it, compare with the current points."""
    weight = "count" if demand is not None else None
    candidates, demand = _siting_problem(area, demand, spacing_m, max_candidates, max_pairs)
    result = site_alert_points(
        demand, candidates, k=k, radius_m=radius_m, method=method, demand_weight=weight
    )
    before = coverage_of(current, demand, radius_m, demand_weight=weight) if len(current) else 0.0
    return {
        "demand": "households" if weight else "fine cells",
        "current_points": len(current),
        "coverage_before_pct": round(before, 2),
        "coverage_after_pct": round(result.coverage_pct, 2),
        "mean_distance_m": round(result.mean_distance_m, 1),
        "chosen": [{"lon": round(p.x, 6), "lat": round(p.y, 6)} for p in result.chosen.geometry],
    }


async def site(
    conn: AsyncConnection[Any],
    scope: Scope,
    village: str,
    *,
    k: int,
    radius_km: float,
    method: str = "mclp",
    spacing_m: float = 1000.0,
    limits: ApiSettings | None = None,
) -> dict[str, Any]:
    """Where ``k`` alert points should go in a village: the optimal set versus today's points,
    demand = households (or the village's fine cells when none are recorded). The problem is
    built and solved in a worker process (``api.offload``), within ``limits``
    (``siting_max_candidates``, ``siting_max_pairs``: 422 naming the limit beyond)."""
    limits = limits or ApiSettings()
    if not scope.covers_area(village) and not scope.sees_area(village):
        raise NotFound(f"no village {village}")
    area = await fetch_frame(
        conn,
        "SELECT code, ST_AsBinary(geom) AS wkb FROM admin_area "
        "WHERE code = %(c)s AND level = 'village'",
        {"c": village},
    )
    if area.empty:
        raise NotFound(f"no village {village}")
    demand = await fetch_frame(
        conn,
        "SELECT count, ST_AsBinary(geom) AS wkb FROM household WHERE village_code = %(c)s",
        {"c": village},
    )
    current = await fetch_frame(
        conn,
        "SELECT id, name, ST_AsBinary(geom) AS wkb FROM alert_point WHERE village_code = %(c)s",
        {"c": village},
    )
    try:
        solved = await offload.in_process(
            limits,
            solve_siting,
            area.geometry.iloc[0],
            None if demand.empty else demand,
            current,
            k=k,
            radius_m=radius_km * 1000,
            method=method,
            spacing_m=spacing_m,
            max_candidates=limits.siting_max_candidates,
            max_pairs=limits.siting_max_pairs,
        )
    except SitingTooLarge as exc:
        raise Unprocessable(str(exc), field="spacing_m") from exc
    except SitingError as exc:
        raise Unprocessable(str(exc), field="k") from exc
    return {"village": village, "k": k, "radius_km": radius_km, "method": method, **solved}
