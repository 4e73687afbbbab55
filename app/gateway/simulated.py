"""A simulated payment gateway in the process, answering by the card's last four digits (test cards)."""

from __future__ import annotations

import asyncio
import uuid
from collections import OrderedDict

from app.domain import ChargeResult, FailureCode
from app.gateway.base import ChargeRequest, GatewayTransientError, RefundRequest, RefundResult

# Declines by the card's last four digits. Everything else (also 1111, 2222 and 4444, which
# declined in an earlier card table, and the well-known test numbers) succeeds.
DECLINES: dict[str, FailureCode] = {
    "0000": FailureCode.CARD_DECLINED,
    "0001": FailureCode.INSUFFICIENT_FUNDS,
    "0002": FailureCode.CARD_EXPIRED,
    "7777": FailureCode.FRAUD_SUSPECTED,
}
FLAKY_CARD = "3333"  # transient error on the first two attempts per key, then success
FLAKY_FAILURES = 2
SILENT_CARD = "6666"  # never answers: cut by the caller's per-attempt timeout
REFUND_DECLINED_CARD = "8888"  # the charge succeeds; its refund is declined
UNAVAILABLE_CARD = "9999"  # transient error on every attempt
REFUND_DECLINED_REASON = "Refund declined"

_TRANSACTION_NAMESPACE = uuid.UUID("5d0c1e7e-2b1a-4f7e-9a55-0e6c4b7d9f21")
# Charges of the refund-declined card get their ids from another namespace, so that a refund,
# which names only the charge, is recognised by any replica, also after a restart.
_NO_REFUND_NAMESPACE = uuid.UUID("a3c2d7f4-61e8-4b0e-8f0a-7c9d2e5b1f38")
_REFUND_NAMESPACE = uuid.UUID("c8e4b1a9-3f5d-4c27-b6e0-92a1d4f7e3c5")


def transaction_id(key: str, *, refundable: bool = True) -> str:
    """The transaction id of the charge with idempotency key `key` (the same in every replica)."""
    return f"txn_{uuid.uuid5(_TRANSACTION_NAMESPACE if refundable else _NO_REFUND_NAMESPACE, key)}"


def refund_id(key: str) -> str:
    """The refund id of the refund with idempotency key `key` (the same in every replica)."""
    return f"re_{uuid.uuid5(_REFUND_NAMESPACE, key)}"


class SimulatedGateway:
    """Answers by card number after `delay_ms`; idempotent per key.

    Transaction and refund ids are derived from the idempotency key, as a real gateway returns
    the stored result for a key it has seen: a re-charge after a crash, from this replica or
    another, gets the same `transactionId`. `always_succeed` approves every charge and refund.
    """

    def __init__(self, delay_ms: int = 100, always_succeed: bool = False, remember: int = 10_000) -> None:
        self.delay = delay_ms / 1000
        self.always_succeed = always_succeed
        self._outcomes: OrderedDict[str, ChargeResult] = OrderedDict()
        self._attempts: dict[str, int] = {}
        self._remember = remember
        self.calls = 0  # charge calls received, for tests and diagnostics
        self.refund_calls = 0

    async def charge(self, request: ChargeRequest) -> ChargeResult:
        self.calls += 1
        key = request.idempotency_key
        if self.delay:
            await asyncio.sleep(self.delay)
        known = self._outcomes.get(key)
        if known is not None:
            return known
        last_four = request.payment_method.card_last_four if request.payment_method else None
        if self.always_succeed:
            return self._remembered(key, ChargeResult.succeeded(transaction_id(key)))
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
        code = DECLINES.get(last_four or "")
        if code is not None:
            return self._remembered(key, ChargeResult.failed(code))
        refundable = last_four != REFUND_DECLINED_CARD
        return self._remembered(key, ChargeResult.succeeded(transaction_id(key, refundable=refundable)))

    async def refund(self, request: RefundRequest) -> RefundResult:
        """Refunds every charge except one made with the refund-declined card; the same key
        always gets the same refund id."""
        self.refund_calls += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if not self.always_succeed:
            charge_key = f"order-{request.order_id}"
            if request.transaction_id == transaction_id(charge_key, refundable=False):
                return RefundResult.declined(REFUND_DECLINED_REASON)
        return RefundResult.refunded(refund_id(request.idempotency_key))

    def _remembered(self, key: str, result: ChargeResult) -> ChargeResult:
        self._outcomes[key] = result
        if len(self._outcomes) > self._remember:
            self._outcomes.popitem(last=False)
        return result
