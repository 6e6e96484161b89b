"""The living demo's calls and errands (started by ``api.demofleet``).

- **Calls**: alarm-phone calls at random alert points of the demo area (``INCIDENTS_PER_HOUR``,
  Poisson, flagged ``synthetic``), for the dispatchers on the console to take.
- **The demo's command centre** takes a demo call nobody took within ``AUTO_ASSIGN_S``: it ranks
  the responders as the console does and assigns the nearest demo vehicle (recorded as assigned
  by ``DEMO_CENTRE``). A call nobody could take is cancelled after ``INCIDENT_TTL_H``.
- **Errands**: a demo vehicle assigned to an incident, by that centre or by a dispatcher on the
  console, drives there: the fixes of its shift not yet sent are rewritten (``Routes.send_to``)
  so its terminal reports the drive, the server detects the arrival from those fixes like any
  other, and after ``DWELL_S`` on scene the vehicle rejoins its patrol. The demo clears the calls
  its own centre assigned; a dispatcher's call stays theirs to clear.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import psycopg
from psycopg import AsyncConnection

from api.auth import SYSTEM, Principal
from api.dispatch.assign import AssignIn, assign
from api.dispatch.simulate import simulate_incidents
from api.dispatch.workflow import candidates_for, escalate, transition
from api.errors import DomainError
from api.scope import Scope
from api.settings import Settings
from gis.crs import wgs84_to_gcj02
from gis.simulation import FleetTracks, detour

log = logging.getLogger("gridpatrol.demofleet")
DEMO_CENTRE = Principal(name="demo 演示指挥中心", role="admin", scope=Scope.everything())
RETRY_S = 60.0  # a call the centre could not take is tried again after this
LEAD_US = 1_500_000  # rows due sooner than this may be on their way already
CLEARED = "演示警情已处置 demo call handled"
NOT_TAKEN = "演示警情无人处置 demo call not taken"

WAITING_DEMO_CALLS = """
SELECT id FROM incident
 WHERE synthetic AND status = 'new' AND created_at < now() - make_interval(secs => %s)
   AND coalesce(village_code, '') LIKE %s
 ORDER BY created_at, id
"""
OPEN_ERRANDS = """
SELECT i.id, d.identifier, ST_X(i.geom), ST_Y(i.geom), i.status,
       extract(epoch FROM now() - i.arrived_at), p.assigned_by
  FROM incident i
  JOIN device d ON d.id = i.device_id
  LEFT JOIN dispatch p ON p.incident_id = i.id AND p.ended_at IS NULL
 WHERE i.status IN ('dispatched', 'accepted', 'arrived') AND d.identifier = ANY(%s)
"""


@dataclass(frozen=True)
class Rows:
    """Where one vehicle's fixes of the live shift are."""

    tracks: FleetTracks
    start: int
    end: int


class Routes:
    """The live shift's tracks by vehicle, which the senders read fix by fix when each is due;
    an errand rewrites the rows of one vehicle not yet sent (in the senders' event loop, so a
    fix is never read half-changed)."""

    def __init__(self) -> None:
        self._rows: dict[str, Rows] = {}

    def follow(self, tracks: FleetTracks, identifiers: list[str]) -> None:
        """The new shift's tracks of these vehicles (``identifiers[tracks.vehicle]``)."""
        bounds = tracks.bounds()
        for a, b in itertools.pairwise(bounds.tolist()):
            if b > a:
                self._rows[identifiers[int(tracks.vehicle[a])]] = Rows(tracks, a, b)

    def shift_of(self, identifier: str) -> FleetTracks | None:
        rows = self._rows.get(identifier)
        return rows.tracks if rows else None

    def send_to(
        self, identifier: str, goal: tuple[float, float], *, speed_ms: float, dwell_s: float
    ) -> float | None:
        """Drive this vehicle to ``goal`` (WGS-84) from its next fix on; returns the distance
        (m), or None when it has no fix left to send this shift."""
        rows = self._rows.get(identifier)
        if rows is None:
            return None
        tracks, a, b = rows.tracks, rows.start, rows.end
        now_us = int(time.time() * 1e6) + LEAD_US
        first = a + int(np.searchsorted(tracks.time_us[a:b], now_us, side="right"))
        if first >= b:
            return None
        way = detour(
            tracks.time_us[a:b],
            tracks.true_lon[a:b],
            tracks.true_lat[a:b],
            start=first - a,
            goal=goal,
            speed_ms=speed_ms,
            dwell_s=dwell_s,
        )
        changed = slice(a + way.start, a + way.end)
        tracks.true_lon[changed], tracks.true_lat[changed] = way.lon, way.lat
        lon, lat = way.lon, way.lat
        if tracks.gcj02[int(tracks.vehicle[a])]:
            lon, lat = wgs84_to_gcj02(lon, lat)
        tracks.lon[changed], tracks.lat[changed] = lon, lat
        tracks.speed[changed], tracks.course[changed] = way.speed, way.course
        tracks.spike[changed] = False
        return way.distance_m


async def calls(settings: Settings, url: str) -> None:
    """Demo calls at random alarm phones of the area, ten at a time; a call nobody took within
    ``INCIDENT_TTL_H`` is cancelled with that reason, so the list does not grow without end."""
    demo = settings.demo
    for batch in itertools.count():
        async with await AsyncConnection.connect(url, autocommit=True) as conn:
            await simulate_incidents(
                conn,
                SYSTEM,
                settings.dispatch,
                rate_per_s=demo.incidents_per_hour / 3600.0,
                count=10,
                area=demo.area,
                seed=demo.seed + 7919 * batch + int(time.time()),
                speedup=1.0,
                on_created=lambda row: log.info(
                    "demo call: incident #%s %s", row["id"], row["kind"]
                ),
            )
            stale = await (
                await conn.execute(
                    WAITING_DEMO_CALLS, (demo.incident_ttl_h * 3600, demo.area + "%")
                )
            ).fetchall()
            for (incident_id,) in stale:
                with contextlib.suppress(DomainError):  # taken meanwhile: left to its dispatcher
                    await transition(
                        conn, SYSTEM, int(incident_id), "cancel", note={"reason": NOT_TAKEN}
                    )


class Errands:
    """What the demo's vehicles are sent to, and the demo centre's own dispatching."""

    def __init__(self, settings: Settings, routes: Routes, devices: dict[int, str]) -> None:
        self.settings = settings
        self.routes = routes
        self.devices = devices  # device id → identifier, of the demo fleet
        self.routed: dict[int, FleetTracks] = {}  # incident → the shift its drive was put in
        self.retry_at: dict[int, float] = {}  # calls not taken: when to try again (monotonic)

    async def step(self, conn: AsyncConnection[Any]) -> None:
        """One look: take the untaken demo calls, send newly assigned vehicles on their way,
        clear the centre's calls whose vehicle spent the dwell on scene."""
        demo = self.settings.demo
        if demo.auto_assign_s > 0:
            untaken = await (
                await conn.execute(WAITING_DEMO_CALLS, (demo.auto_assign_s, demo.area + "%"))
            ).fetchall()
            now = time.monotonic()
            self.retry_at = {k: v for k, v in self.retry_at.items() if v > now}
            for (incident_id,) in untaken:
                if int(incident_id) not in self.retry_at:
                    await self.take(conn, int(incident_id))
        rows = await (await conn.execute(OPEN_ERRANDS, (list(self.devices.values()),))).fetchall()
        for incident_id, identifier, lon, lat, status, on_scene_s, assigned_by in rows:
            if status != "arrived":
                self.route(int(incident_id), str(identifier), (float(lon), float(lat)))
            elif assigned_by == DEMO_CENTRE.name and (on_scene_s or 0) >= demo.dwell_s:
                with contextlib.suppress(DomainError):  # a dispatcher acted meanwhile
                    await transition(
                        conn, DEMO_CENTRE, int(incident_id), "clear", note={"outcome": CLEARED}
                    )
                    log.info("demo call #%s cleared", incident_id)
        self.routed = {k: v for k, v in self.routed.items() if k in {r[0] for r in rows}}

    def route(self, incident_id: int, identifier: str, goal: tuple[float, float]) -> None:
        """Send the vehicle on its way, once per shift (a new shift's tracks need it again)."""
        shift = self.routes.shift_of(identifier)
        if shift is None or self.routed.get(incident_id) is shift:
            return
        demo = self.settings.demo
        metres = self.routes.send_to(
            identifier, goal, speed_ms=demo.errand_speed_kmh / 3.6, dwell_s=demo.dwell_s
        )
        self.routed[incident_id] = shift
        if metres is not None:
            log.info(
                "demo vehicle %s drives to incident #%s (%.1f km)",
                identifier,
                incident_id,
                metres / 1000,
            )

    async def take(self, conn: AsyncConnection[Any], incident_id: int) -> None:
        """Assign the best-ranked demo vehicle to a call, as a dispatcher would on the console:
        when the level's candidates hold none (at the grid level, its grid worker), escalate —
        the console's "widen the search" — and rank again, up to the county."""
        try:
            while True:
                ranked = await candidates_for(
                    conn, DEMO_CENTRE, incident_id, self.settings.dispatch
                )
                ours = [c for c in ranked["candidates"] if c.get("device_id") in self.devices]
                if ours:
                    break
                await escalate(conn, DEMO_CENTRE, incident_id)  # 409 at the top: not taken
            await assign(
                conn,
                DEMO_CENTRE,
                incident_id,
                AssignIn(device_id=int(ours[0]["device_id"])),
                self.settings.dispatch,
            )
        except DomainError as exc:  # nobody up to the county, taken meanwhile, just got busy
            log.info("demo call #%s not taken: %s", incident_id, exc)
            self.retry_at[incident_id] = time.monotonic() + RETRY_S
            return
        log.info(
            "demo centre assigns incident #%s (%s level) to %s",
            incident_id,
            ranked["escalation"],
            self.devices[int(ours[0]["device_id"])],
        )


async def errands(settings: Settings, url: str, routes: Routes, identifiers: list[str]) -> None:
    """Every few seconds, ``Errands.step`` (a failed step is logged and tried again)."""
    async with await AsyncConnection.connect(url, autocommit=True) as conn:
        rows = await (
            await conn.execute(
                "SELECT id, identifier FROM device WHERE identifier = ANY(%s)", (identifiers,)
            )
        ).fetchall()
    work = Errands(settings, routes, {int(r[0]): str(r[1]) for r in rows})
    pause = min(5.0, settings.demo.interval_s)
    while True:
        try:
            async with await AsyncConnection.connect(url, autocommit=True) as conn:
                while True:
                    await work.step(conn)
                    await asyncio.sleep(pause)
        except (OSError, psycopg.Error, DomainError) as exc:
            log.warning("demo errands: %s; trying again", exc)
            await asyncio.sleep(pause)
