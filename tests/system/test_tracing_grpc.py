"""Traces over OTLP/gRPC as the Foodies cluster receives them: the real service, given only an
endpoint on port 4317 (no protocol), exports the payment's spans to a gRPC trace receiver."""

from __future__ import annotations

import asyncio
import random
import secrets
import socket
import threading
import time
from concurrent import futures
from contextlib import closing
from typing import Any

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from app.config import load_settings
from tests.conftest import bus_for
from tests.support import Servers, event

OTLP_GRPC_PORT = 4317  # the collector's gRPC port: with no protocol set, the service infers gRPC from it


def _loopback_address_with_free_otlp_port() -> str:
    """127.0.0.1, or another address of the loopback network (Linux routes all of 127/8 there)
    when something on this machine already listens on 127.0.0.1:4317."""
    candidates = ["127.0.0.1"] + [f"127.{random.randint(1, 254)}.{random.randint(1, 254)}.{random.randint(2, 254)}"
                                  for _ in range(20)]  # fmt: skip
    for address in candidates:
        with closing(socket.socket()) as probe:
            try:
                probe.bind((address, OTLP_GRPC_PORT))
            except OSError:
                continue
            return address
    pytest.fail(f"no loopback address with port {OTLP_GRPC_PORT} free")


class GrpcTraceReceiver(trace_service_pb2_grpc.TraceServiceServicer):
    """The trace service of an OTLP/gRPC collector: records every export request."""

    def __init__(self) -> None:
        self.requests: list[trace_service_pb2.ExportTraceServiceRequest] = []
        self.user_agents: list[str] = []
        self._lock = threading.Lock()
        self.address = _loopback_address_with_free_otlp_port()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(self, self.server)
        self.server.add_insecure_port(f"{self.address}:{OTLP_GRPC_PORT}")
        self.server.start()
        self.endpoint = f"http://{self.address}:{OTLP_GRPC_PORT}"

    def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: grpc.ServicerContext
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        with self._lock:
            self.requests.append(request)
            self.user_agents += [value for key, value in context.invocation_metadata() if key == "user-agent"]
        return trace_service_pb2.ExportTraceServiceResponse()

    def spans(self) -> list[tuple[dict[str, str], Any]]:
        """(resource attributes, span) for every span received."""
        with self._lock:
            requests = list(self.requests)
        found = []
        for request in requests:
            for resource_spans in request.resource_spans:
                resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
                for scope_spans in resource_spans.scope_spans:
                    found.extend((resource, span) for span in scope_spans.spans)
        return found

    def close(self) -> None:
        self.server.stop(grace=None)


def _attributes(span: Any) -> dict[str, Any]:
    values = {}
    for attribute in span.attributes:
        value = attribute.value
        values[attribute.key] = getattr(value, value.WhichOneof("value")) if value.WhichOneof("value") else None
    return values


async def _wait_for(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def test_spans_reach_a_grpc_collector_on_port_4317_without_a_protocol_setting(
    service_process: Any, servers: Servers, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Nothing but the endpoint: the service process inherits this environment.
    for name in (
        "OTEL_EXPORTER_OTLP_PROTOCOL",
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ):
        monkeypatch.delenv(name, raising=False)
    receiver = GrpcTraceReceiver()
    try:
        env = servers.env(OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint, OTEL_SERVICE_NAME="payment-grpc-test",
                          OTEL_BSP_SCHEDULE_DELAY="100")  # fmt: skip
        # Its own cancel queue, so that no other test's service consumes from it.
        env["RABBITMQ_CANCEL_QUEUE"] = env["RABBITMQ_CONSUME_QUEUE"].replace(".stock-confirmed", ".order-cancelled")
        settings = load_settings(**{k.lower(): v for k, v in env.items() if k != "PORT"})
        assert settings.otel_exporter_otlp_protocol is None
        assert settings.otlp_protocol == "grpc"

        service = service_process(env)
        await service.wait_ready()
        trace_id = secrets.token_hex(16)
        body = event(card="4242")
        async with bus_for(settings) as bus:
            try:
                await bus.publish(body, headers={"traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"})
                await bus.wait_for([body["orderId"]], timeout=20)

                def charge_exported() -> bool:
                    return any(
                        span.name == "charge" and span.trace_id.hex() == trace_id for _, span in receiver.spans()
                    )

                await _wait_for(charge_exported, 15, f"the charge span of order {body['orderId']} over gRPC")
            finally:
                await bus.delete(settings.rabbitmq_cancel_queue, settings.cancel_dlq_name, exchange=False)
        service.terminate()
        assert await service.wait_exit() == 0
    finally:
        receiver.close()

    [outcome] = bus.for_order(body["orderId"])
    assert outcome.routing_key == "payment.succeeded"
    ours = [(resource, span) for resource, span in receiver.spans() if span.trace_id.hex() == trace_id]
    assert {resource["service.name"] for resource, _ in ours} == {"payment-grpc-test"}
    [charge] = [span for _, span in ours if span.name == "charge"]
    attributes = _attributes(charge)
    assert attributes["payment.order_id"] == body["orderId"]
    assert attributes["payment.status"] == "SUCCEEDED"
    names = {span.name for _, span in ours}
    assert any(name.endswith(" process") for name in names), names
    assert any(name.endswith("payment.succeeded publish") for name in names), names
    # The exporter of the service, not some other client, sent them: OTLP's gRPC exporter.
    assert any("grpc" in agent.lower() for agent in receiver.user_agents), receiver.user_agents
