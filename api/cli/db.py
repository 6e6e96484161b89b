"""``gridpatrol db …``: start, stop and inspect the embedded cluster; apply migrations."""

from __future__ import annotations

import os

import typer

from api.cli.common import fail, settings_and_url
from api.db import ClusterError, cluster_for, migrate
from api.settings import get_settings

app = typer.Typer(no_args_is_help=True)


@app.command("start", help="Create (first time) and start the embedded cluster.")
def start() -> None:
    settings = get_settings()
    if settings.db.url:
        raise fail("DATABASE_URL is set: no embedded cluster is managed")
    cluster = cluster_for(settings)
    try:
        created = cluster.init()
        cluster.start()
    except ClusterError as exc:
        raise fail(str(exc)) from None
    typer.echo(
        f"{'created and ' if created else ''}started {cluster.data_dir} on port {cluster.port}"
    )


@app.command("stop", help="Stop the embedded cluster.")
def stop() -> None:
    settings = get_settings()
    if settings.db.url:
        raise fail("DATABASE_URL is set: no embedded cluster is managed")
    try:
        stopped = cluster_for(settings).stop()
    except ClusterError as exc:
        raise fail(str(exc)) from None
    typer.echo("stopped" if stopped else "not running")


@app.command("status", help="Say whether the cluster runs and where (exit 3 when stopped).")
def status() -> None:
    settings = get_settings()
    if settings.db.url:
        typer.echo("external database (DATABASE_URL)")
        return
    cluster = cluster_for(settings)
    if not cluster.initialized:
        typer.echo(f"no cluster in {cluster.data_dir}")
        raise typer.Exit(3)
    if cluster.running():
        typer.echo(f"running: {cluster.data_dir} on port {cluster.running_port()}")
        return
    typer.echo(f"stopped: {cluster.data_dir}")
    raise typer.Exit(3)


@app.command("url", help="Print the database URL (contains the password).")
def url() -> None:
    _, database = settings_and_url(start=False)
    typer.echo(database)


@app.command("psql", help="Open psql on the database.")
def psql() -> None:
    _, database = settings_and_url(start=True)
    os.execvp("psql", ["psql", database])  # noqa: S606 - replaces this process with psql


@app.command("migrate", help="Apply migrations up to REVISION (default head).")
def upgrade(revision: str = typer.Argument("head")) -> None:
    _, database = settings_and_url(start=True)
    migrate.upgrade(database, revision)
    typer.echo(f"schema at {migrate.current_revision(database)}")


@app.command("downgrade", help="Revert migrations down to REVISION (base = empty).")
def downgrade(revision: str = typer.Argument(...)) -> None:
    _, database = settings_and_url(start=True)
    migrate.downgrade(database, revision)
    typer.echo(f"schema at {migrate.current_revision(database)}")
