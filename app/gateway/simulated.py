"""A simulated payment gateway with the contract's test cards (CONTRACT.md §3)."""

from __future__ import annotations

import asyncio
import uuid
from collections import OrderedDict

from app.domain import ChargeResult, FailureCode
from app.gateway.base import ChargeRequest, GatewayTransientError

# Declines by the card's last four digits.
DECLINES: dict[str, FailureCode] = {
    "0000": FailureCode.CARD_DECLINED,
    "1111": FailureCode.INSUFFICIENT_FUNDS,
    "0001": FailureCode.INSUFFICIENT_FUNDS,
    "2222": FailureCode.CARD_EXPIRED,
    "0002": FailureCode.CARD_EXPIRED,
    "7777": FailureCode.FRAUD_SUSPECTED,
}
FLAKY_CARD = "3333"  # transient error on the first two attempts per order, then success
FLAKY_FAILURES = 2
UNAVAILABLE_CARD = "4444"  # transient error on every attempt
SILENT_CARD = "6666"  # never answers

_TRANSACTION_NAMESPACE = uuid.UUID("5d0c1e7e-2b1a-4f7e-9a55-0e6c4b7d9f21")


class SimulatedGateway:
    """Answers by card number after `delay_ms`; idempotent per key.

    Transaction ids are derived from the idempotency key, as a real gateway would return the
    stored transaction for a key it has seen: a re-charge after a crash, from this replica or
    another, gets the same `transactionId`.
    """

    def __init__(self, delay_ms: int = 100, always_succeed: bool = False, remember: int = 10_000) -> None:
        self.delay = delay_ms / 1000
        self.always_succeed = always_succeed
        self._outcomes: OrderedDict[str, ChargeResult] = OrderedDict()
        self._attempts: dict[str, int] = {}
        self._remember = remember
        self.calls = 0  # charge calls received, for tests and diagnostics

    async def charge(self, request: ChargeRequest) -> ChargeResult:
        self.calls += 1
        key = request.idempotency_key
        if self.delay:
            await asyncio.sleep(self.delay)
        known = self._outcomes.get(key)
        if known is not None:
            return known
        last_four = request.payment_method.card_last_four
        if not self.always_succeed:
            if last_four == SILENT_CARD:
                await asyncio.Event().wait()  # cut by the caller's timeout
            if last_four == UNAVAILABLE_CARD:
                raise GatewayTransientError("gateway unavailable")
            if last_four == FLAKY_CARD:
                attempt = self._attempts.get(key, 0) + 1
                self._attempts[key] = attempt
                if attempt <= FLAKY_FAILURES:
                    raise GatewayTransientError(f"gateway unavailable (attempt {attempt})")
                self._attempts.pop(key, None)
        code = None if self.always_succeed else DECLINES.get(last_four or "")
        if code is not None:
            result = ChargeResult.failed(code)
        else:
            result = ChargeResult.succeeded(f"txn_{uuid.uuid5(_TRANSACTION_NAMESPACE, key)}")
        self._outcomes[key] = result
        if len(self._outcomes) > self._remember:
            self._outcomes.popitem(last=False)
        return result
