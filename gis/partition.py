"""Split a polygon into N contiguous parts with given shares of area (or of points).

Recursive bisection: cut the polygon by a straight line at the offset where the share on one side
is exactly the target (found by bisection on the offset, with the area to the left of the line
computed in closed form from the ring edges, vectorised), then recurse on both sides. The cut is
tried perpendicular to the polygon's long axis first and at other angles when a cut leaves a side
in several pieces; fragments that remain are merged into the neighbour they share the longest
edge with, and the offset is re-solved so the shares stay on target.

All geometry is in a projected CRS with metre units (use ``gis.crs.utm_crs``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import shapely
from numpy.typing import NDArray
from shapely.geometry import MultiPolygon, Polygon
from shapely.geometry.base import BaseGeometry

Geom = Polygon | MultiPolygon
ANGLE_STEPS = 12
_BISECT_ITERS = 48


class PartitionError(ValueError):
    """The polygon cannot be split as asked."""


@dataclass(frozen=True)
class _Rings:
    """All ring edges of a (multi)polygon, oriented so the area integral is positive."""

    x0: NDArray[np.float64]
    y0: NDArray[np.float64]
    x1: NDArray[np.float64]
    y1: NDArray[np.float64]

    @classmethod
    def of(cls, geom: Geom) -> _Rings:
        oriented = shapely.orient_polygons(geom, exterior_cw=False)
        rings = shapely.get_rings(shapely.get_parts(oriented))
        xs0, ys0, xs1, ys1 = [], [], [], []
        for ring in rings:
            c = shapely.get_coordinates(ring)
            xs0.append(c[:-1, 0])
            ys0.append(c[:-1, 1])
            xs1.append(c[1:, 0])
            ys1.append(c[1:, 1])
        return cls(
            np.concatenate(xs0), np.concatenate(ys0), np.concatenate(xs1), np.concatenate(ys1)
        )

    def rotated(self, angle: float) -> tuple[NDArray[np.float64], ...]:
        """Edges in (s, w) coordinates: s along the cut normal at ``angle``, w along the cut."""
        c, s = np.cos(angle), np.sin(angle)
        return (
            self.x0 * c + self.y0 * s,
            -self.x0 * s + self.y0 * c,
            self.x1 * c + self.y1 * s,
            -self.x1 * s + self.y1 * c,
        )


def _area_left(edges: tuple[NDArray[np.float64], ...], t: float) -> float:
    """Area of the polygon where s ≤ t: ∮ w ds over the edges clipped to s ≤ t (the cut line
    itself has ds = 0 and adds nothing). Orientation makes the total negative; we flip it."""
    s0, w0, s1, w1 = edges
    ds = s1 - s0
    with np.errstate(divide="ignore", invalid="ignore"):
        wt = np.where(ds != 0, w0 + (t - s0) / ds * (w1 - w0), w0)
    s0c = np.minimum(s0, t)
    s1c = np.minimum(s1, t)
    w0c = np.where(s0 <= t, w0, wt)
    w1c = np.where(s1 <= t, w1, wt)
    return float(-np.sum((s1c - s0c) * (w0c + w1c) * 0.5))


def _clipped_term(s0: float, w0: float, s1: float, w1: float, t: float) -> float:
    """One edge's term of ``_area_left`` at ``t``, for an edge the line s = t crosses (so
    s0 ≠ s1), with the same float operations in the same order."""
    wt = w0 + (t - s0) / (s1 - s0) * (w1 - w0)
    w0c = w0 if s0 <= t else wt
    w1c = w1 if s1 <= t else wt
    return (min(s1, t) - min(s0, t)) * (w0c + w1c) * 0.5


_FEW_EDGES = 24  # once this few edges are still near the cut, clip them one by one in Python
_Edge = tuple[int, float, float, float, float, float]  # index, s0, w0, s1, w1, whole term


def _few_terms(terms: NDArray[np.float64], few: list[_Edge], t: float) -> None:
    for i, s0, w0, s1, w1, whole in few:
        if s0 <= t and s1 <= t:
            terms[i] = whole
        elif s0 > t and s1 > t:
            terms[i] = 0.0
        else:
            terms[i] = _clipped_term(s0, w0, s1, w1, t)


def _solve_offset_area(edges: tuple[NDArray[np.float64], ...], target: float) -> float:
    """Offset t where ``_area_left(edges, t)`` reaches ``target``, by bisection.

    Gives bit-for-bit what bisecting on ``_area_left`` gives, without clipping every edge at
    every step: an edge's term is its whole term when it lies at s ≤ t, 0 when it lies beyond,
    and is computed only for edges the line crosses. The terms live in one array summed in edge
    order at each step (the same values in the same places, so the same sum); an edge is no
    longer revisited once the bisection interval [lo, hi] has left it wholly on one side, since
    every later t lies in that interval (its term from the last step then holds for good).
    """
    s0, w0, s1, w1 = edges
    s_lo, s_hi = np.minimum(s0, s1), np.maximum(s0, s1)
    lo, hi = float(s_lo.min()), float(s_hi.max())
    whole = (s1 - s0) * (w0 + w1) * 0.5
    terms = np.zeros(len(s0))
    active = np.arange(len(s0))

    def listed(idx: NDArray[np.int64]) -> list[_Edge]:
        cols = (s0, w0, s1, w1, whole)
        return list(zip(idx.tolist(), *(c[idx].tolist() for c in cols), strict=True))

    few = listed(active) if len(active) <= _FEW_EDGES else []
    for _ in range(_BISECT_ITERS):
        mid = 0.5 * (lo + hi)
        if len(active) > _FEW_EDGES:
            left = s_hi[active] <= mid
            terms[active] = np.where(left, whole[active], 0.0)
            _few_terms(terms, listed(active[(s_lo[active] <= mid) & ~left]), mid)
        else:
            _few_terms(terms, few, mid)
        if float(-terms.sum()) < target:
            lo = mid
        else:
            hi = mid
        if len(active) > _FEW_EDGES:
            active = active[(s_hi[active] > lo) & (s_lo[active] <= hi)]
            if len(active) <= _FEW_EDGES:
                few = listed(active)
        else:
            few = [e for e in few if max(e[1], e[3]) > lo and min(e[1], e[3]) <= hi]
    return 0.5 * (lo + hi)


def _solve_offset_points(
    points: NDArray[np.float64], weights: NDArray[np.float64], angle: float, target: float
) -> float:
    """Offset where the summed point weight with s ≤ t first reaches ``target``."""
    s = points[:, 0] * np.cos(angle) + points[:, 1] * np.sin(angle)
    order = np.argsort(s, kind="stable")
    cum = np.cumsum(weights[order])
    k = int(np.searchsorted(cum, target - 1e-9))
    k = min(max(k, 0), len(s) - 1)
    # cut halfway between the point that reaches the target and the next one
    nxt = s[order[k + 1]] if k + 1 < len(s) else s[order[k]] + 1.0
    return float(0.5 * (s[order[k]] + nxt))


def _half_plane(geom: BaseGeometry, angle: float, t: float) -> Polygon:
    """The half-plane s ≤ t as a polygon comfortably larger than ``geom``."""
    minx, miny, maxx, maxy = geom.bounds
    r = 4.0 * max(maxx - minx, maxy - miny, 1.0)
    cx, cy = (minx + maxx) / 2, (miny + maxy) / 2
    u = np.array([np.cos(angle), np.sin(angle)])
    v = np.array([-u[1], u[0]])
    p = np.array([cx, cy]) + (t - (cx * u[0] + cy * u[1])) * u
    corners = [p + r * v, p - r * v, p - r * v - 2 * r * u, p + r * v - 2 * r * u]
    return Polygon(corners)


def _long_axis_angle(geom: BaseGeometry) -> float:
    """Angle of the normal to cut along: the direction of the minimum rectangle's long side."""
    rect = shapely.minimum_rotated_rectangle(geom)
    c = shapely.get_coordinates(rect)
    if len(c) < 4:
        return 0.0
    e1, e2 = c[1] - c[0], c[2] - c[1]
    long_edge = e1 if np.hypot(*e1) >= np.hypot(*e2) else e2
    return float(np.arctan2(long_edge[1], long_edge[0]))


def _candidate_angles(geom: BaseGeometry, steps: int) -> list[float]:
    base = _long_axis_angle(geom)
    step = np.pi / steps
    order = [0]
    for k in range(1, steps // 2 + 1):
        order += [k, -k]
    return [base + k * step for k in order[:steps]]


def _parts(geom: BaseGeometry) -> list[Polygon]:
    return [p for p in shapely.get_parts(geom) if isinstance(p, Polygon) and p.area > 0]


def _shared_length(a: BaseGeometry, b: BaseGeometry) -> float:
    return float(shapely.length(shapely.intersection(a.boundary, b.boundary)))


def _merge_fragments(side_a: list[Polygon], side_b: list[Polygon]) -> tuple[Geom, Geom]:
    """Keep each side's largest part; give every other part to the side it shares the longest
    edge with (fragments touching only other fragments are resolved iteratively)."""
    main_a = max(side_a, key=lambda p: p.area)
    main_b = max(side_b, key=lambda p: p.area)
    pending = [p for p in side_a if p is not main_a] + [p for p in side_b if p is not main_b]
    group_a: list[BaseGeometry] = [main_a]
    group_b: list[BaseGeometry] = [main_b]
    for _ in range(len(pending) + 1):
        if not pending:
            break
        still = []
        for frag in pending:
            la = _shared_length(frag, shapely.union_all(group_a))
            lb = _shared_length(frag, shapely.union_all(group_b))
            if la <= 0 and lb <= 0:
                still.append(frag)
            elif la >= lb:
                group_a.append(frag)
            else:
                group_b.append(frag)
        pending = still
    # anything still isolated (touching at points only) joins the larger side it is nearest to
    for frag in pending:
        da = shapely.distance(frag, shapely.union_all(group_a))
        db = shapely.distance(frag, shapely.union_all(group_b))
        (group_a if da <= db else group_b).append(frag)
    return _as_geom(shapely.union_all(group_a)), _as_geom(shapely.union_all(group_b))


def _as_geom(geom: BaseGeometry) -> Geom:
    parts = _parts(geom)
    if len(parts) == 1:
        return parts[0]
    return MultiPolygon(parts)


@dataclass
class _Measure:
    """What the shares are of: area (default) or weighted points (households)."""

    points: NDArray[np.float64] | None = None
    weights: NDArray[np.float64] | None = None

    def total(self, geom: Geom) -> float:
        if self.points is None:
            return float(geom.area)
        assert self.weights is not None  # noqa: S101 - set together with points
        return float(self.weights.sum())

    def of(self, geom: Geom) -> float:
        if self.points is None:
            return float(geom.area)
        assert self.weights is not None  # noqa: S101
        inside = shapely.contains_xy(geom, self.points[:, 0], self.points[:, 1])
        inside |= shapely.touches(geom, shapely.points(self.points))
        return float(self.weights[inside].sum())

    def offset(self, geom: Geom, angle: float, target: float) -> float:
        if self.points is None:
            return _solve_offset_area(_Rings.of(geom).rotated(angle), target)
        assert self.weights is not None  # noqa: S101
        inside = shapely.covers(geom, shapely.points(self.points))
        return _solve_offset_points(self.points[inside], self.weights[inside], angle, target)

    def restrict(self, geom: Geom) -> _Measure:
        if self.points is None:
            return self
        assert self.weights is not None  # noqa: S101
        keep = shapely.covers(geom, shapely.points(self.points))
        return _Measure(self.points[keep], self.weights[keep])


def _cut(geom: Geom, angle: float, t: float) -> tuple[list[Polygon], list[Polygon]]:
    half = _half_plane(geom, angle, t)
    return _parts(shapely.intersection(geom, half)), _parts(shapely.difference(geom, half))


def _bisect(geom: Geom, share_a: float, measure: _Measure, angle_steps: int) -> tuple[Geom, Geom]:
    """Cut ``geom`` in two with ``share_a`` of the measure on the first side."""
    allow_multi = len(_parts(geom)) > 1
    total = measure.total(geom)
    best: tuple[float, Geom, Geom] | None = None
    for angle in _candidate_angles(geom, angle_steps):
        target = share_a * total
        side_a: list[Polygon] = []
        side_b: list[Polygon] = []
        for _ in range(3):  # re-solve when merging fragments moved measure across the cut
            t = measure.offset(geom, angle, target)
            side_a, side_b = _cut(geom, angle, t)
            if not side_a or not side_b:
                break
            if allow_multi or (len(side_a) == 1 and len(side_b) == 1):
                a, b = _as_geom(shapely.union_all(side_a)), _as_geom(shapely.union_all(side_b))
            else:
                a, b = _merge_fragments(side_a, side_b)
            error = measure.of(a) - share_a * total
            if abs(error) <= 1e-6 * total or measure.points is not None:
                break
            target -= error
        if not side_a or not side_b:
            continue
        single = allow_multi or (isinstance(a, Polygon) and isinstance(b, Polygon))
        error = abs(measure.of(a) - share_a * total) / max(total, 1e-12)
        fragments = len(side_a) + len(side_b) - 2
        score = error + (0 if single else 1.0) + 0.01 * fragments
        if best is None or score < best[0]:
            best = (score, a, b)
        if single and fragments == 0 and error < 1e-6:
            break
    if best is None:
        raise PartitionError("the polygon could not be cut (degenerate or too thin)")
    return best[1], best[2]


def split_by_weights(
    geom: Geom,
    weights: Sequence[float],
    *,
    points: NDArray[np.float64] | None = None,
    point_weights: NDArray[np.float64] | None = None,
    angle_steps: int = ANGLE_STEPS,
) -> list[Geom]:
    """Split ``geom`` into ``len(weights)`` contiguous parts whose shares follow ``weights``.

    Parameters
    ----------
    geom
        Polygon or MultiPolygon in a projected CRS (metres).
    weights
        Positive relative sizes, one per part, in output order (adjacent weights end up in
        adjacent parts).
    points, point_weights
        When given (N×2 projected coordinates and N non-negative weights, e.g. households),
        shares are of the summed point weight instead of the area.
    angle_steps
        How many cut directions to try when the preferred one fragments a side.

    Returns
    -------
    list of Polygon/MultiPolygon
        Parts in the order of ``weights``; their union is ``geom`` and they do not overlap.
        A part is a MultiPolygon only when ``geom`` itself is.

    Raises
    ------
    PartitionError
        For an empty or non-areal geometry, non-positive weights, or (points mode) fewer
        points than parts.
    """
    if geom.is_empty or geom.area <= 0 or geom.geom_type not in ("Polygon", "MultiPolygon"):
        raise PartitionError("the boundary must be a non-empty Polygon or MultiPolygon")
    w = np.asarray(weights, dtype=float)
    if w.size < 1 or not np.all(np.isfinite(w)) or np.any(w <= 0):
        raise PartitionError("weights must be positive numbers, at least one")
    measure = _Measure()
    if points is not None:
        pts = np.asarray(points, dtype=float).reshape(-1, 2)
        pw = np.ones(len(pts)) if point_weights is None else np.asarray(point_weights, float)
        if len(pts) < w.size:
            raise PartitionError(f"{len(pts)} points cannot be split into {w.size} parts")
        measure = _Measure(pts, pw)
    return _split(geom, list(w), measure, angle_steps)


def _split(geom: Geom, weights: list[float], measure: _Measure, angle_steps: int) -> list[Geom]:
    if len(weights) == 1:
        return [geom]
    k = len(weights) // 2
    share = sum(weights[:k]) / sum(weights)
    a, b = _bisect(geom, share, measure, angle_steps)
    return _split(a, weights[:k], measure.restrict(a), angle_steps) + _split(
        b, weights[k:], measure.restrict(b), angle_steps
    )


def cut_share(geom: Geom, *, angle: float, share: float) -> tuple[Geom, Geom]:
    """One straight cut whose normal points along ``angle`` (radians, maths convention), leaving
    ``share`` of the area on the low side. Returns (low side, high side); fragments are merged
    like in ``split_by_weights``."""
    if not 0.0 < share < 1.0:
        raise PartitionError(f"share must be between 0 and 1, got {share}")
    rings = _Rings.of(geom).rotated(angle)
    t = _solve_offset_area(rings, share * float(geom.area))
    side_a, side_b = _cut(geom, angle, t)
    if not side_a or not side_b:
        raise PartitionError("the cut missed the polygon")
    if len(side_a) == 1 and len(side_b) == 1:
        return side_a[0], side_b[0]
    return _merge_fragments(side_a, side_b)
