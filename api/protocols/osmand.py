"""The OsmAnd / Traccar Client HTTP protocol (port 5055): parsing only, no sockets, no clock.

Two request shapes, as Traccar's ``OsmAndProtocolDecoder`` reads them:

* fields in the query string (GET) or a form body (POST): ``id``/``deviceid``, ``lat``,
  ``lon``/``lng`` or ``location=lat,lon``, ``timestamp``/``time`` (unix seconds; milliseconds when
  ≥ 2^31; or ISO 8601), ``speed`` in knots, ``bearing``/``heading``, ``altitude``/``alt``,
  ``accuracy``, ``hdop``, ``batt``/``battery`` (%), ``valid``, ``charge``, ``driverUniqueId``;
  every other field is kept in extras (numbers and true/false typed, the rest as text), except
  ``key`` (the device's OsmAnd key, which the server reads and nothing stores).
* a JSON body (Traccar Client 9+, the transistorsoft "background geolocation" shape):
  ``{"device_id", "location": {"timestamp", "coords": {latitude, longitude, speed m/s, heading,
  altitude, accuracy}, "battery": {"level" 0..1, "is_charging"}, "is_moving", "odometer", …}}``;
  ``location`` may be a list (the plugin's ``batchSync``) and the body a list of such objects.

``parse_query``/``parse_params``/``parse_json`` return a ``FixBatch`` for the writer;
``read_query``/``read_params`` return the plain ``OsmAndFix`` (a few µs, no numpy) for callers
that gather many requests and build one batch with ``to_batch``. Anything a 400 should answer raises
``OsmAndError(field, reason)`` naming the field as the client sent it. Without a timestamp the
caller's ``now_us`` is used. Unknown (negative) speed, course or accuracy is stored as missing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import unquote_plus

import orjson

from api.ingest.fixes import FixBatch
from api.protocols.osmandfix import (
    KNOT_MS,
    NAN,
    OsmAndError,
    OsmAndFix,
    boolean,
    in_range,
    number,
    time_us,
    to_batch,
    typed,
)
from api.protocols.osmandjson import parse_json

__all__ = [
    "OsmAndError",
    "OsmAndFix",
    "parse_json",
    "parse_params",
    "parse_query",
    "read_params",
    "read_query",
    "to_batch",
]

MAX_DEVICE_LENGTH = 128
# field name as sent → role
_ROLES = {
    "id": "id",
    "deviceid": "id",
    "deviceId": "id",
    "lat": "lat",
    "lon": "lon",
    "lng": "lon",
    "location": "location",
    "timestamp": "time",
    "time": "time",
    "speed": "speed",
    "bearing": "course",
    "heading": "course",
    "altitude": "altitude",
    "alt": "altitude",
    "accuracy": "accuracy",
    "hdop": "hdop",
    "batt": "battery",
    "battery": "battery",
    "valid": "valid",
    "charge": "charge",
    "driverUniqueId": "driverUniqueId",
    "key": "key",  # the device's OsmAnd key: checked by the server and store, never kept
}


def parse_query(query: str | bytes, *, now_us: int) -> FixBatch:
    """``read_query`` as a ``FixBatch`` of one, ready for the writer."""
    return read_query(query, now_us=now_us).to_batch()


def parse_params(
    params: Mapping[str, str] | Iterable[tuple[str, str]],
    *,
    now_us: int,
    raw: str | None = None,
) -> FixBatch:
    """``read_params`` as a ``FixBatch`` of one, ready for the writer."""
    return read_params(params, now_us=now_us, raw=raw).to_batch()


def read_query(query: str | bytes, *, now_us: int) -> OsmAndFix:
    """Read a raw query string or ``application/x-www-form-urlencoded`` body.

    Faster than ``urllib.parse.parse_qsl`` followed by ``read_params``: percent-decoding is
    skipped for the (usual) fields that need none.

    Parameters
    ----------
    query : str or bytes
        ``id=abc&lat=43.9&lon=116.1&…`` (percent-encoding and ``+`` for space decoded).
    now_us : int
        UTC µs used when the request carries no timestamp.

    Returns
    -------
    OsmAndFix
        With ``raw`` = the query text.

    Raises
    ------
    OsmAndError
        As ``read_params``.
    """
    text = query.decode("utf-8", errors="replace") if isinstance(query, bytes) else query
    pairs = []
    for part in text.split("&"):
        if not part:
            continue
        key, _, value = part.partition("=")
        if "%" in part or "+" in part:
            key, value = unquote_plus(key), unquote_plus(value)
        pairs.append((key, value))
    return read_params(pairs, now_us=now_us, raw=text)


def read_params(
    params: Mapping[str, str] | Iterable[tuple[str, str]],
    *,
    now_us: int,
    raw: str | None = None,
) -> OsmAndFix:
    """Read decoded query/form fields into one fix.

    Parameters
    ----------
    params : mapping or iterable of (name, value)
        The fields; of a repeated field the last wins.
    now_us : int
        UTC µs used when there is no ``timestamp``/``time``.
    raw : str, optional
        The request text, kept for quarantine (default: the decoded fields joined as ``k=v&…``).

    Returns
    -------
    OsmAndFix

    Raises
    ------
    OsmAndError
        ``id`` missing; ``lat``/``lon`` missing, not a number or out of range; an unreadable
        timestamp, speed, course, altitude, accuracy, hdop, battery, valid or charge.
    """
    items = list(params.items() if isinstance(params, Mapping) else params)
    known: dict[str, tuple[str, str]] = {}
    extras: dict[str, Any] = {}
    for key, value in items:
        role = _ROLES.get(key)
        if role is None:
            extras[key] = typed(value)
        elif value != "" or role == "id":
            known[role] = (key, value)
    if raw is None:
        raw = "&".join([f"{k}={v}" for k, v in items])
    return _fix(known, extras, now_us, raw)


def _position(known: dict[str, tuple[str, str]]) -> tuple[float, float]:
    lat = lon = None
    if "location" in known:
        name, text = known["location"]
        parts = text.split(",")
        if len(parts) != 2:
            raise OsmAndError(name, "not lat,lon")
        lat = in_range(name, number(name, parts[0]), -90, 90)
        lon = in_range(name, number(name, parts[1]), -180, 180)
    if "lat" in known:
        lat = in_range(known["lat"][0], number(*known["lat"]), -90, 90)
    if "lon" in known:
        lon = in_range(known["lon"][0], number(*known["lon"]), -180, 180)
    if lat is None:
        raise OsmAndError("lat", "missing")
    if lon is None:
        raise OsmAndError("lon", "missing")
    return lat, lon


def _measure(known: dict[str, tuple[str, str]], role: str, lo: float, hi: float) -> float:
    """An optional measure; below ``lo`` means unknown (NaN), above ``hi`` is an error."""
    if role not in known:
        return NAN
    name, text = known[role]
    value = number(name, text)
    return NAN if value < lo else in_range(name, value, lo, hi)


def _fix(
    known: dict[str, tuple[str, str]], extras: dict[str, Any], now_us: int, raw: str
) -> OsmAndFix:
    device = known.get("id", ("id", ""))[1].strip()
    if not device:
        raise OsmAndError("id", "missing")
    if len(device) > MAX_DEVICE_LENGTH:
        raise OsmAndError("id", f"longer than {MAX_DEVICE_LENGTH} characters")
    lat, lon = _position(known)
    if "hdop" in known:
        extras["hdop"] = number(*known["hdop"])
    if "valid" in known and not boolean(*known["valid"]):
        extras["valid"] = False
    if "charge" in known:
        extras["charge"] = boolean(*known["charge"])
    if "driverUniqueId" in known:
        extras["driverUniqueId"] = known["driverUniqueId"][1]
    return OsmAndFix(
        device=device,
        time_us=time_us(*known["time"]) if "time" in known else now_us,
        lat=lat,
        lon=lon,
        speed=_measure(known, "speed", 0, 1e6) * KNOT_MS,
        course=_measure(known, "course", 0, 360),
        altitude=number(*known["altitude"]) if "altitude" in known else NAN,
        accuracy=_measure(known, "accuracy", 0, 1e9),
        battery=_measure(known, "battery", 0, 100),
        extras=orjson.dumps(extras).decode() if extras else None,
        raw=raw,
    )
