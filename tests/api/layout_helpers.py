"""Helpers for tests that redraw grids: pick a small township, make a staffed active layout.

Each test module names its own county and uses the ``household`` purpose (no other test makes
layouts of that purpose), so activations in one module never retire another module's layouts.
"""

from __future__ import annotations

from typing import Any

import httpx
import psycopg

from tests.conftest import auth

PURPOSE = "household"


def small_township(url: str, county: str) -> str:
    """The township of ``county`` with the fewest villages (at least two)."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT parent_code FROM admin_area WHERE level = 'village' AND code LIKE %s "
            "GROUP BY parent_code HAVING count(*) >= 2 ORDER BY count(*), parent_code LIMIT 1",
            (county + "%",),
        ).fetchone()
    assert row is not None, f"no township with two villages in {county}"
    return str(row[0])


def staff_every_grid(
    client: httpx.Client, token: str, layout: int, *, phone_prefix: str = "19"
) -> None:
    """A worker for every grid without one; the phone is ``phone_prefix`` + the grid code's last
    digits (11 in all), so modules staffing the same grids can keep their phones apart.

    ``client`` is the in-process TestClient or an ``httpx.Client`` on a live server."""
    tail = 11 - len(phone_prefix)
    grids = client.get(f"/api/v1/layouts/{layout}/grids", headers=auth(token)).json()["features"]
    codes = [g["properties"]["code"] for g in grids if not g["properties"]["worker"]]
    if not codes:
        return
    rows = "".join(f"网格员{c[-5:]},{phone_prefix}{c[-tail:]},{c[:12]}\n" for c in codes)
    imported = client.post(
        "/api/v1/staff/import",
        params={"filename": "w.csv"},
        content="name,phone,village_code\n" + rows,
        headers=auth(token),
    )
    assert imported.status_code == 200, imported.text
    people = {p["phone"]: p["id"] for p in client.get("/api/v1/staff", headers=auth(token)).json()}
    for c in codes:
        put = client.put(
            f"/api/v1/layouts/{layout}/grids/{c}/worker",
            json={"staff_id": people[f"{phone_prefix}{c[-tail:]}"]},
            headers=auth(token),
        )
        assert put.status_code == 200, put.text


def make_active_layout(
    client: httpx.Client, token: str, area: str, *, per_village: int = 4, name: str = "片区"
) -> int:
    """A balanced ``household``-purpose layout of ``area``, staffed and activated."""
    spec = {
        "name": name,
        "area": area,
        "method": "balanced",
        "per_village": per_village,
        "purpose": PURPOSE,
    }
    made = client.post("/api/v1/layouts", json=spec, headers=auth(token))
    assert made.status_code == 201, made.text
    layout = int(made.json()["id"])
    staff_every_grid(client, token, layout)
    ok = client.post(f"/api/v1/layouts/{layout}/activate", json={}, headers=auth(token))
    assert ok.status_code == 200, ok.text
    return layout


def grids_of(client: httpx.Client, token: str, layout: int) -> list[dict[str, Any]]:
    features: list[dict[str, Any]] = client.get(
        f"/api/v1/layouts/{layout}/grids", headers=auth(token)
    ).json()["features"]
    return features
