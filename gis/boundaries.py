"""Read, check and normalise administrative boundary files (GeoJSON, GeoPackage, Shapefile).

Every result is EPSG:4326 MultiPolygons with a 12-digit NBS ``code`` and a ``name``. A file must
declare its CRS (or the caller must); coordinates outside China's plausible range are refused,
which also catches a projected file mislabelled as degrees. Invalid polygons are repaired with
``make_valid`` and each repair is reported.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyogrio
import pyproj
import shapely
from numpy.typing import NDArray
from shapely.geometry import MultiPolygon, Polygon

from gis import crs as gcrs
from gis.codes import CodeError, parse_nbs

# lon/lat box that every boundary of a Chinese deployment must fall in (with a margin)
CHINA_BOUNDS = (73.0, 3.0, 136.0, 54.0)
CODE_FIELDS = ("code", "adcode", "gb", "nbs_code", "dm", "qhdm")
NAME_FIELDS = ("name_zh", "name", "mc", "qhmc")
NAME_EN_FIELDS = ("name_en", "pinyin")
HOUSEHOLD_FIELDS = ("households", "hu")
_GEOD = pyproj.Geod(ellps="WGS84")


class BoundaryError(ValueError):
    """A boundary file that cannot be imported as it is; nothing is written."""


@dataclass
class BoundaryReport:
    """What reading a file found and did."""

    path: str
    features: int = 0
    source_crs: str = ""
    repaired: list[tuple[int, str]] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"{self.path}: {self.features} features, CRS {self.source_crs}"]
        out += [f"  feature {i}: repaired ({reason})" for i, reason in self.repaired]
        return out


def _transform_lonlat(geoms: NDArray[np.object_], func: gcrs.InputCrs) -> NDArray[np.object_]:
    def convert(coords: NDArray[np.float64]) -> NDArray[np.float64]:
        lon, lat = gcrs.to_wgs84(coords[:, 0], coords[:, 1], func)
        return np.column_stack([lon, lat])

    return np.asarray(shapely.transform(geoms, convert))


def to_wgs84(frame: gpd.GeoDataFrame, declared: str | None = None) -> tuple[gpd.GeoDataFrame, str]:
    """Reproject to EPSG:4326, honouring a declared CRS (EPSG code or wgs84/cgcs2000/gcj02/bd09).

    Raises
    ------
    BoundaryError
        When neither the file nor the caller declares a CRS.
    """
    if declared:
        name = declared.lower().replace("-", "").replace("_", "")
        if name in ("gcj02", "bd09"):
            geoms = _transform_lonlat(frame.geometry.to_numpy(), name)  # type: ignore[arg-type]
            return gpd.GeoDataFrame(
                frame.drop(columns="geometry"), geometry=geoms, crs=gcrs.WGS84
            ), name
        if name in ("wgs84", "cgcs2000"):
            return frame.set_crs(gcrs.WGS84, allow_override=True), name
        try:
            frame = frame.set_crs(declared, allow_override=True)
        except Exception as exc:
            raise BoundaryError(f"unknown CRS {declared!r}: {exc}") from exc
    if frame.crs is None:
        raise BoundaryError(
            "the file declares no CRS; say which one it uses (--crs EPSG:4490, EPSG:32650, "
            "gcj02, bd09 …) — GeoJSON without a crs member is not assumed to be WGS-84"
        )
    source = frame.crs.to_string()
    return frame.to_crs(gcrs.WGS84), source


def check_in_china(frame: gpd.GeoDataFrame) -> None:
    """Refuse coordinates outside China's plausible lon/lat range."""
    if frame.empty:
        raise BoundaryError("the file holds no features")
    minx, miny, maxx, maxy = frame.total_bounds
    x0, y0, x1, y1 = CHINA_BOUNDS
    if not (
        np.isfinite([minx, miny, maxx, maxy]).all()
        and minx >= x0
        and maxx <= x1
        and miny >= y0
        and maxy <= y1
    ):
        raise BoundaryError(
            f"coordinates fall outside China's plausible range (lon {x0:g}–{x1:g}, "
            f"lat {y0:g}–{y1:g}): bbox {minx:.4f},{miny:.4f},{maxx:.4f},{maxy:.4f}; "
            "is the declared CRS right?"
        )


def repair(frame: gpd.GeoDataFrame, report: BoundaryReport) -> gpd.GeoDataFrame:
    """Make every geometry a valid MultiPolygon; record each repair with its reason."""
    geoms = frame.geometry.to_numpy()
    if any(g is None or g.is_empty for g in geoms):
        bad = [i for i, g in enumerate(geoms) if g is None or g.is_empty]
        raise BoundaryError(f"features {bad[:10]} have no geometry")
    types = shapely.get_type_id(geoms)
    if not np.isin(types, [3, 6, 7]).all():  # Polygon, MultiPolygon, GeometryCollection
        bad_idx = np.flatnonzero(~np.isin(types, [3, 6, 7]))
        raise BoundaryError(
            f"features {bad_idx[:10].tolist()} are not polygons "
            f"({', '.join(sorted({geoms[i].geom_type for i in bad_idx}))})"
        )
    valid = shapely.is_valid(geoms)
    out = []
    for i, original in enumerate(geoms):
        geom = original
        if not valid[i]:
            report.repaired.append((i, shapely.is_valid_reason(original)))
            geom = shapely.make_valid(original)
        polys = [p for p in shapely.get_parts(geom) if isinstance(p, Polygon) and p.area > 0]
        if not polys:
            # a GeometryCollection (e.g. from make_valid) may nest MultiPolygons
            polys = [
                q
                for p in shapely.get_parts(geom)
                for q in shapely.get_parts(p)
                if isinstance(q, Polygon) and q.area > 0
            ]
        if not polys:
            raise BoundaryError(f"feature {i} has no area after repair")
        out.append(MultiPolygon(polys))
    return gpd.GeoDataFrame(frame.drop(columns="geometry"), geometry=out, crs=frame.crs)


def _pick(columns: list[str], wanted: tuple[str, ...], given: str | None) -> str | None:
    if given:
        if given not in columns:
            raise BoundaryError(
                f"field {given!r} is not in the file (fields: {', '.join(columns)})"
            )
        return given
    lower = {c.lower(): c for c in columns}
    return next((lower[w] for w in wanted if w in lower), None)


def normalise_code(raw: object) -> str:
    """NBS code from a file field: 12 digits, a 6/9-digit prefix, or a ``156``-prefixed gb code."""
    text = str(raw).strip()
    if text.endswith(".0"):
        text = text[:-2]
    if text.startswith("156") and len(text) in (9, 12, 15):
        text = text[3:]
    return parse_nbs(text).code


def geojson_declares_crs(path: Path) -> bool:
    """True when a GeoJSON file carries a ``crs`` member (GDAL reports WGS-84 either way)."""
    try:
        with path.open(encoding="utf-8") as fh:
            doc = json.load(fh)
    except (OSError, ValueError) as exc:
        raise BoundaryError(f"cannot read {path.name} as JSON: {exc}") from exc
    return isinstance(doc, dict) and "crs" in doc


def read_boundaries(
    path: str | Path,
    *,
    crs: str | None = None,
    code_field: str | None = None,
    name_field: str | None = None,
) -> tuple[gpd.GeoDataFrame, BoundaryReport]:
    """Read a boundary file into EPSG:4326 with columns code, name_zh, name_en, households.

    Parameters
    ----------
    path
        GeoJSON, GeoPackage, Shapefile (``.shp`` or a ``.zip`` holding one).
    crs
        The file's CRS when it does not declare one (or declares it wrongly): an EPSG code,
        or ``wgs84``/``cgcs2000``/``gcj02``/``bd09``.

    Raises
    ------
    BoundaryError
        Unreadable file, no CRS, coordinates outside China, non-polygon or empty features,
        missing/malformed/duplicate codes.
    """
    path = Path(path)
    report = BoundaryReport(path=str(path))
    if (
        crs is None
        and path.suffix.lower() in (".geojson", ".json")
        and not geojson_declares_crs(path)
    ):
        raise BoundaryError(
            f"{path.name} declares no CRS: RFC 7946 implies WGS-84, but Chinese sources are "
            "often GCJ-02 (AMap) or BD-09 (Baidu); say which with --crs wgs84|gcj02|bd09|EPSG:…"
        )
    target = f"/vsizip/{path}" if path.suffix.lower() == ".zip" else str(path)
    try:
        frame = pyogrio.read_dataframe(target)
    except Exception as exc:
        raise BoundaryError(f"cannot read {path.name}: {exc}") from exc
    frame, report.source_crs = to_wgs84(frame, crs)
    report.features = len(frame)
    check_in_china(frame)
    frame = repair(frame, report)
    columns = [c for c in frame.columns if c != "geometry"]
    code_col = _pick(columns, CODE_FIELDS, code_field)
    name_col = _pick(columns, NAME_FIELDS, name_field)
    if code_col is None:
        raise BoundaryError(f"no code field found (looked for {', '.join(CODE_FIELDS)}); name it")
    if name_col is None:
        raise BoundaryError(f"no name field found (looked for {', '.join(NAME_FIELDS)}); name it")
    codes = []
    for i, raw in enumerate(frame[code_col]):
        try:
            codes.append(normalise_code(raw))
        except CodeError as exc:
            raise BoundaryError(f"feature {i}: {exc}") from exc
    dupes = sorted({c for c in codes if codes.count(c) > 1})
    if dupes:
        raise BoundaryError(f"duplicate codes in the file: {', '.join(dupes[:10])}")
    en_col = _pick(columns, NAME_EN_FIELDS, None)
    hh_col = _pick(columns, HOUSEHOLD_FIELDS, None)
    out = gpd.GeoDataFrame(
        {
            "code": codes,
            "name_zh": frame[name_col].astype(str).to_numpy(),
            "name_en": frame[en_col].to_numpy() if en_col else None,
            "households": frame[hh_col].to_numpy() if hh_col else None,
        },
        geometry=frame.geometry.to_numpy(),
        crs=gcrs.WGS84,
    )
    return out, report


def area_km2(frame: gpd.GeoDataFrame) -> NDArray[np.float64]:
    """Ellipsoidal area of each geometry in km² (WGS-84 geodesic)."""
    return np.array([abs(_GEOD.geometry_area_perimeter(g)[0]) / 1e6 for g in frame.geometry])
