"""Vectorised ingest filters: every fix gets one outcome code, nothing is dropped silently.

Order matters: the first filter that refuses a fix names the reason. Pure numpy, no database:
the caller supplies device facts (resolved ids) and each device's last stored fix.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from gis.units import EARTH_RADIUS_M

# outcome codes (int8) → names; 0 and 1 are successes
STORED, DUPLICATE = 0, 1
REASONS: tuple[str, ...] = (
    "stored",
    "duplicate",
    "unparsable",
    "unknown_device",
    "disabled_device",
    "bad_coordinates",
    "outside_service_area",
    "future",
    "too_old",
    "poor_accuracy",
    "implausible_jump",
    "unauthenticated",  # an OsmAnd fix without the device's key (checked by the store)
)
CODE = {name: i for i, name in enumerate(REASONS)}
FIELD_OF = {
    "bad_coordinates": "lat/lon",
    "outside_service_area": "lat/lon",
    "future": "time",
    "too_old": "time",
    "poor_accuracy": "accuracy",
    "implausible_jump": "lat/lon",
    "unknown_device": "device",
    "disabled_device": "device",
    "unauthenticated": "key",
}


@dataclass(frozen=True)
class Limits:
    """Filter limits; a limit of 0 (or ``bbox`` None) switches that filter off."""

    now_us: int
    max_future_s: float = 300.0
    max_age_s: float = 30 * 86_400.0
    max_speed_mps: float = 70.0
    max_accuracy_m: float = 500.0
    bbox: tuple[float, float, float, float] | None = None  # lon0, lat0, lon1, lat1 (WGS-84)


def _refuse(outcome: NDArray[np.int8], mask: NDArray[np.bool_], reason: str) -> None:
    """Give ``reason`` to fixes in ``mask`` that no earlier filter refused."""
    outcome[mask & (outcome == STORED)] = CODE[reason]


def check_fixes(
    device_id: NDArray[np.int64],
    enabled: NDArray[np.bool_],
    time_us: NDArray[np.int64],
    lat: NDArray[np.float64],
    lon: NDArray[np.float64],
    accuracy: NDArray[np.float64],
    limits: Limits,
) -> NDArray[np.int8]:
    """Outcome per fix from the per-fix filters (device, coordinates, area, time, accuracy).

    ``device_id`` is −1 for identifiers the registry does not know. Coordinates are WGS-84
    (already converted from the device's declared CRS).
    """
    n = len(device_id)
    outcome = np.zeros(n, dtype=np.int8)
    _refuse(outcome, device_id < 0, "unknown_device")
    _refuse(outcome, ~enabled, "disabled_device")
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(lat) | ~np.isfinite(lon) | (np.abs(lat) > 90) | (np.abs(lon) > 180)
        bad |= (lat == 0) & (lon == 0)
    _refuse(outcome, bad, "bad_coordinates")
    if limits.bbox is not None:
        x0, y0, x1, y1 = limits.bbox
        with np.errstate(invalid="ignore"):
            outside = (lon < x0) | (lon > x1) | (lat < y0) | (lat > y1)
        _refuse(outcome, outside, "outside_service_area")
    if limits.max_future_s > 0:
        _refuse(outcome, time_us > limits.now_us + int(limits.max_future_s * 1e6), "future")
    if limits.max_age_s > 0:
        _refuse(outcome, time_us < limits.now_us - int(limits.max_age_s * 1e6), "too_old")
    if limits.max_accuracy_m > 0:
        with np.errstate(invalid="ignore"):
            poor = np.isfinite(accuracy) & (accuracy > limits.max_accuracy_m)
        _refuse(outcome, poor, "poor_accuracy")
    return outcome


def mark_duplicates(
    device_id: NDArray[np.int64],
    time_us: NDArray[np.int64],
    outcome: NDArray[np.int8],
    *,
    order: NDArray[np.int64] | None = None,
) -> None:
    """Within a batch, a second fix with the same (device, time) is a duplicate of the first.

    ``order`` may pass a precomputed ``np.lexsort((time_us, device_id))``.
    """
    if order is None:
        order = np.lexsort((time_us, device_id))
    cand = order[outcome[order] == STORED]
    if len(cand) < 2:
        return
    same = (device_id[cand[1:]] == device_id[cand[:-1]]) & (time_us[cand[1:]] == time_us[cand[:-1]])
    outcome[cand[1:][same]] = DUPLICATE


def _speeds(
    t: NDArray[np.int64],
    la: NDArray[np.float64],
    lo: NDArray[np.float64],
    a: NDArray[np.int64],
    b: NDArray[np.int64],
) -> NDArray[np.float64]:
    """Implied speed (m/s) from row a to row b; a distance with no time between is infinite.

    Equirectangular distance: within 0.5 % of the great circle up to a few hundred km, which
    is all a speed threshold needs, at a third of the cost of haversine.
    """
    dt = np.abs(t[b] - t[a]) / 1e6
    dy = np.radians(la[b] - la[a])
    dx = np.radians(lo[b] - lo[a]) * np.cos(np.radians(0.5 * (la[a] + la[b])))
    dist = EARTH_RADIUS_M * np.hypot(dx, dy)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(dt > 0, dist / np.where(dt > 0, dt, 1.0), np.where(dist > 1.0, np.inf, 0.0))


def mark_jumps(
    device_id: NDArray[np.int64],
    time_us: NDArray[np.int64],
    lat: NDArray[np.float64],
    lon: NDArray[np.float64],
    outcome: NDArray[np.int8],
    *,
    max_speed_mps: float,
    last: dict[int, tuple[int, float, float]] | None = None,
    max_rounds: int = 64,
    order: NDArray[np.int64] | None = None,
) -> None:
    """Refuse fixes whose implied speed from the previous *kept* fix exceeds the limit.

    ``last`` maps device id → (time_us, lat, lon) of its stored last fix; it joins the
    sequence as an anchor that is never refused. Each round, isolated spikes (far from both
    kept neighbours, which are plausible to each other) are refused together; otherwise only
    the first jump of each device is refused, so the fix after a spike is compared with the
    fix before it, not with the spike. Vectorised rounds, not a loop per fix.
    """
    if max_speed_mps <= 0:
        return
    if order is None:
        order = np.lexsort((time_us, device_id))
    cand = order[outcome[order] == STORED]  # sorted by (device, time)
    if len(cand) == 0:
        return
    anchors = last or {}
    a_dev = np.fromiter(anchors.keys(), dtype=np.int64, count=len(anchors))
    present = np.isin(a_dev, device_id[cand])
    a_dev = a_dev[present]
    a_vals = np.array([anchors[int(d)] for d in a_dev], dtype=float).reshape(-1, 3)
    dev = np.r_[device_id[cand], a_dev]
    t = np.r_[time_us[cand], a_vals[:, 0].astype(np.int64)]
    la = np.r_[lat[cand], a_vals[:, 1]]
    lo = np.r_[lon[cand], a_vals[:, 2]]
    anchor = np.r_[np.zeros(len(cand), bool), np.ones(len(a_dev), bool)]
    # merge the anchors in (after a batch fix of the same time); the batch part is sorted
    seq = np.lexsort((anchor, t, dev)) if len(a_dev) else np.arange(len(cand))
    dev, t, la, lo, anchor = dev[seq], t[seq], la[seq], lo[seq], anchor[seq]
    keep = np.ones(len(seq), dtype=bool)
    for round_no in range(max_rounds + 1):
        k = np.flatnonzero(keep)
        same_prev = np.r_[False, dev[k[1:]] == dev[k[:-1]]]
        prev = np.r_[k[0], k[:-1]]
        jump = same_prev & (_speeds(t, la, lo, prev, k) > max_speed_mps) & ~anchor[k]
        if not jump.any():
            break
        if round_no == max_rounds:  # pathological input: refuse what is left
            keep[k[jump]] = False
            break
        nxt = np.r_[k[1:], k[-1]]
        same_next = np.r_[dev[k[1:]] == dev[k[:-1]], False]
        back = same_next & (_speeds(t, la, lo, k, nxt) > max_speed_mps)
        bridge = _speeds(t, la, lo, prev, nxt) <= max_speed_mps
        spike = jump & back & bridge
        if spike.any():
            keep[k[spike]] = False
            continue
        # otherwise refuse the first jump of each device and look again
        jump_idx = np.flatnonzero(jump)
        dev_of = dev[k[jump_idx]]
        firsts = jump_idx[np.r_[True, dev_of[1:] != dev_of[:-1]]]
        first = np.zeros(len(k), bool)
        first[firsts] = True
        keep[k[first]] = False
    refused = ~keep & ~anchor
    outcome[cand[seq[refused]]] = CODE["implausible_jump"]
