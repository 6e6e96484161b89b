"""Limits in front of the HTTP API: authenticate before a body is read, cap bodies per route,
cap connections, and close clients that send their request too slowly.

Two layers:

- ``BodyGuard``, an ASGI middleware in front of FastAPI. A request whose declared
  ``Content-Length`` exceeds its route's limit is answered 413 at once; a request that can carry
  a body (any method but GET/HEAD/OPTIONS) to a route that is not public must carry a token that
  resolves (``api.auth.bearer_token`` + the app's ``TokenStore``), or it is answered 401 —
  in both cases before one byte of the body is read, and the connection is closed. A chunked
  body (or one longer than declared) is counted while it is received and refused with 413 as soon
  as it passes the limit. Role checks (403) stay in the routes' dependencies.
- ``guarded_protocol``, uvicorn's httptools protocol with a deadline for the request line and
  headers (``GRIDPATROL_API_HEADER_TIMEOUT_S``, from a request's first byte, or the connection's
  opening), a longest pause while a body arrives (``…_BODY_TIMEOUT_S``), caps on the request line
  (414), the headers (431) and the number of open connections (503 and closed at once), with
  counts of what it refused or closed (``CONNECTIONS``, shown in ``/api/v1/ingest/stats``).

Limits: JSON routes ``GRIDPATROL_API_MAX_BODY_MB`` (1), batch and file uploads (the routes in
``UPLOAD_ROUTES``) ``GRIDPATROL_INGEST_MAX_BODY_MB`` (64), the public sign-in
``SIGN_IN_MAX_BYTES`` and bodies sent with GET/HEAD ``PUBLIC_MAX_BYTES``.
"""

from __future__ import annotations

import asyncio
import logging
import re
import resource
from dataclasses import asdict, dataclass
from typing import Any, cast

import httptools
import orjson
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from api.auth import TokenStore, bearer_token
from api.errors import DB_UNAVAILABLE, PayloadTooLarge, Unauthorized, Unavailable
from api.settings import ApiSettings, Settings

log = logging.getLogger("gridpatrol.limits")
MB = 1024 * 1024
SIGN_IN_MAX_BYTES = 64 * 1024
PUBLIC_MAX_BYTES = 64 * 1024
BODYLESS = frozenset({"GET", "HEAD", "OPTIONS"})
# Routes whose body is a batch or a file: GRIDPATROL_INGEST_MAX_BODY_MB; the rest take JSON.
UPLOAD_ROUTES = (
    re.compile(r"/api/v1/positions(/files)?/?"),
    re.compile(r"/api/v1/(staff|alert-points|devices)/import/?"),
    re.compile(r"/api/v1/layouts/[^/]+/replace/?"),
)
# A grid worker's report or finished task with photos (api/routers/mobile.py): their own cap,
# GRIDPATROL_MOBILE_MAX_PHOTOS × GRIDPATROL_MOBILE_PHOTO_MAX_MB and room for the form fields.
PHOTO_ROUTES = (
    re.compile(r"/api/v1/m/reports/?"),
    re.compile(r"/api/v1/m/tasks/[^/]+/done/?"),
)
# Routes that take a body without a token (sign-in), with their own small limit.
PUBLIC_BODY_ROUTES = {
    ("POST", "/api/v1/auth/token"): SIGN_IN_MAX_BYTES,
    ("POST", "/signin"): SIGN_IN_MAX_BYTES,  # the front door's form (api/routers/home.py)
    ("POST", "/signout"): SIGN_IN_MAX_BYTES,  # checks the page's CSRF value itself
    ("POST", "/m/signin"): SIGN_IN_MAX_BYTES,  # the grid worker's phone page (api/routers/mobile)
    ("POST", "/m/signout"): SIGN_IN_MAX_BYTES,
}
FD_RESERVE = 256  # descriptors kept for the database pool, files, logs


def fd_limit() -> int:
    """The process's soft limit on open file descriptors."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


def connection_cap(configured: int, share: float) -> int:
    """``configured``, but never more than ``share`` of the descriptors left after the reserve,
    so that the API (10 %), OsmAnd (40 %) and JT/T 808 together stay below the fd limit."""
    return max(1, min(configured, int((fd_limit() - FD_RESERVE) * share)))


@dataclass
class ConnectionStats:
    """What a listener refused or closed, since the process started."""

    refused_over_cap: int = 0  # connection cap reached: 503 and closed at once
    closed_header_timeout: int = 0  # request line + headers not complete in time: 408
    closed_body_timeout: int = 0  # a body paused longer than allowed
    refused_request_line: int = 0  # 414
    refused_headers: int = 0  # 431
    refused_body: int = 0  # 413

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


CONNECTIONS = ConnectionStats()  # the HTTP API's (per process)


async def connection_counts(request: Request) -> dict[str, dict[str, int]]:
    """What the listeners refused or closed (a dependency for the stats route): this process's
    API, and its OsmAnd listener, or, where the OsmAnd listeners run in ingest processes
    (``gridpatrol serve --role all``), theirs added up, asked over the relay."""
    counts = {"api": CONNECTIONS.as_dict()}
    state = request.app.state
    osmand = getattr(state, "osmand", None)
    if osmand is not None:
        counts["osmand"] = osmand.stats.as_dict()
    else:
        remote = getattr(state, "jt808", None)
        gather = getattr(remote, "connections", None)  # api.roles.relay.RemoteTerminals
        if gather is not None:
            counts.update(await gather())
    return counts


# ---- the ASGI middleware -----------------------------------------------------------------------
async def _send_error(
    send: Send, status: int, body: dict[str, Any], *extra: tuple[bytes, bytes]
) -> None:
    """A JSON error, and the connection closed after it: the rest of the body is never read."""
    payload = orjson.dumps(body)
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
        (b"connection", b"close"),
        *extra,
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload, "more_body": False})


class BodyGuard:
    """Authenticate before any body is read; refuse bodies over the route's limit (413)."""

    def __init__(self, app: ASGIApp, *, settings: Settings) -> None:
        self.app = app
        self.json_limit = int(settings.api.max_body_mb * MB)
        self.upload_limit = int(settings.ingest.max_body_mb * MB)
        self.json_mb = settings.api.max_body_mb
        self.upload_mb = settings.ingest.max_body_mb
        self.photo_limit = settings.mobile.upload_max_bytes

    def limit_for(self, method: str, path: str) -> tuple[int, str]:
        """(bytes, what to tell the client) for a request."""
        if method in BODYLESS:
            return PUBLIC_MAX_BYTES, f"a {method} request takes no body"
        public = PUBLIC_BODY_ROUTES.get((method, path))
        if public is not None:
            return public, f"the body is larger than {public // 1024} KB"
        if any(route.fullmatch(path) for route in UPLOAD_ROUTES):
            return self.upload_limit, (
                f"the body is larger than {self.upload_mb:g} MB "
                "(GRIDPATROL_INGEST_MAX_BODY_MB); split the upload"
            )
        if any(route.fullmatch(path) for route in PHOTO_ROUTES):
            return self.photo_limit, (
                f"the body is larger than {self.photo_limit / MB:.1f} MB: at most "
                "GRIDPATROL_MOBILE_MAX_PHOTOS photos of GRIDPATROL_MOBILE_PHOTO_MAX_MB each"
            )
        return self.json_limit, (
            f"the body is larger than {self.json_mb:g} MB (GRIDPATROL_API_MAX_BODY_MB)"
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method, path = scope["method"], scope["path"]
        limit, message = self.limit_for(method, path)
        headers = Headers(scope=scope)
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            CONNECTIONS.refused_body += 1
            await _send_error(send, 413, PayloadTooLarge(message).body())
            return
        if method not in BODYLESS and (method, path) not in PUBLIC_BODY_ROUTES:
            refusal = await self._authenticate(scope)
            if refusal is not None:
                status, body, extra = refusal
                await _send_error(send, status, body, *extra)
                return
        await self._capped(scope, receive, send, limit, message)

    async def _authenticate(
        self, scope: Scope
    ) -> tuple[int, dict[str, Any], list[tuple[bytes, bytes]]] | None:
        """None when the request's token resolves, else the refusal to send."""
        token = bearer_token(Request(scope))
        challenge = [(b"www-authenticate", b"Bearer")]
        if not token:
            error = Unauthorized("missing bearer token (Authorization: Bearer …)")
            return 401, error.body(), challenge
        store: TokenStore | None = getattr(scope["app"].state, "tokens", None)
        if store is None:  # the app has not started (lifespan) — nothing can be checked
            return 503, Unavailable("starting; retry shortly").body(), [(b"retry-after", b"5")]
        try:
            principal = await store.resolve(token)
        except DB_UNAVAILABLE:
            body = Unavailable("the database is unavailable; retry shortly").body()
            return 503, body, [(b"retry-after", b"5")]
        if principal is None:
            return 401, Unauthorized("invalid, expired or revoked token").body(), challenge
        return None

    async def _capped(
        self, scope: Scope, receive: Receive, send: Send, limit: int, message: str
    ) -> None:
        """Run the app with its body counted: past ``limit``, 413 (when nothing was sent yet)
        and the app sees the client gone; what it sends afterwards is dropped."""
        received = 0
        started = replied = False

        async def counted() -> Message:
            nonlocal received, replied
            if replied:
                return {"type": "http.disconnect"}
            event = await receive()
            if event["type"] == "http.request":
                received += len(event.get("body", b""))
                if received > limit:
                    CONNECTIONS.refused_body += 1
                    if not started:
                        replied = True
                        await _send_error(send, 413, PayloadTooLarge(message).body())
                    return {"type": "http.disconnect"}
            return event

        async def guarded_send(event: Message) -> None:
            nonlocal started
            if replied:
                return
            if event["type"] == "http.response.start":
                started = True
            await send(event)

        try:
            await self.app(scope, counted, guarded_send)
        except Exception:
            if not replied:
                raise
            log.debug(
                "%s %s: refused with 413 while the body arrived", scope["method"], scope["path"]
            )


# ---- the uvicorn protocol -----------------------------------------------------------------------
class _Refused(Exception):
    """Raised from a parser callback to stop parsing a request that was answered and closed."""


def _plain(status: int, reason: bytes, text: str) -> bytes:
    body = text.encode()
    return (
        b"HTTP/1.1 %d %s\r\ncontent-type: text/plain; charset=utf-8\r\n"
        b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (status, reason, len(body), body)
    )


_REASONS = {
    408: b"Request Timeout",
    413: b"Payload Too Large",
    414: b"URI Too Long",
    431: b"Request Header Fields Too Large",
    503: b"Service Unavailable",
}


LINGER_S = 2.0  # after an early answer, how long the rest of a body is read and dropped
DROP_MAX_BYTES = 1024 * 1024  # of a body answered without being read, then the connection ends


class _LingeringTransport:
    """The transport as uvicorn sees it. Closing while the client is still sending its body
    (an early 413 or 401) becomes a half-close — FIN after the answer — and what still arrives
    is dropped unread for at most ``LINGER_S``, so the client reads the answer instead of a
    connection reset (a close with unread data sends RST)."""

    def __init__(self, transport: asyncio.Transport, protocol: GuardedHttpToolsProtocol) -> None:
        self._transport = transport
        self._protocol = protocol
        self.lingering = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)

    def is_closing(self) -> bool:
        return self.lingering or self._transport.is_closing()

    def close_now(self) -> None:
        self._transport.close()

    def close(self) -> None:
        transport, protocol = self._transport, self._protocol
        if self.lingering or transport.is_closing() or not protocol.body_pending():
            transport.close()
            return
        self.lingering = True
        protocol.disarm()
        try:
            transport.write_eof()
        except (OSError, RuntimeError, NotImplementedError):
            transport.close()
            return
        if protocol.flow is not None:
            protocol.flow.resume_reading()
        protocol.loop.call_later(LINGER_S, transport.close)


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with header/body deadlines and size and connection caps.

    uvicorn arms no timer until a first response (``timeout_keep_alive`` runs only between
    requests), so a client dribbling one byte every few seconds kept a header read open for
    ever; here the request line and headers must be complete ``header_timeout_s`` after the
    request's first byte (or the connection's opening), and a body may pause at most
    ``body_timeout_s`` (unless the server itself stopped reading: flow control).
    """

    api: ApiSettings
    max_connections: int
    stats: ConnectionStats

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._timer: asyncio.TimerHandle | None = None
        self._admitted = False
        self._refused = False
        self._in_head = False  # a request's first byte came, its headers are not complete
        self._head_bytes = 0
        self._url_bytes = 0
        self._header_count = 0
        self._dropped = 0

    # ---- connection ------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if len(self.connections) >= self.max_connections:
            self.stats.refused_over_cap += 1
            self._refused = True
            self.transport = cast(asyncio.Transport, transport)
            self.transport.write(_plain(503, _REASONS[503], "too many connections; retry later"))
            self.transport.close()
            return
        self._admitted = True
        lingering = _LingeringTransport(cast(asyncio.Transport, transport), self)
        super().connection_made(cast(asyncio.Transport, lingering))
        self._arm(self.api.header_timeout_s, self._header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._admitted:
            super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused or self.transport.is_closing():
            return
        self._unset_keepalive_if_required()
        head_before = self._in_head
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError:
            if not self._refused:
                msg = "Invalid HTTP request received."
                self.logger.warning(msg)
                self.send_400_response(msg)
            return
        if head_before and self._in_head and not self._refused:
            # the parser accumulates header fields itself (by concatenation): a chunk that
            # neither began nor ended a head is all head, so count those before it sees more
            self._head_bytes += len(data)
            if self._head_bytes > (self.api.max_header_kb + self.api.max_request_line_kb) * 1024:
                self._refuse(431, "request headers too large", raise_=False)

    # ---- parser callbacks ------------------------------------------------------------------------
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._head_bytes = self._url_bytes = self._header_count = self._dropped = 0
        if self._timer is None:  # else the connection's first deadline still runs
            self._arm(self.api.header_timeout_s, self._header_timeout)

    def on_url(self, url: bytes) -> None:
        self._url_bytes += len(url)
        if self._url_bytes > self.api.max_request_line_kb * 1024:
            self.stats.refused_request_line += 1
            self._refuse(414, f"request line longer than {self.api.max_request_line_kb:g} KB")
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > self.api.max_headers:
            self._refuse(431, f"more than {self.api.max_headers} header lines")
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._disarm()
        size = sum(len(n) + len(v) + 4 for n, v in self.headers)
        if size > self.api.max_header_kb * 1024:
            self._refuse(431, f"request headers larger than {self.api.max_header_kb:g} KB")
        super().on_headers_complete()
        length = dict(self.headers).get(b"content-length", b"0")
        if (length.isdigit() and int(length) > 0) or b"transfer-encoding" in dict(self.headers):
            self._arm(self.api.body_timeout_s, self._body_timeout)

    def on_body(self, body: bytes) -> None:
        if self._timer is not None:
            self._arm(self.api.body_timeout_s, self._body_timeout)
        if self.cycle is not None and self.cycle.response_complete:
            # answered already (uvicorn drops the rest): a body nobody reads ends the connection
            self._dropped += len(body)
            if self._dropped > DROP_MAX_BYTES and not self.transport.is_closing():
                cast(_LingeringTransport, self.transport).close_now()  # no lingering for this
            return
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    # ---- deadlines and refusals ------------------------------------------------------------------
    def _arm(self, seconds: float, callback: Any) -> None:
        self._disarm()
        self._timer = self.loop.call_later(seconds, callback)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    disarm = _disarm

    def body_pending(self) -> bool:
        """Whether the current request's body has not all arrived yet."""
        return self.cycle is not None and self.cycle.more_body and not self._in_head

    def _header_timeout(self) -> None:
        self._timer = None
        if self.transport.is_closing():
            return
        if self.flow is not None and self.flow.read_paused:  # we stopped reading (pipelining)
            self._arm(self.api.header_timeout_s, self._header_timeout)
            return
        self.stats.closed_header_timeout += 1
        self._refused = True
        text = f"request line and headers not received within {self.api.header_timeout_s:g} s"
        self.transport.write(_plain(408, _REASONS[408], text))
        self.transport.close()

    def _body_timeout(self) -> None:
        self._timer = None
        if self.transport.is_closing():
            return
        if self.flow is not None and self.flow.read_paused:  # the app is slow, not the client
            self._arm(self.api.body_timeout_s, self._body_timeout)
            return
        self.stats.closed_body_timeout += 1
        self._refused = True
        if self.cycle is not None and not self.cycle.response_started:
            text = f"the body paused longer than {self.api.body_timeout_s:g} s"
            self.transport.write(_plain(408, _REASONS[408], text))
        self.transport.close()

    def _refuse(self, status: int, text: str, *, raise_: bool = True) -> None:
        if status == 431:
            self.stats.refused_headers += 1
        self._refused = True
        self._disarm()
        if not self.transport.is_closing():
            self.transport.write(_plain(status, _REASONS[status], text))
            self.transport.close()
        if raise_:
            raise _Refused(text)


def guarded_protocol(
    api: ApiSettings, stats: ConnectionStats = CONNECTIONS
) -> type[GuardedHttpToolsProtocol]:
    """The protocol class to give ``uvicorn.Config(http=…)``, bound to these settings."""
    cap = connection_cap(api.max_connections, 0.1)
    namespace = {"api": api, "max_connections": cap, "stats": stats}
    return type("GuardedHttpTools", (GuardedHttpToolsProtocol,), namespace)
