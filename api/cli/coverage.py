"""``gridpatrol coverage …``: bring coverage up to date; quick tables per level; the ranking."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import typer

from api import layouts
from api.cli.common import connect, is_tty, run_async, settings_and_url
from api.coverage import metrics, vehicles
from api.coverage.update import CoverageUpdater, UpdateReport
from api.progress import cli_progress
from api.routers.coverage import today
from api.scope import Scope

app = typer.Typer(no_args_is_help=True)


def _window(first: str | None, last: str | None, max_days: int) -> metrics.Window:
    end = date.fromisoformat(last) if last else today()
    start = date.fromisoformat(first) if first else end - timedelta(days=6)
    return metrics.Window.check(start, end, max_days=max_days)


@app.command("update", help="Recompute every pending device-day (progress bar).")
def update() -> None:
    settings, url = settings_and_url()

    async def go() -> UpdateReport:
        async with connect(url) as conn:
            with cli_progress(is_tty()) as progress:
                return await CoverageUpdater(settings.coverage).run(conn, progress=progress)

    typer.echo(run_async(go()).line())


@app.command("show", help="Coverage per grid/village/township/county for a window.")
def show(
    level: str = typer.Option("village", help="grid, village, township or county"),
    first: str | None = typer.Option(
        None, "--from", help="YYYY-MM-DD (default: 6 days before --to)"
    ),
    last: str | None = typer.Option(None, "--to", help="YYYY-MM-DD (default: today)"),
    layout: int | None = typer.Option(None, help="default: the active patrol layout"),
    area: str = typer.Option("", help="only units under this code prefix"),
) -> None:
    settings, url = settings_and_url()

    async def go() -> dict[str, Any]:
        async with connect(url) as conn:
            layout_id = layout or await layouts.active_layout(conn)
            if layout_id is None:
                raise ValueError("no active layout; give --layout")
            scope = Scope.parse([area]) if area else Scope.everything()
            window = _window(first, last, settings.coverage.max_window_days)
            updater = CoverageUpdater(settings.coverage)
            return await metrics.unit_metrics(conn, updater, scope, layout_id, window, level=level)

    body = run_async(go())
    typer.echo(f"{body['layout']['name']}  {body['from']} … {body['to']}  ({level})")
    if body["note"]:
        typer.echo(f"note: {body['note']}")
    typer.echo(
        f"{'code':<16}{'name':<14}{'cover%':>8}{'km':>10}{'hours':>9}{'visits':>8}{'blind':>7}"
    )
    for u in body["units"]:
        name = (u["name_zh"] or "")[:6]
        typer.echo(
            f"{u['code']:<16}{name:<14}{float(u['coverage_pct'] or 0):>8.1f}"
            f"{float(u['patrol_km']):>10.1f}{float(u['dwell_h']):>9.1f}{u['visits']:>8}{u['blind_cells']:>7}"
        )


@app.command(
    "ranking", help="Vehicles in service ranked by patrol work (best AWARD_SHARE awarded)."
)
def ranking(
    first: str | None = typer.Option(None, "--from"),
    last: str | None = typer.Option(None, "--to"),
    top: int = typer.Option(30, help="rows to print"),
) -> None:
    settings, url = settings_and_url()

    async def go() -> dict[str, Any]:
        async with connect(url) as conn:
            window = _window(first, last, settings.coverage.max_window_days)
            return await vehicles.ranking(
                conn, CoverageUpdater(settings.coverage), Scope.everything(), window
            )

    body = run_async(go())
    counts = body["counts"]
    typer.echo(f"{body['from']} … {body['to']}")
    typer.echo(body["rule"]["zh"])
    typer.echo(body["rule"]["en"])
    typer.echo(
        f"in service {counts['in_service']} of {counts['vehicles']}; not ranked "
        f"{counts['not_ranked']} {counts['not_ranked_by_reason']}"
    )
    for v in body["vehicles"][:top]:
        typer.echo(
            f"{v['rank']:>4} {v['verdict']:<9} {v['identifier']:<24} score {v['score']:.3f}  "
            f"{v['km']:>8.1f} km {v['hours']:>6.1f} h  own {v['own_coverage_pct']:>5.1f}%  "
            f"visits {v['own_visits']:>4}"
        )


@app.command("backfill", help="Recompute cell_visit for a window: in the database or on Dask.")
def backfill(
    first: str = typer.Option(..., "--from", help="first local day, YYYY-MM-DD"),
    last: str = typer.Option(..., "--to", help="last local day, YYYY-MM-DD"),
    engine: str = typer.Option("db", help="db (from position) or dask (from GeoParquet)"),
    scheduler: str | None = typer.Option(None, help="Dask scheduler address (default: local)"),
    workers: int = typer.Option(2, min=1, help="local cluster worker processes"),
    export_live: bool = typer.Option(
        True, help="dask: snapshot the window's live partitions to GeoParquet first"
    ),
) -> None:
    from api.cli.backfill import run_backfill  # Dask only when asked for

    if engine not in {"db", "dask"}:
        raise typer.BadParameter("engine must be db or dask", param_hint="--engine")
    report = run_backfill(
        date.fromisoformat(first),
        date.fromisoformat(last),
        engine=engine,
        scheduler=scheduler,
        workers=workers,
        export_live=export_live,
    )
    typer.echo(report.line())
