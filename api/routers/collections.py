"""OGC API – Features: ``/ogc`` (landing), ``/ogc/conformance``, ``/collections``,
``/collections/{id}``, ``/collections/{id}/items`` and ``/collections/{id}/items/{fid}``.

GeoJSON in CRS84 (WGS-84 lon/lat), paged with ``limit``/``offset`` and ``next`` links, filtered
by ``bbox``, ``datetime`` and the collection's properties, always cut to the caller's scope —
so QGIS ("Add WFS / OGC API – Features layer", URL ``…/ogc``, an ``Authorization: Bearer``
header) can add grids, admin areas, alert points, live vehicles and incidents as layers.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from psycopg import AsyncConnection

from api.auth import Viewer, require_role
from api.deps import AppSettings, Conn
from api.errors import BadRequest, NotFound
from api.layouts import active_layout, get_layout
from api.responses import GeoJSONResponse
from api.scope import Scope
from api.settings import Settings
from tiles import collections as fc
from tiles.ogc import (
    CONFORMANCE,
    CRS84,
    GEOJSON,
    OgcParamError,
    page_links,
    parse_bbox,
    parse_datetime,
)

router = APIRouter(tags=["ogc features"])
MAX_LIMIT = 10_000
RESERVED = {"bbox", "datetime", "limit", "offset", "layout", "token", "f"}


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def _describe(c: fc.Collection, base: str) -> dict[str, Any]:
    links = [
        {"href": f"{base}/collections/{c.id}", "rel": "self", "type": "application/json"},
        {"href": f"{base}/collections/{c.id}/items", "rel": "items", "type": GEOJSON},
    ]
    if c.tile_layer:
        links.append(
            {
                "href": f"{base}/tiles/{c.tile_layer}.json",
                "rel": "http://www.opengis.net/def/rel/ogc/1.0/tilesets-vector",
                "type": "application/json",
                "title": "TileJSON (Mapbox Vector Tiles)",
            }
        )
    return {
        "id": c.id,
        "title": c.title,
        "description": c.description,
        "itemType": "feature",
        "crs": [CRS84],
        "links": links,
    }


async def _collection(conn: AsyncConnection[Any], name: str) -> fc.Collection:
    for c in await fc.available(conn):
        if c.id == name:
            return c
    raise NotFound(f"no collection {name!r}")


async def _layout(conn: AsyncConnection[Any], scope: Scope, layout: int | None) -> int:
    layout_id = layout or await active_layout(conn)
    if layout_id is None:
        raise NotFound("no active layout; name one with ?layout=")
    await get_layout(conn, scope, layout_id)  # 404 outside the scope
    return layout_id


def _filters(c: fc.Collection, request: Request) -> dict[str, list[str]]:
    filters: dict[str, list[str]] = {}
    for key, value in request.query_params.multi_items():
        if key in RESERVED:
            continue
        if key not in c.filters:
            raise BadRequest(
                f"unknown parameter {key!r}; {c.id} filters on: {', '.join(c.filters) or 'none'}"
            )
        values = [v.strip() for v in value.split(",") if v.strip()]
        if c.id == "incidents" and key == "status" and "open" in values:
            values = [v for v in values if v != "open"] + list(fc.OPEN_INCIDENT)
        filters.setdefault(key, []).extend(values)
    return filters


def _extra(settings: Settings) -> dict[str, Any]:
    return {"fresh_s": settings.map.vehicle_fresh_s, "offline_s": settings.map.vehicle_offline_s}


@router.get("/ogc", summary="OGC API – Features landing page (give this URL to QGIS)")
async def landing(request: Request, principal: Viewer) -> dict[str, Any]:
    base = _base(request)
    return {
        "title": "GridPatrol 网格巡防",
        "description": f"Features in the scope of {principal.name}",
        "links": [
            {"href": f"{base}/ogc", "rel": "self", "type": "application/json"},
            {
                "href": f"{base}/openapi.json",
                "rel": "service-desc",
                "type": "application/vnd.oai.openapi+json;version=3.0",
            },
            {"href": f"{base}/docs", "rel": "service-doc", "type": "text/html"},
            {"href": f"{base}/ogc/conformance", "rel": "conformance", "type": "application/json"},
            {"href": f"{base}/collections", "rel": "data", "type": "application/json"},
        ],
    }


@router.get(
    "/ogc/conformance",
    summary="OGC API – Features conformance classes",
    dependencies=[require_role("viewer")],
)
async def conformance() -> dict[str, Any]:
    return {"conformsTo": CONFORMANCE}


@router.get(
    "/collections",
    summary="Feature collections (OGC API – Features)",
    dependencies=[require_role("viewer")],
)
async def list_collections(request: Request, conn: Conn) -> dict[str, Any]:
    base = _base(request)
    return {
        "links": [
            {"href": f"{base}/collections", "rel": "self", "type": "application/json"},
            {"href": f"{base}/ogc", "rel": "root", "type": "application/json"},
        ],
        "collections": [_describe(c, base) for c in await fc.available(conn)],
    }


@router.get("/collections/{collection}", summary="One feature collection with its extent")
async def describe_collection(
    request: Request,
    collection: str,
    principal: Viewer,
    conn: Conn,
    settings: AppSettings,
    layout: Annotated[int | None, Query(ge=1, description="grids: default active")] = None,
) -> dict[str, Any]:
    c = await _collection(conn, collection)
    q = fc.ItemQuery(extra=_extra(settings))
    if c.uses_layout:
        q = fc.ItemQuery(layout=await _layout(conn, principal.scope, layout), extra=q.extra)
    bbox, times = await fc.extent(conn, c, principal.scope, q)
    body = _describe(c, _base(request))
    extent: dict[str, Any] = {}
    if bbox is not None:
        extent["spatial"] = {"bbox": [bbox], "crs": CRS84}
    if times is not None:
        extent["temporal"] = {"interval": [times]}
    return {**body, "extent": extent}


@router.get(
    "/collections/{collection}/items",
    response_class=GeoJSONResponse,
    summary="Features of a collection: bbox, datetime, property filters, limit/offset",
)
async def collection_items(
    request: Request,
    collection: str,
    principal: Viewer,
    conn: Conn,
    settings: AppSettings,
    bbox: Annotated[str | None, Query(description="minLon,minLat,maxLon,maxLat")] = None,
    datetime: Annotated[str | None, Query(description="instant, or start/end (.. open)")] = None,
    limit: Annotated[int, Query(description=f"features per page (≤ {MAX_LIMIT})")] = 100,
    offset: Annotated[int, Query(description="features to skip")] = 0,
    layout: Annotated[int | None, Query(ge=1, description="grids: default active")] = None,
) -> GeoJSONResponse:
    c = await _collection(conn, collection)
    if limit < 1 or offset < 0:
        raise BadRequest("limit must be ≥ 1 and offset ≥ 0")
    try:
        box, time = parse_bbox(bbox), parse_datetime(datetime)
    except OgcParamError as exc:
        raise BadRequest(str(exc)) from exc
    q = fc.ItemQuery(
        bbox=box,
        time=time,
        filters=_filters(c, request),
        layout=await _layout(conn, principal.scope, layout) if c.uses_layout else None,
        limit=min(limit, MAX_LIMIT),
        offset=offset,
        extra=_extra(settings),
    )
    matched, features = await fc.items(conn, c, principal.scope, q)
    base = _base(request)
    url = f"{base}/collections/{c.id}/items"
    links = page_links(
        url,
        list(request.query_params.multi_items()),
        offset=offset,
        limit=q.limit,
        returned=len(features),
        matched=matched,
    )
    links.append(
        {"href": f"{base}/collections/{c.id}", "rel": "collection", "type": "application/json"}
    )
    return GeoJSONResponse(
        {
            "type": "FeatureCollection",
            "features": features,
            "numberMatched": matched,
            "numberReturned": len(features),
            "links": links,
        }
    )


@router.get(
    "/collections/{collection}/items/{fid}",
    response_class=GeoJSONResponse,
    summary="One feature (404 when missing or outside your scope)",
)
async def collection_item(
    request: Request,
    collection: str,
    fid: str,
    principal: Viewer,
    conn: Conn,
    settings: AppSettings,
    layout: Annotated[int | None, Query(ge=1, description="grids: default active")] = None,
) -> GeoJSONResponse:
    c = await _collection(conn, collection)
    q = fc.ItemQuery(
        fid=fid,
        layout=await _layout(conn, principal.scope, layout) if c.uses_layout else None,
        limit=1,
        extra=_extra(settings),
    )
    _, features = await fc.items(conn, c, principal.scope, q)
    if not features:
        raise NotFound(f"no {c.id} feature {fid!r}")
    base = _base(request)
    feature = features[0]
    feature["links"] = [
        {"href": f"{base}/collections/{c.id}/items/{fid}", "rel": "self", "type": GEOJSON},
        {"href": f"{base}/collections/{c.id}", "rel": "collection", "type": "application/json"},
    ]
    return GeoJSONResponse(feature)
