"""``/tiles``: Mapbox Vector Tiles and TileJSON, protected like the API.

Tiles need a viewer token (header, page cookie or ``?token=``) and are cut to the caller's
scope. With ``GRIDPATROL_API_PUBLIC_TILES=true`` a request *without* a token gets the public
layers (admin areas, grids) league-wide; a request with a bad token is still refused (401), and
live vehicles, tracks and alert points always need a token.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from api.auth import Principal, RequireRole, bearer_token
from api.coverage.update import CoverageUpdater
from api.deps import AppSettings, Conn
from api.errors import BadRequest, NotFound, Unauthorized
from api.scope import Scope
from api.settings import Settings
from tiles import tilejson
from tiles.layers import LAYERS, Layer
from tiles.service import TileQuery, TileState, etag, layer_params, not_modified, render
from tiles.tilemath import Tile, TileRangeError

MVT = "application/vnd.mapbox-vector-tile"
PUBLIC = Principal(name="public", role="viewer", scope=Scope.everything())

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
    settings: AppSettings,
) -> Response:
    spec = _layer(layer, principal)
    try:
        address = Tile.checked(z, x, y)
    except TileRangeError as exc:
        raise (BadRequest if exc.zoom else NotFound)(str(exc)) from exc
    updater: CoverageUpdater = request.app.state.coverage
    params = await layer_params(conn, _state(request), updater, settings, spec, query)
    body = await render(conn, spec, address, principal.scope, params, crs=query.crs)
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
