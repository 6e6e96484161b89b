"""Platform → terminal commands (0x8300 text, 0x8202 tracking, 0x8201 position query): sent to a
connected terminal, on record in ``jt808_command``, the terminal's 0x0001 / 0x0201 answer
recorded; the same through the HTTP API (scoped, role dispatcher) and ``gridpatrol jt808``."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import psycopg
import pytest
from fastapi.testclient import TestClient

from api.errors import Unprocessable
from api.protocols import jt808
from api.protocols.jt808.commands import TerminalOffline
from api.protocols.jt808.terminal import Terminal
from tests.api.protocols.test_jt808_server import (
    LAT,
    SUCCESS,
    fix,
    make_terminal_device,
    new_phone,
    positions,
    serving,
)
from tests.conftest import auth, run

pytestmark = pytest.mark.usefixtures("demo")
T = TypeVar("T")
TEXT = "请立即前往 152502100200001 网格 · 草原110 出警"


async def _answered(url: str, ids: list[int]) -> list[tuple[Any, ...]]:
    """The command rows once all are answered (bounded wait: the terminal answers at once)."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        for _ in range(400):
            rows = await (
                await conn.execute(
                    "SELECT id, msg_id, serial, params, result, answer, answered_at "
                    "FROM jt808_command WHERE id = ANY(%s) ORDER BY id",
                    (ids,),
                )
            ).fetchall()
            if len(rows) == len(ids) and all(r[6] is not None for r in rows):
                return rows
            await asyncio.sleep(0.05)
    raise AssertionError(f"commands {ids} were not answered")


def test_commands_are_sent_and_answers_recorded(db_url: str, db: psycopg.Connection[Any]) -> None:
    sent = fix(0)

    async def scenario() -> tuple[Terminal, int, list[tuple[Any, ...]]]:
        async with serving(db_url) as h:
            terminal, device_id, _ = await h.online()
            assert await terminal.send_location(sent) == SUCCESS
            ids = [
                await h.server.send_text(device_id, TEXT, requested_by="test"),
                await h.server.track(device_id, 5, 600),
                await h.server.query_position(device_id),
            ]
            rows = await _answered(db_url, ids)
            with pytest.raises(TerminalOffline):
                await h.server.send_text(device_id + 10_000_000, "无人")
            stats = h.server.snapshot()
            assert stats["commands"]["answered 0x8300"] == 1
            assert stats["commands"]["answered 0x8201"] == 1
            return terminal, device_id, rows

    terminal, device_id, rows = run(scenario())
    assert terminal.texts == [TEXT]
    assert terminal.tracking == jt808.TemporaryTracking(5, 600)
    text, track, query = rows
    assert (text[1], text[3], text[4]) == (0x8300, {"text": TEXT, "flags": 0x0C}, 0)
    assert text[5] == {"reply": "0x0001", "result": "success"}
    assert (track[1], track[3], track[4]) == (0x8202, {"interval_s": 5, "duration_s": 600}, 0)
    assert query[1] == 0x8201
    assert query[5]["reply"] == "0x0201"
    assert (query[5]["lat"], query[5]["lon"]) == (sent.latitude, sent.longitude)
    assert query[5]["time"] == sent.time.isoformat()  # type: ignore[union-attr]
    assert len({r[2] for r in rows}) == 3  # a fresh platform serial each
    assert len(positions(db, device_id)) == 1  # the 0x0201 position was the same fix


def test_bad_command_parameters_are_refused(db_url: str) -> None:
    async def scenario() -> list[str]:
        async with serving(db_url) as h:
            _, device_id, _ = await h.online()
            problems = []
            for call in (
                h.server.send_text(device_id, ""),
                h.server.send_text(device_id, "😀 not GBK"),
                h.server.send_text(device_id, "长" * 600),
                h.server.track(device_id, 70_000, 10),
            ):
                try:
                    await call
                except Unprocessable as exc:
                    problems.append(type(exc).__name__)
            return problems

    assert run(scenario()) == ["Unprocessable"] * 4


class _Background:
    """An event loop in a thread, for a terminal that stays connected while the test thread
    makes HTTP calls through the TestClient."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def __call__(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(60)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@contextmanager
def _terminal_online(port: int, phone: str) -> Iterator[tuple[_Background, Terminal]]:
    background = _Background()
    terminal = Terminal(phone, host="127.0.0.1", port=port)
    try:
        background(terminal.login())
        yield background, terminal
    finally:
        background(terminal.close())
        background.stop()


def _wait_answer(client: TestClient, token: str, command_id: int) -> dict[str, Any]:
    for _ in range(400):
        body: dict[str, Any] = client.get(
            f"/api/v1/jt808/commands/{command_id}", headers=auth(token)
        ).json()
        if body["answered_at"]:
            return body
        time.sleep(0.05)
    raise AssertionError(f"command {command_id} was not answered")


def test_the_http_api_sends_commands_in_scope(
    client: TestClient, tokens: dict[str, str], make_token: Any, db_url: str
) -> None:
    phone = new_phone()
    device_id, identifier = run(make_terminal_device(db_url, phone))
    offline_id, _ = run(make_terminal_device(db_url, new_phone()))
    port = client.app.state.jt808.port  # type: ignore[attr-defined]
    dispatcher, outsider = tokens["dispatcher"], make_token("dispatcher", ["152501"])
    url = f"/api/v1/jt808/terminals/{device_id}/commands"
    with _terminal_online(port, phone) as (background, terminal):
        background(terminal.send_location(fix(0)))
        response = client.post(url, json={"kind": "text", "text": TEXT}, headers=auth(dispatcher))
        assert response.status_code == 202, response.text
        command = response.json()
        assert (command["kind"], command["identifier"], command["msg_id"]) == (
            "text",
            identifier,
            0x8300,
        )
        assert _wait_answer(client, dispatcher, command["id"])["result_name"] == "success"
        response = client.post(url, json={"kind": "query_position"}, headers=auth(dispatcher))
        answered = _wait_answer(client, dispatcher, response.json()["id"])
        assert answered["answer"]["lat"] == LAT
        listed = client.get(url, headers=auth(dispatcher)).json()
        assert [c["kind"] for c in listed] == ["query_position", "text"]
        online = client.get("/api/v1/jt808/terminals", headers=auth(dispatcher)).json()
        assert device_id in [t["device_id"] for t in online]
        hidden = client.get("/api/v1/jt808/terminals", headers=auth(outsider)).json()
        assert device_id not in [t["device_id"] for t in hidden]
        # outside the scope: as if the device did not exist
        outside = client.post(url, json={"kind": "query_position"}, headers=auth(outsider))
        assert outside.status_code == 404
        peek = client.get(f"/api/v1/jt808/commands/{command['id']}", headers=auth(outsider))
        assert peek.status_code == 404
        bad = client.post(url, json={"kind": "text"}, headers=auth(dispatcher))
        assert bad.status_code == 422
        stats = client.get("/api/v1/jt808/stats", headers=auth(tokens["admin"])).json()
        assert stats["commands"]["sent 0x8300"] >= 1
    assert terminal.texts == [TEXT]
    offline = client.post(
        f"/api/v1/jt808/terminals/{offline_id}/commands",
        json={"kind": "track", "interval_s": 5},
        headers=auth(dispatcher),
    )
    assert offline.status_code == 409
    assert offline.json()["error"] == "terminal_offline"


def test_the_cli_sends_through_the_api_and_resets_a_registration(
    client: TestClient,
    tokens: dict[str, str],
    db_url: str,
    db: psycopg.Connection[Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from typer.testing import CliRunner

    from api.cli import app as cli
    from api.cli import jt808 as cli_jt808

    def call(method: str, url: str, token: str, body: dict[str, Any] | None = None) -> Any:
        path = url.removeprefix("http://gridpatrol.test")
        response = client.request(method, path, json=body, headers=auth(token))
        assert response.status_code < 300, response.text
        return response.json()

    monkeypatch.setenv("DATABASE_URL", db_url)
    monkeypatch.setenv("GRIDPATROL_TOKEN", tokens["dispatcher"])
    monkeypatch.setattr(cli_jt808, "_call", call)
    phone = new_phone()
    device_id, _ = run(make_terminal_device(db_url, phone))
    port = client.app.state.jt808.port  # type: ignore[attr-defined]
    runner = CliRunner()
    api = ["--api", "http://gridpatrol.test"]
    with _terminal_online(port, phone) as (_, terminal):
        result = runner.invoke(cli, ["jt808", "send", "0" + phone, "--track", "10", *api])
        assert result.exit_code == 0, result.output
        assert "track" in result.output
        assert "success" in result.output
    assert terminal.tracking == jt808.TemporaryTracking(10, 600)
    result = runner.invoke(cli, ["jt808", "reset", f"#{device_id}"])
    assert result.exit_code == 0, result.output
    row = db.execute(
        "SELECT jt808_auth_hash, jt808_phone FROM device WHERE id = %s", (device_id,)
    ).fetchone()
    assert row == (None, phone)
    other = new_phone()
    result = runner.invoke(cli, ["jt808", "bind", phone, "00" + other])  # found by its phone
    assert result.exit_code == 0, result.output
    row = db.execute("SELECT jt808_phone FROM device WHERE id = %s", (device_id,)).fetchone()
    assert row == (other,)
