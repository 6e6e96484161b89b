"""The living demo (``api.demofleet``, started by ``gridpatrol run``): against a real
``gridpatrol serve``, the fleet's past shifts are stored once, and then the same vehicles report
live, half over OsmAnd and half as JT/T 808 terminals, within a minute of the start."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import pytest

from api.auth import SYSTEM
from api.demo_calls import CLEARED, DEMO_CENTRE
from api.demofleet import halves, history_shifts
from api.dispatch.assign import AssignIn, assign
from api.dispatch.incidents import IncidentIn, create_incident
from api.settings import DispatchSettings
from api.simulate import Fleet
from tests.security.live import (
    OUTPUT,
    Live,
    demo_fleet,
    demo_fleet_env,
    live_server,
    township,
)

pytestmark = pytest.mark.usefixtures("demo")
VEHICLES = 4
T = TypeVar("T")
WITHIN_S = 60  # the promise: moving vehicles within a minute of "ready"


@pytest.fixture(scope="module")
def server(db_url: str, workdir: Path) -> Iterator[Live]:
    with live_server(db_url, workdir / "state-demo-fleet", "demo_fleet") as live:
        yield live


@pytest.fixture(scope="module")
def area(db_url: str) -> str:
    """The league's last township (no other test drives there)."""
    return township(db_url, 0)[:9]


def _env(server: Live, db_url: str, area: str, vehicles: int, **demo: str) -> dict[str, str]:
    return demo_fleet_env(db_url, server.osmand, server.jt808, area, vehicles, **demo)


@contextmanager
def _demo_fleet(env: dict[str, str], name: str) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    log_path = OUTPUT / f"{name}.log"
    with demo_fleet(env, log_path) as proc:
        yield proc, log_path


def test_the_fleet_is_split_between_the_protocols_village_by_village() -> None:
    fleet = Fleet([f"v{i}" for i in range(6)], ["a", "a", "b", "b", "c", "c"], list("xxyyzz"))
    osmand, jt808 = halves(fleet)
    assert osmand.identifiers == ["v0", "v2", "v4"]
    assert jt808.identifiers == ["v1", "v3", "v5"]
    assert osmand.villages == jt808.villages == ["a", "b", "c"]
    day = 86_400_000_000
    assert history_shifts(10 * day, 3, 4.0) == [7 * day, 8 * day, 9 * day]
    assert history_shifts(10 * day, 0, 4.0) == []


def test_history_once_then_live_over_both_protocols(server: Live, db_url: str, area: str) -> None:
    env = _env(
        server,
        db_url,
        area,
        VEHICLES,
        interval_s="2",
        shift_hours="0.5",
        history_days="2",
        history_interval_s="60",
        incidents_per_hour="3600",  # a call a second
        incident_ttl_h="0.0005",  # untaken for 1.8 s: cancelled
        auto_assign_s="0",
    )
    began = time.time()
    with _demo_fleet(env, "demo_fleet_process") as (proc, log_path):
        live = _wait_for_live(db_url, area, began, proc, log_path, VEHICLES)
        calls = _wait_for_calls(db_url, area, began, proc, log_path)
    # every vehicle reports live, each half over its own protocol
    assert len(live) == VEHICLES, live
    protocols = {identifier[-1]: protocol for identifier, protocol in live.items()}
    assert protocols == {"1": "osmand", "2": "jt808"}, live
    with psycopg.connect(db_url, autocommit=True) as db:
        days = db.execute(
            "SELECT count(DISTINCT date_trunc('day', p.fix_time)), count(*) FROM position p "
            "JOIN device d ON d.id = p.device_id WHERE d.identifier LIKE %s "
            "AND p.fix_time < now() - interval '20 hours' AND p.protocol = 'batch'",
            (f"sim-{area}%",),
        ).fetchone()
        stored_once = db.execute("SELECT value FROM app_meta WHERE key = 'demo.history'").fetchone()
    assert days is not None
    assert days[0] >= 2, days  # the past shifts, one a day
    assert days[1] > 0
    assert stored_once == ("2",)
    # demo calls at the area's alarm phones, and the untaken ones cancelled with the reason
    assert calls["new"] + calls["cancelled"] >= 10, calls
    assert calls["cancelled"] >= 1, calls
    assert calls["outside"] == 0, calls


def _poll(
    url: str,
    proc: subprocess.Popen[bytes],
    log_path: Path,
    deadline: float,
    probe: Callable[[psycopg.Connection[Any]], T],
    done: Callable[[T], bool],
) -> T:
    """``probe`` the database every second until ``done`` says so or ``deadline`` (epoch s)
    passes; fails at once, with its log, if the demo fleet exits meanwhile."""
    with psycopg.connect(url, autocommit=True) as db:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the demo fleet exited:\n{log_path.read_text()[-3000:]}")
            value = probe(db)
            if done(value) or time.time() >= deadline:
                return value
            time.sleep(1)


def _wait_for_live(
    url: str, area: str, began: float, proc: subprocess.Popen[bytes], log_path: Path, count: int
) -> dict[str, str]:
    """identifier → protocol of the area's demo vehicles whose latest fix came live (not the
    history's batch) after ``began``; waits until ``count`` vehicles have one (or the
    deadline)."""

    def probe(db: psycopg.Connection[Any]) -> dict[str, str]:
        rows = db.execute(
            "SELECT d.identifier, s.protocol FROM device_state s "
            "JOIN device d ON d.id = s.device_id WHERE d.identifier LIKE %s "
            "AND s.received_at > to_timestamp(%s) AND s.protocol <> 'batch'",
            (f"sim-{area}%", began),
        ).fetchall()
        return dict(rows)

    return _poll(url, proc, log_path, began + WITHIN_S, probe, lambda live: len(live) >= count)


def _wait_for_calls(
    url: str, area: str, began: float, proc: subprocess.Popen[bytes], log_path: Path
) -> dict[str, int]:
    """Synthetic incidents since ``began``: new, cancelled as not taken, and any outside the
    area; waits for the first batch (10) and a cancellation, at most a minute."""

    def probe(db: psycopg.Connection[Any]) -> dict[str, int]:
        row = db.execute(
            "SELECT count(*) FILTER (WHERE status = 'new'), "
            "count(*) FILTER (WHERE status = 'cancelled' AND EXISTS ("
            "  SELECT 1 FROM incident_event e WHERE e.incident_id = i.id"
            "  AND e.detail::text LIKE '%%demo call not taken%%')), "
            "count(*) FILTER (WHERE coalesce(village_code, '') NOT LIKE %s) "
            "FROM incident i WHERE synthetic AND created_at > to_timestamp(%s)",
            (area + "%", began),
        ).fetchone()
        assert row is not None
        return {"new": row[0], "cancelled": row[1], "outside": row[2]}

    return _poll(
        url,
        proc,
        log_path,
        time.time() + 60,
        probe,
        lambda c: c["new"] + c["cancelled"] >= 10 and c["cancelled"] >= 1,
    )


def test_assigned_demo_vehicles_drive_to_their_calls(server: Live, db_url: str) -> None:
    """A dispatcher's call and a demo call nobody took: the demo's centre takes the second; both
    vehicles drive there, the server detects each arrival from their fixes, and the demo clears
    only the call its own centre assigned."""
    area = township(db_url, 1)[:9]
    env = _env(
        server,
        db_url,
        area,
        2,
        interval_s="1",
        shift_hours="1",
        gaps_per_h="0",  # no signal lost while the test waits
        history_days="0",
        incidents_per_hour="0",  # only the test's calls
        auto_assign_s="1",
        errand_speed_kmh="108",  # 30 m/s
        dwell_s="3",
    )
    began = time.time()
    with _demo_fleet(env, "demo_fleet_errands") as (proc, log_path):
        live = _wait_for_live(db_url, area, began, proc, log_path, 2)
        assert len(live) == 2, live
        ours, theirs = asyncio.run(_two_calls(db_url, area))

        def probe(db: psycopg.Connection[Any]) -> dict[int, tuple[str, str | None]]:
            rows = db.execute(
                "SELECT id, status, arrival_source FROM incident WHERE id = ANY(%s)",
                ([ours, theirs],),
            ).fetchall()
            return {int(r[0]): (str(r[1]), r[2]) for r in rows}

        states = _poll(
            db_url,
            proc,
            log_path,
            time.time() + 120,
            probe,
            lambda s: s[theirs][0] == "arrived" and s[ours][0] == "cleared",
        )
    assert states[theirs] == ("arrived", "fix"), states  # the dispatcher's call: theirs to clear
    assert states[ours] == ("cleared", "fix"), states
    with psycopg.connect(db_url, autocommit=True) as db:
        events = db.execute(
            "SELECT kind, actor, detail FROM incident_event WHERE incident_id = %s ORDER BY id",
            (ours,),
        ).fetchall()
    kinds = [(kind, actor) for kind, actor, _ in events if kind in ("assigned", "arrived", "clear")]
    assert kinds == [
        ("assigned", DEMO_CENTRE.name),
        ("arrived", "fix"),
        ("clear", DEMO_CENTRE.name),
    ], events
    assert [d.get("outcome") for kind, _, d in events if kind == "clear"] == [CLEARED]


async def _two_calls(db_url: str, area: str) -> tuple[int, int]:
    """A dispatcher's call 550 m from one demo vehicle, assigned to it at once, then a demo
    call (synthetic) 550 m from the other; returns (demo call, dispatcher's call)."""
    settings = DispatchSettings()
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
        rows = await (
            await conn.execute(
                "SELECT d.id, s.lon, s.lat FROM device d JOIN device_state s ON s.device_id = d.id"
                " WHERE d.identifier LIKE %s ORDER BY d.identifier",
                (f"sim-{area}%",),
            )
        ).fetchall()
        assert len(rows) == 2, rows
        calls = []
        for (device, lon, lat), synthetic in zip(rows, (False, True), strict=True):
            body = IncidentIn(kind="test 演示", priority=2, lon=lon, lat=lat + 0.005)
            made = await create_incident(conn, SYSTEM, body, settings, synthetic=synthetic)
            if not synthetic:
                await assign(conn, SYSTEM, int(made["id"]), AssignIn(device_id=device), settings)
            calls.append(int(made["id"]))
    return calls[1], calls[0]
