"""Tracing (OpenTelemetry): one trace per payment across the saga.

When `OTEL_EXPORTER_OTLP_ENDPOINT` is set, spans are exported over OTLP, on gRPC or HTTP
(`settings.otlp_protocol`: as `OTEL_EXPORTER_OTLP_PROTOCOL` says, else gRPC for an endpoint on
port 4317, the collector's gRPC port, as the Foodies cluster configures it). FastStream's
`RabbitTelemetryMiddleware` opens the consume span, continuing the W3C `traceparent` header
of the incoming message (the Kotlin ordering service sends one when it traces), and injects
a `traceparent` of the same trace into what the broker publishes while handling it (the
parked copy in `.dlq`). The outcome event goes out on its own connection
(`app/messaging/outbound.py`), which opens a PRODUCER span and sends its `traceparent` the
same way. Between the two, a `charge` span covers the gateway call with all its retries;
each attempt and each scheduled retry is an event on it.

Unset: no tracer provider, no middleware, no wrapper; the hot path does not change.
"""

from __future__ import annotations

import asyncio
import os
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from app.domain import ChargeResult
from app.gateway.base import ChargeRequest

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Tracer

    from app.config import Settings
    from app.gateway.base import RefundRequest, RefundResult
    from app.service.payments import Charger

TRACES_PATH = "/v1/traces"
TRACER_NAME = "app.payment"
TECHNICAL_FAILURES = frozenset({"GATEWAY_ERROR", "TIMEOUT", "UNKNOWN"})


def traces_endpoint(base: str) -> str:
    """`OTEL_EXPORTER_OTLP_ENDPOINT` is the collector's base URL (`http://collector:4318`);
    traces go to `<base>/v1/traces`, as the OpenTelemetry specification defines it."""
    base = base.strip().rstrip("/")
    return base if base.endswith(TRACES_PATH) else base + TRACES_PATH


def provider_from_settings(settings: Settings) -> TracerProvider | None:
    """A tracer provider exporting over OTLP (gRPC or HTTP), or None when no endpoint is configured.

    The exporter reads the standard `OTEL_EXPORTER_OTLP_*` variables for what is not set here
    (headers, timeout, compression, certificates); `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, when
    set, wins over the base endpoint. Sampling follows `OTEL_TRACES_SAMPLER` (default: parent
    based, always on)."""
    if not settings.otel_exporter_otlp_endpoint:
        return None
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: settings.otel_service_name}))
    provider.add_span_processor(BatchSpanProcessor(span_exporter(settings)))
    return provider


def span_exporter(settings: Settings) -> SpanExporter:
    """The OTLP span exporter for `settings.otlp_protocol`."""
    base = settings.otel_exporter_otlp_endpoint or ""
    own_traces_endpoint = bool(os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
    if settings.otlp_protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter

        if own_traces_endpoint:
            return GrpcSpanExporter()
        # gRPC has no URL path: the endpoint is used as given; plain text for http://, TLS
        # for https:// (the collector in the cluster listens in plain text on 4317).
        return GrpcSpanExporter(endpoint=base.strip(), insecure=urlsplit(base.strip()).scheme == "http")
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter

    return HttpSpanExporter(endpoint=None if own_traces_endpoint else traces_endpoint(base))


async def shutdown_tracing(provider: TracerProvider) -> None:
    """Export the spans still buffered and stop the exporter (off the event loop: it blocks)."""
    await asyncio.to_thread(provider.shutdown)


def broker_middleware(provider: TracerProvider) -> object:
    """FastStream's telemetry middleware: consume and publish spans, `traceparent` in and out."""
    from faststream.rabbit.opentelemetry import RabbitTelemetryMiddleware

    return RabbitTelemetryMiddleware(tracer_provider=provider)


class TracedCharger:
    """A `charge` span around one charge (all its attempts), child of the consume span; a
    `refund` span around a refund."""

    def __init__(self, inner: Charger, tracer: Tracer) -> None:
        self.inner = inner
        self.tracer = tracer

    async def charge(self, request: ChargeRequest) -> ChargeResult:
        with self.tracer.start_as_current_span(
            "charge",
            kind=SpanKind.CLIENT,
            attributes={"payment.order_id": request.order_id, "payment.currency": request.currency},
        ) as span:
            result = await self.inner.charge(request)
            span.set_attribute("payment.gateway.attempts", result.attempts)
            if result.success:
                span.set_attribute("payment.status", "SUCCEEDED")
            else:
                code = result.failure_code.value if result.failure_code else "UNKNOWN"
                span.set_attribute("payment.status", "FAILED")
                span.set_attribute("payment.failure_code", code)
                if code in TECHNICAL_FAILURES:  # a decline is an answer, not an error
                    span.set_status(Status(StatusCode.ERROR, code))
            return result

    async def refund(self, request: RefundRequest) -> RefundResult:
        """A `refund` span around one refund (cancellation or operator request)."""
        with self.tracer.start_as_current_span(
            "refund", kind=SpanKind.CLIENT, attributes={"payment.order_id": request.order_id}
        ) as span:
            result = await self.inner.refund(request)
            span.set_attribute("payment.refund.status", "REFUNDED" if result.success else "DECLINED")
            return result


def instrument_charger(charger: Charger, provider: TracerProvider | None) -> Charger:
    """The charger itself when tracing is off, else wrapped in `charge` and `refund` spans."""
    if provider is None:
        return charger
    return TracedCharger(charger, provider.get_tracer(TRACER_NAME))


def current_span_ids() -> tuple[str, str] | None:
    """(trace id, span id) of the span being recorded now, as hex, for log correlation."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")
