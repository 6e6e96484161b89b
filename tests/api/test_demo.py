"""The Xilingol demo: real counties, synthetic townships/villages nested exactly, idempotent."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from api.demo import load_demo, read_nbs
from tests.conftest import run

OFFICIAL_LEAGUE_KM2 = 202_580


# every step but the layouts, whose reload (≈ 2 min: 2 × 2.4M fine cells) would only repeat the
# session's first load; their count is checked to stay put
RELOADED = ("demo.areas", "demo.households", "demo.alert_points", "demo.roads")


async def _load(url: str, force: bool = False, steps: tuple[str, ...] | None = None) -> list[str]:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        return await load_demo(conn, force=force, steps=steps)


def _counts(db: psycopg.Connection[Any]) -> dict[str, int]:
    rows = db.execute(
        "SELECT level, count(*) FROM admin_area WHERE code LIKE '1525%' GROUP BY level"
    ).fetchall()
    synthetic = db.execute(
        "SELECT (SELECT count(*) FROM household WHERE synthetic AND village_code LIKE '1525%'),"
        " (SELECT count(*) FROM alert_point WHERE synthetic AND village_code LIKE '1525%'),"
        " (SELECT count(*) FROM grid g JOIN grid_layout l ON l.id = g.layout_id"
        "   WHERE l.synthetic AND l.status = 'active')"
    ).fetchone()
    assert synthetic is not None
    return {
        **dict(rows),
        "households": synthetic[0],
        "alarm_phones": synthetic[1],
        "grids": synthetic[2],
    }


def test_loading_twice_gives_the_same_counts(demo: str, db: psycopg.Connection[Any]) -> None:
    first = _counts(db)
    lines = run(_load(demo))
    assert all(line.endswith("already loaded") for line in lines), lines
    run(_load(demo, force=True, steps=RELOADED))
    assert _counts(db) == first
    assert {k: first[k] for k in ("league", "county", "township", "village")} == {
        "league": 1,
        "county": 13,
        "township": 99,
        "village": 1088,
    }
    assert first["alarm_phones"] == 6 * 1088


def test_an_unknown_step_is_refused(demo: str) -> None:
    with pytest.raises(ValueError, match=r"unknown demo steps: demo\.nothing"):
        run(_load(demo, steps=("demo.nothing",)))


def test_every_nbs_township_and_village_is_present(demo: str, db: psycopg.Connection[Any]) -> None:
    codes = {r[0] for r in db.execute("SELECT code FROM admin_area").fetchall()}
    for kind in ("counties", "townships", "villages"):
        assert set(read_nbs(kind)["code"]) <= codes, kind


def test_counties_are_real_and_cover_the_official_area(
    demo: str, db: psycopg.Connection[Any]
) -> None:
    total, synthetic = db.execute(
        "SELECT sum(ST_Area(geom::geography)) / 1e6, count(*) FILTER (WHERE synthetic) "
        "FROM admin_area WHERE level = 'county'"
    ).fetchone()  # type: ignore[misc]
    assert abs(total - OFFICIAL_LEAGUE_KM2) / OFFICIAL_LEAGUE_KM2 < 0.03
    assert synthetic == 1  # 乌拉盖管理区, cut out of 东乌珠穆沁旗
    assert db.execute(
        "SELECT bool_and(synthetic) FROM admin_area "
        "WHERE level IN ('township', 'village') AND code LIKE '1525%'"
    ).fetchone() == (True,)


@pytest.mark.parametrize(("child", "parent_len"), [("village", 9), ("village", 6), ("township", 6)])
def test_children_lie_within_their_ancestors(
    demo: str, db: psycopg.Connection[Any], child: str, parent_len: int
) -> None:
    worst = db.execute(
        """
        SELECT min(ST_Area(ST_Intersection(c.geom, p.geom)::geography)
                   / ST_Area(c.geom::geography))
          FROM admin_area c
          JOIN admin_area p ON p.code = rpad(left(c.code, %s), 12, '0')
         WHERE c.level = %s
        """,
        (parent_len, child),
    ).fetchone()
    assert worst is not None
    assert worst[0] >= 0.999


@pytest.mark.parametrize("level", ["township", "village"])
def test_siblings_do_not_overlap(demo: str, db: psycopg.Connection[Any], level: str) -> None:
    overlap = db.execute(
        """
        SELECT coalesce(max(ST_Area(ST_Intersection(a.geom, b.geom)::geography)
                            / least(ST_Area(a.geom::geography), ST_Area(b.geom::geography))), 0)
          FROM admin_area a
          JOIN admin_area b ON a.parent_code = b.parent_code AND a.code < b.code
                           AND a.geom && b.geom
         WHERE a.level = %s
        """,
        (level,),
    ).fetchone()
    # shared edges only: floating-point slivers stay below 1e-6 of the smaller area
    assert overlap is not None
    assert overlap[0] < 1e-6
