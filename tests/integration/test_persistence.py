"""The repository (SQLModel) and the ledger (asyncpg) against the real PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from app.domain import (
    CardBrand,
    ChargeResult,
    FailureCode,
    PaymentMethod,
    PaymentMethodType,
    PaymentRequest,
    PaymentStatus,
)
from app.persistence.ledger import PaymentLedger
from app.persistence.repository import make_engine
from tests.seeding import SeedingRepository as PaymentRepository
from tests.support import next_order_id


def request(
    order_id: int | None = None,
    *,
    amount: str = "49.99",
    currency: str = "USD",
    buyer: str = "buyer-1",
    method: PaymentMethod | None = None,
) -> PaymentRequest:
    return PaymentRequest(
        event_id="evt",
        order_id=order_id or next_order_id(),
        buyer_id=buyer,
        amount=Decimal(amount),
        currency=currency,
        payment_method=method
        or PaymentMethod(PaymentMethodType.CREDIT_CARD, "4242", CardBrand.VISA, "John Doe", 12, 2030),
    )


@pytest.fixture(scope="module", autouse=True)
async def cleanup(db):
    """Rows left unfinished or unpublished here would be picked up by a later test's reconciler."""
    yield
    await db.execute("DELETE FROM payments WHERE buyer_id LIKE 'buyer-%'")


@pytest.fixture(scope="module")
async def repository(database: str, servers) -> PaymentRepository:
    from tests.conftest import make_settings

    repo = PaymentRepository(make_engine(make_settings(servers).sqlalchemy_url()))
    yield repo
    await repo.engine.dispose()


@pytest.fixture(scope="module")
async def ledger(database: str) -> PaymentLedger:
    ledger = PaymentLedger(database, pool_size=4)
    await ledger.open()
    yield ledger
    await ledger.close()


async def test_create_then_find_by_id(repository: PaymentRepository) -> None:
    created, is_new = await repository.create(request(amount="123.45"))
    assert is_new and created.status is PaymentStatus.PENDING
    found = await repository.find_by_id(created.id)
    assert found is not None
    assert found.amount == Decimal("123.45")
    assert found.payment_method == created.payment_method


async def test_find_by_order_id(repository: PaymentRepository) -> None:
    order_id = next_order_id()
    created, _ = await repository.create(request(order_id))
    assert (await repository.find_by_order_id(order_id)).id == created.id
    assert await repository.find_by_order_id(next_order_id()) is None


async def test_create_for_existing_order_returns_existing(repository: PaymentRepository) -> None:
    order_id = next_order_id()
    first, _ = await repository.create(request(order_id, amount="10.00"))
    second, is_new = await repository.create(request(order_id, amount="99.00"))
    assert not is_new and second.id == first.id and second.amount == Decimal("10.00")


async def test_update_status_sets_transaction_and_processed_at(repository: PaymentRepository) -> None:
    created, _ = await repository.create(request())
    updated = await repository.update_status(created.id, PaymentStatus.SUCCEEDED, transaction_id="txn_123")
    assert updated.status is PaymentStatus.SUCCEEDED and updated.transaction_id == "txn_123"
    assert abs((updated.processed_at - datetime.now(UTC)).total_seconds()) < 1
    failed = await repository.update_status(
        (await repository.create(request()))[0].id,
        PaymentStatus.FAILED,
        failure_reason="Card declined",
        failure_code=FailureCode.CARD_DECLINED,
    )
    assert (failed.failure_reason, failed.failure_code) == ("Card declined", FailureCode.CARD_DECLINED)


async def test_find_by_buyer_with_limit_and_offset(repository: PaymentRepository) -> None:
    buyer = f"buyer-{next_order_id()}"
    ids = [(await repository.create(request(buyer=buyer)))[0].id for _ in range(5)]
    assert len(await repository.find_by_buyer_id(buyer, limit=10)) == 5
    page = await repository.find_by_buyer_id(buyer, limit=2, offset=2)
    assert len(page) == 2
    assert [p.id for p in page] == sorted(ids, reverse=True)[2:4]  # newest first


async def test_concurrent_creates_for_one_order_make_one_row(repository: PaymentRepository, db) -> None:
    order_id = next_order_id()
    results = await asyncio.gather(*(repository.create(request(order_id)) for _ in range(10)))
    assert len({p.id for p, _ in results}) == 1
    assert sum(is_new for _, is_new in results) == 1
    assert await db.fetchval("SELECT count(*) FROM payments WHERE order_id = $1", order_id) == 1


@pytest.mark.parametrize("amount", ["0.01", "1.99", "10.50", "99.99", "999.99", "1234.56", "9999999999.99"])
async def test_amount_precision_round_trip(repository: PaymentRepository, ledger: PaymentLedger, amount: str) -> None:
    via_repository, _ = await repository.create(request(amount=amount))
    via_ledger, _ = await ledger.claim(request(amount=amount), lease_s=30)
    for payment in (via_repository, via_ledger):
        stored = await repository.find_by_id(payment.id)
        assert stored.amount == Decimal(amount)
        assert str(stored.amount) == amount


@pytest.mark.parametrize("currency", ["USD", "EUR", "GBP", "JPY"])
async def test_currencies_round_trip(repository: PaymentRepository, currency: str) -> None:
    created, _ = await repository.create(request(currency=currency))
    assert (await repository.find_by_id(created.id)).currency == currency


@pytest.mark.parametrize(
    "method",
    [
        PaymentMethod(PaymentMethodType.CREDIT_CARD, "4242", CardBrand.VISA, "A B", 1, 2031),
        PaymentMethod(PaymentMethodType.DEBIT_CARD, "5555", CardBrand.MASTERCARD, "C D", 6, 2029),
        PaymentMethod(PaymentMethodType.CREDIT_CARD, "0005", CardBrand.AMEX, None, None, None),
        PaymentMethod(PaymentMethodType.DIGITAL_WALLET),
    ],
)
async def test_payment_methods_round_trip(repository: PaymentRepository, ledger: PaymentLedger, method) -> None:
    created, _ = await ledger.claim(request(method=method), lease_s=30)
    assert (await repository.find_by_id(created.id)).payment_method == method


async def test_ledger_claim_is_owned_once_and_outcome_recorded_once(ledger: PaymentLedger) -> None:
    order_id = next_order_id()
    claims = await asyncio.gather(*(ledger.claim(request(order_id), lease_s=30) for _ in range(20)))
    assert sum(owned for _, owned in claims) == 1
    payment = next(p for p, owned in claims if owned)
    assert payment.status is PaymentStatus.PROCESSING and payment.lease_until is not None
    assert await ledger.take_over(payment.id, lease_s=30) is None  # the lease is live
    done = await ledger.record_outcome(payment, ChargeResult.succeeded("txn_1"))
    assert done.status is PaymentStatus.SUCCEEDED and done.lease_until is None
    # A late second recorder (e.g. a reconciler) gets the stored outcome, not its own.
    late = await ledger.record_outcome(payment, ChargeResult.failed(FailureCode.TIMEOUT))
    assert late.status is PaymentStatus.SUCCEEDED and late.transaction_id == "txn_1"


async def test_expired_lease_is_taken_over_once(ledger: PaymentLedger, db) -> None:
    payment, _ = await ledger.claim(request(), lease_s=30)
    await db.execute("UPDATE payments SET lease_until = now() - interval '1 second' WHERE id = $1", payment.id)
    assert payment.id in await ledger.expired_leases(10_000)
    takers = await asyncio.gather(*(ledger.take_over(payment.id, lease_s=30) for _ in range(5)))
    assert sum(t is not None for t in takers) == 1


async def test_unpublished_outcomes_are_claimed_then_marked(ledger: PaymentLedger, db) -> None:
    payment, _ = await ledger.claim(request(), lease_s=30)
    await ledger.record_outcome(payment, ChargeResult.failed(FailureCode.CARD_DECLINED))
    await db.execute("UPDATE payments SET processed_at = now() - interval '1 minute' WHERE id = $1", payment.id)
    owed = [p.id for p in await ledger.claim_unpublished(older_than_s=5, limit=10_000, lease_s=30)]
    assert payment.id in owed
    # Claimed: another replica's sweep does not get it again while the claim lasts.
    assert payment.id not in [p.id for p in await ledger.claim_unpublished(5, 10_000, 30)]
    await ledger.mark_published([(payment.id, "SUCCEEDED")])  # not what it announced: no mark
    assert await db.fetchval("SELECT published_at IS NULL FROM payments WHERE id = $1", payment.id)
    await ledger.mark_published([(payment.id, "FAILED")])
    assert await db.fetchval("SELECT published_at IS NOT NULL FROM payments WHERE id = $1", payment.id)


async def test_duplicates_inside_one_batch_give_one_owner(ledger: PaymentLedger) -> None:
    import uuid as uuid_module

    order_id = next_order_id()
    items = [(request(order_id), uuid_module.uuid4(), 30.0) for _ in range(3)] + [
        (request(), uuid_module.uuid4(), 30.0)
    ]
    statements: list[str] = []
    pool = ledger.pool

    class CountingPool:
        async def fetch(self, query: str, *args):
            statements.append(query.split()[0])
            return await pool.fetch(query, *args)

    ledger._pool = CountingPool()
    try:
        results = await ledger._claim_many(items)
    finally:
        ledger._pool = pool
    assert statements == ["INSERT", "SELECT"]  # one pass: no retry of the whole batch
    assert [owned for _, owned in results] == [True, False, False, True]
    assert len({payment.id for payment, _ in results[:3]}) == 1
