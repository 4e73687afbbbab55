"""The admin API: static bearer tokens, OpenID Connect JWTs (against a JWKS served by the test
on 127.0.0.1, never the network), and the payment listings — all against the real app."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from loguru import logger

from app.domain import FailureCode, PaymentMethod, PaymentMethodType, PaymentRequest, PaymentStatus
from tests.conftest import running_app
from tests.seeding import SeedingRepository
from tests.support import next_order_id

RECORD_KEYS = {
    "id", "orderId", "buyerId", "amount", "currency", "status", "paymentMethod",
    "transactionId", "failureReason", "createdAt", "processedAt", "refundId", "refundedAt",
}  # fmt: skip


@contextmanager
def captured_logs(caplog: pytest.LogCaptureFixture) -> Iterator[list[str]]:
    """Everything logged through loguru (message and context) and the standard library."""
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(str(m) + json.dumps(m.record["extra"], default=str)), level="TRACE")
    caplog.set_level(logging.DEBUG)
    try:
        yield lines
    finally:
        logger.remove(sink)
        lines.extend(record.getMessage() for record in caplog.records)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# --------------------------------------------------------------------------- static tokens
async def test_static_tokens_401_and_rotation(settings_factory: Any, caplog: pytest.LogCaptureFixture) -> None:
    old, new = f"old-{uuid.uuid4().hex}", f"new-{uuid.uuid4().hex}"
    wrong = f"wrong-{uuid.uuid4().hex}"
    settings = settings_factory(admin_token=f"{old}, {new}")
    with captured_logs(caplog) as logs:
        async with running_app(settings) as app:
            client = app.client
            for path in ("/payments/12345", "/payments?limit=1", "/payments/by-id/1", "/admin/dlq"):
                response = await client.get(path)
                assert response.status_code == 401, path
                assert response.headers["WWW-Authenticate"].startswith("Bearer")
                assert response.json() == {"error": "missing bearer token", "status": 401}
            assert (await client.post("/admin/dlq/replay")).status_code == 401

            wrong_headers = (
                bearer(wrong),
                bearer(old + "x"),
                bearer(old[:-1]),
                {"Authorization": f"Basic {old}"},
                {"Authorization": old},
            )
            for headers in wrong_headers:
                response = await client.get("/payments?limit=1", headers=headers)
                assert response.status_code == 401, headers
                assert response.headers["WWW-Authenticate"].startswith("Bearer")
                assert response.json()["status"] == 401

            for token in (old, new):
                response = await client.get("/payments?limit=1", headers=bearer(token))
                assert response.status_code == 200, response.text
                assert (await client.get("/payments/1", headers=bearer(token))).status_code == 404
                assert (await client.get("/admin/dlq", headers=bearer(token))).status_code == 200

            # Probes and metrics stay open.
            for path in ("/healthz/liveness", "/healthz/readiness", "/healthz/startup", "/metrics"):
                assert (await client.get(path)).status_code == 200, path
    text = "\n".join(logs)
    assert "admin API authentication on" in text
    for secret in (old, new, wrong):
        assert secret not in text


async def test_no_auth_configured_is_open_and_warns(settings_factory: Any, caplog: pytest.LogCaptureFixture) -> None:
    with captured_logs(caplog) as logs:
        async with running_app(settings_factory()) as app:
            assert (await app.client.get("/payments?limit=1")).status_code == 200
            assert (await app.client.get("/admin/dlq")).status_code == 200
    assert any("admin API authentication is off" in line for line in logs)


async def test_service_process_never_logs_the_token(service_process: Any) -> None:
    token, wrong = f"tok-{uuid.uuid4().hex}", f"bad-{uuid.uuid4().hex}"
    service = service_process(admin_token=token, log_level="DEBUG")
    await service.wait_ready()
    async with httpx.AsyncClient(base_url=service.url, timeout=10) as client:
        assert (await client.get("/payments?limit=1", headers=bearer(token))).status_code == 200
        assert (await client.get("/payments?limit=1", headers=bearer(wrong))).status_code == 401
        assert (await client.get("/payments?limit=1")).status_code == 401
    service.stop()
    log = service.log_path.read_text()
    assert "admin API authentication on" in log
    assert token not in log
    assert wrong not in log


# --------------------------------------------------------------------------- OpenID Connect
def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Keys:
    rsa1 = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rsa2 = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    attacker = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec1 = ec.generate_private_key(ec.SECP256R1())
    enc = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_jwk(private_key: Any, kid: str, alg: str, use: str = "sig") -> dict[str, Any]:
    algorithm = jwt.algorithms.RSAAlgorithm if alg.startswith("RS") else jwt.algorithms.ECAlgorithm
    jwk = json.loads(algorithm.to_jwk(private_key.public_key()))
    return {**jwk, "kid": kid, "alg": alg, "use": use}


class JwksServer:
    """The issuer's JWKS at Keycloak's path, on 127.0.0.1, counting fetches."""

    def __init__(self) -> None:
        self.keys: list[dict[str, Any]] = [
            public_jwk(Keys.rsa1, "rsa-1", "RS256"),
            public_jwk(Keys.ec1, "ec-1", "ES256"),
            public_jwk(Keys.enc, "enc-1", "RSA-OAEP", use="enc"),  # Keycloak publishes one; not for signatures
        ]
        self.fetches = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path != "/realms/foodies/protocol/openid-connect/certs":
                    self.send_error(404)
                    return
                server.fetches += 1
                body = json.dumps({"keys": server.keys}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.issuer = f"http://127.0.0.1:{self.httpd.server_port}/realms/foodies"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def jwks() -> Iterator[JwksServer]:
    server = JwksServer()
    yield server
    server.close()


AUDIENCE = "payment-service"


def mint(
    issuer: str,
    *,
    key: Any = Keys.rsa1,
    kid: str | None = "rsa-1",
    alg: str = "RS256",
    roles: list[str] | None = None,
    drop: tuple[str, ...] = (),
    **claims: Any,
) -> str:
    now = int(time.time())
    payload: dict[str, Any] = {
        "iss": issuer,
        "aud": AUDIENCE,
        "sub": "operator-1",
        "iat": now,
        "exp": now + 300,
        "azp": "foodies-admin",
        "realm_access": {"roles": ["offline_access", "admin"] if roles is None else roles},
    }
    payload.update(claims)
    for name in drop:
        payload.pop(name, None)
    headers = {"kid": kid} if kid is not None else {}
    return jwt.encode(payload, key, algorithm=alg, headers=headers)


def unsigned(issuer: str, alg: str = "none") -> str:
    header = b64url(json.dumps({"alg": alg, "typ": "JWT", "kid": "rsa-1"}).encode())
    claims = json.loads(base64.urlsafe_b64decode(mint(issuer).split(".")[1] + "=="))
    return f"{header}.{b64url(json.dumps(claims).encode())}."


def hs256_with_public_key(issuer: str) -> str:
    """The classic algorithm confusion: HMAC keyed with the issuer's public key."""
    public_pem = Keys.rsa1.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = b64url(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}).encode())
    payload = mint(issuer).split(".")[1]
    signature = hmac.new(public_pem, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{b64url(signature)}"


def tampered(issuer: str) -> str:
    header, _, signature = mint(issuer, roles=["user"]).split(".")
    claims = json.loads(base64.urlsafe_b64decode(mint(issuer).split(".")[1] + "=="))
    claims["realm_access"] = {"roles": ["admin"]}
    return f"{header}.{b64url(json.dumps(claims).encode())}.{signature}"


async def test_jwt_admin_role_claims_and_signatures(
    settings_factory: Any, jwks: JwksServer, caplog: pytest.LogCaptureFixture
) -> None:
    issuer = jwks.issuer
    settings = settings_factory(auth_issuer=issuer, auth_audience=AUDIENCE)  # JWKS at the issuer's Keycloak path
    now = int(time.time())
    good = mint(issuer)
    with captured_logs(caplog) as logs:
        async with running_app(settings) as app:

            async def status(token: str | None) -> int:
                response = await app.client.get("/payments?limit=1", headers=bearer(token) if token else {})
                assert response.headers["content-type"].startswith("application/json")
                if response.status_code == 401:
                    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"] or token is None
                return response.status_code

            assert await status(good) == 200
            assert await status(mint(issuer, key=Keys.ec1, kid="ec-1", alg="ES256")) == 200
            assert await status(mint(issuer, aud=["account", AUDIENCE])) == 200
            assert await status(mint(issuer, exp=now - 10)) == 200  # within the clock-skew allowance
            assert (await app.client.get("/admin/dlq", headers=bearer(good))).status_code == 200

            forbidden = await app.client.get("/payments?limit=1", headers=bearer(mint(issuer, roles=["user"])))
            assert forbidden.status_code == 403
            assert forbidden.json() == {"error": "the admin role is required", "status": 403}
            assert 'error="insufficient_scope"' in forbidden.headers["WWW-Authenticate"]
            assert await status(mint(issuer, drop=("realm_access",))) == 403
            # A client role named admin is not the realm role.
            assert await status(mint(issuer, roles=[], resource_access={AUDIENCE: {"roles": ["admin"]}})) == 403

            rejected = {
                "no token": None,
                "expired": mint(issuer, exp=now - 120),
                "not yet valid": mint(issuer, nbf=now + 120),
                "no expiry": mint(issuer, drop=("exp",)),
                "wrong audience": mint(issuer, aud="another-service"),
                "no audience": mint(issuer, drop=("aud",)),
                "wrong issuer": mint(issuer, iss="http://127.0.0.1:1/realms/other"),
                "bad signature": mint(issuer, key=Keys.attacker),
                "tampered claims": tampered(issuer),
                "alg none": unsigned(issuer),
                "alg None": unsigned(issuer, "None"),
                "HS256 keyed with the public key": hs256_with_public_key(issuer),
                "RS256 header on the EC key": mint(issuer, kid="ec-1"),
                "encryption key": mint(issuer, key=Keys.enc, kid="enc-1"),
                "garbage": "a.b.c",
                "not a JWT": "opaque-token",
            }
            for name, token in rejected.items():
                assert await status(token) == 401, name
    text = "\n".join(logs)
    assert good not in text
    assert good.split(".")[2] not in text


async def test_jwt_unknown_kid_refreshes_the_jwks_once(settings_factory: Any, jwks: JwksServer) -> None:
    issuer = jwks.issuer
    settings = settings_factory(
        auth_issuer=issuer, auth_audience=AUDIENCE, auth_jwks_url=f"{issuer}/protocol/openid-connect/certs"
    )
    async with running_app(settings) as app:

        async def status(token: str) -> int:
            return (await app.client.get("/payments?limit=1", headers=bearer(token))).status_code

        assert jwks.fetches == 0  # fetched on first use, not at start
        assert await status(mint(issuer)) == 200
        assert jwks.fetches == 1
        assert await status(mint(issuer)) == 200
        assert await status(mint(issuer, key=Keys.ec1, kid="ec-1", alg="ES256")) == 200
        assert jwks.fetches == 1  # cached

        # The issuer rotates: a new key appears; the first token signed with it refreshes the set.
        jwks.keys.append(public_jwk(Keys.rsa2, "rsa-2", "RS256"))
        assert await status(mint(issuer, key=Keys.rsa2, kid="rsa-2")) == 200
        assert jwks.fetches == 2
        assert await status(mint(issuer, key=Keys.rsa2, kid="rsa-2")) == 200
        assert jwks.fetches == 2

        # An unknown kid: one refresh, then no more fetches for other unknown ids for a while.
        assert await status(mint(issuer, kid="unknown-1")) == 401
        assert jwks.fetches == 3
        assert await status(mint(issuer, kid="unknown-2")) == 401
        assert await status(mint(issuer, kid="unknown-3")) == 401
        assert jwks.fetches == 3
        assert await status(mint(issuer)) == 200
        assert jwks.fetches == 3


async def test_jwt_and_static_tokens_together(settings_factory: Any, jwks: JwksServer) -> None:
    token = f"ops-{uuid.uuid4().hex}"
    settings = settings_factory(admin_token=token, auth_issuer=jwks.issuer, auth_audience=AUDIENCE)
    async with running_app(settings) as app:
        assert (await app.client.get("/payments?limit=1", headers=bearer(token))).status_code == 200
        assert (await app.client.get("/payments?limit=1", headers=bearer(mint(jwks.issuer)))).status_code == 200
        assert (await app.client.get("/payments?limit=1", headers=bearer("nope"))).status_code == 401
        assert jwks.fetches == 1  # the static token never needed the keys


async def test_jwks_unreachable_is_503_not_open(settings_factory: Any) -> None:
    closed = httpx.URL(f"http://127.0.0.1:{_closed_port()}/realms/foodies")
    settings = settings_factory(auth_issuer=str(closed), auth_audience=AUDIENCE)
    async with running_app(settings) as app:
        response = await app.client.get("/payments?limit=1", headers=bearer(mint(str(closed))))
        assert response.status_code == 503
        assert response.json()["error"] == "signing keys unavailable"
        assert (await app.client.get("/payments?limit=1")).status_code == 401


def _closed_port() -> int:
    from tests.support import free_port

    return free_port()


# --------------------------------------------------------------------------- listings
def payment_request(order_id: int, buyer_id: str) -> PaymentRequest:
    return PaymentRequest(
        event_id=str(uuid.uuid4()),
        order_id=order_id,
        buyer_id=buyer_id,
        amount=Decimal("12.50"),
        currency="EUR",
        payment_method=PaymentMethod(PaymentMethodType.CREDIT_CARD, card_last_four="4242"),
    )


async def seed(app: Any, buyer_id: str, statuses: list[PaymentStatus]) -> list[Any]:
    """Payments for one buyer, oldest first."""
    repository = SeedingRepository(app.components.admin_repository().engine)
    made = []
    for status in statuses:
        payment, created = await repository.create(payment_request(next_order_id(), buyer_id))
        assert created
        if status is PaymentStatus.SUCCEEDED:
            payment = await repository.update_status(payment.id, status, transaction_id=f"txn_{uuid.uuid4()}")
        elif status is PaymentStatus.FAILED:
            payment = await repository.update_status(
                payment.id, status, failure_reason="Card declined", failure_code=FailureCode.CARD_DECLINED
            )
        made.append(payment)
    return made


async def test_listing_pagination_filters_and_ordering(settings_factory: Any) -> None:
    buyer = f"buyer-{uuid.uuid4().hex}"
    other = f"buyer-{uuid.uuid4().hex}"
    S, F, P = PaymentStatus.SUCCEEDED, PaymentStatus.FAILED, PaymentStatus.PENDING
    async with running_app(settings_factory()) as app:
        client = app.client
        made = await seed(app, buyer, [S, F, S, P, F])
        await seed(app, other, [S, F])
        newest_first = [p.order_id for p in reversed(made)]

        page = (await client.get("/payments", params={"buyerId": buyer})).json()
        assert page["limit"] == 50
        assert page["offset"] == 0
        assert [item["orderId"] for item in page["items"]] == newest_first
        assert all(set(item) == RECORD_KEYS and item["buyerId"] == buyer for item in page["items"])
        assert page["items"][0] == (await client.get(f"/payments/{newest_first[0]}")).json()

        pages = []
        for offset in (0, 2, 4, 6):
            body = (await client.get("/payments", params={"buyerId": buyer, "limit": 2, "offset": offset})).json()
            assert body["limit"] == 2
            assert body["offset"] == offset
            pages.append([item["orderId"] for item in body["items"]])
        assert pages == [newest_first[0:2], newest_first[2:4], newest_first[4:5], []]

        failed = (await client.get("/payments", params={"buyerId": buyer, "status": "FAILED"})).json()["items"]
        assert [item["orderId"] for item in failed] == [made[4].order_id, made[1].order_id]
        assert all(item["status"] == "FAILED" and item["failureReason"] == "Card declined" for item in failed)
        pending = (await client.get("/payments", params={"buyerId": buyer, "status": "PENDING"})).json()["items"]
        assert [item["orderId"] for item in pending] == [made[3].order_id]
        assert (await client.get("/payments", params={"buyerId": buyer, "status": "REFUNDED"})).json()["items"] == []

        # Without a buyer: everyone's, newest first, at most `limit`.
        everyone = (await client.get("/payments", params={"limit": 100})).json()["items"]
        assert 7 <= len(everyone) <= 100
        created = [item["createdAt"] for item in everyone]
        assert created == sorted(created, reverse=True)
        assert (await client.get("/payments", params={"status": "SUCCEEDED", "limit": 100})).json()["items"]
        assert all(
            item["status"] == "SUCCEEDED"
            for item in (await client.get("/payments", params={"status": "SUCCEEDED", "limit": 100})).json()["items"]
        )

        # By payment id.
        record = (await client.get(f"/payments/by-id/{made[2].id}")).json()
        assert record["id"] == made[2].id
        assert record["orderId"] == made[2].order_id
        assert record["status"] == "SUCCEEDED"
        assert record == (await client.get(f"/payments/{made[2].order_id}")).json()
        missing = await client.get(f"/payments/by-id/{2**63 - 1}")
        assert missing.status_code == 404
        assert missing.json()["status"] == 404
        for bad in ("0", "-1", "abc", "1.5", str(2**63), "%20"):
            response = await client.get(f"/payments/by-id/{bad}")
            assert response.status_code == 400, bad
            assert "paymentId" in response.json()["error"]


BAD_LISTING_QUERIES = [
    "limit=0",
    "limit=101",
    "limit=-1",
    "limit=abc",
    "limit=",
    "limit=1.5",
    "limit=99999999999999999999",
    "offset=-1",
    "offset=x",
    "offset=",
    "offset=1000001",
    "status=paid",
    "status=succeeded",
    "status=",
    "buyerId=",
    "buyerId=" + "x" * 256,
    "buyer_id=someone",
    "page=2",
    "limit=1&limit=2",
]


async def test_listing_bad_parameters_are_400(settings_factory: Any) -> None:
    async with running_app(settings_factory()) as app:
        for query in BAD_LISTING_QUERIES:
            response = await app.client.get(f"/payments?{query}")
            assert response.status_code == 400, query
            body = response.json()
            assert body["status"] == 400, query
            assert body["error"], query
        for query in ("limit=1", "limit=100", "offset=0", "status=REFUNDED", "buyerId=" + "x" * 255):
            assert (await app.client.get(f"/payments?{query}")).status_code == 200, query


# --------------------------------------------------------------------------- refunds
async def test_refund_route_against_the_real_service(settings_factory: Any) -> None:
    buyer = f"buyer-{uuid.uuid4().hex}"
    token = uuid.uuid4().hex
    async with running_app(settings_factory(admin_token=token)) as app:
        client = app.client
        headers = bearer(token)
        succeeded, failed = await seed(app, buyer, [PaymentStatus.SUCCEEDED, PaymentStatus.FAILED])
        assert (await client.post(f"/payments/{succeeded.order_id}/refund")).status_code == 401

        response = await client.post(
            f"/payments/{succeeded.order_id}/refund", json={"reason": "customer asked"}, headers=headers
        )
        assert response.status_code == 200, response.text
        record = response.json()
        assert set(record) == RECORD_KEYS
        assert record["status"] == "REFUNDED"
        assert record["refundId"]
        assert record["refundedAt"].endswith("Z")
        assert response.headers["cache-control"] == "no-store"
        assert (await client.get(f"/payments/{succeeded.order_id}", headers=headers)).json() == record
        again = await client.post(f"/payments/{succeeded.order_id}/refund", headers=headers)
        assert again.status_code == 200
        assert again.json()["refundId"] == record["refundId"]  # refunded once

        refused = await client.post(f"/payments/{failed.order_id}/refund", headers=headers)
        assert refused.status_code == 409
        assert refused.json()["status"] == 409
        assert "failed" in refused.json()["error"]
        missing = await client.post(f"/payments/{2**63 - 1}/refund", headers=headers)
        assert missing.status_code == 404
        bad = await client.post(f"/payments/{succeeded.order_id}/refund", json={"reason": "x" * 501}, headers=headers)
        assert bad.status_code == 400
