"""Write admin-area boundaries to the database: one transaction per import, all or nothing."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import geopandas as gpd
import pandas as pd
import shapely
from psycopg import AsyncConnection

from api import audit
from api.auth import Principal
from gis.boundaries import BoundaryError, area_km2
from gis.codes import parse_nbs

UPSERT = """
INSERT INTO admin_area (code, level, parent_code, name_zh, name_en, households, synthetic,
                        source, area_km2, geom, updated_at)
SELECT code, level, parent_code, name_zh, name_en, households, synthetic, source, area_km2,
       ST_Multi(ST_GeomFromWKB(wkb, 4326)), now()
  FROM unnest(%(code)s::text[], %(level)s::text[], %(parent)s::text[], %(name_zh)s::text[],
              %(name_en)s::text[], %(households)s::int[], %(synthetic)s::bool[],
              %(source)s::text[], %(area)s::float8[], %(wkb)s::bytea[])
       AS t(code, level, parent_code, name_zh, name_en, households, synthetic, source,
            area_km2, wkb)
ON CONFLICT (code) DO UPDATE SET
    level = EXCLUDED.level, parent_code = EXCLUDED.parent_code, name_zh = EXCLUDED.name_zh,
    name_en = COALESCE(EXCLUDED.name_en, admin_area.name_en),
    households = COALESCE(EXCLUDED.households, admin_area.households),
    synthetic = EXCLUDED.synthetic, source = EXCLUDED.source, area_km2 = EXCLUDED.area_km2,
    geom = EXCLUDED.geom, updated_at = now()
"""


def _column(frame: gpd.GeoDataFrame, name: str, default: object = None) -> list[Any]:
    return list(frame[name]) if name in frame else [default] * len(frame)


def _optional(values: list[Any], cast: type) -> list[Any]:
    """None for missing values (None or NaN), else ``cast(value)``."""
    return [None if v is None or pd.isna(v) else cast(v) for v in values]


@dataclass(frozen=True)
class ImportResult:
    inserted: int
    updated: int
    without_parent: list[str]


async def upsert_areas(
    conn: AsyncConnection[Any],
    actor: Principal,
    frame: gpd.GeoDataFrame,
    *,
    action: str = "boundaries.import",
) -> ImportResult:
    """Insert or update admin areas from a frame with code, level, name_zh (and optionally
    parent_code, name_en, households, synthetic, source); one transaction, audited.

    Rows are written parents first. A row's parent is its code's parent when that area exists
    (in the database or the same frame), else NULL (reported in ``without_parent``).

    Raises
    ------
    BoundaryError
        When a code's level disagrees with the row's level, or a code lies outside the actor's
        scope (nothing is written).
    """
    frame = frame.copy()
    levels = [parse_nbs(c).level for c in frame["code"]]
    wrong = [
        f"{c} is a {lv}, not a {want}"
        for c, lv, want in zip(frame["code"], levels, frame["level"], strict=True)
        if lv != want
    ]
    if wrong:
        raise BoundaryError("codes disagree with --level: " + "; ".join(wrong[:10]))
    outside = [c for c in frame["code"] if not actor.scope.covers_area(parse_nbs(c).prefix)]
    if outside:
        raise BoundaryError(f"codes outside your scope: {', '.join(outside[:10])}")
    order = {"province": 0, "league": 1, "county": 2, "township": 3, "village": 4}
    frame["_rank"] = [order[lv] for lv in levels]
    frame = frame.sort_values(["_rank", "code"])
    async with conn.transaction():
        existing = {
            r[0] for r in await (await conn.execute("SELECT code FROM admin_area")).fetchall()
        }
        known = existing | set(frame["code"])
        parents = [parse_nbs(c).parent for c in frame["code"]]
        parent_col = [p if p in known else None for p in parents]
        without_parent = [
            c
            for c, p, lv in zip(frame["code"], parent_col, frame["level"], strict=True)
            if p is None and lv != "league"
        ]
        params = {
            "code": list(frame["code"]),
            "level": list(frame["level"]),
            "parent": parent_col,
            "name_zh": _column(frame, "name_zh"),
            "name_en": _optional(_column(frame, "name_en"), str),
            "households": _optional(_column(frame, "households"), int),
            "synthetic": [bool(v) for v in _column(frame, "synthetic", default=False)],
            "source": _column(frame, "source"),
            "area": [float(a) for a in area_km2(frame)],
            "wkb": [shapely.to_wkb(g) for g in frame.geometry],
        }
        await conn.execute(UPSERT, params)
        inserted = sum(1 for c in frame["code"] if c not in existing)
        await audit.record(
            conn,
            actor,
            action,
            object_type="admin_area",
            detail={
                "inserted": inserted,
                "updated": len(frame) - inserted,
                "levels": sorted(set(frame["level"])),
            },
        )
    return ImportResult(inserted, len(frame) - inserted, without_parent)
