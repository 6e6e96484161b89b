"""Coordinate reference systems: local UTM zones, and China's offset systems GCJ-02 and BD-09.

We store WGS-84 (EPSG:4326) always. CGCS2000 (EPSG:4490) equals WGS-84 at metre level, so it is
taken as is. GCJ-02 (AMap/Tencent "Mars" coordinates) and BD-09 (Baidu) are obfuscations of
WGS-84 by a public forward formula; we convert back exactly with a fixed-point (Newton-like)
iteration of that formula, to well under 0.1 m, never with the one-step 1–2 m inverse.
All functions are vectorised over numpy arrays.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pyproj
from numpy.typing import ArrayLike, NDArray

from gis.units import EARTH_RADIUS_M

WGS84 = "EPSG:4326"
CGCS2000 = "EPSG:4490"
InputCrs = Literal["wgs84", "cgcs2000", "gcj02", "bd09"]
INPUT_CRS: tuple[str, ...] = ("wgs84", "cgcs2000", "gcj02", "bd09")

_A = 6378245.0  # Krasovsky 1940 semi-major axis used by the GCJ-02 formula
_EE = 0.00669342162296594323  # its first eccentricity squared
_X_PI = np.pi * 3000.0 / 180.0

FloatArray = NDArray[np.float64]


def utm_epsg(lon: float, lat: float) -> int:
    """EPSG code of the WGS-84 UTM zone holding (lon, lat); Xilingol is in zones 49N–50N."""
    if not (-180.0 <= lon <= 180.0 and -80.0 <= lat <= 84.0):
        raise ValueError(f"no UTM zone for lon={lon}, lat={lat}")
    zone = min(int((lon + 180.0) // 6.0) + 1, 60)
    return (32600 if lat >= 0 else 32700) + zone


def utm_crs(lon: float, lat: float) -> pyproj.CRS:
    return pyproj.CRS.from_epsg(utm_epsg(lon, lat))


def in_china(lon: ArrayLike, lat: ArrayLike) -> NDArray[np.bool_]:
    """The rough mainland-China box inside which the GCJ-02 offset applies (outside: none)."""
    lon_a = np.asarray(lon, dtype=float)
    lat_a = np.asarray(lat, dtype=float)
    return (lon_a >= 72.004) & (lon_a <= 137.8347) & (lat_a >= 0.8293) & (lat_a <= 55.8271)


def _delta(lon: FloatArray, lat: FloatArray) -> tuple[FloatArray, FloatArray]:
    """GCJ-02 offset (dlon, dlat) in degrees at WGS-84 (lon, lat), the public formula."""
    x = lon - 105.0
    y = lat - 35.0
    sx = np.sqrt(np.abs(x))
    dlat = -100.0 + 2.0 * x + 3.0 * y + 0.2 * y * y + 0.1 * x * y + 0.2 * sx
    dlat += (20.0 * np.sin(6.0 * x * np.pi) + 20.0 * np.sin(2.0 * x * np.pi)) * 2.0 / 3.0
    dlat += (20.0 * np.sin(y * np.pi) + 40.0 * np.sin(y / 3.0 * np.pi)) * 2.0 / 3.0
    dlat += (160.0 * np.sin(y / 12.0 * np.pi) + 320.0 * np.sin(y * np.pi / 30.0)) * 2.0 / 3.0
    dlon = 300.0 + x + 2.0 * y + 0.1 * x * x + 0.1 * x * y + 0.1 * sx
    dlon += (20.0 * np.sin(6.0 * x * np.pi) + 20.0 * np.sin(2.0 * x * np.pi)) * 2.0 / 3.0
    dlon += (20.0 * np.sin(x * np.pi) + 40.0 * np.sin(x / 3.0 * np.pi)) * 2.0 / 3.0
    dlon += (150.0 * np.sin(x / 12.0 * np.pi) + 300.0 * np.sin(x / 30.0 * np.pi)) * 2.0 / 3.0
    rad = lat / 180.0 * np.pi
    magic = 1.0 - _EE * np.sin(rad) ** 2
    sqrt_magic = np.sqrt(magic)
    dlat = (dlat * 180.0) / ((_A * (1.0 - _EE)) / (magic * sqrt_magic) * np.pi)
    dlon = (dlon * 180.0) / (_A / sqrt_magic * np.cos(rad) * np.pi)
    return dlon, dlat


def _arrays(lon: ArrayLike, lat: ArrayLike) -> tuple[FloatArray, FloatArray]:
    lon_a = np.asarray(lon, dtype=np.float64)
    lat_a = np.asarray(lat, dtype=np.float64)
    if lon_a.shape != lat_a.shape:
        raise ValueError(f"lon and lat differ in shape: {lon_a.shape} vs {lat_a.shape}")
    return lon_a, lat_a


def wgs84_to_gcj02(lon: ArrayLike, lat: ArrayLike) -> tuple[FloatArray, FloatArray]:
    """Forward GCJ-02 obfuscation (for display on AMap tiles and for tests)."""
    lon_a, lat_a = _arrays(lon, lat)
    dlon, dlat = _delta(lon_a, lat_a)
    inside = in_china(lon_a, lat_a)
    return np.where(inside, lon_a + dlon, lon_a), np.where(inside, lat_a + dlat, lat_a)


def gcj02_to_wgs84(
    lon: ArrayLike, lat: ArrayLike, *, tolerance_deg: float = 1e-10, max_iter: int = 30
) -> tuple[FloatArray, FloatArray]:
    """Exact inverse of ``wgs84_to_gcj02`` by fixed-point iteration.

    Starts from the one-step inverse and repeatedly corrects by the residual of the forward
    transform; converges to ``tolerance_deg`` (≈ 1e-5 m) in 3–6 steps in China.
    """
    glon, glat = _arrays(lon, lat)
    wlon, wlat = glon.copy(), glat.copy()
    for _ in range(max_iter):
        flon, flat = wgs84_to_gcj02(wlon, wlat)
        rlon, rlat = flon - glon, flat - glat
        wlon -= rlon
        wlat -= rlat
        if np.all(np.abs(rlon) < tolerance_deg) and np.all(np.abs(rlat) < tolerance_deg):
            break
    return wlon, wlat


def gcj02_to_bd09(lon: ArrayLike, lat: ArrayLike) -> tuple[FloatArray, FloatArray]:
    lon_a, lat_a = _arrays(lon, lat)
    z = np.sqrt(lon_a**2 + lat_a**2) + 0.00002 * np.sin(lat_a * _X_PI)
    theta = np.arctan2(lat_a, lon_a) + 0.000003 * np.cos(lon_a * _X_PI)
    return z * np.cos(theta) + 0.0065, z * np.sin(theta) + 0.006


def bd09_to_gcj02(
    lon: ArrayLike, lat: ArrayLike, *, tolerance_deg: float = 1e-10, max_iter: int = 30
) -> tuple[FloatArray, FloatArray]:
    """Exact inverse of ``gcj02_to_bd09`` (iterated like ``gcj02_to_wgs84``)."""
    blon, blat = _arrays(lon, lat)
    x = blon - 0.0065
    y = blat - 0.006
    z = np.sqrt(x * x + y * y) - 0.00002 * np.sin(y * _X_PI)
    theta = np.arctan2(y, x) - 0.000003 * np.cos(x * _X_PI)
    glon, glat = z * np.cos(theta), z * np.sin(theta)
    for _ in range(max_iter):
        flon, flat = gcj02_to_bd09(glon, glat)
        rlon, rlat = flon - blon, flat - blat
        glon -= rlon
        glat -= rlat
        if np.all(np.abs(rlon) < tolerance_deg) and np.all(np.abs(rlat) < tolerance_deg):
            break
    return glon, glat


def wgs84_to_bd09(lon: ArrayLike, lat: ArrayLike) -> tuple[FloatArray, FloatArray]:
    return gcj02_to_bd09(*wgs84_to_gcj02(lon, lat))


def bd09_to_wgs84(lon: ArrayLike, lat: ArrayLike) -> tuple[FloatArray, FloatArray]:
    return gcj02_to_wgs84(*bd09_to_gcj02(lon, lat))


def to_wgs84(lon: ArrayLike, lat: ArrayLike, crs: str) -> tuple[FloatArray, FloatArray]:
    """Convert coordinates declared in ``crs`` (wgs84, cgcs2000, gcj02, bd09) to WGS-84.

    Raises
    ------
    ValueError
        For an unknown CRS name.
    """
    name = crs.lower().replace("-", "").replace("_", "")
    if name in ("wgs84", "epsg4326", "cgcs2000", "epsg4490"):
        return _arrays(lon, lat)
    if name == "gcj02":
        return gcj02_to_wgs84(lon, lat)
    if name == "bd09":
        return bd09_to_wgs84(lon, lat)
    raise ValueError(f"unknown coordinate system {crs!r}; expected one of {', '.join(INPUT_CRS)}")


def from_wgs84(lon: ArrayLike, lat: ArrayLike, crs: str) -> tuple[FloatArray, FloatArray]:
    """WGS-84 to a display CRS (for AMap/Baidu tiles); never store the result."""
    name = crs.lower().replace("-", "").replace("_", "")
    if name in ("wgs84", "cgcs2000"):
        return _arrays(lon, lat)
    if name == "gcj02":
        return wgs84_to_gcj02(lon, lat)
    if name == "bd09":
        return wgs84_to_bd09(lon, lat)
    raise ValueError(f"unknown coordinate system {crs!r}; expected one of {', '.join(INPUT_CRS)}")


_GEOD = pyproj.Geod(ellps="WGS84")


def geodesic_distance_m(
    lon1: ArrayLike, lat1: ArrayLike, lon2: ArrayLike, lat2: ArrayLike
) -> FloatArray:
    """Distance on the WGS-84 ellipsoid, metres (vectorised)."""
    _, _, dist = _GEOD.inv(
        np.asarray(lon1, float),
        np.asarray(lat1, float),
        np.asarray(lon2, float),
        np.asarray(lat2, float),
    )
    return np.asarray(dist, dtype=np.float64)


def haversine_m(lon1: ArrayLike, lat1: ArrayLike, lon2: ArrayLike, lat2: ArrayLike) -> FloatArray:
    """Great-circle distance on the mean-radius sphere, metres (fast; < 0.5 % error)."""
    r = EARTH_RADIUS_M
    p1, p2 = np.radians(np.asarray(lat1, float)), np.radians(np.asarray(lat2, float))
    dphi = p2 - p1
    dlmb = np.radians(np.asarray(lon2, float) - np.asarray(lon1, float))
    h = np.sin(dphi / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dlmb / 2) ** 2
    return 2 * r * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0)))
