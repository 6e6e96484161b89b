"""Issue 18, item 18: an empty scope is refused (422 naming ``scope``), never widened to ``*``.

``POST /api/v1/users {"scope": []}`` used to create a user who sees everything: the service read
an empty list as "not given". The API, the CLI and a scope change must all refuse it and write
nothing.
"""

from __future__ import annotations

import os
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from tests.conftest import auth


def _name(tag: str) -> str:
    return f"empty-scope-{tag}-{os.getpid()}"


@pytest.mark.parametrize("scope", [[], [""], ["  ", ""]], ids=["empty", "blank", "blanks"])
def test_creating_a_user_with_an_empty_scope_is_refused(
    client: TestClient, tokens: dict[str, str], db: psycopg.Connection[Any], scope: list[str]
) -> None:
    name = _name(f"api-{len(scope)}-{sum(map(len, scope))}")
    response = client.post(
        "/api/v1/users",
        json={"name": name, "role": "viewer", "scope": scope},
        headers=auth(tokens["admin"]),
    )
    assert response.status_code == 422, response.text
    body = response.json()
    assert "scope" in body["detail"]
    assert body.get("field") == "scope"
    assert db.execute("SELECT count(*) FROM users WHERE name = %s", (name,)).fetchone() == (0,)


def test_omitting_the_scope_still_means_the_actors_whole_scope(
    client: TestClient, tokens: dict[str, str]
) -> None:
    name = _name("omitted")
    response = client.post(
        "/api/v1/users", json={"name": name, "role": "viewer"}, headers=auth(tokens["admin"])
    )
    assert response.status_code == 201, response.text
    assert response.json()["scope"] == ["*"]


def test_changing_a_scope_to_blank_codes_is_refused(
    client: TestClient, tokens: dict[str, str], make_token: Any, db: psycopg.Connection[Any]
) -> None:
    name = _name("rescope")
    make_token("viewer", ["152502"], name=name)
    response = client.put(
        f"/api/v1/users/{name}/scope", json={"scope": [""]}, headers=auth(tokens["admin"])
    )
    assert response.status_code == 422, response.text
    assert "scope" in response.json()["detail"]
    row = db.execute("SELECT scope FROM users WHERE name = %s", (name,)).fetchone()
    assert row == (["152502"],)


def test_the_cli_refuses_an_empty_scope(
    db_url: str, db: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from api.cli import app

    monkeypatch.setenv("DATABASE_URL", db_url)
    name = _name("cli")
    result = CliRunner().invoke(app, ["users", "add", name, "--role", "viewer", "--scope", ""])
    assert result.exit_code != 0
    assert "scope" in result.output
    assert db.execute("SELECT count(*) FROM users WHERE name = %s", (name,)).fetchone() == (0,)
