"""The OsmAnd / Traccar Client HTTP server (default port 5055, as Traccar).

A lean HTTP/1.1 server on ``httptools`` (no framework per request: devices post thousands of
fixes a second). Each request is parsed (``api.protocols.osmand``), handed to the group-commit
writer, and answered only after the fix is committed:

- 200, empty body: stored, a duplicate of a stored fix, or quarantined by a filter (the device
  must not resend it; the outcome is in ``X-GridPatrol-Outcome``);
- 400 with ``field: reason``: unparsable request (quarantined too) or unknown device (as Traccar;
  counted per source address in ``ingest_refusal``, not one quarantine row each);
- 401: the device has an OsmAnd key and the request did not present it (``key=`` in the query or
  form, the HTTP Basic password, or the key itself as ``id``) — quarantined as unauthenticated;
- 429 with ``Retry-After``: the device sends faster than ``GRIDPATROL_INGEST_RATE_PER_S``, its
  address faster than ``GRIDPATROL_OSMAND_ADDRESS_RATE_PER_S``, or its address has had too many
  refusals (``REFUSAL_RATE_PER_S``/``REFUSAL_BURST``: unknown ids, wrong keys, unparsable);
- 503 with ``Retry-After``: not stored (database down, queue full); the device keeps and retries.

Keep-alive and pipelining are supported; requests on one connection are answered in order.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import ipaddress
import logging
import re
import socket
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast
from urllib.parse import unquote_plus

import httptools

from api.ingest.filters import REASONS
from api.ingest.fixes import FixBatch, FixError
from api.ingest.writer import GroupWriter, IngestUnavailable
from api.limits import ConnectionStats, connection_cap
from api.protocols import osmand
from api.ratelimit import RateLimiter
from api.settings import OsmAndSettings

log = logging.getLogger("gridpatrol.osmand")
REUSE_PORT = hasattr(socket, "SO_REUSEPORT")  # Linux, BSD: N listeners share the port
MAX_BODY = 64 * 1024
_STATUS = {
    200: b"OK",
    400: b"Bad Request",
    401: b"Unauthorized",
    405: b"Method Not Allowed",
    408: b"Request Timeout",
    413: b"Payload Too Large",
    414: b"URI Too Long",
    431: b"Request Header Fields Too Large",
    429: b"Too Many Requests",
    503: b"Service Unavailable",
}


def _response(
    status: int,
    body: bytes = b"",
    *,
    outcome: str | None = None,
    close: bool = False,
    retry_after: int = 5,
) -> bytes:
    head = [b"HTTP/1.1 %d %s" % (status, _STATUS[status]), b"Content-Length: %d" % len(body)]
    if body:
        head.append(b"Content-Type: text/plain; charset=utf-8")
    if outcome:
        head.append(b"X-GridPatrol-Outcome: " + outcome.encode())
    if status in (429, 503):
        head.append(b"Retry-After: %d" % retry_after)
    if status == 401:
        head.append(b'WWW-Authenticate: Basic realm="GridPatrol OsmAnd"')
    if close:
        head.append(b"Connection: close")
    return b"\r\n".join(head) + b"\r\n\r\n" + body


@dataclass
class _Request:
    method: bytes = b""
    url: bytes = b""
    content_type: bytes = b""
    body: bytearray = field(default_factory=bytearray)
    keep_alive: bool = True
    authorization: bytes = b""
    peer: str = ""  # the sender's address (IPv6: its /64), for per-address limits and counts


class _Refused(Exception):
    """Raised from a parser callback to stop parsing a request already answered and closed."""


class _Connection(asyncio.Protocol):
    """One device connection: parse requests, answer them in order.

    Framing limits (``GRIDPATROL_OSMAND_…``): the request line (414) and the headers (431, size
    and count) are capped, the body too (413, ``Content-Length`` checked first); a request's line
    and headers must arrive within ``HEADER_TIMEOUT_S`` of its first byte (or of the connection's
    opening) and its body within ``BODY_TIMEOUT_S`` of the headers, else 408 and closed; the URL
    is gathered in a bytearray (pieces were concatenated: quadratic on a long URL)."""

    def __init__(self, server: OsmAndServer) -> None:
        self.server = server
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.current = _Request()
        self._header: bytes = b""
        self.queue: asyncio.Queue[_Request | None] = asyncio.Queue()
        self.worker: asyncio.Task[None] | None = None
        self.last_seen = time.monotonic()
        self._url = bytearray()
        self._in_head = False  # a request began and its headers are not complete
        self._head_bytes = 0  # header lines' bytes (names and values)
        self._head_raw = 0  # bytes of chunks that fell wholly inside a head
        self._header_count = 0
        self._content_length = b""
        self._deadline: asyncio.TimerHandle | None = None
        self._waiting_for = b"request line and headers"

    # ---- asyncio.Protocol ----------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        if len(self.server.connections) >= self.server.max_connections:
            self.server.stats.refused_over_cap += 1
            self.transport.write(_response(503, b"too many connections", close=True))
            self.transport.close()
            return
        self.server.connections.add(self)
        self.worker = asyncio.get_running_loop().create_task(self._work())
        self._arm(self.server.settings.header_timeout_s, b"request line and headers")

    def data_received(self, data: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        self.last_seen = time.monotonic()
        head_before = self._in_head
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(400, b"upgrade not supported")
        except httptools.HttpParserError:
            self._fail(400, b"malformed HTTP request")  # nothing more when already refused
        if head_before and self._in_head:
            # the parser gathers header fields itself: a chunk that neither began nor ended a
            # head is all head, so count it before the parser sees more
            self._head_raw += len(data)
            settings = self.server.settings
            if self._head_raw > (settings.max_header_kb + settings.max_request_line_kb) * 1024:
                self.server.stats.refused_headers += 1
                self._fail(431, b"request headers too large")

    def connection_lost(self, exc: Exception | None) -> None:  # noqa: ARG002 - protocol API
        self._disarm()
        self.server.connections.discard(self)
        self.queue.put_nowait(None)

    # ---- deadlines -------------------------------------------------------------------------------
    def _arm(self, seconds: float, waiting_for: bytes) -> None:
        self._disarm()
        self._waiting_for = waiting_for
        self._deadline = asyncio.get_running_loop().call_later(seconds, self._timed_out)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _timed_out(self) -> None:
        self._deadline = None
        if self._waiting_for == b"body":
            self.server.stats.closed_body_timeout += 1
        else:
            self.server.stats.closed_header_timeout += 1
        self._fail(408, self._waiting_for + b" not received in time")

    # ---- httptools callbacks -------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self.current = _Request()
        self._url = bytearray()
        self._in_head = True
        self._head_bytes = self._head_raw = self._header_count = 0
        self._content_length = b""
        if self._deadline is None:  # else the connection's first deadline still runs
            self._arm(self.server.settings.header_timeout_s, b"request line and headers")

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > self.server.settings.max_request_line_kb * 1024:
            self.server.stats.refused_request_line += 1
            self._fail(414, b"request line too long")
            raise _Refused

    def on_headers_complete(self) -> None:
        self._in_head = False
        self.current.url = bytes(self._url)
        settings = self.server.settings
        self._disarm()
        if self._content_length.strip().isdigit() and int(self._content_length) > MAX_BODY:
            self.server.stats.refused_body += 1
            self._fail(413, b"body too large")
            raise _Refused
        self._arm(settings.body_timeout_s, b"body")  # until the message completes

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        self._head_bytes += len(name) + len(value)
        settings = self.server.settings
        if self._header_count > settings.max_headers or self._head_bytes > (
            settings.max_header_kb * 1024
        ):
            self.server.stats.refused_headers += 1
            self._fail(431, b"too many or too large header lines")
            raise _Refused
        if name.lower() == b"content-length":
            self._content_length = value
        if name.lower() == b"content-type":
            self.current.content_type = value.lower()
        elif name.lower() == b"authorization":
            self.current.authorization = value

    def on_body(self, body: bytes) -> None:
        self.current.body += body
        if len(self.current.body) > MAX_BODY:
            self.server.stats.refused_body += 1
            self._fail(413, b"body too large")
            raise _Refused

    def on_message_complete(self) -> None:
        self._disarm()
        self.current.method = self.parser.get_method()
        self.current.keep_alive = self.parser.should_keep_alive()
        self.current.peer = _source(self.transport)
        self.queue.put_nowait(self.current)

    # ---- work ------------------------------------------------------------------------------------
    def _fail(self, status: int, message: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(_response(status, message, close=True))
            self.transport.close()

    async def _work(self) -> None:
        while True:
            request = await self.queue.get()
            if request is None or self.transport is None or self.transport.is_closing():
                return
            reply = await self.server.handle(request)
            if self.transport.is_closing():
                return
            self.transport.write(reply)
            if not request.keep_alive:
                self.transport.close()
                return


class OsmAndServer:
    """Listens for OsmAnd/Traccar Client requests and feeds the group-commit writer."""

    def __init__(
        self,
        settings: OsmAndSettings,
        writer: GroupWriter,
        *,
        clock: Callable[[], float] = time.time,
        limiter: RateLimiter | None = None,
    ) -> None:
        self.settings = settings
        self.writer = writer
        self.clock = clock
        self.limiter = limiter  # per device id, shared with the HTTP ingest routes' limits
        # per source address: every request, and (stricter) refused ones
        self.address_limiter = (
            RateLimiter(rate=settings.address_rate_per_s, burst=settings.address_burst)
            if settings.address_rate_per_s > 0
            else None
        )
        self.refusal_limiter = (
            RateLimiter(rate=settings.refusal_rate_per_s, burst=settings.refusal_burst)
            if settings.refusal_rate_per_s > 0
            else None
        )
        self._refusals: Counter[tuple[str, str]] = Counter()  # (source, reason) → not yet stored
        self._good: set[str] = set()  # device ids stored lately (pass an address's refusal block)
        self.connections: set[_Connection] = set()
        self.max_connections = connection_cap(settings.max_connections, 0.4)  # < the fd limit
        self.stats = ConnectionStats()  # refused and closed connections (api/limits.py)
        self._server: asyncio.Server | None = None
        self._reaper: asyncio.Task[None] | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Connection(self),
            self.settings.host,
            self.settings.port,
            reuse_address=True,
            # several ingest processes on one port (gridpatrol serve --role ingest, N times);
            # the kernel spreads new connections over them
            reuse_port=REUSE_PORT,
            backlog=4096,
        )
        self._reaper = loop.create_task(self._reap_idle())
        log.info("OsmAnd protocol on %s:%d", self.settings.host, self.port)

    @property
    def port(self) -> int:
        if self._server is None or not self._server.sockets:
            return self.settings.port
        return int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        with contextlib.suppress(IngestUnavailable):
            await self.flush_refusals()
        if self._server is not None:
            self._server.close()
            for conn in list(self.connections):
                if conn.transport is not None:
                    conn.transport.close()
            await self._server.wait_closed()
            self._server = None

    async def _reap_idle(self) -> None:
        """Close connections idle longer than the timeout (slow or vanished devices)."""
        while True:
            await asyncio.sleep(min(self.settings.idle_timeout_s / 4, 15.0))
            with contextlib.suppress(IngestUnavailable):
                await self.flush_refusals()
            cutoff = time.monotonic() - self.settings.idle_timeout_s
            for conn in list(self.connections):
                if conn.last_seen < cutoff and conn.transport is not None and conn.queue.empty():
                    conn.transport.close()

    async def flush_refusals(self) -> None:
        """Store the counts of requests refused by the address limits (``ingest_refusal``,
        per source and 10-minute bucket); kept for the next flush if the database is down."""
        if not self._refusals:
            return
        counts, self._refusals = dict(self._refusals), Counter()
        try:
            await self.writer.submit(FixBatch.empty(), protocol="osmand", refusals=counts)
        except IngestUnavailable:
            self._refusals.update(counts)
            raise

    def _too_many(self, source: str, limiter: RateLimiter, key: str) -> bytes:
        self._refusals[(source, "rate_limited")] += 1
        wait = limiter.retry_after(key)
        return _response(429, b"too many requests from your address; slow down", retry_after=wait)

    def _refused(self, source: str) -> None:
        """A refused request spends from its address's refusal budget."""
        if self.refusal_limiter is not None:
            self.refusal_limiter.allow(f"refused:{source}")

    async def handle(self, request: _Request) -> bytes:  # noqa: PLR0911 - one answer per case
        if request.method not in (b"GET", b"POST"):
            return _response(405, b"use GET or POST")
        source = request.peer or "unknown"
        addresses = self.address_limiter
        if addresses is not None and not addresses.allow(f"address:{source}"):
            return self._too_many(source, addresses, f"address:{source}")
        # an address with too many refusals lately is refused at once, but for devices that
        # were stored from it lately (one bad device behind a NAT must not lock out the rest)
        refusals, refusal_key = self.refusal_limiter, f"refused:{source}"
        blocked = refusals is not None and refusals.exhausted(refusal_key)
        user, key = _credentials(request)
        raw = _REDACT.sub(
            rb"\1key=<key>", request.url + (b" " + bytes(request.body) if request.body else b"")
        ).decode("utf-8", "replace")
        now_us = int(self.clock() * 1e6)
        try:
            batch = self._parse(request, now_us, user)
        except osmand.OsmAndError as exc:
            if blocked and refusals is not None:
                return self._too_many(source, refusals, refusal_key)
            self._refused(source)
            error = FixError(row=1, reason=exc.reason, field=exc.field, raw=raw)
            return await self._quarantine_only(error)
        device = str(batch.device[0]) if len(batch) else ""
        if blocked and refusals is not None and device not in self._good:
            return self._too_many(source, refusals, refusal_key)
        batch.raw[:] = raw
        batch.key[:] = key
        batch.source[:] = source
        if self.limiter is not None and len(batch):
            device_key = f"osmand:{batch.device[0]}"
            if not self.limiter.allow(device_key):
                wait = self.limiter.retry_after(device_key)
                return _response(429, b"too many requests; slow down", retry_after=wait)
        try:
            outcome = await self.writer.submit(batch, protocol="osmand")
        except IngestUnavailable as exc:
            return _response(503, str(exc).encode())
        reasons = sorted({REASONS[c] for c in outcome})
        if "unknown_device" in reasons:
            self._refused(source)
            return _response(400, b"id: unknown device", outcome="unknown_device")
        if "unauthenticated" in reasons:
            self._refused(source)
            return _response(
                401,
                b"key: missing or wrong; send the device's OsmAnd key (key= or HTTP Basic)",
                outcome="unauthenticated",
            )
        if "stored" in reasons or "duplicate" in reasons:
            if len(self._good) >= GOOD_DEVICES_KEPT:
                self._good.clear()
            self._good.add(device)
        return _response(200, outcome=",".join(reasons))

    def _parse(self, request: _Request, now_us: int, user: str | None = None) -> FixBatch:
        """The request's fixes; ``user`` (HTTP Basic) is the device id when the fields name
        none."""
        query = request.url.partition(b"?")[2]
        body = bytes(request.body)
        if request.method == b"POST" and body:
            if request.content_type.startswith(b"application/json"):
                return osmand.parse_json(body, now_us=now_us, device=user)
            query = query + b"&" + body if query else body  # form fields
        if user is not None:  # an id in the fields wins (the last of a repeated field does)
            query = b"id=" + _quote(user) + (b"&" + query if query else b"")
        return osmand.parse_query(query, now_us=now_us)

    async def _quarantine_only(self, error: FixError) -> bytes:
        try:
            await self.writer.submit(FixBatch.empty(), protocol="osmand", errors=[error])
        except IngestUnavailable as exc:
            return _response(503, str(exc).encode())
        return _response(400, f"{error.field}: {error.reason}".encode(), outcome="unparsable")


GOOD_DEVICES_KEPT = 100_000
# ``key=…`` in a query or form body: the value is masked wherever the request is kept
_REDACT = re.compile(rb"(^|[?&\s])key=[^&\s]*")


def _quote(text: str) -> bytes:
    return text.replace("%", "%25").replace("&", "%26").replace("+", "%2B").encode()


def _credentials(request: _Request) -> tuple[str | None, str | None]:
    """(Basic user name, key): the key from ``key=`` in the query or a form body (the last one
    wins), else the HTTP Basic password."""
    key = None
    query = request.url.partition(b"?")[2]
    if request.method == b"POST" and request.body and b"json" not in request.content_type:
        query = query + b"&" + bytes(request.body)
    for part in query.split(b"&"):
        if part.startswith(b"key="):
            key = unquote_plus(part[4:].decode("utf-8", "replace"))
    user = None
    scheme, _, token = request.authorization.strip().partition(b" ")
    if scheme.lower() == b"basic" and token:
        try:
            decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            decoded = ""
        name, colon, password = decoded.partition(":")
        if colon:
            user = name or None
            key = key if key is not None else password
    return user, key or None


def _source(transport: asyncio.BaseTransport | None) -> str:
    """The peer's address as a limit and count key; an IPv6 address stands for its /64 (one
    host commonly holds a whole /64)."""
    peer = transport.get_extra_info("peername") if transport is not None else None
    if not peer:
        return "unknown"
    host = str(peer[0]) if isinstance(peer, tuple) else str(peer)
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return host
