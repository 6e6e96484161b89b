"""Shared pieces of the track-file parsers: the result type, units, time columns and screening.

Every parser turns its input into columns, then ``screen`` drops the rows whose device, time or
position cannot be stored and reports each as a ``FixError`` with its 1-based line/row number.
Optional fields (speed, course, altitude, accuracy, battery) that are not numbers are stored as
missing (NaN) rather than costing the fix.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from numpy.typing import NDArray

from api.ingest.fixes import FixBatch, FixError

KNOT_MS = 1852.0 / 3600.0
SPEED_UNITS: dict[str, float] = {
    "m/s": 1.0,
    "mps": 1.0,
    "km/h": 1.0 / 3.6,
    "kmh": 1.0 / 3.6,
    "kph": 1.0 / 3.6,
    "knots": KNOT_MS,
    "knot": KNOT_MS,
    "kn": KNOT_MS,
    "kt": KNOT_MS,
    "mph": 0.44704,
}
MS_THRESHOLD = 2**31  # unix times at or above this are milliseconds (Traccar's rule)
_MAX_MS = 253_402_300_800_000  # 10000-01-01: beyond it a number is no time
TIME_REASON = "not an ISO 8601 time or unix seconds/milliseconds"


class TrackFileError(ValueError):
    """The file as a whole cannot be read: unknown format, no device, no usable columns;
    ``field`` names the request field at fault (``file``, ``crs`` …)."""

    def __init__(self, message: str, *, field: str = "file") -> None:
        super().__init__(message)
        self.field = field

    def __reduce__(self) -> Any:  # keep ``field`` across a process pool
        return (type(self), (str(self),), {"field": self.field})


@dataclass
class ParseResult:
    """What a track file yielded.

    Attributes
    ----------
    fixes : FixBatch
        The fixes that parsed, in file order.
    errors : list of FixError
        One per line/row/feature that could not be stored, with its 1-based number.
    stopped_at : str or None
        Where and why parsing stopped early (truncated or malformed file), else None.
    format : str
        The format parsed: ``gpx``, ``nmea``, ``csv`` or ``geojson``.
    """

    fixes: FixBatch
    errors: list[FixError]
    stopped_at: str | None
    format: str


def speed_factor(unit: str) -> float:
    """Multiplier from ``unit`` (m/s, km/h, knots, mph and aliases) to m/s."""
    key = unit.strip().lower().replace(" ", "")
    if key not in SPEED_UNITS:
        raise TrackFileError(f"unknown speed unit {unit!r}; use one of m/s, km/h, knots, mph")
    return SPEED_UNITS[key]


def check_tz(tz: str) -> str:
    """Validate an IANA time-zone name early; returns it."""
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise TrackFileError(f"unknown time zone {tz!r}") from exc
    return tz


def nones(n: int) -> NDArray[np.object_]:
    """An object array of ``n`` Nones: a column of 'no problem' reasons."""
    return np.full(n, None, dtype=object)


def has_reason(reasons: NDArray[np.object_]) -> NDArray[np.bool_]:
    """Which rows of a reasons column name a problem (reasons are non-empty texts or None)."""
    return reasons.astype(bool)


def unix_to_us(values: NDArray[np.float64]) -> tuple[NDArray[np.int64], NDArray[np.bool_]]:
    """UTC µs of unix times (seconds below 2^31, else milliseconds), and which were in range."""
    ok = np.isfinite(values) & (values >= 0) & (values < _MAX_MS)
    safe = np.where(ok, values, 0.0)
    us = np.where(safe < MS_THRESHOLD, np.round(safe * 1e6), np.round(safe * 1e3))
    return us.astype(np.int64), ok


def to_numbers(values: pa.Array, *, decimal_comma: bool = False) -> NDArray[np.float64]:
    """Floats of a string column; NaN where empty or not a number.

    ``decimal_comma`` also reads ``43,93`` as 43.93 (files separated by ``;`` or tabs).
    """
    try:
        return np.array(pc.cast(values, pa.float64()).to_numpy(zero_copy_only=False), np.float64)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    text = pd.Series(values.to_numpy(zero_copy_only=False), dtype=object)
    out = np.array(pd.to_numeric(text, errors="coerce"), dtype=np.float64)
    retry = np.isnan(out) & text.notna().to_numpy()
    if decimal_comma and retry.any():
        fixed = text[retry].astype(str).str.replace(",", ".", regex=False)
        out[retry] = np.array(pd.to_numeric(fixed, errors="coerce"), dtype=np.float64)
    return out


def _iso_to_us(text: pd.Series, tz: str) -> tuple[NDArray[np.int64], NDArray[np.object_]]:
    """ISO 8601 texts → UTC µs and per-row reasons; naive texts are local time in ``tz``."""
    n = len(text)
    reasons = nones(n)
    if tz == "UTC":
        parsed = pd.to_datetime(text, format="ISO8601", utc=True, errors="coerce")
    else:
        aware = text.str.contains(
            r"[T ]\d{2}(?::?\d{2})?(?::?\d{2}(?:[.,]\d+)?)?\s*(?:[zZ]|[+-]\d{2}(?::?\d{2})?)$",
            regex=True,
        ).to_numpy(dtype=bool, na_value=False)
        parsed = pd.Series(pd.NaT, index=text.index, dtype="datetime64[us, UTC]")
        if aware.any():
            parsed[aware] = pd.to_datetime(text[aware], format="ISO8601", utc=True, errors="coerce")
        if (~aware).any():
            naive = pd.to_datetime(text[~aware], format="ISO8601", errors="coerce")
            local = naive.dt.tz_localize(tz, ambiguous="NaT", nonexistent="NaT")
            dst = naive.notna().to_numpy() & local.isna().to_numpy()
            reasons[np.flatnonzero(~aware)[dst]] = f"local time ambiguous or skipped in {tz} (DST)"
            parsed[~aware] = local.dt.tz_convert("UTC")
    missing = parsed.isna().to_numpy()
    reasons[missing & ~has_reason(reasons)] = TIME_REASON
    us = parsed.dt.tz_localize(None).to_numpy(dtype="datetime64[us]").astype(np.int64)
    return us, reasons


def times_to_us(
    values: pa.Array | Sequence[Any] | NDArray[Any], tz: str
) -> tuple[NDArray[np.int64], NDArray[np.object_]]:
    """Vectorised time parsing: ISO 8601 texts or unix seconds/milliseconds (numbers or text).

    Parameters
    ----------
    values : arrow array, sequence or numpy array
        Texts or numbers; None/empty is missing.
    tz : str
        IANA zone of naive ISO texts (texts with ``Z`` or an offset keep theirs).

    Returns
    -------
    (time_us, reasons)
        UTC µs (int64; undefined where a reason is given) and a reason per row or None.
    """
    arr = values if isinstance(values, pa.Array) else pa.array(_as_text(values), pa.string())
    if not pa.types.is_string(arr.type) and not pa.types.is_large_string(arr.type):
        arr = pc.cast(arr, pa.string())
    n = len(arr)
    present = arr.is_valid().to_numpy(zero_copy_only=False) & (
        pc.utf8_length(pc.utf8_trim_whitespace(arr)).fill_null(0).to_numpy(zero_copy_only=False) > 0
    )
    if present.all():  # fast paths: every value carries an offset, or all naive in UTC
        for target in (pa.timestamp("us", tz="UTC"), pa.timestamp("us")):
            if target.tz is None and tz != "UTC":
                break
            try:  # the first value decides cheaply whether the whole column is worth a try
                pc.cast(arr.slice(0, 1), target)
                fast = pc.cast(arr, target).cast(pa.int64()).to_numpy(zero_copy_only=False)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                continue
            return np.asarray(fast, dtype=np.int64), nones(n)
    time_us = np.zeros(n, dtype=np.int64)
    reasons = nones(n)
    reasons[~present] = "missing"
    numbers = to_numbers(arr)
    numeric = present & ~np.isnan(numbers)
    if numeric.any():
        us, ok = unix_to_us(numbers[numeric])
        time_us[numeric] = us
        reasons[np.flatnonzero(numeric)[~ok]] = "unix time out of range"
    textual = present & ~numeric
    if textual.any():
        text = pd.Series(arr.filter(pa.array(textual)).to_numpy(zero_copy_only=False), dtype=object)
        us, why = _iso_to_us(text.astype(str).str.strip(), tz)
        time_us[textual] = us
        reasons[textual] = why
    return time_us, reasons


def _as_text(values: Sequence[Any] | NDArray[Any]) -> list[str | None]:
    out: list[str | None] = []
    for v in values:
        if v is None or isinstance(v, bool) or (isinstance(v, float) and np.isnan(v)):
            out.append(None)
        elif isinstance(v, int | float):
            out.append(repr(v))
        else:
            out.append(str(v))
    return out


def range_reasons(
    values: NDArray[np.float64], present: NDArray[np.bool_], lo: float, hi: float
) -> NDArray[np.object_]:
    """Per-row reasons for a required number: missing, not a number, out of range."""
    reasons = nones(len(values))
    reasons[~present] = "missing"
    reasons[present & np.isnan(values)] = "not a number"
    with np.errstate(invalid="ignore"):
        reasons[(values < lo) | (values > hi)] = f"out of range {lo:g}..{hi:g}"
    return reasons


def clean_optional(values: NDArray[np.float64], lo: float, hi: float) -> NDArray[np.float64]:
    """An optional measure with impossible values (e.g. -1 = unknown) made missing (NaN)."""
    with np.errstate(invalid="ignore"):
        return np.where((values >= lo) & (values <= hi), values, np.nan)


def screen(
    batch: FixBatch,
    problems: Sequence[tuple[str, NDArray[np.object_]]],
    raw: Callable[[int], str | None] | None = None,
) -> tuple[FixBatch, list[FixError]]:
    """Split a batch into the storable fixes and one ``FixError`` per unstorable row.

    Parameters
    ----------
    batch : FixBatch
        All rows as parsed (``row`` holds the source line/row number).
    problems : sequence of (field, reasons)
        Reason-or-None per row for each field, in the order a row's first problem is reported.
    raw : callable, optional
        Source text of row ``i`` (an index into ``batch``) for the error; default ``batch.raw``.
    """
    n = len(batch)
    bad = np.zeros(n, dtype=bool)
    first: dict[int, tuple[str, str]] = {}
    for name, reasons in problems:
        hit = has_reason(reasons) & ~bad
        for i in np.flatnonzero(hit).tolist():
            first[i] = (name, reasons[i])
        bad |= hit
    if not first:
        return batch, []
    errors = [
        FixError(
            row=int(batch.row[i]),
            reason=reason,
            field=name,
            raw=raw(i) if raw is not None else batch.raw[i],
        )
        for i, (name, reason) in sorted(first.items())
    ]
    return batch.take(~bad), errors
