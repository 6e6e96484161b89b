"""``/api/v1/jt808``: the JT/T 808 server's counters and terminals, and commands to terminals.

- ``GET /stats`` (admin): frames, errors per reason, messages per id, replies, events …
- ``GET /terminals`` (dispatcher): the connected, authenticated terminals in your scope.
- ``POST /terminals/{device_id}/commands`` (dispatcher): send a text (0x8300), a temporary
  tracking order (0x8202) or a position query (0x8201) to a connected terminal; 202 with the
  command record, 409 ``terminal_offline`` when it is not connected, 404 outside your scope.
- ``GET /terminals/{device_id}/commands`` and ``GET /commands/{command_id}`` (dispatcher): the
  record, with the terminal's answer once it came (``answered_at``, ``result_name``, ``answer``).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Self

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field, model_validator

from api import audit, devices
from api.auth import Admin, Dispatcher
from api.deps import Conn
from api.errors import NotFound, Unavailable
from api.protocols.jt808 import commands
from api.protocols.jt808.server import Jt808Server
from api.roles.relay import RemoteTerminals

router = APIRouter(prefix="/api/v1/jt808", tags=["jt808"])


class CommandIn(BaseModel):
    """A command for a terminal: ``text`` (0x8300), ``track`` (0x8202) or ``query_position``
    (0x8201)."""

    kind: Literal["text", "track", "query_position"]
    text: str | None = Field(default=None, max_length=500, description="for kind=text (GBK)")
    emergency: bool = Field(default=False, description="kind=text: mark as emergency")
    interval_s: int | None = Field(
        default=None, ge=0, le=65535, description="kind=track: seconds between reports; 0 stops"
    )
    duration_s: int = Field(
        default=600, ge=0, le=86_400 * 7, description="kind=track: how long to keep the rate"
    )

    @model_validator(mode="after")
    def _fields_of_kind(self) -> Self:
        if self.kind == "text" and not self.text:
            raise ValueError("kind=text needs a non-empty text")
        if self.kind == "track" and self.interval_s is None:
            raise ValueError("kind=track needs interval_s")
        return self


def _server(request: Request) -> Jt808Server | RemoteTerminals:
    """This process's 808 server, or the relay to the ingest processes' (``api.roles``)."""
    server: Jt808Server | RemoteTerminals | None = getattr(request.app.state, "jt808", None)
    if server is None:
        raise Unavailable("the JT/T 808 server is not running (GRIDPATROL_JT808_ENABLED)")
    return server


@router.get("/stats", summary="JT/T 808 server counters")
async def stats(principal: Admin, request: Request) -> dict[str, Any]:  # noqa: ARG001
    server = _server(request)
    if isinstance(server, RemoteTerminals):  # the ingest processes' counters, added up
        return await server.stats()
    return server.snapshot()


@router.get("/terminals", summary="Connected JT/T 808 terminals in your scope")
async def terminals(principal: Dispatcher, request: Request) -> list[dict[str, Any]]:
    scope = principal.scope
    server = _server(request)
    connected = (
        await server.terminal_list() if isinstance(server, RemoteTerminals) else server.terminals()
    )
    return [
        t
        for t in connected
        if scope.unrestricted or (t["home_village"] and scope.covers_area(t["home_village"]))
    ]


@router.post(
    "/terminals/{device_id}/commands",
    status_code=202,
    summary="Send a command to a connected terminal",
)
async def send_command(
    device_id: int, body: CommandIn, principal: Dispatcher, conn: Conn, request: Request
) -> dict[str, Any]:
    await devices.get_device(conn, principal.scope, device_id)  # 404 outside the scope
    server = _server(request)
    who = principal.name
    if body.kind == "text":
        assert body.text is not None  # noqa: S101 - validated
        command_id = await server.send_text(
            device_id, body.text, emergency=body.emergency, requested_by=who
        )
    elif body.kind == "track":
        assert body.interval_s is not None  # noqa: S101 - validated
        command_id = await server.track(
            device_id, body.interval_s, body.duration_s, requested_by=who
        )
    else:
        command_id = await server.query_position(device_id, requested_by=who)
    async with conn.transaction():
        await audit.record(
            conn,
            principal,
            "jt808.command",
            object_type="device",
            object_id=device_id,
            detail={"command_id": command_id, **body.model_dump(exclude_none=True)},
        )
    row = await commands.get_command(conn, command_id)
    assert row is not None  # noqa: S101 - just written
    return row


@router.get("/terminals/{device_id}/commands", summary="A device's commands, newest first")
async def list_commands(
    device_id: int,
    principal: Dispatcher,
    conn: Conn,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[dict[str, Any]]:
    await devices.get_device(conn, principal.scope, device_id)
    return await commands.list_commands(conn, device_id, limit=limit)


@router.get("/commands/{command_id}", summary="One command and the terminal's answer")
async def get_command(command_id: int, principal: Dispatcher, conn: Conn) -> dict[str, Any]:
    row = await commands.get_command(conn, command_id)
    if row is None:
        raise NotFound(f"no command {command_id}")
    await devices.get_device(conn, principal.scope, row["device_id"])  # 404 outside the scope
    return row
