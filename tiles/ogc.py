"""OGC API – Features request parsing and paging links (pure; no database, no HTTP).

``datetime`` follows OGC API – Features Part 1: an instant or an interval ``start/end`` with
``..`` (or nothing) for an open end. A bare date means that whole China-local day, the day
every GridPatrol report counts in.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from urllib.parse import urlencode

from gis.units import china_day_bounds

CRS84 = "http://www.opengis.net/def/crs/OGC/1.3/CRS84"
GEOJSON = "application/geo+json"
CONFORMANCE = [
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/core",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/geojson",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/oas30",
]


class OgcParamError(ValueError):
    """A query parameter the OGC API cannot take (answered 400)."""


@dataclass(frozen=True)
class TimeRange:
    """Inclusive start and exclusive end; ``None`` is open."""

    start: datetime | None
    end: datetime | None


def _instant(text: str, *, end: bool) -> datetime:
    """A point in time; a bare date is its China-local day (its end when ``end``)."""
    try:
        if len(text) == 10:
            return china_day_bounds(date.fromisoformat(text))[1 if end else 0]
        value = datetime.fromisoformat(text)
    except ValueError as exc:
        raise OgcParamError(f"datetime {text!r} is not RFC 3339") from exc
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def parse_datetime(text: str | None) -> TimeRange | None:
    """``datetime`` → a ``TimeRange`` (None when absent).

    Raises
    ------
    OgcParamError
        For a malformed value or an interval that ends before it starts.
    """
    if text is None or text.strip() == "":
        return None
    text = text.strip()
    if "/" not in text:
        at = _instant(text, end=False)
        end = _instant(text, end=True) if len(text) == 10 else at + timedelta(microseconds=1)
        return TimeRange(at, end)
    first, _, last = text.partition("/")
    start = None if first in ("", "..") else _instant(first, end=False)
    stop = None if last in ("", "..") else _instant(last, end=True)
    if stop is not None and len(last) != 10:
        stop += timedelta(microseconds=1)  # an end instant is inclusive
    if start is None and stop is None:
        raise OgcParamError("datetime interval must have at least one end")
    if start is not None and stop is not None and stop <= start:
        raise OgcParamError("datetime interval ends before it starts")
    return TimeRange(start, stop)


def parse_bbox(text: str | None) -> tuple[float, float, float, float] | None:
    """``bbox=minLon,minLat,maxLon,maxLat`` (CRS84).

    Raises
    ------
    OgcParamError
        For anything but four numbers in range, in order.
    """
    if text is None or text.strip() == "":
        return None
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError as exc:
        raise OgcParamError("bbox must be four numbers: minLon,minLat,maxLon,maxLat") from exc
    if len(values) != 4:
        raise OgcParamError("bbox must be four numbers: minLon,minLat,maxLon,maxLat")
    x0, y0, x1, y1 = values
    if not (-180 <= x0 <= x1 <= 180 and -90 <= y0 <= y1 <= 90):
        raise OgcParamError(
            "bbox must satisfy -180 ≤ minLon ≤ maxLon ≤ 180, -90 ≤ minLat ≤ maxLat ≤ 90"
        )
    return x0, y0, x1, y1


def page_links(
    url: str,
    params: list[tuple[str, str]],
    *,
    offset: int,
    limit: int,
    returned: int,
    matched: int,
) -> list[dict[str, str]]:
    """``self``, ``next`` and ``prev`` links of one page of items; ``token`` never travels."""
    kept = [(k, v) for k, v in params if k not in ("offset", "limit", "token")]

    def link(rel: str, at: int) -> dict[str, str]:
        query = urlencode([*kept, ("limit", str(limit)), ("offset", str(at))])
        return {"href": f"{url}?{query}", "rel": rel, "type": GEOJSON, "title": rel}

    links = [link("self", offset)]
    if offset + returned < matched:
        links.append(link("next", offset + returned))
    if offset > 0:
        links.append(link("prev", max(0, offset - limit)))
    return links
