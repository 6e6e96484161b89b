"""``gridpatrol layouts …`` against the test database: clone, validate (exit status), diff,
activate now or later, lineage, roll back, export and replace — the same operations as the API.

Scene: a ``household`` layout of a township of 乌拉盖管理区 (152571), where no other test makes
layouts; single edits (a split) go through the API, as the planner page does.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from shapely.geometry import LineString, mapping, shape
from typer.testing import CliRunner, Result

from api.cli import app as cli
from tests.api.layout_helpers import grids_of, make_active_layout, small_township, staff_every_grid
from tests.conftest import auth

COUNTY = "152571"  # 乌拉盖管理区


@pytest.fixture(scope="module")
def active(demo: str, client: TestClient, tokens: dict[str, str]) -> int:
    return make_active_layout(
        client, tokens["planner"], small_township(demo, COUNTY), name="命令行 CLI"
    )


@pytest.fixture
def gp(db_url: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("DATABASE_URL", db_url)
    runner = CliRunner()

    def invoke(*args: str) -> Result:
        return runner.invoke(cli, ["layouts", *args])

    return invoke


def _ok(result: Result) -> str:
    assert result.exit_code == 0, result.output
    return result.output


def _clone(gp: Any, layout: int, name: str) -> int:
    out = _ok(gp("clone", str(layout), "--name", name))
    match = re.match(r"draft (\d+) \(version 1\) cloned from layout", out)
    assert match, out
    return int(match.group(1))


def _status(db: psycopg.Connection[Any], layout: int) -> str:
    row = db.execute("SELECT status FROM grid_layout WHERE id = %s", (layout,)).fetchone()
    assert row is not None
    return str(row[0])


def test_help_lists_every_command_in_both_languages(gp: Any) -> None:
    out = _ok(gp("--help"))
    for command in (
        "list",
        "clone",
        "validate",
        "diff",
        "activate",
        "rollback",
        "export",
        "replace",
        "lineage",
    ):
        assert command in out
    assert "校验" in out
    assert "Validate" in out


def test_clone_validate_diff_activate_lineage_rollback(
    gp: Any,
    active: int,
    client: TestClient,
    tokens: dict[str, str],
    db: psycopg.Connection[Any],
    tmp_path: Path,
) -> None:
    planner = tokens["planner"]
    assert f"{active:>4}  active" in _ok(gp("list"))
    draft = _clone(gp, active, "命令行草稿 CLI draft")
    assert "is valid" in _ok(gp("validate", str(draft)))
    target = grids_of(client, planner, draft)[0]
    geom = shape(target["geometry"])
    c = geom.centroid
    line = LineString([(c.x, geom.bounds[1] - 0.01), (c.x + 1e-4, geom.bounds[3] + 0.01)])
    cut = client.post(
        f"/api/v1/layouts/{draft}/edits/split",
        json={"version": 1, "code": target["properties"]["code"], "line": mapping(line)},
        headers=auth(planner),
    )
    assert cut.status_code == 200, cut.text
    (new,) = cut.json()["added"]
    problems = tmp_path / "problems.geojson"
    invalid = gp("validate", str(draft), "--geojson", str(problems))
    assert invalid.exit_code == 1
    assert "no_worker" in invalid.output
    assert new in invalid.output
    assert [f["properties"]["codes"] for f in json.loads(problems.read_text())["features"]] == [
        [new]
    ]
    refused = gp("activate", str(draft))
    assert refused.exit_code == 1
    assert "does not validate" in refused.output
    assert _status(db, draft) == "draft"
    staff_every_grid(client, planner, draft)
    _ok(gp("validate", str(draft)))
    changes = tmp_path / "diff.geojson"
    out = _ok(gp("diff", str(draft), "--geojson", str(changes)))
    assert f"against {active}: 1 added" in out
    assert f"added    {new}" in out
    assert {f["properties"]["code"] for f in json.loads(changes.read_text())["features"]} == {
        target["properties"]["code"],
        new,
    }
    assert "is active" in _ok(gp("activate", str(draft)))
    assert (_status(db, draft), _status(db, active)) == ("active", "retired")
    lineage = _ok(gp("lineage", str(draft)))
    assert f"{target['properties']['code']} → {new}" in lineage
    assert "is active again" in _ok(gp("rollback", str(active)))
    assert (_status(db, draft), _status(db, active)) == ("retired", "active")
    again = gp("rollback", str(active))
    assert again.exit_code == 1
    assert "only a retired layout" in again.output


def test_activation_can_be_scheduled(gp: Any, active: int, db: psycopg.Connection[Any]) -> None:
    draft = _clone(gp, active, "排期 scheduled")
    when = (datetime.now(UTC) + timedelta(days=30)).replace(microsecond=0)
    out = _ok(gp("activate", str(draft), "--at", when.isoformat()))
    assert "will be activated" in out
    row = db.execute(
        "SELECT status, effective_from FROM grid_layout WHERE id = %s", (draft,)
    ).fetchone()
    assert row == ("draft", when)
    bad = gp("activate", str(draft), "--at", "next tuesday")
    assert bad.exit_code != 0
    assert "not an ISO time" in bad.output


def test_export_then_replace_round_trip(
    gp: Any, active: int, db: psycopg.Connection[Any], tmp_path: Path
) -> None:
    draft = _clone(gp, active, "往返 round trip")
    before = db.execute(
        "SELECT code, ST_AsText(geom) FROM grid WHERE layout_id = %s ORDER BY code", (draft,)
    ).fetchall()
    for fmt, name in (("gpkg", "g.gpkg"), ("shp", "g.zip"), ("geojson", "g.geojson")):
        path = tmp_path / name
        assert f"({fmt}," in _ok(gp("export", str(draft), "--format", fmt, "-o", str(path)))
        assert path.stat().st_size > 0
    bare = tmp_path / "bare.geojson"  # as many tools write it: no "crs" member
    exported = json.loads((tmp_path / "g.geojson").read_text())
    bare.write_text(json.dumps({k: v for k, v in exported.items() if k != "crs"}))
    no_crs = gp("replace", str(draft), str(bare))
    assert no_crs.exit_code == 1
    assert "declares no CRS" in no_crs.output
    out = _ok(gp("replace", str(draft), str(tmp_path / "g.gpkg")))
    assert "version 2" in out
    _ok(gp("replace", str(draft), str(bare), "--crs", "wgs84"))
    after = db.execute(
        "SELECT code FROM grid WHERE layout_id = %s ORDER BY code", (draft,)
    ).fetchall()
    assert [r[0] for r in after] == [r[0] for r in before]
    assert db.execute("SELECT version FROM grid_layout WHERE id = %s", (draft,)).fetchone() == (3,)


def test_a_missing_layout_is_one_line_and_exit_status_1(gp: Any) -> None:
    result = gp("validate", "999999")
    assert result.exit_code == 1
    assert "no layout 999999" in result.output
