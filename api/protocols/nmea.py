"""NMEA 0183 logs: RMC and GGA sentences of any talker (GP, GN, GL, GA, BD, GB, QZ …).

Every sentence must carry a valid ``*hh`` checksum; a bad or missing one is a ``FixError`` for that
line and parsing goes on. Sentences of the same epoch (same UTC time of day, consecutive) merge into
one fix: RMC gives the date, position, speed (knots → m/s) and course; GGA the fix quality,
satellites, HDOP and altitude (metres above mean sea level). A GGA-only epoch takes its date from
the nearest RMC (the previous one, else the next), else from ``date``; a wrap past midnight moves it
to the next day.

Decision on validity: an epoch flagged invalid (RMC status ``V``, RMC mode ``N`` or GGA quality 0)
that still carries a position is stored with ``"valid": false`` in extras, like an OsmAnd fix with
``valid=false`` — the ingest filter decides its fate. An epoch with no position at all is a
``FixError`` ("no position"). Other sentence types (GSA, GSV, VTG, proprietary) are ignored.

A final line without a newline that is incomplete is reported as truncated in ``stopped_at``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from functools import reduce
from operator import xor
from typing import Any

import numpy as np
import orjson

from api.ingest.fixes import FixBatch, FixError
from api.protocols.trackcommon import KNOT_MS, ParseResult

_DAY_US = 86_400_000_000
_EPOCH = dt.date(1970, 1, 1)


class _BadField(ValueError):
    def __init__(self, field: str, reason: str) -> None:
        super().__init__(reason)
        self.field = field
        self.reason = reason


@dataclass
class _Epoch:
    """The sentences of one receiver epoch, merged."""

    tod_us: int
    row: int
    raw: list[str] = field(default_factory=list)
    day: dt.date | None = None
    lat: float = np.nan
    lon: float = np.nan
    speed: float = np.nan
    course: float = np.nan
    altitude: float = np.nan
    valid: bool = True
    extras: dict[str, Any] = field(default_factory=dict)


def _checked(text: str, star: int) -> str:
    """The sentence body between ``$`` and ``*hh`` once its checksum is verified."""
    if star < 0 or len(text) - star < 3:
        raise _BadField("checksum", "missing checksum")
    body, given = text[1:star], text[star + 1 : star + 3]
    computed = reduce(xor, body.encode("ascii", errors="replace"), 0)
    if given.upper() != f"{computed:02X}":
        raise _BadField("checksum", f"bad checksum *{given} (computed *{computed:02X})")
    return body


def _time_of_day(text: str) -> int:
    try:
        if len(text) < 6 or not text[:6].isdigit():
            raise ValueError
        h, m, s = int(text[:2]), int(text[2:4]), float(text[4:])
    except ValueError:
        raise _BadField("time", f"not hhmmss.ss: {text!r}") from None
    if h > 23 or m > 59 or s >= 61:
        raise _BadField("time", f"out of range: {text!r}")
    return (h * 3600 + m * 60) * 1_000_000 + round(s * 1_000_000)


def _coordinate(text: str, hemi: str, name: str, limit: int) -> float:
    """ddmm.mmmm (or dddmm.mmmm) plus N/S/E/W → signed degrees."""
    try:
        value = float(text)
    except ValueError:
        raise _BadField(name, f"not a number: {text!r}") from None
    degrees, minutes = divmod(value, 100.0)
    if minutes >= 60 or value < 0:
        raise _BadField(name, f"not ddmm.mmmm: {text!r}")
    result = degrees + minutes / 60.0
    if result > limit:
        raise _BadField(name, f"out of range 0..{limit}: {text!r}")
    if hemi not in ("NS" if name == "lat" else "EW"):
        raise _BadField(name, f"hemisphere {hemi!r}")
    return -result if hemi in ("S", "W") else result


def _number(text: str) -> float:
    try:
        return float(text) if text else np.nan
    except ValueError:
        return np.nan


def _position(f: list[str], i: int) -> dict[str, Any]:
    if not (f[i] and f[i + 2]):
        return {}
    return {
        "lat": _coordinate(f[i], f[i + 1], "lat", 90),
        "lon": _coordinate(f[i + 2], f[i + 3], "lon", 180),
    }


def _rmc(f: list[str]) -> dict[str, Any]:
    # $xxRMC,time,status,lat,N,lon,E,speed kn,course,ddmmyy,magvar,E/W[,mode[,nav status]]
    if len(f) < 10:
        raise _BadField("sentence", f"RMC has {len(f)} fields, needs at least 10")
    mode = f[12] if len(f) > 12 else ""
    out: dict[str, Any] = {
        **_position(f, 3),
        "valid": f[2] == "A" and mode != "N",
        "speed": _number(f[7]) * KNOT_MS,
        "course": _number(f[8]),
        "extras": {"mode": mode} if mode else {},
    }
    d = f[9]
    if d:
        try:
            year = int(d[4:6])
            out["day"] = dt.date(2000 + year if year < 80 else 1900 + year, int(d[2:4]), int(d[:2]))
        except ValueError:
            raise _BadField("date", f"not ddmmyy: {d!r}") from None
    return out


def _gga(f: list[str]) -> dict[str, Any]:
    # $xxGGA,time,lat,N,lon,E,quality,satellites,hdop,altitude,M,geoid,M,age,station
    if len(f) < 10:
        raise _BadField("sentence", f"GGA has {len(f)} fields, needs at least 10")
    extras: dict[str, Any] = {}
    if f[6]:
        extras["quality"] = int(f[6]) if f[6].isdigit() else f[6]
    if f[7].isdigit():
        extras["satellites"] = int(f[7])
    hdop = _number(f[8])
    if not np.isnan(hdop):
        extras["hdop"] = hdop
    return {
        **_position(f, 2),
        "valid": f[6] != "0",
        "altitude": _number(f[9]),
        "extras": extras,
    }


def _merge(epoch: _Epoch, update: dict[str, Any]) -> None:
    """Fold one sentence into its epoch: the first position wins, any invalid flag sticks."""
    epoch.valid = epoch.valid and update.pop("valid")
    epoch.extras.update(update.pop("extras"))
    if "lat" in update and not np.isnan(epoch.lat):
        del update["lat"], update["lon"]
    for name, value in update.items():
        setattr(epoch, name, value)


class _Log:
    """Line-by-line state: the open epoch, finished epochs, errors."""

    def __init__(self) -> None:
        self.epochs: list[_Epoch] = []
        self.errors: list[FixError] = []
        self.current: _Epoch | None = None

    def sentence(self, number: int, line: str, *, last: bool) -> str | None:
        """Handle one line; returns a stop message when it was a truncated final line."""
        start = line.find("$")
        if start < 0:
            self.errors.append(FixError(number, "not an NMEA sentence", None, line))
            return None
        text = line[start:]
        star = text.rfind("*")
        if last and (star < 0 or len(text) - star < 3):
            self.errors.append(FixError(number, "truncated sentence", "checksum", line))
            return f"line {number}: truncated sentence"
        try:
            f = _checked(text, star).split(",")
            kind = f[0][-3:] if len(f[0]) == 5 and not f[0].startswith("P") else ""
            if kind not in ("RMC", "GGA"):
                return None
            tod = _time_of_day(f[1] if len(f) > 1 else "")
            update = (_rmc if kind == "RMC" else _gga)(f)
        except _BadField as exc:
            self.errors.append(FixError(number, exc.reason, exc.field, line))
            return None
        epoch = self.current
        if epoch is None or epoch.tod_us != tod:
            self.flush()
            epoch = self.current = _Epoch(tod_us=tod, row=number)
        _merge(epoch, update)
        epoch.raw.append(text)
        return None

    def flush(self) -> None:
        if self.current is not None:
            self.epochs.append(self.current)
            self.current = None


def _assign_days(epochs: list[_Epoch], given: dt.date | None) -> None:
    """Date the GGA-only epochs from their RMC neighbours, minding midnight wraps.

    Epochs before the first RMC take its date (the day before if they precede a wrap); later
    ones the last RMC date (the next day after a wrap); a log without RMC takes ``given``.
    """
    half_day = _DAY_US // 2
    first = next((i for i, e in enumerate(epochs) if e.day is not None), None)
    if first is not None:
        day, tod = epochs[first].day, epochs[first].tod_us
        for epoch in reversed(epochs[:first]):
            if day is not None and epoch.tod_us > tod + half_day:
                day -= dt.timedelta(days=1)
            epoch.day, tod = day, epoch.tod_us
    known, last_tod = given, -1
    for epoch in epochs:
        if epoch.day is not None:
            known = epoch.day
        elif known is not None:
            if epoch.tod_us < last_tod - half_day:
                known += dt.timedelta(days=1)
            epoch.day = known
        last_tod = epoch.tod_us


def parse_nmea(data: bytes, *, device: str, date: dt.date | None = None) -> ParseResult:
    """Parse an NMEA 0183 log into fixes.

    Parameters
    ----------
    data : bytes
        The log (ASCII; CR/LF or LF line ends; text before ``$`` on a line is ignored).
    device : str
        The device identifier for every fix (NMEA names none).
    date : datetime.date, optional
        UTC date for GGA sentences when the log has no RMC.

    Returns
    -------
    ParseResult
        One fix per epoch with a position; ``row`` is the line of the epoch's first sentence and
        ``raw`` its sentences; quality, satellites, hdop, mode and ``valid: false`` in extras.
    """
    text = data.decode("ascii", errors="replace")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
        unterminated = False
    else:
        unterminated = True
    log = _Log()
    stopped_at = None
    for number, line in enumerate(lines, start=1):
        stripped = line.strip()
        if stripped:
            last = unterminated and number == len(lines)
            stopped_at = log.sentence(number, stripped, last=last) or stopped_at
    log.flush()
    _assign_days(log.epochs, date)
    return ParseResult(
        fixes=_batch(log, device), errors=log.errors, stopped_at=stopped_at, format="nmea"
    )


def _batch(log: _Log, device: str) -> FixBatch:
    records: list[dict[str, Any]] = []
    for e in log.epochs:
        raw = "\n".join(e.raw)
        if np.isnan(e.lat):
            log.errors.append(FixError(e.row, "no position (receiver had no fix)", "lat", raw))
            continue
        if e.day is None:
            reason = "no date: GGA without any RMC in the log; pass date="
            log.errors.append(FixError(e.row, reason, "date", raw))
            continue
        if not e.valid:
            e.extras["valid"] = False
        day_us = (e.day - _EPOCH).days * _DAY_US
        records.append(
            {
                "device": device,
                "time_us": day_us + e.tod_us,
                "lat": e.lat,
                "lon": e.lon,
                "speed": e.speed,
                "course": e.course,
                "altitude": e.altitude,
                "extras": orjson.dumps(e.extras).decode() if e.extras else None,
                "row": e.row,
                "raw": raw,
            }
        )
    log.errors.sort(key=lambda err: err.row)
    return FixBatch.from_records(records) if records else FixBatch.empty()
