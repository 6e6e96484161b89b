"""A track as GPX 1.1 (轨迹导出): what the track replay page shows, for other tools.

Always WGS-84 (GPX knows no other datum), whatever basemap the page was drawn on; times in UTC
with a ``Z`` (fractions of a second when the fixes have them); one ``trkseg`` per stretch
between gaps longer than ``gap_s`` (a GPS dropout or a parked, switched-off vehicle is not
drawn as a straight line by the reader). Text is escaped for XML; the document is built from
arrays without a tree.
"""

from __future__ import annotations

import itertools
from typing import Literal
from xml.sax.saxutils import escape, quoteattr

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["track_gpx"]

GPX_NS = "http://www.topografix.com/GPX/1/1"


def track_gpx(
    name: str,
    time_us: ArrayLike,
    lon: ArrayLike,
    lat: ArrayLike,
    *,
    speed_ms: ArrayLike | None = None,
    gap_s: float = 600.0,
    creator: str = "GridPatrol",
) -> str:
    """GPX 1.1 text of one track.

    Parameters
    ----------
    name
        The track's name (a plate and a day).
    time_us, lon, lat
        Fix times (UTC µs since the epoch, ascending) and positions (degrees, WGS-84).
    speed_ms
        Speeds in m/s (NaN: none), written as the GPX 1.0-style ``speed`` extension.
    gap_s
        A new segment after a gap between fixes longer than this (s).

    Raises
    ------
    ValueError
        When the arrays differ in length or the times go backwards.
    """
    t = np.asarray(time_us, dtype=np.int64)
    x = np.asarray(lon, dtype=np.float64)
    y = np.asarray(lat, dtype=np.float64)
    v = None if speed_ms is None else np.asarray(speed_ms, dtype=np.float64)
    if not (len(t) == len(x) == len(y)) or (v is not None and len(v) != len(t)):
        raise ValueError("times, longitudes, latitudes (and speeds) differ in length")
    if len(t) > 1 and bool(np.any(np.diff(t) < 0)):
        raise ValueError("fix times must be ascending")
    # as precise as the fixes are (whole seconds from most terminals), so nothing is rounded
    unit: Literal["s", "ms", "us"] = (
        "s" if not np.any(t % 1_000_000) else "ms" if not np.any(t % 1000) else "us"
    )
    times = np.datetime_as_string(t.astype("datetime64[us]"), unit=unit)
    lats, lons = np.char.mod("%.7f", y), np.char.mod("%.7f", x)
    speeds = np.full(len(t), "", dtype=object)
    if v is not None:
        known = np.isfinite(v)
        speeds[known] = np.char.mod("<extensions><speed>%.2f</speed></extensions>", v[known])
    points = [
        f'<trkpt lat="{a}" lon="{b}"><time>{c}Z</time>{d}</trkpt>\n'
        for a, b, c, d in zip(lats, lons, times, speeds, strict=True)
    ]
    cuts = [0, *(np.flatnonzero(np.diff(t) > gap_s * 1e6) + 1).tolist(), len(t)]
    segments = ["".join(points[a:b]) for a, b in itertools.pairwise(cuts)]
    out = [
        '<?xml version="1.0" encoding="UTF-8"?>\n',
        f'<gpx version="1.1" creator={quoteattr(creator)} xmlns="{GPX_NS}">\n',
        f"<trk><name>{escape(name)}</name>\n<trkseg>\n",
        "</trkseg>\n<trkseg>\n".join(segments),
    ]
    out.append("</trkseg>\n</trk>\n</gpx>\n")
    return "".join(out)
