"""The front door: ``/`` signs people in (name + password → the session cookie) and, signed in,
is their home page — cards for every page their role opens, and the live figures of their scope.
Also sign-out, the device and user lists, and the API docs served from our own copies.

Sign-in is an HTML form posted to ``/signin``: a public route taking a body (so it is in
``api.limits.PUBLIC_BODY_ROUTES``, 64 KB), limited per name and per address like
``POST /api/v1/auth/token``, and accepted only from our own page (``Origin``/``Referer`` of this
server, not a cross-site ``Sec-Fetch-Site``) so another site cannot sign a browser into an
account of its choosing. The session is a 12-hour sign-in token in the HTTP-only,
``SameSite=Strict`` cookie the map pages use; no page script ever sees it. Sign-out posts the
page's CSRF value, revokes a sign-in token (a CLI token opened with ``?token=`` stays valid:
only the cookie is dropped) and clears the cookie. ``/?token=…`` links (from the CLI) work as
on the map pages.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from html import escape
from typing import Annotated, Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Depends, Query, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from api import audit, users
from api.auth import (
    COOKIE,
    Admin,
    Principal,
    RequireRole,
    TokenInAddressRefused,
    Viewer,
    csrf_token,
    notify_token_change,
    token_hash,
)
from api.coverage.update import CoverageUpdater
from api.deps import AppSettings, Conn, Pool
from api.errors import Forbidden, TooManyRequests, Unauthorized
from api.figures import Thresholds, as_local, device_list, scope_figures, scope_names
from api.forwarded import client_address, is_https, origin
from api.ratelimit import SignInLimiter
from api.routers.pages import COOKIE_MAX_AGE_S, html_page, page_headers, token_redirect
from api.settings import Settings
from api.web import LINKS, ROLE_LABELS, error_page, next_path, shell, with_nav
from gis.maps_common import FRESHNESS_LABELS
from gis.units import china_today

router = APIRouter(tags=["pages"])
VENDOR = "/static/vendor"
_viewer = RequireRole("viewer")


async def optional_viewer(request: Request) -> Principal | None:
    """The signed-in user, or None (no session, an expired one, a device token). A bad
    ``?token=`` is still a 401 page (never silently ignored)."""
    try:
        return await _viewer(request)
    except TokenInAddressRefused:
        raise
    except (Unauthorized, Forbidden):
        return None


MaybeViewer = Annotated[Principal | None, Depends(optional_viewer)]


# ---- sign-in ------------------------------------------------------------------------------------
def _sign_in_page(request: Request, *, next_to: str, error: str = "", name: str = "") -> str:
    message = f'<p class="gp-error" role="alert">{error}</p>' if error else ""
    body = f"""
<section class="gp-signin">
  <h1>登录 <small>Sign in</small></h1>
  <p class="gp-sub">GridPatrol 网格化管理与巡逻 · grid management and patrol tracking</p>
  {message}
  <form method="post" action="/signin">
    <input type="hidden" name="next" value="{escape(next_to)}">
    <label for="gp-name">用户名 <small>User name</small></label>
    <input id="gp-name" type="text" name="name" value="{escape(name)}" autocomplete="username"
           required maxlength="256" autofocus>
    <label for="gp-password">密码 <small>Password</small></label>
    <input id="gp-password" type="password" name="password" autocomplete="current-password"
           required maxlength="1024">
    <button type="submit">登录 Sign in</button>
  </form>
  <p class="gp-sub" style="margin-top:16px">没有密码？管理员可用
  <code>gridpatrol users add 名称 --role … --scope … --password …</code> 创建用户，或用命令行给出的
  <code>/?token=…</code> 链接打开。<br>No password? An administrator creates users with
  <code>gridpatrol users add NAME --role … --scope … --password …</code>; a
  <code>/?token=…</code> link from the command line opens the pages too.</p>
</section>"""
    return shell(request, "登录 Sign in", body, principal=None)


def _from_our_page(request: Request) -> bool:
    """A form post that came from a page of this server (not another site's form).

    ``Sec-Fetch-Site`` (set by the browser, never by a page) must not say another site; an
    ``Origin`` must be ours. Our pages send ``Referrer-Policy: no-referrer``, under which a
    browser posts a form with ``Origin: null`` and no ``Referer``: then ``Sec-Fetch-Site:
    same-origin`` is what shows the form was ours."""
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return False
    sent = request.headers.get("origin")
    if sent is None or sent == "null":
        referer = request.headers.get("referer", "")
        parts = referer.split("/", 3)
        sent = "/".join(parts[:3]) if referer.startswith(("http://", "https://")) else None
    if sent is None:
        return site == "same-origin"
    return sent.lower() == origin(request)


async def _form(request: Request) -> dict[str, str]:
    """The posted form's fields (one value each), a URL-encoded body of at most 64 KB (the
    body guard refused larger ones before it was read)."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        return {}
    try:
        text = (await request.body()).decode("utf-8")
        fields = parse_qs(text, max_num_fields=10, keep_blank_values=True)
    except (UnicodeDecodeError, ValueError):
        return {}
    return {key: values[0] for key, values in fields.items() if values}


def _set_session(response: Response, request: Request, token: str) -> None:
    response.set_cookie(
        COOKIE,
        token,
        httponly=True,
        samesite="strict",
        secure=is_https(request),
        max_age=COOKIE_MAX_AGE_S,
        path="/",
    )


@router.post("/signin", response_class=HTMLResponse, summary="Sign in from the front door (form)")
async def sign_in(request: Request, pool: Pool) -> Response:
    """Name and password (form fields ``name``, ``password``, ``next``) → the session cookie and
    a redirect to ``next`` (a local address) or the home page; else the form with the reason."""
    form = await _form(request)
    name, password = form.get("name", ""), form.get("password", "")
    next_to = next_path(form.get("next"))

    def again(status: int, zh: str, en: str) -> Response:
        page = _sign_in_page(request, next_to=next_to, error=f"{zh}<br>{en}", name=name)
        return html_page(page, status_code=status)

    if not _from_our_page(request):
        return again(403, "请从本站的登录页登录。", "Sign in from this server's own sign-in page.")
    if not name or not password or len(name) > 256 or len(password) > 1024:
        return again(422, "请输入用户名和密码。", "Enter your user name and password.")
    limiter: SignInLimiter = request.app.state.login_limiter
    try:
        limiter.check(client_address(request), name)
        token = await users.login(pool, name, password)
    except TooManyRequests as exc:
        wait = exc.extra.get("retry_after_s", 1)
        page = again(
            429,
            f"登录尝试过多，请 {wait} 秒后再试。",
            f"Too many sign-in attempts; try again in {wait} s.",
        )
        page.headers["Retry-After"] = str(wait)
        return page
    except Unauthorized:
        return again(401, "用户名或密码错误。", "Wrong user name or password.")
    response = RedirectResponse(next_to, status_code=303, headers=page_headers())
    _set_session(response, request, token)
    return response


@router.post("/signout", response_class=HTMLResponse, summary="Sign out (form with the CSRF value)")
async def sign_out(request: Request, pool: Pool) -> Response:
    """End the session: a sign-in token is revoked, the cookie cleared; then the sign-in page."""
    token = request.cookies.get(COOKIE)
    form = await _form(request)
    response = RedirectResponse("/", status_code=303, headers=page_headers())
    if token:
        if not _from_our_page(request) or form.get("csrf", "") != csrf_token(token):
            page = error_page(request, 403, "sign out from this server's own page (CSRF check)")
            return html_page(page, status_code=403)
        principal = await request.app.state.tokens.resolve(token)
        async with pool.connection() as conn, conn.transaction():
            revoked = await (
                await conn.execute(
                    "UPDATE api_token SET revoked_at = now() WHERE token_hash = %s "
                    "AND label = 'login' AND revoked_at IS NULL RETURNING id",
                    (token_hash(token),),
                )
            ).fetchone()
            if revoked is not None:
                await notify_token_change(conn)
                if principal is not None:
                    await audit.record(
                        conn,
                        principal,
                        "token.logout",
                        object_type="user",
                        object_id=principal.user_id,
                    )
        request.app.state.tokens.forget()
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
    return response


# ---- home ---------------------------------------------------------------------------------------
def _figure(value: Any, zh: str, en: str, cls: str = "", key: str = "") -> str:
    shown = "—" if value is None else escape(str(value))
    return (
        f'<div class="gp-figure {cls}" data-figure="{key}"><div class="gp-value">{shown}</div>'
        f'<div class="gp-label">{zh}<br><small>{en}</small></div></div>'
    )


INCIDENT_LABELS = {
    "new": ("待派警", "new"),
    "dispatched": ("已派警", "dispatched"),
    "accepted": ("已接警", "accepted"),
    "arrived": ("已到场", "arrived"),
}


def _figures_html(figures: dict[str, Any], settings: Settings) -> str:
    v, inc, cov, ref = (
        figures["vehicles"],
        figures["incidents"],
        figures["coverage"],
        figures["refused"],
    )
    fresh_min = settings.map.vehicle_fresh_s / 60
    offline_h = settings.map.vehicle_offline_s / 3600
    vehicles = "".join(
        (
            _figure(
                v["online"],
                "在线车辆",
                f"vehicles online (< {fresh_min:g} min)",
                "gp-online",
                "vehicles.online",
            ),
            _figure(v["stale"], "定位延迟", "vehicles stale", "gp-stale", "vehicles.stale"),
            _figure(
                v["offline"],
                "离线车辆",
                f"vehicles offline (> {offline_h:g} h or never)",
                "gp-offline",
                "vehicles.offline",
            ),
            _figure(v["total"], "车辆总数", "vehicles in all", "", "vehicles.total"),
        )
    )
    incidents = "".join(
        _figure(
            inc["open"][status],
            zh,
            f"incidents {en}",
            "gp-alert" if status == "new" else "",
            f"incidents.{status}",
        )
        for status, (zh, en) in INCIDENT_LABELS.items()
    )
    incidents += _figure(
        inc["created_today"], "今日新警情", "incidents today", "", "incidents.today"
    )
    incidents += _figure(
        inc["cleared_today"], "今日已处置", "cleared today", "", "incidents.cleared_today"
    )
    pct = None if cov["pct"] is None else f"{cov['pct']:.1f} %"
    coverage = _figure(pct, "今日网格覆盖率", "coverage today", "", "coverage.pct")
    coverage += _figure(
        f"{cov['grids_patrolled']} / {cov['grids']}" if cov["layout"] else None,
        "今日已巡网格",
        "grids patrolled today",
        "",
        "coverage.grids",
    )
    refused = _figure(
        ref["devices"], "今日被拒设备", "devices refused today", "gp-alert", "refused.devices"
    )
    refused += _figure(ref["fixes"], "今日被拒定位", "fixes refused today", "", "refused.fixes")
    return (
        f'<h2>车辆 <small>Vehicles</small></h2><div class="gp-figures">{vehicles}</div>'
        f'<h2>未结警情 <small>Open incidents</small></h2><div class="gp-figures">{incidents}</div>'
        f"<h2>今日巡逻与接入 <small>Today: patrol and ingest</small></h2>"
        f'<div class="gp-figures">{coverage}{refused}</div>'
    )


def _cards_html(principal: Principal) -> str:
    cards = []
    for link in LINKS:
        if link.key == "home":
            continue
        title = f"<h3>{link.zh} <small>{link.en}</small></h3>"
        about = f"<p>{link.about_zh}<br>{link.about_en}</p>"
        if link.allowed(principal):
            cards.append(
                f'<a class="gp-card" data-card="{link.key}" href="{link.href}">{title}{about}</a>'
            )
        else:
            need = ROLE_LABELS.get(link.role or "", link.role or "")
            cards.append(
                f'<div class="gp-card gp-locked" data-card="{link.key}" aria-disabled="true">'
                f"{title}{about}<p>需要角色 requires role: {escape(need)}</p></div>"
            )
    if principal.role in ("viewer", "dispatcher", "planner", "admin"):
        cards.append(
            '<a class="gp-card" data-card="redoc" href="/redoc"><h3>ReDoc <small>API reference'
            "</small></h3><p>API 参考文档（只读版式）<br>The API reference, for reading</p></a>"
        )
    return f'<div class="gp-cards">{"".join(cards)}</div>'


@router.get("/api/v1/summary", summary="Live figures of your scope (the home page's)")
async def summary(request: Request, principal: Viewer, conn: Conn, settings: AppSettings) -> Any:
    """Vehicles online / stale / offline, open incidents by status (and today's), today's
    coverage of the active patrol layout, fixes and devices refused today — in your scope."""
    updater: CoverageUpdater = request.app.state.coverage
    return await scope_figures(
        conn, principal.scope, thresholds=Thresholds.of(settings.map), updater=updater
    )


@router.get("/", response_class=HTMLResponse, summary="Front door: sign in, or your home page")
async def front_door(
    request: Request,
    principal: MaybeViewer,
    pool: Pool,
    settings: AppSettings,
    next_to: Annotated[str | None, Query(alias="next", max_length=2000)] = None,
) -> Response:
    if principal is None:
        page = html_page(_sign_in_page(request, next_to=next_path(next_to)))
        if request.cookies.get(COOKIE):  # an expired or revoked session: forget it
            page.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
        return page
    if (redirect := token_redirect(request)) is not None:
        return redirect
    if next_to and next_path(next_to) != "/":  # signed in already: go where the link meant
        return RedirectResponse(next_path(next_to), status_code=303, headers=page_headers())
    updater: CoverageUpdater = request.app.state.coverage
    async with pool.connection() as conn:
        figures = await scope_figures(
            conn, principal.scope, thresholds=Thresholds.of(settings.map), updater=updater
        )
        scope = await scope_names(conn, principal.scope)
    role = ROLE_LABELS.get(principal.role, principal.role)
    body = (
        f"<h1>您好，{escape(principal.name)} <small>Welcome</small></h1>"
        f'<p class="gp-sub" id="gp-scope">{escape(role)} · 数据范围 scope: '
        f"{escape('、'.join(scope))} · {figures['day']} · 更新于 updated "
        f'<span id="gp-updated">{as_local(datetime.now(UTC))[11:]}</span>（北京时间 China '
        "time; 每 30 秒刷新 refreshed every 30 s）</p>"
        f"{_figures_html(figures, settings)}"
        f"<h2>页面 <small>Pages</small></h2>{_cards_html(principal)}"
    )
    body += '<script src="/static/home/home.js"></script>'
    return html_page(shell(request, "首页 Home", body, principal=principal))


# ---- devices and users --------------------------------------------------------------------------
def _speed(value: float | None) -> str:
    return "" if value is None else f"{value:.0f}"


KIND_LABELS = {"vehicle": "车辆 vehicle", "handheld": "手持 handheld", "phone": "手机 phone"}
DEVICE_LIMIT = 500


@router.get("/devices", response_class=HTMLResponse, summary="Devices in your scope (page)")
async def devices_page(
    request: Request,
    principal: Viewer,
    conn: Conn,
    settings: AppSettings,
    q: Annotated[
        str | None, Query(max_length=64, description="part of plate, id or village")
    ] = None,
    status: Annotated[str | None, Query(pattern="^(live|stale|offline)$")] = None,
) -> Response:
    if (redirect := token_redirect(request)) is not None:
        return redirect
    rows, total = await device_list(
        conn,
        principal.scope,
        thresholds=Thresholds.of(settings.map),
        search=q,
        freshness=status,
        limit=DEVICE_LIMIT,
    )
    today = china_today()
    yesterday = today - timedelta(days=1)
    lines = []
    for r in rows:
        track = f"/maps/track?device={r['id']}&amp;day="
        lines.append(
            f'<tr data-device="{r["id"]}"><td>{escape(r["plate"] or "")}</td>'
            f"<td>{escape(r['name'] or '')}</td><td>{escape(r['identifier'])}</td>"
            f"<td>{escape(KIND_LABELS.get(r['kind'], r['kind']))}</td>"
            f"<td>{escape(r['village'] or r['home_village'] or '')}</td>"
            f'<td><span class="gp-tag {r["freshness"]}">'
            f"{FRESHNESS_LABELS[r['freshness']]}</span></td>"
            f"<td>{as_local(r['fix_time'])}</td>"
            f'<td class="num">{_speed(r["speed"])}</td>'
            f'<td><a href="{track}{today}">今日 today</a> · '
            f'<a href="{track}{yesterday}">昨日 yesterday</a></td></tr>'
        )
    options = "".join(
        f'<option value="{key}"{" selected" if key == status else ""}>{label}</option>'
        for key, label in FRESHNESS_LABELS.items()
    )
    shown = (
        f"共 {total} 台 · {total} devices"
        if total <= DEVICE_LIMIT
        else f"显示前 {DEVICE_LIMIT} / 共 {total} 台，请用搜索缩小范围 · "
        f"first {DEVICE_LIMIT} of {total}; search to narrow"
    )
    picks = "".join(
        f'<option value="{r["id"]}">{escape(r["plate"] or r["identifier"])}</option>' for r in rows
    )
    body = f"""
<h1>设备 <small>Devices</small></h1>
<form class="gp-form" method="get" action="/devices">
  <label>搜索 Search<input type="search" name="q" value="{escape(q or "")}"
         placeholder="车牌、编号、嘎查村 plate, id, village"></label>
  <label>状态 Status<select name="status"><option value="">全部 all</option>{options}</select>
  </label><button type="submit">查询 Search</button>
</form>
<h2 id="track">轨迹回放 <small>Track replay</small></h2>
<form class="gp-form" method="get" action="/maps/track">
  <label>车辆 Vehicle<select name="device" required>{picks}</select></label>
  <label>日期 Day<input type="date" name="day" value="{today}" max="{today}"></label>
  <button type="submit">回放 Replay</button>
</form>
<h2>列表 <small>List</small></h2><p class="gp-sub">{shown}</p>
<table class="gp-list"><thead><tr><th>车牌 Plate</th><th>名称 Name</th><th>编号 Identifier</th>
<th>类型 Kind</th><th>嘎查村 Village</th><th>状态 Status</th><th>最后定位 Last fix (UTC+8)</th>
<th>速度 km/h</th><th>轨迹 Track</th></tr></thead><tbody>{"".join(lines)}</tbody></table>"""
    return html_page(shell(request, "设备 Devices", body, principal=principal))


@router.get("/users", response_class=HTMLResponse, summary="Users inside your scope (page)")
async def users_page(request: Request, principal: Admin, conn: Conn) -> Response:
    if (redirect := token_redirect(request)) is not None:
        return redirect
    rows = await users.list_users(conn, principal)
    lines = "".join(
        f"<tr><td>{escape(r['name'])}</td><td>{escape(r['display_name'] or '')}</td>"
        f"<td>{escape(ROLE_LABELS.get(r['role'], r['role']))}</td>"
        f"<td>{escape(' '.join(r['scope'] or []))}</td>"
        f"<td>{'停用 disabled' if r['disabled'] else '启用 enabled'}</td>"
        f"<td>{as_local(r['created_at'])}</td></tr>"
        for r in rows
    )
    body = f"""
<h1>用户 <small>Users</small></h1>
<p class="gp-sub">您数据范围内的用户 · users whose scope lies inside yours ({len(rows)})</p>
<table class="gp-list"><thead><tr><th>用户名 Name</th><th>姓名 Display name</th><th>角色 Role</th>
<th>数据范围 Scope</th><th>状态 State</th><th>创建 Created (UTC+8)</th></tr></thead>
<tbody>{lines}</tbody></table>
<p class="gp-sub">新增用户 Add a user: <code>gridpatrol users add NAME --role dispatcher
--scope 152502100 --password …</code> · <code>POST /api/v1/users</code>;
停用 disable: <code>DELETE /api/v1/users/NAME</code>.</p>"""
    return html_page(shell(request, "用户 Users", body, principal=principal))


# ---- API docs (vendored Swagger UI and ReDoc: no CDN) -------------------------------------------
def _docs_page(html: str, request: Request) -> Response:
    return html_page(with_nav(html, request, map_page=False))


@router.get("/docs", response_class=HTMLResponse, include_in_schema=False)
async def swagger_ui(request: Request, principal: MaybeViewer) -> Response:
    del principal  # resolved for the bar (who is signed in); the docs are public
    title = f"{request.app.title} · API 文档 API docs"
    page = get_swagger_ui_html(
        openapi_url=request.app.openapi_url or "/openapi.json",
        title=title,
        swagger_js_url=f"{VENDOR}/swagger-ui/swagger-ui-bundle.js",
        swagger_css_url=f"{VENDOR}/swagger-ui/swagger-ui.css",
        swagger_favicon_url=f"{VENDOR}/swagger-ui/favicon-32x32.png",
        swagger_ui_parameters={"validatorUrl": None},  # no badge from validator.swagger.io
    )
    return _docs_page(bytes(page.body).decode(), request)


@router.get("/redoc", response_class=HTMLResponse, include_in_schema=False)
async def redoc(request: Request, principal: MaybeViewer) -> Response:
    del principal
    page = get_redoc_html(
        openapi_url=request.app.openapi_url or "/openapi.json",
        title=f"{request.app.title} · ReDoc",
        redoc_js_url=f"{VENDOR}/redoc/redoc.standalone.js",
        redoc_favicon_url=f"{VENDOR}/swagger-ui/favicon-32x32.png",
        with_google_fonts=False,
    )
    response = _docs_page(bytes(page.body).decode(), request)
    # ReDoc searches in a worker it builds from a blob: of its own (trusted) script
    response.headers["Content-Security-Policy"] += "; worker-src 'self' blob:"
    return response
