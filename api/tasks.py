"""Background tasks of the server: run a coroutine periodically, survive its failures.

A job started ``exclusive`` runs in one process of the cluster at a time: before each run the
process must hold the job's PostgreSQL advisory lock (``pg_try_advisory_lock`` on a dedicated
connection, ``AdvisoryLocks``). The first process to take it keeps it — it runs the job every
tick, the others only check every few seconds whether the holder is gone. The lock belongs to
the connection's session, so it is released the moment its process dies (even by ``kill -9``:
the server sees the connection drop) and another worker takes the job over at its next try.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import zlib
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg

log = logging.getLogger("gridpatrol.tasks")
LOCK_NAMESPACE = 0x4750  # "GP": the first key of every two-key advisory lock taken here
TAKEOVER_S = 5.0  # how often a process without a job's lock checks whether it is free


def lock_key(name: str) -> int:
    """The second advisory-lock key of a job name (a stable, positive int4)."""
    return zlib.crc32(f"gridpatrol.job.{name}".encode()) & 0x7FFFFFFF


class AdvisoryLocks:
    """Session-level advisory locks, one per job name, on one dedicated connection."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.held: set[str] = set()
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._mutex = asyncio.Lock()

    async def hold(self, name: str) -> bool:
        """True when this process holds ``name``'s lock (taking it if it is free). For a lock
        already held, the session is checked to be alive: a lost connection lost its locks."""
        async with self._mutex:
            try:
                conn = await self._connection()
                if name in self.held:
                    await conn.execute("SELECT 1")
                    return True
                row = await (
                    await conn.execute(
                        "SELECT pg_try_advisory_lock(%s, %s)", (LOCK_NAMESPACE, lock_key(name))
                    )
                ).fetchone()
            except psycopg.Error as exc:
                if self.held:
                    log.warning("lost the job locks %s: %s", sorted(self.held), exc)
                self.held.clear()
                await self._drop()
                return False
            if row is not None and row[0]:
                self.held.add(name)
                log.info("this process now runs the job %r (advisory lock taken)", name)
                return True
            return False

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        if self._conn is None or self._conn.closed:
            self.held.clear()  # a new session holds nothing
            self._conn = await psycopg.AsyncConnection.connect(
                self.url, autocommit=True, connect_timeout=5
            )
        return self._conn

    async def _drop(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close()
        self._conn = None

    async def close(self) -> None:
        """Release every lock (closing the session does)."""
        async with self._mutex:
            self.held.clear()
            await self._drop()


async def _loop(
    name: str,
    interval_s: float,
    job: Callable[[], Awaitable[object]],
    locks: AdvisoryLocks | None,
) -> None:
    while True:
        if locks is not None and not await locks.hold(name):
            await asyncio.sleep(min(interval_s, TAKEOVER_S))
            continue
        try:
            await job()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("background task %s failed; retrying in %.0fs", name, interval_s)
        await asyncio.sleep(interval_s)


class Periodic:
    """Named periodic jobs, started with the process and cancelled at shutdown.

    ``locks``: where ``exclusive`` jobs take their advisory lock (see the module docstring);
    without it every job runs here unconditionally.
    """

    def __init__(self, locks: AdvisoryLocks | None = None) -> None:
        self.locks = locks
        self._tasks: list[asyncio.Task[None]] = []

    def start(
        self,
        name: str,
        interval_s: float,
        job: Callable[[], Awaitable[object]],
        *,
        exclusive: bool = False,
    ) -> None:
        locks = self.locks if exclusive else None
        self._tasks.append(asyncio.create_task(_loop(name, interval_s, job, locks), name=name))

    async def stop(self, timeout_s: float = 30.0) -> None:
        """Cancel every job and wait for them, at most ``timeout_s``: a job stuck where a
        cancel cannot reach (a thread, a wedged connection) is logged and left behind rather
        than holding the server's shutdown forever. Then the job locks are released."""
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=timeout_s)
            for task in pending:
                log.error(
                    "background task %s did not stop within %.0fs", task.get_name(), timeout_s
                )
        for task in self._tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                log.error("background task %s ended with %r", task.get_name(), task.exception())
        self._tasks.clear()
        if self.locks is not None:
            await self.locks.close()
