"""``gridpatrol grids …``, ``staff …`` and ``alerts …``: layouts, people, alert points."""

from __future__ import annotations

import json
from datetime import timedelta, timezone
from pathlib import Path
from typing import Any

import typer

from api import grids as grid_service
from api import layout_ops, layouts, staff
from api.auth import SYSTEM
from api.cli.common import connect, fail, is_tty, run_async, settings_and_url
from api.progress import cli_progress
from api.scope import Scope

CHINA = timezone(timedelta(hours=8))
grids_app = typer.Typer(no_args_is_help=True)
staff_app = typer.Typer(no_args_is_help=True)
alerts_app = typer.Typer(no_args_is_help=True)


@grids_app.command("make", help="Cut villages into grids as a new layout (progress bar).")
def make(
    method: str = typer.Option(..., help="balanced, squares, h3 or households"),
    name: str = typer.Option(..., help='e.g. "2026 patrol squares"'),
    area: str = typer.Option("152500000000", help="area code: league, county, township, village"),
    county: str | None = typer.Option(None, help="shorthand for --area with a county code"),
    per_village: int | None = typer.Option(None, help="balanced: grids per village (草原110: 8)"),
    size_m: float | None = typer.Option(None, help="squares: side in metres"),
    resolution: int = typer.Option(9, help="H3 resolution of fine cells (and of h3 grids)"),
    containment: str = typer.Option("center", help="h3: center, full or overlap"),
    cells_per_grid: int | None = typer.Option(None, help="h3: about this many cells per grid"),
    by_households: bool = typer.Option(False, help="balanced: balance households, not area"),
    purpose: str = typer.Option("patrol", help="patrol, vehicle, information or household"),
    activate: bool = typer.Option(False, help="activate it (the active one of the area retires)"),
) -> None:
    _, url = settings_and_url()
    spec = layouts.LayoutSpec(
        name=name,
        area=county or area,
        method=method,
        purpose=purpose,
        per_village=per_village,
        size_m=size_m,
        resolution=resolution,
        containment=containment,
        cells_per_grid=cells_per_grid,
        by_households=by_households,
        activate=activate,
    )

    async def go() -> layouts.MadeLayout:
        async with connect(url) as conn:
            with cli_progress(is_tty()) as progress:
                return await layouts.make_layout(conn, SYSTEM, spec, progress=progress)

    made = run_async(go())
    state = "active" if activate else "draft"
    typer.echo(
        f"layout {made.id} ({state}): {made.grids} grids in {made.villages} villages, "
        f"{made.cells} fine cells"
    )


@grids_app.command("list", help="List layouts (id, status, purpose, area, grids).")
def list_layouts() -> None:
    _, url = settings_and_url()

    async def go() -> list[dict[str, Any]]:
        async with connect(url) as conn:
            return await layouts.list_layouts(conn, Scope.everything())

    for lay in run_async(go()):
        typer.echo(
            f"{lay['id']:>4}  {lay['status']:<8} {lay['purpose']:<11} {lay['area_code']}  "
            f"{lay['grids']:>6} grids  {lay['method']:<10} {lay['name']}"
        )


@grids_app.command("activate", help="Activate a layout (the active one of its area retires).")
def activate(layout_id: int) -> None:
    _, url = settings_and_url()

    async def go() -> dict[str, Any]:
        async with connect(url) as conn:
            return await layout_ops.activate(
                conn, SYSTEM, layout_id, version=None, effective_from=None
            )

    run_async(go())
    typer.echo(f"layout {layout_id} is active")


@grids_app.command("assign", help="Make a staff member (by phone) a grid's worker or leader.")
def assign(
    grid: str = typer.Argument(..., help="15-digit grid code"),
    phone: str = typer.Argument(..., help="the staff member's phone"),
    layout: int | None = typer.Option(None, help="layout (default: the active patrol layout)"),
    role: str = typer.Option("worker", help="worker or leader"),
) -> None:
    _, url = settings_and_url()

    async def go() -> dict[str, Any]:
        async with connect(url) as conn:
            row = await (
                await conn.execute("SELECT id FROM staff WHERE phone = %s", (phone,))
            ).fetchone()
            if row is None:
                raise ValueError(f"no staff member with phone {phone}")
            layout_id = layout or await layouts.active_layout(conn)
            if layout_id is None:
                raise ValueError("no active layout; give --layout")
            return await grid_service.assign_worker(
                conn, SYSTEM, layout_id, grid, row[0], role=role
            )

    result = run_async(go())
    typer.echo(f"grid {grid}: {role} {result['worker']} ({result['worker_phone']})")


@grids_app.command("staffing", help="Grids without a worker; workers with several grids.")
def staffing(
    layout: int | None = typer.Option(None, help="default: the active patrol layout"),
) -> None:
    _, url = settings_and_url()

    async def go() -> dict[str, Any]:
        async with connect(url) as conn:
            layout_id = layout or await layouts.active_layout(conn)
            if layout_id is None:
                raise ValueError("no active layout; give --layout")
            return await grid_service.staffing_report(conn, Scope.everything(), layout_id)

    report = run_async(go())
    typer.echo(
        f"layout {report['layout']}: {len(report['grids_without_worker'])} grids without a worker"
    )
    for g in report["grids_without_worker"][:50]:
        typer.echo(f"  {g['code']}")
    typer.echo(f"{len(report['workers_with_several_grids'])} workers hold more than one grid")
    for w in report["workers_with_several_grids"][:50]:
        typer.echo(f"  {w['name']} {w['phone']}: {', '.join(w['grids'])}")


@staff_app.command("import", help="Import staff from CSV, XLSX or GeoJSON (all or nothing).")
def import_staff(path: Path = typer.Argument(..., exists=True, dir_okay=False)) -> None:
    _, url = settings_and_url()
    frame = staff.read_table(path.read_bytes(), path.name)

    async def go() -> staff.ImportResult:
        async with connect(url) as conn:
            return await staff.import_staff(conn, SYSTEM, frame)

    result = run_async(go())
    typer.echo(f"staff: {result.inserted} new, {result.updated} updated")


@staff_app.command(
    "code", help="A one-time sign-in code for a grid worker's phone page (print it for them)."
)
def sign_in_code(phone: str = typer.Argument(..., help="the worker's phone number")) -> None:
    """Prints the code and when it expires. Exit status: 0 printed; 2 no staff member has this
    phone; 3 the staff member is not an active grid worker; 1 any other error (database…)."""
    from api.errors import NotFound, Unprocessable
    from api.mobile.accounts import issue_code

    settings, url = settings_and_url()

    async def go() -> dict[str, Any]:
        try:
            async with connect(url) as conn:
                return await issue_code(conn, SYSTEM, settings.mobile, phone=phone)
        except NotFound as exc:
            raise fail(exc.message, 2) from None
        except Unprocessable as exc:
            raise fail(exc.message, 3) from None

    made = run_async(go())
    expires = made["expires_at"].astimezone(CHINA).strftime("%Y-%m-%d %H:%M")
    typer.echo(f"{made['name']} {made['phone']}: sign-in code {made['code']}")
    typer.echo(f"valid once, until {expires} (China time), at /m/")


@alerts_app.command("import", help="Import alert points (CSV/XLSX with lat, lon or GeoJSON).")
def import_alerts(
    path: Path = typer.Argument(..., exists=True, dir_okay=False),
    crs: str = typer.Option("wgs84", help="coordinates: wgs84, cgcs2000, gcj02 or bd09"),
    keep_unassigned: bool = typer.Option(False, help="keep points outside every village"),
) -> None:
    _, url = settings_and_url()
    frame = staff.read_table(path.read_bytes(), path.name)

    async def go() -> staff.ImportResult:
        async with connect(url) as conn:
            return await staff.import_alert_points(
                conn, SYSTEM, frame, crs=crs, keep_unassigned=keep_unassigned
            )

    result = run_async(go())
    typer.echo(
        f"alert points: {result.inserted} imported, {result.unassigned} outside every village"
    )


@alerts_app.command("site", help="Where K alert points should go in a village (MCLP/p-median).")
def site(
    village: str = typer.Option(..., help="12-digit village code"),
    k: int = typer.Option(6, help="how many points"),
    radius_km: float = typer.Option(5.0, help="service radius"),
    method: str = typer.Option("mclp", help="mclp (max coverage) or pmedian (min distance)"),
    as_json: bool = typer.Option(False, "--json", help="print the whole result as JSON"),
) -> None:
    _, url = settings_and_url()

    async def go() -> dict[str, Any]:
        async with connect(url) as conn:
            return await staff.site(
                conn, Scope.everything(), village, k=k, radius_km=radius_km, method=method
            )

    result = run_async(go())
    if as_json:
        typer.echo(json.dumps(result, ensure_ascii=False, indent=2))
        return
    typer.echo(
        f"village {village}: {result['current_points']} current points cover "
        f"{result['coverage_before_pct']}% of {result['demand']} within {radius_km} km; "
        f"the best {k} ({method}) cover {result['coverage_after_pct']}% "
        f"(mean distance {result['mean_distance_m']:.0f} m)"
    )
    for p in result["chosen"]:
        typer.echo(f"  {p['lat']:.6f}, {p['lon']:.6f}")
