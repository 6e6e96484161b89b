"""``gridpatrol incidents …``: the dispatcher's workflow from the shell — create (WGS-84 and
GCJ-02 coordinates, an alert point), list, candidates, assign (the top one), accept, arrive,
clear with an outcome, cancel with a reason, escalate — with Chinese and English labels; bad
input exits non-zero with one line. Scene: a village of 苏尼特右旗 (152524), like test_live.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import numpy as np
import psycopg
import pytest
from typer.testing import CliRunner, Result

from api.cli import app as cli
from gis.crs import wgs84_to_gcj02
from tests.api.test_dispatch_api import offset, vehicle, village_point

pytestmark = pytest.mark.usefixtures("demo")
COUNTY = "152524"


@pytest.fixture
def gp(db_url: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("DATABASE_URL", db_url)
    runner = CliRunner()

    def invoke(*args: str) -> Result:
        return runner.invoke(cli, ["incidents", *args])

    return invoke


@pytest.fixture(scope="module")
def village(demo: str) -> str:
    with psycopg.connect(demo, autocommit=True) as db:
        row = db.execute(
            "SELECT code FROM admin_area WHERE level = 'village' AND code LIKE %s "
            "ORDER BY code DESC LIMIT 1",
            (COUNTY + "%",),
        ).fetchone()
    assert row is not None
    return str(row[0])


def _ok(result: Result) -> str:
    assert result.exit_code == 0, result.output
    return result.output


def _created(out: str) -> int:
    match = re.search(r"incident #(\d+): 新警情 new", out)
    assert match, out
    return int(match.group(1))


def _status(db: psycopg.Connection[Any], incident: int) -> str:
    row = db.execute("SELECT status FROM incident WHERE id = %s", (incident,)).fetchone()
    assert row is not None
    return str(row[0])


def test_an_incident_is_carried_from_call_to_close(
    gp: Any,
    db: psycopg.Connection[Any],
    make_device: Callable[..., tuple[str, str]],
    village: str,
) -> None:
    here = village_point(db, village)
    car = vehicle(db, make_device, village, offset(here, 300, 0))
    db.execute(
        "UPDATE device SET assigned_grids = ARRAY(SELECT g.code FROM grid g JOIN grid_layout l "
        "ON l.id = g.layout_id WHERE l.status = 'active' AND g.village_code = %s) WHERE id = %s",
        (village, car),
    )
    gx, gy = wgs84_to_gcj02(np.array([here[0]]), np.array([here[1]]))
    out = _ok(
        gp(
            "create", "--kind", "盗畜 livestock theft", "--priority", "1",
            "--lon", f"{gx[0]:.7f}", "--lat", f"{gy[0]:.7f}", "--crs", "gcj02",
            "--caller", "巴特尔", "--phone", "13900000000", "--description", "三头牛被盗",
        )
    )  # fmt: skip
    assert "已创建 created" in out
    incident = _created(out)
    row = db.execute(
        "SELECT ST_X(geom), ST_Y(geom), reporter, description, created_by FROM incident "
        "WHERE id = %s",
        (incident,),
    ).fetchone()
    assert row is not None
    assert row[0] == pytest.approx(here[0], abs=1e-6)  # GCJ-02 converted back exactly
    assert row[1] == pytest.approx(here[1], abs=1e-6)
    assert row[2] == "巴特尔 13900000000"
    assert row[3] == "三头牛被盗"
    assert row[4].startswith("cli:")
    listed = _ok(gp("list", "--area", village))
    assert f"#{incident}" in listed
    assert "新警情 new" in listed
    assert "共" in listed
    ranked = _ok(gp("candidates", str(incident)))
    assert "候选 candidates" in ranked
    assert f"device {car}" in ranked
    out = _ok(gp("assign", str(incident), "--top"))
    assert "已派警 dispatched" in out
    assert db.execute("SELECT device_id FROM incident WHERE id = %s", (incident,)).fetchone() in (
        (car,),
        (None,),  # the grid worker may rank first
    )
    assert "已接警 accepted" in _ok(gp("accept", str(incident), "--note", "电话确认"))
    assert "已到达 arrived" in _ok(gp("arrive", str(incident)))
    assert gp("clear", str(incident)).exit_code != 0  # an outcome is required
    assert "已处置 cleared" in _ok(gp("clear", str(incident), "--outcome", "已找回 recovered"))
    assert _status(db, incident) == "cleared"
    detail = db.execute(
        "SELECT detail FROM incident_event WHERE incident_id = %s AND kind = 'clear'", (incident,)
    ).fetchone()
    assert detail is not None
    assert detail[0]["outcome"] == "已找回 recovered"


def test_escalate_cancel_and_an_alert_point(
    gp: Any, db: psycopg.Connection[Any], village: str
) -> None:
    point = db.execute(
        "SELECT id FROM alert_point WHERE village_code = %s ORDER BY id LIMIT 1", (village,)
    ).fetchone()
    assert point is not None
    incident = _created(_ok(gp("create", "--kind", "火情 fire", "--alert-point", str(point[0]))))
    out = _ok(gp("escalate", str(incident)))
    assert "已升级 escalated to village" in out
    assert gp("cancel", str(incident), "--reason", " ").exit_code != 0
    assert "已撤销 cancelled" in _ok(gp("cancel", str(incident), "--reason", "重复报警 duplicate"))
    # a step that does not apply: one line, exit 1
    again = gp("accept", str(incident))
    assert again.exit_code == 1
    assert again.output.strip().count("\n") == 0
    assert "cancelled" in again.output


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["create", "--kind", "x", "--priority", "9", "--lon", "116", "--lat", "44"], "priority"),
        (["create", "--kind", "x", "--lon", "116"], "lat"),
        (["create", "--kind", "x", "--lon", "116", "--lat", "44", "--crs", "bd"], "--crs"),
        (["create", "--kind", "x", "--lon", "30", "--lat", "10"], "km from the nearest village"),
        (["create", "--kind", "x", "--grid", "12345"], "grid"),
        (["assign", "999999999", "--device", "1"], "no incident 999999999"),
        (["assign", "1"], "exactly one of --device, --staff or --top"),
        (["list", "--status", "nope"], "status must be"),
        (["list", "--area", "abc"], "invalid scope code"),
    ],
)
def test_bad_input_is_one_line_and_non_zero(gp: Any, args: list[str], needle: str) -> None:
    result = gp(*args)
    assert result.exit_code != 0
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert needle in lines[0]
