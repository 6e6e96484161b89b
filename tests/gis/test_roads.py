"""Road graphs: OSM ways noded at junctions, speeds and one-ways, the synthetic demo network."""

from __future__ import annotations

import json

import numpy as np
import pytest
import shapely
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from gis.roads import (
    RoadError,
    gabriel_edges,
    mst_edges,
    node_ways,
    read_geojsonseq,
    speed_of,
    synthetic_network,
)


def _feature(coords: list[tuple[float, float]], **tags: object) -> str:
    geometry = {"type": "LineString", "coordinates": coords}
    return "\x1e" + json.dumps({"type": "Feature", "geometry": geometry, "properties": tags})


def _components(n: int, source: np.ndarray, target: np.ndarray) -> int:
    graph = coo_matrix((np.ones(len(source)), (source, target)), shape=(n, n))
    return int(connected_components(graph, directed=False)[0])


def test_ways_are_split_at_shared_vertices_only() -> None:
    ways = read_geojsonseq(
        [
            _feature(
                [(116.0, 43.9), (116.01, 43.9), (116.02, 43.9)], highway="primary", **{"@id": 7}
            ),
            _feature([(116.01, 43.89), (116.01, 43.9), (116.01, 43.91)], highway="residential"),
            _feature([(116.02, 43.9), (116.03, 43.9)], highway="footway"),  # not routable
            _feature([(116.0, 43.95), (116.005, 43.95)], highway="track"),  # alone
        ]
    )
    graph = node_ways(ways)
    # the primary splits at the crossing; the residential too; the track stays one edge
    assert graph.n_edges == 5
    assert graph.n_nodes == 7
    assert sorted(graph.highway) == ["primary", "primary", "residential", "residential", "track"]
    assert graph.osm_id[graph.highway.index("primary")] == 7
    lengths = dict(zip(map(str, graph.geometry), graph.length_m, strict=True))
    assert lengths["LINESTRING (116 43.9, 116.01 43.9)"] == pytest.approx(803.0, abs=2.0)
    crossing = np.flatnonzero((graph.node_lon == 116.01) & (graph.node_lat == 43.9))
    assert len(crossing) == 1
    assert int(np.sum(graph.source == crossing[0]) + np.sum(graph.target == crossing[0])) == 4
    ends = {(graph.node_lon[i], graph.node_lat[i]) for i in np.r_[graph.source, graph.target]}
    assert (116.03, 43.9) not in ends


def test_travel_time_follows_the_class_and_maxspeed_and_one_ways_close_a_direction() -> None:
    ways = read_geojsonseq(
        [
            _feature([(116.0, 44.0), (116.0, 44.01)], highway="secondary", oneway="yes"),
            _feature([(116.1, 44.0), (116.1, 44.01)], highway="secondary", oneway="-1"),
            _feature([(116.2, 44.0), (116.2, 44.01)], highway="primary", maxspeed="30"),
        ]
    )
    graph = node_ways(ways)
    metres = graph.length_m
    assert graph.cost[0] == pytest.approx(metres[0] / (60 / 3.6))
    assert graph.reverse_cost[0] < 0
    assert graph.cost[1] < 0
    assert graph.reverse_cost[1] == pytest.approx(metres[1] / (60 / 3.6))
    assert graph.speed_kmh[2] == 30.0
    assert speed_of("footway") is None
    assert speed_of("motorway", "50 mph") == pytest.approx(80.47, abs=0.01)
    assert speed_of("track", "none") == 25.0


def test_a_closed_way_is_split_where_it_closes_and_where_others_touch_it() -> None:
    ring = [(116.0, 44.0), (116.01, 44.0), (116.01, 44.01), (116.0, 44.0)]
    lone = [
        _feature(ring, highway="residential"),
        _feature([(117.0, 44.0), (117.0, 44.01)], highway="road"),
    ]
    alone = node_ways(read_geojsonseq(lone), max_edge_m=1e9)
    assert alone.highway == ["road"]  # a ring touching nothing is a self-loop: useless, dropped
    spur = _feature([(116.01, 44.01), (116.02, 44.02)], highway="service")
    graph = node_ways(
        read_geojsonseq([_feature(ring, highway="residential"), spur]), max_edge_m=1e9
    )
    assert sorted(graph.highway) == ["residential", "residential", "service"]
    assert graph.n_nodes == 3
    with pytest.raises(RoadError, match="no routable ways"):
        node_ways(read_geojsonseq([_feature([(0.0, 0.0), (1.0, 1.0)], highway="steps")]))


def test_gabriel_graph_holds_the_spanning_tree_and_is_connected() -> None:
    xy = np.random.default_rng(5).random((200, 2)) * 1000
    gabriel = {tuple(e) for e in gabriel_edges(xy).tolist()}
    tree = {tuple(e) for e in mst_edges(xy).tolist()}
    assert len(tree) == 199
    assert tree <= gabriel
    edges = np.array(sorted(gabriel))
    assert _components(200, edges[:, 0], edges[:, 1]) == 1
    assert mst_edges(np.array([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0]])).tolist() == [[0, 1], [1, 2]]


def test_the_synthetic_network_links_every_township_village_and_local_point() -> None:
    rng = np.random.default_rng(11)
    townships = [
        (f"152531{100 + t:03d}", 116.0 + t * 0.2, 42.2 + rng.random() * 0.1) for t in range(3)
    ]
    villages = [
        (f"{code[:9]}{200 + v:03d}", x + rng.normal(0, 0.05), y + rng.normal(0, 0.05))
        for code, x, y in townships
        for v in range(5)
    ]
    locals_ = [(code, x + 0.01, y + 0.01) for code, x, y in villages]
    ways = synthetic_network(townships, villages, locals_)
    graph = node_ways(ways, max_edge_m=1e9)  # no extra nodes: exactly the places
    assert graph.n_nodes == len(townships) + len(villages) + len(locals_)
    assert _components(graph.n_nodes, graph.source, graph.target) == 1
    assert set(graph.highway) == {"secondary", "unclassified", "track"}
    assert all(shapely.get_num_points(g) == 2 for g in graph.geometry)
    assert (graph.cost > 0).all()
    assert (graph.reverse_cost > 0).all()
    dense = node_ways(ways, max_edge_m=1000.0)
    assert _components(dense.n_nodes, dense.source, dense.target) == 1
    assert dense.length_m.sum() == pytest.approx(graph.length_m.sum(), rel=1e-6)
    assert dense.length_m.max() <= 2000.0
    assert dense.n_nodes > 2 * graph.n_nodes


def test_long_roads_get_a_node_about_every_max_edge_m() -> None:
    road = _feature([(116.0, 44.0), (116.0, 44.1)], highway="primary")  # one 11 km segment
    graph = node_ways(read_geojsonseq([road]), max_edge_m=1000.0)
    assert 6 <= graph.n_edges <= 12
    assert graph.length_m.sum() == pytest.approx(11_119.5, abs=1.0)
    assert graph.length_m.max() <= 2000.0
    assert np.all(np.diff(np.sort(graph.node_lat)) > 0)
