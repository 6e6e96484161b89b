"""``gridpatrol coverage backfill``: the engines wired to settings, a database and Dask."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Any

from api.cli.common import connect, is_tty, run_async, settings_and_url
from api.coverage import backfill as engines
from api.coverage.backfill import BackfillReport, backfill_dask, backfill_db
from api.progress import cli_progress
from api.settings import archive_root


@contextmanager
def dask_client(scheduler: str | None, workers: int) -> Iterator[Any]:
    """A client of the given scheduler, or of a local cluster of ``workers`` processes (closed
    on exit). Dask is imported only here."""
    from dask.distributed import Client, LocalCluster

    if scheduler:
        with Client(scheduler) as client:
            yield client
        return
    with (
        LocalCluster(n_workers=workers, threads_per_worker=1, processes=True) as cluster,
        Client(cluster) as client,
    ):
        yield client


def run_backfill(
    first: date, last: date, *, engine: str, scheduler: str | None, workers: int, export_live: bool
) -> BackfillReport:
    settings, url = settings_and_url()
    root = archive_root(settings)
    if last < first:
        raise ValueError("--to is before --from")

    async def on_db() -> BackfillReport:
        async with connect(url) as conn:
            with cli_progress(is_tty()) as progress:
                return await backfill_db(
                    conn, settings.coverage, first, last, archive_root=root, progress=progress
                )

    async def on_dask(client: Any, snapshot: Path | None) -> BackfillReport:
        async with connect(url) as conn:
            if snapshot is not None:
                await engines.export_live(conn, first, last, snapshot)
            roots = [root] if snapshot is None else [root, snapshot]
            with cli_progress(is_tty()) as progress:
                return await backfill_dask(
                    conn, client, settings.coverage, first, last, roots=roots, progress=progress
                )

    if engine == "db":
        return run_async(on_db())
    settings.api.state_dir.mkdir(parents=True, exist_ok=True)
    snapshot = Path(tempfile.mkdtemp(prefix="backfill-", dir=settings.api.state_dir))
    try:
        with dask_client(scheduler, workers) as client:
            return run_async(on_dask(client, snapshot if export_live else None))
    finally:
        shutil.rmtree(snapshot, ignore_errors=True)
