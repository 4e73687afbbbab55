"""The service on the HTTP gateway (the shipped fake): an outage or a revoked key makes orders wait, not fail,
and each order is captured once when the gateway is back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from app.gateway import CircuitState
from app.gateway.fake import RunningFakeGateway, running_fake_gateway
from tests.conftest import bus_for, running_app
from tests.support import event

API_KEY = "sk_test_outage_3be1"


@pytest.fixture
async def fake() -> AsyncIterator[RunningFakeGateway]:
    async with running_fake_gateway(api_key=API_KEY) as running:
        yield running


def on_fake(settings_factory: Callable[..., Any], fake: RunningFakeGateway) -> Any:
    return settings_factory(
        payment_gateway="http",
        payment_gateway_url=fake.url,
        payment_gateway_api_key=API_KEY,
        payment_circuit_open_seconds=1,
        payment_retry_base_delay_ms=10,
        payment_retry_max_delay_ms=50,
    )


@pytest.mark.parametrize("fault", [{"outage_seconds": 2.5}, {"unauthorized_seconds": 2.5}])
async def test_orders_wait_for_the_gateway_and_are_captured_once(
    settings_factory: Callable[..., Any], fake: RunningFakeGateway, fault: dict[str, float]
) -> None:
    settings = on_fake(settings_factory, fake)
    async with running_app(settings) as app, bus_for(settings) as bus:
        states: list[CircuitState] = []
        watch = app.components.breaker
        fake.state.control(fault)
        orders = [event() for _ in range(12)]
        for body in orders:
            await bus.publish(body)
        while not states and not bus.outcomes:
            if watch.state is not CircuitState.CLOSED:
                states.append(watch.state)
            await asyncio.sleep(0.02)
        await bus.wait_for([body["orderId"] for body in orders], timeout=30)
    assert states, "the breaker never left CLOSED during the fault"
    assert {o.routing_key for o in bus.outcomes} == {"payment.succeeded"}
    audit = fake.state.audit()["orders"]
    assert [audit[str(body["orderId"])]["captured"] for body in orders] == [1] * len(orders)
