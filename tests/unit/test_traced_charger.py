"""The tracing wrapper of the charger: a span per charge and per refund, answers passed through."""

from __future__ import annotations

from decimal import Decimal

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from app.gateway.base import RefundRequest, RefundResult
from app.observability.tracing import TRACER_NAME, TracedCharger


class _RefundingCharger:
    def __init__(self, answer: RefundResult) -> None:
        self.answer = answer
        self.requests: list[RefundRequest] = []

    async def charge(self, request: object) -> object:
        raise AssertionError("not charged in these tests")

    async def refund(self, request: RefundRequest) -> RefundResult:
        self.requests.append(request)
        return self.answer


def _request(order_id: int) -> RefundRequest:
    return RefundRequest(f"refund-order-{order_id}", order_id, "txn-1", Decimal("49.99"), "USD", "cancelled")


async def test_a_refund_is_delegated_inside_a_refund_span() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    for order_id, answer, status in ((7, RefundResult.refunded("re_1"), "REFUNDED"),
                                     (8, RefundResult.declined("too late"), "DECLINED")):  # fmt: skip
        inner = _RefundingCharger(answer)
        traced = TracedCharger(inner, provider.get_tracer(TRACER_NAME))  # type: ignore[arg-type]  # a partial fake
        assert await traced.refund(_request(order_id)) is answer
        assert [r.order_id for r in inner.requests] == [order_id]
        span = exporter.get_finished_spans()[-1]
        assert span.name == "refund"
        assert span.attributes["payment.order_id"] == order_id
        assert span.attributes["payment.refund.status"] == status
