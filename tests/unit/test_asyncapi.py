"""asyncapi.yaml is what the code generates (regenerate: see README "Events")."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def test_committed_asyncapi_matches_the_code(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "DB_", "PAYMENT_"))}
    out = tmp_path / "asyncapi.yaml"
    subprocess.run(
        [str(Path(sys.executable).parent / "faststream"), "docs", "gen", "--yaml", "app.bootstrap:app", "--out", str(out)],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        timeout=120,
    )
    assert out.read_text() == (ROOT / "asyncapi.yaml").read_text(), (
        "asyncapi.yaml is stale: run `.venv/bin/faststream docs gen --yaml app.bootstrap:app --out asyncapi.yaml`"
    )


def test_asyncapi_names_the_topology_and_payloads() -> None:
    spec = yaml.safe_load((ROOT / "asyncapi.yaml").read_text())
    channels = spec["channels"].values()
    addresses = {c["address"] for c in channels}
    assert {"order.stock-confirmed", "payment.succeeded", "payment.failed"} <= addresses
    text = (ROOT / "asyncapi.yaml").read_text()
    assert "name: payment.stock-confirmed" in text and "name: foodies" in text
    schemas = spec["components"]["schemas"]
    assert {"OrderStockConfirmedEvent", "OrderPaymentSucceededEvent", "OrderPaymentFailedEvent"} <= set(schemas)
    assert set(schemas["OrderPaymentSucceededEvent"]["properties"]) == {
        "eventId", "orderId", "paymentId", "transactionId", "amount", "currency", "processedAt"
    }
    assert set(schemas["OrderPaymentFailedEvent"]["properties"]) == {
        "eventId", "orderId", "failureReason", "failureCode", "occurredAt"
    }
