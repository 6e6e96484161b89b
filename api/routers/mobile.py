"""The grid worker's phone page, server side: ``POST /m/signin`` and ``/m/signout`` (forms), the
JSON API under ``/api/v1/m`` (role ``worker``), incident photos, and what admins do for workers
(a one-time sign-in code, a password).

The page itself (``GET /m/``, the service worker) is ``api.routers.mobile_pages``. Sign-in works
like the front door's (``api.routers.home``): a form accepted only from our own page, limited per
phone and per address by ``app.state.login_limiter``, answered with a 303 and the HTTP-only
``gp_token`` cookie, or the form again with the reason in Chinese and English. Every
``/api/v1/m`` route needs a worker's session, resolved before any body is read
(``api.limits.BodyGuard``); a report's photos have their own body cap (``PHOTO_ROUTES``).
Anything outside the worker's grids answers 404.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import BaseModel, Field, ValidationError
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException

from api.auth import (
    COOKIE,
    Admin,
    Dispatcher,
    ViewerOrWorker,
    Worker,
    check_password,
    csrf_token,
)
from api.coverage.update import CoverageUpdater
from api.deps import AppSettings, Conn, Pool
from api.errors import (
    BadRequest,
    Forbidden,
    TooManyRequests,
    Unauthorized,
    Unprocessable,
    UnsupportedMediaType,
)
from api.forwarded import client_address, is_https
from api.ingest.store import Ingestor
from api.mobile import accounts, grid, patrols, reports, tasks
from api.mobile.photos import read_photos
from api.ratelimit import SignInLimiter
from api.routers.home import _form, _from_our_page
from api.routers.pages import page_headers
from api.routers.positions import limit_rate

router = APIRouter(tags=["mobile"])
HOME = "/m/"
FORM_FIELD_BYTES = 64 * 1024


# ---- sign-in (forms) ----------------------------------------------------------------------------
def _next(value: str | None) -> str:
    """Where to go after sign-in: a path under /m/ only."""
    if not value or not value.startswith(HOME) or any(c in value for c in "\r\n\t\\"):
        return HOME
    return value[:2000]


def _again(request: Request, status: int, zh: str, en: str, phone: str) -> Response:
    from api.routers.mobile_pages import signin_page  # noqa: PLC0415 - the page's own module

    return signin_page(request, error=f"{zh}<br>{en}", phone=phone, status_code=status)


@router.post("/m/signin", response_class=HTMLResponse, summary="A grid worker signs in (form)")
async def sign_in(request: Request, pool: Pool, settings: AppSettings) -> Response:
    """Form fields ``phone`` and ``password`` or ``code`` (a one-time code; it wins when both are
    given), ``next`` (a path under /m/) → the session cookie and a 303; else the form again."""
    form = await _form(request)
    phone = accounts.normalise_phone(form.get("phone", ""))[:32]
    password, code = form.get("password", ""), form.get("code", "").strip()
    if not _from_our_page(request):
        return _again(
            request, 403, "请从本站的登录页登录。", "Sign in from this server's page.", phone
        )
    if not accounts.valid_phone(phone) or not (password or code) or len(password) > 1024:
        return _again(
            request,
            422,
            "请输入手机号和密码（或一次性验证码）。",
            "Enter your phone number and your password (or a one-time code).",
            phone,
        )
    limiter: SignInLimiter = request.app.state.login_limiter
    try:
        limiter.check(client_address(request), f"phone:{phone}")
        token = await accounts.login(
            pool,
            phone,
            settings.mobile,
            password=None if code else password,
            code=code[:32] if code else None,
        )
    except TooManyRequests as exc:
        wait = exc.extra.get("retry_after_s", 1)
        page = _again(
            request,
            429,
            f"登录尝试过多，请 {wait} 秒后再试。",
            f"Too many sign-in attempts; try again in {wait} s.",
            phone,
        )
        page.headers["Retry-After"] = str(wait)
        return page
    except Unauthorized:
        return _again(
            request,
            401,
            "手机号、密码或验证码错误（验证码只能用一次，且会过期）。",
            "Wrong phone number, password or code (a code works once, and expires).",
            phone,
        )
    response = RedirectResponse(_next(form.get("next")), status_code=303, headers=page_headers())
    response.set_cookie(
        COOKIE,
        token,
        httponly=True,
        samesite="strict",
        secure=is_https(request),
        max_age=int(settings.mobile.session_hours * 3600),
        path="/",
    )
    return response


@router.post("/m/signout", response_class=HTMLResponse, summary="A grid worker signs out (form)")
async def sign_out(request: Request, pool: Pool) -> Response:
    """Form field ``csrf`` (the value ``/api/v1/m/me`` gave): the session ends, the cookie goes."""
    token = request.cookies.get(COOKIE)
    form = await _form(request)
    response = RedirectResponse(HOME, status_code=303, headers=page_headers())
    if token:
        if not _from_our_page(request) or form.get("csrf", "") != csrf_token(token):
            return _again(
                request,
                403,
                "请从本站页面退出（安全校验未通过）。",
                "Sign out from this server's page (CSRF check failed).",
                "",
            )
        async with pool.connection() as conn:
            await accounts.end_session(conn, token)
        request.app.state.tokens.forget()
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
    return response


# ---- admins: codes and passwords ----------------------------------------------------------------
class PasswordIn(BaseModel):
    password: str = Field(min_length=8, max_length=1024)


@router.post(
    "/api/v1/staff/{staff_id}/sign-in-code",
    summary="A one-time sign-in code for a grid worker (to print or read out)",
)
async def sign_in_code(
    staff_id: int, principal: Dispatcher, conn: Conn, settings: AppSettings
) -> dict[str, Any]:
    """A 6-digit code for the worker's phone page, valid ``GRIDPATROL_MOBILE_CODE_MINUTES``,
    once; the worker's previous code dies. 404 for staff outside your scope."""
    return await accounts.issue_code(conn, principal, settings.mobile, staff_id=staff_id)


@router.put("/api/v1/staff/{staff_id}/password", summary="Set a grid worker's password")
async def staff_password(
    staff_id: int, body: PasswordIn, principal: Admin, conn: Conn
) -> dict[str, Any]:
    """The worker's other sessions end. 404 for staff outside your scope."""
    return await accounts.set_password(conn, principal, staff_id, body.password)


# ---- the worker's API ---------------------------------------------------------------------------
@router.get("/api/v1/m/me", summary="Who I am: my grids, the event kinds, the CSRF value")
async def me(request: Request, principal: Worker, conn: Conn, settings: AppSettings) -> Any:
    return {
        **await accounts.me(conn, principal, settings.mobile),
        "csrf": request.state.csrf,
    }


class MyPasswordIn(PasswordIn):
    current: str | None = Field(
        default=None,
        max_length=1024,
        description="the password now: needed when one is set, unless this session began with "
        "a one-time code (a worker who forgot it)",
    )


@router.put("/api/v1/m/password", summary="Set my password (e.g. after a one-time code)")
async def my_password(body: MyPasswordIn, principal: Worker, conn: Conn) -> dict[str, Any]:
    """A session opened with the password changes it only with the current one (a phone left
    signed in must not lock its worker out); one opened with an admin's code needs none."""
    assert principal.staff_id is not None  # noqa: S101 - a worker's session
    row = await (
        await conn.execute(
            "SELECT s.password_hash, t.label FROM staff s JOIN staff_token t "
            "ON t.staff_id = s.id WHERE s.id = %s AND t.id = %s",
            (principal.staff_id, principal.token_id),
        )
    ).fetchone()
    stored, label = (row[0], row[1]) if row else (None, None)
    if stored is not None and label != "login:code":
        if not body.current:
            raise Forbidden("give your current password to change it", field="current")
        if not await check_password(stored, body.current):
            raise Forbidden("the current password is wrong", field="current")
    return await accounts.set_password(conn, principal, principal.staff_id, body.password)


@router.get("/api/v1/m/grids/{code}", summary="My grid: coverage (vehicle/foot), blind spots…")
async def my_grid(request: Request, code: str, principal: Worker, conn: Conn) -> Any:
    updater: CoverageUpdater = request.app.state.coverage
    return await grid.grid_view(conn, updater, principal.scope, code)


@router.post("/api/v1/m/patrols", status_code=201, summary="Start a foot patrol (巡查打卡)")
async def start_patrol(
    body: patrols.PatrolIn,
    response: Response,
    principal: Worker,
    conn: Conn,
    settings: AppSettings,
) -> dict[str, Any]:
    """201 with the patrol; the same ``client_id`` again: 200 with the same patrol."""
    patrol, created = await patrols.start(conn, principal, body, settings.ingest)
    if not created:
        response.status_code = 200
    return patrol


@router.get("/api/v1/m/patrols", summary="My recent foot patrols")
async def my_patrols(
    principal: Worker, conn: Conn, limit: Annotated[int, Query(ge=1, le=100)] = 20
) -> list[dict[str, Any]]:
    return await patrols.recent(conn, principal, limit=limit)


@router.post(
    "/api/v1/m/patrols/{patrol_id}/fixes",
    summary="Fixes of my patrol, through the normal ingest path (filters, quarantine)",
)
async def patrol_fixes(
    request: Request,
    patrol_id: int,
    body: patrols.FixesIn,
    principal: Worker,
    conn: Conn,
    settings: AppSettings,
) -> dict[str, Any]:
    """``{"accepted", "duplicates", "rejected": [{"index", "reason"}]}``: a replay is all
    duplicates; a refused fix is quarantined with its reason."""
    limit_rate(request, principal)  # the same per-sender ingest limit as any device
    ingestor: Ingestor = request.app.state.ingestor
    return await patrols.add_fixes(conn, ingestor, principal, patrol_id, body, settings.mobile)


@router.post("/api/v1/m/patrols/{patrol_id}/stop", summary="End my foot patrol")
async def stop_patrol(
    patrol_id: int,
    principal: Worker,
    conn: Conn,
    settings: AppSettings,
    body: patrols.StopIn | None = None,
) -> dict[str, Any]:
    return await patrols.stop(conn, principal, patrol_id, body or patrols.StopIn(), settings.ingest)


async def _multipart(request: Request, *, files: int) -> FormData:
    """The body as a form (multipart; URL-encoded when it carries no file), at most ``files``
    files and a few small fields."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind not in ("multipart/form-data", "application/x-www-form-urlencoded"):
        raise UnsupportedMediaType(
            f"send multipart/form-data, not {kind or 'no Content-Type'}", field="content-type"
        )
    try:
        return await request.form(
            max_files=files + 1, max_fields=20, max_part_size=FORM_FIELD_BYTES
        )
    except HTTPException as exc:
        raise BadRequest(f"unreadable form: {exc.detail}", field="body") from exc


@router.post(
    "/api/v1/m/reports",
    status_code=201,
    summary="Report an event (上报): multipart with up to 3 photos → an incident at my grid",
)
async def report(
    request: Request, response: Response, principal: Worker, pool: Pool, settings: AppSettings
) -> dict[str, Any]:
    """Fields ``client_id`` (UUID), ``kind``, ``text``, ``grid_code``, ``lon``/``lat``
    (optional), ``photo`` × 0..3. 201 with the incident; the same ``client_id`` again: 200 with
    the same incident and nothing written. The body (photos over a weak signal) is read before a
    database connection is taken: a slow upload holds none."""
    form = await _multipart(request, files=settings.mobile.max_photos)
    try:
        async with pool.connection() as conn:
            made, created = await reports.create_report(conn, principal, form, settings)
    finally:
        await form.close()
    if not created:
        response.status_code = 200
    return made


@router.get("/api/v1/m/reports", summary="My reports with their live status")
async def my_reports(
    principal: Worker, conn: Conn, limit: Annotated[int, Query(ge=1, le=200)] = 50
) -> list[dict[str, Any]]:
    return await reports.my_reports(conn, principal, limit=limit)


@router.get("/api/v1/m/tasks", summary="Incidents assigned to me (open, then the last 10 done)")
async def my_tasks(principal: Worker, conn: Conn) -> list[dict[str, Any]]:
    return await tasks.my_tasks(conn, principal)


@router.post("/api/v1/m/tasks/{incident_id}/accept", summary="I accept the task")
async def accept_task(incident_id: int, principal: Worker, conn: Conn) -> dict[str, Any]:
    return await tasks.act(conn, principal, incident_id, "accept")


@router.post("/api/v1/m/tasks/{incident_id}/arrived", summary="I have arrived")
async def arrived_task(incident_id: int, principal: Worker, conn: Conn) -> dict[str, Any]:
    return await tasks.act(conn, principal, incident_id, "arrived")


class DoneIn(BaseModel):
    note: str | None = Field(default=None, max_length=2000)


@router.post(
    "/api/v1/m/tasks/{incident_id}/done",
    summary="Done (JSON or multipart: note, one photo)",
)
async def done_task(
    request: Request, incident_id: int, principal: Worker, pool: Pool, settings: AppSettings
) -> dict[str, Any]:
    """The body (a note, maybe a photo) is read before a database connection is taken."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind in ("multipart/form-data", "application/x-www-form-urlencoded"):
        form = await _multipart(request, files=1)
        try:
            note = form.get("note")
            if note is not None and not isinstance(note, str):
                raise Unprocessable("note must be text", field="note")
            if note is not None and len(note) > 2000:
                raise Unprocessable(f"note has {len(note)} characters; at most 2000", field="note")
            photos = await read_photos(form, settings.mobile, most=1)
        finally:
            await form.close()
        async with pool.connection() as conn:
            return await tasks.act(
                conn,
                principal,
                incident_id,
                "done",
                note=note or None,
                photo=photos[0] if photos else None,
            )
    raw = await request.body()
    try:
        body = DoneIn.model_validate_json(raw) if raw.strip() else DoneIn()
    except ValidationError as exc:
        first = exc.errors()[0]
        raise Unprocessable(
            f"{'.'.join(map(str, first['loc'])) or 'body'}: {first['msg']}"
        ) from exc
    async with pool.connection() as conn:
        return await tasks.act(conn, principal, incident_id, "done", note=body.note)


@router.get(
    "/api/v1/incidents/{incident_id}/photos/{n}",
    summary="An incident's photo (1-based), for users whose scope holds it and its worker",
)
async def incident_photo(
    incident_id: int, n: int, principal: ViewerOrWorker, conn: Conn
) -> Response:
    content_type, data = await tasks.photo_of(conn, principal, incident_id, n)
    return Response(
        data,
        media_type=content_type,
        headers={
            "Cache-Control": "private, no-store",
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "default-src 'none'; sandbox",
        },
    )
