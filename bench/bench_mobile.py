"""The grid worker's phone page (``/m/``, issue 23) at league scale: the whole league's demo
(8,704 patrol grids, each with its worker), ``gridpatrol serve`` (role all), ``WORKERS`` grid
workers of grids spread over the league, each acting as a phone would, one request at a time
and ``CONCURRENCY`` workers at once:

* ``me`` — ``GET /api/v1/m/me`` (who am I, my grids, the event kinds);
* ``grid`` — ``GET /api/v1/m/grids/{code}``: the grid with 7 days of coverage (vehicle and foot),
  blind spots, alert points, households, the village's vehicles and when they last passed;
* ``fixes`` — a foot patrol's batch of 30 fixes (``POST …/patrols/{id}/fixes``, through the
  ingest path); ``report`` — an event report with one 1600 × 1200 JPEG photo (``POST …/reports``:
  the photo decoded and checked, the incident placed and stored);
* ``page_s`` — a 360 × 740 chromium phone opens ``/m/`` signed in, until its grid is drawn with
  its figures (the page's ``GPM.tabs.grid.drawn``); fresh profile, no basemap tiles (blocked).

Each figure alone, then again while 2,000 demo vehicles (``--quick``: 200) report live every
10 s to the same server (``*_under_load``); the baseline is the alone figure of the same run
(``ratio_under_load``). Nothing is asserted on time.
"""

from __future__ import annotations

import asyncio
import io
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
from PIL import Image
from playwright.sync_api import sync_playwright
from psycopg_pool import AsyncConnectionPool

from api.auth import COOKIE, SYSTEM
from api.demo import load_demo
from api.mobile import accounts
from api.settings import MobileSettings
from bench.common import percentiles_ms, settle, throwaway_database, write_result
from bench.load import demo_fleet, server_process

CHROMIUM = "/usr/bin/chromium"
PASSWORD = "bench-worker-pass-2026"  # noqa: S105 - a throwaway database's test workers
CONCURRENCY = 8
FIXES = 30
TIMEOUT_S = 60.0


def _photo() -> bytes:
    """A phone-sized JPEG (what the page sends after shrinking a camera picture)."""
    # noise over a gradient: a camera picture's detail (a flat gradient compresses to nothing)
    size = (1600, 1200)
    light = Image.linear_gradient("L").resize(size)
    image = Image.merge(
        "RGB", [Image.blend(light, Image.effect_noise(size, 48), 0.35) for _ in range(3)]
    )
    out = io.BytesIO()
    image.save(out, "JPEG", quality=85)
    return out.getvalue()


async def _workers(url: str, n: int) -> list[dict[str, Any]]:
    """``n`` workers of the league's active patrol layout, spread over it (every k-th grid),
    with a password and a session each."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        began = time.perf_counter()
        await load_demo(conn)
        print(f"准备 setup: the league's demo in {time.perf_counter() - began:.0f}s", flush=True)
        rows = await (
            await conn.execute(
                """
                SELECT s.id, s.phone, g.code, ST_X(p), ST_Y(p)
                  FROM grid g JOIN grid_layout l ON l.id = g.layout_id
                  JOIN staff s ON s.id = g.worker_id
                  CROSS JOIN LATERAL ST_PointOnSurface(g.geom) AS p
                 WHERE l.status = 'active' AND l.purpose = 'patrol' AND s.active
                 ORDER BY g.code
                """
            )
        ).fetchall()
        step = max(1, len(rows) // n)
        chosen = rows[::step][:n]
        for staff_id, *_ in chosen:
            await accounts.set_password(conn, SYSTEM, staff_id, PASSWORD)
    async with AsyncConnectionPool(url, min_size=1, max_size=2, open=False) as pool:
        return [
            {
                "staff_id": staff_id,
                "grid": code,
                "lon": lon,
                "lat": lat,
                "token": await accounts.login(pool, phone, MobileSettings(), password=PASSWORD),
            }
            for staff_id, phone, code, lon, lat in chosen
        ]


async def _timed(samples: dict[str, list[float]], kind: str, call: Any) -> httpx.Response:
    began = time.perf_counter()
    response: httpx.Response = await call
    samples[kind].append(time.perf_counter() - began)
    if response.status_code >= 400:
        raise RuntimeError(f"{kind}: {response.status_code} {response.text[:300]}")
    return response


async def _worker_round(
    client: httpx.AsyncClient, worker: dict[str, Any], photo: bytes, samples: dict[str, Any]
) -> None:
    auth = {"Authorization": f"Bearer {worker['token']}"}
    await _timed(samples, "me", client.get("/api/v1/m/me", headers=auth))
    await _timed(samples, "grid", client.get(f"/api/v1/m/grids/{worker['grid']}", headers=auth))
    now = datetime.now(UTC)
    started = await _timed(
        samples,
        "patrol_start",
        client.post(
            "/api/v1/m/patrols",
            json={"client_id": str(uuid.uuid4()), "grid_code": worker["grid"]},
            headers=auth,
        ),
    )
    patrol = started.json()["id"]
    fixes = [
        {
            "time": (now - timedelta(seconds=10 * (FIXES - k))).isoformat(),
            "lat": worker["lat"] + 0.00002 * k,
            "lon": worker["lon"],
            "accuracy": 8,
        }
        for k in range(FIXES)
    ]
    await _timed(
        samples,
        "fixes",
        client.post(f"/api/v1/m/patrols/{patrol}/fixes", json={"fixes": fixes}, headers=auth),
    )
    await _timed(
        samples, "patrol_stop", client.post(f"/api/v1/m/patrols/{patrol}/stop", headers=auth)
    )
    await _timed(
        samples,
        "report",
        client.post(
            "/api/v1/m/reports",
            data={
                "client_id": str(uuid.uuid4()),
                "kind": "安全隐患",
                "text": "基准测试 bench report",
                "grid_code": worker["grid"],
                "lon": str(worker["lon"]),
                "lat": str(worker["lat"]),
            },
            files={"photo": ("photo.jpg", photo, "image/jpeg")},
            headers=auth,
        ),
    )


async def _api_round(base: str, workers: list[dict[str, Any]]) -> dict[str, Any]:
    samples: dict[str, list[float]] = {
        k: [] for k in ("me", "grid", "patrol_start", "fixes", "patrol_stop", "report")
    }
    photo = _photo()
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(worker: dict[str, Any]) -> None:
        async with gate:
            await _worker_round(client, worker, photo, samples)

    async with httpx.AsyncClient(base_url=base, timeout=TIMEOUT_S) as client:
        began = time.perf_counter()
        await asyncio.gather(*(one(w) for w in workers))
        wall = time.perf_counter() - began
    out: dict[str, Any] = {"wall_s": round(wall, 2), "photo_bytes": len(photo)}
    for kind, values in samples.items():
        p = percentiles_ms(values)
        out[f"{kind}_p50_ms"], out[f"{kind}_p95_ms"] = p["p50_ms"], p["p95_ms"]
    return out


def _page(base: str, worker: dict[str, Any]) -> float | None:
    """A fresh phone profile opens /m/ signed in; seconds until the grid is drawn."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            context = browser.new_context(
                viewport={"width": 360, "height": 740},
                device_scale_factor=2,
                is_mobile=True,
                has_touch=True,
                locale="zh-CN",
                timezone_id="Asia/Shanghai",
                service_workers="block",
            )
            context.route(
                "**/*",
                lambda r: r.continue_() if "127.0.0.1" in r.request.url else r.abort(),
            )
            context.add_cookies([{"name": COOKIE, "value": worker["token"], "url": base}])
            page = context.new_page()
            began = time.perf_counter()
            page.goto(f"{base}/m/", wait_until="commit")
            code = worker["grid"]
            while time.perf_counter() - began < TIMEOUT_S:
                try:
                    drawn = page.evaluate(
                        "(c) => !!(window.GPM && GPM.tabs && GPM.tabs.grid && "
                        "GPM.tabs.grid.drawn === c && GPM.tabs.grid.data)",
                        code,
                    )
                except Exception:  # noqa: BLE001 - the page is still navigating
                    drawn = False
                if drawn:
                    return round(time.perf_counter() - began, 2)
                page.wait_for_timeout(20)
            return None
        finally:
            browser.close()


def _ratio(busy: float | None, alone: float | None) -> float | None:
    return round(busy / alone, 2) if busy and alone else None


def run(quick: bool = False) -> dict[str, Any]:
    n = 10 if quick else 40
    loaded = 200 if quick else 2000
    with (
        tempfile.TemporaryDirectory(prefix="gridpatrol-mobile-") as tmp,
        throwaway_database() as url,
    ):
        workers = asyncio.run(_workers(url, n))
        settle(url)
        env = {
            "GRIDPATROL_API_STATE_DIR": str(Path(tmp) / "state"),
            "GRIDPATROL_OSMAND_ADDRESS_RATE_PER_S": "0",  # the demo fleet on one address
        }
        with server_process(url, "mobile", **env) as ports:
            base = f"http://127.0.0.1:{ports['api']}"
            page_cold = _page(base, workers[0])
            alone = asyncio.run(_api_round(base, workers))
            page = _page(base, workers[1])
            print(f"alone: page {page} s, {alone}", flush=True)
            with demo_fleet(url, ports, loaded, "mobile") as live:
                busy = asyncio.run(_api_round(base, workers))
                page_busy = _page(base, workers[2])
            print(f"with {live} live vehicles: page {page_busy} s, {busy}", flush=True)
    figures: dict[str, Any] = {
        "workers": n,
        "concurrency": CONCURRENCY,
        "fixes_per_batch": FIXES,
        "page_s": page,
        "page_cold_server_s": page_cold,
        "page_under_load_s": page_busy,
        **alone,
        **{f"{k}_under_load": v for k, v in busy.items()},
        "under_load": f"{live} of {loaded} demo vehicles reporting live every 10 s (half OsmAnd, "
        "half JT/T 808) to the same server",
        "baseline": "each figure alone, same server, same run: "
        "ratio_under_load_* = under load / alone",
        "quick": quick,
    }
    for key in ("grid_p95_ms", "report_p95_ms", "fixes_p95_ms"):
        figures[f"ratio_under_load_{key}"] = _ratio(busy.get(key), alone.get(key))
    figures["ratio_under_load_page_s"] = _ratio(page_busy, page)
    write_result("mobile", figures)
    return figures
