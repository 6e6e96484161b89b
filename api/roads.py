"""Road graphs in the database: store a graph, import OpenStreetMap, the synthetic demo network.

``gridpatrol roads import FILE.osm.pbf`` keeps the ways tagged ``highway`` (``osmium
tags-filter``), exports them as GeoJSON lines (``osmium export``, from Debian's osmium-tool),
nodes them into a graph (``gis.roads``) and stores it as one dataset in one transaction; the
newest import becomes the active dataset that road ETAs route on. The demo's network is
synthetic (labelled so) and only becomes active when no other dataset is.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from psycopg import AsyncConnection

from api import audit
from api.auth import SYSTEM, Principal
from api.progress import Progress
from gis.roads import RoadError, RoadGraph, node_ways, read_geojsonseq, synthetic_network

DEMO_DATASET = "demo-synthetic"


async def store_graph(
    conn: AsyncConnection[Any],
    actor: Principal,
    graph: RoadGraph,
    *,
    name: str,
    source: str | None = None,
    synthetic: bool = False,
    activate: bool = True,
) -> dict[str, Any]:
    """Store ``graph`` as dataset ``name`` (replacing a dataset of that name) in one
    transaction; ``activate`` makes it the graph dispatch routes on. Returns its summary."""
    km = float(graph.length_m.sum() / 1000.0)
    async with conn.transaction():
        await conn.execute("DELETE FROM road_dataset WHERE name = %s", (name,))
        row = await (
            await conn.execute(
                "INSERT INTO road_dataset (name, source, synthetic, nodes, edges, km, "
                "imported_by) VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id",
                (name, source, synthetic, graph.n_nodes, graph.n_edges, km, actor.name),
            )
        ).fetchone()
        assert row is not None  # noqa: S101 - RETURNING yields the row
        dataset = int(row[0])
        ids = np.array(
            [
                r[0]
                for r in await (
                    await conn.execute(
                        "SELECT nextval(pg_get_serial_sequence('road_node', 'id')) "
                        "FROM generate_series(1, %s)",
                        (graph.n_nodes,),
                    )
                ).fetchall()
            ],
            dtype=np.int64,
        )
        async with conn.cursor() as cur:
            async with cur.copy("COPY road_node (id, dataset_id, geom) FROM STDIN") as copy:
                for node, x, y in zip(
                    ids.tolist(), graph.node_lon.tolist(), graph.node_lat.tolist(), strict=True
                ):
                    await copy.write_row((node, dataset, f"SRID=4326;POINT({x!r} {y!r})"))
            lines = shapely.to_wkb(
                shapely.set_srid(graph.geometry, 4326), hex=True, include_srid=True
            )
            async with cur.copy(
                "COPY road_edge (dataset_id, source, target, length_m, speed_kmh, cost, "
                "reverse_cost, highway, name, osm_id, geom) FROM STDIN"
            ) as copy:
                for i in range(graph.n_edges):
                    await copy.write_row(
                        (
                            dataset,
                            int(ids[graph.source[i]]),
                            int(ids[graph.target[i]]),
                            float(graph.length_m[i]),
                            float(graph.speed_kmh[i]),
                            float(graph.cost[i]),
                            float(graph.reverse_cost[i]),
                            graph.highway[i],
                            graph.name[i],
                            int(graph.osm_id[i]) or None,
                            lines[i],
                        )
                    )
        if activate:
            await activate_dataset(conn, dataset)
        await audit.record(
            conn,
            actor,
            "roads.import",
            object_type="road_dataset",
            object_id=dataset,
            detail={"name": name, "nodes": graph.n_nodes, "edges": graph.n_edges, "km": km},
        )
    await conn.execute("ANALYZE road_node")
    await conn.execute("ANALYZE road_edge")
    return {
        "id": dataset,
        "name": name,
        "nodes": graph.n_nodes,
        "edges": graph.n_edges,
        "km": round(km, 1),
        "synthetic": synthetic,
        "active": activate,
    }


async def activate_dataset(conn: AsyncConnection[Any], dataset_id: int) -> None:
    """Make one dataset the routing graph (in the caller's transaction)."""
    await conn.execute(
        "UPDATE road_dataset SET active = false WHERE active AND id <> %s", (dataset_id,)
    )
    await conn.execute("UPDATE road_dataset SET active = true WHERE id = %s", (dataset_id,))


async def list_datasets(conn: AsyncConnection[Any]) -> list[dict[str, Any]]:
    """Every stored road dataset, newest first."""
    cur = await conn.execute(
        "SELECT id, name, source, synthetic, active, nodes, edges, round(km::numeric, 1)::float8, "
        "imported_at, imported_by FROM road_dataset ORDER BY imported_at DESC, id DESC"
    )
    names = [d.name for d in cur.description or []]
    names[7] = "km"
    return [dict(zip(names, r, strict=True)) for r in await cur.fetchall()]


def osm_lines(path: Path) -> Iterator[str]:
    """GeoJSON lines of the ``highway`` ways of an OSM file (.osm.pbf, .osm, .osm.bz2 …).

    Raises
    ------
    RoadError
        When osmium-tool is missing or cannot read the file.
    """
    if shutil.which("osmium") is None:
        raise RoadError("osmium-tool is not installed (Debian: apt install osmium-tool)")
    if not path.is_file():
        raise RoadError(f"no such file: {path}")
    with tempfile.TemporaryDirectory(prefix="gridpatrol-roads-") as tmp:
        ways = Path(tmp) / "highways.osm.pbf"
        lines = Path(tmp) / "highways.geojsonseq"
        for argv in (
            ["osmium", "tags-filter", str(path), "w/highway", "-o", str(ways), "-O"],
            [
                "osmium",
                "export",
                str(ways),
                "-f",
                "geojsonseq",
                "--geometry-types=linestring",
                "-a",
                "id",
                "-o",
                str(lines),
                "-O",
            ],
        ):
            done = subprocess.run(argv, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise RoadError(f"{' '.join(argv[:2])} failed: {done.stderr.strip()[-500:]}")
        with lines.open(encoding="utf-8") as handle:
            yield from handle


async def import_osm(
    conn: AsyncConnection[Any], actor: Principal, path: Path, *, name: str | None = None
) -> dict[str, Any]:
    """Import the roads of an OSM file as a dataset (named after the file) and activate it."""

    def build() -> RoadGraph:
        return node_ways(read_geojsonseq(osm_lines(path)))

    graph = await asyncio.to_thread(build)
    dataset = name or path.name.split(".")[0]
    return await store_graph(conn, actor, graph, name=dataset, source=f"OpenStreetMap: {path.name}")


async def load_demo_roads(conn: AsyncConnection[Any], progress: Progress) -> str:
    """The demo step: a synthetic network over the league's townships, villages and alarm
    phones (see ``gis.roads.synthetic_network``), active unless another dataset is."""
    task = progress.task("道路 synthetic roads", 2)

    async def points(query: str) -> list[tuple[str, float, float]]:
        rows = await (await conn.execute(query)).fetchall()
        return [(str(r[0]), float(r[1]), float(r[2])) for r in rows]

    townships = await points(
        "SELECT code, ST_X(p), ST_Y(p) FROM (SELECT code, ST_PointOnSurface(geom) AS p "
        "FROM admin_area WHERE level = 'township' AND code LIKE '1525%' ORDER BY code) x"
    )
    villages = await points(
        "SELECT code, ST_X(p), ST_Y(p) FROM (SELECT code, ST_PointOnSurface(geom) AS p "
        "FROM admin_area WHERE level = 'village' AND code LIKE '1525%' ORDER BY code) x"
    )
    phones = await points(
        "SELECT village_code, ST_X(geom), ST_Y(geom) FROM alert_point "
        "WHERE synthetic AND village_code LIKE '1525%' ORDER BY id"
    )
    graph = node_ways(synthetic_network(townships, villages, phones))
    task.advance()
    other = await (
        await conn.execute(
            "SELECT 1 FROM road_dataset WHERE active AND name <> %s", (DEMO_DATASET,)
        )
    ).fetchone()
    stored = await store_graph(
        conn,
        SYSTEM,
        graph,
        name=DEMO_DATASET,
        source="synthetic: Gabriel graph of townships, MST of villages, tracks to alarm phones",
        synthetic=True,
        activate=other is None,
    )
    task.advance()
    return (
        f"roads: {stored['edges']} synthetic edges, {stored['nodes']} nodes, "
        f"{stored['km']:.0f} km ({'active' if stored['active'] else 'not active'})"
    )
