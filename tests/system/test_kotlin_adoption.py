"""The service started on the database the Kotlin payment service left behind: it adopts the
table in place, keeps every row, never re-announces the Kotlin outcomes and charges the
unfinished payments once each through the reconciler."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.schema_support import fetch_rows, load_kotlin_fixture, scratch_database
from tests.support import FAILED_KEYS, SUCCEEDED_KEYS, Bus, Servers, event, metric_sum, next_order_id, scrape

LEASE_S, INTERVAL_S = 3, 1
FAST = {
    "PAYMENT_DELAY_MS": "0",
    "PAYMENT_GATEWAY_TIMEOUT_MS": "300",
    "PAYMENT_RETRY_BASE_DELAY_MS": "10",
    "PAYMENT_RETRY_MAX_DELAY_MS": "50",
    "PAYMENT_LEASE_SECONDS": str(LEASE_S),
    "RECONCILE_INTERVAL_SECONDS": str(INTERVAL_S),
}
# The fixture's rows by order id: final ones (announced by the Kotlin service) and unfinished
# ones with what the simulated gateway answers for their card.
KOTLIN_FINAL = {7100001: 1, 7100002: 2, 7100003: 3, 7100004: 4, 7100005: 5}
KOTLIN_PENDING = {
    7100006: (6, "payment.succeeded"),
    7100007: (7, "payment.failed"),
    7100008: (8, "payment.succeeded"),
    7100009: (9, "payment.succeeded"),
}
METRICS_TTL_S = 1.5  # /metrics renders its text at most once a second
HIGHEST_KOTLIN_ID = 10  # the fixture's sequence handed out one more id than it stored
KOTLIN_COLUMNS = (
    "id, order_id, buyer_id, amount, currency, status, payment_method_type, card_last_four, card_brand, "
    "card_holder_name, expiration_month, expiration_year, transaction_id, failure_reason, created_at, processed_at"
)


def _redelivered_kotlin_event(order_id: int) -> dict[str, Any]:
    """The stock-confirmed event of fixture order 7100003 (FAILED by the Kotlin service), again."""
    body = event(order_id, card="0000", buyerId="kotlin-buyer-1", totalAmount="20.00")
    body["paymentMethod"] |= {"cardHolderName": "Ada Lovelace", "expirationMonth": 12, "expirationYear": 2030}
    return body


def _charges(samples: dict) -> dict:
    """The metric samples that count charges, for a failure message."""
    return {k: v for k, v in samples.items() if k[0].startswith(("payment_gateway_attempts", "payment_processed"))}


async def _wait(bus: Bus, service: Any, orders: set[int], timeout: float) -> None:
    try:
        await bus.wait_for(orders, timeout=timeout)
    except AssertionError as error:
        raise AssertionError(f"{error}; service log:\n{service.log_tail()}") from None


async def test_service_adopts_a_kotlin_database(servers: Servers, service_process: Any) -> None:
    async with scratch_database(servers, "adopt") as db:
        await load_kotlin_fixture(db.dsn)
        before = await fetch_rows(db.dsn, KOTLIN_COLUMNS)
        env = servers.env(**FAST, db_url=db.jdbc_url)  # fresh queue and exchange names, our database
        bus = await Bus(servers.amqp_url, env["RABBITMQ_PUBLISH_EXCHANGE"], env["RABBITMQ_CONSUME_QUEUE"]).start()
        service = service_process(env)
        try:
            await service.wait_ready(60)

            # Unfinished Kotlin payments: finished by the reconciler within lease + interval (+ slack).
            await _wait(bus, service, set(KOTLIN_PENDING), timeout=LEASE_S + INTERVAL_S + 10)
            await asyncio.sleep(4 * INTERVAL_S)  # several sweeps: nothing more may be announced
            for order_id in KOTLIN_FINAL:
                assert bus.for_order(order_id) == [], f"Kotlin outcome of {order_id} announced again"
            for order_id, (payment_id, routing_key) in KOTLIN_PENDING.items():
                outcomes = bus.for_order(order_id)
                assert [o.routing_key for o in outcomes] == [routing_key], order_id
                keys = SUCCEEDED_KEYS if routing_key == "payment.succeeded" else FAILED_KEYS
                assert set(outcomes[0].body) == keys
                if routing_key == "payment.succeeded":
                    assert outcomes[0].body["paymentId"] == payment_id  # the Kotlin row, not a new one
            assert bus.for_order(7100007)[0].body["failureCode"] == "CARD_DECLINED"
            samples = await scrape(service.url)
            # one charge each
            assert metric_sum(samples, "payment_gateway_attempts_total") == len(KOTLIN_PENDING), _charges(samples)
            assert metric_sum(samples, "payment_reconciled_total", action="charged") == len(KOTLIN_PENDING)
            assert metric_sum(samples, "payment_reconciled_total", action="republished") == 0

            # A new order numbers after every id the Kotlin service used.
            new_order = next_order_id()
            await bus.publish(event(new_order, card="4242"))
            await _wait(bus, service, {new_order}, timeout=20)
            (new_outcome,) = bus.for_order(new_order)
            assert new_outcome.routing_key == "payment.succeeded"
            assert new_outcome.body["paymentId"] > HIGHEST_KOTLIN_ID

            # A redelivered event of a Kotlin-failed order gets its stored outcome, with a code
            # the order service can decode, and no charge.
            await bus.publish(_redelivered_kotlin_event(7100003))
            await _wait(bus, service, {7100003}, timeout=20)
            (again,) = bus.for_order(7100003)
            assert again.routing_key == "payment.failed"
            assert (again.body["failureCode"], again.body["failureReason"]) == ("CARD_DECLINED", "Card declined")
            await asyncio.sleep(METRICS_TTL_S)
            samples = await scrape(service.url)
            assert metric_sum(samples, "payment_gateway_attempts_total") == len(KOTLIN_PENDING) + 1, _charges(samples)
        finally:
            await asyncio.to_thread(service.stop)  # before its database is dropped
            await bus.close()

        after = await fetch_rows(db.dsn)
        assert set(after) == {*before, new_outcome.body["paymentId"]}  # every Kotlin row kept
        for payment_id in KOTLIN_FINAL.values():
            assert {k: after[payment_id][k] for k in before[payment_id]} == before[payment_id]
        for payment_id, routing_key in KOTLIN_PENDING.values():
            row = after[payment_id]
            assert row["status"] == ("SUCCEEDED" if routing_key == "payment.succeeded" else "FAILED")
            assert row["published_at"] is not None
            assert row["amount"] == before[payment_id]["amount"]
