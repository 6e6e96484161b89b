"""Group commit: durable single-fix ingest that is still fast.

Requests (OsmAnd HTTP, JT/T 808 messages) put their fixes on a queue and wait on a future. One
writer task drains the queue, stores everything waiting in one transaction (one fsync for many
devices), then resolves each future with its own fixes' outcomes. A device is answered only after
its fix is committed. When the database fails, every waiting future fails (the protocol answers
"try again": HTTP 503, 808 result "failure"), and the writer reconnects with backoff.

"Unavailable" means the database cannot store anything right now, whoever sends it: the connection
failed or was terminated (restart, failover), the server is shutting down or out of resources
(disk full, ``53xxx``), or it is read-only (a standby, ``default_transaction_read_only``). Then
the group fails at once (no one-by-one retry), the connection is dropped (a read-only session
or a failover needs a fresh one), and until the next connection attempt, at most ``max_backoff_s``
later, new groups are refused straight away rather than waiting: a device gets its 503 in
milliseconds and keeps its fixes. Any fix answered 200 / result 0 was committed; a commit whose
answer was lost is stored once anyway, because a resent fix is a duplicate of the primary key.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import psycopg
from numpy.typing import NDArray

from api.ingest.fixes import FixBatch, FixError
from api.ingest.store import Ingestor, StoreResult

log = logging.getLogger("gridpatrol.ingest")
# Errors after which nothing can be stored until the database is back (see the module docstring).
UNAVAILABLE = (psycopg.OperationalError, psycopg.errors.ReadOnlySqlTransaction)
CONNECT_TIMEOUT_S = 5


class IngestUnavailable(RuntimeError):
    """The fixes were not stored (database down or the writer stopping); the sender retries."""


@dataclass
class _Job:
    batch: FixBatch
    protocol: str
    errors: Sequence[FixError]
    future: asyncio.Future[NDArray[np.int8]]
    refusals: Mapping[tuple[str, str], int] | None = None


@dataclass
class GroupWriter:
    """One per process. ``submit`` returns each fix's outcome code once it is committed."""

    url: str
    ingestor: Ingestor
    max_batch: int = 5000
    max_queue: int = 200_000
    max_backoff_s: float = 2.0
    _queue: asyncio.Queue[_Job] = field(default_factory=asyncio.Queue)
    _task: asyncio.Task[None] | None = None
    _conn: psycopg.AsyncConnection[Any] | None = None
    _queued_fixes: int = 0
    _retry_at: float = 0.0  # loop time before which no new connection is attempted
    _backoff_s: float = 0.0
    commits: int = 0
    fixes: int = 0

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="ingest-writer")

    async def stop(self, timeout_s: float = 30.0) -> None:
        """Store what is queued (waiting at most ``timeout_s``: the submitters of what is left
        get no acknowledgement, so their devices resend), then stop."""
        if self._task is None:
            return
        try:
            await asyncio.wait_for(self._queue.join(), timeout_s)
        except TimeoutError:
            log.error(
                "ingest writer: %d fixes still queued after %.0fs; stopping",
                self._queued_fixes,
                timeout_s,
            )
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    async def submit(
        self,
        batch: FixBatch,
        *,
        protocol: str,
        errors: Sequence[FixError] = (),
        refusals: Mapping[tuple[str, str], int] | None = None,
    ) -> NDArray[np.int8]:
        """Queue fixes and wait until they are committed; returns their outcome codes.

        ``refusals`` ((source, reason) → count) are requests a protocol server refused before
        parsing (rate limits), counted in aggregate with the group.

        Raises
        ------
        IngestUnavailable
            When the queue is full (back-pressure) or the database failed.
        """
        if self._task is None or self._task.done():
            raise IngestUnavailable("the ingest writer is not running")
        if self._queued_fixes + len(batch) > self.max_queue:
            raise IngestUnavailable("ingest queue full; retry shortly")
        future: asyncio.Future[NDArray[np.int8]] = asyncio.get_running_loop().create_future()
        self._queued_fixes += len(batch)
        await self._queue.put(_Job(batch, protocol, errors, future, refusals))
        return await future

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        """The writer's connection; one attempt to (re)connect, none during the backoff."""
        if self._conn is not None and not self._conn.closed:
            return self._conn
        if asyncio.get_running_loop().time() < self._retry_at:
            raise IngestUnavailable("database unavailable; retry shortly")
        self._conn = await psycopg.AsyncConnection.connect(
            self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S
        )
        return self._conn

    def _drain(self, first: _Job) -> list[_Job]:
        jobs = [first]
        size = len(first.batch)
        while size < self.max_batch:
            try:
                job = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                break
            jobs.append(job)
            size += len(job.batch)
        return jobs

    async def _run(self) -> None:
        while True:
            jobs = self._drain(await self._queue.get())
            try:
                for protocol in sorted({j.protocol for j in jobs}):
                    await self._commit_isolating(
                        [j for j in jobs if j.protocol == protocol], protocol
                    )
            except Exception as exc:  # noqa: BLE001 - every waiting sender must hear of it
                await self._fail(jobs, exc)
            else:
                self._backoff_s = 0.0
            finally:
                for job in jobs:
                    self._queued_fixes -= len(job.batch)
                    self._queue.task_done()

    async def _commit_isolating(self, jobs: list[_Job], protocol: str) -> None:
        """Commit the group; if it fails for a reason other than the connection, commit each
        job alone, so one poisonous request cannot keep failing everybody else's."""
        try:
            await self._commit(jobs, protocol)
        except (*UNAVAILABLE, IngestUnavailable):
            raise
        except Exception:
            if len(jobs) == 1:
                raise
            log.warning("ingest writer: group of %d failed; committing one by one", len(jobs))
            for job in jobs:
                try:
                    await self._commit([job], protocol)
                except (*UNAVAILABLE, IngestUnavailable):
                    raise
                except Exception as exc:  # noqa: BLE001 - this job alone fails
                    await self._fail([job], exc)

    async def _commit(self, jobs: list[_Job], protocol: str) -> None:
        conn = await self._connection()
        batch = FixBatch.concat([j.batch for j in jobs])
        errors = [e for j in jobs for e in j.errors]
        refusals: Counter[tuple[str, str]] = Counter()
        for job in jobs:
            refusals.update(job.refusals or {})
        await self.ingestor.prepare(conn, batch)
        result: StoreResult = await self.ingestor.store(
            conn, batch, protocol=protocol, errors=errors, refusals=refusals
        )
        self.commits += 1
        self.fixes += len(batch)
        start = 0
        for job in jobs:
            end = start + len(job.batch)
            if not job.future.done():
                job.future.set_result(result.outcome[start:end])
            start = end

    async def _fail(self, jobs: list[_Job], exc: Exception) -> None:
        if isinstance(exc, IngestUnavailable):  # refused during the backoff: already logged
            reason = str(exc)
        else:
            log.error("ingest writer: batch of %d jobs not stored: %s", len(jobs), exc)
            reason = f"not stored: {type(exc).__name__}"
        if isinstance(exc, UNAVAILABLE):
            await self._drop_connection()
        for job in jobs:
            if not job.future.done():
                job.future.set_exception(IngestUnavailable(reason))

    async def _drop_connection(self) -> None:
        """Forget the connection and wait a growing while (≤ max_backoff_s) before the next."""
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close()
            self._conn = None
        self._backoff_s = min(max(self._backoff_s * 2, 0.1), self.max_backoff_s)
        self._retry_at = asyncio.get_running_loop().time() + self._backoff_s
        log.warning("ingest writer: database unavailable; next attempt in %.1fs", self._backoff_s)
