"""Vehicle work over a period and the 草原110 ranking (the best 60 % awarded, the bottom flagged).

Per vehicle: patrol km, hours on patrol (time between plausible consecutive fixes), days active,
coverage of its own patrol area (cells of its assigned grids it saw itself) and the share of its
patrol time spent inside that area. The score is a weighted sum of those four, each scaled to
0–1 (km and hours by the best vehicle's value), with the weights and every component returned,
so an award or a dismissal can be explained line by line.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from psycopg import AsyncConnection, sql
from psycopg.rows import dict_row

from api.coverage import materialize
from api.coverage.metrics import Window
from api.coverage.update import CoverageUpdater
from api.scope import Scope

WEIGHTS = {"own_coverage": 0.35, "km": 0.25, "hours": 0.20, "inside_share": 0.20}

VEHICLE_WORK = sql.SQL(
    """
    WITH dev AS (
        SELECT d.id, d.identifier, d.plate, d.name, d.home_village, d.assigned_grids
          FROM device d WHERE d.kind = 'vehicle' AND {scope}
    ),
    work AS (
        SELECT device_id, sum(metres) / 1000.0 AS km, sum(dwell_s) / 3600.0 AS hours,
               sum(fixes) AS fixes, count(*) AS days
          FROM device_day
         WHERE day BETWEEN %(d0)s AND %(d1)s AND device_id IN (SELECT id FROM dev)
         GROUP BY device_id
    ),
    own AS (
        SELECT dev.id AS device_id, g.id AS grid_id, g.n_cells
          FROM dev JOIN grid g ON g.layout_id = %(layout)s AND g.code = ANY(dev.assigned_grids)
    ),
    own_seen AS (
        SELECT o.device_id, o.grid_id, o.n_cells, bit_or(gv.seen) AS seen,
               coalesce(sum(gv.dwell_s), 0) AS dwell_s
          FROM own o
          LEFT JOIN grid_visit gv ON gv.layout_id = %(layout)s AND gv.grid_id = o.grid_id
               AND gv.device_id = o.device_id AND gv.day BETWEEN %(d0)s AND %(d1)s
         GROUP BY o.device_id, o.grid_id, o.n_cells
    ),
    own_total AS (
        SELECT device_id, sum(n_cells) AS cells, sum(coalesce(bit_count(seen), 0)) AS seen,
               sum(dwell_s) AS dwell_s
          FROM own_seen GROUP BY device_id
    )
    SELECT dev.id AS device_id, dev.identifier, dev.plate, dev.name, dev.home_village,
           dev.assigned_grids, coalesce(w.km, 0)::float8 AS km,
           coalesce(w.hours, 0)::float8 AS hours, coalesce(w.fixes, 0)::bigint AS fixes,
           coalesce(w.days, 0)::int AS days_active, coalesce(o.cells, 0)::bigint AS own_cells,
           coalesce(o.seen, 0)::bigint AS own_seen_cells,
           (coalesce(o.dwell_s, 0) / 3600.0)::float8 AS inside_hours
      FROM dev
      LEFT JOIN work w ON w.device_id = dev.id
      LEFT JOIN own_total o ON o.device_id = dev.id
     ORDER BY dev.id
    """
)


async def vehicle_layout(conn: AsyncConnection[Any]) -> int | None:
    """The layout whose grids vehicles are assigned to: the active ``vehicle`` one, else the
    active ``patrol`` one."""
    row = await (
        await conn.execute(
            "SELECT id FROM grid_layout "
            "WHERE status = 'active' AND purpose IN ('vehicle', 'patrol') "
            "ORDER BY purpose = 'vehicle' DESC, length(nbs_prefix(area_code)), id LIMIT 1"
        )
    ).fetchone()
    return int(row[0]) if row else None


def score(
    rows: list[dict[str, Any]], *, award_share: float, flag_share: float
) -> list[dict[str, Any]]:
    """Add components, score, rank and verdict (award / keep / flagged) to each vehicle row."""
    if not rows:
        return rows
    km = np.array([float(r["km"]) for r in rows])
    hours = np.array([float(r["hours"]) for r in rows])
    own = np.array([r["own_seen_cells"] / r["own_cells"] if r["own_cells"] else 0.0 for r in rows])
    inside = np.array(
        [
            min(float(r["inside_hours"]) / float(r["hours"]), 1.0) if r["hours"] else 0.0
            for r in rows
        ]
    )
    parts = {
        "own_coverage": own,
        "km": km / km.max() if km.max() > 0 else km,
        "hours": hours / hours.max() if hours.max() > 0 else hours,
        "inside_share": inside,
    }
    total = np.zeros(len(rows))
    for key, values in parts.items():
        total += WEIGHTS[key] * values
    order = np.lexsort((np.array([r["device_id"] for r in rows]), -total))  # ties by id
    n = len(rows)
    awarded = int(np.floor(award_share * n + 1e-9))
    flagged = int(np.ceil(flag_share * n - 1e-9))
    out = []
    for rank, i in enumerate(order, start=1):
        verdict = "award" if rank <= awarded else "flagged" if rank > n - flagged else "keep"
        out.append(
            {
                **rows[i],
                "km": round(float(km[i]), 3),
                "hours": round(float(hours[i]), 3),
                "inside_hours": round(float(rows[i]["inside_hours"]), 3),
                "own_coverage_pct": round(100 * float(own[i]), 2),
                "inside_share_pct": round(100 * float(inside[i]), 2),
                "score": round(float(total[i]), 4),
                "rank": rank,
                "verdict": verdict,
            }
        )
    return out


async def ranking(
    conn: AsyncConnection[Any],
    updater: CoverageUpdater,
    scope: Scope,
    window: Window,
) -> dict[str, Any]:
    """Every vehicle in the scope ranked over the window."""
    layout_id = await vehicle_layout(conn)
    if layout_id is not None:
        await materialize.ensure(conn, updater, layout_id, window.first, window.last)
    query = VEHICLE_WORK.format(scope=scope.where(sql.SQL("coalesce(d.home_village, '')")))
    params = {**scope.params(), "layout": layout_id, "d0": window.first, "d1": window.last}
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, params)
        rows = await cur.fetchall()
    s = updater.settings
    ranked = score(rows, award_share=s.award_share, flag_share=s.flag_share)
    return {
        "from": window.first.isoformat(),
        "to": window.last.isoformat(),
        "layout": layout_id,
        "weights": WEIGHTS,
        "award_share": s.award_share,
        "flag_share": s.flag_share,
        "vehicles": ranked,
    }
