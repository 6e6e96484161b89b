"""PostgreSQL binary COPY for fixed-width rows, with numpy: read query results into structured
arrays and write structured arrays, without a Python object per row.

Binary format (PostgreSQL docs, "COPY … BINARY"): an 11-byte signature, int32 flags, int32
header-extension length, then per tuple an int16 field count and per field an int32 length and
the value big-endian (timestamptz = int64 µs since 2000-01-01 UTC; date = int32 days since
2000-01-01), then an int16 −1.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
from numpy.typing import NDArray
from psycopg import AsyncConnection, sql

SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
HEADER = SIGNATURE + bytes(8)
TRAILER = b"\xff\xff"
PG_TYPES = {"int2": ">i2", "int4": ">i4", "int8": ">i8", "float4": ">f4", "float8": ">f8",
            "bool": "u1", "timestamptz": ">i8", "date": ">i4"}  # fmt: skip


def row_dtype(fields: list[tuple[str, str]]) -> np.dtype:
    """The on-the-wire layout of a tuple of fixed-width, non-NULL fields."""
    layout: list[tuple[str, str]] = [("_n", ">i2")]
    for name, pgtype in fields:
        layout += [(f"_l_{name}", ">i4"), (name, PG_TYPES[pgtype])]
    return np.dtype(layout)


async def read_rows(
    conn: AsyncConnection[Any],
    query: sql.Composable,
    fields: list[tuple[str, str]],
) -> NDArray[np.void]:
    """Run ``COPY (query) TO STDOUT BINARY`` and view the rows as a structured array.

    Every column must be fixed-width and non-NULL, in the order of ``fields``; timestamps and
    dates come back as raw PostgreSQL values (see ``gis.units.PG_EPOCH_US``/``PG_EPOCH_DAYS``).
    """
    raw, start = await _copy_out(conn, query)
    if not raw:
        return np.zeros(0, dtype=row_dtype(fields))
    return np.frombuffer(raw[start:-2], dtype=row_dtype(fields))


async def _copy_out(conn: AsyncConnection[Any], query: sql.Composable) -> tuple[bytes, int]:
    """The whole binary COPY output of ``query`` and where its first tuple starts (after the
    signature, flags and header extension); ``b""`` when the server sent nothing."""
    statement = sql.SQL("COPY ({}) TO STDOUT (FORMAT binary)").format(query)
    async with conn.cursor() as cur, cur.copy(statement) as copy:
        raw = b"".join([bytes(data) async for data in copy])
    if not raw:
        return raw, 0
    if not raw.startswith(SIGNATURE):
        raise ValueError("not a PostgreSQL binary COPY stream")
    return raw, 19 + int.from_bytes(raw[15:19], "big")


async def read_grouped(
    conn: AsyncConnection[Any],
    query: sql.Composable,
    keys: list[tuple[str, str]],
    columns: list[tuple[str, str]],
) -> NDArray[np.void]:
    """Like ``read_rows`` for a query returning one row per group: ``keys`` scalar columns,
    then ``columns`` as one-dimensional arrays of equal length (``array_agg``). The result has
    a row per array element, keys repeated, in native byte order.

    The server sends a COPY message per row and the client handles each in Python, so a
    million plain rows cost seconds; a few thousand grouped rows carry the same values at the
    cost of the server's ``array_agg``.
    """
    raw, pos = await _copy_out(conn, query)
    out_dtype = np.dtype(
        [(n, PG_TYPES[t].lstrip(">")) for n, t in keys]
        + [(n, PG_TYPES[t].lstrip(">")) for n, t in columns]
    )
    if not raw:
        return np.zeros(0, dtype=out_dtype)
    key_values: list[list[Any]] = [[] for _ in keys]
    parts: list[list[NDArray[Any]]] = [[] for _ in columns]
    counts: list[int] = []
    while True:
        (n_fields,) = struct.unpack_from(">h", raw, pos)
        pos += 2
        if n_fields == -1:
            break
        if n_fields != len(keys) + len(columns):
            raise ValueError(f"expected {len(keys) + len(columns)} columns, got {n_fields}")
        for i, (_, pgtype) in enumerate(keys):
            length, value = _scalar(raw, pos, PG_TYPES[pgtype])
            key_values[i].append(value)
            pos += 4 + length
        size = -1
        for i, (name, pgtype) in enumerate(columns):
            (length,) = struct.unpack_from(">i", raw, pos)
            values = _array(raw, pos + 4, length, PG_TYPES[pgtype], name)
            if size not in (-1, len(values)):
                raise ValueError(f"array {name} has {len(values)} values, not {size}")
            size = len(values)
            parts[i].append(values)
            pos += 4 + length
        counts.append(size)
    out = np.zeros(sum(counts), dtype=out_dtype)
    for (name, _), key in zip(keys, key_values, strict=True):
        out[name] = np.repeat(np.asarray(key), counts)
    for (name, _), chunks in zip(columns, parts, strict=True):
        if chunks:
            out[name] = np.concatenate(chunks)
    return out


def _scalar(raw: bytes, pos: int, fmt: str) -> tuple[int, Any]:
    (length,) = struct.unpack_from(">i", raw, pos)
    if length < 0:
        raise ValueError("NULL key in a grouped COPY row")
    return length, np.frombuffer(raw, dtype=fmt, count=1, offset=pos + 4)[0]


def _array(raw: bytes, pos: int, length: int, fmt: str, name: str) -> NDArray[Any]:
    """A binary one-dimensional array value (ndim, has-nulls, element oid, size, lbound, then
    length-prefixed elements) as a numpy array."""
    if length < 0:
        raise ValueError(f"NULL array {name}")
    ndim, has_nulls = struct.unpack_from(">ii", raw, pos)
    if ndim == 0:
        return np.zeros(0, dtype=fmt)
    if ndim != 1 or has_nulls:
        raise ValueError(f"array {name} must be one-dimensional without NULLs")
    (size,) = struct.unpack_from(">i", raw, pos + 12)
    items = np.frombuffer(raw, dtype=[("l", ">i4"), ("v", fmt)], count=size, offset=pos + 20)
    return items["v"]


async def write_rows(
    conn: AsyncConnection[Any], table: str, columns: list[str], payload: bytes
) -> None:
    """``COPY table (columns) FROM STDIN BINARY`` with a ready payload (header…trailer)."""
    statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT binary)").format(
        sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, columns))
    )
    async with conn.cursor() as cur, cur.copy(statement) as copy:
        await copy.write(payload)


def int8_array_field(name: str, k: int) -> list[tuple[Any, ...]]:
    """Layout of a one-dimensional ``bigint[]`` of exactly ``k`` elements (after its length)."""
    return [(f"{name}_hdr", ">i4", (5,)), (name, [("l", ">i4"), ("v", ">i8")], (k,))]


def fill_int8_array(rec: NDArray[np.void], name: str, values: NDArray[np.int64]) -> None:
    """Fill a ``bigint[]`` field laid out by ``int8_array_field``; ``values`` is (rows, k)."""
    k = values.shape[1]
    rec[f"_l_{name}"] = 20 + 12 * k
    rec[f"{name}_hdr"] = (1, 0, 20, k, 1)  # ndim, has-nulls, element type int8, length, lbound
    rec[name]["l"] = 8
    rec[name]["v"] = values
