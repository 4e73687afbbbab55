"""The cancellation table against the real service process, real RabbitMQ and PostgreSQL, driven by a plain AMQP
client: cancel before the charge, while it is in flight, after success and after failure; the same cancel twice on
two replicas; a refund the gateway declines; the operator refund (HTTP route and command line); a `kill -9` in the
middle of a refund. The HTTP gateway runs as the shipped fake, so every charge and refund is counted at the gateway."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from app.gateway.fake import RunningFakeGateway, running_fake_gateway
from tests.support import (
    REFUNDED_KEYS,
    SUCCEEDED_KEYS,
    Bus,
    Servers,
    event,
    free_port,
    next_order_id,
    payment_record,
    run_command,
    wait_for_metric,
    wait_for_status,
)

API_KEY = "sk_test_cancellations_7d1f"
REASON = "Customer changed their mind"
# Short bounds so that a crash is recovered within seconds.
FAST = {
    "PAYMENT_GATEWAY_TIMEOUT_MS": "700",
    "PAYMENT_RETRY_BASE_DELAY_MS": "10",
    "PAYMENT_RETRY_MAX_DELAY_MS": "50",
    "PAYMENT_LEASE_SECONDS": "3",
    "RECONCILE_INTERVAL_SECONDS": "0.5",
    "SHUTDOWN_GRACE_SECONDS": "5",
}
SLOW = {"PAYMENT_GATEWAY_TIMEOUT_MS": "5000", "PAYMENT_LEASE_SECONDS": "20"}  # a charge held 1.5 s in flight


@pytest.fixture
async def fake() -> AsyncIterator[RunningFakeGateway]:
    async with running_fake_gateway(api_key=API_KEY) as running:
        yield running


def on_fake(servers: Servers, fake: RunningFakeGateway, **overrides: str) -> dict[str, str]:
    gateway = {"PAYMENT_GATEWAY": "http", "PAYMENT_GATEWAY_URL": fake.url, "PAYMENT_GATEWAY_API_KEY": API_KEY}
    return servers.env(**{**FAST, **gateway, **overrides})


@pytest.fixture
async def bus(servers: Servers) -> AsyncIterator[Callable[[dict[str, str]], Any]]:
    """Opens the test's AMQP client on a service's exchange (before anything is published)."""
    opened: list[Bus] = []

    async def open_for(env: dict[str, str]) -> Bus:
        opened.append(
            await Bus(servers.amqp_url, env["RABBITMQ_PUBLISH_EXCHANGE"], env["RABBITMQ_CONSUME_QUEUE"]).start()
        )
        return opened[-1]

    yield open_for
    for client in opened:
        await client.close()


async def settled(bus: Bus, order_id: int, seconds: float = 1.5) -> list[tuple[str, dict[str, Any]]]:
    """Every outcome of the order after a quiet period in which a wrong one would have arrived."""
    await asyncio.sleep(seconds)
    return [(o.routing_key, o.body) for o in bus.for_order(order_id)]


async def paid(bus: Bus, card: str = "4242") -> int:
    """An order charged successfully (its payment.succeeded seen)."""
    body = event(card=card)
    await bus.publish(body)
    await bus.wait_for([body["orderId"]])
    assert bus.for_order(body["orderId"])[0].routing_key == "payment.succeeded"
    return body["orderId"]


def assert_refunded_event(body: dict[str, Any], row: dict[str, Any], reason: str = REASON) -> None:
    assert set(body) == REFUNDED_KEYS
    assert (body["paymentId"], body["transactionId"], body["refundId"]) == (
        row["id"],
        row["transactionId"],
        row["refundId"],
    )
    assert (body["amount"], body["currency"], body["reason"]) == ("49.99", "USD", reason)
    assert body["refundedAt"].endswith("Z")


def gateway_counts(fake: RunningFakeGateway, order_id: int) -> dict[str, int]:
    return fake.state.audit()["orders"].get(str(order_id), {"captured": 0, "refunded": 0})


# --------------------------------------------------------------------------- the table, row by row
async def test_cancel_before_stock_confirmed_is_recorded_and_never_charged(service_process, servers, fake, bus) -> None:
    env = on_fake(servers, fake)
    service = service_process(env)
    await service.wait_ready()
    client = await bus(env)
    order_id = next_order_id()
    await client.cancel(order_id)
    row = await wait_for_status(service.url, order_id, "CANCELLED")
    assert row["transactionId"] is None and row["refundId"] is None and row["refundedAt"] is None
    await client.publish(event(order_id))  # stock confirmed after the cancellation: acknowledged, not charged
    await wait_for_metric([service.url], "payment_processed_total", 1, outcome="replayed")
    assert await settled(client, order_id) == []
    assert (await payment_record(service.url, order_id))["status"] == "CANCELLED"
    assert f"order-{order_id}" not in fake.state.keys, "a cancelled order reached the gateway"
    assert await wait_for_metric([service.url], "payment_cancellations_total", 1, case="before_charge") == 1


@pytest.mark.parametrize("gateway", ["simulated", "http"])
async def test_cancel_while_the_charge_is_in_flight_refunds_instead_of_succeeding(
    service_process, servers, fake, bus, gateway: str
) -> None:
    if gateway == "simulated":
        env = servers.env(**{**FAST, **SLOW, "PAYMENT_DELAY_MS": "1500"})
    else:
        env = on_fake(servers, fake, **SLOW)
        fake.state.control({"latency_ms": 1500})
    service = service_process(env)
    await service.wait_ready()
    client = await bus(env)
    body = event()
    order_id = body["orderId"]
    await client.publish(body)
    await wait_for_status(service.url, order_id, "PROCESSING")
    await client.cancel(order_id)
    await client.wait_for([order_id], timeout=20)
    outcomes = await settled(client, order_id, seconds=2.0)
    assert [key for key, _ in outcomes] == ["payment.refunded"], outcomes
    row = await payment_record(service.url, order_id)
    assert row["status"] == "REFUNDED" and row["refundId"] and row["refundedAt"]
    assert_refunded_event(outcomes[0][1], row)
    assert await wait_for_metric([service.url], "payment_cancellations_total", 1, case="in_flight") == 1
    if gateway == "http":
        assert gateway_counts(fake, order_id) == {"captured": 1, "refunded": 1}


async def test_cancel_after_success_refunds(service_process, servers, fake, bus) -> None:
    env = on_fake(servers, fake)
    service = service_process(env)
    await service.wait_ready()
    client = await bus(env)
    order_id = await paid(client)
    await client.cancel(order_id)
    await client.wait_for([order_id], each=2)
    outcomes = await settled(client, order_id)
    assert [key for key, _ in outcomes] == ["payment.succeeded", "payment.refunded"]
    assert set(outcomes[0][1]) == SUCCEEDED_KEYS
    row = await payment_record(service.url, order_id)
    assert row["status"] == "REFUNDED" and row["refundedAt"].endswith("Z")
    assert_refunded_event(outcomes[1][1], row)
    refund = fake.state.keys[f"refund-order-{order_id}"]
    assert refund.stored.body["id"] == row["refundId"]
    assert refund.request == {
        "charge": row["transactionId"],
        "reason": "requested_by_customer",
        "metadata": {"orderId": str(order_id)},
    }
    assert gateway_counts(fake, order_id) == {"captured": 1, "refunded": 1}


async def test_cancel_after_failure_changes_nothing(service_process, servers, fake, bus) -> None:
    env = on_fake(servers, fake)
    service = service_process(env)
    await service.wait_ready()
    client = await bus(env)
    body = event(card="0000")
    order_id = body["orderId"]
    await client.publish(body)
    await client.wait_for([order_id])
    await client.cancel(order_id)
    await wait_for_metric([service.url], "payment_cancellations_total", 1, case="final")
    outcomes = await settled(client, order_id)
    assert [key for key, _ in outcomes] == ["payment.failed"]
    assert outcomes[0][1]["failureCode"] == "CARD_DECLINED"
    row = await payment_record(service.url, order_id)
    assert row["status"] == "FAILED" and row["refundId"] is None
    assert f"refund-order-{order_id}" not in fake.state.keys


async def test_the_same_cancel_twice_on_two_replicas_refunds_once(service_process, servers, fake, bus) -> None:
    env = on_fake(servers, fake)
    replicas = [service_process({**env, "PORT": str(free_port())}) for _ in range(2)]
    await asyncio.gather(*(r.wait_ready() for r in replicas))
    urls = [r.url for r in replicas]
    client = await bus(env)
    orders = [await paid(client) for _ in range(8)]
    for order_id in orders:  # two deliveries back to back: with two consumers, often one each
        await client.cancel(order_id)
        await client.cancel(order_id)
    await client.wait_for(orders, each=2, timeout=20)
    await wait_for_metric(urls, "payment_cancellations_total", 2 * len(orders))
    await asyncio.sleep(1.5)
    for order_id in orders:
        refunded = [o.body for o in client.for_order(order_id) if o.routing_key == "payment.refunded"]
        assert refunded and len({body["eventId"] for body in refunded}) == 1, refunded
        assert gateway_counts(fake, order_id) == {"captured": 1, "refunded": 1}
    after_success = await wait_for_metric(urls, "payment_cancellations_total", 0, case="after_success")
    assert after_success == len(orders), "each order's refund is decided once, by one delivery"
    assert await wait_for_metric(urls, "payment_refunds_total", 0, outcome="refunded") == len(orders)


async def test_a_declined_refund_leaves_the_payment_succeeded(service_process, servers, fake, bus) -> None:
    env = on_fake(servers, fake)
    service = service_process(env)
    await service.wait_ready()
    client = await bus(env)
    order_id = await paid(client, card="8888")
    await client.cancel(order_id)
    assert await wait_for_metric([service.url], "payment_refund_failures_total", 1) == 1
    assert await wait_for_metric([service.url], "payment_refunds_total", 1, outcome="declined") == 1
    assert [key for key, _ in await settled(client, order_id)] == ["payment.succeeded"]
    row = await payment_record(service.url, order_id)
    assert row["status"] == "SUCCEEDED" and row["refundId"] is None and row["refundedAt"] is None
    assert fake.state.keys[f"refund-order-{order_id}"].statuses == [402]
    assert gateway_counts(fake, order_id) == {"captured": 1, "refunded": 0}


# --------------------------------------------------------------------------- the operator's refund
async def test_admin_refund_route_answers_per_payment_state(service_process, servers, fake, bus) -> None:
    env = on_fake(servers, fake)
    service = service_process(env)
    await service.wait_ready()
    client = await bus(env)
    refundable, declined = await paid(client), await paid(client, card="8888")
    failed, cancelled, slow = event(card="0000"), next_order_id(), event(card="6666")
    await client.publish(failed)
    await client.cancel(cancelled)
    await client.wait_for([failed["orderId"]])
    await wait_for_status(service.url, cancelled, "CANCELLED")
    await client.publish(slow)  # no answer from the gateway for three attempts: PROCESSING meanwhile
    await wait_for_status(service.url, slow["orderId"], "PROCESSING")

    async with httpx.AsyncClient(base_url=service.url, timeout=10.0) as http:

        async def refund(order_id: int, **body: str) -> httpx.Response:
            return await http.post(f"/payments/{order_id}/refund", json=body or None)

        assert (await refund(next_order_id())).status_code == 404
        for order_id in (failed["orderId"], cancelled, slow["orderId"]):
            answer = await refund(order_id)
            assert answer.status_code == 409, (order_id, answer.text)
            assert answer.json()["error"], "the body says why"
        answer = await refund(declined)
        assert answer.status_code == 502, answer.text
        assert (await payment_record(service.url, declined))["status"] == "SUCCEEDED"
        answer = await refund(refundable, reason="Damaged delivery")
        assert answer.status_code == 200, answer.text
        row = answer.json()
        assert row["status"] == "REFUNDED" and row["refundId"] and row["refundedAt"]
        again = await refund(refundable)
        assert again.status_code == 200 and again.json()["refundId"] == row["refundId"]
    await client.wait_for([refundable], each=2)
    refunded = [o.body for o in client.for_order(refundable) if o.routing_key == "payment.refunded"]
    assert_refunded_event(refunded[0], row, reason="Damaged delivery")
    assert gateway_counts(fake, refundable) == {"captured": 1, "refunded": 1}
    assert [o.routing_key for o in client.for_order(declined)] == ["payment.succeeded"]


async def test_cli_refund_prints_the_refunded_record(service_process, servers, fake, bus) -> None:
    env = on_fake(servers, fake)
    service = service_process(env)
    await service.wait_ready()
    client = await bus(env)
    order_id = await paid(client)
    code, out, err = await run_command(env, "refund", str(order_id), "--reason", "Wrong address")
    assert code == 0, (out, err)
    answer = json.loads(out)
    assert answer["outcome"] == "REFUNDED"
    assert answer["payment"]["status"] == "REFUNDED" and answer["payment"]["refundId"]
    await client.wait_for([order_id], each=2)
    refunded = [o.body for o in client.for_order(order_id) if o.routing_key == "payment.refunded"]
    assert_refunded_event(refunded[0], answer["payment"], reason="Wrong address")
    assert gateway_counts(fake, order_id) == {"captured": 1, "refunded": 1}

    failed = event(card="0000")
    await client.publish(failed)
    await client.wait_for([failed["orderId"]])
    code, out, err = await run_command(env, "refund", str(failed["orderId"]))
    assert code != 0, (out, err)
    assert json.loads(out)["outcome"] == "NOT_REFUNDABLE"


# --------------------------------------------------------------------------- crash in the middle of a refund
@pytest.mark.parametrize("point", ["before_refund", "after_refund"])
async def test_a_refund_interrupted_by_kill_is_finished_once(service_process, servers, fake, bus, point: str) -> None:
    env = on_fake(servers, fake)
    doomed = service_process({**env, "PAYMENT_FAULT_INJECT": f"{point}:1", "PORT": str(free_port())})
    await doomed.wait_ready()
    client = await bus(env)
    order_id = await paid(client)
    await client.cancel(order_id)
    assert await doomed.wait_exit(timeout=20) == -9, "the fault point was not reached"
    survivor = service_process({**env, "PORT": str(free_port())})
    await survivor.wait_ready()
    await client.wait_for([order_id], each=2, timeout=30)
    outcomes = await settled(client, order_id, seconds=2.0)
    assert {key for key, _ in outcomes} == {"payment.succeeded", "payment.refunded"}, outcomes
    refunded = [body for key, body in outcomes if key == "payment.refunded"]
    assert len({body["eventId"] for body in refunded}) == 1, "repeats only with the same eventId"
    row = await payment_record(survivor.url, order_id)
    assert row["status"] == "REFUNDED"
    assert_refunded_event(refunded[0], row)
    key = fake.state.keys[f"refund-order-{order_id}"]
    assert key.stored.body["id"] == row["refundId"]
    assert gateway_counts(fake, order_id) == {"captured": 1, "refunded": 1}
    if point == "after_refund":  # the gateway refunded, the crash hid it: the retry got the stored answer
        assert key.seen >= 2 and key.statuses[0] == 200
