"""``/tiles``: Mapbox Vector Tiles and TileJSON, protected like the API.

Tiles need a viewer token (header, page cookie or ``?token=``) and are cut to the caller's
scope. With ``GRIDPATROL_API_PUBLIC_TILES=true`` a request *without* a token gets the public
layers (admin areas, grids) league-wide; a request with a bad token is still refused (401), and
live vehicles, tracks and alert points always need a token.

The layers' SQL and the tile maths live in ``tiles/`` (which imports nothing of the API); this
router resolves each layer's parameters — the active layout, the coverage window whose
``grid_visit`` rows it builds first, a device in scope — and hands them to ``tiles.service``.
``TileState`` (one per app, on ``app.state.tiles``) remembers for a few seconds what every
tile would otherwise ask again: the active layout, and that a (layout, window) has its
``grid_visit`` rows built (``api.coverage.materialize.ensure``, which scans ``device_day``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from psycopg import AsyncConnection

from api.admin_areas import LEVELS
from api.auth import Principal, RequireRole, bearer_token
from api.coverage import materialize
from api.coverage.metrics import Window
from api.coverage.update import CoverageUpdater
from api.deps import AppSettings, Conn, ReadPool
from api.errors import BadRequest, NotFound, Unauthorized, Unprocessable
from api.layouts import active_layout, get_layout
from api.positions import device_in_scope
from api.scope import Scope
from api.settings import Settings
from api.staff import ALERT_KINDS
from gis.units import china_day_bounds, china_today
from tiles import tilejson
from tiles.layers import LAYERS, Layer
from tiles.service import TileQuery, etag, not_modified, render
from tiles.tilemath import Tile, TileRangeError

MVT = "application/vnd.mapbox-vector-tile"
PUBLIC = Principal(name="public", role="viewer", scope=Scope.everything())
MEMO_S = 30.0
BUILT = "_days_built"  # grid_params → tile(): grid_visit days it built on the primary

router = APIRouter(tags=["tiles"])


class TileAccess(RequireRole):
    """The viewer role — or no token at all while public tiles are switched on.

    A deliberate, settings-controlled exception to "every route needs a token": the anonymous
    caller becomes ``PUBLIC`` and the route serves it public layers only.
    """

    def __init__(self) -> None:
        super().__init__("viewer")

    async def __call__(self, request: Request) -> Principal:
        settings: Settings = request.app.state.settings
        if settings.api.public_tiles and bearer_token(request) is None:
            request.state.principal = PUBLIC
            return PUBLIC
        return await super().__call__(request)


TileViewer = Annotated[Principal, Depends(TileAccess())]


def parse_query(
    crs: Annotated[
        str, Query(pattern="^(wgs84|gcj02)$", description="gcj02 for AMap basemaps")
    ] = "wgs84",
    level: Annotated[str | None, Query(description="admin_areas: one level")] = None,
    layout: Annotated[int | None, Query(ge=1, description="grids: default active")] = None,
    first: Annotated[date | None, Query(alias="from", description="grids: first day")] = None,
    last: Annotated[date | None, Query(alias="to", description="grids: last day")] = None,
    kind: Annotated[str | None, Query(description="alert_points: one kind")] = None,
    device: Annotated[int | None, Query(ge=1, description="tracks: device id")] = None,
    day: Annotated[date | None, Query(description="tracks: China-local day")] = None,
) -> TileQuery:
    return TileQuery(
        crs=crs,
        level=level,
        layout=layout,
        first=first,
        last=last,
        kind=kind,
        device=device,
        day=day,
    )


TileParams = Annotated[TileQuery, Depends(parse_query)]


@dataclass
class TileState:
    """Short-lived memos shared by the tile requests of one app."""

    ensured: dict[tuple[int, date, date], float] = field(default_factory=dict)
    active: tuple[float, int | None] = (0.0, None)

    async def active_layout(self, conn: AsyncConnection[Any]) -> int | None:
        now = time.monotonic()
        if self.active[0] <= now:
            self.active = (now + MEMO_S, await active_layout(conn))
        return self.active[1]

    async def ensure_window(
        self, conn: AsyncConnection[Any], updater: CoverageUpdater, layout: int, window: Window
    ) -> int:
        """Build the layout's missing ``grid_visit`` days of the window; how many were built."""
        key = (layout, window.first, window.last)
        now = time.monotonic()
        if self.ensured.get(key, 0.0) > now:
            return 0
        built = await materialize.ensure(conn, updater, layout, window.first, window.last)
        if len(self.ensured) > 10_000:
            self.ensured.clear()
        self.ensured[key] = now + MEMO_S
        return built


async def layer_params(
    conn: AsyncConnection[Any],
    state: TileState,
    updater: CoverageUpdater,
    settings: Settings,
    layer: Layer,
    query: TileQuery,
) -> dict[str, Any]:
    """The layer's own statement parameters, validated (422) and defaulted.

    Raises
    ------
    Unprocessable
        For a value the layer cannot take (an unknown level or kind, a bad window, no device).
    NotFound
        For a layout that does not exist (or no active layout when none is named).
    """
    if layer.name == "admin_areas":
        if query.level is not None and query.level not in LEVELS:
            raise Unprocessable(f"level must be one of {', '.join(LEVELS)}", field="level")
        return {"level": query.level}
    if layer.name == "alert_points":
        if query.kind is not None and query.kind not in ALERT_KINDS:
            raise Unprocessable(f"kind must be one of {', '.join(ALERT_KINDS)}", field="kind")
        return {"kind": query.kind}
    if layer.name == "vehicles":
        return {
            "fresh_s": settings.map.vehicle_fresh_s,
            "offline_s": settings.map.vehicle_offline_s,
        }
    if layer.name == "tracks":
        if query.device is None:
            raise Unprocessable("the tracks layer needs ?device=", field="device")
        t0, t1 = china_day_bounds(query.day or china_today())
        return {"device": query.device, "t0": t0, "t1": t1, "gap_s": settings.coverage.max_gap_s}
    if layer.name == "layout_grids":
        if query.layout is None:
            raise Unprocessable("the layout_grids layer needs ?layout=", field="layout")
        known = await (
            await conn.execute("SELECT 1 FROM grid_layout WHERE id = %s", (query.layout,))
        ).fetchone()
        if known is None:
            raise NotFound(f"no layout {query.layout}")
        return {"layout": query.layout}
    return await grid_params(conn, state, updater, settings, query)


async def grid_params(
    conn: AsyncConnection[Any],
    state: TileState,
    updater: CoverageUpdater,
    settings: Settings,
    query: TileQuery,
) -> dict[str, Any]:
    """Layout and coverage window of the grids layer; builds missing ``grid_visit`` days."""
    layout = query.layout or await state.active_layout(conn)
    if layout is None:
        raise NotFound("no active layout; name one with ?layout=")
    row = await (
        await conn.execute("SELECT 1 FROM grid_layout WHERE id = %s", (layout,))
    ).fetchone()
    if row is None:
        raise NotFound(f"no layout {layout}")
    last = query.last or china_today()
    window = Window.check(
        query.first or last - timedelta(days=6),
        last,
        max_days=settings.coverage.max_window_days,
    )
    built = await state.ensure_window(conn, updater, layout, window)
    blind_from = max(
        window.first, window.last - timedelta(days=settings.coverage.blind_spot_days - 1)
    )
    return {
        "layout": layout,
        "days": [window.first + timedelta(days=i) for i in range(window.days)],
        "b0": blind_from,
        "gap": int(settings.coverage.visit_gap_s * 1e6),
        BUILT: built,
    }


def _state(request: Request) -> TileState:
    state: TileState | None = getattr(request.app.state, "tiles", None)
    if state is None:
        state = TileState()
        request.app.state.tiles = state
    return state


def _layer(name: str, principal: Principal) -> Layer:
    layer = LAYERS.get(name)
    if layer is None:
        raise NotFound(f"no tile layer {name!r}; layers: {', '.join(LAYERS)}")
    if principal is PUBLIC and not layer.public:
        raise Unauthorized(f"the {name} layer needs a token")
    return layer


def _base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


@router.get("/tiles", summary="Vector tile layers and their TileJSON")
async def layers(request: Request, principal: TileViewer) -> dict[str, Any]:
    base = _base_url(request)
    return {
        "layers": [
            {
                "name": layer.name,
                "title": layer.title,
                "geometry": layer.geometry,
                "public": layer.public,
                "parameters": list(layer.params),
                "tilejson": f"{base}/tiles/{layer.name}.json",
            }
            for layer in LAYERS.values()
            if principal is not PUBLIC or layer.public
        ]
    }


@router.get("/tiles/{layer}.json", summary="TileJSON of a layer (bounds in your scope)")
async def layer_tilejson(
    request: Request,
    layer: str,
    principal: TileViewer,
    query: TileParams,
    conn: Conn,
    settings: AppSettings,
) -> dict[str, Any]:
    spec = _layer(layer, principal)
    updater: CoverageUpdater = request.app.state.coverage
    params = await layer_params(conn, _state(request), updater, settings, spec, query)
    params.pop(BUILT, None)
    if spec.name in ("grids", "layout_grids"):
        await get_layout(conn, principal.scope, params["layout"])  # 404 outside the scope
    if spec.name == "tracks":
        await device_in_scope(conn, principal.scope, params["device"])
    bounds = await tilejson.extent(conn, spec, principal.scope, params)
    return tilejson.document(spec, _base_url(request), query, bounds)


@router.get(
    "/tiles/{layer}/{z:int}/{x:int}/{y:int}.pbf",
    summary="One Mapbox Vector Tile (ST_AsMVT), cut to your scope",
    response_class=Response,
    responses={200: {"content": {MVT: {}}}, 304: {"description": "ETag matched"}},
)
async def tile(
    request: Request,
    layer: str,
    z: int,
    x: int,
    y: int,
    principal: TileViewer,
    query: TileParams,
    conn: Conn,
    reads: ReadPool,
    settings: AppSettings,
) -> Response:
    spec = _layer(layer, principal)
    try:
        address = Tile.checked(z, x, y)
    except TileRangeError as exc:
        raise (BadRequest if exc.zoom else NotFound)(str(exc)) from exc
    updater: CoverageUpdater = request.app.state.coverage
    params = await layer_params(conn, _state(request), updater, settings, spec, query)
    # on a replica: days just built on the primary, or a draft a planner has just edited,
    # must be there before it draws the tile (read-your-writes)
    fresh = params.pop(BUILT, 0) or spec.name == "layout_grids"
    async with reads.connection(after=conn if fresh else None) as rconn:
        body = await render(rconn, spec, address, principal.scope, params, crs=query.crs)
    tag = etag(body)
    privacy = "public" if principal is PUBLIC else "private"
    headers = {
        "ETag": tag,
        "Cache-Control": f"{privacy}, max-age={spec.max_age_s}",
        "Vary": "Authorization, Cookie",
    }
    if not_modified(request.headers.get("if-none-match"), tag):
        return Response(status_code=304, headers=headers)
    return Response(body, media_type=MVT, headers=headers)
