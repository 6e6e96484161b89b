"""Grid-layer vector tiles with coverage attributes, z10–z14 over Xilingol, warm.

A simulated 草原110 day (2,000 vehicles, a fix every 10 s for 8 h; ``--quick``: 300 for 4 h) is
ingested and turned into coverage, and its ``grid_visit`` rows are copied to the six days
before (times shifted), so every tile aggregates a full seven-day window. Tiles are sampled at
random village points per zoom; a first pass warms the caches, then three passes are timed:

* ``p50/p95/p99_ms`` — ``GET /tiles/grids/{z}/{x}/{y}.pbf`` over HTTP from the app under
  uvicorn (auth, parameters, the one SQL statement, ETag), target p95 < 30 ms;
* ``sql_*`` — the tile statement alone (prepared, as the route runs it);
* ``baseline_*`` — a bare ``ST_AsMVT`` of the same grids' geometry and code, same tiles, same
  run: what any MVT server pays before adding attributes.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psycopg
import uvicorn

from api.app import create_app
from api.auth import SYSTEM
from api.coverage.update import CoverageUpdater
from api.db.cluster import free_port
from api.demo import load_demo
from api.scope import Scope
from api.settings import (
    ApiSettings,
    CoverageSettings,
    DatabaseSettings,
    Jt808Settings,
    OsmAndSettings,
    Settings,
)
from api.users import create_user
from bench.common import (
    copy_day_back,
    percentiles_ms,
    simulated_day,
    throwaway_database,
    write_result,
)
from tiles.layers import LAYERS
from tiles.sql import TILE_SQL, tile_params, tile_query
from tiles.tilemath import Tile, tile_at

ZOOMS = (10, 11, 12, 13, 14)
ROUNDS = 3
CHUNK = 1_000_000
BARE = TILE_SQL.format(
    select="SELECT g.code, ST_AsMVTGeom(ST_Transform(g.geom, 3857), b.e3857, 4096, 256, true) "
    "AS geom FROM grid g, b WHERE g.layout_id = %(layout)s::int AND g.geom && b.e4326 "
    "LIMIT %(limit)s"
)


async def _prepare(url: str, vehicles: int, hours: float) -> dict[str, Any]:
    """Demo, one simulated day of coverage, copied to the six days before it."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await load_demo(conn)
        day, _, _ = await simulated_day(conn, vehicles, hours, seed=1010)
        await CoverageUpdater(CoverageSettings()).run(conn)
        await copy_day_back(conn)
        await conn.execute("VACUUM ANALYZE grid_visit")
        layout = (
            await (
                await conn.execute(
                    "SELECT id FROM grid_layout WHERE status = 'active' AND purpose = 'patrol'"
                )
            ).fetchone()
        )[0]  # type: ignore[index]
        points = await (
            await conn.execute(
                "SELECT ST_X(p), ST_Y(p) FROM (SELECT ST_PointOnSurface(geom) p FROM admin_area "
                "WHERE level = 'village') x"
            )
        ).fetchall()
        counts = await (
            await conn.execute(
                "SELECT (SELECT count(*) FROM position), (SELECT count(*) FROM grid), "
                "(SELECT count(*) FROM grid_visit WHERE layout_id = %s)",
                (layout,),
            )
        ).fetchone()
        token = (await create_user(conn, SYSTEM, "bench", role="viewer", scope=["*"])).token
    assert counts is not None
    return {
        "day": day,
        "layout": layout,
        "points": points,
        "fixes": int(counts[0]),
        "grids": int(counts[1]),
        "grid_visit_rows": int(counts[2]),
        "token": token,
    }


def _sample(points: list[tuple[float, float]], per_zoom: int, seed: int) -> list[Tile]:
    rng = np.random.default_rng(seed)
    tiles: list[Tile] = []
    for z in ZOOMS:
        picks = rng.choice(len(points), size=min(per_zoom, len(points)), replace=False)
        tiles += sorted(
            {tile_at(points[i][0], points[i][1], z) for i in picks}, key=lambda t: (t.x, t.y)
        )
    return tiles


async def _time_sql(
    url: str, tiles: list[Tile], statements: list[tuple[Any, dict[str, Any]]], rounds: int
) -> list[list[float]]:
    """Seconds per tile and round for each statement, interleaved tile by tile (so the
    statements see the same machine), after a warm-up pass."""
    layer = LAYERS["grids"]
    out: list[list[float]] = [[] for _ in statements]
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        for round_ in range(rounds + 1):
            for tile in tiles:
                for k, (statement, params) in enumerate(statements):
                    values = {**tile_params(layer, tile), **params}
                    began = time.perf_counter()
                    await (await conn.execute(statement, values, prepare=True)).fetchone()
                    if round_:  # round 0 warms
                        out[k].append(time.perf_counter() - began)
    return out


@contextmanager
def _served(settings: Settings) -> Iterator[str]:
    """The app under uvicorn in a background thread (real HTTP, one keep-alive client)."""
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings), host="127.0.0.1", port=free_port(), log_level="warning"
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("the server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{server.config.port}"
    finally:
        server.should_exit = True
        thread.join()


def _time_route(
    client: httpx.Client, tiles: list[Tile], query: dict[str, Any], token: str, rounds: int
) -> tuple[list[float], list[int]]:
    headers = {"Authorization": f"Bearer {token}"}
    out, sizes = [], []
    for round_ in range(rounds + 1):
        for tile in tiles:
            began = time.perf_counter()
            response = client.get(
                f"/tiles/grids/{tile.z}/{tile.x}/{tile.y}.pbf", params=query, headers=headers
            )
            elapsed = time.perf_counter() - began
            assert response.status_code == 200, response.text
            if round_:  # round 0 warms
                out.append(elapsed)
                sizes.append(len(response.content))
    return out, sizes


def run(quick: bool = False) -> Path:
    vehicles, hours, per_zoom = (300, 4.0, 20) if quick else (2000, 8.0, 60)
    with throwaway_database() as url:
        scene = asyncio.run(_prepare(url, vehicles, hours))
        last: date = scene["day"]
        first = last - timedelta(days=6)
        tiles = _sample(scene["points"], per_zoom, seed=10)
        query = {"layout": scene["layout"], "from": first.isoformat(), "to": last.isoformat()}
        settings = Settings(
            db=DatabaseSettings(url=url, data_dir=Path("var/unused")),
            api=ApiSettings(token_cache_seconds=60.0),
            coverage=CoverageSettings(update_interval_s=3600.0),
            osmand=OsmAndSettings(enabled=False),
            jt808=Jt808Settings(enabled=False),
        )
        with _served(settings) as base, httpx.Client(base_url=base, timeout=60) as client:
            route_s, sizes = _time_route(client, tiles, query, scene["token"], ROUNDS)
        s = CoverageSettings()
        params = {
            "layout": scene["layout"],
            "days": [first + timedelta(days=i) for i in range(7)],
            "b0": max(first, last - timedelta(days=s.blind_spot_days - 1)),
            "gap": int(s.visit_gap_s * 1e6),
        }
        full = tile_query(LAYERS["grids"], Scope.everything(), gcj02=False)
        sql_s, bare_s = asyncio.run(
            _time_sql(url, tiles, [(full, params), (BARE, {"layout": scene["layout"]})], ROUNDS)
        )
    route, sql_p, bare = percentiles_ms(route_s), percentiles_ms(sql_s), percentiles_ms(bare_s)
    return write_result(
        "tiles",
        {
            "vehicles": vehicles,
            "hours": hours,
            "fixes": scene["fixes"],
            "grids": scene["grids"],
            "window_days": 7,
            "grid_visit_rows": scene["grid_visit_rows"],
            "zooms": list(ZOOMS),
            "tiles": len(tiles),
            "timed_requests": len(route_s),
            "tile_kb_mean": round(float(np.mean(sizes)) / 1024, 1),
            **route,
            "target_p95_ms": 30,
            **{f"sql_{k}": v for k, v in sql_p.items()},
            "baseline": "bare ST_AsMVT of the same grids (code + geometry), same tiles, same run",
            **{f"baseline_{k}": v for k, v in bare.items()},
            "ratio_to_bare_p95": round(sql_p["p95_ms"] / bare["p95_ms"], 2),
            "ratio_to_bare_mean": round(float(np.mean(sql_s)) / float(np.mean(bare_s)), 2),
            "route_ratio_to_bare_p95": round(route["p95_ms"] / bare["p95_ms"], 2),
        },
    )
