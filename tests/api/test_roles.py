"""Every route is protected: a table test over the app's own route list, so routes added later
are covered automatically. No token → 401; a role below the route's → 403."""

from __future__ import annotations

import re
from typing import Any

import pytest
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.testclient import TestClient

from api.auth import RequireRole
from api.routers.tiles import TileAccess
from api.settings import Settings
from tests.conftest import auth

PUBLIC = {
    "/healthz",
    "/openapi.json",
    "/docs",
    "/docs/oauth2-redirect",
    "/redoc",
    "/api/v1/auth/token",
    "/",  # the front door: the sign-in form, or the home page of a session
    "/signin",  # the front door's form (api/routers/home.py)
    "/signout",  # checks the page's CSRF value itself
    "/m",  # the grid worker's phone page: redirects to /m/
    "/m/",  # one shell for everyone; its data comes from /api/v1/m (role worker)
    "/m/sw.js",  # the phone page's service worker script
    "/m/signin",  # the phone page's sign-in form (api/routers/mobile.py)
    "/m/signout",  # checks the page's CSRF value itself
}
# plausible values for path parameters, so routing reaches the auth dependency
PATH_VALUES = {"code": "152502000000", "name": "nobody", "id": "1", "layer": "grids"}


def _required_role(dependant: Dependant) -> RequireRole | None:
    for dep in dependant.dependencies:
        if isinstance(dep.call, RequireRole):
            return dep.call
        found = _required_role(dep)
        if found:
            return found
    return None


def _routes(client: TestClient) -> list[tuple[str, str, RequireRole | None]]:
    out = []
    for context in iter_route_contexts(client.app.routes):  # type: ignore[attr-defined]
        route = context.original_route
        if not isinstance(route, APIRoute):
            continue
        role = _required_role(route.dependant)
        methods = sorted((context.methods or set()) - {"HEAD", "OPTIONS"})
        out.extend((method, str(context.path), role) for method in methods)
    assert len(out) >= 8, "the route walk found too few routes"
    return out


def _url(path: str) -> str:
    return re.sub(r"\{(\w+)(?::\w+)?\}", lambda m: PATH_VALUES.get(m.group(1), "1"), path)


def test_every_non_public_route_declares_a_role(client: TestClient) -> None:
    unprotected = [(m, p) for m, p, role in _routes(client) if role is None and p not in PUBLIC]
    assert unprotected == []


def test_no_token_gives_401(client: TestClient) -> None:
    failures = []
    for method, path, role in _routes(client):
        if role is None:
            continue
        response = client.request(method, _url(path), json={})
        if response.status_code != 401:
            failures.append((method, path, response.status_code))
    assert failures == []


def test_public_tiles_are_the_one_settings_controlled_exception(
    client: TestClient, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``GRIDPATROL_API_PUBLIC_TILES`` lets anonymous callers read public tile layers: only the
    tile routes carry that dependency, and with the switch on every other route still needs a
    token (the tile routes themselves are covered above with the switch off, the default)."""
    capable = sorted({p for _, p, role in _routes(client) if isinstance(role, TileAccess)})
    assert capable == [
        "/tiles",
        "/tiles/{layer}.json",
        "/tiles/{layer}/{z:int}/{x:int}/{y:int}.pbf",
    ]
    monkeypatch.setattr(settings.api, "public_tiles", True)
    still_closed = [
        (m, p, client.request(m, _url(p), json={}).status_code)
        for m, p, role in _routes(client)
        if role is not None and not isinstance(role, TileAccess)
    ]
    assert [r for r in still_closed if r[2] != 401] == []
    assert client.get("/tiles/admin_areas/1/1/1.pbf").status_code == 200
    assert client.get("/tiles/vehicles/1/1/1.pbf").status_code == 401  # never public
    assert client.get("/tiles/admin_areas/1/1/1.pbf", headers=auth("gp_bad")).status_code == 401


def test_a_bad_token_gives_401(client: TestClient) -> None:
    response = client.get("/api/v1/admin-areas", headers=auth("gp_not-a-real-token"))
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


def test_a_too_weak_role_gives_403(client: TestClient, tokens: dict[str, str]) -> None:
    checked = 0
    failures: list[Any] = []
    for method, path, role in _routes(client):
        if role is None:
            continue
        weaker = [r for r in tokens if r not in role.allowed]
        for weak in weaker:
            response = client.request(method, _url(path), json={}, headers=auth(tokens[weak]))
            checked += 1
            if response.status_code != 403:
                failures.append((method, path, weak, response.status_code))
    assert failures == []
    assert checked > 0


@pytest.mark.parametrize("role", ["admin", "planner", "dispatcher", "viewer"])
def test_me_reports_role_and_scope(client: TestClient, tokens: dict[str, str], role: str) -> None:
    body = client.get("/api/v1/me", headers=auth(tokens[role])).json()
    assert body["role"] == role
    assert body["scope"] == ["*"]
