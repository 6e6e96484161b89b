"""Web-Mercator tile arithmetic (XYZ scheme, as Leaflet, MapLibre and QGIS use it), and the
per-tile affine approximation of GCJ-02 that lets AMap-based maps draw our WGS-84 features.

Pure functions: no database, no HTTP.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from gis.crs import in_china, wgs84_to_gcj02
from gis.units import METRES_PER_DEGREE

MAX_ZOOM = 22
EXTENT = 4096  # MVT units per tile side
BUFFER = 256  # MVT units drawn beyond each tile edge (so strokes join across tiles)
MERCATOR_LAT = 85.0511287798066


class TileRangeError(ValueError):
    """A tile address outside the pyramid: ``zoom`` is True when the zoom itself is invalid."""

    def __init__(self, message: str, *, zoom: bool) -> None:
        super().__init__(message)
        self.zoom = zoom


@dataclass(frozen=True)
class Tile:
    """One tile of the XYZ pyramid (y grows southwards)."""

    z: int
    x: int
    y: int

    @classmethod
    def checked(cls, z: int, x: int, y: int) -> Tile:
        """The tile, or ``TileRangeError`` when z is not in 0…MAX_ZOOM or x/y not in 0…2^z-1."""
        if not 0 <= z <= MAX_ZOOM:
            raise TileRangeError(f"zoom {z} is outside 0…{MAX_ZOOM}", zoom=True)
        n = 1 << z
        if not (0 <= x < n and 0 <= y < n):
            raise TileRangeError(f"tile {z}/{x}/{y} does not exist (x and y < {n})", zoom=False)
        return cls(z, x, y)

    def lonlat(self, fx: float, fy: float) -> tuple[float, float]:
        """WGS-84 (lon, lat) of the point at fractions ``fx``, ``fy`` (0…1) across the tile."""
        n = float(1 << self.z)
        lon = (self.x + fx) / n * 360.0 - 180.0
        lat = math.degrees(math.atan(math.sinh(math.pi * (1.0 - 2.0 * (self.y + fy) / n))))
        return lon, lat

    def bounds(self) -> tuple[float, float, float, float]:
        """(west, south, east, north) in WGS-84 degrees."""
        west, north = self.lonlat(0.0, 0.0)
        east, south = self.lonlat(1.0, 1.0)
        return west, south, east, north

    def pixel_m(self) -> float:
        """Ground size of one of the tile's 256 display pixels at its centre, in metres."""
        _, lat = self.lonlat(0.5, 0.5)
        return 40_075_016.686 * math.cos(math.radians(lat)) / (256.0 * (1 << self.z))


def tile_at(lon: float, lat: float, z: int) -> Tile:
    """The tile of zoom ``z`` holding a WGS-84 point."""
    n = 1 << z
    lat = max(-MERCATOR_LAT, min(MERCATOR_LAT, lat))
    x = int((lon + 180.0) / 360.0 * n)
    rad = math.radians(lat)
    y = int((1.0 - math.asinh(math.tan(rad)) / math.pi) / 2.0 * n)
    return Tile.checked(z, min(x, n - 1), min(y, n - 1))


def tiles_covering(bbox: tuple[float, float, float, float], z: int) -> list[Tile]:
    """Every tile of zoom ``z`` meeting ``bbox`` (west, south, east, north; degrees)."""
    west, south, east, north = bbox
    top_left, bottom_right = tile_at(west, north, z), tile_at(east, south, z)
    return [
        Tile(z, x, y)
        for x in range(top_left.x, bottom_right.x + 1)
        for y in range(top_left.y, bottom_right.y + 1)
    ]


@dataclass(frozen=True)
class Affine:
    """``lon' = a·lon + b·lat + xoff``, ``lat' = d·lon + e·lat + yoff`` — PostGIS ``ST_Affine``
    argument order (a, b, d, e, xoff, yoff). ``max_error_px`` is the largest deviation from the
    exact transform found on a dense sample of the tile, in display pixels."""

    a: float
    b: float
    d: float
    e: float
    xoff: float
    yoff: float
    max_error_px: float

    def apply(self, lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return (
            self.a * lon + self.b * lat + self.xoff,
            self.d * lon + self.e * lat + self.yoff,
        )

    def shift_at(self, lon: float, lat: float) -> tuple[float, float]:
        """The shift (dlon, dlat) the map applies at a point; the search envelope of a tile
        moves back by the shift at its centre (the rest is far inside the tile's buffer)."""
        x, y = self.apply(np.array([lon]), np.array([lat]))
        return float(x[0]) - lon, float(y[0]) - lat


IDENTITY = Affine(1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0)


def gcj02_affine(tile: Tile, *, samples: int = 5) -> Affine:
    """Affine map from WGS-84 to GCJ-02 fitted over one tile (least squares on a lattice).

    The GCJ-02 offset (≈ 600 m in Xilingol) varies smoothly, so over one tile an affine map
    reproduces the exact forward formula to well under a display pixel (≤ 0.25 px at every zoom
    over Inner Mongolia, ≈ 0 at street zooms); outside China it is the identity. Features are
    stored in WGS-84 and only shifted for display on GCJ-02 basemaps (AMap).

    Parameters
    ----------
    tile
        The tile as addressed in the GCJ-02 basemap's pyramid.
    samples
        Lattice points per side for the fit (and the error check, on a denser lattice).
    """
    grid = np.linspace(0.0, 1.0, samples)
    fx, fy = np.meshgrid(grid, grid)
    pts = np.array([tile.lonlat(a, b) for a, b in zip(fx.ravel(), fy.ravel(), strict=True)])
    gx, gy = wgs84_to_gcj02(pts[:, 0], pts[:, 1])
    if not in_china(pts[:, 0], pts[:, 1]).any():
        return IDENTITY
    design = np.c_[pts[:, 0], pts[:, 1], np.ones(len(pts))]
    cx = np.linalg.lstsq(design, gx, rcond=None)[0]
    cy = np.linalg.lstsq(design, gy, rcond=None)[0]
    a, b, xoff = (float(v) for v in cx)
    d, e, yoff = (float(v) for v in cy)
    fit = Affine(a, b, d, e, xoff, yoff, 0.0)
    dense = np.linspace(0.0, 1.0, 4 * samples)
    dx, dy = np.meshgrid(dense, dense)
    check = np.array([tile.lonlat(a, b) for a, b in zip(dx.ravel(), dy.ravel(), strict=True)])
    ex, ey = wgs84_to_gcj02(check[:, 0], check[:, 1])
    ax, ay = fit.apply(check[:, 0], check[:, 1])
    coslat = np.cos(np.radians(check[:, 1]))
    err_m = np.hypot((ax - ex) * coslat, ay - ey) * METRES_PER_DEGREE
    return Affine(
        fit.a, fit.b, fit.d, fit.e, fit.xoff, fit.yoff, float(err_m.max() / tile.pixel_m())
    )
