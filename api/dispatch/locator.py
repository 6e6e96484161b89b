"""The grid each vehicle stands in, answered in memory (``gis.locate.GridIndex``).

The console shows every vehicle's grid: a snapshot of 2,000 vehicles, and every second the few
hundred that reported. Asked of the database one vehicle at a time, that was 0.35–1 ms each
under load (≈ 2 s for a league snapshot, and most of the live stream's delay). The process keeps
the active patrol layouts' grids in an STRtree instead, rebuilt when the set of active layouts
changes (an activation, a rollback: their ids, versions and activation times are the key, read
with every call — a few rows). Active layouts are not edited in place (edits go to a draft).

The index is built off the event loop (parsing ~10,000 polygons takes a second), once at a time:
at the API's start, so the first console after a restart does not wait for it either.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import numpy as np
import shapely
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from gis.locate import GridIndex

log = logging.getLogger("gridpatrol.live")

KEY = """
SELECT coalesce(string_agg(id || ':' || version || ':' || coalesce(activated_at::text, ''),
                           ',' ORDER BY id), '')
  FROM grid_layout WHERE status = 'active' AND purpose = 'patrol'
"""
GRIDS = """
SELECT g.code, ST_AsBinary(g.geom), length(nbs_prefix(l.area_code))
  FROM grid g JOIN grid_layout l ON l.id = g.layout_id
 WHERE l.status = 'active' AND l.purpose = 'patrol'
"""


def _build(rows: list[tuple[Any, ...]]) -> GridIndex:
    if not rows:
        return GridIndex.build([], [])
    codes, wkb, priority = zip(*rows, strict=True)
    return GridIndex.build(codes, shapely.from_wkb(list(wkb)), priority)


class GridLocator:
    """The process's index of active patrol grids, rebuilt when the active layouts change."""

    def __init__(self) -> None:
        self._key: str | None = None
        self._index: GridIndex | None = None
        self._lock = asyncio.Lock()
        self._warming: asyncio.Task[None] | None = None
        self.builds = 0

    def warm(self, pool: AsyncConnectionPool) -> None:
        """Build the index in the background unless built (a console page is on its way: its
        snapshot should not wait for the build)."""
        if self._index is None and (self._warming is None or self._warming.done()):
            self._warming = asyncio.create_task(self._warm(pool), name="grid-index")

    async def stop(self) -> None:
        """Stop a build in progress (the server is stopping)."""
        if self._warming is not None and not self._warming.done():
            self._warming.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._warming

    async def _warm(self, pool: AsyncConnectionPool) -> None:
        try:
            async with pool.connection() as conn:
                await self.index(conn)
        except Exception:  # the snapshot that needs it builds it (and says why it cannot)
            log.exception("grid index: the build failed")

    async def index(self, conn: AsyncConnection[Any]) -> GridIndex:
        """The index for the layouts active now."""
        row = await (await conn.execute(KEY)).fetchone()
        key = str(row[0]) if row else ""
        if self._index is not None and key == self._key:
            return self._index
        async with self._lock:  # one build at a time; the others wait for it
            if self._index is None or key != self._key:
                rows = await (await conn.execute(GRIDS)).fetchall()
                self._index = await asyncio.to_thread(_build, rows)
                self._key = key
                self.builds += 1
                log.info("grid index: %d active patrol grids", len(self._index))
            return self._index

    async def name_grids(self, conn: AsyncConnection[Any], rows: list[dict[str, Any]]) -> None:
        """Set each row's ``grid`` (from its ``lon``/``lat``), in place."""
        if not rows:
            return
        index = await self.index(conn)
        codes = index.locate(
            np.fromiter((r["lon"] for r in rows), np.float64, len(rows)),
            np.fromiter((r["lat"] for r in rows), np.float64, len(rows)),
        )
        for row, code in zip(rows, codes, strict=True):
            row["grid"] = code
