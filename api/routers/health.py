"""``/healthz``: public liveness and database check."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from api import __version__
from api.deps import Pool

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness and database check (public)")
async def healthz(pool: Pool) -> JSONResponse:
    body: dict[str, Any] = {"status": "ok", "version": __version__}
    try:
        async with pool.connection(timeout=5) as conn:
            row = await (await conn.execute("SELECT version_num FROM alembic_version")).fetchone()
        body["database"] = "ok"
        body["schema"] = row[0] if row else None
    except Exception as exc:  # noqa: BLE001 - health must report any failure, not raise
        body.update(status="degraded", database=f"error: {type(exc).__name__}")
        return JSONResponse(body, status_code=503)
    return JSONResponse(body)
