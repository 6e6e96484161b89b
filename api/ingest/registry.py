"""Device facts for the ingest hot path: identifiers → ids, enabled flags, declared CRS.

Each batch looks up its distinct identifiers in the database (one indexed query per batch,
~1 ms for a few thousand devices), so a device registered, disabled or switched to GCJ-02 a
moment ago — by any process — is treated correctly from its very next fix. The per-fix mapping
is vectorised (factorise the identifiers, look up the uniques, broadcast back).
"""

from __future__ import annotations

from dataclasses import dataclass
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


class DeviceRegistry:
    """Resolves the device identifiers of a batch against the ``device`` table."""

    async def resolve(
        self, conn: AsyncConnection[Any], identifiers: NDArray[np.object_]
    ) -> Resolved:
        n = len(identifiers)
        if n == 0:
            return Resolved(np.zeros(0, np.int64), np.zeros(0, bool), np.zeros(0, np.int8))
        codes, uniques = pd.factorize(pd.Index(identifiers.astype(str)))
        rows = await (
            await conn.execute(
                "SELECT identifier, id, enabled, crs FROM device WHERE identifier = ANY(%s)",
                (list(uniques),),
            )
        ).fetchall()
        found = {r[0]: r[1:] for r in rows}
        ids = np.array([found[u][0] if u in found else -1 for u in uniques], dtype=np.int64)
        enabled = np.array([bool(found[u][1]) if u in found else False for u in uniques])
        crs = np.array(
            [CRS_CODES.index(found[u][2]) if u in found else 0 for u in uniques], dtype=np.int8
        )
        return Resolved(device_id=ids[codes], enabled=enabled[codes], crs=crs[codes])
