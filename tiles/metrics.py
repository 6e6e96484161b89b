"""The coverage metrics of a grid over a window of days, written once as SQL fragments.

Over ``grid_visit`` (one row per layout, local day and grid; ``seen`` a bitmap of the grid's
cells): seen cells = ``bit_count`` of the OR of the day bitmaps; blind cells = cells whose bit
is unset on every day since ``%(b0)s``; dwell and patrol distance are sums; visits are the
presence intervals (``visit_start``/``visit_end``, µs) merged when one starts within
``%(gap)s`` µs of the furthest end before it. The tile layer ``grids`` (one grid at a time, an
index plan a prepared statement keeps) and ``api.coverage.metrics`` (all grids of a layout,
rolled up to villages, townships, counties) both build their statements from these.
"""

from __future__ import annotations

from psycopg import sql

# Per grid, over the rows ``gv`` of grid_visit it is grouped by.
GRID_AGGREGATES = sql.SQL(
    """bit_count(bit_or(gv.seen)) AS seen_cells,
       bit_count(bit_or(gv.seen) FILTER (WHERE gv.day >= %(b0)s::date)) AS recent_seen,
       sum(gv.fixes) AS fixes, sum(gv.dwell_s) AS dwell_s, sum(gv.metres) AS metres,
       max(gv.last_seen) AS last_seen"""
)

# The presence intervals (s, e) of grid_visit rows ``gv``, one row each.
INTERVALS = sql.SQL("unnest(gv.visit_start, gv.visit_end) AS u(s, e)")


def reach(partition: sql.Composable | None = None) -> sql.Composed:
    """The furthest end of the intervals ``u`` before each one (NULL for the first), as
    ``reach``; ``partition`` (e.g. ``PARTITION BY u.unit``) merges groups apart."""
    return sql.SQL(
        "max(u.e) OVER ({} ORDER BY u.s, u.e "
        "ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS reach"
    ).format(partition if partition is not None else sql.SQL(""))


# True for an interval that starts a new visit (rows of ``reach``, aliased ``m``).
NEW_VISIT = sql.SQL("(m.reach IS NULL OR m.s > m.reach + %(gap)s::bigint)")


def percent(part: sql.Composable, whole: sql.Composable) -> sql.Composed:
    """``part`` of ``whole`` in percent, two decimals (NULL when ``whole`` is 0)."""
    return sql.SQL("round((100.0 * {} / nullif({}, 0))::numeric, 2)::float8").format(part, whole)


def hours(seconds: sql.Composable) -> sql.Composed:
    """Seconds as hours, three decimals."""
    return sql.SQL("round(({} / 3600.0)::numeric, 3)::float8").format(seconds)


def km(metres: sql.Composable) -> sql.Composed:
    """Metres as kilometres, three decimals."""
    return sql.SQL("round(({} / 1000.0)::numeric, 3)::float8").format(metres)
