"""Stops of a track (停留点): where a vehicle stayed at least ``min_duration_s`` within
``radius_m`` of where it arrived — checkpoints, herder visits, breaks.

The stay-point rule (Li et al. 2008, as movingpandas' stop detector): from an anchor fix, the
stop grows while every later fix stays within the radius of the anchor; when it lasted long
enough it is a stop and the search resumes after it, else the anchor moves on by one fix. A gap
in the fixes (terminal off while parked) counts as staying when the fixes either side of it are
within the radius. Distances are metres on a local equirectangular plane, exact to well under
a metre at stop radii.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from gis.units import EARTH_RADIUS_M


@dataclass(frozen=True)
class Stops:
    """Stops found in a track, column-wise; times are µs since the epoch (UTC)."""

    start_us: NDArray[np.int64]
    end_us: NDArray[np.int64]
    lon: NDArray[np.float64]
    lat: NDArray[np.float64]
    fixes: NDArray[np.int64]
    first_index: NDArray[np.int64]

    def __len__(self) -> int:
        return len(self.start_us)

    @property
    def duration_s(self) -> NDArray[np.float64]:
        return (self.end_us - self.start_us) / 1e6


def _local_metres(
    lon: NDArray[np.float64], lat: NDArray[np.float64]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    lat0 = np.radians(np.mean(lat)) if len(lat) else 0.0
    x = np.radians(lon) * EARTH_RADIUS_M * np.cos(lat0)
    y = np.radians(lat) * EARTH_RADIUS_M
    return x, y


def detect_stops(
    time_us: ArrayLike,
    lon: ArrayLike,
    lat: ArrayLike,
    *,
    min_duration_s: float = 300.0,
    radius_m: float = 50.0,
) -> Stops:
    """Stops of one track.

    Parameters
    ----------
    time_us
        Fix times, µs since the epoch, ascending.
    lon, lat
        WGS-84 degrees.
    min_duration_s
        Shortest stay that counts as a stop, seconds.
    radius_m
        Every fix of a stop lies within this distance of its first fix, metres.

    Returns
    -------
    Stops
        One row per stop: first and last fix time, centroid (WGS-84), fix count, index of the
        first fix.

    Raises
    ------
    ValueError
        When the arrays differ in length, times are not ascending, or a parameter is not
        positive.
    """
    t = np.asarray(time_us, dtype=np.int64)
    x_deg = np.asarray(lon, dtype=np.float64)
    y_deg = np.asarray(lat, dtype=np.float64)
    if not (len(t) == len(x_deg) == len(y_deg)):
        raise ValueError("time_us, lon and lat must have the same length")
    if len(t) > 1 and np.any(np.diff(t) < 0):
        raise ValueError("fix times must be ascending")
    if min_duration_s <= 0 or radius_m <= 0:
        raise ValueError("min_duration_s and radius_m must be positive")
    x, y = _local_metres(x_deg, y_deg)
    n = len(t)
    found: list[tuple[int, int]] = []
    i = 0
    r2 = radius_m * radius_m
    min_us = int(min_duration_s * 1e6)
    while i < n - 1:
        # the first later fix outside the radius ends the candidate stop (vectorised scan,
        # widening the window only while every fix so far stays inside)
        window = 64
        end = n
        while True:
            hi = min(n, i + 1 + window)
            d2 = (x[i + 1 : hi] - x[i]) ** 2 + (y[i + 1 : hi] - y[i]) ** 2
            outside = np.flatnonzero(d2 > r2)
            if len(outside):
                end = i + 1 + int(outside[0])
                break
            if hi == n:
                break
            window *= 2
        last = end - 1
        if last > i and t[last] - t[i] >= min_us:
            found.append((i, last))
            i = end
        else:
            i += 1
    first = np.array([a for a, _ in found], dtype=np.int64)
    last_ix = np.array([b for _, b in found], dtype=np.int64)
    counts = last_ix - first + 1
    centre_lon = np.array([x_deg[a : b + 1].mean() for a, b in found], dtype=np.float64)
    centre_lat = np.array([y_deg[a : b + 1].mean() for a, b in found], dtype=np.float64)
    return Stops(
        start_us=t[first] if len(first) else np.array([], dtype=np.int64),
        end_us=t[last_ix] if len(last_ix) else np.array([], dtype=np.int64),
        lon=centre_lon,
        lat=centre_lat,
        fixes=counts,
        first_index=first,
    )
