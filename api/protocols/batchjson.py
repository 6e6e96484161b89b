"""The JSON-array body of ``POST /api/v1/positions``, parsed column-wise.

``[{"device": "…", "time": "2026-11-24T08:00:00+08:00" | 1764000000 | 1764000000000,
    "lat": 43.9, "lon": 116.0, "speed": 8.3, "course": 90, "altitude": 990, "accuracy": 5,
    "battery": 80, "extras": {…}}, …]`` — speed in m/s; times in ISO 8601 or Unix seconds
(milliseconds when ≥ 2^31); ``device`` may be left out when a device token posts. Rows that
cannot be read become ``FixError``s with their 1-based position; the others are kept. So do
rows with a value their database column cannot hold (a time outside years 1–9999, a measure
beyond ±3.4e38, a NUL in the device or extras): named here, they never fail the whole batch.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pandas as pd

from api.ingest.fixes import (
    MAX_TIME_US,
    MIN_TIME_US,
    PROBLEMS,
    FixBatch,
    FixError,
    column_problems,
)

FIELDS = ("device", "time", "lat", "lon", "speed", "course", "altitude", "accuracy", "battery")
_MS_THRESHOLD = 2**31


class BatchFormatError(ValueError):
    """The body is not a JSON array of fix objects."""

    def __init__(self, message: str, field: str = "body") -> None:
        super().__init__(message)
        self.field = field


def times_to_us(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Unix seconds/milliseconds or ISO 8601 text → (µs int64, ok mask). A number outside the
    years 1–9999 is not ok (it would overflow the µs, or the database's timestamp)."""
    numeric = pd.to_numeric(values, errors="coerce")
    is_num = numeric.notna().to_numpy()
    out = np.zeros(len(values), dtype=np.int64)
    num = numeric.to_numpy(dtype=float, na_value=np.nan)
    seconds = np.where(np.abs(num) >= _MS_THRESHOLD, num / 1000.0, num)
    with np.errstate(invalid="ignore"):
        fits = (seconds >= MIN_TIME_US / 1e6) & (seconds <= MAX_TIME_US / 1e6)
        out[is_num & fits] = np.round(seconds[is_num & fits] * 1e6).astype(np.int64)
    is_num = is_num & fits  # an unfit number is not a time (and no ISO text either)
    text = values[~is_num].astype("string")
    parsed = pd.to_datetime(text, utc=True, errors="coerce", format="ISO8601")
    ok = is_num.copy()
    ok_text = parsed.notna().to_numpy()
    idx = np.flatnonzero(~is_num)
    out[idx[ok_text]] = parsed[ok_text].dt.as_unit("us").astype("int64").to_numpy()
    ok[idx[ok_text]] = True
    return out, ok


def parse_batch_json(
    body: bytes, *, default_device: str | None = None
) -> tuple[FixBatch, list[FixError]]:
    """Parse a JSON array of fixes.

    Raises
    ------
    BatchFormatError
        When the body is not JSON or not an array of objects.
    """
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BatchFormatError(f"not valid JSON: {exc}") from exc
    if not isinstance(data, list):
        raise BatchFormatError(
            "expected a JSON array of fix objects (or a GeoJSON FeatureCollection)"
        )
    if not all(isinstance(item, dict) for item in data):
        raise BatchFormatError("every array item must be an object with device, time, lat, lon")
    frame = pd.DataFrame.from_records(data, columns=[*FIELDS, "extras"])
    n = len(frame)
    errors: list[FixError] = []
    bad = np.zeros(n, dtype=bool)

    def fail(mask: np.ndarray, field: str, reason: str) -> None:
        errors.extend(
            FixError(row=int(i) + 1, field=field, reason=reason, raw=_raw(data[i]))
            for i in np.flatnonzero(mask & ~bad)
        )
        bad[mask] = True

    device = frame["device"].astype(object)
    if default_device is not None:
        device = device.where(device.notna(), default_device)
    fail(device.isna().to_numpy(), "device", "missing")
    time_us, ok = times_to_us(frame["time"])
    number = pd.to_numeric(frame["time"], errors="coerce").notna().to_numpy()
    fail(~ok & number, "time", PROBLEMS["time"])
    fail(~ok, "time", "missing or not a time (ISO 8601 or Unix seconds/milliseconds)")
    numbers: dict[str, np.ndarray] = {}
    for name in FIELDS[2:]:
        values = pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
        given = frame[name].notna().to_numpy()
        fail(given & np.isnan(values), name, "not a number")
        numbers[name] = values
    fail(np.isnan(numbers["lat"]) | np.isnan(numbers["lon"]), "lat/lon", "missing")
    keep = ~bad
    extras = [
        None if not isinstance(e, dict) else orjson.dumps(e).decode() for e in frame["extras"]
    ]
    batch = FixBatch.from_columns(
        device=device.astype(str).to_numpy()[keep],
        time_us=time_us[keep],
        lat=numbers["lat"][keep],
        lon=numbers["lon"][keep],
        speed=numbers["speed"][keep],
        course=numbers["course"][keep],
        altitude=numbers["altitude"][keep],
        accuracy=numbers["accuracy"][keep],
        battery=numbers["battery"][keep],
        extras=np.array(extras, dtype=object)[keep],
        row=np.arange(1, n + 1)[keep],
    )
    problem = column_problems(batch)  # values no database column can hold
    unfit = problem != None  # noqa: E711 - elementwise on objects
    if unfit.any():
        errors.extend(
            FixError(row=int(r), field=str(f), reason=PROBLEMS[f], raw=_raw(data[int(r) - 1]))
            for r, f in zip(batch.row[unfit], problem[unfit], strict=True)
        )
        batch = batch.take(~unfit)
    return batch, sorted(errors, key=lambda e: e.row)


def _raw(item: Any) -> str:
    return orjson.dumps(item).decode()[:2000]
