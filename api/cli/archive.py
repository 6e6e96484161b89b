"""``gridpatrol archive``: old position days → GeoParquet (then dropped); retention deletes."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import typer

from api import archive as archiving
from api.cli.common import connect, is_tty, run_async, settings_and_url
from api.coverage.update import CoverageUpdater
from api.progress import cli_progress
from api.settings import archive_root


def archive(
    before: str | None = typer.Option(
        None, help="archive UTC days before YYYY-MM-DD (default: today − POSITION_HOT_DAYS)"
    ),
    directory: Path | None = typer.Option(
        None,
        "--dir",
        help="archive root (default: GRIDPATROL_RETENTION_ARCHIVE_DIR or var/archive)",
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="only list what would be done"),
    update_coverage: bool = typer.Option(
        False, "--update-coverage", help="bring coverage up to date first instead of refusing"
    ),
    purge: bool = typer.Option(True, help="also delete old rows of the other tables by policy"),
) -> None:
    settings, url = settings_and_url()
    policy = settings.retention
    root = directory or archive_root(settings)
    cutoff = date.fromisoformat(before) if before else archiving.default_before(policy)

    async def go() -> archiving.ArchiveReport:
        async with connect(url) as conn:
            with cli_progress(is_tty() and not dry_run) as progress:
                if update_coverage and not dry_run:
                    await CoverageUpdater(settings.coverage).run(conn, progress=progress)
                report = await archiving.archive(
                    conn, root, before=cutoff, dry_run=dry_run, progress=progress
                )
            if purge:
                report.purged = await archiving.purge(conn, policy, dry_run=dry_run)
            return report

    report = run_async(go())
    typer.echo(f"{'dry run: ' if dry_run else ''}position days before {cutoff} → {root}")
    for line in report.lines():
        typer.echo(line)
