"""Issue 18 item 14: slow clients are closed (header and body deadlines on the API and on
OsmAnd), connections are capped below the descriptor limit, and what was refused or closed is
counted in ``/api/v1/ingest/stats``. Against a real ``gridpatrol serve`` with short deadlines
(2 s); "closed within" bounds are generous (several times the deadline), never a measurement."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.security.live import Live, closed_within, connect, live_server, status_of

DEADLINE_S = 2
GENEROUS_S = 20  # a dribbler that is not closed by then never is (the old code: > 150 s)
CAP = 6


@pytest.fixture(scope="module")
def live(db_url: str, workdir: Path) -> Iterator[Live]:
    with live_server(
        db_url,
        workdir / "state-slow-clients",
        "slow_clients",
        GRIDPATROL_API_HEADER_TIMEOUT_S=str(DEADLINE_S),
        GRIDPATROL_API_BODY_TIMEOUT_S=str(DEADLINE_S),
        GRIDPATROL_OSMAND_HEADER_TIMEOUT_S=str(DEADLINE_S),
        GRIDPATROL_OSMAND_BODY_TIMEOUT_S=str(DEADLINE_S),
        GRIDPATROL_API_MAX_CONNECTIONS=str(CAP),
    ) as server:
        yield server


REQUEST = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"p" * 200 + b"\r\n\r\n"


def test_api_header_dribbler_is_closed(live: Live) -> None:
    with connect(live.api) as sock:
        closed, received = closed_within(sock, GENEROUS_S, dribble=REQUEST)
    assert closed, "a client sending one byte every 0.5 s kept the API's header read open"
    assert received == b"" or status_of(received) == 408


def test_api_silent_connection_is_closed(live: Live) -> None:
    """Connected, never a byte: uvicorn armed no timer until a first response."""
    with connect(live.api) as sock:
        closed, _ = closed_within(sock, GENEROUS_S)
    assert closed


def test_api_body_stall_is_closed(live: Live, make_token: Any) -> None:
    token = make_token("dispatcher")
    head = (
        "POST /api/v1/incidents HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {token}\r\nContent-Length: 200\r\n\r\n"
    ).encode()
    with connect(live.api) as sock:
        sock.sendall(head + b'{"kind": ')
        closed, received = closed_within(sock, GENEROUS_S)
    assert closed, "a body that stopped arriving kept the request open"
    assert received == b"" or status_of(received) == 408


def test_osmand_header_dribbler_is_closed(live: Live) -> None:
    request = b"GET /?id=slow&lat=43.9&lon=116.0 HTTP/1.1\r\nHost: x\r\n\r\n"
    with connect(live.osmand) as sock:
        closed, received = closed_within(sock, GENEROUS_S, dribble=request)
    assert closed, "a device sending one byte every 0.5 s kept the OsmAnd header read open"
    assert status_of(received) == 408


def test_osmand_body_stall_is_closed(live: Live) -> None:
    head = (
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        b"Content-Length: 100\r\n\r\nid=slow"
    )
    with connect(live.osmand) as sock:
        sock.sendall(head)
        closed, received = closed_within(sock, GENEROUS_S)
    assert closed
    assert status_of(received) == 408


def test_api_connections_are_capped(live: Live) -> None:
    """Past the cap a new connection is answered 503 and closed at once; those within it work."""
    held: list[socket.socket] = []
    try:
        held.extend(connect(live.api) for _ in range(CAP))
        with connect(live.api) as extra:
            closed, received = closed_within(extra, 10)
        assert closed
        assert status_of(received) == 503
        assert b"too many connections" in received
    finally:
        for sock in held:
            with contextlib.suppress(OSError):
                sock.close()


def test_refusals_are_counted_in_the_stats(live: Live, make_token: Any) -> None:
    """After the tests above (same server): the admin's ingest statistics count them."""
    with connect(live.api) as sock:  # one more, so this test also stands alone
        closed_within(sock, GENEROUS_S)
    with connect(live.osmand) as sock:
        closed_within(sock, GENEROUS_S)
    admin = make_token("admin")
    response = httpx.get(
        f"{live.base}/api/v1/ingest/stats",
        headers={"Authorization": f"Bearer {admin}"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    connections = response.json()["connections"]
    assert connections["api"]["closed_header_timeout"] >= 1
    assert connections["osmand"]["closed_header_timeout"] >= 1
    assert set(connections["api"]) >= {"refused_over_cap", "closed_body_timeout"}


def test_caps_stay_below_the_descriptor_limit() -> None:
    """Defaults never reach the fd limit: API ≤ 10 %, OsmAnd ≤ 40 % of what the reserve
    leaves, whatever is configured."""
    from api.limits import FD_RESERVE, connection_cap, fd_limit
    from api.settings import ApiSettings, Jt808Settings, OsmAndSettings

    budget = fd_limit() - FD_RESERVE
    api = connection_cap(ApiSettings().max_connections, 0.1)
    osmand = connection_cap(OsmAndSettings().max_connections, 0.4)
    jt808 = connection_cap(Jt808Settings().max_connections, 0.4)
    assert api <= budget * 0.1
    assert osmand <= budget * 0.4
    assert jt808 <= budget * 0.4
    assert api + osmand + jt808 < fd_limit()  # the old defaults: 20,000 each, the limit itself
    assert connection_cap(10**9, 0.4) < fd_limit()
