"""Vehicle work over a window and the 草原110 ranking: the best share of the vehicles *in service*
is awarded (嘉奖), the bottom share flagged (待改进), and a vehicle that did no patrol work is
never awarded (无巡逻).

In service (``GRIDPATROL_COVERAGE_IN_SERVICE``): an enabled vehicle that is assigned to a village
and/or has fixes on at least ``IN_SERVICE_MIN_DAYS`` days of the window (capped at the window's
length). Disabled (retired) devices are never ranked; handhelds and phones are not vehicles.
Vehicles out of service are listed apart with their reasons (``disabled``, ``unassigned``,
``no_fixes``, ``too_few_days``) so a leader sees why a vehicle is not ranked.

Score: a weighted sum (weights ``RANK_WEIGHTS``, normalised to add up to 1) of parts each scaled
to 0–1 — coverage of the vehicle's own grids (cells of its assigned grids it saw itself), km,
hours, visits to its own grids (km, hours and visits divided by the best vehicle in service of
the same ranking) and the share of its patrol time spent inside its own grids. Every part is
returned, so an award or a flag can be explained line by line.

Ranks are competition ranks (1, 1, 3) over the score rounded to 4 decimals: equal scores share
a rank. A vehicle is awarded when its rank is within ``floor(AWARD_SHARE × in service)``, so a
tie at the cut is awarded whole (the cut never splits a tie), and flagged when its rank is past
``in service − ceil(FLAG_SHARE × in service)`` (a tie at that cut is kept whole). A vehicle that
drove ``NO_PATROL_KM`` or less, or whose score is 0, is ``no_patrol``, never awarded, and ranked
after every vehicle that patrolled (hours parked in its own grid do not lift it above one that
drove).
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
from api.settings import RANK_WEIGHTS, CoverageSettings

# kept for callers that read the defaults
WEIGHTS = dict(RANK_WEIGHTS)

COMPONENT_ZH = {
    "own_coverage": "责任网格覆盖率",
    "km": "里程",
    "hours": "巡逻时长",
    "visits": "责任网格巡查次数",
    "inside_share": "责任网格内时间占比",
}
COMPONENT_EN = {
    "own_coverage": "own-grid coverage",
    "km": "km",
    "hours": "hours",
    "visits": "visits to own grids",
    "inside_share": "share of time inside own grids",
}
VERDICT_ZH = {"award": "嘉奖", "keep": "保留", "flagged": "待改进", "no_patrol": "无巡逻"}
VERDICT_EN = {"award": "award", "keep": "keep", "flagged": "flagged", "no_patrol": "no patrol"}
REASONS = ("disabled", "unassigned", "no_fixes", "too_few_days")
REASON_ZH = {
    "disabled": "已停用",
    "unassigned": "未分配嘎查村",
    "no_fixes": "窗口内无定位",
    "too_few_days": "有定位天数不足",
}
REASON_EN = {
    "disabled": "disabled (retired)",
    "unassigned": "not assigned to a village",
    "no_fixes": "no fix in the window",
    "too_few_days": "fixes on too few days",
}

VEHICLE_WORK = sql.SQL(
    """
    WITH dev AS (
        SELECT d.id, d.identifier, d.plate, d.name, d.home_village, d.assigned_grids, d.enabled
          FROM device d WHERE d.kind = 'vehicle' AND {scope}
    ),
    work AS (
        SELECT device_id, sum(metres) / 1000.0 AS km, sum(dwell_s) / 3600.0 AS hours,
               sum(fixes) AS fixes, count(*) FILTER (WHERE fixes > 0) AS days
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
               coalesce(sum(gv.dwell_s), 0) AS dwell_s,
               coalesce(sum(cardinality(gv.visit_start)), 0) AS visits
          FROM own o
          LEFT JOIN grid_visit gv ON gv.layout_id = %(layout)s AND gv.grid_id = o.grid_id
               AND gv.device_id = o.device_id AND gv.day BETWEEN %(d0)s AND %(d1)s
         GROUP BY o.device_id, o.grid_id, o.n_cells
    ),
    own_total AS (
        SELECT device_id, sum(n_cells) AS cells, sum(coalesce(bit_count(seen), 0)) AS seen,
               sum(dwell_s) AS dwell_s, sum(visits) AS visits
          FROM own_seen GROUP BY device_id
    )
    SELECT dev.id AS device_id, dev.identifier, dev.plate, dev.name, dev.home_village,
           dev.assigned_grids, dev.enabled, coalesce(w.km, 0)::float8 AS km,
           coalesce(w.hours, 0)::float8 AS hours, coalesce(w.fixes, 0)::bigint AS fixes,
           coalesce(w.days, 0)::int AS days_active, coalesce(o.cells, 0)::bigint AS own_cells,
           coalesce(o.seen, 0)::bigint AS own_seen_cells,
           coalesce(o.visits, 0)::bigint AS own_visits,
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


def weights(settings: CoverageSettings) -> dict[str, float]:
    """The score weights, every component present, normalised to add up to 1."""
    raw = {k: max(float(settings.rank_weights.get(k, 0.0)), 0.0) for k in RANK_WEIGHTS}
    total = sum(raw.values())
    if total <= 0:  # the settings validator refuses this; a hand-made object may not
        raw, total = dict(RANK_WEIGHTS), sum(RANK_WEIGHTS.values())
    return {k: round(w / total, 6) for k, w in raw.items()}


def min_days(settings: CoverageSettings, window: Window) -> int:
    """Days with fixes a vehicle needs to be in service in this window."""
    return min(settings.in_service_min_days, window.days)


def out_of_service(
    rows: list[dict[str, Any]], settings: CoverageSettings, window: Window
) -> list[list[str]]:
    """Per vehicle row, the reasons it is not in service (empty: in service)."""
    n = len(rows)
    enabled = np.array([bool(r["enabled"]) for r in rows], dtype=bool)
    assigned = np.array([r["home_village"] is not None for r in rows], dtype=bool)
    days = np.array([int(r["days_active"]) for r in rows], dtype=np.int64)
    active = days >= min_days(settings, window)
    mode = settings.in_service
    if mode == "assigned_and_active":
        fail_assigned, fail_active = ~assigned, ~active
    elif mode == "assigned_or_active":
        both = ~assigned & ~active
        fail_assigned, fail_active = both, both
    elif mode == "active":
        fail_assigned, fail_active = np.zeros(n, bool), ~active
    else:  # assigned
        fail_assigned, fail_active = ~assigned, np.zeros(n, bool)
    flags = {
        "disabled": ~enabled,
        "unassigned": fail_assigned,
        "no_fixes": fail_active & (days == 0),
        "too_few_days": fail_active & (days > 0),
    }
    matrix = np.column_stack([flags[k] for k in REASONS]) if n else np.zeros((0, len(REASONS)))
    return [[REASONS[j] for j in np.flatnonzero(row)] for row in matrix]


def score(
    rows: list[dict[str, Any]],
    *,
    weights: dict[str, float],
    award_share: float,
    flag_share: float,
    no_patrol_km: float,
) -> list[dict[str, Any]]:
    """Score, rank and verdict (award / keep / flagged / no_patrol) of the vehicles in service,
    best first (ties by identifier); each row gains its parts (``part_<component>``)."""
    if not rows:
        return []
    km = np.array([float(r["km"]) for r in rows])
    hours = np.array([float(r["hours"]) for r in rows])
    visits = np.array([float(r["own_visits"]) for r in rows])
    cells = np.array([float(r["own_cells"]) for r in rows])
    seen = np.array([float(r["own_seen_cells"]) for r in rows])
    inside_h = np.array([float(r["inside_hours"]) for r in rows])
    own = np.divide(seen, cells, out=np.zeros_like(seen), where=cells > 0)
    inside = np.minimum(np.divide(inside_h, hours, out=np.zeros_like(hours), where=hours > 0), 1)

    def by_best(values: np.ndarray) -> np.ndarray:
        best = values.max()
        return values / best if best > 0 else np.zeros_like(values)

    scaled = {
        "own_coverage": own,
        "km": by_best(km),
        "hours": by_best(hours),
        "visits": by_best(visits),
        "inside_share": inside,
    }
    parts = {k: weights.get(k, 0.0) * v for k, v in scaled.items()}
    total = np.round(np.sum(list(parts.values()), axis=0), 4)
    no_patrol = (km <= no_patrol_km) | (total <= 0)
    # competition ranks: 1 + how many rank strictly before; a vehicle without patrol comes
    # after every one with it (its key is shifted below the lowest score)
    key = np.where(no_patrol, total - (np.ptp(total) + 1.0), total)
    rank = np.searchsorted(np.sort(-key), -key, side="left") + 1
    n = len(rows)
    awarded = int(np.floor(award_share * n + 1e-9))
    flagged = int(np.ceil(flag_share * n - 1e-9))
    verdict = np.where(rank <= awarded, "award", np.where(rank > n - flagged, "flagged", "keep"))
    verdict = np.where(no_patrol, "no_patrol", verdict)
    order = np.lexsort((np.array([str(r["identifier"]) for r in rows]), rank))
    out = []
    for i in order:
        row = {k: v for k, v in rows[i].items() if k != "enabled"}
        out.append(
            {
                **row,
                "km": round(float(km[i]), 3),
                "hours": round(float(hours[i]), 3),
                "inside_hours": round(float(inside_h[i]), 3),
                "own_coverage_pct": round(100 * float(own[i]), 2),
                "inside_share_pct": round(100 * float(inside[i]), 2),
                **{f"part_{k}": round(float(v[i]), 4) for k, v in parts.items()},
                "score": float(total[i]),
                "rank": int(rank[i]),
                "verdict": str(verdict[i]),
                "verdict_zh": VERDICT_ZH[str(verdict[i])],
            }
        )
    return out


def rule(
    settings: CoverageSettings,
    window: Window,
    weights: dict[str, float],
    *,
    in_service: int,
    awarded_slots: int,
) -> dict[str, str]:
    """The ranking rule as printed on every answer, report and page (中文 and English), from
    the live settings and this window."""
    n_days, days = min_days(settings, window), window.days
    mode = settings.in_service
    zh_days = f"窗口 {days} 天中至少 {n_days} 天有定位"
    en_days = f"with fixes on at least {n_days} of the window's {days} days"
    zh_mode = {
        "assigned_and_active": f"启用、已分配嘎查村且{zh_days}",
        "assigned_or_active": f"启用，且已分配嘎查村或{zh_days}",
        "active": f"启用且{zh_days}",
        "assigned": "启用且已分配嘎查村",
    }[mode]
    en_mode = {
        "assigned_and_active": f"enabled, assigned to a village and {en_days}",
        "assigned_or_active": f"enabled, and assigned to a village or {en_days}",
        "active": f"enabled and {en_days}",
        "assigned": "enabled and assigned to a village",
    }[mode]
    used = [(k, w) for k, w in weights.items() if w > 0]
    zh_score = " + ".join(f"{w:.2f}×{COMPONENT_ZH[k]}" for k, w in used)
    en_score = " + ".join(f"{w:.2f} × {COMPONENT_EN[k]}" for k, w in used)
    award, flag, km = settings.award_share, settings.flag_share, settings.no_patrol_km
    zh = (
        f"在役车辆：{zh_mode}；已停用、未分配、无定位或有定位天数不足的车辆不参与排名，另列原因。"
        f"得分 = {zh_score}（里程、时长、巡查次数按在役最佳车辆归一，各项 0–1）。"
        f"在役车辆（{in_service} 辆）得分前 {award:.0%}（名次 ≤ {awarded_slots}）嘉奖，"
        f"后 {flag:.0%} 待改进；同分同名次，并列跨越嘉奖线时一并嘉奖。"
        f"窗口内里程不超过 {km:g} km 的车辆评为“无巡逻”，不予嘉奖，名次排在所有有巡逻的车辆之后。"
    )
    en = (
        f"In service: {en_mode}; disabled, unassigned, idle vehicles and those with fixes on "
        f"too few days are not ranked and are listed apart with the reason. "
        f"Score = {en_score} (km, hours and visits scaled by the best vehicle in service; "
        f"each part 0–1). The best {award:.0%} of the {in_service} vehicles in service "
        f"(rank ≤ {awarded_slots}) are awarded (嘉奖), the bottom {flag:.0%} flagged (待改进); "
        f"equal scores share a rank and a tie at the award cut is awarded whole. A vehicle "
        f"that drove {km:g} km or less in the window is 'no patrol' (无巡逻), never awarded, "
        f"and ranked after every vehicle that patrolled."
    )
    return {"zh": zh, "en": en}


def summary(counts: dict[str, Any]) -> str:
    """``在役 5 / 9 辆 vehicles in service · 嘉奖 award 3 · … · 未排名 not ranked 4 (…)``."""
    if not counts:
        return ""
    verdicts = " · ".join(
        f"{VERDICT_ZH[v]} {VERDICT_EN[v]} {counts.get(v, 0):,}" for v in VERDICT_ZH
    )
    reasons = ", ".join(
        f"{REASON_ZH[k]} {REASON_EN[k]} {n:,}"
        for k, n in counts.get("not_ranked_by_reason", {}).items()
        if n
    )
    return (
        f"在役 {counts['in_service']:,} / {counts['vehicles']:,} 辆 vehicles in service · "
        f"{verdicts} · 未排名 not ranked {counts['not_ranked']:,}"
        + (f" ({reasons})" if reasons else "")
    )


async def ranking(
    conn: AsyncConnection[Any],
    updater: CoverageUpdater,
    scope: Scope,
    window: Window,
) -> dict[str, Any]:
    """The vehicles in service in the scope ranked over the window; the others apart."""
    layout_id = await vehicle_layout(conn)
    if layout_id is not None:
        await materialize.ensure(conn, updater, layout_id, window.first, window.last)
    query = VEHICLE_WORK.format(scope=scope.where(sql.SQL("coalesce(d.home_village, '')")))
    params = {**scope.params(), "layout": layout_id, "d0": window.first, "d1": window.last}
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, params)
        rows = await cur.fetchall()
    s = updater.settings
    w = weights(s)
    reasons = out_of_service(rows, s, window)
    serving = [r for r, why in zip(rows, reasons, strict=True) if not why]
    ranked = score(
        serving,
        weights=w,
        award_share=s.award_share,
        flag_share=s.flag_share,
        no_patrol_km=s.no_patrol_km,
    )
    not_ranked = [
        {
            **{k: r[k] for k in ("device_id", "identifier", "plate", "name", "home_village")},
            "enabled": bool(r["enabled"]),
            "km": round(float(r["km"]), 3),
            "hours": round(float(r["hours"]), 3),
            "days_active": int(r["days_active"]),
            "reasons": why,
            "reason_text": "; ".join(f"{REASON_ZH[k]} {REASON_EN[k]}" for k in why),
        }
        for r, why in zip(rows, reasons, strict=True)
        if why
    ]
    not_ranked.sort(key=lambda r: (REASONS.index(r["reasons"][0]), r["identifier"]))
    slots = int(np.floor(s.award_share * len(ranked) + 1e-9))
    verdicts = [r["verdict"] for r in ranked]
    counts = {
        "vehicles": len(rows),
        "in_service": len(ranked),
        "award_slots": slots,
        **{v: verdicts.count(v) for v in VERDICT_ZH},
        "not_ranked": len(not_ranked),
        "not_ranked_by_reason": {k: sum(k in r["reasons"] for r in not_ranked) for k in REASONS},
    }
    return {
        "from": window.first.isoformat(),
        "to": window.last.isoformat(),
        "layout": layout_id,
        "weights": w,
        "award_share": s.award_share,
        "flag_share": s.flag_share,
        "in_service_rule": s.in_service,
        "in_service_min_days": min_days(s, window),
        "no_patrol_km": s.no_patrol_km,
        "counts": counts,
        "summary": summary(counts),
        "rule": rule(s, window, w, in_service=len(ranked), awarded_slots=slots),
        "vehicles": ranked,
        "not_ranked": not_ranked,
    }
