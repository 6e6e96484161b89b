"""Running one role in this process: the API under uvicorn, the ingest and worker roles' main
loop (no HTTP), the readiness line, and dying with the supervisor.

The supervisor starts each child as ``python -m api.roles ROLE`` (``api.roles.__main__``), not
through the ``gridpatrol`` command line, whose modules import every library the CLI commands use:
an ingest process then loads neither the pages nor the reports' libraries, and a worker (which
builds the reports) not the pages.
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import logging
import os
import signal
import sys
from collections.abc import Coroutine
from typing import Any

from api.ratelimit import ingest_limiter
from api.roles import ALL_IN_ONE, API, READY, SUPERVISOR_ENV
from api.roles.services import running
from api.settings import Settings

log = logging.getLogger("gridpatrol.roles")
PR_SET_PDEATHSIG = 1


def announce_ready(role: str) -> None:
    """The line the supervisor waits for: the role serves (its ports are bound)."""
    sys.stdout.write(f"{READY}: {role} (pid {os.getpid()})\n")
    sys.stdout.flush()


def supervised() -> bool:
    """True in a child of ``--role all``."""
    return SUPERVISOR_ENV in os.environ


def die_with_supervisor() -> None:
    """In a child of ``--role all``: get SIGTERM when the supervisor dies, however it dies
    (``prctl(PR_SET_PDEATHSIG)``, Linux); exit at once if it is already gone."""
    parent = int(os.environ.get(SUPERVISOR_ENV, "0") or 0)
    if not parent:
        return
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
            log.warning("prctl(PR_SET_PDEATHSIG) failed: errno %d", ctypes.get_errno())
    if os.getppid() != parent:  # it died before the prctl took effect
        raise SystemExit(f"the supervisor (pid {parent}) is gone")


def run_loop(main: Coroutine[Any, Any, None]) -> None:
    """Run the server on uvloop (markedly faster sockets) when it is installed."""
    try:
        import uvloop  # noqa: PLC0415 - optional
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)


async def serve_api(settings: Settings, url: str, roles: frozenset[str] = ALL_IN_ONE) -> None:
    """The HTTP app under uvicorn, with ``roles`` in its process (``api`` alone under the
    supervisor); says it is ready once the port is bound."""
    import uvicorn  # noqa: PLC0415 - only the API process needs the app and its libraries

    from api.app import create_app  # noqa: PLC0415
    from api.limits import guarded_protocol  # noqa: PLC0415

    app = create_app(settings, database=url, roles=roles)
    config = uvicorn.Config(
        app,
        host=settings.api.host,
        port=settings.api.port,
        log_level="info",
        access_log=False,
        lifespan="on",
        # X-Forwarded-* are read by the app, only from GRIDPATROL_API_TRUSTED_PROXIES
        # (api/forwarded.py); uvicorn's own default would believe anyone on 127.0.0.1
        proxy_headers=False,
        # header/body deadlines, request line/header caps, connection cap (api/limits.py)
        http=guarded_protocol(settings.api),
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    while not server.started and not serving.done():  # noqa: ASYNC110 - uvicorn has no event
        await asyncio.sleep(0.05)
    if server.started:
        announce_ready("+".join(r for r in ("api", "ingest", "worker") if r in roles))
    await serving


async def serve_role(settings: Settings, url: str, role: str) -> None:
    """Run the ``ingest`` or ``worker`` role until SIGTERM or SIGINT; then stop cleanly (the
    writer stores what it was given before the process exits)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with running(
        settings, url, frozenset({role}), ingest_limiter=ingest_limiter(settings)
    ):  # the listeners log their addresses themselves
        gc.collect()  # as the API's lifespan does: keep startup's objects out of full collections
        gc.freeze()
        announce_ready(role)
        await stop.wait()
        log.info("%s stopping", role)


def serve_one(settings: Settings, url: str, role: str) -> None:
    """Run ``role`` (``api``, ``ingest``, ``worker``, or ``single``: all three) here."""
    if role in (API, "single"):
        run_loop(serve_api(settings, url, ALL_IN_ONE if role == "single" else frozenset({API})))
    else:
        run_loop(serve_role(settings, url, role))
