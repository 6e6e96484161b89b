"""NBS codes nest by prefix; grid codes hang off villages."""

from __future__ import annotations

import pytest

from gis.codes import CodeError, grid_code, level_of, parse_grid_code, parse_nbs, scope_prefix


@pytest.mark.parametrize(
    ("code", "level", "prefix", "parent"),
    [
        ("150000000000", "province", "15", None),
        ("152500000000", "league", "1525", "150000000000"),
        ("152502000000", "county", "152502", "152500000000"),
        ("152502100000", "township", "152502100", "152502000000"),
        ("152502100201", "village", "152502100201", "152502100000"),
        ("152502", "county", "152502", "152500000000"),
    ],
)
def test_levels_prefixes_and_parents(
    code: str, level: str, prefix: str, parent: str | None
) -> None:
    parsed = parse_nbs(code)
    assert (parsed.level, parsed.prefix, parsed.parent) == (level, prefix, parent)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("15250210020", "12 digits"),
        ("15250A100201", "digits only"),
        ("000000000000", "no province"),
        ("152500100000", "skips a level"),
        ("150002000000", "skips a level"),
    ],
)
def test_malformed_codes_say_why(bad: str, message: str) -> None:
    with pytest.raises(CodeError, match=message):
        parse_nbs(bad)


def test_grid_codes() -> None:
    assert grid_code("152502100201", 7) == "152502100201007"
    parsed = parse_grid_code("152502100201007")
    assert (parsed.village, parsed.sequence) == ("152502100201", 7)
    assert level_of("152502100201007") == "grid"
    assert scope_prefix("152502000000") == "152502"
    assert scope_prefix("152502100201007") == "152502100201007"
    with pytest.raises(CodeError, match="hang off a village"):
        grid_code("152502100000", 1)
    with pytest.raises(CodeError, match="1–999"):
        grid_code("152502100201", 1000)
    with pytest.raises(CodeError, match="sequence 000"):
        parse_grid_code("152502100201000")
