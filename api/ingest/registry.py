"""An in-memory view of the device registry for the ingest hot path.

Identifiers resolve to ids, enabled flags and declared CRS with one vectorised index lookup.
The view refreshes incrementally (rows changed since the last look) every ``ttl`` seconds, and at
once when an unknown identifier arrives, so a device registered a moment ago is accepted.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from psycopg import AsyncConnection

CRS_CODES = ("wgs84", "cgcs2000", "gcj02", "bd09")


@dataclass(frozen=True)
class Resolved:
    """Per-fix device facts: id (−1 unknown), enabled, CRS code (index into CRS_CODES)."""

    device_id: NDArray[np.int64]
    enabled: NDArray[np.bool_]
    crs: NDArray[np.int8]


@dataclass
class DeviceRegistry:
    ttl: float = 5.0
    _frame: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame(
            {
                "id": pd.Series(dtype="int64"),
                "enabled": pd.Series(dtype=bool),
                "crs": pd.Series(dtype="int8"),
            },
            index=pd.Index([], dtype=object, name="identifier"),
        )
    )
    _since: datetime | None = None
    _checked: float = 0.0

    async def refresh(self, conn: AsyncConnection[Any], *, force: bool = False) -> None:
        """Pull devices changed since the last refresh (all of them the first time)."""
        now = time.monotonic()
        if not force and now - self._checked < self.ttl:
            return
        self._checked = now
        rows = await (
            await conn.execute(
                "SELECT identifier, id, enabled, crs, updated_at FROM device "
                "WHERE %(since)s::timestamptz IS NULL OR updated_at >= %(since)s "
                "ORDER BY updated_at",
                {"since": self._since},
            )
        ).fetchall()
        if not rows:
            return
        changed = pd.DataFrame(
            {
                "id": np.array([r[1] for r in rows], dtype=np.int64),
                "enabled": np.array([r[2] for r in rows], dtype=bool),
                "crs": np.array([CRS_CODES.index(r[3]) for r in rows], dtype=np.int8),
            },
            index=pd.Index([r[0] for r in rows], dtype=object, name="identifier"),
        )
        frame = pd.concat([self._frame[~self._frame.index.isin(changed.index)], changed])
        self._frame = frame
        self._since = rows[-1][4]

    async def resolve(
        self, conn: AsyncConnection[Any], identifiers: NDArray[np.object_]
    ) -> Resolved:
        await self.refresh(conn)
        codes, uniques = pd.factorize(identifiers)  # look up each identifier once
        upos = self._frame.index.get_indexer(pd.Index(uniques))
        if (upos < 0).any():
            await self.refresh(conn, force=True)  # maybe registered a moment ago
            upos = self._frame.index.get_indexer(pd.Index(uniques))
        pos = upos[codes] if len(codes) else np.zeros(0, dtype=np.int64)
        known = pos >= 0
        safe = np.where(known, pos, 0)
        ids = self._frame["id"].to_numpy()
        enabled = self._frame["enabled"].to_numpy()
        crs = self._frame["crs"].to_numpy()
        if len(ids) == 0:
            n = len(identifiers)
            return Resolved(np.full(n, -1, np.int64), np.zeros(n, bool), np.zeros(n, np.int8))
        return Resolved(
            device_id=np.where(known, ids[safe], -1).astype(np.int64),
            enabled=known & enabled[safe].astype(bool),
            crs=np.where(known, crs[safe], 0).astype(np.int8),
        )

    def invalidate(self) -> None:
        self._checked = 0.0
