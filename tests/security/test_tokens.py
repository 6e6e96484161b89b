"""Issue 18, item 19: token revocation, disabling and scope changes take effect at once, in every
process, with the production token cache on.

The ``TokenStore`` cached a token's principal for ``token_cache_seconds`` (5 s in production; the
other tests run with 0), so a revoked token or a narrowed scope kept working that long — in
other processes even after the change. Now each change NOTIFYs a channel every ``TokenStore``
LISTENs on, and the cache is dropped on every notification and whenever the listener reconnects.

Two apps on the same database, each with an hour-long cache, stand for two processes: a change
made through one (or by a service call on a connection of its own, like the CLI) must show in
the other on its next request. Were the cache kept, the old answer would last an hour.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from api import users as users_service
from api.auth import SYSTEM
from api.settings import Settings
from tests.conftest import auth, run

HOUR = 3600.0


@pytest.fixture(scope="module")
def two_apps(settings: Settings, demo: str) -> Iterator[tuple[TestClient, TestClient]]:
    from api.app import create_app

    cached = replace(settings, api=settings.api.model_copy(update={"token_cache_seconds": HOUR}))
    with TestClient(create_app(cached)) as first, TestClient(create_app(cached)) as second:
        yield first, second


def _eventually(check: Callable[[], bool], *, within_s: float = 10.0) -> bool:
    """``check()`` holds now or within a generous deadline (a notification travels through
    PostgreSQL to the other app in milliseconds; the cache would hold it for an hour)."""
    deadline = time.monotonic() + within_s
    while True:
        if check():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def _name(tag: str) -> str:
    return f"tokens-{tag}-{os.getpid()}-{time.monotonic_ns()}"


def _me(client: TestClient, token: str) -> Any:
    return client.get("/api/v1/me", headers=auth(token))


def test_the_cache_is_on_in_these_apps(
    two_apps: tuple[TestClient, TestClient], make_token: Any, db: psycopg.Connection[Any]
) -> None:
    """The premise: with the cache on and no change announced, a lookup is not repeated (a
    token's ``last_used_at`` is written by the lookup)."""
    first, _ = two_apps
    token = make_token("viewer", ["152502"])
    assert _me(first, token).status_code == 200
    db.execute("UPDATE api_token SET last_used_at = NULL WHERE last_used_at IS NOT NULL")
    assert _me(first, token).status_code == 200
    used = db.execute("SELECT count(*) FROM api_token WHERE last_used_at IS NOT NULL").fetchone()
    assert used == (0,)


def test_disabling_a_user_refuses_their_token_at_once_in_every_process(
    two_apps: tuple[TestClient, TestClient], make_token: Any, tokens: dict[str, str]
) -> None:
    first, second = two_apps
    name = _name("disabled")
    token = make_token("viewer", ["152502"], name=name)
    assert _me(first, token).status_code == 200  # cached in both
    assert _me(second, token).status_code == 200
    gone = first.delete(f"/api/v1/users/{name}", headers=auth(tokens["admin"]))
    assert gone.status_code == 200, gone.text
    assert _me(first, token).status_code == 401
    assert _eventually(lambda: _me(second, token).status_code == 401)


def test_a_scope_change_narrows_at_once_in_every_process(
    two_apps: tuple[TestClient, TestClient], make_token: Any, tokens: dict[str, str]
) -> None:
    first, second = two_apps
    name = _name("rescoped")
    token = make_token("viewer", ["152502"], name=name)
    assert _me(first, token).json()["scope"] == ["152502"]
    assert _me(second, token).json()["scope"] == ["152502"]
    narrowed = first.put(
        f"/api/v1/users/{name}/scope", json={"scope": ["152502100"]}, headers=auth(tokens["admin"])
    )
    assert narrowed.status_code == 200, narrowed.text
    assert _me(first, token).json()["scope"] == ["152502100"]
    assert _eventually(lambda: _me(second, token).json()["scope"] == ["152502100"])


def test_a_change_made_by_another_process_reaches_both_apps(
    two_apps: tuple[TestClient, TestClient], make_token: Any, db_url: str
) -> None:
    """Like ``gridpatrol users disable`` on the command line: a service call on a connection
    of its own, no app involved."""
    first, second = two_apps
    name = _name("cli-disabled")
    token = make_token("viewer", ["152502"], name=name)
    assert _me(first, token).status_code == 200
    assert _me(second, token).status_code == 200

    async def disable() -> None:
        async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
            await users_service.disable_user(conn, SYSTEM, name)

    run(disable())
    assert _eventually(lambda: _me(first, token).status_code == 401)
    assert _eventually(lambda: _me(second, token).status_code == 401)


def test_a_rotated_device_token_stops_at_once_in_every_process(
    two_apps: tuple[TestClient, TestClient],
    make_device: Any,
    tokens: dict[str, str],
    db: psycopg.Connection[Any],
) -> None:
    first, second = two_apps
    identifier, old = make_device()
    row = db.execute("SELECT id FROM device WHERE identifier = %s", (identifier,)).fetchone()
    assert row is not None
    track = f"/api/v1/devices/{row[0]}/track"
    window = {"from": "2026-01-01T00:00:00Z", "to": "2026-01-02T00:00:00Z"}

    def own_track(client: TestClient, token: str) -> int:
        return client.get(track, params=window, headers=auth(token)).status_code

    assert own_track(first, old) == 200
    assert own_track(second, old) == 200
    rotated = first.post(f"/api/v1/devices/{row[0]}/token", headers=auth(tokens["admin"]))
    assert rotated.status_code in (200, 201), rotated.text
    new = rotated.json()["token"]
    assert own_track(first, old) == 401
    assert _eventually(lambda: own_track(second, old) == 401)
    assert own_track(second, new) == 200


def test_the_cache_is_dropped_when_the_listener_reconnects(
    two_apps: tuple[TestClient, TestClient], make_token: Any, db: psycopg.Connection[Any]
) -> None:
    """A change that no notification announced (made while the listener was cut off, here a
    bare UPDATE) is seen once the listener is back: reconnecting drops the cache."""
    _, second = two_apps
    store = second.app.state.tokens  # type: ignore[attr-defined]
    name = _name("reconnect")
    token = make_token("viewer", ["152502"], name=name)
    assert _me(second, token).json()["scope"] == ["152502"]
    before = store._listener
    assert before is not None
    cut = db.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE application_name = 'gridpatrol-token-cache'"
    ).fetchall()
    assert cut
    assert all(r[0] for r in cut)
    db.execute("UPDATE users SET scope = %s WHERE name = %s", (["152502100"], name))
    # while cut off the cache is not used; after reconnecting it is empty: the change shows
    assert _eventually(lambda: _me(second, token).json()["scope"] == ["152502100"])
    assert _eventually(lambda: store._listener not in (None, before))


def test_the_listener_survives_an_app_restart_cycle(settings: Settings) -> None:
    """Start and stop leave no task or connection behind (the lifespan awaits ``stop``)."""
    from api.app import create_app

    cached = replace(settings, api=settings.api.model_copy(update={"token_cache_seconds": HOUR}))
    app = create_app(cached)
    with TestClient(app):
        assert app.state.tokens._listener is not None
    assert app.state.tokens._task is None
    assert app.state.tokens._listener is None
