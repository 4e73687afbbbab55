"""asyncapi.yaml is what the code generates, whatever the checkout path or the environment
(regenerate: `.venv/bin/python -m app.messaging.asyncapi --out asyncapi.yaml`)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from app.messaging.asyncapi import canonical
from tests.support import REFUNDED_KEYS

ROOT = Path(__file__).resolve().parents[2]
REGENERATE = "run `.venv/bin/python -m app.messaging.asyncapi --out asyncapi.yaml`"


def generate(cwd: Path, **extra_env: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "DB_", "PAYMENT_"))}
    env.update(extra_env)
    done = subprocess.run(
        [sys.executable, "-m", "app.messaging.asyncapi"], cwd=cwd, env=env, check=True, capture_output=True, timeout=120
    )
    return done.stdout.decode()


def test_committed_asyncapi_matches_the_code(tmp_path: Path) -> None:
    committed = (ROOT / "asyncapi.yaml").read_text()
    generated = generate(tmp_path)  # another working directory than the checkout
    assert yaml.safe_load(generated) == yaml.safe_load(committed), f"asyncapi.yaml is stale: {REGENERATE}"
    assert generated == committed, f"asyncapi.yaml is not in canonical order: {REGENERATE}"


def test_generation_ignores_the_environment_and_the_size_of_it(tmp_path: Path) -> None:
    padding = {f"PADDING_{i}": "x" * i for i in range(300)}  # moves object addresses around
    assert generate(tmp_path, RABBITMQ_PUBLISH_EXCHANGE="elsewhere", **padding) == generate(ROOT)


def test_canonical_order_sorts_every_mapping() -> None:
    assert list(canonical({"b": 1, "a": {"d": 2, "c": [{"f": 1, "e": 2}]}})) == ["a", "b"]
    assert list(canonical({"a": {"c": [{"f": 1, "e": 2}]}})["a"]["c"][0]) == ["e", "f"]


def test_asyncapi_names_the_topology_and_payloads() -> None:
    spec = yaml.safe_load((ROOT / "asyncapi.yaml").read_text())
    addresses = {c["address"] for c in spec["channels"].values()}
    assert {"order.stock-confirmed", "order.cancelled", "payment.succeeded", "payment.failed", "payment.refunded"} <= (
        addresses
    )
    text = (ROOT / "asyncapi.yaml").read_text()
    assert (
        "name: payment.stock-confirmed" in text and "name: payment.order-cancelled" in text and "name: foodies" in text
    )
    schemas = spec["components"]["schemas"]
    assert {"OrderStockConfirmedEvent", "OrderCancelledEvent", "PaymentRefundedEvent"} <= set(schemas)
    assert set(schemas["OrderPaymentSucceededEvent"]["properties"]) == {
        "eventId",
        "orderId",
        "paymentId",
        "transactionId",
        "amount",
        "currency",
        "processedAt",
    }
    assert set(schemas["OrderPaymentFailedEvent"]["properties"]) == {
        "eventId",
        "orderId",
        "failureReason",
        "failureCode",
        "occurredAt",
    }
    assert set(schemas["PaymentRefundedEvent"]["properties"]) == REFUNDED_KEYS
