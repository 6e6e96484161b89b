"""Simulated devices for the fault tests: OsmAnd phones and JT/T 808 terminals that remember
which fixes the server acknowledged and resend the others until it does, as real devices do.

Each device sends ``fixes`` fixes one second apart (simulated time, unique per device), one
every ``pace_s`` of wall time. An OsmAnd fix counts as acknowledged on HTTP 200; an 808 fix on
0x8001 result 0 (every fifth 808 message is a 0x0704 batch of three). Anything else — 503, a
failure result, a reset connection, no answer — and the device waits a moment and resends (on a
new connection after a connection error; 808 terminals log in again). ``answers`` counts what
the devices heard, ``acked`` holds (identifier, unix second) of every acknowledged fix.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg

from api.protocols.jt808.location import Location
from api.protocols.jt808.messages import ReplyResult
from api.protocols.jt808.terminal import Terminal, TerminalError
from api.simulate import http_exchange

LAT, LON = 43.93, 116.07  # 锡林浩特
RETRY_S = 0.2
REPLY_TIMEOUT_S = 10.0
PER_BATCH = 3


def osmand_ids(n: int, tag: str) -> list[str]:
    return [f"{tag}-osm-{i:03d}" for i in range(n)]


def phones(n: int, serial: int) -> list[str]:
    return [f"15{serial:02d}{i:08d}" for i in range(n)]


def register(url: str, osmand: list[str], jt808: list[str]) -> None:
    """Devices for both kinds; 808 terminals are known by their phone (= identifier)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO device (identifier, kind) SELECT i, 'vehicle' FROM unnest(%s::text[]) i",
            (osmand,),
        )
        conn.execute(
            "INSERT INTO device (identifier, kind, jt808_phone) "
            "SELECT p, 'vehicle', p FROM unnest(%s::text[]) p",
            (jt808,),
        )


@dataclass
class Fleet:
    """See the module docstring. ``t0`` is the unix second of every device's first fix."""

    osmand_port: int
    jt808_port: int
    osmand: list[str]
    jt808: list[str]
    fixes: int
    pace_s: float = 0.1
    t0: int = field(default_factory=lambda: int(time.time()) - 7200)
    acked: set[tuple[str, int]] = field(default_factory=set)
    answers: Counter[str] = field(default_factory=Counter)
    done: int = 0

    @property
    def identifiers(self) -> list[str]:
        return self.osmand + self.jt808

    @property
    def sent(self) -> set[tuple[str, int]]:
        return {(i, self.t0 + k) for i in self.identifiers for k in range(self.fixes)}

    async def run(self) -> None:
        """Every device until all its fixes are acknowledged."""
        await asyncio.gather(
            *(self._osmand(i, n) for n, i in enumerate(self.osmand)),
            *(self._jt808(p, n) for n, p in enumerate(self.jt808)),
        )

    def _position(self, n: int, k: int) -> tuple[float, float]:
        return LAT + (n % 10) * 0.01, LON + (n // 10) * 0.01 + k * 1e-5  # ≈ 1 m/s east

    # ---- OsmAnd --------------------------------------------------------------------------------
    async def _osmand(self, identifier: str, n: int) -> None:
        link: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        for k in range(self.fixes):
            lat, lon = self._position(n, k)
            query = f"id={identifier}&lat={lat:.6f}&lon={lon:.6f}&timestamp={self.t0 + k}&speed=2"
            request = f"GET /?{query} HTTP/1.1\r\nHost: gp\r\n\r\n".encode()
            while True:
                try:
                    if link is None:
                        link = await asyncio.open_connection("127.0.0.1", self.osmand_port)
                    status, headers = await asyncio.wait_for(
                        http_exchange(*link, request), REPLY_TIMEOUT_S
                    )
                except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError):
                    self.answers["osmand connection error"] += 1
                    link = _close(link)
                    await asyncio.sleep(RETRY_S)
                    continue
                self.answers[f"osmand {status}"] += 1
                if status == 503 and "retry-after" not in headers:
                    self.answers["osmand 503 without Retry-After"] += 1
                if status == 200:
                    self.acked.add((identifier, self.t0 + k))
                    break
                await asyncio.sleep(RETRY_S)
            await asyncio.sleep(self.pace_s)
        _close(link)
        self.done += 1

    # ---- JT/T 808 ------------------------------------------------------------------------------
    async def _jt808(self, phone: str, n: int) -> None:
        terminal = Terminal(phone, host="127.0.0.1", port=self.jt808_port)
        terminal.reply_timeout = REPLY_TIMEOUT_S
        online = False
        k = message = 0
        while k < self.fixes:
            size = PER_BATCH if message % 5 == 4 else 1
            chunk = range(k, min(k + size, self.fixes))
            reports = [self._location(n, j) for j in chunk]
            while True:
                try:
                    if terminal.closed.is_set():  # the platform hung up: log in again
                        online = False
                    if not online:
                        await terminal.close()
                        await terminal.login()
                        online = True
                    if len(reports) == 1:
                        result = await terminal.send_location(reports[0])
                    else:
                        result = await terminal.send_batch(reports)
                except (TerminalError, OSError):
                    self.answers["jt808 connection error"] += 1
                    online = False
                    await asyncio.sleep(RETRY_S)
                    continue
                self.answers[f"jt808 result {int(result)}"] += 1
                if result == ReplyResult.SUCCESS:
                    self.acked.update((phone, self.t0 + j) for j in chunk)
                    break
                await asyncio.sleep(RETRY_S)
            k, message = chunk.stop, message + 1
            await asyncio.sleep(self.pace_s * len(chunk))
        await terminal.close()
        self.done += 1

    def _location(self, n: int, k: int) -> Location:
        lat, lon = self._position(n, k)
        return Location(
            alarm=0,
            status=0b11,
            latitude=round(lat, 6),
            longitude=round(lon, 6),
            altitude=1000,
            speed_ms=1.0,
            direction=90,
            time=datetime.fromtimestamp(self.t0 + k, UTC),
            signal_strength=25,
            satellites=12,
        )


def _close(link: tuple[Any, asyncio.StreamWriter] | None) -> None:
    if link is not None:
        with contextlib.suppress(Exception):
            link[1].close()


async def when(condition: Callable[[], bool], *, within: float, what: str) -> None:
    """Wait (polling) until ``condition()`` holds; TimeoutError naming ``what`` otherwise."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"not within {within:.0f}s: {what}")
        await asyncio.sleep(0.05)


async def bounded(task: Awaitable[Any], *, within: float, what: str) -> Any:
    try:
        return await asyncio.wait_for(task, within)
    except TimeoutError:
        raise TimeoutError(f"not within {within:.0f}s: {what}") from None
