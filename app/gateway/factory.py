"""The gateway the settings ask for: the simulated one (default) or the HTTP adapter."""

from __future__ import annotations

from app.config import Settings
from app.gateway.base import PaymentGateway
from app.gateway.simulated import SimulatedGateway


def gateway_from(settings: Settings) -> PaymentGateway:
    """PAYMENT_GATEWAY=simulated: the in-process simulator (PAYMENT_DELAY_MS, PAYMENT_ALWAYS_SUCCEED);
    PAYMENT_GATEWAY=http: the HTTP adapter on PAYMENT_GATEWAY_URL with PAYMENT_GATEWAY_API_KEY."""
    if settings.payment_gateway == "http":
        if not settings.payment_gateway_url:
            raise ValueError("PAYMENT_GATEWAY_URL is required with PAYMENT_GATEWAY=http")
        # httpx is loaded only for the HTTP adapter (the simulated gateway does not need it).
        from app.gateway.http import HttpGateway

        return HttpGateway(
            settings.payment_gateway_url,
            settings.payment_gateway_api_key or "",
            timeout_s=settings.payment_gateway_timeout_ms / 1000,
            # The consumers and the reconciler each run up to CONSUMER_CONCURRENCY calls at once.
            max_connections=2 * settings.consumer_concurrency,
        )
    return SimulatedGateway(delay_ms=settings.payment_delay_ms, always_succeed=settings.payment_always_succeed)
