"""``gridpatrol simulate`` and ``gridpatrol replay``: fleets for demos, tests and benchmarks."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import typer

from api import simulate as sim
from api.cli.common import connect, fail, is_tty, run_async, settings_and_url
from api.ingest.fixes import FixBatch
from api.progress import cli_progress
from api.protocols import trackfiles
from api.protocols.jt808.fleet import assign_phones, send_jt808
from gis.simulation import FleetTracks

PROTOCOLS = ("osmand", "batch", "jt808")


def simulate(
    vehicles: int = typer.Option(20, help="patrol vehicles (2 per village, as 草原110)"),
    hours: float = typer.Option(1.0, help="length of the simulated shift"),
    interval: float = typer.Option(10.0, help="seconds between fixes"),
    protocol: str = typer.Option(
        "osmand", help="osmand (HTTP to the server), jt808 (TCP terminals) or batch (direct)"
    ),
    speedup: float = typer.Option(0.0, help="pace against the simulated clock; 0 = flat out"),
    area: str = typer.Option("", help="only villages under this NBS code prefix, e.g. 152502"),
    seed: int = typer.Option(110, help="random seed (same seed, same fleet)"),
    host: str | None = typer.Option(None, help="protocol server host (default from settings)"),
    port: int | None = typer.Option(None, help="protocol server port (default from settings)"),
) -> None:
    """Simulate 草原110-style patrols inside the villages and send them.

    With ``--protocol jt808`` each vehicle gets a terminal phone ``14`` + its zero-padded device
    id (``api.protocols.jt808.fleet``), registers, authenticates and sends 0x0200 (paced) or
    0x0704 batches (flat out) to the JT/T 808 server.
    """
    if protocol not in PROTOCOLS:
        raise typer.BadParameter(f"choose one of {', '.join(PROTOCOLS)}", param_hint="--protocol")
    settings, url = settings_and_url()
    now = int(time.time() * 1e6)
    live = speedup == 1.0  # real time: the shift starts now and each fix goes out on time
    end_us = now + int(hours * 3600e6) if live else now

    async def go() -> sim.SendReport:
        async with connect(url) as conn:
            fleet = await sim.load_fleet(conn, vehicles, area_prefix=area)
            tracks = sim.fleet_tracks(
                fleet, hours=hours, interval_s=interval, end_us=end_us, seed=seed
            )
            keys = await sim.register_fleet(conn, fleet, tracks.gcj02)
            with cli_progress(is_tty()) as progress:
                if protocol == "batch":
                    return await sim.send_batch(
                        conn, settings, sim.as_batch(tracks, fleet.identifiers), progress=progress
                    )
                if protocol == "jt808":
                    return await send_jt808(
                        tracks,
                        await assign_phones(conn, fleet.identifiers),
                        host=host or settings.jt808.host,
                        port=port or settings.jt808.port,
                        speedup=speedup,
                        progress=progress,
                    )
                return await sim.send_osmand(
                    tracks,
                    fleet.identifiers,
                    host=host or settings.osmand.host,
                    port=port or settings.osmand.port,
                    speedup=speedup,
                    progress=progress,
                    keys=keys,
                )

    for line in run_async(go()).lines():
        typer.echo(line)


def replay(
    path: Path = typer.Argument(..., exists=True, dir_okay=False, help="a track CSV (or GPX…)"),
    protocol: str = typer.Option("osmand", help="osmand or batch"),
    speedup: float = typer.Option(0.0, help="pace against the file's clock; 0 = flat out"),
    speed_unit: str | None = typer.Option(None, help="CSV speed unit (the bus file: mph)"),
    keep_time: bool = typer.Option(False, help="keep the file's times (else shift to end now)"),
    move_to: str | None = typer.Option(None, help="LAT,LON: translate the track to this centre"),
    device: str | None = typer.Option(None, help="device, when the file names none"),
    host: str | None = typer.Option(None),
    port: int | None = typer.Option(None),
) -> None:
    """Replay a real track file in time order (devices registered as replay-<id>)."""
    settings, url = settings_and_url()
    parsed = trackfiles.parse_file(path, device=device, speed_unit=speed_unit)
    batch = parsed.fixes
    if len(batch) == 0:
        raise fail(f"{path.name}: no fixes could be read")
    tracks, identifiers = _replay_tracks(batch, keep_time=keep_time, move_to=move_to)

    async def go() -> sim.SendReport:
        async with connect(url) as conn:
            await conn.execute(
                "INSERT INTO device (identifier, kind, name) "
                "SELECT i, 'vehicle', 'replay ' || i FROM unnest(%s::text[]) AS u(i) "
                "ON CONFLICT (identifier) DO NOTHING",
                (identifiers,),
            )
            keys = await sim.issue_keys(conn, identifiers)
            with cli_progress(is_tty()) as progress:
                if protocol == "batch":
                    return await sim.send_batch(
                        conn, settings, sim.as_batch(tracks, identifiers), progress=progress
                    )
                return await sim.send_osmand(
                    tracks,
                    identifiers,
                    host=host or settings.osmand.host,
                    port=port or settings.osmand.port,
                    speedup=speedup,
                    progress=progress,
                    keys=keys,
                )

    typer.echo(f"{path.name}: {len(batch)} fixes of {len(identifiers)} devices")
    if parsed.errors:
        typer.echo(f"{len(parsed.errors)} unreadable lines/rows skipped")
    for line in run_async(go()).lines():
        typer.echo(line)


def _replay_tracks(
    batch: FixBatch, *, keep_time: bool, move_to: str | None
) -> tuple[FleetTracks, list[str]]:
    names, vehicle = np.unique(batch.device.astype(str), return_inverse=True)
    order = np.lexsort((batch.time_us, vehicle))
    t = batch.time_us[order]
    if not keep_time:
        t = t - t.max() + int((time.time() - 60) * 1e6)  # the last fix a minute ago
    lat, lon = batch.lat[order], batch.lon[order]
    if move_to:
        try:
            to_lat, to_lon = (float(v) for v in move_to.split(","))
        except ValueError as exc:
            raise typer.BadParameter("use LAT,LON", param_hint="--move-to") from exc
        # translate in metres so distances and speeds stay true
        lat_c, lon_c = float(np.median(lat)), float(np.median(lon))
        lon = to_lon + (lon - lon_c) * np.cos(np.radians(lat_c)) / np.cos(np.radians(to_lat))
        lat = to_lat + (lat - lat_c)
    tracks = FleetTracks(
        vehicle=vehicle[order].astype(np.int64),
        time_us=t,
        lat=lat,
        lon=lon,
        true_lat=lat,
        true_lon=lon,
        speed=batch.speed[order],
        course=batch.course[order],
        accuracy=batch.accuracy[order],
        spike=np.zeros(len(t), bool),
        gcj02=np.zeros(len(names), bool),
    )
    return tracks, [f"replay-{n}" for n in names]
