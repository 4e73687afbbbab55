"""Test-only fault points: `PAYMENT_FAULT_INJECT=point[:n]` acts the n-th time `point` is
reached (by default SIGKILL of this process), so that tests can prove a crash anywhere loses
nothing. Never set in production."""

from __future__ import annotations

import os
import signal

# Crash points along a payment, a refund and an operator's replay.
KILL_POINTS = (
    "after_claim",
    "during_charge",
    "after_commit",
    "after_publish",
    "before_ack",
    "before_refund",
    "after_refund",
    "replay_after_publish",
)
# Points where the caller provokes a fault of its own instead of a crash.
OTHER_POINTS = ("channel_error",)


class FaultInjector:
    def __init__(self, spec: str | None) -> None:
        self.point: str | None = None
        self.remaining = 0
        if spec:
            point, _, count = spec.partition(":")
            if point not in KILL_POINTS + OTHER_POINTS:
                raise ValueError(f"unknown fault point {point!r}; one of {', '.join(KILL_POINTS + OTHER_POINTS)}")
            if count and not count.isdigit():
                raise ValueError("the count after ':' must be a positive integer")
            self.point = point
            self.remaining = int(count or 1)

    def fires(self, point: str) -> bool:
        """True exactly once: the n-th time `point` is reached."""
        if point != self.point or self.remaining <= 0:
            return False
        self.remaining -= 1
        return self.remaining == 0

    def hit(self, point: str) -> None:
        if self.fires(point):
            os.kill(os.getpid(), signal.SIGKILL)


NO_FAULTS = FaultInjector(None)
