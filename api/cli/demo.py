"""``gridpatrol demo load``: the Xilingol League demo data (idempotent)."""

from __future__ import annotations

import typer

from api.cli.common import connect, is_tty, run_async, settings_and_url
from api.demo import load_demo
from api.progress import cli_progress

app = typer.Typer(no_args_is_help=True)


@app.command("load", help="Load the demo data once (again with --force).")
def load(force: bool = typer.Option(False, help="reload every step")) -> None:
    _, url = settings_and_url()

    async def go() -> list[str]:
        async with connect(url) as conn:
            with cli_progress(is_tty()) as progress:
                return await load_demo(conn, force=force, progress=progress)

    for line in run_async(go()):
        typer.echo(line)
