"""Where money moves: the gateway port, the simulated and HTTP gateways, retries and the circuit breaker.

The HTTP adapter is `app.gateway.http.HttpGateway`, imported from there (it loads httpx,
which the simulated gateway does not need)."""

from app.gateway.base import (
    ChargeRequest,
    GatewayOutage,
    GatewayTransientError,
    GatewayUnusableError,
    PaymentGateway,
    RefundRequest,
    RefundResult,
)
from app.gateway.breaker import CircuitBreaker, CircuitOpen, CircuitState, Permit
from app.gateway.factory import gateway_from
from app.gateway.retrying import ChargeObserver, RetryingCharger, RetryPolicy
from app.gateway.simulated import SimulatedGateway

__all__ = [
    "ChargeObserver",
    "ChargeRequest",
    "CircuitBreaker",
    "CircuitOpen",
    "CircuitState",
    "GatewayOutage",
    "GatewayTransientError",
    "GatewayUnusableError",
    "PaymentGateway",
    "Permit",
    "RefundRequest",
    "RefundResult",
    "RetryPolicy",
    "RetryingCharger",
    "SimulatedGateway",
    "gateway_from",
]
