"""Where money moves: the payment gateway interface, the simulated gateway, retries."""

from app.gateway.base import ChargeRequest, GatewayTransientError, PaymentGateway
from app.gateway.retrying import RetryingCharger, RetryPolicy
from app.gateway.simulated import SimulatedGateway

__all__ = [
    "ChargeRequest",
    "GatewayTransientError",
    "PaymentGateway",
    "RetryPolicy",
    "RetryingCharger",
    "SimulatedGateway",
]
