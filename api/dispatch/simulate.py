"""Simulated incidents for the demo: Poisson arrivals at random alert points.

``gridpatrol incidents simulate --rate 10/h`` creates incidents (flagged ``synthetic``) as an
alarm-phone call would: at an alert point, of a kind drawn from a fixed mix, paced against the
clock (``--speedup``) or all at once.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray
from psycopg import AsyncConnection

from api.auth import Principal
from api.dispatch.incidents import IncidentIn, create_incident
from api.settings import DispatchSettings

UNITS_S = {"s": 1.0, "sec": 1.0, "min": 60.0, "m": 60.0, "h": 3600.0, "hour": 3600.0, "d": 86400.0}
# kind, weight, priorities to draw from (草原110 calls: livestock, fire, traffic, disputes …)
KINDS: tuple[tuple[str, float, tuple[int, ...]], ...] = (
    ("livestock_theft 偷盗牲畜", 0.30, (2, 3)),
    ("dispute 纠纷", 0.20, (3, 4)),
    ("traffic 交通事故", 0.15, (1, 2)),
    ("grassland_fire 草原火情", 0.10, (1,)),
    ("help 求助", 0.15, (3, 4, 5)),
    ("missing_person 人员走失", 0.10, (1, 2)),
)
_RATE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(?:/\s*([a-z]+))?\s*$")


def parse_rate(text: str) -> float:
    """Incidents per second from ``10/h``, ``2/min``, ``50/d``, ``0.1/s`` (bare: per hour).

    Raises
    ------
    ValueError
        For anything else, or a rate that is not positive.
    """
    match = _RATE.match(text.lower())
    if not match or (match.group(2) or "h") not in UNITS_S:
        raise ValueError(f"rate {text!r}: write it as N/h, N/min, N/d or N/s")
    rate = float(match.group(1)) / UNITS_S[match.group(2) or "h"]
    if rate <= 0:
        raise ValueError("the rate must be positive")
    return rate


def arrival_offsets_s(
    rate_per_s: float, count: int, rng: np.random.Generator
) -> NDArray[np.float64]:
    """Seconds from the start to each of ``count`` Poisson arrivals."""
    return np.cumsum(rng.exponential(1.0 / rate_per_s, size=count))


def draw_kinds(count: int, rng: np.random.Generator) -> list[tuple[str, int]]:
    """(kind, priority) for ``count`` incidents from the fixed mix."""
    weights = np.array([w for _, w, _ in KINDS])
    picks = rng.choice(len(KINDS), size=count, p=weights / weights.sum())
    return [(KINDS[i][0], int(rng.choice(KINDS[i][2]))) for i in picks]


async def simulate_incidents(
    conn: AsyncConnection[Any],
    actor: Principal,
    settings: DispatchSettings,
    *,
    rate_per_s: float,
    count: int,
    area: str = "",
    seed: int = 110,
    speedup: float = 0.0,
    sleep: Callable[[float], Any] = asyncio.sleep,
    on_created: Callable[[dict[str, Any]], None] | None = None,
) -> list[int]:
    """Create ``count`` synthetic incidents at random alert points under ``area``.

    Parameters
    ----------
    rate_per_s : float
        Mean arrivals per second of simulated time.
    count : int
        How many incidents.
    area : str
        NBS code prefix of the alert points to use ('' = all).
    seed : int
        Same seed, same incidents.
    speedup : float
        Simulated seconds per real second (1 = real time); 0 creates them all at once.

    Returns
    -------
    list of int
        The new incident ids.

    Raises
    ------
    ValueError
        When no alert point lies in ``area``.
    """
    rows = await (
        await conn.execute(
            "SELECT id FROM alert_point WHERE coalesce(village_code, '') LIKE %s ORDER BY id",
            (area + "%",),
        )
    ).fetchall()
    if not rows:
        raise ValueError(f"no alert points under {area or 'any area'}; load the demo first")
    rng = np.random.default_rng(seed)
    points = rng.choice([r[0] for r in rows], size=count)
    offsets = arrival_offsets_s(rate_per_s, count, rng)
    created: list[int] = []
    previous = 0.0
    for point, (kind, priority), at in zip(points, draw_kinds(count, rng), offsets, strict=True):
        if speedup > 0:
            await sleep((at - previous) / speedup)
            previous = at
        incident = await create_incident(
            conn,
            actor,
            IncidentIn(
                kind=kind,
                priority=priority,
                alert_point_id=int(point),
                reporter="simulated alarm phone",
                description="simulated incident (synthetic)",
            ),
            settings,
            synthetic=True,
        )
        created.append(int(incident["id"]))
        if on_created is not None:
            on_created(incident)
    return created
