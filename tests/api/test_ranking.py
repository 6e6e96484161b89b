"""The vehicle ranking (车辆排名) on a hand-built fleet: only vehicles in service are ranked, a
vehicle without patrol work is never awarded, equal scores share a rank, the vehicles not in
service are listed with their reasons, and the rule printed follows the live settings."""

from __future__ import annotations

import io
import itertools
import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
import openpyxl
import psycopg
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError
from pypdf import PdfReader

from api.ingest.fixes import FixBatch
from api.ingest.store import Ingestor
from api.settings import CoverageSettings, IngestSettings, Settings
from tests.api.test_coverage_update import _ids, _settle
from tests.api.test_reports import _drive
from tests.conftest import auth, run

DAY_OFFSET = 41  # first day of the two-day window, days ago: no other test patrols then
CHINA = timedelta(hours=8)
COUNTY, ELSEWHERE = "152528", "152529"  # 镶黄旗, 正镶白旗: no other test keeps vehicles there


@dataclass(frozen=True)
class Fleet:
    days: tuple[date, date]
    village: str
    ids: dict[str, str]  # role in the fleet → device identifier

    @property
    def window(self) -> dict[str, str]:
        return {"from": self.days[0].isoformat(), "to": self.days[1].isoformat()}


def _nine(day: date) -> int:
    """UTC µs of 09:00 China time on a day."""
    midnight = datetime(day.year, day.month, day.day, tzinfo=UTC) - CHINA
    return int((midnight.timestamp() + 9 * 3600) * 1e6)


def _route(points: list[tuple[float, float]], start_us: int) -> tuple[list[Any], ...]:
    """Fixes every 10 s at 10 m/s through the points (lon, lat)."""
    t: list[int] = []
    lat: list[float] = []
    lon: list[float] = []
    for a, b in itertools.pairwise(points):
        leg_t, leg_lat, leg_lon, _ = _drive(a, b, (t[-1] + 10_000_000) if t else start_us)
        t += leg_t
        lat += leg_lat
        lon += leg_lon
    return t, lat, lon


def _parked(point: tuple[float, float], start_us: int) -> tuple[list[Any], ...]:
    """A minute standing on one spot, a fix every 10 s."""
    t = (start_us + np.arange(7) * 10_000_000).tolist()
    return t, [point[1]] * 7, [point[0]] * 7


@pytest.fixture(scope="module")
def fleet(demo: str, client: TestClient, tokens: dict[str, str]) -> Fleet:
    """In a village of 镶黄旗 over two days: an active vehicle, two tied ones, a broken one (one
    day of fixes), one parked all the time, one retired after patrolling, one idle; a handheld
    there, an unassigned vehicle and a vehicle of 正镶白旗 that patrol too."""
    first = (datetime.now(UTC) + CHINA).date() - timedelta(days=DAY_OFFSET)
    days = (first, first + timedelta(days=1))
    with psycopg.connect(demo, autocommit=True) as conn:
        layout = conn.execute(
            "SELECT id FROM grid_layout WHERE status = 'active' AND purpose = 'patrol'"
        ).fetchone()[0]  # type: ignore[index]
        places = {}
        for county in (COUNTY, ELSEWHERE):
            rows = conn.execute(
                "SELECT village_code, code, ST_X(ST_PointOnSurface(geom)), "
                "ST_Y(ST_PointOnSurface(geom)) FROM grid WHERE layout_id = %s AND village_code = "
                "(SELECT max(village_code) FROM grid WHERE layout_id = %s AND code LIKE %s) "
                "ORDER BY code",
                (layout, layout, f"{county}%"),
            ).fetchall()
            places[county] = (rows[0][0], [r[1] for r in rows], [(r[2], r[3]) for r in rows])
    village, codes, points = places[COUNTY]
    assert len(points) >= 4, "the test village needs four grids"
    other_village, other_codes, other_points = places[ELSEWHERE]
    suffix = f"{datetime.now(UTC):%H%M%S%f}"
    specs = {  # role → (kind, village, grids, plate)
        "active": ("vehicle", village, codes, "蒙H·R0001"),
        "tied_a": ("vehicle", village, codes, "蒙H·R0002"),
        "tied_b": ("vehicle", village, codes, "蒙H·R0003"),
        "broken": ("vehicle", village, codes, "蒙H·R0004"),
        "parked": ("vehicle", village, codes, "蒙H·R0005"),
        "retired": ("vehicle", village, codes, "蒙H·R0006"),
        "idle": ("vehicle", village, codes, "蒙H·R0007"),
        "handheld": ("handheld", village, [], None),
        "unassigned": ("vehicle", None, [], "蒙H·R0008"),
        "elsewhere": ("vehicle", other_village, other_codes, "蒙H·R0009"),
    }
    ids, device_ids = {}, {}
    for role, (kind, home, grids, plate) in specs.items():
        body = {
            "identifier": f"rank-{role}-{suffix}",
            "kind": kind,
            "plate": plate,
            "home_village": home,
            "assigned_grids": grids,
        }
        made = client.post("/api/v1/devices", json=body, headers=auth(tokens["admin"]))
        assert made.status_code == 201, made.text
        ids[role] = body["identifier"]
        device_ids[role] = made.json()["device"]["id"]
    long_route, short_route = points[:4], points[:2]
    tracks = {  # role → [(day index, (t, lat, lon))]
        "active": [(d, _route(long_route, _nine(days[d]))) for d in (0, 1)],
        "tied_a": [(d, _route(short_route, _nine(days[d]))) for d in (0, 1)],
        "tied_b": [(d, _route(short_route, _nine(days[d]))) for d in (0, 1)],
        "broken": [(0, _route(short_route, _nine(days[0])))],
        "parked": [(d, _parked(points[0], _nine(days[d]))) for d in (0, 1)],
        "retired": [(d, _route(long_route, _nine(days[d]))) for d in (0, 1)],
        "handheld": [(d, _route(long_route, _nine(days[d]))) for d in (0, 1)],
        "unassigned": [(d, _route(long_route, _nine(days[d]))) for d in (0, 1)],
        "elsewhere": [(d, _route(other_points[:2], _nine(days[d]))) for d in (0, 1)],
    }
    cols: tuple[list[Any], ...] = ([], [], [], [])
    for role, legs in tracks.items():
        for _, (t, lat, lon) in legs:
            for column, values in zip(cols, ([ids[role]] * len(t), t, lat, lon), strict=True):
                column.extend(values)
    batch = FixBatch.from_columns(device=cols[0], time_us=cols[1], lat=cols[2], lon=cols[3])

    async def store() -> None:
        async with await psycopg.AsyncConnection.connect(demo, autocommit=True) as conn:
            ingestor = Ingestor(IngestSettings(max_age_days=90))
            await ingestor.prepare(conn, batch)
            assert (await ingestor.store(conn, batch, protocol="test")).stored == len(batch)

    run(store())
    with psycopg.connect(demo, autocommit=True) as db:
        _settle(demo, db, _ids(db, list(ids.values())))
    retire = client.patch(
        f"/api/v1/devices/{device_ids['retired']}",
        json={"enabled": False},
        headers=auth(tokens["admin"]),
    )
    assert retire.status_code == 200, retire.text
    return Fleet(days, village, ids)


def _ranking(client: TestClient, token: str, fleet: Fleet) -> dict[str, Any]:
    response = client.get("/api/v1/vehicles/ranking", params=fleet.window, headers=auth(token))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _by_role(fleet: Fleet, rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    role = {ident: r for r, ident in fleet.ids.items()}
    return {role[v["identifier"]]: v for v in rows if v["identifier"] in role}


def test_only_vehicles_in_service_are_ranked_and_idle_ones_never_awarded(
    client: TestClient, make_token: Any, fleet: Fleet
) -> None:
    county = make_token("viewer", [COUNTY])
    body = _ranking(client, county, fleet)
    # the county user's answer holds only the county's vehicles: not the unassigned one, not
    # the other county's, never a handheld
    assert {v["home_village"][:6] for v in body["vehicles"] + body["not_ranked"]} == {COUNTY}
    assert set(_by_role(fleet, body["vehicles"] + body["not_ranked"])) == {
        "active",
        "tied_a",
        "tied_b",
        "broken",
        "parked",
        "retired",
        "idle",
    }
    # the village's user: the fleet, and the demo's own patrol vehicles of the village, which
    # drove nothing in a window weeks ago (the county may hold other tests' vehicles)
    body = _ranking(client, make_token("viewer", [fleet.village]), fleet)
    ranked, apart = _by_role(fleet, body["vehicles"]), _by_role(fleet, body["not_ranked"])
    assert set(ranked) == {"active", "tied_a", "tied_b", "broken", "parked"}
    assert set(apart) == {"retired", "idle"}
    assert len(body["vehicles"]) == 5
    mine = set(fleet.ids.values())
    demo = [v for v in body["not_ranked"] if v["identifier"] not in mine]
    assert len(body["not_ranked"]) == 2 + len(demo)
    assert all(v["reasons"] == ["no_fixes"] and v["home_village"] == fleet.village for v in demo)
    # competition ranks: the tied pair share rank 2, the next is 4
    assert {r: v["rank"] for r, v in ranked.items()} == {
        "active": 1,
        "tied_a": 2,
        "tied_b": 2,
        "broken": 4,
        "parked": 5,
    }
    assert ranked["tied_a"]["score"] == ranked["tied_b"]["score"]
    assert [v["rank"] for v in body["vehicles"]] == sorted(v["rank"] for v in body["vehicles"])
    # 60 % of the 5 in service: rank ≤ 3 awarded; 10 %: the last flagged, but it did no patrol
    assert {r: v["verdict"] for r, v in ranked.items()} == {
        "active": "award",
        "tied_a": "award",
        "tied_b": "award",
        "broken": "keep",
        "parked": "no_patrol",
    }
    assert ranked["parked"]["km"] == 0
    assert ranked["parked"]["hours"] > 0
    assert ranked["parked"]["verdict_zh"] == "无巡逻"
    assert ranked["active"]["own_visits"] >= ranked["tied_a"]["own_visits"] > 0
    assert ranked["active"]["km"] > ranked["tied_a"]["km"]
    for v in body["vehicles"]:  # the parts add up to the score
        parts = sum(v[f"part_{k}"] for k in body["weights"])
        assert parts == pytest.approx(v["score"], abs=1e-3)
    assert apart["retired"]["reasons"] == ["disabled"]
    assert apart["retired"]["km"] > 0  # it did patrol, but it is retired now
    assert apart["idle"]["reasons"] == ["no_fixes"]
    assert "窗口内无定位" in apart["idle"]["reason_text"]
    assert "no fix in the window" in apart["idle"]["reason_text"]
    counts = body["counts"]
    assert counts["vehicles"] == 7 + len(demo)
    assert counts["in_service"] == 5
    assert counts["award_slots"] == 3
    assert (counts["award"], counts["keep"], counts["flagged"], counts["no_patrol"]) == (3, 1, 0, 1)
    assert counts["not_ranked_by_reason"] == {
        "disabled": 1,
        "unassigned": 0,
        "no_fixes": 1 + len(demo),
        "too_few_days": 0,
    }
    rule = body["rule"]
    assert "至少 1 天有定位" in rule["zh"]
    assert "前 60%" in rule["zh"]
    assert "无巡逻" in rule["zh"]
    assert "at least 1 of the window's 2 days" in rule["en"]
    assert "best 60% of the 5 vehicles in service (rank ≤ 3)" in rule["en"]
    assert "0.40 × own-grid coverage" in rule["en"]
    assert f"在役 5 / {7 + len(demo)} 辆" in body["summary"]


def test_min_days_award_share_and_weights_change_the_ranking_and_its_rule(
    client: TestClient, make_token: Any, fleet: Fleet, settings: Settings, monkeypatch: Any
) -> None:
    county = make_token("viewer", [fleet.village])
    monkeypatch.setattr(settings.coverage, "in_service_min_days", 2)
    monkeypatch.setattr(settings.coverage, "award_share", 0.5)
    body = _ranking(client, county, fleet)
    ranked, apart = _by_role(fleet, body["vehicles"]), _by_role(fleet, body["not_ranked"])
    assert set(ranked) == {"active", "tied_a", "tied_b", "parked"}
    assert apart["broken"]["reasons"] == ["too_few_days"]
    assert apart["broken"]["days_active"] == 1
    # 50 % of 4 = 2 awards, but the pair tied at rank 2 straddles the cut: awarded whole
    assert body["counts"]["award_slots"] == 2
    assert {r: (v["rank"], v["verdict"]) for r, v in ranked.items()} == {
        "active": (1, "award"),
        "tied_a": (2, "award"),
        "tied_b": (2, "award"),
        "parked": (4, "no_patrol"),
    }
    assert "至少 2 天有定位" in body["rule"]["zh"]
    assert "前 50%" in body["rule"]["zh"]
    assert "at least 2 of the window's 2 days" in body["rule"]["en"]
    assert "best 50% of the 4 vehicles in service (rank ≤ 2)" in body["rule"]["en"]
    # only km counts: the score is km ÷ the best km, the rule says so
    monkeypatch.setattr(settings.coverage, "rank_weights", {"km": 2.0})
    body = _ranking(client, county, fleet)
    ranked = _by_role(fleet, body["vehicles"])
    assert ranked["active"]["score"] == 1.0
    assert ranked["tied_a"]["score"] == pytest.approx(
        ranked["tied_a"]["km"] / ranked["active"]["km"], abs=1e-4
    )
    assert "Score = 1.00 × km (" in body["rule"]["en"]
    assert "得分 = 1.00×里程（" in body["rule"]["zh"]


def test_a_vehicle_without_work_is_never_awarded_even_at_the_top(
    client: TestClient, make_token: Any, fleet: Fleet, settings: Settings, monkeypatch: Any
) -> None:
    """Every vehicle assigned and enabled is in service; scored only by the share of its time
    inside its own grids, the parked one scores as high as the patrols, yet it is ranked after
    every vehicle that patrolled, and the idle one last: neither is awarded."""
    county = make_token("viewer", [fleet.village])
    monkeypatch.setattr(settings.coverage, "in_service", "assigned")
    monkeypatch.setattr(settings.coverage, "rank_weights", {"inside_share": 1.0})
    body = _ranking(client, county, fleet)
    ranked = _by_role(fleet, body["vehicles"])
    assert set(ranked) == {"active", "tied_a", "tied_b", "broken", "parked", "idle"}
    patrolled = [v for v in body["vehicles"] if v["verdict"] != "no_patrol"]
    assert ranked["parked"]["score"] >= max(v["score"] for v in patrolled)
    assert ranked["parked"]["rank"] == len(patrolled) + 1
    assert ranked["idle"]["rank"] == len(patrolled) + 2
    assert ranked["parked"]["verdict"] == "no_patrol"
    assert ranked["idle"]["score"] == 0
    assert ranked["idle"]["verdict"] == "no_patrol"
    awarded = [v for v in body["vehicles"] if v["verdict"] == "award"]
    assert awarded
    assert all(v["km"] > 1.0 for v in awarded)
    assert "enabled and assigned to a village;" in body["rule"]["en"]
    assert [v["identifier"] for v in body["not_ranked"]] == [fleet.ids["retired"]]


def test_the_league_sees_unassigned_and_other_counties_never_handhelds(
    client: TestClient, tokens: dict[str, str], fleet: Fleet, settings: Settings, monkeypatch: Any
) -> None:
    body = _ranking(client, tokens["viewer"], fleet)
    ranked, apart = _by_role(fleet, body["vehicles"]), _by_role(fleet, body["not_ranked"])
    assert "handheld" not in ranked
    assert "handheld" not in apart
    assert apart["unassigned"]["reasons"] == ["unassigned"]
    assert "elsewhere" in ranked
    assert not [v for v in body["vehicles"] if v["verdict"] == "award" and v["km"] <= 1.0]
    assert body["counts"]["in_service"] == len(body["vehicles"])
    assert body["counts"]["award_slots"] == math.floor(0.6 * len(body["vehicles"]) + 1e-9)
    # either assigned or active: the unassigned one that patrols is in service
    monkeypatch.setattr(settings.coverage, "in_service", "assigned_or_active")
    body = _ranking(client, tokens["viewer"], fleet)
    ranked, apart = _by_role(fleet, body["vehicles"]), _by_role(fleet, body["not_ranked"])
    assert "unassigned" in ranked
    assert "idle" in ranked
    assert ranked["idle"]["verdict"] == "no_patrol"
    assert "assigned to a village or with fixes" in body["rule"]["en"]


def test_every_report_prints_the_rule_and_the_vehicles_not_ranked(
    client: TestClient, make_token: Any, fleet: Fleet
) -> None:
    county = make_token("viewer", [COUNTY])
    params = {**fleet.window, "area": fleet.village, "level": "village"}
    page = client.get("/reports/coverage", params=params, headers=auth(county))
    assert page.status_code == 200, page.text
    html = page.text
    assert 'id="ranking-rule"' in html
    assert "at least 1 of the window&#x27;s 2 days" in html
    assert "在役车辆：启用、已分配嘎查村且窗口 2 天中至少 1 天有定位" in html
    assert "未排名车辆 Vehicles not ranked" in html
    assert fleet.ids["idle"] in html
    assert fleet.ids["retired"] in html
    assert "已停用 disabled (retired)" in html
    assert '<tr class="no_patrol">' in html
    assert "无巡逻 no patrol" in html
    assert fleet.ids["elsewhere"] not in html
    assert fleet.ids["unassigned"] not in html
    book = openpyxl.load_workbook(
        io.BytesIO(
            client.get(
                "/reports/coverage", params={**params, "format": "xlsx"}, headers=auth(county)
            ).content
        )
    )
    about = {r[1].value: r[2].value for r in book["说明 About"].iter_rows(min_row=2)}
    assert "best 60% of the 5 vehicles in service" in about["Ranking rule"]
    sheet = book["车辆排名 Ranking"]
    rows = [[c.value for c in r] for r in sheet.iter_rows(min_row=3)]
    table = [r for r in rows if isinstance(r[0], int)]
    assert [r[2] for r in table][:1] == [fleet.ids["active"]]
    assert [r[1] for r in table].count("嘉奖 award") == 3
    assert any(str(r[0]).startswith("在役车辆") for r in rows if not isinstance(r[0], int))
    apart = {r[0].value: r[-1].value for r in book["未排名 Not ranked"].iter_rows(min_row=3)}
    assert "无定位" in apart[fleet.ids["idle"]]
    assert "disabled" in apart[fleet.ids["retired"]]
    pdf = client.get("/reports/coverage", params={**params, "format": "pdf"}, headers=auth(county))
    assert pdf.status_code == 200
    text = " ".join(p.extract_text() for p in PdfReader(io.BytesIO(pdf.content)).pages)
    assert "In service: enabled, assigned to a village" in text.replace("\n", " ")
    assert fleet.ids["idle"] in text


def test_bad_ranking_settings_are_refused_by_name() -> None:
    for weights in ({"speed": 1.0}, {"km": -1.0}, {"km": 0.0}):
        with pytest.raises(ValidationError, match="rank_weights"):
            CoverageSettings(rank_weights=weights)
    with pytest.raises(ValidationError, match="in_service"):
        CoverageSettings(in_service="sometimes")
    with pytest.raises(ValidationError, match="in_service_min_days"):
        CoverageSettings(in_service_min_days=0)
