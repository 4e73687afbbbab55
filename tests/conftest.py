"""Shared fixtures. Tests use the real PostgreSQL and RabbitMQ on this machine (override with
TEST_DB_URL=postgresql://user[:pw]@host:port and TEST_RABBITMQ_URL=amqp://…); when neither
answers and Docker is available, testcontainers starts both."""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, closing
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest

from app.config import Settings, load_settings
from app.persistence.migrate import create_database_if_missing, migrate
from tests.support import Bus, Servers, ServiceProcess

# One database per test run: set TEST_DATABASE to run two suites side by side on one machine.
TEST_DATABASE = os.environ.get("TEST_DATABASE", "payments_test")


def _reachable(host: str, port: int) -> bool:
    with closing(socket.socket()) as s:
        s.settimeout(1.0)
        return s.connect_ex((host, port)) == 0


def _discover() -> tuple[Servers, list[Any]]:
    db = urlsplit(os.environ.get("TEST_DB_URL", "postgresql://root@127.0.0.1:5432"))
    mq = urlsplit(os.environ.get("TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/"))
    containers: list[Any] = []
    db_host, db_port = db.hostname or "127.0.0.1", db.port or 5432
    db_user, db_password = db.username or "root", db.password
    mq_host, mq_port = mq.hostname or "127.0.0.1", mq.port or 5672
    amqp_url = mq.geturl()
    if not _reachable(db_host, db_port) or not _reachable(mq_host, mq_port):
        if "TEST_DB_URL" in os.environ or "TEST_RABBITMQ_URL" in os.environ:
            pytest.exit("the configured TEST_DB_URL / TEST_RABBITMQ_URL do not answer", returncode=2)
        try:  # a developer laptop with Docker and no local servers
            from testcontainers.postgres import PostgresContainer
            from testcontainers.rabbitmq import RabbitMqContainer
        except ImportError:
            pytest.exit("PostgreSQL/RabbitMQ are not reachable and testcontainers is not installed", returncode=2)
        pg = PostgresContainer("postgres:15", username="root", password="root", dbname="postgres").start()
        rabbit = RabbitMqContainer("rabbitmq:3.13").start()
        containers = [pg, rabbit]
        db_host, db_port = pg.get_container_host_ip(), int(pg.get_exposed_port(5432))
        db_user, db_password = "root", "root"
        mq_host, mq_port = rabbit.get_container_host_ip(), int(rabbit.get_exposed_port(5672))
        amqp_url = f"amqp://guest:guest@{mq_host}:{mq_port}/"
    auth = db_user + (f":{db_password}" if db_password else "")
    return (
        Servers(
            db_admin_dsn=f"postgresql://{auth}@{db_host}:{db_port}/postgres",
            db_host=db_host,
            db_port=db_port,
            db_user=db_user,
            db_password=db_password,
            db_name=TEST_DATABASE,
            amqp_url=amqp_url,
            amqp_host=mq_host,
            amqp_port=mq_port,
        ),
        containers,
    )


@pytest.fixture(scope="session")
def servers() -> Any:
    found, containers = _discover()
    yield found
    for container in containers:
        container.stop()


@pytest.fixture(scope="session")
async def database(servers: Servers) -> str:
    """The test database, created if missing and migrated to head."""
    await create_database_if_missing(servers.db_admin_dsn, servers.db_name)
    settings = make_settings(servers)
    await migrate(settings.sqlalchemy_url())
    return servers.dsn()


@pytest.fixture(scope="session")
async def db(database: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(database, min_size=1, max_size=4)
    yield pool
    await pool.close()


def make_settings(servers: Servers, **overrides: Any) -> Settings:
    env = servers.env(**overrides)
    return load_settings(**{k.lower(): v for k, v in env.items()})


@pytest.fixture
def settings_factory(servers: Servers, database: str) -> Callable[..., Settings]:
    return lambda **overrides: make_settings(servers, **overrides)


@asynccontextmanager
async def running_app(settings: Settings, **kwargs: Any) -> AsyncIterator[Any]:
    """The real app (broker, database, HTTP routes) in this process, started via its lifespan.

    The lifespan runs in its own task (its task group must be entered and left in one task)."""
    from app.bootstrap import create_app

    app = create_app(settings, **kwargs)
    started, stop = asyncio.Event(), asyncio.Event()

    async def run() -> None:
        async with app.start_lifespan_context():
            started.set()
            await stop.wait()

    runner = asyncio.create_task(run())
    try:
        waiter = asyncio.create_task(started.wait())
        await asyncio.wait({runner, waiter}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
        if runner.done():
            runner.result()  # start-up failed: raise its error
        for _ in range(500):
            if app.components.health.started:
                break
            await asyncio.sleep(0.02)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://payment") as client:
            app.client = client
            yield app
    finally:
        stop.set()
        await asyncio.wait_for(runner, timeout=60)
        bus = Bus(settings.amqp_url, settings.rabbitmq_publish_exchange, settings.rabbitmq_consume_queue)
        await bus.start()
        await bus.delete(
            settings.rabbitmq_consume_queue, settings.dlq_name, settings.rabbitmq_cancel_queue, settings.cancel_dlq_name
        )
        await bus.close()


@asynccontextmanager
async def bus_for(settings: Settings) -> AsyncIterator[Bus]:
    bus = await Bus(settings.amqp_url, settings.rabbitmq_publish_exchange, settings.rabbitmq_consume_queue).start()
    try:
        yield bus
    finally:
        await bus.close()


@pytest.fixture
async def service_process(servers: Servers, database: str, tmp_path: Path) -> Any:
    """Factory of service subprocesses; stopped, and their queues and exchange deleted, at
    the end of the test."""
    started: list[ServiceProcess] = []

    def start(env: dict[str, str] | None = None, **overrides: Any) -> ServiceProcess:
        environment = env or servers.env(**overrides)
        process = ServiceProcess(environment, tmp_path / f"service-{len(started)}-{uuid.uuid4().hex[:4]}.log")
        started.append(process.start())
        return process

    yield start
    await asyncio.gather(*(asyncio.to_thread(process.stop) for process in started))
    topologies = {
        (p.env["RABBITMQ_PUBLISH_EXCHANGE"], p.env["RABBITMQ_CONSUME_QUEUE"], p.env.get("RABBITMQ_CANCEL_QUEUE", ""))
        for p in started
        if not p.env.get("RABBITMQ_VHOST")  # a test on a vhost of its own deletes the vhost
    }
    for exchange, queue, cancel_queue in topologies:
        bus = await Bus(servers.amqp_url, exchange, queue).start()
        await bus.delete(queue, f"{queue}.dlq", *((cancel_queue, f"{cancel_queue}.dlq") if cancel_queue else ()))
        await bus.close()
