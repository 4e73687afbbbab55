"""The line per payment written straight as JSON is the line loguru and the JSON sink write:
same keys in the same order, same values, for every branch of `_log_result`; text mode and
the level setting still go through loguru."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from loguru import logger
from opentelemetry.sdk.trace import TracerProvider

from app.domain import Disposition, FailureCode, Payment, PaymentStatus, ProcessingResult
from app.messaging import consumer
from app.observability import fastlog, logs

SUCCEEDED = Payment(
    id=17,
    order_id=123456789,
    buyer_id="user-uuid-123",
    amount=Decimal("49.99"),
    currency="USD",
    status=PaymentStatus.SUCCEEDED,
    payment_method=None,
    created_at=datetime.now(UTC),
)
FAILED = replace(
    SUCCEEDED, status=PaymentStatus.FAILED, failure_code=FailureCode.CARD_DECLINED, failure_reason="Card {declined}"
)
CASES = {
    "succeeded": ProcessingResult(Disposition.PROCESSED, SUCCEEDED),
    "failed": ProcessingResult(Disposition.PROCESSED, FAILED),
    "refunded": ProcessingResult(Disposition.PROCESSED, replace(SUCCEEDED, status=PaymentStatus.REFUNDED)),
    "replayed": ProcessingResult(Disposition.ALREADY_PROCESSED, FAILED),
    "replayed without a code": ProcessingResult(Disposition.ALREADY_PROCESSED, SUCCEEDED),
    "in progress": ProcessingResult(Disposition.IN_PROGRESS, replace(SUCCEEDED, status=PaymentStatus.PROCESSING)),
}


@pytest.fixture
def sink() -> Iterator[None]:
    """Logging as `configure_logging(level, "json")` sets it up (the loguru part), then loguru's default again."""
    logger.remove()
    yield
    logger.remove()
    logger.add(sys.stderr)


def use(level: str, fmt: str = "json") -> None:
    logger.remove()
    if fmt == "json":
        logger.add(logs._json_sink, level=level, backtrace=False, diagnose=False)
    else:
        logger.add(sys.stdout, level=level, format=logs._text_format, colorize=False, diagnose=False)


def log_line(result: ProcessingResult, capsys: pytest.CaptureFixture[str], *, fast: bool) -> list[str]:
    real_emit = fastlog.emit
    if not fast:
        fastlog.emit = lambda *args: False  # type: ignore[assignment]  # the loguru path, as before
    try:
        # password: a secret key a caller might bind; neither line may carry it.
        with logger.contextualize(event_id="0a8f1c2e-5d7b-5e8a-9c1d-2b3f4a5e6d7c", order_id=123456789, password="x"):
            consumer._log_result(result, time.perf_counter())
    finally:
        fastlog.emit = real_emit  # type: ignore[assignment]
    return capsys.readouterr().out.splitlines()


def normalised(line: str) -> list[tuple[str, object]]:
    """The line's keys in order, with its values; the instant and the duration differ between
    two calls, so only their shape is kept."""
    fields = json.loads(line)
    assert fields["time"].endswith("Z") and len(fields["time"]) == len("2024-01-15T10:30:01.120Z")
    assert isinstance(fields["duration_ms"], float)
    return [(k, "<time>" if k == "time" else "<ms>" if k == "duration_ms" else v) for k, v in fields.items()]


@pytest.mark.parametrize("case", CASES)
def test_the_fast_line_is_the_loguru_line(case: str, sink: None, capsys: pytest.CaptureFixture[str]) -> None:
    use("INFO")
    [slow] = log_line(CASES[case], capsys, fast=False)
    [fast] = log_line(CASES[case], capsys, fast=True)
    assert normalised(fast) == normalised(slow)
    assert "password" not in json.loads(fast) and json.loads(fast)["logger"] == "app.messaging.consumer"


def test_the_fast_line_carries_the_span_ids(sink: None, capsys: pytest.CaptureFixture[str]) -> None:
    use("INFO")
    with TracerProvider().get_tracer("test").start_as_current_span("consume"):
        [slow] = log_line(CASES["succeeded"], capsys, fast=False)
        [fast] = log_line(CASES["succeeded"], capsys, fast=True)
    assert normalised(fast) == normalised(slow)
    assert {"trace_id", "span_id"} <= set(json.loads(fast))


def test_exact_keys_of_the_success_line(sink: None, capsys: pytest.CaptureFixture[str]) -> None:
    use("INFO")
    [line] = log_line(CASES["succeeded"], capsys, fast=True)
    fields = json.loads(line)
    assert list(fields) == [
        "time",
        "level",
        "message",
        "logger",
        "event_id",
        "order_id",
        "payment_id",
        "status",
        "duration_ms",
    ]
    assert (fields["level"], fields["message"], fields["payment_id"], fields["status"]) == (
        "INFO",
        "payment succeeded",
        17,
        "SUCCEEDED",
    )


def test_text_mode_and_the_level_setting_go_through_loguru(sink: None, capsys: pytest.CaptureFixture[str]) -> None:
    use("INFO", fmt="text")
    assert not fastlog.emit("INFO", "payment succeeded", "app.messaging.consumer", {})
    [line] = log_line(CASES["succeeded"], capsys, fast=True)
    assert "payment succeeded" in line and not line.startswith("{")

    use("WARNING")
    assert log_line(CASES["succeeded"], capsys, fast=True) == []  # INFO filtered out
    [failed] = log_line(CASES["failed"], capsys, fast=True)
    assert json.loads(failed)["message"] == "payment failed: Card {declined}"

    logger.remove()  # no handler at all: nothing written, nothing raised
    assert log_line(CASES["failed"], capsys, fast=True) == []
