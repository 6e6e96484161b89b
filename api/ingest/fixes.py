"""The currency of ingest: fixes as columns (struct of numpy arrays), never a Python object per
fix on hot paths. Every protocol parser produces a ``FixBatch``; the writer consumes them.

Units: time in UTC microseconds since the Unix epoch (int64); lat/lon in degrees as the device
sent them (``crs`` says in which system; conversion to WGS-84 happens in the ingest path);
speed m/s; course degrees clockwise from north; altitude m; accuracy m (horizontal);
battery percent 0–100. Missing optional values are NaN. ``extras`` is one JSON text (or None)
per fix; ``row`` the 1-based row/line/feature number in the source, for error reports.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import orjson
from numpy.typing import NDArray

FLOAT_COLUMNS = ("lat", "lon", "speed", "course", "altitude", "accuracy", "battery")


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

    def __post_init__(self) -> None:
        n = len(self.device)
        if len(self.raw) == 0 and n:
            self.raw = np.full(n, None, dtype=object)
        for name in ("time_us", "lat", "lon", *FLOAT_COLUMNS[2:], "extras", "row", "raw"):
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


def to_time_us(value: datetime) -> int:
    """UTC microseconds since the epoch of an aware datetime (naive means UTC)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    delta = value - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_time_us(value: int) -> datetime:
    """Aware UTC datetime of Unix microseconds, exactly (no float on the way)."""
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=int(value))
