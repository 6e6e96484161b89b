"""``gridpatrol incidents …``: simulated incidents for the demo, open incidents, response times."""

from __future__ import annotations

import json
from datetime import date, timedelta
from typing import Any

import typer

from api.auth import SYSTEM
from api.cli.common import connect, run_async, settings_and_url
from api.dispatch import incidents, stats
from api.dispatch.simulate import parse_rate, simulate_incidents
from api.routers.coverage import today
from api.scope import Scope

app = typer.Typer(no_args_is_help=True)


@app.command("simulate", help="Create incidents at random alert points (Poisson, e.g. 10/h).")
def simulate(
    rate: str = typer.Option("10/h", help="arrival rate: N/h, N/min, N/d or N/s"),
    count: int = typer.Option(10, min=1, help="how many incidents"),
    area: str = typer.Option("", help="only alert points under this NBS code prefix"),
    speedup: float = typer.Option(
        0.0, min=0.0, help="simulated seconds per real second (1 = real time); 0 = all at once"
    ),
    seed: int = typer.Option(110, help="random seed (same seed, same incidents)"),
) -> None:
    try:
        per_s = parse_rate(rate)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--rate") from None
    settings, url = settings_and_url()

    def show(incident: dict[str, Any]) -> None:
        typer.echo(
            f"#{incident['id']:<6} P{incident['priority']} {incident['kind']:<28} "
            f"{incident['grid_code'] or incident['village_code'] or ''}"
        )

    async def go() -> list[int]:
        async with connect(url) as conn:
            return await simulate_incidents(
                conn,
                SYSTEM,
                settings.dispatch,
                rate_per_s=per_s,
                count=count,
                area=area,
                seed=seed,
                speedup=speedup,
                on_created=show,
            )

    created = run_async(go())
    typer.echo(f"{len(created)} simulated incidents (synthetic)")


@app.command("list", help="Incidents (open by default) with status and escalation level.")
def list_(status: str = typer.Option("open", help="open, all, or a status")) -> None:
    _, url = settings_and_url()

    async def go() -> str:
        async with connect(url) as conn:
            return await incidents.incidents_geojson(conn, Scope.everything(), status=status)

    for feature in json.loads(run_async(go()))["features"]:
        p = feature["properties"]
        typer.echo(
            f"#{p['id']:<6} {p['status']:<10} P{p['priority']} {p['escalation']:<9} "
            f"{p['kind']:<28} {p['grid_code'] or p['village_code'] or ''}  {p['responder'] or ''}"
        )


@app.command("stats", help="Response times per grid, village, township or county.")
def stats_(
    level: str = typer.Option("village", help="grid, village, township or county"),
    first: str | None = typer.Option(None, "--from", help="YYYY-MM-DD (default: 29 days ago)"),
    last: str | None = typer.Option(None, "--to", help="YYYY-MM-DD (default: today)"),
) -> None:
    _, url = settings_and_url()
    end = date.fromisoformat(last) if last else today()
    start = date.fromisoformat(first) if first else end - timedelta(days=29)

    async def go() -> list[dict[str, Any]]:
        async with connect(url) as conn:
            return await stats.response_times(conn, Scope.everything(), start, end, level)

    rows = run_async(go())
    typer.echo(f"{'code':<16}{'n':>5}{'disp':>6}{'arr':>5}  {'to dispatch':>12}{'to arrive':>11}")
    for r in rows:
        typer.echo(
            f"{r['code'] or '(no grid)':<16}{r['incidents']:>5}{r['dispatched']:>6}"
            f"{r['arrived']:>5}  {_s(r['to_dispatch_median_s']):>12}"
            f"{_s(r['to_arrive_median_s']):>11}"
        )


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value / 60:.1f} min"
