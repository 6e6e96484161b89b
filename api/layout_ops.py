"""Whole-layout operations of a redraw: validate, diff, activate (with lineage), roll back,
export for QGIS and replace grids from a file made in QGIS."""

from __future__ import annotations

import asyncio
import io
import tempfile
import zipfile
from datetime import datetime
from pathlib import Path
from typing import Any

import geopandas as gpd
import orjson
import pyogrio
from psycopg import AsyncConnection

from api import audit
from api.auth import Principal
from api.errors import Conflict, Unprocessable
from api.geo import fetch_frame
from api.layouts import activate_layout, area_prefix, check_overlap, get_layout
from api.progress import NullProgress, Progress
from api.redraw import lock_draft, village_geom, village_grids, write_village
from api.scope import Scope
from gis.boundaries import BoundaryError, geojson_declares_crs, to_wgs84
from gis.redraw import Edit
from gis.topology import Report, validate

EXPORT_FORMATS = {
    "gpkg": ("GPKG", "gpkg"),
    "shp": ("ESRI Shapefile", "zip"),
    "geojson": ("GeoJSON", "geojson"),
}


async def layout_frames(
    conn: AsyncConnection[Any], layout: dict[str, Any]
) -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame]:
    """The layout's grids (with households and workers) and the villages of its area."""
    grids = await fetch_frame(
        conn,
        "SELECT code, village_code, households, worker_id, area_m2, ST_AsBinary(geom) AS wkb "
        "FROM grid WHERE layout_id = %(l)s ORDER BY code",
        {"l": layout["id"]},
    )
    villages = await fetch_frame(
        conn,
        "SELECT code, ST_AsBinary(geom) AS wkb FROM admin_area "
        "WHERE level = 'village' AND code LIKE %(p)s ORDER BY code",
        {"p": area_prefix(layout["area_code"]) + "%"},
    )
    return grids, villages


async def check(
    conn: AsyncConnection[Any], scope: Scope, layout_id: int, *, progress: Progress | None = None
) -> Report:
    layout = await get_layout(conn, scope, layout_id)
    grids, villages = await layout_frames(conn, layout)
    task = (progress or NullProgress()).task("校验 validate", grids["village_code"].nunique())
    return validate(grids, villages, on_village=lambda _code: task.advance())


async def diff(
    conn: AsyncConnection[Any], scope: Scope, layout_id: int, against: int | None
) -> dict[str, Any]:
    """Grids added, removed and changed (area, worker) relative to another layout (default:
    the one it was cloned from)."""
    layout = await get_layout(conn, scope, layout_id)
    base_id = against or layout["cloned_from"]
    if base_id is None:
        raise Unprocessable(
            "this layout was not cloned from another; name one with ?against=", field="against"
        )
    await get_layout(conn, scope, base_id)
    rows = await (
        await conn.execute(
            """
        WITH a AS (SELECT code, geom, area_m2, worker_id FROM grid WHERE layout_id = %(new)s),
             b AS (SELECT code, geom, area_m2, worker_id FROM grid WHERE layout_id = %(old)s)
        SELECT coalesce(a.code, b.code) AS code,
               CASE WHEN b.code IS NULL THEN 'added' WHEN a.code IS NULL THEN 'removed'
                    WHEN NOT ST_Equals(a.geom, b.geom) OR a.worker_id IS DISTINCT FROM b.worker_id
                    THEN 'changed' END AS change,
               b.area_m2 AS area_before_m2, a.area_m2 AS area_after_m2,
               b.worker_id AS worker_before, a.worker_id AS worker_after,
               ST_AsGeoJSON(coalesce(a.geom, b.geom), 6) AS geometry
          FROM a FULL JOIN b ON a.code = b.code
         ORDER BY 1
        """,
            {"new": layout_id, "old": base_id},
        )
    ).fetchall()
    features = [
        {
            "type": "Feature",
            "geometry": orjson.loads(r[6]),
            "properties": {
                "code": r[0],
                "change": r[1],
                "area_before_m2": r[2],
                "area_after_m2": r[3],
                "area_change_m2": None if r[2] is None or r[3] is None else r[3] - r[2],
                "worker_before": r[4],
                "worker_after": r[5],
            },
        }
        for r in rows
        if r[1] is not None
    ]
    summary = {
        k: sum(1 for f in features if f["properties"]["change"] == k)
        for k in ("added", "removed", "changed")
    }
    return {
        "layout": layout_id,
        "against": base_id,
        **summary,
        "type": "FeatureCollection",
        "features": features,
    }


async def activate(
    conn: AsyncConnection[Any],
    actor: Principal,
    layout_id: int,
    *,
    version: int | None,
    effective_from: datetime | None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Validate, then switch: the active layout of the area retires; lineage records how the
    new grids descend from the old ones. A future ``effective_from`` schedules the switch."""
    async with conn.transaction():
        layout = await get_layout(conn, actor.scope, layout_id)
        if version is not None and layout["version"] != version:
            raise Conflict(
                f"layout {layout_id} is at version {layout['version']}, not {version}",
                current_version=layout["version"],
            )
        await check_overlap(conn, layout)
        report = await check(conn, actor.scope, layout_id, progress=progress)
        if not report.valid:
            raise Conflict(
                f"layout {layout_id} does not validate ({len(report.violations)} problems)",
                violations=report.feature_collection(),
            )
        if effective_from is not None and effective_from > await _now(conn):
            await conn.execute(
                "UPDATE grid_layout SET effective_from = %s WHERE id = %s",
                (effective_from, layout_id),
            )
            await audit.record(
                conn,
                actor,
                "layout.schedule",
                object_type="grid_layout",
                object_id=layout_id,
                detail={"effective_from": effective_from.isoformat()},
            )
            return {**await get_layout(conn, actor.scope, layout_id), "scheduled": True}
        previous = await (
            await conn.execute(
                "SELECT id FROM grid_layout "
                "WHERE status = 'active' AND area_code = %s AND purpose = %s",
                (layout["area_code"], layout["purpose"]),
            )
        ).fetchone()
        await activate_layout(conn, actor, layout_id)
        if previous is not None and previous[0] != layout_id:
            await record_lineage(conn, layout_id, int(previous[0]))
    return {**await get_layout(conn, actor.scope, layout_id), "scheduled": False}


async def _now(conn: AsyncConnection[Any]) -> datetime:
    row = await (await conn.execute("SELECT now()")).fetchone()
    assert row is not None  # noqa: S101
    return row[0]


async def record_lineage(conn: AsyncConnection[Any], layout_id: int, from_layout: int) -> None:
    """old code → new code with the share of the old grid's area that went to the new grid."""
    await conn.execute("DELETE FROM grid_lineage WHERE layout_id = %s", (layout_id,))
    await conn.execute(
        """
        INSERT INTO grid_lineage (layout_id, from_layout, old_code, new_code, area_share)
        SELECT %(new)s, %(old)s, o.code, n.code,
               least(ST_Area(ST_Intersection(o.geom, n.geom)::geography)
                     / nullif(ST_Area(o.geom::geography), 0), 1.0)
          FROM grid o JOIN grid n ON n.layout_id = %(new)s AND n.village_code = o.village_code
               AND o.geom && n.geom AND ST_Intersects(o.geom, n.geom)
         WHERE o.layout_id = %(old)s
           AND ST_Area(ST_Intersection(o.geom, n.geom)::geography)
               > 1e-6 * ST_Area(o.geom::geography)
        """,
        {"new": layout_id, "old": from_layout},
    )


async def lineage(conn: AsyncConnection[Any], scope: Scope, layout_id: int) -> list[dict[str, Any]]:
    """How the layout's grids descend from the layout it replaced (old code → new code)."""
    await get_layout(conn, scope, layout_id)
    rows = await (
        await conn.execute(
            "SELECT from_layout, old_code, new_code, area_share FROM grid_lineage "
            "WHERE layout_id = %s ORDER BY old_code, new_code",
            (layout_id,),
        )
    ).fetchall()
    return [
        {"from_layout": r[0], "old_code": r[1], "new_code": r[2], "area_share": round(r[3], 6)}
        for r in rows
    ]


async def rollback(conn: AsyncConnection[Any], actor: Principal, layout_id: int) -> dict[str, Any]:
    """Make a retired layout active again (with its own grids and workers, exactly)."""
    async with conn.transaction():
        layout = await get_layout(conn, actor.scope, layout_id)
        if layout["status"] != "retired":
            raise Conflict(
                f"layout {layout_id} is {layout['status']}; only a retired layout is rolled back to"
            )
        await activate_layout(conn, actor, layout_id)
        await audit.record(
            conn, actor, "layout.rollback", object_type="grid_layout", object_id=layout_id
        )
    return await get_layout(conn, actor.scope, layout_id)


async def export(
    conn: AsyncConnection[Any], scope: Scope, layout_id: int, fmt: str
) -> tuple[bytes, str]:
    """The layout as GeoPackage, zipped Shapefile or GeoJSON (EPSG:4326); returns (bytes, name)."""
    if fmt not in EXPORT_FORMATS:
        raise Unprocessable(f"format must be one of {', '.join(EXPORT_FORMATS)}", field="format")
    await get_layout(conn, scope, layout_id)  # 404 outside the scope
    grids = await fetch_frame(
        conn,
        "SELECT g.code, g.village_code, g.area_m2, g.households, s.name AS worker, "
        "s.phone AS phone, ST_AsBinary(g.geom) AS wkb FROM grid g "
        "LEFT JOIN staff s ON s.id = g.worker_id WHERE g.layout_id = %(l)s ORDER BY g.code",
        {"l": layout_id},
    )
    return await asyncio.to_thread(_write_export, grids, fmt, f"layout_{layout_id}")


def _write_export(grids: gpd.GeoDataFrame, fmt: str, stem: str) -> tuple[bytes, str]:
    driver, ext = EXPORT_FORMATS[fmt]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{stem}.{'shp' if fmt == 'shp' else ext}"
        pyogrio.write_dataframe(grids, path, driver=driver, layer=stem, encoding="UTF-8")
        if fmt != "shp":
            return path.read_bytes(), f"{stem}.{ext}"
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            for part in sorted(Path(tmp).glob(f"{stem}.*")):
                zf.write(part, part.name)
        return buf.getvalue(), f"{stem}.zip"


def read_grid_file(data: bytes, filename: str, crs: str | None) -> gpd.GeoDataFrame:
    """Grids from an uploaded GeoJSON, GeoPackage or zipped Shapefile, in EPSG:4326."""
    suffix = Path(filename).suffix.lower()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"upload{suffix}"
        path.write_bytes(data)
        target = f"/vsizip/{path}" if suffix == ".zip" else str(path)
        try:
            frame = pyogrio.read_dataframe(target)
        except Exception as exc:  # the reader's own message names the problem
            raise Unprocessable(f"cannot read {filename}: {exc}", field="file") from exc
        if crs is None and suffix in (".geojson", ".json") and not geojson_declares_crs(path):
            raise Unprocessable(
                f"{filename} declares no CRS: give crs=wgs84|gcj02|EPSG:…", field="crs"
            )
        try:
            frame, _ = to_wgs84(frame, crs)
        except BoundaryError as exc:
            raise Unprocessable(str(exc), field="crs") from exc
    if "code" not in frame.columns:
        raise Unprocessable(
            f"{filename} has no 'code' field: every grid needs its code", field="file"
        )
    frame["code"] = frame["code"].astype(str)
    return frame


async def replace_from_file(
    conn: AsyncConnection[Any],
    actor: Principal,
    layout_id: int,
    version: int,
    upload: gpd.GeoDataFrame,
    *,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Replace the grids of every village the file touches by the file's grids (codes from the
    file); refused as a whole — with the offending geometries — unless each village validates."""
    villages = sorted({c[:12] for c in upload["code"]})
    async with conn.transaction():
        layout = await lock_draft(conn, actor, layout_id, version)
        for v in villages:
            actor.scope.require_area(v, "this village")
        upload = upload.assign(village_code=[c[:12] for c in upload["code"]], worker_id=None)
        boundaries = gpd.GeoDataFrame(
            {"code": villages},
            geometry=[await village_geom(conn, v) for v in villages],
            crs="EPSG:4326",
        )
        report = validate(upload, boundaries, bounds=None)
        problems = [v for v in report.violations if v.kind != "no_worker"]
        if problems:
            raise Unprocessable(
                f"the file does not tile its villages ({len(problems)} problems)",
                field="file",
                violations={
                    "type": "FeatureCollection",
                    "features": [p.feature() for p in problems],
                },
            )
        task = (progress or NullProgress()).task("替换 replace", len(villages))
        for v in villages:
            before = await village_grids(conn, layout_id, v)
            mine = upload[upload["village_code"] == v][["code", "village_code", "geometry"]]
            await write_village(
                conn,
                layout_id,
                v,
                before,
                Edit(mine.reset_index(drop=True)),
                layout["resolution"],
                boundaries.set_index("code").geometry[v],
            )
            task.advance()
        row = await (
            await conn.execute(
                "UPDATE grid_layout SET version = version + 1 WHERE id = %s RETURNING version",
                (layout_id,),
            )
        ).fetchone()
        await audit.record(
            conn,
            actor,
            "layout.replace",
            object_type="grid_layout",
            object_id=layout_id,
            detail={"villages": villages, "grids": len(upload)},
        )
    assert row is not None  # noqa: S101
    return {"layout": layout_id, "version": int(row[0]), "villages": villages, "grids": len(upload)}


async def activate_due(conn: AsyncConnection[Any], actor: Principal) -> list[int]:
    """Activate the drafts whose scheduled ``effective_from`` has come (a periodic task)."""
    due = await (
        await conn.execute(
            "SELECT id, version FROM grid_layout "
            "WHERE status = 'draft' AND effective_from <= now() ORDER BY effective_from"
        )
    ).fetchall()
    done = []
    for layout_id, version in due:
        try:
            await activate(conn, actor, layout_id, version=version, effective_from=None)
        except Conflict:
            continue  # invalid meanwhile or overlapping: stays a draft, the planner sees why
        done.append(int(layout_id))
    return done
