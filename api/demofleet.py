"""The living demo: a simulated 草原110 fleet that reports in real time while ``make run`` serves.

``gridpatrol run`` starts ``python -m api.demofleet`` beside the roles (the supervisor restarts it
if it dies; ``GRIDPATROL_DEMO_VEHICLES=0`` switches it off). It

1. once per database (``app_meta`` key ``demo.history``), stores ``HISTORY_DAYS`` days of past
   patrol shifts of the fleet through the batch ingest path, so coverage, ranking and reports have
   content at once (the worker role's coverage updater takes them from there);
2. then, shift after shift, drives the same vehicles live: half of them as OsmAnd phones (HTTP,
   with their device keys), half as JT/T 808 terminals (TCP, registered and authenticated), each
   fix sent when its time comes, through the ingest processes like any real device;
3. beside them, demo calls at alarm phones, and errands: an assigned demo vehicle drives to its
   incident (``api.demo_calls``).

Two vehicles per village (the 草原110 rule) from the first villages under ``AREA`` in code order;
the default size keeps the two-core machine responsive (a fix every ``INTERVAL_S`` per vehicle).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import numpy as np
from psycopg import AsyncConnection

from api import simulate as sim
from api.db import database_url
from api.demo_calls import Routes, calls, errands
from api.progress import NullProgress
from api.protocols.jt808.fleet import assign_phones, send_jt808
from api.roles import READY
from api.roles.process import die_with_supervisor
from api.settings import DemoSettings, Settings, get_settings
from gis.simulation import FleetTracks

log = logging.getLogger("gridpatrol.demofleet")
HISTORY_KEY = "demo.history"
WAIT_FOR_SERVERS_S = 300.0
RESTART_S = 5.0  # a failed side task (calls, errands) starts again after this, then longer


def halves(fleet: sim.Fleet) -> tuple[sim.Fleet, sim.Fleet]:
    """The fleet's OsmAnd half (even positions) and JT/T 808 half (odd): both vehicles of a
    village never speak the same protocol."""
    return (
        sim.Fleet(fleet.identifiers[::2], fleet.villages[::2], fleet.areas[::2]),
        sim.Fleet(fleet.identifiers[1::2], fleet.villages[1::2], fleet.areas[1::2]),
    )


def history_shifts(now_us: int, days: int, shift_hours: float) -> list[int]:
    """The end (µs) of one shift a day over the ``days`` before ``now_us``, oldest first; each
    ends at this clock time of its day, so the last one ends a day before the live shift."""
    day_us = 86_400 * 1_000_000
    return [now_us - d * day_us for d in range(days, 0, -1) if shift_hours > 0]


async def store_history(conn: AsyncConnection[Any], settings: Settings, fleet: sim.Fleet) -> int:
    """The past shifts through the batch ingest path, once; returns the fixes stored (0 when
    already done)."""
    demo = settings.demo
    row = await (
        await conn.execute("SELECT value FROM app_meta WHERE key = %s", (HISTORY_KEY,))
    ).fetchone()
    if row is not None or demo.history_days == 0:
        return 0
    stored = 0
    now_us = int(time.time() * 1e6)
    for day, end_us in enumerate(history_shifts(now_us, demo.history_days, demo.shift_hours)):
        tracks = sim.fleet_tracks(
            fleet,
            hours=demo.shift_hours,
            interval_s=demo.history_interval_s,
            end_us=end_us,
            seed=demo.seed + 1000 + day,
            gaps_per_h=demo.gaps_per_h,
        )
        # the truth, declared WGS-84: whatever datum the live shifts give each device
        truth = replace(tracks, lat=tracks.true_lat, lon=tracks.true_lon)
        report = await sim.send_batch(
            conn,
            settings,
            sim.as_batch(truth, fleet.identifiers),
            progress=NullProgress(),
            source_crs="wgs84",
        )
        stored += int(report.answers.get("stored", 0))
        log.info("demo history: day %d of %d, %d fixes", day + 1, demo.history_days, len(tracks))
    await conn.execute(
        "INSERT INTO app_meta (key, value) VALUES (%s, %s) ON CONFLICT (key) DO NOTHING",
        (HISTORY_KEY, str(demo.history_days)),
    )
    return stored


def wait_for_port(host: str, port: int, timeout_s: float) -> None:
    """Until the protocol server accepts connections (the roles start beside this process)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((host, port), timeout=2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


async def live_shift(
    conn: AsyncConnection[Any],
    settings: Settings,
    fleet: sim.Fleet,
    shift: int,
    routes: Routes | None = None,
) -> list[str]:
    """One shift of ``SHIFT_HOURS`` starting now, each fix sent on time: OsmAnd and JT/T 808
    halves side by side; ``routes`` learns the tracks, so errands can change them ahead of the
    senders. Returns the two reports' lines."""
    demo = settings.demo
    osmand_fleet, jt808_fleet = halves(fleet)
    end_us = int(time.time() * 1e6) + int(demo.shift_hours * 3600e6)

    async def tracks_of(half: sim.Fleet, seed: int) -> tuple[FleetTracks, dict[str, str]]:
        """The half's shift, its devices registered in the datum each terminal speaks."""
        tracks = sim.fleet_tracks(
            half,
            hours=demo.shift_hours,
            interval_s=demo.interval_s,
            end_us=end_us,
            seed=seed,
            gaps_per_h=demo.gaps_per_h,
        )
        if routes is not None:
            routes.follow(tracks, half.identifiers)
        return tracks, await sim.register_fleet(conn, half, tracks.gcj02)

    sends = []
    if osmand_fleet.identifiers and settings.osmand.enabled:
        tracks, keys = await tracks_of(osmand_fleet, demo.seed + 2 * shift)
        sends.append(
            sim.send_osmand(
                tracks,
                osmand_fleet.identifiers,
                host=_local(settings.osmand.host),
                port=settings.osmand.port,
                speedup=1.0,
                keys=keys,
            )
        )
    if jt808_fleet.identifiers and settings.jt808.enabled:
        tracks, _ = await tracks_of(jt808_fleet, demo.seed + 2 * shift + 1)
        sends.append(
            send_jt808(
                tracks,
                await assign_phones(conn, jt808_fleet.identifiers),
                host=_local(settings.jt808.host),
                port=settings.jt808.port,
                speedup=1.0,
            )
        )
    reports = await asyncio.gather(*sends)
    return [line for report in reports for line in report.lines()]


def _local(host: str) -> str:
    """Where to reach a server that listens on ``host`` (all addresses → this host)."""
    return "127.0.0.1" if host in ("", "0.0.0.0", "::") else host  # noqa: S104 - compared only


async def run(settings: Settings) -> None:
    """Live shifts until stopped; the history, once, beside the first shift (the vehicles move
    on the map at once, the past week fills in meanwhile)."""
    demo: DemoSettings = settings.demo
    url = database_url(settings)
    async with await AsyncConnection.connect(url, autocommit=True) as conn:
        fleet = await sim.load_fleet(conn, demo.vehicles, area_prefix=demo.area)
        await sim.register_fleet(conn, fleet, np.zeros(len(fleet.identifiers), dtype=bool))
    history = asyncio.create_task(_history(settings, url, fleet), name="demo history")
    history.add_done_callback(_said)
    kept = []
    if demo.incidents_per_hour > 0:
        kept.append(asyncio.create_task(kept_running("demo calls", lambda: calls(settings, url))))
    routes = Routes()
    kept.append(
        asyncio.create_task(
            kept_running("demo errands", lambda: errands(settings, url, routes, fleet.identifiers))
        )
    )
    await _live(settings, url, fleet, routes)


def _said(task: asyncio.Task[None]) -> None:
    """The history failed: logged (the live fleet goes on; the next start tries again)."""
    if not task.cancelled() and task.exception() is not None:
        log.error("%s failed: %s", task.get_name(), task.exception())


async def kept_running(
    name: str,
    start: Callable[[], Awaitable[None]],
    *,
    first_pause_s: float = RESTART_S,
    most_pause_s: float = 60.0,
) -> None:
    """Run a side task of the living demo (its calls, its errands) for good: one that fails is
    logged and started again after a pause that doubles up to ``most_pause_s``, while the live
    fleet goes on. One that returns is done."""
    pause = first_pause_s
    while True:
        try:
            await start()
        except Exception:  # anything: a dead side task must not silently end the demo's calls
            log.exception("%s failed; starting it again in %g s", name, pause)
        else:
            return
        await asyncio.sleep(pause)
        pause = min(pause * 2, most_pause_s)


async def _history(settings: Settings, url: str, fleet: sim.Fleet) -> None:
    async with await AsyncConnection.connect(url, autocommit=True) as conn:
        stored = await store_history(conn, settings, fleet)
    if stored:
        log.info("demo history: %d fixes of %d vehicles stored", stored, len(fleet.identifiers))


async def _live(settings: Settings, url: str, fleet: sim.Fleet, routes: Routes) -> None:
    demo = settings.demo
    for host, port, on in (
        (settings.osmand.host, settings.osmand.port, settings.osmand.enabled),
        (settings.jt808.host, settings.jt808.port, settings.jt808.enabled),
    ):
        if on:
            await asyncio.to_thread(wait_for_port, _local(host), port, WAIT_FOR_SERVERS_S)
    log.info(
        "demo fleet: %d vehicles live (OsmAnd and JT/T 808 halves), a fix every %g s",
        len(fleet.identifiers),
        demo.interval_s,
    )
    shift = 0
    while True:
        async with await AsyncConnection.connect(url, autocommit=True) as conn:
            for line in await live_shift(conn, settings, fleet, shift, routes):
                log.info("demo shift %d: %s", shift + 1, line)
        shift += 1


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    settings = get_settings()
    if settings.demo.vehicles == 0:
        return
    # the supervisor counts a child up once it says so; the demo's own start-up (history) may
    # take a while and must not hold the server's start
    die_with_supervisor()
    sys.stdout.write(f"{READY}: demo fleet\n")
    sys.stdout.flush()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run(settings))


if __name__ == "__main__":
    main()
