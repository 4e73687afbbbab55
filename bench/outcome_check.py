"""The contract's bodies on both sides of the load generator: the events it sends, and the
checks and tally of the outcome events it receives.

`succeeded` bodies have exactly {eventId, orderId, paymentId, transactionId, amount, currency,
processedAt}; `failed` bodies exactly {eventId, orderId, failureReason, failureCode, occurredAt}.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import random
import re
import uuid
from collections import Counter
from typing import Any

try:  # optional, cheaper than the stdlib on a machine shared with the system under test
    import orjson

    loads = orjson.loads
    dumps = orjson.dumps
except ImportError:  # pragma: no cover - depends on the environment
    loads = json.loads

    def dumps(o: Any) -> bytes:
        return json.dumps(o, separators=(",", ":")).encode()


RK_IN = "order.stock-confirmed"
RK_OK = "payment.succeeded"
RK_FAIL = "payment.failed"
SUCCEEDED_KEYS = frozenset({"eventId", "orderId", "paymentId", "transactionId", "amount", "currency", "processedAt"})
FAILED_KEYS = frozenset({"eventId", "orderId", "failureReason", "failureCode", "occurredAt"})
FAILURE_CODES = frozenset(
    {
        "INSUFFICIENT_FUNDS", "CARD_DECLINED", "CARD_EXPIRED", "INVALID_CARD",
        "FRAUD_SUSPECTED", "GATEWAY_ERROR", "TIMEOUT", "UNKNOWN",
    }
)  # fmt: skip
DECLINE_CARD = "0000"
OK_CARD = "4242"
_AMOUNT_RE = re.compile(r"^\d+\.\d{2}$")
_CURRENCY_RE = re.compile(r"^[A-Z]{3}$")


def percentile(sorted_vals: list[float], p: float) -> float | None:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_vals:
        return None
    k = max(0, min(len(sorted_vals) - 1, math.ceil(p / 100.0 * len(sorted_vals)) - 1))
    return sorted_vals[k]


def latency_summary(values_s: list[float]) -> dict:
    v = sorted(x * 1000.0 for x in values_s)

    def r(x: float | None) -> float | None:
        return None if x is None else round(x, 2)

    return {
        "count": len(v),
        "min": r(v[0]) if v else None,
        "p50": r(percentile(v, 50)),
        "p95": r(percentile(v, 95)),
        "p99": r(percentile(v, 99)),
        "max": r(v[-1]) if v else None,
        "mean": r(sum(v) / len(v)) if v else None,
    }


def iso_now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_instant(obj: dict, key: str, errs: list[str]) -> None:
    v = obj.get(key)
    if not isinstance(v, str):
        errs.append(f"{key} is not a string")
        return
    try:
        t = dt.datetime.fromisoformat(v[:-1] + "+00:00" if v.endswith("Z") else v)
    except ValueError:
        errs.append(f"{key} is not ISO-8601: {v!r}")
        return
    if t.tzinfo is None or not v.endswith("Z"):
        errs.append(f"{key} is not a UTC instant ending in Z: {v!r}")


def _check_succeeded(obj: dict, errs: list[str]) -> None:
    if "paymentId" in obj and not is_int(obj["paymentId"]):
        errs.append(f"paymentId is not an integer: {obj['paymentId']!r}")
    t = obj.get("transactionId")
    if "transactionId" in obj and (not isinstance(t, str) or not t.startswith("txn_") or len(t) <= 4):
        errs.append(f"transactionId is not 'txn_<id>': {t!r}")
    a = obj.get("amount")
    if "amount" in obj and (not isinstance(a, str) or not _AMOUNT_RE.match(a)):
        errs.append(f"amount is not a 2-decimal string: {a!r}")
    c = obj.get("currency")
    if "currency" in obj and (not isinstance(c, str) or not _CURRENCY_RE.match(c)):
        errs.append(f"currency is not three upper-case letters: {c!r}")
    if "processedAt" in obj:
        _check_instant(obj, "processedAt", errs)


def _check_failed(obj: dict, errs: list[str]) -> None:
    r = obj.get("failureReason")
    if "failureReason" in obj and (not isinstance(r, str) or not r):
        errs.append(f"failureReason is not a non-empty string: {r!r}")
    c = obj.get("failureCode")
    if "failureCode" in obj and c not in FAILURE_CODES:
        errs.append(f"failureCode is not a contract code: {c!r}")
    if "occurredAt" in obj:
        _check_instant(obj, "occurredAt", errs)


def check_outcome(routing_key: str, body: bytes) -> tuple[dict | None, list[str]]:
    """Validate one outcome against the contract; returns (object or None, errors)."""
    try:
        obj = loads(body)
    except Exception as e:  # noqa: BLE001 - any decoding problem is a schema error
        return None, [f"invalid JSON: {e}"]
    if not isinstance(obj, dict):
        return None, ["body is not a JSON object"]
    if routing_key not in (RK_OK, RK_FAIL):
        return obj, [f"unexpected routing key {routing_key!r}"]
    expected = SUCCEEDED_KEYS if routing_key == RK_OK else FAILED_KEYS
    errs: list[str] = []
    keys = set(obj)
    if expected - keys:
        errs.append(f"missing keys {sorted(expected - keys)}")
    if keys - expected:
        errs.append(f"extra keys {sorted(keys - expected)}")
    if "eventId" in obj:
        try:
            if not isinstance(obj["eventId"], str):
                raise ValueError
            uuid.UUID(obj["eventId"])
        except ValueError:
            errs.append(f"eventId is not a UUID string: {obj['eventId']!r}")
    if "orderId" in obj and not is_int(obj["orderId"]):
        errs.append(f"orderId is not an integer: {obj['orderId']!r}")
    (_check_succeeded if routing_key == RK_OK else _check_failed)(obj, errs)
    return obj, errs


def _mismatch(obj: dict, rk: str, declined: bool, amount: str, currency: str) -> dict | None:
    """What is wrong with the first outcome of an order, given what was sent; None if right."""
    code = obj.get("failureCode")
    if declined:
        if rk != RK_FAIL or code != "CARD_DECLINED":
            return {"expected": "payment.failed/CARD_DECLINED", "got": rk, "failureCode": code}
        return None
    if rk != RK_OK:
        return {"expected": RK_OK, "got": rk, "failureCode": code}
    if obj.get("amount") != amount or obj.get("currency") != currency:
        return {"expected_amount": amount, "got_amount": obj.get("amount"), "got_currency": obj.get("currency")}
    return None


def tally(
    raw: list[tuple[float, str, bytes]], base: int, amounts: list[str], declines: set[int], currency: str
) -> dict:
    """Schema errors, duplicates, unexpected outcomes and mismatches over every received body."""
    n = len(amounts)
    schema_errors, schema_samples = 0, []
    seen: Counter = Counter()
    outcomes: Counter = Counter()
    failure_codes: Counter = Counter()
    unexpected = mismatches = 0
    mismatch_samples: list[dict] = []
    for _t, rk, body in raw:
        obj, errs = check_outcome(rk, body)
        if errs:
            schema_errors += 1
            if len(schema_samples) < 5:
                text = body.decode("utf-8", "replace")[:500]
                schema_samples.append({"routing_key": rk, "body": text, "errors": errs})
        oid = obj.get("orderId") if isinstance(obj, dict) else None
        idx = oid - base if is_int(oid) else -1
        if not 0 <= idx < n:
            unexpected += 1
            continue
        seen[idx] += 1
        if seen[idx] > 1:
            continue
        outcomes["succeeded" if rk == RK_OK else "failed" if rk == RK_FAIL else rk] += 1
        if rk == RK_FAIL:
            failure_codes[str(obj.get("failureCode"))] += 1
        problem = _mismatch(obj, rk, idx in declines, amounts[idx], currency)
        if problem:
            mismatches += 1
            if len(mismatch_samples) < 5:
                mismatch_samples.append({"orderId": oid, **problem})
    return {
        "outcomes": {"succeeded": outcomes.get("succeeded", 0), "failed": outcomes.get("failed", 0)},
        "failure_codes": dict(failure_codes),
        "duplicates": sum(c - 1 for c in seen.values() if c > 1),
        "unexpected_outcomes": unexpected,
        "schema_errors": schema_errors,
        "schema_error_samples": schema_samples,
        "outcome_mismatches": mismatches,
        "mismatch_samples": mismatch_samples,
    }


def build_events(
    n: int, base: int, decline_fraction: float, currency: str, seed: int
) -> tuple[list[bytes], list[str], set[int]]:
    """N input events (orderId base + i), their amounts, and which of them carry the declined card."""
    rnd = random.Random(seed)
    n_decline = round(n * decline_fraction)
    declines = set(rnd.sample(range(n), n_decline)) if n_decline else set()
    occurred = iso_now()
    bodies: list[bytes] = []
    amounts: list[str] = []
    for i in range(n):
        cents = 1000 + rnd.randrange(99000)  # 10.00 .. 999.99
        amount = f"{cents // 100}.{cents % 100:02d}"
        amounts.append(amount)
        bodies.append(
            dumps(
                {
                    "eventId": str(uuid.UUID(int=rnd.getrandbits(128), version=4)),
                    "orderId": base + i,
                    "buyerId": f"bench-user-{rnd.randrange(1000)}",
                    "totalAmount": amount,
                    "currency": currency,
                    "paymentMethod": {
                        "type": "CREDIT_CARD",
                        "cardLastFour": DECLINE_CARD if i in declines else OK_CARD,
                        "cardBrand": "VISA",
                        "cardHolderName": "Bench Buyer",
                        "expirationMonth": 12,
                        "expirationYear": 2030,
                    },
                    "occurredAt": occurred,
                }
            )
        )
    return bodies, amounts, declines


def all_arrived(report: dict) -> bool:
    """Every order got exactly one valid, expected outcome and every publish was confirmed."""
    return (
        report["missing"] == 0
        and report["schema_errors"] == 0
        and report["outcome_mismatches"] == 0
        and report["publish_returned_unroutable"] == 0
        and report["publish_nacked"] == 0
        and not report["publish_errors"]
        and not report["connection_lost"]
        and not report["target_exited"]
    )
