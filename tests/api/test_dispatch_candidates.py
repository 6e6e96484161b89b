"""Candidate ranking on layouts whose answer is obvious: nearest first (exactly, though planar
degrees shorten east–west distances), stale, busy, off-duty and disabled vehicles left out with
their reasons, the grid worker, and the river: nearer in a straight line across the water,
but nearer by road on this bank. Scenes live in 正蓝旗 (152530), which no other test uses."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import psycopg
import pytest
from fastapi.testclient import TestClient

from api.auth import SYSTEM
from api.dispatch.candidates import Target, rank_candidates
from api.roads import activate_dataset, store_graph
from api.scope import Scope
from api.settings import DispatchSettings
from gis.roads import Ways, node_ways
from tests.api.test_dispatch_api import (
    act,
    candidates,
    new_incident,
    offset,
    vehicle,
    village_point,
)
from tests.conftest import auth, run

pytestmark = pytest.mark.usefixtures("demo")
VILLAGE = "152530201207"  # 巴彦乌楞嘎查, 250 km²
RIVER_VILLAGE = "152530100208"  # 伊日勒吉呼嘎查


@pytest.fixture(scope="module")
def boss(make_token: Callable[..., str]) -> dict[str, str]:
    return auth(make_token("dispatcher"))


def _ranked(client: TestClient, boss: dict[str, str], iid: int, **query: Any) -> dict[str, Any]:
    body: dict[str, Any] = candidates(client, boss, iid, **query)
    return body


def test_nearest_first_and_why_the_others_are_left_out(
    client: TestClient,
    db: psycopg.Connection[Any],
    make_device: Callable[..., tuple[str, str]],
    boss: dict[str, str],
) -> None:
    centre = village_point(db, VILLAGE)
    east = vehicle(db, make_device, VILLAGE, offset(centre, 1200, 0))
    north = vehicle(db, make_device, VILLAGE, offset(centre, 0, 1500))
    far = vehicle(db, make_device, VILLAGE, offset(centre, -6000, -6000))
    busy = vehicle(db, make_device, VILLAGE, offset(centre, 300, 0), status="busy")
    stale = vehicle(db, make_device, VILLAGE, offset(centre, 0, 400), age_s=900)
    off = vehicle(db, make_device, VILLAGE, offset(centre, -500, 0), status="off_duty")
    gone = vehicle(db, make_device, VILLAGE, offset(centre, 0, -700), age_s=86_400)
    disabled = vehicle(db, make_device, VILLAGE, offset(centre, 600, 600))
    db.execute("UPDATE device SET enabled = false WHERE id = %s", (disabled,))
    behind = vehicle(db, make_device, VILLAGE, offset(centre, 9000, 9000), status="busy")
    incident = new_incident(client, boss, lon=centre[0], lat=centre[1])
    assert act(client, boss, incident["id"], "escalate").json()["escalation"] == "village"
    ranked = _ranked(client, boss, incident["id"], k=3)
    assert ranked["mode"] == "straight"
    assert ranked["escalation"] == "village"
    got = [(c["kind"], c.get("device_id")) for c in ranked["candidates"]]
    assert got[:2] == [("vehicle", east), ("vehicle", north)]
    assert len(got) == 3
    assert ("vehicle", far) not in got[:2]
    first = ranked["candidates"][0]
    assert first["distance_m"] == pytest.approx(1200.0, abs=2.0)
    assert first["eta_s"] == pytest.approx(1200.0 * 1.3 / (50 / 3.6), rel=1e-3)  # rural
    assert 0 <= first["age_s"] < 60
    assert first["rank"] == 1
    assert first["grid_code"].startswith(VILLAGE)
    assert "plate" in first
    excluded = {e["device_id"]: e["reason"] for e in ranked["excluded"]}
    assert excluded == {
        busy: "busy",
        stale: "stale",
        off: "off_duty",
        gone: "offline",
        disabled: "disabled",
    }  # the busy one 12.7 km away is not nearer than any candidate: not listed
    assert behind not in excluded
    five = _ranked(client, boss, incident["id"], k=5)
    kinds = [c["kind"] for c in five["candidates"]]
    assert kinds.count("worker") == 1
    assert kinds.count("vehicle") == 3
    worker = next(c for c in five["candidates"] if c["kind"] == "worker")
    assert worker["grid_code"] == incident["grid_code"]
    assert worker["position"] == "grid"
    etas = [c["eta_s"] for c in five["candidates"]]
    assert etas == sorted(etas)
    act(client, boss, incident["id"], "cancel")


def test_the_short_list_is_refetched_when_it_could_hide_a_nearer_vehicle(
    db: psycopg.Connection[Any], db_url: str, make_device: Callable[..., tuple[str, str]]
) -> None:
    """With a one-vehicle short list the KNN scan (planar degrees) returns the vehicle 1.5 km
    north first; the bound shows one 1.2 km east could hide behind it, so it looks again."""
    centre = village_point(db, "152530201206")
    east = vehicle(db, make_device, "152530201206", offset(centre, 1200, 0))
    vehicle(db, make_device, "152530201206", offset(centre, 0, 1500))
    target = Target(
        id=0,
        lon=centre[0],
        lat=centre[1],
        grid_code=None,
        grid_codes=(),
        village_code="152530201206",
        terrain="rural",
        level=1,
    )

    async def rank() -> list[Any]:
        async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
            ranking = await rank_candidates(
                conn, Scope.everything(), target, DispatchSettings(prefilter=1), k=1
            )
        return [c["device_id"] for c in ranking.candidates]

    assert run(rank()) == [east]


# ---- the river -------------------------------------------------------------------------------
def _river_graph(centre: tuple[float, float]) -> Ways:
    """Two roads 1 km apart along a river (east–west), one bridge 9 km east; every 500 m a
    node (each piece its own way, so every vertex is a junction)."""
    xs = np.arange(-2000.0, 10_001.0, 500.0)
    south = [offset(centre, x, 0.0) for x in xs]
    north = [offset(centre, x, 1000.0) for x in xs]
    bridge_at = int(np.flatnonzero(xs == 9000.0)[0])
    pieces = [np.array([a, b]) for road in (south, north) for a, b in itertools.pairwise(road)]
    pieces.append(np.array([south[bridge_at], north[bridge_at]]))
    return Ways(
        coords=pieces,
        highway=["secondary"] * len(pieces),
        name=["river road"] * len(pieces),
        oneway=np.zeros(len(pieces), dtype=np.int8),
        speed_kmh=np.full(len(pieces), 60.0),
        osm_id=np.zeros(len(pieces), dtype=np.int64),
    )


@pytest.fixture(scope="module")
def river(demo: str) -> Iterator[dict[str, Any]]:
    with psycopg.connect(demo, autocommit=True) as conn:
        centre = village_point(conn, RIVER_VILLAGE)

    async def store() -> int:
        async with await psycopg.AsyncConnection.connect(demo, autocommit=True) as conn:
            graph = node_ways(_river_graph(centre))
            stored = await store_graph(conn, SYSTEM, graph, name="test-river", activate=False)
        return int(stored["id"])

    dataset = run(store())
    yield {"centre": centre, "dataset": dataset}
    with psycopg.connect(demo, autocommit=True) as conn:
        conn.execute("DELETE FROM road_dataset WHERE id = %s", (dataset,))


def test_nearer_in_a_straight_line_across_the_river_but_nearer_by_road_on_this_bank(
    client: TestClient,
    db: psycopg.Connection[Any],
    db_url: str,
    make_device: Callable[..., tuple[str, str]],
    boss: dict[str, str],
    river: dict[str, Any],
) -> None:
    centre = river["centre"]
    across = vehicle(db, make_device, RIVER_VILLAGE, offset(centre, 0, 1050))
    along = vehicle(db, make_device, RIVER_VILLAGE, offset(centre, 3000, -50))
    point = offset(centre, 0, -50)
    incident = new_incident(client, boss, lon=point[0], lat=point[1])
    act(client, boss, incident["id"], "escalate")  # the village's vehicles
    straight = _ranked(client, boss, incident["id"], k=5)
    order = [c.get("device_id") for c in straight["candidates"] if c["kind"] == "vehicle"]
    assert order == [across, along]

    async def by_road() -> list[dict[str, Any]]:
        async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
            detail = {**incident, "escalation_level": 1, "grid_codes": []}
            ranking = await rank_candidates(
                conn,
                Scope.everything(),
                Target.of(detail),
                DispatchSettings(),
                k=5,
                mode="road",
                dataset_id=river["dataset"],
            )
        assert ranking.mode == "road"
        assert ranking.note is None
        return [c for c in ranking.candidates if c["kind"] == "vehicle"]

    road = run(by_road())
    assert [c["device_id"] for c in road] == [along, across]
    # along: 3 km of road at 60 km/h plus 2 × 50 m off-road at 15 km/h
    assert road[0]["eta_s"] == pytest.approx(3000 / (60 / 3.6) + 100 / (15 / 3.6), rel=0.01)
    # across: 9 km east, over the bridge, 9 km back: the 5 km box is too small, the retry finds it
    assert road[1]["eta_s"] == pytest.approx(19_000 / (60 / 3.6) + 100 / (15 / 3.6), rel=0.01)
    assert road[0]["eta_basis"] == "road"
    # the same through the API once the river graph is the active one
    with psycopg.connect(db_url, autocommit=True) as conn:
        active = conn.execute("SELECT id FROM road_dataset WHERE active").fetchone()

        async def switch(to: int) -> None:
            async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as aconn:
                await activate_dataset(aconn, to)

        run(switch(river["dataset"]))
        try:
            body = _ranked(client, boss, incident["id"], mode="road")
        finally:
            if active is not None:
                run(switch(int(active[0])))
    assert body["mode"] == "road"
    assert body["requested_mode"] == "road"
    vehicles = [c["device_id"] for c in body["candidates"] if c["kind"] == "vehicle"]
    assert vehicles == [along, across]
    act(client, boss, incident["id"], "cancel")


def test_road_mode_without_a_graph_nearby_falls_back_to_straight_lines(
    db: psycopg.Connection[Any], db_url: str, river: dict[str, Any]
) -> None:
    far = offset(river["centre"], 40_000, 40_000)
    target = Target(0, far[0], far[1], None, (), RIVER_VILLAGE, "rural", 1)

    async def rank() -> Any:
        async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
            return await rank_candidates(
                conn,
                Scope.everything(),
                target,
                DispatchSettings(),
                mode="road",
                dataset_id=river["dataset"],
            )

    ranking = run(rank())
    assert ranking.mode == "straight"
    assert "far from every road" in ranking.note


def test_road_mode_on_the_synthetic_demo_network(
    client: TestClient,
    db: psycopg.Connection[Any],
    make_device: Callable[..., tuple[str, str]],
    boss: dict[str, str],
) -> None:
    """Every demo village is on the synthetic network: a road ETA is never faster than the
    straight line at the network's top speed, and never missing."""
    village = "152530201210"
    centre = village_point(db, village)
    cars = [
        vehicle(db, make_device, village, offset(centre, dx, dy))
        for dx, dy in ((3000, 0), (0, -5000))
    ]
    incident = new_incident(client, boss, lon=centre[0], lat=centre[1])
    act(client, boss, incident["id"], "escalate")
    body = _ranked(client, boss, incident["id"], mode="road")
    assert body["mode"] == "road", body["note"]
    road = {c["device_id"]: c for c in body["candidates"] if c["kind"] == "vehicle"}
    assert set(cars) <= set(road)
    for car in cars:
        assert road[car]["eta_s"] >= road[car]["distance_m"] / (60 / 3.6)
    act(client, boss, incident["id"], "cancel")
