"""Daily partitions of ``position``: made ahead by the server, and on demand by the writer.

A day's partition is ``position_pYYYYMMDD`` covering [day 00:00 UTC, next day 00:00 UTC). When
the default partition already holds rows of that day (fixes that arrived before the partition
existed), they are moved into the new partition in the same transaction.

The writer makes partitions only for the days of fixes that passed the ingest filters, and only
inside the accepted time window (``in_window``): a refused fix with a bogus date (year 1, 1999 …)
creates no table. With a time filter switched off, that side of the window stops at
``FLOOR_DAY`` (before) or one day after now (ahead); fixes beyond land in ``position_default``.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
from numpy.typing import NDArray
from psycopg import AsyncConnection, sql

from gis.units import DAY_US as _DAY_US

_LOCK = 0x67707061  # advisory lock key: one partition maker at a time
FLOOR_DAY = date(2000, 1, 1)
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()


def partition_name(day: date) -> str:
    return f"position_p{day:%Y%m%d}"


def days_of(time_us: NDArray[np.int64]) -> list[date]:
    """Distinct UTC days of the given times."""
    if len(time_us) == 0:
        return []
    days = np.unique(time_us // _DAY_US)
    epoch = date(1970, 1, 1)
    return [epoch + timedelta(days=int(d)) for d in days]


def in_window(
    days: list[date], *, now_us: int, max_age_s: float, max_future_s: float
) -> list[date]:
    """The ``days`` inside the accepted time window, with a day's slack on each side.

    ``max_age_s``/``max_future_s`` of 0 (filter off) bound the window at ``FLOOR_DAY`` behind
    and one day ahead.
    """

    def day(offset_us: int) -> date:  # clamped to what a date can hold
        ordinal = (now_us + offset_us) // _DAY_US + _EPOCH_ORDINAL
        return date.fromordinal(min(max(ordinal, 1), date.max.toordinal()))

    lo = day(-int(max_age_s * 1e6) - _DAY_US) if max_age_s > 0 else FLOOR_DAY
    hi = day((int(max_future_s * 1e6) if max_future_s > 0 else 0) + _DAY_US)
    return [d for d in days if lo <= d <= hi]


async def existing(conn: AsyncConnection[Any]) -> set[date]:
    rows = await (
        await conn.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'position'::regclass AND c.relname ~ '^position_p[0-9]{8}$'"
        )
    ).fetchall()
    return {datetime.strptime(r[0][10:], "%Y%m%d").replace(tzinfo=UTC).date() for r in rows}


async def ensure(conn: AsyncConnection[Any], days: list[date], known: set[date]) -> set[date]:
    """Create the partitions of ``days`` not in ``known``; returns the updated known set.

    Runs in its own transaction (call it outside the ingest transaction).
    """
    wanted = [d for d in days if d not in known]
    if not wanted:
        return known
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK,))
        have = await existing(conn)
        for day in wanted:
            if day in have:
                continue
            lo = datetime(day.year, day.month, day.day, tzinfo=UTC)
            hi = lo + timedelta(days=1)
            name = sql.Identifier(partition_name(day))
            await conn.execute(
                sql.SQL(
                    "CREATE TABLE {} (LIKE position INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"
                ).format(name)
            )
            await conn.execute(
                sql.SQL(
                    "WITH moved AS (DELETE FROM position_default "
                    "WHERE fix_time >= %(lo)s AND fix_time < %(hi)s RETURNING *) "
                    "INSERT INTO {} SELECT * FROM moved"
                ).format(name),
                {"lo": lo, "hi": hi},
            )
            await conn.execute(
                sql.SQL(
                    "ALTER TABLE position ATTACH PARTITION {} FOR VALUES FROM ({}) TO ({})"
                ).format(name, sql.Literal(lo), sql.Literal(hi))
            )
            have.add(day)
    return known | have


async def ensure_ahead(conn: AsyncConnection[Any], *, behind: int, ahead: int) -> set[date]:
    """Partitions from ``behind`` days ago to ``ahead`` days from now (UTC)."""
    today = datetime.now(UTC).date()
    days = [today + timedelta(days=k) for k in range(-behind, ahead + 1)]
    return await ensure(conn, days, await existing(conn))
