"""Observability: the /metrics values, the JSON log lines, the trace across consume → charge →
publish, and the Grafana dashboard's queries against a live scrape."""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from prometheus_client.parser import text_string_to_metric_families

from app.config import load_settings
from app.observability.tracing import provider_from_settings, traces_endpoint
from app.persistence.migrate import create_database_if_missing
from tests.conftest import bus_for, running_app
from tests.support import Servers, event

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "kustomize" / "base" / "grafana-dashboard.json"

# Fast retries for the `3333` card; a reconciler that stays out of the way unless asked.
FAST = {"PAYMENT_DELAY_MS": 0, "PAYMENT_RETRY_BASE_DELAY_MS": 10, "PAYMENT_RETRY_MAX_DELAY_MS": 50}
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


# ------------------------------------------------------------------------------ helpers
def parse(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


async def scrape(app: Any) -> Samples:
    response = await app.client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return parse(response.text)


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of the samples named `name` whose labels include `labels`."""
    return sum(v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= set(ls))


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return round(value(after, name, **labels) - value(before, name, **labels), 6)


async def wait_until(condition: Any, timeout: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while True:
        if await condition():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def env_settings(env: dict[str, str]) -> Any:
    return load_settings(**{k.lower(): v for k, v in env.items() if k != "PORT"})


# ------------------------------------------------------------------------------ metrics
async def test_metrics_change_by_exactly_the_expected_amounts(settings_factory) -> None:
    settings = settings_factory(**FAST, RECONCILE_INTERVAL_SECONDS=300)
    ok_1 = event(card="4242", totalAmount="10.00")
    ok_2 = event(card="5555", totalAmount="20.50", currency="EUR")
    declined = event(card="0000", totalAmount="7.00")
    flaky = event(card="3333", totalAmount="5.25")
    async with running_app(settings) as app, bus_for(settings) as bus:
        before = await scrape(app)
        for body in (ok_1, ok_2, declined, flaky):
            await bus.publish(body)
        await bus.publish(b'{"orderId": "not a payment"')
        orders = [ok_1["orderId"], ok_2["orderId"], declined["orderId"], flaky["orderId"]]
        await bus.wait_for(orders, timeout=20)
        await bus.publish(declined)  # the same event again: replayed, not charged
        await bus.wait_for([declined["orderId"]], each=2, timeout=20)
        await wait_until(lambda: _depth_is(bus, settings.dlq_name, 1), what="the parked message")

        async def settled() -> bool:
            current = await scrape(app)
            return (
                delta(before, current, "payment_processing_seconds_count") == 6
                and value(current, "payment_in_flight") == 0
            )

        await wait_until(settled, what="six handled messages")
        after = await scrape(app)

    d = lambda name, **labels: delta(before, after, name, **labels)  # noqa: E731 - a one-line helper
    assert d("payment_processed_total", outcome="succeeded", failure_code="") == 3
    assert d("payment_processed_total", outcome="failed", failure_code="CARD_DECLINED") == 1
    assert d("payment_processed_total", outcome="replayed", failure_code="CARD_DECLINED") == 1
    assert d("payment_processed_total") == 5
    assert d("payment_charged_amount_total", currency="USD") == float(Decimal("10.00") + Decimal("5.25"))
    assert d("payment_charged_amount_total", currency="EUR") == 20.5
    assert d("payment_processing_seconds_count") == 6  # the parked message was handled too
    assert d("payment_gateway_attempts_total", result="ok") == 3
    assert d("payment_gateway_attempts_total", result="declined") == 1
    assert d("payment_gateway_attempts_total", result="transient") == 2
    assert d("payment_gateway_attempts_total", result="timeout") == 0
    assert d("payment_gateway_call_seconds_count") == 6
    assert d("payment_gateway_call_seconds_count", result="transient") == 2
    assert d("payment_gateway_retries_total", result="transient") == 2
    assert d("payment_gateway_retries_total") == 2
    assert d("payment_parked_messages_total", reason="invalid_json") == 1
    assert d("payment_parked_messages_total") == 1
    assert d("payment_outcome_events_published_total", routing_key="payment.succeeded") == 3
    assert d("payment_outcome_events_published_total", routing_key="payment.failed") == 2
    assert d("payment_reconciled_total") == 0
    assert value(after, "payment_in_flight") == 0
    # Six messages consumed: five handled and acknowledged, one parked; none given back.
    queue = settings.rabbitmq_consume_queue
    assert d("payment_consumed_total", queue=queue, result="acked") == 5
    assert d("payment_consumed_total", queue=queue, result="parked") == 1
    assert d("payment_consumed_total") == 6
    assert not any(name.startswith("faststream_") for name, _ in after)  # no FastStream middleware
    # The gauges the reconciler maintains are exported even before its first sweep.
    names = {name for name, _ in after}
    assert {"payment_stuck", "payment_unpublished_outcomes", "payment_unfinished"} <= names


async def _depth_is(bus: Any, queue: str, expected: int) -> bool:
    return await bus.queue_depth(queue) == expected


async def test_metric_labels_are_bounded(settings_factory) -> None:
    """No label carries an order id, a buyer id, an event id or a free-text reason."""
    settings = settings_factory(**FAST, RECONCILE_INTERVAL_SECONDS=300)
    bodies = [event(card=card) for card in ("4242", "0000", "1111", "7777")]
    async with running_app(settings) as app, bus_for(settings) as bus:
        for body in bodies:
            await bus.publish(body)
        await bus.publish(json.dumps(event(orderId=-1)).encode())
        await bus.wait_for([b["orderId"] for b in bodies], timeout=20)
        await wait_until(lambda: _depth_is(bus, settings.dlq_name, 1), what="the parked message")
        text = (await app.client.get("/metrics")).text
    ids = {str(b["orderId"]) for b in bodies} | {b["eventId"] for b in bodies} | {"user-uuid-123", "-1"}
    allowed = {
        "outcome": {"succeeded", "failed", "replayed", "refunded"},
        "failure_code": {
            "",
            "INSUFFICIENT_FUNDS",
            "CARD_DECLINED",
            "CARD_EXPIRED",
            "INVALID_CARD",
            "FRAUD_SUSPECTED",
            "GATEWAY_ERROR",
            "TIMEOUT",
            "UNKNOWN",
        },
        # gateway attempts; what became of a consumed message (payment_consumed_total)
        "result": {"ok", "declined", "transient", "timeout", "unusable", "acked", "parked", "requeued"},
        "queue": {settings.rabbitmq_consume_queue, settings.rabbitmq_cancel_queue},
        "reason": {
            "invalid_json",
            "not_an_object",
            "missing_order_id",
            "invalid_order_id",
            "duplicate_key",
            "too_large",
            "processing_error",
        },
        "routing_key": {"payment.succeeded", "payment.failed", "payment.refunded"},
        "action": {"charged", "republished", "refunded", "expired"},
        "case": {"before_charge", "in_flight", "after_success", "final"},
    }
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            for label, label_value in sample.labels.items():
                assert label_value not in ids, f"{sample.name}{{{label}={label_value!r}}}"
                if family.name.startswith("payment_") and label in allowed:
                    assert label_value in allowed[label], f"{sample.name}{{{label}={label_value!r}}}"
                if label == "currency":
                    assert re.fullmatch(r"[A-Z]{3}", label_value)


# --------------------------------------------------------------------------------- logs
@pytest.fixture
async def private_database(servers: Servers) -> AsyncIterator[str]:
    """A database of its own, so that no leftover payment of another test keeps this service's
    reconciler busy, and no other service's reconciler takes this test's payments."""
    name = f"payments_obs_{uuid.uuid4().hex[:10]}"
    await create_database_if_missing(servers.db_admin_dsn, name)
    yield name
    connection = await asyncpg.connect(servers.db_admin_dsn)
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()


async def test_json_log_lines_carry_the_lifecycle_fields_and_never_the_card_holder(
    service_process: Any, servers: Servers, private_database: str
) -> None:
    holder = f"Zebedee Quux-{uuid.uuid4().hex[:8]}"
    token = f"admin-{uuid.uuid4().hex}"
    overrides: dict[str, Any] = {
        **FAST,
        "LOG_LEVEL": "DEBUG",
        "LOG_FORMAT": "json",
        "ADMIN_TOKEN": token,
        "RECONCILE_INTERVAL_SECONDS": "1",
        "DB_URL": f"jdbc:postgresql://{servers.db_host}:{servers.db_port}/{private_database}",
    }
    db_password = None
    if servers.db_password is None:  # trust authentication: any password is accepted, none may be logged
        db_password = overrides["DB_PASSWORD"] = f"db-{uuid.uuid4().hex}"
    env = servers.env(**overrides)
    settings = env_settings(env)

    def with_holder(card: str) -> dict[str, Any]:
        body = event(card=card)
        body["paymentMethod"]["cardHolderName"] = holder
        return body

    ok, declined, flaky = with_holder("4242"), with_holder("0000"), with_holder("3333")
    invalid = with_holder("4242")
    del invalid["orderId"]  # parked: no order to give an outcome to
    service = service_process(env)
    await service.wait_ready()
    db = await asyncpg.connect(settings.postgres_dsn())
    async with bus_for(settings) as bus:
        try:
            for body in (ok, declined, flaky, invalid):
                await bus.publish(body)
            await bus.wait_for([ok["orderId"], declined["orderId"], flaky["orderId"]], timeout=20)
            await bus.publish(declined)  # replayed
            await bus.wait_for([declined["orderId"]], each=2, timeout=20)

            # An outcome whose publication was never confirmed: the reconciler re-publishes it.
            async def marked() -> bool:
                return await db.fetchval(
                    "SELECT published_at IS NOT NULL FROM payments WHERE order_id = $1", ok["orderId"]
                )

            await wait_until(marked, what="the published mark")
            await db.execute(
                "UPDATE payments SET published_at = NULL, processed_at = processed_at - interval '1 minute' "
                "WHERE order_id = $1",
                ok["orderId"],
            )
            await bus.wait_for([ok["orderId"]], each=2, timeout=20)
            service.terminate()
            assert await service.wait_exit() == 0
        finally:
            await bus.delete(settings.rabbitmq_consume_queue, settings.dlq_name)
            await db.close()

    raw = service.log_path.read_text()
    assert holder not in raw
    assert token not in raw
    if db_password:
        assert db_password not in raw
    lines = [json.loads(line) for line in raw.splitlines() if line.strip()]  # every line is JSON
    for line in lines:
        assert {"time", "level", "message", "logger"} <= set(line), line
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["time"]), line["time"]

    def find(message: str, **fields: Any) -> list[dict[str, Any]]:
        return [
            line
            for line in lines
            if line["message"].startswith(message) and all(line.get(k) == v for k, v in fields.items())
        ]

    def one(message: str, level: str, keys: set[str], **fields: Any) -> dict[str, Any]:
        found = find(message, **fields)
        assert len(found) == 1, f"{message!r} {fields}: {len(found)} lines"
        assert found[0]["level"] == level, found[0]
        assert keys <= set(found[0]), (keys - set(found[0]), found[0])
        return found[0]

    lifecycle = {"event_id", "order_id"}
    started = one("starting payment service", "INFO", {"settings"})
    assert started["settings"]["admin_token"] == "***"
    for body in (ok, declined, flaky):
        assert len(find("received", order_id=body["orderId"])) >= 1
        assert find("received", order_id=body["orderId"])[0]["level"] == "DEBUG"
    one("charge attempt", "DEBUG", lifecycle | {"attempt", "duration_ms"}, order_id=ok["orderId"])
    succeeded = one(
        "payment succeeded", "INFO", lifecycle | {"payment_id", "status", "duration_ms"}, order_id=ok["orderId"]
    )
    assert succeeded["status"] == "SUCCEEDED" and succeeded["event_id"] == ok["eventId"]
    failed = one(
        "payment failed",
        "WARNING",
        lifecycle | {"payment_id", "status", "failure_code", "duration_ms"},
        order_id=declined["orderId"],
    )
    assert failed["failure_code"] == "CARD_DECLINED" and failed["status"] == "FAILED"
    replayed = one(
        "already processed", "INFO", lifecycle | {"payment_id", "status", "failure_code"}, order_id=declined["orderId"]
    )
    assert replayed["failure_code"] == "CARD_DECLINED"
    retries = find("charge attempt failed", order_id=flaky["orderId"])
    assert [(r["level"], r["attempt"]) for r in retries] == [("WARNING", 1), ("WARNING", 2)]
    assert all(lifecycle <= set(r) for r in retries)
    attempts = find("charge attempt", order_id=flaky["orderId"])
    assert [a["attempt"] for a in attempts if a["message"] == "charge attempt"] == [1, 2, 3]
    one("payment succeeded", "INFO", lifecycle | {"payment_id", "status", "duration_ms"}, order_id=flaky["orderId"])
    published = find("published payment.failed", order_id=declined["orderId"])
    assert len(published) == 2 and {p["level"] for p in published} == {"DEBUG"}
    assert all({"payment_id", "routing_key"} <= set(p) for p in published)
    parked = one("parked message", "ERROR", {"reason", "category", "dlq"})
    assert parked["reason"] == "Missing orderId" and parked["category"] == "missing_order_id"
    reconciled = one("reconciled: re-published", "INFO", {"order_id", "payment_id", "status"}, order_id=ok["orderId"])
    assert reconciled["status"] == "SUCCEEDED"
    one("shutdown complete", "INFO", set())
    assert find("shutting down")[0]["level"] == "INFO"
    # Standard-library loggers go through the same sink and format.
    assert {"uvicorn.error", "faststream", "alembic.runtime.migration"} <= {line["logger"] for line in lines}
    # At INFO a payment is one line (plus one warning per retry).
    for body, expected in ((ok, 1), (declined, 2), (flaky, 3)):
        info = [
            line
            for line in lines
            if line.get("order_id") == body["orderId"]
            and line["level"] != "DEBUG"
            and not line["message"].startswith("reconciled")
        ]
        assert len(info) == expected, info


async def test_probe_and_scrape_access_lines_stay_below_info(service_process: Any) -> None:
    service = service_process(log_level="INFO", log_format="json")
    await service.wait_ready()
    import httpx

    async with httpx.AsyncClient() as client:
        for path in ("/metrics", "/healthz/liveness", "/healthz/readiness", "/healthz", "/payments/1"):
            await client.get(service.url + path)
    service.terminate()
    assert await service.wait_exit() == 0
    access = [line for line in service.log_lines() if line.get("logger") == "uvicorn.access"]
    assert [line["message"].split('"')[1] for line in access] == ["GET /payments/1 HTTP/1.1"]


async def test_text_format_is_one_readable_line(service_process: Any) -> None:
    service = service_process(log_level="INFO", log_format="text")
    await service.wait_ready()
    service.terminate()
    assert await service.wait_exit() == 0
    text = service.log_path.read_text().splitlines()
    started = [line for line in text if "starting payment service" in line]
    assert len(started) == 1
    timestamp = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}Z"
    assert re.match(timestamp + r" \| INFO +\| app\.lifecycle \| starting payment service", started[0])
    assert not any(line.lstrip().startswith("{") for line in text)


# ------------------------------------------------------------------------------ tracing
INCOMING_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
INCOMING_PARENT = "00f067aa0ba902b7"


async def test_one_trace_from_consume_through_charge_to_publish(settings_factory) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    settings = settings_factory(**FAST)
    flaky = event(card="3333")
    async with running_app(settings, tracer_provider=provider) as app, bus_for(settings) as bus:
        await bus.publish(flaky, headers={"traceparent": f"00-{INCOMING_TRACE}-{INCOMING_PARENT}-01"})
        await bus.wait_for([flaky["orderId"]], timeout=20)
        [outcome] = bus.for_order(flaky["orderId"])
        assert app.components.settings.otel_exporter_otlp_endpoint is None  # a test provider, no exporter

    version, trace_id, parent_id, flags = outcome.headers["traceparent"].split("-")
    assert (version, trace_id, flags) == ("00", INCOMING_TRACE, "01")

    spans = [s for s in exporter.get_finished_spans() if format(s.context.trace_id, "032x") == INCOMING_TRACE]
    by_id = {format(s.context.span_id, "016x"): s for s in spans}
    [process] = [s for s in spans if s.kind is SpanKind.CONSUMER and s.name.endswith(" process")]
    assert format(process.parent.span_id, "016x") == INCOMING_PARENT  # continues the caller's trace
    assert process.parent.is_remote
    [charge] = [s for s in spans if s.name == "charge"]
    assert charge.parent.span_id == process.context.span_id
    assert charge.attributes["payment.order_id"] == flaky["orderId"]
    assert charge.attributes["payment.gateway.attempts"] == 3
    events = [(e.name, e.attributes.get("attempt"), e.attributes.get("result")) for e in charge.events]
    assert events == [
        ("gateway attempt", 1, "transient"),
        ("retry scheduled", 1, "transient"),
        ("gateway attempt", 2, "transient"),
        ("retry scheduled", 2, "transient"),
        ("gateway attempt", 3, "ok"),
    ]
    publishes = [s for s in spans if s.kind is SpanKind.PRODUCER and "payment.succeeded" in s.name]
    assert publishes, [s.name for s in spans]
    # The outgoing traceparent names a span of this trace, below the consume span.
    assert parent_id in by_id
    ancestor = by_id[parent_id]
    while ancestor.parent is not None and format(ancestor.parent.span_id, "016x") in by_id:
        ancestor = by_id[format(ancestor.parent.span_id, "016x")]
    assert ancestor is process


async def test_a_message_without_traceparent_starts_a_trace(settings_factory) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    settings = settings_factory(**FAST)
    body = event(card="0000")
    async with running_app(settings, tracer_provider=provider), bus_for(settings) as bus:
        await bus.publish(body)
        await bus.wait_for([body["orderId"]], timeout=20)
    [outcome] = bus.for_order(body["orderId"])
    trace_id = outcome.headers["traceparent"].split("-")[1]
    names = {s.name for s in exporter.get_finished_spans() if format(s.context.trace_id, "032x") == trace_id}
    assert "charge" in names and any(n.endswith(" process") for n in names)
    [charge] = [
        s
        for s in exporter.get_finished_spans()
        if s.name == "charge" and format(s.context.trace_id, "032x") == trace_id
    ]
    assert charge.attributes["payment.failure_code"] == "CARD_DECLINED"
    assert charge.status.is_ok  # a decline is an answer, not an error


async def test_tracing_off_adds_no_middleware_and_no_header(settings_factory) -> None:
    settings = settings_factory(**FAST)
    assert provider_from_settings(settings) is None
    body = event()
    async with running_app(settings) as app, bus_for(settings) as bus:
        kinds = {type(m).__name__ for m in app.components.broker.middlewares}
        assert "RabbitTelemetryMiddleware" not in kinds
        assert app.components.payments.charger.__class__.__name__ == "RetryingCharger"
        await bus.publish(body, headers={"traceparent": f"00-{INCOMING_TRACE}-{INCOMING_PARENT}-01"})
        await bus.wait_for([body["orderId"]], timeout=20)
    [outcome] = bus.for_order(body["orderId"])
    assert "traceparent" not in outcome.headers


class _Collector:
    """A minimal OTLP/HTTP trace collector on 127.0.0.1: records every export request."""

    def __init__(self) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
            ExportTraceServiceResponse,
        )

        self.requests: list[tuple[str, Any]] = []
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                collector.requests.append((self.path, request))
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def spans(self) -> list[tuple[dict[str, Any], Any]]:
        """(resource attributes, span) for every span received."""
        found = []
        for _, request in self.requests:
            for resource_spans in request.resource_spans:
                resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
                for scope_spans in resource_spans.scope_spans:
                    found.extend((resource, span) for span in scope_spans.spans)
        return found

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


async def test_the_service_exports_the_trace_over_otlp_http(service_process: Any, servers: Servers) -> None:
    collector = _Collector()
    try:
        env = servers.env(
            **FAST,
            OTEL_EXPORTER_OTLP_ENDPOINT=collector.url,
            OTEL_SERVICE_NAME="payment-otel-test",
            OTEL_BSP_SCHEDULE_DELAY="100",
        )
        settings = env_settings(env)
        service = service_process(env)
        await service.wait_ready()
        body = event(card="0000")
        async with bus_for(settings) as bus:
            try:
                await bus.publish(body, headers={"traceparent": f"00-{INCOMING_TRACE}-{INCOMING_PARENT}-01"})
                await bus.wait_for([body["orderId"]], timeout=20)

                async def exported() -> bool:
                    return any(span.name == "charge" for _, span in collector.spans())

                await wait_until(exported, what="the exported charge span")
            finally:
                await bus.delete(settings.rabbitmq_consume_queue, settings.dlq_name)
        service.terminate()
        assert await service.wait_exit() == 0
        [outcome] = bus.for_order(body["orderId"])
        assert outcome.headers["traceparent"].split("-")[1] == INCOMING_TRACE
        assert {path for path, _ in collector.requests} == {"/v1/traces"}
        ours = [(r, s) for r, s in collector.spans() if s.trace_id.hex() == INCOMING_TRACE]
        assert {r["service.name"] for r, _ in ours} == {"payment-otel-test"}
        names = {s.name for _, s in ours}
        assert "charge" in names and any(n.endswith(" process") for n in names)
        assert any(n.endswith("payment.failed publish") for n in names), names
        # The JSON log line of the decline carries the trace id.
        [failed] = [line for line in service.log_lines() if line["message"].startswith("payment failed")]
        assert failed["trace_id"] == INCOMING_TRACE
    finally:
        collector.close()


def test_otlp_endpoint_setting_builds_an_http_exporter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    assert traces_endpoint("http://collector:4318") == "http://collector:4318/v1/traces"
    assert traces_endpoint("http://collector:4318/") == "http://collector:4318/v1/traces"
    assert traces_endpoint("https://otel.example/v1/traces") == "https://otel.example/v1/traces"
    settings = load_settings(otel_exporter_otlp_endpoint="http://collector:4318", otel_service_name="payments-eu")
    provider = provider_from_settings(settings)
    assert provider is not None
    try:
        assert provider.resource.attributes["service.name"] == "payments-eu"
        [processor] = provider._active_span_processor._span_processors
        exporter = processor._batch_processor._exporter
        assert exporter._endpoint == "http://collector:4318/v1/traces"
    finally:
        provider.shutdown()


def test_a_bad_otlp_endpoint_is_a_configuration_error() -> None:
    from app.config import ConfigurationError

    with pytest.raises(ConfigurationError, match="OTEL_EXPORTER_OTLP_ENDPOINT"):
        load_settings(otel_exporter_otlp_endpoint="collector:4318")


# ---------------------------------------------------------------------------- dashboard
PROMQL_WORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "inf",
    "nan",
}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (functions, keywords, labels left out)."""
    expr = re.sub(r'"(?:\\.|[^"\\])*"', "", expr)
    expr = re.sub(r"\{[^}]*\}", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    names = set()
    for match in re.finditer(r"(?<![\w.$])[A-Za-z_:][\w:]*", expr):
        rest = expr[match.end() :].lstrip()
        if rest.startswith("(") or match.group() in PROMQL_WORDS:
            continue
        names.add(match.group())
    return names


def exported_names(text: str) -> set[str]:
    """Every series name the exposition defines, including labelled families without samples yet."""
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
        "summary": ("_sum", "_count", "_created"),
        "gauge": ("",),
    }
    names = set()
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        names.update(family.name + suffix for suffix in suffixes.get(family.type, ("",)))
        names.update(sample.name for sample in family.samples)
    return names


def dashboard_queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    queries = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            for target in panel.get("targets", []):
                queries.append((panel["title"], target["expr"]))
            walk(panel.get("panels", []))

    walk(dashboard["panels"])
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") == "query":
            query = variable["query"] if isinstance(variable["query"], str) else variable["query"]["query"]
            queries.append((f"${variable['name']}", re.sub(r"^label_values\((.*),\s*\w+\)$", r"\1", query)))
    return queries


def test_promql_name_extraction() -> None:
    assert metric_names('sum by (outcome) (rate(payment_processed_total{outcome="failed"}[$__rate_interval]))') == {
        "payment_processed_total"
    }
    assert metric_names("histogram_quantile(0.99, sum by (le) (rate(a_bucket[5m]))) / clamp_min(b, 1e-9)") == {
        "a_bucket",
        "b",
    }


async def test_dashboard_queries_only_reference_exported_metrics(settings_factory) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    queries = dashboard_queries(dashboard)
    assert len(queries) >= 10
    titles = " ".join(title.lower() for title, _ in queries)
    for topic in (
        "throughput",
        "failures by code",
        "processing time",
        "gateway call time",
        "retries",
        "parked",
        "stuck",
    ):
        assert topic in titles, f"no panel about {topic}"
    settings = settings_factory(**FAST, RECONCILE_INTERVAL_SECONDS=300)
    bodies = [event(card="4242"), event(card="0000"), event(card="3333")]
    async with running_app(settings) as app, bus_for(settings) as bus:
        for body in bodies:
            await bus.publish(body)
        await bus.publish(b"not json")
        await bus.wait_for([b["orderId"] for b in bodies], timeout=20)
        await wait_until(lambda: _depth_is(bus, settings.dlq_name, 1), what="the parked message")
        exported = exported_names((await app.client.get("/metrics")).text)
    for title, expr in queries:
        names = metric_names(expr)
        assert names, f"{title}: no metric in {expr!r}"
        assert names <= exported, f"{title}: {sorted(names - exported)} not exported ({expr!r})"
    used = set().union(*(metric_names(expr) for _, expr in queries))
    assert {
        "payment_processed_total",
        "payment_processing_seconds_bucket",
        "payment_gateway_call_seconds_bucket",
        "payment_gateway_retries_total",
        "payment_parked_messages_total",
        "payment_stuck",
    } <= used
