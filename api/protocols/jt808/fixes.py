"""Location reports (0x0200, the items of 0x0704, the body of 0x0201) → ``FixBatch`` rows.

Columns: lat/lon as sent (the device's declared CRS is applied by the ingest path), speed m/s,
course degrees, altitude m, the terminal's time in UTC, and ``extras`` JSON with what 808 adds:
``alarm`` (the DWORD) and ``alarms`` (names of the set bits), ``status`` (the DWORD) and ``acc``,
each additional item present (``mileage_km``, ``fuel_l``, ``recorder_speed_kmh``,
``signal_strength``, ``satellites`` …), ``raw_extras`` (unknown items, id → hex) and
``raw_tail`` (vendor bytes after the last item that parsed, hex; see ``location``).

Reports that are not positions are quarantined, never stored and never silently dropped: an
all-zero time (``no_time``: a terminal that never had a fix), status bit 1 clear
(``not_positioned``: the coordinates are a stale guess) or bit 5 set (``encrypted``: the
coordinates are ciphertext). They become ``FixError`` rows (reason ``unparsable`` in
``position_rejected``, ``field`` ``time`` or ``status``, ``raw`` naming device, message and
values) and are acknowledged like every quarantined fix, so the terminal does not resend them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import orjson

from api.ingest.fixes import FixBatch, FixError, to_time_us
from api.protocols.jt808.location import ALARM_NAMES, Location

POSITIONED: Final = 0x02
ENCRYPTED: Final = 0x20
_OPTIONAL: Final = (
    "mileage_km",
    "fuel_l",
    "recorder_speed_kmh",
    "alarm_event_id",
    "vehicle_signal",
    "io_status",
    "analog",
    "signal_strength",
    "satellites",
)


@dataclass(frozen=True, slots=True)
class Report:
    """One location report and where it came from (for quarantine rows).

    Attributes
    ----------
    location : Location
        The decoded report.
    origin : str
        E.g. ``0x0704 serial 12 item 3``.
    """

    location: Location
    origin: str


def extras_json(location: Location) -> str:
    """The 808-specific values of a report as compact JSON.

    Parameters
    ----------
    location : Location
        A decoded report.

    Returns
    -------
    str
        JSON object text (see the module docstring for the keys).
    """
    extras: dict[str, Any] = {
        "alarm": location.alarm,
        "status": location.status,
        "acc": bool(location.status & 1),
    }
    if location.alarm:
        extras["alarms"] = [name for bit, name in ALARM_NAMES.items() if location.alarm >> bit & 1]
    for name in _OPTIONAL:
        value = getattr(location, name)
        if value is not None:
            extras[name] = value
    if location.raw_extras:
        extras["raw_extras"] = {f"0x{k:02X}": v for k, v in location.raw_extras.items()}
    if location.raw_tail:
        extras["raw_tail"] = location.raw_tail
    return orjson.dumps(extras).decode()


def refusal(location: Location) -> tuple[str, str] | None:
    """Why a report is not a position, as (reason, field), or None when it is one.

    Parameters
    ----------
    location : Location
        A decoded report.

    Returns
    -------
    tuple of str or None
        ``("no_time", "time")``, ``("encrypted", "status")``, ``("not_positioned", "status")``.
    """
    if location.time is None:
        return "no_time", "time"
    if location.status & ENCRYPTED:
        return "encrypted", "status"
    if not location.status & POSITIONED:
        return "not_positioned", "status"
    return None


def to_batch(identifier: str, reports: Sequence[Report]) -> tuple[FixBatch, list[FixError]]:
    """Rows for the writer: positions in the batch, the rest as quarantine errors.

    Parameters
    ----------
    identifier : str
        The device identifier (``device.identifier``) the terminal authenticated as.
    reports : sequence of Report
        Location reports in arrival order.

    Returns
    -------
    FixBatch
        One row per positioned report (``row`` = its 1-based place in ``reports``).
    list of FixError
        One per report that is not a position (see ``refusal``).
    """
    times: list[int] = []
    lat: list[float] = []
    lon: list[float] = []
    speed: list[float] = []
    course: list[float] = []
    altitude: list[float] = []
    extras: list[str] = []
    rows: list[int] = []
    raw: list[str] = []
    errors: list[FixError] = []
    for row, report in enumerate(reports, start=1):
        fix = report.location
        refused = refusal(fix)
        if refused is not None:
            reason, field = refused
            stamp = fix.time.isoformat() if fix.time is not None else "none"
            errors.append(
                FixError(
                    row=row,
                    reason=reason,
                    field=field,
                    raw=f"jt808 {identifier} {report.origin}: {reason}; status={fix.status:#x} "
                    f"time={stamp} lat={fix.latitude:.6f} lon={fix.longitude:.6f}",
                )
            )
            continue
        assert fix.time is not None  # noqa: S101 - refusal() ruled it out
        times.append(to_time_us(fix.time))
        lat.append(fix.latitude)
        lon.append(fix.longitude)
        speed.append(fix.speed_ms)
        course.append(float(fix.direction))
        altitude.append(float(fix.altitude))
        extras.append(extras_json(fix))
        rows.append(row)
        raw.append(f"jt808 {report.origin}")
    batch = FixBatch.from_columns(
        device=[identifier] * len(times),
        time_us=times,
        lat=lat,
        lon=lon,
        speed=speed,
        course=course,
        altitude=altitude,
        extras=extras,
        row=rows,
        raw=raw,
    )
    return batch, errors
