"""Report jobs: a report is built once by a worker, shown with its progress, and kept.

A request (``ReportSpec``: effective scope, layout, window, level, format) is keyed by its
*cache key*, a hash of the spec and the *data version* of what the report reads — the coverage
updater's writes for those days (``device_day``), work still pending for them
(``coverage_dirty``), the vehicles (``device``: ranking), the window's incidents (response
times), the layout and the ranking settings. Asking again over unchanged data returns the
finished job at once; when data changes, the key changes and the report is built anew.

Jobs are built by the worker role (``ReportWorker``, polled by ``api.roles.jobs``): a worker
claims the oldest queued job with ``FOR UPDATE SKIP LOCKED``, writes its progress and a
heartbeat to the row while it builds (gathering on the event loop, rendering in a thread), and
stores the file in the row. A job whose worker died (no heartbeat for ``STALE_S``) is taken
again, at most ``MAX_ATTEMPTS`` times. The API process only inserts rows and reads them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import socket
from dataclasses import dataclass
from datetime import date
from typing import Any

import psycopg
from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from api import reports
from api.coverage import materialize
from api.coverage.metrics import Window
from api.coverage.update import CoverageUpdater
from api.db.reads import Reads
from api.errors import NotFound
from api.layouts import get_layout
from api.reports.render import Rendered
from api.scope import Scope
from api.settings import CoverageSettings

log = logging.getLogger("gridpatrol.reports")

STALE_S = 120.0  # no heartbeat this long: the worker died, the job is free again
MAX_ATTEMPTS = 3
HEARTBEAT_S = 1.0
KEEP_DAYS = 7  # finished files are kept this long (or until their data changes)
FAILED_KEEP_H = 1  # a failed job is retried by asking again after this long
KEY_VERSION = "1"  # bump when the renderers change what the same data gives


@dataclass(frozen=True)
class ReportSpec:
    """What a report shows: the reader's scope narrowed to the area, and the choices."""

    scope: Scope
    layout_id: int
    first: date
    last: date
    level: str
    fmt: str
    area: str | None = None

    def params(self) -> dict[str, Any]:
        return {
            "scope": self.scope.codes,
            "layout": self.layout_id,
            "first": self.first.isoformat(),
            "last": self.last.isoformat(),
            "level": self.level,
            "format": self.fmt,
            "area": self.area,
        }

    @classmethod
    def of(cls, params: dict[str, Any]) -> ReportSpec:
        return cls(
            scope=Scope.parse(params["scope"]),
            layout_id=int(params["layout"]),
            first=date.fromisoformat(params["first"]),
            last=date.fromisoformat(params["last"]),
            level=str(params["level"]),
            fmt=str(params["format"]),
            area=params.get("area"),
        )

    @property
    def window(self) -> Window:
        return Window(self.first, self.last)


VERSION_SQL = """
SELECT
  (SELECT concat_ws('/', count(*), max(updated_at)) FROM device_day
    WHERE day BETWEEN %(first)s AND %(last)s),
  (SELECT concat_ws('/', count(*), max(marked_at)) FROM coverage_dirty
    WHERE day BETWEEN %(first)s AND %(last)s),
  (SELECT concat_ws('/', count(*), max(updated_at)) FROM device WHERE kind = 'vehicle'),
  (SELECT concat_ws('/', count(*), max(greatest(created_at, dispatched_at, accepted_at,
                                                arrived_at, cleared_at, cancelled_at)))
     FROM incident WHERE created_at >= %(first)s::date - 1 AND created_at < %(last)s::date + 2),
  (SELECT concat_ws('/', status, version, activated_at, retired_at,
                    CASE WHEN status = 'draft' THEN clock_timestamp() END)
     FROM grid_layout WHERE id = %(layout)s)
"""


async def data_version(
    conn: AsyncConnection[Any], spec: ReportSpec, settings: CoverageSettings
) -> str:
    """What the report's data looks like now, as a short string (see the module's doc).

    A draft layout is never cached: its grids change with every edit."""
    row = await (
        await conn.execute(
            VERSION_SQL, {"first": spec.first, "last": spec.last, "layout": spec.layout_id}
        )
    ).fetchone()
    rules = settings.model_dump_json(
        include={
            "award_share",
            "flag_share",
            "in_service",
            "in_service_min_days",
            "rank_weights",
            "no_patrol_km",
            "blind_spot_days",
            "checkpoint_radius_m",
        }
    )
    return "|".join([KEY_VERSION, *(str(v) for v in (row or ())), rules])


def cache_key(spec: ReportSpec, version: str) -> str:
    body = json.dumps([spec.params(), version], sort_keys=True, ensure_ascii=True)
    return hashlib.sha256(body.encode()).hexdigest()


JOB_COLUMNS = (
    "id, params, status, progress, step, error, requested_at, started_at, finished_at, "
    "media_type, filename, note, size_bytes"
)


def view(row: dict[str, Any]) -> dict[str, Any]:
    """A job as the API shows it: no file bytes, a link once it is done."""
    params = row["params"]
    done = row["status"] == "done"
    return {
        "id": row["id"],
        "status": row["status"],
        "progress": round(float(row["progress"]), 3),
        "step": row["step"],
        "error": row["error"],
        "area": params.get("area"),
        "layout": params["layout"],
        "first": params["first"],
        "last": params["last"],
        "level": params["level"],
        "format": params["format"],
        "requested_at": row["requested_at"],
        "finished_at": row["finished_at"],
        "filename": row["filename"],
        "size_bytes": row["size_bytes"],
        "note": row["note"],
        "url": f"/api/v1/reports/{row['id']}/file" if done else None,
    }


async def submit(
    conn: AsyncConnection[Any],
    spec: ReportSpec,
    settings: CoverageSettings,
    *,
    user_id: int | None,
) -> tuple[dict[str, Any], bool]:
    """The job for ``spec`` over today's data: an existing one (cached, queued or running) or
    a new queued one. A failed job is queued again when asked again after ``FAILED_KEEP_H``.
    Returns (the job's row, True when it was already there)."""
    key = cache_key(spec, await data_version(conn, spec, settings))
    async with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "INSERT INTO report_job (cache_key, params, scope, format) VALUES (%s, %s, %s, %s) "  # noqa: S608 - a constant
            f"ON CONFLICT (cache_key) DO NOTHING RETURNING {JOB_COLUMNS}",
            (key, json.dumps(spec.params()), spec.scope.codes, spec.fmt),
        )
        row = await cur.fetchone()
        existed = row is None
        if row is None:
            await cur.execute(
                f"UPDATE report_job SET status = 'queued', progress = 0, step = NULL, "  # noqa: S608
                f"error = NULL, attempts = 0, requested_at = now() WHERE cache_key = %s "
                f"AND status = 'failed' AND finished_at < now() - make_interval(hours => %s) "
                f"RETURNING {JOB_COLUMNS}",
                (key, FAILED_KEEP_H),
            )
            row = await cur.fetchone()
            existed = row is None
        if row is None:
            await cur.execute(
                f"SELECT {JOB_COLUMNS} FROM report_job WHERE cache_key = %s",  # noqa: S608
                (key,),
            )
            row = await cur.fetchone()
        assert row is not None  # noqa: S101 - inserted, re-queued or there
        if user_id is not None:
            await cur.execute(
                "INSERT INTO report_request (user_id, job_id) VALUES (%s, %s) "
                "ON CONFLICT (user_id, job_id) DO UPDATE SET requested_at = now()",
                (user_id, row["id"]),
            )
    return row, existed


async def _row(
    conn: AsyncConnection[Any], job_id: int, scope: Scope, columns: str
) -> dict[str, Any]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"SELECT {columns}, scope AS job_scope FROM report_job WHERE id = %s",  # noqa: S608
            (job_id,),
        )
        row = await cur.fetchone()
    # a job of a wider scope than the reader's is someone else's: as if it did not exist
    if row is None or not scope.contains(Scope.parse(row.pop("job_scope"))):
        raise NotFound(f"no report job {job_id} in your scope")
    return row


async def job(conn: AsyncConnection[Any], job_id: int, scope: Scope) -> dict[str, Any]:
    """A job's row (without its file); 404 when missing or wider than ``scope``."""
    return await _row(conn, job_id, scope, JOB_COLUMNS)


async def job_file(conn: AsyncConnection[Any], job_id: int, scope: Scope) -> Rendered | None:
    """A finished job's file; ``None`` while it is not done; 404 as ``job``."""
    row = await _row(conn, job_id, scope, "status, content, media_type, filename, note")
    if row["status"] != "done":
        return None
    return Rendered(bytes(row["content"]), row["media_type"], row["filename"], row["note"])


async def recent(
    conn: AsyncConnection[Any], user_id: int, scope: Scope, limit: int = 20
) -> list[dict[str, Any]]:
    """The jobs this user asked for, newest first (still inside their scope)."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"SELECT {', '.join('j.' + c.strip() for c in JOB_COLUMNS.split(','))}, "  # noqa: S608
            "j.scope AS job_scope FROM report_request r JOIN report_job j ON j.id = r.job_id "
            "WHERE r.user_id = %s ORDER BY r.requested_at DESC LIMIT %s",
            (user_id, limit),
        )
        rows = await cur.fetchall()
    return [r for r in rows if scope.contains(Scope.parse(r.pop("job_scope")))]


async def wait_done(
    pool: AsyncConnectionPool, job_id: int, scope: Scope, timeout_s: float
) -> dict[str, Any]:
    """Poll a job until it is done or failed, at most ``timeout_s``; its last row."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    delay = 0.1
    while True:
        async with pool.connection() as conn:
            row = await job(conn, job_id, scope)
        if row["status"] in ("done", "failed") or loop.time() >= deadline:
            return row
        await asyncio.sleep(min(delay, max(deadline - loop.time(), 0.01)))
        delay = min(delay * 1.5, 1.0)


class JobProgress:
    """``api.progress.Progress`` for a job: the share done of the build's two tasks (gather,
    render) and the current task's label, read by the heartbeat."""

    TASKS = 2

    def __init__(self) -> None:
        self.finished = 0
        self.share = 0.0
        self.label = "排队 queued"

    def task(self, label: str, total: float | None) -> JobProgress._Task:
        if self.label != "排队 queued":
            self.finished = min(self.finished + 1, self.TASKS - 1)
        self.label, self.share = label, 0.0
        return JobProgress._Task(self, float(total or 1))

    @property
    def fraction(self) -> float:
        return min((self.finished + self.share) / self.TASKS, 0.99)

    class _Task:
        def __init__(self, owner: JobProgress, total: float) -> None:
            self.owner, self.total, self.done = owner, total, 0.0

        def advance(self, n: float = 1) -> None:
            self.done += n
            self.owner.share = min(self.done / self.total, 1.0)


CLAIM = """
UPDATE report_job SET status = 'running', worker = %(worker)s, started_at = now(),
       heartbeat_at = now(), attempts = attempts + 1, progress = 0, step = NULL
 WHERE id = (SELECT id FROM report_job
              WHERE status = 'queued'
                 OR (status = 'running' AND heartbeat_at < now() - make_interval(secs => %(stale)s))
              ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)
RETURNING id, params, attempts
"""


class ReportWorker:
    """Builds queued report jobs (one at a time per worker process)."""

    def __init__(
        self, pool: AsyncConnectionPool, updater: CoverageUpdater, reads: Reads | None = None
    ) -> None:
        self.pool, self.updater = pool, updater
        self.reads = reads or Reads(pool)
        self.name = f"{socket.gethostname()}:{os.getpid()}"

    async def run(self, max_jobs: int = 5) -> int:
        """Build queued jobs until none is left (at most ``max_jobs``); returns how many."""
        built = 0
        while built < max_jobs and await self.run_one():
            built += 1
        return built

    async def run_one(self) -> bool:
        async with self.pool.connection() as conn:
            claimed = await (
                await conn.execute(CLAIM, {"worker": self.name, "stale": STALE_S})
            ).fetchone()
        if claimed is None:
            return False
        job_id, params, attempts = claimed
        if attempts > MAX_ATTEMPTS:
            await self._finish(job_id, error=f"放弃 gave up: {MAX_ATTEMPTS} workers died on it")
            return True
        await self._build(job_id, ReportSpec.of(params))
        return True

    async def _build(self, job_id: int, spec: ReportSpec) -> None:
        progress = JobProgress()
        beat = asyncio.create_task(self._heartbeat(job_id, progress))
        try:
            async with self.pool.connection() as conn:
                # what the report needs written (grid_visit days of a layout not kept current)
                # is written on the primary; the report is read where reads go (a replica that
                # has replayed it, api.db.reads)
                await get_layout(conn, spec.scope, spec.layout_id)  # 404 outside the scope
                await materialize.ensure(
                    conn, self.updater, spec.layout_id, spec.window.first, spec.window.last
                )
                try:
                    async with self.reads.connection(after=conn) as rconn:
                        rendered = await self._render(rconn, spec, progress)
                except psycopg.errors.ReadOnlySqlTransaction:
                    # a day that came meanwhile wanted building: the primary builds it all
                    rendered = await self._render(conn, spec, progress)
        except Exception as exc:  # noqa: BLE001 - any failure ends the job with its reason
            log.warning("report job %d failed: %r", job_id, exc)
            await self._finish(job_id, error=str(exc)[:500] or type(exc).__name__, beat=beat)
            return
        await self._finish(job_id, rendered=rendered, beat=beat)

    async def _render(
        self, conn: AsyncConnection[Any], spec: ReportSpec, progress: JobProgress
    ) -> Rendered:
        return await reports.build(
            conn,
            self.updater,
            spec.scope,
            spec.layout_id,
            spec.window,
            level=spec.level,
            fmt=spec.fmt,
            progress=progress,
        )

    async def _heartbeat(self, job_id: int, progress: JobProgress) -> None:
        while True:
            with contextlib.suppress(Exception):
                async with self.pool.connection() as conn:
                    await conn.execute(
                        "UPDATE report_job SET progress = %s, step = %s, heartbeat_at = now() "
                        "WHERE id = %s AND status = 'running'",
                        (progress.fraction, progress.label, job_id),
                    )
            await asyncio.sleep(HEARTBEAT_S)

    async def _finish(
        self,
        job_id: int,
        *,
        rendered: Rendered | None = None,
        error: str | None = None,
        beat: asyncio.Task[None] | None = None,
    ) -> None:
        if beat is not None:
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beat
        async with self.pool.connection() as conn:
            if rendered is not None:
                await conn.execute(
                    "UPDATE report_job SET status = 'done', progress = 1, step = NULL, "
                    "content = %s, media_type = %s, filename = %s, note = %s, size_bytes = %s, "
                    "finished_at = now() WHERE id = %s",
                    (
                        rendered.content,
                        rendered.media_type,
                        rendered.filename,
                        rendered.note,
                        len(rendered.content),
                        job_id,
                    ),
                )
            else:
                await conn.execute(
                    "UPDATE report_job SET status = 'failed', error = %s, finished_at = now() "
                    "WHERE id = %s",
                    (error, job_id),
                )


async def cleanup(conn: AsyncConnection[Any], keep_days: int = KEEP_DAYS) -> int:
    """Drop finished jobs older than ``keep_days`` (their files with them); how many."""
    cur = await conn.execute(
        "DELETE FROM report_job WHERE status IN ('done', 'failed') "
        "AND finished_at < now() - make_interval(days => %s)",
        (keep_days,),
    )
    return cur.rowcount
