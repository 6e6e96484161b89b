"""Time bases and distance units shared by the whole platform — their one home.

- **China's local day.** Every day GridPatrol counts in (coverage, reports, tiles, the OGC API,
  exports) is a calendar day in China Standard Time, UTC+8 with no daylight saving. Times are
  ``int64`` microseconds since 1970-01-01 UTC; days are ``int32`` days since 1970-01-01.
  ``CHINA_OFFSET_US`` is *the* offset: Python uses the helpers below, SQL takes
  ``CHINA_OFFSET_SQL`` (an interval literal built from the same constant).
- **The PostgreSQL epoch.** Binary COPY carries ``timestamptz`` as µs and ``date`` as days since
  2000-01-01 UTC: ``PG_EPOCH_US`` and ``PG_EPOCH_DAYS``.
- **Metres per degree.** Short-range plane approximations (a local equirectangular frame, a
  buffer in degrees for ``ST_Simplify`` or a bounding box) use one of two named factors:
  ``METRES_PER_DEGREE`` (WGS-84 equator, 111,320 m) and ``METRES_PER_DEGREE_SPHERE`` (the mean
  sphere of ``gis.crs.haversine_m``, ≈ 111,195 m). A degree of longitude is that times
  cos(latitude). Distances that matter are computed on the ellipsoid or in a UTM zone.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import numpy as np
from numpy.typing import ArrayLike, NDArray

US_PER_S = 1_000_000
DAY_S = 86_400
DAY_US = DAY_S * US_PER_S

CHINA_OFFSET_S = 8 * 3_600  # China Standard Time, UTC+8, no daylight saving
CHINA_OFFSET_US = CHINA_OFFSET_S * US_PER_S
CHINA_OFFSET = timedelta(seconds=CHINA_OFFSET_S)
CHINA_TZ = timezone(CHINA_OFFSET, "CST")
# The same offset for SQL: ``(t AT TIME ZONE 'UTC') + interval '…'`` is the China wall clock.
CHINA_OFFSET_SQL = f"interval '{CHINA_OFFSET_S} seconds'"

PG_EPOCH_US = 946_684_800 * US_PER_S  # 2000-01-01 UTC in Unix microseconds
PG_EPOCH_DAYS = 10_957  # 2000-01-01 in days since 1970-01-01
UNIX_EPOCH_DAY = np.datetime64("1970-01-01", "D")

EARTH_RADIUS_M = 6_371_008.8  # mean radius, as gis.crs.haversine_m
METRES_PER_DEGREE = 111_320.0  # a degree on the WGS-84 equator (≈ 111,319.5 m)
METRES_PER_DEGREE_SPHERE = float(np.radians(1.0) * EARTH_RADIUS_M)  # ≈ 111,195.1 m
METRES_PER_DEGREE_LAT = 110_574.0  # a degree of latitude at the equator (WGS-84)

IntArray = NDArray[np.int64]


def local_day(t_us: IntArray) -> NDArray[np.int32]:
    """Local calendar day in China (UTC+8) of UTC microsecond times, days since 1970-01-01."""
    return ((t_us + CHINA_OFFSET_US) // DAY_US).astype(np.int32)


def day_start_us(day: ArrayLike) -> IntArray:
    """UTC microsecond time of the local (UTC+8) midnight that starts ``day``."""
    return np.asarray(day, dtype=np.int64) * DAY_US - CHINA_OFFSET_US


def china_today() -> date:
    """Today's date in China."""
    return (datetime.now(UTC) + CHINA_OFFSET).date()


def china_day_bounds(day: date) -> tuple[datetime, datetime]:
    """[start, end) of a China-local day as UTC datetimes."""
    start = datetime(day.year, day.month, day.day, tzinfo=UTC) - CHINA_OFFSET
    return start, start + timedelta(days=1)
