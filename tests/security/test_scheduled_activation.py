"""Issue 18, item 2: a scheduled layout activation is checked like an immediate one, recorded
with its scheduler, and re-checked in the scheduler's name when it fires.

The review had a village planner, refused (403) when activating a township layout, send the same
request with ``effective_from`` 20 s ahead: 200, and the periodic job activated it later as the
system. Now scheduling needs the same scope as activating; the draft records who scheduled it
(user, role, scope, version); when the time comes ``activate_due`` acts as that user, re-read
from the database — disabled, re-scoped, demoted or an edited draft means no activation, an
audited refusal and the schedule cleared.

Scenes: ``information`` layouts (no other test makes that purpose) of township 152502100.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from itertools import count
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from api import layout_ops
from api.auth import SYSTEM
from tests.api.layout_helpers import staff_every_grid
from tests.conftest import auth, run

pytestmark = pytest.mark.usefixtures("demo")
TOWNSHIP = "152502100"
OTHER_TOWNSHIP = "152502101"
_names = count()


def _one(db: psycopg.Connection[Any], query: str, *args: Any) -> Any:
    row = db.execute(query, args).fetchone()
    assert row is not None, query
    return row if len(row) > 1 else row[0]


def _draft(client: TestClient, league_planner: str) -> int:
    made = client.post(
        "/api/v1/layouts",
        json={
            "name": f"排期 {next(_names)}",
            "area": TOWNSHIP,
            "method": "balanced",
            "per_village": 2,
            "purpose": "information",
        },
        headers=auth(league_planner),
    )
    assert made.status_code == 201, made.text
    layout = int(made.json()["id"])
    staff_every_grid(client, league_planner, layout, phone_prefix="165")
    return layout


def _later() -> str:
    return (datetime.now(UTC) + timedelta(seconds=20)).isoformat()


def _come_due(db: psycopg.Connection[Any], layout: int) -> None:
    """Move the clock: the schedule fell due a second ago."""
    db.execute(
        "UPDATE grid_layout SET effective_from = now() - interval '1 second' WHERE id = %s",
        (layout,),
    )


def _fire(db_url: str) -> list[int]:
    async def go() -> list[int]:
        async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
            return await layout_ops.activate_due(conn, SYSTEM)

    return run(go())


def _audit(db: psycopg.Connection[Any], layout: int, action: str) -> list[tuple[Any, ...]]:
    return db.execute(
        "SELECT user_name, user_scope, detail FROM audit_log WHERE object_type = 'grid_layout' "
        "AND object_id = %s AND action = %s ORDER BY id",
        (str(layout), action),
    ).fetchall()


@pytest.fixture(scope="module")
def league_planner(make_token: Callable[..., str]) -> str:
    return make_token("planner", ["*"])


def _planner(make_token: Callable[..., str], scope: list[str]) -> tuple[str, str]:
    name = f"sched-{next(_names)}-{scope[0]}"
    return name, make_token("planner", scope, name=name)


def test_a_village_planner_cannot_schedule_a_township_layout(
    client: TestClient,
    db: psycopg.Connection[Any],
    db_url: str,
    league_planner: str,
    make_token: Callable[..., str],
) -> None:
    layout = _draft(client, league_planner)
    village = _one(
        db,
        "SELECT min(code) FROM admin_area WHERE level = 'village' AND code LIKE %s",
        TOWNSHIP + "%",
    )
    _, token = _planner(make_token, [village])
    url = f"/api/v1/layouts/{layout}/activate"
    now = client.post(url, json={}, headers=auth(token))
    assert now.status_code == 403, now.text
    later = client.post(url, json={"effective_from": _later()}, headers=auth(token))
    assert later.status_code == 403, later.text
    row = _one(
        db, "SELECT status, effective_from, scheduled_by FROM grid_layout WHERE id = %s", layout
    )
    assert row == ("draft", None, None)
    assert _audit(db, layout, "layout.schedule") == []
    _come_due(db, layout)  # even a schedule written behind the API's back never fires
    assert layout not in _fire(db_url)


def test_a_schedule_fires_in_the_schedulers_name(
    client: TestClient,
    db: psycopg.Connection[Any],
    db_url: str,
    league_planner: str,
    make_token: Callable[..., str],
) -> None:
    layout = _draft(client, league_planner)
    name, token = _planner(make_token, [TOWNSHIP])
    version = _one(db, "SELECT version FROM grid_layout WHERE id = %s", layout)
    got = client.post(
        f"/api/v1/layouts/{layout}/activate",
        json={"version": version, "effective_from": _later()},
        headers=auth(token),
    )
    assert got.status_code == 200, got.text
    assert got.json()["scheduled"] is True
    recorded = _one(
        db,
        "SELECT l.scheduled_by, l.scheduled_by_id = u.id, l.scheduled_role, l.scheduled_scope, "
        "l.scheduled_version FROM grid_layout l, users u WHERE l.id = %s AND u.name = %s",
        layout,
        name,
    )
    assert recorded == (name, True, "planner", [TOWNSHIP], version)
    assert layout not in _fire(db_url)  # not due yet
    _come_due(db, layout)
    assert layout in _fire(db_url)
    assert _one(db, "SELECT status, activated_by FROM grid_layout WHERE id = %s", layout) == (
        "active",
        name,
    )
    activations = _audit(db, layout, "layout.activate")
    assert [(a[0], a[1]) for a in activations] == [(name, [TOWNSHIP])]
    scheduled = _audit(db, layout, "layout.activate_scheduled")
    assert [(a[0], a[1]) for a in scheduled] == [(name, [TOWNSHIP])]


@pytest.mark.parametrize("change", ["disabled", "rescoped", "demoted", "edited", "deleted"])
def test_a_schedule_is_refused_when_its_scheduler_no_longer_may(
    client: TestClient,
    db: psycopg.Connection[Any],
    db_url: str,
    league_planner: str,
    make_token: Callable[..., str],
    change: str,
) -> None:
    layout = _draft(client, league_planner)
    name, token = _planner(make_token, [TOWNSHIP])
    got = client.post(
        f"/api/v1/layouts/{layout}/activate",
        json={"effective_from": _later()},
        headers=auth(token),
    )
    assert got.status_code == 200, got.text
    assert got.json()["scheduled"] is True
    if change == "disabled":
        db.execute("UPDATE users SET disabled = true WHERE name = %s", (name,))
    elif change == "rescoped":
        db.execute("UPDATE users SET scope = %s WHERE name = %s", ([OTHER_TOWNSHIP], name))
    elif change == "demoted":
        db.execute("UPDATE users SET role = 'viewer' WHERE name = %s", (name,))
    elif change == "edited":
        db.execute("UPDATE grid_layout SET version = version + 1 WHERE id = %s", (layout,))
    else:
        db.execute("DELETE FROM users WHERE name = %s", (name,))
    _come_due(db, layout)
    assert layout not in _fire(db_url)
    assert _one(db, "SELECT status, effective_from FROM grid_layout WHERE id = %s", layout) == (
        "draft",
        None,
    )
    assert _audit(db, layout, "layout.activate") == []
    refused = _audit(db, layout, "layout.schedule_refused")
    assert len(refused) == 1, refused
    assert refused[0][0] == name
    assert refused[0][2]["reason"]
    assert layout not in _fire(db_url)  # cleared: not tried (nor audited) again
    assert len(_audit(db, layout, "layout.schedule_refused")) == 1


def test_a_schedule_without_a_recorded_scheduler_never_fires(
    client: TestClient, db: psycopg.Connection[Any], db_url: str, league_planner: str
) -> None:
    """A draft given a time without a scheduler (as before the scheduler was recorded)."""
    layout = _draft(client, league_planner)
    _come_due(db, layout)
    assert layout not in _fire(db_url)
    assert _one(db, "SELECT status, effective_from FROM grid_layout WHERE id = %s", layout) == (
        "draft",
        None,
    )
    assert len(_audit(db, layout, "layout.schedule_refused")) == 1


def test_the_system_still_schedules_from_the_command_line(
    client: TestClient, db: psycopg.Connection[Any], db_url: str, league_planner: str
) -> None:
    layout = _draft(client, league_planner)

    async def schedule() -> dict[str, Any]:
        async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
            return await layout_ops.activate(
                conn,
                SYSTEM,
                layout,
                version=None,
                effective_from=datetime.now(UTC) + timedelta(days=1),
            )

    assert run(schedule())["scheduled"] is True
    _come_due(db, layout)
    assert layout in _fire(db_url)
    assert _one(db, "SELECT status, activated_by FROM grid_layout WHERE id = %s", layout) == (
        "active",
        "system",
    )
