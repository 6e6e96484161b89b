"""CPU-heavy work off the event loop, with limits.

One event loop serves every request of an API process; a parse or a solve that runs on it stalls
them all (``/healthz`` included). Two ways off it, chosen by measurement:

- ``in_thread``: a worker thread, at most ``GRIDPATROL_API_CPU_THREADS`` at once per loop (an
  ``anyio`` capacity limiter). For work that releases the GIL: shapely 2 / GEOS geometry edits,
  numpy, pyogrio/GDAL reads.
- ``in_process``: a pool of ``GRIDPATROL_API_CPU_WORKERS`` processes (forkserver, with the parsers
  preloaded). For pure-Python work that holds the GIL: expat + Python callbacks for GPX (a
  55 MB file is ≈ 6.6 s of CPU; in a thread the loop still stalled ≈ 0.1 s at a time, in a
  process it did not), openpyxl for XLSX, PuLP's model building for alert-point siting. The
  function and its arguments are pickled, so it must be a module-level function.

Both refuse with 503 (``Retry-After``) when ``GRIDPATROL_API_CPU_QUEUE`` jobs already wait, so a
burst of uploads queues a bounded number of bodies rather than all of them. A worker process
that dies (killed for memory) is replaced and its request answered 503.
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import logging
import multiprocessing
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

import anyio
import anyio.to_thread

from api.errors import Unavailable
from api.settings import ApiSettings

log = logging.getLogger("gridpatrol.offload")
T = TypeVar("T")
# imported once in the fork server, so each worker starts with them loaded
PRELOAD = ["api.protocols.trackfiles", "api.staff", "gis.siting", "gis.gridcells"]

_lock = threading.Lock()
_pool: ProcessPoolExecutor | None = None
_pool_size = 0
# one limiter per event loop (an anyio limiter belongs to the loop it was made on)
_limiters: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, anyio.CapacityLimiter]]
_limiters = weakref.WeakKeyDictionary()


def _limiter(kind: str, tokens: int) -> anyio.CapacityLimiter:
    loop = asyncio.get_running_loop()
    per_loop = _limiters.setdefault(loop, {})
    limiter = per_loop.get(kind)
    if limiter is None:
        limiter = per_loop[kind] = anyio.CapacityLimiter(tokens)
    elif limiter.total_tokens != tokens:
        limiter.total_tokens = tokens
    return limiter


def _admit(limiter: anyio.CapacityLimiter, queue: int, what: str) -> None:
    """503 when the limiter is full and ``queue`` jobs already wait for it."""
    stats = limiter.statistics()
    if stats.borrowed_tokens >= stats.total_tokens and stats.tasks_waiting >= queue:
        raise Unavailable(
            f"the server is busy with other {what}; retry shortly "
            f"({stats.tasks_waiting} waiting, GRIDPATROL_API_CPU_QUEUE)"
        )


async def in_thread(settings: ApiSettings, func: Callable[..., T], *args: Any) -> T:
    """``func(*args)`` in a worker thread (at most ``cpu_threads`` at once per loop)."""
    limiter = _limiter("thread", settings.cpu_threads)
    _admit(limiter, settings.cpu_queue, "geometry work")
    return await anyio.to_thread.run_sync(functools.partial(func, *args), limiter=limiter)


def _executor(workers: int) -> ProcessPoolExecutor:
    global _pool, _pool_size  # noqa: PLW0603 - one pool per process, made on first use
    with _lock:
        if _pool is None or _pool_size != workers:
            if _pool is not None:
                _pool.shutdown(wait=False, cancel_futures=True)
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(PRELOAD)
            _pool = ProcessPoolExecutor(max_workers=workers, mp_context=context)
            _pool_size = workers
        return _pool


def _discard(broken: ProcessPoolExecutor) -> None:
    global _pool  # noqa: PLW0603 - the pool is replaced when one of its processes died
    with _lock:
        if _pool is broken:
            _pool = None
    broken.shutdown(wait=False, cancel_futures=True)


async def in_process(settings: ApiSettings, func: Callable[..., T], *args: Any, **kw: Any) -> T:
    """``func(*args, **kw)`` in the worker-process pool; exceptions it raises are raised here
    (they must pickle). At most ``cpu_workers`` jobs run at once; beyond ``cpu_queue`` waiting
    jobs the answer is 503."""
    limiter = _limiter("process", settings.cpu_workers)
    _admit(limiter, settings.cpu_queue, "uploads or siting")
    async with limiter:
        pool = _executor(settings.cpu_workers)
        try:
            future = pool.submit(func, *args, **kw)
        except (BrokenProcessPool, RuntimeError) as exc:  # a dead or shut-down pool: a new one
            _discard(pool)
            pool = _executor(settings.cpu_workers)
            try:
                future = pool.submit(func, *args, **kw)
            except (BrokenProcessPool, RuntimeError):
                raise Unavailable("the worker processes are unavailable; retry shortly") from exc
        try:
            return await asyncio.wrap_future(future)
        except BrokenProcessPool as exc:
            log.error("a CPU worker process died running %s: %s", func.__name__, exc)
            _discard(pool)
            raise Unavailable("the worker process died (out of memory?); retry shortly") from exc


def shutdown() -> None:
    """Stop the worker processes (at exit; tests and ``gridpatrol run`` call it too)."""
    global _pool
    with _lock:
        pool, _pool = _pool, None
    if pool is not None:
        pool.shutdown(wait=True, cancel_futures=True)


atexit.register(shutdown)
