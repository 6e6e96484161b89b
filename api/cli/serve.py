"""``gridpatrol serve`` / ``gridpatrol run``: bring everything up, stop it cleanly on Ctrl-C."""

from __future__ import annotations

import logging
import os
from enum import StrEnum
from pathlib import Path

import typer

from api import users as users_service
from api.cli.common import connect, fail, is_tty, run_async
from api.db import ClusterError, cluster_for, database_url, migrate
from api.demo import load_demo
from api.progress import cli_progress
from api.roles.process import serve_one
from api.roles.supervisor import Supervisor
from api.settings import Settings, get_settings

ADMIN_TOKEN_FILE = "admin.token"  # noqa: S105 - a file name


def _prepare(settings: Settings) -> tuple[str, bool]:
    """Start the embedded cluster if needed and migrate; returns (url, we_started_it)."""
    started = False
    try:
        if settings.db.embedded:
            cluster = cluster_for(settings)
            started = not cluster.running()
        url = database_url(settings, start=True)
    except ClusterError as exc:
        raise fail(str(exc)) from None
    migrate.upgrade(url)
    return url, started


class Role(StrEnum):
    """What ``gridpatrol serve`` runs in this process (``api.roles``)."""

    all = "all"
    api = "api"
    ingest = "ingest"
    worker = "worker"
    single = "single"


def serve(
    host: str | None = typer.Option(None, help="listen address (default GRIDPATROL_API_HOST)"),
    port: int | None = typer.Option(None, help="HTTP port (default GRIDPATROL_API_PORT)"),
    role: Role = typer.Option(
        Role.all,
        help="all: a supervisor running api, ingest (GRIDPATROL_ROLES_INGEST_PROCESSES) and "
        "worker processes; api: HTTP only; ingest: OsmAnd + JT/T 808 listeners and the writer; "
        "worker: coverage, dispatch and the other periodic jobs; single: everything in this "
        "one process",
    ),
) -> None:
    settings = get_settings()
    if host:
        settings.api.host = host
    if port:
        settings.api.port = port
    if role is not Role.all:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    url, started = _prepare(settings)
    try:
        if role is Role.all:
            raise typer.Exit(_supervise(settings, url, host=host, port=port))
        serve_one(settings, url, role.value)
    except KeyboardInterrupt:
        pass
    finally:
        if started:
            cluster_for(settings).stop()


def _supervise(
    settings: Settings, url: str, *, host: str | None, port: int | None, demo: bool = False
) -> int:
    """Run the roles as child processes until Ctrl-C (``api.roles.supervisor``); with ``demo``
    the living demo's fleet too (``api.demofleet``)."""
    api_args = [*(["--host", host] if host else []), *(["--port", str(port)] if port else [])]
    env = {**os.environ, "DATABASE_URL": url}
    extra = [("demo", ["-m", "api.demofleet"])] if demo else []
    return Supervisor(settings.roles, env, api_args=api_args, extra=extra).run()


def _admin_token(settings: Settings, url: str) -> tuple[str | None, Path | None]:
    """The first admin's token when this start created it (else None), and the 0600 file that
    keeps it (None when there is none). A token is printed only when created, never again."""
    path = Path(settings.api.state_dir) / ADMIN_TOKEN_FILE

    async def go() -> users_service.NewUser | None:
        async with connect(url) as conn:
            return await users_service.ensure_admin(conn)

    new = run_async(go())
    if new is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600, exist_ok=True)
        path.chmod(0o600)  # before the secret goes in, whatever the umask
        path.write_text(new.token + "\n")
        return new.token, path
    return None, path if path.exists() else None


def _admin_token_lines(base: str, token: str | None, kept: Path | None) -> list[str]:
    """What start-up says about the admin token: the token itself only when just created."""
    if token is not None:
        return [
            f"  admin token {token}   (shown once; kept in {kept}, mode 0600)",
            f"  sign in     {base}/?token={token}   (the front door, signed in as admin)",
        ]
    if kept is not None:
        return [
            f"  admin token kept in {kept} (mode 0600; not shown again)",
            f"  sign in     {base}/?token=<the token in {kept}>",
        ]
    return [f"  sign in     {base}/?token=<your token>  (gridpatrol users token admin)"]


def run(
    demo: bool = typer.Option(True, help="load the demo data when missing"),
) -> None:
    settings = get_settings()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    url, started = _prepare(settings)
    try:
        if demo:

            async def load() -> list[str]:
                async with connect(url) as conn:
                    with cli_progress(is_tty()) as progress:
                        return await load_demo(conn, progress=progress)

            for line in run_async(load()):
                typer.echo(line)
        token, kept = _admin_token(settings, url)
        base = f"http://{settings.api.host}:{settings.api.port}"
        typer.echo("")
        typer.echo(f"GridPatrol at {base}")
        typer.echo(f"  front door  {base}/   (sign in; every page from there)")
        typer.echo(f"  health      {base}/healthz")
        typer.echo(f"  API docs    {base}/docs")
        if settings.osmand.enabled:
            osmand = f"http://{settings.osmand.host}:{settings.osmand.port}"
            typer.echo(f"  OsmAnd      {osmand}/?id=<device>&key=<key>&lat=…&lon=…  (Traccar)")
        if settings.jt808.enabled:
            jt808 = f"{settings.jt808.host}:{settings.jt808.port}"
            typer.echo(f"  JT/T 808    tcp://{jt808}  (terminals, 2013 and 2019)")
        for line in _admin_token_lines(base, token, kept):
            typer.echo(line)
        roles = settings.roles
        typer.echo(
            f"  processes   api, {roles.ingest_processes} ingest, {roles.worker_processes} "
            "worker  (GRIDPATROL_ROLES_INGEST_PROCESSES, _WORKER_PROCESSES)"
        )
        live_demo = demo and settings.demo.vehicles > 0
        if live_demo:
            typer.echo(
                f"  demo fleet  {settings.demo.vehicles} vehicles reporting live, the past "
                f"{settings.demo.history_days} days stored once  (GRIDPATROL_DEMO_VEHICLES=0: off)"
            )
        typer.echo("Ctrl-C stops the server.")
        status = _supervise(settings, url, host=None, port=None, demo=live_demo)
        if status:
            raise typer.Exit(status)
    except KeyboardInterrupt:
        pass
    finally:
        if started:
            cluster_for(settings).stop()
            typer.echo("database stopped")


SECRET_KEYS = frozenset({"url", "tianditu_key", "webhook_url"})


def show_settings() -> None:
    """Every settings group with its environment prefix; secrets (URLs, keys) hidden."""
    settings = get_settings()
    for group, values in vars(settings).items():
        prefix = values.model_config.get("env_prefix", "")
        typer.echo(f"[{group}]  {prefix}…")
        for key, value in values.model_dump(mode="json").items():
            shown = "***" if key in SECRET_KEYS and value else value
            typer.echo(f"  {key} = {shown}")
    typer.echo(f"cwd = {Path.cwd()}")
