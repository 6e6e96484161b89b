"""The dispatcher console under a live fleet: 2,000 vehicles reporting every 10 s, in chromium.

``gridpatrol serve`` (role all) runs on the whole league's demo; the living demo's fleet
(``python -m api.demofleet``: half OsmAnd, half JT/T 808, real time, no signal gaps, no calls)
reports beside it. A league-wide dispatcher opens ``/maps/dispatch`` in Debian's chromium:

* ``first_paint_s`` — from navigation (sign-in link included) until the fleet's markers are on
  the map (90 % of the live vehicles), target < 3 s: a fresh browser profile (nothing cached)
  opening the console of a running server; ``first_paint_cold_server_s`` is the same for the
  very first console after the server started;
* ``update_p95_ms`` — a fix's commit (``position.received_at``) to its marker moved on the page
  (``GP.probe``, recorded by the page when a new fix of a vehicle is drawn), target p95 < 2 s;
* ``heap_growth_mb`` — the page's JavaScript heap after a forced GC, last sample minus the
  first, over ``STREAM_S`` (10 minutes; ``--quick``: 2) of streaming: flat means ≈ 0;
* ``baseline_update_p95_ms`` — the same latency for the page as it was before the stream
  (``?live=poll``: snapshots every ``GRIDPATROL_MAP_VEHICLE_REFRESH_S`` = 5 s), same run.

``--quick``: 200 vehicles, 2 minutes of stream, 1 of polling. Nothing is asserted on time.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from playwright.sync_api import Browser, BrowserContext, CDPSession, Page, sync_playwright

from api.auth import SYSTEM
from api.demo import load_demo
from api.users import create_user
from bench.common import percentiles_ms, settle, throwaway_database, write_result
from bench.load import demo_fleet, server_process

CHROMIUM = "/usr/bin/chromium"
LIVE_SHARE = 0.9  # first paint: this share of the live fleet drawn
SAMPLE_S = 30.0  # heap samples
TRACE_S = 5.0  # snapshots, events and fixes drawn so far
# where the first paint's time goes: the document, and the slowest requests (s from navigation)
TIMING = """(() => {
  const nav = performance.getEntriesByType('navigation')[0] || {};
  const slow = performance.getEntriesByType('resource')
    .map(r => [r.name.replace(location.origin, '').slice(0, 60), r.responseEnd / 1000])
    .sort((a, b) => b[1] - a[1]).slice(0, 5);
  return {dom_s: (nav.domContentLoadedEventEnd || 0) / 1000, load_s: (nav.loadEventEnd || 0) / 1000,
          slowest: slow};
})()"""


def _prepare(url: str) -> str:
    """The league's demo and a league-wide dispatcher; returns the dispatcher's token."""

    async def go() -> str:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            await load_demo(conn)
            user = await create_user(
                conn, SYSTEM, "console-bench", role="dispatcher", scope=["1525"]
            )
        return str(user.token)

    return asyncio.run(go())


def _heap_mb(cdp: CDPSession) -> float:
    cdp.send("HeapProfiler.collectGarbage")
    return float(cdp.send("Runtime.getHeapUsage")["usedSize"]) / 2**20


def _latencies_s(url: str, probe: list[list[Any]]) -> np.ndarray:
    """Marker moved (page clock, ms) minus the fix's commit (``received_at``), per drawn fix."""
    if not probe:
        return np.array([])
    ids = [int(p[0]) for p in probe]
    fix_s = [float(p[1]) for p in probe]
    moved_s = [float(p[2]) / 1000 for p in probe]
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT u.moved - extract(epoch FROM p.received_at) "
            "FROM unnest(%s::bigint[], %s::float8[], %s::float8[]) AS u(id, t, moved) "
            "JOIN position p ON p.device_id = u.id AND p.fix_time = to_timestamp(u.t)",
            (ids, fix_s, moved_s),
        ).fetchall()
    return np.array([float(r[0]) for r in rows])


def _session(page: Page, url: str, seconds: float, cdp: CDPSession | None) -> dict[str, Any]:
    """Record every drawn fix for ``seconds``; heap samples every ``SAMPLE_S`` when ``cdp``."""
    # what is drawn now is not an update: only fixes newer than it count
    page.evaluate(
        "GP.probeSeen = {}; Object.values(GP.vehicleRows).forEach(v => GP.probeSeen[v.id] = v.t);"
        " GP.probe = []"
    )
    probe: list[list[Any]] = []
    heap: list[tuple[float, float]] = []
    trace: list[tuple[float, int, int, int]] = []  # s, snapshots, stream events, fixes drawn
    began = time.monotonic()
    next_heap = 0.0
    while (elapsed := time.monotonic() - began) < seconds:
        probe += page.evaluate("GP.probe.splice(0)")  # drained: the probe is not the growth
        state = page.evaluate("[GP.state.snapshots, GP.state.events]")
        trace.append((round(elapsed, 1), int(state[0]), int(state[1]), len(probe)))
        if cdp is not None and elapsed >= next_heap:
            heap.append((round(elapsed, 1), round(_heap_mb(cdp), 2)))
            next_heap += SAMPLE_S
        time.sleep(min(TRACE_S, seconds - elapsed))
    probe += page.evaluate("GP.probe.splice(0)")
    if cdp is not None:
        heap.append((round(time.monotonic() - began, 1), round(_heap_mb(cdp), 2)))
    latency = _latencies_s(url, probe)
    return {
        "drawn": len(probe),
        "matched": len(latency),
        "latency_s": latency,
        "heap": heap,
        "trace": trace,
    }


def _open(page: Page, base: str, token: str, live: str, expect: int) -> float:
    """Seconds from navigation to ``expect`` vehicle markers on the map."""
    began = time.perf_counter()
    page.goto(f"{base}/maps/dispatch?live={live}&token={token}", wait_until="commit")
    ready = f"!!(window.GP && GP.state && GP.state.vehicles >= {expect})"
    # polled by evaluate (the page's CSP forbids the eval behind wait_for_function)
    while not page.evaluate(ready):
        if time.perf_counter() - began > 60:
            raise TimeoutError(f"fewer than {expect} vehicles drawn after 60 s")
        time.sleep(0.05)
    return time.perf_counter() - began


def _context(browser: Browser, base: str) -> BrowserContext:
    """A fresh browser profile (nothing cached) that fetches only from our server."""
    context = browser.new_context(viewport={"width": 1600, "height": 900})
    # the basemap's tiles are not ours to fetch: only this server answers
    context.route(
        "**/*",
        lambda r: r.continue_() if r.request.url.startswith(base) else r.abort(),
    )
    return context


def _browse(base: str, url: str, token: str, live: int, stream_s: float, poll_s: float) -> Any:
    expect = int(live * LIVE_SHARE)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            # the first console after the server started (its caches cold), then the figure
            # asked for: a dispatcher opening the console of a running server, in a fresh
            # browser profile
            context = _context(browser, base)
            out: dict[str, Any] = {
                "cold_server_paint_s": _open(context.new_page(), base, token, "stream", expect)
            }
            context.close()
            for transport, seconds in (("stream", stream_s), ("poll", poll_s)):
                context = _context(browser, base)
                page = context.new_page()
                paint = _open(page, base, token, transport, expect)
                cdp = context.new_cdp_session(page) if transport == "stream" else None
                timing = page.evaluate(TIMING)
                out[transport] = {
                    "first_paint_s": paint,
                    "timing": timing,
                    **_session(page, url, seconds, cdp),
                    "page": page.evaluate(
                        "({snapshots: GP.state.snapshots, events: GP.state.events,"
                        " error: GP.state.lastError || null, live: GP.state.live})"
                    ),
                }
                print(
                    f"{transport}: first paint {paint:.2f} s ({timing}), "
                    f"{out[transport]['drawn']} fixes drawn, page {out[transport]['page']}",
                    flush=True,
                )
                context.close()
        finally:
            browser.close()
    return out


def _p95_ms(latency: np.ndarray) -> float | None:
    return percentiles_ms(latency)["p95_ms"] if len(latency) else None


def run(quick: bool = False) -> dict[str, Any]:
    vehicles = 200 if quick else 2000
    stream_s, poll_s = (120.0, 60.0) if quick else (600.0, 120.0)
    with (
        tempfile.TemporaryDirectory(prefix="gridpatrol-console-") as tmp,
        throwaway_database() as url,
    ):
        began = time.perf_counter()
        token = _prepare(url)
        print(f"准备 setup: the league's demo in {time.perf_counter() - began:.0f}s", flush=True)
        env = {
            "GRIDPATROL_API_STATE_DIR": str(Path(tmp) / "state"),
            "GRIDPATROL_OSMAND_ADDRESS_RATE_PER_S": "0",  # the whole fleet on one address
        }
        with (
            server_process(url, "console", **env) as ports,
            demo_fleet(url, ports, vehicles, "console") as live,
        ):
            print(f"{live} of {vehicles} vehicles live", flush=True)
            settle(url)
            base = f"http://127.0.0.1:{ports['api']}"
            seen = _browse(base, url, token, live, stream_s, poll_s)
    stream, poll = seen["stream"], seen["poll"]
    heap = stream["heap"]
    figures = {
        "vehicles": vehicles,
        "live_vehicles": live,
        "interval_s": 10,
        "stream_s": stream_s,
        "poll_s": poll_s,
        "first_paint_s": round(stream["first_paint_s"], 2),
        "first_paint_cold_server_s": round(seen["cold_server_paint_s"], 2),
        "first_paint_timing": stream["timing"],
        "update_p95_ms": _p95_ms(stream["latency_s"]),
        "update": percentiles_ms(stream["latency_s"]) if len(stream["latency_s"]) else {},
        "updates_drawn": stream["drawn"],
        "updates_matched": stream["matched"],
        "heap_growth_mb": round(heap[-1][1] - heap[0][1], 2) if heap else None,
        "heap_mb_over_time": heap,
        "baseline_first_paint_s": round(poll["first_paint_s"], 2),
        "baseline_page": poll["page"],
        "baseline_update_p95_ms": _p95_ms(poll["latency_s"]),
        "baseline_update": percentiles_ms(poll["latency_s"]) if len(poll["latency_s"]) else {},
        "baseline_updates_drawn": poll["drawn"],
        "baseline_trace": poll["trace"],
        "quick": quick,
    }
    p95, base95 = figures["update_p95_ms"], figures["baseline_update_p95_ms"]
    if p95 and base95:
        figures["update_p95_ratio_to_baseline"] = round(p95 / base95, 3)
    write_result("console", figures)
    print(
        f"派警台 console: first paint {figures['first_paint_s']} s; fix → marker p95 {p95} ms "
        f"(polling page {base95} ms); heap {figures['heap_growth_mb']:+} MB over {stream_s:.0f} s"
    )
    return figures
