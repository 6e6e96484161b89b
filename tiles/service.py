"""Rendering tiles: resolve a layer's query parameters, run its one statement, tag the bytes.

``TileState`` (one per app, on ``app.state.tiles``) remembers for a few seconds what every
tile would otherwise ask again: the active layout, and that a (layout, window) has its
``grid_visit`` rows built (``api.coverage.materialize.ensure``, which scans ``device_day``).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from psycopg import AsyncConnection

from api.admin_areas import LEVELS
from api.coverage import materialize
from api.coverage.metrics import Window
from api.coverage.update import CoverageUpdater
from api.errors import NotFound, Unprocessable
from api.layouts import active_layout
from api.scope import Scope
from api.settings import Settings
from api.staff import ALERT_KINDS
from gis.units import china_day_bounds, china_today
from tiles.layers import Layer
from tiles.sql import tile_params, tile_query
from tiles.tilemath import IDENTITY, Tile, gcj02_affine

MEMO_S = 30.0


@dataclass(frozen=True)
class TileQuery:
    """Query parameters a tile or TileJSON request may carry (each layer reads its own)."""

    crs: str = "wgs84"
    level: str | None = None
    layout: int | None = None
    first: date | None = None
    last: date | None = None
    kind: str | None = None
    device: int | None = None
    day: date | None = None

    def query_string_items(self) -> list[tuple[str, str]]:
        """The parameters that were given, as URL query items (for TileJSON tile URLs)."""
        names = {"first": "from", "last": "to"}
        items = []
        for key in ("crs", "level", "layout", "first", "last", "kind", "device", "day"):
            value = getattr(self, key)
            if value is not None and not (key == "crs" and value == "wgs84"):
                items.append((names.get(key, key), str(value)))
        return items


@dataclass
class TileState:
    """Short-lived memos shared by the tile requests of one app."""

    ensured: dict[tuple[int, date, date], float] = field(default_factory=dict)
    active: tuple[float, int | None] = (0.0, None)

    async def active_layout(self, conn: AsyncConnection[Any]) -> int | None:
        now = time.monotonic()
        if self.active[0] <= now:
            self.active = (now + MEMO_S, await active_layout(conn))
        return self.active[1]

    async def ensure_window(
        self, conn: AsyncConnection[Any], updater: CoverageUpdater, layout: int, window: Window
    ) -> None:
        key = (layout, window.first, window.last)
        now = time.monotonic()
        if self.ensured.get(key, 0.0) > now:
            return
        await materialize.ensure(conn, updater, layout, window.first, window.last)
        if len(self.ensured) > 10_000:
            self.ensured.clear()
        self.ensured[key] = now + MEMO_S


async def layer_params(
    conn: AsyncConnection[Any],
    state: TileState,
    updater: CoverageUpdater,
    settings: Settings,
    layer: Layer,
    query: TileQuery,
) -> dict[str, Any]:
    """The layer's own statement parameters, validated (422) and defaulted.

    Raises
    ------
    Unprocessable
        For a value the layer cannot take (an unknown level or kind, a bad window, no device).
    NotFound
        For a layout that does not exist (or no active layout when none is named).
    """
    if layer.name == "admin_areas":
        if query.level is not None and query.level not in LEVELS:
            raise Unprocessable(f"level must be one of {', '.join(LEVELS)}", field="level")
        return {"level": query.level}
    if layer.name == "alert_points":
        if query.kind is not None and query.kind not in ALERT_KINDS:
            raise Unprocessable(f"kind must be one of {', '.join(ALERT_KINDS)}", field="kind")
        return {"kind": query.kind}
    if layer.name == "vehicles":
        return {
            "fresh_s": settings.map.vehicle_fresh_s,
            "offline_s": settings.map.vehicle_offline_s,
        }
    if layer.name == "tracks":
        if query.device is None:
            raise Unprocessable("the tracks layer needs ?device=", field="device")
        t0, t1 = china_day_bounds(query.day or china_today())
        return {"device": query.device, "t0": t0, "t1": t1, "gap_s": settings.coverage.max_gap_s}
    return await grid_params(conn, state, updater, settings, query)


async def grid_params(
    conn: AsyncConnection[Any],
    state: TileState,
    updater: CoverageUpdater,
    settings: Settings,
    query: TileQuery,
) -> dict[str, Any]:
    """Layout and coverage window of the grids layer; builds missing ``grid_visit`` days."""
    layout = query.layout or await state.active_layout(conn)
    if layout is None:
        raise NotFound("no active layout; name one with ?layout=")
    row = await (
        await conn.execute("SELECT 1 FROM grid_layout WHERE id = %s", (layout,))
    ).fetchone()
    if row is None:
        raise NotFound(f"no layout {layout}")
    last = query.last or china_today()
    window = Window.check(
        query.first or last - timedelta(days=6),
        last,
        max_days=settings.coverage.max_window_days,
    )
    await state.ensure_window(conn, updater, layout, window)
    blind_from = max(
        window.first, window.last - timedelta(days=settings.coverage.blind_spot_days - 1)
    )
    return {
        "layout": layout,
        "days": [window.first + timedelta(days=i) for i in range(window.days)],
        "b0": blind_from,
        "gap": int(settings.coverage.visit_gap_s * 1e6),
    }


async def render(
    conn: AsyncConnection[Any],
    layer: Layer,
    tile: Tile,
    scope: Scope,
    params: dict[str, Any],
    *,
    crs: str,
) -> bytes:
    """The tile's MVT bytes (empty below the layer's minzoom or where nothing is in scope)."""
    if tile.z < layer.minzoom:
        return b""
    affine = gcj02_affine(tile) if crs == "gcj02" else IDENTITY
    query = tile_query(layer, scope, gcj02=affine is not IDENTITY)
    values = {**tile_params(layer, tile, affine), **scope.params(), **params}
    row = await (await conn.execute(query, values, prepare=True)).fetchone()
    return bytes(row[0]) if row and row[0] is not None else b""


def etag(body: bytes) -> str:
    """A strong validator of the tile's bytes."""
    return '"' + hashlib.blake2b(body, digest_size=16).hexdigest() + '"'


def not_modified(if_none_match: str | None, tag: str) -> bool:
    """True when ``If-None-Match`` names ``tag`` (weak comparison, as RFC 9110 asks for GET)."""
    if not if_none_match:
        return False
    if if_none_match.strip() == "*":
        return True
    tags = {t.strip().removeprefix("W/") for t in if_none_match.split(",")}
    return tag in tags
