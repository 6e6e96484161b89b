"""``gridpatrol report``: the coverage report as an HTML, XLSX, PDF or CSV file."""

from __future__ import annotations

from pathlib import Path

import typer

from api import layouts
from api.cli.common import connect, fail, is_tty, run_async, settings_and_url
from api.cli.coverage import _window
from api.coverage.update import CoverageUpdater
from api.progress import cli_progress
from api.reports import FORMATS, Rendered, build
from api.reports.labels import LEVELS
from api.scope import Scope


def report(
    first: str | None = typer.Option(
        None, "--from", help="first day YYYY-MM-DD (default: 6 days before --to)"
    ),
    last: str | None = typer.Option(None, "--to", help="last day YYYY-MM-DD (default: today)"),
    level: str = typer.Option("village", help="grid, village, township or county"),
    format: str = typer.Option("html", "--format", "-f", help="html, xlsx, pdf or csv"),
    layout: int | None = typer.Option(None, help="layout id (default: the active patrol one)"),
    area: str = typer.Option("", help="only this area code (e.g. 152502 for a county)"),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="output file (default: a dated name in this directory)"
    ),
) -> None:
    """Write a coverage report: colour grid map, tables per level, charts, vehicle ranking."""
    if format not in FORMATS:
        raise fail(f"--format must be one of {', '.join(FORMATS)}")
    if level not in LEVELS:
        raise fail(f"--level must be one of {', '.join(LEVELS)}")
    settings, url = settings_and_url()

    async def go() -> Rendered:
        async with connect(url) as conn:
            layout_id = layout or await layouts.active_layout(conn)
            if layout_id is None:
                raise ValueError("no active layout; give --layout")
            scope = Scope.parse([area]) if area else Scope.everything()
            window = _window(first, last, settings.coverage.max_window_days)
            updater = CoverageUpdater(settings.coverage)
            with cli_progress(is_tty()) as progress:
                return await build(
                    conn,
                    updater,
                    scope,
                    layout_id,
                    window,
                    level=level,
                    fmt=format,
                    progress=progress,
                )

    rendered = run_async(go())
    target = out or Path(rendered.filename)
    target.write_bytes(rendered.content)
    if rendered.note:
        typer.echo(f"note: {rendered.note}")
    typer.echo(f"{target} ({len(rendered.content):,} bytes, {format})")
