"""PostgreSQL binary COPY of position rows, built with numpy (no Python object per row).

Format (PostgreSQL docs, "COPY … BINARY"): a header, then per tuple an int16 field count and per
field an int32 length (−1 = NULL) and the value in the type's binary form (big-endian integers
and floats; timestamptz = int64 µs since 2000-01-01 UTC; geometry = EWKB; jsonb = version byte 1
+ JSON text), then an int16 −1 trailer. Rows sharing a NULL pattern share one fixed layout, so
each pattern becomes one numpy structured array written with a single ``tobytes``; rows with
``extras`` (variable length) get their JSON appended per row.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from gis.units import PG_EPOCH_US

HEADER = b"PGCOPY\n\xff\r\n\x00" + (0).to_bytes(4, "big") + (0).to_bytes(4, "big")
TRAILER = (-1).to_bytes(2, "big", signed=True)
COLUMNS = (
    "device_id",
    "fix_time",
    "lat",
    "lon",
    "geom",
    "speed",
    "course",
    "altitude",
    "accuracy",
    "battery",
    "received_at",
    "protocol",
    "extras",
)
OPTIONAL = ("speed", "course", "altitude", "accuracy", "battery")
_EWKB_POINT_PREFIX = b"\x01\x01\x00\x00\x20" + (4326).to_bytes(4, "little")  # LE, Point|SRID


def _layout(present: tuple[bool, ...], protocol_len: int) -> np.dtype:
    fields: list[tuple[str, str]] = [
        ("nfields", ">i2"),
        ("l_dev", ">i4"),
        ("dev", ">i4"),
        ("l_t", ">i4"),
        ("t", ">i8"),
        ("l_lat", ">i4"),
        ("lat", ">f8"),
        ("l_lon", ">i4"),
        ("lon", ">f8"),
        ("l_geom", ">i4"),
        ("geom_prefix", "V9"),
        ("gx", "<f8"),
        ("gy", "<f8"),
    ]
    for name, has in zip(OPTIONAL, present, strict=True):
        fields.append((f"l_{name}", ">i4"))
        if has:
            fields.append((name, ">f4"))
    fields += [
        ("l_recv", ">i4"),
        ("recv", ">i8"),
        ("l_proto", ">i4"),
        ("proto", f"S{protocol_len}"),
    ]
    fields += [("l_extras", ">i4")]
    return np.dtype(fields)


def _template(
    layout: np.dtype, present: tuple[bool, ...], proto: bytes, received_us: int, *, extras: bool
) -> NDArray[np.void]:
    """One row with every constant field (counts, lengths, EWKB prefix, receive time,
    protocol) filled in; tiling it is a memory copy, far cheaper than per-field writes."""
    row = np.zeros(1, dtype=layout)
    row["nfields"] = len(COLUMNS)
    row["l_dev"], row["l_t"], row["l_lat"], row["l_lon"], row["l_geom"] = 4, 8, 8, 8, 25
    row["geom_prefix"] = np.frombuffer(_EWKB_POINT_PREFIX, dtype="V9")[0]
    for name, is_present in zip(OPTIONAL, present, strict=True):
        row[f"l_{name}"] = 4 if is_present else -1
    row["l_recv"], row["recv"] = 8, received_us - PG_EPOCH_US
    row["l_proto"], row["proto"] = len(proto), proto
    row["l_extras"] = 0 if extras else -1
    return row


def encode_positions(
    *,
    device_id: NDArray[np.int64],
    time_us: NDArray[np.int64],
    lat: NDArray[np.float64],
    lon: NDArray[np.float64],
    optional: dict[str, NDArray[np.float64]],
    extras: NDArray[np.object_],
    received_us: int,
    protocol: str,
) -> bytes:
    """A complete binary COPY payload for ``COPY position (COLUMNS…) FROM STDIN BINARY``.

    ``optional`` maps each of OPTIONAL to a float array (NaN = NULL); ``extras`` holds JSON
    text or None.
    """
    n = len(device_id)
    proto = protocol.encode()
    has = (
        np.stack([np.isfinite(optional[name]) for name in OPTIONAL], axis=1)
        if n
        else np.zeros((0, 5), bool)
    )
    has_extras = pd.notna(extras)
    pattern = has.astype(np.int64) @ (1 << np.arange(len(OPTIONAL)))
    chunks: list[bytes] = [HEADER]
    for code in np.unique(pattern):
        rows_all = np.flatnonzero(pattern == code)
        present = tuple(bool(code >> k & 1) for k in range(len(OPTIONAL)))
        for with_extras in (False, True):
            rows = rows_all[has_extras[rows_all] == with_extras]
            if len(rows) == 0:
                continue
            layout = _layout(present, len(proto))
            rec = np.tile(
                _template(layout, present, proto, received_us, extras=with_extras), len(rows)
            )
            rec["dev"] = device_id[rows]
            rec["t"] = time_us[rows] - PG_EPOCH_US
            rec["lat"] = rec["gy"] = lat[rows]
            rec["lon"] = rec["gx"] = lon[rows]
            for name, is_present in zip(OPTIONAL, present, strict=True):
                if is_present:
                    rec[name] = optional[name][rows]
            if not with_extras:
                chunks.append(rec.tobytes())
                continue
            texts = [b"\x01" + str(extras[i]).encode() for i in rows]
            rec["l_extras"] = [len(t) for t in texts]
            width = rec.dtype.itemsize
            raw = rec.tobytes()
            chunks.extend(raw[k * width : (k + 1) * width] + texts[k] for k in range(len(rows)))
    chunks.append(TRAILER)
    return b"".join(chunks)
