"""The per-message write path on asyncpg directly (the hot path): claim a payment, record its
outcome, mark it published; and the cancellation, refund and reconciler statements.

Kept lean on purpose: asyncpg without an ORM, prepared statements, and group commit (the
claims in flight together share one multi-row INSERT, the outcomes one multi-row UPDATE; see
group_commit.py). The schema itself is owned by the SQLModel table and its Alembic
migrations (tables.py); the admin queries go through SQLModel (repository.py).

While PostgreSQL is unreachable every call waits and tries again with backoff (capped at
a few seconds), so messages stay unacknowledged and nothing spins.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncpg

from app.backoff import patiently
from app.domain import ChargeResult, OrderCancellation, Payment, PaymentRequest, PaymentStatus
from app.gateway.base import RefundResult
from app.persistence import statements as sql
from app.persistence.group_commit import GroupCommitter
from app.persistence.mapping import payment_from_row

T = TypeVar("T")


def _new_payment(request: PaymentRequest, row: asyncpg.Record) -> Payment:
    return Payment(
        id=row["id"],
        order_id=request.order_id,
        buyer_id=request.buyer_id,
        amount=request.amount,
        currency=request.currency,
        status=PaymentStatus.PROCESSING,
        payment_method=request.payment_method,
        created_at=row["created_at"],
        event_id=request.event_id,
        lease_until=row["lease_until"],
        updated_at=row["created_at"],
    )


async def _no_reset(_connection: asyncpg.Connection) -> None:
    """Nothing in this service changes session state, so skip asyncpg's reset round trip."""


class PaymentLedger:
    def __init__(self, dsn: str, pool_size: int = 10, max_wait_s: float = 5.0) -> None:
        self.dsn = dsn
        self.pool_size = pool_size
        self.max_wait_s = max_wait_s
        self._pool: asyncpg.Pool | None = None
        self._closing = False
        self._claims = GroupCommitter(self._claim_many, self._claim_one)
        self._outcomes = GroupCommitter(self._record_many, self._record_one)

    async def open(self) -> None:
        self._pool = await asyncpg.create_pool(
            self.dsn,
            min_size=1,
            max_size=self.pool_size,
            reset=_no_reset,
            timeout=5,
            command_timeout=30,
            max_inactive_connection_lifetime=60,
        )

    async def close(self) -> None:
        self._closing = True
        if self._pool is not None:
            try:
                await asyncio.wait_for(self._pool.close(), timeout=5)
            except (TimeoutError, Exception):  # noqa: BLE001 - closing a broken pool
                self._pool.terminate()

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("the payment ledger is not open")
        return self._pool

    async def ping(self, timeout: float = 2.0) -> bool:
        try:
            async with asyncio.timeout(timeout):
                return await self.pool.fetchval("SELECT 1") == 1
        except Exception:  # noqa: BLE001 - any failure means "not ready"
            return False

    async def _patiently(self, operation: Callable[[], Awaitable[T]], what: str) -> T:
        """Run one statement, waiting out database outages (backoff, no hot loop)."""
        try:
            return await operation()
        except Exception as error:
            if self._closing or not _is_outage(error):
                raise
        return await patiently(
            operation,
            what=f"PostgreSQL ({what})",
            retry_on=lambda error: not self._closing and _is_outage(error),
            max_wait_s=self.max_wait_s,
        )

    # ------------------------------------------------------------------ write path
    async def claim(self, request: PaymentRequest, lease_s: float) -> tuple[Payment, bool]:
        """Create the PROCESSING row for this order, or return the existing one.

        Returns (payment, owned): owned is True when this call holds the lease, i.e. the
        caller must charge and record the outcome. Claims in flight together share one
        multi-row INSERT (group commit).
        """
        return await self._claims.submit((request, uuid.uuid4(), lease_s))

    async def record_outcome(self, payment: Payment, charge: ChargeResult) -> Payment:
        """Store the final status; if another worker finished it first, return theirs.
        Outcomes recorded together share one multi-row UPDATE."""
        return await self._outcomes.submit((payment, charge))

    async def _claim_many(self, items: list[tuple[PaymentRequest, uuid.UUID, float]]) -> list[tuple[Payment, bool]]:
        def columns(request: PaymentRequest, token: uuid.UUID) -> tuple[Any, ...]:
            method = request.payment_method
            card = (
                (
                    method.type.value,
                    method.card_last_four,
                    method.card_brand.value if method.card_brand else None,
                    method.card_holder_name,
                    method.expiration_month,
                    method.expiration_year,
                )
                if method is not None
                else (None,) * 6
            )
            return (
                request.order_id,
                request.buyer_id,
                request.amount,
                request.currency,
                *card,
                request.event_id,
                token,
            )

        async def run() -> list[tuple[Payment, bool]]:
            if len(items) == 1:  # a lone claim: the plain statement is cheaper than arrays
                request, token, lease_s = items[0]
                inserted = await self.pool.fetch(sql.CLAIM_ONE, *columns(request, token), lease_s)
            else:
                arrays = [list(column) for column in zip(*(columns(r, t) for r, t, _ in items), strict=True)]
                inserted = await self.pool.fetch(sql.CLAIM_MANY, *arrays, items[0][2])
            claimed = {row["order_id"]: row for row in inserted}
            existing: dict[int, asyncpg.Record] = {}
            seen: set[int] = set()
            missing = []  # orders that already had a row, or appear twice in this batch
            for request, _, _ in items:
                if request.order_id not in claimed or request.order_id in seen:
                    missing.append(request.order_id)
                seen.add(request.order_id)
            if missing:
                existing = {row["order_id"]: row for row in await self.pool.fetch(sql.BY_ORDERS, missing)}
            results: list[tuple[Payment, bool]] = []
            for request, token, _ in items:
                row = claimed.pop(request.order_id, None)
                if row is not None:  # ours: the row is what we sent plus what the database added
                    results.append((_new_payment(request, row), True))
                    continue
                row = existing.get(request.order_id)
                if row is None:  # deleted in between: let the caller try again
                    raise asyncpg.exceptions.ConnectionDoesNotExistError("payment vanished; retry")
                # Our own insert may have committed before a dropped connection hid the answer.
                results.append((payment_from_row(row), row["lease_owner"] == token))
            return results

        return await self._patiently(run, "claim")

    async def _claim_one(self, item: tuple[PaymentRequest, uuid.UUID, float]) -> tuple[Payment, bool]:
        return (await self._claim_many([item]))[0]

    async def _record_many(self, items: list[tuple[Payment, ChargeResult]]) -> list[Payment]:
        async def run() -> list[Payment]:
            ids, statuses, transactions, reasons, codes = [], [], [], [], []
            for payment, charge in items:
                ids.append(payment.id)
                statuses.append("SUCCEEDED" if charge.success else "FAILED")
                transactions.append(charge.transaction_id)
                reasons.append(charge.failure_reason)
                codes.append(charge.failure_code.value if charge.failure_code else None)
            if len(ids) == 1:
                found = await self.pool.fetch(
                    sql.RECORD_ONE, ids[0], statuses[0], transactions[0], reasons[0], codes[0]
                )
            else:
                found = await self.pool.fetch(sql.RECORD_MANY, ids, statuses, transactions, reasons, codes)
            recorded = {row["id"]: row for row in found}
            others: dict[int, Payment] = {}
            missing = [i for i in ids if i not in recorded]
            if missing:  # finished by another worker first: theirs stands
                others = {row["id"]: payment_from_row(row) for row in await self.pool.fetch(sql.BY_IDS, missing)}
            return [
                _recorded(payment, charge, recorded[payment.id]) if payment.id in recorded else others[payment.id]
                for payment, charge in items
            ]

        return await self._patiently(run, "record outcome")

    async def _record_one(self, item: tuple[Payment, ChargeResult]) -> Payment:
        return (await self._record_many([item]))[0]

    async def take_over(self, payment_id: int, lease_s: float) -> Payment | None:
        """Claim an unfinished payment whose lease expired; None if someone else holds it."""

        async def run() -> Payment | None:
            row = await self.pool.fetchrow(sql.TAKE_OVER, payment_id, uuid.uuid4(), lease_s)
            return payment_from_row(row) if row else None

        return await self._patiently(run, "take over")

    async def release(self, payment_id: int) -> None:
        await self._patiently(lambda: self.pool.execute(sql.RELEASE, payment_id), "release")

    async def mark_published(self, confirmed: list[tuple[int, str]]) -> None:
        """Mark outcomes confirmed by the broker, each only if the payment still has the status
        that was announced (a refund recorded meanwhile owes its own event)."""
        ids, statuses = [i for i, _ in confirmed], [s for _, s in confirmed]
        await self._patiently(lambda: self.pool.execute(sql.MARK_PUBLISHED, ids, statuses), "mark published")

    async def get_by_order_id(self, order_id: int) -> Payment | None:
        row = await self.pool.fetchrow(sql.BY_ORDER, order_id)
        return payment_from_row(row) if row else None

    # ------------------------------------------------------------------ cancellations, refunds
    async def cancel(self, cancellation: OrderCancellation, lease_s: float) -> tuple[Payment, str]:
        async def run() -> tuple[Payment, str]:
            row = await self.pool.fetchrow(
                sql.CANCEL,
                cancellation.order_id,
                cancellation.buyer_id or "",
                cancellation.reason[:500],
                uuid.uuid4(),
                lease_s,
            )
            if row is None:  # final already, or cancelled before: nothing changes
                existing = await self.pool.fetchrow(sql.BY_ORDER, cancellation.order_id)
                return payment_from_row(existing), "final"
            payment = payment_from_row(row)
            if row["inserted"]:
                return payment, "before_charge"
            return payment, "after_success" if payment.status is PaymentStatus.SUCCEEDED else "in_flight"

        return await self._patiently(run, "cancel")

    async def claim_refund(self, order_id: int, reason: str | None, lease_s: float) -> Payment | None:
        reason = reason[:500] if reason else None
        row = await self._patiently(
            lambda: self.pool.fetchrow(sql.CLAIM_REFUND, order_id, reason, uuid.uuid4(), lease_s), "claim refund"
        )
        return payment_from_row(row) if row else None

    async def take_over_refund(self, payment_id: int, lease_s: float) -> Payment | None:
        row = await self._patiently(
            lambda: self.pool.fetchrow(sql.TAKE_OVER_REFUND, payment_id, uuid.uuid4(), lease_s), "take over refund"
        )
        return payment_from_row(row) if row else None

    async def record_refund(self, payment: Payment, refund: RefundResult) -> Payment:
        async def run() -> Any:
            if refund.success:
                return await self.pool.fetchrow(sql.RECORD_REFUNDED, payment.id, refund.refund_id)
            return await self.pool.fetchrow(sql.RECORD_REFUND_DECLINED, payment.id)

        row = await self._patiently(run, "record refund")
        if row is None:  # refunded by someone else first: theirs stands
            row = await self.pool.fetchrow(sql.BY_ID, payment.id)
        return payment_from_row(row)

    async def owed_refunds(self, limit: int = 100) -> list[int]:
        return [r["id"] for r in await self.pool.fetch(sql.OWED_REFUNDS, limit)]

    # ------------------------------------------------------------------ reconciler
    async def expired_leases(self, limit: int = 100) -> list[int]:
        return [r["id"] for r in await self.pool.fetch(sql.EXPIRED_LEASES, limit)]

    async def claim_unpublished(self, older_than_s: float, limit: int, lease_s: float) -> list[Payment]:
        rows = await self.pool.fetch(sql.CLAIM_UNPUBLISHED, older_than_s, limit, lease_s)
        return [payment_from_row(r) for r in rows]

    async def backlog(self, stuck_after_s: float) -> tuple[int, int, int]:
        row = await self.pool.fetchrow(sql.BACKLOG, stuck_after_s)
        return row["in_flight"], row["stuck"], row["unpublished"]


def _recorded(payment: Payment, charge: ChargeResult, row: Any) -> Payment:
    """The payment as the outcome UPDATE left it (plus the cancellation it may have met)."""
    final = payment.with_outcome(charge, row["processed_at"])
    final.cancelled_at = row["cancelled_at"]
    final.refund_reason = row["refund_reason"]
    final.refund_requested_at = row["refund_requested_at"]
    if final.refund_requested_at is not None:  # the refund is ours to do: keep the lease
        final.lease_until = payment.lease_until
    return final


def _is_outage(error: BaseException) -> bool:
    if isinstance(error, asyncpg.exceptions.InterfaceError) and "pool is closing" in str(error):
        return False
    return isinstance(
        error,
        (
            OSError,
            TimeoutError,
            asyncpg.PostgresConnectionError,
            asyncpg.exceptions.CannotConnectNowError,
            asyncpg.exceptions.OperatorInterventionError,
            asyncpg.exceptions.TooManyConnectionsError,
            asyncpg.exceptions.InterfaceError,
        ),
    )
