"""Response times per grid / village / township beside coverage, from dispatch's statistics.

``api.dispatch.stats.response_times`` does the counting in SQL; here its seconds become
minutes and its columns get bilingual labels for the HTML, XLSX and PDF reports.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import pandas as pd
from psycopg import AsyncConnection

from api.dispatch.stats import response_times
from api.reports.labels import Column
from api.scope import Scope

# dispatch's counts; its ``…_s`` seconds become minutes here
COUNTS = (
    ("incidents", "警情数", "Incidents"),
    ("dispatched", "已派警", "Dispatched"),
    ("accepted", "已接警", "Accepted"),
    ("arrived", "已到达", "Arrived"),
    ("cleared", "已处置", "Cleared"),
    ("cancelled", "已撤销", "Cancelled"),
    ("escalated", "升级", "Escalated"),
)
STAGES = (
    ("to_dispatch", "派警", "to dispatch"),
    ("to_accept", "接警", "to accept"),
    ("to_arrive", "到达", "to arrive"),
    ("travel", "途中", "travel"),
)
STATS = (("mean", "均值", "mean"), ("median", "中位", "median"), ("p90", "P90", "p90"))


async def gather(
    conn: AsyncConnection[Any], scope: Scope, first: date, last: date, level: str
) -> pd.DataFrame:
    """Response times per unit of ``level`` (an empty table when no incident was created).

    Returns
    -------
    DataFrame
        Dispatch's rows with every ``…_s`` column turned into minutes (``…_min``).
    """
    frame = pd.DataFrame(await response_times(conn, scope, first, last, level))
    if frame.columns.empty:  # no incidents: keep the table's shape
        frame = pd.DataFrame(columns=["code", "name_zh", *(key for key, _, _ in COUNTS)])
    for key in [k for k in frame.columns if str(k).endswith("_s")]:
        frame[f"{str(key)[:-2]}_min"] = pd.to_numeric(frame.pop(key), errors="coerce") / 60
    return frame


def columns(frame: pd.DataFrame) -> list[Column]:
    """Bilingual columns for dispatch's known fields, then any others as they come."""
    known = [Column("code", "代码", "Code", width=17), Column("name_zh", "名称", "Name")]
    known += [Column(key, zh, en, "int") for key, zh, en in COUNTS]
    for stage, szh, sen in STAGES:
        for stat, tzh, ten in STATS:
            key = f"{stage}_{stat}_min"
            known.append(Column(key, f"{szh}{tzh}min", f"{sen} {ten} min", "float1"))
    present = [c for c in known if c.key in frame.columns]
    seen = {c.key for c in present}
    numeric = pd.api.types.is_numeric_dtype
    present += [
        Column(str(k), str(k), "", "float1" if numeric(frame[k]) else "text")
        for k in frame.columns
        if k not in seen
    ]
    return present
