"""Device facts for the ingest hot path: identifiers → ids, enabled flags, declared CRS.

Each batch looks up its distinct identifiers in the database (one indexed query per batch,
~1 ms for a few thousand devices), so a device registered, disabled or switched to GCJ-02 a
moment ago — by any process — is treated correctly from its very next fix. The same query
brings each device's last stored fix (``device_state``), the anchor of the implausible-jump
filter, so the storing transaction needs no read of its own. The per-fix mapping is vectorised
(factorise the identifiers, look up the uniques, broadcast back).

OsmAnd devices authenticate with a per-device key (``key_hash`` below; only the SHA-256 is
stored). The query also brings each device's key hash, and, for a batch that asks for it, finds
devices whose *key* was sent as the identifier (the id-only form for clients that can send
nothing else): ``Resolved.by_key`` marks those fixes.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from psycopg import AsyncConnection

CRS_CODES = ("wgs84", "cgcs2000", "gcj02", "bd09")
LOOKUP = """
SELECT d.identifier, d.id, d.enabled, d.crs,
       (extract(epoch FROM s.fix_time) * 1e6)::bigint, s.lat, s.lon, d.osmand_key_hash
  FROM device d LEFT JOIN device_state s ON s.device_id = d.id
 WHERE d.identifier = ANY(%s) OR d.osmand_key_hash = ANY(%s)
"""
KEY_PREFIX = "gpk_"


def new_key() -> str:
    """A fresh OsmAnd device key: 192 random bits, URL-safe (shown once; only its hash is
    stored). It goes in the tracking URL (``key=``), as the HTTP Basic password, or alone as the
    device id for clients that can send nothing else."""
    return KEY_PREFIX + secrets.token_urlsafe(24)


def key_hash(key: str) -> str:
    """SHA-256 of a key (hex). Keys carry 192 random bits, so a fast hash suffices."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True)
class Resolved:
    """Per-fix device facts: id (−1 unknown), enabled, CRS code (index into CRS_CODES); and
    per device id its last stored fix (time µs, lat, lon), when it has one. ``key_hash`` is the
    device's OsmAnd key hash (None: none issued, a legacy device), ``by_key`` whether the sent
    identifier was the key itself, ``identifier`` the device's registered identifier (the sent
    one when unknown), so a key sent as the id is never written anywhere."""

    device_id: NDArray[np.int64]
    enabled: NDArray[np.bool_]
    crs: NDArray[np.int8]
    last: dict[int, tuple[int, float, float]] = field(default_factory=dict)
    key_hash: NDArray[np.object_] = field(default_factory=lambda: np.empty(0, dtype=object))
    by_key: NDArray[np.bool_] = field(default_factory=lambda: np.zeros(0, dtype=bool))
    identifier: NDArray[np.object_] = field(default_factory=lambda: np.empty(0, dtype=object))


class DeviceRegistry:
    """Resolves the device identifiers of a batch against the ``device`` table."""

    async def resolve(
        self, conn: AsyncConnection[Any], identifiers: NDArray[np.object_], *, keys: bool = False
    ) -> Resolved:
        """Device facts per fix; with ``keys``, an identifier that is no device's but is the
        OsmAnd key of one resolves to that device (``by_key``)."""
        n = len(identifiers)
        if n == 0:
            return Resolved(np.zeros(0, np.int64), np.zeros(0, bool), np.zeros(0, np.int8))
        # factorised as Python objects: an Index of strings would be Arrow-backed, ~10× slower
        codes, distinct = pd.factorize(identifiers, use_na_sentinel=False)
        uniques = [str(u) for u in distinct]
        hashes = [key_hash(u) for u in uniques] if keys else []
        rows = await (await conn.execute(LOOKUP, (uniques, hashes))).fetchall()
        found = {r[0]: r[1:] for r in rows}
        by_hash = {r[7]: r for r in rows if r[7] is not None}
        by_key = np.zeros(len(uniques), dtype=bool)
        names = np.array(uniques, dtype=object)
        if keys:
            for i, (u, h) in enumerate(zip(uniques, hashes, strict=True)):
                if u not in found and h in by_hash:
                    found[u] = by_hash[h][1:]
                    by_key[i] = True
                    names[i] = by_hash[h][0]
        last = {r[1]: (r[4], r[5], r[6]) for r in rows if r[4] is not None}
        ids = np.array([found[u][0] if u in found else -1 for u in uniques], dtype=np.int64)
        enabled = np.array([bool(found[u][1]) if u in found else False for u in uniques])
        crs = np.array(
            [CRS_CODES.index(found[u][2]) if u in found else 0 for u in uniques], dtype=np.int8
        )
        hashed = np.array([found[u][6] if u in found else None for u in uniques], dtype=object)
        return Resolved(
            device_id=ids[codes],
            enabled=enabled[codes],
            crs=crs[codes],
            last=last,
            key_hash=hashed[codes],
            by_key=by_key[codes],
            identifier=names[codes],
        )
