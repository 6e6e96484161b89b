"""A token-bucket rate limiter per key (client address, device, user name)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from api.errors import TooManyRequests

if TYPE_CHECKING:
    from api.settings import Settings


@dataclass
class RateLimiter:
    """``rate`` events per second sustained, bursts up to ``burst``; ``check`` raises 429."""

    rate: float
    burst: float
    _buckets: dict[str, tuple[float, float]] = field(default_factory=dict)

    def allow(self, key: str, cost: float = 1.0) -> bool:
        now = time.monotonic()
        tokens, last = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens < cost:
            self._buckets[key] = (tokens, now)
            return False
        self._buckets[key] = (tokens - cost, now)
        if len(self._buckets) > 200_000:
            self._buckets.clear()
        return True

    def exhausted(self, key: str, cost: float = 1.0) -> bool:
        """Whether ``key`` cannot spend ``cost`` now (nothing is spent)."""
        now = time.monotonic()
        tokens, last = self._buckets.get(key, (self.burst, now))
        return min(self.burst, tokens + (now - last) * self.rate) < cost

    def reset(self) -> None:
        """Forget every bucket (all keys start full again)."""
        self._buckets.clear()

    def refund(self, key: str, cost: float = 1.0) -> None:
        """Give back ``cost`` spent by ``allow`` (an attempt another limit refused)."""
        if key in self._buckets:
            tokens, last = self._buckets[key]
            self._buckets[key] = (min(self.burst, tokens + cost), last)

    def retry_after(self, key: str, cost: float = 1.0) -> int:
        """Whole seconds until ``key`` may spend ``cost`` again (at least 1)."""
        tokens, last = self._buckets.get(key, (self.burst, time.monotonic()))
        tokens = min(self.burst, tokens + (time.monotonic() - last) * self.rate)
        return max(1, math.ceil((cost - tokens) / self.rate)) if self.rate > 0 else 60

    def check(self, key: str, cost: float = 1.0) -> None:
        """Spend ``cost`` for ``key``, or raise 429 naming when to retry (``Retry-After``)."""
        if not self.allow(key, cost):
            who = key.rsplit(":", maxsplit=1)[-1]
            raise TooManyRequests(
                f"too many requests for {who}; slow down",
                retry_after_s=self.retry_after(key, cost),
            )


def ingest_limiter(settings: Settings) -> RateLimiter | None:
    """The per-device limiter of the ingest routes and the OsmAnd server (None when off)."""
    ingest = settings.ingest
    if ingest.rate_per_s <= 0:
        return None
    return RateLimiter(rate=ingest.rate_per_s, burst=ingest.rate_burst)


@dataclass
class SignInLimiter:
    """Sign-in attempts limited per user name (across all addresses: a guessing botnet) and per
    address (across all names: one host trying many users), each on its own budget.

    The address is the caller's as ``api.forwarded.client_address`` reads it: a forwarded one
    only from a configured proxy, so a made-up ``X-Forwarded-For`` cannot open a new budget.
    """

    per_name: RateLimiter = field(default_factory=lambda: RateLimiter(rate=0.5, burst=10))
    per_address: RateLimiter = field(default_factory=lambda: RateLimiter(rate=1.0, burst=30))

    def check(self, address: str, name: str) -> None:
        """Spend one attempt for both, or raise 429 (``Retry-After``); a refusal by the address
        budget spends nothing from the name's, and the other way round."""
        address_key, name_key = f"address:{address}", f"name:{name}"
        if not self.per_address.allow(address_key):
            raise TooManyRequests(
                "too many sign-in attempts from your address; slow down",
                retry_after_s=self.per_address.retry_after(address_key),
            )
        if not self.per_name.allow(name_key):
            self.per_address.refund(address_key)
            raise TooManyRequests(
                "too many sign-in attempts for this user name; slow down",
                retry_after_s=self.per_name.retry_after(name_key),
            )
