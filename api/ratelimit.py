"""A token-bucket rate limiter per key (client address, device, user name)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from api.errors import TooManyRequests


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

    def check(self, key: str, cost: float = 1.0) -> None:
        if not self.allow(key, cost):
            who = key.rsplit(":", maxsplit=1)[-1]
            raise TooManyRequests(f"too many requests for {who}; slow down")
