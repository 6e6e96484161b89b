"""Talking to the assigned vehicle's JT/T 808 terminal: the order text and the reporting rate.

The server's service API (``send_text``, ``track``) raises ``TerminalOffline`` when the
terminal is not connected; dispatch records that and carries on.
"""

from __future__ import annotations

from typing import Any, Protocol

from api.errors import DomainError
from api.protocols.jt808.commands import TerminalOffline
from api.settings import DispatchSettings

MAX_TEXT_BYTES = 400  # GBK bytes of the order text (well inside one 808 frame)


class Terminals(Protocol):
    """What dispatch needs of ``Jt808Server``."""

    async def send_text(
        self, device_id: int, text: str, *, emergency: bool = False, requested_by: str | None = None
    ) -> int: ...

    async def track(
        self, device_id: int, interval_s: int, duration_s: int, *, requested_by: str | None = None
    ) -> int: ...


def order_text(incident: dict[str, Any]) -> str:
    """The order read out in the vehicle (GBK-safe, at most ``MAX_TEXT_BYTES`` bytes)."""
    place = incident.get("grid_code") or incident.get("village_code") or ""
    text = (
        f"派警 #{incident['id']} {incident['kind']} 优先级{incident['priority']} "
        f"{place} 位置 {incident['lat']:.5f},{incident['lon']:.5f}"
    )
    if incident.get("description"):
        text += f" {incident['description']}"
    data = text.encode("gbk", errors="replace")[:MAX_TEXT_BYTES]
    return data.decode("gbk", errors="ignore")


async def order_terminal(
    terminals: Terminals | None,
    incident: dict[str, Any],
    device_id: int,
    settings: DispatchSettings,
    requested_by: str,
) -> dict[str, Any]:
    """Send 0x8300 (the order) and 0x8202 (report every ``track_interval_s`` for
    ``track_duration_s``); returns ``{"terminal": sent | offline | no_808_server | error…}``
    and the command ids."""
    if terminals is None:
        return {"terminal": "no_808_server"}
    out: dict[str, Any] = {"terminal": "sent"}
    try:
        out["text_command_id"] = await terminals.send_text(
            device_id,
            order_text(incident),
            emergency=int(incident["priority"]) <= 2,
            requested_by=requested_by,
        )
        out["track_command_id"] = await terminals.track(
            device_id,
            settings.track_interval_s,
            settings.track_duration_s,
            requested_by=requested_by,
        )
    except TerminalOffline as exc:
        out.update(terminal="offline", detail=exc.message)
    except DomainError as exc:
        out.update(terminal="error", detail=exc.message)
    return out


async def stop_tracking(terminals: Terminals | None, device_id: int, requested_by: str) -> str:
    """Back to the terminal's normal reporting (0x8202 with interval 0) when the incident ends."""
    if terminals is None:
        return "no_808_server"
    try:
        await terminals.track(device_id, 0, 0, requested_by=requested_by)
    except TerminalOffline:
        return "offline"
    except DomainError:
        return "error"
    return "sent"
