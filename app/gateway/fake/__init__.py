"""A fake of the Stripe-style HTTP payment gateway, in memory, for tests and local runs."""

from app.gateway.fake.server import DEFAULT_API_KEY, RunningFakeGateway, create_app, running_fake_gateway
from app.gateway.fake.state import FakeGatewayState

__all__ = ["DEFAULT_API_KEY", "FakeGatewayState", "RunningFakeGateway", "create_app", "running_fake_gateway"]
