"""The OsmAnd / Traccar Client HTTP server (default port 5055, as Traccar).

A lean HTTP/1.1 server on ``httptools`` (no framework per request: devices post thousands of
fixes a second). Each request is parsed (``api.protocols.osmand``), handed to the group-commit
writer, and answered only after the fix is committed:

- 200, empty body: stored, a duplicate of a stored fix, or quarantined by a filter (the device
  must not resend it; the outcome is in ``X-GridPatrol-Outcome``);
- 400 with ``field: reason``: unparsable request or unknown device (as Traccar) — quarantined too;
- 429 with ``Retry-After``: the device sends faster than ``GRIDPATROL_INGEST_RATE_PER_S``;
- 503 with ``Retry-After``: not stored (database down, queue full); the device keeps and retries.

Keep-alive and pipelining are supported; requests on one connection are answered in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

import httptools

from api.ingest.filters import REASONS
from api.ingest.fixes import FixBatch, FixError
from api.ingest.writer import GroupWriter, IngestUnavailable
from api.limits import ConnectionStats, connection_cap
from api.protocols import osmand
from api.ratelimit import RateLimiter
from api.settings import OsmAndSettings

log = logging.getLogger("gridpatrol.osmand")
MAX_BODY = 64 * 1024
_STATUS = {
    200: b"OK",
    400: b"Bad Request",
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
            cutoff = time.monotonic() - self.settings.idle_timeout_s
            for conn in list(self.connections):
                if conn.last_seen < cutoff and conn.transport is not None and conn.queue.empty():
                    conn.transport.close()

    async def handle(self, request: _Request) -> bytes:
        if request.method not in (b"GET", b"POST"):
            return _response(405, b"use GET or POST")
        raw = (request.url + (b" " + bytes(request.body) if request.body else b"")).decode(
            "utf-8", "replace"
        )
        now_us = int(self.clock() * 1e6)
        try:
            batch = self._parse(request, now_us)
        except osmand.OsmAndError as exc:
            error = FixError(row=1, reason=exc.reason, field=exc.field, raw=raw)
            return await self._quarantine_only(error)
        batch.raw[:] = raw
        if self.limiter is not None and len(batch):
            key = f"osmand:{batch.device[0]}"
            if not self.limiter.allow(key):
                wait = self.limiter.retry_after(key)
                return _response(429, b"too many requests; slow down", retry_after=wait)
        try:
            outcome = await self.writer.submit(batch, protocol="osmand")
        except IngestUnavailable as exc:
            return _response(503, str(exc).encode())
        reasons = sorted({REASONS[c] for c in outcome})
        if "unknown_device" in reasons:
            return _response(400, b"id: unknown device", outcome="unknown_device")
        return _response(200, outcome=",".join(reasons))

    def _parse(self, request: _Request, now_us: int) -> FixBatch:
        query = request.url.partition(b"?")[2]
        body = bytes(request.body)
        if request.method == b"POST" and body:
            if request.content_type.startswith(b"application/json"):
                return osmand.parse_json(body, now_us=now_us)
            query = query + b"&" + body if query else body  # form fields
        return osmand.parse_query(query, now_us=now_us)

    async def _quarantine_only(self, error: FixError) -> bytes:
        try:
            await self.writer.submit(FixBatch.empty(), protocol="osmand", errors=[error])
        except IngestUnavailable as exc:
            return _response(503, str(exc).encode())
        return _response(400, f"{error.field}: {error.reason}".encode(), outcome="unparsable")
