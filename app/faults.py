"""Test-only crash points: `PAYMENT_FAULT_INJECT=point[:n]` kills this process the n-th time
`point` is reached, so that tests can prove a crash anywhere loses nothing."""

from __future__ import annotations

import os
import signal


class FaultInjector:
    """Test-only crash points (PAYMENT_FAULT_INJECT=point[:n]): SIGKILL this process the n-th
    time `point` is reached. Points: after_claim, during_charge, after_commit, after_publish,
    before_ack."""

    POINTS = ("after_claim", "during_charge", "after_commit", "after_publish", "before_ack")

    def __init__(self, spec: str | None) -> None:
        self.point: str | None = None
        self.remaining = 0
        if spec:
            point, _, count = spec.partition(":")
            if point not in self.POINTS:
                raise ValueError(f"unknown fault point {point!r}; one of {', '.join(self.POINTS)}")
            self.point = point
            self.remaining = int(count or 1)

    def hit(self, point: str) -> None:
        if point != self.point:
            return
        self.remaining -= 1
        if self.remaining <= 0:
            os.kill(os.getpid(), signal.SIGKILL)


NO_FAULTS = FaultInjector(None)
