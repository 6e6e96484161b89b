"""Escalation on a fake clock, notifications through a local webhook, arrival detected from
fixes posted through the ingest path, and orders to a connected JT/T 808 terminal."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
import psycopg
import pytest
from fastapi.testclient import TestClient

from api.auth import Principal
from api.dispatch.arrival import arrive, open_assignments
from api.dispatch.assign import AssignIn, assign
from api.dispatch.escalation import Delivery, DispatchTicker, deliver
from api.dispatch.incidents import IncidentIn, create_incident
from api.dispatch.workflow import transition
from api.protocols import jt808
from api.scope import Scope
from api.settings import DispatchSettings
from tests.api.protocols.test_jt808_server import LAT, LON, SUCCESS, fix, serving
from tests.api.test_dispatch_api import act, new_incident, offset, village_point
from tests.conftest import auth, run

pytestmark = pytest.mark.usefixtures("demo")
CLOCK_VILLAGE = "152530203201"
HOOK_VILLAGE = "152530203202"
ARRIVAL_VILLAGE = "152530203203"
T = 300.0


@pytest.fixture(scope="module")
def boss(make_token: Callable[..., str]) -> dict[str, str]:
    return auth(make_token("dispatcher"))


def _epoch(db: psycopg.Connection[Any], incident: int, column: str = "created_at") -> float:
    row = db.execute(
        f"SELECT extract(epoch FROM {column})::float8 FROM incident WHERE id = %s", (incident,)
    ).fetchone()
    assert row is not None
    assert row[0] is not None
    return float(row[0])


def test_escalation_steps_fall_due_every_t_without_an_acceptance(
    client: TestClient, db: psycopg.Connection[Any], db_url: str, boss: dict[str, str]
) -> None:
    point = village_point(db, CLOCK_VILLAGE)
    waiting = new_incident(client, boss, lon=point[0], lat=point[1])
    taken = new_incident(client, boss, lon=point[0], lat=point[1])
    worker = client.get(f"/api/v1/incidents/{taken['id']}/candidates", headers=boss).json()
    staff = next(c["staff_id"] for c in worker["candidates"] if c["kind"] == "worker")
    assert act(client, boss, taken["id"], "assign", staff_id=staff).status_code == 200
    assert act(client, boss, taken["id"], "accept").status_code == 200
    created = _epoch(db, waiting["id"])
    now = [created]
    ticker = DispatchTicker(
        DispatchSettings(escalate_after_s=T),
        clock=lambda: now[0],
        scope=Scope.parse([CLOCK_VILLAGE]),
    )

    def tick_at(t: float) -> int:
        now[0] = created + t

        async def go() -> int:
            async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
                steps, delivery = await ticker.tick(conn)
            assert delivery == Delivery()  # no webhook configured
            return steps

        return run(go())

    def level() -> int:
        body = client.get(f"/api/v1/incidents/{waiting['id']}", headers=boss).json()
        return int(body["escalation_level"])

    assert (tick_at(T - 1), level()) == (0, 0)
    assert (tick_at(T + 1), level()) == (1, 1)
    assert _epoch(db, waiting["id"], "escalated_at") == pytest.approx(created + T, abs=1e-3)
    assert tick_at(T + 2) == 0
    assert (tick_at(3 * T + 100), level()) == (2, 3)  # a late tick takes both steps
    assert tick_at(100 * T) == 0  # the county is the top
    detail = client.get(f"/api/v1/incidents/{waiting['id']}", headers=boss).json()
    steps = [e for e in detail["events"] if e["kind"] == "escalated"]
    assert [s["level"] for s in steps] == [1, 2, 3]
    assert [s["detail"]["to"] for s in steps] == ["village", "township", "county"]
    assert {s["detail"]["reason"] for s in steps} == {"no acceptance within T"}
    at = [
        row[0]
        for row in db.execute(
            "SELECT extract(epoch FROM at)::float8 FROM incident_event "
            "WHERE incident_id = %s AND kind = 'escalated' ORDER BY at",
            (waiting["id"],),
        ).fetchall()
    ]
    assert at == pytest.approx([created + T, created + 2 * T, created + 3 * T], abs=1e-3)
    notes = detail["notifications"]
    assert [n["level"] for n in notes] == [0, 1, 2, 3]
    assert ["网格预警" in notes[0]["message"], "村级吹哨" in notes[1]["message"]] == [True, True]
    assert "旗县部门报到" in notes[3]["message"]
    assert notes[3]["unit_code"] == CLOCK_VILLAGE[:6]
    still = client.get(f"/api/v1/incidents/{taken['id']}", headers=boss).json()
    assert (still["status"], still["escalation_level"]) == ("accepted", 0)
    for incident in (waiting, taken):
        act(client, boss, incident["id"], "cancel")


# ---- the webhook ---------------------------------------------------------------------------
class _Hook(BaseHTTPRequestHandler):
    received: list[dict[str, Any]]
    answers: list[int]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        status = self.answers.pop(0) if self.answers else 200
        if status == 200:
            self.received.append(json.loads(body))
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def hook() -> Iterator[tuple[str, type[_Hook]]]:
    handler = type("Hook", (_Hook,), {"received": [], "answers": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_notifications_are_forwarded_to_the_webhook_and_retried(
    client: TestClient,
    db: psycopg.Connection[Any],
    db_url: str,
    boss: dict[str, str],
    hook: tuple[str, type[_Hook]],
) -> None:
    url, handler = hook
    point = village_point(db, HOOK_VILLAGE)
    incident = new_incident(client, boss, lon=point[0], lat=point[1], kind="fire", priority=1)
    scope = Scope.parse([HOOK_VILLAGE])

    def forward(settings: DispatchSettings) -> Delivery:
        async def go() -> Delivery:
            async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
                return await deliver(conn, settings, scope=scope)

        return run(go())

    assert forward(DispatchSettings()) == Delivery()  # no webhook: stored only
    handler.answers.append(500)
    assert forward(DispatchSettings(webhook_url=url)) == Delivery(delivered=0, failed=1)
    row = db.execute(
        "SELECT attempts, delivered_at, last_error FROM notification WHERE incident_id = %s",
        (incident["id"],),
    ).fetchone()
    assert row is not None
    assert row[0] == 1
    assert row[1] is None
    assert "500" in row[2]
    assert forward(DispatchSettings(webhook_url=url)) == Delivery(delivered=1, failed=0)
    (sent,) = handler.received
    assert sent["incident_id"] == incident["id"]
    assert sent["level"] == 0
    assert sent["level_name"] == "grid"
    assert sent["label"] == "网格预警"
    assert sent["unit_code"] == incident["grid_code"]
    assert sent["kind"] == "fire"
    assert sent["lon"] == pytest.approx(point[0])
    assert "警情" in sent["message"]
    assert forward(DispatchSettings(webhook_url=url)) == Delivery()  # delivered once
    act(client, boss, incident["id"], "escalate")
    dead = "http://127.0.0.1:9/nothing-listens"
    for _ in range(3):
        assert forward(DispatchSettings(webhook_url=dead, webhook_max_attempts=2)).delivered == 0
    row = db.execute(
        "SELECT attempts, delivered_at, last_error FROM notification "
        "WHERE incident_id = %s AND level = 1",
        (incident["id"],),
    ).fetchone()
    assert row is not None
    assert row[0] == 2
    assert row[1] is None
    assert "URLError" in row[2]
    act(client, boss, incident["id"], "cancel")


# ---- arrival from fixes ----------------------------------------------------------------------
def test_arrival_is_detected_from_fixes_posted_through_ingest(
    client: TestClient,
    db: psycopg.Connection[Any],
    db_url: str,
    make_device: Callable[..., tuple[str, str]],
    boss: dict[str, str],
) -> None:
    centre = village_point(db, ARRIVAL_VILLAGE)
    identifier, token = make_device(ARRIVAL_VILLAGE)
    device = db.execute("SELECT id FROM device WHERE identifier = %s", (identifier,)).fetchone()
    assert device is not None
    start = time.time()

    def post(seconds: float, east_m: float) -> None:
        lon, lat = offset(centre, east_m, 0)
        fixes = [{"time": start + seconds, "lat": lat, "lon": lon, "speed": 12.0}]
        response = client.post("/api/v1/positions", json=fixes, headers=auth(token))
        assert response.json()["stored"] == 1, response.text

    post(-120, 3000)
    incident = new_incident(client, boss, lon=centre[0], lat=centre[1])
    act(client, boss, incident["id"], "escalate")
    assert act(client, boss, incident["id"], "assign", device_id=device[0]).status_code == 200
    dispatched = _epoch(db, incident["id"], "dispatched_at")
    post(30, 1000)
    assert (
        client.get(f"/api/v1/incidents/{incident['id']}", headers=boss).json()["status"]
        == "dispatched"
    )

    async def early() -> int:  # a fix from before the dispatch proves nothing
        async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
            ids = np.array([device[0]])
            assignments = await open_assignments(conn, ids)
            return await arrive(
                conn,
                assignments,
                ids,
                np.array([int((dispatched - 60) * 1e6)]),
                np.array([centre[1]]),
                np.array([centre[0]]),
            )

    assert run(early()) == 0
    post(60, 150)
    detail = client.get(f"/api/v1/incidents/{incident['id']}", headers=boss).json()
    assert detail["status"] == "arrived"
    assert detail["arrival_source"] == "fix"
    assert _epoch(db, incident["id"], "arrived_at") == pytest.approx(start + 60, abs=1e-3)
    arrived = [e for e in detail["events"] if e["kind"] == "arrived"]
    assert arrived[0]["actor"] == "fix"
    assert arrived[0]["detail"]["device_id"] == device[0]
    assert arrived[0]["detail"]["distance_m"] == pytest.approx(150.0, abs=1.0)
    assert detail["dispatches"][0]["arrived_at"] is not None
    post(90, 20)  # later fixes change nothing
    assert (
        len(
            [
                e
                for e in client.get(f"/api/v1/incidents/{incident['id']}", headers=boss).json()[
                    "events"
                ]
                if e["kind"] == "arrived"
            ]
        )
        == 1
    )
    assert act(client, boss, incident["id"], "clear").json()["status"] == "cleared"


# ---- the JT/T 808 terminal -------------------------------------------------------------------
def test_an_assignment_orders_the_connected_terminal_and_clearing_stops_tracking(
    db_url: str,
) -> None:
    settings = DispatchSettings(track_interval_s=5, track_duration_s=3600)
    boss = Principal(name="dispatcher-808", role="dispatcher", scope=Scope.everything())

    async def scenario() -> tuple[Any, dict[str, Any], list[Any]]:
        async with serving(db_url) as h:
            terminal, device_id, _ = await h.online()
            now = fix(0, start=datetime.now(UTC).replace(microsecond=0))
            assert await terminal.send_location(now) == SUCCESS
            async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
                incident = await create_incident(
                    conn,
                    boss,
                    IncidentIn(kind="traffic 交通事故", priority=1, lon=LON + 0.01, lat=LAT),
                    settings,
                )
                done = await assign(
                    conn,
                    boss,
                    incident["id"],
                    AssignIn(device_id=device_id),
                    settings,
                    terminals=h.server,
                )
                for _ in range(200):  # the terminal answers at once; wait for both frames
                    if terminal.texts and terminal.tracking is not None:
                        break
                    await asyncio.sleep(0.02)
                tracking = terminal.tracking
                cleared = await transition(conn, boss, incident["id"], "cancel", terminals=h.server)
                for _ in range(200):
                    if terminal.tracking != tracking:
                        break
                    await asyncio.sleep(0.02)
                return terminal, {**done, "cleared": cleared}, [tracking, terminal.tracking]

    terminal, done, tracking = run(scenario())
    assert done["terminal"]["terminal"] == "sent"
    assert done["terminal"]["text_command_id"]
    assert done["terminal"]["track_command_id"]
    (text,) = terminal.texts
    assert text.startswith(f"派警 #{done['id']} traffic 交通事故 优先级1")
    assert tracking[0] == jt808.TemporaryTracking(5, 3600)
    assert tracking[1] == jt808.TemporaryTracking(0, 0)
    assert done["cleared"]["terminal"] == {"terminal": "sent"}
