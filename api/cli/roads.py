"""``gridpatrol roads …``: import OpenStreetMap roads for road ETAs, list road datasets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from api.auth import SYSTEM
from api.cli.common import connect, run_async, settings_and_url
from api.roads import import_osm, list_datasets

app = typer.Typer(no_args_is_help=True)


@app.command("import", help="Import the roads of an OSM file (.osm.pbf) and route on them.")
def import_(
    path: Path = typer.Argument(..., help="an OpenStreetMap extract (.osm.pbf, .osm)"),
    name: str | None = typer.Option(None, help="dataset name (default: the file's name)"),
) -> None:
    _, url = settings_and_url()

    async def go() -> dict[str, Any]:
        async with connect(url) as conn:
            return await import_osm(conn, SYSTEM, path, name=name)

    done = run_async(go())
    typer.echo(
        f"road dataset {done['name']} (#{done['id']}): {done['edges']} edges, "
        f"{done['nodes']} nodes, {done['km']} km; active"
    )


@app.command("list", help="Road datasets (the active one is routed on).")
def list_() -> None:
    _, url = settings_and_url()

    async def go() -> list[dict[str, Any]]:
        async with connect(url) as conn:
            return await list_datasets(conn)

    for d in run_async(go()):
        flags = " ".join(
            f for f, on in (("active", d["active"]), ("synthetic", d["synthetic"])) if on
        )
        typer.echo(f"#{d['id']:<4} {d['name']:<24} {d['edges']:>8} edges {d['km']:>10} km  {flags}")
