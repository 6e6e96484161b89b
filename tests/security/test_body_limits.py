"""Issue 18 item 4: a request is authenticated before its body is read, and bodies are capped
per route while they stream (``Content-Length`` first: 413 at once). Against a real server:
TestClient would read the whole body before the app sees it."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from starlette.requests import Request

from tests.security.live import (
    Live,
    answered,
    connect,
    live_server,
    read_response,
    status_of,
)

INGEST_MB = 4  # the upload limit this server runs with (JSON routes: the 1 MB default)


@pytest.fixture(scope="module")
def live(db_url: str, workdir: Path) -> Iterator[Live]:
    with live_server(
        db_url,
        workdir / "state-body-limits",
        "body_limits",
        GRIDPATROL_INGEST_MAX_BODY_MB=str(INGEST_MB),
        GRIDPATROL_INGEST_SERVICE_AREA="false",  # no boundaries needed: the plain database
    ) as server:
        yield server


def _head(method: str, path: str, headers: dict[str, str]) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {socket.gethostname()}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _incidents(db_url: str) -> int:
    with psycopg.connect(db_url, autocommit=True) as conn:
        return int(conn.execute("SELECT count(*) FROM incident").fetchone()[0])  # type: ignore[index]


def _error(response: bytes) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(response.partition(b"\r\n\r\n")[2])
    return body


def test_declared_oversize_body_is_refused_at_once(live: Live, db_url: str) -> None:
    """100 MB declared, no token: 413 before the body (only 64 KB of it is ever sent)."""
    before = _incidents(db_url)
    with connect(live.api) as sock:
        sock.sendall(
            _head(
                "POST",
                "/api/v1/incidents",
                {"Content-Type": "application/json", "Content-Length": str(100 * 1024 * 1024)},
            )
        )
        sock.sendall(b"[" + b"1," * 32 * 1024)
        response = read_response(sock)
    assert status_of(response) == 413
    error = _error(response)
    assert error["error"] == "payload_too_large"
    assert "GRIDPATROL_API_MAX_BODY_MB" in error["detail"]
    assert b"connection: close" in response.lower()
    assert _incidents(db_url) == before


def test_early_answer_is_readable_while_the_client_still_sends(live: Live) -> None:
    """A client that keeps sending its body (as HTTP libraries do) still reads the 413: the
    server half-closes and drops the rest for a moment instead of resetting the connection."""
    for _ in range(3):
        with connect(live.api) as sock:
            stop = threading.Event()

            def push(sock: socket.socket = sock, stop: threading.Event = stop) -> None:
                piece = b"1," * 32768
                try:
                    for _ in range(128):  # 8 MB at most
                        if stop.is_set():
                            return
                        sock.sendall(piece)
                except OSError:
                    return

            sock.sendall(
                _head(
                    "POST",
                    "/api/v1/incidents",
                    {"Content-Type": "application/json", "Content-Length": str(50 * 1024 * 1024)},
                )
            )
            sender = threading.Thread(target=push, daemon=True)
            sender.start()
            try:
                response = read_response(sock)
            finally:
                stop.set()
                sender.join(timeout=30)
        assert status_of(response) == 413


@pytest.mark.parametrize("token", [None, "gp_not-a-real-token"], ids=["no-token", "bad-token"])
def test_unauthenticated_body_is_not_read(live: Live, token: str | None) -> None:
    """A chunked body (no length to check) without a valid token: 401 while the body is still
    arriving — the server does not wait for it."""
    headers = {"Content-Type": "application/json", "Transfer-Encoding": "chunked"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    with connect(live.api) as sock:
        sock.sendall(_head("POST", "/api/v1/incidents", headers))
        sock.sendall(b"10000\r\n" + b" " * 0x10000 + b"\r\n")  # one 64 KB chunk, never the end
        response = read_response(sock)
    assert status_of(response) == 401
    error = _error(response)
    assert error["error"] == "unauthorized"
    assert "token" in error["detail"]


def test_body_over_limit_is_refused_while_streaming(
    live: Live, make_token: Any, db_url: str
) -> None:
    """With a valid token, a chunked body is counted while it arrives: 413 once past 1 MB."""
    token = make_token("dispatcher")
    before = _incidents(db_url)
    headers = {
        "Content-Type": "application/json",
        "Transfer-Encoding": "chunked",
        "Authorization": f"Bearer {token}",
    }
    chunk = b"10000\r\n" + b" " * 0x10000 + b"\r\n"
    sent = 0
    with connect(live.api) as sock:
        sock.sendall(_head("POST", "/api/v1/incidents", headers))
        while sent < 16 * 1024 * 1024 and not answered(sock):
            try:
                sock.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += 0x10000
            time.sleep(0.002)
        response = read_response(sock)
    assert status_of(response) == 413
    assert "GRIDPATROL_API_MAX_BODY_MB" in _error(response)["detail"]
    assert sent < 4 * 1024 * 1024, f"the server read {sent} bytes before refusing"
    assert _incidents(db_url) == before


def test_sign_in_body_is_small(live: Live) -> None:
    """The public sign-in reads a body without a token: it has its own small limit."""
    with connect(live.api) as sock:
        sock.sendall(
            _head(
                "POST",
                "/api/v1/auth/token",
                {"Content-Type": "application/json", "Content-Length": str(1024 * 1024)},
            )
        )
        sock.sendall(b'{"name": "' + b"a" * 60000)
        response = read_response(sock)
    assert status_of(response) == 413
    assert _error(response)["error"] == "payload_too_large"


def test_upload_routes_take_the_ingest_limit(live: Live, make_device: Any, db_url: str) -> None:
    """A 2 MB batch (over the JSON limit, under the upload limit) is stored; over the upload
    limit it is 413 naming GRIDPATROL_INGEST_MAX_BODY_MB, before the body."""
    identifier, token = make_device()
    fix = {
        "device": identifier,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 60)),
        "lat": 43.93,
        "lon": 116.07,
    }
    body = (json.dumps([fix]) + " " * (2 * 1024 * 1024)).encode()
    response = httpx.post(
        f"{live.base}/api/v1/positions",
        content=body,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    assert response.json()["stored"] == 1
    with psycopg.connect(db_url, autocommit=True) as conn:
        stored = conn.execute(
            "SELECT count(*) FROM position p JOIN device d ON d.id = p.device_id "
            "WHERE d.identifier = %s",
            (identifier,),
        ).fetchone()[0]  # type: ignore[index]
    assert stored == 1
    with connect(live.api) as sock:
        sock.sendall(
            _head(
                "POST",
                "/api/v1/positions",
                {
                    "Authorization": f"Bearer {token}",
                    "Content-Type": "application/json",
                    "Content-Length": str((INGEST_MB + 1) * 1024 * 1024),
                },
            )
        )
        answer = read_response(sock)
    assert status_of(answer) == 413
    assert "GRIDPATROL_INGEST_MAX_BODY_MB" in _error(answer)["detail"]


def test_json_routes_still_work(live: Live, make_token: Any, db_url: str) -> None:
    """The guard lets a normal authenticated JSON request through untouched."""
    admin = make_token("admin")
    name = f"limits-check-{os.getpid()}"
    response = httpx.post(
        f"{live.base}/api/v1/users",
        json={"name": name, "role": "viewer", "scope": ["*"], "display_name": "核查 check"},
        headers={"Authorization": f"Bearer {admin}"},
        timeout=30,
    )
    assert response.status_code == 201, response.text
    with psycopg.connect(db_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT role, display_name FROM users WHERE name = %s", (name,)
        ).fetchone()
    assert row == ("viewer", "核查 check")


def test_upload_is_spooled_to_disk_while_it_arrives(tmp_path: Path) -> None:
    """``read_body`` keeps at most ~1 MB of an upload in memory while it arrives: the rest is
    in a temporary file under ``<state dir>/uploads`` (open while receiving, gone after)."""
    from api import deps
    from api.settings import ApiSettings, Settings

    settings = Settings(api=ApiSettings(state_dir=tmp_path))
    uploads = tmp_path / "uploads"
    chunk = b"x" * 65536
    chunks = 48  # 3 MB
    seen_on_disk: list[bool] = []
    sent = 0

    def open_spools() -> list[str]:
        found = []
        for fd in Path("/proc/self/fd").iterdir():
            try:
                target = str(fd.readlink())
            except OSError:
                continue
            if target.startswith(str(uploads)):
                found.append(target)
        return found

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent == chunks - 1:
            seen_on_disk.append(bool(open_spools()))
        sent += 1
        return {"type": "http.request", "body": chunk, "more_body": sent < chunks}

    class _App:
        class state:  # noqa: N801 - mimics app.state
            pass

    _App.state.settings = settings  # type: ignore[attr-defined]
    scope = {"type": "http", "method": "POST", "path": "/x", "headers": [], "app": _App}
    request = Request(scope, receive)

    import asyncio

    body = asyncio.run(deps.read_body(request, max_mb=8))
    assert body == chunk * chunks
    assert seen_on_disk == [True]
    assert open_spools() == []


def test_a_body_nobody_reads_ends_the_connection(live: Live) -> None:
    """A chunked body sent with a GET (which no route reads): the answer comes, and the rest is
    not read for ever — past 1 MB of it the server closes the connection."""
    headers = {"Transfer-Encoding": "chunked"}
    chunk = b"10000\r\n" + b" " * 0x10000 + b"\r\n"
    sent = 0
    closed = False
    with connect(live.api) as sock:
        sock.sendall(_head("GET", "/healthz", headers))
        while sent < 64 * 1024 * 1024:
            try:
                sock.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            sent += 0x10000
    assert closed, f"the server read {sent} bytes of a body nobody wanted"
    assert sent < 16 * 1024 * 1024
