"""Redrawing grids: clone the active layout into a draft, edit it, keep it consistent.

Every edit names the draft's ``version`` it was made against; a stale version is a 409, so two
planners cannot silently overwrite each other. An edit locks the draft, applies a pure operation
from ``gis.redraw`` to one village's grids (refused edits change nothing), rewrites that
village's grids and fine-cell membership, bumps the version and is audited — one transaction.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import geopandas as gpd
import numpy as np
import shapely
from psycopg import AsyncConnection, sql
from shapely.geometry.base import BaseGeometry

from api import audit, offload
from api.auth import Principal
from api.errors import Conflict, NotFound, Unprocessable
from api.geo import fetch_frame, wkb_list
from api.layouts import get_layout
from api.settings import ApiSettings
from gis.codes import parse_grid_code
from gis.gridcells import grid_cells
from gis.redraw import Edit, RedrawError

DraftEdit = Callable[[gpd.GeoDataFrame, BaseGeometry, set[int]], Edit]


async def clone(conn: AsyncConnection[Any], actor: Principal, layout_id: int, *, name: str) -> int:
    """A draft copy of a layout (grids with their workers and leaders, fine cells); returns the
    draft's id. Set-based: new grid ids are drawn from the grid sequence beside the old ones,
    so one statement copies the grids and, where needed, the fine cells.

    The fine cells of an active or retired layout never change, so the draft's grids borrow
    them (``grid.cells_from``; read through ``api.layouts.layout_cells``) instead of copying
    2.46 million rows for the league; an edit gives a village's grids cells of their own. A
    draft's own cells can change, so a clone of a draft copies those and borrows what it
    borrowed."""
    async with conn.transaction():
        source = await get_layout(conn, actor.scope, layout_id)
        actor.scope.require_area(source["area_code"], "the layout's area")
        row = await (
            await conn.execute(
                """
            INSERT INTO grid_layout (name, purpose, area_code, method, params, resolution,
                                     cloned_from, synthetic, created_by)
            SELECT %s, purpose, area_code, 'redraw', params, resolution, id, synthetic, %s
              FROM grid_layout WHERE id = %s RETURNING id
            """,
                (name, actor.name, layout_id),
            )
        ).fetchone()
        assert row is not None  # noqa: S101 - RETURNING yields the row
        draft = int(row[0])
        await conn.execute(
            """
            WITH m AS MATERIALIZED (
                SELECT id AS old_id, nextval(pg_get_serial_sequence('grid', 'id'))::int AS new_id
                  FROM grid WHERE layout_id = %(s)s),
            copied AS (
                INSERT INTO grid (id, layout_id, code, village_code, name, area_m2, households,
                                  n_cells, worker_id, leader_id, geom, cells_from)
                SELECT m.new_id, %(d)s, g.code, g.village_code, g.name, g.area_m2, g.households,
                       g.n_cells, g.worker_id, g.leader_id, g.geom,
                       CASE WHEN %(draft)s THEN g.cells_from ELSE coalesce(g.cells_from, g.id) END
                  FROM grid g JOIN m ON m.old_id = g.id)
            INSERT INTO grid_cell (layout_id, h3, grid_id)
            SELECT %(d)s, c.h3, m.new_id FROM grid_cell c JOIN m ON m.old_id = c.grid_id
             WHERE %(draft)s AND c.layout_id = %(s)s
             ORDER BY c.h3
            """,
            {"d": draft, "s": layout_id, "draft": source["status"] == "draft"},
        )
        await audit.record(
            conn,
            actor,
            "layout.clone",
            object_type="grid_layout",
            object_id=draft,
            detail={"from": layout_id, "name": name},
        )
    return draft


async def abandon(
    conn: AsyncConnection[Any], actor: Principal, layout_id: int, *, version: int | None = None
) -> dict[str, Any]:
    """Delete a draft with its grids, fine cells and materialised coverage (one transaction,
    audited). An active or retired layout is refused (409): it is history that coverage and
    lineage read; a stale ``version`` too, so a planner never drops edits they have not seen."""
    async with conn.transaction():
        layout = await get_layout(conn, actor.scope, layout_id)  # 404 outside the scope
        actor.scope.require_area(layout["area_code"], "the layout's area")
        row = await (
            await conn.execute(
                "SELECT status, version FROM grid_layout WHERE id = %s FOR UPDATE", (layout_id,)
            )
        ).fetchone()
        assert row is not None  # noqa: S101 - get_layout found it
        status, current = row
        if status != "draft":
            raise Conflict(
                f"layout {layout_id} is {status}; only a draft can be abandoned "
                "(an active or retired layout is kept: coverage history and lineage name it)",
                status=status,
            )
        if version is not None and current != version:
            raise Conflict(
                f"layout {layout_id} is at version {current}, not {version}; reload before "
                "abandoning it",
                current_version=current,
            )
        grids = await (
            await conn.execute("SELECT count(*) FROM grid WHERE layout_id = %s", (layout_id,))
        ).fetchone()
        # the big children by their own index first; the cascade then has little left to do
        for table in ("grid_visit", "grid_visit_day", "grid_cell", "grid_lineage", "grid"):
            await conn.execute(
                sql.SQL("DELETE FROM {} WHERE layout_id = %s").format(sql.Identifier(table)),
                (layout_id,),
            )
        await conn.execute("DELETE FROM grid_layout WHERE id = %s", (layout_id,))
        detail = {
            "name": layout["name"],
            "area": layout["area_code"],
            "version": current,
            "grids": int(grids[0]) if grids else 0,
            "cloned_from": layout["cloned_from"],
        }
        await audit.record(
            conn,
            actor,
            "layout.abandon",
            object_type="grid_layout",
            object_id=layout_id,
            detail=detail,
        )
    return {"layout": layout_id, "abandoned": True, **detail}


async def lock_draft(
    conn: AsyncConnection[Any], actor: Principal, layout_id: int, version: int
) -> dict[str, Any]:
    layout = await get_layout(conn, actor.scope, layout_id)
    row = await (
        await conn.execute(
            "SELECT status, version FROM grid_layout WHERE id = %s FOR UPDATE", (layout_id,)
        )
    ).fetchone()
    assert row is not None  # noqa: S101 - get_layout found it
    if row[0] != "draft":
        raise Conflict(f"layout {layout_id} is {row[0]}; only drafts are edited (clone it first)")
    if row[1] != version:
        raise Conflict(
            f"layout {layout_id} is at version {row[1]}, your edit was made on {version}; "
            "reload and redo it",
            current_version=row[1],
        )
    return layout


async def village_grids(
    conn: AsyncConnection[Any], layout_id: int, village: str
) -> gpd.GeoDataFrame:
    return await fetch_frame(
        conn,
        "SELECT id, code, village_code, worker_id, ST_AsBinary(geom) AS wkb FROM grid "
        "WHERE layout_id = %(l)s AND village_code = %(v)s ORDER BY code",
        {"l": layout_id, "v": village},
    )


async def used_sequences(conn: AsyncConnection[Any], village: str) -> set[int]:
    """Sequences any layout ever used in the village: a new grid never takes an old code."""
    rows = await (
        await conn.execute("SELECT DISTINCT code FROM grid WHERE village_code = %s", (village,))
    ).fetchall()
    return {parse_grid_code(r[0]).sequence for r in rows}


async def village_geom(conn: AsyncConnection[Any], village: str) -> BaseGeometry:
    row = await (
        await conn.execute("SELECT ST_AsBinary(geom) FROM admin_area WHERE code = %s", (village,))
    ).fetchone()
    if row is None:
        raise NotFound(f"no village {village}")
    return shapely.from_wkb(bytes(row[0]))


async def edit_village(
    conn: AsyncConnection[Any],
    actor: Principal,
    layout_id: int,
    version: int,
    village: str,
    operation: DraftEdit,
    *,
    action: str,
    detail: dict[str, Any],
    cpu: ApiSettings | None = None,
) -> dict[str, Any]:
    """Apply ``operation`` to a village of the draft; returns the new version and code changes.
    The operation (shapely/GEOS, which releases the GIL) runs in a worker thread, at most
    ``cpu.cpu_threads`` at once (``api.offload``), not on the event loop."""
    async with conn.transaction():
        layout = await lock_draft(conn, actor, layout_id, version)
        actor.scope.require_area(village, "this village")
        grids = await village_grids(conn, layout_id, village)
        if grids.empty:
            raise NotFound(f"no grids of village {village} in layout {layout_id}")
        boundary = await village_geom(conn, village)
        try:
            used = await used_sequences(conn, village)
            edit = await offload.in_thread(cpu or ApiSettings(), operation, grids, boundary, used)
        except RedrawError as exc:
            raise Unprocessable(
                str(exc),
                field="geometry",
                offending=None if exc.geometry is None else shapely.geometry.mapping(exc.geometry),
            ) from exc
        await write_village(conn, layout_id, village, grids, edit, layout["resolution"], boundary)
        new_version = await _bump(conn, layout_id)
        await audit.record(
            conn,
            actor,
            action,
            object_type="grid_layout",
            object_id=layout_id,
            detail={
                **detail,
                "village": village,
                "kept": edit.kept,
                "added": edit.added,
                "removed": edit.removed,
                "version": new_version,
            },
        )
    return {
        "layout": layout_id,
        "version": new_version,
        "village": village,
        "kept": edit.kept,
        "added": edit.added,
        "removed": edit.removed,
        "changed": edit.changed,
    }


async def _bump(conn: AsyncConnection[Any], layout_id: int) -> int:
    row = await (
        await conn.execute(
            "UPDATE grid_layout SET version = version + 1 WHERE id = %s RETURNING version",
            (layout_id,),
        )
    ).fetchone()
    assert row is not None  # noqa: S101 - the draft is locked
    return int(row[0])


async def write_village(
    conn: AsyncConnection[Any],
    layout_id: int,
    village: str,
    before: gpd.GeoDataFrame,
    edit: Edit,
    resolution: int,
    boundary: BaseGeometry,
) -> None:
    """Replace the village's grids by ``edit.grids`` (ids kept for surviving codes, so workers
    stay), then recompute its fine cells, areas and households."""
    after = edit.grids
    old_ids = dict(zip(before["code"], before["id"], strict=True))
    gone = [int(old_ids[c]) for c in set(before["code"]) - set(after["code"])]
    if gone:
        # grid_cell and grid_visit name grids without a foreign key: clear them first, or a
        # merged-away grid's cells would collide with the survivor's on (layout, h3)
        await conn.execute(
            "DELETE FROM grid_cell WHERE layout_id = %s AND grid_id = ANY(%s)", (layout_id, gone)
        )
        await conn.execute(
            "DELETE FROM grid_visit WHERE layout_id = %s AND grid_id = ANY(%s)", (layout_id, gone)
        )
        await conn.execute("DELETE FROM grid WHERE id = ANY(%s)", (gone,))
    survivors = after[after["code"].isin(old_ids)]
    if len(survivors):
        await conn.execute(
            "UPDATE grid g SET geom = ST_Multi(ST_GeomFromWKB(u.w, 4326)) "
            "FROM unnest(%s::int[], %s::bytea[]) AS u(id, w) WHERE g.id = u.id",
            ([int(old_ids[c]) for c in survivors["code"]], wkb_list(survivors)),
        )
    fresh = after[~after["code"].isin(old_ids)]
    if len(fresh):
        await conn.execute(
            "INSERT INTO grid (layout_id, code, village_code, area_m2, geom) "
            "SELECT %s, c, %s, 0, ST_Multi(ST_GeomFromWKB(w, 4326)) "
            "FROM unnest(%s::text[], %s::bytea[]) AS u(c, w)",
            (layout_id, village, fresh["code"].tolist(), wkb_list(fresh)),
        )
    await refresh_village(conn, layout_id, village, resolution, boundary)


async def refresh_village(
    conn: AsyncConnection[Any],
    layout_id: int,
    village: str,
    resolution: int,
    boundary: BaseGeometry,
) -> None:
    """Recompute a village's fine cells, grid areas and household counts after an edit."""
    grids = await village_grids(conn, layout_id, village)
    villages = gpd.GeoDataFrame({"code": [village]}, geometry=[boundary], crs="EPSG:4326")
    cells = await asyncio.to_thread(grid_cells, grids, resolution=resolution, boundaries=villages)
    ids = dict(zip(grids["code"], grids["id"], strict=True))
    await conn.execute(
        "DELETE FROM grid_cell WHERE layout_id = %s AND grid_id = ANY(%s)",
        (layout_id, [int(i) for i in grids["id"]]),
    )
    await conn.execute(
        "INSERT INTO grid_cell (layout_id, h3, grid_id) "
        "SELECT %s, h, g FROM unnest(%s::bigint[], %s::int[]) AS u(h, g)",
        (layout_id, cells["h3"].astype(np.int64).tolist(), [int(ids[c]) for c in cells["grid"]]),
    )
    await conn.execute(
        """
        UPDATE grid g SET
            cells_from = NULL,  -- the village's grids own their cells now
            n_cells = (SELECT count(*) FROM grid_cell c WHERE c.grid_id = g.id),
            area_m2 = ST_Area(g.geom::geography),
            households = (SELECT coalesce(sum(h.count), 0) FROM household h
                           WHERE h.village_code = g.village_code AND ST_Covers(g.geom, h.geom))
         WHERE g.layout_id = %s AND g.village_code = %s
        """,
        (layout_id, village),
    )
    # the draft's materialised coverage of this village is stale
    await conn.execute(
        "DELETE FROM grid_visit WHERE layout_id = %s AND grid_id = ANY(%s)",
        (layout_id, [int(i) for i in grids["id"]]),
    )
    await conn.execute("DELETE FROM grid_visit_day WHERE layout_id = %s", (layout_id,))


def village_of(code: str) -> str:
    try:
        return parse_grid_code(code).village
    except ValueError as exc:
        raise Unprocessable(str(exc), field="code") from exc
