"""The grid worker's phone page (网格员, issue 23): ``/m/`` and its service worker ``/m/sw.js``.

The page is one shell, the same for every visitor: it holds no user data and no token, so the
service worker may keep it for offline use. Its script asks ``GET /api/v1/m/me`` who is signed in
(the HTTP-only ``gp_token`` cookie; the answer carries the CSRF value for writes) and shows
either the sign-in form or the worker's tabs. The form posts to ``POST /m/signin``
(``api.routers.mobile``), which answers a bad sign-in with ``signin_page``: this shell with the
reason shown.

Security is that of the other pages (``api.routers.pages``): a Content-Security-Policy with scripts
only from this server (no inline script, no eval), no framing, no referrer. The service worker is
served from ``/m/`` so that its scope is ``/m/`` without a ``Service-Worker-Allowed`` header; it is
JavaScript with ``Cache-Control: no-cache`` (the browser checks it for updates on every visit).
"""

from __future__ import annotations

import json
from html import escape
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from api.routers.pages import html_page, page_headers
from api.settings import Settings
from gis.maps import BASEMAPS

router = APIRouter(tags=["pages"])
STATIC = Path(__file__).resolve().parents[1] / "static" / "m"
# the shell's assets, in load order (the service worker keeps these with the shell)
SCRIPTS = (
    "/static/vendor/leaflet/leaflet.js",
    "/static/maps/gridpatrol.js",
    "/static/m/store.js",
    "/static/m/photos.js",
    "/static/m/gridmap.js",
    "/static/m/outbox.js",
    "/static/m/app.js",
    "/static/m/grid.js",
    "/static/m/patrol.js",
    "/static/m/report.js",
    "/static/m/tasks.js",
)
STYLES = ("/static/vendor/leaflet/leaflet.css", "/static/m/mobile.css")


def basemap_config(settings: Settings) -> dict[str, object]:
    """The basemap the page draws on (the pages' setting; 天地图 without a key → OSM). Tiles
    may fail to load (offline, blocked): the page draws its own features regardless."""
    choice = settings.map.basemap
    if choice == "tianditu" and not settings.map.tianditu_key:
        choice = "osm"
    spec = BASEMAPS[choice]
    return {
        "basemap": choice,
        "tiles": str(spec["tiles"]).replace("{key}", settings.map.tianditu_key or ""),
        "attr": spec["attr"],
        "subdomains": spec.get("subdomains", "abc"),
        "gcj02": spec["crs"] == "gcj02",
    }


def _signin_form(error: str, phone: str) -> str:
    message = f'<p class="m-error" role="alert">{error}</p>' if error else ""
    return f"""
<section id="m-signin" class="m-card" aria-labelledby="m-signin-h">
  <h1 id="m-signin-h">网格员登录 <small>Grid worker sign-in</small></h1>
  {message}
  <p id="m-signin-note" class="m-error" role="alert" hidden></p>
  <form method="post" action="/m/signin" id="m-signin-form">
    <input type="hidden" name="next" value="/m/">
    <label for="m-phone">手机号 <small>Phone number</small></label>
    <input id="m-phone" name="phone" type="tel" inputmode="tel" autocomplete="username"
           value="{escape(phone)}" required maxlength="32">
    <fieldset class="m-how">
      <legend>登录方式 <small>Sign in with</small></legend>
      <label class="m-choice"><input type="radio" name="how" value="password" checked>
        密码 <small>Password</small></label>
      <label class="m-choice"><input type="radio" name="how" value="code">
        一次性验证码 <small>One-time code</small></label>
    </fieldset>
    <div id="m-password-row">
      <label for="m-password">密码 <small>Password</small></label>
      <input id="m-password" name="password" type="password" autocomplete="current-password"
             maxlength="1024">
    </div>
    <div id="m-code-row">
      <label for="m-code">验证码 <small>One-time code (from your administrator)</small></label>
      <input id="m-code" name="code" type="text" inputmode="numeric" autocomplete="one-time-code"
             maxlength="12">
    </div>
    <button type="submit" class="m-primary">登录 Sign in</button>
  </form>
  <p class="m-hint">没有密码？请管理员打印一次性验证码，登录后可自设密码。<br>
  <small>No password? Ask your administrator for a one-time code; after signing in you can set
  your own password.</small></p>
</section>"""


TABS = (
    ("grid", "我的网格", "My grid"),
    ("patrol", "巡查", "Patrol"),
    ("report", "上报", "Report"),
    ("tasks", "任务", "Tasks"),
)


def _app() -> str:
    tabs = "".join(
        f'<button type="button" role="tab" class="m-tab" id="m-tab-{key}" data-tab="{key}" '
        f'aria-controls="m-pane-{key}" aria-selected="false">{zh}<small>{en}</small></button>'
        for key, zh, en in TABS
    )
    return f"""
<section id="m-app" hidden>
  <nav class="m-tabs" role="tablist" aria-label="网格员 Grid worker">{tabs}</nav>
  <div id="m-message" class="m-message" role="status" aria-live="polite"></div>
  <section id="m-password-card" class="m-card" hidden>
    <h2>设置密码 <small>Set your password</small></h2>
    <p class="m-hint">您用一次性验证码登录。设置密码后，下次可直接用手机号和密码登录。<br>
      <small>You signed in with a one-time code; set a password to sign in with next time.</small>
    </p>
    <form id="m-password-form" novalidate>
      <label for="m-new-password">新密码（至少 8 位）<small>New password (8 or more)</small></label>
      <input id="m-new-password" name="password" type="password" autocomplete="new-password"
             minlength="8" maxlength="1024">
      <label for="m-new-again">再输入一次 <small>Once more</small></label>
      <input id="m-new-again" name="again" type="password" autocomplete="new-password"
             maxlength="1024">
      <div id="m-password-error" class="m-error" role="alert" hidden></div>
      <button type="submit" class="m-primary">设置密码 Set password</button>
    </form>
  </section>

  <section id="m-pane-grid" class="m-pane" role="tabpanel" aria-labelledby="m-tab-grid">
    <div class="m-row"><label for="m-grid-pick">网格 <small>Grid</small></label>
      <select id="m-grid-pick"></select>
      <button type="button" id="m-grid-refresh" class="m-secondary">刷新 <small>Refresh</small>
      </button></div>
    <div id="m-grid-error" class="m-error" role="alert" hidden></div>
    <div id="m-map" class="m-map" aria-label="网格地图 grid map"></div>
    <div id="m-basemap-note" class="m-note" hidden>底图无法加载，网格仍显示。
      <small>Basemap tiles cannot load; the grid is drawn anyway.</small></div>
    <div id="m-offline-data" class="m-note" hidden></div>
    <dl id="m-grid-facts" class="m-facts"></dl>
    <h2>本村巡逻车 <small>Village patrol vehicles</small></h2>
    <ul id="m-vehicles" class="m-list"></ul>
  </section>

  <section id="m-pane-patrol" class="m-pane" role="tabpanel" aria-labelledby="m-tab-patrol" hidden>
    <p class="m-hint">巡查打卡：开始后，手机定位会作为步巡轨迹上报（计入网格覆盖）。<br>
      <small>Patrol check-in: while on, the phone's location is sent as your foot patrol
      (it counts in the grid's coverage).</small></p>
    <button type="button" id="m-patrol-toggle" class="m-primary m-big">开始巡查 Start patrol
    </button>
    <dl id="m-patrol-facts" class="m-facts"></dl>
    <div id="m-patrol-error" class="m-error" role="alert" hidden></div>
    <h2>最近巡查 <small>Recent patrols</small></h2>
    <ul id="m-patrols" class="m-list"></ul>
  </section>

  <section id="m-pane-report" class="m-pane" role="tabpanel" aria-labelledby="m-tab-report" hidden>
    <form id="m-report-form" novalidate>
      <label for="m-kind">事件类型 <small>Kind</small></label>
      <select id="m-kind" name="kind" required></select>
      <label for="m-text">情况描述 <small>What happened</small></label>
      <textarea id="m-text" name="text" rows="4" maxlength="2000" required></textarea>
      <label for="m-photo">照片（最多 3 张）<small>Photos (up to 3)</small></label>
      <input id="m-photo" name="photo" type="file" accept="image/*" multiple>
      <div id="m-photo-error" class="m-error" role="alert" hidden></div>
      <ul id="m-photos" class="m-photos"></ul>
      <fieldset class="m-how">
        <legend>位置 <small>Location</small></legend>
        <label class="m-choice"><input type="radio" name="where" value="phone" checked>
          手机定位 <small>Phone's location</small></label>
        <label class="m-choice"><input type="radio" name="where" value="map">
          地图点选 <small>Tap on the map</small></label>
      </fieldset>
      <div id="m-report-map" class="m-map m-map-small" aria-label="点选位置 tap the place"></div>
      <div id="m-where" class="m-hint"></div>
      <div id="m-report-error" class="m-error" role="alert" hidden></div>
      <button type="submit" id="m-report-send" class="m-primary m-big">上报 Send report</button>
    </form>
    <h2>我的上报 <small>My reports</small></h2>
    <ul id="m-reports" class="m-list"></ul>
  </section>

  <section id="m-pane-tasks" class="m-pane" role="tabpanel" aria-labelledby="m-tab-tasks" hidden>
    <ul id="m-tasks" class="m-list"></ul>
  </section>
</section>"""


def shell(settings: Settings, *, error: str = "", phone: str = "") -> str:
    """The page: header, sign-in form, the worker's tabs (hidden until ``/me`` answers)."""
    # JSON in a data block: "<" escaped so that nothing in it can close the tag
    config = json.dumps({**basemap_config(settings), "signinError": bool(error)})
    config = config.replace("<", "\\u003c")
    styles = "".join(f'<link rel="stylesheet" href="{href}">' for href in STYLES)
    scripts = "".join(f'<script src="{src}" defer></script>' for src in SCRIPTS)
    return f"""<!DOCTYPE html><html lang="zh-CN"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1, viewport-fit=cover">
<meta name="theme-color" content="#16324a">
<title>网格员 Grid worker · GridPatrol</title>
<link rel="manifest" href="/static/m/manifest.webmanifest">
<link rel="icon" href="/static/m/icon.svg" type="image/svg+xml">
{styles}
<script type="application/json" id="m-config">{config}</script>
{scripts}</head>
<body class="m-body">
<header class="m-top">
  <span class="m-brand">网格员 <small>GridPatrol</small></span>
  <span id="m-who" class="m-who"></span>
  <span id="m-net" class="m-net m-online" role="status">在线 <small>online</small></span>
  <span id="m-queue" class="m-queue" role="status" hidden></span>
  <form id="m-signout" method="post" action="/m/signout" hidden>
    <input type="hidden" name="csrf" value="">
    <button type="submit" class="m-link">退出 <small>Sign out</small></button></form>
</header>
<main class="m-main">
{_signin_form(error, phone)}
{_app()}
<noscript><p class="m-error">此页面需要 JavaScript。<small>This page needs JavaScript.</small></p>
</noscript>
</main></body></html>"""


def signin_page(
    request: Request, *, error: str = "", phone: str = "", status_code: int = 200
) -> HTMLResponse:
    """The page with the sign-in form showing ``error`` (HTML: the bilingual reason), for
    ``POST /m/signin`` to answer a refused sign-in with."""
    settings: Settings = request.app.state.settings
    return html_page(shell(settings, error=error, phone=phone), status_code=status_code)


@router.get("/m", include_in_schema=False)
async def mobile_no_slash() -> Response:
    return RedirectResponse("/m/", status_code=308, headers=page_headers())


@router.get("/m/", response_class=HTMLResponse, summary="The grid worker's phone page (网格员)")
async def mobile_page(request: Request) -> Response:
    """The page shell (public: it holds no data; the data comes from ``/api/v1/m``)."""
    return signin_page(request)


@router.get(
    "/m/sw.js",
    summary="The phone page's service worker (scope /m/)",
    response_class=Response,
    responses={200: {"content": {"text/javascript": {}}}},
)
async def service_worker() -> Response:
    """The service worker's script, served under ``/m/`` so that its scope is the page's."""
    body = (STATIC / "sw.js").read_bytes()
    return Response(
        body,
        media_type="text/javascript",
        headers={
            "Cache-Control": "no-cache",
            "Service-Worker-Allowed": "/m/",
            "X-Content-Type-Options": "nosniff",
        },
    )
