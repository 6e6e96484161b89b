"""Counters of the JT/T 808 server: what arrived, what was refused and why, what was answered.

Plain integers and ``Counter`` objects bumped on the hot path (no locks: one event loop), read
by the admin API as one JSON snapshot. Message ids are shown as ``0x0200``-style strings.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any


def hex_id(msg_id: int) -> str:
    """A message id as written in the standard: ``0x0200``."""
    return f"0x{msg_id:04X}"


@dataclass
class Stats:
    """Server-wide counters since start.

    Attributes
    ----------
    bytes_in, frames_in, frames_out : int
        Bytes received, checked frames received, frames sent.
    messages : Counter[int]
        Checked frames per message id (a subpackaged message counts once per package).
    errors : Counter[str]
        Dropped or refused input per reason: the codec's ``REASONS`` plus ``phone_mismatch``
        (a frame naming another terminal than the authenticated one) and ``handler_error``.
    replies : Counter[str]
        Platform replies sent, ``0x8001:0`` (id and result), ``0x8100:4`` and so on.
    events : Counter[str]
        Connection and session events: ``connected``, ``closed``, ``rejected_full``,
        ``registered``, ``register_refused <why>`` (``terminal_connected``,
        ``heard_recently``, ``other_terminal`` …), ``authenticated``, ``auth_failed``,
        ``unauthenticated`` (a message before authentication), ``replaced``, ``idle_closed``,
        ``auth_timeout``, ``paused``, ``ingest_unavailable``, ``resend_requested``,
        ``not_supported``, ``db_error`` …
    fixes : Counter[str]
        ``submitted`` (handed to the writer), ``acknowledged``, ``quarantined_unpositioned``,
        ``quarantined_no_time``, ``quarantined_encrypted``, ``raw_tail`` (stored reports whose
        vendor additional information did not parse and was kept raw).
    commands : Counter[str]
        Platform commands sent and answers recorded, per message id, and
        ``answer_without_command`` (a 0x0001/0x0201 naming no pending command).
    """

    bytes_in: int = 0
    frames_in: int = 0
    frames_out: int = 0
    messages: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    replies: Counter[str] = field(default_factory=Counter)
    events: Counter[str] = field(default_factory=Counter)
    fixes: Counter[str] = field(default_factory=Counter)
    commands: Counter[str] = field(default_factory=Counter)

    def snapshot(self, **gauges: Any) -> dict[str, Any]:
        """All counters as JSON-ready dicts, plus the given gauges (connections …).

        Parameters
        ----------
        **gauges
            Current values to include as they are.

        Returns
        -------
        dict
            ``bytes_in``, ``frames_in``, ``frames_out``, ``messages`` (by hex id), ``errors``,
            ``replies``, ``events``, ``fixes``, ``commands`` and the gauges.
        """
        return {
            "bytes_in": self.bytes_in,
            "frames_in": self.frames_in,
            "frames_out": self.frames_out,
            "messages": {hex_id(k): v for k, v in sorted(self.messages.items())},
            "errors": dict(sorted(self.errors.items())),
            "replies": dict(sorted(self.replies.items())),
            "events": dict(sorted(self.events.items())),
            "fixes": dict(sorted(self.fixes.items())),
            "commands": dict(sorted(self.commands.items())),
            **gauges,
        }
