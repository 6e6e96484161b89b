"""Ingest figures cut to a scope, for admins who do not hold the whole league.

``ingest_counter`` counts outcomes per day and protocol, not per device, so it cannot be cut to
a scope. A scoped admin gets figures counted from the rows themselves instead, for the devices
homed in their scope: fixes stored (``position``, by the day they were received) and fixes
quarantined per reason (``position_rejected``). Duplicates and refusals of devices nobody knows
leave no row naming an in-scope device, so a scoped admin does not see them at all.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from psycopg import AsyncConnection, sql

from api.scope import Scope

SCOPED = sql.SQL(
    """
    SELECT p.protocol, 'stored' AS outcome, count(*)::bigint AS n
      FROM device d JOIN position p ON p.device_id = d.id
     WHERE {devices} AND {received_p}
     GROUP BY p.protocol
    UNION ALL
    SELECT r.protocol, r.reason, count(*)::bigint
      FROM device d JOIN position_rejected r ON r.device_id = d.id
     WHERE {devices} AND {received_r}
     GROUP BY r.protocol, r.reason
    ORDER BY 1, 2
    """
)


def _received(column: str) -> sql.Composable:
    day = sql.SQL("({} AT TIME ZONE 'UTC')::date").format(sql.Identifier(*column.split(".")))
    return sql.SQL(
        "(%(since)s::timestamptz IS NULL OR {day} >= (%(since)s AT TIME ZONE 'UTC')::date) AND "
        "(%(until)s::timestamptz IS NULL OR {day} <= (%(until)s AT TIME ZONE 'UTC')::date)"
    ).format(day=day)


async def scoped_ingest_stats(
    conn: AsyncConnection[Any], scope: Scope, *, since: datetime | None, until: datetime | None
) -> dict[str, Any]:
    """Stored and quarantined fixes per protocol of the devices homed in ``scope`` (days are
    UTC days of receipt, as for the league-wide counters)."""
    query = SCOPED.format(
        devices=scope.where(sql.SQL("coalesce(d.home_village, '')")),
        received_p=_received("p.received_at"),
        received_r=_received("r.received_at"),
    )
    rows = await (
        await conn.execute(query, {**scope.params(), "since": since, "until": until})
    ).fetchall()
    by_protocol: dict[str, dict[str, int]] = {}
    totals: dict[str, int] = {}
    for protocol, outcome, n in rows:
        by_protocol.setdefault(protocol, {})[outcome] = int(n)
        totals[outcome] = totals.get(outcome, 0) + int(n)
    return {
        "totals": totals,
        "by_protocol": by_protocol,
        "scope": scope.codes,
        "note": "counted for the devices of your scope; duplicates and unknown devices are "
        "counted league-wide only",
    }
