"""Per-client token buckets for the admin routes, and per-client pacing for the probes, in
bounded memory.

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
        # A bucket idle for `_full_after` is full again: it owes nothing.
        _evict_stale(self._buckets, now, self._full_after, self.max_clients)


def retry_after(seconds: float) -> str:
    """A Retry-After header value: whole seconds, at least 1."""
    return str(max(1, math.ceil(seconds)))


class Pacer:
    """A schedule per client (GCRA): each client is answered at most `rate` times a second
    after a burst of `burst`; a faster request is delayed until its slot, never refused.

    `delay(client)` books the client's next slot and says how long to wait for it. A slot more
    than `max_wait` away is not booked: that request waits `max_wait` and is answered then, so
    no request ever waits longer, and a client with many requests in flight is answered at most
    `rate` times a second plus once per `max_wait` per request it keeps waiting. State is one
    number per client, kept in an LRU map of at most `max_clients`; a client whose schedule has
    caught up with the clock carries none and is dropped.
    """

    def __init__(
        self,
        rate: float,
        burst: float,
        *,
        max_wait: float,
        max_clients: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate <= 0 or burst < 1 or max_wait < 0:
            raise ValueError("rate must be positive, burst at least 1, max_wait not negative")
        self.interval = 1 / rate
        self.max_wait = max_wait
        self.max_clients = max_clients
        self.clock = clock
        self._tolerance = (burst - 1) * self.interval  # how far ahead of the clock a schedule may run free
        # A booked schedule ends at most this long after the client was last seen.
        self._horizon = self._tolerance + max_wait + self.interval
        # client -> (when its schedule is free again, when it was last seen); most recently seen last.
        self._free_at: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._free_at)

    def delay(self, client: str) -> float:
        """The seconds this request waits before it is answered (0: at once)."""
        now = self.clock()
        free_at, _ = self._free_at.pop(client, (now, now))
        self._evict(now)
        free_at = max(free_at, now)
        wait = free_at - self._tolerance - now
        if wait > self.max_wait:
            self._free_at[client] = (free_at, now)
            return self.max_wait
        self._free_at[client] = (free_at + self.interval, now)
        return max(0.0, wait)

    def _evict(self, now: float) -> None:
        # A client last seen more than the horizon ago has caught up with the clock.
        _evict_stale(self._free_at, now, self._horizon, self.max_clients)


def _evict_stale(entries: OrderedDict[str, tuple[float, float]], now: float, idle_s: float, max_entries: int) -> None:
    """Forget clients, least recently seen first, while the oldest was last seen `idle_s` or
    more ago or the map is full (entries: client -> (state, when last seen))."""
    while entries:
        client, (_, seen) = next(iter(entries.items()))
        if now - seen < idle_s and len(entries) < max_entries:
            break
        del entries[client]
