"""The reconciler: a periodic sweep in every replica that finishes what a dead worker left.

- A payment still PENDING/PROCESSING after its lease expired is taken over (an atomic
  UPDATE, so one replica wins) and charged again with the same idempotency key; the
  gateway answers with the original outcome, so nobody is charged twice.
- A refund that is owed and whose lease expired is taken over and sent again with its key
  `refund-order-<orderId>`, so nobody is refunded twice.
- A final outcome never confirmed by the broker is published again (same eventId).
While the gateway is unavailable (circuit open) nothing is charged or refunded; a payment
that waited longer than the maximum wait fails with GATEWAY_ERROR so the saga ends.

Together these bound how long any order can wait for its outcome: lease + one interval.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import suppress
from datetime import UTC, datetime, timedelta
from typing import Any

from loguru import logger

from app.domain import ChargeResult, FailureCode, Payment
from app.observability.metrics import PaymentMetrics
from app.service.payments import PaymentDeferred, PaymentService
from app.service.ports import GatewayGate
from app.service.refunds import RefundService

Announce = Callable[[Payment], Awaitable[bool]]


class Reconciler:
    def __init__(
        self,
        ledger: Any,
        payments: PaymentService,
        refunds: RefundService,
        announce: Announce,
        metrics: PaymentMetrics,
        gate: GatewayGate,
        *,
        interval_s: float,
        lease_s: float,
        max_wait_s: float,
        concurrency: int = 16,
        batch: int = 200,
    ) -> None:
        self.ledger = ledger
        self.payments = payments
        self.refunds = refunds
        self.announce = announce
        self.metrics = metrics
        self.gate = gate
        self.interval_s = interval_s
        self.lease_s = lease_s
        self.max_wait = timedelta(seconds=max_wait_s)
        self.concurrency = concurrency
        self.batch = batch
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="reconciler")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.sweep()
            except asyncio.CancelledError:
                raise
            except Exception as error:  # noqa: BLE001 - try again next interval
                logger.warning("reconciler sweep failed: {error}", error=repr(error))

    async def sweep(self) -> tuple[int, int]:
        """One pass; returns (payments finished, outcomes re-published)."""
        finished = 0
        if self.gate.available:
            finished += await self._each(await self.ledger.expired_leases(self.batch), self._finish_charge)
            finished += await self._each(await self.ledger.owed_refunds(self.batch), self._finish_refund)
        else:
            finished += await self._each(await self.ledger.expired_leases(self.batch), self._expire_if_too_old)
        republished = await self._publish_owed()
        in_flight, stuck, unpublished = await self.ledger.backlog(stuck_after_s=self.interval_s)
        self.metrics.unfinished.set(in_flight)
        self.metrics.stuck.set(stuck)
        self.metrics.unpublished.set(unpublished)
        return finished, republished

    async def _each(self, ids: list[int], finish: Callable[[int], Awaitable[bool]]) -> int:
        if not ids:
            return 0
        gate = asyncio.Semaphore(self.concurrency)

        async def one(payment_id: int) -> bool:
            async with gate:
                return await finish(payment_id)

        results = await asyncio.gather(*(one(i) for i in ids), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                logger.warning("reconciler could not finish a payment: {error}", error=repr(result))
        return sum(1 for r in results if r is True)

    async def _finish_charge(self, payment_id: int) -> bool:
        claimed = await self.ledger.take_over(payment_id, self.lease_s)
        if claimed is None:  # another replica took it
            return False
        with logger.contextualize(order_id=claimed.order_id, payment_id=claimed.id):
            try:
                final = await self.payments.complete(claimed)
            except PaymentDeferred:
                return False
            logger.warning("reconciled: finished a payment whose worker stopped", status=final.status.value)
            await self._done(final, "charged")
        return True

    async def _expire_if_too_old(self, payment_id: int) -> bool:
        """Gateway down: only payments past the maximum wait are touched (failed, not charged)."""
        claimed = await self.ledger.take_over(payment_id, self.lease_s)
        if claimed is None:
            return False
        if datetime.now(UTC) - claimed.created_at < self.max_wait:
            await self.ledger.release(claimed.id)
            return False
        failure = ChargeResult.failed(FailureCode.GATEWAY_ERROR, attempts=0)
        final = await self.payments.fail_without_charge(claimed, failure)
        logger.warning("reconciled: failed a payment that waited too long for the gateway", order_id=final.order_id)
        await self._done(final, "expired")
        return True

    async def _finish_refund(self, payment_id: int) -> bool:
        claimed = await self.ledger.take_over_refund(payment_id, self.lease_s)
        if claimed is None:
            return False
        with logger.contextualize(order_id=claimed.order_id, payment_id=claimed.id):
            final = await self.refunds.complete(claimed)
            logger.warning("reconciled: finished an interrupted refund", status=final.status.value)
            await self._done(final, "refunded")
        return True

    async def _done(self, final: Payment, action: str) -> None:
        self.metrics.labelled(self.metrics.reconciled, action).inc()
        self.metrics.payment_recorded(final)
        await self.announce(final)

    async def _publish_owed(self) -> int:
        # Older than one interval: the worker that recorded it has had time to publish.
        owed = await self.ledger.claim_unpublished(self.interval_s, self.batch, lease_s=self.lease_s)
        for payment in owed:
            await self.announce(payment)
            self.metrics.labelled(self.metrics.reconciled, "republished").inc()
            logger.info(
                "reconciled: re-published an unconfirmed outcome",
                order_id=payment.order_id,
                payment_id=payment.id,
                status=payment.status.value,
            )
        return len(owed)
