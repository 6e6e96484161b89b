"""Background tasks of the server: run a coroutine periodically, survive its failures."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger("gridpatrol.tasks")


async def _loop(name: str, interval_s: float, job: Callable[[], Awaitable[object]]) -> None:
    while True:
        try:
            await job()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("background task %s failed; retrying in %.0fs", name, interval_s)
        await asyncio.sleep(interval_s)


class Periodic:
    """Named periodic jobs, started with the app and cancelled at shutdown."""

    def __init__(self) -> None:
        self._tasks: list[asyncio.Task[None]] = []

    def start(self, name: str, interval_s: float, job: Callable[[], Awaitable[object]]) -> None:
        self._tasks.append(asyncio.create_task(_loop(name, interval_s, job), name=name))

    async def stop(self, timeout_s: float = 30.0) -> None:
        """Cancel every job and wait for them, at most ``timeout_s``: a job stuck where a
        cancel cannot reach (a thread, a wedged connection) is logged and left behind rather
        than holding the server's shutdown forever."""
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
