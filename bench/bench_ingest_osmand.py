"""OsmAnd single-fix ingest: 1,000 simulated devices with keep-alive on loopback, each fix
durable (group commit) before its answer. Target ≥ 4,000 fixes/s with p99 < 20 ms."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import psycopg

from api.auth import SYSTEM
from api.demo import load_demo
from api.devices import DeviceIn, import_devices
from bench.common import percentiles_ms, settle, throwaway_database, write_result
from bench.load import osmand_load, server_process

VILLAGE = "152502100200"


async def _register(url: str, n: int) -> tuple[list[str], dict[str, str]]:
    """The devices and their OsmAnd keys (sent with every fix, as real clients do)."""
    identifiers = [f"osm-{i:05d}" for i in range(n)]
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await load_demo(conn)
        created = await import_devices(
            conn, SYSTEM, [DeviceIn(identifier=i, home_village=VILLAGE) for i in identifiers]
        )
    return identifiers, {str(row["identifier"]): str(row["osmand_key"]) for row, _ in created}


def _count(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM position WHERE protocol = 'osmand'").fetchone()
    return int(row[0]) if row else 0


def run(quick: bool = False) -> dict[str, Any]:
    devices = 1000
    rate = 5.0  # fixes per device per second → 5,000 fixes/s offered
    seconds = 6.0 if quick else 20.0
    try:
        import uvloop

        runner: Callable[..., Any] = uvloop.run
    except ImportError:
        runner = asyncio.run
    with throwaway_database() as url:
        identifiers, keys = asyncio.run(_register(url, devices))
        settle(url)
        # 1,000 devices on one loopback address: no per-address limit
        with server_process(
            url, "ingest_osmand", GRIDPATROL_OSMAND_ADDRESS_RATE_PER_S="0"
        ) as ports:
            start_ms = int((time.time() - 3600) * 1000)
            ok, latencies, failures, elapsed = runner(
                osmand_load(
                    ports["osmand"],
                    identifiers,
                    rate_per_device=rate,
                    seconds=seconds,
                    start_ms=start_ms,
                    center=(43.90, 116.00),
                    keys=keys,
                )
            )
        stored = _count(url)
    figures = {
        "devices": devices,
        "offered_fixes_per_s": devices * rate,
        "fixes": ok,
        "fixes_per_s": round(ok / elapsed),
        **percentiles_ms(latencies),
        "failures": len(failures),
        "stored_rows": stored,
        "lost": ok - stored,
        "baseline": "offered load (open loop, keep-alive, each answer after commit)",
        "ratio_to_offered": round(ok / elapsed / (devices * rate), 3),
        "target_fixes_per_s": 4000,
        "target_p99_ms": 20,
    }
    write_result("ingest_osmand", figures)
    return figures
