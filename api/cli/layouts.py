"""``gridpatrol layouts …``: redraw grid layouts from the shell (规划调整).

The same operations as ``/api/v1/layouts/{id}/…`` (``api.redraw``, ``api.layout_ops``), run as
the system user: clone a draft, validate it, diff it, activate it now or at a time, roll back,
export for QGIS and replace grids from a QGIS file. Editing single grids (split, merge, reshape)
is done on the planner page (``/maps/planner``) or through the API. ``layouts list`` is the same
command as ``grids list``.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import typer

from api import layout_ops, redraw
from api.auth import SYSTEM
from api.cli.common import connect, echo, fail, is_tty, run_async, settings_and_url
from api.cli.grids import list_layouts
from api.errors import Conflict, DomainError, Unprocessable
from api.layouts import get_layout
from api.progress import cli_progress
from api.scope import Scope
from gis.units import CHINA_TZ

app = typer.Typer(no_args_is_help=True)

app.command("list", help="列出布局 List layouts (id, status, purpose, area, grids).")(list_layouts)


def _violation_lines(features: list[dict[str, Any]]) -> list[str]:
    return [
        f"  {f['properties']['kind']:<16} {' '.join(f['properties']['codes']) or '-'}: "
        f"{f['properties']['reason']}"
        for f in features
    ]


@app.command("clone", help="复制为草稿 Clone a layout into a draft to edit.")
def clone(
    layout: int = typer.Argument(..., help="布局 layout id"),
    name: str = typer.Option(..., help='草稿名称 name of the draft, e.g. "2027 调整"'),
) -> None:
    _, url = settings_and_url()

    async def go() -> dict[str, Any]:
        async with connect(url) as conn:
            draft = await redraw.clone(conn, SYSTEM, layout, name=name)
            return await get_layout(conn, Scope.everything(), draft)

    draft = run_async(go())
    echo(
        f"draft {draft['id']} (version {draft['version']}) cloned from layout {layout}: "
        f"{draft['grids']} grids"
    )


@app.command("validate", help="校验 Validate a layout; exit status 1 and the problems if invalid.")
def validate(
    layout: int = typer.Argument(..., help="布局 layout id"),
    geojson: Path | None = typer.Option(None, help="违规要素 write the violations as GeoJSON"),
) -> None:
    _, url = settings_and_url()

    async def go() -> Any:
        async with connect(url) as conn:
            with cli_progress(is_tty()) as progress:
                return await layout_ops.check(conn, Scope.everything(), layout, progress=progress)

    report = run_async(go())
    collection = report.feature_collection()
    if geojson is not None:
        geojson.write_text(json.dumps(collection, ensure_ascii=False), encoding="utf-8")
    if report.valid:
        echo(f"layout {layout} is valid (有效)")
        return
    echo(f"layout {layout} has {len(report.violations)} problems (无效):")
    for line in _violation_lines(collection["features"]):
        echo(line)
    raise typer.Exit(1)


@app.command("diff", help="差异 Grids added, removed and changed against another layout.")
def diff(
    layout: int = typer.Argument(..., help="布局 layout id"),
    against: int | None = typer.Option(None, help="对比布局 default: the one it was cloned from"),
    geojson: Path | None = typer.Option(None, help="write the changed grids as GeoJSON"),
) -> None:
    _, url = settings_and_url()

    async def go() -> dict[str, Any]:
        async with connect(url) as conn:
            return await layout_ops.diff(conn, Scope.everything(), layout, against)

    body = run_async(go())
    if geojson is not None:
        geojson.write_text(json.dumps(body, ensure_ascii=False), encoding="utf-8")
    echo(
        f"layout {layout} against {body['against']}: {body['added']} added (新增), "
        f"{body['removed']} removed (删除), {body['changed']} changed (变更)"
    )
    for f in body["features"]:
        p = f["properties"]
        area = "" if p["area_change_m2"] is None else f"  Δ {p['area_change_m2']:+,.0f} m²"
        echo(f"  {p['change']:<8} {p['code']}{area}")


def _parse_time(text: str) -> datetime:
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise fail(f"--at {text!r} is not an ISO time like 2027-01-01T00:00+08:00") from None
    return when if when.tzinfo is not None else when.replace(tzinfo=CHINA_TZ)


@app.command(
    "activate", help="启用 Validate and activate now, or --at a time (China time if no zone)."
)
def activate(
    layout: int = typer.Argument(..., help="布局 layout id"),
    at: str | None = typer.Option(None, help="生效时间 e.g. 2027-01-01T00:00 (scheduled)"),
) -> None:
    _, url = settings_and_url()
    when = _parse_time(at) if at else None

    async def go() -> dict[str, Any]:
        async with connect(url) as conn:
            with cli_progress(is_tty()) as progress:
                try:
                    return await layout_ops.activate(
                        conn, SYSTEM, layout, version=None, effective_from=when, progress=progress
                    )
                except Conflict as exc:
                    features = exc.extra.get("violations", {}).get("features", [])
                    for line in _violation_lines(features):
                        typer.echo(line, err=True)
                    raise

    result = run_async(go())
    if result["scheduled"]:
        echo(f"layout {layout} will be activated at {when.isoformat() if when else '?'} (已排期)")
    else:
        echo(f"layout {layout} is active (已启用)")


@app.command("rollback", help="回退 Make a retired layout active again, exactly as it was.")
def rollback(layout: int = typer.Argument(..., help="已停用布局 retired layout id")) -> None:
    _, url = settings_and_url()

    async def go() -> dict[str, Any]:
        async with connect(url) as conn:
            return await layout_ops.rollback(conn, SYSTEM, layout)

    run_async(go())
    echo(f"layout {layout} is active again (已回退)")


@app.command("export", help="导出 Write a layout as GeoPackage, zipped Shapefile or GeoJSON.")
def export(
    layout: int = typer.Argument(..., help="布局 layout id"),
    fmt: str = typer.Option("gpkg", "--format", help="gpkg, shp (zip) or geojson"),
    output: Path = typer.Option(..., "-o", "--output", help="输出文件 output file"),
) -> None:
    _, url = settings_and_url()

    async def go() -> tuple[bytes, str]:
        async with connect(url) as conn:
            return await layout_ops.export(conn, Scope.everything(), layout, fmt)

    data, _ = run_async(go())
    output.write_bytes(data)
    echo(f"layout {layout} → {output} ({fmt}, {len(data):,} bytes)")


@app.command("replace", help="替换 Replace a draft's grids from a QGIS file (all or nothing).")
def replace(
    layout: int = typer.Argument(..., help="草稿 draft layout id"),
    path: Path = typer.Argument(..., exists=True, dir_okay=False, help="gpkg, zip or geojson"),
    crs: str | None = typer.Option(None, help="if the file declares none: wgs84, gcj02, EPSG:…"),
) -> None:
    _, url = settings_and_url()
    try:
        frame = layout_ops.read_grid_file(path.read_bytes(), path.name, crs)
    except DomainError as exc:
        raise fail(exc.message) from None

    async def go() -> dict[str, Any]:
        async with connect(url) as conn:
            version = (await get_layout(conn, Scope.everything(), layout))["version"]
            with cli_progress(is_tty()) as progress:
                try:
                    return await layout_ops.replace_from_file(
                        conn, SYSTEM, layout, version, frame, progress=progress
                    )
                except Unprocessable as exc:
                    features = exc.extra.get("violations", {}).get("features", [])
                    for line in _violation_lines(features):
                        typer.echo(line, err=True)
                    raise

    result = run_async(go())
    echo(
        f"layout {layout} version {result['version']}: {result['grids']} grids in "
        f"{len(result['villages'])} villages replaced (已替换)"
    )


@app.command("lineage", help="沿革 Old code → new code with area shares after an activation.")
def lineage(layout: int = typer.Argument(..., help="布局 layout id")) -> None:
    _, url = settings_and_url()

    async def go() -> list[dict[str, Any]]:
        async with connect(url) as conn:
            return await layout_ops.lineage(conn, Scope.everything(), layout)

    rows = run_async(go())
    if not rows:
        echo(f"layout {layout} has no lineage (it replaced no layout)")
    for r in rows:
        echo(f"{r['old_code']} → {r['new_code']}  {100 * r['area_share']:.2f} %")
