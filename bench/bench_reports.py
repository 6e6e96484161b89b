"""Coverage reports for the league over a week (issue 20): warm (cached), cold (data changed)
and PDF, through a running server, against the direct build measured in the same run.

Setup: the league's demo (8,704 patrol grids), a simulated patrol day of the demo fleet stored
through batch ingest and its coverage computed, then copied to the six days before it (seven
days of aggregates, as ``bench_coverage_day`` does). A server (every role) answers a
league-wide viewer.

- **cold**: the data version is changed first (a vehicle's row touched), so the job is built
  anew by the worker: ``POST /api/v1/reports`` → progress polled → ``GET …/file``, timed from
  the request to the last byte.
- **warm**: the same request again: served from the cache.
- **under load**: both again while 2,000 demo vehicles report live every 10 s to the same
  server (``bench.load.demo_fleet``), as in the console benchmark.
- **baseline** (same run): the direct, uncached build in one process (``reports.build``:
  gather + render) — what ``/reports/coverage`` did inside the API's event loop before jobs.
  ``issue_before_s`` quotes the figures the issue measured before this work, for reference.
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import Any

import httpx
import psycopg

from api.auth import SYSTEM
from api.coverage.metrics import Window
from api.coverage.update import CoverageUpdater
from api.demo import load_demo
from api.reports import build
from api.scope import Scope
from api.settings import CoverageSettings
from api.users import create_user
from bench.common import (
    copy_day_back,
    settle,
    simulated_day,
    throwaway_database,
    write_result,
)
from bench.load import demo_fleet, server_process

FORMATS = ("html", "xlsx", "csv", "pdf")
ISSUE_BEFORE_S = {"html": 14.0, "xlsx": 23.0, "csv": 14.0, "pdf": 79.0}
TARGETS = {"warm_s": 3.0, "cold_s": 10.0, "pdf_s": 15.0}


async def _prepare(url: str, vehicles: int, hours: float) -> tuple[str, Window, int]:
    """The league with a week of patrols; returns a league viewer's token, the week and the
    active layout."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await load_demo(conn)
        day, _, _ = await simulated_day(conn, vehicles, hours, seed=110)
        updater = CoverageUpdater(CoverageSettings())
        backlog = (await (await conn.execute("SELECT count(*) FROM coverage_dirty")).fetchone())[0]  # type: ignore[index]
        await updater.step(conn, limit=backlog)
        await copy_day_back(conn)
        await conn.execute("ANALYZE")
        layout = (
            await (
                await conn.execute(
                    "SELECT id FROM grid_layout WHERE status = 'active' AND purpose = 'patrol'"
                )
            ).fetchone()
        )[0]  # type: ignore[index]
        user = await create_user(conn, SYSTEM, "reports-bench", role="viewer", scope=["1525"])
    return str(user.token), Window(day - timedelta(days=6), day), int(layout)


async def _direct(url: str, window: Window, layout: int, fmt: str) -> float:
    """The direct build (the baseline): gather and render in this process, nothing cached."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        updater = CoverageUpdater(CoverageSettings())
        await updater.layout_index(conn, layout)  # a server keeps it in memory
        began = time.perf_counter()
        await build(conn, updater, Scope.everything(), layout, window, level="village", fmt=fmt)
        return time.perf_counter() - began


def _touch(url: str) -> None:
    """Change the data version (a vehicle's row), as new data would."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "UPDATE device SET updated_at = clock_timestamp() "
            "WHERE id = (SELECT min(id) FROM device WHERE kind = 'vehicle')"
        )


def _ask(client: httpx.Client, body: dict[str, Any]) -> tuple[float, dict[str, Any], int]:
    """One report through the API, from the request to its file's last byte: seconds, the
    job, the file's size."""
    began = time.perf_counter()
    made = client.post("/api/v1/reports", json=body)
    made.raise_for_status()
    job = made.json()
    while job["status"] not in ("done", "failed"):
        time.sleep(0.05)
        job = client.get(f"/api/v1/reports/{job['id']}").raise_for_status().json()
    if job["status"] != "done":
        raise RuntimeError(f"report failed: {job['error']}")
    file = client.get(job["url"]).raise_for_status()
    return time.perf_counter() - began, job, len(file.content)


def _measure(
    client: httpx.Client, url: str, body: dict[str, Any]
) -> tuple[dict[str, float], dict[str, float], dict[str, int]]:
    """Each format cold (the data version changed first), then warm (best of three)."""
    cold: dict[str, float] = {}
    warm: dict[str, float] = {}
    sizes: dict[str, int] = {}
    for fmt in FORMATS:
        _touch(url)
        cold[fmt], job, sizes[fmt] = _ask(client, {**body, "format": fmt})
        assert not job.get("cached"), job
        times = []
        for _ in range(3):
            seconds, job, _ = _ask(client, {**body, "format": fmt})
            assert job.get("cached"), job
            times.append(seconds)
        warm[fmt] = min(times)
    return cold, warm, sizes


def run(quick: bool = False) -> dict[str, Any]:
    vehicles, hours = (40, 2.0) if quick else (200, 8.0)
    loaded = 200 if quick else 2000
    with throwaway_database() as url:
        token, window, layout = asyncio.run(_prepare(url, vehicles, hours))
        settle(url)
        baseline = {
            fmt: round(asyncio.run(_direct(url, window, layout, fmt)), 2) for fmt in FORMATS
        }
        body = {"from": window.first.isoformat(), "to": window.last.isoformat(), "level": "village"}
        env = {"GRIDPATROL_DEMO_VEHICLES": "0", "GRIDPATROL_OSMAND_ADDRESS_RATE_PER_S": "0"}
        with (
            server_process(url, "bench_reports", **env) as ports,
            httpx.Client(
                base_url=f"http://127.0.0.1:{ports['api']}",
                headers={"Authorization": f"Bearer {token}"},
                timeout=300,
            ) as client,
        ):
            _ask(client, {**body, "format": "csv"})  # the worker's first job loads its index
            cold, warm, sizes = _measure(client, url, body)
            with demo_fleet(url, ports, loaded, "bench_reports") as live:
                busy_cold, busy_warm, _ = _measure(client, url, body)
    figures: dict[str, Any] = {
        "grids": 8704,
        "vehicles": vehicles,
        "days": 7,
        "level": "village",
        **{f"{fmt}_warm_s": round(warm[fmt], 3) for fmt in ("html", "xlsx", "csv")},
        **{f"{fmt}_cold_s": round(cold[fmt], 2) for fmt in ("html", "xlsx", "csv")},
        "pdf_s": round(cold["pdf"], 2),
        "pdf_warm_s": round(warm["pdf"], 3),
        "bytes": sizes,
        "under_load": (
            f"the same, while {live} of {loaded} demo vehicles report live every 10 s "
            "(half OsmAnd, half JT/T 808) to the same server"
        ),
        **{f"{fmt}_warm_under_load_s": round(busy_warm[fmt], 3) for fmt in FORMATS},
        **{f"{fmt}_cold_under_load_s": round(busy_cold[fmt], 2) for fmt in FORMATS},
        "baseline": "direct uncached build in one process (gather + render), as /reports/"
        "coverage did inside the API before report jobs",
        **{f"baseline_{fmt}_s": baseline[fmt] for fmt in FORMATS},
        **{f"ratio_cold_to_direct_{fmt}": round(cold[fmt] / baseline[fmt], 3) for fmt in FORMATS},
        "issue_before_s": ISSUE_BEFORE_S,
        "targets": TARGETS,
    }
    write_result("reports", figures)
    return figures
