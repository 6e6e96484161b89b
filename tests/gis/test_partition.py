"""Weighted recursive bisection: exact union, no overlaps, one piece per part, shares on target,
deterministic — on random polygons (hypothesis) and on the real county boundaries."""

from __future__ import annotations

import numpy as np
import pytest
import shapely
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from shapely.geometry import MultiPolygon, Polygon, box

from gis.partition import (
    _BISECT_ITERS,
    PartitionError,
    _area_left,
    _Rings,
    _solve_offset_area,
    cut_share,
    split_by_weights,
)


@st.composite
def blobs(draw: st.DrawFn) -> Polygon:
    """Star-shaped polygons 1–30 km across with wobbly, sometimes concave, outlines."""
    n = draw(st.integers(min_value=5, max_value=40))
    radius = draw(st.floats(min_value=1_000, max_value=15_000))
    rough = draw(st.floats(min_value=0.0, max_value=0.45))
    seed = draw(st.integers(min_value=0, max_value=2**32 - 1))
    rng = np.random.default_rng(seed)
    angles = np.sort(rng.uniform(0, 2 * np.pi, n))
    r = radius * (1 + rough * rng.uniform(-1, 1, n))
    poly = Polygon(np.column_stack([500_000 + r * np.cos(angles), 4_800_000 + r * np.sin(angles)]))
    poly = shapely.make_valid(poly)
    parts = [p for p in shapely.get_parts(poly) if isinstance(p, Polygon)]
    return max(parts, key=lambda p: p.area)


def _check_tiling(geom: Polygon | MultiPolygon, parts: list, weights: list[float]) -> None:
    total = geom.area
    union = shapely.union_all(parts)
    assert shapely.symmetric_difference(union, geom).area <= 1e-6 * total
    assert sum(p.area for p in parts) == pytest.approx(total, rel=1e-6)  # no overlaps
    assert all(p.is_valid and not p.is_empty for p in parts)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(blobs(), st.integers(min_value=1, max_value=12))
def test_equal_split_of_random_polygons(poly: Polygon, n: int) -> None:
    parts = split_by_weights(poly, [1.0] * n)
    assert len(parts) == n
    _check_tiling(poly, parts, [1.0] * n)
    assert all(isinstance(p, Polygon) for p in parts)  # contiguous: one piece each
    areas = np.array([p.area for p in parts])
    assert np.all(np.abs(areas / areas.mean() - 1) <= 0.05)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(blobs(), st.lists(st.floats(min_value=0.2, max_value=5.0), min_size=2, max_size=9))
def test_weighted_split_follows_the_weights(poly: Polygon, weights: list[float]) -> None:
    parts = split_by_weights(poly, weights)
    _check_tiling(poly, parts, weights)
    shares = np.array([p.area for p in parts]) / poly.area
    target = np.array(weights) / sum(weights)
    assert np.all(np.abs(shares - target) <= 0.05 * target)


@settings(max_examples=20, deadline=None)
@given(blobs())
def test_same_input_same_output(poly: Polygon) -> None:
    a = split_by_weights(poly, [1.0] * 8)
    b = split_by_weights(poly, [1.0] * 8)
    assert all(x.equals_exact(y, 0.0) for x, y in zip(a, b, strict=True))


def test_points_mode_balances_households() -> None:
    rng = np.random.default_rng(7)
    village = box(0, 0, 10_000, 6_000)
    # households crowd into the west: equal counts means unequal areas
    pts = np.column_stack([rng.beta(1.2, 4.0, 800) * 10_000, rng.uniform(0, 6_000, 800)])
    parts = split_by_weights(village, [1.0] * 8, points=pts)
    counts = np.array([shapely.contains_xy(p, pts[:, 0], pts[:, 1]).sum() for p in parts])
    assert counts.sum() == 800
    assert np.all(np.abs(counts - 100) <= 5)
    areas = np.array([p.area for p in parts])
    assert areas.max() / areas.min() > 2


def test_a_multipart_input_may_give_multipart_parts() -> None:
    two = MultiPolygon([box(0, 0, 1000, 1000), box(3000, 0, 4000, 1000)])
    parts = split_by_weights(two, [1.0, 1.0, 1.0])
    _check_tiling(two, parts, [1.0] * 3)


@pytest.mark.parametrize(
    ("geom", "weights", "message"),
    [
        (Polygon(), [1.0], "non-empty Polygon"),
        (box(0, 0, 1, 1).boundary, [1.0], "non-empty Polygon"),
        (box(0, 0, 1, 1), [], "at least one"),
        (box(0, 0, 1, 1), [1.0, -1.0], "positive"),
    ],
)
def test_bad_input(geom: object, weights: list[float], message: str) -> None:
    with pytest.raises(PartitionError, match=message):
        split_by_weights(geom, weights)  # type: ignore[arg-type]


def test_cut_share_leaves_the_share_on_the_low_side() -> None:
    square = box(0, 0, 1000, 1000)
    low, high = cut_share(square, angle=0.0, share=0.25)
    assert low.area == pytest.approx(250_000)
    assert high.bounds[0] == pytest.approx(250.0)


def _bisect_on_area_left(edges: tuple, target: float) -> float:
    """The offset solver as first written: every edge clipped at every step."""
    lo = float(min(edges[0].min(), edges[2].min()))
    hi = float(max(edges[0].max(), edges[2].max()))
    for _ in range(_BISECT_ITERS):
        mid = 0.5 * (lo + hi)
        if _area_left(edges, mid) < target:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    blobs(),
    st.floats(min_value=0.0, max_value=np.pi),
    st.floats(min_value=0.01, max_value=0.99),
    st.integers(min_value=1, max_value=80),
)
def test_offset_solver_is_bisection_on_area_left_bit_for_bit(
    poly: Polygon, angle: float, share: float, densify: int
) -> None:
    """The solver skips the edges the bisection has left behind: same offsets, to the bit, so
    the same grids (small and large rings: it switches to a per-edge loop below a few edges)."""
    poly = shapely.segmentize(poly, max(poly.length / (5 * densify), 1.0))
    edges = _Rings.of(poly).rotated(angle)
    target = share * poly.area
    assert _solve_offset_area(edges, target) == _bisect_on_area_left(edges, target)
