"""JT/T 808 ingest: 1,000 concurrent simulated terminals on loopback against ``gridpatrol serve``
in a subprocess. Each terminal registers, authenticates, then sends 0x0704 batches (20 reports
each) keeping a small window of unacknowledged messages, as a terminal with a backlog does; every
acknowledgement comes after the commit. Figures: location reports STORED per second (rows counted
in ``position`` afterwards), the server's peak RSS (VmRSS of the subprocess), and the ratio to a
bare decode-only loop (``FrameReader`` + ``decode_packet``) over the same frames in the same run.
Targets: ≥ 20,000 stored reports/s, RSS < 500 MB."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from api.demo import load_demo
from api.protocols import jt808
from api.protocols.jt808.terminal import Terminal
from bench.common import rss_mb, throwaway_database, write_result
from bench.load import server_process, wait_for_port

VILLAGE = "152502100200"
LAT, LON = 43.90, 116.00
TERMINALS = 1000
PER_MESSAGE = 20  # reports per 0x0704 (≈ 850 body bytes: one frame, no subpackaging)
WINDOW = 3  # unacknowledged messages per terminal
FIRST_SERIAL = 1000


def _phone(i: int) -> str:
    return f"1390000{i:04d}"


async def _register(url: str, n: int) -> None:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await load_demo(conn)
        await conn.execute(
            "INSERT INTO device (identifier, kind, home_village, jt808_phone) "
            "SELECT 'jt-' || p, 'vehicle', %s, p FROM unnest(%s::text[]) AS u(p)",
            (VILLAGE, [_phone(i) for i in range(n)]),
        )


def _frames(n: int, messages: int, per_message: int, first_k: int = 0) -> list[list[bytes]]:
    """Each terminal's frames: 0x0704 of ``per_message`` reports (0x0200 when 1), one report a
    second from ``first_k`` seconds after the start, moving ≈ 8 m/s east."""
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=3)
    out = []
    for i in range(n):
        lat, lon = LAT + (i % 40) * 2e-3, LON + (i // 40) * 2e-3
        frames = []
        for m in range(messages):
            first = first_k + m * per_message
            reports = tuple(
                jt808.Location(
                    0,
                    3,
                    lat,
                    round(lon + k * 1e-4, 6),
                    1100,
                    8.0,
                    90,
                    start + timedelta(seconds=k),
                    mileage_km=k / 10,
                    signal_strength=25,
                    satellites=12,
                )
                for k in range(first, first + per_message)
            )
            message: jt808.Message = (
                reports[0]
                if per_message == 1
                else jt808.BatchLocation(jt808.BatchType.NORMAL, reports)
            )
            frames.append(jt808.encode_frame(message, phone=_phone(i), serial=FIRST_SERIAL + m))
        out.append(frames)
    return out


def _decode_only(frames: list[list[bytes]]) -> tuple[int, float]:
    """The baseline: cut and decode every frame, nothing else → (reports, seconds)."""
    began = time.perf_counter()
    reports = 0
    for terminal in frames:
        reader = jt808.FrameReader()
        for packet in reader.feed(b"".join(terminal)):
            message = jt808.decode_packet(packet).message
            if isinstance(message, jt808.BatchLocation):
                reports += len(message.locations)
            else:
                assert isinstance(message, jt808.Location)
                reports += 1
    return reports, time.perf_counter() - began


async def _load(port: int, pid: int, frames: list[list[bytes]], per_message: int) -> dict[str, Any]:
    logins: list[int] = []
    ready = asyncio.Event()
    acked = [0] * TERMINALS
    idle = rss_mb(pid)
    peak = [idle]

    async def sample() -> None:
        while True:
            peak[0] = max(peak[0], rss_mb(pid))
            await asyncio.sleep(0.2)

    sampler = asyncio.get_running_loop().create_task(sample())

    tasks = [
        asyncio.create_task(_terminal(port, i, frames[i], per_message, logins, ready, acked))
        for i in range(TERMINALS)
    ]
    await ready.wait()
    began = time.perf_counter()
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - began
    sampler.cancel()
    return {
        "acked": sum(acked),
        "rss_idle_mb": idle,
        "seconds": elapsed,
        "rss_peak_mb": peak[0],
        "rss_end_mb": rss_mb(pid),
    }


async def _terminal(
    port: int,
    i: int,
    frames: list[bytes],
    per_message: int,
    logins: list[int],
    ready: asyncio.Event,
    acked: list[int],
) -> None:
    terminal = Terminal(_phone(i), host="127.0.0.1", port=port, reply_timeout=120)
    await terminal.login()
    logins.append(i)
    if len(logins) == TERMINALS:
        ready.set()
    await ready.wait()  # everybody starts together
    window: list[asyncio.Future[jt808.Message]] = []
    for m, frame in enumerate(frames):
        msg_id = jt808.Location.MSG_ID if per_message == 1 else jt808.BatchLocation.MSG_ID
        window.append(terminal.expect(FIRST_SERIAL + m, msg_id))
        terminal.send_raw(frame)
        while len(window) >= WINDOW or (m == len(frames) - 1 and window):
            reply = await terminal.wait_reply(window.pop(0))
            if isinstance(reply, jt808.PlatformGeneralReply) and reply.result == 0:
                acked[i] += per_message
    await terminal.close()


def _count(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM position WHERE protocol = 'jt808'").fetchone()
    return int(row[0]) if row else 0


def run(quick: bool = False) -> dict[str, Any]:
    messages, singles = (8, 5) if quick else (30, 15)
    try:
        import uvloop

        runner: Callable[..., Any] = uvloop.run
    except ImportError:
        runner = asyncio.run
    frames = _frames(TERMINALS, messages, PER_MESSAGE)
    single_frames = _frames(TERMINALS, singles, 1, first_k=messages * PER_MESSAGE + 60)
    decoded, decode_s = min((_decode_only(frames) for _ in range(3)), key=lambda r: r[1])
    with throwaway_database() as url:
        asyncio.run(_register(url, TERMINALS))
        with server_process(url, "jt808") as ports:
            wait_for_port(ports["jt808"])
            load = runner(_load(ports["jt808"], ports["pid"], frames, PER_MESSAGE))
            stored = _count(url)  # final: every acknowledgement came after its commit
            single = runner(_load(ports["jt808"], ports["pid"], single_frames, 1))
            single_stored = _count(url) - stored
    stored_per_s = stored / load["seconds"]
    decode_per_s = decoded / decode_s
    figures = {
        "terminals": TERMINALS,
        "reports_per_message": PER_MESSAGE,
        "window_messages": WINDOW,
        "messages": TERMINALS * messages,
        "reports_sent": decoded,
        "reports_acknowledged": load["acked"],
        "stored_rows": stored,
        "lost": load["acked"] - stored,
        "seconds": round(load["seconds"], 2),
        "stored_reports_per_s": round(stored_per_s),
        "messages_per_s": round(TERMINALS * messages / load["seconds"]),
        "server_rss_idle_mb": round(load["rss_idle_mb"], 1),
        "server_rss_peak_mb": round(max(load["rss_peak_mb"], single["rss_peak_mb"]), 1),
        "server_rss_end_mb": round(single["rss_end_mb"], 1),
        "baseline": "bare decode-only loop (FrameReader + decode_packet) of the same frames",
        "baseline_reports_per_s": round(decode_per_s),
        "ratio_to_decode": round(stored_per_s / decode_per_s, 3),
        "single_0x0200_messages": TERMINALS * singles,
        "single_0x0200_stored_rows": single_stored,
        "single_0x0200_stored_per_s": round(single_stored / single["seconds"]),
        "target_stored_reports_per_s": 20_000,
        "target_rss_mb": 500,
    }
    write_result("jt808", figures)
    return figures
