"""OGC API – Features parameters and paging links (pure)."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import parse_qs, urlparse

import pytest

from tiles.ogc import OgcParamError, page_links, parse_bbox, parse_datetime


def test_an_instant_selects_that_microsecond() -> None:
    r = parse_datetime("2026-11-20T08:00:00Z")
    assert r is not None
    assert r.start == datetime(2026, 11, 20, 8, tzinfo=UTC)
    assert r.end is not None
    assert (r.end - r.start).total_seconds() == pytest.approx(1e-6)


def test_a_bare_date_is_the_china_local_day() -> None:
    r = parse_datetime("2026-11-20")
    assert r is not None
    assert r.start == datetime(2026, 11, 19, 16, tzinfo=UTC)
    assert r.end == datetime(2026, 11, 20, 16, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "start", "end"),
    [
        ("2026-11-20T00:00:00Z/..", datetime(2026, 11, 20, tzinfo=UTC), None),
        ("../2026-11-20T00:00:00+08:00", None, datetime(2026, 11, 19, 16, 0, 0, 1, tzinfo=UTC)),
        ("/2026-11-20", None, datetime(2026, 11, 20, 16, tzinfo=UTC)),
    ],
)
def test_open_intervals(text: str, start: datetime | None, end: datetime | None) -> None:
    r = parse_datetime(text)
    assert r is not None
    assert r.start == start
    assert r.end == end


@pytest.mark.parametrize(
    "text", ["yesterday", "../..", "2026-11-21/2026-11-20", "2026-13-01", "2026-11-20T25:00Z"]
)
def test_bad_datetimes(text: str) -> None:
    with pytest.raises(OgcParamError):
        parse_datetime(text)


@pytest.mark.parametrize("text", ["1,2,3", "a,b,c,d", "10,50,5,60", "0,-95,1,1"])
def test_bad_bboxes(text: str) -> None:
    with pytest.raises(OgcParamError):
        parse_bbox(text)


def test_paging_links_carry_the_query_but_never_the_token() -> None:
    params = [("bbox", "115,44,116,45"), ("token", "gp_secret"), ("limit", "10")]
    links = page_links(
        "http://x/collections/grids/items", params, offset=10, limit=10, returned=10, matched=35
    )
    by_rel = {link["rel"]: parse_qs(urlparse(link["href"]).query) for link in links}
    assert set(by_rel) == {"self", "next", "prev"}
    assert by_rel["next"]["offset"] == ["20"]
    assert by_rel["prev"]["offset"] == ["0"]
    assert all("token" not in q and q["bbox"] == ["115,44,116,45"] for q in by_rel.values())
    last = page_links("http://x/i", [], offset=30, limit=10, returned=5, matched=35)
    assert "next" not in {link["rel"] for link in last}
