"""Road graphs for routing: OSM ways noded into edges, and a synthetic demo network.

A routable graph is nodes (points) and edges (source node, target node, length, travel time
each way, geometry). OSM ways exported by ``osmium export`` share their nodes at junctions
bit-for-bit, so a way is split wherever one of its vertices is a way end or appears more than
once in the data: that is the topology, built with numpy over all vertices at once.

The demo network is synthetic: a Gabriel graph over township centres (the roads between
townships, with loops), a minimum spanning tree per township over its village centres, and a
track from each village centre to each of its alert points.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import shapely
from numpy.typing import NDArray
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import minimum_spanning_tree
from scipy.spatial import Delaunay

from gis.crs import haversine_m
from gis.units import METRES_PER_DEGREE_SPHERE

# km/h by OSM highway class; ways of other classes (footway, path, steps, …) are not routable
HIGHWAY_SPEEDS_KMH: Mapping[str, float] = {
    "motorway": 100.0,
    "motorway_link": 60.0,
    "trunk": 80.0,
    "trunk_link": 50.0,
    "primary": 70.0,
    "primary_link": 50.0,
    "secondary": 60.0,
    "secondary_link": 40.0,
    "tertiary": 50.0,
    "tertiary_link": 35.0,
    "unclassified": 40.0,
    "residential": 30.0,
    "living_street": 10.0,
    "service": 20.0,
    "road": 30.0,
    "track": 25.0,
}
COORD_SCALE = 1e7  # osmium writes 7 decimals: vertices of one OSM node match exactly


class RoadError(ValueError):
    """Road data that cannot be turned into a graph."""


@dataclass(frozen=True)
class Ways:
    """Linestrings with their tags: ``coords[i]`` is an (n, 2) lon/lat array of way ``i``."""

    coords: list[NDArray[np.float64]]
    highway: list[str]
    name: list[str | None]
    oneway: NDArray[np.int8]  # 1 forward only, -1 backward only, 0 both
    speed_kmh: NDArray[np.float64]
    osm_id: NDArray[np.int64]


@dataclass(frozen=True)
class RoadGraph:
    """Nodes (lon/lat, EPSG:4326) and edges; ``cost``/``reverse_cost`` are seconds source →
    target and back, negative where the direction is closed (pgRouting's convention)."""

    node_lon: NDArray[np.float64]
    node_lat: NDArray[np.float64]
    source: NDArray[np.int64]
    target: NDArray[np.int64]
    length_m: NDArray[np.float64]
    speed_kmh: NDArray[np.float64]
    cost: NDArray[np.float64]
    reverse_cost: NDArray[np.float64]
    highway: list[str]
    name: list[str | None]
    osm_id: NDArray[np.int64]
    geometry: NDArray[np.object_]  # shapely LineStrings

    @property
    def n_nodes(self) -> int:
        return len(self.node_lon)

    @property
    def n_edges(self) -> int:
        return len(self.source)


def speed_of(highway: str, maxspeed: str | None = None) -> float | None:
    """Travel speed of a way in km/h, or None when the class is not routable.

    Parameters
    ----------
    highway : str
        The OSM ``highway`` value.
    maxspeed : str or None
        The OSM ``maxspeed`` tag; a plain number (km/h) or ``N mph`` caps the class speed.
    """
    base = HIGHWAY_SPEEDS_KMH.get(highway)
    if base is None:
        return None
    if maxspeed:
        text = maxspeed.strip().lower()
        factor = 1.609344 if text.endswith("mph") else 1.0
        number = text.removesuffix("mph").strip()
        if number.replace(".", "", 1).isdigit() and float(number) > 0:
            return min(base, float(number) * factor)
    return base


def _oneway(tags: Mapping[str, Any]) -> int:
    value = str(tags.get("oneway", "")).lower()
    if value in ("yes", "true", "1"):
        return 1
    if value == "-1":
        return -1
    if value == "no":
        return 0
    return 1 if tags.get("junction") in ("roundabout", "circular") else 0


def read_geojsonseq(lines: Iterable[str | bytes]) -> Ways:
    """Routable ways from ``osmium export -f geojsonseq`` output (one feature per line).

    Lines may start with the RFC 8142 record separator. Features that are not LineStrings,
    have no routable ``highway`` tag, or have fewer than two vertices are skipped.
    """
    coords: list[NDArray[np.float64]] = []
    highway: list[str] = []
    names: list[str | None] = []
    oneway: list[int] = []
    speeds: list[float] = []
    ids: list[int] = []
    for raw in lines:
        text = raw.decode() if isinstance(raw, bytes) else raw
        text = text.strip().lstrip("\x1e")
        if not text:
            continue
        feature = json.loads(text)
        geometry = feature.get("geometry") or {}
        props = feature.get("properties") or {}
        speed = speed_of(str(props.get("highway", "")), props.get("maxspeed"))
        if geometry.get("type") != "LineString" or speed is None:
            continue
        xy = np.asarray(geometry["coordinates"], dtype=np.float64)[:, :2]
        if len(xy) < 2:
            continue
        coords.append(xy)
        highway.append(str(props["highway"]))
        names.append(props.get("name"))
        oneway.append(_oneway(props))
        speeds.append(speed)
        ids.append(int(props.get("@id", 0) or 0))
    return Ways(
        coords=coords,
        highway=highway,
        name=names,
        oneway=np.asarray(oneway, dtype=np.int8),
        speed_kmh=np.asarray(speeds, dtype=np.float64),
        osm_id=np.asarray(ids, dtype=np.int64),
    )


def _densify(
    xy: NDArray[np.float64], way: NDArray[np.int64], max_m: float
) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """Insert vertices so that no segment of a way is longer than ``max_m`` (linear in
    degrees, which is exact enough over a kilometre)."""
    nxt = np.minimum(np.arange(len(xy)) + 1, len(xy) - 1)
    inside = np.r_[way[1:] == way[:-1], False]
    seg = haversine_m(xy[:, 0], xy[:, 1], xy[nxt, 0], xy[nxt, 1])
    pieces = np.where(inside, np.maximum(1, np.ceil(seg / max_m)), 1).astype(np.int64)
    rep = np.repeat(np.arange(len(xy)), pieces)
    k = np.arange(len(rep)) - np.repeat(np.cumsum(pieces) - pieces, pieces)
    t = (k / pieces[rep])[:, None]
    return xy[rep] + t * (xy[nxt[rep]] - xy[rep]), way[rep]


def node_ways(ways: Ways, *, max_edge_m: float = 1000.0) -> RoadGraph:
    """Split ways into edges at junctions, ends, and about every ``max_edge_m`` along them;
    shared vertices become shared nodes.

    The extra nodes along long roads keep every place near a node, since responders and
    incidents join the graph at their nearest node (a steppe road may run 30 km without a
    junction). Segments longer than ``max_edge_m`` get interpolated vertices first.

    Raises
    ------
    RoadError
        When there are no routable ways.
    """
    if not ways.coords:
        raise RoadError("no routable ways (highway=motorway … track) in the data")
    sizes = np.array([len(c) for c in ways.coords])
    xy, way = _densify(
        np.concatenate(ways.coords), np.repeat(np.arange(len(sizes)), sizes), max_edge_m
    )
    counts = np.bincount(way, minlength=len(sizes))
    start = np.cumsum(counts) - counts
    pos = np.arange(len(xy)) - np.repeat(start, counts)
    step = np.r_[0.0, haversine_m(xy[:-1, 0], xy[:-1, 1], xy[1:, 0], xy[1:, 1])]
    step[pos == 0] = 0.0
    along = np.cumsum(step)
    bucket = np.floor((along - np.repeat(along[start], counts)) / max_edge_m)
    keys = np.round(xy * COORD_SCALE).astype(np.int64)
    _, vertex_key, seen = np.unique(keys, axis=0, return_inverse=True, return_counts=True)
    vertex_key = vertex_key.ravel()
    is_node = (pos == 0) | (pos == np.repeat(counts - 1, counts)) | (seen[vertex_key] > 1)
    is_node[1:] |= (bucket[1:] != bucket[:-1]) & (pos[1:] > 0)
    at = np.flatnonzero(is_node)
    same_way = way[at[:-1]] == way[at[1:]]
    first, last = at[:-1][same_way], at[1:][same_way]
    length = along[last] - along[first]
    node_keys, node_of = np.unique(vertex_key[at], return_inverse=True)
    node_index = np.full(len(seen), -1, dtype=np.int64)
    node_index[node_keys] = np.arange(len(node_keys))
    source, target = node_index[vertex_key[first]], node_index[vertex_key[last]]
    keep = (length > 0) & (source != target)
    first, last, source, target, length = (a[keep] for a in (first, last, source, target, length))
    edge_way = way[first]
    spans = last - first + 1
    vertex = np.repeat(first - np.cumsum(spans) + spans, spans) + np.arange(spans.sum())
    lines = shapely.linestrings(xy[vertex], indices=np.repeat(np.arange(len(first)), spans))
    node_xy = np.zeros((len(node_keys), 2))
    node_xy[node_of] = xy[at]
    speed = ways.speed_kmh[edge_way]
    seconds = length / (speed / 3.6)
    direction = ways.oneway[edge_way]
    return RoadGraph(
        node_lon=node_xy[:, 0],
        node_lat=node_xy[:, 1],
        source=source,
        target=target,
        length_m=length,
        speed_kmh=speed,
        cost=np.where(direction < 0, -1.0, seconds),
        reverse_cost=np.where(direction > 0, -1.0, seconds),
        highway=[ways.highway[w] for w in edge_way],
        name=[ways.name[w] for w in edge_way],
        osm_id=ways.osm_id[edge_way],
        geometry=np.asarray(lines, dtype=object),
    )


def _metric(lon: NDArray[np.float64], lat: NDArray[np.float64]) -> NDArray[np.float64]:
    """Equirectangular metres around the points' mean latitude (for graph shapes only)."""
    scale = np.cos(np.radians(np.mean(lat)))
    m = METRES_PER_DEGREE_SPHERE
    return np.column_stack([lon * m * scale, lat * m])


def gabriel_edges(xy: NDArray[np.float64]) -> NDArray[np.int64]:
    """Edges (i, j), i < j, of the Gabriel graph of planar points (a connected subgraph of the
    Delaunay triangulation holding the minimum spanning tree, with some loops).

    A Delaunay edge is kept unless the vertex opposite it in an adjacent triangle sees it at
    an angle of 90° or more.
    """
    if len(xy) < 2:
        return np.zeros((0, 2), dtype=np.int64)
    if len(xy) == 2:
        return np.array([[0, 1]], dtype=np.int64)
    tri = Delaunay(xy).simplices
    edges, bad = [], []
    for k in range(3):
        a, b, c = tri[:, k], tri[:, (k + 1) % 3], tri[:, (k + 2) % 3]
        u, v = xy[a] - xy[c], xy[b] - xy[c]
        pair = np.sort(np.column_stack([a, b]), axis=1)
        edges.append(pair)
        bad.append(pair[np.einsum("ij,ij->i", u, v) <= 0])
    every = np.unique(np.concatenate(edges), axis=0)
    blocked = np.concatenate(bad)
    n = len(xy)
    return every[~np.isin(every[:, 0] * n + every[:, 1], blocked[:, 0] * n + blocked[:, 1])]


def mst_edges(xy: NDArray[np.float64]) -> NDArray[np.int64]:
    """Edges (i, j) of the Euclidean minimum spanning tree of planar points (via Delaunay)."""
    if len(xy) < 2:
        return np.zeros((0, 2), dtype=np.int64)
    if len(xy) == 2:
        return np.array([[0, 1]], dtype=np.int64)
    if len(xy) == 3 or np.linalg.matrix_rank(xy - xy[0]) < 2:
        pairs = np.array([(i, j) for i in range(len(xy)) for j in range(i + 1, len(xy))])
    else:
        tri = Delaunay(xy).simplices
        pairs = np.unique(
            np.sort(np.concatenate([tri[:, [0, 1]], tri[:, [1, 2]], tri[:, [0, 2]]]), axis=1),
            axis=0,
        )
    weight = np.hypot(*(xy[pairs[:, 0]] - xy[pairs[:, 1]]).T) + 1e-9
    tree = minimum_spanning_tree(coo_matrix((weight, (pairs[:, 0], pairs[:, 1])), (len(xy),) * 2))
    rows, cols = tree.nonzero()
    return np.sort(np.column_stack([rows, cols]), axis=1).astype(np.int64)


def synthetic_network(
    townships: Sequence[tuple[str, float, float]],
    villages: Sequence[tuple[str, float, float]],
    locals_: Sequence[tuple[str, float, float]],
) -> Ways:
    """A plausible (synthetic) road network linking townships, villages and local points.

    Parameters
    ----------
    townships : sequence of (code, lon, lat)
        Township centres (9-digit significant code prefixes or 12-digit codes).
    villages : sequence of (code, lon, lat)
        Village centres; a village joins the township whose code prefixes its own.
    locals_ : sequence of (village code, lon, lat)
        Places reached by a track from their village centre (alert points, camps).

    Returns
    -------
    Ways
        ``secondary`` roads on the Gabriel graph of the townships, ``unclassified`` roads on a
        minimum spanning tree per township over the township and its villages, ``track``s to
        the local places; all two-way. Node them with ``node_ways``.
    """
    lines: list[NDArray[np.float64]] = []
    classes: list[str] = []
    t_xy = np.array([(x, y) for _, x, y in townships], dtype=np.float64).reshape(-1, 2)
    if len(t_xy):
        for i, j in gabriel_edges(_metric(t_xy[:, 0], t_xy[:, 1])):
            lines.append(t_xy[[i, j]])
            classes.append("secondary")
    by_township: dict[str, list[tuple[float, float]]] = {}
    centre = {code[:9]: (x, y) for code, x, y in townships}
    for code, x, y in villages:
        by_township.setdefault(code[:9], []).append((x, y))
    for prefix, points in sorted(by_township.items()):
        xy = np.array(([centre[prefix]] if prefix in centre else []) + points, dtype=np.float64)
        for i, j in mst_edges(_metric(xy[:, 0], xy[:, 1])):
            lines.append(xy[[i, j]])
            classes.append("unclassified")
    village_at = {code: (x, y) for code, x, y in villages}
    for code, x, y in locals_:
        if code in village_at and village_at[code] != (x, y):
            lines.append(np.array([village_at[code], (x, y)], dtype=np.float64))
            classes.append("track")
    return Ways(
        coords=lines,
        highway=classes,
        name=[None] * len(lines),
        oneway=np.zeros(len(lines), dtype=np.int8),
        speed_kmh=np.array([HIGHWAY_SPEEDS_KMH[c] for c in classes], dtype=np.float64),
        osm_id=np.zeros(len(lines), dtype=np.int64),
    )
