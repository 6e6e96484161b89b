"""Point-in-grid: the same answer as testing every grid one by one (boundary included), the most
specific layout first where layouts nest, None outside every grid — and bad input refused."""

from __future__ import annotations

import numpy as np
import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st
from shapely.geometry import box

from gis.locate import GridIndex

# a county layout of 4 × 4 squares (0.1°) and, inside its south-west square, a township's
# own layout of 2 × 2 finer squares
COUNTY = [
    (f"C{i}{j}", box(116 + 0.1 * i, 43 + 0.1 * j, 116.1 + 0.1 * i, 43.1 + 0.1 * j))
    for i in range(4)
    for j in range(4)
]
TOWNSHIP = [
    (f"T{i}{j}", box(116 + 0.05 * i, 43 + 0.05 * j, 116.05 + 0.05 * i, 43.05 + 0.05 * j))
    for i in range(2)
    for j in range(2)
]


def _index() -> GridIndex:
    rows = COUNTY + TOWNSHIP
    return GridIndex.build(
        [c for c, _ in rows], [g for _, g in rows], [6] * len(COUNTY) + [9] * len(TOWNSHIP)
    )


def _one_by_one(index: GridIndex, lon: float, lat: float) -> str | None:
    """The slow, obvious answer."""
    point = shapely.Point(lon, lat)
    best: tuple[int, str] | None = None
    for code, geom, prio in zip(index.codes, index.geoms, index.priority, strict=True):
        if geom.covers(point) and (best is None or (-prio, code) < (-best[0], best[1])):
            best = (int(prio), str(code))
    return None if best is None else best[1]


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.tuples(st.floats(115.95, 116.45), st.floats(42.95, 43.45)), min_size=1, max_size=60)
)
def test_every_point_gets_what_testing_each_grid_gives(points: list[tuple[float, float]]) -> None:
    index = _index()
    lon, lat = np.array(points).T
    got = index.locate(lon, lat)
    assert list(got) == [_one_by_one(index, x, y) for x, y in points]


def test_nested_layouts_the_most_specific_wins_and_edges_count() -> None:
    index = _index()
    got = index.locate(
        [116.01, 116.07, 116.15, 116.1, 116.5, np.nan], [43.01, 43.07, 43.15, 43.2, 43, 43]
    )
    # inside the township: its grid, not the county's; on a corner four grids share: the
    # lowest code; outside every grid or NaN: None
    assert list(got) == ["T00", "T11", "C11", "C01", None, None]


def test_no_points_and_no_grids() -> None:
    assert len(_index().locate([], [])) == 0
    empty = GridIndex.build([], [])
    assert list(empty.locate([116.0], [43.0])) == [None]


def test_bad_input_is_refused_with_the_reason() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        GridIndex.build(["a", "b"], [box(0, 0, 1, 1)])
    with pytest.raises(ValueError, match="differ in shape"):
        _index().locate([116.0, 116.1], [43.0])
