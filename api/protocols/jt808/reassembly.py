"""Subpackage reassembly (分包合并), pure: the caller passes the time in; no clock is read here.

A subpackaged message is keyed by ``(phone, message id, package count, serial of package 1)``;
the serial of package 1 is ``serial - (index - 1)`` (mod 65536) because the terminal numbers the
packages of one message with consecutive serials, and it is the "original serial" a 0x8003
resend request names. Packages may arrive in any order; a repeated package changes nothing.

Memory is bounded against a hostile or broken terminal: at most ``max_partials_per_phone``
incomplete messages per phone (a new one evicts that phone's stalest), at most
``max_message_size`` bytes per message and ``max_total_size`` bytes over all messages (a package
that would pass either bound drops its message), and messages idle for ``timeout`` seconds
expire. Every drop is counted in ``stats``.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from dataclasses import dataclass, field, replace
from typing import Final, NamedTuple

from api.protocols.jt808.header import Header, Packet

# Charged per stored package on top of its body bytes, so that 65535 one-byte packages cannot
# slip under the byte limits (a dict entry and a bytes object cost about this much).
PACKAGE_OVERHEAD: Final = 64


class PartialKey(NamedTuple):
    """Identity of a subpackaged message."""

    phone: str
    msg_id: int
    total: int
    first_serial: int


@dataclass
class _Partial:
    header: Header
    last_seen: float
    packages: dict[int, bytes] = field(default_factory=dict)
    size: int = 0


class Reassembler:
    """Join the packages of subpackaged messages into whole packets.

    Parameters
    ----------
    timeout : float, default 30
        Seconds without a new package after which an incomplete message is dropped.
    max_partials_per_phone : int, default 4
        Incomplete messages kept per terminal phone.
    max_message_size : int, default 1 MiB
        Bytes one message may occupy (bodies plus ``PACKAGE_OVERHEAD`` per package).
    max_total_size : int, default 64 MiB
        Bytes all incomplete messages together may occupy.

    Attributes
    ----------
    stats : Counter[str]
        ``completed``, ``duplicate``, ``expired``, ``evicted``, ``too_large``, ``over_budget``.
    """

    def __init__(
        self,
        *,
        timeout: float = 30.0,
        max_partials_per_phone: int = 4,
        max_message_size: int = 1 << 20,
        max_total_size: int = 64 << 20,
    ) -> None:
        if timeout <= 0 or max_partials_per_phone < 1:
            raise ValueError("timeout and max_partials_per_phone must be positive")
        self.timeout = timeout
        self.max_partials_per_phone = max_partials_per_phone
        self.max_message_size = max_message_size
        self.max_total_size = max_total_size
        self.stats: Counter[str] = Counter()
        # Least recently touched first, so expiry only ever looks at the front.
        self._partials: OrderedDict[PartialKey, _Partial] = OrderedDict()
        self._by_phone: dict[str, set[PartialKey]] = {}
        self._total = 0

    @staticmethod
    def key_of(header: Header) -> PartialKey:
        """The key of the message a subpackaged header belongs to.

        Parameters
        ----------
        header : Header
            A header with package fields.

        Returns
        -------
        PartialKey
            ``(phone, msg_id, package_count, serial of package 1)``.
        """
        first = (header.serial - header.package_index + 1) & 0xFFFF
        return PartialKey(header.phone, header.msg_id, header.package_count, first)

    @property
    def buffered_bytes(self) -> int:
        """Bytes charged for all incomplete messages."""
        return self._total

    def __len__(self) -> int:
        return len(self._partials)

    def add(self, packet: Packet, *, now: float) -> Packet | None:
        """Take one packet; return the whole message once its last missing package arrives.

        Parameters
        ----------
        packet : Packet
            A checked packet. One that is not subpackaged is returned unchanged.
        now : float
            Current time in seconds on a monotonic clock (e.g. ``loop.time()``).

        Returns
        -------
        Packet or None
            The reassembled packet, with the header of the message (serial of package 1, no
            package fields, ``body_length`` the full length), or None while incomplete.
        """
        self.expire(now=now)
        header = packet.header
        if not header.package_count:
            return packet
        key = self.key_of(header)
        partial = self._partials.get(key)
        if partial is None:
            self._make_room(header.phone)
            partial = self._partials[key] = _Partial(header, now)
            self._by_phone.setdefault(header.phone, set()).add(key)
        else:
            partial.last_seen = now
            self._partials.move_to_end(key)
        if header.package_index in partial.packages:
            self.stats["duplicate"] += 1
            return None
        cost = len(packet.body) + PACKAGE_OVERHEAD
        if partial.size + cost > self.max_message_size:
            self._drop(key, "too_large")
            return None
        if self._total + cost > self.max_total_size:
            self._drop(key, "over_budget")
            return None
        partial.packages[header.package_index] = packet.body
        partial.size += cost
        self._total += cost
        if len(partial.packages) < key.total:
            return None
        self._drop(key, "completed")
        body = b"".join(partial.packages[index] for index in range(1, key.total + 1))
        whole = replace(
            header,
            serial=key.first_serial,
            body_length=len(body),
            package_count=0,
            package_index=0,
        )
        return Packet(whole, body)

    def missing(self, key: PartialKey) -> list[int]:
        """1-based indices of the packages not yet received, for a 0x8003 request.

        Parameters
        ----------
        key : PartialKey
            An incomplete message (``key.first_serial`` is the 0x8003 original serial).

        Returns
        -------
        list of int
            Ascending indices; empty when the key is unknown (completed, expired or dropped).
        """
        partial = self._partials.get(key)
        if partial is None:
            return []
        return [i for i in range(1, key.total + 1) if i not in partial.packages]

    def partials(self, phone: str | None = None) -> list[PartialKey]:
        """Keys of the incomplete messages, of one phone or of all, least recently touched first."""
        if phone is None:
            return list(self._partials)
        keys = self._by_phone.get(phone, set())
        return [key for key in self._partials if key in keys]

    def idle(self, *, now: float, after: float) -> list[PartialKey]:
        """Incomplete messages without a new package for ``after`` seconds or more.

        A server asks for their missing packages (0x8003) before ``timeout`` drops them.

        Parameters
        ----------
        now : float
            Current time on the same clock as ``add``.
        after : float
            Seconds of silence, less than ``timeout`` to be useful.

        Returns
        -------
        list of PartialKey
            Least recently touched first.
        """
        deadline = now - after
        stalled: list[PartialKey] = []
        for key, partial in self._partials.items():
            if partial.last_seen > deadline:
                break  # ordered by last touch: the rest are newer
            stalled.append(key)
        return stalled

    def expire(self, *, now: float) -> list[PartialKey]:
        """Drop incomplete messages idle for ``timeout`` seconds or more.

        Parameters
        ----------
        now : float
            Current time on the same clock as ``add``.

        Returns
        -------
        list of PartialKey
            The messages dropped (counted as ``expired``).
        """
        expired: list[PartialKey] = []
        deadline = now - self.timeout
        while self._partials:
            key, partial = next(iter(self._partials.items()))
            if partial.last_seen > deadline:
                break
            self._drop(key, "expired")
            expired.append(key)
        return expired

    def _make_room(self, phone: str) -> None:
        keys = self._by_phone.get(phone)
        if keys and len(keys) >= self.max_partials_per_phone:
            stalest = min(keys, key=lambda k: self._partials[k].last_seen)
            self._drop(stalest, "evicted")

    def _drop(self, key: PartialKey, why: str) -> None:
        partial = self._partials.pop(key)
        self._total -= partial.size
        keys = self._by_phone[key.phone]
        keys.discard(key)
        if not keys:
            del self._by_phone[key.phone]
        self.stats[why] += 1
