"""Browser tests: the app served by uvicorn in a subprocess (output to a log file, stopped in
teardown), Debian's chromium driven by Playwright (never a downloaded browser), every request
that does not go to the local server blocked — basemap tiles fail, our features must not.

Scene: a fleet patrolling a township of 苏尼特左旗 (152523), where no other test puts
vehicles, whose fixes end seconds ago, so the dispatcher sees live vehicles. All set-up that
runs asyncio happens in fixtures of module or session scope, before the (function-scoped)
browser starts: Playwright's sync API keeps an event loop running in the test's thread.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import numpy as np
import psycopg
import pytest
from fastapi.testclient import TestClient
from playwright.sync_api import Browser, ConsoleMessage, Page, Route, sync_playwright

from api import simulate as sim
from api.db.cluster import free_port
from api.ingest.store import Ingestor
from api.settings import IngestSettings
from gis.simulation import FleetTracks
from tests.conftest import auth, run

OUTPUT = Path(__file__).resolve().parents[2] / "test-output" / "browser"
CHROMIUM = Path("/usr/bin/chromium")
LOCAL_HOSTS = ("127.0.0.1", "localhost")
TOWNSHIP_OF = "152523"  # 苏尼特左旗: no other test puts vehicles there


@pytest.fixture(scope="session")
def jt808_port() -> int:
    """Where the live server's JT/T 808 listener takes terminals (127.0.0.1)."""
    return free_port()


@pytest.fixture(scope="session")
def osmand_port() -> int:
    """Where the live server's OsmAnd listener takes phones (127.0.0.1)."""
    return free_port()


@pytest.fixture(scope="session")
def live_server(
    demo: str, workdir: Path, jt808_port: int, osmand_port: int, patrol: dict[str, Any]
) -> Iterator[str]:
    """``uvicorn --factory api.app:create_app`` on a free port against the test database, its
    JT/T 808 listener on ``jt808_port`` and its OsmAnd listener on ``osmand_port``. Started after
    the patrol fleet is stored: its coverage updater runs once at start (then hourly), so the
    colour grid map has the fleet's coverage whichever browser test runs first."""
    del patrol
    OUTPUT.mkdir(parents=True, exist_ok=True)
    port = free_port()
    state = workdir / "browser-state"
    state.mkdir(exist_ok=True)
    env = {
        **os.environ,
        "DATABASE_URL": demo,
        "GRIDPATROL_API_STATE_DIR": str(state),
        "GRIDPATROL_API_TOKEN_CACHE_SECONDS": "0",
        "GRIDPATROL_OSMAND_HOST": "127.0.0.1",
        "GRIDPATROL_OSMAND_PORT": str(osmand_port),
        "GRIDPATROL_OSMAND_ADDRESS_RATE_PER_S": "0",
        "GRIDPATROL_JT808_HOST": "127.0.0.1",
        "GRIDPATROL_JT808_PORT": str(jt808_port),
        "GRIDPATROL_COVERAGE_UPDATE_INTERVAL_S": "3600",
        "GRIDPATROL_MAP_VEHICLE_REFRESH_S": "2",
        "GRIDPATROL_MAP_TIANDITU_KEY": "browser-test-key",
    }
    log_path = OUTPUT / "server.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "--factory",
                "api.app:create_app",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--log-level",
                "info",
            ],
            env=env,
            cwd=state,  # no .env from the working tree
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its CPU worker processes too are stopped with the group
        )
        base = f"http://127.0.0.1:{port}"
        try:
            _wait_until_up(proc, base, log_path)
            yield base
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            # the forkserver and pool workers of api.offload outlive a server killed hard
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)


def _wait_until_up(proc: subprocess.Popen[bytes], base: str, log_path: Path) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the server exited ({proc.returncode}):\n{log_path.read_text()[-3000:]}")
        try:
            if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    pytest.fail(f"the server did not come up:\n{log_path.read_text()[-3000:]}")


@pytest.fixture(scope="session")
def patrol(demo: str, client: TestClient, make_token: Any) -> dict[str, Any]:
    """Four vehicles patrolling two villages of a township for the last 30 minutes, an open
    incident in the first village, and users scoped to the township."""
    with psycopg.connect(demo, autocommit=True) as db:
        township = db.execute(
            "SELECT parent_code FROM admin_area WHERE level = 'village' AND code LIKE %s "
            "ORDER BY code LIMIT 1",
            (TOWNSHIP_OF + "%",),
        ).fetchone()[0]  # type: ignore[index]
    prefix = township[:9]

    async def drive() -> tuple[sim.Fleet, Any]:
        async with await psycopg.AsyncConnection.connect(demo, autocommit=True) as conn:
            fleet = await sim.load_fleet(conn, 4, area_prefix=prefix)
            tracks = _ending_now(
                sim.fleet_tracks(
                    fleet, hours=1.0, interval_s=10, end_us=int(time.time() * 1e6), seed=530
                )
            )
            await sim.register_fleet(conn, fleet, tracks.gcj02)
            batch = sim.as_batch(tracks, fleet.identifiers)
            ingestor = Ingestor(IngestSettings())
            await ingestor.prepare(conn, batch)
            await ingestor.store(conn, batch, protocol="batch")
        return fleet, tracks

    fleet, _ = run(drive())
    dispatcher = make_token("dispatcher", [township])
    with psycopg.connect(demo, autocommit=True) as db:
        devices = db.execute(
            "SELECT d.id, d.identifier, d.plate, s.lon, s.lat, s.fix_time FROM device d "
            "JOIN device_state s ON s.device_id = d.id WHERE d.identifier = ANY(%s) ORDER BY d.id",
            (fleet.identifiers,),
        ).fetchall()
        village = fleet.villages[0]
        lon, lat = db.execute(
            "SELECT ST_X(p), ST_Y(p) FROM (SELECT ST_PointOnSurface(geom) p FROM admin_area "
            "WHERE code = %s) x",
            (village,),
        ).fetchone()  # type: ignore[misc]
        grid = db.execute(
            "SELECT g.code FROM grid g JOIN grid_layout l ON l.id = g.layout_id "
            "WHERE l.status = 'active' AND l.purpose = 'patrol' AND g.village_code = %s "
            "ORDER BY g.code LIMIT 1",
            (village,),
        ).fetchone()[0]  # type: ignore[index]
    created = client.post(
        "/api/v1/incidents",
        json={"kind": "livestock theft 盗畜", "priority": 1, "lon": lon, "lat": lat},
        headers=auth(dispatcher),
    )
    assert created.status_code == 201, created.text
    return {
        "township": township,
        "village": village,
        "grid": grid,
        "devices": devices,
        "incident": created.json()["id"],
        "dispatcher": dispatcher,
        "viewer": make_token("viewer", [township]),
        "league_viewer": make_token("viewer", ["*"]),
    }


def _ending_now(tracks: FleetTracks) -> FleetTracks:
    """Each simulated shift ends when the vehicle is home, often well before the hour is up;
    move every vehicle's track in time so its last fix is 10 s old: all of them are live."""
    time_us = tracks.time_us.copy()
    now = int((time.time() - 10) * 1e6)
    for v in np.unique(tracks.vehicle):
        mine = tracks.vehicle == v
        time_us[mine] += now - time_us[mine].max()
    return replace(tracks, time_us=time_us)


@dataclass
class PageRun:
    """An opened page, the JavaScript errors it raised and the outside requests it tried."""

    page: Page
    errors: list[str] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)

    def screenshot(self, name: str) -> Path:
        path = OUTPUT / f"{name}.png"
        self.page.screenshot(path=str(path))
        return path


def _wait_without_eval(page: Page) -> None:
    """Playwright's ``wait_for_function`` runs its predicate through ``eval`` inside the page,
    which the pages' Content-Security-Policy (no 'unsafe-eval') rightly refuses. Poll with
    ``page.evaluate`` instead (DevTools evaluation, which a page's CSP does not govern)."""

    def wait_for_function(expression: str, *, timeout: float = 30_000) -> Any:
        deadline = time.monotonic() + timeout / 1000
        while True:
            value = page.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"not true within {timeout:g} ms: {expression}")
            page.wait_for_timeout(100)

    page.wait_for_function = wait_for_function  # type: ignore[method-assign,assignment]


@dataclass
class Chromium:
    browser: Browser
    base: str

    def open(self, path: str, token: str, *, timezone_id: str = "Asia/Shanghai") -> PageRun:
        """Open ``path`` with ``?token=`` as a user would (cookie + redirect); ``timezone_id``
        is the browser's own zone."""
        context = self.browser.new_context(
            viewport={"width": 1280, "height": 800}, locale="zh-CN", timezone_id=timezone_id
        )
        run = PageRun(page=context.new_page())

        def route(r: Route) -> None:
            if urlparse(r.request.url).hostname in LOCAL_HOSTS:
                r.continue_()
            else:
                run.blocked.append(r.request.url)
                r.abort()

        def console(message: ConsoleMessage) -> None:
            origin = message.location.get("url", "") if message.location else ""
            host = urlparse(origin).hostname
            if message.type == "error" and (not origin or host in LOCAL_HOSTS):
                run.errors.append(f"console: {message.text} ({origin})")

        context.route("**/*", route)
        _wait_without_eval(run.page)
        run.page.on("pageerror", lambda exc: run.errors.append(f"pageerror: {exc}"))
        run.page.on("console", console)
        separator = "&" if "?" in path else "?"
        run.page.goto(f"{self.base}{path}{separator}token={token}", wait_until="load")
        return run


@pytest.fixture
def chromium(live_server: str) -> Iterator[Chromium]:
    """Debian's chromium (request this fixture last: it starts Playwright's event loop)."""
    if not CHROMIUM.exists():
        pytest.skip("Debian chromium is not installed (make system-test)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            yield Chromium(browser, live_server)
        finally:
            browser.close()


def api_get(base: str, token: str, path: str) -> Any:
    """A JSON GET against the live server (sync: no event loop needed)."""
    response = httpx.get(f"{base}{path}", headers=auth(token), timeout=30)
    response.raise_for_status()
    return response.json()


def positions(devices: list[tuple[Any, ...]]) -> dict[int, tuple[float, float]]:
    return {int(d[0]): (float(d[3]), float(d[4])) for d in devices}
