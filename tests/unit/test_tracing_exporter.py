"""Which OTLP span exporter the settings select (gRPC or HTTP), with which endpoint and transport
security; no collector involved."""

from __future__ import annotations

import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter

from app.config import load_settings
from app.observability.tracing import provider_from_settings, span_exporter


@pytest.fixture(autouse=True)
def _no_otlp_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    names = ("ENDPOINT", "PROTOCOL", "TRACES_ENDPOINT", "INSECURE", "TRACES_INSECURE")
    for name in names:
        monkeypatch.delenv(f"OTEL_EXPORTER_OTLP_{name}", raising=False)
        monkeypatch.delenv(name, raising=False)


def exporter_for(endpoint: str, protocol: str | None = None) -> object:
    settings = load_settings(otel_exporter_otlp_endpoint=endpoint, otel_exporter_otlp_protocol=protocol)
    return span_exporter(settings)


# The exporters keep what they will connect to in private attributes (the project's lint allows
# reading them in tests); that is the only way to check the choice without a network round trip.
@pytest.mark.parametrize(
    ("endpoint", "target", "insecure"),
    [
        ("http://otel-collector:4317", "otel-collector:4317", True),  # as the Foodies cluster sets it
        ("http://otel-collector:4317/", "otel-collector:4317", True),
        ("https://otel.example:4317", "otel.example:4317", False),
    ],
)
def test_an_endpoint_on_4317_without_a_protocol_exports_over_grpc(endpoint: str, target: str, insecure: bool) -> None:
    exporter = exporter_for(endpoint)
    try:
        assert isinstance(exporter, GrpcSpanExporter)
        assert exporter._endpoint == target
        assert exporter._insecure is insecure
    finally:
        exporter.shutdown()


def test_grpc_on_another_port_when_the_protocol_says_so() -> None:
    exporter = exporter_for("http://collector:14317", "grpc")
    try:
        assert isinstance(exporter, GrpcSpanExporter)
        assert exporter._endpoint == "collector:14317"
    finally:
        exporter.shutdown()


@pytest.mark.parametrize(
    ("endpoint", "protocol"),
    [("http://collector:4318", None), ("http://collector:4317", "http/protobuf"), ("http://collector", None)],
)
def test_http_protobuf_otherwise_on_the_traces_path(endpoint: str, protocol: str | None) -> None:
    exporter = exporter_for(endpoint, protocol)
    try:
        assert isinstance(exporter, HttpSpanExporter)
        assert exporter._endpoint == endpoint.rstrip("/") + "/v1/traces"
    finally:
        exporter.shutdown()


def test_a_traces_endpoint_of_its_own_wins_over_grpc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://traces-only:4317")
    exporter = exporter_for("http://otel-collector:4317")
    try:
        assert isinstance(exporter, GrpcSpanExporter)
        assert exporter._endpoint == "traces-only:4317"
    finally:
        exporter.shutdown()


def test_the_provider_batches_into_the_selected_exporter() -> None:
    provider = provider_from_settings(load_settings(otel_exporter_otlp_endpoint="http://otel-collector:4317"))
    assert provider is not None
    try:
        [processor] = provider._active_span_processor._span_processors
        assert isinstance(processor._batch_processor._exporter, GrpcSpanExporter)
    finally:
        provider.shutdown()
    assert provider_from_settings(load_settings()) is None
