"""PostgreSQL restarted while devices post: the server (not restarted) answers 503 with
Retry-After — never 500, never a hang — while the database is down, reconnects its writer and
its pool by itself, and the devices' retries bring every fix in exactly once."""

from __future__ import annotations

import asyncio
import time

import pytest

from api.db.cluster import EmbeddedCluster
from api.simulate import stored_per_second as stored
from tests.faults.conftest import Server, admin_token, http_request
from tests.faults.fleet import Fleet, bounded, osmand_ids, phones, register, when

pytestmark = pytest.mark.faults
DEVICES = 50  # per protocol
FIXES = 40


def test_database_restart_mid_ingest(
    server: Server, fault_db: str, fault_cluster: EmbeddedCluster
) -> None:
    token = admin_token(fault_db)
    osmand, jt808 = osmand_ids(DEVICES, "pgr"), phones(DEVICES, 2)
    probe = "pgr-probe"
    register(fault_db, [*osmand, probe], jt808)
    fleet = Fleet(server.ports["osmand"], server.ports["jt808"], osmand, jt808, fixes=FIXES)
    while_down: list[tuple[int, dict[str, str]]] = []

    def probe_osmand() -> tuple[int, dict[str, str]]:
        target = f"/?id={probe}&lat=43.9&lon=116.0&timestamp={int(time.time()) - 60}"
        status, headers, _ = http_request(server.ports["osmand"], target, timeout=20)
        return status, headers

    async def scenario() -> None:
        devices = asyncio.create_task(fleet.run())
        total = len(fleet.sent)
        await when(lambda: len(fleet.acked) >= total // 4, within=60, what="a quarter acked")
        await asyncio.to_thread(fault_cluster.stop, mode="fast")
        while_down.append(await asyncio.to_thread(probe_osmand))
        await asyncio.sleep(1.0)  # the devices meet the outage
        while_down.append(await asyncio.to_thread(probe_osmand))
        await asyncio.to_thread(fault_cluster.start)
        await bounded(devices, within=120, what="every device done after the database restart")

    asyncio.run(scenario())

    for status, headers in while_down:
        assert status == 503
        assert "retry-after" in headers
    # the API's pool recovered by itself: the first request after the restart succeeds
    status, _, body = http_request(
        server.ports["api"], "/api/v1/devices/state", headers={"Authorization": f"Bearer {token}"}
    )
    assert status == 200, body
    status, _, body = http_request(server.ports["api"], "/healthz")
    assert status == 200, body

    rows = stored(fault_db, fleet.identifiers)
    assert fleet.answers["osmand 503"] > 0, fleet.answers  # the devices did meet the outage
    assert fleet.answers["osmand 500"] == fleet.answers["osmand 503 without Retry-After"] == 0
    assert fleet.acked == fleet.sent
    assert set(rows) == fleet.sent
    assert set(rows.values()) == {1}
    assert server.proc is not None
    assert server.proc.poll() is None  # the same process throughout
    assert server.starts == 1
