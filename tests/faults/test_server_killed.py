"""kill -9 of the server while 100 devices post through OsmAnd and JT/T 808: after the restart
every fix any device saw acknowledged is in ``position`` exactly once, and so is every fix the
devices resent because its answer was lost."""

from __future__ import annotations

import asyncio

import pytest

from api.simulate import stored_per_second as stored
from tests.faults.conftest import Server
from tests.faults.fleet import Fleet, bounded, osmand_ids, phones, register, when

pytestmark = pytest.mark.faults
DEVICES = 50  # per protocol
FIXES = 40


def test_kill_9_mid_stream_loses_and_doubles_nothing(server: Server, fault_db: str) -> None:
    osmand, jt808 = osmand_ids(DEVICES, "kill"), phones(DEVICES, 1)
    register(fault_db, osmand, jt808)
    fleet = Fleet(server.ports["osmand"], server.ports["jt808"], osmand, jt808, fixes=FIXES)
    acked_before_kill: set[tuple[str, int]] = set()

    async def scenario() -> None:
        devices = asyncio.create_task(fleet.run())
        total = len(fleet.sent)
        await when(lambda: len(fleet.acked) >= total // 3, within=60, what="a third acked")
        server.kill9()
        acked_before_kill.update(fleet.acked)
        await asyncio.sleep(0.5)  # devices meet refused connections and keep their fixes
        await asyncio.to_thread(server.start)
        await bounded(devices, within=120, what="every device done after the restart")

    asyncio.run(scenario())

    rows = stored(fault_db, fleet.identifiers)
    assert fleet.done == 2 * DEVICES
    assert len(acked_before_kill) < len(fleet.sent)  # the kill really came mid-stream
    assert fleet.answers["osmand connection error"] > 0, fleet.answers
    assert fleet.answers["jt808 connection error"] > 0, fleet.answers
    assert fleet.acked == fleet.sent
    assert set(rows) == fleet.sent  # every acknowledged fix, nothing else
    assert set(rows.values()) == {1}  # and each exactly once
    assert fleet.answers["osmand 500"] == 0
