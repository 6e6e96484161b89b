"""Coverage reports (issue 7): HTML with the colour grid map (网格彩图), XLSX, PDF (A4), CSV.

``data.gather`` collects everything once (metrics at the chosen and every coarser level,
shapes, blind spots, ranking, daily km, distribution, response times when dispatch exists);
``render.render`` turns it into one format. The API (``/reports/coverage``) and the CLI
(``gridpatrol report``) both go through ``build``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from psycopg import AsyncConnection

from api.coverage.metrics import Window
from api.coverage.update import CoverageUpdater
from api.progress import NullProgress, Progress
from api.reports.data import ReportData, gather
from api.reports.render import FORMATS, MEDIA_TYPES, Rendered, render
from api.scope import Scope

__all__ = ["FORMATS", "MEDIA_TYPES", "Rendered", "ReportData", "build", "gather", "render"]


async def build(
    conn: AsyncConnection[Any],
    updater: CoverageUpdater,
    scope: Scope,
    layout_id: int,
    window: Window,
    *,
    level: str = "village",
    fmt: str = "html",
    progress: Progress | None = None,
) -> Rendered:
    """Gather a report's data and render it (rendering runs in a worker thread).

    Parameters
    ----------
    fmt
        ``html``, ``xlsx``, ``pdf`` or ``csv``.

    Raises
    ------
    NotFound, Unprocessable
        From ``gather`` (unknown layout, bad level).
    ValueError
        For an unknown format.
    """
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}")
    data = await gather(conn, updater, scope, layout_id, window, level=level, progress=progress)
    task = (progress or NullProgress()).task(f"{fmt.upper()} 生成 rendering", 1)
    rendered = await asyncio.to_thread(render, data, fmt)
    task.advance()
    return rendered
