"""``gridpatrol boundaries import``: any declared CRS, repairs reported, bad files write nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import geopandas as gpd
import psycopg
import pytest
from shapely.geometry import Polygon, box
from typer.testing import CliRunner

from api.cli import app as cli

# Hohhot (150102 新城区), away from the Xilingol demo codes
TOWNSHIP = "150102001000"


@pytest.fixture
def cli_env(db_url: str, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("DATABASE_URL", db_url)
    return CliRunner()


def _count(db: psycopg.Connection[Any], prefix: str) -> int:
    row = db.execute(
        "SELECT count(*) FROM admin_area WHERE code LIKE %s", (prefix + "%",)
    ).fetchone()
    assert row is not None
    return int(row[0])


def test_shapefile_in_a_projected_crs_is_reprojected(
    cli_env: CliRunner, db: psycopg.Connection[Any], tmp_path: Path
) -> None:
    # two 2 km × 3 km villages in UTM 49N near Hohhot
    x0, y0 = 620_000.0, 4_520_000.0
    frame = gpd.GeoDataFrame(
        {"code": ["150102001201", "150102001202"], "name": ["甲村", "乙村"]},
        geometry=[box(x0, y0, x0 + 2000, y0 + 3000), box(x0 + 2000, y0, x0 + 4000, y0 + 3000)],
        crs="EPSG:32649",
    )
    path = tmp_path / "villages.shp"
    frame.to_file(path, encoding="utf-8")
    result = cli_env.invoke(cli, ["boundaries", "import", str(path), "--level", "village"])
    assert result.exit_code == 0, result.output
    assert "2 new" in result.output
    rows = db.execute(
        "SELECT code, name_zh, ST_Area(geom::geography), ST_X(ST_Centroid(geom)), "
        "ST_Y(ST_Centroid(geom)) FROM admin_area WHERE code LIKE '1501020012%' ORDER BY code"
    ).fetchall()
    assert [r[:2] for r in rows] == [("150102001201", "甲村"), ("150102001202", "乙村")]
    for row in rows:
        assert row[2] == pytest.approx(6e6, rel=2e-3)  # UTM scale factor ≈ 0.9996–1.0004
    expected = frame.centroid.to_crs(4326)
    assert rows[0][3] == pytest.approx(expected.iloc[0].x, abs=1e-4)
    assert rows[0][4] == pytest.approx(expected.iloc[0].y, abs=1e-4)


def test_self_intersecting_polygon_is_repaired_and_reported(
    cli_env: CliRunner, db: psycopg.Connection[Any], tmp_path: Path
) -> None:
    bowtie = Polygon([(111.70, 40.80), (111.74, 40.84), (111.74, 40.80), (111.70, 40.84)])
    assert not bowtie.is_valid
    doc = {
        "type": "FeatureCollection",
        "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::4490"}},
        "features": [
            {
                "type": "Feature",
                "properties": {"code": "150102001210", "name": "蝴蝶村"},
                "geometry": bowtie.__geo_interface__,
            }
        ],
    }
    path = tmp_path / "bowtie.geojson"
    path.write_text(json.dumps(doc, ensure_ascii=False))
    result = cli_env.invoke(cli, ["boundaries", "import", str(path), "--level", "village"])
    assert result.exit_code == 0, result.output
    assert "feature 0: repaired (Self-intersection" in result.output
    row = db.execute(
        "SELECT ST_IsValid(geom), ST_NumGeometries(geom) FROM admin_area "
        "WHERE code = '150102001210'"
    ).fetchone()
    assert row == (True, 2)


def test_a_file_without_crs_is_rejected_and_nothing_written(
    cli_env: CliRunner, db: psycopg.Connection[Any], tmp_path: Path
) -> None:
    doc = {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "properties": {"code": "150102001220", "name": "无坐标系村"},
                "geometry": box(111.7, 40.8, 111.71, 40.81).__geo_interface__,
            }
        ],
    }
    path = tmp_path / "nocrs.geojson"
    path.write_text(json.dumps(doc))
    before = _count(db, "1501020012")
    result = cli_env.invoke(cli, ["boundaries", "import", str(path), "--level", "village"])
    assert result.exit_code == 1
    assert "declares no CRS" in result.output
    assert _count(db, "1501020012") == before


def test_a_level_mismatch_writes_nothing(
    cli_env: CliRunner, db: psycopg.Connection[Any], tmp_path: Path
) -> None:
    frame = gpd.GeoDataFrame(
        {"code": ["150102001230", TOWNSHIP], "name": ["好村", "不是村"]},
        geometry=[box(111.7, 40.8, 111.71, 40.81), box(111.71, 40.8, 111.72, 40.81)],
        crs="EPSG:4326",
    )
    path = tmp_path / "mixed.gpkg"
    frame.to_file(path)
    result = cli_env.invoke(cli, ["boundaries", "import", str(path), "--level", "village"])
    assert result.exit_code == 1
    assert f"{TOWNSHIP} is a township, not a village" in result.output
    assert _count(db, "150102001230") == 0
