"""GeoJSON fixes: Point features with a time property, or lines with per-vertex times.

Points carry ``time``/``timestamp``/``datetime`` (ISO 8601 or unix seconds/ms) in their
properties. LineString, MultiLineString and MultiPoint features carry one time per vertex in
``coordTimes`` or ``times`` (as togeojson and many trackers export them) or in
``coordinateProperties.times``. Coordinates are ``[lon, lat, (altitude)]``. The device comes from a
``device``/``device_id``/``vehicle_id`` property, else from the caller. Other scalar properties are
kept in ``extras``. A truncated FeatureCollection keeps the features before the fault.

A ``crs`` member (GeoJSON 2008:
``{"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::4490"}}``) is honoured: CRS84,
EPSG:4326 and CGCS2000 (EPSG:4490, equal at metre level) are read as they are, ``gcj02``/``bd09``
are converted exactly (``gis.crs``), any other EPSG CRS (a UTM zone …) is reprojected; a CRS that
cannot be read refuses the file (``TrackFileError`` naming it) rather than storing its
coordinates as WGS-84.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import numpy as np
import orjson
import pyproj
from numpy.typing import NDArray

from api.ingest.fixes import FixBatch, FixError
from api.protocols.trackcommon import (
    ParseResult,
    TrackFileError,
    check_tz,
    clean_optional,
    nones,
    range_reasons,
    screen,
    times_to_us,
)
from gis.crs import to_wgs84

TIME_KEYS = ("time", "timestamp", "datetime", "date_time", "fix_time")
TIMES_KEYS = ("coordTimes", "times")
DEVICE_KEYS = ("device", "device_id", "deviceId", "vehicle_id", "vehicle", "tracker", "imei")
_MEASURES = {
    "speed": ("speed",),
    "course": ("course", "heading", "bearing"),
    "altitude": ("altitude", "ele", "elevation"),
    "accuracy": ("accuracy",),
    "battery": ("battery", "batt"),
}
_USED = frozenset({*TIME_KEYS, *TIMES_KEYS, *DEVICE_KEYS, *sum(_MEASURES.values(), ())})
_LINES = ("LineString", "MultiPoint")
# names of WGS-84 lon/lat (and CGCS2000, equal at metre level: DESIGN §7) in a crs member
_LONLAT = re.compile(
    r"(urn:ogc:def:crs:ogc:(1\.3)?:crs84|(ogc:)?crs84|wgs ?84|cgcs ?2000"
    r"|(urn:ogc:def:crs:)?epsg:((\d+(\.\d+)*)?:)?(4326|4490)|https?://www\.opengis\.net/def/crs/"
    r"(ogc/1\.3/crs84|epsg/0/(4326|4490)))",
    re.IGNORECASE,
)
_EPSG = re.compile(
    r"(?:urn:ogc:def:crs:)?epsg:(?:(?:\d+(?:\.\d+)*)?:)?(\d+)"
    r"|https?://www\.opengis\.net/def/crs/epsg/0/(\d+)",
    re.IGNORECASE,
)
Convert = Callable[[NDArray[np.float64], NDArray[np.float64]], tuple[NDArray, NDArray]]


def _salvage(text: str, error: json.JSONDecodeError) -> tuple[list[Any], str]:
    """Features of a broken FeatureCollection read one by one up to the first fault."""
    decoder = json.JSONDecoder()
    key = text.find('"features"')
    pos = text.find("[", key) + 1 if key >= 0 else 0
    features: list[Any] = []
    while pos > 0:
        while pos < len(text) and text[pos] in " \t\r\n,":
            pos += 1
        if pos >= len(text) or text[pos] == "]":
            break
        try:
            feature, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            error = exc
            break
        except RecursionError:  # a feature nested thousands deep: stop here, keep the rest
            return features, f"char {pos}: nested too deeply"
        features.append(feature)
    return features, f"line {error.lineno}, column {error.colno}: {error.msg}"


def _salvage_crs(text: str) -> Any:
    """The ``crs`` member of a broken document when it precedes its features, else None."""
    key, features = text.find('"crs"'), text.find('"features"')
    if key < 0 or (0 <= features < key):
        return None
    start = text.find(":", key) + 1
    while start < len(text) and text[start] in " \t\r\n":
        start += 1
    try:
        value, _ = json.JSONDecoder().raw_decode(text, start)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise TrackFileError("the crs member cannot be read", field="crs") from exc
    return value


def _features(data: bytes) -> tuple[list[Any], str | None, Any]:
    """(features, where parsing stopped or None, the document's crs member or None)."""
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        text = data.decode("utf-8", errors="replace")
        return (*_salvage(text, exc), _salvage_crs(text))
    if isinstance(doc, list):
        return doc, None, None
    if isinstance(doc, dict) and doc.get("type") == "FeatureCollection":
        return list(doc.get("features") or []), None, doc.get("crs")
    if isinstance(doc, dict) and doc.get("type") == "Feature":
        return [doc], None, doc.get("crs")
    raise TrackFileError("not a GeoJSON Feature or FeatureCollection")


def crs_converter(member: Any) -> Convert | None:
    """How to bring coordinates declared by a GeoJSON ``crs`` member to WGS-84 lon/lat: None
    when they already are (no member, CRS84, EPSG:4326, CGCS2000/EPSG:4490).

    Raises
    ------
    TrackFileError
        (``field`` = ``crs``) For a member that names no CRS (a linked CRS, no name) or names
        one that is unknown or not usable for positions.
    """
    if member is None:
        return None
    name = member.get("properties", {}).get("name") if isinstance(member, dict) else None
    if not isinstance(name, str) or member.get("type") != "name":
        shown = _short(member)
        raise TrackFileError(
            f"the GeoJSON crs member {shown} names no CRS: give a named CRS "
            '({"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::4490"}}) or drop it '
            "for WGS-84",
            field="crs",
        )
    text = name.strip()
    if _LONLAT.fullmatch(text):
        return None
    short = text.lower().replace("-", "").replace("_", "")
    if short in ("gcj02", "bd09"):
        return lambda lon, lat: to_wgs84(lon, lat, short)
    code = _EPSG.fullmatch(text)
    try:
        if code is None:
            raise pyproj.exceptions.CRSError("not an EPSG code, CRS84, gcj02 or bd09")
        source = pyproj.CRS.from_epsg(int(code.group(1) or code.group(2)))
        transformer = pyproj.Transformer.from_crs(source, 4326, always_xy=True)
    except (pyproj.exceptions.CRSError, ValueError) as exc:
        raise TrackFileError(
            f"unknown coordinate reference system {text[:100]!r} in the GeoJSON crs member "
            f"({exc}); use CRS84, EPSG:4326, EPSG:4490, another EPSG code, gcj02 or bd09",
            field="crs",
        ) from exc

    def reproject(x: NDArray[np.float64], y: NDArray[np.float64]) -> tuple[NDArray, NDArray]:
        lon, lat = transformer.transform(x, y)
        return np.asarray(lon, dtype=float), np.asarray(lat, dtype=float)

    return reproject


def _first(props: dict[str, Any], keys: tuple[str, ...]) -> Any:
    return next((props[k] for k in keys if props.get(k) is not None), None)


def _vertex_times(props: dict[str, Any]) -> Any:
    times = _first(props, TIMES_KEYS)
    if times is None and isinstance(props.get("coordinateProperties"), dict):
        times = props["coordinateProperties"].get("times")
    return times


def _vertices(geometry: dict[str, Any], props: dict[str, Any]) -> list[tuple[Any, Any]]:
    """(coordinate, time) pairs of a feature; raises ValueError with a reason."""
    kind, coords = geometry.get("type"), geometry.get("coordinates")
    if not isinstance(coords, list):
        raise ValueError("no coordinates array")
    if kind == "Point":
        return [(coords, _first(props, TIME_KEYS))]
    if kind not in (*_LINES, "MultiLineString"):
        raise ValueError(f"{kind} geometry (Point, LineString, MultiLineString, MultiPoint only)")
    times = _vertex_times(props)
    if not isinstance(times, list):
        raise ValueError("no coordTimes/times array for its vertices")
    if kind == "MultiLineString":
        if times and not isinstance(times[0], list):
            times = [times]
        coords = [c for part in coords for c in part]
        times = [t for part in times for t in part]
    if len(times) != len(coords):
        raise ValueError(f"{len(times)} times for {len(coords)} coordinates")
    return list(zip(coords, times, strict=True))


def parse_geojson(
    data: bytes,
    *,
    device: str | None = None,
    tz: str = "UTC",
    speed_factor: float = 1.0,
) -> ParseResult:
    """Parse GeoJSON features into fixes.

    Parameters
    ----------
    data : bytes
        A FeatureCollection, a Feature, or a JSON list of features (WGS-84 lon/lat).
    device : str, optional
        Device of features without a device property.
    tz : str
        IANA zone of naive ISO times (default UTC).
    speed_factor : float
        Multiplier from the ``speed`` property's unit to m/s.

    Returns
    -------
    ParseResult
        Fixes with ``row`` = 1-based feature number; features that cannot be read are errors.
    """
    check_tz(tz)
    features, stopped_at, crs = _features(data)
    convert = crs_converter(crs)
    cols: dict[str, list[Any]] = {k: [] for k in ("device", "time", "xyz", "row", "extras")}
    measures: dict[str, list[Any]] = {k: [] for k in _MEASURES}
    errors: list[FixError] = []
    for number, feature in enumerate(features, start=1):
        props = (feature.get("properties") if isinstance(feature, dict) else None) or {}
        try:
            if not isinstance(feature, dict) or not isinstance(feature.get("geometry"), dict):
                raise ValueError("not a Feature with a geometry")
            pairs = _vertices(feature["geometry"], props)
        except (ValueError, TypeError) as exc:
            errors.append(FixError(number, str(exc), "geometry", _short(feature)))
            continue
        owner = _first(props, DEVICE_KEYS) or device
        extra = {k: v for k, v in props.items() if k not in _USED and _is_scalar(v)}
        text = orjson.dumps(extra).decode() if extra else None
        point = len(pairs) == 1 and feature["geometry"].get("type") == "Point"
        for coords, when in pairs:
            cols["device"].append(None if owner is None else str(owner))
            cols["time"].append(when)
            cols["xyz"].append(coords if isinstance(coords, list) else [])
            cols["row"].append(number)
            cols["extras"].append(text)
            for name, keys in _MEASURES.items():
                measures[name].append(_first(props, keys) if point else None)
    fixes, bad = _assemble(cols, measures, tz, speed_factor, convert)
    errors = sorted([*errors, *bad], key=lambda e: e.row)
    return ParseResult(fixes=fixes, errors=errors, stopped_at=stopped_at, format="geojson")


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def _short(value: Any) -> str:
    text = orjson.dumps(value).decode()
    return text if len(text) <= 500 else text[:500] + "…"


def _number(value: Any) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    try:
        return float(value) if isinstance(value, str) else np.nan
    except ValueError:
        return np.nan


def _assemble(
    cols: dict[str, list[Any]],
    measures: dict[str, list[Any]],
    tz: str,
    factor: float,
    convert: Convert | None = None,
) -> tuple[FixBatch, list[FixError]]:
    n = len(cols["row"])
    if n == 0:
        return FixBatch.empty(), []
    time_us, time_reasons = times_to_us(cols["time"], tz)
    xyz = cols["xyz"]
    lat = np.array([_number(c[1]) if len(c) > 1 else np.nan for c in xyz])
    lon = np.array([_number(c[0]) if len(c) > 0 else np.nan for c in xyz])
    altitude = np.array([_number(c[2]) if len(c) > 2 else np.nan for c in xyz])
    prop_altitude = np.array([_number(v) for v in measures["altitude"]])
    altitude = np.where(np.isnan(altitude), prop_altitude, altitude)
    present = np.array([len(c) >= 2 for c in xyz])
    if convert is not None:  # the file's declared CRS → WGS-84, before the range checks
        with np.errstate(invalid="ignore"):
            lon, lat = convert(lon, lat)

    def measure(name: str, lo: float, hi: float, scale: float = 1.0) -> Any:
        return clean_optional(np.array([_number(v) for v in measures[name]]) * scale, lo, hi)

    batch = FixBatch.from_columns(
        device=cols["device"],
        time_us=time_us,
        lat=lat,
        lon=lon,
        speed=measure("speed", 0, np.inf, factor),
        course=measure("course", 0, 360),
        altitude=altitude,
        accuracy=measure("accuracy", 0, np.inf),
        battery=measure("battery", 0, 100),
        extras=cols["extras"],
        row=cols["row"],
        raw=[f"{c} at {t}" for c, t in zip(xyz, cols["time"], strict=True)],
    )
    device_reasons = nones(n)
    device_reasons[[d is None for d in cols["device"]]] = "missing: no device property; pass one"
    problems = [
        ("device", device_reasons),
        ("time", time_reasons),
        ("lat", range_reasons(lat, present, -90, 90)),
        ("lon", range_reasons(lon, present, -180, 180)),
    ]
    return screen(batch, problems)
