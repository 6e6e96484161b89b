"""``gridpatrol incidents …``: the dispatcher's workflow from the shell (create, list,
candidates, assign, accept, arrive, clear, cancel, escalate), simulated incidents for the
demo, and response times.

Commands act directly on the database as the operator (audited as ``cli:<login>``, scope
``*``); a JT/T 808 terminal is not sent its order from here (the server's API does that).
Bad input ends with a one-line ``error:`` and exit status 1 (2 for a malformed option).
"""

from __future__ import annotations

import getpass
import json
from collections.abc import Awaitable, Callable
from datetime import date, timedelta
from typing import Any

import numpy as np
import typer
from psycopg import AsyncConnection
from pydantic import ValidationError

from api.auth import SYSTEM, Principal
from api.cli.common import connect, fail, run_async, settings_and_url
from api.dispatch import assign as assigning
from api.dispatch import incidents, stats, workflow
from api.dispatch.simulate import parse_rate, simulate_incidents
from api.routers.coverage import today
from api.scope import Scope
from gis.crs import gcj02_to_wgs84

STATUS_LABELS = {
    "new": "新警情 new",
    "dispatched": "已派警 dispatched",
    "accepted": "已接警 accepted",
    "arrived": "已到达 arrived",
    "cleared": "已处置 cleared",
    "cancelled": "已撤销 cancelled",
}
REASON_LABELS = {
    "busy": "出警中 busy",
    "off_duty": "休班 off duty",
    "stale": "定位过旧 stale fix",
    "offline": "离线 offline",
    "disabled": "停用 disabled",
    "too_far": "超出时限 too far",
    "no_route": "无路线 no route",
    "inactive": "未在岗 inactive",
}

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


def operator() -> Principal:
    """Who acts from the shell: the login name, audited as ``cli:<login>``, scope ``*``."""
    try:
        login = getpass.getuser()
    except (KeyError, OSError):
        login = "unknown"
    return Principal(name=f"cli:{login}", role="admin", scope=Scope.everything())


def _act(work: Callable[[AsyncConnection[Any]], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
    """Run one workflow step against the database; errors exit with one line."""
    _, url = settings_and_url()

    async def go() -> dict[str, Any]:
        async with connect(url) as conn:
            return await work(conn)

    return run_async(go())


def _show(incident: dict[str, Any]) -> None:
    status = STATUS_LABELS.get(incident["status"], incident["status"])
    place = incident.get("grid_code") or incident.get("village_code") or ""
    who = incident.get("plate") or incident.get("responder") or ""
    typer.echo(
        f"警情 incident #{incident['id']}: {status} · P{incident['priority']} "
        f"{incident['kind']} · {place}{' · ' + who if who else ''}"
    )


@app.command("create", help="Take a call: create an incident at a point, alert point or grid.")
def create(
    kind: str = typer.Option(..., help="what happened, e.g. 盗畜 livestock theft"),
    priority: int = typer.Option(3, help="1 most urgent … 5 least"),
    lon: float | None = typer.Option(None, help="longitude (with --lat)"),
    lat: float | None = typer.Option(None, help="latitude (with --lon)"),
    crs: str = typer.Option("wgs84", help="datum of --lon/--lat: wgs84 or gcj02 (AMap)"),
    alert_point: int | None = typer.Option(None, "--alert-point", help="报警点 id"),
    grid: str | None = typer.Option(None, help="15-digit grid code"),
    caller: str = typer.Option("", help="caller's name"),
    phone: str = typer.Option("", help="caller's phone"),
    description: str | None = typer.Option(None, help="what the caller said"),
) -> None:
    if crs not in ("wgs84", "gcj02"):
        raise fail(f"--crs must be wgs84 or gcj02, not {crs!r}")
    if crs == "gcj02" and lon is not None and lat is not None:
        x, y = gcj02_to_wgs84(np.array([lon]), np.array([lat]))
        lon, lat = round(float(x[0]), 7), round(float(y[0]), 7)
    reporter = " ".join(p for p in (caller.strip(), phone.strip()) if p) or None
    try:
        body = incidents.IncidentIn(
            kind=kind,
            priority=priority,
            description=description,
            reporter=reporter,
            lon=lon,
            lat=lat,
            alert_point_id=alert_point,
            grid_code=grid,
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "input"
        raise fail(f"{where}: {first['msg']}") from None
    settings, _ = settings_and_url()
    made = _act(lambda c: incidents.create_incident(c, operator(), body, settings.dispatch))
    typer.echo("已创建 created")
    _show(made)


@app.command("list", help="Incidents (open by default) with status and escalation level.")
def list_(
    status: str = typer.Option("open", help="open, all, or a status"),
    area: str = typer.Option("", help="only under this admin code (village, township …)"),
) -> None:
    _, url = settings_and_url()
    try:
        scope = Scope.parse([area]) if area else Scope.everything()
    except ValueError as exc:
        raise fail(f"--area: {exc}") from None

    async def go() -> str:
        async with connect(url) as conn:
            return await incidents.incidents_geojson(conn, scope, status=status)

    rows = json.loads(run_async(go()))["features"]
    counts: dict[str, int] = {}
    for feature in rows:
        p = feature["properties"]
        counts[p["status"]] = counts.get(p["status"], 0) + 1
        typer.echo(
            f"#{p['id']:<6} {STATUS_LABELS.get(p['status'], p['status']):<16} P{p['priority']} "
            f"{p['escalation']:<9} {p['kind']:<28} {p['grid_code'] or p['village_code'] or ''}"
            f"  {p['responder'] or ''}"
        )
    summary = ", ".join(f"{STATUS_LABELS.get(k, k)} {v}" for k, v in sorted(counts.items()))
    typer.echo(f"共 {len(rows)} 起 incidents" + (f" ({summary})" if summary else ""))


@app.command("candidates", help="Ranked responders, and why nearer ones were left out.")
def candidates(
    incident: int = typer.Argument(..., help="incident id"),
    k: int = typer.Option(5, min=1, max=50, help="how many"),
    mode: str = typer.Option("straight", help="straight or road"),
) -> None:
    settings, _ = settings_and_url()
    ranked = _act(
        lambda c: workflow.candidates_for(
            c, operator(), incident, settings.dispatch, k=k, mode=mode
        )
    )
    _print_ranking(ranked)


def _print_ranking(ranked: dict[str, Any]) -> None:
    typer.echo(f"候选 candidates (升级 level: {ranked['escalation']}, {ranked['mode']})")
    for c in ranked["candidates"]:
        who = c.get("plate") or c.get("name") or ""
        ident = f"device {c['device_id']}" if c["kind"] == "vehicle" else f"staff {c['staff_id']}"
        eta = "-" if c["eta_s"] is None else f"{c['eta_s'] / 60:.1f} min"
        typer.echo(f"  {c['rank']}. {who} ({ident}) {c['distance_m'] / 1000:.1f} km · ETA {eta}")
    for x in ranked["excluded"]:
        km = "" if x["distance_m"] is None else f" {x['distance_m'] / 1000:.1f} km"
        typer.echo(
            f"  排除 left out: {x.get('name') or x['identifier']}{km} — "
            f"{REASON_LABELS.get(x['reason'], x['reason'])}"
        )
    out = ranked.get("left_out") or {}
    if out.get("outside_level"):
        typer.echo(
            f"  {out['outside_level']} 辆空闲车辆超出本级范围 free vehicles beyond the "
            f"{out['level']} level (escalate to summon them)"
        )
    if out.get("outside_scope"):
        typer.echo(f"  {out['outside_scope']} 辆在管辖范围外 outside the scope")
    if ranked.get("note"):
        typer.echo(f"  注 note: {ranked['note']}")


@app.command("assign", help="Dispatch a vehicle (--device), a worker (--staff) or the top one.")
def assign(
    incident: int = typer.Argument(..., help="incident id"),
    device: int | None = typer.Option(None, help="device id of the vehicle"),
    staff: int | None = typer.Option(None, help="staff id of the grid worker"),
    top: bool = typer.Option(False, "--top", help="the top-ranked candidate"),
) -> None:
    if sum([device is not None, staff is not None, top]) != 1:
        raise fail("give exactly one of --device, --staff or --top")
    settings, _ = settings_and_url()
    me = operator()

    async def work(conn: AsyncConnection[Any]) -> dict[str, Any]:
        nonlocal device, staff
        if top:
            ranked = await workflow.candidates_for(conn, me, incident, settings.dispatch)
            if not ranked["candidates"]:
                raise ValueError(f"incident {incident} has no candidate: {ranked['note']}")
            best = ranked["candidates"][0]
            device, staff = best.get("device_id"), best.get("staff_id")
        body = assigning.AssignIn(device_id=device, staff_id=staff)
        return await assigning.assign(conn, me, incident, body, settings.dispatch)

    done = _act(work)
    typer.echo("已派警 dispatched")
    _show(done)


def _step(incident: int, action: str, note: dict[str, str]) -> None:
    done = _act(lambda c: workflow.transition(c, operator(), incident, action, note=note))
    _show(done)


@app.command("accept", help="The responder accepted (on their behalf).")
def accept(
    incident: int = typer.Argument(..., help="incident id"),
    note: str = typer.Option("", help="remark for the timeline"),
) -> None:
    _step(incident, "accept", {"note": note})


@app.command("arrive", help="Mark the responder arrived (fixes usually do it).")
def arrive(
    incident: int = typer.Argument(..., help="incident id"),
    note: str = typer.Option("", help="remark for the timeline"),
) -> None:
    _step(incident, "arrive", {"note": note})


@app.command("clear", help="Dealt with: close it with an outcome; frees the responder.")
def clear(
    incident: int = typer.Argument(..., help="incident id"),
    outcome: str = typer.Option(..., help="how it ended, e.g. 已处理 resolved, 误报 false alarm"),
    note: str = typer.Option("", help="remark for the timeline"),
) -> None:
    if not outcome.strip():
        raise fail("--outcome must not be empty")
    _step(incident, "clear", {"outcome": outcome.strip()[:200], "note": note})


@app.command("cancel", help="Cancel with a reason; frees the responder.")
def cancel(
    incident: int = typer.Argument(..., help="incident id"),
    reason: str = typer.Option(..., help="why, e.g. 重复报警 duplicate call"),
) -> None:
    if not reason.strip():
        raise fail("--reason must not be empty")
    _step(incident, "cancel", {"reason": reason.strip()[:200]})


@app.command("escalate", help="Blow the whistle (吹哨): widen the responders one level now.")
def escalate(incident: int = typer.Argument(..., help="incident id")) -> None:
    done = _act(lambda c: workflow.escalate(c, operator(), incident))
    typer.echo(f"已升级 escalated to {done['escalation']}")
    _show(done)


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
