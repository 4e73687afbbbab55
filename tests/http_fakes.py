"""Stand-ins for the HTTP layer's collaborators (payment reader, refunds, parking lots) and a
client on the HTTP app built by `create_http_app`, for tests that need no servers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from types import SimpleNamespace
from typing import Any

import httpx

from app.domain import CardBrand, Payment, PaymentMethod, PaymentMethodType, PaymentStatus
from app.http.auth import Authenticator, StaticTokenAuth
from app.http.probes import Health
from app.http.routes import create_http_app
from app.messaging.dlq import LOT_ROLES, DlqListing, ParkedMessage, ReplayResult, UnknownLot
from app.observability.metrics import PaymentMetrics


def payment(order_id: int = 42, status: PaymentStatus = PaymentStatus.SUCCEEDED, **fields: Any) -> Payment:
    made = Payment(
        id=order_id + 1000,
        order_id=order_id,
        buyer_id="buyer-1",
        amount=Decimal("49.99"),
        currency="USD",
        status=status,
        payment_method=PaymentMethod(
            PaymentMethodType.CREDIT_CARD, "4242", CardBrand.VISA, "John Doe", expiration_month=12, expiration_year=2030
        ),
        created_at=datetime(2024, 1, 15, 10, 30, tzinfo=UTC),
        transaction_id="txn_1" if status is PaymentStatus.SUCCEEDED else None,
    )
    return replace(made, **fields)


@dataclass
class FakeReader:
    payments: dict[int, Payment] = field(default_factory=dict)
    failure: BaseException | None = None
    calls: list[dict[str, Any]] = field(default_factory=list)

    async def find_by_id(self, payment_id: int) -> Payment | None:
        return next((p for p in self.payments.values() if p.id == payment_id), None)

    async def find_by_order_id(self, order_id: int) -> Payment | None:
        return self.payments.get(order_id)

    async def list(self, **query: Any) -> list[Payment]:
        self.calls.append(query)
        if self.failure is not None:
            raise self.failure
        return list(self.payments.values())[: query["limit"]]


class Outcome(StrEnum):  # the service layer's RefundOutcome values
    REFUNDED = "REFUNDED"
    NOT_FOUND = "NOT_FOUND"
    NOT_REFUNDABLE = "NOT_REFUNDABLE"
    DECLINED = "DECLINED"
    UNAVAILABLE = "UNAVAILABLE"


@dataclass
class FakeRefunds:
    outcome: Outcome = Outcome.REFUNDED
    message: str = "refunded"
    calls: list[tuple[int, str | None]] = field(default_factory=list)

    async def refund(self, order_id: int, reason: str | None) -> Any:
        self.calls.append((order_id, reason))
        refunded = payment(order_id, PaymentStatus.REFUNDED, refund_id="re_1", refunded_at=datetime.now(UTC))
        return SimpleNamespace(outcome=self.outcome, payment=refunded, message=self.message)


@dataclass
class FakeLots:
    queues: tuple[str, ...] = ("payment.stock-confirmed", "payment.order-cancelled")
    calls: list[tuple[str, int | None, str | None]] = field(default_factory=list)

    def _name(self, queue: str | None) -> str:
        if queue is None:
            return self.queues[0]
        for role, name in zip(LOT_ROLES, self.queues, strict=True):
            if queue in (role, name, f"{name}.dlq"):
                return name
        raise UnknownLot(f"queue must be one of {', '.join(self.queues)}")

    async def list(self, limit: int = 100, queue: str | None = None) -> DlqListing:
        name = self._name(queue)
        self.calls.append(("list", limit, queue))
        parked = ParkedMessage(
            "invalid JSON", "invalid_json", "2024-01-15T10:30:00.000Z", 3, "abc", None, None, None, 0
        )
        return DlqListing(f"{name}.dlq", 1, [parked][:limit])

    async def replay(self, limit: int | None = None, queue: str | None = None) -> ReplayResult:
        name = self._name(queue)
        self.calls.append(("replay", limit, queue))
        return ReplayResult(f"{name}.dlq", name, 1 if limit is None else min(limit, 1), 0)


async def always_up() -> bool:
    return True


def http_app(
    *,
    reader: FakeReader | None = None,
    repository: Any = None,
    tokens: tuple[str, ...] = (),
    rate: float = 1000.0,
    **parts: Any,
) -> Any:
    """The HTTP app on stand-ins (or on `repository()`, a real one), started, rate-limited at `rate`."""
    health = parts.pop("health", None) or Health(database=always_up, broker=always_up, consumers_ok=lambda: True)
    health.started = True
    fake = reader or FakeReader({42: payment(42)})
    return create_http_app(
        health=health,
        metrics=parts.pop("metrics", None) or PaymentMetrics(),
        repository=repository or (lambda: fake),
        auth=Authenticator(StaticTokenAuth(tokens)),
        settings=SimpleNamespace(admin_rate_limit=rate),
        **parts,
    )


@asynccontextmanager
async def client_of(app: Any, client: tuple[str, int] = ("10.0.0.1", 5000)) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, client=client)
    async with httpx.AsyncClient(transport=transport, base_url="http://payment") as http:
        yield http
