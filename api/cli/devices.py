"""``gridpatrol devices …``: register devices one by one or from CSV, list them."""

from __future__ import annotations

from pathlib import Path

import typer

from api import devices as registry
from api.auth import SYSTEM
from api.cli.common import connect, run_async, settings_and_url
from api.scope import Scope

app = typer.Typer(no_args_is_help=True)


@app.command("add", help="Register a device and print its token.")
def add(
    identifier: str = typer.Argument(..., help="IMEI, terminal phone number or client id"),
    kind: str = typer.Option("vehicle", help="vehicle, handheld or phone"),
    plate: str | None = typer.Option(None, help="vehicle plate, e.g. 蒙H·12345"),
    name: str | None = typer.Option(None),
    village: str | None = typer.Option(None, help="home village NBS code"),
    grid: list[str] = typer.Option([], help="assigned grid code; repeat for several"),
    crs: str = typer.Option("wgs84", help="what the terminal speaks: wgs84, cgcs2000, gcj02, bd09"),
) -> None:
    _, url = settings_and_url()
    data = registry.DeviceIn.model_validate(
        {
            "identifier": identifier,
            "kind": kind,
            "plate": plate,
            "name": name,
            "home_village": village,
            "assigned_grids": grid,
            "crs": crs,
        }
    )

    async def go() -> tuple[dict[str, object], str]:
        async with connect(url) as conn:
            return await registry.create_device(conn, SYSTEM, data)

    row, token = run_async(go())
    typer.echo(f"device {row['id']} {identifier} ({kind}, {crs})")
    typer.echo(f"token: {token}")
    typer.echo(f"OsmAnd key: {row['osmand_key']}  (tracking URL: …/?id={identifier}&key=…)")


@app.command("import", help="Register devices from a CSV file (all or nothing).")
def import_csv(path: Path = typer.Argument(..., exists=True, dir_okay=False)) -> None:
    _, url = settings_and_url()

    parsed = registry.parse_device_csv(path.read_text(encoding="utf-8-sig"))

    async def go() -> list[tuple[dict[str, object], str]]:
        async with connect(url) as conn:
            return await registry.import_devices(conn, SYSTEM, parsed)

    created = run_async(go())
    for row, token in created:
        typer.echo(f"{row['id']}\t{row['identifier']}\t{token}\t{row['osmand_key']}")
    typer.echo(f"registered {len(created)} devices")


@app.command("osmand-key", help="Issue OsmAnd keys (shown once): named devices, or --legacy.")
def osmand_key(
    identifiers: list[str] = typer.Argument(None, help="device identifiers"),
    legacy: bool = typer.Option(False, "--legacy", help="every device that has no key yet"),
) -> None:
    _, url = settings_and_url()

    async def go() -> list[tuple[str, str]]:
        async with connect(url) as conn:
            if legacy:
                rows = await registry.legacy_devices(conn, Scope.everything())
            else:
                found = await (
                    await conn.execute(
                        "SELECT id, identifier FROM device WHERE identifier = ANY(%s)",
                        (list(identifiers or []),),
                    )
                ).fetchall()
                rows = [{"id": r[0], "identifier": r[1]} for r in found]
                missing = sorted(set(identifiers or []) - {r["identifier"] for r in rows})
                if missing:
                    raise typer.BadParameter(f"no device {', '.join(missing)}")
            return [
                (r["identifier"], await registry.issue_osmand_key(conn, SYSTEM, r["id"]))
                for r in rows
            ]

    issued = run_async(go())
    for identifier, key in issued:
        typer.echo(f"{identifier}\t{key}")
    typer.echo(f"issued {len(issued)} OsmAnd keys")


@app.command("list", help="List devices (id, identifier, plate, village, CRS, enabled).")
def list_devices(
    village: str | None = typer.Option(None, help="village or area code prefix"),
) -> None:
    _, url = settings_and_url()

    async def go() -> list[dict[str, object]]:
        async with connect(url) as conn:
            return await registry.list_devices(conn, Scope.everything(), village=village)

    for d in run_async(go()):
        state = "" if d["enabled"] else " (disabled)"
        typer.echo(
            f"{d['id']:>6}  {d['identifier']:<20} {d['plate'] or '-':<12} "
            f"{d['home_village'] or '-':<12} {d['crs']}{state}"
        )
