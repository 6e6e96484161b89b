"""Nearest-responder dispatch: top-5 candidates among 100,000 live vehicles (straight-line ETA)
through the service function and the HTTP endpoint, and top-5 road ETAs on a county-sized
synthetic graph (≥ 100,000 edges). Targets: service p99 < 5 ms, road p99 < 50 ms. Baselines in
the same run: a bare KNN query on device_state, a bare pgr_dijkstraCost over the whole graph."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import numpy as np
import psycopg

from api.auth import SYSTEM
from api.dispatch.candidates import Target, rank_candidates
from api.roads import store_graph
from api.scope import Scope
from api.settings import DispatchSettings
from api.users import create_user
from bench.common import percentiles_ms, throwaway_database, write_result
from bench.load import server_process
from gis.roads import Ways, node_ways

COUNTY = "152599"  # a made-up county: nothing else lives there
LON0, LAT0, SIZE_DEG = 116.0, 43.0, 1.0  # ≈ 81 km × 111 km
VILLAGES = 100
KNN = (
    "SELECT device_id FROM device_state "
    "ORDER BY geom <-> ST_SetSRID(ST_MakePoint(%s, %s), 4326) LIMIT 20"
)


async def _fleet(url: str, vehicles: int) -> None:
    """A county of 100 square villages and ``vehicles`` vehicles: 90 % available and fresh,
    the rest busy, off duty or stale (so exclusions happen)."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute(
            """
            INSERT INTO admin_area (code, level, name_zh, synthetic, geom)
            SELECT %(county)s || '100' || lpad(v::text, 3, '0'), 'village', 'bench ' || v, true,
                   ST_Multi(ST_MakeEnvelope(%(x)s + (v %% 10) * 0.1, %(y)s + (v / 10) * 0.1,
                                            %(x)s + (v %% 10 + 1) * 0.1,
                                            %(y)s + (v / 10 + 1) * 0.1, 4326))
              FROM generate_series(200, 199 + %(n)s) AS g(v)
            """,
            {"county": COUNTY, "x": LON0, "y": LAT0, "n": VILLAGES},
        )
        await conn.execute("SELECT setseed(0.11)")
        await conn.execute(
            """
            INSERT INTO device (identifier, kind, plate, home_village)
            SELECT 'bench-' || lpad(i::text, 6, '0'), 'vehicle', 'B' || i,
                   %(county)s || '100' || lpad((200 + i %% %(v)s)::text, 3, '0')
              FROM generate_series(1, %(n)s) AS g(i)
            """,
            {"county": COUNTY, "v": VILLAGES, "n": vehicles},
        )
        await conn.execute(
            """
            INSERT INTO device_state (device_id, fix_time, lat, lon, geom, received_at, protocol,
                                      status)
            SELECT id, now() - (CASE WHEN r < 0.95 THEN random() * 200 ELSE 1000 END)
                               * interval '1 second', y, x, ST_SetSRID(ST_MakePoint(x, y), 4326),
                   now(), 'bench',
                   CASE WHEN r < 0.90 THEN 'available' WHEN r < 0.93 THEN 'busy'
                        ELSE 'off_duty' END
              FROM (SELECT id, %(x)s + random() * %(s)s AS x, %(y)s + random() * %(s)s AS y,
                           random() AS r FROM device) d
            """,
            {"x": LON0, "y": LAT0, "s": SIZE_DEG},
        )
        await conn.execute("ANALYZE device")
        await conn.execute("ANALYZE device_state")


def _lattice(side: int, rng: np.random.Generator) -> Ways:
    """A jittered ``side`` × ``side`` road lattice over the county: every 10th line a
    secondary road, the rest tracks; 3 % of the pieces missing."""
    step = SIZE_DEG / (side - 1)
    ii, jj = np.meshgrid(np.arange(side), np.arange(side), indexing="ij")
    x = LON0 + ii * step + rng.normal(0, step / 10, ii.shape)
    y = LAT0 + jj * step + rng.normal(0, step / 10, ii.shape)
    pieces, classes = [], []
    for di, dj in ((1, 0), (0, 1)):
        a = (slice(0, side - di), slice(0, side - dj))
        b = (slice(di, side), slice(dj, side))
        major = ((jj[a] % 10 == 0) if di else (ii[a] % 10 == 0)).ravel()
        keep = rng.random(major.size) > 0.03
        starts = np.column_stack([x[a].ravel(), y[a].ravel()])[keep]
        ends = np.column_stack([x[b].ravel(), y[b].ravel()])[keep]
        pieces += [np.array([s, e]) for s, e in zip(starts, ends, strict=True)]
        classes += ["secondary" if m else "track" for m in major[keep]]
    speeds = np.array([60.0 if c == "secondary" else 25.0 for c in classes])
    return Ways(
        coords=pieces,
        highway=classes,
        name=[None] * len(pieces),
        oneway=np.zeros(len(pieces), dtype=np.int8),
        speed_kmh=speeds,
        osm_id=np.zeros(len(pieces), dtype=np.int64),
    )


def _targets(n: int, rng: np.random.Generator) -> list[Target]:
    x = LON0 + 0.05 + rng.random(n) * (SIZE_DEG - 0.1)
    y = LAT0 + 0.05 + rng.random(n) * (SIZE_DEG - 0.1)
    village = f"{COUNTY}100200"
    return [
        Target(i, float(a), float(b), None, (), village, "rural", 3)
        for i, (a, b) in enumerate(zip(x, y, strict=True))
    ]


async def _time_calls(calls: list[Any]) -> list[float]:
    samples = []
    for call in calls:
        start = time.perf_counter()
        await call()
        samples.append(time.perf_counter() - start)
    return samples


async def _straight(url: str, targets: list[Target], settings: DispatchSettings) -> dict[str, Any]:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        scope = Scope.everything()

        def service(t: Target) -> Any:
            return lambda: rank_candidates(conn, scope, t, settings, k=5)

        def bare(t: Target) -> Any:
            async def go() -> None:
                await (await conn.execute(KNN, (t.lon, t.lat))).fetchall()

            return go

        await _time_calls([service(t) for t in targets[:50]] + [bare(t) for t in targets[:50]])
        found = await rank_candidates(conn, scope, targets[0], settings, k=5)
        assert len(found.candidates) == 5, found
        # interleaved, so that noise on a shared machine hits both alike
        both = await _time_calls([call for t in targets for call in (service(t), bare(t))])
    return {"service": both[0::2], "knn": both[1::2]}


async def _road(url: str, targets: list[Target], settings: DispatchSettings) -> dict[str, Any]:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        scope = Scope.everything()
        for t in targets[:20]:
            await rank_candidates(conn, scope, t, settings, k=5, mode="road")
        samples, missing = [], 0
        for t in targets:
            start = time.perf_counter()
            ranking = await rank_candidates(conn, scope, t, settings, k=5, mode="road")
            samples.append(time.perf_counter() - start)
            assert ranking.mode == "road", ranking.note
            missing += 5 - len(ranking.candidates)
        # the baseline: one bare pgr_dijkstraCost over the whole graph, same origin and targets
        bare = []
        for t in targets[:30]:
            nodes = await (
                await conn.execute(
                    "SELECT id FROM road_node ORDER BY geom <-> ST_SetSRID(ST_MakePoint(%s, %s), "
                    "4326) LIMIT 21",
                    (t.lon, t.lat),
                )
            ).fetchall()
            start = time.perf_counter()
            await (
                await conn.execute(
                    "SELECT * FROM pgr_dijkstraCost('SELECT id, source, target, cost, "
                    "reverse_cost FROM road_edge', %s::bigint, %s::bigint[], true)",
                    (nodes[0][0], [n[0] for n in nodes[1:]]),
                )
            ).fetchall()
            bare.append(time.perf_counter() - start)
    return {"service": samples, "bare": bare, "missing": missing}


def _http(url: str, incidents: list[int]) -> list[float]:
    async def token() -> str:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            return (await create_user(conn, SYSTEM, "bench-dispatcher", role="dispatcher")).token

    bearer = asyncio.run(token())
    samples = []
    with server_process(url, "dispatch") as ports:
        base = f"http://127.0.0.1:{ports['api']}"
        headers = {"Authorization": f"Bearer {bearer}"}
        with httpx.Client(base_url=base, headers=headers, timeout=30) as client:
            for i in incidents[:30]:
                client.get(f"/api/v1/incidents/{i}/candidates?k=5").raise_for_status()
            for i in incidents:
                start = time.perf_counter()
                response = client.get(f"/api/v1/incidents/{i}/candidates?k=5")
                samples.append(time.perf_counter() - start)
                response.raise_for_status()
    return samples


async def _incidents(url: str, targets: list[Target]) -> list[int]:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        rows = await (
            await conn.execute(
                """
                INSERT INTO incident (kind, priority, geom, village_code, area_code, terrain,
                                      arrival_radius_m, escalation_level, synthetic)
                SELECT 'bench', 3, ST_SetSRID(ST_MakePoint(x, y), 4326), %(v)s, %(v)s, 'rural',
                       200, 3, true
                  FROM unnest(%(x)s::float8[], %(y)s::float8[]) AS u(x, y)
                RETURNING id
                """,
                {
                    "v": f"{COUNTY}100200",
                    "x": [t.lon for t in targets],
                    "y": [t.lat for t in targets],
                },
            )
        ).fetchall()
    return [int(r[0]) for r in rows]


def run(quick: bool = False) -> dict[str, Any]:
    vehicles = 20_000 if quick else 100_000
    side = 120 if quick else 250
    calls = 300 if quick else 2000
    rng = np.random.default_rng(808)
    settings = DispatchSettings()
    with throwaway_database() as url:
        asyncio.run(_fleet(url, vehicles))
        targets = _targets(calls, rng)
        straight = asyncio.run(_straight(url, targets, settings))
        graph = node_ways(_lattice(side, rng), max_edge_m=1e9)

        async def store() -> None:
            async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
                await store_graph(conn, SYSTEM, graph, name="bench-lattice", synthetic=True)

        asyncio.run(store())
        road = asyncio.run(_road(url, targets[: calls // 4], settings))
        http = _http(url, asyncio.run(_incidents(url, targets[: calls // 4])))
    service = percentiles_ms(straight["service"])
    knn = percentiles_ms(straight["knn"])
    road_ms = percentiles_ms(road["service"])
    bare_ms = percentiles_ms(road["bare"])
    figures = {
        "vehicles": vehicles,
        "k": 5,
        "requests": calls,
        **{f"straight_{k}": v for k, v in service.items()},
        "straight_target_p99_ms": 5,
        "baseline": "bare KNN on device_state (ORDER BY geom <-> point LIMIT 20), same run",
        **{f"baseline_knn_{k}": v for k, v in knn.items()},
        "ratio_to_bare_knn_p50": round(service["p50_ms"] / knn["p50_ms"], 2),
        **{f"http_{k}": v for k, v in percentiles_ms(http).items()},
        "http_requests": len(http),
        "road_edges": graph.n_edges,
        "road_nodes": graph.n_nodes,
        "road_requests": len(road["service"]),
        **{f"road_{k}": v for k, v in road_ms.items()},
        "road_target_p99_ms": 50,
        "road_missing_candidates": road["missing"],
        "road_baseline": "bare pgr_dijkstraCost over the whole graph, same origin and targets",
        **{f"road_baseline_{k}": v for k, v in bare_ms.items()},
        "road_ratio_to_bare_dijkstra_p50": round(road_ms["p50_ms"] / bare_ms["p50_ms"], 3),
    }
    write_result("dispatch", figures)
    return figures
