"""A simulated fleet over JT/T 808: what ``gridpatrol simulate --protocol jt808`` runs.

Identifier mapping. 808 terminals are named by phone-number-like digits, while simulated
vehicles are devices ``sim-<village>-<n>``. ``assign_phones`` gives each such device a
``jt808_phone`` (unless it has one): ``14`` followed by its ``device.id`` zero-padded to 10
digits — 12 digits, so it fits a 2013 header, unique by construction, stable across runs. The
terminal registers with that phone (0x0100, the device is bound to it, so it is accepted), gets
its auth code and authenticates; the fixes are then stored under the device's identifier. A new
run's terminals hold no auth code, and the server refuses to register again a terminal heard from
within ``REREGISTER_QUIET_S`` (the last run's): so ``assign_phones``, acting as the operator,
also resets the simulated devices' registrations (``gridpatrol jt808 reset``, one audit entry).

Sending: one terminal (one TCP connection) per vehicle, fixes in time order; a location is
(re)sent until acknowledged with result 0, as a terminal keeps unacknowledged reports. Paced
(``speedup`` > 0) terminals send each fix as a 0x0200 when its time comes and heartbeat (0x0002)
through long gaps; flat out they send 0x0704 batches (a terminal with a backlog, 盲区补报).
"""

from __future__ import annotations

import asyncio
import itertools
import math
import random
import time
from datetime import UTC, datetime
from typing import Any, Final

from psycopg import AsyncConnection

from api import audit
from api.auth import SYSTEM
from api.progress import NullProgress, Progress, Task
from api.protocols.jt808.header import Version
from api.protocols.jt808.location import Location
from api.protocols.jt808.messages import ReplyResult
from api.protocols.jt808.terminal import Terminal, TerminalError
from api.simulate import SendReport
from gis.simulation import FleetTracks

PHONE_PREFIX: Final = "14"
BATCH_FLAT_OUT: Final = 20  # reports per 0x0704 when sending flat out (fits one frame)
HEARTBEAT_S: Final = 30.0
MAX_SPEED_MS: Final = 0xFFFF / 36  # the wire's WORD of 0.1 km/h


async def assign_phones(conn: AsyncConnection[Any], identifiers: list[str]) -> list[str]:
    """The 808 phone of each device, assigning ``14`` + zero-padded id where none is set.

    Parameters
    ----------
    conn : AsyncConnection
        An autocommit connection.
    identifiers : list of str
        Device identifiers (registered already).

    Returns
    -------
    list of str
        The normalised phone of each identifier, in order.

    Raises
    ------
    ValueError
        When an identifier is not a registered device.

    Notes
    -----
    Earlier terminal registrations of these devices are reset (see the module docstring).
    """
    await conn.execute(
        "UPDATE device SET jt808_phone = %s || lpad(id::text, 10, '0'), updated_at = now() "
        "WHERE identifier = ANY(%s) AND jt808_phone IS NULL",
        (PHONE_PREFIX, identifiers),
    )
    rows = await (
        await conn.execute(
            "SELECT identifier, jt808_phone FROM device WHERE identifier = ANY(%s)", (identifiers,)
        )
    ).fetchall()
    phones = dict(rows)
    missing = [i for i in identifiers if i not in phones]
    if missing:
        raise ValueError(f"not registered: {', '.join(missing[:5])}")
    async with conn.transaction():
        cur = await conn.execute(
            "UPDATE device SET jt808_auth_hash = NULL, jt808_registered_at = NULL, "
            "jt808_manufacturer = NULL, jt808_model = NULL, jt808_terminal_id = NULL, "
            "updated_at = now() WHERE identifier = ANY(%s) AND jt808_auth_hash IS NOT NULL "
            "RETURNING id",
            (identifiers,),
        )
        reset = [row[0] for row in await cur.fetchall()]
        if reset:
            await audit.record(
                conn,
                SYSTEM,
                "jt808.reset",
                object_type="device",
                detail={"simulator": True, "devices": len(reset), "first_ids": reset[:20]},
            )
    return [phones[i] for i in identifiers]


def location_of(tracks: FleetTracks, k: int) -> Location:
    """The 0x0200 report a terminal sends for fix ``k`` (whole seconds, as on the wire).

    Parameters
    ----------
    tracks : FleetTracks
        The fleet's fixes.
    k : int
        Row index.

    Returns
    -------
    Location
        Positioned, ACC on, 12 satellites, signal 25; missing speed/course sent as 0.
    """
    speed = float(tracks.speed[k])
    course = float(tracks.course[k])
    return Location(
        alarm=0,
        status=0b11,
        latitude=round(float(tracks.lat[k]), 6),
        longitude=round(float(tracks.lon[k]), 6),
        altitude=0,
        speed_ms=min(max(speed, 0.0), MAX_SPEED_MS) if math.isfinite(speed) else 0.0,
        direction=round(course) % 360 if math.isfinite(course) else 0,
        time=datetime.fromtimestamp(int(tracks.time_us[k]) // 1_000_000, UTC),
        signal_strength=25,
        satellites=12,
    )


async def _login(terminal: Terminal, report: SendReport, max_retries: int) -> None:
    for attempt in range(max_retries + 1):
        try:
            await terminal.close()
            await terminal.login()
            return
        except (TerminalError, OSError):
            if attempt == max_retries:
                raise
            report.retries += 1
            await asyncio.sleep(min(0.2 * 2**attempt, 5.0))


async def _wait(terminal: Terminal, until: float) -> None:
    """Sleep until ``until`` (loop time), heartbeating through long gaps."""
    loop = asyncio.get_running_loop()
    while (remaining := until - loop.time()) > 0:
        await asyncio.sleep(min(remaining, HEARTBEAT_S))
        if until - loop.time() > 0:
            await terminal.heartbeat()


async def _vehicle(
    terminal: Terminal,
    tracks: FleetTracks,
    rows: range,
    *,
    clock: tuple[float, int, float],
    batch: int,
    broken_every: int,
    report: SendReport,
    task: Task,
    max_retries: int,
) -> None:
    wall0, sim0, speedup = clock
    rng = random.Random(terminal.phone)  # noqa: S311 - simulation, not secrets
    try:
        await _login(terminal, report, max_retries)
    except (TerminalError, OSError):
        report.answers["login failed"] += len(rows)
        report.sent += len(rows)
        task.advance(len(rows))
        return
    for number, start in enumerate(range(rows.start, rows.stop, batch)):
        chunk = range(start, min(start + batch, rows.stop))
        if speedup > 0:
            await _wait(terminal, wall0 + (int(tracks.time_us[chunk[-1]]) - sim0) / 1e6 / speedup)
        reports = [location_of(tracks, k) for k in chunk]
        for attempt in range(max_retries + 1):
            try:
                if broken_every and number % broken_every == broken_every - 1 and not attempt:
                    report.answers["broken frames sent"] += 1
                    terminal.send_broken(rng=rng)
                if len(reports) == 1:
                    result = await terminal.send_location(reports[0])
                else:
                    result = await terminal.send_batch(reports)
            except (TerminalError, OSError):
                result = None
            if result == ReplyResult.SUCCESS:
                report.answers["acknowledged"] += len(reports)
                break
            if attempt == max_retries:
                report.answers["gave up"] += len(reports)
                break
            report.retries += 1
            await asyncio.sleep(min(0.2 * 2**attempt, 5.0))
            if result is None:
                try:
                    await _login(terminal, report, max_retries)
                except (TerminalError, OSError):
                    continue
        report.sent += len(reports)
        task.advance(len(reports))
    await terminal.close()


async def send_jt808(
    tracks: FleetTracks,
    phones: list[str],
    *,
    host: str,
    port: int,
    speedup: float = 0.0,
    batch: int | None = None,
    version: Version = 2013,
    broken_every: int = 0,
    progress: Progress | None = None,
    max_retries: int = 20,
) -> SendReport:
    """Send every vehicle's fixes through its own simulated 808 terminal.

    Parameters
    ----------
    tracks : FleetTracks
        Fixes sorted by (vehicle, time).
    phones : list of str
        The terminal phone of each vehicle index (``assign_phones``).
    host, port : str, int
        The JT/T 808 server.
    speedup : float, default 0
        Pace against the simulated clock (1 = real time); 0 sends as fast as acknowledged.
    batch : int, optional
        Reports per message: 1 sends 0x0200, more sends 0x0704. Default 1 when paced, else 20.
    version : {2013, 2019}, default 2013
        Edition the terminals speak.
    broken_every : int, default 0
        Before every n-th message send one deliberately broken frame (0 = never).
    progress : Progress, optional
        Reports fixes sent.
    max_retries : int, default 20
        Attempts per message (and per login) before giving up.

    Returns
    -------
    SendReport
        ``answers``: ``acknowledged`` (stored, duplicate or quarantined), ``gave up``,
        ``login failed``, ``broken frames sent``.
    """
    batch = batch or (1 if speedup > 0 else BATCH_FLAT_OUT)
    task = (progress or NullProgress()).task("模拟 JT/T 808", len(tracks))
    report = SendReport()
    loop = asyncio.get_running_loop()
    clock = (loop.time(), int(tracks.time_us.min()) if len(tracks) else 0, speedup)
    began = time.perf_counter()
    bounds = tracks.bounds()
    vehicles = [
        _vehicle(
            Terminal(phones[int(tracks.vehicle[a])], host=host, port=port, version=version),
            tracks,
            range(a, b),
            clock=clock,
            batch=batch,
            broken_every=broken_every,
            report=report,
            task=task,
            max_retries=max_retries,
        )
        for a, b in itertools.pairwise(bounds.tolist())
        if b > a
    ]
    await asyncio.gather(*vehicles)
    report.seconds = time.perf_counter() - began
    return report
