"""Map pages for people (folium, served with local assets so they work offline).

A page opened as ``/map?token=…`` stores the token in a same-site, HTTP-only cookie and redirects
to the clean address, so the token does not linger in the address bar or history. The token is
checked first (``?token=`` goes before any cookie): an invalid one gets a 401 page and no cookie,
so a link cannot swap someone's session for a made-up one. Pages never carry the token in their
script; their calls use the cookie, writes with the page's CSRF token (``api.auth.check_csrf``).

Every page is sent with a Content-Security-Policy: scripts only from this server or inline
with the response's nonce (folium writes its map as inline script), no inline event handlers,
``frame-ancestors 'none'`` (and ``X-Frame-Options: DENY``) against clickjacking, data calls
only to this server. Styles allow ``'unsafe-inline'``: folium, Leaflet and its plugins write
``style`` attributes and ``<style>`` blocks throughout; styles cannot run code. Basemap tiles
come from their providers over https (``img-src https:``).
"""

from __future__ import annotations

import re
import secrets
from html import escape
from typing import Annotated
from urllib.parse import urlencode

import folium
from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from api import admin_areas
from api.auth import COOKIE, TokenInAddressRefused, Viewer
from api.deps import Conn
from api.forwarded import is_https, trusted_networks
from api.web import with_nav
from gis import maps

router = APIRouter(tags=["pages"])

XILINGOL_CENTER = (44.2, 115.5)
COOKIE_MAX_AGE_S = 12 * 3600
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
}
_SCRIPT_TAG = re.compile(r"<script\b", re.IGNORECASE)


def content_security_policy(nonce: str) -> str:
    """The pages' policy (see the module's doc for why each part is as it is)."""
    return "; ".join(
        (
            "default-src 'self'",
            f"script-src 'self' 'nonce-{nonce}'",
            "style-src 'self' 'unsafe-inline'",
            "img-src 'self' data: blob: https:",
            "connect-src 'self'",
            "font-src 'self' data:",
            "object-src 'none'",
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        )
    )


def page_headers(nonce: str | None = None) -> dict[str, str]:
    """Headers of every page and page redirect (a fresh ``nonce`` per response)."""
    return {
        **PAGE_HEADERS,
        "Content-Security-Policy": content_security_policy(nonce or secrets.token_urlsafe(18)),
    }


def html_page(html: str, status_code: int = 200, *, request: Request | None = None) -> HTMLResponse:
    """A page with its security headers; every ``<script>`` of the page gets this response's
    nonce (they are all the server's own: folium's map script, the page configuration and
    the links to ``/static``; data inside them is JSON-escaped, so it cannot open a tag).
    With the ``request``, a map page gets the navigation bar (``api.web``) on top."""
    if request is not None:
        html = with_nav(html, request)
    nonce = secrets.token_urlsafe(18)
    body = _SCRIPT_TAG.sub(f'<script nonce="{nonce}"', html)
    return HTMLResponse(body, status_code=status_code, headers=page_headers(nonce))


def token_redirect(request: Request) -> Response | None:
    """When the token came in the query string, move it to a cookie and redirect.

    The route's role dependency has resolved exactly this token (a ``?token=`` goes before
    the cookie), so it is valid; when the principal came from an ``Authorization`` header
    instead, the query's token was not checked and is not stored."""
    token = request.query_params.get("token")
    if not token:
        return None
    if request.headers.get("sec-fetch-site") in ("cross-site", "same-site"):
        # A link on another site: it could carry someone else's valid token (login CSRF).
        # Store nothing; the user confirms with a click on our own page (same-origin).
        here = f"{request.url.path}?{request.url.query}"
        return html_page(CONFIRM_PAGE.format(href=escape(here)))
    params = [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
    clean = request.url.path + ("?" + urlencode(params) if params else "")
    response = RedirectResponse(clean, status_code=303, headers=page_headers())
    if getattr(request.state, "token_source", None) == "query":
        response.set_cookie(
            COOKIE,
            token,
            httponly=True,
            samesite="strict",
            secure=is_https(request),
            max_age=COOKIE_MAX_AGE_S,
            path="/",
        )
    return response


CONFIRM_PAGE = """<!DOCTYPE html><html><head><meta charset="utf-8">
<title>GridPatrol</title></head><body style="font:15px sans-serif;margin:2em">
<h1>GridPatrol</h1><p>您从其他网站打开了带令牌的链接。只有在您信任该链接时才继续。<br>
You followed a link with a sign-in token from another site. Continue only if you trust it.</p>
<p><a href="{href}">继续 Continue</a></p></body></html>"""

UNAUTHORIZED_PAGE = """<!DOCTYPE html><html><head><meta charset="utf-8">
<title>GridPatrol · 401</title></head><body style="font:15px sans-serif;margin:2em">
<h1>401 · 令牌无效 Invalid token</h1><p>{detail}</p>
<p>该链接中的令牌无效、已过期或已吊销。请向管理员索取新的令牌。<br>
The token in this link is invalid, expired or revoked; ask an administrator for a new one.</p>
</body></html>"""


async def _refused_token(request: Request, exc: Exception) -> Response:
    """A bad ``?token=``: 401, no cookie set; an HTML page for browsers, JSON otherwise."""
    assert isinstance(exc, TokenInAddressRefused)  # noqa: S101 - registered for it only
    if "text/html" in request.headers.get("accept", ""):
        page = html_page(UNAUTHORIZED_PAGE.format(detail=escape(exc.message)), status_code=401)
        page.headers["WWW-Authenticate"] = "Bearer"
        return page
    return JSONResponse(
        exc.body(), status_code=401, headers={**page_headers(), "WWW-Authenticate": "Bearer"}
    )


def install_web_security(app: FastAPI) -> None:
    """Check ``GRIDPATROL_API_TRUSTED_PROXIES`` (a bad entry fails at start) and register the
    401 page for a refused ``?token=`` (more specific than the JSON ``Unauthorized``)."""
    trusted_networks(app.state.settings.api.trusted_proxies)
    app.add_exception_handler(TokenInAddressRefused, _refused_token)


@router.get("/map", response_class=HTMLResponse, summary="Admin areas map (县/乡/村)")
async def admin_map(
    request: Request,
    principal: Viewer,
    conn: Conn,
    basemap: Annotated[str, Query(pattern="^(osm|tianditu|amap)$")] = "osm",
) -> Response:
    if (redirect := token_redirect(request)) is not None:
        return redirect
    fmap = maps.base_map(XILINGOL_CENTER, zoom=7, basemap=basemap)
    any_synthetic = False
    for level, tol, show in (
        ("county", 200.0, True),
        ("township", 150.0, True),
        ("village", 80.0, False),
    ):
        frame = await admin_areas.frame(conn, principal.scope, level=level, simplify_m=tol)
        if frame.empty:
            continue
        any_synthetic = any_synthetic or bool(frame["synthetic"].any())
        maps.admin_area_layer(frame, level, show=show).add_to(fmap)
    if any_synthetic:
        maps.add_html(
            fmap,
            maps.synthetic_banner(
                "苏木乡镇与嘎查村边界为<b>合成演示数据</b>（名称与代码为国家统计局2023真实数据）。<br>"
                "Township and village boundaries are <b>synthetic demo data</b> "
                "(names and codes are real NBS 2023)."
            ),
        )
    folium.LayerControl(collapsed=False).add_to(fmap)
    return html_page(maps.render(fmap, title="GridPatrol · 行政区划 Admin areas"), request=request)
