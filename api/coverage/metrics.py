"""Coverage metrics for any layout and window, per grid, village, township or county.

Everything is set-based SQL over ``grid_visit`` (``cell_visit ⨝ grid_cell`` materialised per
layout): the per-grid metrics are ``tiles.metrics`` (the same SQL the ``grids`` tile layer shows),
summed over the grids of a unit: coverage = cells seen / cells; dwell and patrol km are sums;
visits merge the presence intervals of all grids of a unit (gaps longer than the visit gap split
visits); the mean revisit interval is start-to-start; blind spots are cells unseen during the
last ``blind_spot_days`` of the window.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from psycopg import AsyncConnection, sql
from psycopg.rows import dict_row

from api.coverage import materialize
from api.coverage.update import CoverageUpdater
from api.db.reads import Reads
from api.errors import Unprocessable
from api.layouts import get_layout
from api.scope import Scope
from gis.units import china_today
from tiles import metrics as cover

LEVEL_DIGITS = {"grid": 15, "village": 12, "township": 9, "county": 6}


@dataclass(frozen=True)
class Window:
    """An inclusive range of China-local days."""

    first: date
    last: date

    @classmethod
    def check(cls, first: date, last: date, *, max_days: int) -> Window:
        if last < first:
            raise Unprocessable("'to' must not be before 'from'", field="to")
        if (last - first).days + 1 > max_days:
            raise Unprocessable(
                f"the window may span at most {max_days} days", field="to", limit_days=max_days
            )
        return cls(first, last)

    @property
    def days(self) -> int:
        return (self.last - self.first).days + 1


# The metrics per grid (tiles.metrics), then rolled up per unit: cells, seen and blind cells and
# the sums add up over the unit's grids; visits merge the intervals of all its grids.
UNIT_METRICS = sql.SQL(
    """
    WITH g AS (
        SELECT g.id, g.code, g.n_cells, left(g.code, %(digits)s) AS unit
          FROM grid g WHERE g.layout_id = %(layout)s AND {scope}
    ),
    agg AS (
        SELECT gv.grid_id, {grid_aggregates},
               bit_count(bit_or(gv.seen) FILTER (WHERE d.kind = 'vehicle')) AS vehicle_seen,
               bit_count(bit_or(gv.seen) FILTER (WHERE d.kind = 'handheld')) AS foot_seen
          FROM grid_visit gv JOIN g ON g.id = gv.grid_id
          LEFT JOIN device d ON d.id = gv.device_id
         WHERE gv.layout_id = %(layout)s AND gv.day BETWEEN %(d0)s AND %(d1)s
         GROUP BY gv.grid_id
    ),
    iv AS (
        SELECT g.unit, u.s, u.e
          FROM grid_visit gv JOIN g ON g.id = gv.grid_id, {intervals}
         WHERE gv.layout_id = %(layout)s AND gv.day BETWEEN %(d0)s AND %(d1)s
    ),
    marked AS (SELECT u.unit, u.s, {reach} FROM iv u),
    vehicles AS (
        SELECT g.unit, count(DISTINCT gv.device_id) AS vehicles
          FROM grid_visit gv JOIN g ON g.id = gv.grid_id
         WHERE gv.layout_id = %(layout)s AND gv.day BETWEEN %(d0)s AND %(d1)s
         GROUP BY g.unit
    ),
    visits AS (
        SELECT m.unit, count(*) AS visits,
               (max(m.s) - min(m.s)) / 1e6 / nullif(count(*) - 1, 0) AS revisit_mean_s
          FROM marked m WHERE {new_visit} GROUP BY m.unit
    ),
    units AS (
        SELECT g.unit, count(*) AS grids, sum(g.n_cells) AS cells,
               sum(coalesce(a.seen_cells, 0)) AS seen_cells,
               sum(coalesce(a.vehicle_seen, 0)) AS vehicle_seen_cells,
               sum(coalesce(a.foot_seen, 0)) AS foot_seen_cells,
               sum(g.n_cells - coalesce(a.recent_seen, 0)) AS blind_cells,
               coalesce(sum(a.fixes), 0) AS fixes, coalesce(sum(a.dwell_s), 0) AS dwell_s,
               coalesce(sum(a.metres), 0) AS metres, max(a.last_seen) AS last_patrol
          FROM g LEFT JOIN agg a ON a.grid_id = g.id
         GROUP BY g.unit
    )
    SELECT u.unit AS code, coalesce(v.name_zh, gv_name.name_zh) AS name_zh,
           u.grids::int AS grids, u.cells::bigint AS cells, u.seen_cells::bigint AS seen_cells,
           {coverage_pct} AS coverage_pct, {vehicle_pct} AS vehicle_coverage_pct,
           {foot_pct} AS foot_coverage_pct, {dwell_h} AS dwell_h, {patrol_km} AS patrol_km,
           u.fixes::bigint AS fixes, coalesce(vs.visits, 0)::int AS visits,
           round(vs.revisit_mean_s::numeric, 1)::float8 AS revisit_mean_s, u.last_patrol,
           round((extract(epoch FROM now() - u.last_patrol) / 3600.0)::numeric, 2)::float8
               AS last_patrol_age_h,
           u.blind_cells::bigint AS blind_cells, coalesce(vh.vehicles, 0)::int AS vehicles
      FROM units u
      LEFT JOIN visits vs ON vs.unit = u.unit
      LEFT JOIN vehicles vh ON vh.unit = u.unit
      LEFT JOIN admin_area v ON v.code = rpad(u.unit, 12, '0')
      LEFT JOIN admin_area gv_name ON gv_name.code = left(u.unit, 12)
     ORDER BY u.unit
    """
)
_PARTS = {
    "grid_aggregates": cover.GRID_AGGREGATES,
    "intervals": cover.INTERVALS,
    "reach": cover.reach(sql.SQL("PARTITION BY u.unit")),
    "new_visit": cover.NEW_VISIT,
    "coverage_pct": cover.percent(sql.SQL("u.seen_cells"), sql.SQL("u.cells")),
    # seen by patrol vehicles, and by grid workers on foot (handheld devices, api.mobile)
    "vehicle_pct": cover.percent(sql.SQL("u.vehicle_seen_cells"), sql.SQL("u.cells")),
    "foot_pct": cover.percent(sql.SQL("u.foot_seen_cells"), sql.SQL("u.cells")),
    "dwell_h": cover.hours(sql.SQL("u.dwell_s")),
    "patrol_km": cover.km(sql.SQL("u.metres")),
}


async def unit_metrics(
    conn: AsyncConnection[Any],
    updater: CoverageUpdater,
    scope: Scope,
    layout_id: int,
    window: Window,
    *,
    level: str = "grid",
    reads: Reads | None = None,
) -> dict[str, Any]:
    """Coverage per unit of ``level`` for the layout over the window (JSON-ready dict).

    Missing ``grid_visit`` days are built on ``conn`` (the primary); the figures are read
    through ``reads`` when given (a replica that has replayed those days, ``api.db.reads``)."""
    if level not in LEVEL_DIGITS:
        raise Unprocessable(f"level must be one of {', '.join(LEVEL_DIGITS)}", field="level")
    layout = await get_layout(conn, scope, layout_id)  # 404 outside the scope
    built = await materialize.ensure(conn, updater, layout_id, window.first, window.last)
    blind_from = max(
        window.first, window.last - timedelta(days=updater.settings.blind_spot_days - 1)
    )
    params = {
        **scope.params(),
        "layout": layout_id,
        "digits": LEVEL_DIGITS[level],
        "d0": window.first,
        "d1": window.last,
        "b0": blind_from,
        "gap": int(updater.settings.visit_gap_s * 1e6),
    }
    query = UNIT_METRICS.format(scope=scope.where("g.code", "g.code"), **_PARTS)
    reading = reads.connection(after=conn if built else None) if reads else nullcontext(conn)
    async with reading as rconn:
        async with rconn.transaction(), rconn.cursor(row_factory=dict_row) as cur:
            # JIT compiling this query costs ≈ 0.5 s, more than it saves (league, 7 days: 1.18 s
            # with, 0.85 s without); the visit sort fits in memory with a little more work_mem
            await cur.execute("SET LOCAL jit = off")
            await cur.execute("SET LOCAL work_mem = '64MB'")
            await cur.execute(query, params)
            rows = await cur.fetchall()
        facts = await _window_facts(rconn, window)
    return {
        "layout": {k: layout[k] for k in ("id", "name", "purpose", "status", "area_code")},
        "level": level,
        "from": window.first.isoformat(),
        "to": window.last.isoformat(),
        "blind_spot_days": updater.settings.blind_spot_days,
        "days_built": built,
        **facts,
        "units": rows,
    }


async def _window_facts(conn: AsyncConnection[Any], window: Window) -> dict[str, Any]:
    row = await (
        await conn.execute(
            "SELECT (SELECT count(*) FROM device_day WHERE day BETWEEN %(a)s AND %(b)s), "
            "(SELECT count(*) FROM coverage_dirty WHERE day BETWEEN %(a)s AND %(b)s)",
            {"a": window.first, "b": window.last},
        )
    ).fetchone()
    assert row is not None  # noqa: S101 - scalar subqueries return a row
    patrol_days, pending = int(row[0]), int(row[1])
    note, note_zh = window_note(window, patrol_days, pending, china_today()) or (None, None)
    return {
        "vehicle_days": patrol_days,
        "pending_device_days": pending,
        "note": note,
        "note_zh": note_zh,
    }


def window_note(
    window: Window, patrol_days: int, pending: int, today: date
) -> tuple[str, str] | None:
    """What a reader must know about the window before reading its 0 %s, in English (``note``,
    ASCII like the API's other notes: it also travels in a report's ``X-Report-Note`` header)
    and 中文 (``note_zh``): a window in the future, one with no patrol data, one that runs past
    today, or days still being updated."""
    day = today.isoformat()
    if window.first > today:
        return (
            f"the window starts after today ({day}): there is no data yet",
            f"窗口在今天（{day}）之后，尚无数据",
        )
    if patrol_days == 0 and pending:
        return (
            f"{pending} device-days in this window are still being computed: 0 % until then",
            f"{pending} 个车辆日仍在计算，完成前覆盖率显示为 0 %",
        )
    if patrol_days == 0:
        return (
            "no patrol data in this window: every unit shows 0 % coverage",
            "窗口内无巡逻数据：各单位覆盖率均为 0 %",
        )
    if window.last > today:
        return (
            f"the window runs past today ({day}): later days have no data yet",
            f"窗口超过今天（{day}），之后的日子尚无数据",
        )
    if pending:
        return (
            f"{pending} device-days in this window are still being updated",
            f"{pending} 个车辆日仍在更新",
        )
    return None
