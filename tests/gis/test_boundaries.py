"""Reading boundary files: declared CRS honoured, GCJ-02 converted, bad files refused."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest

from gis.boundaries import BoundaryError, normalise_code, read_boundaries
from gis.crs import haversine_m

DATA = Path(__file__).resolve().parents[2] / "data" / "boundaries"
TIANDITU = DATA / "xilingol_counties_tianditu_cgcs2000.geojson"
AMAP = DATA / "xilingol_counties_amap_gcj02.geojson"


def _centroids(frame: gpd.GeoDataFrame) -> gpd.GeoSeries:
    return frame.to_crs(6933).centroid.to_crs(4326)


def test_cgcs2000_counties_read_as_wgs84() -> None:
    frame, report = read_boundaries(TIANDITU)
    assert len(frame) == 12
    assert report.source_crs == "EPSG:4490"
    assert frame.crs.to_epsg() == 4326
    assert frame["code"].str.len().eq(12).all()
    assert set(frame.geom_type) == {"MultiPolygon"}


def test_the_undeclared_gcj02_file_is_refused_without_a_crs() -> None:
    with pytest.raises(BoundaryError, match=r"declares no CRS.*GCJ-02"):
        read_boundaries(AMAP)


def test_declared_gcj02_lands_on_the_tianditu_boundaries() -> None:
    real, _ = read_boundaries(TIANDITU)
    as_wgs84, _ = read_boundaries(AMAP, crs="wgs84")  # the trap: ≈ 600 m off
    converted, _ = read_boundaries(AMAP, crs="gcj02")
    c_real = _centroids(real.sort_values("code"))
    naive = haversine_m(c_real.x, c_real.y, *_xy(_centroids(as_wgs84.sort_values("code"))))
    fixed = haversine_m(c_real.x, c_real.y, *_xy(_centroids(converted.sort_values("code"))))
    assert np.median(naive) > 450  # read as WGS-84 the boundaries sit ~0.6 km north-east
    assert np.median(fixed) < 150  # converted, only the sources' own differences remain


def _xy(points: gpd.GeoSeries) -> tuple[np.ndarray, np.ndarray]:
    return points.x.to_numpy(), points.y.to_numpy()


def test_projected_coordinates_mislabelled_as_degrees_are_refused(tmp_path: Path) -> None:
    real, _ = read_boundaries(TIANDITU)
    projected = real.head(1).to_crs(32650)
    path = tmp_path / "mislabelled.gpkg"
    projected.set_crs(4326, allow_override=True).to_file(path)
    with pytest.raises(BoundaryError, match="outside China's plausible range"):
        read_boundaries(path)


def test_gb_and_short_codes_are_normalised() -> None:
    assert normalise_code("156152502") == "152502000000"
    assert normalise_code("152502100") == "152502100000"
    assert normalise_code(152502100201.0) == "152502100201"


def test_bad_features_are_named(tmp_path: Path) -> None:
    doc = {
        "type": "FeatureCollection",
        "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:OGC:1.3:CRS84"}},
        "features": [
            {
                "type": "Feature",
                "properties": {"code": "152502", "name": "x"},
                "geometry": {"type": "Point", "coordinates": [116.0, 44.0]},
            },
        ],
    }
    path = tmp_path / "points.geojson"
    path.write_text(json.dumps(doc))
    with pytest.raises(BoundaryError, match=r"features \[0\] are not polygons \(Point\)"):
        read_boundaries(path)
