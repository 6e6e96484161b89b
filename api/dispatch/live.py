"""Live updates for the dispatcher console: one shared database poll fans incident and vehicle
changes out to every open stream, each cut to its subscriber's scope.

One poll per process (every ``live_poll_s``) whatever the number of streams: new rows of
``incident_event`` (every step of every incident writes one) name the incidents to resend,
``device_state.received_at`` the vehicles that reported. Each subscriber has a bounded queue; a
client too slow to drain it is dropped (its stream ends, the page reconnects and reloads).
The poll runs only while somebody listens.

Identity values commit out of order (a long transaction may commit an older id after a newer
one was read), so events are read from a floor 30 s behind the newest id seen, skipping ids
already sent; vehicles likewise from a few seconds before the previous poll, skipping fixes
already sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from psycopg import AsyncConnection, sql
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from api.auth import Principal
from api.dispatch.incidents import SELECT as INCIDENT_SELECT
from api.dispatch.locator import GridLocator
from api.errors import TooManyRequests, Unavailable
from api.scope import Scope
from api.settings import MapSettings

log = logging.getLogger("gridpatrol.live")

VEHICLES = sql.SQL(
    """
    SELECT s.device_id AS id, d.identifier, d.plate, d.name, d.home_village,
           v.name_zh AS village_name, s.status,
           round(s.lon::numeric, 6)::float8 AS lon, round(s.lat::numeric, 6)::float8 AS lat,
           round((s.speed * 3.6)::numeric, 1)::float8 AS speed,  -- km/h
           extract(epoch FROM s.fix_time)::float8 AS fix_time
      FROM device_state s JOIN device d ON d.id = s.device_id
      LEFT JOIN admin_area v ON v.code = d.home_village
     WHERE d.enabled AND {where}
     ORDER BY s.device_id LIMIT %(limit)s
    """
)
EVENTS = """
SELECT e.id, e.incident_id, e.kind, e.level, e.actor, e.detail,
       extract(epoch FROM e.at)::float8 AS at
  FROM incident_event e
 WHERE e.id > %(floor)s AND NOT (e.id = ANY(%(seen)s::bigint[]))
 ORDER BY e.id LIMIT 5000
"""
FLOOR_S = 30.0  # how far behind the newest event id the next poll reads
OVERLAP_S = 5.0  # vehicles: re-read fixes received this long before the previous poll
HEARTBEAT_S = 15.0


def vehicle_row(row: dict[str, Any]) -> dict[str, Any]:
    """A vehicle as the console gets it (compact keys: 2,000 of these fill a snapshot)."""
    return {
        "id": row["id"],
        "plate": row["plate"],
        "name": row["name"] or row["identifier"],
        "identifier": row["identifier"],
        "village": row["home_village"],
        "village_name": row["village_name"],
        "status": row["status"],
        "lon": row["lon"],
        "lat": row["lat"],
        "speed": row["speed"],
        "t": row["fix_time"],
        "grid": None,  # named by the process's grid index (api.dispatch.locator)
    }


def cut_grid(row: dict[str, Any], scope: Scope) -> dict[str, Any]:
    """The row without the grid it stands in when that grid is outside ``scope`` (a vehicle of
    the scope driving through another township names no grid of it)."""
    grid = row["grid"]
    if grid is None or scope.covers_grid(grid):
        return row
    return {**row, "grid": None}


async def vehicles(
    conn: AsyncConnection[Any],
    scope: Scope | None,
    locator: GridLocator | None,
    *,
    since: datetime | None = None,
    ids: list[int] | None = None,
    limit: int = 20_000,
) -> list[dict[str, Any]]:
    """Vehicles of ``scope`` (all of them when None), optionally only those that reported
    since ``since`` or are among ``ids``; the grid each is in named by ``locator`` (None: the
    caller names them, ``grid`` is None)."""
    parts: list[sql.Composable] = []
    params: dict[str, Any] = {"limit": limit}
    if scope is not None:
        parts.append(scope.where(sql.SQL("coalesce(d.home_village, '')")))
        params.update(scope.params())
    if since is not None or ids is not None:
        parts.append(sql.SQL("(s.received_at > %(since)s OR s.device_id = ANY(%(ids)s::int[]))"))
        params.update(since=since, ids=ids or [])
    where = sql.SQL(" AND ").join(parts) if parts else sql.SQL("TRUE")
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(VEHICLES.format(where=where), params)
        rows = [vehicle_row(r) for r in await cur.fetchall()]
    if locator is not None:
        await locator.name_grids(conn, rows)
    return rows if scope is None else [cut_grid(r, scope) for r in rows]


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return value


async def incidents_by_id(conn: AsyncConnection[Any], ids: list[int]) -> list[dict[str, Any]]:
    """Incident rows as the list shows them (no scope: the hub scopes each row per client)."""
    query = sql.SQL("{} WHERE i.id = ANY(%(ids)s::bigint[])").format(
        INCIDENT_SELECT.format(extra=sql.SQL(""))
    )
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, {"ids": ids})
        return [{k: _plain(v) for k, v in r.items()} for r in await cur.fetchall()]


@dataclass(eq=False)
class Subscriber:
    """One open stream: who listens, what they may see, what waits for them."""

    principal: Principal
    queue: asyncio.Queue[str | None]
    dropped: bool = False

    def sees_incident(self, row: dict[str, Any]) -> bool:
        scope = self.principal.scope
        area, grid = row.get("area_code"), row.get("grid_code")
        return (area is not None and scope.covers_area(area)) or (
            grid is not None and grid in scope.grids
        )

    def sees_vehicle(self, row: dict[str, Any]) -> bool:
        return self.principal.scope.covers_area(row.get("village") or "")


def frame(event: str, data: Any, *, event_id: int | None = None) -> str:
    """One Server-Sent Events message."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    body = json.dumps(data, ensure_ascii=False, separators=(",", ":"), default=str)
    return f"{head}event: {event}\ndata: {body}\n\n"


def process_hub(state: Any) -> LiveHub:
    """The process's hub on the app's ``state``, made on first use (it polls only while
    streams are open)."""
    if getattr(state, "live", None) is None:
        state.live = LiveHub(state.pool, state.settings.map)
    found: LiveHub = state.live
    return found


@dataclass
class LiveHub:
    """The shared poll and its subscribers (one per process, on ``app.state.live``)."""

    pool: AsyncConnectionPool
    settings: MapSettings
    subscribers: set[Subscriber] = field(default_factory=set)
    counters: dict[str, int] = field(
        default_factory=lambda: {"polls": 0, "dropped": 0, "refused": 0, "sent": 0}
    )
    _task: asyncio.Task[None] | None = None
    _floor: int | None = None
    _seen: set[int] = field(default_factory=set)
    _marks: deque[tuple[float, int]] = field(default_factory=deque)
    _since: datetime | None = None
    _sent_fix: dict[int, tuple[float, str]] = field(default_factory=dict)
    locator: GridLocator = field(default_factory=GridLocator)
    closing: bool = False
    _hooked: bool = False

    # ---- subscribers --------------------------------------------------------------------
    def subscribe(self, principal: Principal) -> Subscriber:
        """A new stream for ``principal``; 503 past the cap of streams, 429 past the user's."""
        if self.closing:
            raise Unavailable("the server is stopping", retry_after_s=5)
        if len(self.subscribers) >= self.settings.live_max_streams:
            self.counters["refused"] += 1
            raise Unavailable(
                f"too many live streams ({self.settings.live_max_streams}); try again later",
                retry_after_s=5,
            )
        mine = sum(1 for s in self.subscribers if s.principal.name == principal.name)
        if mine >= self.settings.live_streams_per_user:
            self.counters["refused"] += 1
            raise TooManyRequests(
                f"at most {self.settings.live_streams_per_user} live streams per user; "
                "close another console tab"
            )
        sub = Subscriber(principal, asyncio.Queue(maxsize=self.settings.live_queue))
        self._hook_exit()
        self.subscribers.add(sub)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="live-poll")
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        self.subscribers.discard(sub)

    def _offer(self, sub: Subscriber, message: str) -> None:
        if sub.dropped:
            return
        try:
            sub.queue.put_nowait(message)
            self.counters["sent"] += 1
        except asyncio.QueueFull:
            # too slow: end its stream (the page reconnects and reloads what it shows)
            sub.dropped = True
            self.counters["dropped"] += 1
            while not sub.queue.empty():
                sub.queue.get_nowait()
            sub.queue.put_nowait(None)
            self.subscribers.discard(sub)

    def close_all(self) -> None:
        """End every stream now (the server is stopping: uvicorn waits for open responses)."""
        self.closing = True
        for sub in list(self.subscribers):
            while not sub.queue.empty():
                sub.queue.get_nowait()
            sub.queue.put_nowait(None)
        self.subscribers.clear()

    def _hook_exit(self) -> None:
        """Close the streams when the process is asked to stop (SIGINT, SIGTERM), before the
        server's own handler waits for open responses to finish: a stream never does."""
        if self._hooked or threading.current_thread() is not threading.main_thread():
            return
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous = signal.getsignal(sig)
            if not callable(previous):
                continue

            def handler(signum: int, frame: Any, previous: Any = previous) -> None:
                loop.call_soon_threadsafe(self.close_all)
                previous(signum, frame)

            signal.signal(sig, handler)
        self._hooked = True

    # ---- the poll -------------------------------------------------------------------------
    async def stop(self) -> None:
        self.close_all()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while self.subscribers:
            started = time.monotonic()
            try:
                async with self.pool.connection() as conn:
                    await self.poll(conn)
            except Exception:  # the next poll tries again; streams stay open
                log.exception("live poll failed")
            elapsed = time.monotonic() - started
            await asyncio.sleep(max(0.05, self.settings.live_poll_s - elapsed))
        self._floor = None  # nobody listened for a while: start afresh with the next stream
        self._sent_fix.clear()

    async def poll(self, conn: AsyncConnection[Any]) -> None:
        """Read what changed since the last poll and offer it to every subscriber in scope."""
        self.counters["polls"] += 1
        now_row = await (await conn.execute("SELECT now()")).fetchone()
        assert now_row is not None  # noqa: S101
        db_now: datetime = now_row[0]
        if self._floor is None:
            row = await (
                await conn.execute("SELECT coalesce(max(id), 0) FROM incident_event")
            ).fetchone()
            self._floor = int(row[0]) if row else 0
            self._since = db_now
            return
        touched = await self._incidents(conn)
        since = self._since
        self._since = db_now
        assert since is not None  # noqa: S101 - set by the first poll
        rows = await vehicles(
            conn,
            None,
            None,  # named below, only those not sent yet
            since=since - timedelta(seconds=OVERLAP_S),
            ids=sorted(touched),
        )
        fresh = []
        for v in rows:
            key = (v["t"], v["status"])
            if self._sent_fix.get(v["id"]) != key:
                self._sent_fix[v["id"]] = key
                fresh.append(v)
        if fresh:
            await self.locator.name_grids(conn, fresh)
            for sub in list(self.subscribers):
                scope = sub.principal.scope
                mine = [cut_grid(v, scope) for v in fresh if sub.sees_vehicle(v)]
                if mine:
                    self._offer(
                        sub, frame("vehicles", {"now": db_now.timestamp(), "vehicles": mine})
                    )

    async def _incidents(self, conn: AsyncConnection[Any]) -> set[int]:
        """Offer the incidents with new events; the devices they touched."""
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(EVENTS, {"floor": self._floor, "seen": sorted(self._seen)})
            events = await cur.fetchall()
        touched_devices: set[int] = set()
        if events:
            self._seen.update(e["id"] for e in events)
            by_incident: dict[int, list[dict[str, Any]]] = {}
            for e in events:
                by_incident.setdefault(int(e["incident_id"]), []).append(
                    {k: e[k] for k in ("id", "kind", "level", "actor", "detail", "at")}
                )
            for row in await incidents_by_id(conn, sorted(by_incident)):
                if row["device_id"] is not None:
                    touched_devices.add(int(row["device_id"]))
                steps = by_incident[int(row["id"])]
                message = frame(
                    "incident",
                    {"incident": row, "events": steps},
                    event_id=max(s["id"] for s in steps),
                )
                for sub in list(self.subscribers):
                    if sub.sees_incident(row):
                        self._offer(sub, message)
            for steps in by_incident.values():
                touched_devices.update(
                    int(s["detail"]["device_id"])
                    for s in steps
                    if isinstance(s["detail"], dict) and s["detail"].get("device_id")
                )
        self._advance_floor(max((e["id"] for e in events), default=None))
        return touched_devices

    def _advance_floor(self, newest: int | None) -> None:
        now = time.monotonic()
        if newest is not None:
            self._marks.append((now, newest))
        while self._marks and self._marks[0][0] < now - FLOOR_S:
            _, mark = self._marks.popleft()
            self._floor = max(self._floor or 0, mark)
        floor = self._floor or 0
        self._seen = {i for i in self._seen if i > floor}
