"""Tile addresses and the per-tile GCJ-02 affine map (pure)."""

from __future__ import annotations

import numpy as np
import pytest

from gis.crs import wgs84_to_gcj02
from tiles.tilemath import IDENTITY, MAX_ZOOM, Tile, TileRangeError, gcj02_affine, tile_at


@pytest.mark.parametrize(
    ("z", "x", "y", "zoom_error"),
    [(-1, 0, 0, True), (MAX_ZOOM + 1, 0, 0, True), (2, 4, 0, False), (2, 0, -1, False)],
)
def test_addresses_outside_the_pyramid_are_refused(
    z: int, x: int, y: int, zoom_error: bool
) -> None:
    with pytest.raises(TileRangeError) as info:
        Tile.checked(z, x, y)
    assert info.value.zoom is zoom_error


def test_a_point_lies_in_the_tile_found_for_it() -> None:
    lon, lat = 116.07, 43.93  # 锡林浩特
    for z in range(19):
        west, south, east, north = tile_at(lon, lat, z).bounds()
        assert west <= lon < east
        assert south < lat <= north


def test_the_world_tile_spans_web_mercator() -> None:
    west, south, east, north = Tile.checked(0, 0, 0).bounds()
    assert (west, east) == (-180.0, 180.0)
    assert north == pytest.approx(85.0511287798, abs=1e-9)
    assert south == pytest.approx(-85.0511287798, abs=1e-9)


@pytest.mark.parametrize("z", [5, 8, 10, 11, 12, 14, 17])
def test_gcj02_affine_is_within_a_third_of_a_pixel_over_xilingol(z: int) -> None:
    rng = np.random.default_rng(z)
    for lon, lat in zip(rng.uniform(111.2, 119.9, 25), rng.uniform(41.6, 46.7, 25), strict=True):
        tile = tile_at(float(lon), float(lat), z)
        affine = gcj02_affine(tile)
        assert affine.max_error_px < 0.35, (z, tile)
        # the fit reproduces the exact forward formula at random points of the tile
        fx, fy = rng.uniform(0, 1, 20), rng.uniform(0, 1, 20)
        pts = np.array([tile.lonlat(a, b) for a, b in zip(fx, fy, strict=True)])
        ex, ey = wgs84_to_gcj02(pts[:, 0], pts[:, 1])
        ax, ay = affine.apply(pts[:, 0], pts[:, 1])
        err_m = np.hypot((ax - ex) * np.cos(np.radians(pts[:, 1])), ay - ey) * 111_320.0
        assert err_m.max() < 0.35 * tile.pixel_m()


def test_gcj02_shift_is_the_offset_at_the_tile_centre() -> None:
    tile = tile_at(116.07, 43.93, 12)
    lon, lat = tile.lonlat(0.5, 0.5)
    dx, dy = gcj02_affine(tile).shift_at(lon, lat)
    gx, gy = wgs84_to_gcj02(np.array([lon]), np.array([lat]))
    err_m = np.hypot((dx - (gx[0] - lon)) * np.cos(np.radians(lat)), dy - (gy[0] - lat)) * 111_320
    assert err_m < 0.35 * tile.pixel_m()
    assert 300 < np.hypot(dx * 80_000, dy * 111_000) < 900  # ≈ 600 m in Xilingol


def test_no_gcj02_offset_outside_china() -> None:
    assert gcj02_affine(tile_at(2.35, 48.85, 12)) is IDENTITY  # Paris
