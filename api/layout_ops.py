"""Whole-layout operations of a redraw: validate, diff, activate (with lineage), roll back,
export for QGIS and replace grids from a file made in QGIS."""

from __future__ import annotations

import asyncio
import io
import tempfile
import zipfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import geopandas as gpd
import orjson
import pyogrio
from psycopg import AsyncConnection, sql

from api import audit
from api.auth import SATISFIES, SYSTEM, Principal
from api.errors import Conflict, Forbidden, NotFound, Unprocessable, scrub_paths
from api.geo import fetch_frame
from api.layouts import activate_layout, area_prefix, check_overlap, get_layout
from api.progress import NullProgress, Progress
from api.redraw import lock_draft, village_geom, village_grids, write_village
from api.scope import Scope
from gis.boundaries import BoundaryError, geojson_declares_crs, to_wgs84
from gis.redraw import Edit
from gis.topology import Report, Violation, validate

EXPORT_FORMATS = {
    "gpkg": ("GPKG", "gpkg"),
    "shp": ("ESRI Shapefile", "zip"),
    "geojson": ("GeoJSON", "geojson"),
}


def _grid_scope(scope: Scope, column: str = "code") -> sql.Composable:
    """The scope predicate on a grid code column (area prefixes and the scope's own grids)."""
    return scope.where(column, column)


async def layout_frames(
    conn: AsyncConnection[Any],
    layout: dict[str, Any],
    scope: Scope | None = None,
    *,
    only: list[str] | None = None,
) -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame]:
    """The layout's grids (with households and workers) and the villages of its area; with a
    restricted ``scope``, only the villages the scope touches (its areas' villages and the
    villages of its grids) and all the grids of those villages — a village is validated whole;
    what is shown is cut to the scope by the caller. ``only`` (village codes) narrows both to
    those villages (an edit re-validates the villages it touched)."""
    scope = scope or Scope.everything()
    villages_in = scope.where("village_code", with_grid_villages=True)
    grids = await fetch_frame(
        conn,
        sql.SQL(
            "SELECT code, village_code, households, worker_id, area_m2, "
            "ST_AsBinary(geom) AS wkb FROM grid WHERE layout_id = %(l)s AND {} "
            "AND (%(only)s::text[] IS NULL OR village_code = ANY(%(only)s)) ORDER BY code"
        ).format(villages_in),
        {**scope.params(), "l": layout["id"], "only": only},
    )
    villages = await fetch_frame(
        conn,
        sql.SQL(
            "SELECT code, ST_AsBinary(geom) AS wkb FROM admin_area "
            "WHERE level = 'village' AND code LIKE %(p)s AND {} "
            "AND (%(only)s::text[] IS NULL OR code = ANY(%(only)s)) ORDER BY code"
        ).format(scope.where("code", with_grid_villages=True)),
        {**scope.params(), "p": area_prefix(layout["area_code"]) + "%", "only": only},
    )
    return grids, villages


def visible_violations(
    scope: Scope, village: str | None, violations: list[Violation]
) -> list[Violation]:
    """The violations a scope may see: every grid they name lies in the scope; one naming no
    grid (a gap) when the scope covers its village."""
    if scope.unrestricted:
        return violations
    return [
        v
        for v in violations
        if (
            all(scope.covers_grid(c) for c in v.codes)
            if v.codes
            else bool(village and scope.covers_area(village))
        )
    ]


async def check(
    conn: AsyncConnection[Any],
    scope: Scope,
    layout_id: int,
    *,
    villages_only: list[str] | None = None,
    progress: Progress | None = None,
) -> Report:
    """Validate the layout; a restricted scope validates the villages it touches and sees the
    violations inside it only. ``villages_only`` validates just those villages (12-digit codes;
    one outside the scope is answered like an unknown one, 404): what an edit touched, instead
    of the league."""
    layout = await get_layout(conn, scope, layout_id)
    for village in villages_only or ():
        if len(village) != 12 or not village.isdigit():
            raise Unprocessable(f"{village!r} is not a 12-digit village code", field="village")
        if not scope.sees_area(village):
            raise NotFound(f"no village {village} in your scope", field="village")
    grids, villages = await layout_frames(conn, layout, scope, only=villages_only)
    task = (progress or NullProgress()).task("校验 validate", grids["village_code"].nunique())
    if scope.unrestricted:
        return validate(grids, villages, on_village=lambda _code: task.advance())
    report = Report()
    for village in sorted(set(grids["village_code"]) | set(villages["code"])):
        part = validate(
            grids[grids["village_code"] == village],
            villages[villages["code"] == village],
            on_village=lambda _code: task.advance(),
        )
        report.violations += visible_violations(scope, str(village), part.violations)
    return report


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
    query = sql.SQL(
        """
        WITH a AS (SELECT code, geom, area_m2, worker_id FROM grid
                    WHERE layout_id = %(new)s AND {scope}),
             b AS (SELECT code, geom, area_m2, worker_id FROM grid
                    WHERE layout_id = %(old)s AND {scope})
        SELECT coalesce(a.code, b.code) AS code,
               CASE WHEN b.code IS NULL THEN 'added' WHEN a.code IS NULL THEN 'removed'
                    WHEN NOT ST_Equals(a.geom, b.geom) OR a.worker_id IS DISTINCT FROM b.worker_id
                    THEN 'changed' END AS change,
               b.area_m2 AS area_before_m2, a.area_m2 AS area_after_m2,
               b.worker_id AS worker_before, a.worker_id AS worker_after,
               ST_AsGeoJSON(coalesce(a.geom, b.geom), 6) AS geometry
          FROM a FULL JOIN b ON a.code = b.code
         ORDER BY 1
        """
    ).format(scope=_grid_scope(scope))
    rows = await (
        await conn.execute(query, {**scope.params(), "new": layout_id, "old": base_id})
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
    new grids descend from the old ones. A future ``effective_from`` schedules the switch, with
    the same scope check as switching now; the scheduler (user, role, scope) and the version are
    recorded, and ``activate_due`` acts in their name when the time comes."""
    async with conn.transaction():
        layout = await get_layout(conn, actor.scope, layout_id)
        actor.scope.require_area(layout["area_code"], "the layout's area")
        if version is not None and layout["version"] != version:
            raise Conflict(
                f"layout {layout_id} is at version {layout['version']}, not {version}",
                current_version=layout["version"],
            )
        await check_overlap(conn, layout)
        # the whole layout decides validity; the caller is shown the problems of their scope
        report = await check(conn, Scope.everything(), layout_id, progress=progress)
        if not report.valid:
            shown = Report(
                [v for v in report.violations if all(map(actor.scope.covers_grid, v.codes))]
            )
            raise Conflict(
                f"layout {layout_id} does not validate ({len(report.violations)} problems)",
                violations=shown.feature_collection(),
            )
        if effective_from is not None and effective_from > await _now(conn):
            await conn.execute(
                """
                UPDATE grid_layout SET effective_from = %(at)s, scheduled_by_id = %(uid)s,
                       scheduled_by = %(name)s, scheduled_role = %(role)s,
                       scheduled_scope = %(scope)s, scheduled_at = now(),
                       scheduled_version = %(version)s
                 WHERE id = %(id)s
                """,
                {
                    "at": effective_from,
                    "uid": actor.user_id,
                    "name": actor.name,
                    "role": SYSTEM_ROLE if actor == SYSTEM else actor.role,
                    "scope": actor.scope.codes,
                    "version": layout["version"],
                    "id": layout_id,
                },
            )
            await audit.record(
                conn,
                actor,
                "layout.schedule",
                object_type="grid_layout",
                object_id=layout_id,
                detail={"effective_from": effective_from.isoformat(), "version": layout["version"]},
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
    query = sql.SQL(
        "SELECT from_layout, old_code, new_code, area_share FROM grid_lineage "
        "WHERE layout_id = %(l)s AND {new} AND {old} ORDER BY old_code, new_code"
    ).format(new=_grid_scope(scope, "new_code"), old=_grid_scope(scope, "old_code"))
    rows = await (await conn.execute(query, {**scope.params(), "l": layout_id})).fetchall()
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
        sql.SQL(
            "SELECT g.code, g.village_code, g.area_m2, g.households, s.name AS worker, "
            "s.phone AS phone, ST_AsBinary(g.geom) AS wkb FROM grid g "
            "LEFT JOIN staff s ON s.id = g.worker_id WHERE g.layout_id = %(l)s AND {} "
            "ORDER BY g.code"
        ).format(_grid_scope(scope, "g.code")),
        {**scope.params(), "l": layout_id},
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
            detail = scrub_paths(str(exc), filename)  # never the server's temp path
            raise Unprocessable(f"cannot read {filename}: {detail}", field="file") from exc
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


SYSTEM_ROLE = "system"  # scheduled_role of a switch scheduled by the system (the CLI)


@dataclass(frozen=True)
class _Scheduled:
    """A draft whose scheduled switch has come, with who scheduled it."""

    id: int
    area_code: str
    version: int
    effective_from: datetime
    user_id: int | None
    name: str | None
    role: str | None
    scope: list[str] | None
    at: datetime | None
    scheduled_version: int | None

    def as_recorded(self) -> Principal:
        """The scheduler as recorded at scheduling (for the audit of a refusal)."""
        if self.name is None:
            return SYSTEM
        try:
            scope = Scope.parse(self.scope or [])
        except ValueError:
            scope = Scope()
        return Principal(name=self.name, role=self.role or "", scope=scope, user_id=self.user_id)


def _recorded(due: _Scheduled) -> Principal | str | None:
    """What the schedule's own record decides: a refusal, the system, or None (a user, to be
    re-read)."""
    if due.name is None:
        return "no scheduler is recorded for this schedule; schedule it again"
    if due.scheduled_version is not None and due.version != due.scheduled_version:
        return (
            f"the draft was edited after it was scheduled (version {due.scheduled_version} "
            f"→ {due.version}); schedule it again"
        )
    if due.user_id is None:
        return SYSTEM if due.role == SYSTEM_ROLE else f"user {due.name} no longer exists"
    return None


def _recheck(due: _Scheduled, row: tuple[Any, ...] | None) -> Principal | str:
    """The scheduler's user row as it is now: enabled, a planner, the area in their scope
    (the user's scope narrowed by the one recorded, which may come from a narrower token)."""
    if row is None:
        return f"user {due.name} no longer exists"
    name, role, user_scope, disabled = row
    if disabled:
        return f"user {name} is disabled"
    if role not in SATISFIES["planner"]:
        return f"user {name} is now a {role}, not a planner"
    try:
        scope = Scope.parse(user_scope or []).narrow(Scope.parse(due.scope or []))
    except ValueError as exc:
        return f"the scope of user {name} cannot be read: {exc}"
    if not scope.covers_area(due.area_code):
        return f"the layout's area {due.area_code} is no longer in the scope of user {name}"
    return Principal(name=name, role=role, scope=scope, user_id=due.user_id)


async def _scheduler(conn: AsyncConnection[Any], due: _Scheduled) -> Principal | str:
    """The scheduler as they are now, or why the switch must not happen in their name."""
    decided = _recorded(due)
    if decided is not None:
        return decided
    row = await (
        await conn.execute(
            "SELECT name, role, scope, disabled FROM users WHERE id = %s", (due.user_id,)
        )
    ).fetchone()
    return _recheck(due, row)


async def _refuse(conn: AsyncConnection[Any], due: _Scheduled, reason: str) -> None:
    """Clear the schedule (it is not tried again) and audit the refusal in the scheduler's name."""
    async with conn.transaction():
        await conn.execute(
            "UPDATE grid_layout SET effective_from = NULL WHERE id = %s AND status = 'draft'",
            (due.id,),
        )
        await audit.record(
            conn,
            due.as_recorded(),
            "layout.schedule_refused",
            object_type="grid_layout",
            object_id=due.id,
            detail={
                "reason": reason,
                "effective_from": due.effective_from.isoformat(),
                "scheduled_at": due.at.isoformat() if due.at else None,
                "version": due.version,
            },
        )


async def activate_due(conn: AsyncConnection[Any], runner: Principal = SYSTEM) -> list[int]:
    """Activate the drafts whose scheduled ``effective_from`` has come (a periodic task run by
    ``runner``, the system), each in the name of its scheduler as they are now: a scheduler
    since disabled, removed, demoted or re-scoped away from the layout's area, or a draft edited
    after scheduling, means no switch — the schedule is cleared and the refusal audited."""
    due = await (
        await conn.execute(
            "SELECT id, area_code, version, effective_from, scheduled_by_id, scheduled_by, "
            "scheduled_role, scheduled_scope, scheduled_at, scheduled_version FROM grid_layout "
            "WHERE status = 'draft' AND effective_from <= now() ORDER BY effective_from, id"
        )
    ).fetchall()
    done = []
    for row in due:
        item = _Scheduled(*row)
        scheduler = await _scheduler(conn, item)
        if isinstance(scheduler, str):
            await _refuse(conn, item, scheduler)
            continue
        try:
            async with conn.transaction():
                await activate(conn, scheduler, item.id, version=item.version, effective_from=None)
                await audit.record(
                    conn,
                    scheduler,
                    "layout.activate_scheduled",
                    object_type="grid_layout",
                    object_id=item.id,
                    detail={
                        "effective_from": item.effective_from.isoformat(),
                        "scheduled_at": item.at.isoformat() if item.at else None,
                        "version": item.version,
                        "run_by": runner.name,
                    },
                )
        except (Forbidden, NotFound) as exc:
            await _refuse(conn, item, str(exc))
            continue
        except Conflict:
            continue  # invalid meanwhile or overlapping: stays a draft, the planner sees why
        done.append(item.id)
    return done
