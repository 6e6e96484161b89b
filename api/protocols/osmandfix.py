"""The OsmAnd protocol's fix type, its 400 error and the readers of field values.

Shared by the query/form parser (``api.protocols.osmand``) and the JSON-body parser
(``api.protocols.osmandjson``); import the public names from ``api.protocols.osmand``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from api.ingest.fixes import FixBatch

KNOT_MS = 1852.0 / 3600.0
MS_THRESHOLD = 2**31
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_MAX_US = 253_402_300_800_000_000  # 10000-01-01
NAN = math.nan
_TRUE = frozenset({"true", "1"})
_FALSE = frozenset({"false", "0"})


class OsmAndError(ValueError):
    """A request the server should answer with 400: which field, and why."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


@dataclass(slots=True, frozen=True)
class OsmAndFix:
    """One fix of one request. Units as in ``FixBatch``: UTC µs, degrees, m/s, m, %."""

    device: str
    time_us: int
    lat: float
    lon: float
    speed: float = NAN
    course: float = NAN
    altitude: float = NAN
    accuracy: float = NAN
    battery: float = NAN
    extras: str | None = None
    raw: str | None = None

    def to_batch(self) -> FixBatch:
        """This fix as a ``FixBatch`` of one (≈ 3 µs: one float and one object buffer)."""
        floats = np.array(
            (
                self.lat,
                self.lon,
                self.speed,
                self.course,
                self.altitude,
                self.accuracy,
                self.battery,
            )
        )
        objects = np.empty(3, dtype=object)
        objects[0], objects[1], objects[2] = self.device, self.extras, self.raw
        return FixBatch(
            device=objects[0:1],
            time_us=np.array((self.time_us,), dtype=np.int64),
            lat=floats[0:1],
            lon=floats[1:2],
            speed=floats[2:3],
            course=floats[3:4],
            altitude=floats[4:5],
            accuracy=floats[5:6],
            battery=floats[6:7],
            extras=objects[1:2],
            row=np.ones(1, dtype=np.int64),
            raw=objects[2:3],
        )


def to_batch(fixes: Sequence[OsmAndFix]) -> FixBatch:
    """The fixes of many requests as one ``FixBatch`` (row = position in ``fixes``, 1-based)."""
    return FixBatch.from_columns(
        device=[f.device for f in fixes],
        time_us=[f.time_us for f in fixes],
        lat=[f.lat for f in fixes],
        lon=[f.lon for f in fixes],
        speed=[f.speed for f in fixes],
        course=[f.course for f in fixes],
        altitude=[f.altitude for f in fixes],
        accuracy=[f.accuracy for f in fixes],
        battery=[f.battery for f in fixes],
        extras=[f.extras for f in fixes],
        raw=[f.raw for f in fixes],
    )


def number(field: str, text: str) -> float:
    """A finite number from text, else ``OsmAndError(field, …)``."""
    try:
        value = float(text)
    except ValueError:
        raise OsmAndError(field, "not a number") from None
    if not math.isfinite(value) or "_" in text:
        raise OsmAndError(field, "not a finite number")
    return value


def in_range(field: str, value: float, lo: float, hi: float) -> float:
    """``value`` if within [lo, hi], else ``OsmAndError(field, "out of range lo..hi")``."""
    if not lo <= value <= hi:
        raise OsmAndError(field, f"out of range {lo:g}..{hi:g}")
    return value


def unix_us(field: str, value: float) -> int:
    """UTC µs of unix seconds, or milliseconds when ≥ 2^31 (Traccar's rule)."""
    us = value * 1_000_000 if value < MS_THRESHOLD else value * 1000
    if not 0 <= us < _MAX_US:
        raise OsmAndError(field, "out of range")
    return round(us)


def iso_us(field: str, text: str) -> int:
    """UTC µs of an ISO 8601 text; naive means UTC."""
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        # a '+' of the offset decoded as a space ("…T08:00:00 08:00"): restore it
        head, sep, tail = text.rpartition(" ")
        try:
            if not (sep and "T" in head and tail[:2].isdigit()):
                raise ValueError(text)
            when = datetime.fromisoformat(f"{head}+{tail}")
        except ValueError:
            raise OsmAndError(field, "not unix seconds/milliseconds or ISO 8601") from None
    if when.tzinfo is None:  # naive: UTC, as Traccar's server would with TZ=UTC
        when = when.replace(tzinfo=UTC)
    return (when - _EPOCH) // _MICROSECOND


def time_us(field: str, text: str) -> int:
    """UTC µs of a timestamp field: unix seconds/milliseconds (integer or decimal) or ISO 8601."""
    if text.isascii() and text.isdigit():
        return unix_us(field, int(text))
    try:
        value = float(text)
    except ValueError:
        return iso_us(field, text)
    if not math.isfinite(value):
        raise OsmAndError(field, "not a finite number")
    return unix_us(field, value)


def boolean(field: str, text: str) -> bool:
    """true/false/1/0 (any case), else ``OsmAndError``."""
    low = text.lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise OsmAndError(field, "not true/false/1/0")


def typed(text: str) -> Any:
    """An unknown field's value as Traccar keeps it: a number, a boolean, else the text.

    Texts a number would change stay texts: leading zeros (``007``, ICCIDs), ``nan``, ``1_0``.
    """
    digits = text.lstrip("+-")
    if digits.isascii() and digits.isdigit():
        return text if len(digits) > 1 and digits[0] == "0" else int(text)
    try:
        value = float(text)
    except ValueError:
        low = text.lower()
        return True if low == "true" else False if low == "false" else text
    return value if math.isfinite(value) and "_" not in text else text
