"""Synthetic 草原110-style patrol tracks, deterministic by seed.

Each vehicle belongs to a village and patrols inside it: from its base it drives to random
waypoints inside its patrol area at 20–60 km/h, stops a while at some of them (checkpoints,
herder visits), and returns to base at the end of the shift. Terminals report every
``interval_s`` seconds. Realism knobs: some terminals speak GCJ-02 (their fixes are offset as an
AMap-based terminal would send them), some fixes are GPS spikes, and some stretches have no
signal (gaps). Everything is generated with numpy per vehicle; a 2,000-vehicle, 12-hour day
(≈ 8.6 M fixes) takes a few seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import shapely
from numpy.typing import NDArray
from shapely.geometry.base import BaseGeometry

from gis.crs import haversine_m, wgs84_to_gcj02
from gis.units import METRES_PER_DEGREE as EARTH_M_PER_DEG


@dataclass(frozen=True)
class FleetTracks:
    """Fixes of a simulated fleet, column-wise, sorted by (vehicle, time).

    ``lat``/``lon`` are as the terminal sends them (GCJ-02 for vehicles with ``gcj02`` set);
    ``true_lat``/``true_lon`` are the WGS-84 truth. ``spike`` marks deliberately wild fixes.
    """

    vehicle: NDArray[np.int64]
    time_us: NDArray[np.int64]
    lat: NDArray[np.float64]
    lon: NDArray[np.float64]
    true_lat: NDArray[np.float64]
    true_lon: NDArray[np.float64]
    speed: NDArray[np.float64]
    course: NDArray[np.float64]
    accuracy: NDArray[np.float64]
    spike: NDArray[np.bool_]
    gcj02: NDArray[np.bool_]  # per vehicle

    def __len__(self) -> int:
        return len(self.vehicle)

    def bounds(self) -> NDArray[np.int64]:
        """Where each vehicle's rows begin, and the end: vehicle k's rows are
        ``bounds[k]:bounds[k + 1]`` (rows are sorted by vehicle)."""
        return np.r_[0, np.flatnonzero(np.diff(self.vehicle)) + 1, len(self.vehicle)]


@dataclass(frozen=True)
class VehicleTrack:
    """One vehicle's fixes: the truth, and the latitude its terminal sends (spikes included)."""

    time_us: NDArray[np.int64]
    lat: NDArray[np.float64]
    lon: NDArray[np.float64]
    speed: NDArray[np.float64]
    course: NDArray[np.float64]
    spike: NDArray[np.bool_]
    sent_lat: NDArray[np.float64]


def random_points_in(area: BaseGeometry, n: int, rng: np.random.Generator) -> NDArray[np.float64]:
    """``n`` uniform random (lon, lat) points inside a WGS-84 polygon (rejection sampling)."""
    minx, miny, maxx, maxy = area.bounds
    out: list[NDArray[np.float64]] = []
    have = 0
    shapely.prepare(area)
    while have < n:
        k = max(2 * (n - have), 16)
        cand = np.column_stack([rng.uniform(minx, maxx, k), rng.uniform(miny, maxy, k)])
        inside = cand[shapely.contains_xy(area, cand[:, 0], cand[:, 1])]
        out.append(inside)
        have += len(inside)
    return np.concatenate(out)[:n]


def _legs(
    waypoints: NDArray[np.float64], speeds: NDArray[np.float64], stops: NDArray[np.float64]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Knot times (s from shift start) and positions of a drive through waypoints with stops."""
    lat0 = np.radians(waypoints[:, 1].mean())
    dx = np.diff(waypoints[:, 0]) * EARTH_M_PER_DEG * np.cos(lat0)
    dy = np.diff(waypoints[:, 1]) * EARTH_M_PER_DEG
    drive = np.hypot(dx, dy) / speeds
    # each leg: drive to the waypoint, then stay there for its stop time
    durations = np.column_stack([drive, stops]).ravel()
    times = np.r_[0.0, np.cumsum(durations)]
    points = np.repeat(waypoints, 2, axis=0)[1:]
    return times, points


def simulate_vehicle(
    area: BaseGeometry,
    *,
    hours: float,
    interval_s: float,
    start_us: int,
    rng: np.random.Generator,
    spike_rate: float = 0.002,
    gap_rate_per_h: float = 0.3,
) -> VehicleTrack:
    """One vehicle's shift inside ``area``; a spike moves only the latitude it sends."""
    shift_s = hours * 3600.0
    base = random_points_in(area, 1, rng)[0]
    n_way = max(4, int(hours * 6))
    waypoints = np.vstack([base, random_points_in(area, n_way, rng)])
    speeds = rng.uniform(20, 60, n_way + 1) / 3.6  # the last one is the drive home
    stops = np.where(rng.random(n_way) < 0.35, rng.uniform(300, 1800, n_way), 0.0)
    knot_t, knot_p = _legs(waypoints, speeds[:-1], stops)
    # keep the waypoints from which the vehicle still gets home before the shift ends
    lat0 = np.radians(base[1])
    home_m = np.hypot((waypoints[1:, 0] - base[0]) * np.cos(lat0), waypoints[1:, 1] - base[1])
    home_s = home_m * EARTH_M_PER_DEG / speeds[-1]
    leave_at = knot_t[2::2]  # after the stop at waypoint k
    reachable = np.flatnonzero(leave_at + home_s <= shift_s)
    last = int(reachable[-1]) + 1 if len(reachable) else 1
    plan = np.vstack([waypoints[: last + 1], base])
    plan_speeds = np.r_[speeds[:last], speeds[-1]]
    plan_stops = np.r_[stops[:last], 0.0]
    knot_t, knot_p = _legs(plan, plan_speeds, plan_stops)
    t = np.arange(0.0, min(shift_s, knot_t[-1]), interval_s)
    t = t + rng.uniform(0, 1.0, len(t))  # terminals are not perfectly periodic
    lon = np.interp(t, knot_t, knot_p[:, 0])
    lat = np.interp(t, knot_t, knot_p[:, 1])
    # GPS noise of a few metres
    lon += rng.normal(0, 4.0, len(t)) / (EARTH_M_PER_DEG * np.cos(np.radians(lat)))
    lat += rng.normal(0, 4.0, len(t)) / EARTH_M_PER_DEG
    keep = np.ones(len(t), dtype=bool)
    for _ in range(rng.poisson(gap_rate_per_h * hours)):  # signal lost for 2–15 min
        g0 = rng.uniform(0, shift_s)
        keep &= ~((t >= g0) & (t < g0 + rng.uniform(120, 900)))
    t, lat, lon = t[keep], lat[keep], lon[keep]
    # the terminal's own speed and course come from the true motion, not from spikes
    dlat = np.diff(lat, prepend=lat[:1]) * EARTH_M_PER_DEG
    dlon = np.diff(lon, prepend=lon[:1]) * EARTH_M_PER_DEG * np.cos(np.radians(lat))
    dt = np.maximum(np.diff(t, prepend=t[:1] - interval_s), 1e-3)
    spike = rng.random(len(t)) < spike_rate
    speed = np.where(spike, np.nan, np.hypot(dlat, dlon) / dt)
    course = (np.degrees(np.arctan2(dlon, dlat)) + 360.0) % 360.0
    sent_lat = np.where(
        spike, lat + rng.choice([-1, 1], len(t)) * rng.uniform(0.2, 0.5, len(t)), lat
    )
    time_us = start_us + np.round(t * 1e6).astype(np.int64)
    return VehicleTrack(time_us, lat, lon, speed, course, spike, sent_lat)


@dataclass(frozen=True)
class Detour:
    """A vehicle's track sent to a place: rows ``start`` to ``end`` (exclusive) replaced by
    these positions, speeds and courses."""

    lon: NDArray[np.float64]
    lat: NDArray[np.float64]
    speed: NDArray[np.float64]  # m/s
    course: NDArray[np.float64]  # degrees from north
    start: int
    end: int
    arrive_s: float  # seconds after the fix before ``start``
    distance_m: float


def detour(
    time_us: NDArray[np.int64],
    lon: NDArray[np.float64],
    lat: NDArray[np.float64],
    *,
    start: int,
    goal: tuple[float, float],
    speed_ms: float,
    dwell_s: float,
) -> Detour:
    """One vehicle's track, in time order, sent to ``goal`` from row ``start`` on.

    From where it was at row ``start - 1`` it drives straight to ``goal`` at ``speed_ms``, stays
    ``dwell_s`` there, and drives back at the same speed to meet its own track at the first row
    it can reach in time, which it follows from there (when it can reach none, it stays at the
    goal). Rows before ``start`` and from the meeting row on are unchanged.

    Parameters
    ----------
    time_us, lon, lat : ndarray
        The track: UTC µs, WGS-84 degrees.
    start : int
        The first row still to be sent.
    goal : (lon, lat)
        Where to drive.
    speed_ms, dwell_s : float
        Driving speed (m/s) and time spent at the goal (s).
    """
    n = len(time_us)
    seconds = (time_us - time_us[0]) / 1e6
    origin = max(start - 1, 0)
    x0, y0, t0 = float(lon[origin]), float(lat[origin]), float(seconds[origin])
    distance = float(haversine_m(x0, y0, goal[0], goal[1]))
    arrive, leave = t0 + distance / speed_ms, t0 + distance / speed_ms + dwell_s
    later = np.arange(start, n)
    back_m = haversine_m(goal[0], goal[1], lon[later], lat[later])
    reach = later[(seconds[later] > leave) & (back_m <= speed_ms * (seconds[later] - leave))]
    end = int(reach[0]) if len(reach) else n
    knots_t = [t0, arrive, leave]
    knots_x, knots_y = [x0, goal[0], goal[0]], [y0, goal[1], goal[1]]
    if end < n:
        knots_t.append(float(seconds[end]))
        knots_x.append(float(lon[end]))
        knots_y.append(float(lat[end]))
    t = seconds[start:end]
    new_lon = np.interp(t, knots_t, knots_x)
    new_lat = np.interp(t, knots_t, knots_y)
    # speed and course as a terminal derives them, from the previous fix
    prev_x = np.r_[lon[origin], new_lon[:-1]]
    prev_y = np.r_[lat[origin], new_lat[:-1]]
    step_m = haversine_m(prev_x, prev_y, new_lon, new_lat)
    dt = np.maximum(np.diff(t, prepend=t0), 1e-3)
    dlat = (new_lat - prev_y) * EARTH_M_PER_DEG
    dlon = (new_lon - prev_x) * EARTH_M_PER_DEG * np.cos(np.radians(new_lat))
    return Detour(
        lon=new_lon,
        lat=new_lat,
        speed=step_m / dt,
        course=(np.degrees(np.arctan2(dlon, dlat)) + 360.0) % 360.0,
        start=start,
        end=end,
        arrive_s=distance / speed_ms,
        distance_m=distance,
    )


def simulate_fleet(
    areas: list[BaseGeometry],
    *,
    hours: float = 12.0,
    interval_s: float = 10.0,
    start_us: int,
    seed: int = 110,
    gcj02_share: float = 0.2,
    spike_rate: float = 0.002,
    gap_rate_per_h: float = 0.3,
) -> FleetTracks:
    """Tracks of one vehicle per area (pass an area twice for two vehicles), deterministic.

    Parameters
    ----------
    areas
        WGS-84 polygons each vehicle patrols in (its village, or the union of its grids).
    start_us
        Shift start, UTC µs.
    gcj02_share
        Fraction of vehicles whose terminal reports GCJ-02.
    """
    rng = np.random.default_rng(seed)
    parts: list[VehicleTrack] = []
    gcj = rng.random(len(areas)) < gcj02_share
    for k, area in enumerate(areas):
        vrng = np.random.default_rng([seed, k])
        parts.append(
            simulate_vehicle(
                area,
                hours=hours,
                interval_s=interval_s,
                start_us=start_us,
                rng=vrng,
                spike_rate=spike_rate,
                gap_rate_per_h=gap_rate_per_h,
            )
        )

    def column(name: str) -> NDArray[Any]:
        return np.concatenate([getattr(p, name) for p in parts])

    vehicle = np.repeat(np.arange(len(areas), dtype=np.int64), [len(p.time_us) for p in parts])
    lat, lon, spiked_lat = column("lat"), column("lon"), column("sent_lat")
    send_lon, send_lat = lon.copy(), spiked_lat.copy()
    on_gcj = gcj[vehicle]
    send_lon[on_gcj], send_lat[on_gcj] = wgs84_to_gcj02(lon[on_gcj], spiked_lat[on_gcj])
    accuracy = np.random.default_rng([seed, len(areas)]).uniform(3.0, 12.0, len(vehicle))
    return FleetTracks(
        vehicle=vehicle,
        time_us=column("time_us"),
        lat=send_lat,
        lon=send_lon,
        true_lat=lat,
        true_lon=lon,
        speed=column("speed"),
        course=column("course"),
        accuracy=accuracy,
        spike=column("spike"),
        gcj02=gcj,
    )
