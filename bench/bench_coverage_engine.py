"""Coverage engine: GPS fixes → fine-cell visit aggregates (``gis.coverage.cell_visits``),
densification included, one core, against a bare vectorised H3 point-to-cell call (h3ronpy) on
the same fixes in the same run. Target: ≥ 1 M fixes/s on realistic patrol tracks."""

from __future__ import annotations

from typing import Any

import numpy as np

from bench.common import best_of, write_result
from gis.cells import latlng_to_cells
from gis.coverage import cell_visits
from gis.units import METRES_PER_DEGREE_SPHERE as M_PER_DEG

T0_US = 1_795_449_600 * 1_000_000  # 2026-11-23 00:00 UTC (08:00 in China)


def _alternating_runs(
    rng: np.random.Generator, n: int, mean_move: float, mean_stop: float
) -> np.ndarray:
    """Bool mask of length n: alternating moving/stopped stretches of geometric lengths."""
    pairs = int(n / (mean_move + mean_stop)) * 2 + 16
    move = rng.geometric(1.0 / mean_move, pairs)
    stop = rng.geometric(1.0 / mean_stop, pairs)
    lengths = np.column_stack([move, stop]).ravel()
    stopped = np.tile([False, True], pairs)
    mask = np.repeat(stopped, lengths)
    while len(mask) < n:  # pragma: no cover - the margin above makes this rare
        mask = np.concatenate([mask, mask])
    return mask[:n]


def patrol_tracks(
    vehicles: int, fixes_per_vehicle: int, *, seed: int = 7, interval_s: float = 10.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Synthetic patrol tracks around 锡林浩特 (Xilinhot), as read from the position table.

    Vehicles drive at 20–60 km/h with smoothly varying speed and heading (a few sharp turns),
    stop for minutes at a time (≈ 25 % of the time, GPS jitter of a few metres while parked),
    report every ``interval_s`` s (±1 s jitter), lose a few fixes now and then and rarely jump
    (GPS glitch). Returned time-ordered and interleaved across vehicles, as a day's partition
    read by time: (device int64, t_us int64, lat, lon).
    """
    rng = np.random.default_rng(seed)
    shape = (vehicles, fixes_per_vehicle)
    n = vehicles * fixes_per_vehicle
    stopped = _alternating_runs(rng, n, mean_move=90.0, mean_stop=30.0).reshape(shape)
    cruise = rng.uniform(20.0, 60.0, (vehicles, 1)) / 3.6
    wobble = np.cumsum(rng.normal(0.0, 0.05, shape), axis=1)
    speed = np.clip(cruise * (1.0 + 0.3 * np.tanh(wobble)), 20 / 3.6, 60 / 3.6)
    speed = np.where(stopped, 0.0, speed)
    turn = rng.normal(0.0, np.radians(8.0), shape)
    sharp = rng.random(shape) < 0.01
    turn[sharp] += rng.choice([-1.0, 1.0], int(sharp.sum())) * np.radians(90.0)
    heading = rng.uniform(0, 2 * np.pi, (vehicles, 1)) + np.cumsum(turn, axis=1)
    dt = interval_s + rng.uniform(-1.0, 1.0, shape)
    step = speed * dt
    north = np.cumsum(step * np.cos(heading), axis=1)
    east = np.cumsum(step * np.sin(heading), axis=1)
    lat0 = rng.uniform(43.7, 44.2, (vehicles, 1))
    lon0 = rng.uniform(115.7, 116.5, (vehicles, 1))
    jitter = rng.normal(0.0, 3.0, (2, *shape))
    lat = lat0 + (north + jitter[0]) / M_PER_DEG
    lon = lon0 + (east + jitter[1]) / (M_PER_DEG * np.cos(np.radians(lat0)))
    glitch = rng.random(shape) < 0.0005
    lat[glitch] += rng.choice([-1.0, 1.0], int(glitch.sum())) * 0.3  # ≈ 33 km jumps
    t_s = rng.uniform(0, 600, (vehicles, 1)) + np.cumsum(dt, axis=1)
    t_us = T0_US + np.round(t_s * 1e6).astype(np.int64)
    device = np.repeat(np.arange(100_000, 100_000 + vehicles, dtype=np.int64), fixes_per_vehicle)
    keep = rng.random(n) > 0.002  # lost fixes → longer gaps
    d, t, la, lo = device[keep], t_us.ravel()[keep], lat.ravel()[keep], lon.ravel()[keep]
    order = np.argsort(t, kind="stable")
    return d[order], t[order], la[order], lo[order]


def run(quick: bool) -> dict[str, Any]:
    vehicles, per_vehicle = (100, 2_000) if quick else (1_000, 2_000)
    device, t_us, lat, lon = patrol_tracks(vehicles, per_vehicle)
    n = len(t_us)
    seconds, result = best_of(lambda: cell_visits(device, t_us, lat, lon))
    base_s, _ = best_of(lambda: latlng_to_cells(lat, lon, 9))
    by_device = np.lexsort((t_us, device))
    d2, t2, la2, lo2 = device[by_device], t_us[by_device], lat[by_device], lon[by_device]
    sorted_s, _ = best_of(lambda: cell_visits(d2, t2, la2, lo2))
    small = slice(0, n // 10)
    sight_s, sight = best_of(
        lambda: cell_visits(device[small], t_us[small], lat[small], lon[small], sight_m=300.0),
        repeat=1,
    )
    figures = {
        "fixes": n,
        "vehicles": vehicles,
        "res": 9,
        "seconds": round(seconds, 3),
        "fixes_per_s": round(n / seconds),
        "input_order": "time-ordered, vehicles interleaved",
        "presorted_by_device_fixes_per_s": round(n / sorted_s),
        "baseline": "bare h3ronpy point-to-cell (coordinates_to_cells) on the same fixes",
        "baseline_fixes_per_s": round(n / base_s),
        "ratio_to_bare_h3": round(base_s / seconds, 3),
        "cells_out": len(result),
        "passes_out": int(result.pass_offsets[-1]),
        "km_total": round(float(result.metres.sum()) / 1000.0, 1),
        "dwell_h_total": round(float(result.dwell_s.sum()) / 3600.0, 1),
        "sight_300m_fixes": n // 10,
        "sight_300m_fixes_per_s": round((n // 10) / sight_s),
        "sight_300m_cells_out": len(sight),
        "sight_300m_sight_only_cells": int(sight.sight_only.sum()),
        "target_fixes_per_s": 1_000_000,
    }
    write_result("coverage_engine", figures)
    return figures
