"""JSON bodies of the OsmAnd protocol (Traccar Client 9+, transistorsoft background geolocation).

``{"device_id": …, "location": {"timestamp": ISO, "coords": {latitude, longitude, speed (m/s,
-1 unknown), heading, altitude, accuracy}, "battery": {"level": 0..1, "is_charging"},
"is_moving", "odometer", "event", "activity", …}}``; with the plugin's ``batchSync`` ``location`` is
a list, and a body may be a list of such objects. Keys we do not map are kept in extras.
"""

from __future__ import annotations

from typing import Any

import orjson

from api.ingest.fixes import FixBatch
from api.protocols.osmandfix import (
    NAN,
    OsmAndError,
    OsmAndFix,
    in_range,
    time_us,
    to_batch,
    unix_us,
)

_ROOT_USED = frozenset({"device_id", "id", "location", "battery", "key"})  # key: never kept
_JSON_USED = _ROOT_USED | {"timestamp", "coords"}
_COORDS_USED = frozenset({"latitude", "longitude", "speed", "heading", "altitude", "accuracy"})


def _json_number(where: str, value: Any, *, required: bool = False) -> float:
    if value is None:
        if required:
            raise OsmAndError(where, "missing")
        return NAN
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise OsmAndError(where, "not a number")
    return float(value)


def _coordinate(where: str, value: Any, limit: float) -> float:
    return in_range(where, _json_number(where, value, required=True), -limit, limit)


def _json_time(where: str, value: Any, now_us: int) -> int:
    if value is None:
        return now_us
    if isinstance(value, str):
        return time_us(where, value)
    return unix_us(where, _json_number(where, value))


def _json_fix(root: dict[str, Any], location: Any, where: str, now_us: int, raw: str) -> OsmAndFix:
    if not isinstance(location, dict):
        raise OsmAndError(where, "missing" if location is None else "not an object")
    device = root.get("device_id", root.get("id"))
    if device is None or str(device).strip() == "":
        raise OsmAndError("device_id", "missing")
    coords = location.get("coords")
    if not isinstance(coords, dict):
        raise OsmAndError(f"{where}.coords", "missing" if coords is None else "not an object")
    c = f"{where}.coords"
    lat = _coordinate(f"{c}.latitude", coords.get("latitude"), 90)
    lon = _coordinate(f"{c}.longitude", coords.get("longitude"), 180)
    speed = _json_number(f"{c}.speed", coords.get("speed"))
    course = _json_number(f"{c}.heading", coords.get("heading"))
    accuracy = _json_number(f"{c}.accuracy", coords.get("accuracy"))
    extras: dict[str, Any] = {}
    if location is not root:
        extras.update((k, v) for k, v in root.items() if k not in _ROOT_USED)
    extras.update((k, v) for k, v in location.items() if k not in _JSON_USED)
    extras.update((k, v) for k, v in coords.items() if k not in _COORDS_USED)
    battery = NAN
    info = location.get("battery", root.get("battery"))
    if isinstance(info, dict):
        level = _json_number(f"{where}.battery.level", info.get("level"))
        battery = in_range(f"{where}.battery.level", level, 0, 1) * 100 if level >= 0 else NAN
        if isinstance(info.get("is_charging"), bool):
            extras["charge"] = info["is_charging"]
    return OsmAndFix(
        device=str(device).strip(),
        time_us=_json_time(f"{where}.timestamp", location.get("timestamp"), now_us),
        lat=lat,
        lon=lon,
        speed=speed if speed >= 0 else NAN,
        course=course if 0 <= course <= 360 else NAN,
        altitude=_json_number(f"{c}.altitude", coords.get("altitude")),
        accuracy=accuracy if accuracy >= 0 else NAN,
        battery=battery,
        extras=orjson.dumps(extras).decode() if extras else None,
        raw=raw,
    )


def parse_json(body: bytes | str, *, now_us: int, device: str | None = None) -> FixBatch:
    """Parse a JSON body: one object, ``location`` as a list, or a list of objects.

    A location may also sit at the top level (``{"device_id", "coords", "timestamp", …}``).

    Parameters
    ----------
    body : bytes or str
        The request body.
    now_us : int
        UTC µs for locations without a ``timestamp``.
    device : str, optional
        Device identifier when the body has no ``device_id`` (e.g. from the query string).

    Returns
    -------
    FixBatch
        One fix per location, in order; ``raw`` the whole body for a single location, else each
        location's own JSON; ``row`` the 1-based location number.

    Raises
    ------
    OsmAndError
        Invalid JSON (field ``body``), no ``device_id`` or ``location``, or a location whose
        latitude/longitude is missing, not a number or out of range (field as a path, e.g.
        ``location[2].coords.latitude``).
    """
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise OsmAndError("body", f"not JSON ({exc})") from None
    roots = doc if isinstance(doc, list) else [doc]
    fixes: list[OsmAndFix] = []
    text = body.decode("utf-8", errors="replace") if isinstance(body, bytes) else body
    for r, item in enumerate(roots):
        prefix = f"[{r}]." if isinstance(doc, list) else ""
        if not isinstance(item, dict):
            raise OsmAndError(f"[{r}]", "not an object")
        root = dict(item)
        if root.get("device_id") is None and device is not None:
            root["device_id"] = device
        # the plugin's httpRootProperty "." puts the location's keys at the top level
        location = root if "location" not in root and "coords" in root else root.get("location")
        several = isinstance(doc, list) or isinstance(location, list)
        for i, loc in enumerate(location if isinstance(location, list) else [location]):
            where = f"{prefix}location[{i}]" if isinstance(location, list) else f"{prefix}location"
            raw = orjson.dumps(loc).decode() if several else text
            fixes.append(_json_fix(root, loc, where, now_us, raw))
    if not fixes:
        raise OsmAndError("location", "missing")
    return to_batch(fixes)
