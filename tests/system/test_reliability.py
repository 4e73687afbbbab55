"""Failure injection against the real service process (`payment-service`), real PostgreSQL and
real RabbitMQ: retries, crashes at every step, duplicates, replicas, shutdown, start-up."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg
import pytest

from tests.support import Bus, Servers, event, metric_sum, scrape

# Short bounds so that crash recovery is observable within seconds.
FAST = {
    "PAYMENT_DELAY_MS": "20",
    "PAYMENT_GATEWAY_TIMEOUT_MS": "300",
    "PAYMENT_RETRY_BASE_DELAY_MS": "10",
    "PAYMENT_RETRY_MAX_DELAY_MS": "50",
    "PAYMENT_LEASE_SECONDS": "3",
    "RECONCILE_INTERVAL_SECONDS": "0.5",
    "SHUTDOWN_GRACE_SECONDS": "10",
}


def fast(**overrides: str) -> dict[str, str]:
    return {**FAST, **overrides}


async def open_bus(env: dict[str, str], servers: Servers) -> Bus:
    return await Bus(servers.amqp_url, env["RABBITMQ_PUBLISH_EXCHANGE"], env["RABBITMQ_CONSUME_QUEUE"]).start()


async def payments_of(db: asyncpg.Pool, order_ids: list[int]) -> dict[int, list[asyncpg.Record]]:
    rows = await db.fetch("SELECT * FROM payments WHERE order_id = ANY($1::bigint[])", order_ids)
    found: dict[int, list[asyncpg.Record]] = {oid: [] for oid in order_ids}
    for row in rows:
        found[row["order_id"]].append(row)
    return found


async def assert_every_order_settled(db: asyncpg.Pool, bus: Bus, order_ids: list[int], timeout: float = 40) -> None:
    """Exactly one final payment per order and at least one outcome event, all of them equal."""
    try:
        await bus.wait_for(order_ids, timeout=timeout)
    except AssertionError as missing:
        rows = await db.fetch(
            "SELECT order_id, status, lease_until, lease_until < now() AS expired, published_at "
            "FROM payments WHERE order_id = ANY($1::bigint[]) AND order_id != ALL($2::bigint[])",
            order_ids,
            [o.body["orderId"] for o in bus.outcomes],
        )
        raise AssertionError(f"{missing}; their rows: {[dict(r) for r in rows][:5]}") from None
    found = await payments_of(db, order_ids)
    for order_id, rows in found.items():
        assert len(rows) == 1, f"order {order_id} has {len(rows)} payments"
        assert rows[0]["status"] in ("SUCCEEDED", "FAILED"), (order_id, rows[0]["status"])
        outcomes = bus.for_order(order_id)
        assert outcomes, order_id
        assert len({o.raw for o in outcomes}) == 1, f"outcomes disagree for order {order_id}"
        body = outcomes[0].body
        if rows[0]["status"] == "SUCCEEDED":
            assert body["paymentId"] == rows[0]["id"] and body["transactionId"] == rows[0]["transaction_id"]
        else:
            assert body["failureCode"] == rows[0]["failure_code"]


# --------------------------------------------------------------------------------- retries
async def test_retries_follow_the_card_table(service_process, servers: Servers) -> None:
    env = servers.env(**fast(PAYMENT_RETRY_MAX_ATTEMPTS="3", PAYMENT_CIRCUIT_OPEN_SECONDS="1"))
    service = service_process(env)
    await service.wait_ready()
    bus = await open_bus(env, servers)
    try:

        async def warm_up() -> None:
            # Successes first: the failing cards must not look like a gateway outage (the circuit
            # opens when at least half of the last 20 calls failed), so each fails alone.
            bodies = [event(card="4242") for _ in range(12)]
            for body in bodies:
                await bus.publish(body)
            await bus.wait_for([b["orderId"] for b in bodies], timeout=30)

        async def send(*cards: str) -> dict[str, Any]:
            bodies = {card: event(card=card) for card in cards}
            for body in bodies.values():
                await bus.publish(body)
            await bus.wait_for([b["orderId"] for b in bodies.values()], timeout=40)
            return {card: bus.for_order(body["orderId"])[0] for card, body in bodies.items()}

        await warm_up()
        result = await send("3333", "9999", "0000")
        await warm_up()
        result |= await send("6666")
        cards = {card: {"orderId": outcome.body["orderId"]} for card, outcome in result.items()}
        assert result["3333"].routing_key == "payment.succeeded"
        assert result["9999"].body["failureCode"] == "GATEWAY_ERROR"
        assert result["9999"].body["failureReason"] == "Payment gateway unavailable"
        assert result["6666"].body["failureCode"] == "TIMEOUT"
        assert result["6666"].body["failureReason"] == "Payment gateway timeout"
        assert result["0000"].body["failureCode"] == "CARD_DECLINED"
        samples = await scrape(service.url)
        # 24 warm-up successes; 3333: 2 transient + 1 ok; 9999 and 6666: two rounds of 3 attempts
        # each (the first round could have been an outage starting); 0000: 1 declined.
        assert metric_sum(samples, "payment_gateway_attempts_total", result="ok") == 24 + 1
        assert metric_sum(samples, "payment_gateway_attempts_total", result="transient") == 2 + 6
        assert metric_sum(samples, "payment_gateway_attempts_total", result="timeout") == 6
        assert metric_sum(samples, "payment_gateway_attempts_total", result="declined") == 1
        assert metric_sum(samples, "payment_gateway_circuit_state") == 0  # closed throughout
        attempts = {
            line.get("order_id"): line.get("attempt")
            for line in service.log_lines()
            if line.get("message", "").startswith("charge attempt failed")
        }
        assert attempts[cards["3333"]["orderId"]] == 2  # the last retry scheduled after attempt 2
    finally:
        await bus.close()


# ------------------------------------------------------------------------------ crashes
async def test_kill_9_mid_flood_then_restart_settles_every_order(service_process, servers: Servers, db) -> None:
    env = servers.env(**fast(CONSUMER_CONCURRENCY="32"))
    first = service_process(env)
    await first.wait_ready()
    bus = await open_bus(env, servers)
    try:
        bodies = [event(card="0000" if i % 10 == 0 else "4242") for i in range(300)]
        for body in bodies:
            await bus.publish(body)
        # Let some of them through, then kill without warning.
        for _ in range(200):
            if len(bus.outcomes) >= 40:
                break
            await asyncio.sleep(0.05)
        first.kill()
        assert 0 < len({o.body["orderId"] for o in bus.outcomes}) < len(bodies), (
            "the kill came too late to test anything"
        )
        second = service_process(env)
        await second.wait_ready()
        await assert_every_order_settled(db, bus, [b["orderId"] for b in bodies], timeout=60)
        assert await bus.queue_depth(env["RABBITMQ_CONSUME_QUEUE"]) == 0
        assert await bus.queue_depth(env["RABBITMQ_CONSUME_QUEUE"] + ".dlq") == 0
    finally:
        await bus.close()


@pytest.mark.parametrize("point", ["after_claim", "during_charge", "after_commit", "after_publish", "before_ack"])
async def test_crash_at_each_point_then_restart_settles_every_order(
    point: str, service_process, servers: Servers, db
) -> None:
    env = servers.env(**fast(CONSUMER_CONCURRENCY="4"))
    crashing = service_process({**env, "PAYMENT_FAULT_INJECT": f"{point}:3"})
    await crashing.wait_ready()
    bus = await open_bus(env, servers)
    try:
        bodies = [event(card="0002" if i % 4 == 0 else "4242") for i in range(12)]
        for body in bodies:
            await bus.publish(body)
        assert await crashing.wait_exit(timeout=30) == -9  # SIGKILL at the fault point
        restarted = service_process(env)
        await restarted.wait_ready()
        await assert_every_order_settled(db, bus, [b["orderId"] for b in bodies])
        unfinished = await db.fetchval(
            "SELECT count(*) FROM payments WHERE order_id = ANY($1::bigint[]) AND status IN ('PENDING', 'PROCESSING')",
            [b["orderId"] for b in bodies],
        )
        assert unfinished == 0
        # Published outcomes are eventually marked as confirmed.
        for _ in range(50):
            unpublished = await db.fetchval(
                "SELECT count(*) FROM payments WHERE order_id = ANY($1::bigint[]) AND published_at IS NULL",
                [b["orderId"] for b in bodies],
            )
            if unpublished == 0:
                break
            await asyncio.sleep(0.2)
        assert unpublished == 0
    finally:
        await bus.close()


# --------------------------------------------------------------------------- duplicates
async def test_same_event_30_times_at_once_charges_once(service_process, servers: Servers, db) -> None:
    env = servers.env(**fast(PAYMENT_DELAY_MS="200", CONSUMER_CONCURRENCY="32"))
    service = service_process(env)
    await service.wait_ready()
    bus = await open_bus(env, servers)
    try:
        body = event()
        await asyncio.gather(*(bus.publish(body) for _ in range(30)))
        await bus.wait_for([body["orderId"]])
        for _ in range(100):
            if await bus.queue_depth(env["RABBITMQ_CONSUME_QUEUE"]) == 0:
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)
        samples = await scrape(service.url)
        assert metric_sum(samples, "payment_gateway_attempts_total") == 1
        assert len((await payments_of(db, [body["orderId"]]))[body["orderId"]]) == 1
        assert len({o.raw for o in bus.for_order(body["orderId"])}) == 1
        assert await bus.queue_depth(env["RABBITMQ_CONSUME_QUEUE"] + ".dlq") == 0
    finally:
        await bus.close()


async def test_two_replicas_every_event_twice_one_payment_per_order(service_process, servers: Servers, db) -> None:
    env = servers.env(**fast(PAYMENT_DELAY_MS="5"))
    replicas = [service_process(dict(env)), service_process(dict(env))]
    for replica in replicas:
        await replica.wait_ready()
    bus = await open_bus(env, servers)
    try:
        bodies = [event() for _ in range(100)]
        for body in bodies:
            await bus.publish(body)
            await bus.publish(body)
        await assert_every_order_settled(db, bus, [b["orderId"] for b in bodies])
        calls = [metric_sum(await scrape(r.url), "payment_gateway_attempts_total") for r in replicas]
        assert sum(calls) == len(bodies)
        assert all(c > 0 for c in calls), f"one replica did all the work: {calls}"
        assert await bus.queue_depth(env["RABBITMQ_CONSUME_QUEUE"] + ".dlq") == 0
    finally:
        await bus.close()


# ------------------------------------------------------------------------------ shutdown
async def test_sigterm_during_flood_exits_0_within_grace_and_loses_nothing(
    service_process, servers: Servers, db
) -> None:
    env = servers.env(**fast(PAYMENT_DELAY_MS="100", CONSUMER_CONCURRENCY="16", SHUTDOWN_GRACE_SECONDS="5"))
    first = service_process(env)
    await first.wait_ready()
    bus = await open_bus(env, servers)
    try:
        bodies = [event() for _ in range(200)]
        for body in bodies:
            await bus.publish(body)
        for _ in range(100):
            if len(bus.outcomes) >= 20:
                break
            await asyncio.sleep(0.05)
        loop = asyncio.get_running_loop()
        stopped_at = loop.time()
        first.terminate()
        assert await first.wait_exit(timeout=15) == 0
        assert loop.time() - stopped_at < 5 + 3
        # Nothing left half-done by the clean stop.
        unfinished = await db.fetchval(
            "SELECT count(*) FROM payments WHERE order_id = ANY($1::bigint[]) AND status IN ('PENDING', 'PROCESSING')",
            [b["orderId"] for b in bodies],
        )
        assert unfinished == 0
        lines = first.log_lines()
        assert any(line.get("message") == "shutdown complete" for line in lines)
        second = service_process(env)
        await second.wait_ready()
        await assert_every_order_settled(db, bus, [b["orderId"] for b in bodies])
    finally:
        await bus.close()


# ------------------------------------------------------------------------------ start-up
async def test_replicas_starting_together_on_an_empty_database_all_come_up(service_process, servers: Servers) -> None:
    name = f"payments_boot_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(servers.db_admin_dsn)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        env = servers.env(**fast(DB_URL=f"jdbc:postgresql://{servers.db_host}:{servers.db_port}/{name}"))
        replicas = [service_process(dict(env)) for _ in range(3)]
        startup = await asyncio.gather(*(r.wait_ready(timeout=60) for r in replicas))
        assert all(seconds < 30 for seconds in startup)
        for replica in replicas:
            replica.stop()
            assert replica.process.returncode == 0
        bus = await open_bus(env, servers)
        await bus.delete(env["RABBITMQ_CONSUME_QUEUE"], env["RABBITMQ_CONSUME_QUEUE"] + ".dlq")
        await bus.close()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def test_readiness_is_503_until_started(service_process, servers: Servers) -> None:
    env = servers.env(**fast())
    service = service_process(env)
    codes: list[int] = []
    for _ in range(300):
        code = await service.readiness()
        codes.append(code)
        if code == 200:
            break
        await asyncio.sleep(0.01)
    assert codes[-1] == 200
    assert all(code in (-1, 503) for code in codes[:-1])


# ------------------------------------------------------------------------------- outages
def _local_servers_controllable(servers: Servers) -> bool:
    import shutil

    return (
        servers.amqp_host in ("127.0.0.1", "localhost")
        and bool(shutil.which("rabbitmqctl"))
        and bool(shutil.which("pg_ctlcluster"))
    )


async def _run(*command: str) -> None:
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    output, _ = await process.communicate()
    assert process.returncode == 0, f"{command}: {output.decode(errors='replace')}"


async def _wait_readiness(service, code: int, timeout: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if await service.readiness() == code:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"readiness never became {code}")


def _cpu_seconds(pid: int) -> float:
    import os

    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()  # noqa: SIM115 - a /proc read
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.slow
async def _publish_when_reconnected(bus: Bus, body: dict) -> None:
    """The test's own client reconnects after the broker restart too; publish once it has."""
    for _ in range(40):
        try:
            await bus.publish(body)
            return
        except Exception:  # noqa: BLE001 - a closed channel while the client reconnects
            await asyncio.sleep(0.5)
    await bus.publish(body)


async def test_rabbitmq_restart_reconnects_and_loses_nothing(service_process, servers: Servers, db) -> None:
    if not _local_servers_controllable(servers):
        pytest.skip("needs the local RabbitMQ and rabbitmqctl")
    env = servers.env(**fast(PAYMENT_DELAY_MS="50"))
    service = service_process(env)
    await service.wait_ready()
    bus = await open_bus(env, servers)
    try:
        before = [event() for _ in range(60)]
        for body in before:
            await bus.publish(body)
        await _run("rabbitmqctl", "-q", "stop_app")
        try:
            await _wait_readiness(service, 503, timeout=15)
        finally:
            await _run("rabbitmqctl", "-q", "start_app")
            await _run("rabbitmqctl", "-q", "await_startup")
        await _wait_readiness(service, 200, timeout=40)
        after = [event() for _ in range(20)]
        for body in after:
            await _publish_when_reconnected(bus, body)
        await assert_every_order_settled(db, bus, [b["orderId"] for b in before + after], timeout=60)
    finally:
        await bus.close()


@pytest.mark.slow
async def test_postgresql_stop_holds_messages_without_spinning_then_resumes(
    service_process, servers: Servers, db
) -> None:
    if not _local_servers_controllable(servers):
        pytest.skip("needs the local PostgreSQL and pg_ctlcluster")
    import os

    version = sorted(os.listdir("/etc/postgresql"))[-1]
    env = servers.env(**fast())
    service = service_process(env)
    await service.wait_ready()
    bus = await open_bus(env, servers)
    try:
        warm = event()
        await bus.publish(warm)
        await bus.wait_for([warm["orderId"]])
        await _run("pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "stop", "-m", "fast")
        try:
            during = [event() for _ in range(20)]
            for body in during:
                await bus.publish(body)
            await _wait_readiness(service, 503, timeout=15)
            cpu_before = _cpu_seconds(service.process.pid)
            await asyncio.sleep(4)
            cpu_used = _cpu_seconds(service.process.pid) - cpu_before
            assert cpu_used < 0.8, f"the service burnt {cpu_used:.2f} s of CPU in 4 s while waiting"
            assert not any(bus.for_order(b["orderId"]) for b in during)
        finally:
            await _run("pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "start")
            await db.expire_connections()  # the session pool's connections died with the server
        await _wait_readiness(service, 200, timeout=40)
        await assert_every_order_settled(db, bus, [b["orderId"] for b in during], timeout=60)
        assert await bus.queue_depth(env["RABBITMQ_CONSUME_QUEUE"] + ".dlq") == 0
    finally:
        await bus.close()


async def test_start_up_waits_for_postgresql_and_rabbitmq(service_process, servers: Servers, db) -> None:
    """Neither server answers at first: the process waits (no crash, no restart needed), then
    comes up and processes when they appear."""
    from tests.support import TcpProxy

    database = TcpProxy(servers.db_host, servers.db_port)
    broker = TcpProxy(servers.amqp_host, servers.amqp_port)
    env = servers.env(**fast())
    env["DB_URL"] = f"jdbc:postgresql://127.0.0.1:{database.port}/{servers.db_name}"
    env["RABBITMQ_PORT"] = str(broker.port)
    service = service_process(env)
    try:
        for _ in range(300):  # importing the service takes a while on a loaded machine
            if "starting payment service" in service.log_tail(50):
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(2)
        assert service.process.poll() is None, service.log_tail()
        await database.open()  # PostgreSQL appears: migrations run, HTTP comes up, not ready
        await _wait_readiness(service, 503, timeout=20)
        await asyncio.sleep(1)
        assert await service.readiness() == 503
        await broker.open()  # RabbitMQ appears
        await _wait_readiness(service, 200, timeout=30)
        bus = await open_bus(env, servers)
        try:
            body = event()
            await bus.publish(body)
            await assert_every_order_settled(db, bus, [body["orderId"]])
        finally:
            await bus.close()
        assert any(line.get("message", "").startswith("RabbitMQ unavailable; retrying") for line in service.log_lines())
        assert any(
            line.get("message", "").startswith("PostgreSQL unavailable; retrying") for line in service.log_lines()
        )
    finally:
        service.stop()
        await broker.close()
        await database.close()
