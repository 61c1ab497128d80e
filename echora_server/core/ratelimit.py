"""An in-process token bucket per key: each server process enforces its own budget."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass

from echora_server.core.errors import TooManyRequests

_MAX_KEYS = 100_000


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    def __init__(
        self, rate_per_minute: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate_per_minute / 60.0
        self.burst = burst
        self._clock = clock
        self._buckets: dict[Hashable, _Bucket] = {}

    def _bucket(self, key: Hashable) -> _Bucket:
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= _MAX_KEYS:
                self._prune(now)
            bucket = self._buckets[key] = _Bucket(float(self.burst), now)
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
        bucket.updated = now
        return bucket

    def hit(self, key: Hashable) -> float:
        """Take one token: 0 when allowed, else the seconds until one is available."""
        bucket = self._bucket(key)
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return 0.0
        return (1 - bucket.tokens) / self.rate

    def wait(self, key: Hashable) -> float:
        """The seconds until ``key`` has a token again (0: it has one), taking none."""
        bucket = self._bucket(key)
        return 0.0 if bucket.tokens >= 1 else (1 - bucket.tokens) / self.rate

    def untouched(self, key: Hashable) -> bool:
        """Nothing taken from ``key`` lately (its bucket is full)."""
        return self._bucket(key).tokens >= self.burst

    def charge(self, key: Hashable) -> None:
        """Take a token after the fact (a failure), down to empty."""
        bucket = self._bucket(key)
        bucket.tokens = max(0.0, bucket.tokens - 1)

    def take(self, key: Hashable, message: str) -> None:
        refuse(self.hit(key), message)

    def _prune(self, now: float) -> None:
        full = [
            k
            for k, b in self._buckets.items()
            if b.tokens + (now - b.updated) * self.rate >= self.burst
        ]
        for key in full:
            del self._buckets[key]
        if len(self._buckets) >= _MAX_KEYS:
            self._buckets.clear()


def refuse(wait: float, message: str) -> None:
    """429 with Retry-After when ``wait`` (seconds) is not 0."""
    if wait:
        seconds = max(1, math.ceil(wait))
        raise TooManyRequests(
            message,
            details={"retry_after_seconds": seconds},
            headers={"Retry-After": str(seconds)},
        )
