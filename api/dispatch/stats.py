"""Response times per grid, village, township or county over a window of China-local days.

For incidents created in the window: how many, how many were dispatched, accepted, arrived,
cleared, cancelled, escalated; and the seconds from the call (creation) to the first dispatch,
to acceptance and to arrival — mean, median and 90th percentile — plus travel (dispatch →
arrival). Incidents outside every grid count under their village (their grid is null).
The coverage reports call ``response_times`` to put these beside patrol coverage.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

from psycopg import AsyncConnection, sql
from psycopg.rows import dict_row

from api.errors import Unprocessable
from api.scope import Scope
from gis.units import china_day_bounds

LEVEL_DIGITS = {"grid": 15, "village": 12, "township": 9, "county": 6}

RESPONSE_TIMES = sql.SQL(
    """
    WITH i AS (
        SELECT left(CASE WHEN %(digits)s = 15 THEN i.grid_code ELSE i.village_code END,
                    %(digits)s) AS unit,
               i.status, i.escalation_level,
               extract(epoch FROM i.dispatched_at - i.created_at) AS to_dispatch,
               extract(epoch FROM i.accepted_at - i.created_at) AS to_accept,
               extract(epoch FROM i.arrived_at - i.created_at) AS to_arrive,
               extract(epoch FROM i.arrived_at - i.dispatched_at) AS travel
          FROM incident i
         WHERE i.created_at >= %(t0)s AND i.created_at < %(t1)s AND {scope}
    )
    SELECT unit AS code, coalesce(a.name_zh, ga.name_zh) AS name_zh,
           count(*)::int AS incidents,
           count(to_dispatch)::int AS dispatched, count(to_accept)::int AS accepted,
           count(to_arrive)::int AS arrived,
           count(*) FILTER (WHERE status = 'cleared')::int AS cleared,
           count(*) FILTER (WHERE status = 'cancelled')::int AS cancelled,
           count(*) FILTER (WHERE escalation_level > 0)::int AS escalated,
           {stats}
      FROM i
      LEFT JOIN admin_area a ON a.code = rpad(unit, 12, '0')
      LEFT JOIN admin_area ga ON ga.code = left(unit, 12)
     GROUP BY unit, a.name_zh, ga.name_zh
     ORDER BY unit NULLS LAST
    """
)


def _stats() -> sql.Composable:
    parts = []
    for name in ("to_dispatch", "to_accept", "to_arrive", "travel"):
        col = sql.Identifier(name)
        parts += [
            sql.SQL("round(avg({c})::numeric, 1)::float8 AS {n}").format(
                c=col, n=sql.Identifier(f"{name}_mean_s")
            ),
            sql.SQL(
                "round((percentile_cont(0.5) WITHIN GROUP (ORDER BY {c}))::numeric, 1)::float8 "
                "AS {n}"
            ).format(c=col, n=sql.Identifier(f"{name}_median_s")),
            sql.SQL(
                "round((percentile_cont(0.9) WITHIN GROUP (ORDER BY {c}))::numeric, 1)::float8 "
                "AS {n}"
            ).format(c=col, n=sql.Identifier(f"{name}_p90_s")),
        ]
    return sql.SQL(", ").join(parts)


async def response_times(
    conn: AsyncConnection[Any],
    scope: Scope,
    first: date,
    last: date,
    level: str = "grid",
) -> list[dict[str, Any]]:
    """Response-time statistics per unit of ``level`` for incidents created in the window.

    Parameters
    ----------
    conn : AsyncConnection
        Database connection.
    scope : Scope
        Only incidents in this scope.
    first, last : date
        Inclusive China-local days (UTC+8) of the incidents' creation.
    level : str
        ``grid``, ``village``, ``township`` or ``county``.

    Returns
    -------
    list of dict
        One row per unit: ``code`` (null for incidents outside every grid at grid level),
        ``name_zh``, counts, and ``to_dispatch``/``to_accept``/``to_arrive``/``travel``
        ``_mean_s``/``_median_s``/``_p90_s`` (null without data).

    Raises
    ------
    Unprocessable
        For an unknown level or ``last`` before ``first``.
    """
    if level not in LEVEL_DIGITS:
        raise Unprocessable(f"level must be one of {', '.join(LEVEL_DIGITS)}", field="level")
    if last < first:
        raise Unprocessable("'to' must not be before 'from'", field="to")
    query = RESPONSE_TIMES.format(scope=scope.where("i.area_code", "i.grid_code"), stats=_stats())
    params = {
        **scope.params(),
        "digits": LEVEL_DIGITS[level],
        "t0": _local_midnight(first),
        "t1": _local_midnight(last + timedelta(days=1)),
    }
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, params)
        return await cur.fetchall()


def _local_midnight(day: date) -> datetime:
    """China-local midnight of ``day`` (an aware UTC time: ``gis.units``' one offset)."""
    return china_day_bounds(day)[0]
