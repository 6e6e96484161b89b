"""Issue 18 item 5: the OsmAnd server caps the request line (414), the headers (431, count and
size) and the body (413, ``Content-Length`` first), gathers the URL without quadratic copying,
and keeps serving others meanwhile. Against a real ``gridpatrol serve``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.security.live import Live, connect, live_server, read_response, status_of


@pytest.fixture(scope="module")
def live(db_url: str, workdir: Path) -> Iterator[Live]:
    with live_server(db_url, workdir / "state-osmand-framing", "osmand_framing") as server:
        yield server


def _still_serving(live: Live) -> None:
    """A normal request on a new connection is answered (whatever the device's fate)."""
    with connect(live.osmand) as sock:
        sock.sendall(b"GET /?id=framing-check&lat=43.9&lon=116.0 HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status_of(read_response(sock)) in (200, 400, 401, 403, 429)
    assert httpx.get(f"{live.base}/healthz", timeout=10).status_code == 200


def test_long_request_line_is_refused(live: Live) -> None:
    """1 MB of URL, the request line never finished: 414 after the first few KB, closed."""
    with connect(live.osmand) as sock:
        sock.sendall(b"GET /?id=1&pad=")
        sent = 0
        try:
            while sent < 1024 * 1024:
                sock.sendall(b"a" * 16384)
                sent += 16384
        except (BrokenPipeError, ConnectionResetError):
            pass
        response = read_response(sock)
    assert status_of(response) == 414
    assert b"request line too long" in response
    _still_serving(live)


def test_many_headers_are_refused(live: Live) -> None:
    headers = b"".join(b"X-Filler-%d: y\r\n" % i for i in range(200))
    with connect(live.osmand) as sock:
        sock.sendall(b"GET /?id=1&lat=43.9&lon=116.0 HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
        response = read_response(sock)
    assert status_of(response) == 431
    _still_serving(live)


def test_large_header_is_refused(live: Live) -> None:
    """One 1 MB header value, never finished: 431 without waiting for its end."""
    with connect(live.osmand) as sock:
        sock.sendall(b"GET /?id=1 HTTP/1.1\r\nHost: x\r\nX-Big: ")
        try:
            for _ in range(64):
                sock.sendall(b"b" * 16384)
        except (BrokenPipeError, ConnectionResetError):
            pass
        response = read_response(sock)
    assert status_of(response) == 431
    _still_serving(live)


def test_declared_large_body_is_refused_before_it_arrives(live: Live) -> None:
    with connect(live.osmand) as sock:
        sock.sendall(
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            b"Content-Length: 10485760\r\n\r\nid=1&"
        )
        response = read_response(sock)
    assert status_of(response) == 413
    assert b"body too large" in response
    _still_serving(live)


def test_url_pieces_are_gathered_not_concatenated() -> None:
    """The URL arrives in pieces (one per read): they go into one bytearray; the request the
    handler sees carries the whole URL as bytes."""
    import asyncio

    from api.protocols.osmand_server import OsmAndServer, _Connection
    from api.settings import OsmAndSettings

    async def go() -> bytes:
        server = OsmAndServer(OsmAndSettings(port=0), writer=None)  # type: ignore[arg-type]
        conn = _Connection(server)
        url = b"/?id=abc&lat=43.9&lon=116.0&pad=" + b"z" * 3000

        class _T:
            def write(self, data: bytes) -> None:
                pass

            def close(self) -> None:
                pass

            def is_closing(self) -> bool:
                return False

            def get_extra_info(self, name: str, default: object = None) -> object:
                return ("127.0.0.1", 40000) if name == "peername" else default

        conn.transport = _T()  # type: ignore[assignment]
        conn.data_received(b"GET ")
        for i in range(0, len(url), 7):
            conn.data_received(url[i : i + 7])
        assert isinstance(conn._url, bytearray)
        conn.data_received(b" HTTP/1.1\r\nHost: x\r\n\r\n")
        request = conn.queue.get_nowait()
        assert request is not None
        conn._disarm()
        return request.url

    assert asyncio.run(go()) == b"/?id=abc&lat=43.9&lon=116.0&pad=" + b"z" * 3000
