"""Prometheus metrics (one registry per app instance) and the lifecycle observer that turns
charge attempts into metrics, log lines and (when tracing is on) events on the `charge` span.

Every metric and its labels are listed in the README ("Metrics"); labels only ever hold
values from small fixed sets."""

from __future__ import annotations

from typing import Any

from loguru import logger
from opentelemetry import trace
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)

from app.domain import Disposition, Payment, PaymentStatus
from app.gateway.base import ChargeRequest

# From a few ms (0 ms gateway) through the default 100 ms gateway to multi-second retries.
LATENCY_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.15,
    0.2,
    0.3,
    0.5,
    0.75,
    1.0,
    2.0,
    5.0,
    10.0,
    20.0,
    30.0,
    60.0,
)


class PaymentMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        r = self.registry
        if registry is None:
            # process_* (memory, CPU, open file descriptors) and python_* (version, GC) series, which
            # dashboards expect from any Python service. A registry passed in (e.g. prometheus_client's
            # default one) may already carry them, and registering them twice raises.
            ProcessCollector(registry=r)
            PlatformCollector(registry=r)
            GCCollector(registry=r)
        self._define_payments(r)
        self._define_gateway(r)
        self._define_backlog(r)
        self._define_saga(r)

    def _define_payments(self, r: CollectorRegistry) -> None:
        """Messages consumed, payments finished, money charged, time per message."""
        self.consumed = Counter(
            "payment_consumed",
            "Messages consumed, by queue and by what became of them: acked (handled), parked (a copy in "
            "the queue's .dlq, the original acknowledged) or requeued (given back to the queue).",
            ["queue", "result"],
            registry=r,
        )
        self.processed = Counter(
            "payment_processed",
            "Payments finished (by the consumer or the reconciler), by outcome (succeeded / failed / replayed) "
            "and failure code.",
            ["outcome", "failure_code"],
            registry=r,
        )
        self.charged_amount = Counter(
            "payment_charged_amount",
            "Money successfully charged, in the currency's major unit.",
            ["currency"],
            registry=r,
        )
        self.processing_seconds = Histogram(
            "payment_processing_seconds",
            "End-to-end handling time of one consumed message (decode to ack).",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )

    def _define_gateway(self, r: CollectorRegistry) -> None:
        """Gateway attempts, their duration and retries; parked messages."""
        self.gateway_call_seconds = Histogram(
            "payment_gateway_call_seconds",
            "Duration of one gateway charge attempt, by result.",
            ["result"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.gateway_attempts = Counter(
            "payment_gateway_attempts",
            "Gateway attempts (charges and refunds), by result (ok / declined / transient / timeout / unusable).",
            ["result"],
            registry=r,
        )
        self.gateway_retries = Counter(
            "payment_gateway_retries",
            "Retries scheduled after a transient gateway failure, by the failed attempt's result.",
            ["result"],
            registry=r,
        )
        self.parked = Counter(
            "payment_parked_messages",
            "Consumed messages moved to the parking-lot queue, by reason category.",
            ["reason"],
            registry=r,
        )

    def _define_backlog(self, r: CollectorRegistry) -> None:
        """In flight now, and what the reconciler sees in the database."""
        self.in_flight = Gauge("payment_in_flight", "Messages being processed by this replica now.", registry=r)
        self.stuck = Gauge(
            "payment_stuck",
            "Payments PENDING/PROCESSING beyond their lease plus one reconcile interval (all replicas).",
            registry=r,
        )
        self.unpublished = Gauge(
            "payment_unpublished_outcomes",
            "Final payments whose outcome event is not yet confirmed by the broker (all replicas).",
            registry=r,
        )
        self.unfinished = Gauge(
            "payment_unfinished",
            "Payments PENDING or PROCESSING in the database (all replicas).",
            registry=r,
        )
        self.published = Counter(
            "payment_outcome_events_published",
            "Outcome events confirmed by the broker, by routing key.",
            ["routing_key"],
            registry=r,
        )
        self.reconciled = Counter(
            "payment_reconciled",
            "Payments finished or re-published by the reconciler, by action (charged / republished).",
            ["action"],
            registry=r,
        )

    def _define_saga(self, r: CollectorRegistry) -> None:
        """Cancellations, refunds, conflicts and the circuit breaker."""
        self.cancellations = Counter(
            "payment_cancellations",
            "order.cancelled events handled, by case: before_charge (never charged), in_flight (refunded "
            "if the charge succeeds), after_success (refunded), final (nothing to do).",
            ["case"],
            registry=r,
        )
        self.refunds = Counter(
            "payment_refunds",
            "Refund attempts finished, by outcome (refunded / declined / error: the gateway was unavailable, "
            "the refund stays owed).",
            ["outcome"],
            registry=r,
        )
        self.refund_failures = Counter(
            "payment_refund_failures",
            "Refunds the gateway declined: the payment stays SUCCEEDED until an operator retries it.",
            registry=r,
        )
        self.conflicts = Counter(
            "payment_event_conflicts",
            "Events for an order that already has a payment, with a different amount, currency or buyer (not charged).",
            registry=r,
        )
        self.circuit_state = Gauge(
            "payment_gateway_circuit_state",
            "The gateway circuit breaker: 0 closed, 1 open (orders wait), 2 half-open (one trial charge).",
            registry=r,
        )
        self.held = Gauge(
            "payment_held_messages",
            "Orders this replica holds unacknowledged while the gateway is unavailable.",
            registry=r,
        )

    def refund_done(self, outcome: str) -> None:
        self.labelled(self.refunds, outcome).inc()
        if outcome == "declined":
            self.refund_failures.inc()

    def conflict(self, order_id: int, fields: list[str]) -> None:
        self.conflicts.inc()

    def labelled(self, metric: Any, *values: str) -> Any:
        """The metric's child for these label values, looked up once (labels() takes a lock
        and builds a key on every call; this runs several times per message)."""
        key = (id(metric), values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*values)
        return child

    def payment_done(self, disposition: Disposition, payment: Payment) -> None:
        if disposition is Disposition.ALREADY_PROCESSED:
            self.labelled(self.processed, "replayed", _code(payment)).inc()
            return
        if disposition is Disposition.PROCESSED:
            self.payment_recorded(payment)

    def payment_recorded(self, payment: Payment) -> None:
        """A charge finished and was recorded (by the consumer or the reconciler)."""
        if payment.status is PaymentStatus.SUCCEEDED and payment.amount is not None and payment.currency:
            self.labelled(self.processed, "succeeded", "").inc()
            self.labelled(self.charged_amount, payment.currency).inc(float(payment.amount))
        elif payment.status is PaymentStatus.REFUNDED:
            self.labelled(self.processed, "refunded", "").inc()
        else:
            self.labelled(self.processed, "failed", _code(payment)).inc()


def _code(payment: Payment) -> str:
    return payment.failure_code.value if payment.failure_code else ""


class ChargeTelemetry:
    """Observer of gateway attempts: one metric sample and one log line per attempt."""

    def __init__(self, metrics: PaymentMetrics) -> None:
        self.metrics = metrics

    def attempt_finished(self, request: ChargeRequest, attempt: int, result: str, seconds: float) -> None:
        self.metrics.labelled(self.metrics.gateway_attempts, result).inc()
        self.metrics.labelled(self.metrics.gateway_call_seconds, result).observe(seconds)
        span = trace.get_current_span()  # the `charge` span when tracing is on
        if span.is_recording():
            span.add_event(
                "gateway attempt",
                {"attempt": attempt, "result": result, "duration_ms": round(seconds * 1000, 1)},
            )
        logger.debug(
            "charge attempt",
            order_id=request.order_id,
            attempt=attempt,
            result=result,
            duration_ms=round(seconds * 1000, 1),
        )

    def retry_scheduled(self, request: ChargeRequest, attempt: int, result: str, wait_s: float) -> None:
        self.metrics.labelled(self.metrics.gateway_retries, result).inc()
        span = trace.get_current_span()
        if span.is_recording():
            span.add_event("retry scheduled", {"attempt": attempt, "result": result, "wait_ms": round(wait_s * 1000)})
        logger.warning(
            "charge attempt failed ({result}); retrying in {wait_ms} ms",
            result=result,
            wait_ms=round(wait_s * 1000),
            order_id=request.order_id,
            attempt=attempt,
        )
