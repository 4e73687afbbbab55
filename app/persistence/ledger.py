"""The per-message write path on asyncpg directly: claim a payment, record its outcome,
mark it published. Kept lean on purpose: asyncpg without an ORM, prepared statements, and
group commit (the claims in flight together share one multi-row INSERT, the outcomes one
multi-row UPDATE; see group_commit.py).

While PostgreSQL is unreachable every call waits and tries again with backoff (capped at
a few seconds), so messages stay unacknowledged and nothing spins.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg
from loguru import logger
from tenacity import AsyncRetrying, retry_if_exception, wait_exponential_jitter

from app.domain import ChargeResult, Payment, PaymentRequest, PaymentStatus
from app.persistence.group_commit import GroupCommitter
from app.persistence.mapping import COLUMNS, payment_from_row

T = TypeVar("T")

_RETURNING = ", ".join(COLUMNS)
_UNFINISHED = "('PENDING', 'PROCESSING')"

SQL_CLAIM_ONE = f"""
INSERT INTO payments (order_id, buyer_id, amount, currency, status, payment_method_type,
    card_last_four, card_brand, card_holder_name, expiration_month, expiration_year,
    event_id, lease_owner, lease_until)
VALUES ($1, $2, $3, $4, 'PROCESSING', $5, $6, $7, $8, $9, $10, $11, $12, now() + make_interval(secs => $13))
ON CONFLICT (order_id) DO NOTHING
RETURNING id, order_id, created_at, lease_until
"""
SQL_CLAIM_MANY = f"""
INSERT INTO payments (order_id, buyer_id, amount, currency, status, payment_method_type,
    card_last_four, card_brand, card_holder_name, expiration_month, expiration_year,
    event_id, lease_owner, lease_until)
SELECT o, b, a, c, 'PROCESSING', t, l4, br, h, m, y, e, k, now() + make_interval(secs => $13)
FROM unnest($1::bigint[], $2::text[], $3::numeric[], $4::text[], $5::text[], $6::text[],
            $7::text[], $8::text[], $9::int[], $10::int[], $11::text[], $12::uuid[])
     AS x(o, b, a, c, t, l4, br, h, m, y, e, k)
ORDER BY o
ON CONFLICT (order_id) DO NOTHING
RETURNING id, order_id, created_at, lease_until
"""
SQL_BY_ORDERS = f"SELECT {_RETURNING}, lease_owner FROM payments WHERE order_id = ANY($1::bigint[])"
SQL_RECORD_ONE = f"""
UPDATE payments SET status = $2, transaction_id = $3, failure_reason = $4, failure_code = $5,
    processed_at = now(), updated_at = now(), lease_until = NULL, lease_owner = NULL
WHERE id = $1 AND status IN {_UNFINISHED}
RETURNING id, processed_at
"""
SQL_RECORD_MANY = f"""
UPDATE payments p SET status = x.s, transaction_id = x.t, failure_reason = x.r, failure_code = x.c,
    processed_at = now(), updated_at = now(), lease_until = NULL, lease_owner = NULL
FROM (SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[])
      AS u(id, s, t, r, c) ORDER BY id) AS x
WHERE p.id = x.id AND p.status IN {_UNFINISHED}
RETURNING p.id, p.processed_at
"""
SQL_BY_IDS = f"SELECT {_RETURNING} FROM payments WHERE id = ANY($1::bigint[])"
SQL_BY_ORDER = f"SELECT {_RETURNING} FROM payments WHERE order_id = $1"
SQL_TAKE_OVER = f"""
UPDATE payments SET lease_owner = $2, lease_until = now() + make_interval(secs => $3), updated_at = now()
WHERE id = $1 AND status IN {_UNFINISHED} AND (lease_until IS NULL OR lease_until < now())
RETURNING {_RETURNING}
"""
SQL_MARK_PUBLISHED = """
UPDATE payments SET published_at = now(), lease_until = NULL
WHERE id = ANY($1::bigint[]) AND published_at IS NULL
"""
SQL_EXPIRED_LEASES = f"""
SELECT id FROM payments
WHERE status IN {_UNFINISHED} AND (lease_until IS NULL OR lease_until < now())
ORDER BY lease_until NULLS FIRST LIMIT $1
"""
# Final outcomes not yet confirmed by the broker, older than a grace period (so the worker
# that recorded them has had its chance); claimed with a short lease so that replicas do
# not all publish the same outcome.
SQL_CLAIM_UNPUBLISHED = f"""
UPDATE payments SET lease_until = now() + make_interval(secs => $3)
WHERE id IN (
    SELECT id FROM payments
    WHERE published_at IS NULL AND status IN ('SUCCEEDED', 'FAILED')
      AND processed_at < now() - make_interval(secs => $1)
      AND (lease_until IS NULL OR lease_until < now())
    ORDER BY processed_at LIMIT $2
    FOR UPDATE SKIP LOCKED)
RETURNING {_RETURNING}
"""
SQL_BACKLOG = f"""
SELECT
  (SELECT count(*) FROM payments WHERE status IN {_UNFINISHED}) AS in_flight,
  (SELECT count(*) FROM payments WHERE status IN {_UNFINISHED}
      AND lease_until < now() - make_interval(secs => $1)) AS stuck,
  (SELECT count(*) FROM payments
      WHERE published_at IS NULL AND status IN ('SUCCEEDED', 'FAILED')) AS unpublished
"""


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
        return await self._wait_out_outage(operation, what)

    async def _wait_out_outage(self, operation: Callable[[], Awaitable[T]], what: str) -> T:

        def should_retry(error: BaseException) -> bool:
            return not self._closing and _is_outage(error)

        def before_sleep(state) -> None:  # noqa: ANN001
            logger.warning(
                "database unavailable during {what}; retrying in {wait:.1f} s ({error})",
                what=what,
                wait=state.next_action.sleep,
                error=type(state.outcome.exception()).__name__,
            )

        async for attempt in AsyncRetrying(
            retry=retry_if_exception(should_retry),
            wait=wait_exponential_jitter(initial=0.2, max=self.max_wait_s, jitter=0.2),
            before_sleep=before_sleep,
            reraise=True,
        ):
            with attempt:
                return await operation()
        raise AssertionError("unreachable")  # pragma: no cover

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
        def columns(request: PaymentRequest, token: uuid.UUID) -> tuple:
            method = request.payment_method
            return (
                request.order_id,
                request.buyer_id,
                request.amount,
                request.currency,
                method.type.value,
                method.card_last_four,
                method.card_brand.value if method.card_brand else None,
                method.card_holder_name,
                method.expiration_month,
                method.expiration_year,
                request.event_id,
                token,
            )

        async def run() -> list[tuple[Payment, bool]]:
            if len(items) == 1:  # a lone claim: the plain statement is cheaper than arrays
                request, token, lease_s = items[0]
                inserted = await self.pool.fetch(SQL_CLAIM_ONE, *columns(request, token), lease_s)
            else:
                arrays = [list(column) for column in zip(*(columns(r, t) for r, t, _ in items), strict=True)]
                inserted = await self.pool.fetch(SQL_CLAIM_MANY, *arrays, items[0][2])
            claimed = {row["order_id"]: row for row in inserted}
            existing: dict[int, asyncpg.Record] = {}
            seen: set[int] = set()
            missing = []  # orders that already had a row, or appear twice in this batch
            for request, _, _ in items:
                if request.order_id not in claimed or request.order_id in seen:
                    missing.append(request.order_id)
                seen.add(request.order_id)
            if missing:
                existing = {row["order_id"]: row for row in await self.pool.fetch(SQL_BY_ORDERS, missing)}
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
                found = await self.pool.fetch(SQL_RECORD_ONE, ids[0], statuses[0], transactions[0], reasons[0], codes[0])
            else:
                found = await self.pool.fetch(SQL_RECORD_MANY, ids, statuses, transactions, reasons, codes)
            recorded = {row["id"]: row["processed_at"] for row in found}
            others: dict[int, Payment] = {}
            missing = [i for i in ids if i not in recorded]
            if missing:  # finished by another worker first: theirs stands
                others = {row["id"]: payment_from_row(row) for row in await self.pool.fetch(SQL_BY_IDS, missing)}
            return [
                payment.with_outcome(charge, recorded[payment.id]) if payment.id in recorded else others[payment.id]
                for payment, charge in items
            ]

        return await self._patiently(run, "record outcome")

    async def _record_one(self, item: tuple[Payment, ChargeResult]) -> Payment:
        return (await self._record_many([item]))[0]

    async def take_over(self, payment_id: int, lease_s: float) -> Payment | None:
        """Claim an unfinished payment whose lease expired; None if someone else holds it."""

        async def run() -> Payment | None:
            row = await self.pool.fetchrow(SQL_TAKE_OVER, payment_id, uuid.uuid4(), lease_s)
            return payment_from_row(row) if row else None

        return await self._patiently(run, "take over")

    async def mark_published(self, payment_ids: list[int]) -> None:
        await self._patiently(lambda: self.pool.execute(SQL_MARK_PUBLISHED, payment_ids), "mark published")

    async def get_by_order_id(self, order_id: int) -> Payment | None:
        row = await self.pool.fetchrow(SQL_BY_ORDER, order_id)
        return payment_from_row(row) if row else None

    # ------------------------------------------------------------------ reconciler
    async def expired_leases(self, limit: int = 100) -> list[int]:
        return [r["id"] for r in await self.pool.fetch(SQL_EXPIRED_LEASES, limit)]

    async def claim_unpublished(self, older_than_s: float, limit: int, lease_s: float) -> list[Payment]:
        rows = await self.pool.fetch(SQL_CLAIM_UNPUBLISHED, older_than_s, limit, lease_s)
        return [payment_from_row(r) for r in rows]

    async def backlog(self, stuck_after_s: float) -> tuple[int, int, int]:
        row = await self.pool.fetchrow(SQL_BACKLOG, stuck_after_s)
        return row["in_flight"], row["stuck"], row["unpublished"]


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
