"""Background tasks of the server: run a coroutine periodically, survive its failures."""

from __future__ import annotations

import asyncio
import contextlib
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

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
