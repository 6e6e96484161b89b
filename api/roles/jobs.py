"""The worker role's periodic jobs.

``coverage`` and ``reports`` run in every worker: their claims (``FOR UPDATE SKIP LOCKED``)
share the backlog out, and a claim left by a dead worker is taken again once stale
(``CLAIM_STALE_S``; a report job: ``api.reports.jobs.STALE_S``). The others are
``exclusive`` — one worker of the cluster runs each, holding its advisory lock (``api.tasks``);
when that worker dies, another takes the job over within ``api.tasks.TAKEOVER_S``.
"""

from __future__ import annotations

from psycopg_pool import AsyncConnectionPool

from api import layout_ops
from api.auth import SYSTEM
from api.coverage.update import CoverageUpdater
from api.db.reads import Reads
from api.dispatch.escalation import DispatchTicker
from api.ingest import partitions
from api.reports.jobs import ReportWorker, cleanup
from api.settings import Settings
from api.tasks import AdvisoryLocks, Periodic

REPORT_POLL_S = 0.5  # a queued report waits at most this long for a worker


def start_jobs(
    settings: Settings,
    url: str,
    pool: AsyncConnectionPool,
    updater: CoverageUpdater,
    ticker: DispatchTicker,
    reads: Reads | None = None,
) -> Periodic:
    """Start the jobs; ``url`` is for the dedicated connection holding the job locks; reports
    read through ``reads`` (a replica, when there is one)."""
    periodic = Periodic(AdvisoryLocks(url))

    async def partitions_ahead() -> None:
        async with pool.connection() as conn:
            await partitions.ensure_ahead(
                conn, behind=1, ahead=settings.ingest.partitions_ahead_days
            )

    async def coverage_update() -> None:
        async with pool.connection() as conn:
            await updater.run(conn, max_steps=20)  # bounded; the rest next time

    async def scheduled_layouts() -> None:
        async with pool.connection() as conn:
            await layout_ops.activate_due(conn, SYSTEM)

    async def dispatch_tick() -> None:  # escalation (网格预警 → 吹哨 → 报到) and the webhook
        async with pool.connection() as conn:
            await ticker.tick(conn)

    reports = ReportWorker(pool, updater, reads)

    async def report_jobs() -> None:  # every worker builds; claims share the queue out
        await reports.run()

    async def report_cleanup() -> None:
        async with pool.connection() as conn:
            await cleanup(conn)

    periodic.start("partitions", 3600.0, partitions_ahead, exclusive=True)
    periodic.start("reports", REPORT_POLL_S, report_jobs)
    periodic.start("report_cleanup", 3600.0, report_cleanup, exclusive=True)
    periodic.start("coverage", settings.coverage.update_interval_s, coverage_update)
    periodic.start("layouts", 60.0, scheduled_layouts, exclusive=True)
    periodic.start("dispatch", settings.dispatch.tick_s, dispatch_tick, exclusive=True)
    return periodic
