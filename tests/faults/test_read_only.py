"""A database that refuses writes — set read-only, or out of disk — while devices post: OsmAnd
answers 503 with Retry-After, 808 answers result 1 (failure), the batch API 503; nothing is
acknowledged that was not stored, and once the database takes writes again the devices' retries
bring every fix in exactly once, without restarting the server."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from psycopg import sql

from api.simulate import stored_per_second as stored
from tests.faults.conftest import Server, admin_token, admin_url, http_request
from tests.faults.fleet import Fleet, bounded, osmand_ids, phones, register, when

pytestmark = pytest.mark.faults
DEVICES = 15  # per protocol
FIXES = 40
REFUSALS = 40  # 503s / failure results the fleet must hear before and between snapshots

DISK_FULL = """
CREATE FUNCTION fault_disk_full() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'could not extend file: No space left on device' USING ERRCODE = 'disk_full';
END $$;
CREATE TRIGGER fault_disk_full BEFORE INSERT ON position
    FOR EACH STATEMENT EXECUTE FUNCTION fault_disk_full();
"""
DISK_FREED = "DROP TRIGGER fault_disk_full ON position; DROP FUNCTION fault_disk_full()"


def _read_only(url: str, *, on: bool) -> None:
    """``ALTER DATABASE … SET default_transaction_read_only``; turning it on also ends the
    database's sessions (as a failover to a standby would), turning it off does not."""
    name = sql.Identifier(url.rsplit("/", 1)[1])
    with psycopg.connect(admin_url(url), autocommit=True) as conn:
        if on:
            conn.execute(
                sql.SQL("ALTER DATABASE {} SET default_transaction_read_only = on").format(name)
            )
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (url.rsplit("/", 1)[1],),
            )
        else:
            conn.execute(
                sql.SQL("ALTER DATABASE {} RESET default_transaction_read_only").format(name)
            )


def _execute(url: str, statement: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(statement)


def _refusals(fleet: Fleet) -> int:
    return fleet.answers["osmand 503"] + fleet.answers["jt808 result 1"]


async def _refused_window(fleet: Fleet, url: str) -> None:
    """While writes are refused: the fleet hears refusals, and between two snapshots taken
    REFUSALS refusals apart neither the acknowledged set nor the stored rows change."""
    base = _refusals(fleet)
    await when(lambda: _refusals(fleet) >= base + REFUSALS, within=60, what="refusals heard")
    acked, rows = set(fleet.acked), stored(url, fleet.identifiers)
    assert acked <= set(rows)  # nothing acknowledged that is not stored
    base = _refusals(fleet)
    await when(lambda: _refusals(fleet) >= base + REFUSALS, within=60, what="more refusals")
    assert fleet.acked == acked
    assert stored(url, fleet.identifiers) == rows


def _post_batch(server: Server, token: str, identifier: str) -> tuple[int, dict[str, str]]:
    body = json.dumps(
        [{"device": identifier, "time": int(time.time()) - 30, "lat": 43.9, "lon": 116.0}]
    )
    status, headers, _ = http_request(
        server.ports["api"],
        "/api/v1/positions",
        method="POST",
        body=body,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    return status, headers


async def _until(check: Callable[[], Any], want: int, *, attempts: int) -> int:
    """Repeat a request until it answers ``want`` (the pool may hand out a stale session or
    two first); returns the last status."""
    status = 0
    for _ in range(attempts):
        status = (await asyncio.to_thread(check))[0]
        if status == want:
            break
        await asyncio.sleep(0.2)
    return status


def test_read_only_and_disk_full_refuse_and_then_recover(server: Server, fault_db: str) -> None:
    token = admin_token(fault_db)
    osmand, jt808 = osmand_ids(DEVICES, "ro"), phones(DEVICES, 3)
    register(fault_db, [*osmand, "ro-batch"], jt808)
    fleet = Fleet(server.ports["osmand"], server.ports["jt808"], osmand, jt808, fixes=FIXES)
    batch_refused: list[tuple[int, dict[str, str]]] = []
    batch_after: list[int] = []

    async def scenario() -> None:
        devices = asyncio.create_task(fleet.run())
        total = len(fleet.sent)
        await when(lambda: len(fleet.acked) >= total // 5, within=60, what="a fifth acked")

        await asyncio.to_thread(_read_only, fault_db, on=True)
        await _refused_window(fleet, fault_db)
        batch_refused.append(await asyncio.to_thread(_post_batch, server, token, "ro-batch"))
        await asyncio.to_thread(_read_only, fault_db, on=False)
        batch_after.append(
            await _until(lambda: _post_batch(server, token, "ro-batch"), 200, attempts=15)
        )

        await asyncio.to_thread(_execute, fault_db, DISK_FULL)
        await _refused_window(fleet, fault_db)
        batch_refused.append(await asyncio.to_thread(_post_batch, server, token, "ro-batch"))
        await asyncio.to_thread(_execute, fault_db, DISK_FREED)

        await bounded(devices, within=120, what="every device done once writes work again")

    asyncio.run(scenario())

    for status, headers in batch_refused:
        assert status == 503
        assert headers.get("retry-after") == "5"
    assert batch_after == [200]
    assert fleet.answers["osmand 503 without Retry-After"] == 0
    assert not {k for k in fleet.answers if k.startswith("osmand 5") and k != "osmand 503"}
    assert fleet.acked == fleet.sent
    rows = stored(fault_db, fleet.identifiers)
    assert set(rows) == fleet.sent
    assert set(rows.values()) == {1}
    assert server.starts == 1
