"""The fake gateway's memory: charges and refunds by idempotency key, card behaviour, faults, the audit view.

Only answers that decide something are stored and replayed for their key (200, 402, and a 400
for a refund of a charge already refunded); faults, transient answers and invalid requests are
not, so a retry after them is processed afresh — as a Stripe-style API behaves.
"""

from __future__ import annotations

import json
import random
import re
import secrets
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

DECLINES = {  # last four -> (code, decline_code, message); the same reasons as the simulated gateway
    "0000": ("card_declined", "generic_decline", "Card declined"),
    "0001": ("card_declined", "insufficient_funds", "Insufficient funds"),
    "0002": ("expired_card", None, "Card expired"),
    "7777": ("card_declined", "fraudulent", "Fraud suspected"),
}
FLAKY_CARD, FLAKY_FAILURES = "3333", 2
SILENT_CARD = "6666"
REFUND_DECLINED_CARD = "8888"
UNAVAILABLE_CARD = "9999"
_CURRENCY = re.compile(r"[a-z]{3}")


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: dict[str, Any]
    replayed: bool = False
    hang: bool = False  # never answer (the silent card)


def failure(status: int, kind: str, code: str | None, message: str, **extra: Any) -> Answer:
    error = {"type": kind, "code": code, "message": message, **extra}
    return Answer(status, {"error": {k: v for k, v in error.items() if v is not None}})


@dataclass(slots=True)
class KeyRecord:
    """Everything seen for one idempotency key."""

    endpoint: str
    order_id: str | None
    request: dict[str, Any]  # the body last processed (else the first one seen), as sent
    fingerprint: str
    seen: int = 0
    statuses: list[int] = field(default_factory=list)
    stored: Answer | None = None

    def view(self, key: str) -> dict[str, Any]:
        stored = self.stored
        outcome = {"status": stored.status, "body": stored.body} if stored else None
        return {
            "idempotencyKey": key,
            "orderId": self.order_id,
            "seen": self.seen,
            "statuses": self.statuses,
            "outcome": outcome,
            "request": self.request,
        }


@dataclass(slots=True)
class Charge:
    id: str
    order_id: str | None
    amount: int
    currency: str
    last_four: str | None
    refunded_by: str | None = None  # the refund's idempotency key


@dataclass(slots=True)
class Faults:
    latency_ms: int = 0
    error_rate: float = 0.0
    outage_until: float = 0.0
    unauthorized_until: float = 0.0


class FakeGatewayState:
    """The in-memory gateway. Not thread-safe: one event loop serves it."""

    def __init__(self, api_key: str, *, seed: int | None = None) -> None:
        self._api_key = api_key
        self._random = random.Random(seed)
        self.faults = Faults()
        self.reset()

    def __repr__(self) -> str:
        return f"FakeGatewayState(keys={len(self.keys)})"

    def reset(self) -> None:
        """Forget every charge, refund and fault."""
        self.keys: dict[str, KeyRecord] = {}
        self.in_flight: set[str] = set()
        self.charges: dict[str, Charge] = {}
        self._flaky: Counter[str] = Counter()
        self.faults = Faults()

    # ----------------------------------------------------------------- faults
    def control(self, settings: dict[str, Any]) -> dict[str, Any]:
        """Apply fault settings (any subset; `reset: true` first clears them); returns them all."""
        if settings.get("reset"):
            self.faults = Faults()
        now = time.monotonic()
        if "latency_ms" in settings:
            self.faults.latency_ms = max(0, int(settings["latency_ms"]))
        if "error_rate" in settings:
            self.faults.error_rate = min(1.0, max(0.0, float(settings["error_rate"])))
        if "outage_seconds" in settings:
            self.faults.outage_until = now + max(0.0, float(settings["outage_seconds"]))
        if "unauthorized_seconds" in settings:
            self.faults.unauthorized_until = now + max(0.0, float(settings["unauthorized_seconds"]))
        return self.controls()

    def controls(self) -> dict[str, Any]:
        now = time.monotonic()
        return {
            "latency_ms": self.faults.latency_ms,
            "error_rate": self.faults.error_rate,
            "outage_remaining_s": round(max(0.0, self.faults.outage_until - now), 3),
            "unauthorized_remaining_s": round(max(0.0, self.faults.unauthorized_until - now), 3),
        }

    def injected(self, authorization: str | None) -> Answer | None:
        """The answer a fault or a missing/wrong API key forces, if any."""
        now = time.monotonic()
        if now < self.faults.outage_until:
            return failure(503, "api_error", "service_unavailable", "The gateway is temporarily unavailable")
        if self.faults.error_rate and self._random.random() < self.faults.error_rate:
            return failure(500, "api_error", None, "An internal error occurred")
        expected = f"Bearer {self._api_key}"
        if now < self.faults.unauthorized_until or not secrets.compare_digest(authorization or "", expected):
            return failure(401, "authentication_error", "invalid_api_key", "Invalid API key provided")
        return None

    # ----------------------------------------------------------------- idempotency
    def see(self, endpoint: str, key: str, body: dict[str, Any]) -> None:
        """Count a request with this key (whatever its answer will be)."""
        record = self.keys.get(key)
        if record is None:
            metadata = body.get("metadata")
            order_id = metadata.get("orderId") if isinstance(metadata, dict) else None
            fingerprint = json.dumps(body, sort_keys=True, default=str)
            record = self.keys[key] = KeyRecord(endpoint, order_id, body, fingerprint)
        record.seen += 1

    def begin(self, endpoint: str, key: str, body: dict[str, Any]) -> Answer | None:
        """The answer when the key is in use, stored (a replay) or reused for another request;
        None when the request must be processed (the key is then in use until `finish`)."""
        record = self.keys[key]
        if key in self.in_flight:
            return failure(409, "idempotency_error", "idempotency_key_in_use", "A request with this key is in progress")
        fingerprint = json.dumps(body, sort_keys=True, default=str)
        stored = record.stored
        if record.endpoint != endpoint or (stored is not None and record.fingerprint != fingerprint):
            return failure(400, "idempotency_error", "idempotency_key_reused", "Key reused with other parameters")
        if stored is not None:
            return Answer(stored.status, stored.body, replayed=True)
        record.request, record.fingerprint = body, fingerprint  # the request whose answer may be stored
        self.in_flight.add(key)
        return None

    def finish(self, key: str, answer: Answer, *, store: bool) -> Answer:
        self.in_flight.discard(key)
        record = self.keys[key]
        record.statuses.append(answer.status)
        if store:
            record.stored = answer
        return answer

    def note(self, key: str, status: int) -> None:
        """An answer given without processing (a fault, 401, 409, a replay); 0: never answered."""
        self.keys[key].statuses.append(status)

    # ----------------------------------------------------------------- operations
    def charge(self, key: str, body: dict[str, Any]) -> tuple[Answer, bool]:
        """(answer, store it for the key)."""
        invalid = _invalid_charge(body)
        if invalid:
            return failure(400, "invalid_request_error", "parameter_invalid", invalid), False
        method = body.get("paymentMethod") or {}
        last_four = method.get("cardLastFour") if isinstance(method, dict) else None
        if last_four == SILENT_CARD:
            return Answer(0, {}, hang=True), False
        if last_four == UNAVAILABLE_CARD:
            return failure(503, "api_error", "processing_error", "The card network is unavailable"), False
        if last_four == FLAKY_CARD and self._flaky[key] < FLAKY_FAILURES:
            self._flaky[key] += 1
            return failure(503, "api_error", "processing_error", "Temporary processing error"), False
        if last_four in DECLINES:
            code, decline_code, message = DECLINES[last_four]
            return failure(402, "card_error", code, message, decline_code=decline_code), True
        charge = Charge(
            f"ch_{secrets.token_hex(12)}", body["metadata"]["orderId"], body["amount"], body["currency"], last_four
        )
        self.charges[charge.id] = charge
        return Answer(
            200, {"id": charge.id, "status": "succeeded", "amount": charge.amount, "currency": charge.currency}
        ), True

    def refund(self, key: str, body: dict[str, Any]) -> tuple[Answer, bool]:
        charge = self.charges.get(body.get("charge") or "")
        if charge is None:
            return failure(404, "invalid_request_error", "resource_missing", "No such charge"), False
        if charge.refunded_by is not None:
            message = f"Charge {charge.id} has already been refunded."
            return failure(400, "invalid_request_error", "charge_already_refunded", message), True
        if charge.last_four == REFUND_DECLINED_CARD:
            return failure(402, "refund_error", "refund_declined", "Refund declined"), True
        charge.refunded_by = key
        refund = {
            "id": f"re_{secrets.token_hex(12)}",
            "status": "succeeded",
            "charge": charge.id,
            "amount": charge.amount,
        }
        return Answer(200, refund), True

    # ----------------------------------------------------------------- audit
    def audit(self) -> dict[str, Any]:
        """Every key with how often it was seen, and per order the captured charges and refunds."""
        orders: dict[str, dict[str, int]] = {}
        for charge in self.charges.values():
            counts = orders.setdefault(str(charge.order_id), {"captured": 0, "refunded": 0})
            counts["captured"] += 1
            counts["refunded"] += charge.refunded_by is not None
        views: dict[str, list[dict[str, Any]]] = {"/v1/charges": [], "/v1/refunds": []}
        for key, record in self.keys.items():
            views.setdefault(record.endpoint, []).append(record.view(key))
        return {
            "charges": views["/v1/charges"],
            "refunds": views["/v1/refunds"],
            "orders": orders,
            "totals": {
                "requests": sum(record.seen for record in self.keys.values()),
                "captured": len(self.charges),
                "refunded": sum(1 for charge in self.charges.values() if charge.refunded_by),
            },
        }


def _invalid_charge(body: dict[str, Any]) -> str | None:
    """Why a charge request is malformed (the message names the parameter), or None."""
    amount = body.get("amount")
    if type(amount) is not int or amount <= 0:
        return "amount: a positive integer in minor units"
    if not isinstance(body.get("currency"), str) or not _CURRENCY.fullmatch(body["currency"]):
        return "currency: a lower-case ISO 4217 code"
    metadata = body.get("metadata")
    if not isinstance(metadata, dict) or not isinstance(metadata.get("orderId"), str):
        return "metadata.orderId: a string"
    if not isinstance(body.get("paymentMethod"), dict):
        return "paymentMethod: an object"
    return None
