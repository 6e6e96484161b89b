"""``gridpatrol jt808 …``: commands to connected JT/T 808 terminals, counters, registration reset.

``send``, ``show`` and ``stats`` talk to the RUNNING server's HTTP API (the terminals' TCP
connections live in that process): base URL from ``--api`` or the API settings, bearer token from
``--token``, ``GRIDPATROL_TOKEN`` or the admin token ``gridpatrol run`` keeps in the state dir.
``bind`` and ``reset`` work on the database directly (admin, like ``gridpatrol devices``) and
are audited (``jt808.bind``, ``jt808.reset``). ``bind`` is how a terminal gets its device: unless
``GRIDPATROL_JT808_MATCH_IDENTIFIER`` is on, a terminal registers only to the device bound to its
phone. ``reset`` lets a terminal that lost its auth code (or a replacement) register at once,
instead of after ``REREGISTER_QUIET_S`` of silence.

DEVICE is a device identifier, a terminal phone number (leading zeros optional) or ``#<id>``.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import typer

from api.auth import SYSTEM
from api.cli.common import connect, fail, run_async, settings_and_url
from api.cli.serve import ADMIN_TOKEN_FILE
from api.protocols.jt808 import registration
from api.settings import get_settings

app = typer.Typer(no_args_is_help=True)


def _token(token: str | None) -> str:
    if token:
        return token
    if os.environ.get("GRIDPATROL_TOKEN"):
        return os.environ["GRIDPATROL_TOKEN"]
    path = Path(get_settings().api.state_dir) / ADMIN_TOKEN_FILE
    if path.exists():
        return path.read_text().strip()
    raise fail("no token: pass --token, set GRIDPATROL_TOKEN, or run gridpatrol run once")


def _base(api: str | None) -> str:
    if api:
        return api.rstrip("/")
    settings = get_settings().api
    return f"http://{settings.host}:{settings.port}"


def _call(method: str, url: str, token: str, body: dict[str, Any] | None = None) -> Any:
    """One JSON request; HTTP errors become a one-line message and exit status 1."""
    if not url.startswith(("http://", "https://")):
        raise fail(f"not an http(s) URL: {url}")
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(  # noqa: S310 - scheme checked above
        url,
        data=data,
        method=method,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        try:
            detail = json.loads(exc.read()).get("detail", exc.reason)
        except ValueError:
            detail = exc.reason
        raise fail(f"{exc.code}: {detail}") from None
    except urllib.error.URLError as exc:
        raise fail(f"cannot reach the server at {url}: {exc.reason}") from None


async def _device_id(device: str) -> int:
    _, url = settings_and_url(start=False)
    async with connect(url) as conn:
        if device.startswith("#") and device[1:].isdigit():
            row = await (
                await conn.execute("SELECT id FROM device WHERE id = %s", (int(device[1:]),))
            ).fetchone()
        else:
            phone = registration.normalise_phone(device) if device.isdigit() else device
            row = await (
                await conn.execute(
                    "SELECT id FROM device WHERE identifier = %s OR jt808_phone = %s "
                    "ORDER BY identifier = %s DESC LIMIT 1",
                    (device, phone, device),
                )
            ).fetchone()
    if row is None:
        raise ValueError(f"no device {device}")
    return int(row[0])


def _show(command: dict[str, Any]) -> None:
    typer.echo(
        f"command {command['id']} {command['kind']} to {command['identifier']} "
        f"(serial {command['serial']}) sent {command['sent_at']}"
    )
    if command.get("answered_at"):
        typer.echo(f"  answered {command['answered_at']}: {command['result_name']}")
        typer.echo(f"  answer {json.dumps(command['answer'], ensure_ascii=False)}")
    else:
        typer.echo("  not answered yet")


@app.command("send", help="Send a text, a tracking order or a position query to a terminal.")
def send(
    device: str = typer.Argument(..., help="identifier, terminal phone, or #<device id>"),
    text: str | None = typer.Option(None, help="0x8300 text (GBK), shown and read aloud"),
    emergency: bool = typer.Option(False, help="with --text: mark it as an emergency"),
    track: int | None = typer.Option(None, help="0x8202: report every N seconds (0 stops)"),
    duration: int = typer.Option(600, help="with --track: for this many seconds"),
    query: bool = typer.Option(False, help="0x8201: ask for the current position"),
    wait: float = typer.Option(10.0, help="seconds to wait for the terminal's answer (0: don't)"),
    api: str | None = typer.Option(None, help="server base URL (default from API settings)"),
    token: str | None = typer.Option(None, help="bearer token of a dispatcher or admin"),
) -> None:
    chosen = [
        name for name, on in (("text", text), ("track", track is not None), ("query", query)) if on
    ]
    if len(chosen) != 1:
        raise typer.BadParameter("give exactly one of --text, --track, --query")
    body: dict[str, Any]
    if text is not None:
        body = {"kind": "text", "text": text, "emergency": emergency}
    elif track is not None:
        body = {"kind": "track", "interval_s": track, "duration_s": duration}
    else:
        body = {"kind": "query_position"}
    device_id = run_async(_device_id(device))
    bearer, base = _token(token), _base(api)
    command = _call("POST", f"{base}/api/v1/jt808/terminals/{device_id}/commands", bearer, body)
    deadline = time.monotonic() + wait
    while not command.get("answered_at") and time.monotonic() < deadline:
        time.sleep(0.25)
        command = _call("GET", f"{base}/api/v1/jt808/commands/{command['id']}", bearer)
    _show(command)


@app.command("show", help="Show a command and the terminal's answer.")
def show(
    command_id: int = typer.Argument(...),
    api: str | None = typer.Option(None),
    token: str | None = typer.Option(None),
) -> None:
    _show(_call("GET", f"{_base(api)}/api/v1/jt808/commands/{command_id}", _token(token)))


@app.command("stats", help="Counters of the running JT/T 808 server (admin token).")
def stats(
    api: str | None = typer.Option(None),
    token: str | None = typer.Option(None),
) -> None:
    body = _call("GET", f"{_base(api)}/api/v1/jt808/stats", _token(token))
    typer.echo(json.dumps(body, indent=2, ensure_ascii=False))


@app.command("bind", help="Map a terminal phone number to a device (device.jt808_phone).")
def bind(
    device: str = typer.Argument(..., help="identifier or #<device id>"),
    phone: str = typer.Argument(..., help="the terminal's phone number (1–20 digits)"),
) -> None:
    _, url = settings_and_url(start=False)

    async def go() -> int:
        device_id = await _device_id(device)
        async with connect(url) as conn:
            await registration.bind(conn, device_id, phone, actor=SYSTEM)
        return device_id

    device_id = run_async(go())
    typer.echo(f"device {device_id}: terminal phone {registration.normalise_phone(phone)}")


@app.command("reset", help="Forget a device's terminal registration (a new terminal may register).")
def reset(
    device: str = typer.Argument(..., help="identifier, terminal phone, or #<device id>"),
) -> None:
    _, url = settings_and_url(start=False)

    async def go() -> int:
        device_id = await _device_id(device)
        async with connect(url) as conn:
            await registration.unregister(conn, device_id, actor=SYSTEM)
        return device_id

    device_id = run_async(go())
    typer.echo(f"device {device_id}: terminal registration cleared; its auth code no longer works")
