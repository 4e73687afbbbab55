"""The reconciler: a periodic sweep that finishes what a dead worker left behind.

- A payment still PENDING/PROCESSING after its lease expired is taken over (an atomic
  UPDATE, so one replica wins) and charged again with the same idempotency key; the
  gateway answers with the original outcome, so nobody is charged twice.
- A final payment whose outcome event was never confirmed by the broker is published again
  (same eventId) and marked.

Together these bound how long any order can wait for its outcome: lease + one interval.
"""

from __future__ import annotations

import asyncio
from contextlib import suppress

from loguru import logger

from app.messaging.legacy import OutcomePublisher
from app.persistence.ledger import PaymentLedger
from app.service.payments import PaymentService
from app.observability.metrics import PaymentMetrics


class Reconciler:
    def __init__(
        self,
        ledger: PaymentLedger,
        service: PaymentService,
        outcomes: OutcomePublisher,
        metrics: PaymentMetrics,
        *,
        interval_s: float,
        lease_s: float,
        concurrency: int = 16,
        batch: int = 200,
    ) -> None:
        self.ledger = ledger
        self.service = service
        self.outcomes = outcomes
        self.metrics = metrics
        self.interval_s = interval_s
        self.lease_s = lease_s
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
        finished = await self._finish_expired()
        republished = await self._publish_owed()
        in_flight, stuck, unpublished = await self.ledger.backlog(stuck_after_s=self.interval_s)
        self.metrics.unfinished.set(in_flight)
        self.metrics.stuck.set(stuck)
        self.metrics.unpublished.set(unpublished)
        return finished, republished

    async def _finish_expired(self) -> int:
        ids = await self.ledger.expired_leases(self.batch)
        if not ids:
            return 0
        gate = asyncio.Semaphore(self.concurrency)

        async def finish(payment_id: int) -> bool:
            async with gate:
                claimed = await self.ledger.take_over(payment_id, self.lease_s)
                if claimed is None:  # another replica took it
                    return False
                with logger.contextualize(order_id=claimed.order_id, payment_id=claimed.id):
                    final = await self.service.complete(claimed)
                    logger.warning(
                        "reconciled: finished a payment whose worker stopped",
                        status=final.status.value,
                        failure_code=final.failure_code.value if final.failure_code else None,
                    )
                    self.metrics.reconciled.labels("charged").inc()
                    self.metrics.payment_recorded(final)
                    await self.outcomes.publish(final)
                return True

        results = await asyncio.gather(*(finish(i) for i in ids), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                logger.warning("reconciler could not finish a payment: {error}", error=repr(result))
        return sum(1 for r in results if r is True)

    async def _publish_owed(self) -> int:
        # Older than one interval: the worker that recorded it has had time to publish.
        owed = await self.ledger.claim_unpublished(self.interval_s, self.batch, lease_s=self.lease_s)
        for payment in owed:
            await self.outcomes.publish(payment)
            self.metrics.reconciled.labels("republished").inc()
            logger.info(
                "reconciled: re-published an unconfirmed outcome",
                order_id=payment.order_id,
                payment_id=payment.id,
                status=payment.status.value,
            )
        return len(owed)
