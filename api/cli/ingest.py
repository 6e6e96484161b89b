"""``gridpatrol ingest …``: load track files, show ingest statistics."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import typer

from api import positions
from api.cli.common import connect, is_tty, run_async, settings_and_url
from api.ingest.fixes import FixBatch
from api.ingest.store import Ingestor, StoreResult
from api.progress import cli_progress
from api.protocols import trackfiles

CHUNK = 200_000


def ingest(
    target: str = typer.Argument(..., metavar="FILE|stats", help="a track file, or 'stats'"),
    device: str | None = typer.Option(None, help="device identifier (when the file names none)"),
    format: str | None = typer.Option(None, help="gpx, nmea, csv or geojson (default: detect)"),
    tz: str = typer.Option("UTC", help="zone of times without offset"),
    speed_unit: str | None = typer.Option(
        None, help="CSV/GeoJSON speed unit: m/s, km/h, knots, mph"
    ),
    crs: str | None = typer.Option(None, help="the file's coordinates are gcj02 or bd09"),
    days: float = typer.Option(7.0, help="stats: how many days back"),
) -> None:
    """Store a GPX, NMEA, CSV or GeoJSON track file (with a progress bar), or show statistics."""
    if target == "stats":
        show_stats(days)
        return
    path = Path(target)
    if not path.is_file():
        raise typer.BadParameter(f"no file {target}", param_hint="FILE")
    settings, url = settings_and_url()

    async def go() -> tuple[dict[str, int], int, str | None, str]:
        parsed = trackfiles.parse_file(
            path, format=format, device=device, tz=tz, speed_unit=speed_unit
        )
        batch = parsed.fixes
        ingestor = Ingestor(settings.ingest)
        totals: dict[str, int] = {}
        async with connect(url) as conn:
            with cli_progress(is_tty()) as progress:
                task = progress.task(f"入库 storing {path.name}", len(batch))
                chunks = [
                    batch.take(np.arange(i, min(i + CHUNK, len(batch))))
                    for i in range(0, len(batch), CHUNK)
                ]
                for k, chunk in enumerate(chunks or [FixBatch.empty()]):
                    await ingestor.prepare(conn, chunk)
                    result: StoreResult = await ingestor.store(
                        conn,
                        chunk,
                        protocol="file",
                        errors=parsed.errors if k == 0 else (),
                        source_crs=crs,
                    )
                    for key, n in result.counts().items():
                        totals[key] = totals.get(key, 0) + n
                    task.advance(len(chunk))
        return totals, len(parsed.errors), parsed.stopped_at, parsed.format

    totals, n_errors, stopped, fmt = run_async(go())
    typer.echo(f"{path.name} ({fmt}): " + ", ".join(f"{k} {v}" for k, v in totals.items() if v))
    if n_errors:
        typer.echo(f"{n_errors} unreadable lines/rows quarantined")
    if stopped:
        typer.echo(f"stopped early: {stopped}")


def show_stats(days: float) -> None:
    """Fixes stored, duplicate and rejected per reason over the last ``days``."""
    _, url = settings_and_url()

    async def go() -> dict[str, object]:
        async with connect(url) as conn:
            return await positions.ingest_stats(
                conn, since=datetime.now(UTC) - timedelta(days=days), until=None
            )

    body = run_async(go())
    totals: dict[str, int] = body["totals"]  # type: ignore[assignment]
    if not totals:
        typer.echo("no fixes in that period")
        return
    typer.echo(f"{'outcome':<24}{'fixes':>12}")
    for outcome, n in sorted(totals.items(), key=lambda kv: -kv[1]):
        typer.echo(f"{outcome:<24}{n:>12}")
    for protocol, counts in body["by_protocol"].items():  # type: ignore[attr-defined]
        typer.echo(f"  {protocol}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
