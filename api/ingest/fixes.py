"""The currency of ingest: fixes as columns (struct of numpy arrays), never a Python object per
fix on hot paths. Every protocol parser produces a ``FixBatch``; the writer consumes them.

Units: time in UTC microseconds since the Unix epoch (int64); lat/lon in degrees as the device
sent them (``crs`` says in which system; conversion to WGS-84 happens in the ingest path);
speed m/s; course degrees clockwise from north; altitude m; accuracy m (horizontal);
battery percent 0–100. Missing optional values are NaN. ``extras`` is one JSON text (or None)
per fix; ``row`` the 1-based row/line/feature number in the source, for error reports; ``key``
the credential an OsmAnd request presented (checked by the store, never stored) and ``source``
the sender's network address (for refusal counts), both None when not applicable.

``column_problems`` range-checks every column against the database type it is stored in, so
that a value the database cannot hold is quarantined as unparsable (naming the field) instead
of failing the storing transaction (and the device retrying forever).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import orjson
from numpy.typing import NDArray

FLOAT_COLUMNS = ("lat", "lon", "speed", "course", "altitude", "accuracy", "battery")
REAL_COLUMNS = FLOAT_COLUMNS[2:]  # stored as PostgreSQL ``real`` (float4)
REAL_MAX = 3.4028234e38  # the largest finite float4, rounded down
# the fix times a timestamptz (and Python's datetime) can hold: years 1 to 9999
MIN_TIME_US = -62_135_596_800_000_000  # 0001-01-01
MAX_TIME_US = 253_402_300_799_999_999  # 9999-12-31 23:59:59.999999
MAX_IDENTIFIER = 128
# a JSON escape of U+0000 (jsonb cannot hold it), not preceded by an escaped backslash
_JSON_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


@dataclass(frozen=True)
class FixError:
    """A fix (or line/row) that could not be read: where, which field, why, and the raw text."""

    row: int
    reason: str
    field: str | None = None
    raw: str | None = None


@dataclass
class FixBatch:
    """Fixes of one or many devices, column-wise. All arrays have the same length."""

    device: NDArray[np.object_]  # the identifier as sent (str)
    time_us: NDArray[np.int64]
    lat: NDArray[np.float64]
    lon: NDArray[np.float64]
    speed: NDArray[np.float64]
    course: NDArray[np.float64]
    altitude: NDArray[np.float64]
    accuracy: NDArray[np.float64]
    battery: NDArray[np.float64]
    extras: NDArray[np.object_]  # JSON text or None
    row: NDArray[np.int64]
    raw: NDArray[np.object_] = field(default_factory=lambda: np.empty(0, dtype=object))
    key: NDArray[np.object_] = field(default_factory=lambda: np.empty(0, dtype=object))
    source: NDArray[np.object_] = field(default_factory=lambda: np.empty(0, dtype=object))

    def __post_init__(self) -> None:
        n = len(self.device)
        for name in ("raw", "key", "source"):
            if len(getattr(self, name)) == 0 and n:
                setattr(self, name, np.full(n, None, dtype=object))
        columns = ("time_us", "lat", "lon", *REAL_COLUMNS, "extras", "row", "raw", "key", "source")
        for name in columns:
            if len(getattr(self, name)) != n:
                raise ValueError(f"column {name} has {len(getattr(self, name))} values, not {n}")

    def __len__(self) -> int:
        return len(self.device)

    @classmethod
    def empty(cls) -> FixBatch:
        return cls.from_columns(device=[], time_us=[], lat=[], lon=[])

    @classmethod
    def from_columns(
        cls,
        *,
        device: Sequence[str] | NDArray[Any],
        time_us: Sequence[int] | NDArray[Any],
        lat: Sequence[float] | NDArray[Any],
        lon: Sequence[float] | NDArray[Any],
        speed: Sequence[float] | NDArray[Any] | None = None,
        course: Sequence[float] | NDArray[Any] | None = None,
        altitude: Sequence[float] | NDArray[Any] | None = None,
        accuracy: Sequence[float] | NDArray[Any] | None = None,
        battery: Sequence[float] | NDArray[Any] | None = None,
        extras: Sequence[str | None] | NDArray[Any] | None = None,
        row: Sequence[int] | NDArray[Any] | None = None,
        raw: Sequence[str | None] | NDArray[Any] | None = None,
    ) -> FixBatch:
        n = len(device)

        def floats(values: Sequence[float] | NDArray[Any] | None) -> NDArray[np.float64]:
            if values is None:
                return np.full(n, np.nan)
            return np.asarray(values, dtype=np.float64)

        def objects(values: Sequence[Any] | NDArray[Any] | None) -> NDArray[np.object_]:
            out = np.empty(n, dtype=object)
            if values is not None:
                out[:] = list(values)
            return out

        return cls(
            device=objects(device),
            time_us=np.asarray(time_us, dtype=np.int64),
            lat=floats(lat),
            lon=floats(lon),
            speed=floats(speed),
            course=floats(course),
            altitude=floats(altitude),
            accuracy=floats(accuracy),
            battery=floats(battery),
            extras=objects(extras),
            row=np.arange(1, n + 1, dtype=np.int64) if row is None else np.asarray(row, np.int64),
            raw=objects(raw),
        )

    @classmethod
    def from_records(cls, records: Iterable[dict[str, Any]]) -> FixBatch:
        """From dicts with keys device, time (datetime, aware) or time_us, lat, lon and the
        optional columns; ``extras`` may be a dict (serialised here)."""
        recs = list(records)

        def col(name: str) -> list[Any]:
            return [r.get(name, np.nan) for r in recs]

        times = [r["time_us"] if "time_us" in r else to_time_us(r["time"]) for r in recs]
        extras = [
            orjson.dumps(r["extras"]).decode()
            if isinstance(r.get("extras"), dict)
            else r.get("extras")
            for r in recs
        ]
        return cls.from_columns(
            device=[str(r["device"]) for r in recs],
            time_us=times,
            lat=col("lat"),
            lon=col("lon"),
            speed=col("speed"),
            course=col("course"),
            altitude=col("altitude"),
            accuracy=col("accuracy"),
            battery=col("battery"),
            extras=extras,
            row=[r.get("row", i + 1) for i, r in enumerate(recs)],
            raw=[r.get("raw") for r in recs],
        )

    def take(self, index: NDArray[np.bool_] | NDArray[np.int64]) -> FixBatch:
        """The fixes selected by a boolean mask or an index array."""
        return FixBatch(**{name: getattr(self, name)[index] for name in self.__dataclass_fields__})

    @classmethod
    def concat(cls, batches: Sequence[FixBatch]) -> FixBatch:
        if not batches:
            return cls.empty()
        return cls(
            **{
                name: np.concatenate([getattr(b, name) for b in batches])
                for name in cls.__dataclass_fields__
            }
        )


PROBLEMS = {  # why a field's value cannot be stored (for the answer naming the row)
    "device": "not an identifier the database can hold (NUL, or over 128 characters)",
    "time": "outside the years 1-9999 a timestamp can hold",
    "extras": "holds a NUL character (\\u0000), which the database cannot store",
    **dict.fromkeys(REAL_COLUMNS, "out of range for its column (finite, within ±3.4e38)"),
}


def column_problems(batch: FixBatch) -> NDArray[np.object_]:
    """Per fix, the first field whose value its database column cannot hold, else None.

    ``time`` outside years 1–9999 (timestamptz); a ``real`` column (speed, course, altitude,
    accuracy, battery) infinite or beyond ±3.4e38 (NaN is "missing" and fine); a ``device``
    identifier that is not text, holds a NUL or is longer than 128 characters; ``extras``
    that is not text or holds an escaped NUL (jsonb refuses ``\\u0000``). Latitude and longitude
    are the coordinate filter's to judge (``bad_coordinates``).
    """
    n = len(batch)
    problem = np.full(n, None, dtype=object)
    if n == 0:
        return problem

    def flag(mask: NDArray[np.bool_], name: str) -> None:
        problem[mask & (problem == None)] = name  # noqa: E711 - elementwise on objects

    flag(
        np.fromiter(
            (
                not isinstance(d, str) or "\x00" in d or len(d) > MAX_IDENTIFIER
                for d in batch.device
            ),
            dtype=bool,
            count=n,
        ),
        "device",
    )
    flag((batch.time_us < MIN_TIME_US) | (batch.time_us > MAX_TIME_US), "time")
    for name in REAL_COLUMNS:
        values = getattr(batch, name)
        with np.errstate(invalid="ignore"):
            flag(np.isinf(values) | (np.abs(values) > REAL_MAX), name)
    flag(
        np.fromiter(
            (
                e is not None
                and (not isinstance(e, str) or "\x00" in e or bool(_JSON_NUL.search(e)))
                for e in batch.extras
            ),
            dtype=bool,
            count=n,
        ),
        "extras",
    )
    return problem


def to_time_us(value: datetime) -> int:
    """UTC microseconds since the epoch of an aware datetime (naive means UTC)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    delta = value - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_time_us(value: int) -> datetime:
    """Aware UTC datetime of Unix microseconds, exactly (no float on the way)."""
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=int(value))
