"""Domain errors, mapped to HTTP status codes in one place (``install_handlers``)."""

from __future__ import annotations

import logging
import math
import re
import tempfile
from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("gridpatrol")
# The database cannot answer right now (down, restarting, terminated the session, out of disk,
# read-only, pool exhausted — psycopg_pool.PoolTimeout is an OperationalError): 503, retry later.
DB_UNAVAILABLE = (psycopg.OperationalError, psycopg.errors.ReadOnlySqlTransaction)


class DomainError(Exception):
    """Base of errors a user can act on; ``status`` is the HTTP code, ``code`` a stable key."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra

    def body(self) -> dict[str, Any]:
        return {"error": self.code, "detail": self.message, **self.extra}


class BadRequest(DomainError):
    status = 400
    code = "bad_request"


class Unauthorized(DomainError):
    status = 401
    code = "unauthorized"


class Forbidden(DomainError):
    status = 403
    code = "forbidden"


class NotFound(DomainError):
    status = 404
    code = "not_found"


class Conflict(DomainError):
    status = 409
    code = "conflict"


class PayloadTooLarge(DomainError):
    status = 413
    code = "payload_too_large"


class UnsupportedMediaType(DomainError):
    status = 415
    code = "unsupported_media_type"


class Unprocessable(DomainError):
    status = 422
    code = "unprocessable"


class TooManyRequests(DomainError):
    status = 429
    code = "too_many_requests"


class Unavailable(DomainError):
    status = 503
    code = "unavailable"


def json_safe(value: Any) -> Any:
    """``value`` with every non-finite float (NaN, ±Infinity, which JSON cannot carry) as the
    string JavaScript would print, so an error that quotes a bad input can always be sent."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


# Server paths an exception message may carry (a parser naming its temporary file): never shown
_TEMP_PATH = re.compile(
    r"(?:/vsi(?:zip|mem|tar|gzip)/)+[^\s'\":,;)]*"
    rf"|{re.escape(tempfile.gettempdir().rstrip('/'))}/[^\s'\":,;)]*"
)


# GDAL's advice to prefix "the file path" with a driver: about the server's path, not the upload
_GDAL_HINT = re.compile(
    r";? ?It might help to specify the correct driver explicitly by prefixing[^\n]*"
)


def scrub_paths(text: str, name: str = "the upload") -> str:
    """``text`` with server temp paths (``/tmp/tmpab12/upload.gpkg``, ``/vsimem/…``) replaced by
    ``name`` (the uploaded file's name), so an error message names the upload, not the server."""
    return _GDAL_HINT.sub("", _TEMP_PATH.sub(name, text))


def _html(request: Request, status: int, detail: Any, headers: dict[str, str] | None) -> Response:
    """A browser's answer for an error (``api.web``): 401 → the sign-in page, with ``next``;
    others → a page saying what happened and what to do. API clients never get here."""
    from api import web  # noqa: PLC0415 - web → auth → errors: imported when first needed
    from api.routers.pages import html_page, page_headers  # noqa: PLC0415

    if status == 401:
        return RedirectResponse(
            web.sign_in_redirect_target(request), status_code=303, headers=page_headers()
        )
    page = html_page(web.error_page(request, status, detail), status_code=status)
    for key, value in (headers or {}).items():
        if key.lower() != "www-authenticate":
            page.headers[key] = value
    return page


def _wants_html(request: Request) -> bool:
    from api.web import prefers_html  # noqa: PLC0415 - see _html

    return prefers_html(request)


async def _domain_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, DomainError)  # noqa: S101 - registered for DomainError only
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    if exc.status == 503:
        headers = {"Retry-After": "5"}
    if exc.status == 429:
        headers = {"Retry-After": str(exc.extra.get("retry_after_s", 1))}
    body = json_safe(exc.body())
    if isinstance(body.get("detail"), str):
        body["detail"] = scrub_paths(body["detail"])
    if _wants_html(request):
        return _html(request, exc.status, body["detail"], headers)
    return JSONResponse(body, status_code=exc.status, headers=headers)


async def _validation_error(request: Request, exc: Exception) -> Response:
    """FastAPI's 422 for a request that fails its model, safe for inputs JSON cannot carry:
    a body with ``NaN`` or ``Infinity`` (Python's JSON reader accepts them) is named, not a 500."""
    assert isinstance(exc, RequestValidationError)  # noqa: S101 - registered for it only
    errors = json_safe(jsonable_encoder(json_safe(list(exc.errors()))))
    if _wants_html(request):
        return _html(request, 422, errors, None)
    return JSONResponse({"detail": errors}, status_code=422)


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own errors (an unknown address 404, a wrong method 405): FastAPI's JSON for
    API clients, unchanged; the error page for browsers."""
    assert isinstance(exc, StarletteHTTPException)  # noqa: S101 - registered for it only
    if _wants_html(request) and exc.status_code >= 400:
        return _html(request, exc.status_code, exc.detail, dict(exc.headers or {}))
    return await http_exception_handler(request, exc)


async def _db_unavailable(request: Request, exc: Exception) -> Response:
    log.warning("%s %s: database unavailable: %s", request.method, request.url.path, exc)
    body = Unavailable("the database is unavailable; retry shortly").body()
    if _wants_html(request):
        return _html(request, 503, body["detail"], {"Retry-After": "5"})
    return JSONResponse(body, status_code=503, headers={"Retry-After": "5"})


async def _data_error(request: Request, exc: Exception) -> Response:
    """SQLSTATE class 22 (a value the database cannot hold: out-of-range times or numbers, bad
    text): the request carried it, so 422 — a safety net behind the routes' own validation."""
    log.warning("%s %s: data error: %s", request.method, request.url.path, exc)
    detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    body = Unprocessable(f"a value is out of range or malformed: {detail}").body()
    if _wants_html(request):
        return _html(request, 422, body["detail"], None)
    return JSONResponse(body, status_code=422)


async def _overflow(request: Request, exc: Exception) -> Response:
    """Date arithmetic on a day near 0001-01-01 or 9999-12-31 (``?to=0001-01-01`` minus a
    window): the request's date is out of range, so 422."""
    log.warning("%s %s: overflow: %s", request.method, request.url.path, exc)
    body = Unprocessable(f"a date or number is out of range ({exc})").body()
    if _wants_html(request):
        return _html(request, 422, body["detail"], None)
    return JSONResponse(body, status_code=422)


def install_handlers(app: FastAPI) -> None:
    app.add_exception_handler(DomainError, _domain_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(psycopg.errors.DataError, _data_error)
    app.add_exception_handler(OverflowError, _overflow)
    for error in DB_UNAVAILABLE:
        app.add_exception_handler(error, _db_unavailable)
