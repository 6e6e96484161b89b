"""Grid layouts (网格划分方案) in the database: make, list, read, activate.

Cutting is done by ``gis.grids`` (pure) in a worker thread; writing is one transaction: the
layout row, its grids, and its fine-cell membership (``grid_cell``, COPYed in binary), so a
layout exists whole or not at all.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import geopandas as gpd
import numpy as np
from psycopg import AsyncConnection, errors, sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from pydantic import BaseModel, Field

from api import audit
from api.auth import Principal
from api.errors import Conflict, NotFound, Unprocessable
from api.geo import fetch_frame, wkb_list
from api.progress import NullProgress, Progress
from api.scope import Scope
from gis.codes import CodeError, parse_nbs
from gis.gridcells import grid_cells
from gis.gridmethods import GridError
from gis.grids import METHODS, make_grids

PURPOSES = ("patrol", "vehicle", "information", "household")


class LayoutSpec(BaseModel):
    """How to cut an area's villages into grids."""

    name: str = Field(min_length=1, max_length=200)
    area: str = Field(description="NBS code of the area (league, county, township or village)")
    method: str = Field(description=f"one of {', '.join(METHODS)}")
    purpose: str = Field(default="patrol", description=f"one of {', '.join(PURPOSES)}")
    per_village: int | None = Field(default=None, ge=1, le=999)
    size_m: float | None = Field(default=None, gt=0)
    resolution: int = Field(default=9, ge=5, le=12, description="H3 resolution of fine cells")
    containment: str = "center"
    cells_per_grid: int | None = Field(default=None, ge=1)
    by_households: bool = Field(default=False, description="balance by household points")
    min_households: int = Field(default=5, ge=1)
    max_households: int = Field(default=50, ge=1)
    activate: bool = False
    synthetic: bool = False

    def params(self) -> dict[str, Any]:
        return self.model_dump(
            exclude={"name", "area", "method", "purpose", "activate", "synthetic"}
        )


@dataclass(frozen=True)
class MadeLayout:
    id: int
    grids: int
    cells: int
    villages: int


def area_prefix(code: str) -> str:
    try:
        return parse_nbs(code).prefix
    except CodeError as exc:
        raise Unprocessable(str(exc), field="area") from exc


async def villages_of(conn: AsyncConnection[Any], prefix: str) -> gpd.GeoDataFrame:
    return await fetch_frame(
        conn,
        "SELECT code, ST_AsBinary(geom) AS wkb FROM admin_area "
        "WHERE level = 'village' AND code LIKE %(p)s ORDER BY code",
        {"p": prefix + "%"},
    )


async def households_of(conn: AsyncConnection[Any], prefix: str) -> gpd.GeoDataFrame:
    return await fetch_frame(
        conn,
        "SELECT village_code, count, ST_AsBinary(geom) AS wkb FROM household "
        "WHERE village_code LIKE %(p)s",
        {"p": prefix + "%"},
    )


def _cut(
    spec: LayoutSpec, villages: gpd.GeoDataFrame, homes: gpd.GeoDataFrame | None, progress: Progress
) -> tuple[gpd.GeoDataFrame, Any]:
    task = progress.task("划分网格 cutting grids", len(villages))
    grids = make_grids(
        villages,
        method=spec.method,
        per_village=spec.per_village,
        size_m=spec.size_m,
        resolution=spec.resolution,
        containment=spec.containment,
        cells_per_grid=spec.cells_per_grid,
        households=homes,
        min_households=spec.min_households,
        max_households=spec.max_households,
        progress=task.advance,
    )
    cells_task = progress.task("细网格 fine cells", 1)
    cells = grid_cells(grids, resolution=spec.resolution, boundaries=villages)
    cells_task.advance()
    return grids, cells


def _cell_copy(layout_id: int, h3: np.ndarray, grid_id: np.ndarray) -> bytes:
    """Binary COPY payload of (layout_id int4, h3 int8, grid_id int4) rows."""
    rec = np.zeros(
        len(h3),
        dtype=[
            ("n", ">i2"),
            ("l1", ">i4"),
            ("layout", ">i4"),
            ("l2", ">i4"),
            ("h3", ">i8"),
            ("l3", ">i4"),
            ("grid", ">i4"),
        ],
    )
    rec["n"], rec["l1"], rec["layout"], rec["l2"], rec["l3"] = 3, 4, layout_id, 8, 4
    rec["h3"], rec["grid"] = h3, grid_id
    header = b"PGCOPY\n\xff\r\n\x00" + bytes(8)
    return header + rec.tobytes() + b"\xff\xff"


async def make_layout(
    conn: AsyncConnection[Any],
    actor: Principal,
    spec: LayoutSpec,
    *,
    progress: Progress | None = None,
) -> MadeLayout:
    """Cut the villages of ``spec.area`` and store the layout (draft unless ``activate``).

    Raises
    ------
    Forbidden
        When the area is outside the actor's scope.
    Unprocessable
        For an unknown purpose/method, bad parameters for the method, or an area without
        villages (the grid library's message names the problem).
    """
    progress = progress or NullProgress()
    prefix = area_prefix(spec.area)
    actor.scope.require_area(prefix, "the layout's area")
    if spec.purpose not in PURPOSES:
        raise Unprocessable(f"purpose must be one of {', '.join(PURPOSES)}", field="purpose")
    area_code = parse_nbs(prefix).code
    known = await (
        await conn.execute("SELECT 1 FROM admin_area WHERE code = %s", (area_code,))
    ).fetchone()
    if known is None:
        raise Unprocessable(f"no area {area_code}: import its boundary first", field="area")
    villages = await villages_of(conn, prefix)
    if villages.empty:
        raise Unprocessable(
            f"no villages under {spec.area}: import their boundaries first", field="area"
        )
    homes = (
        await households_of(conn, prefix)
        if spec.by_households or spec.method == "households"
        else None
    )
    try:
        grids, cells = await asyncio.to_thread(_cut, spec, villages, homes, progress)
    except GridError as exc:
        raise Unprocessable(str(exc), field="method") from exc
    async with conn.transaction():
        row = await (
            await conn.execute(
                "INSERT INTO grid_layout (name, purpose, area_code, method, params, resolution, "
                "synthetic, created_by) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
                (
                    spec.name,
                    spec.purpose,
                    area_code,
                    spec.method,
                    Jsonb(spec.params()),
                    spec.resolution,
                    spec.synthetic,
                    actor.name,
                ),
            )
        ).fetchone()
        assert row is not None  # noqa: S101 - RETURNING yields the row
        layout_id = int(row[0])
        n_cells = cells["grid"].value_counts().reindex(grids["code"], fill_value=0)
        ids = await (
            await conn.execute(
                """
            INSERT INTO grid (layout_id, code, village_code, area_m2, households, n_cells, geom)
            SELECT %s, c, v, a, h, n, ST_Multi(ST_GeomFromWKB(w, 4326))
              FROM unnest(%s::text[], %s::text[], %s::float8[], %s::int[], %s::int[],
                          %s::bytea[]) AS u(c, v, a, h, n, w)
            RETURNING code, id
            """,
                (
                    layout_id,
                    grids["code"].tolist(),
                    grids["village_code"].tolist(),
                    grids["area_m2"].astype(float).tolist(),
                    grids["households"].astype(int).tolist(),
                    n_cells.astype(int).tolist(),
                    wkb_list(grids),
                ),
            )
        ).fetchall()
        id_of = dict(ids)
        grid_id = cells["grid"].map(id_of).to_numpy(dtype=np.int64)
        h3 = cells["h3"].to_numpy(np.int64)
        # in key order: the primary key (layout_id, h3) then grows at its right edge instead of
        # taking millions of random inserts (the demo's 2.4M cells a layout)
        order = np.argsort(h3, kind="stable")
        async with (
            conn.cursor() as cur,
            cur.copy("COPY grid_cell (layout_id, h3, grid_id) FROM STDIN (FORMAT binary)") as copy,
        ):
            await copy.write(_cell_copy(layout_id, h3[order], grid_id[order]))
        await audit.record(
            conn,
            actor,
            "layout.create",
            object_type="grid_layout",
            object_id=layout_id,
            detail={
                "name": spec.name,
                "area": area_code,
                "method": spec.method,
                "grids": len(grids),
                "cells": len(cells),
            },
        )
        if spec.activate:
            await activate_layout(conn, actor, layout_id)
    return MadeLayout(layout_id, len(grids), len(cells), int(grids["village_code"].nunique()))


def _layout_scope(scope: Scope) -> sql.Composable:
    return scope.where("l.area_code", with_grid_villages=True)


def _grids_scope(scope: Scope) -> sql.Composable:
    """A layout's grids a scope sees (its count is of those)."""
    return scope.where("g.code", "g.code")


async def get_layout(conn: AsyncConnection[Any], scope: Scope, layout_id: int) -> dict[str, Any]:
    """One layout with its counts; 404 when missing or outside the scope.

    A layout is visible when its area lies in the scope, or it covers an area of the scope
    (a county user sees the league layout, restricted to their grids elsewhere).
    """
    query = sql.SQL(
        """
        SELECT l.id, l.name, l.purpose, l.area_code, l.status, l.method, l.params,
               l.resolution, l.version, l.synthetic, l.created_at, l.created_by,
               l.activated_at, l.activated_by, l.retired_at, l.cloned_from,
               (SELECT count(*) FROM grid g WHERE g.layout_id = l.id AND {grids}) AS grids
          FROM grid_layout l
         WHERE l.id = %(id)s AND ({scope} OR {covers})
        """
    ).format(scope=_layout_scope(scope), covers=_covers_scope(scope), grids=_grids_scope(scope))
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, {**scope.params(), "id": layout_id})
        row = await cur.fetchone()
    if row is None:
        raise NotFound(f"no layout {layout_id}")
    return row


def _covers_scope(scope: Scope) -> sql.Composable:
    """The layout's area is an ancestor of one of the scope's areas or grids."""
    if scope.unrestricted:
        return sql.SQL("TRUE")
    return sql.SQL(
        "EXISTS (SELECT 1 FROM unnest(%(scope_areas)s::text[] || %(scope_grids)s::text[]) s "
        "WHERE s LIKE nbs_prefix(l.area_code) || '%%')"
    )


async def list_layouts(
    conn: AsyncConnection[Any], scope: Scope, *, status: str | None = None
) -> list[dict[str, Any]]:
    query = sql.SQL(
        """
        SELECT l.id, l.name, l.purpose, l.area_code, l.status, l.method, l.resolution,
               l.version, l.synthetic, l.created_at, l.activated_at,
               (SELECT count(*) FROM grid g WHERE g.layout_id = l.id AND {grids}) AS grids
          FROM grid_layout l
         WHERE ({scope} OR {covers}) AND (%(status)s::text IS NULL OR l.status = %(status)s)
         ORDER BY l.id
        """
    ).format(scope=_layout_scope(scope), covers=_covers_scope(scope), grids=_grids_scope(scope))
    params = {**scope.params(), "status": status}
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, params)
        return await cur.fetchall()


async def active_layout(conn: AsyncConnection[Any], *, purpose: str = "patrol") -> int | None:
    """The active layout of a purpose with the widest area (the league one in the demo)."""
    row = await (
        await conn.execute(
            "SELECT id FROM grid_layout WHERE status = 'active' AND purpose = %s "
            "ORDER BY length(nbs_prefix(area_code)), id LIMIT 1",
            (purpose,),
        )
    ).fetchone()
    return int(row[0]) if row else None


async def check_overlap(conn: AsyncConnection[Any], layout: dict[str, Any]) -> None:
    """Refuse when another active layout of the same purpose covers part of this one's area
    (an ancestor or descendant area; the same area is replaced, not overlapped)."""
    overlapping = await (
        await conn.execute(
            """
        SELECT id, name, area_code FROM grid_layout o
         WHERE o.status = 'active' AND o.purpose = %(purpose)s
           AND o.area_code <> %(area)s
           AND (nbs_prefix(o.area_code) LIKE nbs_prefix(%(area)s) || '%%'
            OR nbs_prefix(%(area)s) LIKE nbs_prefix(o.area_code) || '%%')
        """,
            {"purpose": layout["purpose"], "area": layout["area_code"]},
        )
    ).fetchall()
    if overlapping:
        other = overlapping[0]
        raise Conflict(
            f"active layout {other[0]} ({other[1]}, area {other[2]}) overlaps this one's "
            f"area; redraw it instead (clone, edit, activate) or retire it first",
            layout=other[0],
        )


# The fine cells of a layout: its own rows, and the rows of the grids its grids borrow
# (``grid.cells_from``, set by a clone of an active or retired layout, whose cells never change;
# kept through activation). One statement for every reader of a layout's cells.
LAYOUT_CELLS = sql.SQL(
    """
    SELECT grid_id, h3 FROM grid_cell WHERE layout_id = {layout}
    UNION ALL
    SELECT g.id, c.h3 FROM grid g JOIN grid_cell c ON c.grid_id = g.cells_from
     WHERE g.layout_id = {layout} AND g.cells_from IS NOT NULL
    """
)


def layout_cells(layout_id: int) -> sql.Composed:
    """(grid_id, h3) of every fine cell of a layout, own or borrowed."""
    return LAYOUT_CELLS.format(layout=sql.Literal(layout_id))


async def own_cells(conn: AsyncConnection[Any], layout_id: int) -> int:
    """Copy the fine cells the layout's grids borrow into its own rows (in key order, so the
    primary key grows at its right edge); returns the rows copied. Needed only before the
    layout they are borrowed from is deleted (``own_borrowed_cells``)."""
    cur = await conn.execute(
        """
        INSERT INTO grid_cell (layout_id, h3, grid_id)
        SELECT %(l)s, c.h3, g.id FROM grid g JOIN grid_cell c ON c.grid_id = g.cells_from
         WHERE g.layout_id = %(l)s AND g.cells_from IS NOT NULL
         ORDER BY c.h3
        """,
        {"l": layout_id},
    )
    copied = cur.rowcount
    await conn.execute(
        "UPDATE grid SET cells_from = NULL WHERE layout_id = %s AND cells_from IS NOT NULL",
        (layout_id,),
    )
    return max(copied, 0)


async def own_borrowed_cells(conn: AsyncConnection[Any], sources: list[int]) -> None:
    """Before layouts ``sources`` are deleted: the drafts borrowing their cells copy them."""
    rows = await (
        await conn.execute(
            "SELECT DISTINCT b.layout_id FROM grid s JOIN grid b ON b.cells_from = s.id "
            "WHERE s.layout_id = ANY(%s)",
            (sources,),
        )
    ).fetchall()
    for (borrower,) in rows:
        await own_cells(conn, int(borrower))


async def activate_layout(conn: AsyncConnection[Any], actor: Principal, layout_id: int) -> None:
    """Make a layout active; the active one of the same area and purpose is retired."""
    async with conn.transaction():
        layout = await get_layout(conn, actor.scope, layout_id)
        actor.scope.require_area(layout["area_code"], "the layout's area")
        if layout["status"] == "active":
            return
        await check_overlap(conn, layout)
        await conn.execute(
            "UPDATE grid_layout SET status = 'retired', retired_at = now() "
            "WHERE status = 'active' AND area_code = %s AND purpose = %s",
            (layout["area_code"], layout["purpose"]),
        )
        try:
            await conn.execute(
                "UPDATE grid_layout SET status = 'active', activated_at = now(), "
                "activated_by = %s, effective_from = now(), version = version + 1 WHERE id = %s",
                (actor.name, layout_id),
            )
        except errors.UniqueViolation as exc:
            raise Conflict("another layout became active meanwhile; try again") from exc
        await audit.record(
            conn, actor, "layout.activate", object_type="grid_layout", object_id=layout_id
        )
