"""Escalation (网格预警 → 吹哨 → 报到) and notifications, run by a periodic task.

An incident nobody has accepted widens its responders one level every T seconds (grid →
village → township → county); it also widens at once when no responder is within limits, or
when a dispatcher blows the whistle by hand. Every step is an ``incident_event`` and a
``notification`` to the unit of the new level (the grid worker, the village leader, the
township, the county). When ``GRIDPATROL_DISPATCH_WEBHOOK_URL`` is set, notifications are
POSTed there as JSON (at least once: a notification is claimed, sent, then marked delivered).

The clock is injected (``DispatchTicker(clock=…)``), so tests drive time by hand.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
from psycopg import AsyncConnection, sql
from psycopg.rows import dict_row

from api.dispatch import UNACCEPTED
from api.scope import Scope
from api.settings import DispatchSettings
from gis.dispatch import LEVEL_LABELS, LEVELS, TOP_LEVEL, escalation_steps

NOTIFY = """
INSERT INTO notification (incident_id, level, unit_code, recipient, message, created_at)
SELECT i.id, u.level, unit.code,
       coalesce(r.recipient, a.name_zh),
       format('[%%s] 警情 #%%s %%s · 优先级 %%s · %%s %%s', (%(labels)s::text[])[u.level + 1],
              i.id, i.kind, i.priority, unit.code, coalesce(a.name_zh, '')),
       coalesce(u.at, now())
  FROM unnest(%(ids)s::bigint[], %(levels)s::int[], %(at)s::timestamptz[])
       WITH ORDINALITY AS u(id, level, at, n)
  JOIN incident i ON i.id = u.id
 CROSS JOIN LATERAL (SELECT CASE u.level WHEN 0 THEN coalesce(i.grid_code, i.village_code)
                                         WHEN 1 THEN i.village_code
                                         WHEN 2 THEN left(i.village_code, 9)
                                         ELSE left(i.village_code, 6) END AS code) unit
  LEFT JOIN admin_area a ON a.code = rpad(left(unit.code, 12), 12, '0')
  LEFT JOIN LATERAL (
      SELECT s.name || ' ' || s.phone AS recipient FROM staff s
       WHERE s.active AND (
             (u.level = 0 AND s.id = (SELECT g.worker_id FROM grid g
                                        JOIN grid_layout l ON l.id = g.layout_id
                                       WHERE l.status = 'active' AND l.purpose = 'patrol'
                                         AND g.code = i.grid_code LIMIT 1))
          OR (u.level = 1 AND s.role = 'leader' AND s.village_code = i.village_code))
       ORDER BY s.id LIMIT 1) r ON true
 ORDER BY u.n
"""
DUE = sql.SQL(
    """
    SELECT i.id, extract(epoch FROM coalesce(i.escalated_at, i.created_at))::float8,
           i.escalation_level
      FROM incident i
     WHERE i.status = ANY(%(statuses)s) AND i.escalation_level < %(top)s
       AND coalesce(i.escalated_at, i.created_at) <= to_timestamp(%(cutoff)s) AND {scope}
     ORDER BY i.id
       FOR UPDATE OF i SKIP LOCKED
    """
)
RAISE = """
UPDATE incident i SET escalation_level = u.level, escalated_at = to_timestamp(u.at)
  FROM unnest(%(ids)s::bigint[], %(levels)s::int[], %(at)s::float8[]) AS u(id, level, at)
 WHERE i.id = u.id
"""
STEP_EVENTS = """
INSERT INTO incident_event (incident_id, at, kind, level, actor, detail)
SELECT u.id, to_timestamp(u.at), 'escalated', u.level, 'system',
       jsonb_build_object('reason', 'no acceptance within T', 'after_s', %(after)s::float8,
                          'to', (%(names)s::text[])[u.level + 1])
  FROM unnest(%(ids)s::bigint[], %(levels)s::int[], %(at)s::float8[]) AS u(id, level, at)
"""
CLAIM = sql.SQL(
    """
    UPDATE notification n SET attempts = n.attempts + 1
     WHERE n.id IN (SELECT p.id FROM notification p JOIN incident i ON i.id = p.incident_id
                     WHERE p.delivered_at IS NULL AND p.attempts < %(max)s AND {scope}
                     ORDER BY p.id LIMIT %(limit)s FOR UPDATE OF p SKIP LOCKED)
    RETURNING n.id
    """
)
PAYLOAD = """
SELECT n.id AS notification_id, n.incident_id, n.level, n.unit_code, n.recipient, n.message,
       n.created_at, i.kind, i.priority, i.status, i.grid_code, i.village_code,
       ST_X(i.geom) AS lon, ST_Y(i.geom) AS lat
  FROM notification n JOIN incident i ON i.id = n.incident_id
 WHERE n.id = ANY(%s) ORDER BY n.id
"""


async def notify(
    conn: AsyncConnection[Any],
    incident_ids: Sequence[int],
    levels: Sequence[int],
    *,
    at: Sequence[datetime | None] | None = None,
) -> None:
    """Store one notification per (incident, level) for the unit of that level."""
    if not incident_ids:
        return
    await conn.execute(
        NOTIFY,
        {
            "ids": list(incident_ids),
            "levels": list(levels),
            "at": list(at) if at is not None else [None] * len(incident_ids),
            "labels": list(LEVEL_LABELS),
        },
    )


async def escalate_due(
    conn: AsyncConnection[Any],
    settings: DispatchSettings,
    now_s: float,
    *,
    scope: Scope | None = None,
) -> int:
    """Escalate every unaccepted incident whose level is older than T at ``now_s``.

    Parameters
    ----------
    conn : AsyncConnection
        An autocommit connection (the work is one transaction).
    settings : DispatchSettings
        ``escalate_after_s`` is T.
    now_s : float
        The clock (epoch seconds); injected so tests can move time.
    scope : Scope, optional
        Only incidents in this scope (default: all).

    Returns
    -------
    int
        Escalation steps taken (an overdue incident may take several, each at its due time).
    """
    scope = scope or Scope.everything()
    after = settings.escalate_after_s
    async with conn.transaction():
        rows = await (
            await conn.execute(
                DUE.format(scope=scope.where("i.area_code", "i.grid_code")),
                {
                    **scope.params(),
                    "statuses": list(UNACCEPTED),
                    "top": TOP_LEVEL,
                    "cutoff": now_s - after,
                },
            )
        ).fetchall()
        if not rows:
            return 0
        ids = np.array([r[0] for r in rows], dtype=np.int64)
        steps = escalation_steps(
            np.array([r[1] for r in rows]), np.array([r[2] for r in rows]), now_s, after_s=after
        )
        moved = steps.new_level != np.array([r[2] for r in rows])
        await conn.execute(
            RAISE,
            {
                "ids": ids[moved].tolist(),
                "levels": steps.new_level[moved].tolist(),
                "at": steps.new_at_s[moved].tolist(),
            },
        )
        step_ids = ids[steps.incident].tolist()
        await conn.execute(
            STEP_EVENTS,
            {
                "ids": step_ids,
                "levels": steps.level.tolist(),
                "at": steps.at_s.tolist(),
                "after": after,
                "names": list(LEVELS),
            },
        )
        await notify(
            conn,
            step_ids,
            steps.level.tolist(),
            at=[datetime.fromtimestamp(t, tz=UTC) for t in steps.at_s],
        )
    return len(step_ids)


async def escalate_now(
    conn: AsyncConnection[Any], incident_id: int, *, actor: str, reason: str
) -> int | None:
    """One level up at once (no candidate within limits, or a dispatcher's whistle); call in
    the caller's transaction. Returns the new level, None when already at the top."""
    row = await (
        await conn.execute(
            "UPDATE incident SET escalation_level = escalation_level + 1, escalated_at = now() "
            "WHERE id = %s AND escalation_level < %s RETURNING escalation_level",
            (incident_id, TOP_LEVEL),
        )
    ).fetchone()
    if row is None:
        return None
    level = int(row[0])
    await conn.execute(
        "INSERT INTO incident_event (incident_id, kind, level, actor, detail) "
        "VALUES (%s, 'escalated', %s, %s, jsonb_build_object('reason', %s::text, 'to', %s::text))",
        (incident_id, level, actor, reason, LEVELS[level]),
    )
    await notify(conn, [incident_id], [level])
    return level


def _post(url: str, body: bytes, timeout: float) -> int:
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"webhook URL must be http(s): {url}")
    request = urllib.request.Request(  # noqa: S310 - scheme checked above
        url, data=body, method="POST", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
        return int(response.status)


@dataclass(frozen=True)
class Delivery:
    """What one webhook round did."""

    delivered: int = 0
    failed: int = 0


async def deliver(
    conn: AsyncConnection[Any],
    settings: DispatchSettings,
    *,
    limit: int = 100,
    scope: Scope | None = None,
) -> Delivery:
    """POST pending notifications (of incidents in ``scope``, default all) to the webhook, one
    JSON object each; failures are retried on later rounds up to ``webhook_max_attempts``
    times (the last error is kept)."""
    url = settings.webhook_url
    if not url:
        return Delivery()
    scope = scope or Scope.everything()
    claimed = await (
        await conn.execute(
            CLAIM.format(scope=scope.where("i.area_code", "i.grid_code")),
            {**scope.params(), "max": settings.webhook_max_attempts, "limit": limit},
        )
    ).fetchall()
    if not claimed:
        return Delivery()
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(PAYLOAD, ([r[0] for r in claimed],))
        rows = await cur.fetchall()
    done: list[int] = []
    failed: list[tuple[int, str]] = []
    for row in rows:
        body = {**row, "level_name": LEVELS[row["level"]], "label": LEVEL_LABELS[row["level"]]}
        data = json.dumps(body, default=str, ensure_ascii=False).encode()
        try:
            status = await asyncio.to_thread(_post, url, data, settings.webhook_timeout_s)
        except Exception as exc:  # noqa: BLE001 - any failure is retried later and kept
            failed.append((row["notification_id"], f"{type(exc).__name__}: {exc}"[:500]))
            continue
        if 200 <= status < 300:
            done.append(row["notification_id"])
        else:
            failed.append((row["notification_id"], f"HTTP {status}"))
    await conn.execute(
        "UPDATE notification SET delivered_at = now(), last_error = NULL WHERE id = ANY(%s)",
        (done,),
    )
    await conn.execute(
        "UPDATE notification n SET last_error = u.e "
        "FROM unnest(%s::bigint[], %s::text[]) AS u(id, e) WHERE n.id = u.id",
        ([f[0] for f in failed], [f[1] for f in failed]),
    )
    return Delivery(delivered=len(done), failed=len(failed))


@dataclass
class DispatchTicker:
    """The periodic dispatch job: escalate what is due, forward notifications.

    Parameters
    ----------
    settings : DispatchSettings
        T, the webhook.
    clock : callable
        Seconds since the epoch (``time.time``; a fake one in tests).
    scope : Scope, optional
        Only incidents in this scope (default: all).
    """

    settings: DispatchSettings
    clock: Callable[[], float] = time.time
    scope: Scope | None = None

    async def tick(self, conn: AsyncConnection[Any]) -> tuple[int, Delivery]:
        """One round; returns (escalation steps, webhook delivery)."""
        steps = await escalate_due(conn, self.settings, self.clock(), scope=self.scope)
        return steps, await deliver(conn, self.settings, scope=self.scope)
