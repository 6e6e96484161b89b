"""Keep ``cell_visit`` (and its per-layout materialisation) up to date, incrementally.

Ingest marks (device, local day) pairs dirty. An update step claims a batch of marks in a short
transaction of its own (``FOR UPDATE SKIP LOCKED``, so several workers never collide, and marks
an ingest transaction is writing are left for the next step), recomputes those device-days
whole from ``position`` — including the fixes within ``max_gap`` either side of the day, so
segments across midnight are counted — and replaces their rows in one transaction, which ends
by releasing its claims. Ingest never waits on the long transaction: a fix arriving for a
claimed mark only sets ``remarked``, and a remarked mark outlives the release, so its
device-day is recomputed again. A claim older than ``claim_stale_s`` (a worker that died) is
taken again. Recomputing whole device-days makes the update idempotent and independent of the
order in which fixes arrived. The active layouts' ``grid_visit`` rows of those device-days are
rebuilt in the same transaction; other layouts' materialised days are marked stale.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from psycopg import AsyncConnection, sql
from psycopg.pq import TransactionStatus

from api.coverage.rows import read_fixes, write_cell_visits, write_grid_days
from api.db.copyio import read_grouped
from api.layouts import layout_cells
from api.progress import NullProgress, Progress
from api.settings import CoverageSettings
from gis.coverage import CellVisits, cell_visits
from gis.units import PG_EPOCH_US, UNIX_EPOCH_DAY, day_start_us
from gis.visits import GridDays, LayoutIndex, grid_days

PIPELINE = 2  # chunks in the engine at once (the machine this was sized on has 2 cores)
# A mark no one holds, or held by a worker that has not finished within the stale limit (dead).
CLAIMABLE = sql.SQL("(claimed_at IS NULL OR claimed_at < now() - make_interval(secs => %s))")
CLAIM = sql.SQL(
    """
UPDATE coverage_dirty d SET claimed_at = statement_timestamp(), remarked = false
  FROM (SELECT device_id, day FROM coverage_dirty WHERE {}
         ORDER BY day, device_id LIMIT %s FOR UPDATE SKIP LOCKED) c
 WHERE d.device_id = c.device_id AND d.day = c.day
RETURNING d.device_id, (d.day - date '1970-01-01')::int, d.claimed_at
"""
).format(CLAIMABLE)
BACKLOG = sql.SQL("SELECT count(*) FROM coverage_dirty WHERE {}").format(CLAIMABLE)


def _chunks(devices: list[int], size: int) -> list[list[int]]:
    n = max(1, -(-len(devices) // size))
    return [list(map(int, part)) for part in np.array_split(np.asarray(devices), n)]


@dataclass
class UpdateReport:
    device_days: int = 0
    fixes: int = 0
    cell_rows: int = 0
    seconds: float = 0.0

    def line(self) -> str:
        return (
            f"coverage: {self.device_days} device-days recomputed from {self.fixes} fixes, "
            f"{self.cell_rows} cell visits ({self.seconds:.1f}s)"
        )


@dataclass
class CoverageUpdater:
    """One per process; caches each layout's fine-cell index (layouts are immutable once made,
    drafts change their ``version``, which is part of the cache key)."""

    settings: CoverageSettings
    _indexes: dict[tuple[int, int], LayoutIndex] = field(default_factory=dict)

    async def layout_index(self, conn: AsyncConnection[Any], layout_id: int) -> LayoutIndex:
        row = await (
            await conn.execute("SELECT version FROM grid_layout WHERE id = %s", (layout_id,))
        ).fetchone()
        if row is None:
            raise LookupError(f"no layout {layout_id}")
        key = (layout_id, int(row[0]))
        if key not in self._indexes:
            cells = await read_grouped(
                conn,
                sql.SQL("SELECT grid_id, array_agg(h3) FROM ({}) c GROUP BY grid_id").format(
                    layout_cells(layout_id)
                ),
                [("grid", "int4")],
                [("h3", "int8")],
            )
            index = await asyncio.to_thread(
                LayoutIndex.build, cells["h3"].astype(np.int64), cells["grid"].astype(np.int64)
            )
            self._indexes = {k: v for k, v in self._indexes.items() if k[0] != layout_id}
            self._indexes[key] = index
        return self._indexes[key]

    def engine(self, fixes: np.ndarray) -> CellVisits:
        s = self.settings
        return cell_visits(
            fixes["device"].astype(np.int64),
            fixes["t"].astype(np.int64) + PG_EPOCH_US,
            fixes["lat"].astype(np.float64),
            fixes["lon"].astype(np.float64),
            res=s.resolution,
            max_gap_s=s.max_gap_s,
            max_speed_mps=s.max_speed_mps,
            visit_gap_s=s.visit_gap_s,
            sight_m=s.sight_m,
        )

    async def step(self, conn: AsyncConnection[Any], *, limit: int | None = None) -> UpdateReport:
        """Claim up to ``limit`` dirty device-days and recompute them.

        ``conn`` must be in autocommit mode: the claim commits before the recompute begins.
        """
        report = UpdateReport()
        loop = asyncio.get_running_loop()
        began = loop.time()
        async with conn.transaction():
            claimed = await (
                await conn.execute(
                    CLAIM, (self.settings.claim_stale_s, limit or self.settings.batch_device_days)
                )
            ).fetchall()
        if not claimed:
            report.seconds = loop.time() - began
            return report
        by_day: dict[int, list[int]] = defaultdict(list)
        for device, day, _ in claimed:
            by_day[day].append(device)
        try:  # from the claim on: a failure or a cancel (the server stopping) gives it back
            active = [
                r[0]
                for r in await (
                    await conn.execute(
                        "SELECT id FROM grid_layout WHERE status = 'active' ORDER BY id"
                    )
                ).fetchall()
            ]
            # outside the transaction: a cold index takes seconds to build
            indexes = {layout_id: await self.layout_index(conn, layout_id) for layout_id in active}
            async with conn.transaction():
                for day, devices in sorted(by_day.items()):
                    n_fixes, n_rows = await self._recompute(conn, day, sorted(devices), indexes)
                    report.fixes += n_fixes
                    report.cell_rows += n_rows
                await self._release(conn, claimed)
        except BaseException:
            # give the marks back at once rather than after the stale limit — unless the
            # connection was stopped mid-command (a cancel during a COPY): it cannot be used
            # again, and the claims are retaken once stale
            status = conn.info.transaction_status
            if not conn.closed and status in (TransactionStatus.IDLE, TransactionStatus.INERROR):
                await self._release(conn, claimed, done=False)
            raise
        report.device_days = len(claimed)
        report.seconds = loop.time() - began
        return report

    @staticmethod
    async def _release(
        conn: AsyncConnection[Any], claimed: list[tuple[int, int, Any]], *, done: bool = True
    ) -> None:
        """Drop this step's marks (``done``), except those a fix remarked meanwhile, which are
        unclaimed to be recomputed again, dated from this step's claim (what is still waiting
        came after it: ``marked_at`` is when the oldest fix not yet counted came, at the latest);
        not ``done``: unclaim them all as they were. Locks are taken in (device, day) order,
        the order ingest takes them in."""
        await conn.execute(
            """
            WITH mine AS (
                SELECT d.device_id, d.day, d.remarked OR NOT %(done)s AS keep
                  FROM coverage_dirty d
                  JOIN unnest(%(devices)s::int[], %(days)s::date[]) AS u(device_id, day)
                    ON d.device_id = u.device_id AND d.day = u.day
                 WHERE d.claimed_at = %(stamp)s
                 ORDER BY d.device_id, d.day FOR UPDATE OF d),
            gone AS (
                DELETE FROM coverage_dirty d USING mine
                 WHERE d.device_id = mine.device_id AND d.day = mine.day AND NOT mine.keep)
            UPDATE coverage_dirty d SET claimed_at = NULL, remarked = false,
                   marked_at = CASE WHEN %(done)s THEN d.claimed_at ELSE d.marked_at END
              FROM mine
             WHERE d.device_id = mine.device_id AND d.day = mine.day AND mine.keep
            """,
            {
                "done": done,
                "devices": [c[0] for c in claimed],
                "days": [str(UNIX_EPOCH_DAY + c[1]) for c in claimed],
                "stamp": claimed[0][2],
            },
        )

    async def _recompute(
        self,
        conn: AsyncConnection[Any],
        day: int,
        devices: list[int],
        indexes: dict[int, LayoutIndex],
    ) -> tuple[int, int]:
        """Replace the rows of ``devices`` on ``day`` (and their ``grid_visit`` rows under the
        active layouts, ``indexes``): returns (fixes read, cell visits).

        The devices go through in chunks, pipelined: while the connection reads one chunk's
        fixes or writes another's rows, the engine runs on up to ``PIPELINE`` chunks in worker
        threads (h3 and numpy release the GIL), so a large step keeps both the database and
        the cores busy instead of taking turns.
        """
        margin = int(self.settings.max_gap_s * 1e6)
        start = int(day_start_us(day)) - margin
        end = int(day_start_us(day + 1)) + margin
        date = str(UNIX_EPOCH_DAY + day)
        active = list(indexes)
        await conn.execute(
            "DELETE FROM cell_visit WHERE day = %s AND device_id = ANY(%s)", (date, devices)
        )
        await conn.execute(
            "DELETE FROM device_day WHERE day = %s AND device_id = ANY(%s)", (date, devices)
        )
        await conn.execute(
            "DELETE FROM grid_visit WHERE layout_id = ANY(%s) AND day = %s AND device_id = ANY(%s)",
            (active, date, devices),
        )
        n_fixes = n_rows = 0
        computing: deque[asyncio.Future[tuple[CellVisits, dict[int, GridDays]]]] = deque()

        async def write_oldest() -> None:
            nonlocal n_rows
            visits, per_layout = await computing.popleft()
            await write_cell_visits(conn, visits)
            await self._device_days(conn, date, visits)
            for layout_id, days in per_layout.items():
                await write_grid_days(conn, layout_id, days)
            n_rows += len(visits)

        for chunk in _chunks(devices, self.settings.chunk_device_days):
            fixes = await read_fixes(conn, chunk, start, end)
            n_fixes += len(fixes)
            computing.append(asyncio.ensure_future(asyncio.to_thread(
                self._compute, fixes, day, indexes
            )))  # fmt: skip
            if len(computing) >= PIPELINE:
                await write_oldest()
        while computing:
            await write_oldest()
        for layout_id in active:
            await conn.execute(
                "INSERT INTO grid_visit_day (layout_id, day) VALUES (%s, %s) "
                "ON CONFLICT (layout_id, day) DO UPDATE SET built_at = now()",
                (layout_id, date),
            )
        # other layouts' materialised copy of this day is now stale: rebuilt when next read
        await conn.execute(
            "DELETE FROM grid_visit_day WHERE day = %s AND NOT (layout_id = ANY(%s))",
            (date, active),
        )
        return n_fixes, n_rows

    def _compute(
        self, fixes: np.ndarray, day: int, indexes: dict[int, LayoutIndex]
    ) -> tuple[CellVisits, dict[int, GridDays]]:
        """One chunk's cell visits on ``day`` and their per-grid rows under each layout."""
        visits = self.engine(fixes)
        visits = visits.select(visits.day == day)
        return visits, {layout_id: grid_days(visits, index) for layout_id, index in indexes.items()}

    @staticmethod
    async def _device_days(conn: AsyncConnection[Any], date: str, visits: CellVisits) -> None:
        """Per-device totals of one chunk's visits (its devices' old rows are gone already)."""
        if len(visits) == 0:
            return
        dev, count = np.unique(visits.device, return_counts=True)
        order = np.argsort(visits.device, kind="stable")
        starts = np.r_[0, np.cumsum(count)[:-1]]

        def total(values: np.ndarray) -> list[float]:
            return np.add.reduceat(values[order], starts).tolist()

        await conn.execute(
            """
            INSERT INTO device_day (device_id, day, fixes, dwell_s, metres, cells, first_seen,
                                    last_seen)
            SELECT d, %s::date, f, w, m, c, 'epoch'::timestamptz + a * interval '1 microsecond',
                   'epoch'::timestamptz + b * interval '1 microsecond'
              FROM unnest(%s::int[], %s::int[], %s::float8[], %s::float8[], %s::int[],
                          %s::bigint[], %s::bigint[]) AS u(d, f, w, m, c, a, b)
            """,
            (
                date,
                dev.tolist(),
                total(visits.fixes.astype(np.int64)),
                total(visits.dwell_s),
                total(visits.metres),
                count.tolist(),
                np.minimum.reduceat(visits.first_seen[order], starts).tolist(),
                np.maximum.reduceat(visits.last_seen[order], starts).tolist(),
            ),
        )

    async def run(
        self,
        conn: AsyncConnection[Any],
        *,
        progress: Progress | None = None,
        max_steps: int | None = None,
    ) -> UpdateReport:
        """Steps until the device-days dirty at the start are done (or ``max_steps``). Under
        live ingest, today's marks come back as fast as they are done: those are left for the
        next run rather than keeping this one going for as long as the vehicles drive."""
        progress = progress or NullProgress()
        pending = await (  # marks another worker is recomputing right now are not ours
            await conn.execute(BACKLOG, (self.settings.claim_stale_s,))
        ).fetchone()
        backlog = int(pending[0]) if pending else 0
        task = progress.task("覆盖率 coverage", backlog)
        total = UpdateReport()
        for _ in itertools.count() if max_steps is None else range(max_steps):
            if total.device_days >= backlog:
                break
            step = await self.step(conn)
            if step.device_days == 0:
                break
            total.device_days += step.device_days
            total.fixes += step.fixes
            total.cell_rows += step.cell_rows
            total.seconds += step.seconds
            task.advance(step.device_days)
        return total
