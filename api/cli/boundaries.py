"""``gridpatrol boundaries import``: admin-area polygons from GeoJSON/GeoPackage/Shapefile."""

from __future__ import annotations

from pathlib import Path

import typer

from api.auth import SYSTEM
from api.boundaries import ImportResult, upsert_areas
from api.cli.common import connect, run_async, settings_and_url
from gis.boundaries import read_boundaries

app = typer.Typer(no_args_is_help=True)
LEVELS = ("league", "county", "township", "village")


@app.command("import", help="Import a boundary file as one level (one transaction).")
def import_file(
    path: Path = typer.Argument(
        ..., exists=True, dir_okay=False, help="GeoJSON, .gpkg, .shp or .zip"
    ),
    level: str = typer.Option(..., help="league, county, township or village"),
    crs: str | None = typer.Option(None, help="the file's CRS if undeclared: EPSG:…, gcj02, bd09"),
    code_field: str | None = typer.Option(None, help="field holding the NBS code"),
    name_field: str | None = typer.Option(None, help="field holding the Chinese name"),
    synthetic: bool = typer.Option(False, help="mark these boundaries as synthetic"),
) -> None:
    if level not in LEVELS:
        raise typer.BadParameter(f"choose one of {', '.join(LEVELS)}", param_hint="--level")
    _, url = settings_and_url()

    async def go() -> tuple[ImportResult, list[str]]:
        frame, report = read_boundaries(path, crs=crs, code_field=code_field, name_field=name_field)
        frame["level"] = level
        frame["synthetic"] = synthetic
        frame["source"] = f"imported from {path.name}"
        async with connect(url) as conn:
            return await upsert_areas(conn, SYSTEM, frame), report.lines()

    result, lines = run_async(go())
    for line in lines:
        typer.echo(line)
    typer.echo(f"imported: {result.inserted} new, {result.updated} updated")
    if result.without_parent:
        typer.echo(f"without a parent area: {', '.join(result.without_parent[:20])}")
