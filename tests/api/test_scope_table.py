# ruff: noqa: ARG005 - the table's builders share one signature (scene, tier)
"""Data scope (数据权限), issue 12: a table over every route × four users on the demo data.

Users — each route is called by four users holding the role it needs:

- ``league``: ``1525`` 锡林郭勒盟 (the command centre);
- ``county``: ``152522`` 阿巴嘎旗;
- ``township``: ``152522201`` 伊和高勒苏木 (a police station);
- ``worker``: the grid ``152522201200001`` of 吉呼朗图嘎查 (a grid worker, 网格员).

Objects come in three tiers: ``in`` lies in the worker's grid or its village, ``mid`` in
another township of the same county, ``out`` in another county (东乌珠穆沁旗 152525). Who sees
which tier is the table ``SEES``; devices belong to a village, so a grid-scoped user sees none.
The objects this module creates (devices, incidents, draft layouts, users) live in 阿巴嘎旗
and 东乌珠穆沁旗 and no other test counts them.

The contract every route is held to:

- **reads**: an object outside the scope answers 404, exactly like an id that does not exist,
  so its existence does not leak; lists, pages, tiles and feature collections omit it (no code
  outside the scope appears anywhere in the answer) and a wider user sees more.
- **writes**: 404 when the target object is invisible to the user (the read rule); 403 when
  the target is visible but outside what the user may change (the league-wide active layout a
  county planner can read), or when the write would *create* something, or grant a scope,
  outside the user's scope. Table imports (staff, alert points) are all-or-nothing and answer
  422 naming every row outside the scope. An in-scope write gets past the scope check: 2xx, or
  a state conflict (409) / validation error (422) unrelated to scope.
- **devices**: a device token posts and reads only its own fixes; a scoped user posts fixes
  only for devices in their scope.
- **audit**: a scoped user's write is recorded with that user's scope.

Every route of the app must appear in ``TABLE`` (a table row, or the name of the test below that
covers it, or a reason it has no scope meaning), so an unclassified new route fails
``test_every_route_is_classified``.
"""

from __future__ import annotations

import csv
import io
import itertools
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import mapbox_vector_tile
import orjson
import psycopg
import pytest
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.testclient import TestClient

from tests.conftest import auth

LEAGUE, COUNTY, TOWNSHIP = "1525", "152522", "152522201"
VILLAGE = "152522201200"  # 吉呼朗图嘎查
GRID = "152522201200001"  # the worker's grid
NEIGHBOUR_GRID = "152522201200002"  # same village, someone else's grid
MID_VILLAGE = "152522202200"  # 阿巴嘎旗, another township
OUT_COUNTY = "152525"  # 东乌珠穆沁旗
USERS = {"league": [LEAGUE], "county": [COUNTY], "township": [TOWNSHIP], "worker": [GRID]}
WIDEST_FIRST = ("league", "county", "township", "worker")
NARROW = ("county", "township", "worker")
TIERS = ("in", "mid", "out")
ALL_TIERS = {"in", "mid", "out"}
SEES: dict[str, dict[str, set[str]]] = {
    "area": {"league": ALL_TIERS, "county": {"in", "mid"}, "township": {"in"}, "worker": {"in"}},
    "device": {"league": ALL_TIERS, "county": {"in", "mid"}, "township": {"in"}, "worker": set()},
}
PASSED_SCOPE = {200, 201, 202, 204, 409, 422, 503}
TRACK = (
    "from="
    + (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    + "&to="
    + (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
)
CODE_KEYS = {"code", "home_village", "village_code", "grid_code", "area_code"}


# ---- codes --------------------------------------------------------------------------------------
def prefix(code: str) -> str:
    """The significant prefix of an NBS code (league 4, county 6, township 9, village 12 digits);
    grid codes (15) as they are."""
    if len(code) != 12:
        return code
    for keep in (4, 6, 9):
        if set(code[keep:]) <= {"0"}:
            return code[:keep]
    return code


def allowed(user: str, code: str) -> bool:
    """``code`` lies inside the user's scope, or is an ancestor of it (a county user reads the
    league-wide layout; a grid worker sees their grid's village)."""
    p = prefix(code)
    return any(p.startswith(s) or s.startswith(p) for s in USERS[user])


def codes_in(body: Any) -> Iterator[str]:
    """Every admin-area or grid code anywhere in a JSON answer."""
    if isinstance(body, dict):
        for key, value in body.items():
            if key in CODE_KEYS and isinstance(value, str) and value.isdigit():
                yield value
            else:
                yield from codes_in(value)
    elif isinstance(body, list):
        for item in body:
            yield from codes_in(item)


# ---- the scene ----------------------------------------------------------------------------------
@dataclass
class Scene:
    """One object per tier and kind, and tokens per role and user."""

    village: dict[str, str]
    grid: dict[str, str]
    point: dict[str, tuple[float, float]]
    staff: dict[str, int]
    alert_point: dict[str, int]
    device: dict[str, int]
    device_ident: dict[str, str]
    device_token: dict[str, str]
    incident: dict[str, int]
    layout: dict[str, int]
    command: dict[str, int]
    active: int
    make: Callable[..., str]
    tokens: dict[tuple[str, str], str] = field(default_factory=dict)

    def token(self, role: str, user: str) -> str:
        if (role, user) not in self.tokens:
            self.tokens[role, user] = self.make(role, USERS[user])
        return self.tokens[role, user]

    def call(
        self, client: TestClient, role: str, user: str, method: str, url: str, **kw: Any
    ) -> Any:
        headers = {**kw.pop("headers", {}), **auth(self.token(role, user))}
        return client.request(method, url, headers=headers, **kw)


def _one(db: psycopg.Connection[Any], query: str, *args: Any) -> Any:
    row = db.execute(query, args).fetchone()
    assert row is not None, query
    assert row[0] is not None, query
    return row[0] if len(row) == 1 else row


@pytest.fixture(scope="module")
def scene(demo: str, client: TestClient, make_token: Any, make_device: Any) -> Scene:
    with psycopg.connect(demo, autocommit=True) as db:
        active = _one(
            db, "SELECT id FROM grid_layout WHERE status = 'active' AND purpose = 'patrol'"
        )
        out_village = _one(
            db,
            "SELECT min(code) FROM admin_area WHERE level = 'village' AND code LIKE %s",
            OUT_COUNTY + "%",
        )
        village = {"in": VILLAGE, "mid": MID_VILLAGE, "out": out_village}
        grid = {"in": GRID}
        for tier in ("mid", "out"):
            grid[tier] = _one(
                db,
                "SELECT min(code) FROM grid WHERE layout_id = %s AND village_code = %s",
                active,
                village[tier],
            )
        point = {}
        for tier, code in grid.items():
            lon, lat = _one(
                db,
                "SELECT ST_X(p), ST_Y(p) FROM (SELECT ST_PointOnSurface(geom) p FROM grid "
                "WHERE layout_id = %s AND code = %s) x",
                active,
                code,
            )
            point[tier] = (lon, lat)
        staff = {
            t: _one(db, "SELECT worker_id FROM grid WHERE layout_id = %s AND code = %s", active, g)
            for t, g in grid.items()
        }
        alert_points = {
            t: _one(db, "SELECT min(id) FROM alert_point WHERE village_code = %s", v)
            for t, v in village.items()
        }
        devices, idents, device_tokens = {}, {}, {}
        for tier, code in village.items():
            idents[tier], device_tokens[tier] = make_device(code)
            devices[tier] = _one(db, "SELECT id FROM device WHERE identifier = %s", idents[tier])
        commands = {
            t: _one(
                db,
                "INSERT INTO jt808_command (device_id, msg_id, serial, requested_by) "
                "VALUES (%s, 33281, 1, 'scope table') RETURNING id",
                devices[t],
            )
            for t in TIERS
        }
    dispatcher, planner = make_token("dispatcher", [LEAGUE]), make_token("planner", [LEAGUE])
    incidents, layouts = {}, {}
    for tier in TIERS:
        made = client.post(
            "/api/v1/incidents",
            json={"kind": "scope table", "priority": 3, "grid_code": grid[tier]},
            headers=auth(dispatcher),
        )
        assert made.status_code == 201, made.text
        incidents[tier] = made.json()["id"]
        made = client.post(
            "/api/v1/layouts",
            json={
                "name": f"scope table {tier}",
                "area": village[tier],
                "method": "balanced",
                "per_village": 2,
            },
            headers=auth(planner),
        )
        assert made.status_code == 201, made.text
        layouts[tier] = made.json()["id"]
    return Scene(
        village=village,
        grid=grid,
        point=point,
        staff=staff,
        alert_point=alert_points,
        device=devices,
        device_ident=idents,
        device_token=device_tokens,
        incident=incidents,
        layout=layouts,
        command=commands,
        active=active,
        make=make_token,
    )


# ---- the table ----------------------------------------------------------------------------------
Built = tuple[str, dict[str, Any]]  # url and keyword arguments of client.request


@dataclass(frozen=True)
class Read:
    """Read one object of ``kind`` in each tier: 200 where the user sees the tier, else 404."""

    role: str
    kind: str
    build: Callable[[Scene, str], Built]


@dataclass(frozen=True)
class Listing:
    """Read many: no code outside the user's scope in the answer, and wider users see more."""

    role: str
    url: Callable[[Scene], str]
    village_level: bool = False  # items belong to a village: the worker sees their village's


@dataclass(frozen=True)
class Page:
    """An HTML or CSV page: the ``out`` tier's marker appears for the league user only."""

    role: str
    url: Callable[[Scene], str]
    marker: Callable[[Scene], str]


@dataclass(frozen=True)
class Write:
    """A write to each tier's object: refused (``refused``) where the user may not touch it,
    past the scope check for ``in_users`` on the ``in`` object."""

    role: str
    kind: str
    build: Callable[[Scene, str], Built]
    refused: int = 404
    in_users: tuple[str, ...] = ("township",)


@dataclass(frozen=True)
class Covered:
    """Covered by a dedicated test of this module (named), or scope-free (``reason``)."""

    test: str | None = None
    reason: str | None = None


Case = Read | Listing | Page | Write | Covered
_seq = iter(range(10**9))


def _csv(rows: list[dict[str, Any]]) -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode()


def _get(url: Callable[[Scene, str], str]) -> Callable[[Scene, str], Built]:
    return lambda s, t: (url(s, t), {})


def _post(
    url: Callable[[Scene, str], str], body: Callable[[Scene, str], Any]
) -> Callable[[Scene, str], Built]:
    return lambda s, t: (url(s, t), {"json": body(s, t)})


def _layout(suffix: str = "") -> Callable[[Scene, str], str]:
    return lambda s, t: f"/api/v1/layouts/{s.layout[t]}{suffix}"


def _incident(action: str) -> Callable[[Scene, str], str]:
    return lambda s, t: f"/api/v1/incidents/{s.incident[t]}/{action}"


def _line(s: Scene, t: str) -> dict[str, Any]:
    lon, lat = s.point[t]
    return {"type": "LineString", "coordinates": [[lon - 0.1, lat], [lon + 0.1, lat]]}


def _square(s: Scene, t: str) -> dict[str, Any]:
    lon, lat = s.point[t]
    ring = [[lon, lat], [lon + 0.001, lat], [lon + 0.001, lat + 0.001], [lon, lat + 0.001]]
    return {"type": "Polygon", "coordinates": [[*ring, ring[0]]]}


def _replace_file(s: Scene, t: str) -> Built:
    collection = {
        "type": "FeatureCollection",
        "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:OGC:1.3:CRS84"}},
        "features": [
            {
                "type": "Feature",
                "properties": {"code": f"{s.village[t]}001", "village_code": s.village[t]},
                "geometry": _square(s, t),
            }
        ],
    }
    url = f"/api/v1/layouts/{s.layout[t]}/replace?version=999999&filename=g.geojson"
    return url, {"content": orjson.dumps(collection)}


def _edit(kind: str, body: Callable[[Scene, str], dict[str, Any]]) -> Write:
    return Write(
        "planner",
        "area",
        _post(_layout(f"/edits/{kind}"), lambda s, t: {"version": 999999, **body(s, t)}),
    )


TABLE: dict[tuple[str, str], Case] = {
    # ---- scope-free
    ("GET", "/healthz"): Covered(reason="public liveness; no data"),
    ("POST", "/api/v1/auth/token"): Covered(reason="sign-in; the token carries the scope"),
    ("POST", "/signin"): Covered(
        reason="the front door's sign-in form; the token carries the scope"
    ),
    ("POST", "/signout"): Covered(reason="ends the caller's own session"),
    ("GET", "/m"): Covered(reason="redirects to the grid worker's phone page /m/"),
    ("GET", "/m/"): Covered(
        reason="the grid worker's phone page: one shell for everyone, no data; its data comes "
        "from the /api/v1/m routes of this table"
    ),
    ("GET", "/m/sw.js"): Covered(reason="the phone page's service worker script: no data"),
    ("GET", "/"): Covered(
        reason="sign-in form, or the home page: its figures are counted in the scope and "
        "checked against SQL by tests/api/test_home.py"
    ),
    ("GET", "/docs"): Covered(reason="API documentation (Swagger UI): no data"),
    ("GET", "/redoc"): Covered(reason="API documentation (ReDoc): no data"),
    ("GET", "/users"): Covered("test_users_stay_inside_the_scope"),
    ("GET", "/api/v1/summary"): Covered(
        reason="counts only (no rows or codes); checked against SQL per scope by "
        "tests/api/test_home.py"
    ),
    ("GET", "/api/v1/me"): Covered("test_me_reports_each_scope"),
    ("GET", "/ogc"): Covered(reason="OGC landing page: links only"),
    ("GET", "/ogc/conformance"): Covered(reason="OGC conformance classes: constants"),
    ("GET", "/collections"): Covered(reason="collection names and links, no features"),
    ("GET", "/tiles"): Covered(reason="tile layer names and links, no features"),
    ("GET", "/api/v1/jt808/stats"): Covered(reason="admin: protocol server counters"),
    ("GET", "/api/v1/ingest/stats"): Covered("test_ingest_stats_are_cut_to_the_scope"),
    ("POST", "/api/v1/coverage/update"): Covered(reason="admin: runs the pending coverage job"),
    # ---- admin areas
    ("GET", "/api/v1/admin-areas"): Listing(
        "viewer", lambda s: "/api/v1/admin-areas?level=village&simplify=5000"
    ),
    ("GET", "/api/v1/admin-areas/{code}"): Read(
        "viewer", "area", _get(lambda s, t: f"/api/v1/admin-areas/{s.village[t]}")
    ),
    ("GET", "/map"): Page("viewer", lambda s: "/map", lambda s: s.village["out"]),
    # ---- users
    ("GET", "/api/v1/users"): Covered("test_users_stay_inside_the_scope"),
    ("POST", "/api/v1/users"): Covered("test_users_stay_inside_the_scope"),
    ("PUT", "/api/v1/users/{name}/scope"): Covered("test_users_stay_inside_the_scope"),
    ("DELETE", "/api/v1/users/{name}"): Covered("test_users_stay_inside_the_scope"),
    # ---- devices and positions
    ("GET", "/api/v1/devices"): Listing("viewer", lambda s: "/api/v1/devices"),
    ("GET", "/api/v1/devices/state"): Covered("test_a_device_token_posts_and_reads_only_its_own"),
    ("GET", "/api/v1/devices/{device_id}"): Read(
        "viewer", "device", _get(lambda s, t: f"/api/v1/devices/{s.device[t]}")
    ),
    ("GET", "/api/v1/devices/{device_id}/track"): Read(
        "viewer", "device", _get(lambda s, t: f"/api/v1/devices/{s.device[t]}/track?{TRACK}")
    ),
    ("GET", "/devices"): Page(
        "viewer",
        lambda s: f"/devices?q={s.device_ident['out']}",
        lambda s: f'data-device="{s.device["out"]}"',
    ),
    ("GET", "/maps/track"): Read(
        "viewer", "device", _get(lambda s, t: f"/maps/track?device={s.device[t]}")
    ),
    ("GET", "/maps/track.gpx"): Read(
        "viewer", "device", _get(lambda s, t: f"/maps/track.gpx?device={s.device[t]}")
    ),
    ("POST", "/api/v1/devices"): Write(
        "admin",
        "device",
        _post(
            lambda s, t: "/api/v1/devices",
            lambda s, t: {"identifier": f"scope-new-{next(_seq)}", "home_village": s.village[t]},
        ),
        refused=403,
    ),
    ("POST", "/api/v1/devices/import"): Write(
        "admin",
        "device",
        lambda s, t: (
            "/api/v1/devices/import",
            {
                "content": _csv(
                    [{"identifier": f"scope-imp-{next(_seq)}", "home_village": s.village[t]}]
                ),
                "headers": {"Content-Type": "text/csv"},
            },
        ),
        refused=403,
    ),
    ("PATCH", "/api/v1/devices/{device_id}"): Write(
        "admin",
        "device",
        _post(lambda s, t: f"/api/v1/devices/{s.device[t]}", lambda s, t: {"name": "scope"}),
    ),
    ("POST", "/api/v1/devices/{device_id}/token"): Write(
        "admin",
        "device",
        _get(lambda s, t: f"/api/v1/devices/{s.device[t]}/token"),
        in_users=(),  # would stop the token the device tests use
    ),
    ("POST", "/api/v1/devices/{device_id}/osmand-key"): Write(
        "admin",
        "device",
        _get(lambda s, t: f"/api/v1/devices/{s.device[t]}/osmand-key"),
        in_users=(),  # would change the key of a device other tests post for
    ),
    ("POST", "/api/v1/positions"): Covered("test_a_device_token_posts_and_reads_only_its_own"),
    ("POST", "/api/v1/positions/files"): Covered(
        "test_a_device_token_posts_and_reads_only_its_own"
    ),
    ("GET", "/api/v1/ingest/rejected"): Listing(
        "admin", lambda s: "/api/v1/ingest/rejected?limit=10000"
    ),
    # ---- layouts, grids, staff, alert points
    ("GET", "/api/v1/layouts"): Listing("viewer", lambda s: "/api/v1/layouts"),
    ("POST", "/api/v1/layouts"): Write(
        "planner",
        "area",
        _post(
            lambda s, t: "/api/v1/layouts",
            lambda s, t: {
                "name": "scope table",
                "area": s.village[t],
                "method": "balanced",
                "per_village": 2,
            },
        ),
        refused=403,
    ),
    ("GET", "/api/v1/layouts/{layout_id}"): Read("viewer", "area", _get(_layout())),
    ("POST", "/api/v1/layouts/{layout_id}/activate"): Write(
        "planner", "area", _post(_layout("/activate"), lambda s, t: {"version": 999999})
    ),
    ("GET", "/api/v1/layouts/{layout_id}/grids"): Read("viewer", "area", _get(_layout("/grids"))),
    ("GET", "/api/v1/layouts/{layout_id}/staffing"): Read(
        "viewer", "area", _get(_layout("/staffing"))
    ),
    ("PUT", "/api/v1/layouts/{layout_id}/grids/{code}/worker"): Write(
        "planner",
        "area",
        _post(
            lambda s, t: f"/api/v1/layouts/{s.active}/grids/{s.grid[t]}/worker",
            lambda s, t: {"staff_id": s.staff[t]},
        ),
    ),
    ("GET", "/api/v1/grids/{code}"): Read(
        "viewer", "area", _get(lambda s, t: f"/api/v1/grids/{s.grid[t]}")
    ),
    ("GET", "/api/v1/staff"): Listing("viewer", lambda s: "/api/v1/staff"),
    ("POST", "/api/v1/staff/import"): Write(
        "planner",
        "area",
        lambda s, t: (
            "/api/v1/staff/import?filename=staff.csv",
            {
                "content": _csv(
                    [
                        {
                            "name": "测试",
                            "phone": f"1990{next(_seq):07d}",
                            "village_code": s.village[t],
                        }
                    ]
                )
            },
        ),
        refused=422,
    ),
    ("GET", "/api/v1/alert-points"): Listing(
        "viewer", lambda s: "/api/v1/alert-points", village_level=True
    ),
    ("POST", "/api/v1/alert-points/import"): Write(
        "planner",
        "area",
        lambda s, t: (
            "/api/v1/alert-points/import?filename=points.csv",
            {
                "content": _csv(
                    [
                        {
                            "kind": "phone",
                            "name": "scope table",
                            "lon": s.point[t][0],
                            "lat": s.point[t][1],
                        }
                    ]
                )
            },
        ),
        refused=422,
    ),
    ("POST", "/api/v1/alert-points/siting"): Read(
        "planner",
        "area",
        _post(
            lambda s, t: "/api/v1/alert-points/siting",
            lambda s, t: {"village": s.village[t], "k": 1, "spacing_m": 5000},
        ),
    ),
    ("PUT", "/api/v1/alert-points/{point_id}"): Write(
        "planner",
        "area",
        _post(lambda s, t: f"/api/v1/alert-points/{s.alert_point[t]}", lambda s, t: {}),
    ),
    # ---- redraw
    ("POST", "/api/v1/layouts/{layout_id}/clone"): Write(
        "planner", "area", _post(_layout("/clone"), lambda s, t: {"name": "scope clone"})
    ),
    # a stale version: the in-scope draft is refused (409) after the scope check, not deleted
    ("DELETE", "/api/v1/layouts/{layout_id}"): Write(
        "planner", "area", _get(_layout("?version=999999"))
    ),
    ("POST", "/api/v1/layouts/{layout_id}/edits/split"): _edit(
        "split", lambda s, t: {"code": f"{s.village[t]}001", "line": _line(s, t)}
    ),
    ("POST", "/api/v1/layouts/{layout_id}/edits/merge"): _edit(
        "merge", lambda s, t: {"codes": [f"{s.village[t]}001", f"{s.village[t]}002"]}
    ),
    ("POST", "/api/v1/layouts/{layout_id}/edits/reshape"): _edit(
        "reshape", lambda s, t: {"code": f"{s.village[t]}001", "geometry": _square(s, t)}
    ),
    ("POST", "/api/v1/layouts/{layout_id}/edits/move-boundary"): _edit(
        "move-boundary",
        lambda s, t: {"a": f"{s.village[t]}001", "b": f"{s.village[t]}002", "line": _line(s, t)},
    ),
    ("POST", "/api/v1/layouts/{layout_id}/replace"): Write("planner", "area", _replace_file),
    ("GET", "/api/v1/layouts/{layout_id}/validate"): Read(
        "viewer", "area", _get(_layout("/validate"))
    ),
    ("GET", "/api/v1/layouts/{layout_id}/diff"): Read(
        "viewer",
        "area",
        _get(lambda s, t: f"/api/v1/layouts/{s.layout[t]}/diff?against={s.layout[t]}"),
    ),
    ("POST", "/api/v1/layouts/{layout_id}/rollback"): Write(
        "planner", "area", _post(_layout("/rollback"), lambda s, t: {})
    ),
    ("GET", "/api/v1/layouts/{layout_id}/export"): Read(
        "viewer", "area", _get(_layout("/export?format=geojson"))
    ),
    ("GET", "/api/v1/layouts/{layout_id}/lineage"): Read(
        "viewer", "area", _get(_layout("/lineage"))
    ),
    ("GET", "/maps/planner"): Page(
        "planner", lambda s: "/maps/planner", lambda s: f'?layout={s.layout["out"]}"'
    ),
    # ---- coverage and reports
    ("GET", "/api/v1/coverage"): Listing("viewer", lambda s: "/api/v1/coverage?level=village"),
    ("GET", "/api/v1/vehicles/ranking"): Listing("viewer", lambda s: "/api/v1/vehicles/ranking"),
    ("GET", "/api/v1/coverage/blind-spots"): Read(
        "viewer", "area", _get(lambda s, t: f"/api/v1/coverage/blind-spots?grid={s.grid[t]}")
    ),
    ("GET", "/api/v1/checkpoints"): Read(
        "viewer", "area", _get(lambda s, t: f"/api/v1/checkpoints?area={s.village[t]}")
    ),
    ("GET", "/api/v1/alerts"): Listing("viewer", lambda s: "/api/v1/alerts"),
    ("GET", "/maps/coverage"): Page(
        "viewer", lambda s: "/maps/coverage?level=county", lambda s: "东乌珠穆沁旗"
    ),
    ("GET", "/maps/coverage/search"): Listing(
        "viewer", lambda s: f"/maps/coverage/search?q={VILLAGE}"
    ),
    ("GET", "/maps/coverage/export"): Read(
        "viewer",
        "area",
        _get(lambda s, t: f"/maps/coverage/export?format=csv&level=grid&area={s.village[t]}"),
    ),
    ("GET", "/reports/coverage"): Read(
        "viewer",
        "area",
        _get(lambda s, t: f"/reports/coverage?format=csv&level=village&area={s.village[t]}"),
    ),
    ("GET", "/reports"): Page("viewer", lambda s: "/reports", lambda s: "东乌珠穆沁旗"),
    ("POST", "/api/v1/reports"): Write(
        "viewer",
        "area",
        _post(lambda s, t: "/api/v1/reports", lambda s, t: {"area": s.village[t], "format": "csv"}),
    ),
    ("GET", "/api/v1/reports"): Covered("test_report_jobs_are_read_only_within_their_scope"),
    ("GET", "/api/v1/reports/{job_id}"): Covered(
        "test_report_jobs_are_read_only_within_their_scope"
    ),
    ("GET", "/api/v1/reports/{job_id}/file"): Covered(
        "test_report_jobs_are_read_only_within_their_scope"
    ),
    # ---- incidents
    ("POST", "/api/v1/incidents"): Write(
        "dispatcher",
        "area",
        _post(
            lambda s, t: "/api/v1/incidents",
            lambda s, t: {"kind": "scope table", "priority": 5, "grid_code": s.grid[t]},
        ),
        refused=403,
        in_users=("worker",),
    ),
    ("GET", "/api/v1/incidents"): Listing("viewer", lambda s: "/api/v1/incidents?status=all"),
    ("GET", "/api/v1/incidents/response-times"): Listing(
        "viewer", lambda s: "/api/v1/incidents/response-times?level=grid"
    ),
    ("GET", "/api/v1/incidents/{incident_id}"): Read(
        "viewer", "area", _get(lambda s, t: f"/api/v1/incidents/{s.incident[t]}")
    ),
    ("GET", "/api/v1/incidents/{incident_id}/candidates"): Read(
        "dispatcher", "area", _get(_incident("candidates"))
    ),
    ("POST", "/api/v1/incidents/{incident_id}/assign"): Write(
        "dispatcher",
        "area",
        _post(_incident("assign"), lambda s, t: {"staff_id": s.staff[t]}),
        in_users=("worker",),
    ),
    ("POST", "/api/v1/incidents/{incident_id}/accept"): Write(
        "dispatcher", "area", _post(_incident("accept"), lambda s, t: {}), in_users=("worker",)
    ),
    ("POST", "/api/v1/incidents/{incident_id}/arrive"): Write(
        "dispatcher", "area", _post(_incident("arrive"), lambda s, t: {}), in_users=("worker",)
    ),
    ("POST", "/api/v1/incidents/{incident_id}/release"): Write(
        "dispatcher", "area", _post(_incident("release"), lambda s, t: {}), in_users=("worker",)
    ),
    ("POST", "/api/v1/incidents/{incident_id}/escalate"): Write(
        "dispatcher", "area", _post(_incident("escalate"), lambda s, t: {}), in_users=("worker",)
    ),
    ("POST", "/api/v1/incidents/{incident_id}/clear"): Write(
        "dispatcher", "area", _post(_incident("clear"), lambda s, t: {}), in_users=()
    ),
    ("POST", "/api/v1/incidents/{incident_id}/cancel"): Write(
        "dispatcher", "area", _post(_incident("cancel"), lambda s, t: {}), in_users=()
    ),
    ("GET", "/maps/dispatch"): Covered(
        reason="the page holds the map frame and the scope's bounds; its data comes from the "
        "scoped API routes of this table"
    ),
    ("GET", "/api/v1/incidents/places"): Listing(
        "viewer", lambda s: f"/api/v1/incidents/places?q={VILLAGE}", village_level=True
    ),
    ("GET", "/api/v1/live/vehicles"): Listing("viewer", lambda s: "/api/v1/live/vehicles"),
    ("GET", "/api/v1/live/alert-points"): Listing(
        "viewer", lambda s: "/api/v1/live/alert-points", village_level=True
    ),
    ("GET", "/api/v1/live/stream"): Covered(
        reason="Server-Sent Events, each row cut to the subscriber's scope: tests/api/test_live.py"
        "::test_one_poll_feeds_every_stream_only_its_scope"
    ),
    # ---- JT/T 808 terminals
    ("GET", "/api/v1/jt808/terminals"): Listing("dispatcher", lambda s: "/api/v1/jt808/terminals"),
    ("POST", "/api/v1/jt808/terminals/{device_id}/commands"): Write(
        "dispatcher",
        "device",
        _post(
            lambda s, t: f"/api/v1/jt808/terminals/{s.device[t]}/commands",
            lambda s, t: {"kind": "query_position"},
        ),
    ),
    ("GET", "/api/v1/jt808/terminals/{device_id}/commands"): Read(
        "dispatcher", "device", _get(lambda s, t: f"/api/v1/jt808/terminals/{s.device[t]}/commands")
    ),
    ("GET", "/api/v1/jt808/commands/{command_id}"): Read(
        "dispatcher", "device", _get(lambda s, t: f"/api/v1/jt808/commands/{s.command[t]}")
    ),
    # ---- the grid worker's phone page (issue 23): worker-only routes, scope = their grids
    ("POST", "/m/signin"): Covered(reason="a worker's sign-in; the session carries their grids"),
    ("POST", "/m/signout"): Covered(reason="ends the caller's own session"),
    ("POST", "/api/v1/staff/{staff_id}/sign-in-code"): Covered(
        reason="staff outside the caller's scope are 404: test_mobile.py (a code from another "
        "county's dispatcher)"
    ),
    ("PUT", "/api/v1/staff/{staff_id}/password"): Covered(
        reason="staff outside the admin's scope are 404 (api.mobile.accounts, as for codes)"
    ),
    **{
        (method, path): Covered(
            reason="role worker only (403 to every other role); what is not the worker's own "
            "(another grid, patrol, report, task) is 404 and leaks nothing: test_mobile.py"
        )
        for method, path in (
            ("GET", "/api/v1/m/me"),
            ("PUT", "/api/v1/m/password"),
            ("GET", "/api/v1/m/grids/{code}"),
            ("POST", "/api/v1/m/patrols"),
            ("GET", "/api/v1/m/patrols"),
            ("POST", "/api/v1/m/patrols/{patrol_id}/fixes"),
            ("POST", "/api/v1/m/patrols/{patrol_id}/stop"),
            ("POST", "/api/v1/m/reports"),
            ("GET", "/api/v1/m/reports"),
            ("GET", "/api/v1/m/tasks"),
            ("POST", "/api/v1/m/tasks/{incident_id}/accept"),
            ("POST", "/api/v1/m/tasks/{incident_id}/arrived"),
            ("POST", "/api/v1/m/tasks/{incident_id}/done"),
        )
    },
    ("GET", "/api/v1/incidents/{incident_id}/photos/{n}"): Covered(
        reason="the incident's scope (404 outside it, as GET /api/v1/incidents/{id}) or its "
        "reporting/assigned worker: test_mobile.py"
    ),
    # ---- tiles and OGC API – Features
    ("GET", "/tiles/{layer}.json"): Covered("test_tilejson_bounds_stay_in_scope"),
    ("GET", "/tiles/{layer}/{z:int}/{x:int}/{y:int}.pbf"): Covered(
        "test_a_tile_across_a_county_boundary_holds_only_in_scope_features"
    ),
    ("GET", "/collections/{collection}"): Covered("test_collections_are_cut_to_the_scope"),
    ("GET", "/collections/{collection}/items"): Covered("test_collections_are_cut_to_the_scope"),
    ("GET", "/collections/{collection}/items/{fid}"): Covered(
        "test_collections_are_cut_to_the_scope"
    ),
}


def _app_routes(client: TestClient) -> set[tuple[str, str]]:
    out = set()
    for context in iter_route_contexts(client.app.routes):  # type: ignore[attr-defined]
        if isinstance(context.original_route, APIRoute):
            methods = (context.methods or set()) - {"HEAD", "OPTIONS"}
            out |= {(m, str(context.path)) for m in methods}
    return out


def _rows(kind: type) -> list[tuple[str, str]]:
    return [key for key, case in TABLE.items() if isinstance(case, kind)]


# ---- the tests ----------------------------------------------------------------------------------
def test_every_route_is_classified(client: TestClient) -> None:
    routes = _app_routes(client)
    assert sorted(routes - TABLE.keys()) == [], "classify the new route's scope in TABLE"
    assert sorted(TABLE.keys() - routes) == [], "TABLE names a route the app no longer has"
    module = sys.modules[__name__]
    for key, case in TABLE.items():
        if isinstance(case, Covered):
            assert bool(case.test) != bool(case.reason), key
            assert case.test is None or callable(getattr(module, case.test, None)), key


@pytest.mark.parametrize("route", _rows(Read), ids=" ".join)
def test_reads_outside_the_scope_are_404(
    client: TestClient, scene: Scene, route: tuple[str, str]
) -> None:
    case = TABLE[route]
    assert isinstance(case, Read)
    got, want = {}, {}
    for user in WIDEST_FIRST:
        for tier in TIERS:
            url, kw = case.build(scene, tier)
            response = scene.call(client, case.role, user, route[0], url, **kw)
            got[user, tier] = response.status_code
            want[user, tier] = 200 if tier in SEES[case.kind][user] else 404
    assert got == want


@pytest.mark.parametrize("route", _rows(Listing), ids=" ".join)
def test_lists_hold_only_what_is_in_scope(
    client: TestClient, scene: Scene, route: tuple[str, str]
) -> None:
    case = TABLE[route]
    assert isinstance(case, Listing)
    seen: dict[str, set[str]] = {}
    for user in WIDEST_FIRST:
        response = scene.call(client, case.role, user, "GET", case.url(scene))
        assert response.status_code == 200, (user, response.text)
        seen[user] = set(codes_in(response.json()))
        judge = "township" if case.village_level and user == "worker" else user
        assert sorted(c for c in seen[user] if not allowed(judge, c)) == [], user
    for wide, narrow in itertools.pairwise(WIDEST_FIRST):
        assert seen[narrow] <= seen[wide], (wide, narrow)
    if case.village_level:
        assert {prefix(c)[:12] for c in seen["worker"] if len(prefix(c)) >= 12} <= {VILLAGE}
    if any(prefix(c).startswith(OUT_COUNTY) for c in seen["league"]):
        assert len(seen["league"]) > len(seen["county"])


@pytest.mark.parametrize("route", _rows(Page), ids=" ".join)
def test_pages_show_only_what_is_in_scope(
    client: TestClient, scene: Scene, route: tuple[str, str]
) -> None:
    case = TABLE[route]
    assert isinstance(case, Page)
    marker = case.marker(scene)
    shown = {}
    for user in WIDEST_FIRST:
        response = scene.call(client, case.role, user, "GET", case.url(scene))
        assert response.status_code == 200, (user, response.text[:300])
        shown[user] = marker in response.text
    assert shown == {"league": True, "county": False, "township": False, "worker": False}


@pytest.mark.parametrize("route", _rows(Write), ids=" ".join)
def test_writes_outside_the_scope_are_refused(
    client: TestClient, scene: Scene, route: tuple[str, str]
) -> None:
    case = TABLE[route]
    assert isinstance(case, Write)
    method = route[0]
    got, want = {}, {}
    for user in NARROW:
        for tier in ("mid", "out"):
            if tier in SEES[case.kind][user]:
                continue
            url, kw = case.build(scene, tier)
            got[user, tier] = scene.call(client, case.role, user, method, url, **kw).status_code
            want[user, tier] = case.refused
    for user in case.in_users:
        url, kw = case.build(scene, "in")
        response = scene.call(client, case.role, user, method, url, **kw)
        got[user, "in"] = response.status_code
        want[user, "in"] = response.status_code if response.status_code in PASSED_SCOPE else 0
        assert response.status_code in PASSED_SCOPE, response.text
    assert got == want


@pytest.mark.parametrize("user", WIDEST_FIRST)
def test_me_reports_each_scope(client: TestClient, scene: Scene, user: str) -> None:
    body = scene.call(client, "viewer", user, "GET", "/api/v1/me").json()
    assert body["scope"] == USERS[user]


def test_visible_but_not_covered_writes_are_403(client: TestClient, scene: Scene) -> None:
    """The league-wide active layout is readable by everyone (it covers their area), but only
    the league may change it."""
    for user in NARROW:
        assert (
            scene.call(client, "viewer", user, "GET", f"/api/v1/layouts/{scene.active}").status_code
            == 200
        )
        url = f"/api/v1/layouts/{scene.active}/clone"
        refused = scene.call(client, "planner", user, "POST", url, json={"name": "x"})
        assert refused.status_code == 403


def test_users_stay_inside_the_scope(client: TestClient, scene: Scene) -> None:
    league, county = auth(scene.token("admin", "league")), auth(scene.token("admin", "county"))
    n = f"{os.getpid()}-{next(_seq)}"
    for name, scope in ((f"scope-in-{n}", [TOWNSHIP]), (f"scope-out-{n}", [OUT_COUNTY])):
        made = client.post(
            "/api/v1/users", json={"name": name, "role": "viewer", "scope": scope}, headers=league
        )
        assert made.status_code == 201, made.text
    listed = client.get("/api/v1/users", headers=county).json()
    assert all(allowed("county", c) for u in listed for c in u["scope"] if c != "*")
    assert {u["name"] for u in listed} >= {f"scope-in-{n}"}
    assert f"scope-out-{n}" not in {u["name"] for u in listed}
    page = client.get("/users", headers=county).text  # the users page lists the same
    assert f"scope-in-{n}" in page
    assert f"scope-out-{n}" not in page
    grant = {"name": f"scope-new-{n}", "role": "viewer", "scope": [OUT_COUNTY]}
    # granting beyond one's own scope is a refused field of the body (422, the users contract)
    assert client.post("/api/v1/users", json=grant, headers=county).status_code == 422
    # another county's user does not exist for the county admin
    for target in (f"scope-out-{n}", f"scope-in-{n}"):
        for scope in ([COUNTY], [OUT_COUNTY]):
            response = client.put(
                f"/api/v1/users/{target}/scope", json={"scope": scope}, headers=county
            )
            inside = 404 if target.startswith("scope-out") else 200
            expected = 422 if scope != [COUNTY] else inside
            assert response.status_code == expected, (target, scope, response.text)
    gone = client.delete(f"/api/v1/users/scope-out-{n}", headers=county)
    assert gone.status_code == 404, gone.text
    league_user = client.get("/api/v1/users", headers=league).json()
    scopes = {u["name"]: u["scope"] for u in league_user}
    assert scopes[f"scope-out-{n}"] == [OUT_COUNTY]


def _fixes(ident: str, lonlat: tuple[float, float], n: int = 3) -> list[dict[str, Any]]:
    start = datetime.now(UTC) - timedelta(minutes=30)
    return [
        {
            "device": ident,
            "time": (start + timedelta(seconds=30 * i)).isoformat(),
            "lon": lonlat[0] + i * 1e-4,
            "lat": lonlat[1],
        }
        for i in range(n)
    ]


def test_a_device_token_posts_and_reads_only_its_own(client: TestClient, scene: Scene) -> None:
    mine, theirs = scene.device_ident["in"], scene.device_ident["mid"]
    token = auth(scene.device_token["in"])
    ok = client.post("/api/v1/positions", json=_fixes(mine, scene.point["in"]), headers=token)
    assert ok.status_code == 200, ok.text
    assert ok.json()["stored"] >= 1, ok.text
    for body in (
        _fixes(theirs, scene.point["mid"]),
        _fixes(mine, scene.point["in"]) + _fixes(theirs, scene.point["mid"]),
    ):
        assert client.post("/api/v1/positions", json=body, headers=token).status_code == 403
    gpx_csv = "device,time,lat,lon\n" + "".join(
        f"{f['device']},{f['time']},{f['lat']},{f['lon']}\n"
        for f in _fixes(theirs, scene.point["mid"])
    )
    refused = client.post(
        f"/api/v1/positions/files?format=csv&device={theirs}", content=gpx_csv, headers=token
    )
    assert refused.status_code == 403, refused.text
    own = client.get(f"/api/v1/devices/{scene.device['in']}/track?{TRACK}", headers=token)
    assert own.status_code == 200, own.text
    assert own.json()["features"], own.text
    other = client.get(f"/api/v1/devices/{scene.device['mid']}/track?{TRACK}", headers=token)
    assert other.status_code == 404
    assert client.get("/api/v1/devices/state", headers=token).status_code == 403
    # a scoped user posts only for devices in their scope (unknown ones are refused alike)
    for user, tier, expected in (
        ("township", "in", 200),
        ("township", "out", 403),
        ("league", "out", 200),
    ):
        body = _fixes(scene.device_ident[tier], scene.point[tier])
        got = scene.call(client, "admin", user, "POST", "/api/v1/positions", json=body)
        assert got.status_code == expected, (user, tier, got.text)
    # and the live state shows each user the devices of their scope only
    for user in WIDEST_FIRST:
        body = scene.call(client, "viewer", user, "GET", "/api/v1/devices/state").json()
        ids = {f["properties"]["device_id"] for f in body["features"]}
        want = {scene.device[t] for t in SEES["device"][user] if t != "mid"}
        assert ids & {scene.device[t] for t in ("in", "out")} == want, user


def test_scoped_writes_are_audited_with_the_scope(
    client: TestClient, scene: Scene, db: psycopg.Connection[Any]
) -> None:
    name = f"audited-{next(_seq)}"
    url = f"/api/v1/devices/{scene.device['in']}"
    response = scene.call(client, "admin", "township", "PATCH", url, json={"name": name})
    assert response.status_code == 200, response.text
    row = db.execute(
        "SELECT user_scope FROM audit_log WHERE object_type = 'device' AND object_id = %s "
        "AND detail::text LIKE %s ORDER BY id DESC LIMIT 1",
        (str(scene.device["in"]), f"%{name}%"),
    ).fetchone()
    assert row is not None
    assert list(row[0]) == [TOWNSHIP]


def _tile_of(lon: float, lat: float, z: int) -> tuple[int, int]:
    import math

    n = 2**z
    x = int((lon + 180) / 360 * n)
    y = int((1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * n)
    return x, y


@pytest.mark.parametrize("layer", ["admin_areas", "grids", "alert_points"])
def test_a_tile_across_a_county_boundary_holds_only_in_scope_features(
    client: TestClient, scene: Scene, db: psycopg.Connection[Any], layer: str
) -> None:
    lon, lat = db.execute(
        "SELECT ST_X(p), ST_Y(p) FROM (SELECT ST_PointOnSurface(ST_Intersection("
        "ST_Boundary(a.geom), b.geom)) p FROM admin_area a, admin_area b "
        "WHERE a.code = %s AND b.code = %s) x",
        (COUNTY + "000000", OUT_COUNTY + "000000"),
    ).fetchone() or (None, None)
    assert lon is not None, "the two counties share a boundary"
    x, y = _tile_of(lon, lat, 8)
    codes: dict[str, set[str]] = {}
    for user in ("league", "county"):
        r = scene.call(client, "viewer", user, "GET", f"/tiles/{layer}/8/{x}/{y}.pbf")
        assert r.status_code == 200
        decoded = mapbox_vector_tile.decode(r.content)
        codes[user] = {
            str(f["properties"].get("code") or f["properties"].get("village_code") or "")
            for lyr in decoded.values()
            for f in lyr["features"]
        }
    assert all(allowed("county", c) for c in codes["county"] if c), codes["county"]
    assert any(prefix(c).startswith(OUT_COUNTY) for c in codes["league"])
    assert any(prefix(c).startswith(COUNTY) for c in codes["county"])
    assert codes["county"] < codes["league"]


def test_tilejson_bounds_stay_in_scope(
    client: TestClient, scene: Scene, db: psycopg.Connection[Any]
) -> None:
    box = db.execute(
        "SELECT ST_XMin(geom), ST_YMin(geom), ST_XMax(geom), ST_YMax(geom) FROM admin_area "
        "WHERE code = %s",
        (COUNTY + "000000",),
    ).fetchone()
    assert box is not None
    county = scene.call(client, "viewer", "county", "GET", "/tiles/grids.json").json()["bounds"]
    league = scene.call(client, "viewer", "league", "GET", "/tiles/grids.json").json()["bounds"]
    tol = 0.01
    assert county[0] >= box[0] - tol
    assert county[1] >= box[1] - tol
    assert county[2] <= box[2] + tol
    assert county[3] <= box[3] + tol
    assert league != county


COLLECTION_FID = {
    "admin_areas": lambda s, t: s.village[t],
    "grids": lambda s, t: s.grid[t],
    "alert_points": lambda s, t: str(s.alert_point[t]),
    "incidents": lambda s, t: str(s.incident[t]),
}


@pytest.mark.parametrize("collection", [*COLLECTION_FID, "vehicles"])
def test_collections_are_cut_to_the_scope(
    client: TestClient, scene: Scene, collection: str
) -> None:
    seen: dict[str, set[str]] = {}
    for user in WIDEST_FIRST:
        url = f"/collections/{collection}/items?limit=10000"
        body = scene.call(client, "viewer", user, "GET", url).json()
        seen[user] = set(codes_in(body))
        assert sorted(c for c in seen[user] if not allowed(user, c)) == [], user
        described = scene.call(client, "viewer", user, "GET", f"/collections/{collection}")
        assert described.status_code == 200
        if collection in COLLECTION_FID:
            got = {
                t: scene.call(
                    client,
                    "viewer",
                    user,
                    "GET",
                    f"/collections/{collection}/items/{COLLECTION_FID[collection](scene, t)}",
                ).status_code
                for t in TIERS
            }
            assert got == {t: 200 if t in SEES["area"][user] else 404 for t in TIERS}, user
    for wide, narrow in itertools.pairwise(WIDEST_FIRST):
        assert seen[narrow] <= seen[wide]


# ---- layout operations: the content, not only the status (issue 18) ---------------------------
def _text(value: Any) -> str | None:
    """A text field read back from a file: missing values come back as NaN."""
    return value if isinstance(value, str) and value else None


def _sql_codes(db: psycopg.Connection[Any], layout: int, user: str) -> dict[str, tuple[Any, Any]]:
    """code → (worker name, phone) of the layout's grids inside the user's scope, from SQL."""
    rows = db.execute(
        "SELECT g.code, s.name, s.phone FROM grid g LEFT JOIN staff s ON s.id = g.worker_id "
        "WHERE g.layout_id = %s AND g.code LIKE ANY(%s)",
        (layout, [f"{c}%" for c in USERS[user]]),
    ).fetchall()
    return {r[0]: (r[1], r[2]) for r in rows}


@pytest.mark.parametrize("fmt", ["gpkg", "shp", "geojson"])
def test_layout_export_holds_only_the_scopes_grids_and_workers(
    client: TestClient, scene: Scene, db: psycopg.Connection[Any], tmp_path: Any, fmt: str
) -> None:
    import pyogrio

    for user in NARROW:
        url = f"/api/v1/layouts/{scene.active}/export?format={fmt}"
        response = scene.call(client, "viewer", user, "GET", url)
        assert response.status_code == 200, (user, response.text[:300])
        path = tmp_path / f"{user}.{'zip' if fmt == 'shp' else fmt}"
        path.write_bytes(response.content)
        frame = pyogrio.read_dataframe(f"/vsizip/{path}" if fmt == "shp" else path)
        want = _sql_codes(db, scene.active, user)
        assert want, user
        assert sorted(map(str, frame["code"])) == sorted(want), user
        assert all(allowed(user, str(c)) for c in frame["code"])
        got = {
            (str(c), _text(w), _text(p))
            for c, w, p in zip(frame["code"], frame["worker"], frame["phone"], strict=True)
        }
        assert got == {(c, w, p) for c, (w, p) in want.items()}, user


def test_layout_diff_validate_and_lineage_hold_only_the_scopes_grids(
    client: TestClient, scene: Scene, db: psycopg.Connection[Any]
) -> None:
    vehicle = _one(db, "SELECT id FROM grid_layout WHERE status = 'active' AND purpose = 'vehicle'")
    # lineage rows for the active layout (old = new codes), removed afterwards
    db.execute(
        "INSERT INTO grid_lineage (layout_id, from_layout, old_code, new_code, area_share) "
        "SELECT %s, %s, code, code, 1.0 FROM grid WHERE layout_id = %s",
        (scene.active, vehicle, scene.active),
    )
    try:
        for user in NARROW:
            want = set(_sql_codes(db, scene.active, user))
            # every patrol grid differs from the vehicle areas (other shapes, other codes)
            url = f"/api/v1/layouts/{scene.active}/diff?against={vehicle}"
            diff = scene.call(client, "viewer", user, "GET", url)
            assert diff.status_code == 200, (user, diff.text[:300])
            codes = [f["properties"]["code"] for f in diff.json()["features"]]
            assert set(codes) == want | set(_sql_codes(db, vehicle, user)), user
            lineage = scene.call(
                client, "viewer", user, "GET", f"/api/v1/layouts/{scene.active}/lineage"
            )
            assert lineage.status_code == 200
            rows = lineage.json()
            assert sorted(r["new_code"] for r in rows) == sorted(want), user
            assert all(allowed(user, r["old_code"]) for r in rows), user
            layout = scene.call(client, "viewer", user, "GET", f"/api/v1/layouts/{scene.active}")
            assert layout.json()["grids"] == len(want), user
            grids = scene.call(
                client, "viewer", user, "GET", f"/api/v1/layouts/{scene.active}/grids"
            ).json()
            assert sorted(f["properties"]["code"] for f in grids["features"]) == sorted(want)
    finally:
        db.execute("DELETE FROM grid_lineage WHERE layout_id = %s", (scene.active,))
    # the tier layouts are unstaffed: each user sees the no_worker violations of their grids
    for user in WIDEST_FIRST:
        for tier in SEES["area"][user]:
            layout = scene.layout[tier]
            url = f"/api/v1/layouts/{layout}/validate"
            body = scene.call(client, "viewer", user, "GET", url).json()
            codes = [c for f in body["violations"]["features"] for c in f["properties"]["codes"]]
            assert all(allowed(user, c) for c in codes), (user, tier, codes)
            unstaffed = {
                c for c, (worker, _) in _sql_codes(db, layout, user).items() if worker is None
            }
            if user == "league":
                unstaffed = {
                    r[0]
                    for r in db.execute(
                        "SELECT code FROM grid WHERE layout_id = %s AND worker_id IS NULL",
                        (layout,),
                    ).fetchall()
                }
            no_worker = {
                f["properties"]["codes"][0]
                for f in body["violations"]["features"]
                if f["properties"]["kind"] == "no_worker"
            }
            assert no_worker == unstaffed, (user, tier)
            assert body["problems"] == len(body["violations"]["features"])


def test_ingest_stats_are_cut_to_the_scope(
    client: TestClient, scene: Scene, db: psycopg.Connection[Any]
) -> None:
    for tier in TIERS:  # a stored fix for each tier's device
        body = _fixes(scene.device_ident[tier], scene.point[tier], n=2)
        got = scene.call(client, "admin", "league", "POST", "/api/v1/positions", json=body)
        assert got.status_code == 200, got.text
    for user in WIDEST_FIRST:
        response = scene.call(client, "admin", user, "GET", "/api/v1/ingest/stats")
        assert response.status_code == 200, response.text
        totals = response.json()["totals"]
        # every user here, the league's too, holds a scope, not `*`: their figures are counted
        # from the rows of their devices (the league-wide counters hold the fixes of devices
        # homed nowhere, stored by other tests, as well)
        row = db.execute(
            "SELECT count(*) FROM position p JOIN device d ON d.id = p.device_id "
            "WHERE d.home_village LIKE ANY(%s)",
            ([f"{c}%" for c in USERS[user]],),
        ).fetchone()
        assert "duplicate" not in totals
        assert row is not None
        assert totals.get("stored", 0) == int(row[0] or 0), user


def _finished_report(client: TestClient, scene: Scene, user: str, body: dict[str, Any]) -> int:
    made = scene.call(client, "viewer", user, "POST", "/api/v1/reports", json=body)
    assert made.status_code in (200, 202), made.text
    job = made.json()
    for _ in range(600):
        if job["status"] in ("done", "failed"):
            break
        time.sleep(0.1)
        job = scene.call(client, "viewer", user, "GET", f"/api/v1/reports/{job['id']}").json()
    assert job["status"] == "done", job
    return int(job["id"])


def test_report_jobs_are_read_only_within_their_scope(client: TestClient, scene: Scene) -> None:
    """A report job is read (job, file, list) only by users whose scope holds the job's whole
    scope, and a county's report holds only the county's rows."""
    out = _finished_report(client, scene, "league", {"area": scene.village["out"], "format": "csv"})
    county = _finished_report(client, scene, "county", {"format": "csv", "level": "village"})
    for job, readers in ((out, {"league"}), (county, {"league", "county"})):
        for user in WIDEST_FIRST:
            for suffix in ("", "/file"):
                got = scene.call(client, "viewer", user, "GET", f"/api/v1/reports/{job}{suffix}")
                assert got.status_code == (200 if user in readers else 404), (job, user, suffix)
    rows = scene.call(client, "viewer", "county", "GET", f"/api/v1/reports/{county}/file")
    codes = [line.split(",")[0] for line in rows.text.lstrip("\ufeff").splitlines()[1:]]
    assert codes
    assert all(allowed("county", c) for c in codes), codes
    mine = scene.call(client, "viewer", "county", "GET", "/api/v1/reports").json()
    assert county in {j["id"] for j in mine}
    assert out not in {j["id"] for j in mine}
    assert all(allowed("county", j["area"]) for j in mine if j["area"])
