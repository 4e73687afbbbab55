"""A schemathesis pass over every admin route, generated from /openapi.json and sent to a real
server (uvicorn) backed by the real PostgreSQL and RabbitMQ: no input gives a 5xx, every answer
matches the document, and malformed input is refused with a 4xx."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import aio_pika
import httpx
import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

from app.http.auth import Authenticator, StaticTokenAuth
from app.http.probes import Health
from app.http.routes import create_http_app
from app.messaging.dlq import DlqOperations
from app.observability.metrics import PaymentMetrics
from app.persistence.repository import PaymentRepository, make_engine
from tests.conftest import make_settings
from tests.http_fakes import FakeRefunds
from tests.support import Servers, free_port

TOKEN = f"fuzz-{uuid.uuid4().hex}"


class Server:
    """The HTTP app on 127.0.0.1 in a thread of its own (with its own event loop)."""

    def __init__(self, app: Any) -> None:
        self.port = free_port()
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Server:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *_: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def lazy_repository(url: str) -> Any:
    """Made on first use, so that its connections belong to the server's event loop."""
    made: list[PaymentRepository] = []

    def repository() -> PaymentRepository:
        if not made:
            made.append(PaymentRepository(make_engine(url, pool_size=2)))
        return made[0]

    return repository


async def declare_lots(amqp_url: str, exchange: str, queues: tuple[str, ...], *, delete: bool = False) -> None:
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        if delete:
            for name in queues:
                await channel.queue_delete(name)
                await channel.queue_delete(f"{name}.dlq")
            await channel.exchange_delete(exchange)
            return
        await channel.declare_exchange(exchange, aio_pika.ExchangeType.TOPIC, durable=True)
        for name in queues:
            queue = await channel.declare_queue(name, durable=True)
            await queue.bind(exchange, routing_key=f"replay.{name}")
            await channel.declare_queue(f"{name}.dlq", durable=True)


@pytest.fixture(scope="module")
def fuzzed_server(servers: Servers, database: str) -> Iterator[Server]:
    settings_ = make_settings(servers)
    queues = (settings_.rabbitmq_consume_queue, f"{settings_.rabbitmq_consume_queue}-cancelled")
    exchange = settings_.rabbitmq_publish_exchange
    asyncio.run(declare_lots(settings_.amqp_url, exchange, queues))
    health = Health()
    app = create_http_app(
        health=health,
        metrics=PaymentMetrics(),
        repository=lazy_repository(settings_.sqlalchemy_url()),
        auth=Authenticator(StaticTokenAuth((TOKEN,))),
        dlq=DlqOperations(settings_.amqp_url, exchange, queues),
        refunds=FakeRefunds(),
        settings=SimpleNamespace(admin_rate_limit=100_000),
    )
    try:
        with Server(app) as server:
            yield server
    finally:
        asyncio.run(declare_lots(settings_.amqp_url, exchange, queues, delete=True))


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_input_makes_a_server_error(fuzzed_server: Server, mode: GenerationMode) -> None:
    """Schema-valid input (positive) is answered as documented; schema-invalid input (negative:
    wrong types, out-of-range numbers, unknown keys…) is refused with a 4xx; neither gets a 5xx."""
    schema = schemathesis.openapi.from_url(f"{fuzzed_server.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 6
    for operation in operations:

        @given(case=operation.as_strategy(mode))
        @settings(max_examples=50, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def fuzz(case: Any) -> None:
            response = case.call(base_url=fuzzed_server.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
            assert response.status_code < 500, (case.method, case.formatted_path, case.query, response.text[:300])
            if mode is GenerationMode.POSITIVE and given_twice(case):
                # A replay parameter in both the query and the body is refused (a rule OpenAPI cannot state).
                assert response.status_code == 400
                return
            case.validate_response(response)

        fuzz()


def given_twice(case: Any) -> bool:
    body = case.body if isinstance(case.body, dict) else {}
    return any(body.get(name) is not None and (case.query or {}).get(name) is not None for name in ("limit", "queue"))


def test_the_fuzzed_server_checks_tokens(fuzzed_server: Server) -> None:
    """The fuzz pass runs authenticated; without the token every admin route is a 401."""
    with httpx.Client(base_url=fuzzed_server.url) as client:
        assert client.get("/payments").status_code == 401
        assert client.post("/admin/dlq/replay", json={"limit": 1}).status_code == 401
        assert client.get("/payments", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
