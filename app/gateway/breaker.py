"""The gateway circuit breaker: stop calling a gateway that is down, let one trial call decide when it is back.

Closed: every call goes through; each answered call (a decline too: the gateway answered) is a
success, each transient failure (5xx, 429, a broken connection, an attempt timeout) a failure.
When, among the last `window_calls` calls of the last `window_seconds`, there are at least
`min_calls` and failures are at least `failure_ratio` of them, the breaker opens. A gateway
that is unusable (401/403) opens it at once: no call can succeed until someone fixes the key.

Open: no call goes through for `open_seconds`. Then the next caller gets the one trial call
(half-open): its success closes the breaker (with a fresh window), its failure opens it again.

The minimum keeps a single bad card (a few failed attempts) from opening the breaker while
traffic is low. Callers holding work use `wait_until_callable` to sleep until a call may go.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum

from loguru import logger


class CircuitState(IntEnum):
    """The breaker's state; the values are those of the metric `payment_gateway_circuit_state`."""

    CLOSED = 0
    OPEN = 1
    HALF_OPEN = 2


class CircuitOpen(Exception):
    """The breaker refused the call: it is open, or its one trial call is under way."""


@dataclass(slots=True)
class Permit:
    """Leave to make one call; report how it went with `success()`, `failure()` or `release()`."""

    settle: Callable[[Permit, bool | None, bool], None]
    generation: int
    trial: bool
    done: bool = False

    def success(self) -> None:
        self.settle(self, False, False)

    def failure(self, *, unusable: bool = False) -> None:
        self.settle(self, True, unusable)

    def release(self) -> None:
        """The call ended without telling anything about the gateway (cancelled, a local bug)."""
        self.settle(self, None, False)


class CircuitBreaker:
    def __init__(
        self,
        *,
        open_seconds: float = 10.0,
        window_calls: int = 20,
        window_seconds: float = 30.0,
        min_calls: int = 10,
        failure_ratio: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[CircuitState], object] | None = None,
    ) -> None:
        if not 0 < failure_ratio <= 1 or min_calls < 1 or window_calls < min_calls:
            raise ValueError("need 0 < failure_ratio <= 1 and 1 <= min_calls <= window_calls")
        self.open_seconds = open_seconds
        self.window_seconds = window_seconds
        self.min_calls = min_calls
        self.failure_ratio = failure_ratio
        self._clock = clock
        self._on_change = on_change
        self._calls: deque[tuple[float, bool]] = deque(maxlen=window_calls)  # (when, failed)
        self._state = CircuitState.CLOSED
        self._opened_at = 0.0
        self._generation = 0  # bumped on every transition: a late result of an older call is not a trial's
        self._trial_running = False
        self._changed = asyncio.Event()
        if on_change is not None:
            on_change(self._state)

    # ----------------------------------------------------------------- what callers ask
    @property
    def state(self) -> CircuitState:
        return self._state

    @property
    def available(self) -> bool:
        """Whether a call would be let through now (closed, the open period over, or half-open
        with no trial under way)."""
        if self._state is CircuitState.CLOSED:
            return True
        if self._state is CircuitState.OPEN:
            return self._clock() - self._opened_at >= self.open_seconds
        return not self._trial_running

    def seconds_until_trial(self) -> float:
        """How long until a call may go: 0 when available; while a trial is under way, the open period."""
        if self._state is CircuitState.OPEN:
            return max(0.0, self.open_seconds - (self._clock() - self._opened_at))
        if self._state is CircuitState.HALF_OPEN and self._trial_running:
            return self.open_seconds
        return 0.0

    def acquire(self) -> Permit:
        """Leave for one call, or CircuitOpen. After the open period the first caller gets the trial."""
        if self._state is CircuitState.CLOSED:
            return Permit(self._finish, self._generation, trial=False)
        if not self.available:
            raise CircuitOpen(f"gateway circuit {self._state.name.lower()}")
        if self._state is CircuitState.OPEN:
            self._move(CircuitState.HALF_OPEN)
        self._trial_running = True
        return Permit(self._finish, self._generation, trial=True)

    async def wait_until_callable(self, timeout: float) -> bool:
        """Sleep until a call may go (True) or `timeout` seconds pass (False, unless it became
        available just then). Wakes on every transition and when the open period ends."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self.available:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            changed = self._changed
            nap = min(remaining, self.seconds_until_trial() or remaining)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), nap)
        return True

    # The service layer's GatewayGate port names the same thing `wait_until_available`.
    wait_until_available = wait_until_callable

    # ----------------------------------------------------------------- results
    def _finish(self, permit: Permit, failed: bool | None, unusable: bool) -> None:
        if permit.done:
            return
        permit.done = True
        if permit.generation != self._generation:
            return  # the breaker moved while this call ran (it opened, say): the result is stale
        if permit.trial:
            self._trial_running = False
            if failed is None:  # nothing learnt: the next caller makes the trial
                self._wake()
            elif failed:
                self._open("the trial call failed")
            else:
                self._calls.clear()
                self._move(CircuitState.CLOSED)
            return
        if failed is None:
            return
        if unusable:
            self._open("the gateway refuses this service (401/403)")
            return
        now = self._clock()
        self._calls.append((now, failed))
        if failed and self._failures_dominate(now):
            self._open("transient failures dominate the recent calls")

    def _failures_dominate(self, now: float) -> bool:
        while self._calls and now - self._calls[0][0] > self.window_seconds:
            self._calls.popleft()
        total = len(self._calls)
        failures = sum(1 for _, failed in self._calls if failed)
        return total >= self.min_calls and failures >= self.failure_ratio * total

    def _open(self, why: str) -> None:
        self._opened_at = self._clock()
        self._trial_running = False
        self._calls.clear()
        self._move(CircuitState.OPEN, why)

    def _move(self, state: CircuitState, why: str = "") -> None:
        previous, self._state = self._state, state
        self._generation += 1
        if state is CircuitState.OPEN:
            logger.warning(
                "gateway circuit {previous} -> open: {why}; orders wait {seconds} s before a trial call",
                previous=previous.name.lower(),
                why=why,
                seconds=self.open_seconds,
            )
        else:
            logger.info(
                "gateway circuit {previous} -> {state}", previous=previous.name.lower(), state=state.name.lower()
            )
        if self._on_change is not None:
            self._on_change(state)
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()
