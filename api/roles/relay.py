"""Platform → terminal JT/T 808 commands across processes (PostgreSQL LISTEN/NOTIFY).

A terminal is connected to one ingest process; the route that sends it a command runs in the API
process. The API side (``RemoteTerminals``, the API's ``app.state.jt808`` when this process runs
no 808 server) publishes the command on ``gridpatrol_jt808``; every ingest process listens there
(``CommandOwner``), and the one holding the terminal's connection sends it through its
``Jt808Server`` (which records it in ``jt808_command`` as before) and answers on
``gridpatrol_jt808_reply`` with the command id or the error; the others answer that they do not
hold it. Every process "not here" (or no answer within ``WAIT_S``, or no ingest process at
all): 409 ``terminal_offline``, as for a local server.

The 808 counters, the connected terminals (``/api/v1/jt808/stats``, ``/terminals``) and what the
OsmAnd listeners refused or closed (``/api/v1/ingest/stats``) are asked of every ingest process
the same way; each answers with its own (in pieces: a notification
carries at most 8,000 bytes), and the API adds the counters up and joins the lists. It waits
for as many answers as there are ingest processes listening (``pg_stat_activity``, their relay
connections are named ``RELAY_NAME``), at most ``WAIT_S``.

One connection per terminal holds across processes too: a process where a terminal
authenticates says so (``bound``), and another process still holding an older connection of
that terminal closes it (``replaced``), as one server does for a terminal that reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg.conninfo import make_conninfo
from psycopg_pool import AsyncConnectionPool

from api.errors import Conflict, DomainError, Unavailable, Unprocessable
from api.protocols.jt808.commands import TerminalOffline
from api.protocols.jt808.server import Jt808Server
from api.protocols.osmand_server import OsmAndServer

log = logging.getLogger("gridpatrol.relay")
REQUESTS = "gridpatrol_jt808"
REPLIES = "gridpatrol_jt808_reply"
WAIT_S = 3.0
RELAY_NAME = "gridpatrol-ingest-relay"  # application_name of an ingest process's LISTEN
PIECE = 7000  # characters of ASCII JSON per notification (the limit is 8,000 bytes)
SENDER = f"{os.getpid()}@{socket.gethostname()}"  # this process, in the relay's messages
ERRORS: dict[str, type[DomainError]] = {
    TerminalOffline.code: TerminalOffline,
    Unprocessable.code: Unprocessable,
    Conflict.code: Conflict,
}
NO_INGEST = "no ingest process is running (gridpatrol serve --role ingest): no JT/T 808 server"


class _Listener:
    """LISTEN on one channel on a dedicated connection, calling ``handle`` with each payload;
    reconnects after a lost connection. ``ready`` is set once listening."""

    def __init__(
        self, url: str, channel: str, handle: Callable[[str], None], name: str | None = None
    ) -> None:
        self.url, self.channel, self.handle = url, channel, handle
        self.name = name  # application_name of the connection (None: the URL's)
        self.ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self, wait_s: float = 10.0) -> None:
        self._task = asyncio.create_task(self._run(), name=f"listen-{self.channel}")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.ready.wait(), wait_s)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                url = make_conninfo(self.url, application_name=self.name) if self.name else self.url
                async with await psycopg.AsyncConnection.connect(
                    url, autocommit=True, connect_timeout=5
                ) as conn:
                    await conn.execute(f"LISTEN {self.channel}")
                    self.ready.set()
                    async for note in conn.notifies():
                        try:
                            self.handle(note.payload)
                        except Exception:
                            log.exception("bad message on %s", self.channel)
            except psycopg.Error as exc:
                self.ready.clear()
                log.warning("LISTEN %s lost (%s); again in 1 s", self.channel, exc)
                await asyncio.sleep(1.0)


async def _notify(pool: AsyncConnectionPool, channel: str, message: dict[str, Any]) -> None:
    async with pool.connection() as db:
        await db.execute("SELECT pg_notify(%s, %s)", (channel, json.dumps(message)))


async def _notify_pieces(pool: AsyncConnectionPool, request_id: str, value: Any) -> None:
    """Answer ``request_id`` with ``value`` in as many notifications as it takes."""
    text = json.dumps(value)  # ASCII: one character is one byte
    sender = SENDER
    pieces = [text[i : i + PIECE] for i in range(0, len(text), PIECE)] or [""]
    async with pool.connection() as db:
        for n, piece in enumerate(pieces):
            message = {
                "id": request_id,
                "from": sender,
                "part": n,
                "parts": len(pieces),
                "piece": piece,
            }
            await db.execute("SELECT pg_notify(%s, %s)", (REPLIES, json.dumps(message)))


def add_up(snapshots: list[dict[str, Any]]) -> dict[str, Any]:
    """Several processes' 808 counters as one: numbers summed (per key, recursively), other
    values (the port) from the first."""
    out: dict[str, Any] = {}
    for snapshot in snapshots:
        for key, value in snapshot.items():
            if isinstance(value, dict):
                out[key] = add_up([out.get(key, {}), value])
            elif isinstance(value, int | float) and not isinstance(value, bool) and key != "port":
                out[key] = out.get(key, 0) + value
            else:
                out.setdefault(key, value)
    return out


@dataclass
class _Pending:
    """A command waiting for the process holding the terminal, or for every process to say
    it does not hold it."""

    expected: int
    absent: int = 0
    future: asyncio.Future[dict[str, Any]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


@dataclass
class _Gathering:
    """Answers to one question asked of every ingest process."""

    expected: int
    pieces: dict[str, dict[int, str]] = field(default_factory=dict)
    answers: dict[str, Any] = field(default_factory=dict)
    complete: asyncio.Event = field(default_factory=asyncio.Event)

    def add(self, reply: dict[str, Any]) -> None:
        sender = str(reply["from"])
        got = self.pieces.setdefault(sender, {})
        got[int(reply["part"])] = str(reply["piece"])
        if len(got) == int(reply["parts"]):
            self.answers[sender] = json.loads("".join(got[i] for i in range(len(got))))
            if len(self.answers) >= self.expected:
                self.complete.set()


class CommandOwner:
    """In an ingest process: send the commands for the terminals connected here."""

    def __init__(
        self,
        server: Jt808Server,
        url: str,
        pool: AsyncConnectionPool,
        osmand: OsmAndServer | None = None,
    ) -> None:
        self.server, self.pool, self.osmand = server, pool, osmand
        self._listener = _Listener(url, REQUESTS, self._received, name=RELAY_NAME)
        self._running: set[asyncio.Task[None]] = set()
        self._bound_at: dict[int, float] = {}  # device id → when its terminal bound here

    async def start(self) -> None:
        await self._listener.start()
        self.server.on_bind = self._bound

    def _bound(self, device_id: int) -> None:
        """A terminal authenticated here: the other ingest processes close their connection of
        it (one connection per terminal, across processes)."""
        at = self._bound_at[device_id] = time.time()
        message = {"op": "bound", "device_id": device_id, "from": SENDER, "at": at}
        self._spawn(_notify(self.pool, REQUESTS, message))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def stop(self) -> None:
        await self._listener.stop()
        for task in list(self._running):
            task.cancel()

    def _received(self, payload: str) -> None:
        request = json.loads(payload)
        if request["op"] == "bound":
            self._replaced(request)
            return
        if request["op"] in ("stats", "terminals", "connections"):
            work = self._tell(request)
        else:
            conn = self.server.by_device.get(int(request["device_id"]))
            if conn is None or conn.closed or conn.session is None:
                work = _notify(self.pool, REPLIES, {"id": request["id"], "absent": True})
            else:
                work = self._send(request)
        self._spawn(work)

    def _replaced(self, request: dict[str, Any]) -> None:
        """Another process's terminal bound after ours did: close ours (``replaced``)."""
        device_id = int(request["device_id"])
        conn = self.server.by_device.get(device_id)
        if request["from"] == SENDER or conn is None or conn.closed:
            return
        if self._bound_at.get(device_id, 0.0) < float(request["at"]):
            self.server.unbind(conn)
            conn.close("replaced")

    async def _tell(self, request: dict[str, Any]) -> None:
        """This process's counters or terminals, for the API adding up every process's."""
        server = self.server
        if request["op"] == "stats":
            value: Any = server.snapshot()
        elif request["op"] == "connections":  # what this process's OsmAnd listener refused
            value = {"osmand": self.osmand.stats.as_dict()} if self.osmand is not None else {}
        else:  # which process holds each: where a relayed command goes
            value = [{**t, "process": SENDER} for t in server.terminals()]
        await _notify_pieces(self.pool, request["id"], value)

    async def _send(self, request: dict[str, Any]) -> None:
        device_id, args, who = int(request["device_id"]), request["args"], request["by"]
        reply: dict[str, Any] = {"id": request["id"]}
        try:
            if request["op"] == "send_text":
                command_id = await self.server.send_text(
                    device_id, args["text"], emergency=bool(args["emergency"]), requested_by=who
                )
            elif request["op"] == "track":
                command_id = await self.server.track(
                    device_id, int(args["interval_s"]), int(args["duration_s"]), requested_by=who
                )
            else:
                command_id = await self.server.query_position(device_id, requested_by=who)
            reply["command_id"] = command_id
        except DomainError as exc:
            reply.update(error=exc.code, message=exc.message)
        except Exception as exc:
            log.exception("command for device %d failed", device_id)
            reply.update(error="unavailable", message=f"the ingest process failed: {exc}")
        await _notify(self.pool, REPLIES, reply)


class RemoteTerminals:
    """In the API process: the ``Terminals`` of dispatch and the 808 routes, relayed to the
    ingest process that holds each terminal."""

    def __init__(self, url: str, pool: AsyncConnectionPool, wait_s: float = WAIT_S) -> None:
        self.pool, self.wait_s = pool, wait_s
        self._waiting: dict[str, _Pending] = {}
        self._gathering: dict[str, _Gathering] = {}
        self._listener = _Listener(url, REPLIES, self._answered)

    async def start(self) -> None:
        await self._listener.start()

    async def stop(self) -> None:
        await self._listener.stop()

    def _answered(self, payload: str) -> None:
        reply = json.loads(payload)
        gathering = self._gathering.get(str(reply.get("id")))
        if gathering is not None:
            gathering.add(reply)
            return
        pending = self._waiting.get(str(reply.get("id")))
        if pending is None or pending.future.done():
            return
        if reply.get("absent"):
            pending.absent += 1
            if pending.absent >= pending.expected:  # every ingest process said "not here"
                pending.future.set_result(reply)
        else:
            pending.future.set_result(reply)

    async def _listening(self) -> int:
        """How many ingest processes listen for commands now."""
        if not self._listener.ready.is_set():
            raise Unavailable("the JT/T 808 relay is not connected to the database")
        async with self.pool.connection() as db:
            row = await (
                await db.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
                    (RELAY_NAME,),
                )
            ).fetchone()
        return int(row[0]) if row else 0

    async def _call(self, op: str, device_id: int, by: str | None, **args: Any) -> int:
        offline = TerminalOffline(
            f"the terminal of device {device_id} is not connected to any ingest process"
        )
        expected = await self._listening()
        if expected == 0:
            raise offline
        request_id = uuid.uuid4().hex
        pending = self._waiting[request_id] = _Pending(expected)
        message = {"id": request_id, "op": op, "device_id": device_id, "by": by, "args": args}
        try:
            await _notify(self.pool, REQUESTS, message)
            reply = await asyncio.wait_for(pending.future, self.wait_s)
        except TimeoutError:
            raise offline from None
        finally:
            self._waiting.pop(request_id, None)
        if reply.get("absent"):
            raise offline
        if "error" in reply:
            raise ERRORS.get(reply["error"], Unavailable)(str(reply.get("message", "")))
        return int(reply["command_id"])

    async def send_text(
        self,
        device_id: int,
        text: str,
        *,
        emergency: bool = False,
        requested_by: str | None = None,
    ) -> int:
        return await self._call(
            "send_text", device_id, requested_by, text=text, emergency=emergency
        )

    async def track(
        self, device_id: int, interval_s: int, duration_s: int, *, requested_by: str | None = None
    ) -> int:
        return await self._call(
            "track", device_id, requested_by, interval_s=interval_s, duration_s=duration_s
        )

    async def query_position(self, device_id: int, *, requested_by: str | None = None) -> int:
        return await self._call("query_position", device_id, requested_by)

    async def _gather(self, op: str) -> list[Any]:
        """Every ingest process's answer to ``op`` (those in by ``wait_s``)."""
        expected = await self._listening()
        if expected == 0:
            return []
        request_id = uuid.uuid4().hex
        gathering = self._gathering[request_id] = _Gathering(expected)
        try:
            await _notify(self.pool, REQUESTS, {"id": request_id, "op": op})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(gathering.complete.wait(), self.wait_s)
        finally:
            del self._gathering[request_id]
        return list(gathering.answers.values())

    async def stats(self) -> dict[str, Any]:
        """The counters of every ingest process, added up (``processes``: how many)."""
        answers = await self._gather("stats")
        if not answers:
            raise Unavailable(NO_INGEST)
        return {**add_up(answers), "processes": len(answers)}

    async def connections(self) -> dict[str, Any]:
        """What the ingest processes' listeners refused or closed, added up (``{}``: none)."""
        return add_up(await self._gather("connections"))

    async def terminal_list(self) -> list[dict[str, Any]]:
        """The terminals connected to any ingest process, by device id."""
        answers = await self._gather("terminals")
        return sorted((t for answer in answers for t in answer), key=lambda t: t["device_id"])
