"""Security controls as specifications (see SECURITY.md): every allowed role passes every route's
gate; device tokens act for their own device only; ingest and sign-in are rate-limited (429 with
``Retry-After``); SQL injection payloads in every path and query parameter of every route give a
4xx or an empty answer, never a 500, and leave the tables intact; the audit log records redraws,
dispatches and user changes."""

from __future__ import annotations

import re
import urllib.request
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.testclient import TestClient

from api.ratelimit import RateLimiter
from tests.api.test_roles import _routes
from tests.conftest import auth

pytestmark = pytest.mark.usefixtures("demo")

VILLAGE = "152502100200"
MISSING = "987654321"  # an id no object has: allowed roles reach the route, nothing changes
SKIP_ALLOWED = {
    ("POST", "/api/v1/coverage/update"),  # global recompute: has its own tests
    ("GET", "/api/v1/live/stream"),  # endless event stream: tests/api/test_live.py
}
PAYLOADS = (
    "'; DROP TABLE grid; --",
    "1 OR 1=1",
    "1' OR '1'='1",
    '" OR ""="',
    "1; SELECT pg_sleep(0)--",
    "%",
    "_%_",
    "＇ OR １=１ --",  # fullwidth quote and digits
    "152502\u202e--",  # right-to-left override
    "ѕеlесt",  # Cyrillic homoglyphs
    "\x00",
    "../../../../etc/passwd",
    "1e999",
    "-1",
    "x" * 5000,
)


def _now(offset_s: int = 0) -> str:
    return (datetime.now(UTC) - timedelta(seconds=offset_s)).isoformat()


# ---- roles: the positive half of the role table --------------------------------------------
def test_every_allowed_role_passes_every_routes_gate(
    client: TestClient, tokens: dict[str, str]
) -> None:
    """The role test checks that weaker roles are refused; here every role a route admits gets
    past its gate (no 401/403) — on ids that match nothing, so no object changes."""
    failures = []
    for method, path, role in _routes(client):
        if role is None or (method, path) in SKIP_ALLOWED:
            continue
        url = re.sub(r"\{(\w+)(?::\w+)?\}", lambda m: _value(m.group(1)), path)
        for name in sorted(r for r in tokens if r in role.allowed):
            response = client.request(method, url, json={}, headers=auth(tokens[name]))
            if response.status_code in (401, 403) or response.status_code >= 500:
                failures.append((method, path, name, response.status_code, response.text[:120]))
    assert failures == []


def _value(param: str) -> str:
    return {"layer": "grids", "z": "1", "x": "1", "y": "1"}.get(param, MISSING)


# ---- device tokens ---------------------------------------------------------------------------
def test_a_device_token_cannot_post_or_read_for_another_device(
    client: TestClient, make_device: Any, db: psycopg.Connection[Any]
) -> None:
    mine, token = make_device(VILLAGE)
    other, _ = make_device(VILLAGE)
    fix = {"lat": 43.93, "lon": 116.08, "time": _now(60)}
    response = client.post(
        "/api/v1/positions", json=[{**fix, "device": other}], headers=auth(token)
    )
    assert response.status_code == 403
    assert other in response.json()["detail"]
    mixed = [{**fix, "device": mine}, {**fix, "device": other, "time": _now(50)}]
    assert client.post("/api/v1/positions", json=mixed, headers=auth(token)).status_code == 403
    # ?device= names another device: a device token's own name wins
    posted = client.post(
        "/api/v1/positions", params={"device": other}, json=[fix], headers=auth(token)
    )
    assert posted.status_code == 200, posted.text
    rows = db.execute(
        "SELECT d.identifier, count(*) FROM position p JOIN device d ON d.id = p.device_id "
        "WHERE d.identifier = ANY(%s) GROUP BY 1",
        ([mine, other],),
    ).fetchall()
    assert rows == [(mine, 1)]
    other_id = db.execute("SELECT id FROM device WHERE identifier = %s", (other,)).fetchone()
    assert other_id is not None
    track = client.get(
        f"/api/v1/devices/{other_id[0]}/track",
        params={"from": _now(3600), "to": _now()},
        headers=auth(token),
    )
    assert track.status_code == 404


# ---- rate limits -------------------------------------------------------------------------------
def test_sign_in_is_rate_limited_with_retry_after(client: TestClient) -> None:
    # every attempt now costs an argon2 check, unknown names too (≈ 0.1–1 s on a busy machine),
    # during which the name's budget refills at 1 per 2 s: try until refused, within bounds
    statuses = []
    for _ in range(60):
        statuses.append(
            client.post(
                "/api/v1/auth/token",
                json={"name": "rate-limited-nobody", "password": "wrong-pass"},
            )
        )
        if statuses[-1].status_code == 429:
            break
    assert {r.status_code for r in statuses[:10]} == {401}
    assert statuses[-1].status_code == 429
    assert int(statuses[-1].headers["retry-after"]) >= 1
    assert statuses[-1].json()["error"] == "too_many_requests"


def test_ingest_routes_are_rate_limited_per_device(
    client: TestClient, make_device: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    app: Any = client.app
    assert app.state.ingest_limiter is not None  # on by default (GRIDPATROL_INGEST_RATE_PER_S)
    # setitem on the state's dict: monkeypatch.setattr on a State would delete the attribute
    # on undo (it cannot see State's values), breaking every later test of the session
    monkeypatch.setitem(app.state._state, "ingest_limiter", RateLimiter(rate=0.01, burst=2))
    _, token = make_device(VILLAGE)
    _, neighbour = make_device(VILLAGE)
    answers = [
        client.post("/api/v1/positions", json=[], headers=auth(token)).status_code for _ in range(3)
    ]
    assert answers[:2] != [429, 429]
    assert answers[2] == 429
    limited = client.post(
        "/api/v1/positions/files", params={"format": "csv"}, content=b"", headers=auth(token)
    )
    assert limited.status_code == 429
    assert int(limited.headers["retry-after"]) >= 1
    # the budget is per device: another device is not slowed down by this one
    assert client.post("/api/v1/positions", json=[], headers=auth(neighbour)).status_code != 429


def test_the_osmand_server_is_rate_limited_per_device(
    client: TestClient,
    make_device: Any,
    monkeypatch: pytest.MonkeyPatch,
    tokens: dict[str, str],
    db: psycopg.Connection[Any],
) -> None:
    server: Any = client.app.state.osmand  # type: ignore[attr-defined]
    assert server.limiter is client.app.state.ingest_limiter  # type: ignore[attr-defined]
    monkeypatch.setattr(server, "limiter", RateLimiter(rate=0.01, burst=1))
    identifier, _ = make_device(VILLAGE)
    row = db.execute("SELECT id FROM device WHERE identifier = %s", (identifier,)).fetchone()
    assert row is not None
    issued = client.post(f"/api/v1/devices/{row[0]}/osmand-key", headers=auth(tokens["admin"]))
    key = issued.json()["osmand_key"]
    statuses, retry = [], None
    for k in range(2):
        ts = int(datetime.now(UTC).timestamp()) - 100 + k
        fix = f"id={identifier}&key={key}&lat=43.93&lon=116.08&timestamp={ts}"
        url = f"http://127.0.0.1:{server.port}/?{fix}"
        try:
            with urllib.request.urlopen(url, timeout=10) as answer:
                statuses.append(answer.status)
        except urllib.error.HTTPError as exc:
            statuses.append(exc.code)
            retry = exc.headers.get("Retry-After")
    assert statuses == [200, 429]
    assert retry is not None
    assert int(retry) >= 1


# ---- SQL injection -----------------------------------------------------------------------------
def _params(dependant: Dependant) -> tuple[list[str], list[str]]:
    """Path and query parameter names of a route, its dependencies' included."""
    path = [p.alias for p in dependant.path_params]
    query = [p.alias for p in dependant.query_params]
    for sub in dependant.dependencies:
        more_path, more_query = _params(sub)
        path += [p for p in more_path if p not in path]
        query += [q for q in more_query if q not in query]
    return path, query


def _table_state(db: psycopg.Connection[Any]) -> tuple[Any, ...]:
    tables = db.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()
    grids = db.execute("SELECT count(*) FROM grid").fetchone()
    users = db.execute("SELECT count(*) FROM users WHERE disabled").fetchone()
    return (tables, grids, users)


def test_injection_payloads_in_every_parameter_never_give_500(
    client: TestClient, tokens: dict[str, str], db: psycopg.Connection[Any]
) -> None:
    """Each payload in each path and query parameter of each route, the others left at plausible
    values, sent as admin with an empty JSON body (so writes fail validation before acting)."""
    before = _table_state(db)
    headers = auth(tokens["admin"])
    failures: list[Any] = []
    sent = 0
    for context in iter_route_contexts(client.app.routes):  # type: ignore[attr-defined]
        route = context.original_route
        if not isinstance(route, APIRoute):
            continue
        path_names, query_names = _params(route.dependant)
        methods = sorted((context.methods or set()) - {"HEAD", "OPTIONS"})
        for method in methods:
            for target in [
                *(("path", n) for n in path_names),
                *(("query", n) for n in query_names),
            ]:
                for payload in PAYLOADS:
                    values = {n: _value(n) for n in path_names}
                    params: dict[str, str] = {}
                    if target[0] == "path":
                        values[target[1]] = payload
                    else:
                        params[target[1]] = payload
                    url = re.sub(
                        r"\{(\w+)(?::\w+)?\}",
                        lambda m, v=values: urllib.parse.quote(v[m.group(1)], safe=""),
                        str(context.path),
                    )
                    response = client.request(method, url, params=params, json={}, headers=headers)
                    sent += 1
                    if response.status_code >= 500:
                        failures.append((method, str(context.path), target, payload[:30]))
    assert failures == []
    assert sent > 500
    assert _table_state(db) == before


def test_injection_payloads_in_search_filters_match_nothing(
    client: TestClient, tokens: dict[str, str]
) -> None:
    """Free-text filters bind their values: a payload is a value that matches no row."""
    headers = auth(tokens["admin"])
    for payload in ("'; DROP TABLE grid; --", "1 OR 1=1", "1' OR '1'='1"):
        for path, key in (
            ("/api/v1/devices", "village"),
            ("/api/v1/staff", "village"),
            ("/api/v1/layouts", "status"),
            ("/api/v1/admin-areas", "parent"),
        ):
            response = client.get(path, params={key: payload}, headers=headers)
            assert response.status_code < 500
            if response.status_code == 200:
                body = response.json()
                assert (body.get("features") if isinstance(body, dict) else body) == [], path


# ---- audit log ---------------------------------------------------------------------------------
AUDITED = {
    # redraws
    "layout.create", "layout.clone", "layout.split", "layout.merge", "layout.reshape",
    "layout.move_boundary", "layout.replace", "layout.activate", "layout.schedule",
    "layout.rollback",
    # dispatches
    "incident.create", "incident.assign", "incident.accept", "incident.arrive", "incident.clear",
    "incident.cancel", "incident.release", "incident.escalate", "jt808.command",
    # users, devices and their tokens
    "user.create", "user.scope", "user.disable", "token.issue", "token.login",
    "device.create", "device.update", "device.token",
}  # fmt: skip


def test_the_code_audits_every_redraw_dispatch_and_user_change() -> None:
    """Every action above is written by some ``audit.record`` call (a static check: the
    dispatch and redraw tests exercise them; the user changes are exercised below)."""
    import api

    root = __import__("pathlib").Path(api.__file__).parent
    source = "\n".join(p.read_text() for p in root.rglob("*.py"))
    written = set(re.findall(r'"((?:layout|incident|jt808|user|token|device)\.[a-z_]+)"', source))
    transitions = set(re.findall(r'^    "([a-z]+)": \(', source, flags=re.M))
    written |= {
        f"incident.{t}"
        for t in transitions
        if t in {"accept", "arrive", "clear", "cancel", "release"}
    }
    assert AUDITED - written == set()


def test_user_changes_are_in_the_audit_log(
    client: TestClient, tokens: dict[str, str], db: psycopg.Connection[Any]
) -> None:
    admin = auth(tokens["admin"])
    name = f"audited-{datetime.now(UTC).strftime('%H%M%S%f')}"
    created = client.post(
        "/api/v1/users",
        json={"name": name, "role": "viewer", "scope": [VILLAGE], "password": "s3cret-pass"},
        headers=admin,
    )
    assert created.status_code == 201, created.text
    user_id = created.json()["id"]
    login = client.post("/api/v1/auth/token", json={"name": name, "password": "s3cret-pass"})
    assert login.status_code == 200
    scoped = client.put(f"/api/v1/users/{name}/scope", json={"scope": ["152502"]}, headers=admin)
    assert scoped.status_code == 200
    gone = client.delete(f"/api/v1/users/{name}", headers=admin)
    assert gone.status_code == 200
    assert gone.json()["tokens_revoked"] == 2  # the first token and the sign-in's
    me = client.get("/api/v1/me", headers=auth(login.json()["token"]))
    assert me.status_code == 401  # revoked at once
    actions = [
        r[0]
        for r in db.execute(
            "SELECT action FROM audit_log WHERE object_type = 'user' AND object_id = %s "
            "ORDER BY id",
            (str(user_id),),
        ).fetchall()
    ]
    assert actions == ["user.create", "token.login", "user.scope", "user.disable"]


def test_a_scoped_admin_cannot_change_users_beyond_their_scope(
    client: TestClient, make_token: Any, tokens: dict[str, str]
) -> None:
    county_admin = auth(make_token("admin", ["152502"]))
    league_viewer = client.get("/api/v1/me", headers=auth(tokens["viewer"])).json()["name"]
    narrowed = client.put(
        f"/api/v1/users/{league_viewer}/scope", json={"scope": ["152502"]}, headers=county_admin
    )
    assert narrowed.status_code == 404
    assert client.delete(f"/api/v1/users/{league_viewer}", headers=county_admin).status_code == 404
    assert client.get("/api/v1/me", headers=auth(tokens["viewer"])).json()["scope"] == ["*"]
