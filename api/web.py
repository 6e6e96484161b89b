"""What every page for people shares: the navigation bar, the page shell, the HTML error page.

A browser (a request whose ``Accept`` prefers ``text/html``) never gets raw JSON: a missing
session becomes a redirect to the sign-in page at ``/?next=…``, other errors a page in 中文 and
English saying what happened and what to do. API clients (``Accept: application/json``, ``*/*``
or none) keep the JSON answers (``api.errors``).

The bar holds no script: sign-out is a form posting the page's CSRF value (``POST /signout``).
Links a role cannot use are not shown; the home page shows them greyed with the role they need.
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape
from typing import Any
from urllib.parse import quote

from starlette.requests import Request

from api.auth import SATISFIES, Principal

STYLE = "/static/home/gridpatrol-web.css"
BODY_CLASS = "gp-with-nav"  # map pages: the page below the bar (see the stylesheet)


@dataclass(frozen=True)
class Link:
    """A page of the product: where, its bilingual name, who may open it, what it is for."""

    key: str
    href: str
    zh: str
    en: str
    role: str | None  # the route's role (None: public)
    about_zh: str
    about_en: str
    nav: bool = True

    def allowed(self, principal: Principal | None) -> bool:
        if self.role is None:
            return True
        return principal is not None and principal.role in SATISFIES[self.role]


LINKS = (
    Link("home", "/", "首页", "Home", "viewer", "", "", nav=True),
    Link(
        "dispatch",
        "/maps/dispatch",
        "派警",
        "Dispatch",
        "dispatcher",
        "接警、警情列表、就近派警与处置",
        "Take calls, list incidents, send the nearest vehicle",
    ),
    Link(
        "coverage",
        "/maps/coverage",
        "网格彩图",
        "Coverage map",
        "viewer",
        "各网格巡逻覆盖率与盲区",
        "Patrol coverage and blind spots per grid",
    ),
    Link(
        "reports",
        "/reports",
        "报表",
        "Reports",
        "viewer",
        "覆盖率报表与车辆排名（HTML、XLSX、PDF、CSV）",
        "Coverage report and vehicle ranking (HTML, XLSX, PDF, CSV)",
    ),
    Link(
        "planner",
        "/maps/planner",
        "网格规划",
        "Planner",
        "planner",
        "编辑草稿网格、校验与启用",
        "Redraw draft grid layouts, validate, activate",
    ),
    Link(
        "track",
        "/devices#track",
        "轨迹回放",
        "Track replay",
        "viewer",
        "选择车辆与日期，回放轨迹与停留点",
        "Pick a vehicle and a day; replay its track and stops",
        nav=False,
    ),
    Link(
        "devices",
        "/devices",
        "设备",
        "Devices",
        "viewer",
        "车辆与终端：在线状态、最后定位、轨迹",
        "Vehicles and terminals: status, last fix, tracks",
    ),
    Link(
        "areas",
        "/map",
        "行政区划",
        "Admin areas",
        "viewer",
        "旗县、苏木乡镇、嘎查村边界",
        "County, township and village boundaries",
        nav=False,
    ),
    Link(
        "users",
        "/users",
        "用户",
        "Users",
        "admin",
        "用户、角色与数据权限",
        "Users, roles and data scopes",
    ),
    Link(
        "docs",
        "/docs",
        "API 文档",
        "API docs",
        None,
        "交互式 API 文档（Swagger UI；另有 ReDoc）",
        "Interactive API documentation (Swagger UI; also ReDoc)",
    ),
)
ROLE_LABELS = {
    "admin": "管理员 admin",
    "planner": "规划员 planner",
    "dispatcher": "调度员 dispatcher",
    "viewer": "查看者 viewer",
    "device": "设备 device",
}


def principal_of(request: Request) -> Principal | None:
    """The signed-in principal of this request, when a route's role check resolved one."""
    principal = getattr(request.state, "principal", None)
    return principal if isinstance(principal, Principal) else None


def nav_html(request: Request, principal: Principal | None = None) -> str:
    """The navigation bar: the pages this principal may open, who is signed in, sign-out."""
    principal = principal or principal_of(request)
    here = request.url.path
    items = []
    for link in LINKS:
        if not link.nav or not link.allowed(principal):
            continue
        current = ' aria-current="page"' if link.href == here else ""
        items.append(
            f'<a class="gp-nav-link" href="{link.href}"{current}>'
            f"{link.zh} <small>{link.en}</small></a>"
        )
    if principal is None:
        who = (
            '<a class="gp-nav-link" href="/?next='
            + escape(quote(_here(request), safe=""))
            + '">登录 <small>Sign in</small></a>'
        )
    else:
        csrf = getattr(request.state, "csrf", "")
        who = (
            f'<span class="gp-nav-user" title="{escape(", ".join(principal.scope.codes))}">'
            f"{escape(principal.name)} · {escape(ROLE_LABELS.get(principal.role, principal.role))}"
            "</span>"
            '<form class="gp-nav-signout" method="post" action="/signout">'
            f'<input type="hidden" name="csrf" value="{escape(csrf)}">'
            '<button type="submit">退出 <small>Sign out</small></button></form>'
        )
    return (
        '<nav class="gp-nav" aria-label="GridPatrol">'
        '<a class="gp-nav-brand" href="/">GridPatrol <small>网格巡逻</small></a>'
        f'<div class="gp-nav-links">{"".join(items)}</div>'
        f'<div class="gp-nav-right">{who}</div></nav>'
    )


def _here(request: Request) -> str:
    return request.url.path + (f"?{request.url.query}" if request.url.query else "")


def with_nav(html: str, request: Request, *, map_page: bool = True) -> str:
    """``html`` (a full page) with the stylesheet and the bar at the top of its body. Map pages
    (``map_page``) sit below the bar, with their fixed boxes placed inside the map's area."""
    if 'class="gp-nav"' in html:
        return html
    link = f'<link rel="stylesheet" href="{STYLE}">'
    html = html.replace("</head>", f"{link}</head>", 1) if "</head>" in html else link + html
    cls = f' class="{BODY_CLASS}"' if map_page else ""
    start = html.find("<body")
    if start < 0:
        return nav_html(request) + html
    end = html.index(">", start) + 1
    tag = html[start:end]
    if map_page:
        tag = (
            tag.replace('class="', f'class="{BODY_CLASS} ', 1)
            if 'class="' in tag
            else tag[:-1] + cls + ">"
        )
    return html[:start] + tag + nav_html(request) + html[end:]


def shell(request: Request, title: str, body: str, *, principal: Principal | None = None) -> str:
    """A whole page of ours (home, sign-in, lists, errors) with the bar."""
    return (
        '<!DOCTYPE html><html lang="zh-CN"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<title>{escape(title)} · GridPatrol</title><link rel="stylesheet" href="{STYLE}">'
        f'</head><body class="gp-own">{nav_html(request, principal)}'
        f'<main class="gp-main">{body}</main></body></html>'
    )


# ---- errors ------------------------------------------------------------------------------------
def _quality(part: str) -> tuple[str, float]:
    media, *params = (p.strip() for p in part.split(";"))
    q = 1.0
    for param in params:
        key, _, value = param.partition("=")
        if key.strip() == "q":
            try:
                q = float(value)
            except ValueError:
                q = 0.0
    return media.lower(), q


def prefers_html(request: Request) -> bool:
    """True when the client asks for ``text/html`` at least as much as for JSON (a browser's
    navigation); ``*/*``, ``application/json`` or no ``Accept`` (API clients, ``fetch``) are not."""
    accept = request.headers.get("accept", "")
    if "text/html" not in accept.lower():
        return False
    ranked = [_quality(part) for part in accept.split(",") if part.strip()]
    weights = dict(ranked)
    html_q = weights.get("text/html", 0.0)
    json_q = weights.get("application/json", 0.0)
    if html_q <= 0 or html_q < json_q:
        return False
    if html_q == json_q:  # equal weight: the one named first
        order = [media for media, _ in ranked]
        return order.index("text/html") < order.index("application/json")
    return True


def next_path(value: str | None) -> str:
    """A local address to return to after sign-in (anything else: the home page)."""
    if not value or not value.startswith("/") or value.startswith(("//", "/\\")):
        return "/"
    if any(c in value for c in "\r\n\t\\") or len(value) > 2000:
        return "/"
    return value


ADVICE: dict[int, tuple[str, str, str, str]] = {
    # status → (title zh, title en, what to do zh, what to do en)
    400: (
        "请求有误",
        "Bad request",
        "请检查地址或填写的内容后重试。",
        "Check the address or what you entered, then try again.",
    ),
    403: (
        "无权访问",
        "Not allowed",
        "您的角色或数据权限不允许此操作。如确需使用，请联系管理员调整角色或数据范围。",
        (
            "Your role or data scope does not allow this. Ask an administrator to change your "
            "role or scope if you need it."
        ),
    ),
    404: (
        "未找到",
        "Not found",
        "该对象不存在，或不在您的数据权限范围内。请检查地址，或从首页重新进入。",
        (
            "It does not exist, or lies outside your data scope. Check the address, or start "
            "again from the home page."
        ),
    ),
    405: (
        "不支持的操作",
        "Method not allowed",
        "此地址不能这样打开。请从首页的链接进入。",
        "This address cannot be opened this way. Use the links on the home page.",
    ),
    409: (
        "状态冲突",
        "Conflict",
        "对象已被他人修改或状态已变化。请刷新页面后重试。",
        "Someone changed it meanwhile, or its state moved on. Reload the page and try again.",
    ),
    413: (
        "内容过大",
        "Too large",
        "请求内容超过上限。请拆分后重试。",
        "The request is larger than allowed. Split it and try again.",
    ),
    422: (
        "参数无效",
        "Invalid value",
        "请求中的某个值无效（见下）。请更正地址中的参数或填写的内容后重试。",
        (
            "A value in the request is not valid (see below). Correct it in the address or the "
            "form and try again."
        ),
    ),
    429: (
        "请求过多",
        "Too many requests",
        "请稍候片刻再试。",
        "Wait a moment and try again.",
    ),
    503: (
        "暂时不可用",
        "Unavailable",
        "服务暂时繁忙或数据库不可用。请稍后刷新。",
        "The service is busy or the database is unavailable. Reload in a little while.",
    ),
}


def error_page(request: Request, status: int, detail: Any) -> str:
    """The HTML page for an error: what happened (the API's own message) and what to do."""
    zh, en, todo_zh, todo_en = ADVICE.get(
        status,
        (
            "出错了",
            "Something went wrong",
            "请稍后重试；如问题持续，请联系管理员。",
            "Try again later; if it persists, tell an administrator.",
        ),
    )
    if isinstance(detail, list):  # a validation error: one line per field
        lines = []
        for item in detail:
            if isinstance(item, dict):
                where = " → ".join(str(p) for p in item.get("loc", ()) if p != "query")
                lines.append(
                    f"<li><code>{escape(where)}</code>: {escape(str(item.get('msg')))}</li>"
                )
            else:
                lines.append(f"<li>{escape(str(item))}</li>")
        what = f"<ul>{''.join(lines)}</ul>"
    else:
        what = f"<p><code>{escape(str(detail))}</code></p>"
    back = '<a href="/">返回首页 Home</a>'
    body = (
        f'<section class="gp-error-page"><h1>{status} · {escape(zh)} <small>{escape(en)}</small>'
        f"</h1>{what}<p>{escape(todo_zh)}<br>{escape(todo_en)}</p>"
        f'<p class="gp-error-path">{escape(request.method)} <code>{escape(_here(request))}</code>'
        f"</p><p>{back}</p></section>"
    )
    return shell(request, f"{status} {en}", body)


def sign_in_redirect_target(request: Request) -> str:
    """``/?next=<this page>``: where a browser without a session is sent."""
    return "/?next=" + quote(_here(request), safe="/")
