"""Per-client token buckets for the admin routes, in bounded memory.

Each client (keyed by its address) gets a bucket of `burst` tokens refilled at `rate` per
second; a request takes one token or is refused with the seconds until one is back. Buckets
live in an LRU map of at most `max_clients`: a bucket idle long enough to be full again
carries no state and is dropped, and when the map is full the least recently seen client is
forgotten (it starts again with a full bucket — the safe direction for a flood of addresses,
which then shares nothing but the CPU cost of a dict entry).

Hand-written because the maintained Python limiters either keep one timestamp per request
(sliding-window logs) or have no bound on the number of keys; this is a few lines of arithmetic.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable


class TokenBuckets:
    def __init__(
        self,
        rate: float,
        burst: float | None = None,
        *,
        max_clients: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.burst = burst if burst is not None else 2 * rate
        self.max_clients = max_clients
        self.clock = clock
        # client -> (tokens, when they were counted); most recently seen last.
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._full_after = self.burst / rate  # seconds an empty bucket needs to refill

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, client: str) -> float:
        """0 when the request may go ahead; otherwise the seconds until it could."""
        now = self.clock()
        tokens, at = self._buckets.pop(client, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        self._evict(now)
        if tokens >= 1:
            self._buckets[client] = (tokens - 1, now)
            return 0.0
        self._buckets[client] = (tokens, now)
        return (1 - tokens) / self.rate

    def _evict(self, now: float) -> None:
        buckets = self._buckets
        # Oldest first: stop at the first client seen recently enough to still owe tokens.
        while buckets:
            client, (_, at) = next(iter(buckets.items()))
            if now - at < self._full_after and len(buckets) < self.max_clients:
                break
            del buckets[client]


def retry_after(seconds: float) -> str:
    """A Retry-After header value: whole seconds, at least 1."""
    return str(max(1, math.ceil(seconds)))
